//! The TLS channel to the server's agent listener.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::config::AgentConfig;
use crate::error::{AgentError, chain};

/// The HTTP/2 keepalive ping interval and timeout.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The TLS name to expect: `server_name`, or the URL's host.
pub(crate) fn server_name(config: &AgentConfig) -> Result<String, AgentError> {
    if let Some(name) = &config.server_name {
        return Ok(name.clone());
    }
    let bad = |reason: &str| AgentError::ServerUrl {
        url: config.server.clone(),
        reason: reason.to_owned(),
    };
    let uri: Uri = config.server.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the agent talks to the server over TLS: use https://"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned())
}

/// Connects to the server, verifying it with `server_ca` (and `extra_ca`, the CA from
/// enrollment), presenting `identity` (certificate and key PEM) when given.
pub(crate) async fn connect(
    config: &AgentConfig,
    identity: Option<(&str, &str)>,
    extra_ca: Option<&str>,
) -> Result<Channel, AgentError> {
    let domain = server_name(config)?;
    let server_ca = std::fs::read(&config.server_ca).map_err(|source| AgentError::ServerCa {
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
    let failed = |e: tonic::transport::Error| AgentError::Connect {
        server: config.server.clone(),
        reason: chain(&e),
    };
    Endpoint::from_shared(config.server.clone())
        .map_err(|e| AgentError::ServerUrl {
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
