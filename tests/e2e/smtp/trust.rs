//! Which roots verify a relay's certificate (`--smtp-trust`): the extra CA, the operating
//! system's trust store, the web PKI roots. The system store is read once per process, so the
//! cases that change it run `mailplane serve` as a process whose `SSL_CERT_FILE` names the
//! fixtures' CA (as if an internal CA were installed on the host); the transcript says which
//! roots verified the certificate.

use super::{relay, run, server, state};
use crate::netns::harness::{Proc, binary};
use mailplane_proto::v1 as pb;
use mailplane_tests::{SmtpFixtures, TestServer, create_account, with_token};
use std::process::Command;
use std::time::Duration;

/// A TLS-only test of the implicit-TLS port (no AUTH, stopped once TLS is up).
fn tls_only(fx: &SmtpFixtures) -> pb::SmtpAccount {
    relay(
        "Implicit",
        fx.port("SMTP_PORT_IMPLICIT"),
        pb::SecurityMode::ImplicitTls,
    )
}

fn stop_after_tls() -> pb::SmtpTest {
    pb::SmtpTest {
        to: super::to("trust"),
        stop_after: pb::StopAfter::Tls.into(),
        ..Default::default()
    }
}

/// The `TLS_HANDSHAKE` phase's notes.
fn tls_detail(t: &pb::SmtpTest) -> Vec<String> {
    t.transcript
        .iter()
        .find(|p| p.phase == i32::from(pb::Phase::TlsHandshake))
        .map(|p| p.detail.clone())
        .unwrap_or_else(|| panic!("no TLS phase in {:?}", t.transcript))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extra_ca_verifies_and_the_transcript_says_so() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let acct = create_account(&mut server.accounts(), tls_only(&fx)).await;
    let (_, t) = run(&server, &acct.name, stop_after_tls()).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    let detail = tls_detail(&t);
    assert!(
        detail
            .iter()
            .any(|d| d == "certificate verified by the extra CA (--smtp-extra-ca)"),
        "{detail:?}"
    );
}

/// `mailplane serve --smtp-trust TRUST` with `SSL_CERT_FILE` naming the fixtures' CA, and a
/// client with its admin token.
async fn serve(
    fx: &SmtpFixtures,
    trust: &str,
    dir: &std::path::Path,
) -> (Proc, mailplane_tests::Conn) {
    let proc = Proc::spawn({
        let mut c = Command::new(binary("mailplane"));
        c.args([
            "serve",
            "--ui",
            "off",
            "--insecure-plaintext",
            "--log-format",
            "json",
        ])
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "off"])
        .args(["--smtp-trust", trust])
        .arg("--data-dir")
        .arg(dir)
        .env("SSL_CERT_FILE", fx.var("SMTP_CA"))
        .env_remove("SSL_CERT_DIR");
        c
    });
    proc.wait_for("mailplane listening", Duration::from_secs(30))
        .await;
    let addr = proc
        .text()
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "mailplane listening")
                .then(|| v["fields"]["addr"].as_str().map(str::to_owned))?
        })
        .expect("the address in the log");
    let token = std::fs::read_to_string(mailplane_server::auth::bootstrap_file(dir))
        .expect("the first admin token")
        .trim()
        .to_owned();
    let raw = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (proc, with_token(&raw, Some(&token)))
}

async fn tls_test(conn: &mailplane_tests::Conn, fx: &SmtpFixtures) -> pb::SmtpTest {
    let acct = create_account(
        &mut pb::smtp_account_service_client::SmtpAccountServiceClient::new(conn.clone()),
        tls_only(fx),
    )
    .await;
    let mut tests = pb::smtp_test_service_client::SmtpTestServiceClient::new(conn.clone());
    let name = tests
        .create_test(pb::CreateTestRequest {
            parent: acct.name,
            test: Some(stop_after_tls()),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    mailplane_tests::watch_to_end(&mut tests, &name).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_trust_store_verifies_an_internal_ca_unless_webpki_alone_is_trusted() {
    let fx = SmtpFixtures::load();
    let dir = tempfile::tempdir().unwrap();
    let (system, conn) = serve(&fx, "system", &dir.path().join("system")).await;
    let t = tls_test(&conn, &fx).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    let detail = tls_detail(&t);
    assert!(
        detail
            .iter()
            .any(|d| d == "certificate verified by the system trust store"),
        "{detail:?}"
    );
    drop(system);

    // The default trusts the system store too.
    let (both, conn) = serve(&fx, "system+webpki", &dir.path().join("both")).await;
    let t = tls_test(&conn, &fx).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    drop(both);

    // The web PKI alone does not know the internal CA.
    let (webpki, conn) = serve(&fx, "webpki", &dir.path().join("webpki")).await;
    let t = tls_test(&conn, &fx).await;
    assert_eq!(state(&t), pb::TestState::Failed, "{:?}", t.result);
    assert_eq!(
        t.result.as_ref().unwrap().failure_class,
        i32::from(pb::FailureClass::CertificateUntrusted),
        "{:?}",
        t.result
    );
    drop(webpki);
}

/// The in-process servers of the other tests read the real system store, which does not hold
/// the fixtures' CA: without the extra CA their relay is untrusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extra_ca_the_fixture_relay_is_untrusted() {
    let fx = SmtpFixtures::load();
    let server = TestServer::start(mailplane_tests::Backend::Sqlite).await;
    let acct = create_account(&mut server.accounts(), tls_only(&fx)).await;
    let (_, t) = run(&server, &acct.name, stop_after_tls()).await;
    assert_eq!(
        t.result.as_ref().unwrap().failure_class,
        i32::from(pb::FailureClass::CertificateUntrusted),
        "{:?}",
        t.result
    );
}
