//! Replicas benchmark, against the Postfix fixtures (`bash deploy/smtp-fixtures/setup.sh`),
//! PostgreSQL, and a real `mailplane-agent` process on loopback:
//!
//! A connector test (`CreateTest` → `SUCCEEDED`, STARTTLS + AUTH + send) created on replica A
//! and run by the agent streaming to replica B (handed over through the database), against the
//! same test created on B, alternating in the same run: p50 ratio (target <= 1.2).
//!
//! Run: `cargo build --release -p mailplane-agent && cargo bench -p mailplane-tests --bench
//! replicas`. `MAILPLANE_BENCH_N` sets the count (default 200).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run_test(server: &TestServer, account: &str, i: usize) -> Duration {
    let mut tests = server.tests();
    let start = Instant::now();
    let created = tests
        .create_test(pb::CreateTestRequest {
            parent: account.into(),
            test: Some(pb::SmtpTest {
                to: format!("conn-{i}@mailplane.test"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, t) = mailplane_tests::watch_to_end(&mut tests, &created.name).await;
    assert_eq!(
        t.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        t.result
    );
    start.elapsed()
}

async fn run() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n: usize = std::env::var("MAILPLANE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let bin = std::env::var("MAILPLANE_AGENT_BIN")
        .unwrap_or_else(|_| format!("{target}/release/mailplane-agent"));
    assert!(
        std::path::Path::new(&bin).exists(),
        "build the agent first: cargo build --release -p mailplane-agent ({bin})"
    );
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).unwrap();
    let a = TestServer::start_configured(Backend::Postgres, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.extra_ca_pem = Some(ca.clone());
        c.smtp.max_tests_per_account = 64;
    })
    .await;
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(a.config.key_path(), b_dir.path().join("mailplane.key")).unwrap();
    let b_config = mailplane_server::ServerConfig {
        data_dir: b_dir.path().to_path_buf(),
        ..a.config.clone()
    };
    let mut server = TestServer::start_with(b_config, b_dir, None).await;
    // The first admin token is A's (B found the database set up).
    server.channel = mailplane_tests::with_token(&server.raw, Some(&a.admin_token));
    let connector = server.create_connector("bench").await;
    let token = server
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.name.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let dir = tempfile::tempdir().unwrap();
    let server_ca = dir.path().join("ca.pem");
    std::fs::write(&server_ca, &token.server_ca_pem).unwrap();
    let port = fx.port("SMTP_PORT_SUBMISSION");
    let mut agent = Command::new(&bin)
        .args([
            "run",
            "--log-level",
            &std::env::var("MAILPLANE_BENCH_AGENT_LEVEL").unwrap_or_else(|_| "warn".into()),
            "--server",
            &format!("https://{}", server.agent_addr.unwrap()),
        ])
        .args(["--allow", &format!("localhost:{port}")])
        .arg("--server-ca")
        .arg(&server_ca)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("MAILPLANE_AGENT_ENROLLMENT_TOKEN", &token.token)
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("MAILPLANE_BENCH_AGENT_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = server
            .connectors()
            .get_connector(pb::GetConnectorRequest {
                name: connector.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if c.agents
            .iter()
            .any(|a| a.status == i32::from(pb::AgentStatus::Online) && a.connected_since.is_some())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the agent did not come online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "bench".into(),
                username: fx.var("SMTP_USER"),
                secret: fx.var("SMTP_PASSWORD"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut accounts = server.accounts();
    let base = pb::SmtpAccount {
        sender_email: "bench@mailplane.test".into(),
        host: "localhost".into(),
        port: port.into(),
        security: pb::SecurityMode::StarttlsRequired.into(),
        use_authentication: true,
        credential: cred.name,
        ..Default::default()
    };
    let via = accounts
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::SmtpAccount {
                account_name: "via".into(),
                use_network_connector: true,
                network_connector: connector.name.clone(),
                ..base
            }),
        })
        .await
        .unwrap()
        .into_inner();

    // A has no stream to the agent: its tests go through the database to B.
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let at = run_test(&a, &via.name, i).await;
        let bt = run_test(&server, &via.name, i).await;
        if i >= 5 {
            on_a.push(at);
            on_b.push(bt);
        }
    }
    on_a.sort();
    on_b.sort();
    let (ap, bp) = (on_a[on_a.len() / 2], on_b[on_b.len() / 2]);
    println!(
        "connector test p50 created on B (the agent's replica), over {n}: {:.2} ms",
        bp.as_secs_f64() * 1000.0
    );
    println!(
        "connector test p50 created on A (handed to B), over {n}: {:.2} ms",
        ap.as_secs_f64() * 1000.0
    );
    println!(
        "A / B: {:.2} (target <= 1.2)",
        ap.as_secs_f64() / bp.as_secs_f64()
    );
    let _ = agent.kill();
    let _ = agent.wait();
    server.stop().await.unwrap();
    a.stop().await.unwrap();
}
