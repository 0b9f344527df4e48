//! One OAuth2 token request (RFC 6749): the client credentials or refresh token grant, posted
//! to a credential's token endpoint over rustls, to an address the destination check allows,
//! with no redirects and no proxy; what the answer means; and the failure class it gets. The
//! server asks for its credentials' tokens with it, and so does an agent for credentials
//! whose endpoint only its network reaches.

use crate::{DestinationCheck, FailureClass, Secret, https_client_config};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a token request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// How the HTTP client reaches token endpoints.
#[derive(Clone)]
pub struct HttpSettings {
    /// The destinations it may connect to (as for relays).
    pub policy: Arc<dyn DestinationCheck>,
    /// An extra CA (PEM) trusted as well as the web PKI.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("extra_ca_pem", &self.extra_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// The grant a request uses.
pub enum Grant<'a> {
    /// `client_credentials`.
    ClientCredentials,
    /// `refresh_token`, with the token.
    RefreshToken(&'a Secret),
}

impl Grant<'_> {
    fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken(_) => "refresh_token",
        }
    }
}

/// A token request.
pub struct TokenRequest<'a> {
    /// The endpoint.
    pub url: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// The client secret.
    pub client_secret: &'a Secret,
    /// The scopes asked for.
    pub scope: &'a str,
    /// The grant.
    pub grant: Grant<'a>,
}

impl TokenRequest<'_> {
    /// The request as the transcript shows it: no secret, no token.
    pub fn shown(&self) -> String {
        format!(
            "POST {} grant_type={} client_id={} scope={} client_secret=<redacted>{}",
            self.url,
            self.grant.name(),
            self.client_id,
            self.scope,
            match self.grant {
                Grant::ClientCredentials => "",
                Grant::RefreshToken(_) => " refresh_token=<redacted>",
            }
        )
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct TokenResponse {
    /// The HTTP status.
    pub status: u16,
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime, when the endpoint says.
    pub expires_in: Option<u64>,
    /// The scopes granted, when the endpoint says (else those asked for).
    pub scope: Option<String>,
    /// A new refresh token, when the endpoint rotates it.
    pub refresh_token: Option<Secret>,
}

/// Why a request got no token.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `invalid_client` or `unauthorized_client` (or a bare 401).
    #[error("the token endpoint refused the client (HTTP {status}, {error}{description})")]
    ClientRejected {
        /// The HTTP status.
        status: u16,
        /// The OAuth2 error code.
        error: String,
        /// `: ` and the endpoint's description, if any.
        description: String,
    },
    /// `invalid_grant`.
    #[error("the token endpoint refused the grant (HTTP {status}, {error}{description})")]
    GrantRejected {
        /// The HTTP status.
        status: u16,
        /// The OAuth2 error code.
        error: String,
        /// `: ` and the endpoint's description, if any.
        description: String,
    },
    /// `invalid_scope`.
    #[error("the token endpoint refused the scope (HTTP {status}, {error}{description})")]
    ScopeRefused {
        /// The HTTP status.
        status: u16,
        /// The OAuth2 error code.
        error: String,
        /// `: ` and the endpoint's description, if any.
        description: String,
    },
    /// No address of the endpoint is allowed by the destination policy.
    #[error("{0}")]
    DestinationDenied(String),
    /// Anything else: DNS, connection, TLS, timeout, a 5xx, or an answer that is not OAuth2.
    #[error("{message}")]
    Unreachable {
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
}

impl RequestError {
    /// The HTTP status, when the endpoint answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::ClientRejected { status, .. }
            | RequestError::GrantRejected { status, .. }
            | RequestError::ScopeRefused { status, .. } => Some(*status),
            RequestError::DestinationDenied(_) => None,
            RequestError::Unreachable { status, .. } => *status,
        }
    }

    /// The failure class of a session that got no token this way, and what to do about it.
    pub fn class_and_hint(&self) -> (FailureClass, &'static str) {
        let class = match self {
            RequestError::ClientRejected { .. } => FailureClass::OAuthClientRejected,
            RequestError::GrantRejected { .. } => FailureClass::OAuthGrantRejected,
            RequestError::ScopeRefused { .. } => FailureClass::OAuthScopeMissing,
            RequestError::DestinationDenied(_) => {
                return (
                    FailureClass::DestinationNotAllowed,
                    "the token endpoint's address is blocked by the destination policy \
                     (the server's --smtp-allow / --smtp-deny, or the agent's \
                     allowed_destinations)",
                );
            }
            RequestError::Unreachable { .. } => FailureClass::OAuthEndpointUnreachable,
        };
        (class, class.default_hint())
    }
}

