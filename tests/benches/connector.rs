//! Network connector benchmarks, against the Postfix fixtures (`bash
//! deploy/smtp-fixtures/setup.sh`) and a real `mailplane-agent` process on loopback:
//!
//! 1. Connector overhead: `CreateTest` → `SUCCEEDED` p50 through the connector vs direct, to
//!    the same Postfix port (STARTTLS + AUTH + send), alternating in the same run (target
//!    <= 1.2x).
//! 2. Agent footprint: the agent's idle RSS (target <= 10 MiB) and the size of the stripped
//!    release binary (target <= 12 MiB).
//!
//! Run: `cargo build --release -p mailplane-agent && cargo bench -p mailplane-tests --bench
//! connector`. `MAILPLANE_BENCH_N` sets the count (default 200).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/connector.rs"]
mod support;

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer, rss_kib};
use pb::SmtpAccount;
use support::{Agent, agent_bin, bench_n, create, fixture_account, p50, run_test};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n = bench_n(200);
    let bin = agent_bin();
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).unwrap();
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.extra_ca_pem = Some(ca.clone());
        c.smtp.max_tests_per_account = 64;
    })
    .await;
    let connector = server.create_connector("bench").await;
    let port = fx.port("SMTP_PORT_SUBMISSION");
    let agent = Agent::start(&server, &connector.name, port).await;
    let idle_rss = rss_kib(agent.child.id());
    let base = fixture_account(&server, &fx, port).await;
    let direct = create(
        &server,
        SmtpAccount {
            account_name: "direct".into(),
            ..base.clone()
        },
    )
    .await;
    let via = create(
        &server,
        SmtpAccount {
            account_name: "via".into(),
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..base
        },
    )
    .await;

    let (mut d, mut v) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let dt = run_test(&server, &direct, i).await;
        let vt = run_test(&server, &via, i).await;
        if i >= 5 {
            d.push(dt);
            v.push(vt);
        }
    }
    let (dp, vp) = (p50(&mut d), p50(&mut v));
    println!(
        "test p50 direct, over {n}: {:.2} ms",
        dp.as_secs_f64() * 1000.0
    );
    println!(
        "test p50 through the connector, over {n}: {:.2} ms",
        vp.as_secs_f64() * 1000.0
    );
    println!(
        "connector / direct: {:.2} (target <= 1.2)",
        vp.as_secs_f64() / dp.as_secs_f64()
    );
    println!(
        "agent idle RSS: {idle_rss} KiB ({:.1} MiB, target <= 10 MiB)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "agent RSS after {n} jobs: {} KiB",
        rss_kib(agent.child.id())
    );
    let size = std::fs::metadata(&bin).unwrap().len();
    println!(
        "agent release binary: {size} bytes ({:.1} MiB, target <= 12 MiB)",
        size as f64 / 1_048_576.0
    );
    drop(agent);
    server.stop().await.unwrap();
}
