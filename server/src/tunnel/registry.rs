//! The agents connected to this server, and job dispatch to them.
//!
//! Each live stream has an outbound channel and a table of the jobs it runs. An agent may hold
//! several streams here at once (`mailplane-agent --connections`), each its own entry, keyed by
//! a per-stream session id. A job goes to the least-loaded live replica of its connector (its
//! load counted over all its streams), on that agent's least-loaded stream; when a stream
//! ends, every job it held sees its update channel close, and the runner decides whether to
//! retry. Revoking an agent closes all its streams.

use crate::domain::{AgentName, ConnectorId, Micros, now_micros};
use mailplane_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tonic::Status;

/// The sending half of an agent's stream. Messages are boxed: a channel allocates its slots in
/// blocks, and an idle agent should not hold a block of full-size jobs (this halves the memory
/// of an idle agent).
pub type Outbound = mpsc::Sender<Box<Result<pb::ConnectResponse, Status>>>;

/// Updates of one job, as the agent sends them.
pub type Updates = mpsc::Receiver<pb::job_update::Update>;

/// The most updates of one job waiting to be read. A real session sends a few dozen over its
/// whole life, and its runner reads them as they come; an agent that gets this far ahead
/// floods, and its job is closed (the runner sees it lost), so that it cannot make the
/// server hold an unbounded backlog.
pub const MAX_PENDING_UPDATES: usize = 256;

/// One live stream of an agent to this server.
pub struct LiveAgent {
    /// Its name.
    pub name: AgentName,
    /// The host it reported.
    pub hostname: String,
    /// The version it reported.
    pub version: String,
    /// When its stream connected.
    pub connected_since: Micros,
    /// The most jobs it takes at once (over all its streams).
    pub max_jobs: u32,
    /// Which of the agent's streams this is (`AgentHello.stream`).
    pub stream: u32,
    session: u64,
    last_heartbeat: AtomicI64,
    in_flight: AtomicU32,
    draining: AtomicBool,
    outbound: Outbound,
    jobs: Mutex<HashMap<String, RoutedJob>>,
    close: watch::Sender<bool>,
}

/// A job an agent runs: where its updates go, and the credential whose tokens it gets itself
/// (`JobAuth.token_grant`), whose rotated refresh token it may send back.
struct RoutedJob {
    tx: mpsc::Sender<pb::job_update::Update>,
    token_credential: Option<String>,
}

