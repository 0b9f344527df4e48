//! Prometheus metrics (`--metrics-listen`): what happened since the process started (API
//! calls, tests, delivery attempts, token requests), counted where it happens, and what the
//! database and the agent streams hold now (messages by state, each account's queue, live
//! agents), read when Prometheus scrapes. Served with `/healthz` and `/readyz` by
//! [`http`]. Labels stay bounded: an RPC method the API does not have is `unknown`, an
//! account is its id, and a recipient or an address never is a label.

pub mod http;
pub mod layer;

use mailplane_exposition::Format;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

/// `method` and `code` of an API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The RPC, e.g. `/mailplane.v1.SmtpAccountService/ListAccounts`, or `unknown`.
    pub method: String,
    /// The gRPC status code name, e.g. `Ok`, `InvalidArgument`.
    pub code: String,
}

/// `method` alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The RPC.
    pub method: String,
}

/// How a test ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TestLabels {
    /// `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub result: String,
    /// The failure class (`FAILURE_CLASS_…`), empty on success.
    pub failure_class: String,
}

/// One phase of a session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `PHASE_CONNECT`, `PHASE_TLS_HANDSHAKE`, …
    pub phase: String,
}

/// How a delivery attempt ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `sent`, `transient`, `permanent`, `ambiguous` or `not_sent`.
    pub outcome: String,
    /// The relay's last reply: `2xx`, `4xx`, `5xx`, or `none`.
    pub reply_class: String,
}

/// A result, e.g. of a token request: `ok` or a failure class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, or the failure class (`FAILURE_CLASS_…`).
    pub result: String,
}

/// A message state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `QUEUED`, `SENDING`, `DEFERRED`.
    pub state: String,
}

/// An account.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The account's id.
    pub account: String,
}

/// The names of the metric families, as queries use them (counters with `_total`,
/// histograms by their base name): the dashboard and alert rules in `deploy/` use only these.
pub const FAMILIES: [&str; 13] = [
    "mailplane_api_calls_total",
    "mailplane_api_call_duration_seconds",
    "mailplane_tests_total",
    "mailplane_test_phase_duration_seconds",
    "mailplane_delivery_attempts_total",
    "mailplane_oauth_token_requests_total",
    "mailplane_messages",
    "mailplane_queue_depth",
    "mailplane_queue_oldest_age_seconds",
    "mailplane_agent_streams",
    "mailplane_agent_jobs_in_flight",
    "mailplane_connector_agents",
    "up",
];

/// A network connector.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    /// The connector's id.
    pub connector: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// API calls by method and code.
    pub api_calls: Family<CallLabels, Counter>,
    /// API call latency by method.
    pub api_latency: Family<MethodLabels, Histogram>,
    /// Finished tests by result and failure class.
    pub tests: Family<TestLabels, Counter>,
    /// Session phase durations.
    pub phase_duration: Family<PhaseLabels, Histogram>,
    /// Delivery attempts by outcome and reply class.
    pub attempts: Family<AttemptLabels, Counter>,
    /// OAuth2 token requests by result.
    pub token_requests: Family<ResultLabels, Counter>,
    /// Unfinished messages by state (at scrape time).
    pub messages: Family<StateLabels, Gauge>,
    /// Messages waiting per account (queued, sending or deferred; at scrape time).
    pub queue_depth: Family<AccountLabels, Gauge>,
    /// Age of each account's oldest waiting message (at scrape time).
    pub queue_oldest: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    /// Agent streams connected to this replica.
    pub agent_streams: Gauge,
    /// Jobs running on the agents connected to this replica.
    pub agent_jobs: Gauge,
    /// Each connector's agents connected to any replica (at scrape time).
    pub connector_agents: Family<ConnectorLabels, Gauge>,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("mailplane");
        let api_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "api_calls",
            "API calls by method and gRPC code",
            api_calls.clone(),
        );
        let api_latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "api_call_duration_seconds",
            "API call latency until the response headers, by method",
            api_latency.clone(),
        );
        let tests = Family::<TestLabels, Counter>::default();
        registry.register(
            "tests",
            "Finished test e-mails by result and failure class",
            tests.clone(),
        );
        let phase_duration = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "test_phase_duration_seconds",
            "Duration of each phase of test e-mail sessions",
            phase_duration.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by outcome and the class of the relay's last reply",
            attempts.clone(),
        );
        let token_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "oauth_token_requests",
            "OAuth2 token requests this server made, by result",
            token_requests.clone(),
        );
        let messages = Family::<StateLabels, Gauge>::default();
        registry.register("messages", "Unfinished messages by state", messages.clone());
        let queue_depth = Family::<AccountLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Messages waiting (queued, sending or deferred) per account",
            queue_depth.clone(),
        );
        let queue_oldest = Family::<AccountLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest waiting message per account",
            queue_oldest.clone(),
        );
        let agent_streams = Gauge::default();
        registry.register(
            "agent_streams",
            "Agent streams connected to this replica",
            agent_streams.clone(),
        );
        let agent_jobs = Gauge::default();
        registry.register(
            "agent_jobs_in_flight",
            "Jobs running on the agents connected to this replica",
            agent_jobs.clone(),
        );
        let connector_agents = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_agents",
            "Agents of each network connector connected to any replica",
            connector_agents.clone(),
        );
        Self {
            registry,
            api_calls,
            api_latency,
            tests,
            phase_duration,
            attempts,
            token_requests,
            messages,
            queue_depth,
            queue_oldest,
            agent_streams,
            agent_jobs,
            connector_agents,
        }
    }

    /// The exposition of every metric in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        mailplane_exposition::encode(&self.registry, format)
    }
}

