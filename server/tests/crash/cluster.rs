//! `kill -9` of one replica of three on one PostgreSQL while 1,000 messages, submitted round-robin
//! to the three, are delivered: the other two take over what it held (once its heartbeat has
//! stopped for 15 s), every message is SENT and arrives, each exactly once except at most the
//! messages the dead replica had in delivery.

use super::*;

/// Deliveries at once per account, on all replicas together (the cap is shared: the first
/// replica to claim may take most of the work, so the replica killed is whichever of B and C
/// holds claims first).
const CLUSTER_SESSIONS: usize = 32;

/// The number of messages logged as taken over from a replica that stopped.
fn taken_over(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("took over messages of a replica"))
        })
        .map(|v| {
            v["fields"]["queued"].as_u64().unwrap_or(0)
                + v["fields"]["deferred"].as_u64().unwrap_or(0)
        })
        .sum()
}

async fn one_replica_killed(database_url: &str) {
    let started = Instant::now();
    let fx = fixtures();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = dirs[0].path().join("mailplane.toml");
    std::fs::write(
        &config,
        format!("[outbox]\nsessions_per_account = {CLUSTER_SESSIONS}\n"),
    )
    .unwrap();
    let config_s = config.to_str().unwrap().to_owned();
    let extra = [
        "--smtp-extra-ca",
        fx["SMTP_CA"].as_str(),
        "--config",
        config_s.as_str(),
        "--database-url",
        database_url,
    ];
    let (a, a_addr, _, a_logs) = serve_logged(dirs[0].path(), &extra);
    let a = Server(a);
    let token = admin_token(dirs[0].path());
    // The others share the database and its key.
    for dir in &dirs[1..] {
        std::fs::copy(
            dirs[0].path().join("mailplane.key"),
            dir.path().join("mailplane.key"),
        )
        .unwrap();
    }
    let (b, b_addr, _, b_logs) = serve_logged(dirs[1].path(), &extra);
    let b = Server(b);
    let (c, c_addr, _, c_logs) = serve_logged(dirs[2].path(), &extra);
    let c = Server(c);
    let ca_of = |i: usize| dirs[i].path().join("ca.pem");
    fixture_account(&a_addr, &token, &ca_of(0), &fx, "Cluster");
    let account = "accounts/1".to_owned();
    let clients = [
        client(&a_addr, &token, &ca_of(0)).await,
        client(&b_addr, &token, &ca_of(1)).await,
        client(&c_addr, &token, &ca_of(2)).await,
    ];
    let mut watch = clients[0].clone();
    watch
        .pause_account_delivery(pb::PauseAccountDeliveryRequest {
            account: account.clone(),
        })
        .await
        .unwrap();
    let run = format!("{:016x}", rand::random::<u64>());
    let rcpt = format!("crash-{run}@mailplane.test");
    send_all(&clients, &account, &run, &rcpt).await;
    watch
        .resume_account_delivery(pb::ResumeAccountDeliveryRequest {
            account: account.clone(),
        })
        .await
        .unwrap();

    // Kill B or C once delivery is under way, whichever first holds claimed messages (A
    // follows the run).
    let replica_id = |i: usize, addr: String| {
        let args = ClientArgs {
            server: addr,
            output: output::Format::Table,
            token: Some(token.clone()),
            tls_ca: Some(ca_of(i)),
            tls_fingerprint: None,
            insecure_plaintext: false,
        };
        async move {
            let list = pb::replica_service_client::ReplicaServiceClient::new(
                connect_with(&args).await.unwrap(),
            )
            .list_replicas(pb::ListReplicasRequest {})
            .await
            .unwrap()
            .into_inner();
            let me = list.replicas.iter().find(|r| r.current).unwrap();
            me.name.trim_start_matches("replicas/").to_owned()
        }
    };
    let ids = [
        replica_id(1, b_addr.clone()).await,
        replica_id(2, c_addr.clone()).await,
    ];
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = 'found: loop {
        let (q, s, d) = waiting(&mut watch).await;
        let sent = i64::try_from(MESSAGES).unwrap() - q - s - d;
        // Early, not halfway: under load one replica may take the rest of the work before
        // the others claim again.
        if sent >= 20 {
            for (i, id) in ids.iter().enumerate() {
                let (held,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM messages WHERE state = 'sending' AND claimed_by = $1",
                )
                .bind(id)
                .fetch_one(&mut db)
                .await
                .unwrap();
                if held > 0 {
                    break 'found i;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "delivery stalled: {q} queued, {s} sending"
        );
    };
    let (mut b, mut c) = (b, c);
    let (killed, survivor, survivor_logs, killed_logs) = if victim == 0 {
        (&mut b, c, c_logs, b_logs)
    } else {
        (&mut c, b, b_logs, c_logs)
    };
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    let killed_at = started.elapsed();

    wait_all_sent(&mut watch, Duration::from_secs(90), "the kill").await;
    let all_sent = started.elapsed();
    let seen = wait_delivered(&fx, &run).await;
    db.close().await.unwrap();
    let (mut a, mut survivor) = (a, survivor);
    a.terminate();
    survivor.terminate();
    drop(killed_logs);
    let lines: Vec<String> = a_logs.try_iter().chain(survivor_logs.try_iter()).collect();
    let taken = taken_over(&lines);
    let duplicates: usize = seen.copies.values().map(|n| n - 1).sum();
    println!(
        "cluster crash test: {MESSAGES} round-robin to 3 replicas; {} killed at {killed_at:?}; \
         {taken} taken over from it; all SENT at {all_sent:?}; {} distinct delivered, \
         {duplicates} duplicates",
        ["B", "C"][victim],
        seen.copies.len()
    );
    assert!(taken >= 1, "the killed replica held messages in delivery");
    assert!(
        u64::try_from(duplicates).unwrap() <= taken,
        "{duplicates} duplicates, more than the {taken} messages the killed replica had in delivery"
    );
    assert!(
        duplicates <= CLUSTER_SESSIONS,
        "{duplicates} duplicates, more than the {CLUSTER_SESSIONS} deliveries at once"
    );
}

#[test]
fn kill_9_of_one_replica_of_three_loses_nothing() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let db = Pg::create().await;
            let result = tokio::spawn({
                let url = db.url.clone();
                async move { one_replica_killed(&url).await }
            })
            .await;
            db.drop_db().await;
            if let Err(e) = result {
                std::panic::resume_unwind(e.into_panic());
            }
        });
}
