//! A small OAuth2 token endpoint for tests (RFC 6749): it stands in for Microsoft's and
//! Google's, which these machines cannot reach. It serves HTTPS on 127.0.0.1 with the SMTP
//! fixtures' certificate, takes the client credentials and refresh token grants (client
//! secret in the body or as HTTP Basic), answers `invalid_client`, `invalid_grant`,
//! `invalid_scope` and `unsupported_grant_type` as the RFC says, rotates refresh tokens when
//! told to, and issues HS256 JWTs signed with the key Dovecot validates (`SMTP_OAUTH2_KEY`),
//! so the relay side stays real: Dovecot accepts a token only if it is signed, unexpired,
//! from the issuer, for the user and with the scope.
//!
//! Each client's behaviour is set through [`Idp::client`]; [`Idp::requests`] counts what it
//! was asked.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::Mac as _;
use rustls::pki_types::pem::PemObject as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::SmtpFixtures;

/// How a registered client is treated.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client secret.
    pub secret: String,
    /// The mailbox its tokens name (`email` and `sub`).
    pub user: String,
    /// The scopes it may get; a request for another is `invalid_scope`.
    pub allowed_scopes: Vec<String>,
    /// The scope the token grants, when set (else what was asked): to grant less than asked.
    pub grant_scope: Option<String>,
    /// The lifetime `expires_in` says.
    pub expires_in: u64,
    /// How long the JWT is really valid (its `exp`): set it below zero to issue a token the
    /// relay refuses while `expires_in` says it is good.
    pub jwt_lifetime: i64,
    /// How many of the next tokens are issued already expired (their `exp` in the past while
    /// `expires_in` says they are good): the relay refuses them.
    pub expire_next: u32,
    /// Revoked: every request is `invalid_client`.
    pub revoked: bool,
    /// Each refresh token grant answers a new refresh token, and the old one stops working.
    pub rotate_refresh_tokens: bool,
    /// The refresh tokens that work now.
    pub refresh_tokens: Vec<String>,
}

impl Client {
    /// A client with `secret` for `user`, allowed `scope`, tokens good for an hour.
    pub fn new(secret: &str, user: &str, scope: &str) -> Self {
        Self {
            secret: secret.into(),
            user: user.into(),
            allowed_scopes: vec![scope.into()],
            grant_scope: None,
            expires_in: 3600,
            jwt_lifetime: 3600,
            expire_next: 0,
            revoked: false,
            rotate_refresh_tokens: false,
            refresh_tokens: Vec::new(),
        }
    }
}

/// One request the endpoint answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// The client id (from the body or Basic).
    pub client_id: String,
    /// The grant type.
    pub grant_type: String,
    /// The HTTP status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    clients: HashMap<String, Client>,
    requests: Vec<Request>,
    issued: u64,
    tokens: Vec<String>,
}

/// The running endpoint; it stops when dropped.
pub struct Idp {
    /// The token URL (`https://localhost:PORT/token`).
    pub token_url: String,
    state: Arc<Mutex<State>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self._task.abort();
    }
}

impl Idp {
    /// Starts the endpoint with the fixtures' certificate and JWT key.
    pub async fn start(fx: &SmtpFixtures) -> Self {
        let dir = std::path::PathBuf::from(fx.get("SMTP_FIXTURES_DIR"));
        let cert = std::fs::read(dir.join("tls/server.crt")).expect("fixture certificate");
        let key = std::fs::read(dir.join("tls/server.key")).expect("fixture key");
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .expect("fixture certificate PEM");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).expect("fixture key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let signing = STANDARD
            .decode(fx.get("SMTP_OAUTH2_KEY"))
            .expect("SMTP_OAUTH2_KEY is base64");
        let issuer = fx.var("SMTP_OAUTH2_ISSUER");
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let state = Arc::clone(&shared);
                let signing = signing.clone();
                let issuer = issuer.clone();
                connections.spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &state, &signing, &issuer).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            token_url: format!("https://localhost:{port}/token"),
            state,
            _task: task,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers or changes client `id`.
    pub fn client(&self, id: &str, client: Client) {
        self.state().clients.insert(id.into(), client);
    }

