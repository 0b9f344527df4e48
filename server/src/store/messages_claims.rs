//! Claiming due messages for delivery, and returning claims to the queue.
//!
//! A claim runs in a write transaction. On SQLite (one replica) that transaction is the only
//! writer. On PostgreSQL the claimed rows are locked with `FOR UPDATE SKIP LOCKED`, so replicas
//! never claim the same message, and each account's claims take the account's advisory lock
//! (skipping an account whose lock another replica holds), so that the per-account cap on
//! deliveries at once
//! (`sessions_per_account`) holds for all replicas together: the count of the account's
//! `SENDING` messages and the new claims are one step. A claimed message is `SENDING` until
//! its attempt is recorded; one left `SENDING` by a server that died is returned to the queue
//! by [`Store::requeue_sending`] (at the next start) or [`Store::requeue_orphaned`] (by another
//! replica).

use super::Store;
use super::db::{Arg, query};
use super::locks::Rule;
use super::messages::{MAX_ROWS, recipients_of};
use crate::domain::message::{Claimed, MessageId, ORPHANED_AFTER_DATA};
use crate::domain::replica::{REPLICA_DEAD_AFTER, ReplicaId};
use crate::domain::{AccountId, Micros, micros, now_micros};
use crate::error::Result;
use std::collections::HashMap;

/// Accounts (`a`) whose messages this replica may deliver (the replica's id is bound to `$me`,
/// and the time since which a replica's heartbeat counts as alive to `$alive`): those not
/// paused that send directly; through a network connector, only when one of the connector's
/// agents streams to this replica, or to no live replica at all (the attempt then fails
/// `CONNECTOR_OFFLINE` at once and is retried on the schedule).
fn deliverable_accounts(me: usize, alive: usize) -> String {
    format!(
        "a.id NOT IN (SELECT account_id FROM paused_accounts) \
         AND (NOT a.use_network_connector \
         OR EXISTS (SELECT 1 FROM agent_streams s \
         WHERE s.connector_id = a.network_connector_id AND s.replica_id = ${me}) \
         OR NOT EXISTS (SELECT 1 FROM agent_streams s JOIN replicas r ON r.id = s.replica_id \
         WHERE s.connector_id = a.network_connector_id AND r.heartbeat_time >= ${alive}))"
    )
}

/// Messages waiting for delivery (due now or later) that this replica may deliver (see
/// [`deliverable_accounts`]). The unary `+` keeps SQLite's planner (which has no statistics)
/// from choosing the account index, which walks every message the account ever sent, over
/// the partial index of due messages (`messages_due`).
fn deliverable_here(me: usize, alive: usize) -> String {
    format!(
        "state IN ('queued', 'deferred') AND next_attempt_time IS NOT NULL \
         AND +account_id IN (SELECT a.id FROM accounts a WHERE {})",
        deliverable_accounts(me, alive)
    )
}

/// What a claim took.
#[derive(Debug, Default)]
pub struct Claims {
    /// The messages, now `SENDING` on this replica.
    pub messages: Vec<Claimed>,
    /// Whether an account with due messages was held back by its cap on deliveries at once:
    /// claim again when deliveries finish (here or on another replica).
    pub capped: bool,
}

/// A due message as claimed: id, account, envelope sender, content, creation time, attempts.
type Due = (i64, i64, String, Option<Vec<u8>>, i64, i64);

