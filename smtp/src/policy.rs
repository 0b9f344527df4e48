//! Destination policy: which resolved addresses a session may connect to.
//!
//! The session checks every resolved address with a [`DestinationCheck`] after DNS
//! resolution and before any packet is sent to it. [`DestinationPolicy`] is the stock
//! implementation: CIDR + optional port-range rules in a deny list and an allow list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
        let ip = addr.ip().to_canonical();
        self.net.contains(&ip) && self.ports_match(addr.port())
    }

    /// Whether `addr` falls in this rule as a deny rule: like [`Rule::matches`], and also
    /// when an IPv6 address carries an IPv4 address that falls in it ([`embedded_ipv4`]:
    /// NAT64, 6to4, IPv4-compatible), since such an address may reach that IPv4 host.
    pub fn matches_any_form(&self, addr: SocketAddr) -> bool {
        if self.matches(addr) {
            return true;
        }
        match addr.ip() {
            IpAddr::V6(v6) => embedded_ipv4(v6).is_some_and(|v4| {
                self.net.contains(&IpAddr::V4(v4)) && self.ports_match(addr.port())
            }),
            IpAddr::V4(_) => false,
        }
    }

    fn ports_match(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }
}

/// The IPv4 address an IPv6 address stands for, when it has one:
///
/// - IPv4-mapped `::ffff:a.b.c.d` (the same host);
/// - NAT64 `64:ff9b::a.b.c.d` (RFC 6052's well-known prefix, `64:ff9b::/96`);
/// - 6to4 `2002:AABB:CCDD::/48`, the IPv4 address in bits 16..48 (RFC 3056);
/// - IPv4-compatible `::a.b.c.d` (deprecated, `::/96`), except `::` and `::1`.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    match seg {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if !(hi == 0 && lo <= 1) => Some(low(hi, lo)),
        _ => None,
    }
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
/// link-local addresses (`169.254.0.0/16`, `fe80::/10`, which include most cloud metadata
/// endpoints), the other cloud metadata addresses (`fd00:ec2::254` on AWS,
/// `100.100.100.200` on Alibaba Cloud, `168.63.129.16` on Azure) and the unspecified
/// addresses (`0.0.0.0/8`, `::/128`), and allows the rest.
///
/// Deny rules also catch an IPv6 address whose embedded IPv4 address they deny
/// ([`embedded_ipv4`]: IPv4-mapped, NAT64, 6to4, IPv4-compatible); allow rules match only
/// the address itself (and IPv4-mapped addresses as IPv4), so they never widen.
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

    /// The default deny rules, as text, see [`DestinationPolicy`].
    pub const DEFAULT_DENY: [&'static str; 7] = [
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "168.63.129.16/32",
        "0.0.0.0/8",
        "::/128",
    ];

    /// The default deny rules, see [`DestinationPolicy`].
    pub fn default_deny() -> Vec<Rule> {
        Self::DEFAULT_DENY
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

    /// A policy whose deny list is `replace` (instead of the defaults, when given) plus
    /// `extra_deny`, with these allow rules: `--smtp-deny-replace` and `--smtp-deny`.
    pub fn with_deny(replace: Option<Vec<Rule>>, extra_deny: Vec<Rule>, allow: Vec<Rule>) -> Self {
        let mut deny = replace.unwrap_or_else(Self::default_deny);
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
        if let Some(rule) = self.deny.iter().find(|r| r.matches_any_form(addr)) {
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
    fn default_denies_cloud_metadata() {
        let p = DestinationPolicy::default();
        for (denied, rule) in [
            ("[fd00:ec2::254]:80", "deny fd00:ec2::254/128"),
            ("100.100.100.200:80", "deny 100.100.100.200/32"),
            ("168.63.129.16:80", "deny 168.63.129.16/32"),
            ("[::ffff:168.63.129.16]:80", "deny 168.63.129.16/32"),
        ] {
            assert_eq!(p.check(sa(denied)).unwrap_err().rule, rule, "{denied}");
        }
        for allowed in [
            "[fd00:ec2::253]:80",
            "100.100.100.201:80",
            "168.63.129.17:80",
        ] {
            assert!(p.check(sa(allowed)).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn embedded_ipv4_forms() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            embedded_ipv4(v6("::ffff:169.254.169.254")),
            v4("169.254.169.254")
        );
        assert_eq!(
            embedded_ipv4(v6("64:ff9b::a9fe:a9fe")),
            v4("169.254.169.254")
        );
        assert_eq!(embedded_ipv4(v6("64:ff9b::10.1.2.3")), v4("10.1.2.3"));
        assert_eq!(
            embedded_ipv4(v6("2002:a9fe:a9fe::1")),
            v4("169.254.169.254")
        );
        assert_eq!(embedded_ipv4(v6("2002:0a01:0203:ffff::7")), v4("10.1.2.3"));
        assert_eq!(
            embedded_ipv4(v6("::169.254.169.254")),
            v4("169.254.169.254")
        );
        assert_eq!(embedded_ipv4(v6("::2")), v4("0.0.0.2"));
        // `::` and `::1` are the IPv6 unspecified and loopback addresses, not IPv4.
        assert_eq!(embedded_ipv4(v6("::")), None);
        assert_eq!(embedded_ipv4(v6("::1")), None);
        // Not an embedding: other prefixes, or NAT64 with non-zero middle bits.
        assert_eq!(embedded_ipv4(v6("2001:db8::a9fe:a9fe")), None);
        assert_eq!(embedded_ipv4(v6("64:ff9b:1::a9fe:a9fe")), None);
        assert_eq!(embedded_ipv4(v6("2003:a9fe:a9fe::1")), None);
    }

    #[test]
    fn denied_ipv4_is_denied_in_every_ipv6_form() {
        let p = DestinationPolicy::default();
        for (denied, rule) in [
            ("[64:ff9b::a9fe:a9fe]:80", "deny 169.254.0.0/16"),
            ("[64:ff9b::100.100.100.200]:80", "deny 100.100.100.200/32"),
            ("[2002:a9fe:a9fe::]:80", "deny 169.254.0.0/16"),
            ("[2002:a83f:8110::1]:80", "deny 168.63.129.16/32"),
            ("[::169.254.169.254]:80", "deny 169.254.0.0/16"),
            ("[::0.0.0.7]:25", "deny 0.0.0.0/8"),
        ] {
            assert_eq!(p.check(sa(denied)).unwrap_err().rule, rule, "{denied}");
        }
        // The same forms of an allowed IPv4 address, and `::1`, stay allowed.
        for allowed in [
            "[64:ff9b::c000:201]:25",
            "[2002:c000:201::1]:25",
            "[::192.0.2.1]:25",
            "[::1]:25",
        ] {
            assert!(p.check(sa(allowed)).is_ok(), "{allowed}");
        }
        // An operator's own IPv4 deny rule catches the IPv6 forms, with its ports.
        let p = DestinationPolicy::with_rules(vec!["10.0.0.0/8 25".parse().unwrap()], vec![]);
        assert!(p.check(sa("[64:ff9b::10.0.0.1]:25")).is_err());
        assert!(p.check(sa("[2002:0a00:0001::]:25")).is_err());
        assert!(p.check(sa("[64:ff9b::10.0.0.1]:587")).is_ok());
    }

    #[test]
    fn allow_rules_do_not_widen_to_embedded_forms() {
        let p = DestinationPolicy::with_rules(vec![], vec!["192.0.2.0/24".parse().unwrap()]);
        assert!(p.check(sa("192.0.2.1:25")).is_ok());
        assert!(p.check(sa("[::ffff:192.0.2.1]:25")).is_ok());
        assert_eq!(
            p.check(sa("[64:ff9b::c000:201]:25")).unwrap_err().rule,
            "not in the allow list"
        );
    }

    #[test]
    fn extra_deny_extends_and_replace_replaces() {
        let loopback: Vec<Rule> = vec!["127.0.0.0/8".parse().unwrap()];
        let extended = DestinationPolicy::with_deny(None, loopback.clone(), vec![]);
        assert_eq!(
            extended.deny.len(),
            DestinationPolicy::DEFAULT_DENY.len() + 1
        );
        assert!(extended.check(sa("127.0.0.1:25")).is_err());
        assert!(extended.check(sa("169.254.169.254:80")).is_err());
        let replaced = DestinationPolicy::with_deny(Some(loopback), vec![], vec![]);
        assert_eq!(replaced.deny.len(), 1);
        assert!(replaced.check(sa("127.0.0.1:25")).is_err());
        assert!(replaced.check(sa("169.254.169.254:80")).is_ok());
        let nothing = DestinationPolicy::with_deny(Some(vec![]), vec![], vec![]);
        assert!(nothing.check(sa("169.254.169.254:80")).is_ok());
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
