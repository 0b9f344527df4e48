//! The namespaces, the processes in them, and the server under test.

use mailplane_proto::v1 as pb;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn ip(args: &[&str]) {
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
pub(super) struct Topology {
    pub(super) server_ns: String,
    pub(super) agent_ns: String,
    pub(super) relay_ns: String,
    pub(super) host_if: String,
    /// The server's API address (reached from the root namespace).
    pub(super) api_ip: String,
    /// The server's address on the agents' side.
    pub(super) agent_listener_ip: String,
    /// The relay's address, reachable only from the agent's namespace.
    pub(super) relay_ip: String,
}

/// Creates a veth pair between two namespaces (`None`: the root) with a /30 on each end.
pub(super) fn link(a: Option<&str>, a_if: &str, a_ip: &str, b: &str, b_if: &str, b_ip: &str) {
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
    pub(super) fn create() -> Self {
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

    pub(super) fn remove(&self) {
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
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command) -> Self {
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

    pub(crate) fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The API and agent addresses a `mailplane serve` logged (JSON), once it logged both.
    pub(crate) fn listening(&self) -> (String, String) {
        (
            self.logged_addr("mailplane listening").unwrap(),
            self.logged_addr("agent listener (TLS) listening").unwrap(),
        )
    }

    /// The `addr` field of the first JSON log line whose message is `message`, if logged.
    pub(crate) fn logged_addr(&self, message: &str) -> Option<String> {
        self.lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == message)
                .then(|| v["fields"]["addr"].as_str().map(str::to_owned))?
        })
    }

    /// Waits (up to `limit`) until the output contains `needle`.
    pub(crate) async fn wait_for(&self, needle: &str, limit: Duration) {
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
pub(super) const SINK: &str = r#"
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
pub(crate) fn binary(name: &str) -> std::path::PathBuf {
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
pub(super) struct Server {
    pub(super) proc: Proc,
    pub(super) channel: mailplane_tests::Conn,
    pub(super) api: String,
    pub(super) agents: String,
}

impl Server {
    /// Starts `mailplane serve` in the server namespace on the given addresses (port 0: any).
    pub(super) async fn start(
        server_ns: &str,
        data: &std::path::Path,
        api: &str,
        agents: &str,
    ) -> Self {
        let proc = Proc::spawn({
            let mut c = Command::new("ip");
            c.args(["netns", "exec", server_ns])
                .arg(binary("mailplane"));
            // The test talks plain gRPC to it; TLS on the API is covered by the process tests.
            c.args([
                "serve",
                "--ui",
                "off",
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
        let (api, agents) = proc.listening();
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

    pub(super) fn tests(
        &self,
    ) -> pb::smtp_test_service_client::SmtpTestServiceClient<mailplane_tests::Conn> {
        pb::smtp_test_service_client::SmtpTestServiceClient::new(self.channel.clone())
    }

    pub(super) fn connectors(
        &self,
    ) -> pb::network_connector_service_client::NetworkConnectorServiceClient<mailplane_tests::Conn>
    {
        pb::network_connector_service_client::NetworkConnectorServiceClient::new(
            self.channel.clone(),
        )
    }

    /// Stops it with SIGTERM, as an operator would.
    pub(super) fn stop(mut self) {
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
