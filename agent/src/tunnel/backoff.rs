//! Reconnection delays, after gRPC's connection-backoff spec
//! (<https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md>): the first delay
//! is `initial`, each next one `multiplier` times the last, capped at `max`, each spread
//! by a random ±`jitter`. A session that stayed up for `reset_after` starts the sequence
//! over. With several servers an attempt is a round through the list (see `servers`): the
//! agent waits only after every server of the round failed.

use std::time::Duration;

use rand::Rng as _;

pub use crate::config::BackoffPolicy;

/// The state of one sequence of reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// The un-jittered delay of the last attempt.
    current: Option<Duration>,
    attempt: u32,
}

impl Backoff {
    /// A fresh sequence.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            current: None,
            attempt: 0,
        }
    }

    /// The number of the attempt the last [`Backoff::next_delay`] was for (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts the sequence over.
    pub fn reset(&mut self) {
        self.current = None;
        self.attempt = 0;
    }

    /// The delay before the next attempt, given how long the last session stayed up.
    pub fn next_delay(&mut self, session_uptime: Duration) -> Duration {
        if session_uptime >= self.policy.reset_after {
            self.reset();
        }
        let base = match self.current {
            None => self.policy.initial,
            Some(d) => d.mul_f64(self.policy.multiplier).min(self.policy.max),
        };
        self.current = Some(base);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_stays_within_bounds() {
        let p = BackoffPolicy::default();
        for _ in 0..50 {
            let mut b = Backoff::new(p);
            let mut base = 1.0_f64;
            for attempt in 1..=20 {
                let d = b.next_delay(Duration::ZERO).as_secs_f64();
                assert_eq!(b.attempt(), attempt);
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                    "attempt {attempt}: {d} not within ±20% of {base}"
                );
                base = (base * 1.6).min(120.0);
            }
            // Capped: never more than 120 s + 20 %.
            assert!(b.next_delay(Duration::ZERO) <= Duration::from_secs(144));
        }
    }

    #[test]
    fn resets_after_a_long_enough_session() {
        let mut b = Backoff::new(BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        });
        let near = |d: Duration, secs: f64| assert!((d.as_secs_f64() - secs).abs() < 1e-6, "{d:?}");
        near(b.next_delay(Duration::ZERO), 1.0);
        near(b.next_delay(Duration::from_secs(9)), 1.6);
        near(b.next_delay(Duration::ZERO), 2.56);
        near(b.next_delay(Duration::from_secs(10)), 1.0);
        assert_eq!(b.attempt(), 1);
    }
}
