//! The audit log: an event per change in the change's transaction, field-level diffs with
//! secrets redacted, refused calls, filters, and the JSON-lines export.

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account, with_token};
use pb::audit_service_client::AuditServiceClient;
use std::time::{Duration, Instant};
use tonic::Code;

async fn events(server: &TestServer, resource: &str) -> Vec<pb::AuditEvent> {
    AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest {
            resource: resource.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

fn diff(e: &pb::AuditEvent) -> serde_json::Value {
    serde_json::from_str(&e.diff).unwrap()
}

async fn mutations_are_audited_with_diffs_and_no_secrets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut a = server.accounts();
    let created = create_account(&mut a, account("Audited")).await;
    let log = events(&server, &created.name).await;
    assert_eq!(log.len(), 1, "one event per change");
    assert!(
        log[0].actor.contains("bootstrap admin") && log[0].actor.starts_with("tokens/"),
        "{:?}",
        log[0]
    );
    assert_eq!(log[0].rpc, "/mailplane.v1.SmtpAccountService/CreateAccount");
    assert_eq!(log[0].outcome, "ok");
    assert_eq!(diff(&log[0])["account_name"]["after"], "Audited");
    assert!(!log[0].peer.is_empty());

    a.update_account(pb::UpdateAccountRequest {
        account: Some(pb::SmtpAccount {
            name: created.name.clone(),
            host: "relay.example.net".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["host".into()],
        }),
    })
    .await
    .unwrap();
    let log = events(&server, &created.name).await;
    assert_eq!(log.len(), 2);
    let d = diff(&log[0]);
    assert_eq!(
        d["host"],
        serde_json::json!({"before": "smtp.example.com", "after": "relay.example.net"})
    );
    assert_eq!(
        d.as_object().unwrap().len(),
        1,
        "only the changed field: {d}"
    );

    // A change that fails writes no event.
    let before = events(&server, "").await.len();
    let err = a
        .create_account(pb::CreateAccountRequest {
            account: Some(account("AUDITED")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = a
        .delete_account(pb::DeleteAccountRequest {
            name: created.name.clone(),
            etag: "W/\"1\"".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(
        events(&server, "").await.len(),
        before,
        "no event for a change that did not happen"
    );

    // Secrets appear only as <redacted>.
    let secret = "audit-secret-3e9d7c";
    let mut c = server.credentials();
    let cred = c
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "Relay".into(),
                username: "u".into(),
                secret: secret.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    c.update_credential(pb::UpdateCredentialRequest {
        credential: Some(pb::Credential {
            name: cred.name.clone(),
            secret: format!("{secret}-2"),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["secret".into()],
        }),
    })
    .await
    .unwrap();
    let log = events(&server, &cred.name).await;
    assert_eq!(log.len(), 2);
    assert_eq!(
        diff(&log[0])["secret"],
        serde_json::json!({"before": "<redacted>", "after": "<redacted>"})
    );
    assert_eq!(diff(&log[1])["secret"]["after"], "<redacted>");
    let all = events(&server, "").await;
    assert!(
        all.iter().all(|e| !e.diff.contains(secret)),
        "a secret reached the audit log"
    );

    // Connectors, enrollment tokens, API tokens and tests started are audited too.
    let dc = server.create_connector("Audited DC").await;
    server
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: dc.name.clone(),
            ttl: None,
        })
        .await
        .unwrap();
    let log = events(&server, &dc.name).await;
    assert_eq!(log.len(), 2);
    assert_eq!(diff(&log[0])["enrollment_token"]["after"], "<redacted>");
    let token = pb::token_service_client::TokenServiceClient::new(server.channel.clone())
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: "auditor".into(),
                role: pb::Role::Viewer.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let log = events(&server, &token.name).await;
    assert_eq!(diff(&log[0])["token"]["after"], "<redacted>");
    assert!(
        !log[0]
            .diff
            .contains(token.token.rsplit('_').next().unwrap())
    );
    let test = server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: created.name.clone(),
            test: Some(pb::SmtpTest {
                to: "x@example.com".into(),
                stop_after: pb::StopAfter::Connect.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let log = events(&server, &test.name).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].rpc, "/mailplane.v1.SmtpTestService/CreateTest");

    // Refused calls are audited, with who asked.
    let viewer = with_token(&server.raw, Some(&token.token));
    let err = pb::smtp_account_service_client::SmtpAccountServiceClient::new(viewer)
        .create_account(pb::CreateAccountRequest {
            account: Some(account("Nope")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let anonymous = with_token(&server.raw, None);
    let err = pb::smtp_account_service_client::SmtpAccountServiceClient::new(anonymous)
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let denied: Vec<_> = events(&server, "")
        .await
        .into_iter()
        .filter(|e| e.outcome == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied
            .iter()
            .any(|e| e.actor.contains("auditor") && e.rpc.ends_with("CreateAccount"))
    );
    assert!(
        denied
            .iter()
            .any(|e| e.actor == "unauthenticated" && e.rpc.ends_with("ListAccounts"))
    );

    // Filter by actor.
    let by = AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest {
            actor: "auditor".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(by.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_are_audited_sqlite() {
    mutations_are_audited_with_diffs_and_no_secrets(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_are_audited_postgres() {
    mutations_are_audited_with_diffs_and_no_secrets(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_exported_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("audit.jsonl");
    let server =
        TestServer::start_configured(Backend::Sqlite, |c| c.audit_log = Some(sink.clone())).await;
    let mut a = server.accounts();
    let created = create_account(&mut a, account("Exported")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&sink).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(&created.name)) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the event reached the sink within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["resource"], created.name);
    assert_eq!(v["diff"]["account_name"]["after"], "Exported");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_lands_without_its_audit_event() {
    let server = TestServer::start(Backend::Sqlite).await;
    let mut a = server.accounts();
    create_account(&mut a, account("Before")).await;
    // Break the audit log: every change must now fail as a whole, leaving nothing behind.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    sqlx::query("ALTER TABLE audit_events RENAME TO audit_events_gone")
        .execute(&pool)
        .await
        .unwrap();
    let err = a
        .create_account(pb::CreateAccountRequest {
            account: Some(account("After")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(
        !err.message().contains("audit_events"),
        "no detail leaks: {}",
        err.message()
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT account_name FROM accounts")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        names,
        vec!["Before".to_owned()],
        "the change rolled back with its event"
    );
    sqlx::query("ALTER TABLE audit_events_gone RENAME TO audit_events")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    create_account(&mut a, account("After")).await;
    assert_eq!(
        events(&server, "").await.len(),
        3,
        "bootstrap token, Before, After"
    );
    server.stop().await.unwrap();
}
