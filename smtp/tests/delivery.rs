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

#[tokio::test]
async fn mail_451_is_transient_then_the_same_message_goes_out_after_rset() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PLAIN),
        vec![
            Step::ExpectAlone("MAIL FROM:<alice@example.org>"),
            Step::Say("451 4.3.0 Try again later"),
            Step::ExpectAlone("RSET"),
            Step::Say("250 2.0.0 Ok"),
        ],
        one_by_one("250 2.0.0 Ok: queued as 4Q1"),
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let cfg = config(port);
    let env = envelope(&["bob@example.net"]);
    let first = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    let failure = transient(&first);
    assert_eq!(failure.class, FailureClass::TemporaryFailure);
    assert_eq!(failure.phase, Phase::MailFrom);
    let reply = failure.reply.as_ref().unwrap();
    assert_eq!(
        (reply.code, reply.enhanced.as_deref()),
        (451, Some("4.3.0"))
    );
    assert!(failure.hint.contains("451"), "{}", failure.hint);
    assert_eq!(first.recipients[0].status, RecipientStatus::NotTried);
    assert_eq!(first.connection, ConnectionUse::Fresh);
    assert_eq!(pool.idle_connections(&KEY), 1);

    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(sent(&second).0.as_deref(), Some("4Q1"));
    assert_eq!(second.queue_id(), Some("4Q1"));
    assert_eq!(second.connection, ConnectionUse::Reused);
    assert!(second.recipients[0].is_accepted());
    pool.close().await;
    let log = finish(peer).await;
    assert_eq!(log.connections, 1);
    assert_eq!(log.data, DATA);
}

#[tokio::test]
async fn rcpt_451_is_transient_per_recipient_then_succeeds() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PIPELINING),
        vec![
            Step::ExpectBatch(vec![
                "MAIL FROM:<alice@example.org>",
                "RCPT TO:<bob@example.net>",
                "DATA",
            ]),
            Step::Raw(
                b"250 2.1.0 Ok\r\n451 4.7.1 Greylisted\r\n554 5.5.1 No valid recipients\r\n"
                    .to_vec(),
            ),
            Step::ExpectAlone("RSET"),
            Step::Say("250 2.0.0 Ok"),
            Step::ExpectBatch(vec![
                "MAIL FROM:<alice@example.org>",
                "RCPT TO:<bob@example.net>",
                "DATA",
            ]),
            Step::Raw(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n".to_vec()),
            Step::ReadData,
            Step::Say("250 2.0.0 Ok: queued as 4Q2"),
        ],
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let cfg = config(port);
    let env = envelope(&["bob@example.net"]);
    let first = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    let failure = transient(&first);
    assert_eq!(failure.phase, Phase::RcptTo);
    assert_eq!(failure.class, FailureClass::TemporaryFailure);
    assert_eq!(failure.reply.as_ref().unwrap().code, 451);
    match &first.recipients[0].status {
        RecipientStatus::Rejected { severity, reply } => {
            assert_eq!(*severity, Severity::Transient);
            assert_eq!(reply.enhanced.as_deref(), Some("4.7.1"));
        }
        other => panic!("{other:?}"),
    }
    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(second.queue_id(), Some("4Q2"));
    pool.close().await;
    let log = finish(peer).await;
    assert_eq!(log.connections, 1);
}

#[tokio::test]
async fn one_of_three_recipients_refused_pipelined_in_one_batch_and_sent() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PIPELINING),
        vec![
            Step::ExpectBatch(vec![
                "MAIL FROM:<alice@example.org>",
                "RCPT TO:<bob@example.net>",
                "RCPT TO:<nobody@example.net>",
                "RCPT TO:<carol@example.net>",
                "DATA",
            ]),
            Step::Raw(
                b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@example.net>: User unknown\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"
                    .to_vec(),
            ),
            Step::ReadData,
            Step::Say("250 2.0.0 Ok: queued as 4Q3"),
        ],
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let env = envelope(&["bob@example.net", "nobody@example.net", "carol@example.net"]);
    let d = pool.send(&KEY, &config(port), &env, MESSAGE).await.unwrap();
    assert_eq!(sent(&d).0.as_deref(), Some("4Q3"));
    assert_eq!(sent(&d).1.code, 250);
    let accepted: Vec<&str> = d
        .recipients
        .iter()
        .filter(|r| r.is_accepted())
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(accepted, ["bob@example.net", "carol@example.net"]);
    let refused = &d.recipients[1];
    assert_eq!(refused.address, "nobody@example.net");
    assert_eq!(refused.enhanced_code(), Some("5.1.1"));
    assert!(matches!(
        refused.status,
        RecipientStatus::Rejected {
            severity: Severity::Permanent,
            ..
        }
    ));
    pool.close().await;
    let log = finish(peer).await;
    assert_eq!(
        log.batches,
        [vec![
            "MAIL FROM:<alice@example.org>",
            "RCPT TO:<bob@example.net>",
            "RCPT TO:<nobody@example.net>",
            "RCPT TO:<carol@example.net>",
            "DATA",
        ]]
    );
    assert_eq!(log.data, DATA);
}

