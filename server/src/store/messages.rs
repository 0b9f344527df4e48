//! The outbox: messages, their recipients and attempts; reading them, cancelling and retrying
//! them, and purging finished ones. Creation is in `messages_create`, claims in
//! `messages_claims`, attempts in `messages_attempts`.

use super::audit::record;
use super::db::{Arg, Conn, Query, like_contains, query};
use super::locks::RowLock;
use super::rows::bad_value;
use super::{Store, Write};
use crate::audit::{AuditContext, diff};
use crate::domain::message::{
    Attempt, IDEMPOTENCY_WINDOW, Message, MessageContent, MessageFilter, MessageId, MessageState,
    Recipient, RecipientKind, RecipientState, check_transition,
};
use crate::domain::retry::Settled;
use crate::domain::{AccountId, Micros, micros, now_micros};
use crate::error::{Error, Result};
use serde_json::json;
use std::collections::HashMap;

/// The most rows one multi-row statement writes or one `IN` list names (well under either
/// backend's limit on placeholders).
pub(super) const MAX_ROWS: usize = 500;

/// The columns of [`MessageRow`].
const MESSAGE_COLUMNS: &str = "id, account_id, request_id, state, next_attempt_time, \
     attempt_count, message_id, size_bytes, last_error, payload, create_time, update_time";

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    account_id: i64,
    request_id: Option<String>,
    state: String,
    next_attempt_time: Option<i64>,
    attempt_count: i64,
    message_id: String,
    size_bytes: i64,
    last_error: String,
    payload: Vec<u8>,
    create_time: i64,
    update_time: i64,
}

#[derive(sqlx::FromRow)]
struct RecipientRow {
    address: String,
    kind: String,
    state: String,
    last_reply: String,
}

/// A recipient row with its message's id.
#[derive(sqlx::FromRow)]
struct IdRecipientRow {
    message_id: i64,
    #[sqlx(flatten)]
    recipient: RecipientRow,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt_time: i64,
    agent: String,
    reply_code: i64,
    enhanced_status_code: String,
    relay_queue_id: String,
    duration_micros: i64,
    failure_class: String,
    message: String,
    hint: String,
}

impl TryFrom<MessageRow> for Message {
    type Error = Error;

    fn try_from(r: MessageRow) -> Result<Self> {
        let content: MessageContent =
            serde_json::from_slice(&r.payload).map_err(|e| bad_value("payload", &e.to_string()))?;
        Ok(Message {
            id: MessageId(r.id),
            account: AccountId(r.account_id),
            request_id: r.request_id,
            state: MessageState::parse(&r.state).ok_or_else(|| bad_value("state", &r.state))?,
            content,
            recipients: Vec::new(),
            attempts: Vec::new(),
            message_id: r.message_id,
            size_bytes: r.size_bytes,
            last_error: r.last_error,
            attempt_count: r.attempt_count,
            create_time: r.create_time,
            update_time: r.update_time,
            next_attempt_time: r.next_attempt_time,
        })
    }
}

impl TryFrom<RecipientRow> for Recipient {
    type Error = Error;

    fn try_from(r: RecipientRow) -> Result<Self> {
        Ok(Recipient {
            kind: RecipientKind::parse(&r.kind).ok_or_else(|| bad_value("kind", &r.kind))?,
            state: RecipientState::parse(&r.state).ok_or_else(|| bad_value("state", &r.state))?,
            address: r.address,
            last_reply: r.last_reply,
        })
    }
}

impl From<AttemptRow> for Attempt {
    fn from(r: AttemptRow) -> Self {
        Attempt {
            time: r.attempt_time,
            agent: r.agent,
            reply_code: i32::try_from(r.reply_code).unwrap_or(0),
            enhanced_status_code: r.enhanced_status_code,
            relay_queue_id: r.relay_queue_id,
            duration_micros: r.duration_micros,
            failure_class: r.failure_class,
            message: r.message,
            hint: r.hint,
        }
    }
}

/// A message's recipients, in envelope order.
async fn recipients(conn: &mut Conn<'_>, id: MessageId) -> Result<Vec<Recipient>> {
    let q = query(
        "SELECT address, kind, state, last_reply FROM message_recipients \
         WHERE message_id = $1 ORDER BY position",
    )
    .bind(id.0);
    conn.all::<RecipientRow>(&q)
        .await?
        .into_iter()
        .map(Recipient::try_from)
        .collect()
}

