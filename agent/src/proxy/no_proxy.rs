//! `NO_PROXY`: the servers reached directly although a proxy is configured.

use std::net::IpAddr;

use ipnet::IpNet;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`: no proxy for anything.
    All,
    /// A host name, matching itself and its subdomains (`example.org`, `.example.org`,
    /// `*.example.org`), with an optional port.
    Suffix(String, Option<u16>),
    /// An IP address or a network.
    Net(IpNet, Option<u16>),
}

/// A parsed `NO_PROXY` value: comma-separated host suffixes (with an optional `:PORT`),
/// IP addresses, CIDR networks, or `*`. Empty entries are ignored; names compare without
/// case. A name is not resolved to compare it with addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

/// Splits `host:port` off an entry (IPv6 in brackets, or a bare IPv6 without port).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    if entry.matches(':').count() == 1
        && let Some((host, port)) = entry.rsplit_once(':')
        && let Ok(port) = port.parse()
    {
        return (host, Some(port));
    }
    (entry, None)
}

impl NoProxy {
    /// Parses the list; an entry that is neither an address nor a network is a name suffix.
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e == "*" {
                    return Entry::All;
                }
                let (host, port) = split_port(e);
                if let Ok(net) = host.parse::<IpNet>() {
                    return Entry::Net(net, port);
                }
                if let Ok(ip) = host.parse::<IpAddr>() {
                    return Entry::Net(IpNet::from(ip), port);
                }
                let name = host.trim_start_matches('*').trim_start_matches('.');
                Entry::Suffix(name.to_ascii_lowercase(), port)
            })
            .collect();
        NoProxy { entries }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `host:port` is to be reached directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.entries.iter().any(|e| match e {
            Entry::All => true,
            Entry::Net(net, p) => ip.is_some_and(|ip| net.contains(&ip)) && port_ok(p),
            Entry::Suffix(suffix, p) => {
                ip.is_none()
                    && port_ok(p)
                    && !suffix.is_empty()
                    && (name == *suffix
                        || name
                            .strip_suffix(suffix.as_str())
                            .is_some_and(|head| head.ends_with('.')))
            }
        })
    }
}