#[tokio::test]
async fn without_pipelining_commands_go_one_by_one_and_all_refused_is_permanent() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PLAIN),
        vec![
            Step::ExpectAlone("MAIL FROM:<alice@example.org>"),
            Step::Say("250 2.1.0 Ok"),
            Step::ExpectAlone("RCPT TO:<x@example.net>"),
            Step::Say("550 5.1.1 User unknown"),
            Step::ExpectAlone("RCPT TO:<y@example.net>"),
            Step::Say("553 5.1.3 Bad address"),
        ],
        // No DATA: nothing was accepted.
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let env = envelope(&["x@example.net", "y@example.net"]);
    let d = pool.send(&KEY, &config(port), &env, MESSAGE).await.unwrap();
    let MessageOutcome::Permanent { failure } = &d.message else {
        panic!("expected Permanent: {d:#?}");
    };
    assert_eq!(failure.class, FailureClass::RecipientRejected);
    assert_eq!(failure.phase, Phase::RcptTo);
    assert_eq!(failure.reply.as_ref().unwrap().code, 550);
    assert!(!d.message.is_transient());
    assert!(d.recipients.iter().all(|r| !r.is_accepted()));
    pool.close().await;
    let log = finish(peer).await;
    assert!(log.batches.is_empty());
    assert!(log.data.is_empty());
}

#[tokio::test]
async fn a_drop_during_data_is_transient_and_ambiguous() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PLAIN),
        vec![
            Step::ExpectAlone("MAIL FROM:<alice@example.org>"),
            Step::Say("250 2.1.0 Ok"),
            Step::ExpectAlone("RCPT TO:<bob@example.net>"),
            Step::Say("250 2.1.5 Ok"),
            Step::ExpectAlone("DATA"),
            Step::Say("354 go ahead"),
            Step::ReadSomeThenClose(10),
        ],
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let env = envelope(&["bob@example.net"]);
    let d = pool.send(&KEY, &config(port), &env, MESSAGE).await.unwrap();
    let MessageOutcome::AmbiguousAfterData { failure } = &d.message else {
        panic!("expected AmbiguousAfterData: {d:#?}");
    };
    assert!(d.message.is_transient());
    assert_eq!(failure.phase, Phase::Data);
    assert_eq!(failure.class, FailureClass::TemporaryFailure);
    assert_eq!(failure.reply, None);
    assert!(d.recipients[0].is_accepted());
    // The broken connection is not pooled.
    assert_eq!(pool.idle_connections(&KEY), 0);
    pool.close().await;
    finish(peer).await;
}

#[tokio::test]
async fn a_relay_that_closed_the_idle_connection_is_reconnected_transparently() {
    let closed = Arc::new(Notify::new());
    let (port, peer) = peer::start_many(vec![
        script(vec![
            greet(EHLO_PLAIN),
            one_by_one("250 2.0.0 Ok: queued as 4A"),
            vec![Step::CloseAndNotify(Arc::clone(&closed))],
        ]),
        script(vec![
            greet(EHLO_PLAIN),
            one_by_one("250 2.0.0 Ok: queued as 4B"),
            quit(),
        ]),
    ])
    .await;
    let pool = pool(PoolConfig::default());
    let cfg = config(port);
    let env = envelope(&["bob@example.net"]);
    let first = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(first.queue_id(), Some("4A"));
    assert_eq!(pool.idle_connections(&KEY), 1);
    // The relay hangs up while the connection sits in the pool.
    closed.notified().await;
    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(second.queue_id(), Some("4B"));
    assert_eq!(second.connection, ConnectionUse::Reconnected);
    pool.close().await;
    let log = finish(peer).await;
    assert_eq!(log.connections, 2);
    // The stale connection got only the RSET that found it dead (or nothing at all).
    assert_eq!(log.data, [DATA, DATA].concat());
}

