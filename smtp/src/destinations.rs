//! A credential's `allowed_destinations`: the relays its secret may be sent to.
//!
//! A pattern is `HOST` or `HOST:PORT`:
//!
//! - `HOST` is a DNS name, compared case-insensitively and without a trailing dot
//!   (`smtp.example.com`); a wildcard `*.example.com`, which covers every name strictly
//!   below `example.com` (`smtp.example.com`, `a.b.example.com`, not `example.com`
//!   itself); an IPv4 address (`192.0.2.10`); or an IPv6 address, in brackets when a port
//!   follows (`[2001:db8::25]:587`; a bare `2001:db8::25` covers every port).
//! - `PORT` is 1–65535. Without a port the pattern covers every port.
//!
//! A pattern matches the host *as configured* (the name the session connects to and
//! verifies the certificate against), not the addresses it resolves to: a name pattern
//! never matches an IP literal and the other way round. A session with credentials
//! refuses to send AUTH to a host and port that no pattern of the credential matches.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The most patterns one credential may list.
pub const MAX_AUTH_DESTINATIONS: usize = 64;

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a destination pattern: {reason}")]
pub struct AuthDestinationError {
    /// The text.
    pub input: String,
    /// What is wrong with it, and what would be accepted.
    pub reason: &'static str,
}

/// What a pattern's host part covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostMatch {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// Every name strictly below this suffix (stored without the `*.`).
    Below(String),
    /// Exactly this address.
    Ip(IpAddr),
}

/// One parsed `allowed_destinations` entry; [`fmt::Display`] gives its canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthDestination {
    host: HostMatch,
    port: Option<u16>,
}

/// A host as configured, in the form patterns compare: lower case, without brackets or a
/// trailing dot, or an address.
enum Host {
    Name(String),
    Ip(IpAddr),
}

fn host_of(host: &str) -> Host {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip.to_canonical()),
        Err(_) => Host::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
    }
}

/// Whether `name` is strictly below `suffix` (`a.example.com` below `example.com`).
fn is_below(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
}

/// Whether `name` is a DNS host name: 1 to 253 characters, labels of 1 to 63 letters,
/// digits, `-` (not at either end) and `_`. (The agent's allowlist reads names the same way.)
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A host name in a destination pattern: a DNS name that is not all digits and dots (that
/// would be a malformed IPv4 address).
fn valid_dns_name(name: &str) -> bool {
    is_dns_name(name) && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl AuthDestination {
    /// Whether this pattern covers `host` (a name or an IP address, IPv6 with or without
    /// brackets) on `port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.host, host_of(host)) {
            (HostMatch::Name(n), Host::Name(h)) => *n == h,
            (HostMatch::Below(s), Host::Name(h)) => is_below(&h, s),
            (HostMatch::Ip(ip), Host::Ip(h)) => *ip == h,
            _ => false,
        }
    }

    /// Whether every host and port this pattern covers, `other` covers too (so adding this
    /// pattern next to `other` widens nothing).
    pub fn is_covered_by(&self, other: &AuthDestination) -> bool {
        let port_ok = match (other.port, self.port) {
            (None, _) => true,
            (Some(o), Some(s)) => o == s,
            (Some(_), None) => false,
        };
        let host_ok = match (&other.host, &self.host) {
            (a, b) if a == b => true,
            (HostMatch::Below(o), HostMatch::Name(s)) => is_below(s, o),
            (HostMatch::Below(o), HostMatch::Below(s)) => is_below(s, o),
            _ => false,
        };
        port_ok && host_ok
    }
}

/// Whether any of `patterns` covers `host` on `port`.
pub fn destination_allowed(patterns: &[AuthDestination], host: &str, port: u16) -> bool {
    patterns.iter().any(|p| p.matches(host, port))
}

