//! The outbox: messages handed to mailplane for delivery, their recipients and attempts, the
//! state machine and the retry schedule. Free of any wire format: the API converts, the store
//! persists, the delivery worker (`crate::outbox`) decides with [`settle`].

use super::{AccountId, Micros};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a request id names its message (AIP-155): a repeat within this returns the first
/// message and sends nothing new.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How an attempt ends whose replica died after the agent reported DATA started: the relay
/// may have the message, so it waits for a person (see `Store::requeue_orphaned`).
pub struct LostAttempt {
    /// The failure class, as stored.
    pub class: &'static str,
    /// What happened.
    pub message: &'static str,
    /// What to do.
    pub hint: &'static str,
}

impl LostAttempt {
    /// The message's last error.
    pub fn last_error(&self) -> String {
        super::retry::not_retried(self.message)
    }
}

/// See [`LostAttempt`].
pub const ORPHANED_AFTER_DATA: LostAttempt = LostAttempt {
    class: "FAILURE_CLASS_CONNECTOR_LOST",
    message: "the replica following this delivery stopped after its agent started DATA",
    hint: "look for the message at the relay before calling RetryMessage",
};

/// A message's id, the `{id}` in `messages/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub i64);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "messages/{}", self.0)
    }
}

/// Where a message is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Stored, waiting for delivery.
    Queued,
    /// An attempt is running.
    Sending,
    /// An attempt failed in a way that may go away; retried at the next attempt time.
    Deferred,
    /// The relay accepted it.
    Sent,
    /// It will not be sent (again).
    Failed,
    /// Cancelled by a person.
    Cancelled,
}

impl MessageState {
    /// Every state.
    pub const ALL: [MessageState; 6] = [
        Self::Queued,
        Self::Sending,
        Self::Deferred,
        Self::Sent,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Deferred => "deferred",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether `CancelMessage` may cancel a message in this state.
    pub fn cancellable(self) -> bool {
        matches!(self, Self::Queued | Self::Deferred)
    }

    /// Whether `RetryMessage` may make a message in this state due now.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Deferred | Self::Failed)
    }
}

/// How a recipient was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientKind {
    /// The To header.
    To,
    /// The Cc header.
    Cc,
    /// The envelope only.
    Bcc,
}

impl RecipientKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::To => "to",
            Self::Cc => "cc",
            Self::Bcc => "bcc",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::To, Self::Cc, Self::Bcc]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What became of a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientState {
    /// Not accepted yet: it is sent to on the next attempt.
    Pending,
    /// The relay accepted it; it is never sent again.
    Accepted,
    /// The relay refused it permanently.
    Rejected,
}

impl RecipientState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Accepted, Self::Rejected]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The envelope address.
    pub address: String,
    /// To, Cc or Bcc.
    pub kind: RecipientKind,
    /// What became of it.
    pub state: RecipientState,
    /// The relay's last reply for it.
    pub last_reply: String,
}

/// An attached file as the message's view keeps it: its content is only in the built message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    /// The file name.
    pub filename: String,
    /// The MIME type.
    pub content_type: String,
    /// The size in bytes.
    pub size: u64,
}

