//! Connector jobs between replicas (see [`crate::domain::job`]): queue, claim with a lease,
//! updates, end, and what the creator reads. Each change is announced with `NOTIFY`
//! (PostgreSQL): queued jobs on [`JOBS_CHANNEL`] with the connector's id, a job's progress on
//! [`JOB_CHANNEL`] with the job's id.

use super::Store;
use super::db::query;
use super::notify::{JOB_CHANNEL, JOBS_CHANNEL};
use crate::domain::job::{ClaimedJob, JobId, JobState, JobStatus};
use crate::domain::replica::ReplicaId;
use crate::domain::{ConnectorId, Micros, now_micros};
use crate::error::{Error, Result};

impl Store {
    /// Announces `payload` on `channel` (PostgreSQL only; SQLite has one replica).
    async fn announce(&self, channel: &str, payload: i64) -> Result<()> {
        if self.is_postgres() {
            let q = query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload.to_string());
            self.execute(&q).await?;
        }
        Ok(())
    }

    /// Queues a job for `connector` about `subject` (e.g. a test's name).
    pub async fn enqueue_job(
        &self,
        connector: ConnectorId,
        subject: &str,
        sealed: (&[u8], &[u8]),
    ) -> Result<JobId> {
        let now = now_micros();
        let q = query(
            "INSERT INTO connector_jobs (connector_id, subject, job_nonce, job_sealed, state, \
             create_time, update_time) VALUES ($1, $2, $3, $4, 'queued', $5, $5) RETURNING id",
        )
        .bind(connector.0)
        .bind(subject)
        .bind(sealed.0)
        .bind(sealed.1)
        .bind(now);
        let (id,): (i64,) = self.one(&q).await?;
        self.announce(JOBS_CHANNEL, connector.0).await?;
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
             RETURNING id, job_nonce, job_sealed"
        ))
        .bind(&replica.0)
        .bind(lease_until)
        .bind(now_micros())
        .bind(connector.0);
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = self.optional(&q).await?;
        let Some((id, nonce, sealed)) = row else {
            return Ok(None);
        };
        self.announce(JOB_CHANNEL, id).await?;
        Ok(Some(ClaimedJob {
            id: JobId(id),
            connector,
            sealed: (nonce, sealed),
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

    /// Records which agent runs a claimed job.
    pub async fn set_job_agent(&self, id: JobId, agent: &str) -> Result<()> {
        let q = query("UPDATE connector_jobs SET agent = $1 WHERE id = $2")
            .bind(agent)
            .bind(id.0);
        self.execute(&q).await?;
        self.announce(JOB_CHANNEL, id.0).await
    }

    /// Appends the agent's update number `seq` (an encoded `JobUpdate`) to a job.
    pub async fn add_job_update(
        &self,
        id: JobId,
        seq: i64,
        body: &[u8],
        data_started: bool,
    ) -> Result<()> {
        let q = query("INSERT INTO connector_job_updates (job_id, seq, body) VALUES ($1, $2, $3)")
            .bind(id.0)
            .bind(seq)
            .bind(body);
        self.execute(&q).await?;
        if data_started {
            let q = query("UPDATE connector_jobs SET data_started = $1 WHERE id = $2")
                .bind(true)
                .bind(id.0);
            self.execute(&q).await?;
        }
        self.announce(JOB_CHANNEL, id.0).await
    }

    /// Ends a job: `Finished` with the encoded outcome, or `Lost`.
    pub async fn end_job(
        &self,
        id: JobId,
        outcome: Option<&[u8]>,
        data_started: bool,
    ) -> Result<()> {
        let q = match outcome {
            Some(outcome) => query(
                "UPDATE connector_jobs SET state = $1, outcome = $2, data_started = $3, \
                 lease_until = NULL, update_time = $4 WHERE id = $5",
            )
            .bind(JobState::Finished.as_str())
            .bind(outcome),
            None => query(
                "UPDATE connector_jobs SET state = $1, outcome = NULL, data_started = $2, \
                 lease_until = NULL, update_time = $3 WHERE id = $4",
            )
            .bind(JobState::Lost.as_str()),
        }
        .bind(data_started)
        .bind(now_micros())
        .bind(id.0);
        self.execute(&q).await?;
        self.announce(JOB_CHANNEL, id.0).await
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

    /// Forgets a job (its creator is done with it).
    pub async fn delete_job(&self, id: JobId) -> Result<()> {
        self.execute(&query("DELETE FROM connector_jobs WHERE id = $1").bind(id.0))
            .await?;
        Ok(())
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
