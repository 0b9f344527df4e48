//! Outbox benchmarks, through the release `mailplane` binary (`serve`, on loopback):
//!
//! 1. Durable throughput: N (default 2,000) messages of about 2 KB, sent concurrently through
//!    `SendMessage` (each committed before the call returns), delivered over 20 sessions into
//!    Postfix's `smtp-sink`, from the first `SendMessage` until every message is `SENT`;
//!    against `smtp-source -s 20 -m N -l 2048` into the same sink in the same run (goal: a
//!    ratio of at least 0.5). SQLite and PostgreSQL.
//! 2. Replicas: the same durable throughput on PostgreSQL with three `mailplane serve`
//!    replicas on one database (messages sent round-robin to them) against one, in the same run
//!    (goal: at least 0.9x: claiming work must not serialise the replicas).
//! 3. Latency: `SendMessage` until `SENT` on a warm pooled connection to the local Postfix
//!    submission port (STARTTLS + AUTH), p50 and p99 over `MAILPLANE_BENCH_LATENCY_N`
//!    (default 200) sequential messages. SQLite and PostgreSQL.
//!
//! Needs the SMTP fixtures (`bash deploy/smtp-fixtures/setup.sh`, which installs Postfix and so
//! `smtp-sink` and `smtp-source`) and PostgreSQL (as the e2e tests do).
//!
//! Run: `cargo build --release -p mailplane-server && cargo bench -p mailplane-tests --bench
//! outbox`. `MAILPLANE_BENCH_N` sets the throughput count; `MAILPLANE_BENCH_ONLY` (a
//! comma-separated list of `sqlite`, `postgres`, `replicas`, `latency`) runs only those parts.

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::zombie_processes)]

use futures::StreamExt as _;
use mailplane_proto::v1 as pb;
use mailplane_server::cli::{ClientArgs, Conn, connect_with, output};
use mailplane_tests::{PgDatabase, SmtpFixtures};
use pb::credential_service_client::CredentialServiceClient;
use pb::message_service_client::MessageServiceClient;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SendMessage calls at once in the throughput run.
const CONCURRENCY: usize = 64;
/// SMTP sessions per account, and smtp-source's sessions.
const SESSIONS: usize = 20;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `mailplane serve` and a connection to it.
struct Server {
    _proc: Proc,
    _dir: tempfile::TempDir,
    conn: Conn,
    token: String,
}

impl Server {
    async fn start(bin: &str, database_url: Option<&str>, smtp_ca: Option<&str>) -> Self {
        Self::start_in(
            bin,
            database_url,
            smtp_ca,
            tempfile::tempdir().unwrap(),
            None,
        )
        .await
    }

    /// Starts a server in `dir`; `token` is the first admin token when another replica made it.
    async fn start_in(
        bin: &str,
        database_url: Option<&str>,
        smtp_ca: Option<&str>,
        dir: tempfile::TempDir,
        token: Option<String>,
    ) -> Self {
        let config = dir.path().join("mailplane.toml");
        std::fs::write(
            &config,
            format!("[outbox]\nsessions_per_account = {SESSIONS}\n"),
        )
        .unwrap();
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--ui",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "off",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("MAILPLANE_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(ca) = smtp_ca {
            cmd.args(["--smtp-extra-ca", ca]);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let proc = Proc(child);
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the server logs its address");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "mailplane listening" {
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        };
        let token = token
            .unwrap_or_else(|| std::fs::read_to_string(dir.path().join("admin.token")).unwrap());
        let conn = connect_with(&ClientArgs {
            server: addr,
            output: output::Format::Table,
            token: Some(token.trim().to_owned()),
            tls_ca: Some(dir.path().join("ca.pem")),
            tls_fingerprint: None,
            insecure_plaintext: false,
        })
        .await
        .unwrap();
        Self {
            _proc: proc,
            _dir: dir,
            conn,
            token: token.trim().to_owned(),
        }
    }

    fn messages(&self) -> MessageServiceClient<Conn> {
        MessageServiceClient::new(self.conn.clone())
    }

