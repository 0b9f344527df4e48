//! Phase, transcript and live-event types.
//!
//! A session produces one [`PhaseRecord`] per phase it reached (some phases, such as
//! `RCPT TO` with several recipients or `EHLO` after `STARTTLS`, appear more than once),
//! in the order they happened. The same records are streamed live as
//! [`PhaseEvent::Finished`], each preceded by a [`PhaseEvent::Started`].

use std::fmt;
use std::time::Duration;

use crate::wire::Reply;

/// One step of an SMTP session, in the order a session runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Resolving the relay's host name to addresses.
    Dns,
    /// Opening the TCP connection (each resolved address is tried in turn).
    Connect,
    /// Reading the server's `220` greeting.
    Banner,
    /// `EHLO`, recording the advertised capabilities (runs again after `STARTTLS`).
    Ehlo,
    /// The `STARTTLS` command.
    StartTls,
    /// The TLS handshake (after `STARTTLS`, or first thing with implicit TLS).
    TlsHandshake,
    /// `AUTH` with the configured mechanism.
    Auth,
    /// `MAIL FROM`.
    MailFrom,
    /// `RCPT TO` (one record per recipient).
    RcptTo,
    /// `DATA`, the message, and the final reply.
    Data,
    /// `QUIT`.
    Quit,
    /// Getting an OAuth2 access token from the credential's token endpoint (before the
    /// session; the server records it).
    Token,
}

impl Phase {
    /// Every phase, in session order.
    pub const ALL: [Phase; 12] = [
        Phase::Token,
        Phase::Dns,
        Phase::Connect,
        Phase::Banner,
        Phase::Ehlo,
        Phase::StartTls,
        Phase::TlsHandshake,
        Phase::Auth,
        Phase::MailFrom,
        Phase::RcptTo,
        Phase::Data,
        Phase::Quit,
    ];

    /// A stable upper-case name, e.g. `"MAIL_FROM"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "DNS",
            Phase::Connect => "CONNECT",
            Phase::Banner => "BANNER",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::TlsHandshake => "TLS_HANDSHAKE",
            Phase::Auth => "AUTH",
            Phase::MailFrom => "MAIL_FROM",
            Phase::RcptTo => "RCPT_TO",
            Phase::Data => "DATA",
            Phase::Quit => "QUIT",
            Phase::Token => "TOKEN",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseStatus {
    /// The phase completed as expected.
    Ok,
    /// The phase failed; the session's outcome says why.
    Failed,
    /// The phase did not apply (e.g. `STARTTLS` with security `None`, `AUTH` without
    /// credentials, or delivery phases cut off by `stop_after`).
    Skipped,
}

/// What the TLS verifier concluded about the peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The chain and name verified against the trusted roots.
    Verified,
    /// Verification failed but the configuration says to ignore certificate errors;
    /// `reason` is what verification would have reported.
    IgnoredByConfig {
        /// What verification would have reported.
        reason: String,
    },
    /// Verification failed and the handshake was aborted.
    Failed {
        /// Why verification failed.
        reason: String,
    },
}

/// What a peer certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateInfo {
    /// Subject distinguished name, e.g. `CN=mail.example.org`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names (DNS names and IP addresses).
    pub sans: Vec<String>,
    /// Start of validity, RFC 3339 UTC (`2025-01-31T00:00:00Z`).
    pub not_before: String,
    /// End of validity, RFC 3339 UTC (`2026-01-31T00:00:00Z`).
    pub not_after: String,
}

/// Details of a TLS session (or of a failed handshake, as far as it got).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Negotiated protocol version, e.g. `TLSv1.3`; empty when the handshake failed.
    pub protocol_version: String,
    /// Negotiated cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`; empty when it failed.
    pub cipher_suite: String,
    /// The peer's end-entity certificate, when the server sent one.
    pub peer_certificate: Option<CertificateInfo>,
    /// The verification outcome.
    pub verification: Verification,
}

/// The record of one phase in the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRecord {
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub status: PhaseStatus,
    /// Wall-clock time the phase took.
    pub duration: Duration,
    /// The command line(s) sent, with secrets replaced by `<redacted>`.
    pub commands: Vec<String>,
    /// The server's (last) reply in this phase, if any.
    pub reply: Option<Reply>,
    /// Free-form notes: resolved addresses, each connect attempt, capabilities, errors.
    pub detail: Vec<String>,
    /// TLS details (only for [`Phase::TlsHandshake`]).
    pub tls: Option<TlsInfo>,
}

impl PhaseRecord {
    /// An empty record for `phase` with the given status.
    pub fn new(phase: Phase, status: PhaseStatus) -> Self {
        PhaseRecord {
            phase,
            status,
            duration: Duration::ZERO,
            commands: Vec::new(),
            reply: None,
            detail: Vec::new(),
            tls: None,
        }
    }
}

/// A live event, sent on the caller's channel while the session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseEvent {
    /// A phase has started.
    Started(Phase),
    /// A phase has ended; the same record is in the final transcript.
    Finished(Box<PhaseRecord>),
}