/// The process's metrics (counted whether or not they are served).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts a finished test: its `result` (`SUCCEEDED`, `FAILED`, `CANCELLED`), its failure
/// class (empty on success), and each phase's name and duration.
pub fn test_finished(
    result: &str,
    failure_class: &str,
    phases: impl IntoIterator<Item = (&'static str, f64)>,
) {
    let m = global();
    m.tests
        .get_or_create(&TestLabels {
            result: result.to_owned(),
            failure_class: failure_class.to_owned(),
        })
        .inc();
    for (phase, seconds) in phases {
        m.phase_duration
            .get_or_create(&PhaseLabels {
                phase: phase.to_owned(),
            })
            .observe(seconds);
    }
}

/// Counts a delivery attempt that ended with `outcome` after the relay's reply `code`.
pub fn delivery_attempt(outcome: &str, code: Option<u16>) {
    let reply_class = match code {
        Some(c @ 200..=599) => format!("{}xx", c / 100),
        _ => "none".to_owned(),
    };
    global()
        .attempts
        .get_or_create(&AttemptLabels {
            outcome: outcome.to_owned(),
            reply_class,
        })
        .inc();
}

/// Counts an OAuth2 token request that ended with `result` (`ok` or a failure class).
pub fn token_request(result: &str) {
    global()
        .token_requests
        .get_or_create(&ResultLabels {
            result: result.to_owned(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_families_appear_in_the_exposition() {
        delivery_attempt("sent", Some(250));
        token_request("ok");
        let text = global().encode(Format::OpenMetrics).unwrap();
        for name in [
            "mailplane_delivery_attempts_total{outcome=\"sent\",reply_class=\"2xx\"}",
            "mailplane_oauth_token_requests_total{result=\"ok\"}",
            "mailplane_agent_streams ",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn every_listed_family_is_exposed() {
        let m = global();
        let labels = |s: &str| AccountLabels {
            account: s.to_owned(),
        };
        m.api_calls
            .get_or_create(&CallLabels {
                method: "unknown".into(),
                code: "Ok".into(),
            })
            .inc();
        m.api_latency
            .get_or_create(&MethodLabels {
                method: "unknown".into(),
            })
            .observe(0.1);
        test_finished("SUCCEEDED", "", [("PHASE_BANNER", 0.1)]);
        m.messages
            .get_or_create(&StateLabels {
                state: "QUEUED".into(),
            })
            .set(0);
        m.queue_depth.get_or_create(&labels("1")).set(0);
        m.queue_oldest.get_or_create(&labels("1")).set(0.0);
        m.connector_agents
            .get_or_create(&ConnectorLabels {
                connector: "1".into(),
            })
            .set(0);
        delivery_attempt("sent", Some(250));
        token_request("ok");
        let text = global().encode(Format::Text).unwrap();
        for family in FAMILIES.iter().filter(|f| **f != "up") {
            assert!(
                text.lines().any(|l| l.starts_with(family)),
                "{family} is not exposed:\n{text}"
            );
        }
    }
}
