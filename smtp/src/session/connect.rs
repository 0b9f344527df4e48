//! Getting a connection: resolving the host, asking the [`DestinationCheck`] about every
//! address, the TCP connect, and the greeting (with the implicit-TLS probe that tells a
//! silent TLS port from a slow server).
//!
//! [`DestinationCheck`]: crate::DestinationCheck

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::Session;
use crate::Failure;
use crate::classify::{FailureClass, implicit_tls_hint};
use crate::client::{Client, Link};
use crate::recorder::Fail;
use crate::tls;
use crate::transcript::Phase;
use crate::wire::{Reply, Sniff, WireError};

/// How long a plaintext session waits for a greeting before probing for implicit TLS.
const TLS_PROBE_AFTER: Duration = Duration::from_secs(2);
/// How long the probe may take.
const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What came first while waiting for the greeting.
enum Greeting {
    /// The main connection's reply (or its failure).
    Reply(Result<Reply, WireError>),
    /// The probe completed a TLS handshake with this address, in this protocol version.
    Tls(SocketAddr, String),
}

impl Session<'_> {
    /// The `DNS` phase: the host's addresses, without duplicates, in resolver order.
    pub(crate) async fn resolve(&mut self) -> Result<Vec<SocketAddr>, Failure> {
        let mut run = self.rec.begin(Phase::Dns).await;
        let configured = self.ctx.cfg.timeouts.dns;
        let limit = self.ctx.limit(configured);
        let host = self.ctx.host.clone();
        let result = match tokio::time::timeout(
            limit,
            tokio::net::lookup_host((host.as_str(), self.ctx.cfg.port)),
        )
        .await
        {
            Err(_) => Err(self.ctx.timeout_fail(Phase::Dns, configured, false)),
            Ok(Err(e)) => Err(Fail::new(
                FailureClass::Dns,
                format!("cannot resolve {host}: {e}"),
                format!("the host name {host} does not resolve; check its spelling and the DNS"),
            )),
            Ok(Ok(iter)) => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for a in iter {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                if addrs.is_empty() {
                    Err(Fail::new(
                        FailureClass::Dns,
                        format!("{host} has no addresses"),
                        format!("the host name {host} has no A or AAAA record"),
                    ))
                } else {
                    run.rec.detail.push(format!(
                        "{host} resolved to {}",
                        addrs
                            .iter()
                            .map(|a| a.ip().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    Ok(addrs)
                }
            }
        };
        self.close(run, result).await
    }

    /// The `CONNECT` phase: tries each address the policy allows, in turn.
    pub(crate) async fn connect(&mut self, addrs: &[SocketAddr]) -> Result<Link, Failure> {
        let mut run = self.rec.begin(Phase::Connect).await;
        let (host, port) = (&self.ctx.host, self.ctx.cfg.port);
        let configured = self.ctx.cfg.timeouts.connect;
        let mut denied = None;
        let mut last: Option<Fail> = None;
        let mut stream = None;
        for &addr in addrs {
            if let Err(d) = self.policy.check(addr) {
                run.rec
                    .detail
                    .push(format!("{addr}: not tried, {}", d.rule));
                denied.get_or_insert(d);
                continue;
            }
            let t0 = Instant::now();
            let limit = self.ctx.limit(configured);
            match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    run.rec
                        .detail
                        .push(format!("{addr}: connected in {:?}", t0.elapsed()));
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => {
                    run.rec.detail.push(format!("{addr}: {e}"));
                    last = Some(Fail::new(
                        FailureClass::ConnectionRefused,
                        format!("connect to {addr} failed: {e}"),
                        format!(
                            "nothing accepts connections on {host}:{port}; check the host, the port and any firewall"
                        ),
                    ));
                }
                Err(_) => {
                    run.rec
                        .detail
                        .push(format!("{addr}: no answer within {limit:?}"));
                    let mut f = self.ctx.timeout_fail(Phase::Connect, configured, false);
                    if !self.ctx.deadline_passed() {
                        f.hint = format!(
                            "{host}:{port} did not answer within {configured:?}; a firewall may be dropping packets"
                        );
                    }
                    // A refusal elsewhere is the more telling failure; keep it if there was one.
                    if last
                        .as_ref()
                        .is_none_or(|l| l.class == FailureClass::Timeout)
                    {
                        last = Some(f);
                    }
                }
            }
            if self.ctx.deadline_passed() {
                break;
            }
        }
        let result = match (stream, last, denied) {
            (Some(s), _, _) => {
                let _ = s.set_nodelay(true);
                let peer = s.peer_addr().ok();
                let (sniff, sniffed) = Sniff::new(s);
                let secrets = self.rec.secrets().to_vec();
                Ok(Link {
                    client: Client::new(Box::new(sniff), secrets),
                    peer,
                    sniffed,
                    tls_active: false,
                    tls_verified: false,
                })
            }
            (None, Some(fail), _) => Err(fail),
            (None, None, Some(d)) => Err(Fail::new(
                FailureClass::DestinationNotAllowed,
                d.to_string(),
                format!(
                    "{} is blocked by the destination policy ({})",
                    d.addr.ip(),
                    d.rule
                ),
            )),
            (None, None, None) => Err(Fail::new(
                FailureClass::Dns,
                "no address to connect to",
                "the host name has no usable address",
            )),
        };
        self.close(run, result).await
    }

    /// The `BANNER` phase: waits for the `220` greeting.
    pub(crate) async fn banner(&mut self, mut link: Link) -> Result<Link, Failure> {
        let mut run = self.rec.begin(Phase::Banner).await;
        let configured = self.ctx.cfg.timeouts.banner;
        let limit = self.ctx.limit(configured);
        let port = self.ctx.cfg.port;
        // A plaintext session that hears nothing for a while asks, on a second connection,
        // whether the port speaks implicit TLS: such a port waits for our ClientHello as we
        // wait for its greeting, and "timeout" would hide the real cause.
        let plaintext =
            !matches!(self.ctx.cfg.security, crate::Security::ImplicitTls) && !link.tls_active;
        let probe_target = link.peer.filter(|_| plaintext && limit > TLS_PROBE_AFTER);
        let (host, extra_ca) = (self.ctx.host.clone(), self.ctx.extra_ca.clone());
        let greeting = {
            let read = link.client.read_reply(limit);
            tokio::pin!(read);
            let probe = async move {
                match probe_target {
                    Some(addr) => {
                        tokio::time::sleep(TLS_PROBE_AFTER).await;
                        probe_implicit_tls(host, extra_ca, addr)
                            .await
                            .map(|v| (addr, v))
                    }
                    None => None,
                }
            };
            tokio::pin!(probe);
            let mut probing = probe_target.is_some();
            loop {
                tokio::select! {
                    reply = &mut read => break Greeting::Reply(reply),
                    found = &mut probe, if probing => {
                        probing = false;
                        if let Some((addr, version)) = found {
                            break Greeting::Tls(addr, version);
                        }
                    }
                }
            }
        };
        let result = match greeting {
            Greeting::Tls(addr, version) => {
                run.rec.detail.push(format!(
                    "no greeting within {TLS_PROBE_AFTER:?}; a second connection to {addr} \
                     completed a TLS handshake ({version})"
                ));
                Err(Fail::new(
                    FailureClass::ProtocolMismatch,
                    format!("port {port} answers with TLS, not an SMTP greeting"),
                    implicit_tls_hint(port),
                ))
            }
            Greeting::Reply(Err(e)) => {
                Err(self
                    .ctx
                    .wire_fail(Phase::Banner, e, configured, link.tls_active))
            }
            Greeting::Reply(Ok(reply)) => {
                run.rec.reply = Some(reply.clone());
                if reply.code == 220 {
                    Ok(())
                } else {
                    Err(self.ctx.reply_fail(Phase::Banner, reply))
                }
            }
        };
        self.settle(run, result, link).await.map(|((), link)| link)
    }
}

/// Whether `addr` completes a TLS handshake. Certificates are not judged here: any answer in
/// TLS proves the port speaks implicit TLS. Returns the negotiated protocol version.
async fn probe_implicit_tls(
    host: String,
    extra_ca: Vec<CertificateDer<'static>>,
    addr: SocketAddr,
) -> Option<String> {
    let (config, _) = tls::client_config(true, &extra_ca, crate::TrustStore::Webpki).ok()?;
    let name = ServerName::try_from(host).ok()?;
    let tcp = tokio::time::timeout(TLS_PROBE_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let stream = tokio::time::timeout(
        TLS_PROBE_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .ok()?
    .ok()?;
    let version = stream.get_ref().1.protocol_version();
    Some(
        version
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "TLS".into()),
    )
}
