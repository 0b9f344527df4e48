//! The intake of new messages: `SendMessage` calls hand their message to a [`Batcher`], which
//! stores those gathered meanwhile in one durable transaction ([`Store::create_messages`]).
//! Each call is answered once its message is committed, with its own result: idempotency by
//! `request_id` and per-message errors are those of a message stored alone.

use super::batcher::{Batch, Batcher};
use crate::audit::AuditContext;
use crate::domain::message::{Message, NewMessage};
use crate::error::Result;
use crate::store::Store;

/// New messages, stored together.
#[derive(Debug)]
pub(super) struct NewMessages;

/// The intake's batcher.
pub(super) type Intake = Batcher<NewMessages>;

impl Batch for NewMessages {
    type Job = (AuditContext, NewMessage);
    type Answer = Result<(Message, bool)>;
    const MAX_JOBS: usize = 256;
    const MAX_BYTES: usize = 16 << 20;

    fn bytes(job: &Self::Job) -> usize {
        job.1.bytes.len()
    }

    async fn write(store: &Store, jobs: Vec<Self::Job>) -> Vec<Self::Answer> {
        let answers = store.create_messages(&jobs).await;
        // Every replica may deliver them: one announcement per batch.
        if answers.iter().any(|a| matches!(a, Ok((_, true))))
            && let Err(e) = store.announce_outbox().await
        {
            tracing::warn!(error = %e, "cannot announce new messages to the other replicas");
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;
    use crate::domain::message::MessageFilter;
    use crate::error::Error;
    use crate::store::messages_tests::{new_message, store_with_account};
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_store_one_message_per_request_id_and_keep_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (store, account) = store_with_account(dir.path()).await;
        let intake = Arc::new(Intake::start(Arc::clone(&store)));
        let calls: Vec<_> = (0..300)
            .map(|i| {
                let intake = Arc::clone(&intake);
                // Every seventh call names an account that does not exist, under a request
                // id of its own (a stored one would answer with its message first).
                let (to, request_id) = if i % 7 == 3 {
                    (AccountId(account.0 + 100), format!("bad-{i}"))
                } else {
                    (account, format!("req-{}", i % 40))
                };
                tokio::spawn(async move {
                    let r = intake
                        .submit((AuditContext::system(), new_message(to, Some(&request_id))))
                        .await
                        .and_then(|r| r);
                    (i, request_id, r)
                })
            })
            .collect();
        let mut by_request: HashMap<String, HashSet<i64>> = HashMap::new();
        let mut created = 0;
        for call in calls {
            let (i, request_id, r) = call.await.unwrap();
            match r {
                Ok((message, new)) => {
                    assert_ne!(i % 7, 3, "call {i} of an unknown account succeeded");
                    created += usize::from(new);
                    assert_eq!(message.request_id.as_deref(), Some(request_id.as_str()));
                    by_request
                        .entry(request_id)
                        .or_default()
                        .insert(message.id.0);
                }
                Err(Error::NotFound(_)) => assert_eq!(i % 7, 3, "call {i} failed"),
                Err(e) => panic!("call {i}: {e}"),
            }
        }
        assert_eq!(by_request.len(), 40);
        assert!(
            by_request.values().all(|ids| ids.len() == 1),
            "{by_request:?}"
        );
        assert_eq!(created, 40, "one message stored per request id");
        let stored = store
            .list_messages(&MessageFilter::default(), 0, 1000)
            .await
            .unwrap();
        assert_eq!(stored.len(), 40);
        intake.shutdown().await;
        let refused = intake
            .submit((AuditContext::system(), new_message(account, None)))
            .await;
        assert!(refused.is_err(), "a stopped intake takes no message");
    }
}
