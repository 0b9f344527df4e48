//! The agent's Prometheus metrics (`--metrics-listen`): its jobs, the state of its streams
//! to the servers, its reconnections and the OAuth2 tokens it fetched, served with
//! `/healthz` and `/readyz` by [`http`].
//!
//! Every agent has its own [`Metrics`] (and registry), handed down its run path, so that
//! several agents in one process (as in tests) count apart. Labels stay bounded: a job's
//! kind and result, a configured server URL, a stream state, a failure class; never a
//! recipient, an address or a job id.

pub mod http;

use std::sync::Arc;
use std::time::Instant;

use mailplane_exposition::Format;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a job does.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum JobKind {
    /// A test e-mail (or a capability probe): an `SmtpJob` without a delivery.
    Test,
    /// A message of the outbox, sent over the agent's pooled session.
    Delivery,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 2] = [JobKind::Test, JobKind::Delivery];
}

/// How a job ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum JobResult {
    /// It succeeded (the test passed, the message was sent).
    Ok,
    /// It ran, or could not run, and failed; the outcome went to the server.
    Failed,
    /// It stopped without an outcome: its stream was lost before DATA, or it was still
    /// running when the drain timeout passed.
    Abandoned,
}

impl JobResult {
    /// Every result.
    pub const ALL: [JobResult; 3] = [JobResult::Ok, JobResult::Failed, JobResult::Abandoned];
}

/// The state of one stream, attributed to the server it is about.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StreamState {
    /// Opening a stream to this server.
    Connecting,
    /// Holding a stream to this server.
    Connected,
    /// Waiting before the next round, after losing (or failing to reach) this server.
    Backoff,
}

impl StreamState {
    /// Every state.
    pub const ALL: [StreamState; 3] = [
        StreamState::Connecting,
        StreamState::Connected,
        StreamState::Backoff,
    ];
}

/// The label values of the closed sets above: their lower-case names.
macro_rules! label_values {
    ($($ty:ty { $($variant:ident => $name:literal),+ $(,)? })+) => {$(
        impl $ty {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )+};
}

label_values! {
    JobKind { Test => "test", Delivery => "delivery" }
    JobResult { Ok => "ok", Failed => "failed", Abandoned => "abandoned" }
    StreamState { Connecting => "connecting", Connected => "connected", Backoff => "backoff" }
}

/// `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The job's kind.
    pub kind: JobKind,
}

/// `kind` and `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's kind.
    pub kind: JobKind,
    /// How it ended.
    pub result: JobResult,
}

/// `server`: a configured server URL.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// The server's URL, as configured.
    pub server: String,
}

/// `server` and `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerStateLabels {
    /// The server's URL, as configured.
    pub server: String,
    /// The streams' state.
    pub state: StreamState,
}

/// `result`: `ok`, or a failure class (`OAUTH_…`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or the failure class.
    pub result: String,
}

/// The names of the agent's metric families, as queries use them (counters with `_total`,
/// histograms by their base name). None is a name the server uses (its
/// `mailplane_agent_streams` and `mailplane_agent_jobs_in_flight` count the agents connected to
/// it), so that a query over both scrape jobs never mixes them.
pub const FAMILIES: [&str; 7] = [
    "mailplane_agent_jobs_running",
    "mailplane_agent_jobs_total",
    "mailplane_agent_job_duration_seconds",
    "mailplane_agent_streams_connected",
    "mailplane_agent_stream_state",
    "mailplane_agent_reconnects_total",
    "mailplane_agent_token_fetches_total",
];