impl LiveAgent {
    /// A live agent for a new stream; `close` is signalled to end the stream.
    pub fn new(
        name: AgentName,
        hello: &pb::AgentHello,
        outbound: Outbound,
        close: watch::Sender<bool>,
    ) -> Self {
        static SESSIONS: AtomicU64 = AtomicU64::new(1);
        Self {
            name,
            hostname: hello.hostname.clone(),
            version: hello.version.clone(),
            connected_since: now_micros(),
            max_jobs: hello.max_concurrent_jobs.clamp(1, 1024),
            stream: hello.stream,
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            last_heartbeat: AtomicI64::new(now_micros()),
            in_flight: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            outbound,
            jobs: Mutex::new(HashMap::new()),
            close,
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoutedJob>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This stream's session number, unique in this process.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Jobs it runs now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When it was last heard from.
    pub fn last_heartbeat(&self) -> Micros {
        self.last_heartbeat.load(Ordering::Relaxed)
    }

    /// Records that it was heard from.
    pub fn heard(&self) {
        self.last_heartbeat.store(now_micros(), Ordering::Relaxed);
    }

    /// Whether it is draining (takes no new jobs).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks it draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Hands an update from the agent to the job's runner, without waiting; false if the job
    /// is unknown. A job with [`MAX_PENDING_UPDATES`] unread updates is closed: its runner
    /// sees it lost, and later updates of it are dropped.
    pub fn route(&self, job_id: &str, update: pb::job_update::Update) -> bool {
        let finished = matches!(update, pb::job_update::Update::Finished(_));
        let mut jobs = self.jobs();
        let Some(job) = jobs.get(job_id) else {
            return false;
        };
        match job.tx.try_send(update) {
            Ok(()) => {
                if finished {
                    jobs.remove(job_id);
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                jobs.remove(job_id);
                tracing::warn!(
                    agent = %self.name,
                    job = job_id,
                    "the agent sent more than {MAX_PENDING_UPDATES} updates of one job ahead of \
                     the server; the job is closed and counts as lost"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                jobs.remove(job_id);
                false
            }
        }
    }

    /// The credential (`credentials/{id}`) whose tokens job `job_id` gets on the agent, if
    /// the job runs here and carries a token grant.
    pub fn token_credential(&self, job_id: &str) -> Option<String> {
        self.jobs()
            .get(job_id)
            .and_then(|j| j.token_credential.clone())
    }

    /// Ends its stream (revocation).
    pub fn close(&self) {
        let _ = self.close.send(true);
    }
}

/// The live streams of this server's agents.
#[derive(Default)]
pub struct Registry {
    /// Fired when a stream registers (work for its connector may now run here).
    connected: Notify,
    /// By session id: an agent may hold several streams.
    agents: Mutex<HashMap<u64, Arc<LiveAgent>>>,
    changed: Notify,
}

/// A job handed to an agent. Dropping it frees the agent's slot.
pub struct Dispatched {
    /// The agent running it.
    pub agent: Arc<LiveAgent>,
    /// The job's updates; closed without `Finished` when the agent went away.
    pub updates: Updates,
    job_id: String,
    registry: Arc<Registry>,
}

/// How an agent's run of a job ended.
pub enum JobEnd {
    /// The agent reported the outcome.
    Finished(Box<pb::JobOutcome>),
    /// The agent went away; `data_started` says whether DATA had begun (the relay may then
    /// have the message).
    Lost {
        /// Whether the agent had reported DATA started.
        data_started: bool,
    },
}

impl Dispatched {
    /// Waits for the job's outcome, handing every progress update to `progress` as it comes,
    /// and noting whether DATA started.
    pub async fn follow(&mut self, mut progress: impl FnMut(pb::job_update::Update)) -> JobEnd {
        let mut data_started = false;
        while let Some(update) = self.updates.recv().await {
            let data = pb::Phase::Data as i32;
            match update {
                pb::job_update::Update::Finished(outcome) => {
                    return JobEnd::Finished(Box::new(outcome));
                }
                pb::job_update::Update::PhaseStarted(p) => data_started |= p == data,
                pb::job_update::Update::PhaseFinished(ref r) => data_started |= r.phase == data,
                // Stored where the stream is (`tunnel::service`), never routed.
                pb::job_update::Update::RefreshTokenRotated(_) => continue,
            }
            progress(update);
        }
        JobEnd::Lost { data_started }
    }
}

impl Drop for Dispatched {
    fn drop(&mut self) {
        self.agent.jobs().remove(&self.job_id);
        self.agent.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.registry.changed.notify_waiters();
    }
}

impl Registry {
    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<LiveAgent>>> {
        self.agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an agent's new stream, beside its other streams; an older stream with the same
    /// number is closed (the agent reconnected, and the old link may not have noticed yet).
    pub fn register(&self, agent: Arc<LiveAgent>) {
        let mut agents = self.agents();
        let stale: Vec<u64> = agents
            .values()
            .filter(|a| a.name.id == agent.name.id && a.stream == agent.stream)
            .map(|a| a.session)
            .collect();
        let stale: Vec<Arc<LiveAgent>> = stale.iter().filter_map(|s| agents.remove(s)).collect();
        agents.insert(agent.session, agent);
        drop(agents);
        for old in stale {
            old.close();
            old.jobs().clear();
        }
        self.changed.notify_waiters();
        self.connected.notify_waiters();
    }

    /// Removes a stream and fails its jobs over.
    pub fn unregister(&self, agent: &LiveAgent) {
        self.agents().remove(&agent.session);
        // Closing the job channels tells each runner that its agent is gone.
        agent.jobs().clear();
        self.changed.notify_waiters();
    }

    /// The live streams of the agent with this id.
    pub fn streams(&self, agent_id: i64) -> Vec<Arc<LiveAgent>> {
        self.agents()
            .values()
            .filter(|a| a.name.id == agent_id)
            .cloned()
            .collect()
    }

    /// Closes every agent's stream (shutdown).
    pub fn close_all(&self) {
        for agent in self.agents().values() {
            agent.close();
        }
    }

    /// Closes every stream of an agent that it has here.
    pub fn close(&self, agent_id: i64) {
        for agent in self.streams(agent_id) {
            agent.close();
        }
    }

    /// Waits until an agent's stream registers here.
    pub async fn agent_connected(&self) {
        self.connected.notified().await;
    }

    /// Waits until an agent connects or leaves, or a job ends (a slot may be free).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Whether an agent of `connector` here takes a job now.
    pub fn has_capacity(&self, connector: ConnectorId) -> bool {
        self.pick(connector).is_some()
    }

    /// The stream of the least-loaded agent of `connector` that takes jobs: an agent's load
    /// and limit count all its streams (its job slots are shared), and among its streams the
    /// least-loaded one that is not draining takes the job.
    fn pick(&self, connector: ConnectorId) -> Option<Arc<LiveAgent>> {
        let agents = self.agents();
        let mut load: HashMap<i64, u32> = HashMap::new();
        for a in agents.values().filter(|a| a.name.connector == connector) {
            *load.entry(a.name.id).or_default() += a.in_flight();
        }
        agents
            .values()
            .filter(|a| a.name.connector == connector && !a.is_draining())
            .filter(|a| load.get(&a.name.id).copied().unwrap_or(0) < a.max_jobs)
            .min_by_key(|a| {
                let agent_load = load.get(&a.name.id).copied().unwrap_or(0);
                (agent_load, a.name.id, a.in_flight(), a.session)
            })
            .cloned()
    }

    /// Sends `job` to the least-loaded live replica of `connector`, waiting up to `wait` for one
    /// to be there. `None` when none came.
    pub async fn dispatch(
        self: &Arc<Self>,
        connector: ConnectorId,
        job: pb::SmtpJob,
        wait: Duration,
    ) -> Option<Dispatched> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(agent) = self.pick(connector) {
                let (tx, updates) = mpsc::channel(MAX_PENDING_UPDATES);
                let token_credential = job
                    .auth
                    .as_ref()
                    .and_then(|a| a.token_grant.as_ref())
                    .map(|g| g.credential.clone());
                agent.jobs().insert(
                    job.job_id.clone(),
                    RoutedJob {
                        tx,
                        token_credential,
                    },
                );
                agent.in_flight.fetch_add(1, Ordering::Relaxed);
                let dispatched = Dispatched {
                    agent: Arc::clone(&agent),
                    updates,
                    job_id: job.job_id.clone(),
                    registry: Arc::clone(self),
                };
                let message = pb::ConnectResponse {
                    event: Some(pb::connect_response::Event::Job(job.clone())),
                };
                if agent.outbound.send(Box::new(Ok(message))).await.is_ok() {
                    return Some(dispatched);
                }
                // Its stream is gone; forget it and try another.
                drop(dispatched);
                self.unregister(&agent);
                continue;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// How many agent streams are live here, and the jobs they run (for the metrics).
    pub fn load(&self) -> (usize, u64) {
        let agents = self.agents();
        let jobs = agents.values().map(|a| u64::from(a.in_flight())).sum();
        (agents.len(), jobs)
    }

    /// The live streams of `connector`'s agents (an agent with several streams here appears
    /// once per stream).
    pub fn live(&self, connector: ConnectorId) -> Vec<Arc<LiveAgent>> {
        self.agents()
            .values()
            .filter(|a| a.name.connector == connector)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
