//! `mailplane-smtp`: one SMTP session to a relay, with a per-phase transcript and a
//! classified outcome.
//!
//! This crate has no gRPC, database or CLI code, so that the server's direct path and the
//! network connector (`mailplane-agent`) run the same session. The `proto` feature adds
//! `proto`, the conversions between `mailplane.v1`'s job messages and [`SessionConfig`].
//!
//! A session walks the phases of [`Phase`] in order — DNS, connect, banner, EHLO, STARTTLS, TLS handshake, AUTH,
//! MAIL FROM, RCPT TO, DATA, QUIT — each bounded by a timeout from [`Timeouts`] and all
//! by an overall deadline. Each phase is streamed live as [`PhaseEvent`]s and recorded
//! in the returned [`SessionReport`], whose [`Outcome`] is either success (with the
//! queue id when the server names one) or a [`Failure`] with a closed [`FailureClass`]
//! and a one-line hint for a person.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mailplane_smtp::SessionError> {
//! use mailplane_smtp::*;
//! let mut config = SessionConfig::new("smtp.example.org", 587, Security::StartTlsRequired);
//! config.auth = Some(Credentials::new(AuthMechanism::Plain, "alice", Secret::new("s3cret")));
//! config.message = Some(MessageSpec {
//!     sender: "alice@example.org".into(),
//!     recipients: vec!["bob@example.net".into()],
//!     subject: "test".into(),
//!     body: "hello".into(),
//!     ..MessageSpec::default()
//! });
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! tokio::spawn(async move { while let Some(event) = rx.recv().await { println!("{event:?}") } });
//! let report = run_session(&config, &DestinationPolicy::default(), Some(&tx)).await?;
//! println!("{:?}", report.outcome);
//! # Ok(()) }
//! ```
//!
//! To deliver many messages, a [`Pool`] keeps established, authenticated connections per
//! account key and sends each message with [`Pool::send`]: `RSET` between messages,
//! `PIPELINING` when offered, a transparent reconnect when the relay closed an idle
//! connection, and a [`Delivery`] with one [`RecipientResult`] per recipient and a closed
//! [`MessageOutcome`] (sent, transient, ambiguous after `DATA`, permanent). Connections are
//! opened by the same phases as [`run_session`], with the same [`DestinationCheck`].
//!
//! A message a caller composed (`SendMessage`) is an [`OutgoingMessage`]: its
//! [`build`](OutgoingMessage::build) applies the account's settings (`From`, envelope
//! sender, `Reply-To`, read confirmation, footer, charset, plain text only, forced
//! settings), validates recipients, headers and attachments into a closed
//! [`OutgoingError`], and returns the same [`BuiltMessage`] the pool sends (`Bcc` only in
//! the envelope). [`OutgoingMessage::estimated_size`] and [`check_message_size`] refuse an
//! oversized message before anything is stored.
//!
//! The secret in [`Credentials`] never appears in the transcript, an error, or a log
//! line: `AUTH` commands are recorded as `AUTH PLAIN <redacted>`, and anything the server
//! echoes back that contains the secret is scrubbed too. Wire lines are logged with
//! `tracing` at debug level under the `mailplane::smtp` targets.

mod capabilities;
mod classify;
mod client;
mod command;
mod context;
mod delivery;
mod destinations;
mod message;
#[cfg(feature = "oauth")]
pub mod oauth;
mod outgoing;
mod policy;
mod pool;
#[cfg(feature = "proto")]
pub mod proto;
mod recorder;
mod refresh;
mod secret;
mod session;
mod setup;
mod tls;
mod transcript;
mod trust;
mod wire;

use std::fmt;
use std::time::Duration;

