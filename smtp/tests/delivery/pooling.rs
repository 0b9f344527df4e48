//! Pooling: reconnecting after the relay closed an idle connection or said 421, RSET
//! between messages, the per-connection message limit, the idle reaper, the per-key bound.

use super::*;
use mailplane_testkit::logs::capture_tracing;

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
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    // The scripted relay speaks in clear.
    cfg.allow_plaintext_auth = true;
    let env = envelope(&["bob@example.net"]);
    let (logs, guard) = capture_tracing();
    let first = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    let second = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    drop(guard);
    let logged = logs.text();
    assert!(logged.contains("AUTH PLAIN <redacted>"), "{logged}");
    assert!(!logged.contains(SECRET), "{logged}");
    assert!(!logged.contains(&base64_plain("alice", SECRET)), "{logged}");
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

/// Refuses every address.
struct Nowhere;

impl mailplane_smtp::DestinationCheck for Nowhere {
    fn check(&self, addr: std::net::SocketAddr) -> Result<(), mailplane_smtp::Denied> {
        Err(mailplane_smtp::Denied {
            addr,
            rule: "nowhere".into(),
        })
    }
}

#[tokio::test]
async fn send_with_reports_data_only_when_the_message_goes_out_and_uses_its_check() {
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PLAIN),
        vec![
            Step::Expect("MAIL FROM:<alice@example.org>"),
            Step::Say("250 2.1.0 Ok"),
            Step::Expect("RCPT TO:<nobody@example.net>"),
            Step::Say("550 5.1.1 no such user"),
        ],
        vec![Step::ExpectAlone("RSET"), Step::Say("250 2.0.0 Ok")],
        one_by_one("250 2.0.0 Ok: queued as 4A"),
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let cfg = config(port);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let on_data = || {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    };
    let options = mailplane_smtp::SendOptions {
        check: None,
        on_data: Some(&on_data),
    };
    // Every recipient refused: no DATA, no call.
    let refused = pool
        .send_with(
            &KEY,
            &cfg,
            &envelope(&["nobody@example.net"]),
            MESSAGE,
            options,
        )
        .await
        .unwrap();
    assert!(matches!(refused.message, MessageOutcome::Permanent { .. }));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let sent = pool
        .send_with(
            &KEY,
            &cfg,
            &envelope(&["bob@example.net"]),
            MESSAGE,
            options,
        )
        .await
        .unwrap();
    assert_eq!(sent.queue_id(), Some("4A"));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A check that refuses everything: a new connection (another key) is never opened.
    let denied = pool
        .send_with(
            &"account-2",
            &cfg,
            &envelope(&["bob@example.net"]),
            MESSAGE,
            mailplane_smtp::SendOptions {
                check: Some(&Nowhere),
                on_data: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        denied.message.failure().map(|f| f.class),
        Some(mailplane_smtp::FailureClass::DestinationNotAllowed)
    );
    pool.close().await;
    let log = finish(peer).await;
    assert_eq!(log.connections, 1);
}
