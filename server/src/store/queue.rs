//! The outbox per account: the queue summary, and pausing and resuming delivery.

use super::Store;
use super::audit::record;
use super::db::{Conn, query};
use super::locks::RowLock;
use crate::audit::{AuditContext, diff};
use crate::domain::message::QueueSummary;
use crate::domain::{AccountId, now_micros};
use crate::error::{Error, Result};
use serde_json::json;

/// The summaries of every account (or of `only`), ordered by account id.
async fn summaries(conn: &mut Conn<'_>, only: Option<AccountId>) -> Result<Vec<QueueSummary>> {
    let filter = if only.is_some() {
        "WHERE a.id = $1"
    } else {
        ""
    };
    let q = query(format!(
        "SELECT a.id, \
         CAST(COALESCE(SUM(CASE WHEN m.state = 'queued' THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN m.state = 'sending' THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN m.state = 'deferred' THEN 1 ELSE 0 END), 0) AS BIGINT), \
         MIN(m.create_time), CAST(MAX(CASE WHEN p.account_id IS NULL THEN 0 ELSE 1 END) AS BIGINT) \
         FROM accounts a \
         LEFT JOIN messages m ON m.account_id = a.id \
           AND m.state IN ('queued', 'sending', 'deferred') \
         LEFT JOIN paused_accounts p ON p.account_id = a.id \
         {filter} GROUP BY a.id ORDER BY a.id"
    ));
    let q = match only {
        Some(id) => q.bind(id.0),
        None => q,
    };
    type Row = (i64, i64, i64, i64, Option<i64>, i64);
    let rows: Vec<Row> = conn.all(&q).await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, queued, sending, deferred, oldest, paused)| QueueSummary {
                account: AccountId(id),
                queued,
                sending,
                deferred,
                oldest,
                paused: paused != 0,
            },
        )
        .collect())
}

impl Store {
    /// The queue of every account, ordered by account id.
    pub async fn queue_summaries(&self) -> Result<Vec<QueueSummary>> {
        summaries(&mut self.read().await?.conn(), None).await
    }

    /// Pauses (or resumes) delivery for an account; returns its summary.
    pub async fn set_delivery_paused(
        &self,
        ctx: &AuditContext,
        account: AccountId,
        paused: bool,
    ) -> Result<QueueSummary> {
        let mut w = self.begin_write().await?;
        // Two pauses at once: the second sees the first.
        w.lock_row("accounts", account.0, RowLock::Update).await?;
        let Some(before) = summaries(&mut w.conn(), Some(account)).await?.pop() else {
            return Err(Error::NotFound(account.to_string()));
        };
        if before.paused != paused {
            let q = if paused {
                query("INSERT INTO paused_accounts (account_id, pause_time) VALUES ($1, $2)")
                    .bind(account.0)
                    .bind(now_micros())
            } else {
                query("DELETE FROM paused_accounts WHERE account_id = $1").bind(account.0)
            };
            w.conn().execute(&q).await?;
            let change = diff(
                Some(&json!({ "delivery_paused": before.paused })),
                Some(&json!({ "delivery_paused": paused })),
            );
            record(&mut w, ctx, &account.to_string(), change).await?;
        }
        w.commit().await?;
        Ok(QueueSummary { paused, ..before })
    }
}