fn unreachable(message: impl Into<String>) -> RequestError {
    RequestError::Unreachable {
        status: None,
        message: message.into(),
    }
}

/// The HTTP status of a token endpoint's answer, as a `TOKEN` phase records it.
pub fn http_reply(code: u16) -> crate::Reply {
    crate::Reply {
        code,
        enhanced: None,
        lines: vec![format!("HTTP {code}")],
    }
}

/// The host (without brackets) and port of a token endpoint's URL, for a destination check
/// built per endpoint (an agent's allowlist matches names and ports).
pub fn endpoint(token_url: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(token_url).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_owned(), url.port_or_known_default().unwrap_or(443)))
}

/// The addresses of `url`'s host that the policy allows, or why there are none.
async fn allowed_addrs(
    url: &url::Url,
    policy: &dyn DestinationCheck,
) -> Result<(String, Vec<SocketAddr>), RequestError> {
    let host = url
        .host_str()
        .ok_or_else(|| unreachable("the token URL has no host"))?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| unreachable(format!("cannot resolve {bare}: {e}")))?
        .collect();
    let mut denied = Vec::new();
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|a| match policy.check(*a) {
            Ok(()) => true,
            Err(d) => {
                denied.push(d.to_string());
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        return Err(RequestError::DestinationDenied(if denied.is_empty() {
            format!("{bare} has no address")
        } else {
            format!("the token endpoint {}", denied.join("; "))
        }));
    }
    Ok((bare, allowed))
}

/// Posts the request and reads the answer.
pub async fn request(
    http: &HttpSettings,
    req: &TokenRequest<'_>,
) -> Result<TokenResponse, RequestError> {
    let url = url::Url::parse(req.url).map_err(|e| unreachable(format!("bad token URL: {e}")))?;
    let (host, addrs) = allowed_addrs(&url, http.policy.as_ref()).await?;
    let tls = https_client_config(http.extra_ca_pem.as_deref())
        .map_err(|e| unreachable(format!("TLS settings: {e}")))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve_to_addrs(&host, &addrs)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| unreachable(format!("HTTP client: {e}")))?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", req.grant.name()),
        ("client_id", req.client_id),
        ("client_secret", req.client_secret.expose()),
        ("scope", req.scope),
    ];
    if let Grant::RefreshToken(token) = req.grant {
        form.push(("refresh_token", token.expose()));
    }
    let body = Zeroizing::new(
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish(),
    );
    let response = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body.as_bytes().to_vec())
        .send()
        .await
        .map_err(|e| unreachable(describe(&e)))?;
    let status = response.status().as_u16();
    let bytes = Zeroizing::new(
        response
            .bytes()
            .await
            .map_err(|e| unreachable(describe(&e)))?
            .to_vec(),
    );
    if bytes.len() > MAX_RESPONSE {
        return Err(RequestError::Unreachable {
            status: Some(status),
            message: format!("the token endpoint answered {} bytes", bytes.len()),
        });
    }
    parse(status, &bytes)
}

