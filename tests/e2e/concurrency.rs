//! The single default account under concurrent calls.

use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account};

both_backends!(
    one_default_under_concurrent_set_default,
    one_default_under_concurrent_creates
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
