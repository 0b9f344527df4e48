//! Recording many delivery attempts in one transaction (the group commit behind the outbox's
//! recorder): three statements for the whole batch, whatever its size.

use super::Store;
use super::db::{Arg, query};
use super::messages::MAX_ROWS;
use crate::domain::message::{Attempt, MessageId};
use crate::domain::now_micros;
use crate::domain::retry::Settled;
use crate::error::Result;

/// One attempt to record: the message, what the attempt did, and what it means for it.
pub type AttemptRecord = (MessageId, Attempt, Settled);

impl Store {
    /// Records attempts on SENDING messages and settles them, as [`Store::record_attempt`]
    /// does for each, in one transaction. If that transaction fails, each is recorded alone,
    /// so that a failure stays with its own message; each gets its own result.
    pub async fn record_attempts(&self, records: &[AttemptRecord]) -> Vec<Result<()>> {
        if let [(id, attempt, settled)] = records {
            return vec![self.record_attempt(*id, attempt, settled).await];
        }
        match self.record_together(records).await {
            Ok(()) => records.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                tracing::warn!(error = %e, attempts = records.len(), "a batch of delivery attempts failed; recording each alone");
                let mut recorded = Vec::with_capacity(records.len());
                for (id, attempt, settled) in records {
                    recorded.push(self.record_attempt(*id, attempt, settled).await);
                }
                recorded
            }
        }
    }

    /// [`Store::record_attempts`] in one transaction.
    async fn record_together(&self, records: &[AttemptRecord]) -> Result<()> {
        let mut w = self.begin_outbox_write(false).await?;
        for chunk in records.chunks(MAX_ROWS / 2) {
            let q = query(
                "INSERT INTO message_attempts (message_id, attempt_time, agent, reply_code, \
                 enhanced_status_code, relay_queue_id, duration_micros, failure_class, message, \
                 hint) VALUES ",
            )
            .rows(chunk.iter().map(|(id, a, _)| {
                vec![
                    Arg::from(id.0),
                    Arg::from(a.time),
                    Arg::from(&a.agent),
                    Arg::from(i64::from(a.reply_code)),
                    Arg::from(&a.enhanced_status_code),
                    Arg::from(&a.relay_queue_id),
                    Arg::from(a.duration_micros),
                    Arg::from(&a.failure_class),
                    Arg::from(&a.message),
                    Arg::from(&a.hint),
                ]
            }));
            w.conn().execute(&q).await?;
        }
        let recipients: Vec<Vec<Arg>> = records
            .iter()
            .flat_map(|(id, _, settled)| {
                settled.recipients.iter().map(|(position, state, reply)| {
                    vec![
                        Arg::from(id.0),
                        Arg::from(i64::try_from(*position).unwrap_or(i64::MAX)),
                        Arg::from(state.as_str()),
                        Arg::from(reply),
                    ]
                })
            })
            .collect();
        for chunk in recipients.chunks(MAX_ROWS) {
            // VALUES columns are column1, column2, … on both backends.
            let q = query(
                "UPDATE message_recipients SET state = v.column3, last_reply = v.column4 \
                 FROM (VALUES ",
            )
            .rows(chunk.iter().cloned())
            .and_sql(
                ") AS v WHERE message_recipients.message_id = v.column1 \
                 AND message_recipients.position = v.column2",
            );
            w.conn().execute(&q).await?;
        }
        let now = now_micros();
        for chunk in records.chunks(MAX_ROWS) {
            let q = query(
                "UPDATE messages SET state = v.column2, next_attempt_time = v.column3, \
                 last_error = v.column4, attempt_count = attempt_count + 1, update_time = $1 \
                 FROM (VALUES ",
            )
            .bind(now)
            .rows(chunk.iter().map(|(id, _, settled)| {
                vec![
                    Arg::from(id.0),
                    Arg::from(settled.state.as_str()),
                    Arg::from(settled.next_attempt_time),
                    Arg::from(&settled.last_error),
                ]
            }))
            .and_sql(") AS v WHERE messages.id = v.column1");
            w.conn().execute(&q).await?;
        }
        w.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditContext;
    use crate::domain::message::{MessageState, RecipientState};
    use crate::store::messages_tests::{new_message, store_with_account};

    #[tokio::test]
    async fn a_batch_settles_each_message_as_if_recorded_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, account) = store_with_account(dir.path()).await;
        let ctx = AuditContext::system();
        for _ in 0..3 {
            store
                .create_message(&ctx, &new_message(account, None))
                .await
                .unwrap();
        }
        let claimed = store
            .claim_due(
                now_micros() + 1,
                10,
                4,
                &crate::domain::replica::ReplicaId::new(),
            )
            .await
            .unwrap()
            .messages;
        assert_eq!(claimed.len(), 3);
        assert!(claimed.iter().all(|c| c.recipients.len() == 2));
        let attempt = |reply_code| Attempt {
            time: 1,
            agent: "direct".into(),
            reply_code,
            ..Attempt::default()
        };
        let sent = Settled {
            recipients: vec![
                (0, RecipientState::Accepted, "250 ok".into()),
                (1, RecipientState::Accepted, "250 ok".into()),
            ],
            state: MessageState::Sent,
            next_attempt_time: None,
            last_error: String::new(),
        };
        let deferred = Settled {
            recipients: vec![
                (0, RecipientState::Accepted, "250 ok".into()),
                (1, RecipientState::Pending, "451 later".into()),
            ],
            state: MessageState::Deferred,
            next_attempt_time: Some(42),
            last_error: "451 later".into(),
        };
        let records = vec![
            (claimed[0].id, attempt(250), sent.clone()),
            (claimed[1].id, attempt(451), deferred.clone()),
            (claimed[2].id, attempt(250), sent),
        ];
        // In one transaction: the fallback (one by one) would record the same.
        store.record_together(&records).await.unwrap();
        for (id, attempt, settled) in &records {
            let m = store.get_message(*id).await.unwrap();
            assert_eq!(m.state, settled.state);
            assert_eq!(m.next_attempt_time, settled.next_attempt_time);
            assert_eq!(m.last_error, settled.last_error);
            assert_eq!(m.attempt_count, 1);
            assert_eq!(m.attempts, vec![attempt.clone()]);
            for (position, state, reply) in &settled.recipients {
                assert_eq!(m.recipients[*position].state, *state);
                assert_eq!(&m.recipients[*position].last_reply, reply);
            }
        }
        let deferred_message = store.get_message(claimed[1].id).await.unwrap();
        assert_eq!(
            deferred_message.recipients[1].state,
            RecipientState::Pending
        );
        assert_eq!(
            deferred_message.recipients[0].state,
            RecipientState::Accepted
        );
    }
}
