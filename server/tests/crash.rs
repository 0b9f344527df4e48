//! `kill -9` of the real `mailplane` binary while 1,000 messages are queued for the local Postfix:
//! after a restart on the same data dir every message is SENT and arrives, each exactly once
//! except at most the messages that were in delivery at the kill (which the start logs as
//! queued again). `crash/cluster.rs` does the same to one replica of three on PostgreSQL.

// Helpers of integration tests are not `#[test]` functions, so clippy's test allowances do not
// reach them; a panic is how a test reports, and every spawned server is waited for or killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::zombie_processes)]

mod support;

#[path = "crash/cluster.rs"]
mod cluster;

use futures::StreamExt as _;
use mailplane_proto::v1 as pb;
use mailplane_proto::v1::message_service_client::MessageServiceClient;
use mailplane_server::cli::{ClientArgs, Conn, connect_with, output};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Pg, admin_token, cli, fixtures, serve_logged};

/// Messages sent.
const MESSAGES: usize = 1000;
/// SendMessage calls at once.
const CONCURRENCY: usize = 16;
/// SMTP sessions per account.
const SESSIONS: usize = 4;
/// The most messages the outbox claims at once (`OutboxSettings::batch`): no more can be
/// SENDING at the kill.
const CLAIM_BATCH: u64 = 64;

async fn client(addr: &str, token: &str, ca: &Path) -> MessageServiceClient<Conn> {
    let args = ClientArgs {
        server: addr.to_owned(),
        output: output::Format::Table,
        token: Some(token.to_owned()),
        tls_ca: Some(ca.to_owned()),
        tls_fingerprint: None,
        insecure_plaintext: false,
    };
    MessageServiceClient::new(connect_with(&args).await.unwrap())
}

/// QUEUED + SENDING + DEFERRED of the account.
async fn waiting(c: &mut MessageServiceClient<Conn>) -> (i64, i64, i64) {
    let s = c
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner();
    s.queue_summaries.iter().fold((0, 0, 0), |(q, s, d), x| {
        (
            q + x.queued_count,
            s + x.sending_count,
            d + x.deferred_count,
        )
    })
}