/// A transport error in words, without the URL's query (reqwest prints the URL).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = format!("token endpoint {kind}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The fields of a token response (RFC 6749 section 5.1) or error (section 5.2).
#[derive(serde::Deserialize)]
struct Body {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// What an answer with `status` and `bytes` means.
pub fn parse(status: u16, bytes: &[u8]) -> Result<TokenResponse, RequestError> {
    let body: Option<Body> = serde_json::from_slice(bytes).ok();
    let Some(body) = body else {
        return Err(match status {
            401 => RequestError::ClientRejected {
                status,
                error: "no OAuth2 error in the answer".into(),
                description: String::new(),
            },
            _ => RequestError::Unreachable {
                status: Some(status),
                message: format!(
                    "the token endpoint answered HTTP {status} without an OAuth2 JSON body"
                ),
            },
        });
    };
    if let Some(error) = body.error.filter(|_| !(200..300).contains(&status)) {
        let error: String = error.chars().filter(|c| !c.is_control()).take(64).collect();
        let description = body
            .error_description
            .map(|d| {
                format!(
                    ": {}",
                    d.chars()
                        .filter(|c| !c.is_control())
                        .take(300)
                        .collect::<String>()
                )
            })
            .unwrap_or_default();
        return Err(match error.as_str() {
            "invalid_grant" => RequestError::GrantRejected {
                status,
                error,
                description,
            },
            "invalid_scope" => RequestError::ScopeRefused {
                status,
                error,
                description,
            },
            _ if error == "invalid_client"
                || error == "unauthorized_client"
                || error == "invalid_request"
                || error == "unsupported_grant_type"
                || status == 401 =>
            {
                RequestError::ClientRejected {
                    status,
                    error,
                    description,
                }
            }
            _ => RequestError::Unreachable {
                status: Some(status),
                message: format!("the token endpoint answered HTTP {status}, {error}{description}"),
            },
        });
    }
    if !(200..300).contains(&status) {
        return Err(RequestError::Unreachable {
            status: Some(status),
            message: format!("the token endpoint answered HTTP {status}"),
        });
    }
    let Some(access_token) = body.access_token.filter(|t| !t.is_empty()) else {
        return Err(RequestError::Unreachable {
            status: Some(status),
            message: "the token endpoint's answer has no access_token".into(),
        });
    };
    if !body
        .token_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(RequestError::Unreachable {
            status: Some(status),
            message: "the token endpoint did not issue a Bearer token".into(),
        });
    }
    let expires_in = match body.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        status,
        access_token: Secret::new(access_token),
        expires_in,
        scope: body.scope,
        refresh_token: body
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

/// The requested scopes that `granted` lacks. A response without `scope` grants what was
/// asked (RFC 6749 section 5.1), so `None` lacks nothing.
pub fn missing_scopes<'a>(requested: &'a str, granted: Option<&str>) -> Vec<&'a str> {
    let Some(granted) = granted else {
        return Vec::new();
    };
    let granted: Vec<&str> = granted.split_whitespace().collect();
    requested
        .split_whitespace()
        .filter(|s| !granted.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scopes_compare_tokens() {
        assert!(missing_scopes("a b", None).is_empty());
        assert!(missing_scopes("a b", Some("b a c")).is_empty());
        assert_eq!(missing_scopes("a b", Some("a")), ["b"]);
        assert_eq!(missing_scopes("a", Some("")), ["a"]);
    }

    #[test]
    fn answers_map_to_rfc_6749_meanings() {
        let ok = parse(
            200,
            br#"{"access_token":"at","token_type":"bearer","expires_in":"3599","scope":"a b","refresh_token":"rt2"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose(), "at");
        assert_eq!(ok.expires_in, Some(3599));
        assert_eq!(ok.scope.as_deref(), Some("a b"));
        assert_eq!(ok.refresh_token.unwrap().expose(), "rt2");

        let err = |status, body: &[u8]| parse(status, body).unwrap_err();
        assert!(matches!(
            err(
                401,
                br#"{"error":"invalid_client","error_description":"bad secret"}"#
            ),
            RequestError::ClientRejected { status: 401, .. }
        ));
        assert!(matches!(
            err(400, br#"{"error":"invalid_grant"}"#),
            RequestError::GrantRejected { .. }
        ));
        assert!(matches!(
            err(400, br#"{"error":"invalid_scope"}"#),
            RequestError::ScopeRefused { .. }
        ));
        assert!(matches!(
            err(401, b"nope"),
            RequestError::ClientRejected { .. }
        ));
        assert!(matches!(
            err(503, b"<html>"),
            RequestError::Unreachable {
                status: Some(503),
                ..
            }
        ));
        assert!(matches!(
            err(200, br#"{"access_token":"at","token_type":"mac"}"#),
            RequestError::Unreachable { .. }
        ));
        assert!(matches!(
            err(200, br#"{"token_type":"Bearer"}"#),
            RequestError::Unreachable { .. }
        ));
    }

    #[test]
    fn the_request_is_shown_without_secrets() {
        let secret = Secret::new("s3cret");
        let refresh = Secret::new("r3fresh");
        let req = TokenRequest {
            url: "https://idp.example.com/token",
            client_id: "app",
            client_secret: &secret,
            scope: "https://mail.google.com/",
            grant: Grant::RefreshToken(&refresh),
        };
        let shown = req.shown();
        assert!(shown.contains("grant_type=refresh_token"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("r3fresh"),
            "{shown}"
        );
    }

    #[test]
    fn error_descriptions_lose_control_characters() {
        let e = parse(
            400,
            b"{\"error\":\"invalid_grant\",\"error_description\":\"a\\r\\nb\"}",
        )
        .unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
