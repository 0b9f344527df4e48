//! The outbox's delivery: through the real Postfix (cc and bcc read back from the Maildir,
//! idempotency), through the scripted fault peer (a transient failure then success; one
//! recipient of three refused), and after a crash (a message left SENDING is sent on restart).

use crate::messages::{message, messages, send, wait_for};
use mailplane_proto::v1 as pb;
use mailplane_testkit::peer::{self, Step};
use mailplane_tests::{Backend, SmtpFixtures, TestServer, account, create_account};
use std::time::Duration;

async fn fixture_server(fx: &SmtpFixtures, backend: Backend) -> TestServer {
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    TestServer::start_configured(backend, |c| c.smtp.extra_ca_pem = Some(ca)).await
}

/// How many delivered messages contain `needle`.
fn copies(fx: &SmtpFixtures, needle: &str) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(fx.maildir().join(sub)).ok())
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|text| text.contains(needle)))
        .count()
}

async fn delivers_through_postfix(backend: Backend) {
    let fx = SmtpFixtures::load();
    let server = fixture_server(&fx, backend).await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "fixture".into(),
                username: fx.var("SMTP_USER"),
                secret: fx.var("SMTP_PASSWORD"),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let acct = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            sender_email: "Alerts <alerts@mailplane.test>".into(),
            host: "localhost".into(),
            port: fx.port("SMTP_PORT_SUBMISSION").into(),
            security: pb::SecurityMode::StarttlsRequired.into(),
            use_authentication: true,
            credential: cred,
            ..account("Outbox")
        },
    )
    .await;
    let tag = format!("{:08x}", rand::random::<u32>());
    let (to, cc, bcc) = (
        format!("to-{tag}@mailplane.test"),
        format!("cc-{tag}@mailplane.test"),
        format!("bcc-{tag}@mailplane.test"),
    );
    let subject = format!("Outbox {tag}");
    let m = pb::Message {
        account: acct.name.clone(),
        to: vec![to.clone()],
        cc: vec![cc.clone()],
        bcc: vec![bcc.clone()],
        subject: subject.clone(),
        text_body: "Backup finished.".into(),
        headers: vec![pb::MessageHeader {
            name: "X-Ticket".into(),
            value: tag.clone(),
        }],
        ..Default::default()
    };
    let mut c = messages(&server);
    let request_id = format!("req-{tag}");
    let first = send(&mut c, m.clone(), &request_id).await.unwrap();
    let again = send(&mut c, m, &request_id).await.unwrap();
    assert_eq!(
        first.name, again.name,
        "the same request id is the same message"
    );
    let sent = wait_for(&mut c, &first.name, pb::MessageState::Sent).await;
    assert_eq!(sent.recipients.len(), 3);
    for r in &sent.recipients {
        assert_eq!(r.state, i32::from(pb::RecipientState::Accepted), "{r:?}");
    }
    let kinds: Vec<i32> = sent.recipients.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            pb::RecipientKind::To,
            pb::RecipientKind::Cc,
            pb::RecipientKind::Bcc
        ]
        .map(i32::from)
    );
    assert_eq!(sent.attempts.len(), 1, "{sent:?}");
    assert!(!sent.attempts[0].relay_queue_id.is_empty(), "{sent:?}");
    assert_eq!(sent.attempts[0].reply_code, 250);
    let mail = fx.delivered(&bcc).await;
    let headers = mail.split("\n\n").next().unwrap().to_owned();
    assert!(
        headers.contains(&format!("Subject: {subject}")),
        "{headers}"
    );
    assert!(headers.contains(&format!("Cc: {cc}")), "{headers}");
    assert!(headers.contains(&format!("X-Ticket: {tag}")), "{headers}");
    assert!(
        !headers.to_ascii_lowercase().contains("\nbcc:"),
        "{headers}"
    );
    fx.delivered(&to).await;
    fx.delivered(&cc).await;
    // One copy per recipient: the repeated request sent nothing new.
    assert_eq!(copies(&fx, &subject), 3);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_through_postfix_with_cc_and_bcc_sqlite() {
    delivers_through_postfix(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_through_postfix_with_cc_and_bcc_postgres() {
    delivers_through_postfix(Backend::Postgres).await;
}

/// A relay that accepts one message (on the recipients `rcpt` answers) and then waits.
fn accepting(rcpt: Vec<&'static str>) -> Vec<Step> {
    let mut steps = vec![
        Step::Say("220 peer ESMTP"),
        Step::Expect("EHLO"),
        Step::Say("250 peer"),
        Step::Expect("MAIL FROM"),
        Step::Say("250 2.1.0 Ok"),
    ];
    for reply in rcpt {
        steps.push(Step::Expect("RCPT TO"));
        steps.push(Step::Say(reply));
    }
    steps.extend([
        Step::Expect("DATA"),
        Step::Say("354 go ahead"),
        Step::ReadData,
        Step::Say("250 2.0.0 Ok: queued as PEER42"),
        Step::ReadUntilClosed,
    ]);
    steps
}

async fn peer_server(port: u16, backend: Backend) -> (TestServer, String) {
    let server = TestServer::start_configured(backend, |c| {
        c.outbox.retry.base = Duration::from_millis(200);
    })
    .await;
    let acct = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Peer")
        },
    )
    .await;
    (server, acct.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_until_sent() {
    let (port, peer) = peer::start_many(vec![
        vec![Step::Say("421 4.3.2 busy, try later"), Step::Close],
        accepting(vec!["250 2.1.5 Ok"]),
    ])
    .await;
    let (server, _) = peer_server(port, Backend::Sqlite).await;
    let mut c = messages(&server);
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    assert_eq!(sent.attempts.len(), 2, "{sent:?}");
    assert_eq!(sent.attempts[0].reply_code, 421);
    assert_eq!(
        sent.attempts[0].failure_class,
        i32::from(pb::FailureClass::TemporaryFailure)
    );
    assert_eq!(sent.attempts[1].relay_queue_id, "PEER42");
    server.stop().await.unwrap();
    let log = peer.await.unwrap();
    assert_eq!(log.error, None);
    assert_eq!(log.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_recipient_of_three_is_not_retried() {
    let (port, peer) = peer::start(accepting(vec![
        "250 2.1.5 Ok",
        "550 5.1.1 no such user",
        "250 2.1.5 Ok",
    ]))
    .await;
    let (server, _) = peer_server(port, Backend::Sqlite).await;
    let mut c = messages(&server);
    let m = send(
        &mut c,
        message(&["a@example.com", "b@example.com", "c@example.com"]),
        "",
    )
    .await
    .unwrap();
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    let states: Vec<i32> = sent.recipients.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            pb::RecipientState::Accepted,
            pb::RecipientState::Rejected,
            pb::RecipientState::Accepted
        ]
        .map(i32::from)
    );
    assert!(sent.recipients[1].last_reply.contains("550"), "{sent:?}");
    server.stop().await.unwrap();
    let log = peer.await.unwrap();
    assert_eq!(log.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_sending_by_a_dead_server_is_delivered_after_restart() {
    let (port, peer) = peer::start(accepting(vec!["250 2.1.5 Ok"])).await;
    let server = TestServer::start(Backend::Sqlite).await;
    // Paused, the message waits QUEUED, so the first server never sends it.
    let acct = crate::messages::held_account(&server, "Crash").await;
    let m = send(&mut messages(&server), message(&["ops@example.com"]), "")
        .await
        .unwrap();
    let config = server.config.clone();
    let db = server.sqlite_path();
    let (stopped, data_dir) = server.stop_keeping_data().await;
    stopped.unwrap();
    // What a server that died mid-delivery leaves behind: the message claimed, SENDING.
    {
        use mailplane_server::domain::AccountId;
        use mailplane_server::store::{DatabaseUrl, open};
        let store = open(&DatabaseUrl::Sqlite(db)).await.unwrap();
        let id: i64 = acct.name.trim_start_matches("accounts/").parse().unwrap();
        store
            .update_account(
                &mailplane_server::audit::AuditContext::system(),
                AccountId(id),
                None,
                &|s| {
                    s.host = "127.0.0.1".into();
                    s.port = port;
                    s.security = mailplane_server::domain::Security::None;
                    Ok(())
                },
            )
            .await
            .unwrap();
        store
            .set_delivery_paused(
                &mailplane_server::audit::AuditContext::system(),
                AccountId(id),
                false,
            )
            .await
            .unwrap();
        let now = mailplane_server::domain::now_micros();
        let claimed = store
            .claim_due(
                now,
                10,
                4,
                &mailplane_server::domain::replica::ReplicaId::new(),
            )
            .await
            .unwrap()
            .messages;
        assert_eq!(claimed.len(), 1);
    }
    let server = TestServer::start_with(config, data_dir, None).await;
    let mut c = messages(&server);
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    assert_eq!(sent.attempts.len(), 1, "{sent:?}");
    assert_eq!(sent.attempts[0].relay_queue_id, "PEER42");
    server.stop().await.unwrap();
    assert_eq!(peer.await.unwrap().error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_account_keeps_queueing_and_delivers_when_resumed_sqlite() {
    paused_then_resumed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_account_keeps_queueing_and_delivers_when_resumed_postgres() {
    paused_then_resumed(Backend::Postgres).await;
}

async fn paused_then_resumed(backend: Backend) {
    let (port, peer) = peer::start(accepting(vec!["250 2.1.5 Ok"])).await;
    let (server, acct) = peer_server(port, backend).await;
    let mut c = messages(&server);
    let paused = c
        .pause_account_delivery(pb::PauseAccountDeliveryRequest {
            account: acct.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    let summaries = c
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue_summaries;
    assert_eq!(summaries.len(), 1);
    let s = &summaries[0];
    assert_eq!(
        (s.account.as_str(), s.queued_count, s.paused),
        (acct.as_str(), 1, true)
    );
    assert!(s.oldest_create_time.is_some());
    let resumed = c
        .resume_account_delivery(pb::ResumeAccountDeliveryRequest {
            account: acct.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    let s = c
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue_summaries;
    assert_eq!(
        (s[0].queued_count, s[0].sending_count, s[0].deferred_count),
        (0, 0, 0)
    );
    assert!(s[0].oldest_create_time.is_none());
    let missing = c
        .pause_account_delivery(pb::PauseAccountDeliveryRequest {
            account: "accounts/999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
    assert_eq!(peer.await.unwrap().error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_messages_are_purged_after_their_retention() {
    let (port, peer) = peer::start(accepting(vec!["250 2.1.5 Ok"])).await;
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.outbox.log_retention = Duration::ZERO;
        c.outbox.sweep_interval = Duration::from_millis(50);
    })
    .await;
    create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Purge")
        },
    )
    .await;
    let mut c = messages(&server);
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    // Sent, then purged at the next sweep: GetMessage no longer finds it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match c
            .get_message(pb::GetMessageRequest {
                name: m.name.clone(),
            })
            .await
        {
            Err(status) if status.code() == tonic::Code::NotFound => break,
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
    let log = peer.await.unwrap();
    assert_eq!(log.error, None);
    assert!(
        !log.data.is_empty(),
        "the message was sent before it was purged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_data_waits_for_a_person_then_retry_sends_it() {
    let (port, peer) = peer::start_many(vec![
        vec![
            Step::Say("220 peer ESMTP"),
            Step::Expect("EHLO"),
            Step::Say("250 peer"),
            Step::Expect("MAIL FROM"),
            Step::Say("250 2.1.0 Ok"),
            Step::Expect("RCPT TO"),
            Step::Say("250 2.1.5 Ok"),
            Step::Expect("DATA"),
            Step::Say("354 go ahead"),
            Step::ReadSomeThenClose(10),
        ],
        accepting(vec!["250 2.1.5 Ok"]),
    ])
    .await;
    let (server, _) = peer_server(port, Backend::Sqlite).await;
    let mut c = messages(&server);
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    // The relay may have it: no automatic retry.
    let deferred = wait_for(&mut c, &m.name, pb::MessageState::Deferred).await;
    assert!(deferred.next_attempt_time.is_none(), "{deferred:?}");
    assert!(deferred.last_error.contains("RetryMessage"), "{deferred:?}");
    assert_eq!(
        deferred.recipients[0].state,
        i32::from(pb::RecipientState::Pending)
    );
    c.retry_message(pb::RetryMessageRequest {
        name: m.name.clone(),
    })
    .await
    .unwrap();
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    assert_eq!(sent.attempts.len(), 2, "{sent:?}");
    assert_eq!(sent.attempts[1].relay_queue_id, "PEER42");
    server.stop().await.unwrap();
    let log = peer.await.unwrap();
    assert_eq!(log.error, None);
    assert_eq!(log.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_a_stuck_delivery_to_the_queue_within_the_drain_time() {
    let (port, _peer) = peer::start(vec![
        Step::Say("220 peer ESMTP"),
        Step::Expect("EHLO"),
        Step::Say("250 peer"),
        Step::Expect("MAIL FROM"),
        Step::Say("250 2.1.0 Ok"),
        Step::Expect("RCPT TO"),
        Step::Say("250 2.1.5 Ok"),
        Step::Expect("DATA"),
        Step::Say("354 go ahead"),
        Step::ReadData,
        Step::Stall,
    ])
    .await;
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.drain_timeout = Duration::from_millis(500);
    })
    .await;
    create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Stuck")
        },
    )
    .await;
    let mut c = messages(&server);
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    wait_for(&mut c, &m.name, pb::MessageState::Sending).await;
    let db = server.sqlite_path();
    let started = std::time::Instant::now();
    let (stopped, _dir) = server.stop_keeping_data().await;
    stopped.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop waited {:?} for a stuck relay",
        started.elapsed()
    );
    let store = mailplane_server::store::open(&mailplane_server::store::DatabaseUrl::Sqlite(db))
        .await
        .unwrap();
    let id = m.name.trim_start_matches("messages/").parse().unwrap();
    let stored = store
        .get_message(mailplane_server::domain::message::MessageId(id))
        .await
        .unwrap();
    assert_eq!(
        stored.state,
        mailplane_server::domain::message::MessageState::Queued,
        "{stored:?}"
    );
    assert!(
        stored.attempts.is_empty(),
        "no attempt was recorded: {stored:?}"
    );
}
