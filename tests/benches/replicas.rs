//! Replicas benchmark, against the Postfix fixtures (`bash deploy/smtp-fixtures/setup.sh`),
//! PostgreSQL, and a real `mailplane-agent` process on loopback:
//!
//! A connector test (`CreateTest` → `SUCCEEDED`, STARTTLS + AUTH + send) created on replica A
//! and run by the agent streaming to replica B (handed over through the database), against the
//! same test created on B, alternating in the same run: p50 ratio (target <= 1.2).
//!
//! Run: `cargo build --release -p mailplane-agent && cargo bench -p mailplane-tests --bench
//! replicas`. `MAILPLANE_BENCH_N` sets the count (default 200).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/connector.rs"]
mod support;

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer};
use support::{Agent, bench_n, create, fixture_account, p50, run_test};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n = bench_n(200);
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).unwrap();
    let a = TestServer::start_configured(Backend::Postgres, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.extra_ca_pem = Some(ca.clone());
        c.smtp.max_tests_per_account = 64;
    })
    .await;
    let server = a.start_replica().await;
    let connector = server.create_connector("bench").await;
    let port = fx.port("SMTP_PORT_SUBMISSION");
    let agent = Agent::start(&server, &connector.name, port).await;
    let base = fixture_account(&server, &fx, port).await;
    let via = create(
        &server,
        pb::SmtpAccount {
            account_name: "via".into(),
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..base
        },
    )
    .await;

    // A has no stream to the agent: its tests go through the database to B.
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let at = run_test(&a, &via, i).await;
        let bt = run_test(&server, &via, i).await;
        if i >= 5 {
            on_a.push(at);
            on_b.push(bt);
        }
    }
    let (ap, bp) = (p50(&mut on_a), p50(&mut on_b));
    println!(
        "connector test p50 created on B (the agent's replica), over {n}: {:.2} ms",
        bp.as_secs_f64() * 1000.0
    );
    println!(
        "connector test p50 created on A (handed to B), over {n}: {:.2} ms",
        ap.as_secs_f64() * 1000.0
    );
    println!(
        "A / B: {:.2} (target <= 1.2)",
        ap.as_secs_f64() / bp.as_secs_f64()
    );
    drop(agent);
    server.stop().await.unwrap();
    a.stop().await.unwrap();
}
