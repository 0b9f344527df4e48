//! The console's pages around the accounts, over real HTTP: credentials (a secret never comes
//! back in any page), connectors (an enrollment token is shown once), messages (cancel and
//! retry change the message), the queue (pause, resume), the audit log, and a viewer who sees
//! no write controls and whose forged POSTs are refused with 403 and change nothing.

use crate::messages::{held_account, message, messages, send, state, wait_for};
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account, test_destinations};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A reply: status, headers (names lowercased), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn location(&self) -> &str {
        self.header("location").unwrap_or_default()
    }
}

/// A browser in miniature: HTTP/1.1 over a new connection per request, with a cookie jar.
struct Browser {
    addr: SocketAddr,
    cookies: Vec<(String, String)>,
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_line = std::str::from_utf8(&rest[..end]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 2 + size + 2..];
    }
}

impl Browser {
    fn new(server: &TestServer) -> Self {
        Self {
            addr: server.ui_addr.expect("the console is served"),
            cookies: Vec::new(),
        }
    }

    async fn request(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Reply {
        let mut tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let body = form.map(|f| {
            f.iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        });
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        if let Some(body) = &body {
            req.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut raw))
            .await
            .expect("the console answers")
            .unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        for (_, cookie) in headers.iter().filter(|(n, _)| n == "set-cookie") {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !cookie.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Reply {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.request("POST", path, Some(form)).await
    }

    /// Signs in with `token`; returns the session's CSRF token.
    async fn sign_in(&mut self, token: &str) -> String {
        let form = self.get("/sign-in").await;
        assert_eq!(form.status, 200);
        let csrf = csrf_of(&form.body);
        let done = self
            .post(
                "/sign-in",
                &[("token", token), ("csrf", &csrf), ("next", "/")],
            )
            .await;
        assert_eq!(done.status, 303, "sign-in: {}", done.body);
        let page = self.get("/connectors").await;
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_of(&page.body)
    }
}

/// The CSRF token in a page's form.
fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

async fn console_server() -> TestServer {
    TestServer::start_configured(Backend::Sqlite, |c| {
        c.ui_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// A token of `role`.
async fn token(server: &TestServer, role: pb::Role) -> String {
    pb::token_service_client::TokenServiceClient::new(server.channel.clone())
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: format!("console {}", role.as_str_name()),
                role: role.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

async fn credentials(server: &TestServer) -> Vec<pb::Credential> {
    server
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .credentials
}

async fn connectors(server: &TestServer) -> Vec<pb::Connector> {
    server
        .connectors()
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connectors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_for_an_admin() {
    let server = console_server().await;
    let dc = server.create_connector("Render DC").await;
    let mut b = Browser::new(&server);
    b.sign_in(&server.admin_token).await;
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
    let mut b = Browser::new(&server);
    let csrf = b.sign_in(&server.admin_token).await;
    let secret = format!("S3cret-{:016x}", rand::random::<u64>());
    let destinations = test_destinations().join("\n");
    let mut bodies = Vec::new();

    // A validation error is shown next to its field, and the secret is asked for again.
    let bad = b
        .post(
            "/credentials",
            &[
                ("csrf", &csrf),
                ("display_name", "Relay login"),
                ("username", "relay@example.com"),
                ("kind", "PASSWORD"),
                ("allowed_destinations", "not a host!"),
                ("secret", &secret),
            ],
        )
        .await;
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

    let made = b
        .post(
            "/credentials",
            &[
                ("csrf", &csrf),
                ("display_name", "Relay login"),
                ("username", "relay@example.com"),
                ("kind", "PASSWORD"),
                ("allowed_destinations", &destinations),
                ("secret", &secret),
            ],
        )
        .await;
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
    let mut b = Browser::new(&server);
    let csrf = b.sign_in(&server.admin_token).await;
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
    assert!(shown.body.contains(&format!(
        "mailplane-agent enroll --server https://127.0.0.1:7751 --server-ca server-ca.pem \
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
    let mut b = Browser::new(&server);
    let csrf = b.sign_in(&viewer).await;

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
    let mut admin = Browser::new(&server);
    admin.sign_in(&server.admin_token).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_listed_cancelled_and_retried_and_queues_paused_from_the_console() {
    let server = console_server().await;
    let held = held_account(&server, "Held").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let deferring = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: closed.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Closed port")
        },
    )
    .await;
    let mut c = messages(&server);
    let queued = send(
        &mut c,
        pb::Message {
            account: held.name.clone(),
            ..message(&["held-ops@example.com"])
        },
        "",
    )
    .await
    .unwrap();
    let deferred = send(
        &mut c,
        pb::Message {
            account: deferring.name.clone(),
            ..message(&["closed-ops@example.com"])
        },
        "",
    )
    .await
    .unwrap();
    let deferred = wait_for(&mut c, &deferred.name, pb::MessageState::Deferred).await;
    assert_eq!(deferred.attempts.len(), 1);
    let qid = queued.name.trim_start_matches("messages/");
    let did = deferred.name.trim_start_matches("messages/");

    let mut b = Browser::new(&server);
    let csrf = b.sign_in(&server.admin_token).await;
    let log = b.get("/messages").await;
    assert_eq!(log.status, 200);
    assert!(
        log.body
            .contains(&format!(r#"data-testid="message-row" data-id="{qid}""#))
    );
    assert!(
        log.body
            .contains(&format!(r#"data-testid="message-row" data-id="{did}""#))
    );
    let filtered = b.get("/messages?recipient=closed-ops&state=DEFERRED").await;
    assert!(filtered.body.contains(&format!(r#"data-id="{did}""#)));
    assert!(!filtered.body.contains(&format!(r#"data-id="{qid}""#)));
    let by_account = b.get(&format!("/messages?account={}", held.id)).await;
    assert!(by_account.body.contains(&format!(r#"data-id="{qid}""#)));
    assert!(!by_account.body.contains(&format!(r#"data-id="{did}""#)));

    // A queued message offers Cancel, not Retry; cancelling it through the console works.
    let page = b.get(&format!("/messages/{qid}")).await;
    assert!(page.body.contains(r#"data-testid="cancel""#));
    assert!(!page.body.contains(r#"data-testid="retry""#));
    let done = b
        .post(&format!("/messages/{qid}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let m = c
        .get_message(pb::GetMessageRequest {
            name: queued.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&m), pb::MessageState::Cancelled);
    let page = b.get(done.location()).await;
    assert!(
        !page.body.contains(r#"data-testid="cancel""#),
        "nothing left to cancel"
    );
    assert!(page.body.contains(r#"data-state="CANCELLED">Cancelled<"#));
    // Cancelling it again (a stale page) shows the message as it is now, and why not.
    let again = b
        .post(&format!("/messages/{qid}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains(r#"data-testid="action-refused""#));
    assert!(again.body.contains(r#"data-state="CANCELLED""#));

    // A deferred message (next attempt a minute away) offers Retry; retrying runs it now.
    let page = b.get(&format!("/messages/{did}")).await;
    assert!(page.body.contains(r#"data-testid="retry""#));
    assert!(page.body.contains(r#"data-testid="attempt-row""#));
    let done = b
        .post(&format!("/messages/{did}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c
            .get_message(pb::GetMessageRequest {
                name: deferred.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if m.attempts.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the retry did not run: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause and resume delivery of an account from the queue.
    let paused = b
        .post(
            &format!("/queue/{}/pause", deferring.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(paused.status, 303);
    let is_paused = |s: &[pb::QueueSummary]| {
        s.iter()
            .find(|q| q.account == deferring.name)
            .is_some_and(|q| q.paused)
    };
    let summaries = c
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue_summaries;
    assert!(is_paused(&summaries));
    let queue = b.get("/messages").await;
    assert!(queue.body.contains(r#"data-testid="resume""#));
    let resumed = b
        .post(
            &format!("/queue/{}/resume", deferring.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(resumed.status, 303);
    let summaries = c
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queue_summaries;
    assert!(!is_paused(&summaries));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_lists_the_console_sign_in() {
    let server = console_server().await;
    let mut b = Browser::new(&server);
    b.sign_in(&server.admin_token).await;
    let page = b.get("/audit").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("console/SignIn"), "{}", page.body);
    assert!(page.body.contains(r#"data-testid="event-row""#));
    let none = b.get("/audit?resource=accounts%2F999").await;
    assert!(none.body.contains(r#"data-testid="empty""#));
    let bad = b.get("/audit?start=yesterday").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains(r#"data-testid="error-start""#));
    let ranged = b.get("/audit?start=2000-01-01&end=2999-01-01T00:00").await;
    assert!(ranged.body.contains("console/SignIn"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_credentials_and_the_queue_but_not_connectors_or_the_audit_log() {
    let server = console_server().await;
    let dc = server.create_connector("Operator DC").await;
    create_account(&mut server.accounts(), account("Operated")).await;
    let operator = token(&server, pb::Role::Operator).await;
    let mut b = Browser::new(&server);
    let csrf = b.sign_in(&operator).await;

    let list = b.get("/credentials").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(r#"id="new-credential""#));
    assert!(!list.body.contains(r#"href="/audit""#));
    let queue = b.get("/messages").await;
    assert!(queue.body.contains(r#"id="message-filters""#));
    assert!(queue.body.contains(r#"data-testid="pause""#));
    let page = b.get(&format!("/connectors/{}", dc.id)).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(r#"id="enroll-form""#));
    assert!(
        !b.get("/connectors")
            .await
            .body
            .contains(r#"id="connector-form""#)
    );
    assert_eq!(b.get("/audit").await.status, 403);
    let forged = b
        .post(
            &format!("/connectors/{}/enrollment-tokens", dc.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(!forged.body.contains("mpe_"));
    server.stop().await.unwrap();
}