pub use classify::{FailureClass, classify_reply};
pub use delivery::{
    ConnectionUse, Delivery, Envelope, MessageOutcome, RecipientResult, RecipientStatus, Severity,
};
pub use destinations::{
    AuthDestination, AuthDestinationError, MAX_AUTH_DESTINATIONS, destination_allowed, is_dns_name,
};
pub use message::{BuiltMessage, MessageError, MessageSpec, build_message};
pub use outgoing::{
    Attachment, DEFAULT_ATTACHMENT_TYPE, DEFAULT_MAX_MESSAGE_SIZE, MAX_RECIPIENTS, OutgoingError,
    OutgoingMessage, bare_address, check_message_size,
};
pub use policy::{
    Denied, DestinationCheck, DestinationPolicy, Rule, RuleParseError, embedded_ipv4,
};
pub use pool::{Pool, PoolConfig, PoolError, SendOptions};
pub use refresh::{
    RefreshError, RefreshFuture, RefreshedToken, TokenGrant, TokenRefresh, TokenRefresher,
};
pub use secret::Secret;
pub use session::run_session;
pub use tls::{TlsConfigError, certificate_info, https_client_config};
pub use transcript::{
    CertificateInfo, Phase, PhaseEvent, PhaseRecord, PhaseStatus, TlsInfo, Verification,
};
pub use trust::{RootSource, TrustStore};
pub use wire::{Reply, data_payload, normalize_crlf, parse_queue_id, parse_reply};

/// How (and whether) the session uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// Never TLS, even if the server offers STARTTLS.
    None,
    /// STARTTLS if the first EHLO offers it; otherwise continue in clear, but without AUTH
    /// (the session fails `STARTTLS_UNAVAILABLE` before it unless
    /// [`SessionConfig::allow_plaintext_auth`]). Once STARTTLS is offered, a refused command
    /// or a failed handshake fails the session (no silent downgrade).
    StartTlsOpportunistic,
    /// STARTTLS or nothing: if it is not offered, fail with `STARTTLS_UNAVAILABLE`
    /// before anything sensitive is sent.
    StartTlsRequired,
    /// TLS from the first byte (e.g. port 465).
    ImplicitTls,
}

impl Security {
    /// A stable upper-case name, e.g. `"STARTTLS_REQUIRED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "NONE",
            Security::StartTlsOpportunistic => "STARTTLS_OPPORTUNISTIC",
            Security::StartTlsRequired => "STARTTLS_REQUIRED",
            Security::ImplicitTls => "IMPLICIT_TLS",
        }
    }

    /// Parses [`Security::as_str`], ignoring case.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Security::None,
            Security::StartTlsOpportunistic,
            Security::StartTlsRequired,
            Security::ImplicitTls,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// The usual port for this mode: 25 in clear, 465 for implicit TLS, 587 (submission)
    /// otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            Security::None => 25,
            Security::ImplicitTls => 465,
            Security::StartTlsOpportunistic | Security::StartTlsRequired => 587,
        }
    }

    /// Whether the mode uses TLS at all ("use safe connection" in the seeds).
    pub fn is_secure(self) -> bool {
        !matches!(self, Security::None)
    }
}

/// Where a session stops (cleanly, with `QUIT`) and counts as a success, like swaks'
/// `--quit-after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum StopAfter {
    /// After the banner and the first EHLO (capabilities are recorded).
    Connect,
    /// After TLS is up and the second EHLO (same as `Connect` when TLS is not used).
    Tls,
    /// After AUTH (same as `Tls` without credentials).
    Auth,
    /// After the message was accepted.
    #[default]
    Delivery,
}

impl StopAfter {
    /// A stable upper-case name, e.g. `"DELIVERY"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopAfter::Connect => "CONNECT",
            StopAfter::Tls => "TLS",
            StopAfter::Auth => "AUTH",
            StopAfter::Delivery => "DELIVERY",
        }
    }
}

