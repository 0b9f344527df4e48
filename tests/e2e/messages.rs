//! The outbox: SendMessage's validation (nothing is stored for a refused message),
//! idempotency, cancel and retry rules, the sender role, and delivery through the real Postfix
//! (cc and bcc read back from the Maildir) and through the scripted fault peer (a transient
//! failure then success; one recipient of three refused).

use mailplane_proto::v1 as pb;
use mailplane_testkit::peer::{self, Step};
use mailplane_tests::{
    Backend, Conn, SmtpFixtures, TestServer, account, both_backends, create_account, with_token,
};
use pb::message_service_client::MessageServiceClient;
use std::time::{Duration, Instant};
use tonic::Code;

fn messages(server: &TestServer) -> MessageServiceClient<Conn> {
    MessageServiceClient::new(server.channel.clone())
}

fn message(to: &[&str]) -> pb::Message {
    pb::Message {
        to: to.iter().map(|s| (*s).to_owned()).collect(),
        subject: "Disk almost full".into(),
        text_body: "The disk is 95% full.".into(),
        ..Default::default()
    }
}

async fn send(
    c: &mut MessageServiceClient<Conn>,
    m: pb::Message,
    request_id: &str,
) -> Result<pb::Message, tonic::Status> {
    c.send_message(pb::SendMessageRequest {
        message: Some(m),
        request_id: request_id.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

fn state(m: &pb::Message) -> pb::MessageState {
    pb::MessageState::try_from(m.state).unwrap()
}

async fn list(c: &mut MessageServiceClient<Conn>) -> Vec<pb::Message> {
    c.list_messages(pb::ListMessagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .messages
}

/// Polls GetMessage until the message is in `want` (the worker runs in the background).
async fn wait_for(
    c: &mut MessageServiceClient<Conn>,
    name: &str,
    want: pb::MessageState,
) -> pb::Message {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c
            .get_message(pb::GetMessageRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        if state(&m) == want {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {want:?}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn validation_errors_store_nothing(server: &TestServer) {
    let mut a = server.accounts();
    let plain = create_account(
        &mut a,
        pb::SmtpAccount {
            plain_text_only: true,
            force_settings: true,
            attachment_size_limit_bytes: 1000,
            ..account("Plain")
        },
    )
    .await;
    let disabled = create_account(
        &mut a,
        pb::SmtpAccount {
            enabled: Some(false),
            ..account("Off")
        },
    )
    .await;
    let mut c = messages(server);
    let many: Vec<String> = (0..101).map(|i| format!("r{i}@example.com")).collect();
    let cases: Vec<(pb::Message, Code, &str)> = vec![
        (
            message(&[]),
            Code::InvalidArgument,
            "at least one recipient",
        ),
        (
            pb::Message {
                to: many,
                ..message(&[])
            },
            Code::InvalidArgument,
            "at most 100",
        ),
        (
            pb::Message {
                headers: vec![pb::MessageHeader {
                    name: "Subject2".into(),
                    value: "x".into(),
                }],
                ..message(&["a@example.com"])
            },
            Code::InvalidArgument,
            "X-*",
        ),
        (
            pb::Message {
                text_body: String::new(),
                html_body: "<p>hi</p>".into(),
                ..message(&["a@example.com"])
            },
            Code::FailedPrecondition,
            "plain text only",
        ),
        (
            pb::Message {
                from: "someone@example.com".into(),
                ..message(&["a@example.com"])
            },
            Code::FailedPrecondition,
            "forces its settings",
        ),
        (
            pb::Message {
                attachments: vec![pb::MessageAttachment {
                    filename: "big.bin".into(),
                    content: vec![7; 2000],
                    ..Default::default()
                }],
                ..message(&["a@example.com"])
            },
            Code::InvalidArgument,
            "attachment_size_limit_bytes",
        ),
        (
            pb::Message {
                account: disabled.name.clone(),
                ..message(&["a@example.com"])
            },
            Code::FailedPrecondition,
            "disabled",
        ),
        (
            pb::Message {
                account: "accounts/999999".into(),
                ..message(&["a@example.com"])
            },
            Code::NotFound,
            "",
        ),
    ];
    for (m, code, needle) in cases {
        // The first account is the default: an empty `account` sends through it.
        assert!(m.account.is_empty() || m.account != plain.name);
        let status = send(&mut c, m, "").await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "{status:?}");
    }
    assert!(list(&mut c).await.is_empty(), "nothing was stored");
}

async fn cancel_and_retry_follow_the_state_rules(server: &TestServer) {
    // Through a network connector, a message stays QUEUED (and says why): nothing is lost.
    let connector = server.create_connector("Branch").await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..account("Branch")
        },
    )
    .await;
    let mut c = messages(server);
    let m = send(
        &mut c,
        pb::Message {
            account: acct.name.clone(),
            ..message(&["ops@example.com"])
        },
        "",
    )
    .await
    .unwrap();
    assert_eq!(state(&m), pb::MessageState::Queued);
    assert!(m.last_error.contains("network connector"), "{m:?}");
    assert_eq!(m.recipients.len(), 1);
    let retried = c
        .retry_message(pb::RetryMessageRequest {
            name: m.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(retried.code(), Code::FailedPrecondition, "{retried:?}");
    let cancelled = c
        .cancel_message(pb::CancelMessageRequest {
            name: m.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&cancelled), pb::MessageState::Cancelled);
    for code in [
        c.cancel_message(pb::CancelMessageRequest {
            name: m.name.clone(),
        })
        .await
        .unwrap_err()
        .code(),
        c.retry_message(pb::RetryMessageRequest {
            name: m.name.clone(),
        })
        .await
        .unwrap_err()
        .code(),
    ] {
        assert_eq!(code, Code::FailedPrecondition);
    }
    let missing = c
        .get_message(pb::GetMessageRequest {
            name: "messages/999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Filters: by account and state.
    let page = c
        .list_messages(pb::ListMessagesRequest {
            filter: Some(pb::MessageFilter {
                account: acct.name.clone(),
                state: pb::MessageState::Cancelled.into(),
                recipient: "OPS@".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].name, m.name);
}

both_backends!(
    validation_errors_store_nothing,
    cancel_and_retry_follow_the_state_rules
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_role_may_send_and_get_only() {
    let server = TestServer::start(Backend::Sqlite).await;
    let connector = server.create_connector("Hold").await;
    create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..account("Hold")
        },
    )
    .await;
    let token = pb::token_service_client::TokenServiceClient::new(server.channel.clone())
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: "billing system".into(),
                role: pb::Role::Sender.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let channel = with_token(&server.raw, Some(&token.token));
    let mut c = MessageServiceClient::new(channel.clone());
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    let got = c
        .get_message(pb::GetMessageRequest {
            name: m.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, m.name);
    let denied = c
        .list_messages(pb::ListMessagesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = c
        .cancel_message(pb::CancelMessageRequest { name: m.name })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = pb::smtp_account_service_client::SmtpAccountServiceClient::new(channel)
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await.unwrap();
}

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

async fn peer_server(port: u16) -> (TestServer, String) {
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
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
    let (server, _) = peer_server(port).await;
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
    let (server, _) = peer_server(port).await;
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
    // Through a connector the message waits QUEUED, so the first server never sends it.
    let connector = server.create_connector("Later").await;
    let acct = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..account("Crash")
        },
    )
    .await;
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
                    s.use_network_connector = false;
                    s.network_connector = None;
                    s.host = "127.0.0.1".into();
                    s.port = port;
                    s.security = mailplane_server::domain::Security::None;
                    Ok(())
                },
            )
            .await
            .unwrap();
        let now = mailplane_server::domain::now_micros();
        let claimed = store.claim_due(now, 10).await.unwrap();
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
async fn an_account_with_messages_waiting_cannot_be_deleted() {
    let server = TestServer::start(Backend::Sqlite).await;
    let connector = server.create_connector("Wait").await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..account("Wait")
        },
    )
    .await;
    let mut c = messages(&server);
    let m = send(&mut c, message(&["ops@example.com"]), "")
        .await
        .unwrap();
    let delete = |name: String| pb::DeleteAccountRequest {
        name,
        ..Default::default()
    };
    let refused = a
        .delete_account(delete(acct.name.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("waiting for delivery"),
        "{refused:?}"
    );
    c.cancel_message(pb::CancelMessageRequest { name: m.name })
        .await
        .unwrap();
    a.delete_account(delete(acct.name)).await.unwrap();
    server.stop().await.unwrap();
}
