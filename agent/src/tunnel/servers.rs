//! Which server each stream tries, in what order.
//!
//! A round goes through every address of every configured server once: the server this
//! stream was last connected to first, then the others in the configured order, starting
//! after the server the agent was last connected to by the stream's number (stream 0 at that
//! server, stream 1 at the next, …), so that several streams start on different servers.
//! Addresses another stream holds go last: a second stream lands on a server the first one
//! already holds only when no other answers. The server last connected to is noted in the
//! state directory, so that a restarted agent tries it first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::channel::{self, Target};
use crate::config::AgentConfig;
use crate::state;

/// What the streams of one agent share about the servers.
pub(crate) struct Servers {
    state_dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The URL of the server any stream last connected to.
    last_url: Option<String>,
    /// What each stream holds now, by stream number.
    held: HashMap<usize, Target>,
}

/// A stream's hold on a server; released when dropped.
pub(crate) struct Holding<'a> {
    servers: &'a Servers,
    stream: usize,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.servers.inner().held.remove(&self.stream);
    }
}

impl Servers {
    /// The shared state, with the last server read back from the state directory.
    pub(crate) fn new(config: &AgentConfig) -> Self {
        let last_url = match state::last_server(&config.state_dir) {
            Ok(url) => url.filter(|u| config.servers.contains(u)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the last server; starting with the first");
                None
            }
        };
        Servers {
            state_dir: config.state_dir.clone(),
            inner: Mutex::new(Inner {
                last_url,
                held: HashMap::new(),
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The addresses stream `stream` tries in this round, in order, and why the servers
    /// left out (unresolvable) are missing. `own_last` is what the stream last held.
    pub(crate) async fn round(
        &self,
        config: &AgentConfig,
        stream: usize,
        own_last: Option<&Target>,
    ) -> (Vec<Target>, Vec<String>) {
        let mut groups = Vec::new();
        let mut failures = Vec::new();
        let urls = match config.server_urls() {
            Ok(urls) => urls,
            Err(e) => return (Vec::new(), vec![e.to_string()]),
        };
        for server in &urls {
            match channel::resolve(config, server).await {
                Ok(targets) => groups.push(targets),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let inner = self.inner();
        let taken: Vec<&Target> = inner
            .held
            .iter()
            .filter(|(s, _)| **s != stream)
            .map(|(_, t)| t)
            .collect();
        let start = inner
            .last_url
            .as_ref()
            .and_then(|u| groups.iter().position(|g| &g[0].url == u))
            .unwrap_or(0);
        let targets = order(groups, start + stream, own_last, &taken);
        (targets, failures)
    }

    /// Notes that `stream` holds `target` (until the returned guard is dropped), and that
    /// it is now the last server connected to.
    pub(crate) fn hold(&self, stream: usize, target: &Target) -> Holding<'_> {
        let mut inner = self.inner();
        inner.held.insert(stream, target.clone());
        if inner.last_url.as_deref() != Some(target.url.as_str()) {
            inner.last_url = Some(target.url.clone());
            if let Err(e) = state::save_last_server(&self.state_dir, &target.url) {
                tracing::debug!(error = %e, "cannot note the last server");
            }
        }
        Holding {
            servers: self,
            stream,
        }
    }
}

/// Orders one round: `groups` holds each server's addresses, in the configured order. The
/// servers are rotated to start at `start` (or, with one server, its addresses are); then
/// `own_last` goes first, and addresses in `taken` (held by other streams) go last.
pub(crate) fn order(
    mut groups: Vec<Vec<Target>>,
    start: usize,
    own_last: Option<&Target>,
    taken: &[&Target],
) -> Vec<Target> {
    groups.retain(|g| !g.is_empty());
    if groups.len() > 1 {
        let n = start % groups.len();
        groups.rotate_left(n);
    } else if let Some(only) = groups.first_mut() {
        let n = start % only.len();
        only.rotate_left(n);
    }
    if let Some(own) = own_last
        && let Some(g) = groups.iter().position(|g| g[0].url == own.url)
    {
        let group = groups.remove(g);
        groups.insert(0, group);
        if let Some(a) = groups[0].iter().position(|t| t.addr == own.addr) {
            let t = groups[0].remove(a);
            groups[0].insert(0, t);
        }
    }
    let all: Vec<Target> = groups.into_iter().flatten().collect();
    let (free, held): (Vec<Target>, Vec<Target>) = all
        .into_iter()
        .partition(|t| !taken.iter().any(|h| h.addr == t.addr));
    free.into_iter().chain(held).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str, addr: &str) -> Target {
        Target {
            url: url.to_owned(),
            named: true,
            addr: channel::Addr::Direct(addr.parse().unwrap()),
        }
    }

    fn addrs(targets: &[Target]) -> Vec<String> {
        targets.iter().map(|t| t.addr.to_string()).collect()
    }

    fn groups() -> Vec<Vec<Target>> {
        vec![
            vec![t("https://a", "10.0.0.1:1"), t("https://a", "10.0.0.2:1")],
            vec![t("https://b", "10.0.1.1:1")],
            vec![t("https://c", "10.0.2.1:1")],
        ]
    }

    #[test]
    fn streams_start_on_different_servers() {
        assert_eq!(
            addrs(&order(groups(), 0, None, &[])),
            ["10.0.0.1:1", "10.0.0.2:1", "10.0.1.1:1", "10.0.2.1:1"]
        );
        assert_eq!(
            addrs(&order(groups(), 1, None, &[])),
            ["10.0.1.1:1", "10.0.2.1:1", "10.0.0.1:1", "10.0.0.2:1"]
        );
        assert_eq!(
            addrs(&order(groups(), 4, None, &[])),
            ["10.0.1.1:1", "10.0.2.1:1", "10.0.0.1:1", "10.0.0.2:1"]
        );
        // One name with several addresses: the streams start on different addresses.
        let one = vec![vec![
            t("https://a", "10.0.0.1:1"),
            t("https://a", "10.0.0.2:1"),
        ]];
        assert_eq!(
            addrs(&order(one, 1, None, &[])),
            ["10.0.0.2:1", "10.0.0.1:1"]
        );
    }

    #[test]
    fn servers_through_one_proxy_are_still_different_targets() {
        let via = |url: &str, server: &str| Target {
            url: url.to_owned(),
            named: true,
            addr: channel::Addr::Proxy {
                server: server.to_owned(),
                proxy: "http://<redacted>@proxy:3128".to_owned(),
            },
        };
        let groups = vec![
            vec![via("https://a:1", "a:1")],
            vec![via("https://b:1", "b:1")],
        ];
        let held = via("https://a:1", "a:1");
        let urls: Vec<String> = order(groups, 0, None, &[&held])
            .into_iter()
            .map(|t| t.url)
            .collect();
        assert_eq!(urls, ["https://b:1", "https://a:1"]);
        assert_eq!(
            held.to_string(),
            "https://a:1 (through the proxy http://<redacted>@proxy:3128)"
        );
    }

    #[test]
    fn the_last_server_goes_first_and_held_ones_last() {
        let own = t("https://a", "10.0.0.2:1");
        assert_eq!(
            addrs(&order(groups(), 2, Some(&own), &[])),
            ["10.0.0.2:1", "10.0.0.1:1", "10.0.2.1:1", "10.0.1.1:1"]
        );
        let held = t("https://b", "10.0.1.1:1");
        assert_eq!(
            addrs(&order(groups(), 1, None, &[&held])),
            ["10.0.2.1:1", "10.0.0.1:1", "10.0.0.2:1", "10.0.1.1:1"]
        );
        // Its own last server, if another stream holds it now, goes last too.
        assert_eq!(
            addrs(&order(groups(), 0, Some(&held), &[&held])),
            ["10.0.0.1:1", "10.0.0.2:1", "10.0.2.1:1", "10.0.1.1:1"]
        );
        assert!(order(Vec::new(), 3, Some(&own), &[]).is_empty());
    }
}
