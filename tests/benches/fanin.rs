//! Fan-in: server memory per idle agent. Opens N simulated agents against one `mailplane serve`
//! process, each with its own mTLS connection (its own enrolled certificate) and an idle
//! `Connect` stream, and reports the server's RSS growth per agent at N = 1,000 and 10,000
//! (target <= 64 KiB per agent).
//!
//! Run: `cargo build --release -p mailplane-server && cargo bench -p mailplane-tests --bench
//! fanin`. `MAILPLANE_FANIN` sets the steps (default "1000,10000").

// A benchmark reports failure by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailplane_proto::v1 as pb;
use mailplane_tests::rss_kib;
use pb::agent_service_client::AgentServiceClient;
use pb::network_connector_service_client::NetworkConnectorServiceClient;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn main() {
    // Each agent is a socket here and one in the server; raise the limit for both.
    let limit = rlimit::increase_nofile_limit(1 << 20).unwrap();
    println!("open file limit: {limit}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// Starts the server and returns it with its API and agent addresses.
fn start_server(bin: &str, dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--ui",
            "off",
            "--insecure-plaintext",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            "warn,mailplane_server::server=info",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MAILPLANE_DATABASE_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut api, mut agent) = (None, None);
    while api.is_none() || agent.is_none() {
        let line = lines
            .next()
            .expect("the server logs its addresses")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = v["fields"]["addr"].as_str().map(str::to_owned);
        match v["fields"]["message"].as_str() {
            Some("mailplane listening") => api = addr,
            Some("agent listener (TLS) listening") => agent = addr,
            _ => {}
        }
    }
    // Keep draining its logs so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, api.unwrap(), agent.unwrap())
}

struct Identityish {
    cert: String,
    key: String,
}

async fn enroll(agent_addr: &str, ca: &str, token: String) -> Identityish {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fanin");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let channel = tls_channel(agent_addr, ca, None).await;
    let resp = AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            token,
            csr_pem: csr,
            hostname: "fanin".into(),
            version: "bench".into(),
        })
        .await
        .unwrap()
        .into_inner();
    Identityish {
        cert: resp.certificate_pem,
        key: key.serialize_pem(),
    }
}

async fn tls_channel(agent_addr: &str, ca: &str, id: Option<&Identityish>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(id) = id {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Endpoint::from_shared(format!("https://{agent_addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An idle simulated agent: its stream up (for heartbeats) and its stream down, held open.
struct Idle {
    up: tokio::sync::mpsc::Sender<pb::ConnectRequest>,
    _down: tokio::task::JoinHandle<()>,
}

async fn connect_idle(agent_addr: &str, ca: &str, id: &Identityish) -> Idle {
    let channel = tls_channel(agent_addr, ca, Some(id)).await;
    let (up, rx) = tokio::sync::mpsc::channel(4);
    up.send(pb::ConnectRequest {
        event: Some(pb::connect_request::Event::Hello(pb::AgentHello {
            hostname: "fanin".into(),
            version: "bench".into(),
            max_concurrent_jobs: 1,
            stream: 0,
        })),
    })
    .await
    .unwrap();
    let mut down = AgentServiceClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let task = tokio::spawn(async move { while let Ok(Some(_)) = down.message().await {} });
    Idle { up, _down: task }
}

async fn run() {
    let steps: Vec<usize> = std::env::var("MAILPLANE_FANIN")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let bin =
        std::env::var("MAILPLANE_BIN").unwrap_or_else(|_| format!("{target}/release/mailplane"));
    assert!(
        std::path::Path::new(&bin).exists(),
        "build the server first: cargo build --release -p mailplane-server ({bin})"
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut child, api, agent_addr) = start_server(&bin, dir.path());
    let pid = child.id();
    let api_channel = Endpoint::from_shared(format!("http://{api}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let mut connectors = NetworkConnectorServiceClient::new(mailplane_tests::with_token(
        &api_channel,
        Some(token.trim()),
    ));
    let connector = connectors
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: "fan-in".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();

    let max = steps.iter().copied().max().unwrap_or(0);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(max);
    let mut ca = String::new();
    while ids.len() < max {
        let batch = (max - ids.len()).min(64);
        let mut tokens = Vec::with_capacity(batch);
        for _ in 0..batch {
            let t = connectors
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    parent: connector.name.clone(),
                    ttl: None,
                })
                .await
                .unwrap()
                .into_inner();
            ca = t.server_ca_pem;
            tokens.push(t.token);
        }
        let enrolled = futures::future::join_all(tokens.into_iter().map(|t| {
            let (agent_addr, ca) = (agent_addr.clone(), ca.clone());
            async move { enroll(&agent_addr, &ca, t).await }
        }))
        .await;
        ids.extend(enrolled);
    }
    println!("enrolled {max} agents in {:.1?}", started.elapsed());

    let baseline = rss_kib(pid);
    println!("server RSS with no agent connected: {baseline} KiB");
    let mut idle: Vec<Idle> = Vec::with_capacity(max);
    let heartbeat = {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<tokio::sync::mpsc::Sender<pb::ConnectRequest>>();
        tokio::spawn(async move {
            let mut senders = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    Some(s) = rx.recv() => senders.push(s),
                    _ = tick.tick() => for s in &senders {
                        let _ = s.try_send(pb::ConnectRequest { event: Some(pb::connect_request::Event::Heartbeat(pb::AgentHeartbeat { jobs_in_flight: 0 })) });
                    },
                }
            }
        });
        tx
    };
    for &n in &steps {
        while idle.len() < n {
            let batch = (n - idle.len()).min(64);
            let start = idle.len();
            let opened = futures::future::join_all(ids[start..start + batch].iter().map(|id| {
                let (agent_addr, ca) = (agent_addr.clone(), ca.clone());
                async move { connect_idle(&agent_addr, &ca, id).await }
            }))
            .await;
            for agent in opened {
                let _ = heartbeat.send(agent.up.clone());
                idle.push(agent);
            }
        }
        // Let allocations settle: the last streams were registered when their Connect returned.
        let got = connectors
            .get_connector(pb::GetConnectorRequest {
                name: connector.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let online = got
            .agents
            .iter()
            .filter(|a| a.status == i32::from(pb::AgentStatus::Online))
            .count();
        let rss = rss_kib(pid);
        let per = (rss.saturating_sub(baseline)) as f64 / n as f64;
        println!(
            "N = {n}: {online} agents online, server RSS {rss} KiB, {per:.1} KiB per idle agent (target <= 64 KiB)"
        );
    }
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
