//! A message built from an [`OutgoingMessage`] (to + cc + bcc, text + HTML, footer, a
//! binary attachment), sent through the pool to the real Postfix + Dovecot started by
//! `deploy/smtp-fixtures/setup.sh`, and read back from the Maildir, one copy per
//! recipient. Without the fixtures' `env` file this test fails, on purpose.

// Test helpers outside #[test] functions may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mailplane_smtp::*;
use mailplane_testkit::SmtpFixtures as Fixtures;

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
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

/// 100 KB of pseudo-random bytes (xorshift), with every byte value at the start.
fn binary_content() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while bytes.len() < 100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.push((x >> 24) as u8);
    }
    bytes
}

/// The header block of a delivered message (the Maildir file has LF line endings).
fn header_block(message: &str) -> &str {
    &message[..message.find("\n\n").unwrap() + 1]
}

/// The body of the MIME part whose headers contain `marker`, up to the next boundary.
fn part_body(message: &str, marker: &str) -> String {
    let at = message
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {message}"));
    let start = at + message[at..].find("\n\n").unwrap() + 2;
    message[start..]
        .lines()
        .take_while(|line| !line.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn to_cc_bcc_html_footer_and_attachment_arrive_intact() {
    let fx = Fixtures::load();
    let domain = fx.get("SMTP_DOMAIN");
    let id = unique("outgoing");
    let to = format!("to-{id}@{domain}");
    let cc = format!("cc-{id}@{domain}");
    let bcc = format!("bcc-{id}@{domain}");
    let content = binary_content();
    let message = OutgoingMessage {
        sender: format!("Mailplane Outgoing <sender-{id}@{domain}>"),
        reply_to: Some(format!("replies-{id}@{domain}")),
        to: vec![format!("To Person <{to}>")],
        cc: vec![cc.clone()],
        bcc: vec![bcc.clone()],
        subject: format!("outgoing {id}"),
        text_body: Some("Hello.\n.\nA lone dot above.\n".into()),
        html_body: Some("<html><body><p>Hello.</p></body></html>".into()),
        footer: Some("Sent with mailplane".into()),
        attachments: vec![Attachment {
            filename: "random.bin".into(),
            content_type: "application/octet-stream".into(),
            content: content.clone(),
        }],
        extra_headers: vec![("X-Mailplane-Test".into(), id.clone())],
        ..OutgoingMessage::default()
    };
    let built = message.build().unwrap();
    assert!(message.estimated_size() >= built.size());
    assert_eq!(built.envelope_to, [to.clone(), cc.clone(), bcc.clone()]);

    let pool = Pool::new(
        PoolConfig::default(),
        Arc::new(DestinationPolicy::default()),
    );
    let d = pool
        .send_message(&unique("account"), &submission(&fx), &built)
        .await
        .unwrap();
    assert!(
        matches!(d.message, MessageOutcome::Sent { .. }),
        "{:#?}",
        d.message
    );
    assert_eq!(d.recipients.len(), 3);
    assert!(d.recipients.iter().all(|r| r.is_accepted()), "{d:#?}");
    pool.close().await;

    for rcpt in [&to, &cc, &bcc] {
        let got = fx.delivered(&format!("Delivered-To: {rcpt}")).await;
        let headers = header_block(&got);
        assert!(
            headers.contains(&format!("Subject: outgoing {id}\n")),
            "{got}"
        );
        assert!(
            headers.contains(&format!("\nTo: \"To Person\" <{to}>\n")),
            "{headers}"
        );
        assert!(headers.contains(&format!("\nCc: {cc}\n")), "{headers}");
        assert!(
            headers.contains(&format!("\nReply-To: replies-{id}@{domain}\n")),
            "{headers}"
        );
        assert!(
            headers.contains(&format!("\nX-Mailplane-Test: {id}\n")),
            "{headers}"
        );
        assert!(
            headers.contains(&format!("\nMessage-ID: {}\n", built.message_id)),
            "{headers}"
        );
        assert!(
            !headers.to_ascii_lowercase().contains("\nbcc:"),
            "a Bcc header arrived at {rcpt}: {headers}"
        );
        assert!(
            !headers
                .lines()
                .any(|l| (l.starts_with("To:") || l.starts_with("Cc:")) && l.contains(&bcc)),
            "{headers}"
        );
        assert!(
            headers.contains(&format!("Return-Path: <sender-{id}@{domain}>")),
            "{headers}"
        );
        assert!(got.contains("Content-Type: multipart/mixed;"), "{got}");
        assert!(
            got.contains("Content-Type: multipart/alternative;"),
            "{got}"
        );
        assert_eq!(
            part_body(&got, "Content-Type: text/plain"),
            "Hello.\n.\nA lone dot above.\n\nSent with mailplane\n"
        );
        assert_eq!(
            part_body(&got, "Content-Type: text/html"),
            "<html><body><p>Hello.</p><p>Sent with mailplane</p>\n</body></html>\n"
        );
        let encoded = part_body(&got, "filename=\"random.bin\"");
        let decoded = STANDARD.decode(encoded.replace('\n', "")).unwrap();
        assert_eq!(decoded.len(), content.len(), "{rcpt}");
        assert!(
            decoded == content,
            "the attachment changed on its way to {rcpt}"
        );
    }
}
