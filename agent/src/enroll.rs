//! Enrollment (a one-time token and a CSR for a client certificate) and renewal.
//!
//! The key is ECDSA P-256, made here and never sent anywhere; the CSR's common name is
//! the host name. The token goes only into the `Enroll` request, over TLS to a server
//! verified with `server_ca`; it is never logged or written to disk.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailplane_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, DnType, KeyPair};

use crate::channel::{self, ChannelError, RpcError};
use crate::config::AgentConfig;
use crate::state::{self, KeyPem, StateError};

/// How long an `Enroll` or `RenewCertificate` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's version, as reported to the server.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why enrollment or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The channel to the server cannot be opened.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// `enroll` without a token.
    #[error("no enrollment token: pass --enrollment-token or set MAILPLANE_AGENT_ENROLLMENT_TOKEN")]
    NoToken,
    /// A call to the server failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A call to the server did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Making the key or the CSR failed.
    #[error("cannot make a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    /// A certificate cannot be read.
    #[error("invalid certificate: {0}")]
    Certificate(String),
}

/// The result of a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The agent's resource name, `connectors/{c}/agents/{a}`.
    pub agent: String,
    /// Where the state was written.
    pub state_dir: PathBuf,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

/// The host name: `/proc/sys/kernel/hostname`, `$HOSTNAME`, or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

fn csr_pem(key: &KeyPair, hostname: &str) -> Result<String, EnrollError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, hostname);
    Ok(params.serialize_request(key)?.pem()?)
}

/// When a certificate (PEM) starts and stops being valid.
pub fn certificate_validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), EnrollError> {
    let bad = |e: String| EnrollError::Certificate(e);
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let at = |t: i64| {
        u64::try_from(t)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| bad(format!("timestamp {t} is before 1970")))
    };
    let validity = cert.validity();
    Ok((
        at(validity.not_before.timestamp())?,
        at(validity.not_after.timestamp())?,
    ))
}

/// Whether a certificate has less than a third of its lifetime left at `now`.
pub fn needs_renewal(cert_pem: &str, now: SystemTime) -> Result<bool, EnrollError> {
    let (not_before, not_after) = certificate_validity(cert_pem)?;
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let left = not_after.duration_since(now).unwrap_or_default();
    Ok(left.saturating_mul(3) < lifetime)
}

/// Enrolls with the configured token and writes the state directory.
pub async fn enroll(config: &AgentConfig) -> Result<Enrolled, EnrollError> {
    let token = config
        .enrollment_token
        .as_ref()
        .ok_or(EnrollError::NoToken)?;
    state::ensure_not_enrolled(&config.state_dir)?;
    let host = hostname();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr_pem = csr_pem(&key, &host)?;
    let (channel, server) = channel::connect(config, None, None).await?;
    let mut client = AgentServiceClient::new(channel);
    tracing::info!(server = %server, hostname = %host, "enrolling");
    let response = tokio::time::timeout(
        CALL_TIMEOUT,
        client.enroll(pb::EnrollRequest {
            token: token.expose().to_owned(),
            csr_pem,
            hostname: host,
            version: VERSION.to_owned(),
        }),
    )
    .await
    .map_err(|_| EnrollError::Timeout("Enroll"))?
    .map_err(|s| RpcError::new("Enroll", &s))?
    .into_inner();
    let (_, not_after) = certificate_validity(&response.certificate_pem)?;
    let saved = state::save(
        &config.state_dir,
        &KeyPem::new(key.serialize_pem()),
        &response.certificate_pem,
        &response.ca_certificate_pem,
        &response.agent,
    )?;
    tracing::info!(agent = %saved.agent, state_dir = %config.state_dir.display(), "enrolled");
    Ok(Enrolled {
        agent: saved.agent,
        state_dir: config.state_dir.clone(),
        not_after,
    })
}

/// Asks the server for a fresh certificate for the agent's key (over mTLS with the
/// current one) and replaces `cert.pem` atomically. Returns the new expiry.
pub async fn renew(config: &AgentConfig) -> Result<SystemTime, EnrollError> {
    let st = state::require(&config.state_dir)?;
    let key = KeyPair::from_pem(st.key_pem.expose())?;
    let csr_pem = csr_pem(&key, &hostname())?;
    let (channel, _) = channel::connect(
        config,
        Some((&st.cert_pem, st.key_pem.expose())),
        Some(&st.ca_pem),
    )
    .await?;
    let mut client = AgentServiceClient::new(channel);
    let response = tokio::time::timeout(
        CALL_TIMEOUT,
        client.renew_certificate(pb::RenewCertificateRequest { csr_pem }),
    )
    .await
    .map_err(|_| EnrollError::Timeout("RenewCertificate"))?
    .map_err(|s| RpcError::new("RenewCertificate", &s))?
    .into_inner();
    let (_, not_after) = certificate_validity(&response.certificate_pem)?;
    state::replace_certificate(&config.state_dir, &response.certificate_pem)?;
    tracing::info!(agent = %st.agent, "renewed the client certificate");
    Ok(not_after)
}

/// Renews when the certificate has less than a third of its lifetime left; returns
/// whether it did.
pub async fn renew_if_due(config: &AgentConfig) -> Result<bool, EnrollError> {
    let st = state::require(&config.state_dir)?;
    if !needs_renewal(&st.cert_pem, SystemTime::now())? {
        return Ok(false);
    }
    renew(config).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_threshold() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["a".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let pem = params.self_signed(&key).unwrap().pem();
        let (nb, na) = certificate_validity(&pem).unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(na.duration_since(nb).unwrap(), day * 30);
        assert!(!needs_renewal(&pem, nb + day * 19).unwrap());
        assert!(needs_renewal(&pem, nb + day * 21).unwrap());
        assert!(needs_renewal(&pem, na + day).unwrap());
        assert!(certificate_validity("nope").is_err());
    }

    #[test]
    fn csr_has_the_host_name() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr_pem(&key, "agent-host").unwrap();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        let cn = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .cloned();
        assert_eq!(cn, Some(rcgen::DnValue::Utf8String("agent-host".into())));
    }
}
