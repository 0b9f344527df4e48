//! `mailplane keys …`: key rotation without downtime. These commands run on the host that has
//! the key file and open the database directly (with the settings of `serve`: `--config`,
//! `--data-dir`, `--database-url`, `--key-file` and their `MAILPLANE_*` variables), beside the
//! servers that keep serving; no API token is needed. See [`crate::keys::rotate`].

use super::CliError;
use super::output::{self, Format};
use crate::config::{FileConfig, Overrides};
use crate::crypto::KeyId;
use crate::keys::rotate::{Maintenance, RotateOptions, Status};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// `mailplane keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the primary key, what each key seals, which keys may be removed, and whether a
    /// rotation is in progress.
    Status(KeysArgs),
    /// Generate a new key, make it the primary key and re-encrypt every secret, the agent CA
    /// and the token key under it in batches, while servers keep serving. An interrupted
    /// rotation is resumed (no new key is made).
    Rotate(RotateArgs),
    /// Generate a new key and add it to the key file without using it yet: copy the file to
    /// every replica's host, then run `keys rotate`, which switches to it.
    Add(KeysArgs),
    /// Remove from the key file keys that nothing is sealed under any more (never the primary
    /// key, nor one still in use).
    Prune(PruneArgs),
    /// Decrypt every stored secret with the key file, changing nothing (exits non-zero if one
    /// does not decrypt).
    Verify(KeysArgs),
}

/// Where the database and the key file are: the settings of `serve`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The server's TOML config file.
    #[arg(long, env = "MAILPLANE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The server's data dir (SQLite database and key file) [default: ~/.local/share/mailplane].
    #[arg(long, env = "MAILPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's database, if not SQLite in the data dir: postgres://user@host/db.
    #[arg(long, env = "MAILPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The server's key file [default: DATA_DIR/mailplane.key].
    #[arg(long, env = "MAILPLANE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// `mailplane keys rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Where the database and the key file are.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// Secrets re-encrypted per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Milliseconds to pause after each batch, to spare a busy database.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

/// `mailplane keys prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Where the database and the key file are.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The keys to remove [default: every key older than the primary that nothing uses].
    pub ids: Vec<KeyId>,
}

impl KeysArgs {
    /// Opens the database and names the key file, as `serve` would with these settings.
    pub async fn open(&self) -> Result<Maintenance, CliError> {
        let file = self
            .config
            .as_deref()
            .map_or_else(|| Ok(FileConfig::default()), FileConfig::load)
            .map_err(CliError::Usage)?;
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            key_file: self.key_file.clone(),
            ..Overrides::default()
        };
        let config = crate::config::resolve(overrides, &file).map_err(CliError::Usage)?;
        let url = config
            .database()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Maintenance::open(&url, config.key_path()).await?)
    }
}

/// Runs a `mailplane keys` command, printing to `out`.
pub async fn run(
    command: KeysCommand,
    format: Format,
    out: &mut (impl Write + Send),
) -> Result<(), CliError> {
    match command {
        KeysCommand::Status(args) => {
            let status = args.open().await?.status().await?;
            print_status(out, format, &status)?;
        }
        KeysCommand::Rotate(args) => {
            let mut keys = args.keys.open().await?;
            let options = RotateOptions {
                batch_size: usize::try_from(args.batch_size).unwrap_or(500),
                pause: Duration::from_millis(args.pause_ms),
            };
            keys.rotate(&options, out).await?;
        }
        KeysCommand::Add(args) => {
            args.open().await?.add(out).await?;
        }
        KeysCommand::Prune(args) => {
            args.keys.open().await?.prune(&args.ids, out).await?;
        }
        KeysCommand::Verify(args) => {
            let report = args.open().await?.verify().await?;
            let by_key: serde_json::Map<String, Value> = report
                .ok
                .iter()
                .map(|(id, n)| (id.to_string(), json!(n)))
                .collect();
            let value = json!({
                "decrypted": report.decrypted(),
                "failed": report.failed,
                "by_key": by_key,
                "failures": report.failures,
            });
            output::one(out, format, &value)?;
            if report.failed > 0 {
                return Err(CliError::Usage(format!(
                    "{} stored secrets do not decrypt with the key file",
                    report.failed
                )));
            }
        }
    }
    Ok(())
}

/// The JSON form of `status`.
pub fn status_json(status: &Status) -> Value {
    let keys: Vec<Value> = status
        .keys
        .iter()
        .map(|k| {
            json!({
                "id": k.id,
                "primary": k.primary,
                "in_key_file": k.in_file,
                "credentials": k.usage.credentials,
                "refresh_tokens": k.usage.refresh_tokens,
                "access_tokens": k.usage.access_tokens,
                "sealed_values": k.usage.values,
                "connector_jobs": k.usage.jobs,
                "total": k.usage.total(),
                "removable": k.prunable,
            })
        })
        .collect();
    json!({
        "key_file": status.key_file.display().to_string(),
        "primary_key": status.primary,
        "rotation_in_progress": status.pending > 0,
        "pending": status.pending,
        "total": status.total,
        "keys": keys,
    })
}

fn print_status(
    out: &mut (impl Write + Send),
    format: Format,
    status: &Status,
) -> Result<(), CliError> {
    if format != Format::Table {
        output::one(out, format, &status_json(status))?;
        return Ok(());
    }
    writeln!(out, "key file     {}", status.key_file.display())?;
    writeln!(out, "primary key  {}", status.primary)?;
    if status.pending > 0 {
        writeln!(
            out,
            "rotation     IN PROGRESS: {} of {} ciphertexts are under older keys; run `mailplane \
             keys rotate` to finish it",
            status.pending, status.total
        )?;
    } else {
        writeln!(
            out,
            "rotation     none in progress: all {} ciphertexts are under key {}",
            status.total, status.primary
        )?;
    }
    writeln!(out)?;
    let rows: Vec<Value> = status
        .keys
        .iter()
        .map(|k| {
            let state = if k.primary {
                "primary"
            } else if !k.in_file && k.usage.total() > 0 {
                "MISSING from the key file: these do not decrypt"
            } else if !k.in_file {
                "not in the key file"
            } else if k.prunable {
                "unused: may be removed (keys prune)"
            } else if k.id > status.primary {
                "added, not yet used (keys rotate)"
            } else {
                "in use by a rotation in progress"
            };
            json!({
                "id": k.id,
                "credentials": k.usage.credentials,
                "tokens": k.usage.refresh_tokens + k.usage.access_tokens,
                "values": k.usage.values.join(" "),
                "jobs": k.usage.jobs,
                "state": state,
            })
        })
        .collect();
    output::list(
        out,
        Format::Table,
        &rows,
        &[
            ("KEY", "id"),
            ("CREDENTIALS", "credentials"),
            ("OAUTH2 TOKENS", "tokens"),
            ("SEALED VALUES", "values"),
            ("JOBS", "jobs"),
            ("STATE", "state"),
        ],
        "keys",
    )?;
    Ok(())
}
