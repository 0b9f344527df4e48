//! Resolving `serve`'s settings: flags win over `MAILPLANE_*` environment variables (clap reads
//! both), which win over the TOML config file, which wins over the defaults.

use crate::server::{DEFAULT_PORT, ServerConfig};
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
}

/// Merges flags and environment over the file over the defaults.
pub fn resolve(flags: Overrides, file: &FileConfig) -> ServerConfig {
    ServerConfig {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/lib/x\"").unwrap();
        let flags = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Overrides::default()
        };
        let c = resolve(flags, &file);
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(c.drain_timeout, Duration::from_secs(15));
        let c = resolve(Overrides::default(), &FileConfig::default());
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"));
    }
}