impl Store {
    /// Claims up to `limit` messages due at `now` for delivery, at most `per_account` of each
    /// account SENDING at once on all replicas together: they turn SENDING. Accounts whose
    /// oldest due message is oldest go first.
    pub async fn claim_due(
        &self,
        now: Micros,
        limit: u32,
        per_account: u32,
        me: &ReplicaId,
    ) -> Result<Claims> {
        let mut w = self.begin_outbox_write(false).await?;
        let q = query(format!(
            "SELECT a.id, (SELECT MIN(m.next_attempt_time) FROM messages m \
             WHERE m.account_id = a.id AND m.state IN ('queued', 'deferred') \
             AND m.next_attempt_time <= $1) AS first_due \
             FROM accounts a WHERE {}",
            deliverable_accounts(2, 3)
        ))
        .bind(now)
        .bind(&me.0)
        .bind(now - micros(REPLICA_DEAD_AFTER));
        let mut accounts: Vec<(i64, i64)> = w
            .conn()
            .all::<(i64, Option<i64>)>(&q)
            .await?
            .into_iter()
            .filter_map(|(id, first)| first.map(|first| (first, id)))
            .collect();
        accounts.sort_unstable();
        accounts.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        if accounts.is_empty() {
            w.commit().await?;
            return Ok(Claims::default());
        }
        // An account another replica is claiming right now is left to it (it takes what the
        // cap leaves): no replica waits for another's claim.
        let mut mine = Vec::with_capacity(accounts.len());
        let mut claims = Claims::default();
        for (first, id) in accounts {
            if w.try_lock_rule(Rule::AccountClaims(AccountId(id))).await? {
                mine.push((first, id));
            } else {
                claims.capped = true;
            }
        }
        let accounts = mine;
        if accounts.is_empty() {
            w.commit().await?;
            return Ok(claims);
        }
        let ids: Vec<i64> = accounts.iter().map(|&(_, id)| id).collect();
        let q = query(
            "SELECT account_id, COUNT(*) FROM messages WHERE state = 'sending' \
             AND account_id IN (",
        )
        .list(ids.iter().map(|id| Arg::from(*id)))
        .and_sql(") GROUP BY account_id");
        let sending: HashMap<i64, i64> =
            w.conn().all::<(i64, i64)>(&q).await?.into_iter().collect();
        let lock = if self.is_postgres() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let mut left = i64::from(limit);
        let mut due: Vec<Due> = Vec::new();
        for (_, account) in accounts {
            let room = i64::from(per_account) - sending.get(&account).copied().unwrap_or(0);
            let take = room.min(left);
            if take <= 0 {
                claims.capped |= room <= 0;
                continue;
            }
            let q = query(format!(
                "SELECT id, account_id, envelope_from, body, create_time, attempt_count \
                 FROM messages WHERE account_id = $1 AND state IN ('queued', 'deferred') \
                 AND next_attempt_time <= $2 ORDER BY next_attempt_time, id LIMIT $3{lock}"
            ))
            .bind(account)
            .bind(now)
            .bind(take);
            let got: Vec<Due> = w.conn().all(&q).await?;
            let n = i64::try_from(got.len()).unwrap_or(i64::MAX);
            // The account is at its cap now; more of its messages may be due.
            claims.capped |= n == room;
            left -= n;
            due.extend(got);
        }
        if due.is_empty() {
            w.commit().await?;
            return Ok(claims);
        }
        let ids: Vec<i64> = due.iter().map(|d| d.0).collect();
        for chunk in ids.chunks(MAX_ROWS) {
            let q = query(
                "UPDATE messages SET state = 'sending', update_time = $1, claimed_by = $2, \
                 data_agent = NULL WHERE id IN (",
            )
            .bind(now)
            .bind(&me.0)
            .list(chunk.iter().map(|id| Arg::from(*id)))
            .and_sql(")");
            w.conn().execute(&q).await?;
        }
        let mut recipients = recipients_of(&mut w.conn(), &ids).await?;
        w.commit().await?;
        claims.messages = due
            .into_iter()
            .map(
                |(id, account, envelope_from, bytes, create_time, attempt_count)| Claimed {
                    id: MessageId(id),
                    account: AccountId(account),
                    envelope_from,
                    bytes,
                    recipients: recipients.remove(&id).unwrap_or_default(),
                    create_time,
                    attempt_count,
                },
            )
            .collect();
        Ok(claims)
    }

    /// When the next message this replica may deliver is due, if any is waiting.
    pub async fn next_due(&self, me: &ReplicaId) -> Result<Option<Micros>> {
        let q = query(format!(
            "SELECT MIN(next_attempt_time) FROM messages WHERE {}",
            deliverable_here(1, 2)
        ))
        .bind(&me.0)
        .bind(now_micros() - micros(REPLICA_DEAD_AFTER));
        let (next,): (Option<i64>,) = self.one(&q).await?;
        Ok(next)
    }

