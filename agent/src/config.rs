//! The agent's configuration: command-line flags over `MAILPLANE_AGENT_*` environment
//! variables over a TOML file (`--config`) over defaults.
//!
//! ```toml
//! server = "https://mailplane.example.org:7751"
//! # or several replicas: server = ["https://cp1.example.org:7751", "https://cp2.example.org:7751"]
//! # connections = 2            # streams held at once, to different servers when it can
//! server_ca = "/etc/mailplane-agent/server-ca.pem"
//! allowed_destinations = ["smtp.corp.example:587", "10.20.0.0/16:25"]
//! # enrollment_token = "..."   # first start only; better passed in the environment
//! # server_name = "mailplane.example.org"
//! # state_dir = "/var/lib/mailplane-agent"
//! # max_concurrent_jobs = 8
//! # heartbeat_interval = "10s"
//! # drain_timeout = "30s"
//! # log_format = "text"        # or "json"
//! # log_level = "info"
//! # proxy = "http://proxy.corp.example:3128"   # credentials: better in MAILPLANE_AGENT_PROXY
//! # metrics_listen = "127.0.0.1:9752"  # /metrics, /healthz, /readyz (plain HTTP); off by default
//! ```
//!
//! `server` is one URL or a list (the flag `--server` repeats, and `MAILPLANE_AGENT_SERVER`
//! takes a comma-separated list). A DNS name with several addresses is tried address by
//! address. The agent tries the server it was last connected to first, then the others in
//! order, and backs off only after the whole list failed (see `tunnel`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

mod proxy;
mod servers;

pub use proxy::{ProxyEnv, ProxySetting, ProxyText};
use servers::FileServers;
pub use servers::{MAX_CONNECTIONS, ServerUrl};

/// An enrollment token. Its `Debug` prints `<redacted>` and it has no `Display`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The token itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token(s.trim().to_owned()))
    }
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's agent listeners, e.g. `https://mailplane.example.org:7751`: replicas of
    /// one control plane, tried in order (the last good one first).
    pub servers: Vec<String>,
    /// The CA (PEM file) that signs the server's agent listener certificate.
    pub server_ca: PathBuf,
    /// The TLS name to expect in the servers' certificates; each URL's host when unset.
    pub server_name: Option<String>,
    /// Where the key, certificates and agent name live.
    pub state_dir: PathBuf,
    /// The one-time enrollment token (used only when there is no state yet).
    pub enrollment_token: Option<Token>,
    /// Where jobs may connect: `HOST[:PORT|:PORT-PORT]` patterns (see [`crate::allowlist`]).
    /// Required: the agent refuses to run with an empty list.
    pub allowed_destinations: Vec<String>,
    /// The roots relays' certificates are verified against besides a job's extra CA (this
    /// host's trust store and the built-in web PKI roots by default).
    pub trust: mailplane_smtp::TrustStore,
    /// The most jobs run at once (over all connections).
    pub max_concurrent_jobs: u32,
    /// How many streams to hold at once, each to a different server when it can (1 to
    /// [`MAX_CONNECTIONS`]).
    pub connections: u32,
    /// How often the agent sends a heartbeat. No message from the server for three
    /// intervals means the link is dead.
    pub heartbeat_interval: Duration,
    /// How long in-flight jobs may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// The log format.
    pub log_format: LogFormat,
    /// The log filter, e.g. `info` or `mailplane_agent=debug,info`.
    pub log_level: String,
    /// How long connecting to the server may take.
    pub connect_timeout: Duration,
    /// Reconnection delays.
    pub backoff: BackoffPolicy,
    /// How often the certificate's remaining lifetime is checked.
    pub renew_check_interval: Duration,
    /// The HTTP proxy to reach the servers through (`CONNECT`), if any.
    pub proxy: Option<ProxySetting>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl AgentConfig {
    /// A configuration with defaults for everything but the essentials, for one server (set
    /// [`AgentConfig::servers`] for several).
    pub fn new(
        server: impl Into<String>,
        server_ca: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        allowed_destinations: Vec<String>,
    ) -> Self {
        AgentConfig {
            servers: vec![server.into()],
            server_ca: server_ca.into(),
            server_name: None,
            state_dir: state_dir.into(),
            enrollment_token: None,
            allowed_destinations,
            trust: mailplane_smtp::TrustStore::default(),
            max_concurrent_jobs: DEFAULT_MAX_CONCURRENT_JOBS,
            connections: DEFAULT_CONNECTIONS,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            log_format: LogFormat::Text,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            connect_timeout: Duration::from_secs(10),
            backoff: BackoffPolicy::default(),
            renew_check_interval: Duration::from_secs(3600),
            proxy: None,
            metrics_listen: None,
        }
    }

    /// Checks what the agent needs before it talks to the server: at least one server, each
    /// an `https://` URL with a host, none listed twice, and `connections` in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        servers::check_connections(self.connections)?;
        self.server_urls().map(drop)
    }

    /// The servers, parsed and checked (see [`AgentConfig::validate`]).
    pub fn server_urls(&self) -> Result<Vec<ServerUrl>, ConfigError> {
        servers::parse_list(&self.servers)
    }

    /// The TLS name to expect from `server`: `server_name`, or the URL's host.
    pub fn tls_name(&self, server: &ServerUrl) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| server.host.clone())
    }

    /// The proxy to reach `server` through, if any (none when `NO_PROXY` lists it).
    pub fn proxy_for(&self, server: &ServerUrl) -> Option<&ProxySetting> {
        self.proxy.as_ref().filter(|p| p.applies_to(server))
    }
}

