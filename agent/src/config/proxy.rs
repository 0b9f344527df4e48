//! Which HTTP proxy the agent goes through: `--proxy` (`MAILPLANE_AGENT_PROXY`, `proxy` in
//! the file), else `https_proxy`/`HTTPS_PROXY` with `no_proxy`/`NO_PROXY`.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ConfigError, ServerUrl};
use crate::proxy::{NoProxy, ProxyUrl};

/// A proxy URL as given, before parsing: it may hold a password, so its `Debug` prints
/// `<redacted>`, it has no `Display`, and it is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct ProxyText(Zeroizing<String>);

impl From<String> for ProxyText {
    fn from(s: String) -> Self {
        ProxyText(Zeroizing::new(s.trim().to_owned()))
    }
}

impl fmt::Debug for ProxyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for ProxyText {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ProxyText::from(s.to_owned()))
    }
}

/// The proxy variables of the environment (read once, so that tests can give their own).
#[derive(Debug, Clone, Default)]
pub struct ProxyEnv {
    /// `https_proxy` or `HTTPS_PROXY`: the variable's name and value.
    pub https_proxy: Option<(&'static str, ProxyText)>,
    /// `no_proxy` or `NO_PROXY`.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the process environment (the lower-case names first, as curl does); empty
    /// values count as unset.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let https_proxy = ["https_proxy", "HTTPS_PROXY"]
            .into_iter()
            .find_map(|name| var(name).map(|v| (name, ProxyText(Zeroizing::new(v)))));
        let no_proxy = ["no_proxy", "NO_PROXY"].into_iter().find_map(var);
        ProxyEnv {
            https_proxy,
            no_proxy,
        }
    }
}

/// The proxy in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySetting {
    /// The proxy.
    pub url: ProxyUrl,
    /// Where it was configured: `--proxy` (flag, `MAILPLANE_AGENT_PROXY` or the file), or
    /// the environment variable's name.
    pub from: &'static str,
    /// The servers reached directly (`NO_PROXY`; only with a proxy from the environment).
    pub no_proxy: NoProxy,
}

impl ProxySetting {
    /// Whether `server` is reached through the proxy.
    pub fn applies_to(&self, server: &ServerUrl) -> bool {
        !self.no_proxy.matches(&server.host, server.port)
    }
}

/// The proxy: `configured` (flag, environment `MAILPLANE_AGENT_PROXY`, or file, already
/// merged) over the environment's `https_proxy`.
pub(super) fn resolve(
    configured: Option<&ProxyText>,
    env: &ProxyEnv,
) -> Result<Option<ProxySetting>, ConfigError> {
    let (text, from, no_proxy) = match (configured, &env.https_proxy) {
        (Some(t), _) => (t, "--proxy", NoProxy::default()),
        (None, Some((name, t))) => (
            t,
            *name,
            NoProxy::parse(env.no_proxy.as_deref().unwrap_or("")),
        ),
        (None, None) => return Ok(None),
    };
    if text.0.is_empty() {
        return Ok(None);
    }
    let url = ProxyUrl::parse(&text.0).map_err(|source| ConfigError::Proxy { from, source })?;
    Ok(Some(ProxySetting {
        url,
        from,
        no_proxy,
    }))
}
