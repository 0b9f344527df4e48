//! The HTTP proxy the agent may have to go through to reach the server: its URL (with
//! credentials that never reach a log), which servers bypass it (`NO_PROXY`), and the
//! `CONNECT` tunnel that carries the agent's TLS connection (see [`connect`]).
//!
//! Only `http://` proxies are supported: the agent's connection to the server is TLS with
//! mutual authentication end to end, inside the tunnel; the proxy sees only the server's
//! host and port.

use std::fmt;

use zeroize::Zeroizing;

pub mod connect;
mod no_proxy;

pub use connect::{ProxyConnector, ProxyError};
pub use no_proxy::NoProxy;

/// The default port of an `http://` proxy URL without one.
const DEFAULT_PORT: u16 = 80;

/// Why a proxy URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    /// Not a URL at all.
    #[error("not a URL (expected http://[USER:PASSWORD@]HOST:PORT)")]
    NotUrl,
    /// Another scheme than `http`.
    #[error(
        "unsupported proxy scheme {0:?}: only http:// proxies are supported (the agent's TLS runs inside the proxy's CONNECT tunnel)"
    )]
    Scheme(String),
    /// No host.
    #[error("no host")]
    NoHost,
    /// A path, query or fragment.
    #[error("a proxy URL has no path, query or fragment")]
    Path,
}

/// The proxy's user name and password. `Debug` prints `<redacted>`, there is no `Display`,
/// and the password is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    user: Zeroizing<String>,
    password: Zeroizing<String>,
}

impl ProxyAuth {
    /// The value of the `Proxy-Authorization` header: `Basic base64(user:password)`.
    pub(crate) fn header_value(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        let pair = Zeroizing::new(format!("{}:{}", *self.user, *self.password));
        Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
        ))
    }
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An `http://[USER:PASSWORD@]HOST[:PORT]` proxy, parsed. Its `Display` and `Debug` never
/// show the credentials: `http://<redacted>@HOST:PORT` when it has some.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The proxy's host: a DNS name or an IP address (without brackets).
    pub host: String,
    /// The proxy's port (80 when the URL has none).
    pub port: u16,
    /// The credentials, when the URL has a user name.
    pub auth: Option<ProxyAuth>,
}

impl ProxyUrl {
    /// Parses a proxy URL; a bare `HOST:PORT` is taken as `http://HOST:PORT`, as curl does.
    /// User name and password are percent-decoded.
    pub fn parse(text: &str) -> Result<Self, ProxyUrlError> {
        let text = text.trim();
        let full = if text.contains("://") {
            Zeroizing::new(text.to_owned())
        } else {
            Zeroizing::new(format!("http://{text}"))
        };
        // Only the scheme of a URL that does not parse is shown: it may hold a password.
        let url = url::Url::parse(&full).map_err(|_| ProxyUrlError::NotUrl)?;
        if url.scheme() != "http" {
            return Err(ProxyUrlError::Scheme(url.scheme().to_owned()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(ProxyUrlError::NoHost),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(ProxyUrlError::Path);
        }
        let decode = |s: &str| {
            Zeroizing::new(
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        };
        let auth = (!url.username().is_empty()).then(|| ProxyAuth {
            user: decode(url.username()),
            password: decode(url.password().unwrap_or("")),
        });
        Ok(ProxyUrl {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            auth,
        })
    }

    /// `HOST:PORT` (IPv6 in brackets): where the agent dials.
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.auth {
            Some(_) => write!(f, "http://<redacted>@{}", self.authority()),
            None => write!(f, "http://{}", self.authority()),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

#[cfg(test)]
mod tests;
