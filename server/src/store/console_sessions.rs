//! Web console sessions: looked up by the SHA-256 of the cookie's value, with the API token
//! sealed. Every replica reads the same table, so a session works behind a load balancer.

use super::Store;
use super::db::query;
use crate::crypto::{KeyId, Sealed};
use crate::domain::Micros;
use crate::error::{Error, Result};

/// A stored session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The id of the API token it calls with.
    pub token_id: i64,
    /// The token's name when the session started.
    pub actor_name: String,
    /// The token's role when the session started.
    pub role: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The API token, sealed.
    pub token: Sealed,
    /// When it was last used.
    pub last_seen: Micros,
}

#[derive(sqlx::FromRow)]
struct Row {
    token_id: i64,
    actor_name: String,
    role: String,
    csrf: String,
    key_id: i64,
    token_sealed: Vec<u8>,
    last_seen: i64,
}

impl Store {
    /// Stores a new session under `id_hash`.
    pub async fn create_console_session(
        &self,
        id_hash: &str,
        record: &SessionRecord,
    ) -> Result<()> {
        let q = query(
            "INSERT INTO console_sessions (id_hash, token_id, actor_name, role, csrf, key_id, \
             token_sealed, create_time, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(id_hash)
        .bind(record.token_id)
        .bind(&record.actor_name)
        .bind(&record.role)
        .bind(&record.csrf)
        .bind(i64::from(record.token.key_id))
        .bind(record.token.to_bytes())
        .bind(record.last_seen);
        self.execute(&q).await?;
        Ok(())
    }

    /// The session `id_hash`, if it was used at or after `seen_since`.
    pub async fn console_session(
        &self,
        id_hash: &str,
        seen_since: Micros,
    ) -> Result<Option<SessionRecord>> {
        let q = query(
            "SELECT token_id, actor_name, role, csrf, key_id, token_sealed, last_seen \
             FROM console_sessions WHERE id_hash = $1 AND last_seen >= $2",
        )
        .bind(id_hash)
        .bind(seen_since);
        let Some(row) = self.optional::<Row>(&q).await? else {
            return Ok(None);
        };
        let key_id = KeyId::try_from(row.key_id)
            .map_err(|_| Error::Internal("a console session has an invalid key id".into()))?;
        let token = Sealed::from_bytes(key_id, &row.token_sealed)
            .ok_or_else(|| Error::Internal("a console session's token is truncated".into()))?;
        Ok(Some(SessionRecord {
            token_id: row.token_id,
            actor_name: row.actor_name,
            role: row.role,
            csrf: row.csrf,
            token,
            last_seen: row.last_seen,
        }))
    }

    /// Marks session `id_hash` as used at `now`.
    pub async fn touch_console_session(&self, id_hash: &str, now: Micros) -> Result<()> {
        let q = query("UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(now);
        self.execute(&q).await?;
        Ok(())
    }

    /// Ends session `id_hash`.
    pub async fn delete_console_session(&self, id_hash: &str) -> Result<()> {
        let q = query("DELETE FROM console_sessions WHERE id_hash = $1").bind(id_hash);
        self.execute(&q).await?;
        Ok(())
    }

    /// Ends the sessions whose token is sealed under key `key_id` (the key is being removed).
    pub async fn delete_console_sessions_under(&self, key_id: KeyId) -> Result<u64> {
        let q = query("DELETE FROM console_sessions WHERE key_id = $1").bind(i64::from(key_id));
        self.execute(&q).await
    }

    /// Deletes the sessions last used before `before`; returns how many.
    pub async fn purge_console_sessions(&self, before: Micros) -> Result<u64> {
        let q = query("DELETE FROM console_sessions WHERE last_seen < $1").bind(before);
        self.execute(&q).await
    }
}