/// Per-phase timeouts and the overall deadline. Defaults follow RFC 5321 §4.5.3.2,
/// scaled down for an interactive test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Resolving the host name (default 10 s).
    pub dns: Duration,
    /// Each TCP connect attempt (default 10 s).
    pub connect: Duration,
    /// The `220` greeting (default 30 s; RFC: 5 min).
    pub banner: Duration,
    /// `EHLO` (default 30 s).
    pub ehlo: Duration,
    /// `STARTTLS` (default 30 s).
    pub starttls: Duration,
    /// The TLS handshake (default 15 s).
    pub tls_handshake: Duration,
    /// Each AUTH exchange (default 30 s).
    pub auth: Duration,
    /// `MAIL FROM` (default 30 s; RFC: 5 min).
    pub mail_from: Duration,
    /// Each `RCPT TO` (default 30 s; RFC: 5 min).
    pub rcpt_to: Duration,
    /// `DATA` until `354` (default 30 s; RFC: 2 min).
    pub data_init: Duration,
    /// Each block of message data written (default 30 s; RFC: 3 min).
    pub data_block: Duration,
    /// The reply to the final `.` (default 60 s; RFC: 10 min).
    pub data_end: Duration,
    /// `QUIT` (default 5 s).
    pub quit: Duration,
    /// The whole session (default 60 s); every phase is cut short to fit.
    pub overall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dns: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            banner: Duration::from_secs(30),
            ehlo: Duration::from_secs(30),
            starttls: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(15),
            auth: Duration::from_secs(30),
            mail_from: Duration::from_secs(30),
            rcpt_to: Duration::from_secs(30),
            data_init: Duration::from_secs(30),
            data_block: Duration::from_secs(30),
            data_end: Duration::from_secs(60),
            quit: Duration::from_secs(5),
            overall: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// Every timeout (and the deadline) set to `d`; handy in tests.
    pub fn all(d: Duration) -> Self {
        Timeouts {
            dns: d,
            connect: d,
            banner: d,
            ehlo: d,
            starttls: d,
            tls_handshake: d,
            auth: d,
            mail_from: d,
            rcpt_to: d,
            data_init: d,
            data_block: d,
            data_end: d,
            quit: d,
            overall: d,
        }
    }
}

/// The SASL mechanism used for AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMechanism {
    /// `AUTH PLAIN` (RFC 4616), sent with an initial response.
    Plain,
    /// `AUTH LOGIN` (user name and password in two 334 round trips).
    Login,
    /// `AUTH XOAUTH2` with the secret as the OAuth 2 bearer token.
    XOAuth2,
}

impl AuthMechanism {
    /// The name on the wire, e.g. `"PLAIN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
            AuthMechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// Parses a SASL name ([`AuthMechanism::as_str`]), ignoring case.
    pub fn parse(s: &str) -> Option<Self> {
        [
            AuthMechanism::Plain,
            AuthMechanism::Login,
            AuthMechanism::XOAuth2,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// User name and secret for AUTH, and where the secret may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The mechanism.
    pub mechanism: AuthMechanism,
    /// The user name (not secret; shown in the transcript).
    pub username: String,
    /// The password or bearer token.
    pub secret: Secret,
    /// The relays (host and port as configured) the secret may be sent to. A session whose
    /// host and port no pattern matches fails `CREDENTIAL_DESTINATION_DENIED` before AUTH;
    /// an empty list sends the secret nowhere.
    pub allowed_destinations: Vec<AuthDestination>,
    /// For XOAUTH2 with a token the server got: asked once for a new token when the relay
    /// refuses this one. Never sent to an agent.
    pub refresh: Option<TokenRefresher>,
    /// For a credential whose tokens an agent gets: how. `secret` is then empty until the
    /// agent puts a token there.
    pub token_grant: Option<TokenGrant>,
}

impl Credentials {
    /// Credentials for `mechanism`, allowed to no destination yet: add them with
    /// [`Credentials::allowed_to`].
    pub fn new(mechanism: AuthMechanism, username: impl Into<String>, secret: Secret) -> Self {
        Credentials {
            mechanism,
            username: username.into(),
            secret,
            allowed_destinations: Vec::new(),
            refresh: None,
            token_grant: None,
        }
    }

    /// These credentials, allowed to `destinations` as well.
    #[must_use]
    pub fn allowed_to(mut self, destinations: impl IntoIterator<Item = AuthDestination>) -> Self {
        self.allowed_destinations.extend(destinations);
        self
    }
}

/// Everything one session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Relay host name or IP address (IPv6 with or without brackets).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// TLS mode.
    pub security: Security,
    /// Complete the handshake even if the certificate does not verify; the transcript
    /// still says what verification would have reported.
    pub ignore_certificate_errors: bool,
    /// An extra CA (PEM, one or more certificates) trusted next to the webpki roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The roots that verify the relay's certificate besides `extra_ca_pem`.
    pub trust: TrustStore,
    /// The EHLO name; `None` means the machine's host name, or `localhost`.
    pub helo_name: Option<String>,
    /// Credentials; `None` skips AUTH.
    pub auth: Option<Credentials>,
    /// Whether AUTH may be sent on a connection without TLS (security `NONE`, or
    /// `STARTTLS_OPPORTUNISTIC` when the relay offers no STARTTLS). Off by default: the
    /// session then fails `STARTTLS_UNAVAILABLE` before AUTH, and the credential is not sent.
    pub allow_plaintext_auth: bool,
    /// Where to stop.
    pub stop_after: StopAfter,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The message; required when `stop_after` is `Delivery`.
    pub message: Option<MessageSpec>,
}

impl SessionConfig {
    /// A configuration with defaults: no AUTH, no message, stop after delivery.
    pub fn new(host: impl Into<String>, port: u16, security: Security) -> Self {
        SessionConfig {
            host: host.into(),
            port,
            security,
            ignore_certificate_errors: false,
            extra_ca_pem: None,
            trust: TrustStore::default(),
            helo_name: None,
            auth: None,
            allow_plaintext_auth: false,
            stop_after: StopAfter::Delivery,
            timeouts: Timeouts::default(),
            message: None,
        }
    }
}

/// A configuration that cannot run (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The EHLO name is not a domain or address literal.
    #[error("invalid EHLO name {0:?}")]
    InvalidHeloName(String),
    /// The host is empty or contains characters that cannot be a host name.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// `stop_after` is `Delivery` but there is no message.
    #[error("a message is required to run until delivery")]
    MissingMessage,
    /// The message cannot be built.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The TLS configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// A successful session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    /// Where the session stopped.
    pub stopped_after: StopAfter,
    /// The queue id from the final `250`, when the server gave one.
    pub queue_id: Option<String>,
    /// The reply to the final `.` (delivery only).
    pub final_reply: Option<Reply>,
}

