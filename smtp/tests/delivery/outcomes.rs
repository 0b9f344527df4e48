//! Outcomes: transient and permanent failures with their replies, per-recipient results,
//! pipelined and one-by-one transactions, a drop in DATA, connection failures.

use super::*;

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
async fn pooled_sessions_send_no_auth_in_clear() {
    let (port, peer) = peer::start(script(vec![greet(EHLO_AUTH), quit()])).await;
    let pool = pool(PoolConfig::default());
    let mut cfg = config(port);
    cfg.security = Security::StartTlsOpportunistic;
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    let env = envelope(&["bob@example.net"]);
    let d = pool.send(&KEY, &cfg, &env, MESSAGE).await.unwrap();
    let MessageOutcome::Permanent { failure } = &d.message else {
        panic!("expected Permanent: {d:#?}");
    };
    assert_eq!(
        (failure.class, failure.phase),
        (FailureClass::StartTlsUnavailable, Phase::Auth)
    );
    assert_eq!(d.recipients[0].status, RecipientStatus::NotTried);
    let log = finish(peer).await;
    assert!(
        !log.lines.iter().any(|l| l.starts_with("AUTH")),
        "{:?}",
        log.lines
    );
    pool.close().await;
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

#[tokio::test]
async fn many_recipients_are_pipelined_in_batches_of_100() {
    let rcpts: Vec<String> = (0..150).map(|i| format!("r{i}@example.net")).collect();
    let lines: Vec<&'static str> = std::iter::once("MAIL FROM:<alice@example.org>".to_owned())
        .chain(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")))
        .chain(std::iter::once("DATA".to_owned()))
        .map(|l| &*Box::leak(l.into_boxed_str()))
        .collect();
    let replies = |n: usize, last: &str| {
        let mut r = "250 2.1.5 Ok\r\n".repeat(n - 1).into_bytes();
        r.extend_from_slice(last.as_bytes());
        r
    };
    let (port, peer) = peer::start(script(vec![
        greet(EHLO_PIPELINING),
        vec![
            Step::ExpectBatch(lines[..100].to_vec()),
            Step::Raw(replies(100, "250 2.1.5 Ok\r\n")),
            Step::ExpectBatch(lines[100..].to_vec()),
            Step::Raw(replies(52, "354 go ahead\r\n")),
            Step::ReadData,
            Step::Say("250 2.0.0 Ok: queued as 4M"),
        ],
        quit(),
    ]))
    .await;
    let pool = pool(PoolConfig::default());
    let env = Envelope::new("alice@example.org", rcpts);
    let d = pool.send(&KEY, &config(port), &env, MESSAGE).await.unwrap();
    assert_eq!(d.queue_id(), Some("4M"), "{d:#?}");
    assert!(d.recipients.iter().all(RecipientResult::is_accepted));
    pool.close().await;
    let log = finish(peer).await;
    let sizes: Vec<usize> = log.batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 52]);
}

#[tokio::test]
async fn the_destination_check_runs_before_any_connection() {
    // Nothing listens on this port: a connect attempt would say CONNECTION_REFUSED.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let policy = DestinationPolicy::with_rules(vec!["127.0.0.0/8".parse().unwrap()], Vec::new());
    let pool: Pool<&str> = Pool::new(PoolConfig::default(), Arc::new(policy));
    let env = envelope(&["bob@example.net"]);
    let d = pool.send(&KEY, &config(port), &env, MESSAGE).await.unwrap();
    let MessageOutcome::Permanent { failure } = &d.message else {
        panic!("expected Permanent: {d:#?}");
    };
    assert_eq!(
        (failure.class, failure.phase),
        (FailureClass::DestinationNotAllowed, Phase::Connect)
    );
    pool.close().await;
}