/// The recipients of each of `ids`, in envelope order: one query for a batch of messages.
pub(super) async fn recipients_of(
    conn: &mut Conn<'_>,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<Recipient>>> {
    let mut out: HashMap<i64, Vec<Recipient>> = HashMap::new();
    for chunk in ids.chunks(MAX_ROWS) {
        let q = query(
            "SELECT message_id, address, kind, state, last_reply FROM message_recipients \
             WHERE message_id IN (",
        )
        .list(chunk.iter().map(|id| Arg::from(*id)))
        .and_sql(") ORDER BY message_id, position");
        for row in conn.all::<IdRecipientRow>(&q).await? {
            out.entry(row.message_id)
                .or_default()
                .push(Recipient::try_from(row.recipient)?);
        }
    }
    Ok(out)
}

/// One message with its recipients and attempts.
pub(super) async fn fetch(conn: &mut Conn<'_>, id: MessageId) -> Result<Message> {
    let q = query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1"
    ))
    .bind(id.0);
    let Some(row) = conn.optional::<MessageRow>(&q).await? else {
        return Err(Error::NotFound(id.to_string()));
    };
    let mut message = Message::try_from(row)?;
    message.recipients = recipients(conn, id).await?;
    let q = query(
        "SELECT attempt_time, agent, reply_code, enhanced_status_code, relay_queue_id, \
         duration_micros, failure_class, message, hint FROM message_attempts \
         WHERE message_id = $1 ORDER BY id",
    )
    .bind(id.0);
    message.attempts = conn
        .all::<AttemptRow>(&q)
        .await?
        .into_iter()
        .map(Attempt::from)
        .collect();
    Ok(message)
}

/// The query for a page of messages (newest first) below id `before`.
fn list_query(filter: &MessageFilter, before: i64, limit: u32) -> Query {
    let mut q = query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id < $1"
    ))
    .bind(before);
    if let Some(account) = filter.account {
        q = q.and(" AND account_id = $?", account.0);
    }
    if let Some(state) = filter.state {
        q = q.and(" AND state = $?", state.as_str());
    }
    if let Some(needle) = &filter.recipient {
        q = q.and(
            " AND id IN (SELECT message_id FROM message_recipients \
             WHERE lower(address) LIKE $? ESCAPE '\\')",
            like_contains(needle),
        );
    }
    if let Some(start) = filter.create_time_start {
        q = q.and(" AND create_time >= $?", start);
    }
    if let Some(end) = filter.create_time_end {
        q = q.and(" AND create_time < $?", end);
    }
    q.and(" ORDER BY id DESC LIMIT $?", i64::from(limit))
}

/// The message that `request_id` names, if it was created within the idempotency window; an
/// older one gives its request id up.
pub(super) async fn by_request_id(
    w: &mut Write<'_>,
    request_id: &str,
    now: Micros,
) -> Result<Option<i64>> {
    let q = query("SELECT id, create_time FROM messages WHERE request_id = $1").bind(request_id);
    let Some((id, created)): Option<(i64, i64)> = w.conn().optional(&q).await? else {
        return Ok(None);
    };
    let window = micros(IDEMPOTENCY_WINDOW);
    if created >= now - window {
        return Ok(Some(id));
    }
    w.conn()
        .execute(&query("UPDATE messages SET request_id = NULL WHERE id = $1").bind(id))
        .await?;
    Ok(None)
}

/// Refuses to delete an account whose messages still wait for delivery: they would be lost.
pub(super) async fn check_none_waiting(conn: &mut Conn<'_>, account: AccountId) -> Result<()> {
    let q = query(
        "SELECT COUNT(*) FROM messages WHERE account_id = $1 \
         AND state IN ('queued', 'sending', 'deferred')",
    )
    .bind(account.0);
    let (n,): (i64,) = conn.one(&q).await?;
    if n > 0 {
        return Err(Error::FailedPrecondition(format!(
            "{account} has {n} message(s) waiting for delivery; cancel them or wait until they \
             are sent before deleting it"
        )));
    }
    Ok(())
}

impl Store {
    /// Reads one message with its recipients and attempts.
    pub async fn get_message(&self, id: MessageId) -> Result<Message> {
        fetch(&mut self.read().await?.conn(), id).await
    }

    /// Lists up to `limit` messages with ids below `before` (0: from the newest), newest first,
    /// without recipients and attempts.
    pub async fn list_messages(
        &self,
        filter: &MessageFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let before = if before <= 0 { i64::MAX } else { before };
        self.all::<MessageRow>(&list_query(filter, before, limit))
            .await?
            .into_iter()
            .map(Message::try_from)
            .collect()
    }

    /// Cancels a QUEUED or DEFERRED message; any other state is `FailedPrecondition`.
    pub async fn cancel_message(&self, ctx: &AuditContext, id: MessageId) -> Result<Message> {
        self.transition(ctx, id, false).await
    }

