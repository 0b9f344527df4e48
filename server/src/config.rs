//! Resolving `serve`'s settings: flags win over `MAILPLANE_*` environment variables (clap reads
//! both), which win over the TOML config file, which wins over the defaults.

use crate::outbox::OutboxSettings;
use crate::server::{ApiTls, DEFAULT_AGENT_PORT, DEFAULT_PORT, ServerConfig};
use crate::smtp_tests::SmtpSettings;
use mailplane_smtp as smtp;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file's contents. Unknown keys are refused, so a typo never passes silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `HOST:PORT` to listen on.
    pub listen: Option<SocketAddr>,
    /// The data directory.
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` or `sqlite://…`.
    pub database_url: Option<String>,
    /// The key-encryption key file.
    pub key_file: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// A tracing filter such as `info` or `mailplane_server=debug`.
    pub log_level: Option<String>,
    /// Seconds that in-flight calls may take to finish on shutdown.
    pub drain_timeout_secs: Option<u64>,
    /// How test e-mails run.
    #[serde(default)]
    pub smtp: SmtpFileConfig,
    /// How the outbox delivers messages.
    #[serde(default)]
    pub outbox: OutboxFileConfig,
    /// Where agents connect (TLS), or `"off"`.
    pub agent_listen: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP); unset: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the web console is served, or `"off"` [default: 127.0.0.1:7752].
    pub ui_listen: Option<String>,
    /// How long a console session lives without a request: `"30m"` (the default), `"900s"`.
    pub ui_idle_timeout: Option<String>,
    /// Names and addresses agents reach the agent listener by.
    pub agent_tls_names: Option<Vec<String>>,
    /// Append audit events as JSON lines to this file (`-`: standard output).
    pub audit_log: Option<PathBuf>,
    /// How often to seal new audit events into the hash chain: `"1s"` (the default),
    /// `"500ms"`, `"0"` (never, on this replica).
    pub audit_seal_interval: Option<String>,
    /// The API's TLS certificate chain (PEM); with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Serve the API without TLS.
    pub insecure_plaintext: Option<bool>,
}

/// The `[outbox]` table: how messages are delivered.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxFileConfig {
    /// The largest message accepted, in bytes (default 25 MiB).
    pub max_message_size_bytes: Option<usize>,
    /// Seconds before the first retry of a transient failure (default 60); it doubles.
    pub retry_base_secs: Option<u64>,
    /// The longest wait between retries, in seconds (default 3600).
    pub retry_max_delay_secs: Option<u64>,
    /// Seconds after which a message that still fails transiently fails (default 86400).
    pub max_age_secs: Option<u64>,
    /// SMTP sessions per account at once (default 4).
    pub sessions_per_account: Option<usize>,
    /// Days the content of a finished message is kept (default 7).
    pub body_retention_days: Option<u64>,
    /// Days the record of a finished message is kept (default 90).
    pub log_retention_days: Option<u64>,
    /// Seconds a message may stay SENDING before it is taken for the claim of a dead server
    /// and queued again (default 900). With SQLite a start queues every such message at once;
    /// with PostgreSQL, where other replicas may be delivering, only after this. Keep it
    /// above the longest delivery (the SMTP timeouts): a shorter one may send twice.
    pub claim_timeout_secs: Option<u64>,
    /// Seconds between looks for claims past the claim timeout and purges of finished
    /// messages (default 60).
    pub sweep_interval_secs: Option<u64>,
}

impl OutboxFileConfig {
    /// The settings, over the defaults.
    pub fn settings(&self) -> OutboxSettings {
        let mut s = OutboxSettings::default();
        if let Some(n) = self.max_message_size_bytes {
            s.max_message_size = n.max(1);
        }
        if let Some(n) = self.retry_base_secs {
            s.retry.base = Duration::from_secs(n.max(1));
        }
        if let Some(n) = self.retry_max_delay_secs {
            s.retry.max_delay = Duration::from_secs(n.max(1));
        }
        if let Some(n) = self.max_age_secs {
            s.retry.max_age = Duration::from_secs(n.max(1));
        }
        if let Some(n) = self.sessions_per_account {
            s.pool.max_sessions_per_key = n.max(1);
        }
        if let Some(days) = self.body_retention_days {
            s.body_retention = Duration::from_secs(days.saturating_mul(86_400));
        }
        if let Some(days) = self.log_retention_days {
            s.log_retention = Duration::from_secs(days.saturating_mul(86_400));
        }
        if let Some(n) = self.claim_timeout_secs {
            s.claim_timeout = Duration::from_secs(n.max(1));
        }
        if let Some(n) = self.sweep_interval_secs {
            s.sweep_interval = Duration::from_secs(n.max(1));
        }
        s
    }
}

