//! Test e-mails: against real Postfix with Dovecot SASL ([`postfix`]: every header, every
//! security mode on the right and the wrong port, certificates, AUTH, stop_after, locales, an
//! unreadable credential), against silent or refusing peers ([`peers`]: the destination
//! policy, timeouts, the per-account cap, bad requests, shutdown), and through a listener that
//! strips STARTTLS ([`plaintext`]: no AUTH in clear), and through the same listener with the
//! credential's destinations changed behind the server's back ([`destinations`]: no AUTH outside
//! them, nor after an unverified certificate). The helpers below are shared.

mod destinations;
mod peers;
mod plaintext;
mod postfix;
mod trust;

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer, account, watch_to_end};
use pb::watch_test_response::Event;
use std::time::Duration;

pub(crate) async fn server(fx: &SmtpFixtures) -> TestServer {
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    TestServer::start_configured(Backend::Sqlite, |c| {
        c.smtp.extra_ca_pem = Some(ca);
        c.smtp.timeouts.banner = Duration::from_secs(3);
    })
    .await
}

/// A credential for the fixtures' user (or a wrong password).
pub(crate) async fn credential(server: &TestServer, fx: &SmtpFixtures, right: bool) -> String {
    let secret = if right {
        fx.var("SMTP_PASSWORD")
    } else {
        "wrong-password".into()
    };
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "fixture".into(),
                username: fx.var("SMTP_USER"),
                secret,
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name
}

pub(crate) fn relay(name: &str, port: u16, security: pb::SecurityMode) -> pb::SmtpAccount {
    pb::SmtpAccount {
        host: "localhost".into(),
        port: port.into(),
        security: security.into(),
        ..account(name)
    }
}

/// Runs a test and follows it to the end; returns the events and the finished test.
pub(crate) async fn run(
    server: &TestServer,
    account: &str,
    test: pb::SmtpTest,
) -> (Vec<Event>, pb::SmtpTest) {
    let mut c = server.tests();
    let created = c
        .create_test(pb::CreateTestRequest {
            parent: account.into(),
            test: Some(test),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.state, i32::from(pb::TestState::Queued));
    watch_to_end(&mut c, &created.name).await
}

pub(crate) fn to(tag: &str) -> String {
    format!("{tag}-{:08x}@mailplane.test", rand::random::<u32>())
}

pub(crate) fn class(t: &pb::SmtpTest) -> pb::FailureClass {
    pb::FailureClass::try_from(t.result.as_ref().map_or(0, |r| r.failure_class)).unwrap()
}

pub(crate) fn state(t: &pb::SmtpTest) -> pb::TestState {
    pb::TestState::try_from(t.state).unwrap()
}

/// The phases that ran (skipped ones are in the transcript too, marked SKIPPED).
pub(crate) fn phases(t: &pb::SmtpTest) -> Vec<pb::Phase> {
    t.transcript
        .iter()
        .filter(|p| p.status != i32::from(pb::PhaseStatus::Skipped))
        .map(|p| pb::Phase::try_from(p.phase).unwrap())
        .collect()
}

pub(crate) async fn wait(server: &TestServer, name: &str) -> pb::SmtpTest {
    watch_to_end(&mut server.tests(), name).await.1
}
