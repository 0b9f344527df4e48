//! What `mailplane serve` runs with: its listeners, its settings, and why it may fail to
//! start.

use crate::crypto::KeyError;
use crate::outbox::OutboxSettings;
use crate::smtp_tests::SmtpSettings;
use crate::store::{self, DatabaseUrl};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// The port `mailplane serve` listens on by default, on 127.0.0.1.
pub const DEFAULT_PORT: u16 = 7750;
/// The port of the agents' TLS listener by default.
pub const DEFAULT_AGENT_PORT: u16 = 7751;
/// The port of the web console by default.
pub const DEFAULT_UI_PORT: u16 = 7752;

/// The listeners `serve` runs on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// The API.
    pub api: TcpListener,
    /// The agents' TLS listener, if agents are served.
    pub agent: Option<TcpListener>,
    /// The metrics listener (`/metrics`, `/healthz`, `/readyz`), if metrics are served.
    pub metrics: Option<TcpListener>,
    /// The web console's listener, if the console is served.
    pub ui: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self {
            api,
            agent: None,
            metrics: None,
            ui: None,
        }
    }
}

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    /// Plain text (development mode, or `--insecure-plaintext`).
    Off,
    /// TLS with a certificate signed by the server's own CA (`DATA_DIR/ca.pem`), made anew at
    /// each start for the names in `agent_tls_names`.
    OwnCa,
    /// TLS with this certificate and key (PEM files).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
}

/// Everything `serve` needs, resolved from flags, environment and config file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the SQLite file and the key file live.
    pub data_dir: PathBuf,
    /// The database; `None` means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The key file (key-encryption keys); `None` means `data_dir/mailplane.key`.
    pub key_file: Option<PathBuf>,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// How test e-mails run: destination policy, timeouts, limits.
    pub smtp: SmtpSettings,
    /// How the outbox delivers messages: size limit, retries, sessions per account.
    pub outbox: OutboxSettings,
    /// Where agents connect (TLS, client certificates); `None` serves no agents.
    pub agent_listen: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web console is served (over TLS when the API is), if anywhere.
    pub ui_listen: Option<SocketAddr>,
    /// How long a console session lives without a request.
    pub ui_idle_timeout: Duration,
    /// The names and addresses agents reach the agent listener by; its certificate covers
    /// them, together with the listener's own address.
    pub agent_tls_names: Vec<String>,
    /// How often the server and agents exchange heartbeats; three missed ones end a stream.
    pub agent_heartbeat: Duration,
    /// How long the certificates issued to agents are valid (agents renew after two thirds
    /// of it); 30 days.
    pub agent_cert_lifetime: Duration,
    /// Print the first admin token on the console, not only to its file (development mode).
    pub print_bootstrap_token: bool,
    /// Append every audit event as a JSON line to this file (`-`: standard output), for a SIEM.
    pub audit_log: Option<PathBuf>,
    /// How often this replica seals new audit events into the hash chain (1 s; zero: never,
    /// leaving it to other replicas).
    pub audit_seal_interval: Duration,
    /// TLS on the API.
    pub api_tls: ApiTls,
}

impl ServerConfig {
    /// The defaults, with data in `data_dir`: the API on 127.0.0.1:7750, agents on
    /// 127.0.0.1:7751, SQLite, the key file in the data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            data_dir,
            database_url: None,
            key_file: None,
            drain_timeout: Duration::from_secs(15),
            smtp: SmtpSettings::default(),
            outbox: OutboxSettings::default(),
            agent_listen: Some(SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                DEFAULT_AGENT_PORT,
            ))),
            agent_tls_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            metrics_listen: None,
            ui_listen: Some(SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                DEFAULT_UI_PORT,
            ))),
            ui_idle_timeout: crate::console::DEFAULT_IDLE_TIMEOUT,
            agent_heartbeat: Duration::from_secs(10),
            agent_cert_lifetime: crate::tunnel::ca::AGENT_CERT_LIFETIME,
            print_bootstrap_token: false,
            audit_log: None,
            audit_seal_interval: Duration::from_secs(1),
            api_tls: ApiTls::Off,
        }
    }

    /// The key file in use.
    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("mailplane.key"))
    }

    /// The database in use.
    pub fn database(&self) -> Result<DatabaseUrl, StartupError> {
        match &self.database_url {
            Some(url) => DatabaseUrl::parse(url).map_err(StartupError::Config),
            None => Ok(store::default_sqlite(&self.data_dir)),
        }
    }
}

/// Why the server could not start. Each exits the process non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// The database URL, with any password redacted.
        url: String,
        /// The cause.
        source: store::OpenError,
    },
    /// The key file is missing, malformed, wrong, or lacks the primary key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(String),
}