/// The `[smtp]` table: how test e-mails run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFileConfig {
    /// Destinations allowed, as `CIDR [PORT|PORT-PORT]`; when any are given, only these are.
    pub allow: Option<Vec<String>>,
    /// Destinations denied, checked first, in addition to the default list (link-local and
    /// cloud metadata addresses, unspecified addresses) or to `deny_replace`.
    pub deny: Option<Vec<String>>,
    /// Destinations denied instead of the default list (`[]`: deny nothing but `deny`).
    pub deny_replace: Option<Vec<String>>,
    /// A PEM file with extra CA certificates for relays with an internal PKI.
    pub extra_ca_file: Option<PathBuf>,
    /// The roots relays' certificates are verified against besides the extra CA:
    /// `system+webpki` (the default), `webpki` or `system`.
    pub trust: Option<String>,
    /// The most tests that may run at once on one account.
    pub max_tests_per_account: Option<usize>,
    /// The most tests that may run at once on this server (all accounts).
    pub max_tests_running: Option<usize>,
    /// Days a finished test's record (and transcript) is kept.
    pub test_retention_days: Option<u64>,
    /// Seconds a whole test may take.
    pub test_deadline_secs: Option<u64>,
    /// Per-phase timeouts in seconds; unset ones keep their defaults (RFC 5321 §4.5.3.2,
    /// scaled down for an interactive test).
    #[serde(default)]
    pub timeouts: TimeoutsFile,
}

/// The `[smtp.timeouts]` table, in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Resolving the host.
    pub dns: Option<u64>,
    /// Opening the TCP connection.
    pub connect: Option<u64>,
    /// Waiting for the greeting.
    pub banner: Option<u64>,
    /// EHLO.
    pub ehlo: Option<u64>,
    /// The STARTTLS command.
    pub starttls: Option<u64>,
    /// The TLS handshake.
    pub tls_handshake: Option<u64>,
    /// AUTH.
    pub auth: Option<u64>,
    /// MAIL FROM.
    pub mail_from: Option<u64>,
    /// RCPT TO.
    pub rcpt_to: Option<u64>,
    /// The DATA command.
    pub data_init: Option<u64>,
    /// Each block of the message.
    pub data_block: Option<u64>,
    /// The reply to the final dot.
    pub data_end: Option<u64>,
    /// QUIT.
    pub quit: Option<u64>,
}

impl TimeoutsFile {
    /// Applies the timeouts that are set.
    fn apply(&self, t: &mut smtp::Timeouts) {
        let pairs = [
            (self.dns, &mut t.dns),
            (self.connect, &mut t.connect),
            (self.banner, &mut t.banner),
            (self.ehlo, &mut t.ehlo),
            (self.starttls, &mut t.starttls),
            (self.tls_handshake, &mut t.tls_handshake),
            (self.auth, &mut t.auth),
            (self.mail_from, &mut t.mail_from),
            (self.rcpt_to, &mut t.rcpt_to),
            (self.data_init, &mut t.data_init),
            (self.data_block, &mut t.data_block),
            (self.data_end, &mut t.data_end),
            (self.quit, &mut t.quit),
        ];
        for (secs, slot) in pairs {
            if let Some(secs) = secs {
                *slot = Duration::from_secs(secs.max(1));
            }
        }
    }
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}

/// The default data directory: `$XDG_DATA_HOME/mailplane`, i.e. `~/.local/share/mailplane`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("mailplane")
}

