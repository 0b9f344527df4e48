//! Web console sessions live in the database: a session made on one replica works on another,
//! signing out on one ends it on all, a session idle past the timeout is over, and the cookie
//! and the stored row never hold the API token in clear.

use mailplane_tests::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange with the console at `addr`: the status, the headers (lower-case
/// names) and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    form: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The value `name=…` among the `Set-Cookie` headers.
fn set_cookie(headers: &[(String, String)], name: &str) -> Option<String> {
    header(headers, "set-cookie").into_iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

/// Signs in at `addr` with `token`; returns the session cookie's value.
async fn sign_in(addr: std::net::SocketAddr, token: &str) -> String {
    let (status, headers, body) = http(addr, "GET", "/sign-in", "", "").await;
    assert_eq!(status, 200);
    let pre = set_cookie(&headers, "mailplane_signin").expect("the sign-in cookie");
    assert!(body.contains(&pre), "the form carries the same CSRF token");
    let form = format!("token={token}&csrf={pre}&next=%2Faccounts");
    let (status, headers, _) = http(
        addr,
        "POST",
        "/sign-in",
        &format!("mailplane_signin={pre}"),
        &form,
    )
    .await;
    assert_eq!(status, 303, "{headers:?}");
    assert_eq!(header(&headers, "location"), ["/accounts"]);
    set_cookie(&headers, "mailplane_session").expect("a session cookie")
}

fn with_console(c: &mut mailplane_server::ServerConfig) {
    c.ui_listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_shared_by_replicas_and_ends_everywhere() {
    let a = TestServer::start_configured(Backend::Postgres, with_console).await;
    let b = a.start_replica().await;
    let (ua, ub) = (a.ui_addr.unwrap(), b.ui_addr.unwrap());
    let id = sign_in(ua, &a.admin_token).await;
    let cookie = format!("mailplane_session={id}");
    let (status, _, body) = http(ub, "GET", "/accounts", &cookie, "").await;
    assert_eq!(status, 200, "the other replica knows the session");
    assert!(body.contains("bootstrap admin"), "{body}");

    // The database holds the cookie's hash and the token sealed, never either in clear.
    let pool = sqlx::PgPool::connect(&a.pg.as_ref().unwrap().url)
        .await
        .unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT id_hash, token_sealed FROM console_sessions")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].0, id);
    let token_bytes = a.admin_token.as_bytes();
    assert!(
        !rows[0]
            .1
            .windows(token_bytes.len())
            .any(|w| w == token_bytes),
        "the token is sealed"
    );

    // Signing out on B ends it on A.
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the sign-out form's CSRF token")
        .to_owned();
    let (status, headers, _) =
        http(ub, "POST", "/sign-out", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(status, 303);
    assert_eq!(
        set_cookie(&headers, "mailplane_session").as_deref(),
        Some("")
    );
    let (status, headers, _) = http(ua, "GET", "/accounts", &cookie, "").await;
    assert_eq!(status, 303, "signed out everywhere");
    assert!(header(&headers, "location")[0].starts_with("/sign-in"));

    // A session idle past the timeout is over (its last use moved back in the database).
    let id = sign_in(ua, &a.admin_token).await;
    let cookie = format!("mailplane_session={id}");
    assert_eq!(http(ua, "GET", "/accounts", &cookie, "").await.0, 200);
    sqlx::query("UPDATE console_sessions SET last_seen = last_seen - $1")
        .bind(i64::try_from(a.config.ui_idle_timeout.as_micros()).unwrap() + 1)
        .execute(&pool)
        .await
        .unwrap();
    let (status, headers, _) = http(ua, "GET", "/accounts", &cookie, "").await;
    assert_eq!(status, 303, "idle past the timeout");
    assert!(header(&headers, "location")[0].starts_with("/sign-in"));
    pool.close().await;
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_signs_the_browser_out() {
    use mailplane_proto::v1 as pb;
    let server = TestServer::start_configured(Backend::Sqlite, with_console).await;
    let mut tokens = pb::token_service_client::TokenServiceClient::new(server.channel.clone());
    let made = tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: "short-lived".into(),
                role: pb::Role::Viewer.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let ui = server.ui_addr.unwrap();
    let cookie = format!("mailplane_session={}", sign_in(ui, &made.token).await);
    assert_eq!(http(ui, "GET", "/accounts", &cookie, "").await.0, 200);
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            name: made.name.clone(),
        })
        .await
        .unwrap();
    // The next page that calls the API is refused, and leads to sign-in.
    let (status, headers, _) = http(ui, "GET", "/accounts", &cookie, "").await;
    assert_eq!(status, 303, "{headers:?}");
    assert!(header(&headers, "location")[0].starts_with("/sign-in"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_the_key_a_session_is_sealed_under_ends_it() {
    use mailplane_server::keys::rotate::{Maintenance, RotateOptions};
    let server = TestServer::start_configured(Backend::Sqlite, with_console).await;
    let ui = server.ui_addr.unwrap();
    let before = format!(
        "mailplane_session={}",
        sign_in(ui, &server.admin_token).await
    );
    let mut maintenance = crate::keys::open(&server).await;
    maintenance
        .rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    // A session made after the rotation is sealed under the new key.
    let after = format!(
        "mailplane_session={}",
        sign_in(ui, &server.admin_token).await
    );
    assert_eq!(http(ui, "GET", "/accounts", &before, "").await.0, 200);
    let removed: Vec<u32> = Maintenance::prune(&mut maintenance, &[], &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(removed, [1]);
    let (status, headers, _) = http(ui, "GET", "/accounts", &before, "").await;
    assert_eq!(status, 303, "the session under key 1 ended");
    assert!(header(&headers, "location")[0].starts_with("/sign-in"));
    assert_eq!(
        http(ui, "GET", "/accounts", &after, "").await.0,
        200,
        "the session under key 2 lives on"
    );
    drop(maintenance);
    server.stop().await.unwrap();
}
