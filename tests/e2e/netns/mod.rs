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
//! connector succeeds (a test, and messages from the outbox), the mail is read back from the
//! sink, the agent's allowlist refuses other
//! ports, a restarted server is found again by the agent on its own (with backoff), and the
//! credential's secret appears in none of the agent's logs.

/// Runs `ip ARGS…` and panics with its error when it fails.
pub(crate) mod harness;
mod proxy;

use harness::{Proc, SINK, Server, Topology, binary};
use mailplane_proto::v1 as pb;
use mailplane_tests::{account, create_account};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// A message through `account` to `to`.
async fn send_message(outbox: &mut Outbox, account: &str, to: &str) -> pb::Message {
    let m = pb::Message {
        account: account.into(),
        ..crate::messages::message(&[to])
    };
    crate::messages::send(outbox, m, "").await.unwrap()
}

type Outbox = pb::message_service_client::MessageServiceClient<mailplane_tests::Conn>;

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
        &net.server_ns,
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
                allowed_destinations: vec![net.relay_ip.clone()],
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
            // The relay speaks in clear (security NONE).
            allow_plaintext_auth: true,
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

    // Messages through the connector: the agent delivers them over its own pooled session,
    // and each attempt names it; a relay outside its allowlist fails the message.
    let mut outbox = pb::message_service_client::MessageServiceClient::new(server.channel.clone());
    let mut sent = Vec::new();
    for i in 0..3 {
        let rcpt = format!("outbox-{i}-{:08x}@example.com", rand::random::<u32>());
        let m = send_message(&mut outbox, &via.name, &rcpt).await;
        sent.push((m.name, rcpt));
    }
    for (name, rcpt) in &sent {
        let m = crate::messages::wait_for(&mut outbox, name, pb::MessageState::Sent).await;
        assert_eq!(m.attempts.last().unwrap().agent, replica.name, "{m:?}");
        sink.wait_for(&format!("to={rcpt}"), Duration::from_secs(10))
            .await;
    }
    let m = send_message(&mut outbox, &outside.name, "outside@example.com").await;
    let m = crate::messages::wait_for(&mut outbox, &m.name, pb::MessageState::Failed).await;
    assert_eq!(
        m.attempts.last().unwrap().failure_class,
        i32::from(pb::FailureClass::DestinationNotAllowed),
        "{m:?}"
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
    let server = Server::start(&net.server_ns, data.path(), &api, &agents).await;
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
