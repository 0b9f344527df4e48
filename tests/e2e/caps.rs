//! Caps: per account, on all replicas together (two replicas on PostgreSQL), on tests at once
//! and deliveries at once; per server, on tests at once.

use crate::messages::{message, messages, send, wait_for};
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::Code;

/// A relay that holds each message's final reply until the test releases it, and counts the
/// transactions in flight (from MAIL to the reply after the data).
struct GatedRelay {
    port: u16,
    in_flight: watch::Receiver<usize>,
    most: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedRelay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (count, in_flight) = watch::channel(0_usize);
        let count = Arc::new(count);
        let most = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let (c, m, r) = (Arc::clone(&count), Arc::clone(&most), Arc::clone(&release));
        let task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                sessions.spawn(session(tcp, Arc::clone(&c), Arc::clone(&m), Arc::clone(&r)));
            }
        });
        Self {
            port,
            in_flight,
            most,
            release,
            task,
        }
    }
}

impl Drop for GatedRelay {
    fn drop(&mut self) {
        // The accept task owns the sessions' JoinSet: aborting it ends them all.
        self.task.abort();
    }
}

/// Writes one reply line; `false` when the client is gone.
async fn say(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> bool {
    w.write_all(format!("{text}\r\n").as_bytes()).await.is_ok()
}

/// One SMTP session: no PIPELINING, so each command waits for its reply.
async fn session(
    tcp: TcpStream,
    count: Arc<watch::Sender<usize>>,
    most: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
) {
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read);
    if !say(&mut write, "220 gated ESMTP").await {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "HELO" => "250 gated",
            "MAIL" => {
                count.send_modify(|n| {
                    *n += 1;
                    most.fetch_max(*n, Ordering::SeqCst);
                });
                "250 2.1.0 ok"
            }
            "DATA" => {
                if !say(&mut write, "354 go ahead").await {
                    return;
                }
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                let Ok(permit) = release.acquire().await else {
                    return;
                };
                permit.forget();
                count.send_modify(|n| *n -= 1);
                "250 2.0.0 queued as GATED"
            }
            "QUIT" => {
                say(&mut write, "221 bye").await;
                return;
            }
            _ => "250 ok",
        };
        if !say(&mut write, reply).await {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_at_once_are_capped_per_account_on_all_replicas_together() {
    let a = TestServer::start_configured(Backend::Postgres, |c| {
        c.outbox.pool.max_sessions_per_key = 2;
    })
    .await;
    let b = a.start_replica().await;
    let relay = GatedRelay::start().await;
    create_account(
        &mut a.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: relay.port.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Capped")
        },
    )
    .await;
    // Three messages on each replica: each replica alone could start two deliveries.
    let mut sent = Vec::new();
    for (i, server) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let m = send(
            &mut messages(server),
            message(&[&format!("cap{i}@mailplane.test")]),
            "",
        )
        .await
        .unwrap();
        sent.push((server, m.name));
    }
    let mut in_flight = relay.in_flight.clone();
    tokio::time::timeout(Duration::from_secs(30), in_flight.wait_for(|n| *n == 2))
        .await
        .expect("two deliveries start")
        .unwrap();
    // Both replicas have due messages and were woken; neither may start a third delivery.
    // (An observation window, not a synchronisation: nothing is released during it.)
    let third = tokio::time::timeout(Duration::from_secs(2), in_flight.wait_for(|n| *n > 2)).await;
    assert!(
        third.is_err(),
        "a third delivery started while two were in flight (cap 2 on all replicas)"
    );
    relay.release.add_permits(sent.len());
    for (server, name) in &sent {
        let m = wait_for(&mut messages(server), name, pb::MessageState::Sent).await;
        assert_eq!(m.attempts.last().unwrap().relay_queue_id, "GATED");
    }
    assert_eq!(
        relay.most.load(Ordering::SeqCst),
        2,
        "the cap was reached, never passed"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A relay that accepts and never answers (tests stay running until the server stops), and
/// the task that holds its connections.
async fn silent_relay() -> (u16, tokio::task::JoinHandle<()>) {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    (port, hold)
}

async fn silent_account(server: &TestServer, name: &str, port: u16) -> pb::SmtpAccount {
    create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            ..account(name)
        },
    )
    .await
}

async fn create_test(
    server: &TestServer,
    acct: &pb::SmtpAccount,
) -> Result<tonic::Response<pb::SmtpTest>, tonic::Status> {
    server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: acct.name.clone(),
            test: Some(pb::SmtpTest {
                to: "cap@mailplane.test".into(),
                ..Default::default()
            }),
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tests_at_once_are_capped_per_server() {
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.smtp.max_tests_running = 1;
    })
    .await;
    let (port, hold) = silent_relay().await;
    let first = silent_account(&server, "First", port).await;
    let second = silent_account(&server, "Second", port).await;
    create_test(&server, &first).await.unwrap();
    let err = create_test(&server, &second).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("max_tests_running"),
        "{}",
        err.message()
    );
    server.stop().await.unwrap();
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tests_at_once_are_capped_per_account_on_all_replicas_together() {
    let a = TestServer::start_configured(Backend::Postgres, |c| {
        c.smtp.max_tests_per_account = 2;
    })
    .await;
    let b = a.start_replica().await;
    let (port, hold) = silent_relay().await;
    let acct = silent_account(&a, "Silent", port).await;
    create_test(&a, &acct).await.unwrap();
    create_test(&b, &acct).await.unwrap();
    for server in [&a, &b] {
        let err = create_test(server, &acct).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert!(
            err.message().contains("on all replicas"),
            "{}",
            err.message()
        );
    }
    let listed = a
        .tests()
        .list_tests(pb::ListTestsRequest {
            parent: acct.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tests;
    assert_eq!(listed.len(), 2, "a refused test is not stored");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
    hold.abort();
}
