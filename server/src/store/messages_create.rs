//! Creating messages: one in its own durable transaction ([`Store::create_message`]), or a
//! batch in one ([`Store::create_messages`], the group commit behind `SendMessage`: one fsync
//! for every message of the batch, each caller answered only after it).

use super::Store;
use super::Write;
use super::audit::{record, record_many};
use super::db::{Arg, query};
use super::messages::{MAX_ROWS, by_request_id, fetch};
use crate::audit::{AuditContext, diff};
use crate::domain::message::{
    IDEMPOTENCY_WINDOW, Message, MessageId, MessageState, NewMessage, Recipient, RecipientState,
};
use crate::domain::{Micros, micros, now_micros};
use crate::error::{Error, Result};
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// Inserts `new`, queued and due at `now`, without its recipients; `None` if its account does
/// not exist.
pub(super) async fn insert(
    w: &mut Write<'_>,
    new: &NewMessage,
    now: Micros,
) -> Result<Option<MessageId>> {
    let q = query(
        "INSERT INTO messages (account_id, request_id, state, next_attempt_time, \
         attempt_count, envelope_from, message_id, size_bytes, body, last_error, payload, \
         create_time, update_time) \
         SELECT id, $2, 'queued', $3, 0, $4, $5, $6, $7, $8, $9, $3, $3 \
         FROM accounts WHERE id = $1 RETURNING id",
    )
    .bind(new.account.0)
    .bind(&new.request_id)
    .bind(now)
    .bind(&new.envelope_from)
    .bind(&new.message_id)
    .bind(size_of(new))
    .bind(new.bytes.as_slice())
    .bind(&new.last_error)
    .bind(payload_of(new)?);
    let id: Option<(i64,)> = w.conn().optional(&q).await?;
    Ok(id.map(|(id,)| MessageId(id)))
}

/// The messages stored under the batch's request ids within the idempotency window, by
/// request id; an older one gives its request id up (as [`by_request_id`] does).
async fn stored_requests(
    w: &mut Write<'_>,
    batch: &[(AuditContext, NewMessage)],
    now: Micros,
) -> Result<HashMap<String, i64>> {
    let wanted: HashSet<&str> = batch
        .iter()
        .filter_map(|(_, new)| new.request_id.as_deref())
        .collect();
    let wanted: Vec<&str> = wanted.into_iter().collect();
    let mut stored = HashMap::new();
    for chunk in wanted.chunks(MAX_ROWS) {
        let q = query("SELECT id, request_id, create_time FROM messages WHERE request_id IN (")
            .list(chunk.iter().map(|r| Arg::from(*r)))
            .and_sql(")");
        let rows: Vec<(i64, String, i64)> = w.conn().all(&q).await?;
        for (id, request_id, created) in rows {
            if created >= now - micros(IDEMPOTENCY_WINDOW) {
                stored.insert(request_id, id);
            } else {
                let q = query("UPDATE messages SET request_id = NULL WHERE id = $1").bind(id);
                w.conn().execute(&q).await?;
            }
        }
    }
    Ok(stored)
}

