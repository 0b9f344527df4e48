//! The server list: the URLs the agent may dial, how each parses, and the checks on the
//! list (at least one, every one `https://` with a host, no two naming the same host and
//! port).

use serde::Deserialize;
use tonic::transport::Uri;

use super::ConfigError;

/// The most streams the agent holds at once (`connections`).
pub const MAX_CONNECTIONS: u32 = 8;

/// One server URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// The URL as configured.
    pub url: String,
    /// The host: a DNS name or an IP address (without brackets).
    pub host: String,
    /// The port (443 when the URL has none).
    pub port: u16,
}

impl ServerUrl {
    /// Parses `url`: it must be `https://` with a host.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::ServerUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(
                "the agent talks to the server only over TLS: give an https:// URL in --server \
                 (MAILPLANE_AGENT_SERVER, or `server` in the configuration file)",
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        Ok(ServerUrl {
            url: url.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(443),
        })
    }

    /// Whether the host is an IP address rather than a name to resolve.
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Parses every URL of the list and checks it: at least one, no duplicates (same host,
/// compared without case, and same port).
pub fn parse_list(servers: &[String]) -> Result<Vec<ServerUrl>, ConfigError> {
    if servers.is_empty() {
        return Err(ConfigError::Missing(
            "server",
            "server",
            "MAILPLANE_AGENT_SERVER",
        ));
    }
    let mut parsed: Vec<ServerUrl> = Vec::with_capacity(servers.len());
    for url in servers {
        let s = ServerUrl::parse(url)?;
        if let Some(first) = parsed
            .iter()
            .find(|p| p.host.eq_ignore_ascii_case(&s.host) && p.port == s.port)
        {
            return Err(ConfigError::ServerUrl {
                url: url.clone(),
                reason: format!("the same server as {:?} (listed twice)", first.url),
            });
        }
        parsed.push(s);
    }
    Ok(parsed)
}

/// Checks `connections`: 1 to [`MAX_CONNECTIONS`].
pub fn check_connections(n: u32) -> Result<(), ConfigError> {
    if (1..=MAX_CONNECTIONS).contains(&n) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(
            "connections",
            format!("{n}: must be from 1 to {MAX_CONNECTIONS}"),
        ))
    }
}

/// `server` in the file: one URL or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum FileServers {
    One(String),
    Many(Vec<String>),
}

impl FileServers {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            FileServers::One(s) => vec![s],
            FileServers::Many(v) => v,
        }
    }
}