/// 421 to `RSET` or to `MAIL FROM` on a reused connection: a new connection, once.
async fn reconnect_after_421(on_rset: bool) {
    let mut stale = vec![Step::ExpectAlone("RSET")];
    if on_rset {
        stale.push(Step::Say("421 4.4.2 mail.example.net Timeout, closing"));
    } else {
        stale.extend([
            Step::Say("250 2.0.0 Ok"),
            Step::ExpectAlone("MAIL FROM:<alice@example.org>"),
            Step::Say("421 4.3.2 Shutting down"),
        ]);
    }
    stale.push(Step::Close);
    let (port, peer) = peer::start_many(vec![
        script(vec![
            greet(EHLO_PLAIN),
            one_by_one("250 2.0.0 Ok: queued as 4A"),
            stale,
        ]),
        script(vec![
            greet(EHLO_PLAIN),
            one_by_one("250 2.0.0 Ok: queued as 4B"),
            quit(),
        ]),
    ])
    .await;
    let pool = pool(PoolConfig::default());
    let cfg = config(port);
    let env = envelope(&["bob@example.net"]);
    assert_eq!(
        pool.send(&KEY, &cfg, &env, MESSAGE)
            .await
            .unwrap()
            .queue_id(),
        Some("4A")
    );
    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(second.queue_id(), Some("4B"), "{second:#?}");
    assert_eq!(second.connection, ConnectionUse::Reconnected);
    pool.close().await;
    let log = finish(peer).await;
    assert_eq!(log.connections, 2);
}

#[tokio::test]
async fn reply_421_to_rset_reconnects() {
    reconnect_after_421(true).await;
}

#[tokio::test]
async fn reply_421_to_mail_on_a_reused_connection_reconnects() {
    reconnect_after_421(false).await;
}

#[tokio::test]
async fn two_messages_over_one_connection_with_rset_exact_bytes_and_auth_once() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_AUTH),
        vec![
            Step::ExpectAlone("AUTH PLAIN "),
            Step::Say("235 2.7.0 Authentication successful"),
        ],
        one_by_one("250 2.0.0 Ok: queued as 4A"),
        vec![Step::ExpectAlone("RSET"), Step::Say("250 2.0.0 Ok")],
        one_by_one("250 2.0.0 Ok: queued as 4B"),
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let mut cfg = config(port);
    cfg.auth = Some(Credentials::new(
        AuthMechanism::Plain,
        "alice",
        Secret::new(SECRET),
    ));
    let env = envelope(&["bob@example.net"]);
    let first = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(
        (first.queue_id(), second.queue_id()),
        (Some("4A"), Some("4B"))
    );
    assert_eq!(
        (first.connection, second.connection),
        (ConnectionUse::Fresh, ConnectionUse::Reused)
    );
    let shown = format!("{first:?} {second:?} {pool:?} {cfg:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    pool.close().await;
    let log = finish(peer).await;
    let auth = format!(
        "AUTH PLAIN {}",
        base64_plain("alice", SECRET) // the peer saw the real thing, once
    );
    assert_eq!(
        log.lines,
        [
            "EHLO client.example.org",
            auth.as_str(),
            "MAIL FROM:<alice@example.org>",
            "RCPT TO:<bob@example.net>",
            "DATA",
            "RSET",
            "MAIL FROM:<alice@example.org>",
            "RCPT TO:<bob@example.net>",
            "DATA",
            "QUIT",
        ]
    );
    assert_eq!(log.data, [DATA, DATA].concat());
}

fn base64_plain(user: &str, secret: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{secret}"))
}

