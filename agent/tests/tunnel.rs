//! The agent against a fake `AgentService` in this process (tonic over TLS on
//! 127.0.0.1:0, with a CA made here that also signs the agent's CSR): enrollment, the
//! stream, jobs against scripted SMTP peers, the allowlist, reconnection, dead-link
//! detection, draining, and that no secret reaches a log line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mailplane_agent::tunnel::BackoffPolicy;
use mailplane_agent::{AgentConfig, AgentError, EnrollError, RpcError, Token};
use mailplane_proto::v1 as pb;
use mailplane_smtp as smtp;
use mailplane_smtp::proto as convert;
use mailplane_testkit::peer::{self, Step};
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::connect_request::Event;
use pb::connect_response::Event as ServerEvent;
use pb::job_update::Update;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "enroll-TOKEN-8c1f3b2a9d";
const SECRET: &str = "job-SECRET-pa55w0rd-77";
const AGENT: &str = "connectors/1/agents/a1";

// ---------------------------------------------------------------------------------------
// Captured logs.

#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global subscriber that keeps every line at DEBUG and above.
fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuffer(Arc::new(Mutex::new(Vec::new())));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------
// The fake server.

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap();
        let issuer = Issuer::new(params, key);
        let server_key = KeyPair::generate().unwrap();
        let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        sp.distinguished_name.push(DnType::CommonName, "localhost");
        let server_cert = sp.signed_by(&server_key, &issuer).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    fn sign_csr(&self, csr_pem: &str) -> Result<String, Status> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Status::invalid_argument(format!("bad CSR: {e}")))?;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(csr.signed_by(&self.issuer).unwrap().pem())
    }
}

/// One `Connect` stream, as the test sees it.
struct Conn {
    inbound: Streaming<pb::ConnectRequest>,
    out: mpsc::Sender<Result<pb::ConnectResponse, Status>>,
}

impl Conn {
    async fn next(&mut self) -> Option<Event> {
        self.inbound
            .message()
            .await
            .unwrap()
            .map(|m| m.event.unwrap())
    }

    async fn expect_hello(&mut self) -> pb::AgentHello {
        match self.next().await {
            Some(Event::Hello(h)) => h,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    async fn send_job(&self, job: pb::SmtpJob) {
        let event = Some(ServerEvent::Job(job));
        self.out
            .send(Ok(pb::ConnectResponse { event }))
            .await
            .unwrap();
    }

    /// Collects the updates of `job_id` until its outcome (skipping heartbeats).
    async fn job_updates(&mut self, job_id: &str) -> (Vec<Update>, pb::JobOutcome) {
        let mut updates = Vec::new();
        loop {
            match self.next().await {
                Some(Event::JobUpdate(u)) => {
                    assert_eq!(u.job_id, job_id);
                    match u.update.unwrap() {
                        Update::Finished(outcome) => return (updates, outcome),
                        other => updates.push(other),
                    }
                }
                Some(Event::Heartbeat(_)) => {}
                other => panic!("expected updates of {job_id}, got {other:?}"),
            }
        }
    }
}

struct Fake {
    pki: Arc<Pki>,
    conns: mpsc::UnboundedSender<Conn>,
    enrolls: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl AgentService for Fake {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = request.into_inner();
        if r.token != TOKEN {
            return Err(Status::unauthenticated("unknown enrollment token"));
        }
        assert!(!r.hostname.is_empty() && !r.version.is_empty());
        self.enrolls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::EnrollResponse {
            agent: AGENT.to_owned(),
            certificate_pem: self.pki.sign_csr(&r.csr_pem)?,
            ca_certificate_pem: self.pki.ca_pem.clone(),
            expire_time: None,
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        if request.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("no client certificate"));
        }
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: self.pki.sign_csr(&request.into_inner().csr_pem)?,
            expire_time: None,
        }))
    }

    type ConnectStream = ReceiverStream<Result<pb::ConnectResponse, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if request.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("no client certificate"));
        }
        let (out, rx) = mpsc::channel(64);
        let _ = self.conns.send(Conn {
            inbound: request.into_inner(),
            out,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    config: AgentConfig,
    conns: mpsc::UnboundedReceiver<Conn>,
    enrolls: Arc<AtomicU32>,
}

impl Harness {
    async fn start(allowed: Vec<String>) -> Self {
        logs();
        let pki = Arc::new(Pki::new());
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("server-ca.pem");
        std::fs::write(&ca_path, &pki.ca_pem).unwrap();
        let (conns_tx, conns) = mpsc::unbounded_channel();
        let enrolls = Arc::new(AtomicU32::new(0));
        let fake = Fake {
            pki: pki.clone(),
            conns: conns_tx,
            enrolls: enrolls.clone(),
        };
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &pki.server_cert_pem,
                &pki.server_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem))
            .client_auth_optional(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AgentServiceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);

        let mut config = AgentConfig::new(
            format!("https://127.0.0.1:{port}"),
            ca_path,
            dir.path().join("state"),
            allowed,
        );
        config.server_name = Some("localhost".to_owned());
        config.enrollment_token = Some(Token::new(TOKEN));
        config.max_concurrent_jobs = 3;
        config.drain_timeout = Duration::from_secs(20);
        config.backoff = BackoffPolicy {
            initial: Duration::from_millis(20),
            multiplier: 1.6,
            jitter: 0.0,
            max: Duration::from_millis(100),
            reset_after: Duration::from_secs(10),
        };
        Harness {
            _dir: dir,
            config,
            conns,
            enrolls,
        }
    }

    fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    async fn conn(&mut self) -> Conn {
        self.conns.recv().await.unwrap()
    }

    /// Runs the agent in a task; the returned sender stops it.
    fn spawn_run(
        &self,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), AgentError>>,
    ) {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = self.config.clone();
        let handle = tokio::spawn(mailplane_agent::run(config, async move {
            let _ = stopped.await;
        }));
        (stop, handle)
    }
}

