//! The SMTP session against a real Postfix + Dovecot started by
//! `deploy/smtp-fixtures/setup.sh`. The fixture directory is `$MAILPLANE_SMTP_FIXTURES`
//! (default `/tmp/mailplane-smtp`); without its `env` file these tests fail, on purpose.

// Test helpers outside #[test] functions may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailplane_smtp::*;
use mailplane_testkit::SmtpFixtures as Fixtures;

/// What these tests build from the fixtures.
trait FixturesExt {
    fn config(&self, port_key: &str, security: Security, tag: &str) -> (SessionConfig, String);
    fn credentials(&self, mechanism: AuthMechanism, password: Option<&str>) -> Credentials;
}

impl FixturesExt for Fixtures {
    fn config(&self, port_key: &str, security: Security, tag: &str) -> (SessionConfig, String) {
        let id = unique(tag);
        let domain = self.get("SMTP_DOMAIN");
        let mut c = SessionConfig::new(self.get("SMTP_HOST"), self.port(port_key), security);
        c.extra_ca_pem = Some(std::fs::read(self.get("SMTP_CA")).unwrap());
        c.helo_name = Some("client.mailplane.test".into());
        c.timeouts.overall = Duration::from_secs(30);
        c.message = Some(MessageSpec {
            sender: format!("Mailplane Test <sender-{id}@{domain}>"),
            recipients: vec![format!("rcpt-{id}@{domain}")],
            reply_to: Some(format!("reply-{id}@{domain}")),
            return_path: Some(format!("bounce-{id}@{domain}")),
            disposition_notification_to: Some(format!("confirm-{id}@{domain}")),
            subject: format!("mailplane {id}"),
            body: "Hello from the mailplane test suite.\n.\nThe line above was a lone dot.\n"
                .into(),
            footer: Some(format!("footer {id}")),
            charset: Some("ISO-8859-15".into()),
            plain_text_only: false,
        });
        (c, id)
    }

    fn credentials(&self, mechanism: AuthMechanism, password: Option<&str>) -> Credentials {
        let pw = password.unwrap_or_else(|| self.get("SMTP_PASSWORD"));
        Credentials::new(mechanism, self.get("SMTP_USER"), Secret::new(pw))
            .allowed_to([self.get("SMTP_HOST").parse().unwrap()])
    }
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn run(config: &SessionConfig) -> SessionReport {
    run_session(config, &DestinationPolicy::default(), None)
        .await
        .unwrap()
}

fn ok(report: &SessionReport) -> &Success {
    report
        .success()
        .unwrap_or_else(|| panic!("expected success: {report:#?}"))
}

fn failed(report: &SessionReport) -> &Failure {
    report
        .failure()
        .unwrap_or_else(|| panic!("expected a failure: {report:#?}"))
}

fn tls_info(report: &SessionReport) -> TlsInfo {
    report
        .phases(Phase::TlsHandshake)
        .find_map(|r| r.tls.clone())
        .unwrap_or_else(|| panic!("no TLS: {report:#?}"))
}

fn assert_headers(msg: &str, id: &str, domain: &str, message_id: &str) {
    let lower = msg.to_ascii_lowercase();
    for h in [
        format!("Return-Path: <bounce-{id}@{domain}>"),
        format!("From: \"Mailplane Test\" <sender-{id}@{domain}>"),
        format!("Reply-To: reply-{id}@{domain}"),
        format!("Disposition-Notification-To: confirm-{id}@{domain}"),
        format!("To: rcpt-{id}@{domain}"),
        format!("Message-ID: {message_id}"),
    ] {
        assert!(msg.contains(&h), "missing {h:?} in:\n{msg}");
    }
    assert!(msg.contains("\nDate: "), "{msg}");
    assert!(
        lower.contains("content-type: multipart/alternative"),
        "{msg}"
    );
    assert!(
        lower.contains("content-type: text/plain; charset=iso-8859-15"),
        "{msg}"
    );
    assert!(
        lower.contains("content-type: text/html; charset=iso-8859-15"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("\n\nfooter {id}\n")),
        "footer missing in:\n{msg}"
    );
    assert!(
        msg.contains("Hello from the mailplane test suite.\n.\nThe line above was a lone dot.\n"),
        "{msg}"
    );
}

#[tokio::test]
async fn plain_port_opportunistic_delivers_over_starttls() {
    let fx = Fixtures::load();
    let (cfg, id) = fx.config(
        "SMTP_PORT_PLAIN",
        Security::StartTlsOpportunistic,
        "opportunistic",
    );
    let report = run(&cfg).await;
    let success = ok(&report);
    assert!(success.queue_id.is_some(), "{report:#?}");
    let tls = tls_info(&report);
    assert_eq!(tls.verification, Verification::Verified);
    assert!(
        tls.peer_certificate
            .unwrap()
            .sans
            .contains(&"localhost".to_owned())
    );
    let msg = fx.delivered(&format!("Subject: mailplane {id}")).await;
    assert_headers(
        &msg,
        &id,
        fx.get("SMTP_DOMAIN"),
        report.message_id.as_deref().unwrap(),
    );
}

#[tokio::test]
async fn plain_port_security_none_stays_in_clear() {
    let fx = Fixtures::load();
    let (cfg, id) = fx.config("SMTP_PORT_PLAIN", Security::None, "none");
    let report = run(&cfg).await;
    ok(&report);
    assert!(
        report
            .phases(Phase::TlsHandshake)
            .all(|r| r.status == PhaseStatus::Skipped)
    );
    fx.delivered(&format!("Subject: mailplane {id}")).await;
}

#[tokio::test]
async fn plain_port_offers_no_auth_in_clear() {
    let fx = Fixtures::load();
    let (mut cfg, _) = fx.config("SMTP_PORT_PLAIN", Security::None, "noauth");
    cfg.auth = Some(fx.credentials(AuthMechanism::Plain, None));
    cfg.allow_plaintext_auth = true;
    let report = run(&cfg).await;
    let f = failed(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::AuthMechanismUnsupported, Phase::Auth),
        "{f}"
    );
    assert!(f.hint.contains("only after STARTTLS"), "{f}");
}

