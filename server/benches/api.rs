//! API benchmarks, run with `cargo bench -p mailplane-server --bench api`.
//!
//! 1. `GetAccount` throughput with 32 concurrent callers, as a ratio to a bare tonic unary
//!    call served by the same server in the same run (the gRPC health `Check`, which does no
//!    work beyond a map lookup: the cost of tonic itself).
//! 2. `ListAccounts` latency (p50/p99) for filtered pages of 30 out of 100,000 accounts on
//!    SQLite.
//!
//! Ratios are measured against the baseline in the same run, because machines are noisy.
//! `MAILPLANE_BENCH_SECONDS` sets each throughput round's length (default 3).

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailplane_proto::v1 as pb;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ACCOUNTS: i64 = 100_000;
const CALLERS: usize = 32;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let config = mailplane_server::ServerConfig {
        drain_timeout: Duration::from_secs(2),
        agent_listen: None,
        ui_listen: None,
        ..mailplane_server::ServerConfig::new(dir.path().to_path_buf())
    };
    // Create the schema, then seed in one statement: 100,000 creates over gRPC would measure
    // the seeding, not the listing.
    drop(mailplane_server::server::open_state(&config).await.unwrap());
    let seeded = Instant::now();
    seed(&dir.path().join("mailplane.db")).await;
    println!("seeded {ACCOUNTS} accounts in {:.1?}", seeded.elapsed());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mailplane_server::serve(listener, config, async {
        let _ = stop_rx.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // Every API call carries the first admin token, as a client's would.
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let authed = tonic::service::interceptor::InterceptedService::new(
        channel.clone(),
        mailplane_server::cli::Bearer::new(Some(token.trim())).unwrap(),
    );
    get_throughput(&channel, &authed).await;
    list_latency(&authed).await;

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

async fn seed(path: &std::path::Path) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO accounts (account_name, name_key, enabled, sender_email, reply_to_email, \
         return_path_email, confirmation_email, is_default, send_read_confirmation, \
         force_settings, enable_footer, footer_text, host, port, security, \
         ignore_certificate_errors, use_authentication, auth_mechanism, credential_id, \
         use_network_connector, network_connector_id, helo_name, charset, plain_text_only, \
         attachment_size_limit_bytes, version, create_time, update_time) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         SELECT 'Account ' || i, 'account ' || i, i % 4 <> 0, 'sender' || i || '@example.com', \
         CASE WHEN i % 5 = 0 THEN 'reply' || i || '@example.com' END, NULL, NULL, i = 1, \
         0, 0, 0, '', 'smtp.example.com', 587, 'starttls_required', 0, 0, NULL, NULL, 0, NULL, \
         NULL, 'UTF-8', 0, 0, 1, 0, 0 FROM n",
    )
    .bind(ACCOUNTS)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

/// Calls `call` from `CALLERS` tasks for `secs` and returns calls per second.
async fn throughput<F, Fut>(secs: f64, call: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut n = 0_u64;
                while Instant::now() < deadline {
                    call().await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs
}

async fn get_throughput(channel: &Channel, authed: &mailplane_server::cli::Conn) {
    let secs: f64 = std::env::var("MAILPLANE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let echo = {
        let channel = channel.clone();
        move || {
            let mut c = HealthClient::new(channel.clone());
            async move {
                c.check(HealthCheckRequest::default()).await.unwrap();
            }
        }
    };
    let get = {
        let channel = authed.clone();
        move || {
            let mut c = SmtpAccountServiceClient::new(channel.clone());
            async move {
                let id = 1 + rand::random::<u64>() % ACCOUNTS as u64;
                c.get_account(pb::GetAccountRequest {
                    name: format!("accounts/{id}"),
                })
                .await
                .unwrap();
            }
        }
    };
    // Warm up, then alternate rounds so drift hits both sides alike.
    throughput(0.5, echo.clone()).await;
    throughput(0.5, get.clone()).await;
    let mut echo_rounds = Vec::new();
    let mut get_rounds = Vec::new();
    for _ in 0..3 {
        echo_rounds.push(throughput(secs, echo.clone()).await);
        get_rounds.push(throughput(secs, get.clone()).await);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let e = median(&mut echo_rounds);
    let g = median(&mut get_rounds);
    println!("unary baseline (health Check), {CALLERS} callers: {e:.0} calls/s");
    println!("GetAccount (SQLite, {ACCOUNTS} rows), {CALLERS} callers: {g:.0} calls/s");
    println!("GetAccount / baseline ratio: {:.2} (target >= 0.5)", g / e);
}

async fn list_latency(channel: &mailplane_server::cli::Conn) {
    let mut c = SmtpAccountServiceClient::new(channel.clone());
    let f = pb::AccountFilter::default;
    let cases: Vec<(&str, pb::AccountFilter)> = vec![
        (
            "name contains \"account 1\", enabled",
            pb::AccountFilter {
                account_name: "account 1".into(),
                status: pb::AccountStatusFilter::Enabled.into(),
                ..f()
            },
        ),
        (
            "reply-to contains \"reply\"",
            pb::AccountFilter {
                reply_to_email: "reply".into(),
                ..f()
            },
        ),
        (
            "status disabled",
            pb::AccountFilter {
                status: pb::AccountStatusFilter::Disabled.into(),
                ..f()
            },
        ),
        (
            "sender contains \"@example\"",
            pb::AccountFilter {
                sender_email: "@example".into(),
                ..f()
            },
        ),
    ];
    let mut all = Vec::new();
    for (what, filter) in &cases {
        // First pages and pages deep into the table (after the first 50,000 rows).
        let deep = c
            .list_accounts(pb::ListAccountsRequest {
                page_size: 500,
                filter: Some(filter.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut tokens = vec![String::new(), deep.next_page_token];
        let mut token = tokens[1].clone();
        for _ in 0..40 {
            let page = c
                .list_accounts(pb::ListAccountsRequest {
                    page_size: 500,
                    page_token: token.clone(),
                    filter: Some(filter.clone()),
                })
                .await
                .unwrap()
                .into_inner();
            token = page.next_page_token;
        }
        tokens.push(token);
        let mut samples = Vec::new();
        for i in 0..600 {
            let page_token = tokens[i % tokens.len()].clone();
            let start = Instant::now();
            let page = c
                .list_accounts(pb::ListAccountsRequest {
                    page_size: 30,
                    page_token,
                    filter: Some(filter.clone()),
                })
                .await
                .unwrap()
                .into_inner();
            samples.push(start.elapsed());
            assert_eq!(page.accounts.len(), 30);
        }
        samples.sort();
        println!(
            "ListAccounts page of 30 [{what}]: p50 {:.2} ms, p99 {:.2} ms",
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() * 99 / 100])
        );
        all.extend(samples);
    }
    all.sort();
    println!(
        "ListAccounts page of 30, all filters: p50 {:.2} ms, p99 {:.2} ms (target p99 <= 5 ms)",
        ms(all[all.len() / 2]),
        ms(all[all.len() * 99 / 100])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