/// Every message's state, paging through ListMessages.
async fn states(c: &mut MessageServiceClient<Conn>) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_messages(pb::ListMessagesRequest {
                page_size: 500,
                page_token,
                filter: None,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.messages.into_iter().map(|m| (m.name, m.state)));
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// The Maildir files read so far (by unique name) and the run's indexes found in them.
#[derive(Default)]
struct Maildir {
    seen: HashSet<String>,
    copies: HashMap<usize, usize>,
}

impl Maildir {
    /// Reads the files not read yet, counting the subjects `Crash {run} #{i}`.
    fn scan(&mut self, dir: &Path, run: &str) {
        let marker = format!("Subject: Crash {run} #");
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Dovecot may move a file from new/ to cur/ with flags after the ':'.
                let unique = name.split(':').next().unwrap_or(&name).to_owned();
                if self.seen.contains(&unique) {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                self.seen.insert(unique);
                if let Some(at) = text.find(&marker) {
                    let rest = &text[at + marker.len()..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    *self.copies.entry(digits.parse().unwrap()).or_default() += 1;
                }
            }
        }
    }
}

/// Creates the fixture credential (1) and an account `name` (accounts/1) sending through the
/// Postfix submission port with STARTTLS and AUTH, with the CLI.
fn fixture_account(addr: &str, token: &str, ca: &Path, fx: &HashMap<String, String>, name: &str) {
    let out = cli(
        addr,
        token,
        ca,
        &[
            "credentials",
            "create",
            "--display-name",
            "Fixture",
            "--username",
            &fx["SMTP_USER"],
            "--allow-destination",
            "localhost",
        ],
        Some(&fx["SMTP_PASSWORD"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        addr,
        token,
        ca,
        &[
            "accounts",
            "create",
            "--name",
            name,
            "--sender",
            "alerts@mailplane.test",
            "--host",
            "localhost",
            "--port",
            &fx["SMTP_PORT_SUBMISSION"],
            "--security",
            "starttls-required",
            "--credential",
            "1",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends the run's messages `Crash {run} #{i}` to `rcpt`, round-robin over `clients`,
/// [`CONCURRENCY`] at once; each gets its own message.
async fn send_all(clients: &[MessageServiceClient<Conn>], account: &str, run: &str, rcpt: &str) {
    let sends = futures::stream::iter(0..MESSAGES).map(|i| {
        let mut c = clients[i % clients.len()].clone();
        async move {
            c.send_message(pb::SendMessageRequest {
                message: Some(pb::Message {
                    account: account.to_owned(),
                    to: vec![rcpt.to_owned()],
                    subject: format!("Crash {run} #{i}"),
                    text_body: format!("Message {i} of the crash test {run}."),
                    ..Default::default()
                }),
                request_id: format!("crash-{run}-{i}"),
            })
            .await
            .unwrap()
            .into_inner()
            .name
        }
    });
    let names: Vec<String> = sends.buffer_unordered(CONCURRENCY).collect().await;
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), MESSAGES);
}

/// Waits until every message is SENT, at most `limit` after `event`.
async fn wait_all_sent(c: &mut MessageServiceClient<Conn>, limit: Duration, event: &str) {
    let deadline = Instant::now() + limit;
    let mut last = HashMap::new();
    loop {
        let (q, s, d) = waiting(c).await;
        if q + s + d == 0 {
            last = states(c).await;
            if last.len() == MESSAGES
                && last
                    .values()
                    .all(|s| *s == i32::from(pb::MessageState::Sent))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every message was SENT within {limit:?} of {event}: {q} queued, {s} sending, \
             {d} deferred; {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every message of the run is in the Maildir and Postfix's queue is empty (so
/// that any duplicate is in too); returns what was read.
async fn wait_delivered(fx: &HashMap<String, String>, run: &str) -> Maildir {
    let maildir = PathBuf::from(&fx["SMTP_MAILDIR"]);
    let mut seen = Maildir::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        seen.scan(&maildir, run);
        if seen.copies.len() == MESSAGES && postfix_queue_empty(&fx["SMTP_FIXTURES_DIR"]) {
            seen.scan(&maildir, run);
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} messages reached {} within 60 s",
            seen.copies.len(),
            maildir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether Postfix's queue is empty (true when it cannot be asked).
fn postfix_queue_empty(fixtures_dir: &str) -> bool {
    let out = std::process::Command::new("postqueue")
        .args(["-c", &format!("{fixtures_dir}/postfix"), "-p"])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).contains("Mail queue is empty")
        }
        _ => true,
    }
}

/// The number of messages logged as queued again (at the start, or by the sweep).
fn requeued(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let message = v["fields"]["message"].as_str()?;
            if message.starts_with("queued again messages") {
                v["fields"]["messages"].as_u64()
            } else if message.starts_with("took over messages of a replica") {
                // PostgreSQL: the restarted server found the dead run's replica silent first.
                v["fields"]["queued"].as_u64()
            } else {
                None
            }
        })
        .sum()
}

async fn crash_and_restart(database_url: Option<&str>) {
    let started = Instant::now();
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailplane.toml");
    // PostgreSQL queues a dead server's claims only after the claim timeout: a short one, looked
    // for every second, keeps the test short; it stays above any delivery here.
    std::fs::write(
        &config,
        format!(
            "[outbox]\nsessions_per_account = {SESSIONS}\nclaim_timeout_secs = 5\n\
             sweep_interval_secs = 1\n"
        ),
    )
    .unwrap();
    let config_s = config.to_str().unwrap().to_owned();
    let mut extra = vec![
        "--smtp-extra-ca".to_owned(),
        fx["SMTP_CA"].clone(),
        "--config".to_owned(),
        config_s,
    ];
    if let Some(url) = database_url {
        extra.extend(["--database-url".to_owned(), url.to_owned()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (child, addr, _, _logs) = serve_logged(dir.path(), &extra);
    let mut child = Server(child);
    let token = admin_token(dir.path());
    let ca: PathBuf = dir.path().join("ca.pem");
    fixture_account(&addr, &token, &ca, &fx, "Crash");
    let account = "accounts/1".to_owned();

    let mut c = client(&addr, &token, &ca).await;
    // Paused while the 1,000 are stored, so that most of them are still queued at the kill.
    c.pause_account_delivery(pb::PauseAccountDeliveryRequest {
        account: account.clone(),
    })
    .await
    .unwrap();
    let run = format!("{:016x}", rand::random::<u64>());
    let rcpt = format!("crash-{run}@mailplane.test");
    send_all(&[c.clone()], &account, &run, &rcpt).await;
    let stored = started.elapsed();
    c.resume_account_delivery(pb::ResumeAccountDeliveryRequest {
        account: account.clone(),
    })
    .await
    .unwrap();

    // Kill as soon as some are delivered while most are still queued, at a moment when
    // several are in delivery (one alone may finish between this look and the kill).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (queued, sending) = loop {
        let (q, s, d) = waiting(&mut c).await;
        let sent = i64::try_from(MESSAGES).unwrap() - q - s - d;
        if sent >= 20 && s >= 2 {
            assert!(q >= 500, "delivery outran the test: {q} still queued");
            break (q, s);
        }
        assert!(
            Instant::now() < deadline,
            "no delivery within 30 s: {q} queued, {s} sending, {d} deferred"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let killed_at = started.elapsed();

    let (child, addr, early, logs) = serve_logged(dir.path(), &extra);
    let mut child = Server(child);
    let mut c = client(&addr, &token, &ca).await;
    wait_all_sent(&mut c, Duration::from_secs(60), "the restart").await;
    let all_sent = started.elapsed();

    let seen = wait_delivered(&fx, &run).await;
    child.terminate();
    let mut lines = early;
    lines.extend(logs.try_iter());
    let in_flight = requeued(&lines);
    let duplicates: usize = seen.copies.values().map(|n| n - 1).sum();
    let twice: Vec<_> = seen.copies.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "crash test ({}): {MESSAGES} stored in {stored:?}; killed at {killed_at:?} with {queued} \
         queued and {sending} sending; {in_flight} queued again at the restart; all SENT at \
         {all_sent:?}; {} distinct delivered, {duplicates} duplicates {twice:?}; total {:?}",
        if database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        seen.copies.len(),
        started.elapsed()
    );
    assert!(in_flight >= 1, "the kill left messages in delivery");
    assert!(
        in_flight <= CLAIM_BATCH,
        "at most a claim batch is SENDING: {in_flight}"
    );
    assert!(
        u64::try_from(duplicates).unwrap() <= in_flight,
        "{duplicates} duplicates, more than the {in_flight} messages in delivery at the kill: \
         {twice:?}"
    );
    // A session takes its next message only once the last one is recorded: only the message
    // each session had just handed over can be sent twice.
    assert!(
        duplicates <= SESSIONS,
        "{duplicates} duplicates, more than one per session ({SESSIONS}): {twice:?}"
    );
}

/// A server process, killed if the test ends early.
struct Server(std::process::Child);

impl Server {
    /// SIGTERM and wait.
    fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
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

#[test]
fn kill_9_with_1000_queued_loses_nothing_sqlite() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(crash_and_restart(None));
}

#[test]
fn kill_9_with_1000_queued_loses_nothing_postgres() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let db = Pg::create().await;
            let result = tokio::spawn({
                let url = db.url.clone();
                async move { crash_and_restart(Some(&url)).await }
            })
            .await;
            db.drop_db().await;
            if let Err(e) = result {
                std::panic::resume_unwind(e.into_panic());
            }
        });
}