/// The reconnection backoff parameters (see `tunnel::Backoff`). [`BackoffPolicy::default`] is the spec's: 1 s, ×1.6, ±0.2,
/// at most 120 s, reset after a session of 10 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The first delay.
    pub initial: Duration,
    /// The growth factor.
    pub multiplier: f64,
    /// The random spread, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
    /// The largest delay (before jitter).
    pub max: Duration,
    /// A session that stayed up this long resets the sequence.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// The default of `max_concurrent_jobs`.
pub const DEFAULT_MAX_CONCURRENT_JOBS: u32 = 8;
/// The default of `connections`.
pub const DEFAULT_CONNECTIONS: u32 = 1;
/// The default of `heartbeat_interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// The default of `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of `log_level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The default state directory: `/var/lib/mailplane-agent` for root, otherwise
/// `$XDG_STATE_HOME/mailplane-agent` (`~/.local/state/mailplane-agent`).
pub fn default_state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    let is_root = match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => dirs::home_dir().is_some_and(|h| h == Path::new("/root")),
    };
    if is_root {
        return PathBuf::from("/var/lib/mailplane-agent");
    }
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("mailplane-agent")
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A required setting is missing.
    #[error("`{0}` is required (flag --{1}, environment {2}, or the configuration file)")]
    Missing(&'static str, &'static str, &'static str),
    /// A duration does not parse.
    #[error("invalid duration {0:?} for {1} (use e.g. 10s, 500ms, 2m)")]
    Duration(String, &'static str),
    /// A value is out of range.
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
    /// The server URL is unusable.
    #[error("invalid server URL {url:?}: {reason}")]
    ServerUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The proxy URL is unusable (the URL is not shown: it may hold a password).
    #[error("invalid proxy URL in {from}: {source}")]
    Proxy {
        /// Where it was configured: `--proxy` or the environment variable.
        from: &'static str,
        /// Why.
        source: crate::proxy::ProxyUrlError,
    },
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (use e.g. 10s, 500ms, 2m)"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!(
            "invalid duration {text:?} (use e.g. 10s, 500ms, 2m)"
        )),
    }
}

/// A duration in the file: a number of seconds or a string such as `"10s"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Secs(u64),
    Text(String),
}

