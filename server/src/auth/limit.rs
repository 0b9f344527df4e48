//! A per-address counter over a fixed window: the brute-force limit on API tokens (failed
//! authentications) and the limit on agent enrollment attempts. Kept in memory, so per
//! replica.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most before expired windows are dropped.
const MAX_PEERS: usize = 10_000;

/// Counts events per client address; an address with `max` events in its current window
/// is over the limit until the window ends.
pub struct PeerLimit {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl PeerLimit {
    /// At most `max` events per address in each `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `peer` has used up its events in the current window (an unknown address is
    /// never limited).
    pub fn exceeded(&self, peer: Option<IpAddr>) -> bool {
        let Some(ip) = peer else { return false };
        self.counts()
            .get(&ip)
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    /// Counts one event of `peer`.
    pub fn count(&self, peer: Option<IpAddr>) {
        let Some(ip) = peer else { return };
        let mut counts = self.counts();
        let entry = counts.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
        if counts.len() > MAX_PEERS {
            let window = self.window;
            counts.retain(|_, (_, since)| since.elapsed() < window);
        }
    }

    /// Counts one event of `peer` if it is within the limit; false (and nothing counted)
    /// when it is over.
    pub fn take(&self, peer: Option<IpAddr>) -> bool {
        if self.exceeded(peer) {
            return false;
        }
        self.count(peer);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_max_events_per_window() {
        let limit = PeerLimit::new(3, Duration::from_secs(60));
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let b = Some(IpAddr::from([192, 0, 2, 2]));
        assert!(limit.take(a) && limit.take(a) && limit.take(a));
        assert!(!limit.take(a), "the fourth in a minute is refused");
        assert!(limit.exceeded(a));
        assert!(limit.take(b), "another address is not held up");
        assert!(limit.take(None) && !limit.exceeded(None));

        let short = PeerLimit::new(1, Duration::ZERO);
        assert!(short.take(a) && short.take(a), "a new window starts afresh");
    }
}