fn job(id: &str, host: &str, port: u16, stop_after: smtp::StopAfter) -> pb::SmtpJob {
    let mut c = smtp::SessionConfig::new(host, port, smtp::Security::None);
    c.helo_name = Some("agent.example.org".into());
    c.stop_after = stop_after;
    c.timeouts = smtp::Timeouts::all(Duration::from_secs(10));
    c.auth = Some(smtp::Credentials::new(
        smtp::AuthMechanism::Plain,
        "alice",
        smtp::Secret::new(SECRET),
    ));
    c.message = Some(smtp::MessageSpec {
        sender: "alice@example.org".into(),
        recipients: vec!["bob@example.net".into()],
        subject: "via the agent".into(),
        body: "hello".into(),
        plain_text_only: true,
        ..smtp::MessageSpec::default()
    });
    convert::job_from_config(id, &c)
}

fn class(outcome: &pb::JobOutcome) -> pb::FailureClass {
    outcome.result.as_ref().unwrap().failure_class()
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn enroll_writes_the_state_with_a_private_key() {
    let h = Harness::start(vec!["smtp.example.org".into()]).await;

    let mut wrong = h.config.clone();
    wrong.enrollment_token = Some(Token::new("not-the-token"));
    let err = mailplane_agent::enroll(&wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Enroll(EnrollError::Rpc(RpcError {
                code: tonic::Code::Unauthenticated,
                ..
            }))
        ),
        "{err}"
    );
    assert!(!h.state_dir().join("key.pem").exists());

    let enrolled = mailplane_agent::enroll(&h.config).await.unwrap();
    assert_eq!(enrolled.agent, AGENT);
    let mode = |name: &str| {
        std::fs::metadata(h.state_dir().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("key.pem"), 0o600);
    let st = mailplane_agent::state::load(h.state_dir())
        .unwrap()
        .unwrap();
    assert_eq!(st.agent, AGENT);
    assert!(st.cert_pem.contains("BEGIN CERTIFICATE"));
    assert!(st.ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(st.key_pem.expose().contains("PRIVATE KEY"));

    // Enrolling twice would replace the identity: refused before calling the server.
    let again = mailplane_agent::enroll(&h.config).await.unwrap_err();
    assert!(
        matches!(again, AgentError::Enroll(EnrollError::State(_))),
        "{again}"
    );
    assert_eq!(h.enrolls.load(Ordering::SeqCst), 1);

    // Renewal over mTLS replaces cert.pem and keeps the key.
    mailplane_agent::enroll::renew(&h.config).await.unwrap();
    let renewed = mailplane_agent::state::load(h.state_dir())
        .unwrap()
        .unwrap();
    assert_ne!(renewed.cert_pem, st.cert_pem);
    assert_eq!(renewed.key_pem, st.key_pem);
    assert_eq!(mode("key.pem"), 0o600);

    // No token, no state: a clear error.
    let mut fresh = h.config.clone();
    fresh.state_dir = PathBuf::from(h.state_dir()).with_file_name("other");
    fresh.enrollment_token = None;
    let err = mailplane_agent::run(fresh, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mailplane-agent enroll"), "{err}");

    assert!(!log_text().contains(TOKEN));
}

#[tokio::test]
async fn refuses_to_run_without_allowed_destinations() {
    let h = Harness::start(Vec::new()).await;
    let err = mailplane_agent::run(h.config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Allowlist(_)), "{err}");
    assert!(!h.state_dir().exists(), "nothing happens before the check");
}

#[tokio::test]
async fn runs_jobs_reconnects_and_drains() {
    // A scripted relay for a delivery with AUTH.
    let (smtp_port, peer_log) = peer::start(vec![
        Step::Say("220 relay.test ESMTP"),
        Step::Expect("EHLO agent.example.org"),
        Step::Say("250-relay.test"),
        Step::Say("250 AUTH PLAIN LOGIN"),
        Step::Expect("AUTH PLAIN "),
        Step::Say("235 2.7.0 ok"),
        Step::Expect("MAIL FROM:<alice@example.org>"),
        Step::Say("250 ok"),
        Step::Expect("RCPT TO:<bob@example.net>"),
        Step::Say("250 ok"),
        Step::Expect("DATA"),
        Step::Say("354 go"),
        Step::ReadData,
        Step::Say("250 2.0.0 Ok: queued as ABC123"),
        Step::Expect("QUIT"),
        Step::Say("221 bye"),
    ])
    .await;
    let refused_port = closed_port();
    // A listener outside the allowlist: it must never see a connection.
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let forbidden_port = forbidden.local_addr().unwrap().port();
    // A relay that waits before greeting, to have a job in flight while draining.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let (release, released) = oneshot::channel::<()>();
    let slow_peer = tokio::spawn(async move {
        let (tcp, _) = slow.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        released.await.unwrap();
        io.get_mut().write_all(b"220 slow.test\r\n").await.unwrap();
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("EHLO"), "{line}");
        io.get_mut().write_all(b"250 slow.test\r\n").await.unwrap();
        line.clear();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("QUIT"), "{line}");
        io.get_mut().write_all(b"221 bye\r\n").await.unwrap();
    });

    let mut h = Harness::start(vec![
        format!("127.0.0.1:{smtp_port}"),
        format!("127.0.0.0/8:{refused_port}"),
        format!("localhost:{slow_port}"),
    ])
    .await;
    let (stop, agent) = h.spawn_run();

    // The first start enrolls with the token, then connects with the new certificate.
    let mut conn = h.conn().await;
    let hello = conn.expect_hello().await;
    assert_eq!(h.enrolls.load(Ordering::SeqCst), 1);
    assert_eq!(hello.max_concurrent_jobs, 3);
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert!(!hello.hostname.is_empty());
    assert!(h.state_dir().join("key.pem").exists());

    // A delivery through the scripted relay: live phases, then the outcome.
    conn.send_job(job(
        "job-ok",
        "127.0.0.1",
        smtp_port,
        smtp::StopAfter::Delivery,
    ))
    .await;
    let (updates, outcome) = conn.job_updates("job-ok").await;
    assert!(outcome.succeeded, "{outcome:?}");
    let result = outcome.result.as_ref().unwrap();
    assert_eq!(result.message, "accepted: 250 Ok: queued as ABC123");
    assert_eq!(result.queue_id, "ABC123");
    assert!(result.message_id.contains('@'));
    assert!(outcome.capabilities.iter().any(|c| c.starts_with("AUTH")));
    let started: Vec<pb::Phase> = updates
        .iter()
        .filter_map(|u| match u {
            Update::PhaseStarted(p) => pb::Phase::try_from(*p).ok(),
            _ => None,
        })
        .collect();
    let finished: Vec<&pb::PhaseResult> = updates
        .iter()
        .filter_map(|u| match u {
            Update::PhaseFinished(r) => Some(r),
            _ => None,
        })
        .collect();
    for phase in [
        pb::Phase::DnsResolve,
        pb::Phase::TcpConnect,
        pb::Phase::Banner,
        pb::Phase::Ehlo,
        pb::Phase::Auth,
        pb::Phase::MailFrom,
        pb::Phase::RcptTo,
        pb::Phase::Data,
        pb::Phase::Quit,
    ] {
        assert!(
            started.contains(&phase),
            "{phase:?} not started: {started:?}"
        );
        assert!(
            finished.iter().any(|r| r.phase() == phase),
            "{phase:?} not finished"
        );
    }
    let auth = finished
        .iter()
        .find(|r| r.phase() == pb::Phase::Auth)
        .unwrap();
    assert_eq!(auth.reply_code, 235);
    assert!(auth.commands.iter().all(|c| !c.contains(SECRET)));
    let log = peer_log.await.unwrap();
    assert!(log.error.is_none(), "{:?}", log.error);

    // Nothing listens on an allowed port: CONNECTION_REFUSED.
    conn.send_job(job(
        "job-refused",
        "127.0.0.1",
        refused_port,
        smtp::StopAfter::Connect,
    ))
    .await;
    let (_, outcome) = conn.job_updates("job-refused").await;
    assert!(!outcome.succeeded);
    assert_eq!(class(&outcome), pb::FailureClass::ConnectionRefused);

    // Outside the allowlist: DESTINATION_NOT_ALLOWED, and no connection at all.
    conn.send_job(job(
        "job-forbidden",
        "127.0.0.1",
        forbidden_port,
        smtp::StopAfter::Connect,
    ))
    .await;
    let (updates, outcome) = conn.job_updates("job-forbidden").await;
    assert_eq!(class(&outcome), pb::FailureClass::DestinationNotAllowed);
    assert_eq!(
        outcome.result.as_ref().unwrap().failed_phase(),
        pb::Phase::TcpConnect
    );
    assert!(updates.iter().any(|u| matches!(
        u,
        Update::PhaseFinished(r) if r.detail.iter().any(|d| d.contains("allowed_destinations"))
    )));
    let accepted = forbidden.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the forbidden listener saw a connection: {accepted:?}"
    );

    // The server drops the stream: the agent reconnects with a second hello.
    drop(conn);
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    assert!(log_text().contains("reconnecting in"));

    // Shutdown with a job in flight: AgentDraining first, the job still finishes, then
    // the agent closes the stream and `run` returns Ok.
    conn.send_job(job(
        "job-slow",
        "localhost",
        slow_port,
        smtp::StopAfter::Connect,
    ))
    .await;
    match conn.next().await {
        Some(Event::JobUpdate(u)) => assert_eq!(u.job_id, "job-slow"),
        other => panic!("expected the slow job to start, got {other:?}"),
    }
    stop.send(()).unwrap();
    loop {
        match conn.next().await {
            Some(Event::Draining(_)) => break,
            Some(Event::JobUpdate(u)) => {
                assert!(!matches!(u.update, Some(Update::Finished(_))), "{u:?}")
            }
            Some(Event::Heartbeat(_)) => {}
            other => panic!("expected AgentDraining, got {other:?}"),
        }
    }
    release.send(()).unwrap();
    let (_, outcome) = conn.job_updates("job-slow").await;
    assert!(outcome.succeeded, "{outcome:?}");
    assert_eq!(
        outcome.result.as_ref().unwrap().message,
        "stopped after Connect as asked"
    );
    // The agent closes its side; the server then closes its own.
    while let Some(event) = conn.next().await {
        assert!(matches!(event, Event::Heartbeat(_)), "{event:?}");
    }
    drop(conn);
    agent.await.unwrap().unwrap();
    slow_peer.await.unwrap();

    let text = log_text();
    assert!(text.contains("job finished"), "logs are not captured");
    assert!(!text.contains(SECRET), "the job's secret is in the logs");
    assert!(!text.contains(TOKEN), "the enrollment token is in the logs");
}