impl FileDuration {
    fn resolve(&self, name: &'static str) -> Result<Duration, ConfigError> {
        match self {
            FileDuration::Secs(n) => Ok(Duration::from_secs(*n)),
            FileDuration::Text(t) => {
                parse_duration(t).map_err(|_| ConfigError::Duration(t.clone(), name))
            }
        }
    }
}

/// The TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<FileServers>,
    server_ca: Option<PathBuf>,
    server_name: Option<String>,
    state_dir: Option<PathBuf>,
    enrollment_token: Option<Token>,
    allowed_destinations: Option<Vec<String>>,
    trust: Option<String>,
    max_concurrent_jobs: Option<u32>,
    connections: Option<u32>,
    heartbeat_interval: Option<FileDuration>,
    drain_timeout: Option<FileDuration>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    proxy: Option<ProxyText>,
    metrics_listen: Option<SocketAddr>,
}

/// The configuration flags (each also read from a `MAILPLANE_AGENT_*` variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A TOML configuration file; flags and environment variables override its settings.
    #[arg(long, env = "MAILPLANE_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's agent listener, e.g. <https://mailplane.example.org:7751> (`https://`
    /// only: the agent speaks only TLS to the server). Repeat the flag, or separate URLs with commas, for several replicas: the agent tries the one it
    /// was last connected to first, then the others in order.
    #[arg(
        long,
        env = "MAILPLANE_AGENT_SERVER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub server: Vec<String>,
    /// The CA certificate (PEM file) that signs the server's agent listener certificate.
    #[arg(long, env = "MAILPLANE_AGENT_SERVER_CA", value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// The name to expect in the server's certificate (default: the URL's host).
    #[arg(long, env = "MAILPLANE_AGENT_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// Where the agent keeps its key and certificates (default: /var/lib/mailplane-agent
    /// for root, ~/.local/state/mailplane-agent otherwise).
    #[arg(long, env = "MAILPLANE_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The one-time enrollment token (`mailplane connectors token`); used only when the
    /// state directory holds no enrollment yet. Prefer the environment variable.
    #[arg(
        long,
        env = "MAILPLANE_AGENT_ENROLLMENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub enrollment_token: Option<Token>,
    /// A destination jobs may reach: HOST[:PORT|:PORT-PORT], where HOST is a DNS name,
    /// *.suffix, an IP address or a CIDR (IPv6 in brackets before a port). Repeat the flag, or separate
    /// patterns with commas. At least one is required to run.
    #[arg(
        long = "allow",
        visible_alias = "allowed-destinations",
        env = "MAILPLANE_AGENT_ALLOWED_DESTINATIONS",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub allowed_destinations: Vec<String>,
    /// The roots relays' certificates are verified against, besides the server's extra CA:
    /// this host's trust store and the built-in web PKI roots (system+webpki), only the
    /// built-in ones (webpki), or only this host's (system) [default: system+webpki].
    #[arg(long, env = "MAILPLANE_AGENT_TRUST", value_parser = mailplane_smtp::TrustStore::NAMES)]
    pub trust: Option<String>,
    /// The most SMTP sessions run at once [default: 8].
    #[arg(long, env = "MAILPLANE_AGENT_MAX_CONCURRENT_JOBS", value_name = "N")]
    pub max_concurrent_jobs: Option<u32>,
    /// How many streams to hold at once, each to a different server when it can, so that
    /// losing one server leaves the agent connected (1 to 8) [default: 1].
    #[arg(long, env = "MAILPLANE_AGENT_CONNECTIONS", value_name = "N")]
    pub connections: Option<u32>,
    /// How often to send a heartbeat, e.g. 10s [default: 10s].
    #[arg(long, env = "MAILPLANE_AGENT_HEARTBEAT_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// How long running jobs may take to finish on shutdown [default: 30s].
    #[arg(long, env = "MAILPLANE_AGENT_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// The log format [default: text].
    #[arg(long, env = "MAILPLANE_AGENT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// The log filter, e.g. info, debug, or mailplane_agent=debug,info [default: info].
    #[arg(long, env = "MAILPLANE_AGENT_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// An HTTP proxy to reach the server through (HTTP CONNECT; TLS stays end to end):
    /// http://[USER:PASSWORD@]HOST:PORT. Without it, https_proxy/HTTPS_PROXY is used, except
    /// for the servers no_proxy/NO_PROXY lists. An empty value turns the proxy off. Prefer
    /// the environment variable when the URL holds a password.
    #[arg(
        long,
        env = "MAILPLANE_AGENT_PROXY",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub proxy: Option<ProxyText>,
    /// Serve Prometheus metrics, /healthz and /readyz (ready: a stream to a server is up) over
    /// plain HTTP on this address, e.g. 127.0.0.1:9752 [default: off].
    #[arg(long, env = "MAILPLANE_AGENT_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ConfigArgs {
    /// Reads the file named by `--config` (if any) and merges: flags and environment
    /// over the file over defaults.
    pub fn resolve(&self) -> Result<AgentConfig, ConfigError> {
        self.resolve_with(&ProxyEnv::from_process())
    }

    /// [`ConfigArgs::resolve`] with the given proxy variables instead of the process's.
    pub fn resolve_with(&self, env: &ProxyEnv) -> Result<AgentConfig, ConfigError> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
        };
        self.merge(file, env)
    }

    fn merge(&self, file: FileConfig, env: &ProxyEnv) -> Result<AgentConfig, ConfigError> {
        let servers: Vec<String> = if self.server.is_empty() {
            file.server.map(FileServers::into_vec).unwrap_or_default()
        } else {
            self.server.clone()
        };
        let servers: Vec<String> = servers
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(ConfigError::Missing(
                "server",
                "server",
                "MAILPLANE_AGENT_SERVER",
            ));
        }
        let server_ca = self
            .server_ca
            .clone()
            .or(file.server_ca)
            .ok_or(ConfigError::Missing(
                "server_ca",
                "server-ca",
                "MAILPLANE_AGENT_SERVER_CA",
            ))?;
        let state_dir = self
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(default_state_dir);
        let allowed = if self.allowed_destinations.is_empty() {
            file.allowed_destinations.unwrap_or_default()
        } else {
            self.allowed_destinations.clone()
        };
        let mut c = AgentConfig::new(String::new(), server_ca, state_dir, allowed);
        c.servers = servers;
        if let Some(trust) = self.trust.as_ref().or(file.trust.as_ref()) {
            c.trust = trust
                .parse()
                .map_err(|e: String| ConfigError::Invalid("trust", e))?;
        }
        c.server_name = self.server_name.clone().or(file.server_name);
        c.enrollment_token = self
            .enrollment_token
            .clone()
            .or(file.enrollment_token)
            .filter(|t| !t.expose().is_empty());
        if let Some(n) = self.max_concurrent_jobs.or(file.max_concurrent_jobs) {
            if n == 0 {
                return Err(ConfigError::Invalid(
                    "max_concurrent_jobs",
                    "must be at least 1".into(),
                ));
            }
            c.max_concurrent_jobs = n;
        }
        if let Some(n) = self.connections.or(file.connections) {
            c.connections = n;
        }
        c.heartbeat_interval = match (self.heartbeat_interval, &file.heartbeat_interval) {
            (Some(d), _) => d,
            (None, Some(d)) => d.resolve("heartbeat_interval")?,
            (None, None) => DEFAULT_HEARTBEAT_INTERVAL,
        };
        if c.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "heartbeat_interval",
                "must be more than 0".into(),
            ));
        }
        c.drain_timeout = match (self.drain_timeout, &file.drain_timeout) {
            (Some(d), _) => d,
            (None, Some(d)) => d.resolve("drain_timeout")?,
            (None, None) => DEFAULT_DRAIN_TIMEOUT,
        };
        c.log_format = self.log_format.or(file.log_format).unwrap_or_default();
        c.log_level = self
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        c.metrics_listen = self.metrics_listen.or(file.metrics_listen);
        c.proxy = proxy::resolve(self.proxy.as_ref().or(file.proxy.as_ref()), env)?;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
