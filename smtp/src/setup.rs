//! Checking a [`SessionConfig`] before anything is sent: the host, the EHLO name, the
//! message and the TLS configuration.

use rustls::pki_types::CertificateDer;

use crate::message::{BuiltMessage, build_message};
use crate::tls;
use crate::{SessionConfig, SessionError, StopAfter};

/// A configuration that can run.
pub(crate) struct Prepared {
    /// The relay host, without IPv6 brackets.
    pub(crate) host: String,
    /// The EHLO name.
    pub(crate) helo: String,
    /// The message, when one is configured.
    pub(crate) message: Option<BuiltMessage>,
    /// The extra CA certificates.
    pub(crate) extra_ca: Vec<CertificateDer<'static>>,
}

/// Checks `config`; an error means nothing may be sent.
pub(crate) fn prepare(config: &SessionConfig) -> Result<Prepared, SessionError> {
    let (host, helo) = names(config)?;
    let message = match &config.message {
        Some(spec) => Some(build_message(spec, &helo)?),
        None if config.stop_after == StopAfter::Delivery => {
            return Err(SessionError::MissingMessage);
        }
        None => None,
    };
    let extra_ca = tls_ca(config)?;
    Ok(Prepared {
        host,
        helo,
        message,
        extra_ca,
    })
}

/// Checks what a connection needs (host, EHLO name, TLS configuration), ignoring the
/// message and `stop_after`: the pool sends messages it is handed, not the configured one.
pub(crate) fn prepare_connection(config: &SessionConfig) -> Result<Prepared, SessionError> {
    let (host, helo) = names(config)?;
    let extra_ca = tls_ca(config)?;
    Ok(Prepared {
        host,
        helo,
        message: None,
        extra_ca,
    })
}

/// The extra CA certificates; the TLS client configuration is built once up front so that
/// a bad configuration is an error before connecting.
fn tls_ca(config: &SessionConfig) -> Result<Vec<CertificateDer<'static>>, SessionError> {
    let extra_ca = match &config.extra_ca_pem {
        Some(pem) => tls::parse_ca_pem(pem)?,
        None => Vec::new(),
    };
    tls::client_config(config.ignore_certificate_errors, &extra_ca, config.trust)?;
    Ok(extra_ca)
}

/// The relay host (without IPv6 brackets) and the EHLO name.
fn names(config: &SessionConfig) -> Result<(String, String), SessionError> {
    let host = normalize_host(&config.host)?;
    let helo = match &config.helo_name {
        Some(h) if valid_helo(h) => h.clone(),
        Some(h) => return Err(SessionError::InvalidHeloName(h.clone())),
        None => default_helo_name(),
    };
    Ok((host, helo))
}

/// Strips IPv6 brackets and checks the host has no control characters or spaces.
fn normalize_host(host: &str) -> Result<String, SessionError> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if h.is_empty()
        || h.len() > 253
        || h.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(SessionError::InvalidHost(host.to_owned()));
    }
    Ok(h.to_owned())
}

/// A domain (letters, digits, `-`, `.`) or an address literal such as `[192.0.2.1]`.
fn valid_helo(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
        return inner.parse::<std::net::IpAddr>().is_ok();
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['.', '-'])
}

/// The machine's host name when it is a valid EHLO name, else `localhost`.
fn default_helo_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| valid_helo(s))
        .unwrap_or_else(|| "localhost".to_owned())
}
