//! The `CONNECT` tunnel: a tonic connector that dials the proxy, asks it for a tunnel to
//! the server (`CONNECT host:port HTTP/1.1`, with `Proxy-Authorization: Basic …` when the
//! proxy URL has credentials), checks the answer, and hands the raw stream to tonic, which
//! runs TLS (with the agent's client certificate) inside it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::transport::Uri;
use zeroize::Zeroizing;

use super::{ProxyUrl, authority};

/// The largest response head accepted from the proxy.
const MAX_HEAD: usize = 16 * 1024;

/// Why the tunnel through the proxy could not be opened. No variant holds the proxy's
/// credentials: the proxy is named by `HOST:PORT`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy cannot be reached (resolving its name, or connecting, failed).
    #[error("cannot reach the proxy {proxy}: {source}")]
    Unreachable {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading from or writing to the proxy failed after connecting.
    #[error("the connection to the proxy {proxy} failed: {source}")]
    Io {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy did not answer in time.
    #[error("the proxy {proxy} did not open the tunnel within {timeout:?}")]
    Timeout {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// The limit.
        timeout: Duration,
    },
    /// 407 (or 401, as tinyproxy answers a `CONNECT`) to a request with credentials.
    #[error(
        "the proxy refused the credentials ({status}): check the user and password in --proxy (proxy {proxy})"
    )]
    BadCredentials {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// `HTTP 407 Proxy Authentication Required` or `HTTP 401 Unauthorized`.
        status: &'static str,
    },
    /// 407 (or 401) to a request without credentials.
    #[error(
        "the proxy {proxy} requires credentials ({status}): give them in --proxy http://USER:PASSWORD@HOST:PORT"
    )]
    CredentialsRequired {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// `HTTP 407 Proxy Authentication Required` or `HTTP 401 Unauthorized`.
        status: &'static str,
    },
    /// Any other answer than 2xx.
    #[error("the proxy {proxy} refused the tunnel to {target}: {status}")]
    Refused {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// Where the tunnel was to go.
        target: String,
        /// The response's status line.
        status: String,
    },
    /// The answer is not HTTP, too long, or cut short.
    #[error("the proxy {proxy} sent an invalid answer to CONNECT: {reason}")]
    Invalid {
        /// The proxy, `HOST:PORT`.
        proxy: String,
        /// What is wrong.
        reason: String,
    },
    /// The URI to tunnel to has no host.
    #[error("no host to tunnel to in {0}")]
    NoTarget(String),
}

/// The proxy's answer, once its head is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// More bytes are needed.
    Partial,
    /// The head is complete.
    Complete {
        /// The status code.
        code: u16,
        /// The status line, e.g. `HTTP/1.1 403 Forbidden`.
        status: String,
    },
}

/// Parses the head of the proxy's answer (status line and headers, up to the empty line).
pub(crate) fn parse_answer(head: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Partial) => Ok(Answer::Partial),
        Ok(httparse::Status::Complete(_)) => {
            let code = response.code.unwrap_or(0);
            let version = response.version.unwrap_or(1);
            let reason = response.reason.unwrap_or("").trim();
            let status = format!("HTTP/1.{version} {code} {reason}")
                .trim_end()
                .to_owned();
            Ok(Answer::Complete { code, status })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The `CONNECT` request for `target` (`HOST:PORT`), with credentials when the proxy has
/// some.
pub(crate) fn request(proxy: &ProxyUrl, target: &str) -> Zeroizing<String> {
    let mut req = Zeroizing::new(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: mailplane-agent/{}\r\n",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(auth) = &proxy.auth {
        req.push_str("Proxy-Authorization: ");
        req.push_str(&auth.header_value());
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Checks a complete answer: 2xx opens the tunnel. A 401 counts as a 407: tinyproxy
/// answers a `CONNECT` with wrong credentials so.
fn check(proxy: &ProxyUrl, target: &str, code: u16, status: String) -> Result<(), ProxyError> {
    let name = proxy.authority();
    let auth_status = match code {
        407 => "HTTP 407 Proxy Authentication Required",
        _ => "HTTP 401 Unauthorized",
    };
    match code {
        200..=299 => Ok(()),
        401 | 407 if proxy.auth.is_some() => Err(ProxyError::BadCredentials {
            proxy: name,
            status: auth_status,
        }),
        401 | 407 => Err(ProxyError::CredentialsRequired {
            proxy: name,
            status: auth_status,
        }),
        _ => Err(ProxyError::Refused {
            proxy: name,
            target: target.to_owned(),
            status,
        }),
    }
}

/// Dials `proxy` and opens a tunnel to `host:port` through it.
pub async fn tunnel(proxy: &ProxyUrl, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
    let name = proxy.authority();
    let target = authority(host, port);
    let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| ProxyError::Unreachable {
            proxy: name.clone(),
            source,
        })?;
    let io = |source| ProxyError::Io {
        proxy: name.clone(),
        source,
    };
    stream
        .write_all(request(proxy, &target).as_bytes())
        .await
        .map_err(io)?;
    // Byte by byte, so that nothing after the head (the server's TLS) is read here.
    let mut head = Vec::with_capacity(256);
    loop {
        let byte = match stream.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ProxyError::Invalid {
                    proxy: name,
                    reason: "it closed the connection before the end of its answer".into(),
                });
            }
            Err(e) => return Err(io(e)),
        };
        head.push(byte);
        if byte != b'\n' {
            continue;
        }
        let invalid = |reason: String| ProxyError::Invalid {
            proxy: name.clone(),
            reason,
        };
        match parse_answer(&head).map_err(invalid)? {
            Answer::Partial if head.len() > MAX_HEAD => {
                return Err(invalid(format!(
                    "its answer is longer than {MAX_HEAD} bytes"
                )));
            }
            Answer::Partial => {}
            Answer::Complete { code, status } => {
                check(proxy, &target, code, status)?;
                tracing::debug!(proxy = %proxy, target = %target, "tunnel open");
                return Ok(stream);
            }
        }
    }
}

/// A tonic connector (`Endpoint::connect_with_connector`) that reaches the endpoint's host
/// and port through the proxy, within `timeout`.
#[derive(Debug, Clone)]
pub struct ProxyConnector {
    proxy: Arc<ProxyUrl>,
    timeout: Duration,
}

impl ProxyConnector {
    /// Tunnels through `proxy`, giving up after `timeout`.
    pub fn new(proxy: ProxyUrl, timeout: Duration) -> Self {
        ProxyConnector {
            proxy: Arc::new(proxy),
            timeout,
        }
    }
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let proxy = Arc::clone(&self.proxy);
        let timeout = self.timeout;
        Box::pin(async move {
            let host = uri
                .host()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| ProxyError::NoTarget(uri.to_string()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let stream = tokio::time::timeout(timeout, tunnel(&proxy, &host, port))
                .await
                .map_err(|_| ProxyError::Timeout {
                    proxy: proxy.authority(),
                    timeout,
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}