    /// Returns a claimed message to the queue without an attempt (the server is stopping, or
    /// the attempt could not start), due at `due`, with `last_error`.
    pub async fn requeue_message(
        &self,
        id: MessageId,
        due: Micros,
        last_error: &str,
    ) -> Result<()> {
        let q = query(
            "UPDATE messages SET state = 'queued', next_attempt_time = $1, last_error = $2, \
             update_time = $3 WHERE id = $4 AND state = 'sending'",
        )
        .bind(due)
        .bind(last_error)
        .bind(now_micros())
        .bind(id.0);
        self.execute(&q).await?;
        Ok(())
    }

    /// Records that `agent` reported DATA started for a SENDING message this replica claimed
    /// (PostgreSQL: only another replica ever reads it, see [`Store::requeue_orphaned`]). A
    /// progress write: a crash may lose it, and the message is then queued again, as after a
    /// crash of the single server.
    pub async fn mark_data_started(
        &self,
        id: MessageId,
        me: &ReplicaId,
        agent: &str,
    ) -> Result<()> {
        if self.is_sqlite() {
            return Ok(());
        }
        let mut w = self.begin_progress_write().await?;
        let q = query(
            "UPDATE messages SET data_agent = $1 \
             WHERE id = $2 AND state = 'sending' AND claimed_by = $3",
        )
        .bind(agent)
        .bind(id.0)
        .bind(&me.0);
        w.conn().execute(&q).await?;
        w.commit().await
    }

    /// Takes over the messages SENDING on a replica whose heartbeat stopped (it died
    /// mid-delivery). Those whose agent had reported DATA started may reach the relay anyway
    /// (the agent outlives the replica): they turn DEFERRED with a `CONNECTOR_LOST` attempt,
    /// until a person calls `RetryMessage`. The others return to the queue, due now, for
    /// another replica. Returns how many of each.
    pub async fn requeue_orphaned(&self) -> Result<(u64, u64)> {
        let now = now_micros();
        let alive = now - micros(REPLICA_DEAD_AFTER);
        let orphaned = "state = 'sending' AND claimed_by IS NOT NULL AND claimed_by NOT IN \
             (SELECT id FROM replicas WHERE heartbeat_time >= $2)";
        let mut w = self.begin_outbox_write(false).await?;
        let lost = &ORPHANED_AFTER_DATA;
        let q = query(format!(
            "INSERT INTO message_attempts (message_id, attempt_time, agent, reply_code, \
             enhanced_status_code, relay_queue_id, duration_micros, failure_class, message, hint) \
             SELECT id, $1, data_agent, 0, '', '', 0, $3, $4, $5 FROM messages \
             WHERE {orphaned} AND data_agent IS NOT NULL"
        ))
        .bind(now)
        .bind(alive)
        .bind(lost.class)
        .bind(lost.message)
        .bind(lost.hint);
        w.conn().execute(&q).await?;
        let q = query(format!(
            "UPDATE messages SET state = 'deferred', next_attempt_time = NULL, update_time = $1, \
             claimed_by = NULL, attempt_count = attempt_count + 1, last_error = $3 \
             WHERE {orphaned} AND data_agent IS NOT NULL"
        ))
        .bind(now)
        .bind(alive)
        .bind(lost.last_error());
        let deferred = w.conn().execute(&q).await?;
        let q = query(format!(
            "UPDATE messages SET state = 'queued', next_attempt_time = $1, update_time = $1, \
             claimed_by = NULL, last_error = 'the replica delivering it stopped; queued again' \
             WHERE {orphaned}"
        ))
        .bind(now)
        .bind(alive);
        let queued = w.conn().execute(&q).await?;
        w.commit().await?;
        Ok((queued, deferred))
    }

    /// Returns to the queue, due now, the messages left SENDING since before `claimed_before`
    /// (by a server that died mid-delivery). Returns how many.
    pub async fn requeue_sending(&self, claimed_before: Micros) -> Result<u64> {
        let now = now_micros();
        let q = query(
            "UPDATE messages SET state = 'queued', next_attempt_time = $1, update_time = $1, \
             last_error = 'the server stopped during an attempt; queued again' \
             WHERE state = 'sending' AND update_time < $2",
        )
        .bind(now)
        .bind(claimed_before);
        self.execute(&q).await
    }
}
