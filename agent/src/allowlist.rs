//! The agent's `allowed_destinations`: which relays its jobs may reach.
//!
//! A pattern is `HOST`, `HOST:PORT` or `HOST:PORT-PORT`, where `HOST` is a DNS name
//! (`smtp.example.org`), a wildcard (`*.example.org`, any name strictly below
//! `example.org`), an IP address or a CIDR. An IPv6 address or network is written in
//! brackets when a port follows: `[2001:db8::/32]:25`. Without a port a pattern covers
//! every port.
//!
//! A job is allowed when its host name matches a name pattern (then every address the
//! name resolves to may be used, except the session library's default-deny list:
//! link-local, cloud metadata and unspecified addresses, also inside NAT64, 6to4 and
//! IPv4-compatible IPv6 addresses), or otherwise address by address,
//! when the address matches an IP/CIDR pattern. The check runs after DNS and before any
//! connection, through [`mailplane_smtp::DestinationCheck`], so a refused job makes no connection
//! and fails with `DESTINATION_NOT_ALLOWED`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;

use mailplane_smtp::{Denied, DestinationCheck, DestinationPolicy, is_dns_name};

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination pattern {input:?}: {reason}")]
pub struct PatternError {
    /// The text.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// What a pattern's host part matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lower case, without a trailing dot).
    Name(String),
    /// Any name ending in `.suffix` (the suffix is stored without the leading `*.`).
    Wildcard(String),
    /// An address or network.
    Net(IpNet),
}

/// One parsed `allowed_destinations` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The host part.
    pub host: HostPattern,
    /// The ports; `None` covers every port.
    pub ports: Option<RangeInclusive<u16>>,
}

impl Pattern {
    fn port_matches(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }

    /// Whether the host name `name` (not an address) and `port` match a name pattern.
    pub fn matches_name(&self, name: &str, port: u16) -> bool {
        let name = normalize_name(name);
        let host_ok = match &self.host {
            HostPattern::Name(n) => *n == name,
            HostPattern::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            HostPattern::Net(_) => false,
        };
        host_ok && self.port_matches(port)
    }

    /// Whether `addr` matches an IP/CIDR pattern (IPv4-mapped IPv6 counts as IPv4).
    pub fn matches_addr(&self, addr: SocketAddr) -> bool {
        match &self.host {
            HostPattern::Net(net) => {
                net.contains(&addr.ip().to_canonical()) && self.port_matches(addr.port())
            }
            HostPattern::Name(_) | HostPattern::Wildcard(_) => false,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = matches!(self.host, HostPattern::Net(IpNet::V6(_))) && self.ports.is_some();
        match &self.host {
            HostPattern::Name(n) => write!(f, "{n}")?,
            HostPattern::Wildcard(s) => write!(f, "*.{s}")?,
            HostPattern::Net(net) if bracket => write!(f, "[{net}]")?,
            HostPattern::Net(net) => write!(f, "{net}")?,
        }
        match &self.ports {
            Some(p) if p.start() == p.end() => write!(f, ":{}", p.start()),
            Some(p) => write!(f, ":{}-{}", p.start(), p.end()),
            None => Ok(()),
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| PatternError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err("empty pattern"));
        }
        // Split HOST and PORTS.
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| err("missing `]` after an IPv6 address"))?;
            let ports = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected `:PORT` after `]`"))?,
                ),
            };
            let net = parse_net(inner).ok_or_else(|| err("expected an IPv6 address or CIDR"))?;
            (HostPattern::Net(net), ports)
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address or network: no port.
            let net = parse_net(text).ok_or_else(|| {
                err("expected an IPv6 address or CIDR; write `[ADDR]:PORT` to add a port")
            })?;
            (HostPattern::Net(net), None)
        } else {
            let (host, ports) = match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            };
            let host = if let Some(net) = parse_net(host) {
                HostPattern::Net(net)
            } else if host.contains('/') {
                return Err(err("expected a CIDR such as 10.0.0.0/8"));
            } else if let Some(suffix) = host.strip_prefix("*.") {
                let suffix = normalize_name(suffix);
                if !is_dns_name(&suffix) {
                    return Err(err("expected a DNS name after `*.`"));
                }
                HostPattern::Wildcard(suffix)
            } else {
                let name = normalize_name(host);
                if !is_dns_name(&name) || name.parse::<IpAddr>().is_ok() {
                    return Err(err(
                        "expected a DNS name, `*.suffix`, an IP address or a CIDR",
                    ));
                }
                if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(err("not a valid IP address"));
                }
                HostPattern::Name(name)
            };
            (host, ports)
        };
        let ports = match ports {
            None => None,
            Some(p) => {
                let port = |t: &str| {
                    t.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| err("expected a port (1-65535) or a range such as 25-587"))
                };
                let (lo, hi) = match p.split_once('-') {
                    Some((lo, hi)) => (port(lo)?, port(hi)?),
                    None => (port(p)?, port(p)?),
                };
                if lo > hi {
                    return Err(err("port range is reversed"));
                }
                Some(lo..=hi)
            }
        };
        Ok(Pattern { host, ports })
    }
}

/// The parsed `allowed_destinations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
}

/// Why an allowlist cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// No pattern at all: the agent refuses to run open.
    #[error(
        "allowed_destinations is empty: list the relays this agent may reach \
         (e.g. `smtp.example.org:587`, `*.corp.example:25`, `10.0.0.0/8:25-587`)"
    )]
    Empty,
    /// A pattern does not parse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

