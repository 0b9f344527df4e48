//! Which roots verify a relay's certificate: the web PKI's (webpki-roots, built in), the
//! operating system's trust store (rustls-native-certs: the host's CA bundle, or the files
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` name), and the extra CA a configuration adds. A
//! certificate is verified when any of them accepts it, and the transcript says which one.
//!
//! The built-in and system roots are loaded once per process: reading the system bundle
//! parses a few hundred certificates, which no session should repeat.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;

/// The roots a session trusts besides its extra CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TrustStore {
    /// The operating system's trust store and the web PKI roots (the default).
    #[default]
    SystemAndWebpki,
    /// Only the web PKI roots built into mailplane (the host's store is ignored).
    Webpki,
    /// Only the operating system's trust store (an internal PKI, with the public CAs the host
    /// chose to keep).
    System,
}

impl TrustStore {
    /// The names [`TrustStore::parse`] takes, as configuration files spell them.
    pub const NAMES: [&'static str; 3] = ["system+webpki", "webpki", "system"];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustStore::SystemAndWebpki => "system+webpki",
            TrustStore::Webpki => "webpki",
            TrustStore::System => "system",
        }
    }

    /// Parses a configuration name (`system+webpki`, `webpki`, `system`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "system+webpki" | "webpki+system" => Some(TrustStore::SystemAndWebpki),
            "webpki" => Some(TrustStore::Webpki),
            "system" => Some(TrustStore::System),
            _ => None,
        }
    }

    fn uses_system(self) -> bool {
        matches!(self, TrustStore::SystemAndWebpki | TrustStore::System)
    }

    fn uses_webpki(self) -> bool {
        matches!(self, TrustStore::SystemAndWebpki | TrustStore::Webpki)
    }
}

impl std::str::FromStr for TrustStore {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustStore::parse(s).ok_or_else(|| {
            format!(
                "unknown trust store {s:?}: use one of {}",
                TrustStore::NAMES.join(", ")
            )
        })
    }
}

/// One set of roots a certificate was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The configuration's extra CA.
    ExtraCa,
    /// The operating system's trust store.
    System,
    /// The web PKI roots built into mailplane.
    Webpki,
}

impl RootSource {
    /// How the transcript names it.
    pub fn describe(self) -> &'static str {
        match self {
            RootSource::ExtraCa => "the extra CA (--smtp-extra-ca)",
            RootSource::System => "the system trust store",
            RootSource::Webpki => "the web PKI roots (webpki-roots)",
        }
    }
}

/// The verifiers of a session, in the order they are tried.
pub(crate) type Verifiers = Vec<(RootSource, Arc<WebPkiServerVerifier>)>;

fn verifier(roots: RootCertStore) -> Option<Arc<WebPkiServerVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .ok()
}

fn webpki() -> Option<Arc<WebPkiServerVerifier>> {
    static WEBPKI: OnceLock<Option<Arc<WebPkiServerVerifier>>> = OnceLock::new();
    WEBPKI
        .get_or_init(|| {
            verifier(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// The system store's verifier, `None` when the store holds no usable certificate.
fn system() -> Option<Arc<WebPkiServerVerifier>> {
    static SYSTEM: OnceLock<Option<Arc<WebPkiServerVerifier>>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "cannot read part of the system trust store");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
            tracing::debug!(added, ignored, "loaded the system trust store");
            if added == 0 {
                tracing::warn!("the system trust store holds no usable certificate");
                return None;
            }
            verifier(roots)
        })
        .clone()
}

/// The shared verifiers `trust` names, system store first: what [`crate::tls`] tries after
/// a session's extra CA. Empty when the system store alone is asked for and holds nothing.
pub(crate) fn shared(trust: TrustStore) -> Verifiers {
    let mut out = Vec::new();
    if trust.uses_system()
        && let Some(v) = system()
    {
        out.push((RootSource::System, v));
    }
    if trust.uses_webpki()
        && let Some(v) = webpki()
    {
        out.push((RootSource::Webpki, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in TrustStore::NAMES {
            assert_eq!(TrustStore::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(TrustStore::default(), TrustStore::SystemAndWebpki);
        assert!("openssl".parse::<TrustStore>().is_err());
    }

    #[test]
    fn webpki_alone_has_no_system_verifier() {
        let v = shared(TrustStore::Webpki);
        assert_eq!(
            v.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [RootSource::Webpki]
        );
    }
}
