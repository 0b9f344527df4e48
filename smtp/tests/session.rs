//! The SMTP session against a scripted peer: outcomes, classes, hints, timeouts, wire
//! bytes, redaction and `stop_after` ([`replies`]), STARTTLS and TLS ([`tls`]), no AUTH in
//! clear ([`plaintext`]), and no AUTH outside the credential's destinations or to an
//! unverified certificate ([`destinations`]). The helpers below are shared.

// Test helpers outside #[test] functions may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mailplane_smtp::*;
use mailplane_testkit::logs::capture_tracing;
use mailplane_testkit::peer::{self, PeerLog, Step, TestCa};
use tokio::task::JoinHandle;

#[path = "session/destinations.rs"]
mod destinations;
#[path = "session/plaintext.rs"]
mod plaintext;
#[path = "session/replies.rs"]
mod replies;
#[path = "session/tls.rs"]
mod tls;

const SECRET: &str = "hunter2-Sup3r-Secret";

fn message() -> MessageSpec {
    MessageSpec {
        sender: "Alice <alice@example.org>".into(),
        recipients: vec!["bob@example.net".into()],
        reply_to: Some("replies@example.org".into()),
        return_path: Some("bounces@example.org".into()),
        disposition_notification_to: Some("alice@example.org".into()),
        subject: "scripted test".into(),
        body:
            "first\nbare LF\rbare CR\n.\nafter lone dot\r\n.leading dot\r\n\r\n.\r\nsmuggled\r\n."
                .into(),
        footer: Some("-- footer".into()),
        charset: None,
        plain_text_only: true,
    }
}

fn config(port: u16, security: Security) -> SessionConfig {
    let mut c = SessionConfig::new("127.0.0.1", port, security);
    c.helo_name = Some("client.example.org".into());
    c.message = Some(message());
    c.timeouts = Timeouts::all(Duration::from_secs(5));
    c
}

async fn run(config: &SessionConfig) -> SessionReport {
    run_session(config, &DestinationPolicy::default(), None)
        .await
        .unwrap()
}

async fn finish(peer: JoinHandle<PeerLog>) -> PeerLog {
    let log = tokio::time::timeout(Duration::from_secs(5), peer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.error, None, "peer script: {log:?}");
    log
}

fn failure(report: &SessionReport) -> &Failure {
    report
        .failure()
        .unwrap_or_else(|| panic!("expected a failure: {report:#?}"))
}

const EHLO_PLAIN: &str =
    "250-mail.example.net\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN XOAUTH2\r\n250 8BITMIME";
const EHLO_STARTTLS: &str = "250-mail.example.net\r\n250-STARTTLS\r\n250 8BITMIME";
const EHLO_AUTH: &str = "250-mail.example.net\r\n250 AUTH PLAIN LOGIN";

fn delivery_steps() -> Vec<Step> {
    vec![
        Step::Expect("MAIL FROM:<bounces@example.org>"),
        Step::Say("250 2.1.0 Ok"),
        Step::Expect("RCPT TO:<bob@example.net>"),
        Step::Say("250 2.1.5 Ok"),
        Step::Expect("DATA"),
        Step::Say("354 End data with <CR><LF>.<CR><LF>"),
        Step::ReadData,
        Step::Say("250 2.0.0 Ok: queued as 4Xyz12"),
        Step::Expect("QUIT"),
        Step::Say("221 2.0.0 Bye"),
    ]
}

fn up_to_rcpt() -> Vec<Step> {
    vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("MAIL FROM:"),
        Step::Say("250 2.1.0 Ok"),
        Step::Expect("RCPT TO:<bob@example.net>"),
    ]
}

/// Every timeout (and the overall deadline) for the failure tests below: the failure must
/// come from what the server said, well before any of these fire.
const QUICK: Duration = Duration::from_secs(2);

/// Runs `cfg` with [`QUICK`] timeouts and checks that it ended before any of them.
async fn run_quick(mut cfg: SessionConfig) -> SessionReport {
    cfg.timeouts = Timeouts::all(QUICK);
    let t0 = Instant::now();
    let report = run(&cfg).await;
    let took = t0.elapsed();
    assert!(
        took < QUICK,
        "took {took:?}, so a timeout fired instead of the server's answer: {report:#?}"
    );
    report
}

/// The failure, checked for `class`, `phase`, a hint, and a failed record for `phase`.
fn expect_failure(report: &SessionReport, class: FailureClass, phase: Phase) -> &Failure {
    let f = failure(report);
    assert_eq!((f.class, f.phase), (class, phase), "{f}");
    assert!(!f.hint.trim().is_empty(), "empty hint: {f}");
    let rec = report.phases(phase).last().unwrap();
    assert_eq!(rec.status, PhaseStatus::Failed, "{rec:?}");
    f
}