#[tokio::test]
async fn submission_starttls_required_auth_plain_delivers() {
    let fx = Fixtures::load();
    let (mut cfg, id) = fx.config("SMTP_PORT_SUBMISSION", Security::StartTlsRequired, "plain");
    cfg.auth = Some(fx.credentials(AuthMechanism::Plain, None));
    let report = run(&cfg).await;
    let success = ok(&report);
    let queue_id = success.queue_id.clone().unwrap();
    let msg = fx.delivered(&format!("Subject: mailplane {id}")).await;
    assert!(
        msg.contains(&format!("id {queue_id}")),
        "queue id {queue_id} not in:\n{msg}"
    );
    assert_headers(
        &msg,
        &id,
        fx.get("SMTP_DOMAIN"),
        report.message_id.as_deref().unwrap(),
    );
    assert!(!format!("{report:?}").contains(fx.get("SMTP_PASSWORD")));
}

#[tokio::test]
async fn submission_auth_login_delivers() {
    let fx = Fixtures::load();
    let (mut cfg, id) = fx.config("SMTP_PORT_SUBMISSION", Security::StartTlsRequired, "login");
    cfg.auth = Some(fx.credentials(AuthMechanism::Login, None));
    ok(&run(&cfg).await);
    fx.delivered(&format!("Subject: mailplane {id}")).await;
}

#[tokio::test]
async fn submission_wrong_password_is_auth_rejected() {
    let fx = Fixtures::load();
    for mechanism in [AuthMechanism::Plain, AuthMechanism::Login] {
        let (mut cfg, _) = fx.config(
            "SMTP_PORT_SUBMISSION",
            Security::StartTlsRequired,
            "wrongpw",
        );
        cfg.auth = Some(fx.credentials(mechanism, Some("definitely-wrong-password")));
        let report = run(&cfg).await;
        let f = failed(&report);
        assert_eq!(
            (f.class, f.phase),
            (FailureClass::AuthRejected, Phase::Auth),
            "{mechanism:?}: {f}"
        );
        assert_eq!(f.reply.as_ref().unwrap().code, 535);
        assert!(!format!("{report:?}").contains("definitely-wrong-password"));
    }
}