/// The default listen address, loopback only: exposing the API is a deliberate choice.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))
}

/// The settings given on the command line or in the environment (already merged by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--drain-timeout`.
    pub drain_timeout_secs: Option<u64>,
    /// `--smtp-allow`.
    pub smtp_allow: Vec<String>,
    /// `--smtp-deny`.
    pub smtp_deny: Vec<String>,
    /// `--smtp-deny-replace` (`Some(empty)`: given, with no rule).
    pub smtp_deny_replace: Option<Vec<String>>,
    /// `--smtp-extra-ca`.
    pub smtp_extra_ca: Option<PathBuf>,
    /// `--smtp-trust`.
    pub smtp_trust: Option<String>,
    /// `--agent-listen`.
    pub agent_listen: Option<String>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--ui off` (`Some(false)`) or `--ui on`.
    pub ui: Option<bool>,
    /// `--ui-listen`.
    pub ui_listen: Option<String>,
    /// `--ui-idle-timeout`.
    pub ui_idle_timeout: Option<Duration>,
    /// `--agent-tls-name`.
    pub agent_tls_names: Vec<String>,
    /// `--audit-log`.
    pub audit_log: Option<PathBuf>,
    /// `--audit-seal-interval`.
    pub audit_seal_interval: Option<Duration>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--insecure-plaintext` (or `--dev`).
    pub insecure_plaintext: bool,
}

/// Parses an interval: a whole number with `ms`, `s` or `m`, or of seconds without a unit
/// (`0`: off).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, ""), |at| t.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("interval {text:?}: use e.g. 1s, 500ms, 2m or 0"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!(
            "interval {text:?}: unknown unit {other:?}; use ms, s or m"
        )),
    }
}

/// Parses rules, skipping empty entries (so `--smtp-deny-replace ''` is an empty list).
fn rules(list: &[String]) -> Result<Vec<smtp::Rule>, String> {
    list.iter()
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.parse::<smtp::Rule>().map_err(|e| e.to_string()))
        .collect()
}

/// The test settings from flags, the file and the defaults.
fn smtp_settings(flags: &Overrides, file: &SmtpFileConfig) -> Result<SmtpSettings, String> {
    let mut settings = SmtpSettings::default();
    let allow = if flags.smtp_allow.is_empty() {
        file.allow.clone().unwrap_or_default()
    } else {
        flags.smtp_allow.clone()
    };
    // Each list: the flag (or its environment variable) when given, else the file's.
    let deny = if flags.smtp_deny.is_empty() {
        file.deny.clone().unwrap_or_default()
    } else {
        flags.smtp_deny.clone()
    };
    let replace = flags
        .smtp_deny_replace
        .clone()
        .or_else(|| file.deny_replace.clone())
        .map(|list| rules(&list))
        .transpose()?;
    settings.policy = smtp::DestinationPolicy::with_deny(replace, rules(&deny)?, rules(&allow)?);
    if let Some(path) = flags.smtp_extra_ca.as_ref().or(file.extra_ca_file.as_ref()) {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the extra CA file {}: {e}", path.display()))?;
        settings.extra_ca_pem = Some(pem);
    }
    if let Some(trust) = flags.smtp_trust.as_ref().or(file.trust.as_ref()) {
        settings.trust = trust.parse()?;
    }
    if let Some(n) = file.max_tests_per_account {
        settings.max_tests_per_account = n.max(1);
    }
    if let Some(n) = file.max_tests_running {
        settings.max_tests_running = n.max(1);
    }
    if let Some(days) = file.test_retention_days {
        settings.test_retention = Duration::from_secs(days.max(1).saturating_mul(86_400));
    }
    if let Some(secs) = file.test_deadline_secs {
        settings.timeouts.overall = Duration::from_secs(secs.max(1));
    }
    file.timeouts.apply(&mut settings.timeouts);
    Ok(settings)
}

