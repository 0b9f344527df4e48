//! API tokens: the keyed hash of each secret, roles, revocation and use.

use super::Store;
use super::audit::record;
use super::db::query;
use super::rows::{TOKEN_COLUMNS, TokenRow, convert};
use crate::audit::{AuditContext, REDACTED, diff};
use crate::domain::account::name_key;
use crate::domain::{Micros, Role, TokenRecord, now_micros};
use crate::error::{Error, Result};

/// The row of a token and its secret's hash.
#[derive(Debug, sqlx::FromRow)]
struct AuthRow {
    #[sqlx(flatten)]
    token: TokenRow,
    secret_hash: String,
}

impl Store {
    /// Creates an API token with the keyed hash of its secret.
    pub async fn create_token(
        &self,
        ctx: &AuditContext,
        display_name: &str,
        role: Role,
        secret_hash: &str,
        expire_time: Option<Micros>,
    ) -> Result<TokenRecord> {
        let now = now_micros();
        let mut w = self.begin_write().await?;
        let q = query(format!(
            "INSERT INTO api_tokens (display_name, name_key, role, secret_hash, expire_time, \
             create_time) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(display_name)
        .bind(name_key(display_name))
        .bind(role.as_str())
        .bind(secret_hash)
        .bind(expire_time)
        .bind(now);
        let row: TokenRow = w.conn().one(&q).await.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                Error::AlreadyExists(format!(
                    "a token named {display_name:?} already exists; choose another display_name"
                ))
            }
            _ => Error::Database(e),
        })?;
        let token = TokenRecord::try_from(row)?;
        let made = serde_json::json!({
            "display_name": token.display_name,
            "role": token.role.as_str(),
            "expire_time": token.expire_time,
            "token": REDACTED,
        });
        let resource = format!("tokens/{}", token.id);
        record(&mut w, ctx, &resource, diff(None, Some(&made))).await?;
        w.commit().await?;
        Ok(token)
    }

    /// A token and its secret's hash, for authentication.
    pub async fn token_for_auth(&self, id: i64) -> Result<Option<(TokenRecord, String)>> {
        let q = query(format!(
            "SELECT {TOKEN_COLUMNS}, secret_hash FROM api_tokens WHERE id = $1"
        ))
        .bind(id);
        match self.optional::<AuthRow>(&q).await? {
            Some(row) => Ok(Some((row.token.try_into()?, row.secret_hash))),
            None => Ok(None),
        }
    }

    /// Lists up to `limit` tokens with ids above `after`.
    pub async fn list_tokens(&self, after: i64, limit: u32) -> Result<Vec<TokenRecord>> {
        let q = query(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit));
        convert(self.all::<TokenRow>(&q).await?)
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, ctx: &AuditContext, id: i64) -> Result<TokenRecord> {
        let mut w = self.begin_write().await?;
        let q = query(format!(
            "UPDATE api_tokens SET revoked = TRUE WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id);
        let Some(row): Option<TokenRow> = w.conn().optional(&q).await? else {
            return Err(Error::NotFound(format!("tokens/{id}")));
        };
        let token = TokenRecord::try_from(row)?;
        let change = serde_json::json!({ "revoked": { "before": false, "after": true } });
        record(&mut w, ctx, &format!("tokens/{id}"), change).await?;
        w.commit().await?;
        Ok(token)
    }

    /// Records that a token was used (bookkeeping: no audit event).
    pub async fn touch_token(&self, id: i64) -> Result<()> {
        let q = query("UPDATE api_tokens SET last_use_time = $1 WHERE id = $2")
            .bind(now_micros())
            .bind(id);
        self.execute(&q).await?;
        Ok(())
    }

    /// How many tokens exist (revoked ones too).
    pub async fn token_count(&self) -> Result<i64> {
        let (n,): (i64,) = self.one(&query("SELECT COUNT(*) FROM api_tokens")).await?;
        Ok(n)
    }
}