    /// Makes a DEFERRED or FAILED message due now; its refused recipients are tried again,
    /// its accepted ones never are.
    pub async fn retry_message(&self, ctx: &AuditContext, id: MessageId) -> Result<Message> {
        self.transition(ctx, id, true).await
    }

    async fn transition(&self, ctx: &AuditContext, id: MessageId, retry: bool) -> Result<Message> {
        let mut w = self.begin_write().await?;
        // This row lock keeps claims and attempts out (a claim skips the message; an attempt
        // is only ever recorded on a SENDING one).
        w.lock_row("messages", id.0, RowLock::Update).await?;
        let current = fetch(&mut w.conn(), id).await?;
        check_transition(id, current.state, retry)?;
        let now = now_micros();
        let q = if retry {
            w.conn()
                .execute(
                    &query(
                        "UPDATE message_recipients SET state = 'pending' \
                         WHERE message_id = $1 AND state = 'rejected'",
                    )
                    .bind(id.0),
                )
                .await?;
            query(
                "UPDATE messages SET state = 'queued', next_attempt_time = $1, update_time = $1 \
                 WHERE id = $2",
            )
        } else {
            query(
                "UPDATE messages SET state = 'cancelled', next_attempt_time = NULL, \
                 update_time = $1 WHERE id = $2",
            )
        };
        w.conn().execute(&q.bind(now).bind(id.0)).await?;
        let message = fetch(&mut w.conn(), id).await?;
        let change = diff(
            Some(&json!({ "state": current.state.as_str() })),
            Some(&json!({ "state": message.state.as_str() })),
        );
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await?;
        Ok(message)
    }

    /// Records an attempt on a SENDING message and settles it: the recipients' states, the
    /// message's state, its next attempt time and last error.
    pub async fn record_attempt(
        &self,
        id: MessageId,
        attempt: &Attempt,
        settled: &Settled,
    ) -> Result<()> {
        let mut w = self.begin_outbox_write(false).await?;
        let q = query(
            "INSERT INTO message_attempts (message_id, attempt_time, agent, reply_code, \
             enhanced_status_code, relay_queue_id, duration_micros, failure_class, message, hint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.0)
        .bind(attempt.time)
        .bind(&attempt.agent)
        .bind(i64::from(attempt.reply_code))
        .bind(&attempt.enhanced_status_code)
        .bind(&attempt.relay_queue_id)
        .bind(attempt.duration_micros)
        .bind(&attempt.failure_class)
        .bind(&attempt.message)
        .bind(&attempt.hint);
        w.conn().execute(&q).await?;
        for (position, state, reply) in &settled.recipients {
            let q = query(
                "UPDATE message_recipients SET state = $1, last_reply = $2 \
                 WHERE message_id = $3 AND position = $4",
            )
            .bind(state.as_str())
            .bind(reply)
            .bind(id.0)
            .bind(i64::try_from(*position).unwrap_or(i64::MAX));
            w.conn().execute(&q).await?;
        }
        let q = query(
            "UPDATE messages SET state = $1, next_attempt_time = $2, last_error = $3, \
             attempt_count = attempt_count + 1, update_time = $4 WHERE id = $5",
        )
        .bind(settled.state.as_str())
        .bind(settled.next_attempt_time)
        .bind(&settled.last_error)
        .bind(now_micros())
        .bind(id.0);
        w.conn().execute(&q).await?;
        w.commit().await
    }

    /// Purges finished messages: the content of those finished before `body_before`, and
    /// everything of those finished before `log_before`. Returns how many of each.
    pub async fn purge_messages(
        &self,
        body_before: Micros,
        log_before: Micros,
    ) -> Result<(u64, u64)> {
        let now = now_micros();
        let bodies = query(
            "UPDATE messages SET body = NULL, body_purge_time = $1 WHERE body IS NOT NULL \
             AND state IN ('sent', 'failed', 'cancelled') AND update_time < $2",
        )
        .bind(now)
        .bind(body_before);
        let bodies = self.execute(&bodies).await?;
        let records = query(
            "DELETE FROM messages WHERE state IN ('sent', 'failed', 'cancelled') \
             AND update_time < $1",
        )
        .bind(log_before);
        let records = self.execute(&records).await?;
        Ok((bodies, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_numbers_binds_in_order() {
        let f = MessageFilter {
            account: Some(AccountId(2)),
            state: Some(MessageState::Sent),
            recipient: Some("bob".into()),
            create_time_start: Some(1),
            create_time_end: Some(2),
        };
        let q = list_query(&f, 10, 31);
        let sql = q.sql();
        assert_eq!(q.arg_count(), 7);
        assert!(sql.contains("account_id = $2"));
        assert!(sql.contains("LIKE $4"));
        assert!(sql.ends_with("ORDER BY id DESC LIMIT $7"));
    }
}
