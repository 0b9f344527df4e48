//! The connection pool against the scripted peer: per-recipient results, transient and
//! permanent outcomes, a drop in DATA, reconnecting after a relay closed an idle
//! connection, pipelining, RSET between messages, and the per-connection and per-key
//! limits.

// Test helpers outside #[test] functions may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mailplane_smtp::*;
use mailplane_testkit::peer::{self, PeerLog, Step};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const SECRET: &str = "hunter2-Sup3r-Secret";
const EHLO_PIPELINING: &str = "250-mail.example.net\r\n250-PIPELINING\r\n250 8BITMIME";
const EHLO_PLAIN: &str = "250-mail.example.net\r\n250 8BITMIME";
const EHLO_AUTH: &str = "250-mail.example.net\r\n250 AUTH PLAIN";
const MESSAGE: &[u8] = b"Subject: pooled\nTo: bob@example.net\n\nfirst line\n.leading dot\r\n";
const DATA: &[u8] =
    b"Subject: pooled\r\nTo: bob@example.net\r\n\r\nfirst line\r\n..leading dot\r\n.\r\n";
const KEY: &str = "account-1";

fn config(port: u16) -> SessionConfig {
    let mut c = SessionConfig::new("127.0.0.1", port, Security::None);
    c.helo_name = Some("client.example.org".into());
    c.timeouts = Timeouts::all(Duration::from_secs(5));
    c
}

fn pool(config: PoolConfig) -> Pool<&'static str> {
    Pool::new(config, Arc::new(DestinationPolicy::default()))
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope::new(
        "alice@example.org",
        rcpts.iter().map(|s| (*s).to_owned()).collect(),
    )
}

fn greet(ehlo: &'static str) -> Vec<Step> {
    vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO client.example.org"),
        Step::Say(ehlo),
    ]
}

/// One transaction to bob, one command at a time, queued as `queue`.
fn one_by_one(queue: &'static str) -> Vec<Step> {
    vec![
        Step::ExpectAlone("MAIL FROM:<alice@example.org>"),
        Step::Say("250 2.1.0 Ok"),
        Step::ExpectAlone("RCPT TO:<bob@example.net>"),
        Step::Say("250 2.1.5 Ok"),
        Step::ExpectAlone("DATA"),
        Step::Say("354 End data with <CR><LF>.<CR><LF>"),
        Step::ReadData,
        Step::Say(queue),
    ]
}

fn quit() -> Vec<Step> {
    vec![Step::ExpectAlone("QUIT"), Step::Say("221 2.0.0 Bye")]
}

fn script(parts: Vec<Vec<Step>>) -> Vec<Step> {
    parts.into_iter().flatten().collect()
}

async fn finish(peer: JoinHandle<PeerLog>) -> PeerLog {
    let log = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.error, None, "peer script: {log:?}");
    log
}

fn sent(d: &Delivery) -> (&Option<String>, &Reply) {
    match &d.message {
        MessageOutcome::Sent { queue_id, reply } => (queue_id, reply),
        other => panic!("expected Sent: {other:#?}"),
    }
}

fn transient(d: &Delivery) -> &Failure {
    match &d.message {
        MessageOutcome::Transient { failure } => failure,
        other => panic!("expected Transient: {other:#?}"),
    }
}

#[path = "delivery/outcomes.rs"]
mod outcomes;
#[path = "delivery/pooling.rs"]
mod pooling;