impl Allowlist {
    /// Parses every pattern; an empty list is an error.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, AllowlistError> {
        if patterns.is_empty() {
            return Err(AllowlistError::Empty);
        }
        let patterns = patterns
            .iter()
            .map(|p| p.as_ref().parse())
            .collect::<Result<Vec<Pattern>, _>>()?;
        Ok(Allowlist { patterns })
    }

    /// The patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether a host name (not an address literal) matches a name pattern on `port`.
    pub fn name_allowed(&self, host: &str, port: u16) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return false;
        }
        self.patterns.iter().any(|p| p.matches_name(host, port))
    }

    /// The check for one job to `host`:`port`, for [`mailplane_smtp::run_session`].
    pub fn check_for(&self, host: &str, port: u16) -> JobCheck {
        JobCheck {
            name_allowed: self.name_allowed(host, port),
            port,
            patterns: self
                .patterns
                .iter()
                .filter(|p| matches!(p.host, HostPattern::Net(_)))
                .cloned()
                .collect(),
            base: DestinationPolicy::default(),
        }
    }
}

/// The destination check of one job, built by [`Allowlist::check_for`].
#[derive(Debug, Clone)]
pub struct JobCheck {
    name_allowed: bool,
    port: u16,
    patterns: Vec<Pattern>,
    base: DestinationPolicy,
}

impl JobCheck {
    /// Whether the job's host name matched a name pattern.
    pub fn name_allowed(&self) -> bool {
        self.name_allowed
    }
}

impl DestinationCheck for JobCheck {
    fn check(&self, addr: SocketAddr) -> Result<(), Denied> {
        self.base.check(addr)?;
        if self.name_allowed && addr.port() == self.port {
            return Ok(());
        }
        if self.patterns.iter().any(|p| p.matches_addr(addr)) {
            return Ok(());
        }
        Err(Denied {
            addr,
            rule: "not in the agent's allowed_destinations".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_patterns() {
        for (input, shown) in [
            ("smtp.example.org", "smtp.example.org"),
            ("SMTP.Example.org.:587", "smtp.example.org:587"),
            ("*.corp.example:25-587", "*.corp.example:25-587"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.7:25", "192.0.2.7/32:25"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("[2001:db8::/32]:25", "[2001:db8::/32]:25"),
            ("[2001:db8::1]", "2001:db8::1/128"),
            ("localhost:2525", "localhost:2525"),
        ] {
            let p: Pattern = input.parse().unwrap();
            assert_eq!(p.to_string(), shown, "{input}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "exa mple.org",
            "example.org:0",
            "example.org:70000",
            "example.org:30-20",
            "example.org:x",
            "10.0.0.0/33",
            "10.0.0.0/8:",
            "[2001:db8::1",
            "[2001:db8::1]25",
            "[example.org]:25",
            "2001:db8::1:25:",
            "-bad.example.org",
            "999.1.1.1",
            "a/b",
        ] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            Allowlist::parse::<&str>(&[]).unwrap_err(),
            AllowlistError::Empty
        );
        assert!(Allowlist::parse(&["ok.example", "bad pattern"]).is_err());
    }

    #[test]
    fn names_and_wildcards() {
        let a = Allowlist::parse(&["smtp.example.org:587", "*.corp.example"]).unwrap();
        assert!(a.name_allowed("smtp.example.org", 587));
        assert!(a.name_allowed("SMTP.EXAMPLE.ORG.", 587));
        assert!(!a.name_allowed("smtp.example.org", 25));
        assert!(!a.name_allowed("mx.example.org", 587));
        assert!(a.name_allowed("mx.corp.example", 25));
        assert!(a.name_allowed("a.b.corp.example", 2525));
        assert!(!a.name_allowed("corp.example", 25));
        assert!(!a.name_allowed("evilcorp.example", 25));
        assert!(!a.name_allowed("corp.example.evil", 25));
    }

    #[test]
    fn job_checks() {
        let a = Allowlist::parse(&[
            "smtp.example.org:587",
            "10.0.0.0/8:25-587",
            "[2001:db8::/32]:25",
            "192.0.2.9",
        ])
        .unwrap();
        // Name match: any address on the job's port, except the default-deny list.
        let c = a.check_for("smtp.example.org", 587);
        assert!(c.name_allowed());
        assert!(c.check(sa("198.51.100.1:587")).is_ok());
        assert!(c.check(sa("169.254.169.254:587")).is_err());
        assert!(c.check(sa("0.0.0.0:587")).is_err());
        // The session library's default deny, in every form: the other cloud metadata
        // addresses, and denied IPv4 addresses inside NAT64, 6to4 and IPv4-compatible IPv6.
        for denied in [
            "[fd00:ec2::254]:587",
            "100.100.100.200:587",
            "168.63.129.16:587",
            "[64:ff9b::a9fe:a9fe]:587",
            "[2002:a9fe:a9fe::1]:587",
            "[::169.254.169.254]:587",
        ] {
            let e = c.check(sa(denied)).unwrap_err();
            assert!(e.rule.starts_with("deny "), "{denied}: {e}");
        }
        // No name match: address by address.
        let c = a.check_for("other.example.org", 25);
        assert!(!c.name_allowed());
        assert!(c.check(sa("10.1.2.3:25")).is_ok());
        assert!(c.check(sa("10.1.2.3:2525")).is_err());
        assert!(c.check(sa("[2001:db8::5]:25")).is_ok());
        assert!(c.check(sa("[2001:db8::5]:587")).is_err());
        assert!(c.check(sa("[::ffff:10.0.0.1]:25")).is_ok());
        assert!(c.check(sa("192.0.2.9:2525")).is_ok());
        let e = c.check(sa("198.51.100.1:25")).unwrap_err();
        assert_eq!(e.rule, "not in the agent's allowed_destinations");
        // IP-literal hosts never match name patterns.
        let c = a.check_for("127.0.0.1", 587);
        assert!(!c.name_allowed());
        assert!(c.check(sa("127.0.0.1:587")).is_err());
    }
}