    async fn account(&self, spec: pb::SmtpAccount) -> String {
        SmtpAccountServiceClient::new(self.conn.clone())
            .create_account(pb::CreateAccountRequest {
                account: Some(spec),
            })
            .await
            .unwrap()
            .into_inner()
            .name
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Messages not yet SENT (queued, sending or deferred).
async fn waiting(c: &mut MessageServiceClient<Conn>) -> i64 {
    c.list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue_summaries
        .iter()
        .map(|s| s.queued_count + s.sending_count + s.deferred_count)
        .sum()
}

/// How many messages are SENT, paging through ListMessages with a state filter.
async fn sent(c: &mut MessageServiceClient<Conn>) -> usize {
    let mut n = 0;
    let mut page_token = String::new();
    loop {
        let page = c
            .list_messages(pb::ListMessagesRequest {
                page_size: 500,
                page_token,
                filter: Some(pb::MessageFilter {
                    state: pb::MessageState::Sent.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        n += page.messages.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        page_token = page.next_page_token;
    }
}

/// `smtp-source` pushing `n` messages of 2 KB over 20 sessions into the sink: messages/s.
fn baseline(port: u16, n: usize) -> f64 {
    let start = Instant::now();
    let status = Command::new("/usr/sbin/smtp-source")
        .args([
            "-s",
            &SESSIONS.to_string(),
            "-m",
            &n.to_string(),
            "-l",
            "2048",
            "-c",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "smtp-source failed");
    n as f64 / start.elapsed().as_secs_f64()
}

/// The account that delivers into the sink on `port`.
async fn sink_account(server: &Server, port: u16) -> String {
    server
        .account(pb::SmtpAccount {
            account_name: "Sink".into(),
            sender_email: "bench@example.com".into(),
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            use_authentication: false,
            ..Default::default()
        })
        .await
}

/// Sends `n` messages of about 2 KB on the wire through `clients` in turn, `CONCURRENCY` at
/// once, then waits until every one is SENT: when all were stored (every `SendMessage`
/// returned) and when all were SENT, from the first `SendMessage`.
async fn send_until_sent(
    clients: &[MessageServiceClient<Conn>],
    account: &str,
    n: usize,
) -> (Duration, Duration) {
    let body = "The nightly backup finished without errors. ".repeat(40);
    let start = Instant::now();
    let sends = futures::stream::iter(0..n).map(|i| {
        let mut c = clients[i % clients.len()].clone();
        let (account, body) = (account.to_owned(), body.clone());
        async move {
            c.send_message(pb::SendMessageRequest {
                message: Some(pb::Message {
                    account,
                    to: vec![format!("ops{i}@example.com")],
                    subject: format!("Backup report {i}"),
                    text_body: body,
                    ..Default::default()
                }),
                request_id: format!("bench-{i}"),
            })
            .await
            .unwrap();
        }
    });
    sends.buffer_unordered(CONCURRENCY).collect::<()>().await;
    let stored = start.elapsed();
    let mut c = clients[0].clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    while waiting(&mut c).await > 0 {
        assert!(Instant::now() < deadline, "not all SENT within 300 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    assert_eq!(sent(&mut c).await, n, "every message is SENT");
    (stored, elapsed)
}

/// The outbox's durable throughput into the sink: messages/s, first SendMessage to all SENT.
async fn throughput(bin: &str, database_url: Option<&str>, port: u16, n: usize) -> f64 {
    let server = Server::start(bin, database_url, None).await;
    let account = sink_account(&server, port).await;
    let (stored, elapsed) = send_until_sent(&[server.messages()], &account, n).await;
    println!(
        "  stored (all SendMessage returned) after {stored:.2?}, all SENT after {elapsed:.2?}"
    );
    n as f64 / elapsed.as_secs_f64()
}

/// Durable throughput with `replicas` servers on one PostgreSQL database, the messages sent
/// round-robin to them: messages/s, first SendMessage to all SENT.
async fn throughput_replicas(
    bin: &str,
    database_url: &str,
    port: u16,
    n: usize,
    replicas: usize,
) -> f64 {
    let first = Server::start(bin, Some(database_url), None).await;
    let mut servers = vec![];
    for _ in 1..replicas {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            first._dir.path().join("mailplane.key"),
            dir.path().join("mailplane.key"),
        )
        .unwrap();
        servers.push(
            Server::start_in(
                bin,
                Some(database_url),
                None,
                dir,
                Some(first.token.clone()),
            )
            .await,
        );
    }
    let account = sink_account(&first, port).await;
    let mut clients = vec![first.messages()];
    clients.extend(servers.iter().map(Server::messages));
    let (_, elapsed) = send_until_sent(&clients, &account, n).await;
    println!("  {replicas} replica(s): all SENT after {elapsed:.2?}");
    n as f64 / elapsed.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// SendMessage until SENT on a warm pooled connection to the Postfix submission port.
async fn latency(bin: &str, database_url: Option<&str>, fx: &SmtpFixtures, n: usize) {
    let ca = fx.var("SMTP_CA");
    let server = Server::start(bin, database_url, Some(&ca)).await;
    let credential = CredentialServiceClient::new(server.conn.clone())
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "fixture".into(),
                username: fx.var("SMTP_USER"),
                secret: fx.var("SMTP_PASSWORD"),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let account = server
        .account(pb::SmtpAccount {
            account_name: "Postfix".into(),
            sender_email: "alerts@mailplane.test".into(),
            host: "localhost".into(),
            port: fx.port("SMTP_PORT_SUBMISSION").into(),
            security: pb::SecurityMode::StarttlsRequired.into(),
            use_authentication: true,
            credential,
            ..Default::default()
        })
        .await;
    let mut c = server.messages();
    let mut times = Vec::with_capacity(n);
    // The first message opens the pooled session (STARTTLS + AUTH); it is not counted.
    for i in 0..=n {
        let start = Instant::now();
        let m = c
            .send_message(pb::SendMessageRequest {
                message: Some(pb::Message {
                    account: account.clone(),
                    to: vec![format!("latency-{i}@mailplane.test")],
                    subject: format!("Latency {i}"),
                    text_body: "Disk almost full.".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = c
                .get_message(pb::GetMessageRequest {
                    name: m.name.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if got.state == i32::from(pb::MessageState::Sent) {
                break;
            }
            assert!(
                got.state != i32::from(pb::MessageState::Failed)
                    && got.state != i32::from(pb::MessageState::Deferred),
                "{got:?}"
            );
            assert!(Instant::now() < deadline, "not SENT within 30 s: {got:?}");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if i > 0 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    println!(
        "  SendMessage -> SENT over {n} messages: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}

async fn run() {
    let n: usize = std::env::var("MAILPLANE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let latency_n: usize = std::env::var("MAILPLANE_BENCH_LATENCY_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let only = std::env::var("MAILPLANE_BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let bin =
        std::env::var("MAILPLANE_BIN").unwrap_or_else(|_| format!("{target}/release/mailplane"));
    assert!(
        Path::new(&bin).exists(),
        "build the server first: cargo build --release -p mailplane-server ({bin})"
    );
    let sink_bin = PathBuf::from("/usr/sbin/smtp-sink");
    assert!(
        sink_bin.exists(),
        "smtp-sink is needed (Postfix; bash deploy/smtp-fixtures/setup.sh installs it)"
    );
    let port = free_port();
    // -c counts; 1000 is the listen backlog.
    let _sink = Proc(
        Command::new(&sink_bin)
            .args(["-c", "-u", "nobody", &format!("127.0.0.1:{port}"), "1000"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let fx = SmtpFixtures::load();
    let mut pg = PgDatabase::create().await;
    let mut pg_latency = PgDatabase::create().await;

    println!("throughput: {n} messages of ~2 KB, {SESSIONS} sessions, into smtp-sink");
    for (backend, url) in [("SQLite", None), ("PostgreSQL", Some(pg.url.clone()))] {
        if !runs(
            &backend
                .to_ascii_lowercase()
                .replace("postgresql", "postgres"),
        ) {
            continue;
        }
        let source = baseline(port, n);
        println!("{backend}:");
        let outbox = throughput(&bin, url.as_deref(), port, n).await;
        println!(
            "  smtp-source {source:.0} msg/s, outbox (durable) {outbox:.0} msg/s, ratio {:.2} \
             (goal >= 0.5)",
            outbox / source
        );
    }
    if runs("replicas") {
        println!(
            "replicas: {n} messages sent round-robin, PostgreSQL, {SESSIONS} sessions per account on all replicas together"
        );
        let mut one_db = PgDatabase::create().await;
        let mut three_db = PgDatabase::create().await;
        let one = throughput_replicas(&bin, &one_db.url, port, n, 1).await;
        let three = throughput_replicas(&bin, &three_db.url, port, n, 3).await;
        println!(
            "  1 replica {one:.0} msg/s, 3 replicas {three:.0} msg/s, ratio {:.2} (goal >= 0.9)",
            three / one
        );
        one_db.drop_db().await;
        three_db.drop_db().await;
    }
    if runs("latency") {
        println!(
            "latency: SendMessage -> SENT, warm pooled session, STARTTLS + AUTH to local Postfix"
        );
        for (backend, url) in [
            ("SQLite", None),
            ("PostgreSQL", Some(pg_latency.url.clone())),
        ] {
            println!("{backend}:");
            latency(&bin, url.as_deref(), &fx, latency_n).await;
        }
    }
    pg.drop_db().await;
    pg_latency.drop_db().await;
}
