//! The connector path through the database, for a test whose connector has no agent
//! streaming to this replica (PostgreSQL, several replicas): the job is queued in the database
//! (sealed: it carries the secret), a replica holding one of the connector's agents claims and
//! runs it (`crate::tunnel::pump`), and this replica follows its updates as that replica
//! announces them, publishing them to the test's watchers as if the agent were here.
//!
//! The rules are the connector's: before DATA a lost agent (or a replica whose lease ran out)
//! hands the job to another, up to the [`FailoverPolicy`]; after DATA the test ends
//! `CONNECTOR_LOST`; with no agent anywhere within the wait, `CONNECTOR_OFFLINE`.

use super::record::{ExecutedBy, FailureClass};
use super::remote::{FailoverPolicy, gave_up, lost_after_data, offline, publish, retried};
use super::watch::LiveTest;
use super::{fail, finish};
use crate::domain::job::{JOB_TICK, JobId, JobState, JobStatus};
use crate::domain::{ConnectorId, TestName, now_micros};
use crate::error::Result;
use crate::keys::Keys;
use crate::store::Store;
use crate::store::notify::{Notice, Notifier};
use crate::tunnel::pump::job_aad;
use mailplane_proto::v1 as pb;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// What handing a job over through the database needs.
pub struct Handoff<'a> {
    /// The database.
    pub store: &'a Arc<Store>,
    /// Seals the job (under the primary key).
    pub keys: &'a Keys,
    /// Every replica's notices.
    pub notifier: &'a Arc<Notifier>,
    /// Owns the clean-up that follows a job (off the test's path).
    pub tasks: &'a TaskTracker,
}

/// What the followed job came to.
enum Outcome {
    Done,
    Requeued,
}

impl Handoff<'_> {
    /// Runs `job` through an agent streaming to another replica; records the end on `live`.
    pub async fn run(
        &self,
        name: TestName,
        connector: ConnectorId,
        job: &pb::SmtpJob,
        wait: Duration,
        failover: FailoverPolicy,
        live: &LiveTest,
    ) {
        // Subscribed before the job exists, so that no announcement of it is missed.
        let mut notices = self.notifier.subscribe();
        let id = match self.enqueue(name, connector, job).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(test = %name, error = %e, "cannot queue a connector job");
                fail(
                    live,
                    FailureClass::ConnectorOffline,
                    None,
                    format!("the job could not be handed to another replica: {e}"),
                    "check the server's database",
                );
                return;
            }
        };
        tracing::info!(test = %name, job = %id, "no agent of the connector here: job queued for another replica");
        let mut follower = Follower {
            seq: 0,
            agent: String::new(),
            lost: Vec::new(),
            offline_at: Instant::now() + wait,
        };
        loop {
            let status = match self.store.job_status(id, follower.seq).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "cannot read the connector job");
                    fail(
                        live,
                        FailureClass::ConnectorLost,
                        None,
                        format!("the job's state could not be read: {e}"),
                        "check the server's database",
                    );
                    return;
                }
            };
            let state = status.state;
            match follower.step(status, wait, failover, live, connector) {
                Some(Outcome::Done) => break,
                Some(Outcome::Requeued) => {
                    if let Err(e) = self.store.requeue_job(id, connector).await {
                        tracing::warn!(job = %id, error = %e, "cannot queue the job again");
                    }
                    continue;
                }
                None => {}
            }
            changed(&mut notices, id, follower.next_check(state)).await;
        }
        let store = Arc::clone(self.store);
        self.tasks.spawn(async move {
            if let Err(e) = store.delete_job(id).await {
                tracing::warn!(job = %id, error = %e, "cannot forget a finished connector job");
            }
        });
    }

    async fn enqueue(
        &self,
        name: TestName,
        connector: ConnectorId,
        job: &pb::SmtpJob,
    ) -> Result<JobId> {
        let sealed = self
            .keys
            .primary()
            .await?
            .seal(&job_aad(connector), &job.encode_to_vec())?;
        self.store
            .enqueue_job(connector, &name.to_string(), &sealed)
            .await
    }
}

/// Where this replica is in following a job.
struct Follower {
    seq: i64,
    agent: String,
    lost: Vec<String>,
    /// While queued: when to give up waiting for an agent.
    offline_at: Instant,
}

impl Follower {
    /// Publishes what is new, and decides: `Done` (recorded on `live`), `Requeued` (handed to
    /// another agent), or `None` to keep waiting.
    fn step(
        &mut self,
        status: JobStatus,
        wait: Duration,
        failover: FailoverPolicy,
        live: &LiveTest,
        connector: ConnectorId,
    ) -> Option<Outcome> {
        for (seq, body) in &status.updates {
            self.seq = *seq;
            if let Ok(pb::JobUpdate {
                update: Some(update),
                ..
            }) = pb::JobUpdate::decode(body.as_slice())
            {
                publish(update, live);
            }
        }
        if !status.agent.is_empty() && status.agent != self.agent {
            self.agent.clone_from(&status.agent);
            let agent = status.agent.clone();
            live.update(|t| t.executed_by = ExecutedBy::Agent(agent));
        }
        let lost = status.state == JobState::Lost || status.lease_expired(now_micros());
        match status.state {
            JobState::Finished => {
                tracing::debug!("connector job finished elsewhere");
                let outcome = status
                    .outcome
                    .as_deref()
                    .and_then(|b| pb::JobOutcome::decode(b).ok())
                    .unwrap_or_default();
                let note = (!self.lost.is_empty()).then(|| retried(&self.lost));
                finish(live, outcome, note);
                Some(Outcome::Done)
            }
            _ if lost && status.data_started => {
                lost_after_data(live, &self.agent);
                Some(Outcome::Done)
            }
            _ if lost => {
                self.lost.push(self.agent.clone());
                if failover.exhausted(&self.lost) {
                    gave_up(live, &self.lost);
                    return Some(Outcome::Done);
                }
                self.offline_at = Instant::now() + wait;
                Some(Outcome::Requeued)
            }
            JobState::Queued if Instant::now() >= self.offline_at => {
                let when = format!("on any replica within {wait:?}");
                offline(live, connector, &when, &self.lost);
                Some(Outcome::Done)
            }
            JobState::Queued | JobState::Claimed | JobState::Lost => None,
        }
    }

    /// When to read the job again without an announcement: the next lease check, or, while
    /// the job waits for an agent, the offline deadline if that comes first.
    fn next_check(&self, state: JobState) -> Instant {
        let tick = Instant::now() + JOB_TICK;
        match state {
            JobState::Queued => tick.min(self.offline_at),
            JobState::Claimed | JobState::Finished | JobState::Lost => tick,
        }
    }
}

/// Waits for an announcement about job `id` (or a resync), or until `until`.
async fn changed(notices: &mut broadcast::Receiver<Notice>, id: JobId, until: Instant) {
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            notice = notices.recv() => match notice {
                Ok(Notice::Job(j)) if j == id.0 => return,
                Ok(Notice::Test(_) | Notice::Jobs(_) | Notice::Job(_) | Notice::Outbox) => {}
                Ok(Notice::Resync) | Err(_) => return,
            },
        }
    }
}
