//! Certificate renewal under a live stream, with a short certificate lifetime: the stream
//! and its job go on across a renewal (the stream is checked by agent, not by the
//! certificate it opened with), an agent whose renewal response was lost still gets in with
//! the certificate it has, and the old certificate retires when the new one is first used
//! or after 24 h.

use super::*;

/// A short lifetime: agents renew after two thirds of it, so an agent with such a
/// certificate renews at its first check.
const LIFETIME: Duration = Duration::from_secs(90);

async fn short_lived(backend: Backend) -> TestServer {
    TestServer::start_configured(backend, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.connector_wait = Duration::from_secs(2);
        c.agent_cert_lifetime = LIFETIME;
    })
    .await
}

fn expires_within(cert_pem: &str, most: Duration) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let left = cert.validity().not_after.timestamp()
        - i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
    assert!(
        left > 0 && left <= i64::try_from(most.as_secs()).unwrap(),
        "the certificate has {left} s left, expected at most {most:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_keeps_the_stream_and_its_job_and_a_lost_response_locks_nobody_out() {
    renewal_under_a_live_stream(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_keeps_the_stream_and_its_job_and_a_lost_response_locks_nobody_out_postgres() {
    renewal_under_a_live_stream(Backend::Postgres).await;
}

async fn renewal_under_a_live_stream(backend: Backend) {
    let server = short_lived(backend).await;
    let (dc, acct) = connector_account(&server, "Renewal").await;
    let first = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    expires_within(&first.cert_pem, LIFETIME);
    let mut agent = FakeAgent::connect(&server, &first).await.unwrap();

    // A job is running when the agent renews.
    let test = start_test(&server, &acct.name).await;
    let job = agent.next_job().await;
    let second = renew(&server, &first)
        .await
        .expect("renewal with the current one");
    expires_within(&second.cert_pem, LIFETIME);
    // The server reads this heartbeat (and checks the agent) before the job's updates.
    agent.heartbeat().await;
    agent.finish_ok(&job.job_id).await;
    let done = finished(&server, &test).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "the job finished across the renewal: {:?}",
        done.result
    );
    assert_eq!(done.executed_by, first.name);

    // The stream is still open and takes the next job.
    let test = start_test(&server, &acct.name).await;
    let job = agent.next_job().await;
    agent.finish_ok(&job.job_id).await;
    assert_eq!(
        finished(&server, &test).await.state,
        i32::from(pb::TestState::Succeeded)
    );

    // The response of that renewal was lost: the agent still has only the first certificate.
    // It gets in with it, and renews again with it.
    FakeAgent::connect_stream(&server, &first, 1)
        .await
        .expect("the certificate renewed with is still honoured");
    let third = renew(&server, &first)
        .await
        .expect("renewing again with the previous certificate");
    // The certificate whose response was lost is forgotten: only the newest is issued.
    let err = FakeAgent::connect_stream(&server, &second, 1)
        .await
        .err()
        .expect("a certificate the agent never received is refused");
    assert_eq!(err.code(), Code::Unauthenticated);

    // The first use of the new certificate retires the old one.
    FakeAgent::connect_stream(&server, &third, 1)
        .await
        .expect("the new certificate works");
    let err = FakeAgent::connect_stream(&server, &first, 2)
        .await
        .err()
        .expect("the old certificate is retired once the new one was used");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Both renewals are in the audit log, by the agent.
    let renewals: Vec<pb::AuditEvent> = audit_events(&server, &first.name)
        .await
        .into_iter()
        .filter(|e| e.rpc == "/mailplane.v1.AgentService/RenewCertificate")
        .collect();
    assert_eq!(renewals.len(), 2, "{renewals:?}");
    assert!(
        renewals
            .iter()
            .all(|e| e.actor == first.name && e.outcome == "ok")
    );

    // Revocation is by agent: every certificate of it is refused, and the stream closes.
    server
        .connectors()
        .revoke_agent(pb::RevokeAgentRequest {
            name: first.name.clone(),
        })
        .await
        .unwrap();
    for who in [&third, &first] {
        let err = FakeAgent::connect_stream(&server, who, 3)
            .await
            .err()
            .expect("a revoked agent's certificates are refused");
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{err:?}"
        );
    }
    let err = FakeAgent::connect_stream(&server, &third, 3)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = agent.down.message().await {}
    })
    .await;
    assert!(closed.is_ok(), "the revoked agent's stream closes");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_certificate_expires_after_its_grace_period() {
    use sqlx::Connection as _;
    let server = short_lived(Backend::Sqlite).await;
    let dc = server.create_connector("Grace").await;
    let first = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let second = renew(&server, &first).await.unwrap();
    // 24 h pass without the agent using its new certificate.
    let url = format!("sqlite://{}", server.sqlite_path().display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let changed = sqlx::query(
        "UPDATE agents SET prev_cert_expire_time = prev_cert_expire_time - 86400000001 \
         WHERE prev_cert_fingerprint IS NOT NULL",
    )
    .execute(&mut db)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1, "the renewal kept the previous certificate");
    db.close().await.unwrap();
    let err = FakeAgent::connect(&server, &first)
        .await
        .err()
        .expect("the previous certificate is refused after 24 h");
    assert_eq!(err.code(), Code::Unauthenticated);
    FakeAgent::connect(&server, &second)
        .await
        .expect("the new certificate works");
    server.stop().await.unwrap();
}
