//! The TLS channel to the server's agent listener.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{AgentConfig, ConfigError};

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
        /// The server URL.
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

/// Connects to the server, verifying it with `server_ca` (and `extra_ca`, the CA from
/// enrollment), presenting `identity` (certificate and key PEM) when given.
pub(crate) async fn connect(
    config: &AgentConfig,
    identity: Option<(&str, &str)>,
    extra_ca: Option<&str>,
) -> Result<Channel, ChannelError> {
    let domain = config.server_name()?;
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
        server: config.server.clone(),
        reason: chain(&e),
    };
    Endpoint::from_shared(config.server.clone())
        .map_err(|e| ConfigError::ServerUrl {
            url: config.server.clone(),
            reason: chain(&e),
        })?
        .tls_config(tls)
        .map_err(failed)?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(failed)
}
