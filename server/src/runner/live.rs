//! The events of tests running in this process, for `WatchTest`.

use mailplane_proto::v1 as pb;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// One running test's events so far, and a channel for the ones to come. A watcher that joins
/// late replays the history, then follows live, and misses nothing in between: both happen
/// under the same lock as publishing.
pub struct LiveTest {
    inner: Mutex<Inner>,
}

struct Inner {
    history: Vec<pb::WatchTestResponse>,
    snapshot: pb::SmtpTest,
    tx: broadcast::Sender<pb::WatchTestResponse>,
}

impl LiveTest {
    /// A live test starting from `snapshot`.
    pub fn new(snapshot: pb::SmtpTest) -> Self {
        let (tx, _) = broadcast::channel(64);
        Self {
            inner: Mutex::new(Inner {
                history: Vec::new(),
                snapshot,
                tx,
            }),
        }
    }

    /// Publishes an event and records how it changes the snapshot.
    pub fn publish(&self, event: pb::WatchTestResponse, update: impl FnOnce(&mut pb::SmtpTest)) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        update(&mut inner.snapshot);
        inner.history.push(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = inner.tx.send(event);
    }

    /// The test as it stands.
    pub fn snapshot(&self) -> pb::SmtpTest {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.snapshot.clone()
    }

    /// The history so far, and a receiver for what follows.
    pub fn subscribe(
        &self,
    ) -> (
        Vec<pb::WatchTestResponse>,
        broadcast::Receiver<pb::WatchTestResponse>,
    ) {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (inner.history.clone(), inner.tx.subscribe())
    }
}
