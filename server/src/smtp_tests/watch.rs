//! Watching tests: the live events of tests running in this process, and the stored state of
//! tests running elsewhere (another replica), read again whenever that replica announces
//! progress (PostgreSQL `NOTIFY`, see [`crate::store::notify`]). On SQLite, with one replica,
//! a stored test that is not final was left by a server that died; it is read again now and
//! then until the sweep closes it.

use super::record::{self, TestEvent, TestRecord};
use crate::domain::TestName;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::notify::Notice;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How often a watcher reads a stored test again when no replica announces its progress
/// (SQLite).
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
    pub(super) fn subscribe(&self) -> (Vec<TestEvent>, broadcast::Receiver<TestEvent>) {
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

/// Stores a running test's record each time a phase ends (and announces it), until `done`
/// (checked between writes only); for watchers on other replicas.
pub async fn persist_progress(store: &Store, live: &LiveTest, done: &CancellationToken) {
    let (_, mut events) = live.subscribe();
    loop {
        let event = tokio::select! {
            () = done.cancelled() => return,
            event = events.recv() => event,
        };
        let mut finished_phase = match event {
            Ok(TestEvent::PhaseFinished(_)) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Ok(_) => false,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // What came while the last write ran is stored together, as the record stands.
        loop {
            match events.try_recv() {
                Ok(TestEvent::PhaseFinished(_))
                | Err(broadcast::error::TryRecvError::Lagged(_)) => finished_phase = true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if finished_phase {
            let test = live.snapshot();
            if let Err(e) = store
                .record_test_progress(test.name, &record::encode(&test))
                .await
            {
                tracing::warn!(test = %test.name, error = %e, "cannot store the test's progress");
            }
        }
    }
}

/// Waits until `name` may have changed: a notice about it (or a resync), or, with no
/// notifier, [`POLL_INTERVAL`]. False when the watch is cancelled.
async fn changed(
    notices: &mut Option<broadcast::Receiver<Notice>>,
    name: TestName,
    cancel: &CancellationToken,
) -> bool {
    let Some(rx) = notices else {
        return tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(POLL_INTERVAL) => true,
        };
    };
    loop {
        let notice = tokio::select! {
            () = cancel.cancelled() => return false,
            notice = rx.recv() => notice,
        };
        match notice {
            Ok(Notice::Test(id)) if id == name.id => return true,
            Ok(Notice::Test(_) | Notice::Jobs(_) | Notice::Job(_) | Notice::Outbox) => {}
            Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

/// Follows a test that does not run here (it may run on another replica): replays its stored
/// transcript, then reads it again whenever it may have changed, until it ends. `notices`
/// must have been subscribed before `first` was read.
pub async fn follow_stored(
    store: Arc<Store>,
    first: TestRecord,
    mut notices: Option<broadcast::Receiver<Notice>>,
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
        if !changed(&mut notices, name, &cancel).await {
            return;
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
