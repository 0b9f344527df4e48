//! Audit chain benchmark: audited API writes per second (`CreateConnector`, each recording
//! an audit event in its transaction) with the hash-chain sealer off and on, on SQLite, on
//! PostgreSQL, and on PostgreSQL with two replicas (writes spread over both, both sealing),
//! with the ratio on/off for each. The sealer must not become a lock that writes wait on.
//!
//! Run: `cargo bench -p mailplane-tests --bench audit`. `MAILPLANE_BENCH_SECS` sets each
//! measurement's length (default 10), `MAILPLANE_BENCH_WORKERS` the concurrent writers (16).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// Writes per second through `servers` (workers spread over them) for `secs`.
async fn writes_per_second(
    servers: &[&TestServer],
    round: &'static str,
    workers: u64,
    secs: u64,
) -> f64 {
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let server = servers[usize::try_from(w).unwrap() % servers.len()];
        let mut client = server.connectors();
        tasks.spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < until {
                client
                    .create_connector(pb::CreateConnectorRequest {
                        connector: Some(pb::Connector {
                            display_name: format!("bench {round} {w} {n}"),
                            ..Default::default()
                        }),
                    })
                    .await
                    .unwrap();
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// One setup's writes per second with the sealer at `every` (zero: off).
async fn measure(
    backend: Backend,
    replicas: usize,
    every: Duration,
    workers: u64,
    secs: u64,
) -> f64 {
    let first = TestServer::start_configured(backend, |c| c.audit_seal_interval = every).await;
    let mut more = Vec::new();
    for _ in 1..replicas {
        more.push(first.start_replica().await);
    }
    let mut servers = vec![&first];
    servers.extend(more.iter());
    // Warm up the connections and the database.
    writes_per_second(&servers, "warm-up", workers, 1).await;
    let rate = writes_per_second(&servers, "measured", workers, secs).await;
    if !every.is_zero() {
        // Every event written got sealed into one unbroken chain.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = pb::audit_service_client::AuditServiceClient::new(first.channel.clone())
                .verify_audit_log(pb::VerifyAuditLogRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.first_broken_link, None);
            if r.unsealed_count == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "not all sealed: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for replica in more {
        replica.stop().await.unwrap();
    }
    first.stop().await.unwrap();
    rate
}

async fn run() {
    let secs = env("MAILPLANE_BENCH_SECS", 10);
    let workers = env("MAILPLANE_BENCH_WORKERS", 16);
    println!("audited writes (CreateConnector), {workers} writers, {secs} s each");
    for (label, backend, replicas) in [
        ("SQLite", Backend::Sqlite, 1),
        ("PostgreSQL", Backend::Postgres, 1),
        ("PostgreSQL, 2 replicas", Backend::Postgres, 2),
    ] {
        let off = measure(backend, replicas, Duration::ZERO, workers, secs).await;
        let on = measure(backend, replicas, Duration::from_secs(1), workers, secs).await;
        println!(
            "{label}: sealer off {off:.0} writes/s, on {on:.0} writes/s, ratio on/off {:.2}",
            on / off
        );
    }
}
