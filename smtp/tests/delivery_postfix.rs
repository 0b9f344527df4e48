//! The connection pool against the real Postfix + Dovecot started by
//! `deploy/smtp-fixtures/setup.sh` (submission port: STARTTLS required, then AUTH). Without
//! the fixtures' `env` file these tests fail, on purpose.

// Test helpers outside #[test] functions may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailplane_smtp::*;
use mailplane_testkit::SmtpFixtures as Fixtures;

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

/// The submission port: STARTTLS required, AUTH PLAIN with the fixture's account.
fn submission(fx: &Fixtures) -> SessionConfig {
    let mut c = SessionConfig::new(
        fx.get("SMTP_HOST"),
        fx.port("SMTP_PORT_SUBMISSION"),
        Security::StartTlsRequired,
    );
    c.extra_ca_pem = Some(std::fs::read(fx.get("SMTP_CA")).unwrap());
    c.helo_name = Some("client.mailplane.test".into());
    c.timeouts.overall = Duration::from_secs(30);
    c.auth = Some(
        Credentials::new(
            AuthMechanism::Plain,
            fx.get("SMTP_USER"),
            Secret::new(fx.get("SMTP_PASSWORD")),
        )
        .allowed_to([c.host.parse().unwrap()]),
    );
    c
}

/// A message from the test domain to `recipients`, tagged with `id` in the subject.
fn message(fx: &Fixtures, id: &str, recipients: &[String]) -> BuiltMessage {
    let domain = fx.get("SMTP_DOMAIN");
    let spec = MessageSpec {
        sender: format!("Mailplane Pool <pool-{id}@{domain}>"),
        recipients: recipients.to_vec(),
        subject: format!("pooled {id}"),
        body: format!("Pooled delivery {id}.\n.\nA lone dot above.\n"),
        plain_text_only: true,
        ..MessageSpec::default()
    };
    build_message(&spec, "client.mailplane.test").unwrap()
}

fn pool() -> Pool<String> {
    Pool::new(
        PoolConfig::default(),
        Arc::new(DestinationPolicy::default()),
    )
}

fn sent(d: &Delivery) -> Option<&str> {
    match &d.message {
        MessageOutcome::Sent { queue_id, reply } => {
            assert_eq!(reply.code, 250);
            queue_id.as_deref()
        }
        other => panic!("expected Sent: {other:#?}"),
    }
}

#[tokio::test]
async fn three_messages_over_one_pooled_connection_starttls_and_auth_once() {
    let fx = Fixtures::load();
    let cfg = submission(&fx);
    let pool = pool();
    let key = unique("account");
    let domain = fx.get("SMTP_DOMAIN");
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = unique(&format!("pool{n}"));
        let msg = message(&fx, &id, &[format!("rcpt-{id}@{domain}")]);
        let d = pool
            .send(&key, &cfg, &Envelope::of(&msg), &msg.bytes)
            .await
            .unwrap();
        assert!(sent(&d).is_some(), "Postfix names its queue id: {d:#?}");
        // Only the first message opened a connection (STARTTLS, TLS and AUTH ran once).
        let expected = if n == 0 {
            ConnectionUse::Fresh
        } else {
            ConnectionUse::Reused
        };
        assert_eq!(d.connection, expected, "message {n}");
        assert_eq!(pool.idle_connections(&key), 1);
        ids.push((id, msg.message_id));
    }
    pool.close().await;
    assert_eq!(pool.idle_connections(&key), 0);
    for (id, message_id) in ids {
        let got = fx.delivered(&format!("Subject: pooled {id}")).await;
        assert!(got.contains(&format!("Message-ID: {message_id}")), "{got}");
        assert!(
            got.contains(&format!("Delivered-To: rcpt-{id}@{domain}")),
            "{got}"
        );
        assert!(
            got.contains(&format!("Pooled delivery {id}.\n.\nA lone dot above.\n")),
            "{got}"
        );
        assert!(got.contains("with ESMTPSA"), "not over TLS + AUTH: {got}");
    }
}

#[tokio::test]
async fn a_message_to_two_recipients_reaches_both() {
    let fx = Fixtures::load();
    let cfg = submission(&fx);
    let pool = pool();
    let domain = fx.get("SMTP_DOMAIN");
    let id = unique("pair");
    let rcpts = vec![
        format!("first-{id}@{domain}"),
        format!("second-{id}@{domain}"),
    ];
    let msg = message(&fx, &id, &rcpts);
    let d = pool
        .send_message(&unique("account"), &cfg, &msg)
        .await
        .unwrap();
    sent(&d);
    assert_eq!(d.recipients.len(), 2);
    for (r, addr) in d.recipients.iter().zip(&rcpts) {
        assert_eq!(&r.address, addr);
        assert!(r.is_accepted(), "{r:?}");
        assert_eq!(r.enhanced_code(), Some("2.1.5"));
    }
    pool.close().await;
    for rcpt in &rcpts {
        let got = fx.delivered(&format!("Delivered-To: {rcpt}")).await;
        assert!(got.contains(&format!("Subject: pooled {id}")), "{got}");
    }
}