/// One agent's metrics.
pub struct Metrics {
    registry: Registry,
    jobs_in_flight: Family<KindLabels, Gauge>,
    jobs: Family<JobLabels, Counter>,
    job_duration: Family<KindLabels, Histogram>,
    streams_connected: Gauge,
    streams: Family<ServerStateLabels, Gauge>,
    reconnects: Family<ServerLabels, Counter>,
    token_fetches: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("streams_connected", &self.streams_connected.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of an agent of `servers` (their URLs, as configured): every series of a
    /// configured server, kind and state starts at zero.
    pub fn new(servers: &[String]) -> Arc<Self> {
        let mut registry = Registry::with_prefix("mailplane_agent");
        let jobs_in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "jobs_running",
            "Jobs received and not finished yet (waiting for a slot or running), by kind",
            jobs_in_flight.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register("jobs", "Finished jobs by kind and result", jobs.clone());
        let job_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        registry.register(
            "job_duration_seconds",
            "Time from receiving a job to its end, by kind",
            job_duration.clone(),
        );
        let streams_connected = Gauge::default();
        registry.register(
            "streams_connected",
            "Streams to a server that are up",
            streams_connected.clone(),
        );
        let streams = Family::<ServerStateLabels, Gauge>::default();
        registry.register(
            "stream_state",
            "Streams by the server they are about and their state (connecting, connected, backoff)",
            streams.clone(),
        );
        let reconnects = Family::<ServerLabels, Counter>::default();
        registry.register(
            "reconnects",
            "Reconnections after a lost stream or a failed round, by server",
            reconnects.clone(),
        );
        let token_fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_fetches",
            "OAuth2 token requests this agent made, by result (ok or a failure class)",
            token_fetches.clone(),
        );
        for kind in JobKind::ALL {
            jobs_in_flight.get_or_create(&KindLabels { kind }).set(0);
            let _ = job_duration.get_or_create(&KindLabels { kind });
            for result in JobResult::ALL {
                let _ = jobs.get_or_create(&JobLabels { kind, result });
            }
        }
        let _ = token_fetches.get_or_create(&ResultLabels {
            result: "ok".to_owned(),
        });
        for server in servers {
            for state in StreamState::ALL {
                streams
                    .get_or_create(&ServerStateLabels {
                        server: server.clone(),
                        state,
                    })
                    .set(0);
            }
            let _ = reconnects.get_or_create(&ServerLabels {
                server: server.clone(),
            });
        }
        Arc::new(Self {
            registry,
            jobs_in_flight,
            jobs,
            job_duration,
            streams_connected,
            streams,
            reconnects,
            token_fetches,
        })
    }

    /// The exposition of every metric in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        mailplane_exposition::encode(&self.registry, format)
    }

    /// How many streams are up now.
    pub fn streams_connected(&self) -> i64 {
        self.streams_connected.get()
    }

    /// Counts a job of `kind` in flight until the returned guard finishes or is dropped.
    pub fn job_started(self: &Arc<Self>, kind: JobKind) -> JobGuard {
        self.jobs_in_flight
            .get_or_create(&KindLabels { kind })
            .inc();
        JobGuard {
            metrics: Arc::clone(self),
            kind,
            started: Instant::now(),
            result: None,
        }
    }

    /// Counts a token request that ended with `result` (`ok` or a failure class).
    pub fn token_fetch(&self, result: &str) {
        self.token_fetches
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a reconnection of a stream about `server`.
    pub fn reconnect(&self, server: &str) {
        self.reconnects
            .get_or_create(&ServerLabels {
                server: server.to_owned(),
            })
            .inc();
    }

    /// A stream's place in `mailplane_agent_stream_state`, in no state yet.
    pub fn stream(self: &Arc<Self>) -> StreamStatus {
        StreamStatus {
            metrics: Arc::clone(self),
            now: None,
        }
    }

    fn stream_gauge(&self, server: &str, state: StreamState) -> Gauge {
        self.streams
            .get_or_create(&ServerStateLabels {
                server: server.to_owned(),
                state,
            })
            .clone()
    }
}

/// A job in flight: counted as finished with its result by [`JobGuard::finish`], or as
/// `abandoned` when dropped first (the task was aborted, or gave up without an outcome).
#[derive(Debug)]
pub struct JobGuard {
    metrics: Arc<Metrics>,
    kind: JobKind,
    started: Instant,
    result: Option<JobResult>,
}

