//! Connector jobs from other replicas (PostgreSQL): a replica that holds streams of a
//! connector's agents claims the jobs queued for that connector, with a lease it renews while
//! they run, runs each on one of its agents exactly as a job of its own, and writes the
//! agent's updates and the end back for the replica that queued it
//! (`crate::smtp_tests::handoff`).
//!
//! It wakes on a queued job's `NOTIFY`, when an agent connects here or a job here ends, and
//! every [`JOB_TICK`], when it also renews its leases and forgets jobs long finished.

use super::registry::{JobEnd, Registry};
use crate::domain::job::{ClaimedJob, JOB_LEASE, JOB_TICK};
use crate::domain::replica::ReplicaId;
use crate::domain::{ConnectorId, micros, now_micros};
use crate::keys::Keys;
use crate::store::Store;
use crate::store::jobs::JobEndWrite;
use crate::store::notify::{Notice, Notifier};
use mailplane_proto::v1 as pb;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a running job's updates are written for its creator.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// Jobs finished this long ago whose creator never came back for them are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What the follower of a job hands its writer.
enum Item {
    Update(Box<pb::job_update::Update>),
    End(JobEnd),
}

/// The additional data a connector job is sealed with.
pub fn job_aad(connector: ConnectorId) -> Vec<u8> {
    crate::crypto::aad::job(connector.0)
}

/// The pump of one replica.
pub struct Pump {
    /// The database.
    pub store: Arc<Store>,
    /// Opens the sealed jobs.
    pub keys: Arc<Keys>,
    /// This replica's agents.
    pub registry: Arc<Registry>,
    /// This replica.
    pub me: ReplicaId,
    /// The notices of every replica.
    pub notifier: Arc<Notifier>,
    /// How long to wait for a free agent here once a job is claimed.
    pub wait: Duration,
}

