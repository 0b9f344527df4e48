//! The TLS channel to the server's agent listener, directly or through an HTTP proxy
//! (`CONNECT`, with TLS inside the tunnel: see [`crate::proxy`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::config::{AgentConfig, ConfigError, ServerUrl};
use crate::proxy::{self, ProxyConnector};

/// The HTTP/2 keepalive ping interval and timeout.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Why the channel cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The configuration is invalid (the server URL).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server CA file cannot be read.
    #[error("cannot read the server CA {path}: {source}")]
    ServerCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting to the server failed.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server URL (and the address, for a name).
        server: String,
        /// Why, with the error's causes.
        reason: String,
    },
}

/// A call to the server that failed with a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {code:?}: {message}")]
pub struct RpcError {
    /// The call.
    pub call: &'static str,
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The status message.
    pub message: String,
}

impl RpcError {
    /// The failure of `call` with `status`.
    pub fn new(call: &'static str, status: &tonic::Status) -> Self {
        RpcError {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// An error and its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Where to dial a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Addr {
    /// This address, directly.
    Direct(SocketAddr),
    /// The server's host and port through the proxy, which resolves the name itself.
    Proxy {
        /// The server, `HOST:PORT`.
        server: String,
        /// The proxy, shown without credentials.
        proxy: String,
    },
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Direct(addr) => write!(f, "{addr}"),
            Addr::Proxy { proxy, .. } => write!(f, "through the proxy {proxy}"),
        }
    }
}

/// One address of one server: where to dial, and what to expect there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    /// The server's URL as configured.
    pub url: String,
    /// Whether the URL names a host (rather than an IP address).
    pub named: bool,
    /// Where to dial.
    pub addr: Addr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.named || matches!(self.addr, Addr::Proxy { .. }) {
            write!(f, "{} ({})", self.url, self.addr)
        } else {
            f.write_str(&self.url)
        }
    }
}

/// The addresses of `server`, in the resolver's order (an IP address is its own); a server
/// reached through a proxy is not resolved here (the proxy does it): it is one target.
pub(crate) async fn resolve(
    config: &AgentConfig,
    server: &ServerUrl,
) -> Result<Vec<Target>, ChannelError> {
    if let Some(proxy) = config.proxy_for(server) {
        return Ok(vec![Target {
            url: server.url.clone(),
            named: !server.is_ip(),
            addr: Addr::Proxy {
                server: proxy::authority(&server.host, server.port),
                proxy: proxy.url.to_string(),
            },
        }]);
    }
    let failed = |reason: String| ChannelError::Connect {
        server: server.url.clone(),
        reason,
    };
    let addrs: Vec<SocketAddr> = match server.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, server.port)],
        Err(_) => tokio::net::lookup_host((server.host.as_str(), server.port))
            .await
            .map_err(|e| failed(format!("cannot resolve {}: {e}", server.host)))?
            .collect(),
    };
    let mut targets: Vec<Target> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let t = Target {
            url: server.url.clone(),
            named: !server.is_ip(),
            addr: Addr::Direct(addr),
        };
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        return Err(failed(format!("{} has no address", server.host)));
    }
    Ok(targets)
}

/// Connects to the first server of the list (in order, address by address) that answers,
/// verifying it with `server_ca` (and `extra_ca`, the CA from enrollment), presenting
/// `identity` (certificate and key PEM) when given.
pub(crate) async fn connect(
    config: &AgentConfig,
    identity: Option<(&str, &str)>,
    extra_ca: Option<&str>,
) -> Result<(Channel, Target), ChannelError> {
    let mut last = None;
    for server in config.server_urls()? {
        let targets = match resolve(config, &server).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a server");
                last = Some(e);
                continue;
            }
        };
        for target in targets {
            match connect_to(config, &target, identity, extra_ca).await {
                Ok(channel) => return Ok((channel, target)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach a server; trying the next");
                    last = Some(e);
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ConfigError::Missing("server", "server", "MAILPLANE_AGENT_SERVER").into()
    }))
}

/// Connects to one address of one server (the TLS name is still the server's: its URL's
/// host, or `server_name`), verifying and presenting as [`connect`] does.
pub(crate) async fn connect_to(
    config: &AgentConfig,
    target: &Target,
    identity: Option<(&str, &str)>,
    extra_ca: Option<&str>,
) -> Result<Channel, ChannelError> {
    let server = ServerUrl::parse(&target.url)?;
    let domain = config.tls_name(&server);
    let server_ca = std::fs::read(&config.server_ca).map_err(|source| ChannelError::ServerCa {
        path: config.server_ca.clone(),
        source,
    })?;
    let mut tls = ClientTlsConfig::new()
        .domain_name(domain)
        .ca_certificate(Certificate::from_pem(server_ca));
    if let Some(ca) = extra_ca.filter(|ca| !ca.trim().is_empty()) {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let failed = |e: tonic::transport::Error| ChannelError::Connect {
        server: target.to_string(),
        reason: chain(&e),
    };
    let bad_url = |reason: String| ConfigError::ServerUrl {
        url: target.url.clone(),
        reason,
    };
    let proxy = match &target.addr {
        Addr::Direct(_) => None,
        Addr::Proxy { .. } => config.proxy_for(&server),
    };
    let dial = match &target.addr {
        Addr::Direct(addr) => addr.to_string(),
        Addr::Proxy { server, .. } => server.clone(),
    };
    let mut endpoint =
        Endpoint::from_shared(format!("https://{dial}")).map_err(|e| bad_url(chain(&e)))?;
    if target.named {
        // Requests still name the server, as they would have without the address.
        let origin: Uri = target
            .url
            .parse()
            .map_err(|_| bad_url("not a URL".to_owned()))?;
        endpoint = endpoint.origin(origin);
    }
    let endpoint = endpoint
        .tls_config(tls)
        .map_err(failed)?
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true);
    match proxy {
        None => endpoint
            .connect_timeout(config.connect_timeout)
            .connect()
            .await
            .map_err(failed),
        Some(proxy) => {
            tracing::debug!(server = %target, "connecting through the proxy");
            // The connector gives up on the proxy after `connect_timeout` with its own
            // error; this limit covers the TLS handshake after it.
            endpoint
                .connect_timeout(config.connect_timeout.saturating_mul(2))
                .connect_with_connector(ProxyConnector::new(
                    proxy.url.clone(),
                    config.connect_timeout,
                ))
                .await
                .map_err(failed)
        }
    }
}
