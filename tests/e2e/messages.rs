//! The outbox's API: SendMessage's validation (nothing is stored for a refused message),
//! cancel and retry rules, filters, the sender role, and accounts whose messages wait. Delivery
//! is in `outbox.rs`.

use mailplane_proto::v1 as pb;
use mailplane_tests::{
    Backend, Conn, TestServer, account, both_backends, create_account, with_token,
};
use pb::message_service_client::MessageServiceClient;
use std::time::{Duration, Instant};
use tonic::Code;

pub(crate) fn messages(server: &TestServer) -> MessageServiceClient<Conn> {
    MessageServiceClient::new(server.channel.clone())
}

pub(crate) fn message(to: &[&str]) -> pb::Message {
    pb::Message {
        to: to.iter().map(|s| (*s).to_owned()).collect(),
        subject: "Disk almost full".into(),
        text_body: "The disk is 95% full.".into(),
        ..Default::default()
    }
}

pub(crate) async fn send(
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

pub(crate) fn state(m: &pb::Message) -> pb::MessageState {
    pb::MessageState::try_from(m.state).unwrap()
}

/// An account whose delivery is paused: its messages wait QUEUED (nothing is lost).
pub(crate) async fn held_account(server: &TestServer, name: &str) -> pb::SmtpAccount {
    let acct = create_account(&mut server.accounts(), account(name)).await;
    messages(server)
        .pause_account_delivery(pb::PauseAccountDeliveryRequest {
            account: acct.name.clone(),
        })
        .await
        .unwrap();
    acct
}

async fn list(c: &mut MessageServiceClient<Conn>) -> Vec<pb::Message> {
    c.list_messages(pb::ListMessagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .messages
}

/// Polls GetMessage until the message is in `want` (the worker runs in the background).
pub(crate) async fn wait_for(
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
    // A paused account's message stays QUEUED: nothing is lost.
    let acct = held_account(server, "Branch").await;
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
    assert!(m.next_attempt_time.is_some(), "{m:?}");
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
    // Paging: newest first, two per page, no repeats.
    let mut names = Vec::new();
    for i in 0..3 {
        let sent = send(
            &mut c,
            pb::Message {
                account: acct.name.clone(),
                ..message(&[&format!("page{i}@example.com")])
            },
            "",
        )
        .await
        .unwrap();
        names.push(sent.name);
    }
    names.reverse();
    names.push(m.name.clone());
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_messages(pb::ListMessagesRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.messages.len() <= 2);
        seen.extend(page.messages.into_iter().map(|m| m.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, names);
}

/// Concurrent SendMessage calls are stored in batches (group commit): one message per
/// request id however the calls fall into batches, each call answered with it.
async fn concurrent_sends_store_one_message_per_request_id(server: &TestServer) {
    let held = held_account(server, "Hold").await;
    let c = messages(server);
    let calls = (0..120).map(|i| {
        let mut c = c.clone();
        let m = pb::Message {
            account: held.name.clone(),
            ..message(&[&format!("ops{i}@example.com")])
        };
        async move { (i, send(&mut c, m, &format!("req-{}", i % 30)).await) }
    });
    let answers = futures::future::join_all(calls).await;
    let mut by_request: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for (i, answer) in answers {
        let stored = answer.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(state(&stored), pb::MessageState::Queued);
        by_request
            .entry(format!("req-{}", i % 30))
            .or_default()
            .insert(stored.name);
    }
    assert_eq!(by_request.len(), 30);
    assert!(
        by_request.values().all(|names| names.len() == 1),
        "{by_request:?}"
    );
    let listed = messages(server)
        .list_messages(pb::ListMessagesRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(listed.len(), 30, "one message per request id");
}

both_backends!(
    validation_errors_store_nothing,
    cancel_and_retry_follow_the_state_rules,
    concurrent_sends_store_one_message_per_request_id
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_role_may_send_and_get_only() {
    let server = TestServer::start(Backend::Sqlite).await;
    held_account(&server, "Hold").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_messages_waiting_cannot_be_deleted() {
    let server = TestServer::start(Backend::Sqlite).await;
    let mut a = server.accounts();
    let acct = held_account(&server, "Wait").await;
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
