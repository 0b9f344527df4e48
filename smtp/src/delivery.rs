//! What sending one message through a [`Pool`](crate::Pool) takes and returns: the
//! [`Envelope`], and the [`Delivery`] with one [`RecipientResult`] per recipient and the
//! [`MessageOutcome`] of the message as a whole.

use crate::classify::FailureClass;
use crate::message::BuiltMessage;
use crate::wire::Reply;
use crate::{Failure, Phase};

/// The envelope of one message: `MAIL FROM` and the `RCPT TO`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The envelope sender (a bare address; empty for the null sender `<>`).
    pub mail_from: String,
    /// The envelope recipients (bare addresses), at least one.
    pub rcpt_to: Vec<String>,
}

impl Envelope {
    /// An envelope from `mail_from` to `rcpt_to`.
    pub fn new(mail_from: impl Into<String>, rcpt_to: Vec<String>) -> Self {
        Envelope {
            mail_from: mail_from.into(),
            rcpt_to,
        }
    }

    /// The envelope of a message built with [`build_message`](crate::build_message).
    pub fn of(message: &BuiltMessage) -> Self {
        Envelope::new(message.envelope_from.clone(), message.envelope_to.clone())
    }
}

/// Whether a negative reply may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// A 4xx reply: retry later.
    Transient,
    /// A 5xx reply: retrying the same thing will fail again.
    Permanent,
}

impl Severity {
    /// The severity of a negative reply: 4xx is transient, anything else permanent.
    pub fn of(reply: &Reply) -> Self {
        if reply.is_transient() {
            Severity::Transient
        } else {
            Severity::Permanent
        }
    }
}

/// What the relay said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientStatus {
    /// `RCPT TO` got 250 or 251.
    Accepted {
        /// The reply.
        reply: Reply,
    },
    /// `RCPT TO` got a negative reply.
    Rejected {
        /// Whether a later retry may work.
        severity: Severity,
        /// The reply (its enhanced status code, e.g. `5.1.1`, is in [`Reply::enhanced`]).
        reply: Reply,
    },
    /// The transaction ended before the relay answered for this recipient (`MAIL FROM`
    /// failed, or the connection broke).
    NotTried,
}

/// One recipient and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// The address, as given in the envelope.
    pub address: String,
    /// The relay's answer.
    pub status: RecipientStatus,
}

impl RecipientResult {
    /// The relay's reply for this recipient, if it answered.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.status {
            RecipientStatus::Accepted { reply } | RecipientStatus::Rejected { reply, .. } => {
                Some(reply)
            }
            RecipientStatus::NotTried => None,
        }
    }

    /// The RFC 3463 enhanced status code of the reply (e.g. `5.1.1`), when present.
    pub fn enhanced_code(&self) -> Option<&str> {
        self.reply().and_then(|r| r.enhanced.as_deref())
    }

    /// Whether the relay accepted this recipient.
    pub fn is_accepted(&self) -> bool {
        matches!(self.status, RecipientStatus::Accepted { .. })
    }
}

/// What became of the message as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// At least one recipient was accepted and the final `.` got 250: the relay has the
    /// message for the accepted recipients.
    Sent {
        /// The queue id from the final reply, when the relay names one.
        queue_id: Option<String>,
        /// The reply to the final `.`.
        reply: Reply,
    },
    /// Retry later: a 4xx at `MAIL FROM`, `DATA` or the final `.`, no recipient accepted
    /// and at least one refused with 4xx, or a connection, TLS or timeout failure before
    /// `DATA` was accepted. The relay does not have the message.
    Transient {
        /// What failed, where, and the reply when there was one.
        failure: Failure,
    },
    /// The connection broke (or went silent) after `DATA` was accepted and before the reply
    /// to the final `.`: the relay may already have the message, and a retry may deliver
    /// it twice.
    AmbiguousAfterData {
        /// What failed (phase `DATA`, no reply).
        failure: Failure,
    },
    /// Retrying will fail again: a 5xx at `MAIL FROM`, `DATA` or the final `.`, every
    /// recipient refused with 5xx, or a failure that needs a person (credentials,
    /// certificate, destination policy, a relay that refuses the session).
    Permanent {
        /// What failed, where, and the reply when there was one.
        failure: Failure,
    },
}

