//! OAuth2 credentials whose token endpoint only the connector's network reaches
//! (`TOKEN_SOURCE_CONNECTOR`): a real `mailplane-agent` asks the endpoint, keeps the token in
//! memory, and sends a rotated refresh token to the server, which stores it for the next
//! job. The server's own destination policy denies the endpoint, so a token the server tried
//! to get itself would fail: every token here comes from the agent.

use crate::connectors::agent_metrics::until;
use crate::messages::{message, messages, send, wait_for};
use crate::metrics::sum;
use crate::netns::harness::{Proc, binary};
use crate::oauth::{GOOGLE, MICROSOFT, test, token_phase, token_requests, xoauth2_account};
use crate::smtp::{class, state, to};
use mailplane_proto::v1 as pb;
use mailplane_testkit::idp::{Client, Idp};
use mailplane_tests::{Backend, SmtpFixtures, TestServer, create_account};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The idp's port, from its token URL.
fn idp_port(idp: &Idp) -> String {
    idp.token_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/token")
        .to_owned()
}

/// A server with an agent listener whose policy denies the idp's port (the relay stays
/// allowed).
async fn server(fx: &SmtpFixtures, idp: &Idp, backend: Backend) -> TestServer {
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    let port = idp_port(idp);
    TestServer::start_configured(backend, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.connector_wait = Duration::from_secs(10);
        c.smtp.extra_ca_pem = Some(ca);
        c.smtp
            .policy
            .deny
            .push(format!("127.0.0.0/8 {port}").parse().unwrap());
        c.smtp
            .policy
            .deny
            .push(format!("::1/128 {port}").parse().unwrap());
    })
    .await
}

/// Enrolls and starts a real agent of `connector` that may reach the relay and the idp.
async fn start_agent(
    server: &TestServer,
    fx: &SmtpFixtures,
    idp: &Idp,
    connector: &str,
    state: &Path,
) -> Proc {
    let enrollment = server
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let server_ca = state.join("server-ca.pem");
    std::fs::write(&server_ca, &enrollment.server_ca_pem).unwrap();
    let agent = spawn_agent(server, fx, idp, state, Some(&enrollment.token));
    agent
        .wait_for("connected; waiting for jobs", Duration::from_secs(30))
        .await;
    agent
}

/// Starts the agent with its state in `state` (enrolling with `token` if given).
fn spawn_agent(
    server: &TestServer,
    fx: &SmtpFixtures,
    idp: &Idp,
    state: &Path,
    token: Option<&str>,
) -> Proc {
    let submission = fx.port("SMTP_PORT_SUBMISSION");
    Proc::spawn({
        let mut cmd = Command::new(binary("mailplane-agent"));
        cmd.args(["run", "--log-format", "json", "--log-level", "debug"])
            .args([
                "--server",
                &format!("https://{}", server.agent_addr.unwrap()),
            ])
            .args(["--allow", &format!("localhost:{submission}")])
            .args(["--allow", &format!("localhost:{}", idp_port(idp))])
            .args(["--heartbeat-interval", "1s"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--server-ca")
            .arg(state.join("server-ca.pem"))
            .arg("--state-dir")
            .arg(state.join("state"));
        if let Some(token) = token {
            cmd.env("MAILPLANE_AGENT_ENROLLMENT_TOKEN", token);
        }
        cmd
    })
}

/// An XOAUTH2 account on the submission port through `connector`.
async fn account(
    server: &TestServer,
    fx: &SmtpFixtures,
    name: &str,
    credential: &str,
    connector: &str,
) -> String {
    create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.into(),
            ..xoauth2_account(fx, name, credential)
        },
    )
    .await
    .name
}

async fn set_source(server: &TestServer, credential: &str, source: pb::TokenSource) {
    try_set_source(server, credential, source).await.unwrap();
}

