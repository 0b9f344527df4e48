//! Network connectors, server side, with agents played by this test over real mTLS streams:
//! CRUD and deletion rules, one-time enrollment tokens, certificate authentication,
//! revocation within 3 s, dispatch to the least-loaded replica, failover before DATA, no
//! re-send after DATA, and the offline wait. Enrollment, streams and revocation are in
//! [`enrollment`], test jobs and failover in [`dispatch`], messages through agents in
//! [`delivery`], several streams of one agent in [`streams`], a real agent's own metrics in
//! [`agent_metrics`]; the fake agent and helpers are here.

pub(crate) mod agent_metrics;
mod delivery;
mod dispatch;
mod enrollment;
mod listener;
mod renewal;
mod replicas;
mod streams;

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account};
use pb::agent_service_client::AgentServiceClient;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

async fn server() -> TestServer {
    server_on(Backend::Sqlite).await
}

async fn server_on(backend: Backend) -> TestServer {
    TestServer::start_configured(backend, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.connector_wait = Duration::from_secs(2);
    })
    .await
}

async fn token(server: &TestServer, connector: &str) -> pb::EnrollmentToken {
    server
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner()
}

fn tls(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost")
}

async fn channel(server: &TestServer, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(format!("https://{}", server.agent_addr.unwrap()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An enrolled agent's identity.
#[derive(Debug, Clone)]
struct Enrolled {
    name: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent-host");
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), key.serialize_pem())
}

async fn enroll(
    server: &TestServer,
    token: &pb::EnrollmentToken,
) -> Result<Enrolled, tonic::Status> {
    let (csr_pem, key_pem) = csr();
    let mut client = AgentServiceClient::new(channel(server, tls(&token.server_ca_pem)).await);
    let resp = client
        .enroll(pb::EnrollRequest {
            token: token.token.clone(),
            csr_pem,
            hostname: "agent-host".into(),
            version: "test".into(),
        })
        .await?
        .into_inner();
    Ok(Enrolled {
        name: resp.agent,
        ca_pem: resp.ca_certificate_pem,
        cert_pem: resp.certificate_pem,
        key_pem,
    })
}

/// Renews `who`'s certificate over mTLS with its current one: the same agent with the new
/// certificate.
async fn renew(server: &TestServer, who: &Enrolled) -> Result<Enrolled, tonic::Status> {
    let tls_id = tls(&who.ca_pem).identity(Identity::from_pem(&who.cert_pem, &who.key_pem));
    let mut client = AgentServiceClient::new(channel(server, tls_id).await);
    let key = rcgen::KeyPair::from_pem(&who.key_pem).unwrap();
    let csr_pem = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renewed = client
        .renew_certificate(pb::RenewCertificateRequest { csr_pem })
        .await?
        .into_inner();
    Ok(Enrolled {
        name: who.name.clone(),
        ca_pem: who.ca_pem.clone(),
        cert_pem: renewed.certificate_pem,
        key_pem: who.key_pem.clone(),
    })
}

/// The audit events about `resource` (empty: all), newest first.
async fn audit_events(server: &TestServer, resource: &str) -> Vec<pb::AuditEvent> {
    pb::audit_service_client::AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest {
            resource: resource.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// An agent played by the test: its stream up and its stream down.
struct FakeAgent {
    up: tokio::sync::mpsc::Sender<pb::ConnectRequest>,
    down: tonic::Streaming<pb::ConnectResponse>,
}

impl FakeAgent {
    async fn connect(server: &TestServer, who: &Enrolled) -> Result<Self, tonic::Status> {
        Self::connect_stream(server, who, 0).await
    }

    /// Opens the agent's stream number `stream` (`AgentHello.stream`).
    async fn connect_stream(
        server: &TestServer,
        who: &Enrolled,
        stream: u32,
    ) -> Result<Self, tonic::Status> {
        let hello = pb::AgentHello {
            hostname: "agent-host".into(),
            version: "test".into(),
            max_concurrent_jobs: 4,
            stream,
        };
        Self::connect_hello(server, who, hello).await
    }

    /// Opens a stream that starts with `hello`.
    async fn connect_hello(
        server: &TestServer,
        who: &Enrolled,
        hello: pb::AgentHello,
    ) -> Result<Self, tonic::Status> {
        let tls = tls(&who.ca_pem).identity(Identity::from_pem(&who.cert_pem, &who.key_pem));
        let mut client = AgentServiceClient::new(channel(server, tls).await);
        let (up, rx) = tokio::sync::mpsc::channel(16);
        up.send(pb::ConnectRequest {
            event: Some(pb::connect_request::Event::Hello(hello)),
        })
        .await
        .unwrap();
        let down = client
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { up, down })
    }

    async fn next_job(&mut self) -> pb::SmtpJob {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.down.message())
                .await
                .expect("a job within 10 s")
                .expect("the stream is healthy")
                .expect("the stream is open");
            if let Some(pb::connect_response::Event::Job(job)) = msg.event {
                return job;
            }
        }
    }

    /// Sends a heartbeat (the server checks the agent's standing when it reads one).
    async fn heartbeat(&self) {
        self.up
            .send(pb::ConnectRequest {
                event: Some(pb::connect_request::Event::Heartbeat(
                    pb::AgentHeartbeat::default(),
                )),
            })
            .await
            .unwrap();
    }

    async fn update(&self, job: &str, update: pb::job_update::Update) {
        self.up
            .send(pb::ConnectRequest {
                event: Some(pb::connect_request::Event::JobUpdate(pb::JobUpdate {
                    job_id: job.into(),
                    update: Some(update),
                })),
            })
            .await
            .unwrap();
    }

    /// Closes the stream in order and waits for the server to close its side: every update
    /// sent before has been read by then.
    async fn hang_up(self) {
        let Self { up, mut down } = self;
        drop(up);
        while let Ok(Some(_)) = down.message().await {}
    }

    async fn finish_ok(&self, job: &str) {
        self.update(
            job,
            pb::job_update::Update::PhaseStarted(pb::Phase::Data.into()),
        )
        .await;
        self.update(
            job,
            pb::job_update::Update::PhaseFinished(pb::PhaseResult {
                phase: pb::Phase::Data.into(),
                status: pb::PhaseStatus::Ok.into(),
                reply_code: 250,
                reply_text: "Ok: queued as ABC123".into(),
                ..Default::default()
            }),
        )
        .await;
        self.update(
            job,
            pb::job_update::Update::Finished(pb::JobOutcome {
                succeeded: true,
                result: Some(pb::TestResult {
                    queue_id: "ABC123".into(),
                    message: "accepted".into(),
                    ..Default::default()
                }),
                capabilities: vec!["PIPELINING".into()],
                delivery: None,
            }),
        )
        .await;
    }
}

async fn connector_account(server: &TestServer, name: &str) -> (pb::Connector, pb::SmtpAccount) {
    let connector = server.create_connector(name).await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "relay".into(),
                username: "relay-user".into(),
                secret: "job-secret-9c1f".into(),
                allowed_destinations: vec!["relay.internal.example".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "relay.internal.example".into(),
            use_network_connector: true,
            network_connector: connector.name.clone(),
            use_authentication: true,
            credential: cred.name,
            ..account(&format!("{name} account"))
        },
    )
    .await;
    (connector, acct)
}

async fn start_test(server: &TestServer, account: &str) -> String {
    server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: account.into(),
            test: Some(pb::SmtpTest {
                to: "ops@example.com".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name
}

async fn finished(server: &TestServer, name: &str) -> pb::SmtpTest {
    mailplane_tests::watch_to_end(&mut server.tests(), name)
        .await
        .1
}

fn class(t: &pb::SmtpTest) -> pb::FailureClass {
    pb::FailureClass::try_from(t.result.as_ref().map_or(0, |r| r.failure_class)).unwrap()
}
