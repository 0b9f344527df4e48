//! What the connector benchmarks share: a real `mailplane-agent` process enrolled with a
//! server, the fixture's credential and base account, and one timed test.

use mailplane_proto::v1 as pb;
use mailplane_tests::{SmtpFixtures, TestServer};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `MAILPLANE_BENCH_N`, or `default`.
pub fn bench_n(default: usize) -> usize {
    std::env::var("MAILPLANE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The release agent binary (`MAILPLANE_AGENT_BIN` overrides it).
pub fn agent_bin() -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let bin = std::env::var("MAILPLANE_AGENT_BIN")
        .unwrap_or_else(|_| format!("{target}/release/mailplane-agent"));
    assert!(
        std::path::Path::new(&bin).exists(),
        "build the agent first: cargo build --release -p mailplane-agent ({bin})"
    );
    bin
}

/// A real agent process of `connector`, connected to `server`; killed when dropped. Its log
/// level is `MAILPLANE_BENCH_AGENT_LEVEL` (default warn), written to `MAILPLANE_BENCH_AGENT_LOG`
/// when set.
pub struct Agent {
    /// The process.
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Enrolls an agent of `connector` with `server`, allowed to reach `localhost:{port}`, and
    /// waits until it is online.
    pub async fn start(server: &TestServer, connector: &str, port: u16) -> Self {
        let token = server
            .connectors()
            .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                parent: connector.into(),
                ttl: None,
            })
            .await
            .unwrap()
            .into_inner();
        let dir = tempfile::tempdir().unwrap();
        let server_ca = dir.path().join("ca.pem");
        std::fs::write(&server_ca, &token.server_ca_pem).unwrap();
        let child = Command::new(agent_bin())
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
        let agent = Self { child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = server
                .connectors()
                .get_connector(pb::GetConnectorRequest {
                    name: connector.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if c.agents.iter().any(|a| {
                a.status == i32::from(pb::AgentStatus::Online) && a.connected_since.is_some()
            }) {
                return agent;
            }
            assert!(Instant::now() < deadline, "the agent did not come online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An account to the fixture's submission port (STARTTLS + AUTH with the fixture's
/// credential, created on `server`), to complete with a name and, maybe, a connector.
pub async fn fixture_account(server: &TestServer, fx: &SmtpFixtures, port: u16) -> pb::SmtpAccount {
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "bench".into(),
                username: fx.var("SMTP_USER"),
                secret: fx.var("SMTP_PASSWORD"),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    pb::SmtpAccount {
        sender_email: "bench@mailplane.test".into(),
        host: "localhost".into(),
        port: port.into(),
        security: pb::SecurityMode::StarttlsRequired.into(),
        use_authentication: true,
        credential: cred.name,
        ..Default::default()
    }
}

/// Creates `account` on `server`; its name.
pub async fn create(server: &TestServer, account: pb::SmtpAccount) -> String {
    server
        .accounts()
        .create_account(pb::CreateAccountRequest {
            account: Some(account),
        })
        .await
        .unwrap()
        .into_inner()
        .name
}

/// `CreateTest` → `SUCCEEDED` on `server` for `account`: how long it took.
pub async fn run_test(server: &TestServer, account: &str, i: usize) -> Duration {
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

/// The median of `times` (sorted here).
pub fn p50(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
