//! `mailplane server …`: the CA on this host (`info`, no server needed), and the replicas
//! sharing the database (`replicas`, through the API).

use super::output::{self, Format};
use super::{CliError, Conn};
use clap::Subcommand;
use mailplane_proto::v1 as pb;
use pb::replica_service_client::ReplicaServiceClient;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

/// `mailplane server …`.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Print the CA certificate that clients and agents verify the server with, and its
    /// SHA-256 fingerprint (read from the data dir).
    Info {
        /// The server's data dir [default: ~/.local/share/mailplane].
        #[arg(long, env = "MAILPLANE_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the server replicas that share the database: address, version, start time,
    /// heartbeat and status (the one that answered is marked).
    Replicas,
}

/// Runs `mailplane server info`.
pub fn info(data_dir: Option<PathBuf>, out: &mut impl std::io::Write) -> Result<(), CliError> {
    let dir = data_dir.unwrap_or_else(crate::config::default_data_dir);
    let ca = dir.join("ca.pem");
    let pem = std::fs::read_to_string(&ca).map_err(|e| {
        CliError::Usage(format!(
            "cannot read {} ({e}); has `mailplane serve` run with this data dir?",
            ca.display()
        ))
    })?;
    let fingerprint = crate::tunnel::ca::pem_fingerprint(&pem).unwrap_or_default();
    writeln!(out, "data dir         {}", dir.display())?;
    writeln!(out, "CA certificate   {}", ca.display())?;
    writeln!(out, "CA SHA-256       {fingerprint}")?;
    let token = crate::auth::bootstrap_file(&dir);
    if token.exists() {
        writeln!(
            out,
            "first admin token {} (delete it once you have made your own tokens)",
            token.display()
        )?;
    }
    writeln!(
        out,
        "\nClients: mailplane --tls-ca {} …   Agents: --server-ca {}",
        ca.display(),
        ca.display()
    )?;
    Ok(())
}

fn replica_json(r: &pb::Replica) -> Value {
    let status = pb::ReplicaStatus::try_from(r.status).unwrap_or_default();
    json!({
        "name": r.name,
        "address": r.address,
        "agent_address": r.agent_address,
        "hostname": r.hostname,
        "version": r.version,
        "start_time": crate::render::time(r.start_time.as_ref()),
        "heartbeat_time": crate::render::time(r.heartbeat_time.as_ref()),
        "status": status.as_str_name().trim_start_matches("REPLICA_STATUS_"),
        "current": if r.current { "*" } else { "" },
    })
}

const COLUMNS: [(&str, &str); 7] = [
    ("", "current"),
    ("NAME", "name"),
    ("ADDRESS", "address"),
    ("HOST", "hostname"),
    ("VERSION", "version"),
    ("HEARTBEAT", "heartbeat_time"),
    ("STATUS", "status"),
];

/// Runs `mailplane server replicas`.
pub async fn replicas(channel: Conn, format: Format, out: &mut impl Write) -> Result<(), CliError> {
    let list = ReplicaServiceClient::new(channel)
        .list_replicas(pb::ListReplicasRequest {})
        .await?
        .into_inner();
    let items: Vec<Value> = list.replicas.iter().map(replica_json).collect();
    output::list(out, format, &items, &COLUMNS, "replicas")?;
    Ok(())
}