/// What the caller composed, as shown back by `GetMessage` (no attachment content).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageContent {
    /// The To recipients, as given.
    pub to: Vec<String>,
    /// The Cc recipients, as given.
    pub cc: Vec<String>,
    /// The Bcc recipients, as given.
    pub bcc: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The text body.
    pub text_body: Option<String>,
    /// The HTML body.
    pub html_body: Option<String>,
    /// The attached files.
    pub attachments: Vec<AttachmentInfo>,
    /// The extra `X-*` headers.
    pub headers: Vec<(String, String)>,
    /// The From override.
    pub from: Option<String>,
    /// The Reply-To override.
    pub reply_to: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempt {
    /// When it started.
    pub time: Micros,
    /// Where it ran: "direct" or an agent's name.
    pub agent: String,
    /// The reply code that decided it; 0 if none.
    pub reply_code: i32,
    /// The enhanced status code, e.g. `4.2.0`.
    pub enhanced_status_code: String,
    /// The relay's queue id, when it accepted the message.
    pub relay_queue_id: String,
    /// How long it took, in microseconds.
    pub duration_micros: i64,
    /// The failure class (the stored form of `mailplane_smtp::FailureClass`); empty on success.
    pub failure_class: String,
    /// What happened, in one line.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// A message to store: what `SendMessage` built and validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The account that sends it.
    pub account: AccountId,
    /// The caller's idempotency key.
    pub request_id: Option<String>,
    /// What the caller composed.
    pub content: MessageContent,
    /// The envelope sender.
    pub envelope_from: String,
    /// The envelope recipients, in order, with how each was given.
    pub recipients: Vec<(String, RecipientKind)>,
    /// The `Message-ID` header.
    pub message_id: String,
    /// The built message (CRLF, not dot-stuffed).
    pub bytes: Vec<u8>,
    /// Why it waits, when it cannot be delivered yet (e.g. through a connector).
    pub last_error: String,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The account that sends it.
    pub account: AccountId,
    /// The caller's idempotency key.
    pub request_id: Option<String>,
    /// Where it is.
    pub state: MessageState,
    /// What the caller composed.
    pub content: MessageContent,
    /// Each recipient, in envelope order (empty in lists).
    pub recipients: Vec<Recipient>,
    /// Every attempt, oldest first (empty in lists).
    pub attempts: Vec<Attempt>,
    /// The `Message-ID` header.
    pub message_id: String,
    /// The built message's size.
    pub size_bytes: i64,
    /// Why the last attempt did not send it, or why it waits.
    pub last_error: String,
    /// How many attempts ran.
    pub attempt_count: i64,
    /// When it was created.
    pub create_time: Micros,
    /// When it last changed.
    pub update_time: Micros,
    /// When the next attempt is due.
    pub next_attempt_time: Option<Micros>,
}

/// Which messages to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only this account's.
    pub account: Option<AccountId>,
    /// Only in this state.
    pub state: Option<MessageState>,
    /// Only with a recipient containing this (case-insensitive).
    pub recipient: Option<String>,
    /// Only created at or after this.
    pub create_time_start: Option<Micros>,
    /// Only created before this.
    pub create_time_end: Option<Micros>,
}

/// A message claimed for delivery: what the worker needs to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: MessageId,
    /// The account that sends it.
    pub account: AccountId,
    /// The envelope sender.
    pub envelope_from: String,
    /// The built message; `None` if it was purged (it cannot be sent then).
    pub bytes: Option<Vec<u8>>,
    /// Every recipient, in envelope order (positions matter for [`Settled`]).
    pub recipients: Vec<Recipient>,
    /// When it was created (the retry age counts from here).
    pub create_time: Micros,
    /// How many attempts ran before this one.
    pub attempt_count: i64,
}

/// The queue of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    /// The account.
    pub account: AccountId,
    /// Messages QUEUED.
    pub queued: i64,
    /// Messages SENDING.
    pub sending: i64,
    /// Messages DEFERRED.
    pub deferred: i64,
    /// When the oldest of them was created.
    pub oldest: Option<Micros>,
    /// Whether delivery is paused.
    pub paused: bool,
}

/// Refuses an operation on a message in `state` that needs another state.
pub fn check_transition(id: MessageId, state: MessageState, retry: bool) -> Result<()> {
    let (ok, what, allowed) = if retry {
        (state.retryable(), "retried", "DEFERRED or FAILED")
    } else {
        (state.cancellable(), "cancelled", "QUEUED or DEFERRED")
    };
    if ok {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "{id} is {} and cannot be {what}; only a {allowed} message can",
            state.as_str().to_uppercase()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphaned_attempt_reads_back_as_connector_lost() {
        use mailplane_proto::v1 as pb;
        assert_eq!(
            pb::FailureClass::from_str_name(ORPHANED_AFTER_DATA.class),
            Some(pb::FailureClass::ConnectorLost)
        );
    }

    #[test]
    fn states_round_trip_and_transitions_are_checked() {
        for s in MessageState::ALL {
            assert_eq!(MessageState::parse(s.as_str()), Some(s));
        }
        assert!(check_transition(MessageId(1), MessageState::Queued, false).is_ok());
        assert!(check_transition(MessageId(1), MessageState::Sent, false).is_err());
        assert!(check_transition(MessageId(1), MessageState::Failed, true).is_ok());
        assert!(check_transition(MessageId(1), MessageState::Queued, true).is_err());
    }
}
