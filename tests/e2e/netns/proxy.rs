//! An agent behind an HTTP proxy (issue 13), across real network namespaces:
//!
//! ```text
//!  root (this test)     server namespace       proxy namespace       agent namespace       relay namespace
//!  198.19.K.1 ── veth ── 198.19.K.2 (API)
//!                       198.19.K+1.1 ── veth ── 198.19.K+1.2
//!                       (agent listener)       198.19.K+2.1 ── veth ── 198.19.K+2.2
//!                                              tinyproxy :3128         198.19.K+3.1 ── veth ── 198.19.K+3.2
//!                                                                                             SMTP sink :2525
//! ```
//!
//! No route is added anywhere: the agent reaches only the proxy (and the relay), the proxy
//! reaches the server's agent listener. A real tinyproxy with Basic authentication allows
//! `CONNECT` to the listener's port only. Without the proxy the agent cannot enroll; with a
//! wrong password it says the proxy refused the credentials; through the proxy it enrolls,
//! streams, and runs a test against the sink; the password appears in none of its output.

use super::harness::{Proc, SINK, Server, binary, ip, link};
use super::{finished, wait_online};
use mailplane_proto::v1 as pb;
use mailplane_tests::{account, create_account};
use std::process::{Command, Output};
use std::time::Duration;

const PROXY_USER: &str = "mpagent";
const PROXY_PASSWORD: &str = "proxy-pw-7d1e93";
const PROXY_PORT: u16 = 3128;

/// Four namespaces in a row and their links, removed on drop.
struct Net {
    server_ns: String,
    proxy_ns: String,
    agent_ns: String,
    relay_ns: String,
    host_if: String,
    api_ip: String,
    agent_listener_ip: String,
    proxy_ip: String,
    relay_ip: String,
}

impl Net {
    fn create() -> Self {
        let id = std::process::id() % 100_000;
        // 198.19.0.0/16, the other half of 198.18.0.0/15 from the connector test's.
        let k = 100 + 4 * (std::process::id() % 35);
        let n = Net {
            server_ns: format!("mxs{id}"),
            proxy_ns: format!("mxp{id}"),
            agent_ns: format!("mxa{id}"),
            relay_ns: format!("mxr{id}"),
            host_if: format!("mxh{id}"),
            api_ip: format!("198.19.{k}.2"),
            agent_listener_ip: format!("198.19.{}.1", k + 1),
            proxy_ip: format!("198.19.{}.1", k + 2),
            relay_ip: format!("198.19.{}.2", k + 3),
        };
        n.remove();
        for ns in n.namespaces() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        link(
            None,
            &n.host_if,
            &format!("198.19.{k}.1"),
            &n.server_ns,
            &format!("mxs{id}x"),
            &n.api_ip,
        );
        link(
            Some(&n.server_ns),
            &format!("mxc{id}"),
            &n.agent_listener_ip,
            &n.proxy_ns,
            &format!("mxp{id}x"),
            &format!("198.19.{}.2", k + 1),
        );
        link(
            Some(&n.proxy_ns),
            &format!("mxd{id}"),
            &n.proxy_ip,
            &n.agent_ns,
            &format!("mxa{id}x"),
            &format!("198.19.{}.2", k + 2),
        );
        link(
            Some(&n.agent_ns),
            &format!("mxe{id}"),
            &format!("198.19.{}.1", k + 3),
            &n.relay_ns,
            &format!("mxr{id}x"),
            &n.relay_ip,
        );
        n
    }

    fn namespaces(&self) -> [&String; 4] {
        [
            &self.server_ns,
            &self.proxy_ns,
            &self.agent_ns,
            &self.relay_ns,
        ]
    }

    fn remove(&self) {
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }

    /// `mailplane-agent ARGS…` in the agent's namespace, with no proxy variables of ours.
    fn agent(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.agent_ns])
            .arg(binary("mailplane-agent"))
            .args(args);
        for var in [
            "https_proxy",
            "HTTPS_PROXY",
            "no_proxy",
            "NO_PROXY",
            "MAILPLANE_AGENT_PROXY",
        ] {
            c.env_remove(var);
        }
        c
    }

    fn proxy_url(&self, password: &str) -> String {
        format!(
            "http://{PROXY_USER}:{password}@{}:{PROXY_PORT}",
            self.proxy_ip
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Starts tinyproxy in the proxy namespace: Basic authentication, `CONNECT` only to
/// `connect_port`, logging to its stderr.
async fn tinyproxy(net: &Net, dir: &std::path::Path, connect_port: &str) -> Proc {
    let found = Command::new("tinyproxy").arg("-v").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "tinyproxy is missing: this test runs a real HTTP proxy; install it with \
         `apt-get install tinyproxy` (deploy/smtp-fixtures/setup.sh does, as CI runs it)"
    );
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {PROXY_PORT}\nListen {}\nTimeout 600\nLogLevel Info\nMaxClients 20\n\
             BasicAuth {PROXY_USER} {PROXY_PASSWORD}\nConnectPort {connect_port}\n",
            net.proxy_ip
        ),
    )
    .unwrap();
    let proxy = Proc::spawn({
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.proxy_ns, "tinyproxy", "-d", "-c"])
            .arg(&conf);
        c
    });
    proxy
        .wait_for("Accepting connections", Duration::from_secs(20))
        .await;
    proxy
}