impl JobGuard {
    /// The job ended with `result`.
    pub fn finish(mut self, result: JobResult) {
        self.result = Some(result);
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let m = &self.metrics;
        let kind = self.kind;
        m.jobs_in_flight.get_or_create(&KindLabels { kind }).dec();
        m.jobs
            .get_or_create(&JobLabels {
                kind,
                result: self.result.unwrap_or(JobResult::Abandoned),
            })
            .inc();
        m.job_duration
            .get_or_create(&KindLabels { kind })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Where one stream stands: one server and one state at a time, counted in
/// `mailplane_agent_stream_state` (and `…_streams_connected`) until it moves on or is dropped.
#[derive(Debug)]
pub struct StreamStatus {
    metrics: Arc<Metrics>,
    now: Option<(String, StreamState)>,
}

impl StreamStatus {
    /// The stream is now in `state` about `server`.
    pub fn set(&mut self, server: &str, state: StreamState) {
        if self
            .now
            .as_ref()
            .is_some_and(|(s, st)| s == server && *st == state)
        {
            return;
        }
        self.leave();
        self.metrics.stream_gauge(server, state).inc();
        if state == StreamState::Connected {
            self.metrics.streams_connected.inc();
        }
        self.now = Some((server.to_owned(), state));
    }

    /// The server the stream is about now (connecting to, holding, or backing off from).
    pub fn server(&self) -> Option<&str> {
        self.now.as_ref().map(|(s, _)| s.as_str())
    }

    fn leave(&mut self) {
        if let Some((server, state)) = self.now.take() {
            self.metrics.stream_gauge(&server, state).dec();
            if state == StreamState::Connected {
                self.metrics.streams_connected.dec();
            }
        }
    }
}

impl Drop for StreamStatus {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "https://a.example:7751";
    const B: &str = "https://b.example:7751";

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn configured_series_start_at_zero() {
        let m = Metrics::new(&[A.to_owned()]);
        let text = m.encode(Format::Text).unwrap();
        for series in [
            "mailplane_agent_jobs_running{kind=\"test\"}",
            "mailplane_agent_jobs_running{kind=\"delivery\"}",
            "mailplane_agent_job_duration_seconds_count{kind=\"test\"}",
            "mailplane_agent_streams_connected",
            "mailplane_agent_stream_state{server=\"https://a.example:7751\",state=\"backoff\"}",
            "mailplane_agent_reconnects_total{server=\"https://a.example:7751\"}",
            "mailplane_agent_jobs_total{kind=\"delivery\",result=\"abandoned\"}",
            "mailplane_agent_token_fetches_total{result=\"ok\"}",
        ] {
            assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
        }
        for family in FAMILIES {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }

    #[test]
    fn a_stream_is_counted_in_one_state_at_a_time() {
        let m = Metrics::new(&[A.to_owned(), B.to_owned()]);
        let state = |server: &str, state: &str| {
            let text = m.encode(Format::Text).unwrap();
            sample(
                &text,
                &format!("mailplane_agent_stream_state{{server=\"{server}\",state=\"{state}\"}}"),
            )
        };
        let mut s0 = m.stream();
        let mut s1 = m.stream();
        s0.set(A, StreamState::Connecting);
        s1.set(A, StreamState::Connecting);
        assert_eq!(state(A, "connecting"), Some(2.0));
        s0.set(A, StreamState::Connected);
        s0.set(A, StreamState::Connected);
        s1.set(B, StreamState::Connected);
        assert_eq!(state(A, "connecting"), Some(0.0));
        assert_eq!(state(A, "connected"), Some(1.0));
        assert_eq!(state(B, "connected"), Some(1.0));
        assert_eq!(m.streams_connected(), 2);
        s0.set(A, StreamState::Backoff);
        assert_eq!(s0.server(), Some(A));
        assert_eq!(m.streams_connected(), 1);
        assert_eq!(state(A, "backoff"), Some(1.0));
        drop(s1);
        drop(s0);
        assert_eq!(m.streams_connected(), 0);
        assert_eq!(state(A, "backoff"), Some(0.0));
        assert_eq!(state(B, "connected"), Some(0.0));
    }

    #[test]
    fn a_job_dropped_unfinished_counts_as_abandoned() {
        let m = Metrics::new(&[]);
        let ok = m.job_started(JobKind::Test);
        let lost = m.job_started(JobKind::Delivery);
        let text = m.encode(Format::Text).unwrap();
        assert_eq!(
            sample(&text, "mailplane_agent_jobs_running{kind=\"test\"}"),
            Some(1.0)
        );
        ok.finish(JobResult::Ok);
        drop(lost);
        m.token_fetch("ok");
        let text = m.encode(Format::Text).unwrap();
        for (series, want) in [
            ("mailplane_agent_jobs_running{kind=\"test\"}", 0.0),
            ("mailplane_agent_jobs_running{kind=\"delivery\"}", 0.0),
            (
                "mailplane_agent_jobs_total{kind=\"test\",result=\"ok\"}",
                1.0,
            ),
            (
                "mailplane_agent_jobs_total{kind=\"delivery\",result=\"abandoned\"}",
                1.0,
            ),
            (
                "mailplane_agent_job_duration_seconds_count{kind=\"test\"}",
                1.0,
            ),
            ("mailplane_agent_token_fetches_total{result=\"ok\"}", 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        }
    }
}
