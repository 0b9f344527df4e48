//! The audit log's table: events recorded inside the change's own transaction, refusals, and
//! the event lists.

use super::db::{Arg, like_contains_exact_case, query};
use super::{Store, Write};
use crate::audit::{AuditContext, AuditEvent, AuditFilter};
use crate::domain::audit_chain::Link as ChainLink;
use crate::domain::now_micros;
use crate::error::Result;

/// The columns of an event.
pub(super) const EVENT_COLUMNS: &str =
    "id, time, actor, peer, rpc, resource, outcome, diff, seq, prev_hash, hash";

/// A row of `audit_events`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventRow {
    id: i64,
    time: i64,
    actor: String,
    peer: String,
    rpc: String,
    resource: String,
    outcome: String,
    diff: String,
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl From<EventRow> for AuditEvent {
    fn from(r: EventRow) -> Self {
        // A sealed row whose hashes were removed still has its place: its check fails.
        let link = r.seq.map(|seq| ChainLink {
            seq,
            prev_hash: r.prev_hash.unwrap_or_default(),
            hash: r.hash.unwrap_or_default(),
        });
        AuditEvent {
            id: r.id,
            time: r.time,
            actor: r.actor,
            peer: r.peer,
            rpc: r.rpc,
            resource: r.resource,
            outcome: r.outcome,
            diff: r.diff,
            link,
        }
    }
}

/// Records a successful change to `resource` by `ctx`, in the change's transaction.
pub(super) async fn record(
    w: &mut Write<'_>,
    ctx: &AuditContext,
    resource: &str,
    diff: serde_json::Value,
) -> Result<()> {
    let q = query(
        "INSERT INTO audit_events (time, actor, peer, rpc, resource, outcome, diff) \
         VALUES ($1, $2, $3, $4, $5, 'ok', $6)",
    )
    .bind(now_micros())
    .bind(&ctx.actor)
    .bind(&ctx.peer)
    .bind(&ctx.rpc)
    .bind(resource)
    .bind(diff.to_string());
    w.conn().execute(&q).await?;
    Ok(())
}

/// Records successful changes, each to its resource by its caller, in the changes' one
/// transaction, with multi-row statements.
pub(super) async fn record_many(
    w: &mut Write<'_>,
    events: &[(&AuditContext, String, serde_json::Value)],
) -> Result<()> {
    let time = now_micros();
    for chunk in events.chunks(super::messages::MAX_ROWS) {
        let q = query(
            "INSERT INTO audit_events (time, actor, peer, rpc, resource, outcome, diff) VALUES ",
        )
        .rows(chunk.iter().map(|(ctx, resource, diff)| {
            vec![
                Arg::from(time),
                Arg::from(&ctx.actor),
                Arg::from(&ctx.peer),
                Arg::from(&ctx.rpc),
                Arg::from(resource),
                Arg::from("ok"),
                Arg::from(diff.to_string()),
            ]
        }));
        w.conn().execute(&q).await?;
    }
    Ok(())
}

impl Store {
    /// Records an event that changes no resource of the API (a sign-in to the web console, a
    /// sign-out) as succeeded, with `details` as its diff.
    pub async fn record_event(
        &self,
        ctx: &AuditContext,
        resource: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        record(&mut w, ctx, resource, details.clone()).await?;
        w.commit().await
    }

    /// Records a refused call in the audit log, with `details` (the reason, and the count of
    /// refusals it stands for) as its diff. Returns the event's id.
    pub async fn record_denied(
        &self,
        ctx: &AuditContext,
        details: &serde_json::Value,
    ) -> Result<i64> {
        let q = query(
            "INSERT INTO audit_events (time, actor, peer, rpc, resource, outcome, diff) \
             VALUES ($1, $2, $3, $4, '', 'denied', $5) RETURNING id",
        )
        .bind(now_micros())
        .bind(&ctx.actor)
        .bind(&ctx.peer)
        .bind(&ctx.rpc)
        .bind(details.to_string());
        let (id,): (i64,) = self.one(&q).await?;
        Ok(id)
    }

    /// Replaces the details of refusal event `id` (a later refusal it now also stands for),
    /// unless it is sealed in the hash chain already: whether it did. A sealed event is never
    /// changed.
    pub async fn update_denied(&self, id: i64, details: &serde_json::Value) -> Result<bool> {
        let q = query(
            "UPDATE audit_events SET diff = $1 \
             WHERE id = $2 AND outcome = 'denied' AND seq IS NULL",
        )
        .bind(details.to_string())
        .bind(id);
        Ok(self.execute(&q).await? == 1)
    }

    /// Audit events matching `filter` with ids below `before` (0: from the newest), newest first.
    pub async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let q = query(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events \
             WHERE ($1 = 0 OR id < $1) AND ($2 = '' OR resource = $2) \
             AND ($3 = '' OR actor LIKE $3 ESCAPE '\\') AND time >= $4 AND time < $5 \
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(before)
        .bind(filter.resource.clone().unwrap_or_default())
        .bind(
            filter
                .actor
                .as_deref()
                .map(like_contains_exact_case)
                .unwrap_or_default(),
        )
        .bind(filter.start.unwrap_or(i64::MIN))
        .bind(filter.end.unwrap_or(i64::MAX))
        .bind(i64::from(limit));
        let rows: Vec<EventRow> = self.all(&q).await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_pattern_keeps_case_and_escapes() {
        assert_eq!(like_contains_exact_case("T_1%"), "%T\\_1\\%%");
    }
}