#[tokio::test]
async fn the_message_limit_forces_a_new_connection() {
    let conn = |queue| {
        script(vec![
            greet(EHLO_PLAIN),
            one_by_one(queue),
            quit(), // right after the message: the limit is reached
        ])
    };
    let (port, peer) = peer::start_many(vec![
        conn("250 2.0.0 Ok: queued as 4A"),
        conn("250 2.0.0 Ok: queued as 4B"),
    ])
    .await;
    let pool = pool(PoolConfig {
        max_messages_per_connection: 1,
        ..PoolConfig::default()
    });
    let cfg = config(port);
    let env = envelope(&["bob@example.net"]);
    let first = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(pool.idle_connections(&KEY), 0);
    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    assert_eq!(
        (first.queue_id(), second.queue_id()),
        (Some("4A"), Some("4B"))
    );
    assert_eq!(second.connection, ConnectionUse::Fresh);
    pool.close().await;
    assert_eq!(finish(peer).await.connections, 2);
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_quit_by_the_reaper() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PLAIN),
        one_by_one("250 2.0.0 Ok: queued as 4A"),
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig {
        idle_timeout: Duration::from_millis(50),
        reap_interval: Duration::from_millis(10),
        ..PoolConfig::default()
    });
    let env = envelope(&["bob@example.net"]);
    let d = pool.send(&KEY, &config(port), &env, MESSAGE).await.unwrap();
    assert_eq!(d.queue_id(), Some("4A"));
    // The peer's script ends only when the QUIT arrived; the pool is still open.
    let log = finish(peer).await;
    assert_eq!(log.lines.last().map(String::as_str), Some("QUIT"));
    assert_eq!(pool.idle_connections(&KEY), 0);
    pool.close().await;
}

#[tokio::test]
async fn sessions_per_key_are_bounded() {
    // One connection only: a second one at the same time would get no greeting.
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PLAIN),
        one_by_one("250 2.0.0 Ok: queued as 4A"),
        vec![Step::ExpectAlone("RSET"), Step::Say("250 2.0.0 Ok")],
        one_by_one("250 2.0.0 Ok: queued as 4A"),
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig {
        max_sessions_per_key: 1,
        ..PoolConfig::default()
    });
    let cfg = config(port);
    let env = envelope(&["bob@example.net"]);
    let (a, b) = tokio::join!(
        pool.send(&KEY, &cfg, &env, MESSAGE),
        pool.send(&KEY, &cfg, &env, MESSAGE)
    );
    assert_eq!(a.unwrap().queue_id(), Some("4A"));
    assert_eq!(b.unwrap().queue_id(), Some("4A"));
    pool.close().await;
    assert_eq!(finish(peer).await.connections, 1);
}

#[tokio::test]
async fn connection_failures_are_classified_like_run_session() {
    let (port, peer) = peer::start(script(vec![greet(EHLO_PLAIN), quit()])).await;
    let pool = pool(PoolConfig::default());
    let mut cfg = config(port);
    cfg.security = Security::StartTlsRequired;
    let env = envelope(&["bob@example.net"]);
    let d = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    let MessageOutcome::Permanent { failure } = &d.message else {
        panic!("expected Permanent: {d:#?}");
    };
    assert_eq!(failure.class, FailureClass::StartTlsUnavailable);
    assert_eq!(failure.phase, Phase::StartTls);
    assert_eq!(d.recipients[0].status, RecipientStatus::NotTried);
    finish(peer).await;

    // Nothing listens on a closed port: transient.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let d = pool
        .send(&KEY, &config(closed_port), &env, MESSAGE)
        .await
        .unwrap();
    assert_eq!(transient(&d).class, FailureClass::ConnectionRefused);
    pool.close().await;
}

#[tokio::test]
async fn a_closed_pool_and_bad_envelopes_send_nothing() {
    let pool = pool(PoolConfig::default());
    let cfg = config(9);
    let bad = Envelope::new("alice@example.org\r\nRSET", vec!["bob@example.net".into()]);
    assert!(matches!(
        pool.send(&KEY, &cfg, &bad, MESSAGE).await,
        Err(PoolError::InvalidAddress(_))
    ));
    assert!(matches!(
        pool.send(&KEY, &cfg, &envelope(&[]), MESSAGE).await,
        Err(PoolError::NoRecipient)
    ));
    pool.close().await;
    let env = envelope(&["bob@example.net"]);
    assert!(matches!(
        pool.send(&KEY, &cfg, &env, MESSAGE).await,
        Err(PoolError::Closed)
    ));
}

#[test]
fn the_send_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = pool(PoolConfig::default());
        let cfg = config(9);
        let env = envelope(&["bob@example.net"]);
        let fut = pool.send(&KEY, &cfg, &env, MESSAGE);
        is_send(&fut);
        drop(fut);
        pool.close().await;
    });
}
