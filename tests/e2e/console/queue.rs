//! The console's messages, queue and audit pages, and what an operator may do there, over
//! real HTTP.

use super::http::Browser;
use super::listed;
use super::pages::{console_server, sign_in, token};
use crate::messages::{held_account, message, messages, send, state, wait_for};
use mailplane_proto::v1 as pb;
use mailplane_tests::{account, create_account};
use std::time::{Duration, Instant};

/// Sends a message from `account` to `to`.
async fn send_from(
    c: &mut pb::message_service_client::MessageServiceClient<mailplane_tests::Conn>,
    account: &str,
    to: &str,
) -> pb::Message {
    let m = pb::Message {
        account: account.to_owned(),
        ..message(&[to])
    };
    send(c, m, "").await.unwrap()
}

/// Whether the queue of `account` is paused, by the API.
async fn queue_paused(
    c: &mut pb::message_service_client::MessageServiceClient<mailplane_tests::Conn>,
    account: &str,
) -> bool {
    let request = pb::ListQueueSummariesRequest {};
    listed(c.list_queue_summaries(request), |r| r.queue_summaries)
        .await
        .iter()
        .any(|q| q.account == account && q.paused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_listed_cancelled_and_retried_and_queues_paused_from_the_console() {
    let server = console_server().await;
    let held = held_account(&server, "Held").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let deferring = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: closed.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Closed port")
        },
    )
    .await;
    let mut c = messages(&server);
    let queued = send_from(&mut c, &held.name, "held-ops@example.com").await;
    let deferred = send_from(&mut c, &deferring.name, "closed-ops@example.com").await;
    let deferred = wait_for(&mut c, &deferred.name, pb::MessageState::Deferred).await;
    assert_eq!(deferred.attempts.len(), 1);
    let qid = queued.name.trim_start_matches("messages/");
    let did = deferred.name.trim_start_matches("messages/");

    let mut b = Browser::new(server.ui_addr.unwrap());
    let csrf = sign_in(&mut b, &server.admin_token).await;
    let log = b.get("/messages").await;
    assert_eq!(log.status, 200);
    assert!(
        log.body
            .contains(&format!(r#"data-testid="message-row" data-id="{qid}""#))
    );
    assert!(
        log.body
            .contains(&format!(r#"data-testid="message-row" data-id="{did}""#))
    );
    let filtered = b.get("/messages?recipient=closed-ops&state=DEFERRED").await;
    assert!(filtered.body.contains(&format!(r#"data-id="{did}""#)));
    assert!(!filtered.body.contains(&format!(r#"data-id="{qid}""#)));
    let by_account = b.get(&format!("/messages?account={}", held.id)).await;
    assert!(by_account.body.contains(&format!(r#"data-id="{qid}""#)));
    assert!(!by_account.body.contains(&format!(r#"data-id="{did}""#)));

    // A queued message offers Cancel, not Retry; cancelling it through the console works.
    let page = b.get(&format!("/messages/{qid}")).await;
    assert!(page.body.contains(r#"data-testid="cancel""#));
    assert!(!page.body.contains(r#"data-testid="retry""#));
    let done = b
        .post(&format!("/messages/{qid}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let m = c
        .get_message(pb::GetMessageRequest {
            name: queued.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&m), pb::MessageState::Cancelled);
    let page = b.get(done.location()).await;
    assert!(
        !page.body.contains(r#"data-testid="cancel""#),
        "nothing left to cancel"
    );
    assert!(page.body.contains(r#"data-state="CANCELLED">Cancelled<"#));
    // Cancelling it again (a stale page) shows the message as it is now, and why not.
    let again = b
        .post(&format!("/messages/{qid}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains(r#"data-testid="action-refused""#));
    assert!(again.body.contains(r#"data-state="CANCELLED""#));

    // A deferred message (next attempt a minute away) offers Retry; retrying runs it now.
    let page = b.get(&format!("/messages/{did}")).await;
    assert!(page.body.contains(r#"data-testid="retry""#));
    assert!(page.body.contains(r#"data-testid="attempt-row""#));
    let done = b
        .post(&format!("/messages/{did}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c
            .get_message(pb::GetMessageRequest {
                name: deferred.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if m.attempts.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the retry did not run: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause and resume delivery of an account from the queue.
    let paused = b
        .post(
            &format!("/queue/{}/pause", deferring.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(paused.status, 303);
    assert!(queue_paused(&mut c, &deferring.name).await);
    let queue = b.get("/messages").await;
    assert!(queue.body.contains(r#"data-testid="resume""#));
    let resumed = b
        .post(
            &format!("/queue/{}/resume", deferring.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(resumed.status, 303);
    assert!(!queue_paused(&mut c, &deferring.name).await);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_lists_the_console_sign_in() {
    let server = console_server().await;
    let mut b = Browser::new(server.ui_addr.unwrap());
    sign_in(&mut b, &server.admin_token).await;
    let page = b.get("/audit").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("console/SignIn"), "{}", page.body);
    assert!(page.body.contains(r#"data-testid="event-row""#));
    let none = b.get("/audit?resource=accounts%2F999").await;
    assert!(none.body.contains(r#"data-testid="empty""#));
    let bad = b.get("/audit?start=yesterday").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains(r#"data-testid="error-start""#));
    let ranged = b.get("/audit?start=2000-01-01&end=2999-01-01T00:00").await;
    assert!(ranged.body.contains("console/SignIn"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_credentials_and_the_queue_but_not_connectors_or_the_audit_log() {
    let server = console_server().await;
    let dc = server.create_connector("Operator DC").await;
    create_account(&mut server.accounts(), account("Operated")).await;
    let operator = token(&server, pb::Role::Operator).await;
    let mut b = Browser::new(server.ui_addr.unwrap());
    let csrf = sign_in(&mut b, &operator).await;

    let list = b.get("/credentials").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(r#"id="new-credential""#));
    assert!(!list.body.contains(r#"href="/audit""#));
    let queue = b.get("/messages").await;
    assert!(queue.body.contains(r#"id="message-filters""#));
    assert!(queue.body.contains(r#"data-testid="pause""#));
    let page = b.get(&format!("/connectors/{}", dc.id)).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(r#"id="enroll-form""#));
    assert!(
        !b.get("/connectors")
            .await
            .body
            .contains(r#"id="connector-form""#)
    );
    assert_eq!(b.get("/audit").await.status, 403);
    let forged = b
        .post(
            &format!("/connectors/{}/enrollment-tokens", dc.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(!forged.body.contains("mpe_"));
    server.stop().await.unwrap();
}
