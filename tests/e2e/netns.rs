//! The network connector across real network namespaces (root, `ip netns`, veth):
//!
//! ```text
//!  root (this test)      server namespace        agent namespace        relay namespace
//!  198.18.K.1 ── veth ── 198.18.K.2 (API)
//!                        198.18.K+1.1 ── veth ── 198.18.K+1.2
//!                        (agent listener)        198.18.K+2.1 ── veth ── 198.18.K+2.2
//!                                                                        SMTP sink :2525
//! ```
//!
//! No route is added anywhere, and the namespaces have no default route: each reaches only its
//! neighbours' /30s, so only the agent's namespace can reach the relay, and no packet of this
//! test can leave the machine. The direct path fails, the same account through the
//! connector succeeds, the mail is read back from the sink, the agent's allowlist refuses other
//! ports, a restarted server is found again by the agent on its own (with backoff), and the
//! credential's secret appears in none of the agent's logs.

use mailplane_proto::v1 as pb;
use mailplane_tests::{account, create_account};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `ip ARGS…` and panics with its error when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {} (this test needs root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces in a row and their links, removed on drop.
struct Topology {
    server_ns: String,
    agent_ns: String,
    relay_ns: String,
    host_if: String,
    /// The server's API address (reached from the root namespace).
    api_ip: String,
    /// The server's address on the agents' side.
    agent_listener_ip: String,
    /// The relay's address, reachable only from the agent's namespace.
    relay_ip: String,
}

/// Creates a veth pair between two namespaces (`None`: the root) with a /30 on each end.
fn link(a: Option<&str>, a_if: &str, a_ip: &str, b: &str, b_if: &str, b_ip: &str) {
    ip(&["link", "add", a_if, "type", "veth", "peer", "name", b_if]);
    ip(&["link", "set", b_if, "netns", b]);
    ip(&["-n", b, "addr", "add", &format!("{b_ip}/30"), "dev", b_if]);
    ip(&["-n", b, "link", "set", b_if, "up"]);
    match a {
        Some(ns) => {
            ip(&["link", "set", a_if, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{a_ip}/30"), "dev", a_if]);
            ip(&["-n", ns, "link", "set", a_if, "up"]);
        }
        None => {
            ip(&["addr", "add", &format!("{a_ip}/30"), "dev", a_if]);
            ip(&["link", "set", a_if, "up"]);
        }
    }
}

impl Topology {
    fn create() -> Self {
        let id = std::process::id() % 100_000;
        let k = 100 + 3 * (std::process::id() % 40);
        let t = Self {
            server_ns: format!("mps{id}"),
            agent_ns: format!("mpa{id}"),
            relay_ns: format!("mpr{id}"),
            host_if: format!("mph{id}"),
            api_ip: format!("198.18.{k}.2"),
            agent_listener_ip: format!("198.18.{}.1", k + 1),
            relay_ip: format!("198.18.{}.2", k + 2),
        };
        t.remove();
        for ns in [&t.server_ns, &t.agent_ns, &t.relay_ns] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        link(
            None,
            &t.host_if,
            &format!("198.18.{k}.1"),
            &t.server_ns,
            &format!("mps{id}x"),
            &t.api_ip,
        );
        link(
            Some(&t.server_ns),
            &format!("mpc{id}"),
            &t.agent_listener_ip,
            &t.agent_ns,
            &format!("mpa{id}x"),
            &format!("198.18.{}.2", k + 1),
        );
        link(
            Some(&t.agent_ns),
            &format!("mpb{id}"),
            &format!("198.18.{}.1", k + 2),
            &t.relay_ns,
            &format!("mpr{id}x"),
            &t.relay_ip,
        );
        t
    }

    fn remove(&self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in [&self.server_ns, &self.agent_ns, &self.relay_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A child process whose output lines are collected; killed on drop.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (up to `limit`) until the output contains `needle`.
    async fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {limit:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal SMTP sink (Python's standard smtpd) that prints each message it receives.
const SINK: &str = r#"
import asyncore, smtpd, sys
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kw):
        print("MESSAGE from=%s to=%s" % (mailfrom, ",".join(rcpttos)))
        print(data)
        print("END", flush=True)
Sink((sys.argv[1], int(sys.argv[2])), None, decode_data=True)
print("ready", flush=True)
asyncore.loop()
"#;

/// A binary of the workspace, built next to this test by `cargo test --workspace`.
fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// The server, running in its namespace, and a channel to its API.
struct Server {
    proc: Proc,
    channel: mailplane_tests::Conn,
    api: String,
    agents: String,
}

impl Server {
    /// Starts `mailplane serve` in the server namespace on the given addresses (port 0: any).
    async fn start(net: &Topology, data: &std::path::Path, api: &str, agents: &str) -> Self {
        let proc = Proc::spawn({
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &net.server_ns])
                .arg(binary("mailplane"));
            // The test talks plain gRPC to it; TLS on the API is covered by the process tests.
            c.args([
                "serve",
                "--insecure-plaintext",
                "--log-format",
                "json",
                "--listen",
                api,
                "--agent-listen",
                agents,
            ]);
            c.arg("--data-dir")
                .arg(data)
                .env_remove("MAILPLANE_DATABASE_URL");
            c
        });
        proc.wait_for("agent listener (TLS) listening", Duration::from_secs(30))
            .await;
        let addr = |message: &str| {
            proc.lines.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == message)
                    .then(|| v["fields"]["addr"].as_str().map(str::to_owned))?
            })
        };
        let (api, agents) = (
            addr("mailplane listening").unwrap(),
            addr("agent listener (TLS) listening").unwrap(),
        );
        let raw = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let token = std::fs::read_to_string(mailplane_server::auth::bootstrap_file(data)).unwrap();
        let channel = mailplane_tests::with_token(&raw, Some(token.trim()));
        Self {
            proc,
            channel,
            api,
            agents,
        }
    }

    fn tests(&self) -> pb::smtp_test_service_client::SmtpTestServiceClient<mailplane_tests::Conn> {
        pb::smtp_test_service_client::SmtpTestServiceClient::new(self.channel.clone())
    }

    fn connectors(
        &self,
    ) -> pb::network_connector_service_client::NetworkConnectorServiceClient<mailplane_tests::Conn>
    {
        pb::network_connector_service_client::NetworkConnectorServiceClient::new(
            self.channel.clone(),
        )
    }

    /// Stops it with SIGTERM, as an operator would.
    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.proc.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.proc.child.wait().unwrap();
        assert!(
            status.success(),
            "the server exits cleanly on SIGTERM: {status:?}\n{}",
            self.proc.text()
        );
    }
}

async fn finished(server: &Server, parent: &str, to: &str) -> pb::SmtpTest {
    let name = server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: parent.into(),
            test: Some(pb::SmtpTest {
                to: to.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    mailplane_tests::watch_to_end(&mut server.tests(), &name)
        .await
        .1
}

fn class(t: &pb::SmtpTest) -> pb::FailureClass {
    pb::FailureClass::try_from(t.result.as_ref().map_or(0, |r| r.failure_class)).unwrap()
}

async fn wait_online(server: &Server, connector: &str) -> pb::AgentReplica {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = server
            .connectors()
            .get_connector(pb::GetConnectorRequest {
                name: connector.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(a) = c
            .agents
            .iter()
            .find(|a| a.status == i32::from(pb::AgentStatus::Online) && a.connected_since.is_some())
        {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not come online: {:?}",
            c.agents
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_reaches_a_relay_that_only_the_agent_can_reach() {
    let net = Topology::create();
    let sink = Proc::spawn({
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &net.relay_ns,
            "python3",
            "-W",
            "ignore",
            "-u",
            "-c",
            SINK,
            &net.relay_ip,
            "2525",
        ]);
        c
    });
    sink.wait_for("ready", Duration::from_secs(20)).await;

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        &net,
        data.path(),
        &format!("{}:0", net.api_ip),
        &format!("{}:0", net.agent_listener_ip),
    )
    .await;
    let connector = server
        .connectors()
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: "Segmented network".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let token = server
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.name.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let state = tempfile::tempdir().unwrap();
    let ca = state.path().join("server-ca.pem");
    std::fs::write(&ca, &token.server_ca_pem).unwrap();
    let agent_state = state.path().join("state");
    let agent = Proc::spawn({
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.agent_ns])
            .arg(binary("mailplane-agent"))
            .args(["run", "--log-format", "json", "--log-level", "debug"]);
        c.args([
            "--server",
            &format!("https://{}", server.agents),
            "--allow",
            &format!("{}:2525", net.relay_ip),
        ]);
        c.arg("--server-ca")
            .arg(&ca)
            .arg("--state-dir")
            .arg(&agent_state);
        c.env("MAILPLANE_AGENT_ENROLLMENT_TOKEN", &token.token);
        c
    });
    let replica = wait_online(&server, &connector.name).await;

    let secret = "netns-secret-5ac2e1";
    let cred = pb::credential_service_client::CredentialServiceClient::new(server.channel.clone())
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "relay".into(),
                username: "u".into(),
                secret: secret.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut a =
        pb::smtp_account_service_client::SmtpAccountServiceClient::new(server.channel.clone());
    let relay = |name: &str, port: u32| pb::SmtpAccount {
        host: net.relay_ip.clone(),
        port,
        security: pb::SecurityMode::None.into(),
        ..account(name)
    };
    let direct = create_account(&mut a, relay("Direct", 2525)).await;
    let via = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..relay("Via connector", 2525)
        },
    )
    .await;
    let outside = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..relay("Outside allowlist", 2526)
        },
    )
    .await;
    let authed = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            use_authentication: true,
            credential: cred.name,
            ..relay("With secret", 2525)
        },
    )
    .await;

    // The server itself cannot reach the relay.
    let done = finished(&server, &direct.name, "direct@example.com").await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Failed),
        "the direct path must fail: {:?}",
        done.result
    );
    assert_eq!(done.executed_by, "direct");
    assert_eq!(
        done.result.as_ref().unwrap().failed_phase,
        i32::from(pb::Phase::TcpConnect),
        "{:?}",
        done.result
    );

    // Through the connector it works, and the sink received the message.
    let rcpt = format!("netns-{:08x}@example.com", rand::random::<u32>());
    let done = finished(&server, &via.name, &rcpt).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    assert_eq!(
        done.executed_by, replica.name,
        "the transcript names the agent"
    );
    sink.wait_for(&format!("to={rcpt}"), Duration::from_secs(10))
        .await;
    assert!(
        sink.text().contains("Subject: TEST MESSAGE!"),
        "{}",
        sink.text()
    );

    // The agent's allowlist refuses anything else, without connecting.
    let done = finished(&server, &outside.name, "outside@example.com").await;
    assert_eq!(
        class(&done),
        pb::FailureClass::DestinationNotAllowed,
        "{:?}",
        done.result
    );

    // A job carrying a secret (the sink offers no AUTH, so it fails there).
    let done = finished(&server, &authed.name, "authed@example.com").await;
    assert_eq!(done.state, i32::from(pb::TestState::Failed));

    // The server restarts on the same addresses: the agent finds it again by itself.
    let (api, agents) = (server.api.clone(), server.agents.clone());
    server.stop();
    agent
        .wait_for("reconnecting in", Duration::from_secs(30))
        .await;
    let server = Server::start(&net, data.path(), &api, &agents).await;
    wait_online(&server, &connector.name).await;
    let rcpt = format!("again-{:08x}@example.com", rand::random::<u32>());
    let done = finished(&server, &via.name, &rcpt).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    sink.wait_for(&format!("to={rcpt}"), Duration::from_secs(10))
        .await;

    // The agent restarts: on SIGTERM it drains and exits cleanly, and it comes back from its
    // state directory alone (the token is used up).
    Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    let mut agent = agent;
    let status = agent.child.wait().unwrap();
    assert!(
        status.success(),
        "the agent exits cleanly on SIGTERM: {status:?}"
    );
    assert!(
        agent.text().contains("drained; stream closed"),
        "{}",
        agent.text()
    );
    let restarted = Proc::spawn({
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.agent_ns])
            .arg(binary("mailplane-agent"))
            .args(["run", "--log-format", "json", "--log-level", "debug"]);
        c.args([
            "--server",
            &format!("https://{}", server.agents),
            "--allow",
            &format!("{}:2525", net.relay_ip),
        ]);
        c.arg("--server-ca")
            .arg(&ca)
            .arg("--state-dir")
            .arg(&agent_state);
        c
    });
    wait_online(&server, &connector.name).await;
    let rcpt = format!("restarted-{:08x}@example.com", rand::random::<u32>());
    let done = finished(&server, &via.name, &rcpt).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    server.stop();

    let logs = format!("{}\n{}", agent.text(), restarted.text());
    assert!(logs.contains("reconnecting in"), "the backoff is logged");
    assert!(
        !logs.contains(secret),
        "the secret appears in the agent's logs"
    );
    assert!(
        !logs.contains(&token.token),
        "the enrollment token appears in the agent's logs"
    );
    let key = std::fs::metadata(agent_state.join("key.pem")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    drop(restarted);
    drop(agent);
    drop(sink);
    drop(net);
}
