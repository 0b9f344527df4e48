//! Storage: encryption at rest (no plaintext in the database, the key file, key mismatches),
//! start-up errors, and migrations when replicas start at once.

use crate::credentials::create_credential;
use mailplane_proto::v1 as pb;
use mailplane_server::StartupError;
use mailplane_server::crypto::KeyError;
use mailplane_tests::{Backend, PgDatabase, TestServer};
use std::os::unix::fs::PermissionsExt;

const SECRET: &str = "plaintext-must-not-be-on-disk-7f3a";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_holds_no_plaintext_secret() {
    let server = TestServer::start(Backend::Sqlite).await;
    let key_mode = std::fs::metadata(server.data_dir.path().join("mailplane.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        key_mode & 0o777,
        0o600,
        "a fresh install writes its key file 0600"
    );
    let cred = create_credential(&server, pb::CredentialKind::Password, SECRET).await;
    // Rotate too, so old and new ciphertexts are both on disk (WAL) and both checked.
    server
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: cred.name.clone(),
                secret: format!("{SECRET}-2"),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secret".into()],
            }),
        })
        .await
        .unwrap();
    let dir = server.data_dir.path().to_path_buf();
    let mut scanned = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("mailplane.db"))
        {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !contains(&bytes, SECRET),
                "{} holds the plaintext secret",
                path.display()
            );
            scanned += bytes.len();
        }
    }
    assert!(scanned > 0, "the database files were found and read");

    // The secret is really stored: it decrypts with the key file.
    let config = server.config.clone();
    let (stopped, _data) = server.stop_keeping_data().await;
    stopped.unwrap();
    let state = mailplane_server::server::open_state(&config).await.unwrap();
    let secret = state
        .keys
        .credential_secret(mailplane_server::domain::CredentialId(cred.id))
        .await
        .unwrap();
    assert_eq!(secret.expose(), format!("{SECRET}-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_hold_no_plaintext_secret() {
    let server = TestServer::start(Backend::Postgres).await;
    create_credential(&server, pb::CredentialKind::Password, SECRET).await;
    let url = server.pg.as_ref().unwrap().url.clone();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(c)::text FROM credentials c")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains(SECRET));
    let ciphertext: Vec<u8> = sqlx::query_scalar("SELECT secret_ciphertext FROM credentials")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!contains(&ciphertext, SECRET) && ciphertext.len() >= SECRET.len() + 16);
    pool.close().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_key_fails_at_startup() {
    let server = TestServer::start(Backend::Sqlite).await;
    create_credential(&server, pb::CredentialKind::Password, SECRET).await;
    let config = server.config.clone();
    let key = config.data_dir.join("mailplane.key");
    let original = std::fs::read(&key).unwrap();
    let (stopped, _data) = server.stop_keeping_data().await;
    stopped.unwrap();

    // Another valid key: refused, with a message that says what to do.
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StartupError::Key(KeyError::Mismatch { id: 1, .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not match this database"),
        "{err}"
    );

    // A missing key: refused, and no new key is generated over the old secrets.
    std::fs::remove_file(&key).unwrap();
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StartupError::Key(KeyError::Missing(_))),
        "{err}"
    );
    assert!(!key.exists());

    // A key file others can read (a new file with the usual umask): refused, with the fix.
    std::fs::write(&key, "garbage").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            StartupError::Key(KeyError::Permissions { mode: 0o644, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");

    // Garbage: refused as malformed.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StartupError::Key(KeyError::Malformed { .. })),
        "{err}"
    );

    // The right key again: the server starts.
    std::fs::write(&key, original).unwrap();
    assert!(mailplane_server::server::open_state(&config).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = mailplane_server::ServerConfig {
        database_url: Some("postgres://nobody:hunter2@127.0.0.1:1/none".into()),
        ..mailplane_server::ServerConfig::new(dir.path().to_path_buf())
    };
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is redacted: {text}"
    );
    let config = mailplane_server::ServerConfig {
        database_url: Some("mysql://x".into()),
        ..config
    };
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartupError::Config(_)), "{err}");
}

/// The harness leaves no PostgreSQL database behind, even when the test using it panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_test_database_is_removed_after_a_panic() {
    let (name_tx, name_rx) = tokio::sync::oneshot::channel();
    let failing = tokio::spawn(async move {
        let server = TestServer::start(Backend::Postgres).await;
        let name = server.pg.as_ref().map(|p| p.name.clone()).unwrap();
        assert!(mailplane_tests::PgDatabase::exists(&name).await);
        name_tx.send(name).unwrap();
        panic!("a test that fails while its server runs");
    });
    let err = failing.await.unwrap_err();
    assert!(err.is_panic(), "{err}");
    let name = name_rx.await.unwrap();
    assert!(
        !mailplane_tests::PgDatabase::exists(&name).await,
        "{name} is still there after the test panicked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_on_an_empty_postgres_migrate_it_once() {
    let mut db = PgDatabase::create().await;
    let url = mailplane_server::store::DatabaseUrl::Postgres(db.url.clone());
    let (a, b, c) = tokio::join!(
        mailplane_server::store::open(&url),
        mailplane_server::store::open(&url),
        mailplane_server::store::open(&url),
    );
    let stores = [a.unwrap(), b.unwrap(), c.unwrap()];
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (applied, distinct): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(applied, distinct, "a migration ran twice");
    assert_eq!(usize::try_from(applied).unwrap(), files);
    drop(stores);
    conn.close().await.unwrap();
    db.drop_db().await;
}
