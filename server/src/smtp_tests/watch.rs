//! Watching tests: the live events of tests running in this process, and the stored state of
//! tests running elsewhere (another replica), polled until they end.

use super::record::{self, TestEvent, TestRecord};
use crate::domain::TestName;
use crate::error::{Error, Result};
use crate::store::Store;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How often a watcher of a test running elsewhere reads it again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The sending half of a watch.
pub type WatchSender = mpsc::Sender<Result<TestEvent>>;

/// One running test: its record as it stands, its events so far, and a channel for the ones
/// to come. A watcher that joins late replays the history, then follows live, and misses
/// nothing in between: both happen under the same lock as publishing.
pub struct LiveTest {
    inner: Mutex<Inner>,
}

struct Inner {
    history: Vec<TestEvent>,
    record: TestRecord,
    tx: broadcast::Sender<TestEvent>,
}

impl LiveTest {
    /// A live test starting from `record`.
    pub fn new(record: TestRecord) -> Self {
        let (tx, _) = broadcast::channel(64);
        Self {
            inner: Mutex::new(Inner {
                history: Vec::new(),
                record,
                tx,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the record without an event for watchers.
    pub fn update(&self, change: impl FnOnce(&mut TestRecord)) {
        change(&mut self.lock().record);
    }

    /// Publishes an event, and records how it changes the record.
    pub fn publish(&self, event: TestEvent, change: impl FnOnce(&mut TestRecord)) {
        let mut inner = self.lock();
        change(&mut inner.record);
        inner.history.push(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = inner.tx.send(event);
    }

    /// The record as it stands.
    pub fn snapshot(&self) -> TestRecord {
        self.lock().record.clone()
    }

    /// The history so far, and a receiver for what follows.
    fn subscribe(&self) -> (Vec<TestEvent>, broadcast::Receiver<TestEvent>) {
        let inner = self.lock();
        (inner.history.clone(), inner.tx.subscribe())
    }
}

/// Sends `event`; false when the watch is over (the watcher left, or the test finished).
async fn send(tx: &WatchSender, event: TestEvent) -> bool {
    let done = matches!(event, TestEvent::Finished(_));
    tx.send(Ok(event)).await.is_ok() && !done
}

/// Follows a test running in this process: its history, then its live events, until it
/// finishes, the watcher leaves, or `cancel` fires.
pub async fn follow_live(live: Arc<LiveTest>, tx: WatchSender, cancel: CancellationToken) {
    let (history, mut events) = live.subscribe();
    drop(live);
    for event in history {
        if !send(&tx, event).await {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            next = events.recv() => next,
        };
        match next {
            Ok(event) => {
                if !send(&tx, event).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Follows a test that does not run here (it may run on another replica): replays its stored
/// transcript, then reads it again every [`POLL_INTERVAL`] until it ends.
pub async fn follow_stored(
    store: Arc<Store>,
    first: TestRecord,
    tx: WatchSender,
    cancel: CancellationToken,
) {
    let name: TestName = first.name;
    let mut sent = 0;
    let mut test = first;
    loop {
        for phase in test.transcript.iter().skip(sent) {
            if !send(&tx, TestEvent::PhaseFinished(Box::new(phase.clone()))).await {
                return;
            }
        }
        sent = test.transcript.len();
        if test.state.is_final() {
            send(&tx, TestEvent::Finished(Box::new(test))).await;
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        test = match read(&store, name).await {
            Ok(t) => t,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
    }
}

/// A stored test.
pub async fn read(store: &Store, name: TestName) -> Result<TestRecord, Error> {
    record::decode(&store.get_test(name).await?)
}
