//! Connector jobs from other replicas (PostgreSQL): a replica that holds streams of a
//! connector's agents claims the jobs queued for that connector, with a lease it renews while
//! they run, runs each on one of its agents exactly as a job of its own, and writes the
//! agent's updates and the end back for the replica that queued it
//! (`crate::smtp_tests::handoff`).
//!
//! It wakes on a queued job's `NOTIFY`, when an agent connects here or a job here ends, and
//! every [`JOB_TICK`], when it also renews its leases and forgets jobs long finished.

use super::registry::{JobEnd, Registry};
use crate::crypto::{Cipher, Sealed};
use crate::domain::job::{ClaimedJob, JOB_LEASE, JOB_TICK, JobId};
use crate::domain::replica::ReplicaId;
use crate::domain::{ConnectorId, micros, now_micros};
use crate::store::Store;
use crate::store::notify::{Notice, Notifier};
use mailplane_proto::v1 as pb;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Jobs finished this long ago whose creator never came back for them are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The additional data a connector job is sealed with.
pub fn job_aad(connector: ConnectorId) -> Vec<u8> {
    format!("{connector}/jobs").into_bytes()
}

/// The pump of one replica.
pub struct Pump {
    /// The database.
    pub store: Arc<Store>,
    /// Opens the sealed jobs.
    pub cipher: Cipher,
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
                    Ok(Notice::Test(_) | Notice::Job(_)) => continue,
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
        let job = match self.open(&claimed) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot open a connector job");
                return self.end(id, None, false).await;
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
        if let Err(e) = self.store.set_job_agent(id, &agent).await {
            tracing::warn!(job = %id, error = %e, "cannot record the job's agent");
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<pb::job_update::Update>();
        let follow = async move {
            let end = dispatched.follow(move |u| drop(tx.send(u))).await;
            drop(dispatched);
            end
        };
        let write = async {
            let mut seq = 0;
            let mut data_started = false;
            while let Some(update) = rx.recv().await {
                seq += 1;
                let starts_data = matches!(
                    &update,
                    pb::job_update::Update::PhaseStarted(p) if *p == pb::Phase::Data as i32
                );
                data_started |= starts_data;
                let body = pb::JobUpdate {
                    job_id: job_id.clone(),
                    update: Some(update),
                }
                .encode_to_vec();
                if let Err(e) = self.store.add_job_update(id, seq, &body, starts_data).await {
                    tracing::warn!(job = %id, error = %e, "cannot record a job update");
                }
            }
            data_started
        };
        let (end, data_started) = tokio::join!(follow, write);
        match end {
            JobEnd::Finished(outcome) => {
                self.end(id, Some(outcome.encode_to_vec()), data_started)
                    .await;
            }
            JobEnd::Lost { data_started } => self.end(id, None, data_started).await,
        }
    }

    fn open(&self, claimed: &ClaimedJob) -> Result<pb::SmtpJob, String> {
        let sealed = Sealed {
            nonce: claimed.sealed.0.clone(),
            ciphertext: claimed.sealed.1.clone(),
        };
        let bytes = self
            .cipher
            .open(&job_aad(claimed.connector), &sealed)
            .map_err(|e| e.to_string())?;
        pb::SmtpJob::decode(bytes.as_slice()).map_err(|e| e.to_string())
    }

    async fn end(&self, id: JobId, outcome: Option<Vec<u8>>, data_started: bool) {
        if let Err(e) = self
            .store
            .end_job(id, outcome.as_deref(), data_started)
            .await
        {
            tracing::warn!(job = %id, error = %e, "cannot record the end of a connector job");
        }
    }
}
