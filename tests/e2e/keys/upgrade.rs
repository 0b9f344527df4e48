//! A database and key file from before key rotation (no key ids, one bare key, the token HMAC
//! key derived from the key): the server migrates it at start-up, the existing token and secret
//! keep working, everything counts as sealed under key 1, and a rotation then works. The
//! database is taken back to before migration 0015, and the key file to a bare key.

use super::{create_credential, open};
use mailplane_proto::v1 as pb;
use mailplane_server::domain::CredentialId;
use mailplane_server::domain::keys::Plan;
use mailplane_server::keys::Keys;
use mailplane_server::keys::rotate::RotateOptions;
use mailplane_tests::{Backend, TestServer};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_database_from_before_key_rotation_keeps_working() {
    let server = TestServer::start(Backend::Sqlite).await;
    let id = create_credential(&server, "u", "legacy-secret").await;
    let config = server.config.clone();
    let path = server.sqlite_path();
    let (stopped, dir) = server.stop_keeping_data().await;
    stopped.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    undo_0015(&pool).await;
    pool.close().await;
    bare_key_file(&config.key_path());
    let server = TestServer::start_with(config, dir, None).await;
    check(&server, id).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_database_from_before_key_rotation_keeps_working() {
    let server = TestServer::start(Backend::Postgres).await;
    let id = create_credential(&server, "u", "legacy-secret").await;
    let pool = sqlx::PgPool::connect(&server.pg.as_ref().unwrap().url)
        .await
        .unwrap();
    undo_0015(&pool).await;
    pool.close().await;
    bare_key_file(&server.config.key_path());
    // A replica (with a copy of the bare key file) migrates the database at start-up.
    let replica = server.start_replica().await;
    check(&replica, id).await;
    replica.stop().await.unwrap();
    server.stop().await.unwrap();
}

/// Takes the database back to before migration 0015.
async fn undo_0015<DB: sqlx::Database>(pool: &sqlx::Pool<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    for sql in [
        "DROP INDEX credentials_secret_key_id",
        "ALTER TABLE credentials DROP COLUMN secret_key_id",
        "DELETE FROM meta WHERE key IN ('api_token_key', 'primary_key_id')",
        "UPDATE meta SET key = 'key_check' WHERE key = 'key_check:1'",
        "ALTER TABLE meta DROP COLUMN key_id",
        "ALTER TABLE connector_jobs DROP COLUMN job_key_id",
        "DELETE FROM _sqlx_migrations WHERE version = 15",
    ] {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
    }
}

/// Rewrites the key file as the one bare key of the first versions.
fn bare_key_file(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("1 "))
        .expect("key 1")
        .trim()
        .to_owned();
    std::fs::write(path, format!("{hex}\n")).unwrap();
}

async fn check(server: &TestServer, id: i64) {
    // The token made before works: its hash key is the one derived from key 1.
    server
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: format!("credentials/{id}"),
        })
        .await
        .expect("the token made before the upgrade works");
    let mut keys = open(server).await;
    let status = keys.status().await.unwrap();
    assert_eq!((status.primary, status.pending), (1, 0), "{status:?}");
    let one = &status.keys[0];
    assert_eq!(one.usage.credentials, 1);
    assert_eq!(one.usage.values, ["agent_ca", "api_token_key"]);
    let (opened, created) = Keys::load(&server.config.key_path(), Arc::clone(keys.store()))
        .await
        .unwrap();
    assert!(!created);
    let secret = opened.credential_secret(CredentialId(id)).await.unwrap();
    assert_eq!(secret.expose(), "legacy-secret");
    // And a rotation works from there.
    let report = keys
        .rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(report.plan, Plan::Generate(2));
    assert_eq!(report.reencrypted, 3);
    let secret = opened.credential_secret(CredentialId(id)).await.unwrap();
    assert_eq!(secret.expose(), "legacy-secret");
    server
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: format!("credentials/{id}"),
        })
        .await
        .expect("the token works after the rotation");
}
