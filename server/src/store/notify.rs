//! Change notifications between replicas (PostgreSQL `LISTEN/NOTIFY`): one listening
//! connection per replica, fanned out to the watchers in it. SQLite has one replica, whose
//! watchers follow its tests in memory, so it has no notifier.
//!
//! A watcher subscribes *before* it reads what it watches, then reads again on every notice:
//! nothing that changes between its read and its subscription is missed. When the listening
//! connection is lost, notifications may have been missed: every watcher is told to read
//! again ([`Notice::Resync`]).

use super::Store;
use super::db::{Query, query};
use crate::error::Result;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::broadcast;

/// The channel on which a test's progress is announced (the payload is the test's id).
pub const TESTS_CHANNEL: &str = "mailplane_tests";

/// The channel on which new work for the outbox is announced (a message stored, made due, or
/// an account resumed): every replica's claim loop looks.
pub const OUTBOX_CHANNEL: &str = "mailplane_outbox";

/// The channel on which a queued connector job is announced (the payload is the connector's
/// id).
pub const JOBS_CHANNEL: &str = "mailplane_jobs";

/// The channel on which a connector job's progress is announced (the payload is its id).
pub const JOB_CHANNEL: &str = "mailplane_job";

/// What a watcher hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The test with this id changed.
    Test(i64),
    /// A job was queued for the connector with this id.
    Jobs(i64),
    /// The connector job with this id changed.
    Job(i64),
    /// The outbox has new work.
    Outbox,
    /// Notices may have been lost: read again.
    Resync,
}

/// The replica's listener, fanned out to its watchers.
#[derive(Debug)]
pub struct Notifier {
    tx: broadcast::Sender<Notice>,
}

/// How long to wait before listening again after the database refused.
const RETRY: Duration = Duration::from_secs(1);

impl Notifier {
    /// A notifier for `store` and the task that feeds it (run it under an owner), or `None`
    /// on SQLite.
    pub fn start(
        store: &Store,
    ) -> Option<(
        std::sync::Arc<Notifier>,
        impl std::future::Future<Output = ()> + Send + 'static,
    )> {
        let Store::Postgres(pg) = store else {
            return None;
        };
        let pool = pg.pool.clone();
        let (tx, _) = broadcast::channel(1024);
        let notifier = std::sync::Arc::new(Notifier { tx: tx.clone() });
        let feed = async move {
            loop {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for notifications; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                if let Err(e) = listener
                    .listen_all([TESTS_CHANNEL, JOBS_CHANNEL, JOB_CHANNEL, OUTBOX_CHANNEL])
                    .await
                {
                    tracing::warn!(error = %e, "cannot listen for notifications; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                // Listening (again): whatever happened before is read again by everyone.
                let _ = tx.send(Notice::Resync);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            let Ok(id) = n.payload().parse::<i64>() else {
                                continue;
                            };
                            let notice = match n.channel() {
                                TESTS_CHANNEL => Notice::Test(id),
                                JOBS_CHANNEL => Notice::Jobs(id),
                                JOB_CHANNEL => Notice::Job(id),
                                OUTBOX_CHANNEL => Notice::Outbox,
                                _ => continue,
                            };
                            let _ = tx.send(notice);
                        }
                        // The connection was lost; it reconnects on the next call.
                        Ok(None) => {
                            let _ = tx.send(Notice::Resync);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "notifications interrupted; listening again");
                            break;
                        }
                    }
                }
                tokio::time::sleep(RETRY).await;
            }
        };
        Some((notifier, feed))
    }

    /// A receiver of the notices from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }
}

impl Store {
    /// `NOTIFY channel, payload` as a statement, to run in a transaction (delivered when it
    /// commits); none on SQLite, whose one replica has no listener.
    pub(super) fn announcement(&self, channel: &str, payload: i64) -> Option<Query> {
        self.is_postgres().then(|| {
            query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload.to_string())
        })
    }

    /// Announces `payload` on `channel` at once (PostgreSQL only).
    pub(super) async fn announce(&self, channel: &str, payload: i64) -> Result<()> {
        if let Some(q) = self.announcement(channel, payload) {
            self.execute(&q).await?;
        }
        Ok(())
    }

    /// Tells every replica's outbox that there is new work (PostgreSQL only).
    pub async fn announce_outbox(&self) -> Result<()> {
        self.announce(OUTBOX_CHANNEL, 0).await
    }
}
