//! The audit log's hash chain in the database: sealing, reading it back in order, checking it.
//!
//! Writers insert events unsealed (`seq` NULL) exactly as before and take no lock for the
//! chain. The sealer ([`Store::seal_audit_events`]) runs in the background under the
//! [`Rule::AuditSeal`] advisory lock, taken with `try`: while one replica seals, another
//! skips its pass instead of waiting, and no writer ever waits on it (on SQLite a pass is one
//! ordinary write transaction among the others).
//!
//! **Why nothing is skipped on PostgreSQL.** A pass seals every *committed* row whose `seq`
//! is NULL, in `(time, id)` order, after the head (the row with the highest `seq`); it never
//! keeps a watermark of time or id. A transaction that took its `time` and `id` early and
//! commits after a later event was sealed is simply sealed by the next pass, with the next
//! `seq`: the chain orders events by when they were sealed, which can differ from `time` by
//! the length of a transaction. No settle margin is needed for that. Passes run one at a time
//! and each commits all its links at once, so `seq`s become visible in order with no gaps,
//! which is what lets the JSON-lines sink follow `seq`.
//!
//! Refusal events stand for a minute of refusals and change until it is over: a pass leaves
//! them alone for [`REFUSAL_SETTLE_MICROS`]. The rows a pass seals are locked (`FOR NO KEY
//! UPDATE`) so a refusal's update waits and then, finding the event sealed
//! (`AND seq IS NULL`), changes nothing: a sealed event is never changed.

use super::Store;
use super::audit::{EVENT_COLUMNS, EventRow};
use super::db::{Arg, query};
use super::locks::{RowLock, Rule};
use crate::audit::AuditEvent;
use crate::domain::audit_chain::{self, REFUSAL_SETTLE_MICROS, SEAL_BATCH, Verifier};
use crate::domain::now_micros;
use crate::error::Result;

/// Links written per statement.
const UPDATE_ROWS: usize = 250;

/// What a check of the chain found.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// The check: events, head, first break.
    pub verifier: Verifier,
    /// Events not in the chain checked: not sealed yet, or sealed while it was read.
    pub unsealed: i64,
}

