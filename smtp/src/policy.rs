//! Destination policy: which resolved addresses a session may connect to.
//!
//! The session checks every resolved address with a [`DestinationCheck`] after DNS
//! resolution and before any packet is sent to it. [`DestinationPolicy`] is the stock
//! implementation: CIDR + optional port-range rules in a deny list and an allow list.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {addr} is not allowed: {rule}")]
pub struct Denied {
    /// The refused address.
    pub addr: SocketAddr,
    /// The rule that refused it, e.g. `deny 169.254.0.0/16` or `not in the allow list`.
    pub rule: String,
}

/// Decides whether the session may connect to a resolved address.
pub trait DestinationCheck: Send + Sync {
    /// `Ok(())` to allow `addr`, or the reason it is refused.
    fn check(&self, addr: SocketAddr) -> Result<(), Denied>;
}

/// An error parsing a [`Rule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination rule {input:?}: {reason}")]
pub struct RuleParseError {
    /// The text that failed to parse.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One rule: a network and, optionally, a port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The network (a bare address is a /32 or /128).
    pub net: IpNet,
    /// The ports the rule covers; `None` covers every port.
    pub ports: Option<RangeInclusive<u16>>,
}

impl Rule {
    /// A rule for `net` and, optionally, `ports`.
    pub fn new(net: IpNet, ports: Option<RangeInclusive<u16>>) -> Self {
        Rule { net, ports }
    }

    /// Whether `addr` falls in this rule. IPv4-mapped IPv6 addresses are checked as IPv4.
    pub fn matches(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.net.contains(&ip) && self.ports.as_ref().is_none_or(|p| p.contains(&addr.port()))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        match &self.ports {
            Some(p) if p.start() == p.end() => write!(f, " {}", p.start()),
            Some(p) => write!(f, " {}-{}", p.start(), p.end()),
            None => Ok(()),
        }
    }
}

impl FromStr for Rule {
    type Err = RuleParseError;

    /// Parses `CIDR` or `CIDR PORTS`, where `CIDR` is `10.0.0.0/8`, `fe80::/10` or a bare
    /// address, and `PORTS` is `25` or `25-587`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| RuleParseError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = s.split_whitespace();
        let net_text = parts.next().ok_or_else(|| err("empty rule"))?;
        let net = match net_text.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => net_text
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| err("expected a CIDR such as 10.0.0.0/8 or an address"))?,
        };
        let ports = match parts.next() {
            None => None,
            Some(p) => {
                let port = |t: &str| {
                    t.parse::<u16>()
                        .map_err(|_| err("expected a port such as 25 or 25-587"))
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
        if parts.next().is_some() {
            return Err(err("trailing text"));
        }
        Ok(Rule { net, ports })
    }
}

/// Allow/deny lists of [`Rule`]s.
///
/// A destination is refused when it matches any deny rule (deny wins), or when the allow
/// list is non-empty and it matches no allow rule. [`DestinationPolicy::default`] denies
/// link-local addresses (`169.254.0.0/16`, `fe80::/10`, which include cloud metadata
/// endpoints) and the unspecified addresses (`0.0.0.0/8`, `::/128`), and allows the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Rules that refuse a destination.
    pub deny: Vec<Rule>,
    /// When non-empty, a destination must match one of these.
    pub allow: Vec<Rule>,
}

impl DestinationPolicy {
    /// A policy that allows everything (for tests and trusted callers).
    pub fn allow_all() -> Self {
        DestinationPolicy {
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }

    /// The default deny rules, see [`DestinationPolicy`].
    pub fn default_deny() -> Vec<Rule> {
        ["169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128"]
            .iter()
            .filter_map(|cidr| cidr.parse().ok())
            .collect()
    }

    /// The default policy plus extra deny and allow rules.
    pub fn with_rules(extra_deny: Vec<Rule>, allow: Vec<Rule>) -> Self {
        let mut deny = Self::default_deny();
        deny.extend(extra_deny);
        DestinationPolicy { deny, allow }
    }
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        DestinationPolicy {
            deny: Self::default_deny(),
            allow: Vec::new(),
        }
    }
}

impl DestinationCheck for DestinationPolicy {
    fn check(&self, addr: SocketAddr) -> Result<(), Denied> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(addr)) {
            return Err(Denied {
                addr,
                rule: format!("deny {rule}"),
            });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.matches(addr)) {
            return Err(Denied {
                addr,
                rule: "not in the allow list".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_rules() {
        let r: Rule = "10.1.2.3/8".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.0/8");
        let r: Rule = "192.0.2.7 25-587".parse().unwrap();
        assert_eq!(r.to_string(), "192.0.2.7/32 25-587");
        let r: Rule = "fe80::/10 465".parse().unwrap();
        assert_eq!(r.to_string(), "fe80::/10 465");
        assert_eq!(r.ports, Some(465..=465));
        for bad in [
            "",
            "10.0.0.0/33",
            "nonsense",
            "10.0.0.0/8 70000",
            "10.0.0.0/8 30-20",
            "10.0.0.0/8 25 x",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn default_denies_link_local_and_unspecified() {
        let p = DestinationPolicy::default();
        for denied in [
            "169.254.169.254:80",
            "[fe80::1]:25",
            "0.0.0.0:25",
            "[::]:25",
            "[::ffff:169.254.1.1]:25",
        ] {
            let e = p.check(sa(denied)).unwrap_err();
            assert!(e.rule.starts_with("deny "), "{denied}: {e}");
        }
        assert_eq!(
            p.check(sa("169.254.1.1:25")).unwrap_err().rule,
            "deny 169.254.0.0/16"
        );
        for allowed in [
            "127.0.0.1:25",
            "[::1]:587",
            "192.0.2.1:465",
            "[2001:db8::1]:25",
        ] {
            assert!(p.check(sa(allowed)).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn ports_and_allow_list() {
        let p = DestinationPolicy::with_rules(
            vec!["10.0.0.0/8 1-24".parse().unwrap()],
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.0.2.0/24 587".parse().unwrap(),
            ],
        );
        assert_eq!(
            p.check(sa("10.1.1.1:22")).unwrap_err().rule,
            "deny 10.0.0.0/8 1-24"
        );
        assert!(p.check(sa("10.1.1.1:25")).is_ok());
        assert!(p.check(sa("192.0.2.9:587")).is_ok());
        assert_eq!(
            p.check(sa("192.0.2.9:25")).unwrap_err().rule,
            "not in the allow list"
        );
        assert_eq!(
            p.check(sa("198.51.100.1:25")).unwrap_err().rule,
            "not in the allow list"
        );
        assert!(
            DestinationPolicy::allow_all()
                .check(sa("169.254.169.254:80"))
                .is_ok()
        );
    }
}
