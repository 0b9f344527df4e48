//! Network connectors, server side, with agents played by this test over real mTLS streams:
//! CRUD and deletion rules, one-time enrollment tokens, certificate authentication,
//! revocation within 3 s, dispatch to the least-loaded replica, failover before DATA, no
//! re-send after DATA, and the offline wait.

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
#[derive(Debug)]
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

/// An agent played by the test: its stream up and its stream down.
struct FakeAgent {
    up: tokio::sync::mpsc::Sender<pb::ConnectRequest>,
    down: tonic::Streaming<pb::ConnectResponse>,
}

impl FakeAgent {
    async fn connect(server: &TestServer, who: &Enrolled) -> Result<Self, tonic::Status> {
        let tls = tls(&who.ca_pem).identity(Identity::from_pem(&who.cert_pem, &who.key_pem));
        let mut client = AgentServiceClient::new(channel(server, tls).await);
        let (up, rx) = tokio::sync::mpsc::channel(16);
        up.send(pb::ConnectRequest {
            event: Some(pb::connect_request::Event::Hello(pb::AgentHello {
                hostname: "agent-host".into(),
                version: "test".into(),
                max_concurrent_jobs: 4,
            })),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_crud_and_deletion_rules() {
    connector_crud_and_deletion_rules_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_crud_and_deletion_rules_postgres() {
    connector_crud_and_deletion_rules_on(Backend::Postgres).await;
}

async fn connector_crud_and_deletion_rules_on(backend: Backend) {
    let server = server_on(backend).await;
    let mut c = server.connectors();
    let dc = server.create_connector("Datacenter B").await;
    assert_eq!(dc.name, format!("connectors/{}", dc.id));
    assert!(dc.agents.is_empty());
    let err = c
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: "datacenter b".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = c
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let updated = c
        .update_connector(pb::UpdateConnectorRequest {
            connector: Some(pb::Connector {
                name: dc.name.clone(),
                description: "relays behind the DMZ".into(),
                etag: dc.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.description, "relays behind the DMZ");
    let list = c
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.connectors.len(), 1);

    let mut a = server.accounts();
    let user = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: dc.name.clone(),
            ..account("Behind DMZ")
        },
    )
    .await;
    let err = c
        .delete_connector(pb::DeleteConnectorRequest {
            name: dc.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&user.name) && err.message().contains("Behind DMZ"),
        "{}",
        err.message()
    );
    a.delete_account(pb::DeleteAccountRequest {
        name: user.name,
        etag: String::new(),
    })
    .await
    .unwrap();
    c.delete_connector(pb::DeleteConnectorRequest {
        name: dc.name.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.get_connector(pb::GetConnectorRequest { name: dc.name })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_are_hashed_single_use_and_expire() {
    let server = server().await;
    let dc = server.create_connector("Enroll").await;
    let t = token(&server, &dc.name).await;
    assert!(t.token.starts_with("mpe_") && t.token.len() > 40);
    assert!(t.server_ca_pem.contains("BEGIN CERTIFICATE"));

    // A malformed CSR is refused without using the token up.
    let mut client = AgentServiceClient::new(channel(&server, tls(&t.server_ca_pem)).await);
    let err = client
        .enroll(pb::EnrollRequest {
            token: t.token.clone(),
            csr_pem: "garbage".into(),
            hostname: "h".into(),
            version: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let agent = enroll(&server, &t).await.unwrap();
    assert!(agent.name.starts_with(&format!("{}/agents/", dc.name)));
    assert!(agent.cert_pem.contains("BEGIN CERTIFICATE"));
    let again = enroll(&server, &t).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );
    let bogus = pb::EnrollmentToken {
        token: "mpe_not-a-token".into(),
        ..t.clone()
    };
    assert_eq!(
        enroll(&server, &bogus).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Expire a fresh token in the database: refused.
    let expiring = token(&server, &dc.name).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE enrollment_tokens SET expire_time = 0 WHERE used_time IS NULL")
        .execute(&pool)
        .await
        .unwrap();
    let err = enroll(&server, &expiring).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
    pool.close().await;

    // Tokens are stored hashed: neither appears in the database.
    for file in std::fs::read_dir(server.data_dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("mailplane.db") {
            let bytes = std::fs::read(&path).unwrap();
            for tok in [&t.token, &expiring.token] {
                assert!(
                    !bytes.windows(tok.len()).any(|w| w == tok.as_bytes()),
                    "a token is stored in clear"
                );
            }
        }
    }
    let got = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.agents.len(), 1);
    assert_eq!(got.agents[0].status, i32::from(pb::AgentStatus::Offline));
    assert!(got.agents[0].certificate_expire_time.is_some());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_certificate_and_revocation_closes_them_within_3s() {
    streams_need_a_certificate_and_revocation_closes_them_within_3s_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_certificate_and_revocation_closes_them_within_3s_postgres() {
    streams_need_a_certificate_and_revocation_closes_them_within_3s_on(Backend::Postgres).await;
}

async fn streams_need_a_certificate_and_revocation_closes_them_within_3s_on(backend: Backend) {
    let server = server_on(backend).await;
    let dc = server.create_connector("Revocable").await;
    let t = token(&server, &dc.name).await;
    let who = enroll(&server, &t).await.unwrap();

    // Without a client certificate, only Enroll answers.
    let mut anonymous = AgentServiceClient::new(channel(&server, tls(&t.server_ca_pem)).await);
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::ConnectRequest>(1);
    let err = anonymous
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut agent = FakeAgent::connect(&server, &who).await.unwrap();
    let got = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.agents[0].status, i32::from(pb::AgentStatus::Online));
    assert_eq!(got.agents[0].hostname, "agent-host");
    assert!(got.agents[0].connected_since.is_some());

    let revoked_at = Instant::now();
    let revoked = server
        .connectors()
        .revoke_agent(pb::RevokeAgentRequest {
            name: who.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, i32::from(pb::AgentStatus::Revoked));
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match agent.down.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the live stream closes within 3 s of revocation"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(3));
    let err = FakeAgent::connect(&server, &who)
        .await
        .err()
        .expect("a revoked certificate is refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_to_an_agent_and_fail_over_before_data_only() {
    jobs_go_to_an_agent_and_fail_over_before_data_only_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_to_an_agent_and_fail_over_before_data_only_postgres() {
    jobs_go_to_an_agent_and_fail_over_before_data_only_on(Backend::Postgres).await;
}

async fn jobs_go_to_an_agent_and_fail_over_before_data_only_on(backend: Backend) {
    let server = server_on(backend).await;
    let (dc, acct) = connector_account(&server, "Dispatch").await;
    let first = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let second = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();

    // One agent: it gets the job, with the account's settings and secret, and reports back.
    let mut a = FakeAgent::connect(&server, &first).await.unwrap();
    let name = start_test(&server, &acct.name).await;
    let job = a.next_job().await;
    assert_eq!(job.host, "relay.internal.example");
    assert_eq!(
        job.auth.as_ref().unwrap().secret,
        "job-secret-9c1f",
        "the secret travels inside the job"
    );
    assert_eq!(
        job.message.as_ref().unwrap().recipients,
        vec!["ops@example.com".to_owned()]
    );
    a.finish_ok(&job.job_id).await;
    let done = finished(&server, &name).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    assert_eq!(
        done.executed_by, first.name,
        "the transcript says which agent ran it"
    );
    assert_eq!(done.result.unwrap().queue_id, "ABC123");
    assert_eq!(done.transcript.len(), 1);

    // Two agents, the first drops before DATA: the job completes on the second.
    let mut b = FakeAgent::connect(&server, &second).await.unwrap();
    let name = start_test(&server, &acct.name).await;
    let (job, taker) = tokio::select! {
        j = a.next_job() => (j, "a"),
        j = b.next_job() => (j, "b"),
    };
    let (mut survivor, survivor_name) = if taker == "a" {
        drop(a);
        (b, second.name.clone())
    } else {
        drop(b);
        (a, first.name.clone())
    };
    let retried = survivor.next_job().await;
    assert_eq!(retried.job_id, job.job_id);
    survivor.finish_ok(&retried.job_id).await;
    let done = finished(&server, &name).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    assert_eq!(done.executed_by, survivor_name);
    assert!(
        done.result.unwrap().message.contains("retried after"),
        "the failover is recorded"
    );

    // After DATA started, losing the agent fails the test and nothing is re-sent.
    let name = start_test(&server, &acct.name).await;
    let job = survivor.next_job().await;
    survivor
        .update(
            &job.job_id,
            pb::job_update::Update::PhaseStarted(pb::Phase::Data.into()),
        )
        .await;
    // Wait until the server has seen DATA start before dropping the stream.
    let mut watch = server
        .tests()
        .watch_test(pb::WatchTestRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    loop {
        let msg = watch.message().await.unwrap().unwrap();
        if matches!(msg.event, Some(pb::watch_test_response::Event::PhaseStarted(p)) if p == i32::from(pb::Phase::Data))
        {
            break;
        }
    }
    drop(survivor);
    let done = finished(&server, &name).await;
    assert_eq!(
        class(&done),
        pb::FailureClass::ConnectorLost,
        "{:?}",
        done.result
    );

    // No agent at all: the test waits (2 s here) and fails CONNECTOR_OFFLINE.
    let name = start_test(&server, &acct.name).await;
    let done = finished(&server, &name).await;
    assert_eq!(
        class(&done),
        pb::FailureClass::ConnectorOffline,
        "{:?}",
        done.result
    );
    assert!(!done.result.unwrap().hint.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_loaded_replica_gets_the_job() {
    let server = server().await;
    let (dc, acct) = connector_account(&server, "Balance").await;
    let mut a = FakeAgent::connect(
        &server,
        &enroll(&server, &token(&server, &dc.name).await)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let mut b = FakeAgent::connect(
        &server,
        &enroll(&server, &token(&server, &dc.name).await)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let t1 = start_test(&server, &acct.name).await;
    let first = tokio::select! { j = a.next_job() => ("a", j), j = b.next_job() => ("b", j) };
    let t2 = start_test(&server, &acct.name).await;
    // The busy one must not get the second job.
    let second = if first.0 == "a" {
        ("b", b.next_job().await)
    } else {
        ("a", a.next_job().await)
    };
    assert_ne!(first.0, second.0, "each replica runs one job");
    for (who, job) in [first, second] {
        if who == "a" {
            a.finish_ok(&job.job_id).await
        } else {
            b.finish_ok(&job.job_id).await
        }
    }
    for name in [t1, t2] {
        assert_eq!(
            finished(&server, &name).await.state,
            i32::from(pb::TestState::Succeeded)
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_and_the_old_one_stops_working() {
    let server = server_on(Backend::Postgres).await;
    let dc = server.create_connector("Renewing").await;
    let who = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let original_cert = who.cert_pem.clone();
    let tls_id = tls(&who.ca_pem).identity(Identity::from_pem(&who.cert_pem, &who.key_pem));
    let mut client = AgentServiceClient::new(channel(&server, tls_id).await);
    let key = rcgen::KeyPair::from_pem(&who.key_pem).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renewed = client
        .renew_certificate(pb::RenewCertificateRequest { csr_pem: csr })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(renewed.certificate_pem, who.cert_pem);
    assert!(renewed.expire_time.is_some());
    let new_id = Enrolled {
        cert_pem: renewed.certificate_pem,
        ..who
    };
    FakeAgent::connect(&server, &new_id)
        .await
        .expect("the renewed certificate works");
    let old = Enrolled {
        name: new_id.name.clone(),
        ca_pem: new_id.ca_pem.clone(),
        cert_pem: original_cert,
        key_pem: new_id.key_pem.clone(),
    };
    let err = FakeAgent::connect(&server, &old)
        .await
        .err()
        .expect("the replaced certificate is refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
}