#[tokio::test]
async fn a_silent_server_is_a_dead_link() {
    let mut h = Harness::start(vec!["smtp.example.org:25".into()]).await;
    h.config.heartbeat_interval = Duration::from_millis(100);
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    // The server says nothing: the agent keeps sending heartbeats, then gives up on the
    // link after three intervals and connects again.
    match conn.next().await {
        Some(Event::Heartbeat(hb)) => assert_eq!(hb.jobs_in_flight, 0),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    let mut second = h.conn().await;
    second.expect_hello().await;
    // Server heartbeats keep the link alive and are not answered with anything else.
    second
        .out
        .send(Ok(pb::ConnectResponse {
            event: Some(ServerEvent::Heartbeat(pb::ServerHeartbeat {})),
        }))
        .await
        .unwrap();
    // Stop once the stream is fully up (the agent's first heartbeat says so).
    assert!(matches!(second.next().await, Some(Event::Heartbeat(_))));
    stop.send(()).unwrap();
    loop {
        match second.next().await {
            Some(Event::Draining(_)) => break,
            Some(Event::Heartbeat(_)) => {}
            other => panic!("expected AgentDraining, got {other:?}\n{}", log_text()),
        }
    }
    while second.next().await.is_some() {}
    drop((conn, second));
    agent.await.unwrap().unwrap();
    let _ = std::io::stderr().flush();
}
