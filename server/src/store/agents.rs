//! Connector agents: enrollment, certificates, heartbeats and revocation.

use super::Store;
use super::audit::record;
use super::db::query;
use super::locks::RowLock;
use super::rows::{AGENT_COLUMNS, AgentRow};
use crate::audit::{AuditContext, diff};
use crate::domain::{AgentName, AgentRecord, ConnectorId, Micros, now_micros, rules};
use crate::error::{Error, Result};

impl Store {
    /// Uses up an enrollment token and records a new agent, in one transaction; a token that
    /// is unknown, used or expired gives `Unauthenticated`. The token is read before any lock
    /// is taken (a write transaction, on SQLite, queues behind every other writer of this
    /// process): a caller without a good token takes no lock at all.
    pub async fn enroll_agent(
        &self,
        ctx: &AuditContext,
        token_hash: &str,
        hostname: &str,
        version: &str,
    ) -> Result<AgentRecord> {
        let read = query(
            "SELECT connector_id, expire_time, used_time FROM enrollment_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash);
        let token: Option<(i64, i64, Option<i64>)> = self.optional(&read).await?;
        rules::enrollment_token(token, now_micros())?;
        let mut w = self.begin_write().await?;
        let now = now_micros();
        // Two enrollments with one token: the second waits, then sees it used.
        let q = query(format!(
            "SELECT connector_id, expire_time, used_time FROM enrollment_tokens \
             WHERE token_hash = $1{}",
            w.row_lock(RowLock::Update)
        ))
        .bind(token_hash);
        let token: Option<(i64, i64, Option<i64>)> = w.conn().optional(&q).await?;
        let connector = rules::enrollment_token(token, now)?;
        let q = query("UPDATE enrollment_tokens SET used_time = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash);
        w.conn().execute(&q).await?;
        let q = query(
            "INSERT INTO agents (connector_id, hostname, version, enroll_time) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(connector.0)
        .bind(hostname)
        .bind(version)
        .bind(now);
        let (id,): (i64,) = w.conn().one(&q).await?;
        let name = AgentName { connector, id };
        let enrolled = serde_json::json!({ "hostname": hostname, "version": version });
        record(&mut w, ctx, &name.to_string(), diff(None, Some(&enrolled))).await?;
        w.commit().await?;
        Ok(AgentRecord {
            name,
            hostname: hostname.to_owned(),
            version: version.to_owned(),
            cert_not_after: None,
            revoked: false,
            enroll_time: now,
            last_heartbeat_time: None,
        })
    }

    /// Records the first certificate of a newly enrolled agent.
    pub async fn set_agent_certificate(
        &self,
        agent: AgentName,
        fingerprint: &str,
        not_after: Micros,
    ) -> Result<()> {
        let q = query(
            "UPDATE agents SET cert_fingerprint = $1, cert_not_after = $2, \
             prev_cert_fingerprint = NULL, prev_cert_expire_time = NULL \
             WHERE id = $3 AND connector_id = $4",
        )
        .bind(fingerprint)
        .bind(not_after)
        .bind(agent.id)
        .bind(agent.connector.0);
        self.execute(&q).await?;
        Ok(())
    }

    /// Records a renewed certificate of `agent`, which called with the certificate
    /// `presented` (its current one, or the previous one when the response to an earlier
    /// renewal was lost). `presented` stays valid beside the new one until the new one is
    /// first used or until `previous_until`, whichever comes first; the certificate the
    /// agent never received is forgotten. The renewal is in the audit log. `NotFound` when
    /// the agent is gone, `PermissionDenied` when it was revoked meanwhile.
    pub async fn renew_agent_certificate(
        &self,
        ctx: &AuditContext,
        agent: AgentName,
        presented: &str,
        renewed: (&str, Micros),
        previous_until: Micros,
    ) -> Result<()> {
        let (fingerprint, not_after) = renewed;
        let mut w = self.begin_write().await?;
        let q = query(format!(
            "SELECT revoked, cert_not_after FROM agents WHERE id = $1 AND connector_id = $2{}",
            w.row_lock(RowLock::Update)
        ))
        .bind(agent.id)
        .bind(agent.connector.0);
        let Some((revoked, before)): Option<(bool, Option<i64>)> = w.conn().optional(&q).await?
        else {
            return Err(Error::NotFound(agent.to_string()));
        };
        if revoked {
            return Err(Error::PermissionDenied(format!(
                "{agent} was revoked; enroll it again with a new token"
            )));
        }
        let q = query(
            "UPDATE agents SET cert_fingerprint = $1, cert_not_after = $2, \
             prev_cert_fingerprint = $3, prev_cert_expire_time = $4 WHERE id = $5",
        )
        .bind(fingerprint)
        .bind(not_after)
        .bind(presented)
        .bind(previous_until)
        .bind(agent.id);
        w.conn().execute(&q).await?;
        let change = serde_json::json!({
            "cert_not_after": { "before": before, "after": not_after },
            "cert_fingerprint": { "before": presented, "after": fingerprint },
        });
        record(&mut w, ctx, &agent.to_string(), change).await?;
        w.commit().await?;
        Ok(())
    }

    /// The agent that holds the certificate with this SHA-256 fingerprint: its current one,
    /// or the one it renewed with while that is still honoured (see
    /// [`Store::renew_agent_certificate`]). The first use of the current certificate retires
    /// the previous one. Revoked agents are returned too (with `revoked` set), so that the
    /// caller refuses every certificate of theirs alike.
    pub async fn agent_by_certificate(&self, fingerprint: &str) -> Result<Option<AgentRecord>> {
        let q = query(
            "SELECT id, cert_fingerprint, prev_cert_fingerprint FROM agents \
             WHERE cert_fingerprint = $1 OR (prev_cert_fingerprint = $1 AND prev_cert_expire_time > $2)",
        )
        .bind(fingerprint)
        .bind(now_micros());
        let Some((id, current, previous)): Option<(i64, Option<String>, Option<String>)> =
            self.optional(&q).await?
        else {
            return Ok(None);
        };
        if previous.is_some() && current.as_deref() == Some(fingerprint) {
            // The agent has its new certificate: the old one is no longer needed.
            let q = query(
                "UPDATE agents SET prev_cert_fingerprint = NULL, prev_cert_expire_time = NULL \
                 WHERE id = $1 AND cert_fingerprint = $2",
            )
            .bind(id)
            .bind(fingerprint);
            self.execute(&q).await?;
        }
        self.agent(id).await
    }

    /// The agent with this id, revoked or not.
    pub async fn agent(&self, id: i64) -> Result<Option<AgentRecord>> {
        let q = query(format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1")).bind(id);
        let row: Option<AgentRow> = self.optional(&q).await?;
        Ok(row.map(AgentRecord::from))
    }

    /// A connector's agents, ordered by id.
    pub async fn list_agents(&self, connector: ConnectorId) -> Result<Vec<AgentRecord>> {
        let q = query(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE connector_id = $1 ORDER BY id"
        ))
        .bind(connector.0);
        let rows: Vec<AgentRow> = self.all(&q).await?;
        Ok(rows.into_iter().map(AgentRecord::from).collect())
    }

    /// Revokes an agent.
    pub async fn revoke_agent(&self, ctx: &AuditContext, agent: AgentName) -> Result<AgentRecord> {
        let mut w = self.begin_write().await?;
        let q = query(format!(
            "UPDATE agents SET revoked = TRUE WHERE id = $1 AND connector_id = $2 \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(agent.id)
        .bind(agent.connector.0);
        let Some(row): Option<AgentRow> = w.conn().optional(&q).await? else {
            return Err(Error::NotFound(agent.to_string()));
        };
        let revoked = AgentRecord::from(row);
        let change = serde_json::json!({ "revoked": { "before": false, "after": true } });
        record(&mut w, ctx, &agent.to_string(), change).await?;
        w.commit().await?;
        Ok(revoked)
    }

    /// The ids of every revoked agent.
    pub async fn revoked_agent_ids(&self) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = self
            .all(&query("SELECT id FROM agents WHERE revoked ORDER BY id"))
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Records that an agent was heard from (bookkeeping: no audit event).
    pub async fn touch_agent(&self, agent: AgentName, hostname: &str, version: &str) -> Result<()> {
        let q = query(
            "UPDATE agents SET last_heartbeat_time = $1, hostname = $2, version = $3 \
             WHERE id = $4",
        )
        .bind(now_micros())
        .bind(hostname)
        .bind(version)
        .bind(agent.id);
        self.execute(&q).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DatabaseUrl, open};
    use sqlx::Connection as _;
    use std::time::Duration;

    #[tokio::test]
    async fn a_bad_enrollment_token_is_refused_without_waiting_for_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = open(&DatabaseUrl::Sqlite(path.clone())).await.unwrap();
        // Another writer holds SQLite's write lock.
        let url = format!("sqlite://{}", path.display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut db)
            .await
            .unwrap();
        let ctx = AuditContext::system();
        let refused = tokio::time::timeout(
            Duration::from_secs(2),
            store.enroll_agent(&ctx, "no-such-token-hash", "host", "1.0"),
        )
        .await
        .expect("a bad token is refused before any lock is taken");
        assert!(
            matches!(refused, Err(Error::Unauthenticated(_))),
            "{refused:?}"
        );
        sqlx::query("ROLLBACK").execute(&mut db).await.unwrap();
    }
}
