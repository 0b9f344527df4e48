//! The agent against a fake `AgentService` in this process (tonic over TLS on
//! 127.0.0.1:0, with a CA made here that also signs the agent's CSR): enrollment, the
//! stream, jobs against scripted SMTP peers, the allowlist, reconnection, dead-link
//! detection, draining, and that no secret reaches a log line. Enrollment tests are in
//! `tunnel/enrollment.rs`, the stream and jobs in `tunnel/jobs.rs`, delivery jobs in
//! `tunnel/deliveries.rs`, several servers and connections in `tunnel/servers.rs`, the metrics
//! listener in `tunnel/metrics.rs`; the fake server is here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "tunnel/deliveries.rs"]
mod deliveries;
#[path = "tunnel/enrollment.rs"]
mod enrollment;
#[path = "tunnel/jobs.rs"]
mod jobs;
#[path = "tunnel/metrics.rs"]
mod metrics;
#[path = "tunnel/servers.rs"]
mod servers;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    /// Refuse new streams (a replica that is up but not taking agents).
    refuse: Arc<AtomicBool>,
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
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Status::unavailable("this fake server refuses streams"));
        }
        let (out, rx) = mpsc::channel(64);
        let _ = self.conns.send(Conn {
            inbound: request.into_inner(),
            out,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One running fake server.
struct FakeServer {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    enrolls: Arc<AtomicU32>,
    refuse: Arc<AtomicBool>,
}

impl FakeServer {
    /// Serves the fake `AgentService` with `pki`'s certificates on `listener`.
    fn serve(pki: &Arc<Pki>, listener: tokio::net::TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let (conns_tx, conns) = mpsc::unbounded_channel();
        let enrolls = Arc::new(AtomicU32::new(0));
        let refuse = Arc::new(AtomicBool::new(false));
        let fake = Fake {
            pki: pki.clone(),
            conns: conns_tx,
            enrolls: enrolls.clone(),
            refuse: refuse.clone(),
        };
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &pki.server_cert_pem,
                &pki.server_key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem))
            .client_auth_optional(true);
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AgentServiceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        FakeServer {
            url: format!("https://127.0.0.1:{port}"),
            conns,
            enrolls,
            refuse,
        }
    }

    async fn conn(&mut self) -> Conn {
        self.conns.recv().await.unwrap()
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    pki: Arc<Pki>,
    config: AgentConfig,
    conns: mpsc::UnboundedReceiver<Conn>,
    enrolls: Arc<AtomicU32>,
    refuse: Arc<AtomicBool>,
}

impl Harness {
    async fn start(allowed: Vec<String>) -> Self {
        logs();
        let pki = Arc::new(Pki::new());
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("server-ca.pem");
        std::fs::write(&ca_path, &pki.ca_pem).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let first = FakeServer::serve(&pki, listener);

        let mut config = AgentConfig::new(first.url, ca_path, dir.path().join("state"), allowed);
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
            pki,
            config,
            conns: first.conns,
            enrolls: first.enrolls,
            refuse: first.refuse,
        }
    }

    /// Another fake server with the same certificates (another replica), on `listener`.
    fn serve_another(&self, listener: tokio::net::TcpListener) -> FakeServer {
        FakeServer::serve(&self.pki, listener)
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
    // The scripted relays speak in clear.
    c.allow_plaintext_auth = true;
    c.stop_after = stop_after;
    c.timeouts = smtp::Timeouts::all(Duration::from_secs(10));
    c.auth = Some(
        smtp::Credentials::new(
            smtp::AuthMechanism::Plain,
            "alice",
            smtp::Secret::new(SECRET),
        )
        .allowed_to([c.host.parse().unwrap()]),
    );
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
