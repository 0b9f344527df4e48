//! The TLS phases: `STARTTLS` (as the security mode asks) and `TLS_HANDSHAKE`, which
//! upgrades the connection in place, after `STARTTLS` or first thing with implicit TLS.

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::Session;
use crate::classify::FailureClass;
use crate::client::{Client, Link};
use crate::command::Command;
use crate::recorder::Fail;
use crate::tls;
use crate::transcript::{Phase, PhaseRecord, Verification};
use crate::{Failure, Security};

impl Session<'_> {
    /// `STARTTLS`, the handshake and the second `EHLO`, as the security mode asks.
    pub(crate) async fn starttls(&mut self, mut link: Link) -> Result<Link, Failure> {
        let offered = self.capabilities.starttls;
        match self.ctx.cfg.security {
            Security::None => {
                self.rec.skip(Phase::StartTls, "security NONE").await;
                self.rec.skip(Phase::TlsHandshake, "security NONE").await;
                return Ok(link);
            }
            Security::ImplicitTls => {
                self.rec
                    .skip(Phase::StartTls, "implicit TLS is already up")
                    .await;
                return Ok(link);
            }
            Security::StartTlsOpportunistic if !offered => {
                let reason = "not offered; continuing in clear (STARTTLS_OPPORTUNISTIC)";
                self.rec.skip(Phase::StartTls, reason).await;
                self.rec.skip(Phase::TlsHandshake, "no STARTTLS").await;
                return Ok(link);
            }
            Security::StartTlsRequired if !offered => {
                let run = self.rec.begin(Phase::StartTls).await;
                let mut fail = Fail::new(
                    FailureClass::StartTlsUnavailable,
                    "the server does not offer STARTTLS",
                    "server offers no STARTTLS; STARTTLS_REQUIRED refuses to send in clear",
                );
                fail.can_quit = true;
                let result = self.settle(run, Err::<(), _>(fail), link).await;
                return result.map(|((), l)| l);
            }
            Security::StartTlsOpportunistic | Security::StartTlsRequired => {}
        }
        let mut run = self.rec.begin(Phase::StartTls).await;
        let timeout = self.ctx.cfg.timeouts.starttls;
        let result = self
            .ctx
            .expect(&mut link, &mut run.rec, &Command::StartTls, timeout, &[220])
            .await;
        let (_, link) = self.settle(run, result, link).await?;
        let link = self.tls_handshake(link, false).await?;
        self.ehlo(link).await
    }

    /// Runs the TLS handshake on `link` (`implicit`: TLS from the first byte) and returns
    /// the encrypted connection. On failure the connection is dropped.
    pub(crate) async fn tls_handshake(
        &mut self,
        link: Link,
        implicit: bool,
    ) -> Result<Link, Failure> {
        let mut run = self.rec.begin(Phase::TlsHandshake).await;
        let result = self.tls_handshake_inner(&mut run.rec, link, implicit).await;
        self.close(run, result).await
    }

    async fn tls_handshake_inner(
        &self,
        rec: &mut PhaseRecord,
        link: Link,
        implicit: bool,
    ) -> Result<Link, Fail> {
        let ctx = &self.ctx;
        let configured = ctx.cfg.timeouts.tls_handshake;
        let limit = ctx.limit(configured);
        let Link {
            client,
            peer,
            sniffed,
            tls_active,
            tls_verified: _,
        } = link;
        let redact = client.redactions();
        let stream = client
            .into_stream()
            .map_err(|e| ctx.wire_fail(Phase::TlsHandshake, e, configured, tls_active))?;
        let ignore = ctx.cfg.ignore_certificate_errors;
        let (config, record) =
            tls::client_config(ignore, &ctx.extra_ca, ctx.cfg.trust).map_err(|e| {
                Fail::new(
                    FailureClass::TlsHandshake,
                    e.to_string(),
                    "fix the TLS configuration",
                )
            })?;
        let server_name = ServerName::try_from(ctx.host.clone()).map_err(|e| {
            Fail::new(
                FailureClass::TlsHandshake,
                format!("{} is not a valid TLS server name: {e}", ctx.host),
                "use a host name or IP address",
            )
        })?;
        rec.detail.push(format!("server name {}", ctx.host));
        let connector = TlsConnector::from(config);
        match tokio::time::timeout(limit, connector.connect(server_name, stream)).await {
            Err(_) => {
                let mut fail = ctx.timeout_fail(Phase::TlsHandshake, configured, tls_active);
                if implicit && !ctx.deadline_passed() {
                    fail.hint = format!(
                        "no TLS handshake within {configured:?}; if port {} speaks plain SMTP (STARTTLS), set security to STARTTLS_REQUIRED",
                        ctx.cfg.port
                    );
                }
                Err(fail)
            }
            Ok(Err(e)) => {
                let seen = sniffed.lock().map(|g| g.clone()).unwrap_or_default();
                let rec_guard = record.lock().unwrap_or_else(|p| p.into_inner());
                let failure = tls::classify_handshake_error(
                    &e,
                    &rec_guard,
                    &seen,
                    &ctx.host,
                    ctx.cfg.port,
                    implicit,
                );
                rec.tls = Some(failure.info);
                Err(Fail::new(failure.class, failure.message, failure.hint))
            }
            Ok(Ok(tls_stream)) => {
                let rec_guard = record.lock().unwrap_or_else(|p| p.into_inner());
                let info = tls::session_info(tls_stream.get_ref().1, &rec_guard, ignore);
                let verified_by = rec_guard.verified_by;
                drop(rec_guard);
                let tls_verified = matches!(info.verification, Verification::Verified);
                rec.detail
                    .push(format!("{} {}", info.protocol_version, info.cipher_suite));
                if let Some(source) = verified_by {
                    rec.detail
                        .push(format!("certificate verified by {}", source.describe()));
                }
                rec.tls = Some(info);
                Ok(Link {
                    client: Client::new(Box::new(tls_stream), redact),
                    peer,
                    sniffed,
                    tls_active: true,
                    tls_verified,
                })
            }
        }
    }
}
