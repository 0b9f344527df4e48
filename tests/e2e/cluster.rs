//! Three `mailplane serve` processes on one PostgreSQL database and a real `mailplane-agent`
//! process, on loopback: an agent connected only to replica B runs a test created on replica
//! A while replica C watches it live; replica B is killed with SIGKILL while the agent's
//! session waits in a slow banner (before DATA), the agent reconnects to C, the job is taken
//! over and finishes, no test is left RUNNING, and the relay receives the message once.

use crate::netns::harness::{Proc, binary};
use mailplane_proto::v1 as pb;
use mailplane_tests::{PgDatabase, account, create_account, with_token};
use pb::watch_test_response::Event;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One replica: a `mailplane serve` process on the shared database.
struct Replica {
    proc: Proc,
    api: String,
    agents: String,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica on `database` with the key file `key` (none: it makes one).
    async fn start(database: &str, key: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(key) = key {
            std::fs::copy(key, dir.path().join("mailplane.key")).unwrap();
        }
        let mut c = Command::new(binary("mailplane"));
        c.args([
            "serve",
            "--ui",
            "off",
            "--insecure-plaintext",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--database-url",
            database,
        ])
        .arg("--data-dir")
        .arg(dir.path());
        let proc = Proc::spawn(c);
        proc.wait_for("agent listener (TLS) listening", Duration::from_secs(30))
            .await;
        let (api, agents) = proc.listening();
        Self {
            proc,
            api,
            agents,
            _dir: dir,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    async fn channel(&self, token: &str) -> mailplane_tests::Conn {
        let raw = tonic::transport::Endpoint::from_shared(format!("http://{}", self.api))
            .unwrap()
            .connect()
            .await
            .unwrap();
        with_token(&raw, Some(token))
    }
}

/// A relay whose first connection never gets its banner, and whose later ones accept
/// everything; it counts the messages it receives by their Message-ID.
async fn slow_first_relay() -> (
    u16,
    tokio::sync::oneshot::Receiver<()>,
    Arc<Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        let mut first = Some(first_tx);
        let mut held = Vec::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if let Some(tx) = first.take() {
                // The slow banner: hold the connection, say nothing.
                held.push(tcp);
                let _ = tx.send(());
                continue;
            }
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                let _ = io.get_mut().write_all(b"220 relay.test\r\n").await;
                let mut line = String::new();
                let mut in_data = false;
                let mut message_id = String::new();
                while io.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let reply: &[u8] = if in_data {
                        if line.to_ascii_lowercase().starts_with("message-id:") {
                            message_id = line[11..].trim().to_owned();
                        }
                        if line == ".\r\n" {
                            in_data = false;
                            seen.lock().unwrap().push(std::mem::take(&mut message_id));
                            b"250 2.0.0 Ok: queued as CLUSTER1\r\n"
                        } else {
                            b""
                        }
                    } else {
                        match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                            Some("EHLO") => b"250 relay.test\r\n",
                            Some("DATA") => {
                                in_data = true;
                                b"354 go\r\n"
                            }
                            Some("QUIT") => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        }
                    };
                    if !reply.is_empty() && io.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, first_rx, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_survive_one_killed() {
    let db = PgDatabase::create().await;
    let a = Replica::start(&db.url, None).await;
    let key = a.dir().join("mailplane.key");
    let token = std::fs::read_to_string(mailplane_server::auth::bootstrap_file(a.dir()))
        .unwrap()
        .trim()
        .to_owned();
    let b = Replica::start(&db.url, Some(&key)).await;
    let c = Replica::start(&db.url, Some(&key)).await;
    let (ca, cb, cc) = (
        a.channel(&token).await,
        b.channel(&token).await,
        c.channel(&token).await,
    );
    let replicas = pb::replica_service_client::ReplicaServiceClient::new(cb.clone())
        .list_replicas(pb::ListReplicasRequest {})
        .await
        .unwrap()
        .into_inner()
        .replicas;
    assert_eq!(replicas.len(), 3, "{replicas:?}");

    // A connector whose one agent knows B (first) and C.
    let mut connectors =
        pb::network_connector_service_client::NetworkConnectorServiceClient::new(ca.clone());
    let connector = connectors
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: "Cluster".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let enrollment = connectors
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.name.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let (port, first_connection, received) = slow_first_relay().await;
    let state = tempfile::tempdir().unwrap();
    let server_ca = state.path().join("server-ca.pem");
    std::fs::write(&server_ca, &enrollment.server_ca_pem).unwrap();
    let agent = Proc::spawn({
        let mut cmd = Command::new(binary("mailplane-agent"));
        cmd.args(["run", "--log-format", "json", "--log-level", "debug"])
            .args(["--server", &format!("https://{}", b.agents)])
            .args(["--server", &format!("https://{}", c.agents)])
            .args(["--allow", &format!("127.0.0.1:{port}")])
            .args(["--heartbeat-interval", "1s"])
            .arg("--server-ca")
            .arg(&server_ca)
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .env("MAILPLANE_AGENT_ENROLLMENT_TOKEN", &enrollment.token);
        cmd
    });
    agent
        .wait_for("connected; waiting for jobs", Duration::from_secs(30))
        .await;
    let where_connected = || async {
        pb::network_connector_service_client::NetworkConnectorServiceClient::new(ca.clone())
            .get_connector(pb::GetConnectorRequest {
                name: connector.name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .agents
            .iter()
            .flat_map(|a| a.connections.iter())
            .filter(|c| c.replica_serving)
            .map(|c| c.replica_address.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        where_connected().await,
        [b.api.as_str()],
        "the agent is on B"
    );

    let acct = create_account(
        &mut pb::smtp_account_service_client::SmtpAccountServiceClient::new(ca.clone()),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..account("Cluster")
        },
    )
    .await;

    // The test is created on A; C watches it.
    let name = pb::smtp_test_service_client::SmtpTestServiceClient::new(ca.clone())
        .create_test(pb::CreateTestRequest {
            parent: acct.name.clone(),
            test: Some(pb::SmtpTest {
                to: "ops@example.com".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let mut watch = pb::smtp_test_service_client::SmtpTestServiceClient::new(cc.clone())
        .watch_test(pb::WatchTestRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();

    // The agent's session (through B) waits for the banner: kill B.
    tokio::time::timeout(Duration::from_secs(30), first_connection)
        .await
        .expect("the agent reached the relay through B")
        .unwrap();
    let killed = Instant::now();
    let mut b = b;
    b.proc.child.kill().unwrap();
    b.proc.child.wait().unwrap();

    // C streams the test to its end: taken over, run again through C, SUCCEEDED.
    let mut phases = Vec::new();
    let done = loop {
        let msg = tokio::time::timeout(Duration::from_secs(90), watch.message())
            .await
            .expect("the test ends")
            .unwrap()
            .expect("the watch stays open");
        match msg.event {
            Some(Event::PhaseFinished(r)) => phases.push(r.phase()),
            Some(Event::Finished(t)) => break t,
            _ => {}
        }
    };
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}\nagent:\n{}",
        done.result,
        agent.text()
    );
    assert!(phases.contains(&pb::Phase::Data), "{phases:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "taken over within the lease and the backoff bound"
    );
    assert_eq!(
        where_connected().await,
        [c.api.as_str()],
        "the agent moved to C"
    );
    assert_eq!(received.lock().unwrap().len(), 1, "delivered once");
    let tests = pb::smtp_test_service_client::SmtpTestServiceClient::new(ca.clone())
        .list_tests(pb::ListTestsRequest {
            parent: acct.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tests;
    assert!(
        tests
            .iter()
            .all(|t| t.state != i32::from(pb::TestState::Running)),
        "{tests:?}"
    );
    let listed = pb::replica_service_client::ReplicaServiceClient::new(ca.clone())
        .list_replicas(pb::ListReplicasRequest {})
        .await
        .unwrap()
        .into_inner()
        .replicas;
    assert_eq!(listed.len(), 3, "B is still listed, as unresponsive soon");
    drop((agent, a, c, b));
}