    /// Changes client `id` in place.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Client)) {
        if let Some(c) = self.state().clients.get_mut(id) {
            change(c);
        }
    }

    /// Client `id` as it is now.
    pub fn get(&self, id: &str) -> Option<Client> {
        self.state().clients.get(id).cloned()
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Every access token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.state().tokens.clone()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// An HS256 JWT as Dovecot's local validation wants it.
fn jwt(key: &[u8], issuer: &str, user: &str, scope: &str, lifetime: i64, serial: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let iat = now().min(now() + lifetime);
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": user,
        "email": user,
        "scope": scope,
        "iat": iat,
        "exp": now() + lifetime,
        "jti": format!("t{serial}"),
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC key");
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

/// Reads one HTTP/1.1 request and answers it (one request per connection).
async fn serve<S>(stream: S, state: &Mutex<State>, key: &[u8], issuer: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let request_line = line.trim().to_owned();
    let mut length = 0usize;
    let mut basic: Option<(String, String)> = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let header = line.trim();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization")
                && let Some(b64) = value.strip_prefix("Basic ")
                && let Ok(decoded) = STANDARD.decode(b64)
                && let Some((id, secret)) = String::from_utf8_lossy(&decoded).split_once(':')
            {
                basic = Some((decode(id), decode(secret)));
            }
        }
    }
    let mut body = vec![0u8; length.min(64 * 1024)];
    if reader.read_exact(&mut body).await.is_err() {
        return;
    }
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let (status, json) = if request_line.starts_with("POST /token ") {
        answer(state, &form, basic, key, issuer)
    } else {
        (404, serde_json::json!({"error": "not_found"}))
    };
    let body = json.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Percent-decoding of `application/x-www-form-urlencoded`.
fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: u16, code: &str, description: &str) -> (u16, serde_json::Value) {
    (
        status,
        serde_json::json!({"error": code, "error_description": description}),
    )
}

/// The answer to a token request.
fn answer(
    state: &Mutex<State>,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
    key: &[u8],
    issuer: &str,
) -> (u16, serde_json::Value) {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let (client_id, secret) = basic.unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let (status, json) = 'answer: {
        let Some(client) = state.clients.get_mut(&client_id) else {
            break 'answer error(401, "invalid_client", "unknown client");
        };
        if client.revoked || client.secret != secret {
            break 'answer error(401, "invalid_client", "client authentication failed");
        }
        let scope = form.get("scope").cloned().unwrap_or_default();
        if !scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .all(|s| client.allowed_scopes.iter().any(|a| a == s))
        {
            break 'answer error(400, "invalid_scope", "scope not allowed for this client");
        }
        let mut new_refresh = None;
        match grant_type.as_str() {
            "client_credentials" => {}
            "refresh_token" => {
                let given = form.get("refresh_token").cloned().unwrap_or_default();
                let Some(at) = client.refresh_tokens.iter().position(|t| *t == given) else {
                    break 'answer error(400, "invalid_grant", "the refresh token is not valid");
                };
                if client.rotate_refresh_tokens {
                    client.refresh_tokens.remove(at);
                    let fresh = format!("rt-{:016x}", rand::random::<u64>());
                    client.refresh_tokens.push(fresh.clone());
                    new_refresh = Some(fresh);
                }
            }
            _ => break 'answer error(400, "unsupported_grant_type", "grant type not supported"),
        }
        let granted = client.grant_scope.clone().unwrap_or(scope);
        let lifetime = if client.expire_next > 0 {
            client.expire_next -= 1;
            -60
        } else {
            client.jwt_lifetime
        };
        let (user, expires_in) = (client.user.clone(), client.expires_in);
        state.issued += 1;
        let token = jwt(key, issuer, &user, &granted, lifetime, state.issued);
        state.tokens.push(token.clone());
        let mut json = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": granted,
        });
        if let Some(r) = new_refresh {
            json["refresh_token"] = serde_json::Value::from(r);
        }
        (200, json)
    };
    state.requests.push(Request {
        client_id,
        grant_type,
        status,
    });
    (status, json)
}
