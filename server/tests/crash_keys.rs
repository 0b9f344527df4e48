//! `kill -9` of the real `mailplane keys rotate` mid-way (small batches, a server serving
//! beside it): run again, it resumes the same rotation (no new key), finishes, and every secret
//! still decrypts to what was stored, through `mailplane keys verify` and the store. On SQLite
//! and on PostgreSQL.

// Helpers of integration tests are not `#[test]` functions, so clippy's test allowances do not
// reach them; a panic is how a test reports, and every spawned process is waited for or killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::zombie_processes)]

mod support;

use futures::StreamExt as _;
use mailplane_proto::v1 as pb;
use mailplane_proto::v1::credential_service_client::CredentialServiceClient;
use mailplane_server::cli::{ClientArgs, Conn, connect_with, output};
use mailplane_server::crypto::Keyring;
use mailplane_server::domain::CredentialId;
use mailplane_server::keys::Keys;
use mailplane_server::keys::rotate::{Maintenance, Status};
use mailplane_server::store::DatabaseUrl;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{BIN, Pg, admin_token, serve};

/// Credentials made before the rotation.
const CREDENTIALS: usize = 2000;

async fn client(addr: &str, token: &str, ca: &Path) -> CredentialServiceClient<Conn> {
    let args = ClientArgs {
        server: addr.to_owned(),
        output: output::Format::Table,
        token: Some(token.to_owned()),
        tls_ca: Some(ca.to_owned()),
        tls_fingerprint: None,
        insecure_plaintext: false,
    };
    CredentialServiceClient::new(connect_with(&args).await.unwrap())
}

async fn create(c: &CredentialServiceClient<Conn>, secret: String) -> (i64, String) {
    let created = c
        .clone()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "crash".into(),
                username: "u".into(),
                secret: secret.clone(),
                allowed_destinations: vec!["smtp.example.com".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    (created.id, secret)
}

/// `mailplane keys ARGS… --data-dir DIR [--database-url URL]`.
fn keys_command(dir: &Path, database_url: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MAILPLANE_DATABASE_URL")
        .env_remove("MAILPLANE_KEY_FILE")
        .env_remove("MAILPLANE_CONFIG");
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    command
}

/// Runs a `mailplane keys` command to its end; its standard output.
fn keys_output(dir: &Path, database_url: Option<&str>, args: &[&str]) -> String {
    let out = keys_command(dir, database_url, args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "mailplane keys {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Credentials under key 2, and the status.
fn moved(status: &Status) -> u64 {
    status
        .keys
        .iter()
        .find(|k| k.id == 2)
        .map_or(0, |k| k.usage.credentials)
}

fn key_ids(path: &Path) -> Vec<u32> {
    Keyring::load(path).unwrap().unwrap().ids().collect()
}

async fn kill_mid_rotation_and_resume(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec![];
    if let Some(url) = database_url {
        extra.extend(["--database-url", url]);
    }
    let (server, addr, _logs) = serve(dir.path(), &extra);
    let mut server = Server(server);
    let token = admin_token(dir.path());
    let ca: PathBuf = dir.path().join("ca.pem");
    let c = client(&addr, &token, &ca).await;
    let run = rand::random::<u32>();
    let mut expected: Vec<(i64, String)> = futures::stream::iter(0..CREDENTIALS)
        .map(|i| create(&c, format!("crash-{run:08x}-{i}")))
        .buffer_unordered(16)
        .collect()
        .await;
    expected.sort();

    let url = match database_url {
        Some(u) => DatabaseUrl::Postgres(u.to_owned()),
        None => DatabaseUrl::Sqlite(dir.path().join("mailplane.db")),
    };
    let key_file = dir.path().join("mailplane.key");
    let watch = Maintenance::open(&url, key_file.clone()).await.unwrap();
    let mut rotate = keys_command(
        dir.path(),
        database_url,
        &["rotate", "--batch-size", "10", "--pause-ms", "5"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Kill it once some, not all, are re-encrypted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let status = watch.status().await.unwrap();
        let n = moved(&status);
        if status.primary == 2 && n > 0 && status.pending > 0 {
            break n;
        }
        assert!(
            rotate.try_wait().unwrap().is_none(),
            "the rotation ended before it could be killed: {status:?}"
        );
        assert!(
            Instant::now() < deadline,
            "no progress within 60 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    rotate.kill().unwrap();
    rotate.wait().unwrap();
    let status = watch.status().await.unwrap();
    assert_eq!(status.primary, 2);
    assert!(status.pending > 0, "the rotation is unfinished: {status:?}");
    assert!(moved(&status) < CREDENTIALS as u64, "{status:?}");
    let json = keys_output(dir.path(), database_url, &["status", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(shown["rotation_in_progress"], true, "{json}");
    assert_eq!(shown["primary_key"], 2, "{json}");
    assert_eq!(key_ids(&key_file), [1, 2]);

    // The server kept serving, sealing new secrets under key 2.
    let late = create(&c, format!("crash-{run:08x}-late")).await;
    expected.push(late);

    let out = keys_output(dir.path(), database_url, &["rotate", "--batch-size", "50"]);
    assert!(
        out.contains("resuming the unfinished rotation to key 2"),
        "{out}"
    );
    assert_eq!(key_ids(&key_file), [1, 2], "no new key was made");
    let status = watch.status().await.unwrap();
    assert_eq!((status.primary, status.pending), (2, 0), "{status:?}");
    assert_eq!(moved(&status), CREDENTIALS as u64 + 1);

    let json = keys_output(dir.path(), database_url, &["verify", "-o", "json"]);
    let verified: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(verified["failed"], 0, "{json}");
    assert_eq!(verified["decrypted"], CREDENTIALS as u64 + 1 + 2, "{json}");
    assert_eq!(verified["by_key"].as_object().unwrap().len(), 1, "{json}");
    // Every secret is what was stored.
    let (keys, _) = Keys::load(&key_file, Arc::clone(watch.store()))
        .await
        .unwrap();
    for (id, secret) in &expected {
        let stored = keys.credential_secret(CredentialId(*id)).await.unwrap();
        assert_eq!(stored.expose(), secret, "credentials/{id}");
    }
    // The server and its token still work.
    c.clone()
        .get_credential(pb::GetCredentialRequest {
            name: format!("credentials/{}", expected[0].0),
        })
        .await
        .unwrap();
    println!(
        "key rotation crash test ({}): {CREDENTIALS} credentials, killed with {at_kill} \
         re-encrypted, resumed and finished",
        if database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    drop(watch);
    server.terminate();
}

/// A server process, killed if the test ends early.
struct Server(std::process::Child);

impl Server {
    /// SIGTERM and wait.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn kill_9_mid_rotation_resumes_sqlite() {
    runtime().block_on(kill_mid_rotation_and_resume(None));
}

#[test]
fn kill_9_mid_rotation_resumes_postgres() {
    runtime().block_on(async {
        let db = Pg::create().await;
        let result = tokio::spawn({
            let url = db.url.clone();
            async move { kill_mid_rotation_and_resume(Some(&url)).await }
        })
        .await;
        db.drop_db().await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}