/// TLS on the API: on by default, with the server's own CA unless files are given.
fn api_tls(flags: &Overrides, file: &FileConfig) -> Result<ApiTls, String> {
    if flags.insecure_plaintext || file.insecure_plaintext == Some(true) {
        return Ok(ApiTls::Off);
    }
    let cert = flags.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = flags.tls_key.clone().or_else(|| file.tls_key.clone());
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(ApiTls::Files { cert, key }),
        (None, None) => Ok(ApiTls::OwnCa),
        _ => Err(
            "give both --tls-cert and --tls-key, or neither (the server's own CA signs a \
                  certificate then)"
                .into(),
        ),
    }
}

/// The agent listener's address: `off` disables it.
fn agent_listen(flags: &Overrides, file: &FileConfig) -> Result<Option<SocketAddr>, String> {
    match flags
        .agent_listen
        .as_deref()
        .or(file.agent_listen.as_deref())
    {
        None => Ok(Some(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            DEFAULT_AGENT_PORT,
        )))),
        Some("off") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| format!("agent listen address {text:?}: {e}; use HOST:PORT or off")),
    }
}

/// The console's address: `--ui off` or `off` disables it.
fn ui_listen(flags: &Overrides, file: &FileConfig) -> Result<Option<SocketAddr>, String> {
    if flags.ui == Some(false) {
        return Ok(None);
    }
    match flags.ui_listen.as_deref().or(file.ui_listen.as_deref()) {
        None => Ok(Some(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            crate::server::DEFAULT_UI_PORT,
        )))),
        Some("off") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| format!("console listen address {text:?}: {e}; use HOST:PORT or off")),
    }
}

/// The names the agent listener's certificate covers by default: loopback, and this host.
fn default_agent_tls_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    names
}

/// Merges flags and environment over the file over the defaults.
pub fn resolve(flags: Overrides, file: &FileConfig) -> Result<ServerConfig, String> {
    let smtp = smtp_settings(&flags, &file.smtp)?;
    let agent_listen = agent_listen(&flags, file)?;
    let api_tls = api_tls(&flags, file)?;
    let audit_seal_interval = match (flags.audit_seal_interval, &file.audit_seal_interval) {
        (Some(every), _) => every,
        (None, Some(text)) => {
            parse_interval(text).map_err(|e| format!("audit_seal_interval: {e}"))?
        }
        (None, None) => Duration::from_secs(1),
    };
    let ui_idle_timeout = match (flags.ui_idle_timeout, &file.ui_idle_timeout) {
        (Some(t), _) => t,
        (None, Some(text)) => parse_interval(text).map_err(|e| format!("ui_idle_timeout: {e}"))?,
        (None, None) => crate::console::DEFAULT_IDLE_TIMEOUT,
    };
    if ui_idle_timeout.is_zero() {
        return Err("ui_idle_timeout: must be more than 0 (e.g. 30m)".into());
    }
    let ui_listen = ui_listen(&flags, file)?;
    let mut agent_tls_names = default_agent_tls_names();
    if !flags.agent_tls_names.is_empty() {
        agent_tls_names.extend(flags.agent_tls_names.iter().cloned());
    } else if let Some(names) = &file.agent_tls_names {
        agent_tls_names.extend(names.iter().cloned());
    }
    Ok(ServerConfig {
        listen: flags.listen.or(file.listen).unwrap_or_else(default_listen),
        data_dir: flags
            .data_dir
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(default_data_dir),
        database_url: flags.database_url.or_else(|| file.database_url.clone()),
        key_file: flags.key_file.or_else(|| file.key_file.clone()),
        drain_timeout: Duration::from_secs(
            flags
                .drain_timeout_secs
                .or(file.drain_timeout_secs)
                .unwrap_or(15),
        ),
        smtp,
        outbox: file.outbox.settings(),
        agent_listen,
        agent_tls_names,
        metrics_listen: flags.metrics_listen.or(file.metrics_listen),
        ui_listen,
        ui_idle_timeout,
        agent_heartbeat: Duration::from_secs(10),
        agent_cert_lifetime: crate::tunnel::ca::AGENT_CERT_LIFETIME,
        print_bootstrap_token: false,
        api_tls,
        audit_log: flags.audit_log.or_else(|| file.audit_log.clone()),
        audit_seal_interval,
    })
}

#[cfg(test)]
mod tests;
