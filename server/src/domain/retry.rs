//! What a delivery attempt means for a message: the retry schedule (exponential backoff with
//! jitter, up to a maximum age) and [`settle`], which turns the relay's answers into the
//! recipients' and the message's new states. A recipient accepted once is never sent again.

use super::Micros;
use super::message::{Claimed, MessageState, RecipientState};
use std::time::Duration;

/// When transient failures are retried, and when the outbox gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The first delay (default 1 min); it doubles per attempt.
    pub base: Duration,
    /// The longest delay (default 1 h).
    pub max_delay: Duration,
    /// A message older than this when a transient failure happens fails (default 24 h).
    pub max_age: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            max_delay: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// The delay before the attempt after `attempts` failed ones (1 or more), before jitter:
    /// `base` doubling, capped at `max_delay`.
    pub fn delay(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.base
            .saturating_mul(1_u32 << doublings)
            .min(self.max_delay)
    }

    /// [`RetrySchedule::delay`] with jitter: `jitter` (in 0..=1) takes up to a quarter off,
    /// so that messages deferred together do not come back together.
    pub fn jittered(&self, attempts: i64, jitter: f64) -> Duration {
        self.delay(attempts)
            .mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// What the relay said about one recipient in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientVerdict {
    /// Accepted (250/251).
    Accepted(String),
    /// Refused with a 5xx.
    Rejected(String),
    /// Refused with a 4xx, or not answered: try again.
    Retry(String),
}

/// How the attempt as a whole ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The relay has the message for the accepted recipients.
    Sent,
    /// Retry later.
    Transient,
    /// The connection broke after DATA: the relay may have it. A person decides.
    Ambiguous,
    /// Will fail again.
    Permanent,
}

/// The result of settling an attempt: the new recipients' states, the message's state, and
/// when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Each recipient's new state and reply, by position in [`Claimed::recipients`].
    pub recipients: Vec<(usize, RecipientState, String)>,
    /// The message's new state.
    pub state: MessageState,
    /// When the next attempt is due (DEFERRED by schedule only).
    pub next_attempt_time: Option<Micros>,
    /// Why it is not sent, for the message's `last_error`.
    pub last_error: String,
}

/// The last error of a message whose attempt ended in doubt (`failure`): it waits for a
/// person.
pub fn not_retried(failure: &str) -> String {
    format!(
        "{failure}; the relay may already have the message, so it is not retried \
         automatically: call RetryMessage to send it again"
    )
}

