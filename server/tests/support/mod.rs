//! Helpers shared by the process-level tests: the real `mailplane` binary, its admin token, the
//! CLI, and the SMTP fixtures.

// Each test crate uses some of these.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::zombie_processes
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_mailplane");

/// Starts `mailplane serve` on port 0 (JSON logs, plus `extra` flags) and returns
/// the child, the address it logged, and a channel with its remaining log lines.
pub fn serve(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> (Child, String, mpsc::Receiver<String>) {
    let (child, addr, _early, rx) = serve_logged(data_dir, extra);
    (child, addr, rx)
}

/// [`serve`], also returning the log lines before the address.
pub fn serve_logged(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> (Child, String, Vec<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--ui-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("MAILPLANE_DATABASE_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut early = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its address");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["fields"]["message"] == "mailplane listening" {
            let addr = v["fields"]["addr"].as_str().unwrap().to_owned();
            return (child, addr, early, rx);
        }
        early.push(line);
    }
}

/// The first admin token, which the server wrote to its data dir.
pub fn admin_token(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn cli(
    addr: &str,
    token: &str,
    ca: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["--server", addr])
        .env("MAILPLANE_TOKEN", token)
        .env("MAILPLANE_CACERT", ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The SMTP fixtures' variables (`deploy/smtp-fixtures/setup.sh` writes them).
pub fn fixtures() -> std::collections::HashMap<String, String> {
    mailplane_testkit::SmtpFixtures::load().vars
}

/// A fresh PostgreSQL database (dropped at the end), like `mailplane_tests::PgDatabase`.
pub struct Pg {
    /// Its name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
}

fn pg_admin_url() -> String {
    std::env::var("MAILPLANE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl Pg {
    /// Creates the database.
    pub async fn create() -> Self {
        use sqlx::Connection as _;
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is needed at {admin}: {e}"));
        let name = format!("mailplane_crash_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    /// Drops it.
    pub async fn drop_db(&self) {
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