/// Which of the batch's accounts exist. One deleted after this look is kept out by the foreign
/// key (PostgreSQL) or the writer queue (SQLite): the transaction fails, and the fallback stores
/// each message alone.
async fn existing_accounts(
    w: &mut Write<'_>,
    batch: &[(AuditContext, NewMessage)],
) -> Result<HashSet<i64>> {
    let wanted: HashSet<i64> = batch.iter().map(|(_, new)| new.account.0).collect();
    let wanted: Vec<i64> = wanted.into_iter().collect();
    let mut found = HashSet::new();
    for chunk in wanted.chunks(MAX_ROWS) {
        let q = query("SELECT id FROM accounts WHERE id IN (")
            .list(chunk.iter().map(|id| Arg::from(*id)))
            .and_sql(")");
        let rows: Vec<(i64,)> = w.conn().all(&q).await?;
        found.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(found)
}

/// Inserts `messages` (of existing accounts), queued and due at `now`, without their
/// recipients, with multi-row statements; their ids, in order. Both backends number the rows of
/// one statement in the order of its `VALUES`; that is checked against each row's `Message-ID`,
/// and a mismatch fails the transaction rather than mix messages up.
async fn insert_many(
    w: &mut Write<'_>,
    messages: &[(usize, &NewMessage)],
    now: Micros,
) -> Result<Vec<MessageId>> {
    let mut ids = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(MAX_ROWS / 2) {
        let mut rows = Vec::with_capacity(chunk.len());
        for (_, new) in chunk {
            rows.push(vec![
                Arg::from(new.account.0),
                Arg::from(&new.request_id),
                Arg::from(MessageState::Queued.as_str()),
                Arg::from(now),
                Arg::from(0_i64),
                Arg::from(&new.envelope_from),
                Arg::from(&new.message_id),
                Arg::from(size_of(new)),
                Arg::from(new.bytes.as_slice()),
                Arg::from(&new.last_error),
                Arg::from(payload_of(new)?),
                Arg::from(now),
                Arg::from(now),
            ]);
        }
        let q = query(
            "INSERT INTO messages (account_id, request_id, state, next_attempt_time, \
             attempt_count, envelope_from, message_id, size_bytes, body, last_error, payload, \
             create_time, update_time) VALUES ",
        )
        .rows(rows)
        .and_sql(" RETURNING id, message_id");
        let mut returned: Vec<(i64, String)> = w.conn().all(&q).await?;
        returned.sort_unstable_by_key(|(id, _)| *id);
        if returned.len() != chunk.len()
            || returned
                .iter()
                .zip(chunk)
                .any(|((_, message_id), (_, new))| *message_id != new.message_id)
        {
            return Err(Error::Internal(
                "the new messages' ids are not in the order they were inserted".into(),
            ));
        }
        ids.extend(returned.into_iter().map(|(id, _)| MessageId(id)));
    }
    Ok(ids)
}

/// Inserts the recipients of the messages just inserted, pending, with multi-row statements.
pub(super) async fn insert_recipients(
    w: &mut Write<'_>,
    messages: &[(MessageId, &NewMessage)],
) -> Result<()> {
    let rows: Vec<Vec<Arg>> = messages
        .iter()
        .flat_map(|(id, new)| {
            new.recipients
                .iter()
                .enumerate()
                .map(move |(position, (address, kind))| {
                    vec![
                        Arg::from(id.0),
                        Arg::from(i64::try_from(position).unwrap_or(i64::MAX)),
                        Arg::from(address),
                        Arg::from(kind.as_str()),
                        Arg::from(RecipientState::Pending.as_str()),
                    ]
                })
        })
        .collect();
    for chunk in rows.chunks(MAX_ROWS) {
        let q = query(
            "INSERT INTO message_recipients (message_id, position, address, kind, state) VALUES ",
        )
        .rows(chunk.iter().cloned());
        w.conn().execute(&q).await?;
    }
    Ok(())
}

/// The size of `new`'s built message, as stored.
fn size_of(new: &NewMessage) -> i64 {
    i64::try_from(new.bytes.len()).unwrap_or(i64::MAX)
}

/// What `new`'s caller composed, as stored.
fn payload_of(new: &NewMessage) -> Result<Vec<u8>> {
    serde_json::to_vec(&new.content)
        .map_err(|e| Error::Crypto(format!("cannot encode a message: {e}")))
}

/// The audit diff of a message created.
pub(super) fn created_diff(new: &NewMessage) -> serde_json::Value {
    let after = json!({
        "account": new.account.to_string(),
        "recipients": new.recipients.len(),
        "size_bytes": size_of(new),
        "message_id": new.message_id,
        "request_id": new.request_id,
    });
    diff(None, Some(&after))
}

/// The message [`insert`] and [`insert_recipients`] stored as `id` at `now`, as reading it
/// back would give it (queued, due now, every recipient pending, no attempts).
pub(super) fn queued(id: MessageId, new: &NewMessage, now: Micros) -> Result<Message> {
    Ok(Message {
        id,
        account: new.account,
        request_id: new.request_id.clone(),
        state: MessageState::Queued,
        content: new.content.clone(),
        recipients: new
            .recipients
            .iter()
            .map(|(address, kind)| Recipient {
                kind: *kind,
                state: RecipientState::Pending,
                address: address.clone(),
                last_reply: String::new(),
            })
            .collect(),
        attempts: Vec::new(),
        message_id: new.message_id.clone(),
        size_bytes: size_of(new),
        last_error: new.last_error.clone(),
        attempt_count: 0,
        create_time: now,
        update_time: now,
        next_attempt_time: Some(now),
    })
}

impl Store {
    /// Stores a new message, queued and due now, or returns the message that the same
    /// `request_id` created within 24 hours (then `false`: nothing new is stored). The commit
    /// is durable when this returns (see [`Store::begin_durable_write`]).
    pub async fn create_message(
        &self,
        ctx: &AuditContext,
        new: &NewMessage,
    ) -> Result<(Message, bool)> {
        let now = now_micros();
        let mut w = self.begin_outbox_write(true).await?;
        if let Some(request_id) = &new.request_id
            && let Some(id) = by_request_id(&mut w, request_id, now).await?
        {
            let message = fetch(&mut w.conn(), MessageId(id)).await?;
            return Ok((message, false));
        }
        let Some(id) = insert(&mut w, new, now).await? else {
            return Err(Error::NotFound(new.account.to_string()));
        };
        insert_recipients(&mut w, &[(id, new)]).await?;
        record(&mut w, ctx, &id.to_string(), created_diff(new)).await?;
        w.commit().await?;
        Ok((queued(id, new, now)?, true))
    }

    /// Stores a batch of new messages in one transaction, durable when this returns, and gives
    /// each its own answer, in order, as [`Store::create_message`] would: an unknown account is
    /// `NotFound` for that message only; a `request_id` already stored (or used earlier in the
    /// batch) gives that message with `false`. If the transaction fails as a whole (a database
    /// error, or a unique `request_id` that another replica stored meanwhile), each message is
    /// created alone, so that a failure stays with its own message.
    pub async fn create_messages(
        &self,
        batch: &[(AuditContext, NewMessage)],
    ) -> Vec<Result<(Message, bool)>> {
        if let [(ctx, new)] = batch {
            return vec![self.create_message(ctx, new).await];
        }
        match self.create_together(batch).await {
            Ok(created) => created,
            Err(e) => {
                tracing::warn!(error = %e, messages = batch.len(), "a batch of new messages failed; storing each alone");
                let mut created = Vec::with_capacity(batch.len());
                for (ctx, new) in batch {
                    created.push(self.create_message(ctx, new).await);
                }
                created
            }
        }
    }

    /// [`Store::create_messages`] in one transaction; `Err` if that transaction failed.
    async fn create_together(
        &self,
        batch: &[(AuditContext, NewMessage)],
    ) -> Result<Vec<Result<(Message, bool)>>> {
        /// What became of one message of the batch.
        enum Slot {
            Done(Box<Result<(Message, bool)>>),
            /// Stored before, under the same request id.
            Stored(MessageId),
            /// Stored by an earlier message of this batch with the same request id.
            SameAs(usize),
        }
        let now = now_micros();
        let mut w = self.begin_outbox_write(true).await?;
        let stored = stored_requests(&mut w, batch, now).await?;
        let accounts = existing_accounts(&mut w, batch).await?;
        let mut slots = Vec::with_capacity(batch.len());
        let mut in_batch: HashMap<&str, usize> = HashMap::new();
        let mut to_insert: Vec<(usize, &NewMessage)> = Vec::with_capacity(batch.len());
        for (i, (_, new)) in batch.iter().enumerate() {
            if let Some(request_id) = new.request_id.as_deref() {
                if let Some(&first) = in_batch.get(request_id) {
                    slots.push(Slot::SameAs(first));
                    continue;
                }
                if let Some(&id) = stored.get(request_id) {
                    slots.push(Slot::Stored(MessageId(id)));
                    continue;
                }
            }
            if !accounts.contains(&new.account.0) {
                slots.push(Slot::Done(Box::new(Err(Error::NotFound(
                    new.account.to_string(),
                )))));
                continue;
            }
            if let Some(request_id) = new.request_id.as_deref() {
                in_batch.insert(request_id, i);
            }
            // Answered below, once its id is known.
            slots.push(Slot::Done(Box::new(Err(Error::Internal(
                "not stored".into(),
            )))));
            to_insert.push((i, new));
        }
        let ids = insert_many(&mut w, &to_insert, now).await?;
        let mut inserted: Vec<(MessageId, &NewMessage)> = Vec::with_capacity(ids.len());
        let mut events = Vec::with_capacity(ids.len());
        for ((i, new), id) in to_insert.into_iter().zip(ids) {
            inserted.push((id, new));
            events.push((&batch[i].0, id.to_string(), created_diff(new)));
            slots[i] = Slot::Done(Box::new(queued(id, new, now).map(|m| (m, true))));
        }
        insert_recipients(&mut w, &inserted).await?;
        record_many(&mut w, &events).await?;
        for slot in &mut slots {
            if let Slot::Stored(id) = slot {
                *slot = Slot::Done(Box::new(Ok((fetch(&mut w.conn(), *id).await?, false))));
            }
        }
        w.commit().await?;
        let mut created: Vec<Result<(Message, bool)>> = Vec::with_capacity(slots.len());
        for slot in slots {
            created.push(match slot {
                Slot::Done(result) => *result,
                // An earlier slot, already resolved; `Stored` ones were resolved above.
                Slot::SameAs(first) => match &created[first] {
                    Ok((message, _)) => Ok((message.clone(), false)),
                    Err(_) => Err(Error::Internal("a batch lost its first message".into())),
                },
                Slot::Stored(id) => Err(Error::Internal(format!("{id} was not read back"))),
            });
        }
        Ok(created)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::AccountId;
    use crate::domain::message::{MessageFilter, RecipientKind};
    use crate::store::{DatabaseUrl, open};
    use mailplane_proto::v1 as pb;
    use std::sync::Arc;

    /// A fresh SQLite store with one account, in `dir`.
    pub(crate) async fn store_with_account(dir: &std::path::Path) -> (Arc<Store>, AccountId) {
        let store = open(&DatabaseUrl::Sqlite(dir.join("t.db"))).await.unwrap();
        let spec = crate::domain::AccountSpec::try_from(pb::SmtpAccount {
            account_name: "Sink".into(),
            sender_email: "ops@example.com".into(),
            host: "127.0.0.1".into(),
            port: 2525,
            security: pb::SecurityMode::None.into(),
            ..Default::default()
        })
        .unwrap();
        let account = store
            .create_account(&AuditContext::system(), spec)
            .await
            .unwrap();
        (store, account.id)
    }

    /// A message of `account` to two recipients, with `request_id`.
    pub(crate) fn new_message(account: AccountId, request_id: Option<&str>) -> NewMessage {
        NewMessage {
            account,
            request_id: request_id.map(str::to_owned),
            content: crate::domain::message::MessageContent {
                subject: "Backup report".into(),
                ..Default::default()
            },
            envelope_from: "ops@example.com".into(),
            recipients: vec![
                ("a@example.com".into(), RecipientKind::To),
                ("b@example.com".into(), RecipientKind::Bcc),
            ],
            message_id: format!("<{}@example.com>", rand::random::<u64>()),
            bytes: b"Subject: Backup report\r\n\r\nDone.\r\n".to_vec(),
            last_error: String::new(),
        }
    }

    #[tokio::test]
    async fn a_batch_answers_each_message_as_if_stored_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, account) = store_with_account(dir.path()).await;
        let ctx = AuditContext::system();
        let (earlier, _) = store
            .create_message(&ctx, &new_message(account, Some("earlier")))
            .await
            .unwrap();
        let batch: Vec<_> = [
            new_message(account, Some("r1")),
            new_message(account, Some("r1")),
            new_message(AccountId(account.0 + 100), Some("bad")),
            new_message(account, None),
            new_message(account, Some("earlier")),
            new_message(account, Some("r2")),
        ]
        .into_iter()
        .map(|m| (ctx.clone(), m))
        .collect();
        // In one transaction: the fallback (one by one) would give the same answers.
        let results = store.create_together(&batch).await.unwrap();
        assert_eq!(results.len(), batch.len());
        let (first, created) = results[0].as_ref().unwrap();
        assert!(created);
        let (again, created) = results[1].as_ref().unwrap();
        assert!(!created, "the second r1 stores nothing");
        assert_eq!(again.id, first.id);
        assert!(
            matches!(results[2], Err(Error::NotFound(_))),
            "{:?}",
            results[2]
        );
        let (no_id, created) = results[3].as_ref().unwrap();
        assert!(created);
        let (old, created) = results[4].as_ref().unwrap();
        assert!(!created);
        assert_eq!(old, &earlier);
        assert!(results[5].as_ref().unwrap().1);
        // What a call is answered is what reading the message back gives.
        for (message, _) in [&results[0], &results[3], &results[5]].map(|r| r.as_ref().unwrap()) {
            assert_eq!(&store.get_message(message.id).await.unwrap(), message);
        }
        assert_ne!(no_id.id, first.id);
        let all = store
            .list_messages(&MessageFilter::default(), 0, 100)
            .await
            .unwrap();
        assert_eq!(all.len(), 4, "earlier, r1, the one without an id, r2");
        // A later batch still finds r1.
        let later = store
            .create_messages(&[
                (ctx.clone(), new_message(account, Some("r1"))),
                (ctx.clone(), new_message(account, Some("r3"))),
            ])
            .await;
        assert_eq!(later[0].as_ref().unwrap().0.id, first.id);
        assert!(!later[0].as_ref().unwrap().1);
        assert!(later[1].as_ref().unwrap().1);
    }
}
