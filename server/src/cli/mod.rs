//! The command line: `mailplane serve` runs the server; `mailplane keys` works on its database
//! and key file directly; every other command is a gRPC client of a running server, chosen with
//! `--server` or `MAILPLANE_ADDR`.

pub mod accounts;
pub mod apply;
pub mod audit;
pub mod connectors;
pub mod credentials;
pub mod docs;
pub mod export;
pub mod keys;
pub mod messages;
pub mod output;
pub mod pin;
pub mod presets;
pub mod queue;
pub mod send;
pub mod server;
pub mod tests;
pub mod tokens;
pub mod watch;

use crate::config::{FileConfig, Overrides};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A connection to the server that sends the API token with every call.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sends `token` (`None`: no credentials).
    pub fn new(token: Option<&str>) -> Result<Self, CliError> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| {
                    CliError::Usage("the API token has characters a header cannot carry".into())
                }),
            None => Ok(Self(None)),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The server address the CLI uses by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7750";

/// mailplane: a control plane for the SMTP accounts your systems send e-mail through.
#[derive(Debug, Parser)]
#[command(name = "mailplane", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Options of the client commands.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options shared by the client commands.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server to talk to.
    #[arg(long, global = true, env = "MAILPLANE_ADDR", default_value = DEFAULT_ADDR)]
    pub server: String,
    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = output::Format::Table)]
    pub output: output::Format,
    /// The API token (from `mailplane tokens create`, or the first admin token the server
    /// wrote to DATA_DIR/admin.token). Prefer the environment variable to the flag.
    #[arg(long, global = true, env = "MAILPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA (PEM file) that signs the server's TLS certificate: the server's DATA_DIR/ca.pem
    /// [default: that file, when this host runs the server].
    #[arg(long, global = true, env = "MAILPLANE_CACERT")]
    pub tls_ca: Option<PathBuf>,
    /// Trust the server by the SHA-256 fingerprint of its CA instead of a CA file (as printed
    /// by `mailplane server info` and logged by the server).
    #[arg(
        long,
        global = true,
        env = "MAILPLANE_TLS_FINGERPRINT",
        conflicts_with = "tls_ca"
    )]
    pub tls_fingerprint: Option<String>,
    /// Talk to the server (or, with `serve`, serve the API) without TLS. Only for development
    /// or behind a TLS-terminating proxy.
    #[arg(long, global = true, env = "MAILPLANE_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mailplane server.
    Serve(ServeArgs),
    /// Manage SMTP accounts.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Manage the credentials that accounts authenticate with.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Manage network connectors and their agents.
    #[command(subcommand)]
    Connectors(connectors::ConnectorsCommand),
    /// Facts about the server: its CA on this host, and the replicas sharing its database.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Rotate the key-encryption keys without downtime (on the host with the key file).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Read the audit log (admin).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Inspect test e-mails (run one with `mailplane accounts test`).
    #[command(subcommand)]
    Tests(tests::TestsCommand),
    /// Send a message through an account: the server stores it, then delivers it.
    Send(messages::SendArgs),
    /// `mailplane messages …` and `mailplane queue …`, flattened into this level.
    #[command(flatten)]
    Messages(messages::MessagesCommand),
    /// Bring connectors, credentials and accounts to the state a YAML file describes: prints
    /// the plan (create, update with a field diff, delete with --prune, unchanged), then
    /// applies it. Secrets come from secret_env or secret_file, never from the file.
    Apply(apply::ApplyArgs),
    /// Write the connectors, credentials and accounts as the YAML file `apply` reads (-o yaml,
    /// the default, or -o json). Secrets are left out; their references are kept.
    Export,
    /// Print a shell completion script: source it, e.g. `source <(mailplane completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (mailplane.1 and one per command) into a folder.
    Man {
        /// The folder, created if needed.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `mailplane serve`: flags win over `MAILPLANE_*` variables, which win over `--config`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on HOST:PORT [default: 127.0.0.1:7750].
    #[arg(long, env = "MAILPLANE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Keep the SQLite database and the key file here [default: ~/.local/share/mailplane].
    #[arg(long, env = "MAILPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this database instead of SQLite in the data dir: postgres://user@host/db.
    #[arg(long, env = "MAILPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The key-encryption key file [default: DATA_DIR/mailplane.key]. Back it up.
    #[arg(long, env = "MAILPLANE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// A TOML config file with the same settings (listen, data_dir, database_url, …).
    #[arg(long, env = "MAILPLANE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: a fresh throw-away data dir, unless --data-dir is given.
    #[arg(long)]
    pub dev: bool,
    /// Log format.
    #[arg(long, env = "MAILPLANE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter (info, debug, …).
    #[arg(long, env = "MAILPLANE_LOG")]
    pub log_level: Option<String>,
    /// Seconds that in-flight calls may take to finish after SIGTERM [default: 15].
    #[arg(long, env = "MAILPLANE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// Allow test e-mail only to these destinations ("CIDR [PORT|PORT-PORT]", repeatable).
    #[arg(long, env = "MAILPLANE_SMTP_ALLOW", value_delimiter = ',')]
    pub smtp_allow: Vec<String>,
    /// Also deny SMTP to these destinations ("CIDR [PORT|PORT-PORT]", repeatable), on top of
    /// the default list of link-local, cloud-metadata and unspecified addresses. A server
    /// exposed to many operators should deny loopback and private ranges too: --smtp-deny
    /// 127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7
    #[arg(long, env = "MAILPLANE_SMTP_DENY", value_delimiter = ',')]
    pub smtp_deny: Vec<String>,
    /// Deny these destinations instead of the default list ("" for none); --smtp-deny still
    /// adds to them. Keep 169.254.0.0/16,fe80::/10 unless you know the metadata endpoints are
    /// unreachable.
    #[arg(long, env = "MAILPLANE_SMTP_DENY_REPLACE", value_delimiter = ',')]
    pub smtp_deny_replace: Option<Vec<String>>,
    /// Extra CA certificates (PEM) to trust for relays with an internal PKI.
    #[arg(long, env = "MAILPLANE_SMTP_EXTRA_CA")]
    pub smtp_extra_ca: Option<PathBuf>,
    /// The roots relays' certificates are verified against, besides --smtp-extra-ca: the
    /// operating system's trust store and the web PKI roots built in (system+webpki), only the
    /// built-in ones (webpki), or only the system's (system) [default: system+webpki].
    #[arg(long, env = "MAILPLANE_SMTP_TRUST", value_parser = mailplane_smtp::TrustStore::NAMES)]
    pub smtp_trust: Option<String>,
    /// Where network-connector agents connect (TLS with client certificates), HOST:PORT or
    /// "off" [default: 127.0.0.1:7751]. Agents dial out to it from their networks.
    #[arg(long, env = "MAILPLANE_AGENT_LISTEN")]
    pub agent_listen: Option<String>,
    /// Serve Prometheus metrics (/metrics), /healthz and /readyz on HOST:PORT, in plain HTTP
    /// [default: off]. Bind it where only your scraper reaches it.
    #[arg(long, env = "MAILPLANE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the web console (on --ui-listen) or not [default: on].
    #[arg(long, env = "MAILPLANE_UI", value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
    pub ui: Option<bool>,
    /// Serve the web console on HOST:PORT, or "off" [default: 127.0.0.1:7752]. It uses the
    /// API's TLS certificate when the API has TLS.
    #[arg(long, env = "MAILPLANE_UI_LISTEN")]
    pub ui_listen: Option<String>,
    /// How long a console session lives without a request: 30m, 900s [default: 30m].
    #[arg(long, env = "MAILPLANE_UI_IDLE_TIMEOUT", value_parser = crate::config::parse_interval)]
    pub ui_idle_timeout: Option<std::time::Duration>,
    /// A host name or address agents use to reach the agent listener; its certificate covers
    /// it (repeatable; loopback and this host's name are always covered).
    #[arg(
        long = "agent-tls-name",
        env = "MAILPLANE_AGENT_TLS_NAMES",
        value_delimiter = ','
    )]
    pub agent_tls_names: Vec<String>,
    /// Append every audit event as a JSON line to this file ("-" for standard output), for a
    /// SIEM or syslog forwarder.
    #[arg(long, env = "MAILPLANE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// How often to seal new audit events into the tamper-evident hash chain: 1s, 500ms, 2m,
    /// or 0 for never on this replica [default: 1s].
    #[arg(long, env = "MAILPLANE_AUDIT_SEAL_INTERVAL", value_parser = crate::config::parse_interval)]
    pub audit_seal_interval: Option<std::time::Duration>,
    /// The API's TLS certificate chain (PEM file) [default: one signed by the server's own CA,
    /// DATA_DIR/ca.pem].
    #[arg(long, env = "MAILPLANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM file).
    #[arg(long, env = "MAILPLANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The config file's contents, or an empty one.
    pub fn file_config(&self) -> Result<FileConfig, String> {
        self.config
            .as_deref()
            .map_or_else(|| Ok(FileConfig::default()), FileConfig::load)
    }

    /// The settings given as flags or environment variables.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            key_file: self.key_file.clone(),
            drain_timeout_secs: self.drain_timeout,
            smtp_allow: self.smtp_allow.clone(),
            smtp_deny: self.smtp_deny.clone(),
            smtp_deny_replace: self.smtp_deny_replace.clone(),
            smtp_extra_ca: self.smtp_extra_ca.clone(),
            smtp_trust: self.smtp_trust.clone(),
            agent_listen: self.agent_listen.clone(),
            metrics_listen: self.metrics_listen,
            ui: self.ui,
            ui_listen: self.ui_listen.clone(),
            ui_idle_timeout: self.ui_idle_timeout,
            agent_tls_names: self.agent_tls_names.clone(),
            audit_log: self.audit_log.clone(),
            audit_seal_interval: self.audit_seal_interval,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            insecure_plaintext: self.dev,
        }
    }
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error.
    #[error("{}", describe_status(.0))]
    Status(#[from] tonic::Status),
    /// The server could not be reached.
    #[error(
        "cannot reach the mailplane server at {addr}: {source}. Is `mailplane serve` running? Set --server or MAILPLANE_ADDR"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The command line or the input is unusable.
    #[error("{0}")]
    Usage(String),
    /// A test e-mail ran and did not succeed (its verdict was printed).
    #[error("{0}")]
    TestFailed(String),
    /// The audit log's hash chain is broken (the first broken link was printed).
    #[error("{0}")]
    AuditChainBroken(String),
    /// The file given to `mailplane apply` has problems (listed with their lines); nothing
    /// was changed.
    #[error("{0}")]
    File(String),
    /// A step of `mailplane apply` failed; the steps before it were applied.
    #[error(
        "{what} failed: {}. {applied} change(s) before it were applied and the rest were not; \
         run `mailplane apply --dry-run` to see what is left",
        describe_status(.status)
    )]
    Apply {
        /// The step, e.g. `update account "alerts" (accounts/3)`.
        what: String,
        /// How many steps ran before it.
        applied: usize,
        /// The server's answer.
        status: tonic::Status,
    },
    /// Writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A `mailplane keys` command failed.
    #[error(transparent)]
    Keys(#[from] crate::keys::rotate::RotateError),
}