impl MessageOutcome {
    /// The failure, unless the message was sent.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            MessageOutcome::Sent { .. } => None,
            MessageOutcome::Transient { failure }
            | MessageOutcome::AmbiguousAfterData { failure }
            | MessageOutcome::Permanent { failure } => Some(failure),
        }
    }

    /// Whether a later retry may work (`Transient` and `AmbiguousAfterData`).
    pub fn is_transient(&self) -> bool {
        match self {
            MessageOutcome::Transient { .. } | MessageOutcome::AmbiguousAfterData { .. } => true,
            MessageOutcome::Sent { .. } | MessageOutcome::Permanent { .. } => false,
        }
    }

    /// The outcome for `failure`: transient or permanent as its class says (see
    /// [`retry_later`]).
    pub(crate) fn failed(failure: Failure) -> Self {
        if retry_later(failure.class) {
            MessageOutcome::Transient { failure }
        } else {
            MessageOutcome::Permanent { failure }
        }
    }
}

/// Whether a failure of `class` may go away without a person doing anything: 4xx replies,
/// timeouts, DNS, refused connections, broken TLS handshakes and dropped connections.
pub(crate) fn retry_later(class: FailureClass) -> bool {
    match class {
        FailureClass::Dns
        | FailureClass::ConnectionRefused
        | FailureClass::Timeout
        | FailureClass::TlsHandshake
        | FailureClass::TemporaryFailure
        | FailureClass::OAuthEndpointUnreachable => true,
        FailureClass::CertificateExpired
        | FailureClass::CertificateUntrusted
        | FailureClass::CertificateNameMismatch
        | FailureClass::StartTlsUnavailable
        | FailureClass::AuthRejected
        | FailureClass::AuthMechanismUnsupported
        | FailureClass::SenderRejected
        | FailureClass::RecipientRejected
        | FailureClass::MessageRejected
        | FailureClass::PermanentFailure
        | FailureClass::ProtocolMismatch
        | FailureClass::DestinationNotAllowed
        | FailureClass::CredentialDestinationDenied
        | FailureClass::OAuthClientRejected
        | FailureClass::OAuthGrantRejected
        | FailureClass::OAuthScopeMissing => false,
    }
}

/// How the pool got the connection a message went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionUse {
    /// A new connection (no idle one was available).
    Fresh,
    /// An idle pooled connection (after `RSET`).
    Reused,
    /// An idle pooled connection turned out dead (closed, or `421`) before anything was
    /// accepted, and the message went over a new connection instead.
    Reconnected,
}

/// The result of sending one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// One entry per envelope recipient, in envelope order.
    pub recipients: Vec<RecipientResult>,
    /// The message as a whole.
    pub message: MessageOutcome,
    /// How the connection was obtained.
    pub connection: ConnectionUse,
}

impl Delivery {
    /// The queue id, when the message was sent and the relay named one.
    pub fn queue_id(&self) -> Option<&str> {
        match &self.message {
            MessageOutcome::Sent { queue_id, .. } => queue_id.as_deref(),
            MessageOutcome::Transient { .. }
            | MessageOutcome::AmbiguousAfterData { .. }
            | MessageOutcome::Permanent { .. } => None,
        }
    }

    /// The phase of the failure, if the message was not sent.
    pub fn failed_phase(&self) -> Option<Phase> {
        self.message.failure().map(|f| f.phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_a_retry_decision_matching_is_transient() {
        for class in FailureClass::ALL {
            if class.is_transient() {
                assert!(retry_later(class), "{class}");
            }
        }
        assert!(retry_later(FailureClass::ConnectionRefused));
        assert!(!retry_later(FailureClass::AuthRejected));
    }
}
