//! The `TLS_HANDSHAKE` phase: upgrades the connection in place, after `STARTTLS` or first
//! thing with implicit TLS.

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::Failure;
use crate::classify::FailureClass;
use crate::client::Client;
use crate::connect::Link;
use crate::recorder::Fail;
use crate::session::Session;
use crate::tls;
use crate::transcript::{Phase, PhaseRecord};

impl Session<'_> {
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
        } = link;
        let redact = client.redactions();
        let stream = client
            .into_stream()
            .map_err(|e| ctx.wire_fail(Phase::TlsHandshake, e, configured, tls_active))?;
        let ignore = ctx.cfg.ignore_certificate_errors;
        let (config, record) = tls::client_config(ignore, &ctx.extra_ca).map_err(|e| {
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
                drop(rec_guard);
                rec.detail
                    .push(format!("{} {}", info.protocol_version, info.cipher_suite));
                rec.tls = Some(info);
                Ok(Link {
                    client: Client::new(Box::new(tls_stream), redact),
                    peer,
                    sniffed,
                    tls_active: true,
                })
            }
        }
    }
}