impl Pump {
    /// Runs until `cancel`; the jobs it started finish (or end lost) before it returns.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tasks = TaskTracker::new();
        let mut notices = self.notifier.subscribe();
        let mut tick = tokio::time::interval(JOB_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let which = tokio::select! {
                () = cancel.cancelled() => break,
                notice = notices.recv() => match notice {
                    Ok(Notice::Jobs(c)) => Some(ConnectorId(c)),
                    Ok(Notice::Test(_) | Notice::Job(_) | Notice::Outbox) => continue,
                    Ok(Notice::Resync) | Err(_) => None,
                },
                () = self.registry.changed() => None,
                _ = tick.tick() => {
                    self.housekeeping().await;
                    None
                }
            };
            let connectors = match which {
                Some(c) => vec![c],
                None => match self.store.connectors_with_queued_jobs().await {
                    Ok(cs) => cs,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look for queued connector jobs");
                        continue;
                    }
                },
            };
            for connector in connectors {
                while self.registry.has_capacity(connector) {
                    let lease = now_micros() + micros(JOB_LEASE);
                    match self.store.claim_job(connector, &self.me, lease).await {
                        Ok(Some(job)) => {
                            tracing::info!(job = %job.id, %connector, "claimed a connector job of another replica");
                            tasks.spawn(Arc::clone(&self).run_job(job));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot claim a connector job");
                            break;
                        }
                    }
                }
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Renews this replica's leases and forgets jobs long finished.
    async fn housekeeping(&self) {
        let lease = now_micros() + micros(JOB_LEASE);
        if let Err(e) = self.store.renew_job_leases(&self.me, lease).await {
            tracing::warn!(error = %e, "cannot renew connector job leases");
        }
        if let Err(e) = self
            .store
            .forget_ended_jobs(now_micros() - micros(FORGET_AFTER))
            .await
        {
            tracing::warn!(error = %e, "cannot forget old connector jobs");
        }
    }

    /// Runs one claimed job on an agent here, writing its updates and end back.
    async fn run_job(self: Arc<Self>, claimed: ClaimedJob) {
        let id = claimed.id;
        let job = match self.open(&claimed).await {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot open a connector job");
                let lost = JobEndWrite {
                    outcome: None,
                    data_started: false,
                };
                if let Err(e) = self
                    .store
                    .add_job_updates(id, &[], false, Some(&lost))
                    .await
                {
                    tracing::warn!(job = %id, error = %e, "cannot record the end of a connector job");
                }
                return;
            }
        };
        let job_id = job.job_id.clone();
        let Some(mut dispatched) = self
            .registry
            .dispatch(claimed.connector, job, self.wait)
            .await
        else {
            // The agents here got busy or left: let another replica take it.
            if let Err(e) = self.store.requeue_job(id, claimed.connector).await {
                tracing::warn!(job = %id, error = %e, "cannot queue a connector job again");
            }
            return;
        };
        let agent = dispatched.agent.name.to_string();
        tracing::debug!(job = %id, %agent, "connector job dispatched to agent");
        if let Err(e) = self.store.set_job_agent(id, &agent).await {
            tracing::warn!(job = %id, error = %e, "cannot record the job's agent");
        }
        // The end goes in one write with the last updates.
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        let follow = async move {
            let updates = tx.clone();
            let end = dispatched
                .follow(move |u| drop(updates.send(Item::Update(Box::new(u)))))
                .await;
            drop(dispatched);
            let _ = tx.send(Item::End(end));
        };
        let write = async {
            let mut seq = 0;
            let mut data_started = false;
            while let Some(first) = rx.recv().await {
                // Updates are written at most every PROGRESS_EVERY (live enough for a person
                // watching), and the end at once with whatever is left: a short session costs
                // one write.
                let mut batch = vec![first];
                let flush = tokio::time::Instant::now() + PROGRESS_EVERY;
                while !matches!(batch.last(), Some(Item::End(_))) {
                    tokio::select! {
                        more = rx.recv() => match more {
                            Some(item) => batch.push(item),
                            None => break,
                        },
                        () = tokio::time::sleep_until(flush) => break,
                    }
                }
                let mut starts_data = false;
                let mut end = None;
                let mut rows = Vec::new();
                for item in batch {
                    match item {
                        Item::Update(update) => {
                            seq += 1;
                            starts_data |= matches!(
                                &*update,
                                pb::job_update::Update::PhaseStarted(p) if *p == pb::Phase::Data as i32
                            );
                            let body = pb::JobUpdate {
                                job_id: job_id.clone(),
                                update: Some(*update),
                            };
                            rows.push((seq, body.encode_to_vec()));
                        }
                        Item::End(JobEnd::Finished(outcome)) => {
                            end = Some(JobEndWrite {
                                outcome: Some(outcome.encode_to_vec()),
                                data_started: false,
                            });
                        }
                        Item::End(JobEnd::Lost { data_started }) => {
                            end = Some(JobEndWrite {
                                outcome: None,
                                data_started,
                            });
                        }
                    }
                }
                data_started |= starts_data;
                let last = end.is_some();
                if let Err(e) = self
                    .store
                    .add_job_updates(id, &rows, starts_data, end.as_ref())
                    .await
                {
                    tracing::warn!(job = %id, error = %e, "cannot record the job's progress");
                }
                if last {
                    tracing::debug!(job = %id, "connector job end recorded");
                    return;
                }
            }
            // The follower never ends without its end; should it, the job is lost.
            let end = JobEndWrite {
                outcome: None,
                data_started,
            };
            if let Err(e) = self.store.add_job_updates(id, &[], false, Some(&end)).await {
                tracing::warn!(job = %id, error = %e, "cannot record the end of a connector job");
            }
        };
        tokio::join!(follow, write);
    }

    async fn open(&self, claimed: &ClaimedJob) -> Result<pb::SmtpJob, String> {
        let bytes = self
            .keys
            .open(&job_aad(claimed.connector), &claimed.sealed)
            .await
            .map_err(|e| e.to_string())?;
        pb::SmtpJob::decode(bytes.as_slice()).map_err(|e| e.to_string())
    }
}