/// Decides what an attempt means for the message. `verdicts` are the relay's answers for the
/// recipients that were sent to, by position in `claimed.recipients`; recipients accepted
/// before keep their state. `failure` describes a failed attempt.
pub fn settle(
    claimed: &Claimed,
    verdicts: &[(usize, RecipientVerdict)],
    end: AttemptEnd,
    failure: &str,
    schedule: &RetrySchedule,
    now: Micros,
    jitter: f64,
) -> Settled {
    let mut recipients = Vec::new();
    let mut pending = 0_usize;
    for (position, verdict) in verdicts {
        let (state, reply) = match (verdict, end) {
            (RecipientVerdict::Accepted(r), AttemptEnd::Sent) => (RecipientState::Accepted, r),
            (RecipientVerdict::Rejected(r), _) => (RecipientState::Rejected, r),
            // A permanent failure of the whole message (MAIL FROM, DATA) ends every recipient.
            (RecipientVerdict::Accepted(r) | RecipientVerdict::Retry(r), AttemptEnd::Permanent) => {
                (RecipientState::Rejected, r)
            }
            (RecipientVerdict::Accepted(r) | RecipientVerdict::Retry(r), _) => {
                pending += 1;
                (RecipientState::Pending, r)
            }
        };
        let reply = if reply.is_empty() && state != RecipientState::Accepted {
            failure.to_owned()
        } else {
            reply.clone()
        };
        recipients.push((*position, state, reply));
    }
    let accepted_before = claimed
        .recipients
        .iter()
        .any(|r| r.state == RecipientState::Accepted);
    let accepted_now = recipients
        .iter()
        .any(|(_, s, _)| *s == RecipientState::Accepted);
    let age = Duration::from_micros(u64::try_from(now - claimed.create_time).unwrap_or(0));
    let (state, next_attempt_time, last_error) = if pending == 0 {
        if accepted_before || accepted_now {
            (MessageState::Sent, None, String::new())
        } else {
            (MessageState::Failed, None, failure.to_owned())
        }
    } else if end == AttemptEnd::Ambiguous {
        (MessageState::Deferred, None, not_retried(failure))
    } else if age >= schedule.max_age {
        (
            MessageState::Failed,
            None,
            format!(
                "{failure}; gave up after {} s of retries",
                schedule.max_age.as_secs()
            ),
        )
    } else {
        let delay = schedule.jittered(claimed.attempt_count + 1, jitter);
        let delay = super::micros(delay);
        (
            MessageState::Deferred,
            Some(now.saturating_add(delay)),
            failure.to_owned(),
        )
    };
    Settled {
        recipients,
        state,
        next_attempt_time,
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;
    use crate::domain::message::{MessageId, Recipient, RecipientKind};

    fn claimed(states: &[RecipientState]) -> Claimed {
        Claimed {
            id: MessageId(1),
            account: AccountId(1),
            envelope_from: "a@x".into(),
            bytes: Some(b"x".to_vec()),
            recipients: states
                .iter()
                .enumerate()
                .map(|(i, s)| Recipient {
                    address: format!("r{i}@x"),
                    kind: RecipientKind::To,
                    state: *s,
                    last_reply: String::new(),
                })
                .collect(),
            create_time: 0,
            attempt_count: 0,
        }
    }

    #[test]
    fn the_schedule_doubles_to_the_cap() {
        let s = RetrySchedule::default();
        assert_eq!(s.delay(1), Duration::from_secs(60));
        assert_eq!(s.delay(2), Duration::from_secs(120));
        assert_eq!(s.delay(7), Duration::from_secs(3600));
        assert_eq!(s.delay(100), Duration::from_secs(3600));
        assert_eq!(s.jittered(1, 1.0), Duration::from_secs(45));
    }

    #[test]
    fn a_partial_acceptance_defers_only_the_rest() {
        let c = claimed(&[RecipientState::Pending; 3]);
        let verdicts = [
            (0, RecipientVerdict::Accepted("250 ok".into())),
            (1, RecipientVerdict::Rejected("550 no".into())),
            (2, RecipientVerdict::Retry("451 later".into())),
        ];
        let s = settle(
            &c,
            &verdicts,
            AttemptEnd::Sent,
            "",
            &RetrySchedule::default(),
            10,
            0.0,
        );
        assert_eq!(s.state, MessageState::Deferred);
        assert_eq!(s.next_attempt_time, Some(10 + 60_000_000));
        assert_eq!(s.recipients[0].1, RecipientState::Accepted);
        assert_eq!(s.recipients[1].1, RecipientState::Rejected);
        assert_eq!(s.recipients[2].1, RecipientState::Pending);
    }

    #[test]
    fn permanent_and_old_transient_failures_fail() {
        let c = claimed(&[RecipientState::Pending]);
        let v = [(0, RecipientVerdict::Retry(String::new()))];
        let s = settle(
            &c,
            &v,
            AttemptEnd::Permanent,
            "554",
            &RetrySchedule::default(),
            1,
            0.0,
        );
        assert_eq!(s.state, MessageState::Failed);
        let day = 25 * 3600 * 1_000_000;
        let s = settle(
            &c,
            &v,
            AttemptEnd::Transient,
            "451",
            &RetrySchedule::default(),
            day,
            0.0,
        );
        assert_eq!(s.state, MessageState::Failed);
        let s = settle(
            &c,
            &v,
            AttemptEnd::Ambiguous,
            "lost",
            &RetrySchedule::default(),
            1,
            0.0,
        );
        assert_eq!(
            (s.state, s.next_attempt_time),
            (MessageState::Deferred, None)
        );
    }

    #[test]
    fn a_recipient_accepted_before_keeps_the_message_sent() {
        let c = claimed(&[RecipientState::Accepted, RecipientState::Pending]);
        let v = [(1, RecipientVerdict::Rejected("550".into()))];
        let s = settle(
            &c,
            &v,
            AttemptEnd::Permanent,
            "550",
            &RetrySchedule::default(),
            1,
            0.0,
        );
        assert_eq!(s.state, MessageState::Sent);
    }
}
