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
    /// is unknown, used or expired gives `Unauthenticated`.
    pub async fn enroll_agent(
        &self,
        ctx: &AuditContext,
        token_hash: &str,
        hostname: &str,
        version: &str,
    ) -> Result<AgentRecord> {
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

    /// Records the certificate an agent now authenticates with.
    pub async fn set_agent_certificate(
        &self,
        agent: AgentName,
        fingerprint: &str,
        not_after: Micros,
    ) -> Result<()> {
        let q = query(
            "UPDATE agents SET cert_fingerprint = $1, cert_not_after = $2 \
             WHERE id = $3 AND connector_id = $4",
        )
        .bind(fingerprint)
        .bind(not_after)
        .bind(agent.id)
        .bind(agent.connector.0);
        self.execute(&q).await?;
        Ok(())
    }

    /// The agent whose certificate has this SHA-256 fingerprint.
    pub async fn agent_by_fingerprint(&self, fingerprint: &str) -> Result<Option<AgentRecord>> {
        let q = query(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE cert_fingerprint = $1"
        ))
        .bind(fingerprint);
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
