//! Connector jobs between replicas (see [`crate::domain::job`]): queue, claim with a lease,
//! updates, end, and what the creator reads. Each change is announced with `NOTIFY`
//! (PostgreSQL): queued jobs on [`JOBS_CHANNEL`] with the connector's id, a job's progress on
//! [`JOB_CHANNEL`] with the job's id.

use super::Store;
use super::db::{Arg, query};
use super::notify::{JOB_CHANNEL, JOBS_CHANNEL};
use crate::crypto::{KeyId, Sealed};
use crate::domain::job::{ClaimedJob, JobId, JobState, JobStatus};
use crate::domain::replica::ReplicaId;
use crate::domain::{ConnectorId, Micros, now_micros};
use crate::error::{Error, Result};

/// How a job ended, as its claimer writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEndWrite {
    /// The encoded `JobOutcome` (`Finished`), or none (`Lost`).
    pub outcome: Option<Vec<u8>>,
    /// Whether DATA had started.
    pub data_started: bool,
}

impl Store {
    /// Queues a job for `connector` about `subject` (e.g. a test's name). A progress write:
    /// its creator follows it, and a creator that crashed has no use for it.
    pub async fn enqueue_job(
        &self,
        connector: ConnectorId,
        subject: &str,
        sealed: &Sealed,
    ) -> Result<JobId> {
        let now = now_micros();
        let q = query(
            "INSERT INTO connector_jobs (connector_id, subject, job_key_id, job_nonce, \
             job_sealed, state, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6) RETURNING id",
        )
        .bind(connector.0)
        .bind(subject)
        .bind(i64::from(sealed.key_id))
        .bind(sealed.nonce.as_slice())
        .bind(sealed.ciphertext.as_slice())
        .bind(now);
        let mut w = self.begin_progress_write().await?;
        let (id,): (i64,) = w.conn().one(&q).await?;
        if let Some(q) = self.announcement(JOBS_CHANNEL, connector.0) {
            w.conn().execute(&q).await?;
        }
        w.commit().await?;
        Ok(JobId(id))
    }

