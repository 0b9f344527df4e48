//! The pool's shared state — one [`Slot`] per key: a semaphore bounding its connections and
//! its idle connections — and the idle reaper.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PoolConfig;
use super::conn::Pooled;
use crate::policy::DestinationCheck;

/// The connections of one key.
pub(super) struct Slot {
    /// One permit per connection that may exist: a send holds one while it uses (or
    /// opens) a connection, the reaper while it closes one.
    pub(super) permits: Arc<Semaphore>,
    /// The idle connections, most recently used last.
    pub(super) idle: Mutex<Vec<Pooled>>,
}

/// What the pool and its reaper share.
pub(super) struct Shared<K> {
    /// The settings.
    pub(super) config: PoolConfig,
    /// Asked about every address before connecting.
    pub(super) policy: Arc<dyn DestinationCheck>,
    /// The slots by key.
    pub(super) slots: Mutex<HashMap<K, Arc<Slot>>>,
}

/// Locks `m`, carrying on after a panic elsewhere (the data stays consistent: every
/// critical section only moves connections in or out of a list).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq + Clone> Shared<K> {
    /// The slot of `key`, created on first use.
    pub(super) fn slot(&self, key: &K) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(key.clone()).or_insert_with(|| {
            Arc::new(Slot {
                permits: Arc::new(Semaphore::new(self.config.max_sessions_per_key.max(1))),
                idle: Mutex::new(Vec::new()),
            })
        });
        Arc::clone(slot)
    }

    /// Forgets the keys nobody uses: no idle connection and no send holding the slot (a
    /// send gets its slot under the same lock, so none can be on its way to this one).
    pub(super) fn prune(&self) {
        lock(&self.slots)
            .retain(|_, slot| Arc::strong_count(slot) > 1 || !lock(&slot.idle).is_empty());
    }

    /// Removes and returns the idle connections that have expired at `now`, each with a
    /// permit of its key so that no new connection is opened in its place before it is
    /// closed (one that finds no free permit is left for the send that holds it, which
    /// will not use an expired connection either). With `all`, every idle connection,
    /// without permits (the pool is closing).
    pub(super) fn take_idle(
        &self,
        now: Instant,
        all: bool,
    ) -> Vec<(Pooled, Option<OwnedSemaphorePermit>)> {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut out = Vec::new();
        for slot in slots {
            let mut idle = lock(&slot.idle);
            let mut keep = Vec::new();
            for conn in idle.drain(..) {
                if all {
                    out.push((conn, None));
                } else if !conn.expired(self.config.idle_timeout, now) {
                    keep.push(conn);
                } else if let Ok(permit) = Arc::clone(&slot.permits).try_acquire_owned() {
                    out.push((conn, Some(permit)));
                } else {
                    keep.push(conn);
                }
            }
            *idle = keep;
        }
        out
    }
}

/// The idle reaper: every `reap_interval`, closes the connections idle for too long.
pub(super) async fn reap<K: Hash + Eq + Clone>(shared: Arc<Shared<K>>, cancel: CancellationToken) {
    let period = shared.config.reap_interval.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for (conn, permit) in shared.take_idle(Instant::now(), false) {
            tracing::debug!(target: "mailplane::smtp::pool", "closing an idle connection");
            conn.quit().await;
            drop(permit);
        }
        shared.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DestinationPolicy;

    #[test]
    fn unused_keys_are_forgotten_and_used_ones_kept() {
        let shared = Shared {
            config: PoolConfig::default(),
            policy: Arc::new(DestinationPolicy::default()),
            slots: Mutex::new(HashMap::new()),
        };
        let held = shared.slot(&"busy");
        drop(shared.slot(&"gone"));
        assert_eq!(held.permits.available_permits(), 4);
        shared.prune();
        let keys: Vec<&str> = lock(&shared.slots).keys().copied().collect();
        assert_eq!(keys, ["busy"]);
        assert!(Arc::ptr_eq(&held, &shared.slot(&"busy")));
    }
}