async fn try_set_source(
    server: &TestServer,
    credential: &str,
    source: pb::TokenSource,
) -> Result<pb::Credential, tonic::Status> {
    server
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: credential.into(),
                token_source: source.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["token_source".into()],
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_and_reuses_the_token_the_server_cannot_reach() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "inside",
        Client::new("s3cret-inside-7f2", &fx.var("SMTP_USER"), MICROSOFT),
    );
    let server = server(&fx, &idp, Backend::Sqlite).await;
    let connector = server.create_connector("Inside").await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "m365 inside".into(),
                username: fx.var("SMTP_USER"),
                kind: pb::CredentialKind::Oauth2ClientCredentials.into(),
                token_url: idp.token_url.clone(),
                client_id: "inside".into(),
                client_secret: "s3cret-inside-7f2".into(),
                scope: MICROSOFT.into(),
                token_source: pb::TokenSource::Connector.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cred.token_source, i32::from(pb::TokenSource::Connector));
    let acct = account(&server, &fx, "Inside", &cred.name, &connector.name).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&server, &fx, &idp, &connector.name, dir.path()).await;

    let first = test(&server, &acct).await;
    assert_eq!(
        state(&first),
        pb::TestState::Succeeded,
        "{:?}\n{:?}",
        first.result,
        first.transcript
    );
    let phase = token_phase(&first);
    assert_eq!(phase.status, i32::from(pb::PhaseStatus::Ok));
    assert_eq!(phase.reply_code, 200, "{phase:?}");
    assert!(
        phase.detail.iter().any(|d| d.contains("by this agent")),
        "{phase:?}"
    );
    assert_eq!(token_requests(&idp, "inside"), 1);

    // The next job reuses the agent's token.
    let second = test(&server, &acct).await;
    assert_eq!(
        state(&second),
        pb::TestState::Succeeded,
        "{:?}",
        second.result
    );
    assert!(
        token_phase(&second)
            .detail
            .iter()
            .any(|d| d.contains("got before")),
        "{:?}",
        token_phase(&second)
    );
    assert_eq!(
        token_requests(&idp, "inside"),
        1,
        "one request for both jobs"
    );

    // A message through the account goes out through the agent with the same token.
    let mut c = messages(&server);
    let sent = send(
        &mut c,
        pb::Message {
            account: acct.clone(),
            ..message(&[to("oauth-agent-message").as_str()])
        },
        "oauth-agent-1",
    )
    .await
    .unwrap();
    let sent = wait_for(&mut c, &sent.name, pb::MessageState::Sent).await;
    assert_eq!(sent.state, i32::from(pb::MessageState::Sent));
    assert_eq!(token_requests(&idp, "inside"), 1, "the delivery reused it");

    // The agent's metrics count the one token request, and the delivery.
    let metrics = agent
        .logged_addr("metrics listening")
        .expect("the agent logs its metrics address")
        .parse()
        .unwrap();
    let text = until(metrics, &agent, "counted the delivery", |text, _| {
        sum(
            text,
            "mailplane_agent_jobs_total",
            "kind=\"delivery\",result=\"ok\"",
        ) >= 1.0
    })
    .await;
    assert_eq!(
        sum(
            &text,
            "mailplane_agent_token_fetches_total",
            "result=\"ok\""
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "mailplane_agent_token_fetches_total", "result="),
        1.0,
        "no failed request either: {text}"
    );

    // Neither the client secret nor a token appears in the agent's logs.
    let logs = agent.text();
    assert!(!logs.contains("s3cret-inside-7f2"), "the secret was logged");
    for token in idp.issued() {
        assert!(!logs.contains(&token), "a token was logged");
    }

    // The same credential with the server getting its tokens: its policy denies the endpoint.
    set_source(&server, &cred.name, pb::TokenSource::Server).await;
    let from_server = test(&server, &acct).await;
    assert_eq!(
        class(&from_server),
        pb::FailureClass::DestinationNotAllowed,
        "{:?}",
        from_server.result
    );
    assert_eq!(
        token_requests(&idp, "inside"),
        1,
        "the server never reached it"
    );

    // An account that sends directly may use it while the server gets the tokens; then the
    // agents cannot take over, and no direct account can start using it once they have.
    let direct = |name: &str| xoauth2_account(&fx, name, &cred.name);
    let first_direct = create_account(&mut server.accounts(), direct("Direct")).await;
    let e = try_set_source(&server, &cred.name, pb::TokenSource::Connector)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&first_direct.name), "{}", e.message());
    server
        .accounts()
        .delete_account(pb::DeleteAccountRequest {
            name: first_direct.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    set_source(&server, &cred.name, pb::TokenSource::Connector).await;
    let e = server
        .accounts()
        .create_account(pb::CreateAccountRequest {
            account: Some(direct("Direct again")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("TOKEN_SOURCE_CONNECTOR"),
        "{}",
        e.message()
    );
    let again = test(&server, &acct).await;
    assert_eq!(
        state(&again),
        pb::TestState::Succeeded,
        "{:?}",
        again.result
    );
    drop(agent);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_an_agent_rotates_to_is_stored_by_the_server() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "gmail-inside",
        Client {
            expires_in: 0,
            rotate_refresh_tokens: true,
            refresh_tokens: vec!["rt-inside-0".into()],
            ..Client::new("s3cret-gi", &fx.var("SMTP_USER"), GOOGLE)
        },
    );
    let server = server(&fx, &idp, Backend::Postgres).await;
    let connector = server.create_connector("Google inside").await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "google inside".into(),
                username: fx.var("SMTP_USER"),
                kind: pb::CredentialKind::Oauth2RefreshToken.into(),
                token_url: idp.token_url.clone(),
                client_id: "gmail-inside".into(),
                client_secret: "s3cret-gi".into(),
                refresh_token: "rt-inside-0".into(),
                scope: GOOGLE.into(),
                token_source: pb::TokenSource::Connector.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let acct = account(&server, &fx, "Google inside", &cred.name, &connector.name).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&server, &fx, &idp, &connector.name, dir.path()).await;
    for round in 1..=2 {
        let t = test(&server, &acct).await;
        assert_eq!(
            state(&t),
            pb::TestState::Succeeded,
            "round {round}: {:?}",
            t.result
        );
        let phase = token_phase(&t);
        assert!(
            phase.commands[0].contains("grant_type=refresh_token")
                && phase
                    .detail
                    .iter()
                    .any(|d| d.contains("rotated the refresh token")),
            "{phase:?}"
        );
    }
    // A new agent process knows nothing: its grant comes from the server, which must hold the
    // refresh token the last rotation gave (the endpoint refuses every older one).
    drop(agent);
    let agent = spawn_agent(&server, &fx, &idp, dir.path(), None);
    agent
        .wait_for("connected; waiting for jobs", Duration::from_secs(30))
        .await;
    let t = test(&server, &acct).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    let requests = idp.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    let current = idp.get("gmail-inside").unwrap().refresh_tokens;
    assert_eq!(current.len(), 1, "{current:?}");
    assert!(
        !agent.text().contains(&current[0]),
        "a refresh token was logged"
    );
    drop(agent);
    server.stop().await.unwrap();
}