impl Store {
    /// Seals every event that may be sealed now: returns how many. Does nothing (0) while
    /// another sealer, of this replica or another, is at work.
    pub async fn seal_audit_events(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let sealed = self.seal_batch().await?;
            total += sealed;
            if sealed < u64::from(SEAL_BATCH) {
                return Ok(total);
            }
        }
    }

    /// Seals up to [`SEAL_BATCH`] events in one transaction.
    async fn seal_batch(&self) -> Result<u64> {
        let mut w = self.begin_write().await?;
        if !w.try_lock_rule(Rule::AuditSeal).await? {
            return Ok(0);
        }
        let head: Option<(i64, Option<String>)> = w
            .conn()
            .optional(&query(
                "SELECT seq, hash FROM audit_events WHERE seq IS NOT NULL \
                 ORDER BY seq DESC LIMIT 1",
            ))
            .await?;
        let lock = w.row_lock(RowLock::Update);
        let q = query(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events \
             WHERE seq IS NULL AND (outcome <> 'denied' OR time < $1) \
             ORDER BY time, id LIMIT $2{lock}"
        ))
        .bind(now_micros().saturating_sub(REFUSAL_SETTLE_MICROS))
        .bind(i64::from(SEAL_BATCH));
        let rows: Vec<EventRow> = w.conn().all(&q).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events: Vec<AuditEvent> = rows.into_iter().map(AuditEvent::from).collect();
        let view: Vec<_> = events.iter().map(AuditEvent::chain_event).collect();
        let links = audit_chain::seal(
            head.map(|(seq, hash)| (seq, hash.unwrap_or_default())),
            &view,
        );
        let pairs: Vec<_> = events.iter().zip(&links).collect();
        for chunk in pairs.chunks(UPDATE_ROWS) {
            let q = query("WITH v (id, seq, prev_hash, hash) AS (VALUES ")
                .rows(chunk.iter().map(|(e, l)| {
                    vec![
                        Arg::from(e.id),
                        Arg::from(l.seq),
                        Arg::from(&l.prev_hash),
                        Arg::from(&l.hash),
                    ]
                }))
                .and_sql(
                    ") UPDATE audit_events SET seq = v.seq, prev_hash = v.prev_hash, \
                     hash = v.hash FROM v WHERE audit_events.id = v.id",
                );
            w.conn().execute(&q).await?;
        }
        w.commit().await?;
        Ok(events.len() as u64)
    }

    /// The highest `seq` sealed so far (0: none).
    pub async fn audit_chain_head(&self) -> Result<i64> {
        let (seq,): (Option<i64>,) = self
            .one(&query("SELECT MAX(seq) FROM audit_events"))
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Sealed events with `seq` above `after`, in `seq` order (for the export sink).
    pub async fn sealed_audit_events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let q = query(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit));
        let rows: Vec<EventRow> = self.all(&q).await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    /// Checks the whole chain, in `seq` order, and counts the events it did not cover.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let mut verifier = Verifier::default();
        let mut after = i64::MIN;
        loop {
            let events = self.sealed_audit_events_after(after, SEAL_BATCH).await?;
            for e in &events {
                if let Some(link) = &e.link {
                    verifier.check(&e.chain_event(), link);
                    after = link.seq;
                }
            }
            if events.len() < SEAL_BATCH as usize {
                break;
            }
        }
        // Counted after the chain was read, so that events sealed meanwhile count as not
        // checked rather than vanish from both numbers.
        let q = query("SELECT COUNT(*) FROM audit_events WHERE seq IS NULL OR seq > $1")
            .bind(verifier.head_seq);
        let (unsealed,): (i64,) = self.one(&q).await?;
        Ok(ChainReport { verifier, unsealed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditContext;
    use crate::auth::refusals::Refusals;
    use crate::store::messages_tests::store_with_account;

    fn peer() -> AuditContext {
        AuditContext {
            actor: "unauthenticated".into(),
            peer: "192.0.2.1:4000".into(),
            rpc: "/mailplane.v1.SmtpAccountService/ListAccounts".into(),
        }
    }

    #[tokio::test]
    async fn refusals_wait_for_their_minute_and_a_sealed_one_is_never_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_account(dir.path()).await;
        let refusals = Refusals::default();
        refusals.record(&store, &peer(), "no token").await.unwrap();
        // The account's event is sealed; the refusal is left for its minute.
        assert_eq!(store.seal_audit_events().await.unwrap(), 1);
        refusals.record(&store, &peer(), "no token").await.unwrap();
        let report = store.verify_audit_chain().await.unwrap();
        assert_eq!((report.verifier.head_seq, report.unsealed), (1, 1));
        // Once its minute (and the margin) is over, it is sealed with its count.
        let q = query("UPDATE audit_events SET time = time - $1 WHERE outcome = 'denied'")
            .bind(REFUSAL_SETTLE_MICROS + 1);
        store.execute(&q).await.unwrap();
        assert_eq!(store.seal_audit_events().await.unwrap(), 1);
        let sealed = store.sealed_audit_events_after(1, 10).await.unwrap();
        assert!(sealed[0].diff.contains("\"count\":2"), "{}", sealed[0].diff);
        // A refusal that finds its event sealed starts another instead of changing it.
        refusals.record(&store, &peer(), "bad token").await.unwrap();
        let report = store.verify_audit_chain().await.unwrap();
        assert_eq!(report.verifier.broken, None);
        assert_eq!((report.verifier.head_seq, report.unsealed), (2, 1));
        let again = store.sealed_audit_events_after(1, 10).await.unwrap();
        assert_eq!(again[0].diff, sealed[0].diff);
    }
}
