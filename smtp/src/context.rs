//! What every phase needs to know: the configuration, the names, the deadline; how a
//! wire error, a timeout or a negative reply becomes a classified [`Fail`]; and one
//! command exchange, recorded in the phase's record.

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

use crate::classify::{FailureClass, classify_reply, implicit_tls_hint, reply_hint};
use crate::client::Link;
use crate::command::Command;
use crate::recorder::Fail;
use crate::transcript::{Phase, PhaseRecord};
use crate::wire::{Reply, WireError};
use crate::{Security, SessionConfig};

/// The fixed facts of one session.
pub(crate) struct Ctx<'a> {
    /// The configuration.
    pub(crate) cfg: &'a SessionConfig,
    /// The relay host, without IPv6 brackets.
    pub(crate) host: String,
    /// The EHLO name.
    pub(crate) helo: String,
    /// When the whole session must be over.
    pub(crate) deadline: Instant,
    /// The extra CA certificates trusted next to the webpki roots.
    pub(crate) extra_ca: Vec<CertificateDer<'static>>,
}

impl Ctx<'_> {
    /// `d`, cut short to fit the overall deadline.
    pub(crate) fn limit(&self, d: Duration) -> Duration {
        d.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Whether the overall deadline has passed.
    pub(crate) fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The failure for a timeout in `phase` (`configured` is the phase's own timeout;
    /// `tls_active` whether the connection is already encrypted).
    pub(crate) fn timeout_fail(
        &self,
        phase: Phase,
        configured: Duration,
        tls_active: bool,
    ) -> Fail {
        if self.deadline_passed() {
            let overall = self.cfg.timeouts.overall;
            return Fail::new(
                FailureClass::Timeout,
                format!("overall deadline of {overall:?} reached during {phase}"),
                format!(
                    "the session did not finish within {overall:?}; the server is slow at {phase} or the deadline is too short"
                ),
            );
        }
        let port = self.cfg.port;
        let plaintext = !matches!(self.cfg.security, Security::ImplicitTls) && !tls_active;
        match phase {
            Phase::Banner if plaintext && port == 465 => Fail::new(
                FailureClass::ProtocolMismatch,
                format!("no greeting within {configured:?}"),
                implicit_tls_hint(port),
            ),
            Phase::Banner if plaintext => Fail::new(
                FailureClass::Timeout,
                format!("no greeting within {configured:?}"),
                format!(
                    "the server sent no greeting within {configured:?}; if port {port} speaks implicit TLS, set security to IMPLICIT_TLS"
                ),
            ),
            _ => Fail::new(
                FailureClass::Timeout,
                format!("no answer to {phase} within {configured:?}"),
                format!("the server did not answer {phase} within {configured:?}"),
            ),
        }
    }

    /// The failure for a wire error in `phase`.
    pub(crate) fn wire_fail(
        &self,
        phase: Phase,
        err: WireError,
        configured: Duration,
        tls_active: bool,
    ) -> Fail {
        match err {
            WireError::Timeout(_) => self.timeout_fail(phase, configured, tls_active),
            WireError::Closed => Fail::new(
                FailureClass::TemporaryFailure,
                format!("the server closed the connection during {phase}"),
                format!("the server hung up during {phase}; check its logs, then retry"),
            ),
            WireError::Io(e) => Fail::new(
                FailureClass::TemporaryFailure,
                format!("connection error during {phase}: {e}"),
                format!("the connection broke during {phase}; retry later"),
            ),
            WireError::Malformed {
                preview,
                looks_like_tls,
            } => {
                let hint = if looks_like_tls && !tls_active {
                    implicit_tls_hint(self.cfg.port)
                } else {
                    format!(
                        "port {} does not speak SMTP as expected (it sent {preview})",
                        self.cfg.port
                    )
                };
                Fail::new(
                    FailureClass::ProtocolMismatch,
                    format!("not an SMTP reply: {preview}"),
                    hint,
                )
            }
        }
    }

    /// The failure for a negative (or unexpected) reply in `phase`; the connection can
    /// still say `QUIT`.
    pub(crate) fn reply_fail(&self, phase: Phase, reply: Reply) -> Fail {
        let class = classify_reply(phase, &reply);
        let hint = reply_hint(phase, &reply, class);
        Fail {
            class,
            message: format!("{phase} answered {reply}"),
            hint,
            reply: Some(reply),
            can_quit: true,
        }
    }

    /// Sends `command` on `link` and reads the reply, recording both in `rec`; negative
    /// replies are returned as `Ok` for the caller to judge.
    pub(crate) async fn command(
        &self,
        link: &mut Link,
        rec: &mut PhaseRecord,
        command: &Command,
        timeout: Duration,
    ) -> Result<Reply, Fail> {
        let limit = self.limit(timeout);
        rec.commands.push(command.redacted().to_string());
        match link.client.command(command, limit).await {
            Ok(reply) => {
                rec.reply = Some(reply.clone());
                Ok(reply)
            }
            Err(e) => Err(self.wire_fail(rec.phase, e, timeout, link.tls_active)),
        }
    }

    /// Like [`Ctx::command`] but any code not in `expect` fails the phase.
    pub(crate) async fn expect(
        &self,
        link: &mut Link,
        rec: &mut PhaseRecord,
        command: &Command,
        timeout: Duration,
        expect: &[u16],
    ) -> Result<Reply, Fail> {
        let reply = self.command(link, rec, command, timeout).await?;
        if expect.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(self.reply_fail(rec.phase, reply))
        }
    }
}