#[tokio::test]
async fn submission_in_clear_is_refused() {
    let fx = Fixtures::load();
    let (cfg, _) = fx.config("SMTP_PORT_SUBMISSION", Security::None, "clear");
    let report = run(&cfg).await;
    let f = failed(&report);
    // Postfix: "530 5.7.0 Must issue a STARTTLS command first".
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::SenderRejected, Phase::MailFrom),
        "{f}"
    );
    assert_eq!(f.reply.as_ref().unwrap().code, 530);
}

#[tokio::test]
async fn submission_without_auth_cannot_send() {
    let fx = Fixtures::load();
    let (cfg, _) = fx.config("SMTP_PORT_SUBMISSION", Security::StartTlsRequired, "unauth");
    let report = run(&cfg).await;
    let f = failed(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::RecipientRejected, Phase::RcptTo),
        "{f}"
    );
}

#[tokio::test]
async fn implicit_tls_port_delivers() {
    let fx = Fixtures::load();
    let (mut cfg, id) = fx.config("SMTP_PORT_IMPLICIT", Security::ImplicitTls, "implicit");
    cfg.auth = Some(fx.credentials(AuthMechanism::Plain, None));
    let report = run(&cfg).await;
    ok(&report);
    assert_eq!(tls_info(&report).verification, Verification::Verified);
    fx.delivered(&format!("Subject: mailplane {id}")).await;
}

#[tokio::test]
async fn implicit_tls_against_the_plain_port() {
    let fx = Fixtures::load();
    let (cfg, _) = fx.config("SMTP_PORT_PLAIN", Security::ImplicitTls, "implicit-wrong");
    let report = run(&cfg).await;
    let f = failed(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::ProtocolMismatch, Phase::TlsHandshake),
        "{f}"
    );
    assert!(f.hint.contains("speaks plain SMTP"), "{f}");
}

#[tokio::test]
async fn starttls_against_the_implicit_tls_port() {
    let fx = Fixtures::load();
    for security in [
        Security::StartTlsRequired,
        Security::StartTlsOpportunistic,
        Security::None,
    ] {
        let (mut cfg, _) = fx.config("SMTP_PORT_IMPLICIT", security, "starttls-wrong");
        cfg.timeouts.banner = Duration::from_secs(1);
        let report = run(&cfg).await;
        let f = failed(&report);
        assert_eq!(f.phase, Phase::Banner, "{f}");
        assert!(
            matches!(
                f.class,
                FailureClass::Timeout | FailureClass::ProtocolMismatch
            ),
            "{f}"
        );
        assert!(f.hint.contains("IMPLICIT_TLS"), "{f}");
    }
}

#[tokio::test]
async fn expired_certificate_port() {
    let fx = Fixtures::load();
    let (mut cfg, _) = fx.config("SMTP_PORT_EXPIRED", Security::StartTlsRequired, "expired");
    cfg.stop_after = StopAfter::Tls;
    let report = run(&cfg).await;
    let f = failed(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::CertificateExpired, Phase::TlsHandshake),
        "{f}"
    );
    assert_eq!(f.hint, "certificate expired on 2021-01-01T00:00:00Z");

    cfg.ignore_certificate_errors = true;
    let report = run(&cfg).await;
    assert_eq!(ok(&report).stopped_after, StopAfter::Tls);
    assert!(matches!(
        tls_info(&report).verification,
        Verification::IgnoredByConfig { .. }
    ));
}

#[tokio::test]
async fn unknown_ca_port() {
    let fx = Fixtures::load();
    let (mut cfg, id) = fx.config(
        "SMTP_PORT_UNKNOWN_CA",
        Security::StartTlsRequired,
        "unknownca",
    );
    let report = run(&cfg).await;
    let f = failed(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::CertificateUntrusted, Phase::TlsHandshake),
        "{f}"
    );
    assert!(f.hint.contains("UNKNOWN"), "{f}");

    cfg.ignore_certificate_errors = true;
    let report = run(&cfg).await;
    ok(&report);
    match tls_info(&report).verification {
        Verification::IgnoredByConfig { reason } => {
            assert!(reason.contains("UnknownIssuer"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    fx.delivered(&format!("Subject: mailplane {id}")).await;
}