/// A failed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The class.
    pub class: FailureClass,
    /// The phase where it failed.
    pub phase: Phase,
    /// What happened, technically.
    pub message: String,
    /// What a person should do about it, in one line.
    pub hint: String,
    /// The server reply that caused it, if any.
    pub reply: Option<Reply>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {} (hint: {})",
            self.class, self.phase, self.message, self.hint
        )
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Success(Success),
    /// It failed.
    Failure(Failure),
}

/// Everything a session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// Each phase, in order.
    pub transcript: Vec<PhaseRecord>,
    /// The capabilities from the last EHLO (`STARTTLS`, `AUTH PLAIN LOGIN`, ...).
    pub capabilities: Vec<String>,
    /// The `Message-ID` of the message, when one was built.
    pub message_id: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
}

impl SessionReport {
    /// The failure, if the session failed.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.outcome {
            Outcome::Success(_) => None,
            Outcome::Failure(f) => Some(f),
        }
    }

    /// The success, if the session succeeded.
    pub fn success(&self) -> Option<&Success> {
        match &self.outcome {
            Outcome::Success(s) => Some(s),
            Outcome::Failure(_) => None,
        }
    }

    /// The records for `phase`.
    pub fn phases(&self, phase: Phase) -> impl Iterator<Item = &PhaseRecord> {
        self.transcript.iter().filter(move |r| r.phase == phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let creds = Credentials::new(AuthMechanism::Plain, "alice", Secret::new("s3cret-value"));
        let mut cfg = SessionConfig::new("smtp.example.org", 587, Security::StartTlsRequired);
        cfg.auth = Some(creds);
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn defaults() {
        let t = Timeouts::default();
        assert_eq!(t.overall, Duration::from_secs(60));
        assert_eq!(t.data_end, Duration::from_secs(60));
        assert_eq!(t.tls_handshake, Duration::from_secs(15));
        assert_eq!(StopAfter::default(), StopAfter::Delivery);
        assert!(StopAfter::Connect < StopAfter::Tls && StopAfter::Auth < StopAfter::Delivery);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            Security::None,
            Security::StartTlsOpportunistic,
            Security::StartTlsRequired,
            Security::ImplicitTls,
        ] {
            assert_eq!(Security::parse(s.as_str()), Some(s));
            assert_eq!(Security::parse(&s.as_str().to_ascii_lowercase()), Some(s));
        }
        for m in [
            AuthMechanism::Plain,
            AuthMechanism::Login,
            AuthMechanism::XOAuth2,
        ] {
            assert_eq!(AuthMechanism::parse(m.as_str()), Some(m));
        }
        assert_eq!(Security::parse("tls"), None);
        assert_eq!(Security::ImplicitTls.default_port(), 465);
        assert_eq!(Security::StartTlsRequired.default_port(), 587);
    }
}