fn describe_status(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Connects to the server named by the client options, sending the token with each call.
pub async fn connect_with(args: &ClientArgs) -> Result<Conn, CliError> {
    if let (Some(pin), false) = (&args.tls_fingerprint, args.insecure_plaintext) {
        let bare = args
            .server
            .strip_prefix("https://")
            .unwrap_or(&args.server)
            .to_owned();
        let host = bare
            .rsplit_once(':')
            .map_or(bare.as_str(), |(h, _)| h)
            .trim_matches(['[', ']']);
        let connector = pin::PinnedConnector::new(host, pin).map_err(CliError::Usage)?;
        let url = format!("http://{bare}");
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| CliError::Usage(format!("invalid server address {:?}: {e}", args.server)))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector(connector)
            .await
            .map_err(|source| CliError::Connect {
                addr: format!("https://{bare}"),
                source,
            })?;
        return Ok(InterceptedService::new(
            channel,
            Bearer::new(args.token.as_deref())?,
        ));
    }
    let tls = if args.insecure_plaintext {
        None
    } else {
        let ca = args
            .tls_ca
            .clone()
            .unwrap_or_else(|| crate::config::default_data_dir().join("ca.pem"));
        Some(std::fs::read(&ca).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the server's CA certificate {} ({e}); pass --tls-ca (or \
                 MAILPLANE_CACERT) with the server's DATA_DIR/ca.pem, or --insecure-plaintext \
                 for a server in development mode",
                ca.display()
            ))
        })?)
    };
    let channel = connect_channel(&args.server, tls.as_deref()).await?;
    Ok(InterceptedService::new(
        channel,
        Bearer::new(args.token.as_deref())?,
    ))
}

