//! Network connector benchmarks, against the Postfix fixtures (`bash
//! deploy/smtp-fixtures/setup.sh`) and a real `mailplane-agent` process on loopback:
//!
//! 1. Connector overhead: `CreateTest` → `SUCCEEDED` p50 through the connector vs direct, to
//!    the same Postfix port (STARTTLS + AUTH + send), alternating in the same run (target
//!    <= 1.2x).
//! 2. Agent footprint: the agent's idle RSS (target <= 10 MiB) and the size of the stripped
//!    release binary (target <= 12 MiB).
//!
//! Run: `cargo build --release -p mailplane-agent && cargo bench -p mailplane-tests --bench
//! connector`. `MAILPLANE_BENCH_N` sets the count (default 200).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailplane_proto::v1 as pb;
use mailplane_tests::rss_kib;
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
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.extra_ca_pem = Some(ca.clone());
        c.smtp.max_tests_per_account = 64;
    })
    .await;
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
            "warn",
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
        .stderr(Stdio::null())
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
    let idle_rss = rss_kib(agent.id());

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
    let direct = accounts
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::SmtpAccount {
                account_name: "direct".into(),
                ..base.clone()
            }),
        })
        .await
        .unwrap()
        .into_inner();
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

    let (mut d, mut v) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let dt = run_test(&server, &direct.name, i).await;
        let vt = run_test(&server, &via.name, i).await;
        if i >= 5 {
            d.push(dt);
            v.push(vt);
        }
    }
    d.sort();
    v.sort();
    let (dp, vp) = (d[d.len() / 2], v[v.len() / 2]);
    println!(
        "test p50 direct, over {n}: {:.2} ms",
        dp.as_secs_f64() * 1000.0
    );
    println!(
        "test p50 through the connector, over {n}: {:.2} ms",
        vp.as_secs_f64() * 1000.0
    );
    println!(
        "connector / direct: {:.2} (target <= 1.2)",
        vp.as_secs_f64() / dp.as_secs_f64()
    );
    println!(
        "agent idle RSS: {idle_rss} KiB ({:.1} MiB, target <= 10 MiB)",
        idle_rss as f64 / 1024.0
    );
    println!("agent RSS after {n} jobs: {} KiB", rss_kib(agent.id()));
    let size = std::fs::metadata(&bin).unwrap().len();
    println!(
        "agent release binary: {size} bytes ({:.1} MiB, target <= 12 MiB)",
        size as f64 / 1_048_576.0
    );
    let _ = agent.kill();
    let _ = agent.wait();
    server.stop().await.unwrap();
}
