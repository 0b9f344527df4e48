//! Test e-mail benchmarks against the Postfix fixtures (`bash deploy/smtp-fixtures/setup.sh`):
//!
//! 1. `CreateTest` → `SUCCEEDED` wall time, p50 over 200 tests (STARTTLS + AUTH + send), as a
//!    ratio to a minimal lettre send to the same port in the same run (target <= 1.25).
//! 2. `mailplane accounts test` as a whole process (CLI start, gRPC, session, exit) against
//!    `swaks` doing the same STARTTLS + AUTH + send, in the same run (target <= 1.0).
//!
//! Run: `cargo build --release -p mailplane-server && cargo bench -p mailplane-tests
//! --features bench-baseline --bench smtp`. `MAILPLANE_BENCH_N` sets the count (default 200).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lettre::AsyncTransport as _;
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

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() {
    let n: usize = std::env::var("MAILPLANE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).unwrap();
    let port = fx.port("SMTP_PORT_SUBMISSION");
    let (user, password) = (fx.var("SMTP_USER"), fx.var("SMTP_PASSWORD"));
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.smtp.extra_ca_pem = Some(ca.clone());
        c.smtp.max_tests_per_account = 64;
    })
    .await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "bench".into(),
                username: user.clone(),
                secret: password.clone(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let account = server
        .accounts()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::SmtpAccount {
                account_name: "Bench".into(),
                sender_email: "bench@mailplane.test".into(),
                host: "localhost".into(),
                port: port.into(),
                security: pb::SecurityMode::StarttlsRequired.into(),
                use_authentication: true,
                credential: cred.name,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();

    let tls = lettre::transport::smtp::client::TlsParameters::builder("localhost".into())
        .add_root_certificate(lettre::transport::smtp::client::Certificate::from_pem(&ca).unwrap())
        .build_rustls()
        .unwrap();
    let mailer =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("localhost")
            .port(port)
            .tls(lettre::transport::smtp::client::Tls::Required(tls))
            .credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ))
            .build();

    let mut ours = Vec::with_capacity(n);
    let mut baseline = Vec::with_capacity(n);
    let mut tests = server.tests();
    // Alternate the two so that drift on a noisy machine hits both alike.
    for i in 0..n + 5 {
        let start = Instant::now();
        let created = tests
            .create_test(pb::CreateTestRequest {
                parent: account.name.clone(),
                test: Some(pb::SmtpTest {
                    to: format!("bench-{i}@mailplane.test"),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let (_, done) = mailplane_tests::watch_to_end(&mut tests, &created.name).await;
        let took = start.elapsed();
        assert_eq!(done.state, i32::from(pb::TestState::Succeeded));

        let message = lettre::Message::builder()
            .from("bench@mailplane.test".parse().unwrap())
            .to(format!("lettre-{i}@mailplane.test").parse().unwrap())
            .subject("TEST MESSAGE!")
            .body(String::from("ATTENTION: THIS IS A TEST MESSAGE!"))
            .unwrap();
        let start = Instant::now();
        mailer.send(message).await.unwrap();
        let base = start.elapsed();
        if i >= 5 {
            ours.push(took);
            baseline.push(base);
        }
    }
    let (o, b) = (p50(ours), p50(baseline));
    println!("CreateTest -> SUCCEEDED, p50 over {n}: {:.2} ms", ms(o));
    println!(
        "minimal lettre send (STARTTLS + AUTH), p50 over {n}: {:.2} ms",
        ms(b)
    );
    println!(
        "ratio: {:.2} (target <= 1.25)",
        o.as_secs_f64() / b.as_secs_f64()
    );

    // The whole CLI process against swaks.
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let bin =
        std::env::var("MAILPLANE_BIN").unwrap_or_else(|_| format!("{target}/release/mailplane"));
    assert!(
        std::path::Path::new(&bin).exists(),
        "build the CLI first: cargo build --release -p mailplane-server ({bin})"
    );
    let runs = (n / 5).max(10);
    let mut cli = Vec::new();
    let mut swaks = Vec::new();
    let addr = format!("http://{}", server.addr);
    for i in 0..runs + 2 {
        let start = Instant::now();
        let status = Command::new(&bin)
            .args([
                "--insecure-plaintext",
                "--server",
                &addr,
                "accounts",
                "test",
                &account.name,
                "--to",
                &format!("cli-{i}@mailplane.test"),
                "-o",
                "json",
            ])
            .env("MAILPLANE_TOKEN", &server.admin_token)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let c = start.elapsed();
        assert!(status.success());
        let start = Instant::now();
        let status = Command::new("swaks")
            .args([
                "--silent",
                "2",
                "--to",
                &format!("swaks-{i}@mailplane.test"),
                "--from",
                "bench@mailplane.test",
                "--server",
                "localhost",
            ])
            .args([
                "--port",
                &port.to_string(),
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                &user,
                "--auth-password",
                &password,
            ])
            .stdout(Stdio::null())
            .status()
            .expect("swaks (Debian package) is installed by deploy/smtp-fixtures/setup.sh");
        let s = start.elapsed();
        assert!(status.success());
        if i >= 2 {
            cli.push(c);
            swaks.push(s);
        }
    }
    let (c, s) = (p50(cli), p50(swaks));
    println!(
        "mailplane accounts test (whole process), p50 over {runs}: {:.2} ms",
        ms(c)
    );
    println!(
        "swaks STARTTLS + AUTH + send, p50 over {runs}: {:.2} ms",
        ms(s)
    );
    println!(
        "ratio: {:.2} (target <= 1.0)",
        c.as_secs_f64() / s.as_secs_f64()
    );
    server.stop().await.unwrap();
}