/// Connects to a plaintext server at `addr` (`host:port` or an http URL), sending `token`.
pub async fn connect(addr: &str, token: Option<&str>) -> Result<Conn, CliError> {
    let bearer = Bearer::new(token)?;
    let channel = connect_channel(addr, None).await?;
    Ok(InterceptedService::new(channel, bearer))
}

/// Connects to `addr`: over TLS verified with the CA `tls_ca` (PEM), or in plain text.
async fn connect_channel(addr: &str, tls_ca: Option<&[u8]>) -> Result<Channel, CliError> {
    let bare = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    if addr.starts_with("http://") && tls_ca.is_some() {
        return Err(CliError::Usage(format!(
            "{addr} is a plaintext address: use https://, or pass --insecure-plaintext"
        )));
    }
    let url = match tls_ca {
        Some(_) => format!("https://{bare}"),
        None => format!("http://{bare}"),
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| CliError::Usage(format!("invalid server address {addr:?}: {e}")))?;
    if let Some(ca) = tls_ca {
        let host = bare
            .rsplit_once(':')
            .map_or(bare, |(h, _)| h)
            .trim_matches(['[', ']']);
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name(host),
            )
            .map_err(|e| CliError::Usage(format!("TLS: {e}")))?;
    }
    endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|source| CliError::Connect { addr: url, source })
}

/// Accepts `7` or `accounts/7` for a resource of `collection`.
pub fn resource_name(collection: &str, given: &str) -> String {
    if given.contains('/') {
        given.to_owned()
    } else {
        format!("{collection}/{given}")
    }
}