    /// Claims the oldest queued job of `connector` for `replica`, until `lease_until`.
    pub async fn claim_job(
        &self,
        connector: ConnectorId,
        replica: &ReplicaId,
        lease_until: Micros,
    ) -> Result<Option<ClaimedJob>> {
        let lock = if self.is_postgres() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let q = query(format!(
            "UPDATE connector_jobs SET state = 'claimed', replica_id = $1, lease_until = $2, \
             update_time = $3 WHERE id = (SELECT id FROM connector_jobs WHERE connector_id = $4 \
             AND state = 'queued' ORDER BY id LIMIT 1{lock}) \
             RETURNING id, job_key_id, job_nonce, job_sealed"
        ))
        .bind(&replica.0)
        .bind(lease_until)
        .bind(now_micros())
        .bind(connector.0);
        // A progress write: a claim lost in a crash leaves the job queued for another.
        let mut w = self.begin_progress_write().await?;
        let row: Option<(i64, i64, Vec<u8>, Vec<u8>)> = w.conn().optional(&q).await?;
        let Some((id, key_id, nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let key_id = KeyId::try_from(key_id)
            .map_err(|_| Error::Internal(format!("connector job {id} has an invalid key id")))?;
        if let Some(q) = self.announcement(JOB_CHANNEL, id) {
            w.conn().execute(&q).await?;
        }
        w.commit().await?;
        Ok(Some(ClaimedJob {
            id: JobId(id),
            connector,
            sealed: Sealed {
                key_id,
                nonce,
                ciphertext,
            },
        }))
    }

    /// The connectors with queued jobs.
    pub async fn connectors_with_queued_jobs(&self) -> Result<Vec<ConnectorId>> {
        let q = query(
            "SELECT DISTINCT connector_id FROM connector_jobs WHERE state = 'queued' \
             ORDER BY connector_id",
        );
        let rows: Vec<(i64,)> = self.all(&q).await?;
        Ok(rows.into_iter().map(|(c,)| ConnectorId(c)).collect())
    }

    /// Renews `replica`'s claims until `lease_until`.
    pub async fn renew_job_leases(&self, replica: &ReplicaId, lease_until: Micros) -> Result<()> {
        let q = query(
            "UPDATE connector_jobs SET lease_until = $1 WHERE replica_id = $2 \
             AND state = 'claimed'",
        )
        .bind(lease_until)
        .bind(&replica.0);
        self.execute(&q).await?;
        Ok(())
    }

    /// Records which agent runs a claimed job (announced with its first updates).
    pub async fn set_job_agent(&self, id: JobId, agent: &str) -> Result<()> {
        let mut w = self.begin_progress_write().await?;
        let q = query("UPDATE connector_jobs SET agent = $1 WHERE id = $2")
            .bind(agent)
            .bind(id.0);
        w.conn().execute(&q).await?;
        w.commit().await
    }

    /// Appends the agent's updates (numbered, encoded `JobUpdate`s) to a job and, with
    /// `end`, ends it, in one progress write and one announcement: `data_started` when one of
    /// the updates started DATA. (A crash of this replica in the milliseconds before the end
    /// reaches the disk leaves the job claimed; its lease runs out and the creator decides as
    /// for a lost agent.)
    pub async fn add_job_updates(
        &self,
        id: JobId,
        updates: &[(i64, Vec<u8>)],
        data_started: bool,
        end: Option<&JobEndWrite>,
    ) -> Result<()> {
        let mut w = self.begin_progress_write().await?;
        if !updates.is_empty() {
            let rows: Vec<String> = (0..updates.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let q = query(format!(
                "INSERT INTO connector_job_updates (job_id, seq, body) VALUES {}",
                rows.join(", ")
            ))
            .bind_all(updates.iter().flat_map(|(seq, body)| {
                [Arg::from(id.0), Arg::from(*seq), Arg::from(body.clone())]
            }));
            w.conn().execute(&q).await?;
        }
        if data_started {
            let q = query("UPDATE connector_jobs SET data_started = $1 WHERE id = $2")
                .bind(true)
                .bind(id.0);
            w.conn().execute(&q).await?;
        }
        if let Some(end) = end {
            let q = match &end.outcome {
                Some(outcome) => query(
                    "UPDATE connector_jobs SET state = $1, outcome = $2, lease_until = NULL, \
                     update_time = $3 WHERE id = $4",
                )
                .bind(JobState::Finished.as_str())
                .bind(outcome.as_slice()),
                None => query(
                    "UPDATE connector_jobs SET state = $1, outcome = NULL, lease_until = NULL, \
                     update_time = $2 WHERE id = $3",
                )
                .bind(JobState::Lost.as_str()),
            }
            .bind(now_micros())
            .bind(id.0);
            w.conn().execute(&q).await?;
            if end.data_started {
                let q = query("UPDATE connector_jobs SET data_started = $1 WHERE id = $2")
                    .bind(true)
                    .bind(id.0);
                w.conn().execute(&q).await?;
            }
        }
        if let Some(q) = self.announcement(JOB_CHANNEL, id.0) {
            w.conn().execute(&q).await?;
        }
        w.commit().await
    }

    /// Queues a job again, for another replica and agent (its updates are kept).
    pub async fn requeue_job(&self, id: JobId, connector: ConnectorId) -> Result<()> {
        let q = query(
            "UPDATE connector_jobs SET state = 'queued', replica_id = NULL, lease_until = NULL, \
             agent = '', outcome = NULL, update_time = $1 WHERE id = $2",
        )
        .bind(now_micros())
        .bind(id.0);
        self.execute(&q).await?;
        self.announce(JOBS_CHANNEL, connector.0).await
    }

    /// Forgets the jobs that ended before `before` (their creator never came back for them).
    pub async fn forget_ended_jobs(&self, before: Micros) -> Result<u64> {
        let q = query(
            "DELETE FROM connector_jobs WHERE state IN ('finished', 'lost') AND update_time < $1",
        )
        .bind(before);
        self.execute(&q).await
    }

    /// Forgets a job (its creator is done with it; a progress write).
    pub async fn delete_job(&self, id: JobId) -> Result<()> {
        let mut w = self.begin_progress_write().await?;
        w.conn()
            .execute(&query("DELETE FROM connector_jobs WHERE id = $1").bind(id.0))
            .await?;
        w.commit().await
    }

    /// A job as it stands, with its updates after `after_seq`.
    pub async fn job_status(&self, id: JobId, after_seq: i64) -> Result<JobStatus> {
        let q = query(
            "SELECT state, agent, lease_until, data_started, outcome FROM connector_jobs \
             WHERE id = $1",
        )
        .bind(id.0);
        type Row = (String, String, Option<i64>, bool, Option<Vec<u8>>);
        let Some((state, agent, lease_until, data_started, outcome)): Option<Row> =
            self.optional(&q).await?
        else {
            return Err(Error::NotFound(id.to_string()));
        };
        let q = query(
            "SELECT seq, body FROM connector_job_updates WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq",
        )
        .bind(id.0)
        .bind(after_seq);
        let updates: Vec<(i64, Vec<u8>)> = self.all(&q).await?;
        Ok(JobStatus {
            state: JobState::parse(&state)
                .ok_or_else(|| Error::Internal(format!("{id}: unknown state {state:?}")))?,
            agent,
            lease_until,
            data_started,
            outcome,
            updates,
        })
    }
}
