//! The session state machine.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::classify::{FailureClass, classify_reply, implicit_tls_hint, reply_hint};
use crate::message::{BuiltMessage, build_message};
use crate::policy::DestinationCheck;
use crate::tls;
use crate::transcript::{Phase, PhaseEvent, PhaseRecord, PhaseStatus};
use crate::wire::{
    Connection, Reply, Sniff, WireError, data_payload, escape_preview, parse_queue_id,
};
use crate::{
    AuthMechanism, Failure, Outcome, Security, SessionConfig, SessionError, SessionReport,
    StopAfter, Success,
};

/// Runs one SMTP session as configured.
///
/// `policy` is asked about every resolved address before any packet is sent to it.
/// `events`, when given, receives a [`PhaseEvent::Started`] and a
/// [`PhaseEvent::Finished`] for every phase as it happens (a closed receiver is fine).
///
/// Returns `Err` only for a configuration that cannot run (nothing is sent then); every
/// network or server problem is an [`Outcome::Failure`] in the report.
pub async fn run_session(
    config: &SessionConfig,
    policy: &dyn DestinationCheck,
    events: Option<&Sender<PhaseEvent>>,
) -> Result<SessionReport, SessionError> {
    let host = normalize_host(&config.host)?;
    let helo = match &config.helo_name {
        Some(h) if valid_helo(h) => h.clone(),
        Some(h) => return Err(SessionError::InvalidHeloName(h.clone())),
        None => default_helo_name(),
    };
    let message = match &config.message {
        Some(spec) => Some(build_message(spec, &helo)?),
        None if config.stop_after == StopAfter::Delivery => {
            return Err(SessionError::MissingMessage);
        }
        None => None,
    };
    let extra_ca = match &config.extra_ca_pem {
        Some(pem) => tls::parse_ca_pem(pem)?,
        None => Vec::new(),
    };
    // Build once up front so that a bad configuration is an error before connecting.
    tls::client_config(config.ignore_certificate_errors, &extra_ca)?;

    let mut redact = Vec::new();
    if let Some(creds) = &config.auth {
        redact.push(creds.secret.expose().to_owned());
    }
    tracing::info!(
        target: "mailplane::smtp",
        host = %host,
        port = config.port,
        security = config.security.as_str(),
        stop_after = config.stop_after.as_str(),
        "starting SMTP session"
    );
    let mut session = Session {
        cfg: config,
        policy,
        host,
        helo,
        events,
        deadline: Instant::now() + config.timeouts.overall,
        transcript: Vec::new(),
        conn: None,
        sniffed: Arc::new(Mutex::new(Vec::new())),
        capabilities: Vec::new(),
        tls_active: false,
        peer: None,
        extra_ca,
        redact,
    };
    let outcome = match session.run(message.as_ref()).await {
        Ok(success) => Outcome::Success(success),
        Err(failure) => {
            tracing::info!(target: "mailplane::smtp", class = failure.class.as_str(), phase = failure.phase.as_str(), "SMTP session failed: {}", failure.message);
            Outcome::Failure(failure)
        }
    };
    Ok(SessionReport {
        transcript: session.transcript,
        capabilities: session.capabilities,
        message_id: message.map(|m| m.message_id),
        outcome,
    })
}

/// Strips IPv6 brackets and checks the host has no control characters or spaces.
fn normalize_host(host: &str) -> Result<String, SessionError> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if h.is_empty()
        || h.len() > 253
        || h.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(SessionError::InvalidHost(host.to_owned()));
    }
    Ok(h.to_owned())
}

/// A domain (letters, digits, `-`, `.`) or an address literal such as `[192.0.2.1]`.
fn valid_helo(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
        return inner.parse::<std::net::IpAddr>().is_ok();
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['.', '-'])
}

/// The machine's host name when it is a valid EHLO name, else `localhost`.
fn default_helo_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| valid_helo(s))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A failure inside a phase (the phase is added when the record is closed).
struct Fail {
    class: FailureClass,
    message: String,
    hint: String,
    reply: Option<Reply>,
    /// Whether the connection can still carry a polite `QUIT`.
    can_quit: bool,
}

