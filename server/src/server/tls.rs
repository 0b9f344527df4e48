//! The TLS side of serving: the agents' listener (mTLS with the server's own CA) and the
//! API's identity.

use super::{ApiTls, ServerConfig, StartupError};
use crate::tunnel::ca::AgentCa;
use crate::tunnel::service::AgentApi;
use mailplane_proto::v1::agent_service_server::AgentServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// The agents' listener: TLS with the CA's server certificate, and client certificates checked
/// against the same CA. `Enroll` has no certificate yet, so one is optional at the TLS layer;
/// every other call of `AgentService` requires it.
pub(super) fn agent_server(
    listener: TcpListener,
    config: &ServerConfig,
    ca: &AgentCa,
    api: AgentApi,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, StartupError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::Config(format!("agent listener: {e}")))?;
    let mut names = config.agent_tls_names.clone();
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    names.sort();
    names.dedup();
    let (cert, key) = ca
        .server_identity(&names)
        .map_err(|e| StartupError::Config(format!("agent listener certificate: {e}")))?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(true);
    let router = tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| StartupError::Config(format!("agent listener TLS: {e}")))?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(AgentServiceServer::new(api));
    tracing::info!(%addr, names = ?names, "agent listener (TLS) listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }))
}

/// A certificate chain and its key, in PEM.
pub(super) struct IdentityPem {
    /// The chain.
    pub cert: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
}

/// The API's TLS identity (the console's too), if it is served with TLS.
pub(super) fn api_identity(
    config: &ServerConfig,
    ca: &AgentCa,
    local: Option<SocketAddr>,
) -> Result<Option<IdentityPem>, StartupError> {
    match &config.api_tls {
        ApiTls::Off => Ok(None),
        ApiTls::Files { cert, key } => {
            let read = |p: &PathBuf| {
                std::fs::read(p)
                    .map_err(|e| StartupError::Config(format!("API TLS: {}: {e}", p.display())))
            };
            tracing::info!(cert = %cert.display(), "API served with TLS (certificate from files)");
            Ok(Some(IdentityPem {
                cert: read(cert)?,
                key: read(key)?,
            }))
        }
        ApiTls::OwnCa => {
            let mut names = config.agent_tls_names.clone();
            if let Some(ip) = local.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()) {
                names.push(ip.to_string());
            }
            names.sort();
            names.dedup();
            let (cert, key) = ca
                .server_identity(&names)
                .map_err(|e| StartupError::Config(format!("API TLS certificate: {e}")))?;
            tracing::info!(
                ca = %config.data_dir.join("ca.pem").display(),
                ca_sha256 = %crate::tunnel::ca::pem_fingerprint(ca.cert_pem()).unwrap_or_default(),
                names = ?names,
                "API served with TLS; clients verify it with the CA file (mailplane --tls-ca)"
            );
            // The CA goes with the certificate, so a client may pin its fingerprint.
            let chain = format!("{}{}", cert, ca.cert_pem());
            Ok(Some(IdentityPem {
                cert: chain.into_bytes(),
                key: key.into_bytes(),
            }))
        }
    }
}