fn failed_with(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} must fail: {}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_behind_an_http_proxy_enrolls_and_serves_through_it() {
    let net = Net::create();
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
        ])
        .args([&net.relay_ip, "2525"]);
        c
    });
    sink.wait_for("ready", Duration::from_secs(20)).await;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        &net.server_ns,
        data.path(),
        &format!("{}:0", net.api_ip),
        &format!("{}:0", net.agent_listener_ip),
    )
    .await;
    let agent_port = server.agents.rsplit_once(':').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    let proxy = tinyproxy(&net, dir.path(), &agent_port).await;

    let connectors = server.connectors();
    let connector = connectors
        .clone()
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: "Behind a proxy".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let token = connectors
        .clone()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.name.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ca = dir.path().join("server-ca.pem");
    std::fs::write(&ca, &token.server_ca_pem).unwrap();
    let state = dir.path().join("state");
    let server_url = format!("https://{}", server.agents);
    let base = |cmd: &str| {
        let mut c = net.agent(&[cmd, "--server", &server_url, "--server-ca"]);
        c.arg(&ca).arg("--state-dir").arg(&state);
        c.args(["--allow", &format!("{}:2525", net.relay_ip)]);
        c.env("MAILPLANE_AGENT_ENROLLMENT_TOKEN", &token.token);
        c
    };
    let mut outputs = String::new();

    // (1) The direct route does not exist: enrollment fails, saying where it could not connect.
    let out = base("enroll").output().unwrap();
    let stderr = failed_with(&out, "enrolling without the proxy");
    assert!(
        stderr.contains(&format!("cannot connect to {server_url}")),
        "{stderr}"
    );
    outputs.push_str(&stderr);

    // (3) A wrong password: the proxy's refusal, in words, without the password. (tinyproxy
    // answers a CONNECT with wrong credentials with 401 rather than 407; the agent takes both
    // as the proxy refusing the credentials, and names the code it got.)
    let wrong = "wrong-pw-41c0";
    let out = base("enroll")
        .args(["--proxy", &net.proxy_url(wrong)])
        .output()
        .unwrap();
    let stderr = failed_with(&out, "enrolling with a wrong proxy password");
    assert!(
        stderr.contains("the proxy refused the credentials (HTTP 40")
            && stderr.contains(&format!(
                "): check the user and password in --proxy (proxy {}:{PROXY_PORT})",
                net.proxy_ip
            )),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong), "{stderr}");
    outputs.push_str(&stderr);

    // A proxy that is not there is named as such.
    let out = base("enroll")
        .args(["--proxy", &format!("http://{}:3129", net.proxy_ip)])
        .output()
        .unwrap();
    let stderr = failed_with(&out, "enrolling through a closed port");
    assert!(
        stderr.contains(&format!("cannot reach the proxy {}:3129", net.proxy_ip)),
        "{stderr}"
    );

    // check-config shows the proxy without its credentials.
    let out = base("check-config")
        .env("MAILPLANE_AGENT_PROXY", net.proxy_url(PROXY_PASSWORD))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!(
            "proxy:                http://<redacted>@{}:{PROXY_PORT} (from --proxy)",
            net.proxy_ip
        )),
        "{stdout}"
    );
    outputs.push_str(&stdout);

    // (2) Through the proxy (its URL in the environment): enrolls, streams, runs a test.
    let agent = Proc::spawn({
        let mut c = base("run");
        c.args(["--log-format", "json", "--log-level", "debug"])
            .env("MAILPLANE_AGENT_PROXY", net.proxy_url(PROXY_PASSWORD));
        c
    });
    let replica = wait_online(&server, &connector.name).await;
    let mut accounts =
        pb::smtp_account_service_client::SmtpAccountServiceClient::new(server.channel.clone());
    let via = create_account(
        &mut accounts,
        pb::SmtpAccount {
            host: net.relay_ip.clone(),
            port: 2525,
            security: pb::SecurityMode::None.into(),
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..account("Via the proxied connector")
        },
    )
    .await;
    let rcpt = format!("proxied-{:08x}@example.com", rand::random::<u32>());
    let done = finished(&server, &via.name, &rcpt).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}\n{}",
        done.result,
        agent.text()
    );
    assert_eq!(done.executed_by, replica.name);
    sink.wait_for(&format!("to={rcpt}"), Duration::from_secs(10))
        .await;
    // The proxy carried it: tinyproxy logs the tunnels it opened to the listener.
    proxy
        .wait_for(&net.agent_listener_ip, Duration::from_secs(10))
        .await;
    assert!(
        agent
            .text()
            .contains("through the proxy http://<redacted>@"),
        "the agent logs the proxy without credentials:\n{}",
        agent.text()
    );

    // (4) The password is in none of the agent's output.
    server.stop();
    outputs.push_str(&agent.text());
    assert!(
        !outputs.contains(PROXY_PASSWORD),
        "the proxy password appears in the agent's output:\n{outputs}"
    );
    assert!(
        !outputs.contains(&token.token),
        "the enrollment token leaked"
    );
    drop(agent);
    drop(proxy);
    drop(sink);
    drop(net);
}
