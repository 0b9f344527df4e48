//! Migration 0013 on a database that has credentials and accounts from before it: each
//! credential gets the host and port of every account that uses it (IPv6 in brackets), and one
//! that no account uses gets none, so it can be used nowhere until an admin sets them. The
//! database is taken back to before 0013 (its column dropped, its row in `_sqlx_migrations`
//! removed), and the server migrates it again at start-up.

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account, test_destinations};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_existing_credentials_get_their_accounts_destinations() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (used, unused) = seed(&server).await;
    let config = server.config.clone();
    let path = server.sqlite_path();
    let (stopped, dir) = server.stop_keeping_data().await;
    stopped.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    undo_0013(&pool).await;
    pool.close().await;
    let server = TestServer::start_with(config, dir, None).await;
    check(&server, &used, &unused).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_existing_credentials_get_their_accounts_destinations() {
    let server = TestServer::start(Backend::Postgres).await;
    let (used, unused) = seed(&server).await;
    let url = server.pg.as_ref().unwrap().url.clone();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    undo_0013(&pool).await;
    pool.close().await;
    // A second replica on the database migrates it at start-up.
    let replica = server.start_replica().await;
    check(&replica, &used, &unused).await;
    replica.stop().await.unwrap();
    server.stop().await.unwrap();
}

/// Takes the database back to before migration 0013.
async fn undo_0013<DB: sqlx::Database>(pool: &sqlx::Pool<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    for sql in [
        "ALTER TABLE credentials DROP COLUMN allowed_destinations",
        "DELETE FROM _sqlx_migrations WHERE version = 13",
    ] {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
    }
}

/// A credential used by three accounts (one of them twice on the same host and port, one on
/// an IPv6 address) and one that no account uses.
async fn seed(server: &TestServer) -> (String, String) {
    let c = server.credentials();
    let create = |destinations: Vec<String>| {
        let mut c = c.clone();
        async move {
            c.create_credential(pb::CreateCredentialRequest {
                credential: Some(pb::Credential {
                    display_name: "Relay".into(),
                    username: "u".into(),
                    secret: "migrated-secret".into(),
                    allowed_destinations: destinations,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .name
        }
    };
    let mut wide = test_destinations();
    wide.push("[2001:db8::1]:465".into());
    let used = create(wide).await;
    let unused = create(test_destinations()).await;
    let mut a = server.accounts();
    for (name, host, port) in [
        ("One", "smtp.example.com", 587),
        ("Two", "smtp.example.com", 587),
        ("Three", "LOCALHOST", 2525),
        ("Four", "[2001:db8::1]", 465),
    ] {
        create_account(
            &mut a,
            pb::SmtpAccount {
                host: host.into(),
                port,
                use_authentication: true,
                credential: used.clone(),
                ..account(name)
            },
        )
        .await;
    }
    (used, unused)
}

async fn check(server: &TestServer, used: &str, unused: &str) {
    let mut c = server.credentials();
    let get = |name: &str| {
        let mut c = c.clone();
        let name = name.to_owned();
        async move {
            c.get_credential(pb::GetCredentialRequest { name })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(
        get(used).await.allowed_destinations,
        [
            "[2001:db8::1]:465",
            "localhost:2525",
            "smtp.example.com:587"
        ]
    );
    assert!(get(unused).await.allowed_destinations.is_empty());
    // The unused credential can be used nowhere until its destinations are set.
    let err = server
        .accounts()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::SmtpAccount {
                use_authentication: true,
                credential: unused.into(),
                ..account("Unused")
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("admin must set them"),
        "{}",
        err.message()
    );
    let set = c
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: unused.into(),
                allowed_destinations: vec!["smtp.example.com:587".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["allowed_destinations".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.allowed_destinations, ["smtp.example.com:587"]);
}