impl Fail {
    fn new(class: FailureClass, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Fail {
            class,
            message: message.into(),
            hint: hint.into(),
            reply: None,
            can_quit: false,
        }
    }
}

/// A phase that has started.
struct Running {
    rec: PhaseRecord,
    t0: Instant,
}

struct Session<'a> {
    cfg: &'a SessionConfig,
    policy: &'a dyn DestinationCheck,
    host: String,
    helo: String,
    events: Option<&'a Sender<PhaseEvent>>,
    deadline: Instant,
    transcript: Vec<PhaseRecord>,
    conn: Option<Connection>,
    sniffed: Arc<Mutex<Vec<u8>>>,
    capabilities: Vec<String>,
    tls_active: bool,
    /// The address the session is connected to, for the implicit-TLS probe.
    peer: Option<SocketAddr>,
    extra_ca: Vec<CertificateDer<'static>>,
    redact: Vec<String>,
}

impl Session<'_> {
    async fn emit(&self, event: PhaseEvent) {
        if let Some(tx) = self.events {
            let left = self
                .deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            let _ = tokio::time::timeout(left, tx.send(event)).await;
        }
    }

    async fn begin(&self, phase: Phase) -> Running {
        self.emit(PhaseEvent::Started(phase)).await;
        Running {
            rec: PhaseRecord::new(phase, PhaseStatus::Ok),
            t0: Instant::now(),
        }
    }

    async fn finish(&mut self, mut run: Running, status: PhaseStatus) {
        run.rec.status = status;
        run.rec.duration = run.t0.elapsed();
        tracing::debug!(
            target: "mailplane::smtp",
            phase = run.rec.phase.as_str(),
            status = ?status,
            duration_ms = run.rec.duration.as_millis() as u64,
            "phase finished"
        );
        self.emit(PhaseEvent::Finished(Box::new(run.rec.clone())))
            .await;
        self.transcript.push(run.rec);
    }

    /// Closes `run` with `result`, turning a [`Fail`] into a [`Failure`] (after a polite
    /// `QUIT` when the connection allows it).
    async fn close<T>(&mut self, mut run: Running, result: Result<T, Fail>) -> Result<T, Failure> {
        match result {
            Ok(v) => {
                self.finish(run, PhaseStatus::Ok).await;
                Ok(v)
            }
            Err(fail) => {
                let phase = run.rec.phase;
                run.rec
                    .detail
                    .push(format!("{}: {}", fail.class, fail.message));
                if run.rec.reply.is_none() {
                    run.rec.reply.clone_from(&fail.reply);
                }
                self.finish(run, PhaseStatus::Failed).await;
                if fail.can_quit {
                    self.quit().await;
                } else if let Some(mut conn) = self.conn.take() {
                    conn.shutdown().await;
                }
                Err(Failure {
                    class: fail.class,
                    phase,
                    message: fail.message,
                    hint: fail.hint,
                    reply: fail.reply,
                })
            }
        }
    }

    async fn skip(&mut self, phase: Phase, reason: &str) {
        let mut run = self.begin(phase).await;
        run.rec.detail.push(format!("skipped: {reason}"));
        self.finish(run, PhaseStatus::Skipped).await;
    }

    /// `d`, cut short to fit the overall deadline.
    fn limit(&self, d: Duration) -> Duration {
        d.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn timeout_fail(&self, phase: Phase, configured: Duration) -> Fail {
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
        let plaintext = !matches!(self.cfg.security, Security::ImplicitTls) && !self.tls_active;
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

    fn wire_fail(&self, phase: Phase, err: WireError, configured: Duration) -> Fail {
        match err {
            WireError::Timeout(_) => self.timeout_fail(phase, configured),
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
                let hint = if looks_like_tls && !self.tls_active {
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

    fn reply_fail(&self, phase: Phase, reply: Reply) -> Fail {
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

    /// Sends `line` (shown as `shown`) and reads the reply; negative replies are returned
    /// as `Ok` for the caller to judge.
    async fn command(
        &mut self,
        rec: &mut PhaseRecord,
        line: &str,
        shown: &str,
        timeout: Duration,
    ) -> Result<Reply, Fail> {
        let phase = rec.phase;
        let limit = self.limit(timeout);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Fail::new(
                FailureClass::TemporaryFailure,
                "no connection",
                "internal error: no connection",
            ));
        };
        tracing::debug!(target: "mailplane::smtp::wire", "C: {shown}");
        rec.commands.push(shown.to_owned());
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let result = match conn.send(&bytes, limit).await {
            Ok(()) => conn.read_reply(limit).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(reply) => {
                rec.reply = Some(reply.clone());
                Ok(reply)
            }
            Err(e) => Err(self.wire_fail(phase, e, timeout)),
        }
    }

    /// Like [`Session::command`] but any code other than `expect` fails the phase.
    async fn expect(
        &mut self,
        rec: &mut PhaseRecord,
        line: &str,
        shown: &str,
        timeout: Duration,
        expect: &[u16],
    ) -> Result<Reply, Fail> {
        let reply = self.command(rec, line, shown, timeout).await?;
        if expect.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(self.reply_fail(rec.phase, reply))
        }
    }

    async fn run(&mut self, message: Option<&BuiltMessage>) -> Result<Success, Failure> {
        let addrs = self.resolve().await?;
        self.connect(&addrs).await?;
        if self.cfg.security == Security::ImplicitTls {
            self.tls_handshake(true).await?;
        }
        self.banner().await?;
        self.ehlo().await?;
        let stop = self.cfg.stop_after;
        if stop == StopAfter::Connect {
            return self.stop_early(StopAfter::Connect).await;
        }
        self.starttls().await?;
        if stop == StopAfter::Tls {
            return self.stop_early(StopAfter::Tls).await;
        }
        self.auth().await?;
        if stop == StopAfter::Auth {
            return self.stop_early(StopAfter::Auth).await;
        }
        let Some(message) = message else {
            return self.stop_early(StopAfter::Auth).await;
        };
        self.mail_from(message).await?;
        for rcpt in &message.envelope_to {
            self.rcpt_to(rcpt).await?;
        }
        let (final_reply, queue_id) = self.data(message).await?;
        self.quit().await;
        Ok(Success {
            stopped_after: StopAfter::Delivery,
            queue_id,
            final_reply: Some(final_reply),
        })
    }

    async fn stop_early(&mut self, at: StopAfter) -> Result<Success, Failure> {
        let reason = format!("stop_after {}", at.as_str());
        let mut rest = Vec::new();
        if at == StopAfter::Connect {
            if self.cfg.security != Security::ImplicitTls {
                rest.extend([Phase::StartTls, Phase::TlsHandshake]);
            } else {
                rest.push(Phase::StartTls);
            }
        }
        if at <= StopAfter::Tls {
            rest.push(Phase::Auth);
        }
        rest.extend([Phase::MailFrom, Phase::RcptTo, Phase::Data]);
        for phase in rest {
            self.skip(phase, &reason).await;
        }
        self.quit().await;
        Ok(Success {
            stopped_after: at,
            queue_id: None,
            final_reply: None,
        })
    }

    async fn resolve(&mut self) -> Result<Vec<SocketAddr>, Failure> {
        let mut run = self.begin(Phase::Dns).await;
        let configured = self.cfg.timeouts.dns;
        let limit = self.limit(configured);
        let host = self.host.clone();
        let result = match tokio::time::timeout(
            limit,
            tokio::net::lookup_host((host.as_str(), self.cfg.port)),
        )
        .await
        {
            Err(_) => Err(self.timeout_fail(Phase::Dns, configured)),
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

    async fn connect(&mut self, addrs: &[SocketAddr]) -> Result<(), Failure> {
        let mut run = self.begin(Phase::Connect).await;
        let configured = self.cfg.timeouts.connect;
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
            let limit = self.limit(configured);
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
                            "nothing accepts connections on {}:{}; check the host, the port and any firewall",
                            self.host, self.cfg.port
                        ),
                    ));
                }
                Err(_) => {
                    run.rec
                        .detail
                        .push(format!("{addr}: no answer within {limit:?}"));
                    let mut f = self.timeout_fail(Phase::Connect, configured);
                    if !self.deadline_passed() {
                        f.hint = format!(
                            "{}:{} did not answer within {configured:?}; a firewall may be dropping packets",
                            self.host, self.cfg.port
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
            if self.deadline_passed() {
                break;
            }
        }
        let result = match (stream, last, denied) {
            (Some(s), _, _) => {
                let _ = s.set_nodelay(true);
                self.peer = s.peer_addr().ok();
                let (sniff, seen) = Sniff::new(s);
                self.sniffed = seen;
                self.conn = Some(Connection::new(Box::new(sniff), self.redact.clone()));
                Ok(())
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
}

impl Session<'_> {
    async fn tls_handshake(&mut self, implicit: bool) -> Result<(), Failure> {
        let mut run = self.begin(Phase::TlsHandshake).await;
        let result = self.tls_handshake_inner(&mut run.rec, implicit).await;
        self.close(run, result).await
    }

    async fn tls_handshake_inner(
        &mut self,
        rec: &mut PhaseRecord,
        implicit: bool,
    ) -> Result<(), Fail> {
        let configured = self.cfg.timeouts.tls_handshake;
        let limit = self.limit(configured);
        let Some(conn) = self.conn.take() else {
            return Err(Fail::new(
                FailureClass::TemporaryFailure,
                "no connection",
                "internal error: no connection",
            ));
        };
        let redact = conn.redactions();
        let stream = conn
            .into_stream()
            .map_err(|e| self.wire_fail(Phase::TlsHandshake, e, configured))?;
        let ignore = self.cfg.ignore_certificate_errors;
        let (config, record) = tls::client_config(ignore, &self.extra_ca).map_err(|e| {
            Fail::new(
                FailureClass::TlsHandshake,
                e.to_string(),
                "fix the TLS configuration",
            )
        })?;
        let server_name = ServerName::try_from(self.host.clone()).map_err(|e| {
            Fail::new(
                FailureClass::TlsHandshake,
                format!("{} is not a valid TLS server name: {e}", self.host),
                "use a host name or IP address",
            )
        })?;
        rec.detail.push(format!("server name {}", self.host));
        let connector = TlsConnector::from(config);
        match tokio::time::timeout(limit, connector.connect(server_name, stream)).await {
            Err(_) => {
                let mut fail = self.timeout_fail(Phase::TlsHandshake, configured);
                if implicit && !self.deadline_passed() {
                    fail.hint = format!(
                        "no TLS handshake within {configured:?}; if port {} speaks plain SMTP (STARTTLS), set security to STARTTLS_REQUIRED",
                        self.cfg.port
                    );
                }
                Err(fail)
            }
            Ok(Err(e)) => {
                let sniffed = self.sniffed.lock().map(|g| g.clone()).unwrap_or_default();
                let rec_guard = record.lock().unwrap_or_else(|p| p.into_inner());
                let failure = tls::classify_handshake_error(
                    &e,
                    &rec_guard,
                    &sniffed,
                    &self.host,
                    self.cfg.port,
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
                self.tls_active = true;
                self.conn = Some(Connection::new(Box::new(tls_stream), redact));
                Ok(())
            }
        }
    }

    async fn banner(&mut self) -> Result<(), Failure> {
        let mut run = self.begin(Phase::Banner).await;
        let configured = self.cfg.timeouts.banner;
        let limit = self.limit(configured);
        // A plaintext session that hears nothing for a while asks, on a second connection,
        // whether the port speaks implicit TLS: such a port waits for our ClientHello as we
        // wait for its greeting, and "timeout" would hide the real cause.
        let plaintext = !matches!(self.cfg.security, Security::ImplicitTls) && !self.tls_active;
        let probe_target = self.peer.filter(|_| plaintext && limit > TLS_PROBE_AFTER);
        let (host, extra_ca) = (self.host.clone(), self.extra_ca.clone());
        let greeting = match self.conn.as_mut() {
            None => None,
            Some(conn) => {
                let read = conn.read_reply(limit);
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
                Some(loop {
                    tokio::select! {
                        reply = &mut read => break Greeting::Reply(reply),
                        found = &mut probe, if probing => {
                            probing = false;
                            if let Some((addr, version)) = found {
                                break Greeting::Tls(addr, version);
                            }
                        }
                    }
                })
            }
        };
        let result = match greeting {
            None => Err(Fail::new(
                FailureClass::TemporaryFailure,
                "no connection",
                "internal error: no connection",
            )),
            Some(Greeting::Tls(addr, version)) => {
                run.rec.detail.push(format!(
                    "no greeting within {TLS_PROBE_AFTER:?}; a second connection to {addr} \
                     completed a TLS handshake ({version})"
                ));
                Err(Fail::new(
                    FailureClass::ProtocolMismatch,
                    format!(
                        "port {} answers with TLS, not an SMTP greeting",
                        self.cfg.port
                    ),
                    implicit_tls_hint(self.cfg.port),
                ))
            }
            Some(Greeting::Reply(reply)) => match reply {
                Err(e) => Err(self.wire_fail(Phase::Banner, e, configured)),
                Ok(reply) => {
                    run.rec.reply = Some(reply.clone());
                    if reply.code == 220 {
                        Ok(())
                    } else {
                        Err(self.reply_fail(Phase::Banner, reply))
                    }
                }
            },
        };
        self.close(run, result).await
    }

    async fn ehlo(&mut self) -> Result<(), Failure> {
        let mut run = self.begin(Phase::Ehlo).await;
        let line = format!("EHLO {}", self.helo);
        let result = self
            .expect(&mut run.rec, &line, &line, self.cfg.timeouts.ehlo, &[250])
            .await;
        if let Ok(reply) = &result {
            self.capabilities = reply.lines.iter().skip(1).cloned().collect();
            run.rec
                .detail
                .push(format!("capabilities: {}", self.capabilities.join(", ")));
        }
        self.close(run, result.map(|_| ())).await
    }

    fn offers(&self, keyword: &str) -> bool {
        self.capabilities.iter().any(|c| {
            c.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }

    /// The AUTH mechanisms offered (upper case), from `AUTH ...` and old `AUTH=...` lines.
    fn auth_mechanisms(&self) -> Vec<String> {
        let mut mechs = Vec::new();
        for cap in &self.capabilities {
            let upper = cap.to_ascii_uppercase();
            let rest = upper
                .strip_prefix("AUTH ")
                .or_else(|| upper.strip_prefix("AUTH="));
            for m in rest.unwrap_or_default().split_whitespace() {
                if !mechs.iter().any(|x| x == m) {
                    mechs.push(m.to_owned());
                }
            }
        }
        mechs
    }

    async fn starttls(&mut self) -> Result<(), Failure> {
        match self.cfg.security {
            Security::None => {
                self.skip(Phase::StartTls, "security NONE").await;
                self.skip(Phase::TlsHandshake, "security NONE").await;
                return Ok(());
            }
            Security::ImplicitTls => {
                self.skip(Phase::StartTls, "implicit TLS is already up")
                    .await;
                return Ok(());
            }
            Security::StartTlsOpportunistic if !self.offers("STARTTLS") => {
                self.skip(
                    Phase::StartTls,
                    "not offered; continuing in clear (STARTTLS_OPPORTUNISTIC)",
                )
                .await;
                self.skip(Phase::TlsHandshake, "no STARTTLS").await;
                return Ok(());
            }
            Security::StartTlsRequired if !self.offers("STARTTLS") => {
                let run = self.begin(Phase::StartTls).await;
                let mut fail = Fail::new(
                    FailureClass::StartTlsUnavailable,
                    "the server does not offer STARTTLS",
                    "server offers no STARTTLS; STARTTLS_REQUIRED refuses to send in clear",
                );
                fail.can_quit = true;
                return self.close(run, Err(fail)).await;
            }
            Security::StartTlsOpportunistic | Security::StartTlsRequired => {}
        }
        let mut run = self.begin(Phase::StartTls).await;
        let result = self
            .expect(
                &mut run.rec,
                "STARTTLS",
                "STARTTLS",
                self.cfg.timeouts.starttls,
                &[220],
            )
            .await;
        self.close(run, result).await?;
        self.tls_handshake(false).await?;
        self.ehlo().await
    }

    async fn auth(&mut self) -> Result<(), Failure> {
        let Some(creds) = self.cfg.auth.clone() else {
            self.skip(Phase::Auth, "no credentials configured").await;
            return Ok(());
        };
        let mut run = self.begin(Phase::Auth).await;
        let mech = creds.mechanism.as_str();
        let offered = self.auth_mechanisms();
        if !offered.iter().any(|m| m == mech) {
            let hint = if offered.is_empty() {
                let clear = if self.tls_active {
                    ""
                } else {
                    " in clear; it may offer AUTH only after STARTTLS"
                };
                format!("server offers no AUTH{clear}")
            } else {
                format!(
                    "server does not offer AUTH {mech} (offers: {})",
                    offered.join(" ")
                )
            };
            let mut fail = Fail::new(
                FailureClass::AuthMechanismUnsupported,
                format!("AUTH {mech} is not offered"),
                hint,
            );
            fail.can_quit = true;
            return self.close(run, Err(fail)).await;
        }
        let timeout = self.cfg.timeouts.auth;
        let secret = creds.secret.expose();
        let user = creds.username.as_str();
        let result = match creds.mechanism {
            AuthMechanism::Plain => {
                let payload = B64.encode(format!("\0{user}\0{secret}"));
                self.add_redaction(&payload);
                self.expect(
                    &mut run.rec,
                    &format!("AUTH PLAIN {payload}"),
                    "AUTH PLAIN <redacted>",
                    timeout,
                    &[235],
                )
                .await
            }
            AuthMechanism::Login => {
                let pass = B64.encode(secret);
                self.add_redaction(&pass);
                match self
                    .expect(&mut run.rec, "AUTH LOGIN", "AUTH LOGIN", timeout, &[334])
                    .await
                {
                    Err(f) => Err(f),
                    Ok(_) => {
                        let u = B64.encode(user);
                        match self.expect(&mut run.rec, &u, &u, timeout, &[334]).await {
                            Err(f) => Err(f),
                            Ok(_) => {
                                self.expect(&mut run.rec, &pass, "<redacted>", timeout, &[235])
                                    .await
                            }
                        }
                    }
                }
            }
            AuthMechanism::XOAuth2 => {
                let payload = B64.encode(format!("user={user}\x01auth=Bearer {secret}\x01\x01"));
                self.add_redaction(&payload);
                match self
                    .command(
                        &mut run.rec,
                        &format!("AUTH XOAUTH2 {payload}"),
                        "AUTH XOAUTH2 <redacted>",
                        timeout,
                    )
                    .await
                {
                    Err(f) => Err(f),
                    Ok(r) if r.code == 235 => Ok(r),
                    Ok(r) if r.code == 334 => {
                        // The server sent a JSON error challenge; an empty line ends the exchange.
                        if let Some(json) = r.lines.first().and_then(|l| B64.decode(l.trim()).ok())
                        {
                            run.rec
                                .detail
                                .push(format!("XOAUTH2 error: {}", escape_preview(&json, 200)));
                        }
                        self.expect(&mut run.rec, "", "", timeout, &[235]).await
                    }
                    Ok(r) => Err(self.reply_fail(Phase::Auth, r)),
                }
            }
        };
        self.close(run, result.map(|_| ())).await
    }

    fn add_redaction(&mut self, s: &str) {
        self.redact.push(s.to_owned());
        if let Some(conn) = self.conn.as_mut() {
            conn.add_redaction(s);
        }
    }

    async fn mail_from(&mut self, message: &BuiltMessage) -> Result<(), Failure> {
        let mut run = self.begin(Phase::MailFrom).await;
        let line = format!("MAIL FROM:<{}>", message.envelope_from);
        let result = self
            .expect(
                &mut run.rec,
                &line,
                &line,
                self.cfg.timeouts.mail_from,
                &[250],
            )
            .await;
        self.close(run, result.map(|_| ())).await
    }

    async fn rcpt_to(&mut self, rcpt: &str) -> Result<(), Failure> {
        let mut run = self.begin(Phase::RcptTo).await;
        let line = format!("RCPT TO:<{rcpt}>");
        let result = self
            .expect(
                &mut run.rec,
                &line,
                &line,
                self.cfg.timeouts.rcpt_to,
                &[250, 251],
            )
            .await;
        self.close(run, result.map(|_| ())).await
    }

    async fn data(&mut self, message: &BuiltMessage) -> Result<(Reply, Option<String>), Failure> {
        let mut run = self.begin(Phase::Data).await;
        let result = self.data_inner(&mut run.rec, message).await;
        self.close(run, result).await
    }

    async fn data_inner(
        &mut self,
        rec: &mut PhaseRecord,
        message: &BuiltMessage,
    ) -> Result<(Reply, Option<String>), Fail> {
        let t = self.cfg.timeouts;
        let go = self
            .expect(rec, "DATA", "DATA", t.data_init, &[354])
            .await?;
        rec.detail.push(format!("DATA answered {go}"));
        let payload = data_payload(&message.bytes);
        rec.detail.push(format!(
            "sending {} bytes (message {})",
            payload.len(),
            message.message_id
        ));
        tracing::debug!(target: "mailplane::smtp::wire", "C: <{} bytes of message data>", payload.len());
        let per_chunk = t.data_block;
        let total = self.limit(t.data_block.max(t.data_end));
        let Some(conn) = self.conn.as_mut() else {
            return Err(Fail::new(
                FailureClass::TemporaryFailure,
                "no connection",
                "internal error: no connection",
            ));
        };
        if let Err(e) = conn.send_chunked(&payload, per_chunk, total).await {
            return Err(self.wire_fail(Phase::Data, e, per_chunk));
        }
        rec.commands.push(".".to_owned());
        let limit = self.limit(t.data_end);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Fail::new(
                FailureClass::TemporaryFailure,
                "no connection",
                "internal error: no connection",
            ));
        };
        match conn.read_reply(limit).await {
            Err(e) => {
                let mut fail = self.wire_fail(Phase::Data, e, t.data_end);
                if fail.class == FailureClass::Timeout && !self.deadline_passed() {
                    fail.hint = format!(
                        "the server did not confirm the message within {:?}; it may still deliver it (check its queue)",
                        t.data_end
                    );
                }
                Err(fail)
            }
            Ok(reply) => {
                rec.reply = Some(reply.clone());
                if reply.code == 250 {
                    let id = parse_queue_id(&reply);
                    if let Some(id) = &id {
                        rec.detail.push(format!("queue id {id}"));
                    }
                    Ok((reply, id))
                } else {
                    Err(self.reply_fail(Phase::Data, reply))
                }
            }
        }
    }

    /// Sends `QUIT` (recorded; its failure does not change the outcome) and closes.
    async fn quit(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let mut run = self.begin(Phase::Quit).await;
        let status = if self.deadline_passed() {
            run.rec
                .detail
                .push("skipped: overall deadline reached".to_owned());
            PhaseStatus::Skipped
        } else {
            match self
                .command(&mut run.rec, "QUIT", "QUIT", self.cfg.timeouts.quit)
                .await
            {
                Ok(r) if r.code == 221 => PhaseStatus::Ok,
                Ok(r) => {
                    run.rec.detail.push(format!("unexpected reply {r}"));
                    PhaseStatus::Failed
                }
                Err(f) => {
                    run.rec.detail.push(f.message);
                    PhaseStatus::Failed
                }
            }
        };
        if let Some(mut conn) = self.conn.take() {
            conn.shutdown().await;
        }
        self.finish(run, status).await;
    }
}

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

/// Whether `addr` completes a TLS handshake. Certificates are not judged here: any answer in
/// TLS proves the port speaks implicit TLS. Returns the negotiated protocol version.
async fn probe_implicit_tls(
    host: String,
    extra_ca: Vec<CertificateDer<'static>>,
    addr: SocketAddr,
) -> Option<String> {
    let (config, _) = tls::client_config(true, &extra_ca).ok()?;
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