impl fmt::Display for AuthDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (HostMatch::Name(n), _) => write!(f, "{n}")?,
            (HostMatch::Below(s), _) => write!(f, "*.{s}")?,
            (HostMatch::Ip(IpAddr::V6(ip)), Some(_)) => write!(f, "[{ip}]")?,
            (HostMatch::Ip(ip), _) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl FromStr for AuthDestination {
    type Err = AuthDestinationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &'static str| AuthDestinationError {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err("empty; expected HOST or HOST:PORT"));
        }
        if text.len() > 300 || s.chars().any(char::is_control) || text.contains(char::is_whitespace)
        {
            return Err(err(
                "expected HOST or HOST:PORT without spaces or control characters",
            ));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| err("missing `]` after an IPv6 address"))?;
            let ip = inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| err("expected an IPv6 address inside `[...]`"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected `:PORT` after `]`"))?,
                ),
            };
            (HostMatch::Ip(IpAddr::V6(ip).to_canonical()), port)
        } else if text.matches(':').count() > 1 {
            let ip = text
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| err("expected an IPv6 address; write `[ADDR]:PORT` to add a port"))?;
            (HostMatch::Ip(IpAddr::V6(ip).to_canonical()), None)
        } else {
            let (host, port) = match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            };
            let host = if let Ok(ip) = host.parse::<IpAddr>() {
                HostMatch::Ip(ip.to_canonical())
            } else if let Some(suffix) = host.strip_prefix("*.") {
                let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
                if !valid_dns_name(&suffix) || !suffix.contains('.') {
                    return Err(err(
                        "expected `*.` and a domain with at least two labels, e.g. *.example.com",
                    ));
                }
                HostMatch::Below(suffix)
            } else {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                if !valid_dns_name(&name) {
                    return Err(err(
                        "expected a host name (smtp.example.com), a wildcard (*.example.com) or \
                         an IP address (192.0.2.10, [2001:db8::1])",
                    ));
                }
                HostMatch::Name(name)
            };
            (host, port)
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err("expected a port from 1 to 65535 after `:`"))?,
            ),
        };
        Ok(AuthDestination { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AuthDestination {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_prints_the_canonical_form() {
        for (input, canonical) in [
            ("SMTP.Example.COM.", "smtp.example.com"),
            ("smtp.example.com:587", "smtp.example.com:587"),
            ("*.Example.com", "*.example.com"),
            ("*.example.com:465", "*.example.com:465"),
            ("192.0.2.10", "192.0.2.10"),
            ("192.0.2.10:25", "192.0.2.10:25"),
            ("2001:DB8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:587", "[2001:db8::1]:587"),
            ("[::ffff:192.0.2.10]:25", "192.0.2.10:25"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(p(input).to_string(), canonical, "{input}");
            assert_eq!(p(canonical), p(input), "{input} round-trips");
        }
    }

    #[test]
    fn refuses_what_is_not_a_pattern() {
        for bad in [
            "",
            " ",
            "smtp.example.com:0",
            "smtp.example.com:65536",
            "smtp.example.com:",
            "smtp.example.com:smtp",
            "smtp example.com",
            "smtp.example.com\r\n",
            "*",
            "*.com",
            "*.*.example.com",
            "a*.example.com",
            "-bad.example.com",
            "10.0.0.0/8",
            "999.1.1.1",
            "[2001:db8::1",
            "[2001:db8::1]587",
            "[192.0.2.1]:25",
            "2001:db8::1:587:x",
            "https://smtp.example.com",
        ] {
            assert!(bad.parse::<AuthDestination>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn matches_names_wildcards_addresses_and_ports() {
        let exact = p("smtp.example.com");
        assert!(exact.matches("SMTP.example.com.", 587));
        assert!(exact.matches("smtp.example.com", 25));
        assert!(!exact.matches("smtp.example.com.evil.test", 587));
        assert!(!exact.matches("evil-smtp.example.com", 587));

        let port = p("smtp.example.com:587");
        assert!(port.matches("smtp.example.com", 587));
        assert!(!port.matches("smtp.example.com", 2525));

        let below = p("*.example.com");
        assert!(below.matches("smtp.example.com", 25));
        assert!(below.matches("a.b.example.com", 25));
        assert!(!below.matches("example.com", 25));
        assert!(!below.matches("badexample.com", 25));
        assert!(!below.matches("smtp.example.com.evil.test", 25));

        let v4 = p("127.0.0.1:2525");
        assert!(v4.matches("127.0.0.1", 2525));
        assert!(!v4.matches("127.0.0.1", 25));
        assert!(
            !v4.matches("localhost", 2525),
            "names never match addresses"
        );
        assert!(!p("localhost").matches("127.0.0.1", 25));

        let v6 = p("[::1]:25");
        assert!(v6.matches("::1", 25));
        assert!(v6.matches("[::1]", 25));
        assert!(!v6.matches("::2", 25));
        assert!(p("192.0.2.1").matches("::ffff:192.0.2.1", 25));

        let list = [p("relay.example.com:587"), p("*.mail.example.org")];
        assert!(destination_allowed(&list, "relay.example.com", 587));
        assert!(destination_allowed(&list, "eu.mail.example.org", 465));
        assert!(!destination_allowed(&list, "attacker.test", 587));
        assert!(!destination_allowed(&[], "relay.example.com", 587));
    }

    #[test]
    fn coverage_is_what_widening_is_judged_by() {
        let covered = |a: &str, b: &str| p(a).is_covered_by(&p(b));
        assert!(covered("smtp.example.com:587", "smtp.example.com"));
        assert!(covered("smtp.example.com:587", "smtp.example.com:587"));
        assert!(covered("smtp.example.com", "*.example.com"));
        assert!(covered("*.eu.example.com:25", "*.example.com"));
        assert!(covered("*.example.com", "*.example.com"));
        assert!(!covered("smtp.example.com", "smtp.example.com:587"));
        assert!(!covered("example.com", "*.example.com"));
        assert!(!covered("*.example.com", "smtp.example.com"));
        assert!(!covered("*.example.com", "*.eu.example.com"));
        assert!(!covered("*.example.com:25", "*.example.com:587"));
        assert!(!covered("127.0.0.1", "localhost"));
        assert!(covered("[::1]:25", "::1"));
    }
}
