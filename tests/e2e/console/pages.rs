//! The console's pages around the accounts, over real HTTP: credentials (a secret never comes
//! back in any page), connectors (an enrollment token is shown once), messages (cancel and
//! retry change the message), the queue (pause, resume), the audit log, and a viewer who sees
//! no write controls and whose forged POSTs are refused with 403 and change nothing.

use super::http::Browser;
use super::listed;
use crate::messages::messages;
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account, test_destinations};

/// Signs `b` in with `token`; returns the session's CSRF token (from a page's forms).
pub(super) async fn sign_in(b: &mut Browser, token: &str) -> String {
    b.sign_in(token).await;
    let page = b.get("/connectors").await;
    assert_eq!(page.status, 200, "{}", page.body);
    csrf_of(&page.body)
}

/// The CSRF token in a page's form.
pub(super) fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

pub(super) async fn console_server() -> TestServer {
    TestServer::start_configured(Backend::Sqlite, |c| {
        c.ui_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// A token of `role`.
pub(super) async fn token(server: &TestServer, role: pb::Role) -> String {
    super::token(server, &format!("console {}", role.as_str_name()), role).await
}

async fn credentials(server: &TestServer) -> Vec<pb::Credential> {
    let mut api = server.credentials();
    listed(
        api.list_credentials(pb::ListCredentialsRequest::default()),
        |r| r.credentials,
    )
    .await
}

async fn connectors(server: &TestServer) -> Vec<pb::Connector> {
    let mut api = server.connectors();
    listed(
        api.list_connectors(pb::ListConnectorsRequest::default()),
        |r| r.connectors,
    )
    .await
}

/// Posts the new-credential form for the password credential "Relay login".
async fn post_relay_login(
    b: &mut Browser,
    csrf: &str,
    destinations: &str,
    secret: &str,
) -> super::http::Response {
    let form = [
        ("csrf", csrf),
        ("display_name", "Relay login"),
        ("username", "relay@example.com"),
        ("kind", "PASSWORD"),
        ("allowed_destinations", destinations),
        ("secret", secret),
    ];
    b.post("/credentials", &form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_for_an_admin() {
    let server = console_server().await;
    let dc = server.create_connector("Render DC").await;
    let mut b = Browser::new(server.ui_addr.unwrap());
    sign_in(&mut b, &server.admin_token).await;
    for (path, marker) in [
        ("/credentials", r#"id="new-credential""#),
        ("/credentials/new", r#"id="credential-form""#),
        ("/connectors", r#"data-testid="connector-row""#),
        (
            &format!("/connectors/{}", dc.id) as &str,
            r#"id="enroll-form""#,
        ),
        ("/messages", r#"id="message-filters""#),
        ("/audit", r#"id="audit-filters""#),
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains(marker), "{path} lacks {marker}");
        assert!(
            page.body.contains(r#"href="/audit""#),
            "an admin sees the audit link"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_is_created_and_rotated_and_its_secret_never_comes_back() {
    let server = console_server().await;
    let mut b = Browser::new(server.ui_addr.unwrap());
    let csrf = sign_in(&mut b, &server.admin_token).await;
    let secret = format!("S3cret-{:016x}", rand::random::<u64>());
    let destinations = test_destinations().join("\n");
    let mut bodies = Vec::new();

    // A validation error is shown next to its field, and the secret is asked for again.
    let bad = post_relay_login(&mut b, &csrf, "not a host!", &secret).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains(r#"id="allowed_destinations-error""#),
        "{}",
        bad.body
    );
    assert!(bad.body.contains(r#"data-testid="secret-again""#));
    assert!(
        bad.body.contains("relay@example.com"),
        "the other fields are kept"
    );
    bodies.push(bad.body);
    assert!(credentials(&server).await.is_empty(), "nothing was stored");

    let made = post_relay_login(&mut b, &csrf, &destinations, &secret).await;
    assert_eq!(made.status, 303, "{}", made.body);
    bodies.push(made.body.clone());
    let stored = credentials(&server).await;
    assert_eq!(stored.len(), 1);
    let c = &stored[0];
    assert_eq!(c.display_name, "Relay login");
    assert_eq!(c.username, "relay@example.com");
    assert!(c.has_secret);
    assert!(
        c.allowed_destinations
            .iter()
            .any(|d| d == "smtp.example.com")
    );
    let list = b.get(made.location()).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(r#"data-testid="notice-created""#));
    assert!(list.body.contains("Relay login"));
    bodies.push(list.body);

    // Rotating: the form has an empty password input; an empty one is refused.
    let rotate_path = format!("/credentials/{}/rotate", c.id);
    let form = b.get(&rotate_path).await;
    assert_eq!(form.status, 200);
    assert!(
        form.body
            .contains(r#"type="password" name="secret" value="""#)
    );
    bodies.push(form.body);
    let empty = b
        .post(&rotate_path, &[("csrf", &csrf), ("secret", "")])
        .await;
    assert_eq!(empty.status, 400);
    assert!(
        empty.body.contains(r#"id="secret-error""#),
        "{}",
        empty.body
    );
    bodies.push(empty.body);
    let rotated_secret = format!("R0tated-{:016x}", rand::random::<u64>());
    let rotated = b
        .post(
            &rotate_path,
            &[("csrf", &csrf), ("secret", &rotated_secret)],
        )
        .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    let after = credentials(&server).await.remove(0);
    assert_ne!(after.etag, c.etag, "the rotation changed the credential");
    let list = b.get(rotated.location()).await;
    assert!(list.body.contains(r#"data-testid="notice-rotated""#));
    bodies.push(list.body);

    // An OAuth2 client-credentials credential: its client secret is write-only too, and
    // rotating it asks for the client secret.
    let client_secret = format!("C1ient-{:016x}", rand::random::<u64>());
    let made = b
        .post(
            "/credentials",
            &[
                ("csrf", &csrf),
                ("display_name", "M365 app"),
                ("username", "app@example.com"),
                ("kind", "OAUTH2_CLIENT_CREDENTIALS"),
                ("allowed_destinations", "smtp.example.com"),
                ("token_url", "http://127.0.0.1:9/token"),
                ("client_id", "client-1"),
                ("scope", "https://outlook.office365.com/.default"),
                ("token_source", "SERVER"),
                ("client_secret", &client_secret),
            ],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let app = credentials(&server)
        .await
        .into_iter()
        .find(|c| c.display_name == "M365 app")
        .unwrap();
    assert_eq!(app.kind, pb::CredentialKind::Oauth2ClientCredentials as i32);
    assert!(app.has_client_secret);
    assert_eq!(app.client_id, "client-1");
    let form = b.get(&format!("/credentials/{}/rotate", app.id)).await;
    assert!(form.body.contains(r#"name="client_secret" value="""#));
    assert!(!form.body.contains(r#"name="secret""#));
    bodies.push(form.body);
    let new_client_secret = format!("C2ient-{:016x}", rand::random::<u64>());
    let rotated = b
        .post(
            &format!("/credentials/{}/rotate", app.id),
            &[("csrf", &csrf), ("client_secret", &new_client_secret)],
        )
        .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    bodies.push(b.get("/credentials").await.body);
    bodies.push(b.get("/audit").await.body);
    for body in &bodies {
        assert!(!body.contains(&client_secret) && !body.contains(&new_client_secret));
    }

    for body in &bodies {
        assert!(!body.contains(&secret), "the secret came back in a page");
        assert!(
            !body.contains(&rotated_secret),
            "the new secret came back in a page"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_token_is_shown_once_and_an_agent_is_revoked_after_confirming() {
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.ui_listen = Some("127.0.0.1:0".parse().unwrap());
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut b = Browser::new(server.ui_addr.unwrap());
    let csrf = sign_in(&mut b, &server.admin_token).await;
    let made = b
        .post(
            "/connectors",
            &[
                ("csrf", &csrf),
                ("display_name", "DMZ"),
                ("description", "behind the DMZ"),
            ],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let dc = connectors(&server).await.remove(0);
    assert_eq!(made.location(), format!("/connectors/{}", dc.id));
    let unnamed = b
        .post("/connectors", &[("csrf", &csrf), ("display_name", "")])
        .await;
    assert_eq!(unnamed.status, 400, "{}", unnamed.body);
    assert!(
        unnamed.body.contains(r#"id="display_name-error""#),
        "{}",
        unnamed.body
    );
    assert_eq!(connectors(&server).await.len(), 1);
    assert_eq!(dc.description, "behind the DMZ");

    let shown = b
        .post(
            &format!("/connectors/{}/enrollment-tokens", dc.id),
            &[("csrf", &csrf), ("ttl_minutes", "30")],
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let marker = r#"data-testid="enrollment-token">"#;
    let at = shown.body.find(marker).expect("the token is shown") + marker.len();
    let token = shown.body[at..].split('<').next().unwrap().to_owned();
    assert!(token.len() > 16, "{token}");
    // The command names the agent listener's port, on the host the browser used.
    let port = server.agent_addr.unwrap().port();
    assert!(shown.body.contains(&format!(
        "mailplane-agent enroll --server https://127.0.0.1:{port} --server-ca server-ca.pem \
         --enrollment-token {token}"
    )));
    assert!(
        shown.body.contains("BEGIN CERTIFICATE"),
        "the server CA is shown"
    );
    assert_eq!(shown.header("cache-control"), Some("no-store"));

    let again = b.get(&format!("/connectors/{}", dc.id)).await;
    assert_eq!(again.status, 200);
    assert!(!again.body.contains(&token), "the token is shown only once");
    assert!(again.body.contains(r#"data-testid="no-agents""#));

    // An agent enrolls with what the page showed; the connector page lists it, and revoking
    // it goes through a confirmation step.
    let marker = r#"data-testid="server-ca">"#;
    let at = shown.body.find(marker).unwrap() + marker.len();
    let ca_pem = shown.body[at..].split('<').next().unwrap().to_owned();
    let agent = enroll(&server, &ca_pem, &token).await;
    let agent_id = agent.rsplit('/').next().unwrap().to_owned();
    let page = b.get(&format!("/connectors/{}", dc.id)).await;
    assert!(
        page.body.contains(r#"data-testid="agent-row""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("console-agent-host"));
    let confirm_path = format!("/connectors/{}/agents/{agent_id}/revoke", dc.id);
    assert!(page.body.contains(&format!(r#"href="{confirm_path}""#)));
    let confirm = b.get(&confirm_path).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains(r#"id="revoke-form""#));
    let status = |c: &pb::Connector| c.agents[0].status;
    let before = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        status(&before),
        pb::AgentStatus::Revoked as i32,
        "the GET changed nothing"
    );
    let revoked = b.post(&confirm_path, &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    let after = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&after), pb::AgentStatus::Revoked as i32);
    let page = b.get(revoked.location()).await;
    assert!(
        page.body
            .contains(r#"data-testid="agent-status"><span data-state="REVOKED">"#)
    );
    assert!(!page.body.contains(&format!(r#"href="{confirm_path}""#)));
    server.stop().await.unwrap();
}

/// Enrolls an agent on `server`'s agent listener with `token`; returns its resource name.
async fn enroll(server: &TestServer, ca_pem: &str, token: &str) -> String {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", server.agent_addr.unwrap()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_pem = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    pb::agent_service_client::AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.into(),
            csr_pem,
            hostname: "console-agent-host".into(),
            version: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_write_controls_and_forged_posts_are_refused() {
    let server = console_server().await;
    let dc = server.create_connector("Viewer DC").await;
    let acct = create_account(&mut server.accounts(), account("Viewed")).await;
    let viewer = token(&server, pb::Role::Viewer).await;
    let mut b = Browser::new(server.ui_addr.unwrap());
    let csrf = sign_in(&mut b, &viewer).await;

    let list = b.get("/connectors").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Viewer DC"));
    assert!(!list.body.contains(r#"id="connector-form""#));
    assert!(
        !list.body.contains(r#"href="/audit""#),
        "no audit link for a viewer"
    );
    assert!(!list.body.contains(r#"href="/credentials""#));
    let page = b.get(&format!("/connectors/{}", dc.id)).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(r#"id="enroll-form""#));
    assert!(!page.body.contains(r#"data-testid="revoke""#));
    let queue = b.get("/messages").await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert!(queue.body.contains(r#"data-testid="queue-row""#));
    assert!(!queue.body.contains(r#"data-testid="pause""#));
    assert!(
        !queue.body.contains(r#"id="message-filters""#),
        "a viewer may not list messages"
    );

    for path in ["/credentials", "/credentials/new", "/audit"] {
        assert_eq!(b.get(path).await.status, 403, "{path}");
    }
    let forged: [(String, Vec<(&str, &str)>); 5] = [
        (
            format!("/connectors/{}/enrollment-tokens", dc.id),
            vec![("csrf", &csrf)],
        ),
        (
            "/connectors".into(),
            vec![("csrf", &csrf), ("display_name", "Forged")],
        ),
        (
            "/credentials".into(),
            vec![
                ("csrf", &csrf),
                ("display_name", "Forged"),
                ("username", "u"),
                ("allowed_destinations", "smtp.example.com"),
                ("secret", "forged"),
            ],
        ),
        (format!("/queue/{}/pause", acct.id), vec![("csrf", &csrf)]),
        (
            format!("/connectors/{}/agents/1/revoke", dc.id),
            vec![("csrf", &csrf)],
        ),
    ];
    for (path, form) in &forged {
        let refused = b.post(path, form).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(!refused.body.contains("mpe_"), "{path} leaked a token");
    }
    assert_eq!(connectors(&server).await.len(), 1);
    assert!(credentials(&server).await.is_empty());
    let summaries = messages(&server)
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue_summaries;
    assert!(summaries.iter().all(|q| !q.paused), "nothing was paused");

    // A POST without the session's CSRF token is refused before the API is called, even for
    // an admin.
    let mut admin = Browser::new(server.ui_addr.unwrap());
    sign_in(&mut admin, &server.admin_token).await;
    let no_csrf = admin
        .post(
            "/connectors",
            &[("csrf", "wrong"), ("display_name", "No CSRF")],
        )
        .await;
    assert_eq!(no_csrf.status, 403);
    assert_eq!(connectors(&server).await.len(), 1);
    server.stop().await.unwrap();
}
