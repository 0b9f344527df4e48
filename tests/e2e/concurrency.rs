//! Writes under concurrent calls: the single default account, etags, references, and (on
//! PostgreSQL, two replicas) no lock that every write waits on.

use crate::messages::{message, messages, send};
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, both_backends, create_account};
use pb::token_service_client::TokenServiceClient;
use sqlx::Connection as _;
use std::time::Duration;
use tonic::Code;

both_backends!(
    one_default_under_concurrent_set_default,
    one_default_under_concurrent_creates,
    concurrent_updates_with_one_etag_apply_once,
    an_account_never_refers_to_a_deleted_connector
);

async fn defaults(server: &TestServer) -> usize {
    server
        .accounts()
        .list_accounts(pb::ListAccountsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .accounts
        .iter()
        .filter(|a| a.is_default)
        .count()
}

async fn one_default_under_concurrent_set_default(server: &TestServer) {
    let mut c = server.accounts();
    let mut names = Vec::new();
    for i in 0..10 {
        names.push(
            create_account(&mut c, account(&format!("Concurrent {i}")))
                .await
                .name,
        );
    }
    let calls = (0..60).map(|i| {
        let mut c = server.accounts();
        let name = names[i % names.len()].clone();
        tokio::spawn(async move {
            c.set_default_account(pb::SetDefaultAccountRequest { name })
                .await
        })
    });
    let results = futures::future::join_all(calls).await;
    for r in results {
        let r = r.unwrap();
        assert!(r.is_ok(), "every call succeeds: {:?}", r.err());
    }
    assert_eq!(
        defaults(server).await,
        1,
        "exactly one default after 60 concurrent calls"
    );
}

async fn one_default_under_concurrent_creates(server: &TestServer) {
    // With an empty table, each of these might think it is the first account.
    let calls = (0..50).map(|i| {
        let mut c = server.accounts();
        tokio::spawn(async move {
            c.create_account(pb::CreateAccountRequest {
                account: Some(pb::SmtpAccount {
                    is_default: i % 2 == 0,
                    ..account(&format!("Racer {i}"))
                }),
            })
            .await
        })
    });
    for r in futures::future::join_all(calls).await {
        assert!(r.unwrap().is_ok());
    }
    assert_eq!(defaults(server).await, 1);
}

async fn concurrent_updates_with_one_etag_apply_once(server: &TestServer) {
    let created = create_account(&mut server.accounts(), account("Etag race")).await;
    let calls = (0..20).map(|i| {
        let mut c = server.accounts();
        let (name, etag) = (created.name.clone(), created.etag.clone());
        tokio::spawn(async move {
            c.update_account(pb::UpdateAccountRequest {
                account: Some(pb::SmtpAccount {
                    name,
                    etag,
                    reply_to_email: format!("writer{i}@example.com"),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["reply_to_email".into()],
                }),
            })
            .await
        })
    });
    let results = futures::future::join_all(calls).await;
    let mut applied = 0;
    for r in results {
        match r.unwrap() {
            Ok(_) => applied += 1,
            Err(e) => assert_eq!(e.code(), Code::Aborted, "{}", e.message()),
        }
    }
    assert_eq!(
        applied, 1,
        "one etag, one change; the others are told it is stale"
    );
    let now = server
        .accounts()
        .get_account(pb::GetAccountRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(now.etag, created.etag);
}

async fn an_account_never_refers_to_a_deleted_connector(server: &TestServer) {
    let acct = create_account(&mut server.accounts(), account("Connector race")).await;
    for round in 0..10 {
        let connector = server.create_connector(&format!("Race {round}")).await;
        let mut accounts = server.accounts();
        let (name, parent) = (acct.name.clone(), connector.name.clone());
        let point = tokio::spawn(async move {
            accounts
                .update_account(pb::UpdateAccountRequest {
                    account: Some(pb::SmtpAccount {
                        name,
                        use_network_connector: true,
                        network_connector: parent,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["use_network_connector".into(), "network_connector".into()],
                    }),
                })
                .await
        });
        let mut connectors = server.connectors();
        let name = connector.name.clone();
        let delete = tokio::spawn(async move {
            connectors
                .delete_connector(pb::DeleteConnectorRequest {
                    name,
                    ..Default::default()
                })
                .await
        });
        let (pointed, deleted) = (point.await.unwrap(), delete.await.unwrap());
        let now = server
            .accounts()
            .get_account(pb::GetAccountRequest {
                name: acct.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        // One of the two won; never both.
        assert!(
            pointed.is_ok() != deleted.is_ok(),
            "round {round}: update {pointed:?}, delete {deleted:?}"
        );
        if deleted.is_ok() {
            assert_ne!(now.network_connector, connector.name, "round {round}");
        } else {
            assert_eq!(now.network_connector, connector.name, "round {round}");
            // Free the account for the next round.
            server
                .accounts()
                .update_account(pb::UpdateAccountRequest {
                    account: Some(pb::SmtpAccount {
                        name: acct.name.clone(),
                        use_network_connector: false,
                        network_connector: String::new(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["use_network_connector".into(), "network_connector".into()],
                    }),
                })
                .await
                .unwrap();
        }
    }
}

/// How many of this database's sessions wait for a lock.
async fn waiting_for_locks(db: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_account_write_holds_up_no_other_write() {
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.start_replica().await;
    let stalled = create_account(&mut a.accounts(), account("Stalled")).await;
    let other = create_account(&mut a.accounts(), account("Other")).await;
    let id: i64 = stalled.name["accounts/".len()..].parse().unwrap();

    // Another session locks the account's row, as a slow writer would, so that an update of
    // it stalls inside its write transaction.
    let url = a.pg.as_ref().unwrap().url.clone();
    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut c = a.accounts();
    let name = stalled.name.clone();
    let update = tokio::spawn(async move {
        c.update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name,
                reply_to_email: "changed@example.com".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["reply_to_email".into()],
            }),
        })
        .await
    });
    let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while waiting_for_locks(&mut watcher).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the update never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every other kind of write goes through meanwhile, on either replica.
    let others = async {
        b.credentials()
            .create_credential(pb::CreateCredentialRequest {
                credential: Some(pb::Credential {
                    display_name: "During the stall".into(),
                    username: "u".into(),
                    secret: "s3cret-during".into(),
                    allowed_destinations: mailplane_tests::test_destinations(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        a.create_connector("During the stall").await;
        TokenServiceClient::new(b.channel.clone())
            .create_token(pb::CreateTokenRequest {
                token: Some(pb::ApiToken {
                    display_name: "during".into(),
                    role: pb::Role::Viewer.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let m = message(&["stall@mailplane.test"]);
        send(
            &mut messages(&b),
            pb::Message {
                account: other.name.clone(),
                ..m
            },
            "",
        )
        .await
        .unwrap();
        messages(&a)
            .pause_account_delivery(pb::PauseAccountDeliveryRequest {
                account: other.name.clone(),
            })
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), others)
        .await
        .expect("writes that do not touch the stalled account must not wait for it");
    assert!(!update.is_finished(), "the stalled update still waits");
    tx.commit().await.unwrap();
    let updated = update.await.unwrap().unwrap().into_inner();
    assert_eq!(updated.reply_to_email, "changed@example.com");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
