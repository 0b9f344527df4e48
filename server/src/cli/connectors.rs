//! `mailplane connectors …`: network connectors, enrollment tokens, agent revocation.

use super::Conn;
use super::output::{self, Format};
use super::{CliError, resource_name};
use clap::{Args, Subcommand};
use mailplane_proto::v1 as pb;
use pb::network_connector_service_client::NetworkConnectorServiceClient;
use serde_json::{Value, json};
use std::io::Write;

/// The connector commands.
#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Create a connector (a logical name that agent replicas serve).
    Create(ConnectorFields),
    /// List connectors.
    List {
        /// Connectors per page (at most 500).
        #[arg(long, default_value_t = 30)]
        page_size: i32,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show a connector and the status of each of its agents.
    Get {
        /// The connector: its code or connectors/CODE.
        connector: String,
        /// --watch and its interval.
        #[command(flatten)]
        watch: super::watch::WatchArgs,
    },
    /// Change a connector's name or description.
    Update {
        /// The connector: its code or connectors/CODE.
        connector: String,
        /// Refuse if the connector changed since this etag was read.
        #[arg(long)]
        etag: Option<String>,
        /// The fields to change.
        #[command(flatten)]
        fields: ConnectorFields,
    },
    /// Delete a connector that no account uses.
    Delete {
        /// The connector: its code or connectors/CODE.
        connector: String,
    },
    /// Create a one-time enrollment token for a new agent of the connector.
    Token {
        /// The connector: its code or connectors/CODE.
        connector: String,
        /// How long the token stays valid, in minutes (default 30, at most 10080).
        #[arg(long)]
        ttl_minutes: Option<u64>,
        /// Write the CA certificate the agent must trust (its `server_ca`) to this file.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Revoke an agent: its certificate is refused and its stream closed.
    Revoke {
        /// The agent: connectors/CODE/agents/ID.
        agent: String,
    },
}

/// A connector's writable fields.
#[derive(Debug, Args)]
pub struct ConnectorFields {
    /// A unique name.
    #[arg(long = "name")]
    pub display_name: Option<String>,
    /// What the connector reaches.
    #[arg(long)]
    pub description: Option<String>,
}

use crate::render::short;

fn agent_json(a: &pb::AgentReplica) -> Value {
    json!({
        "name": a.name,
        "agent_id": a.agent_id,
        "hostname": a.hostname,
        "version": a.version,
        "status": pb::AgentStatus::try_from(a.status).map_or_else(|_| String::new(), |s| short(s.as_str_name(), "AGENT_STATUS_")),
        "connected_since": crate::render::time(a.connected_since.as_ref()),
        "last_heartbeat_time": crate::render::time(a.last_heartbeat_time.as_ref()),
        "jobs_in_flight": a.jobs_in_flight,
        "enroll_time": crate::render::time(a.enroll_time.as_ref()),
        "certificate_expire_time": crate::render::time(a.certificate_expire_time.as_ref()),
    })
}

fn connector_json(c: &pb::Connector) -> Value {
    let online = c
        .agents
        .iter()
        .filter(|a| a.status == i32::from(pb::AgentStatus::Online))
        .count();
    json!({
        "name": c.name,
        "id": c.id,
        "display_name": c.display_name,
        "description": c.description,
        "agents_online": online,
        "agents": c.agents.iter().map(agent_json).collect::<Vec<_>>(),
        "etag": c.etag,
        "create_time": crate::render::time(c.create_time.as_ref()),
        "update_time": crate::render::time(c.update_time.as_ref()),
    })
}

const COLUMNS: [(&str, &str); 4] = [
    ("CODE", "id"),
    ("NAME", "display_name"),
    ("AGENTS ONLINE", "agents_online"),
    ("DESCRIPTION", "description"),
];

const AGENT_COLUMNS: [(&str, &str); 6] = [
    ("AGENT", "name"),
    ("STATUS", "status"),
    ("HOSTNAME", "hostname"),
    ("VERSION", "version"),
    ("JOBS", "jobs_in_flight"),
    ("LAST HEARTBEAT", "last_heartbeat_time"),
];

/// Prints a connector: its fields, then a table of its agents.
fn print_connector(out: &mut impl Write, format: Format, c: &pb::Connector) -> std::io::Result<()> {
    let value = connector_json(c);
    if format != Format::Table {
        return output::one(out, format, &value);
    }
    let mut head = value.clone();
    if let Value::Object(map) = &mut head {
        map.remove("agents");
    }
    output::one(out, format, &head)?;
    writeln!(out)?;
    let agents: Vec<Value> = c.agents.iter().map(agent_json).collect();
    output::list(out, format, &agents, &AGENT_COLUMNS, "agents")
}

/// Runs a connector command.
pub async fn run(
    channel: Conn,
    format: Format,
    command: ConnectorsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = NetworkConnectorServiceClient::new(channel);
    match command {
        ConnectorsCommand::Create(fields) => {
            let created = client
                .create_connector(pb::CreateConnectorRequest {
                    connector: Some(pb::Connector {
                        display_name: fields.display_name.unwrap_or_default(),
                        description: fields.description.unwrap_or_default(),
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            print_connector(out, format, &created)?;
        }
        ConnectorsCommand::List {
            page_size,
            page_token,
        } => {
            let page = client
                .list_connectors(pb::ListConnectorsRequest {
                    page_size,
                    page_token: page_token.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let items: Vec<Value> = page.connectors.iter().map(connector_json).collect();
            output::list(out, format, &items, &COLUMNS, "connectors")?;
            if !page.next_page_token.is_empty() {
                eprintln!("more connectors: add --page-token {}", page.next_page_token);
            }
        }
        ConnectorsCommand::Get { connector, watch } => {
            let name = resource_name("connectors", &connector);
            super::watch::run(
                watch,
                format,
                out,
                super::watch::interrupted(),
                async |buf: &mut Vec<u8>| {
                    let got = client
                        .get_connector(pb::GetConnectorRequest { name: name.clone() })
                        .await?
                        .into_inner();
                    Ok(print_connector(buf, format, &got)?)
                },
            )
            .await?;
        }
        ConnectorsCommand::Update {
            connector,
            etag,
            fields,
        } => {
            let mut mask = Vec::new();
            if fields.display_name.is_some() {
                mask.push("display_name".to_owned());
            }
            if fields.description.is_some() {
                mask.push("description".to_owned());
            }
            if mask.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name or --description".into(),
                ));
            }
            let updated = client
                .update_connector(pb::UpdateConnectorRequest {
                    connector: Some(pb::Connector {
                        name: resource_name("connectors", &connector),
                        display_name: fields.display_name.unwrap_or_default(),
                        description: fields.description.unwrap_or_default(),
                        etag: etag.unwrap_or_default(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: mask }),
                })
                .await?
                .into_inner();
            print_connector(out, format, &updated)?;
        }
        ConnectorsCommand::Delete { connector } => {
            let name = resource_name("connectors", &connector);
            client
                .delete_connector(pb::DeleteConnectorRequest {
                    name: name.clone(),
                    etag: String::new(),
                })
                .await?;
            eprintln!("deleted {name}");
        }
        ConnectorsCommand::Token {
            connector,
            ttl_minutes,
            ca_file,
        } => {
            let token = client
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    parent: resource_name("connectors", &connector),
                    ttl: ttl_minutes.map(|m| prost_types::Duration {
                        seconds: i64::try_from(m.saturating_mul(60)).unwrap_or(i64::MAX),
                        nanos: 0,
                    }),
                })
                .await?
                .into_inner();
            if let Some(path) = &ca_file {
                std::fs::write(path, &token.server_ca_pem)?;
            }
            let value = json!({
                "token": token.token,
                "connector": token.connector,
                "expire_time": crate::render::time(token.expire_time.as_ref()),
                "server_ca_pem": token.server_ca_pem,
            });
            if format == Format::Table {
                writeln!(out, "token        {}", token.token)?;
                writeln!(out, "connector    {}", token.connector)?;
                writeln!(
                    out,
                    "expires      {}",
                    crate::render::time(token.expire_time.as_ref())
                )?;
                writeln!(
                    out,
                    "\nThe token works once and is not shown again. On the agent's host:"
                )?;
                let ca = ca_file
                    .as_ref()
                    .map_or_else(|| "ca.pem".to_owned(), |p| p.display().to_string());
                writeln!(
                    out,
                    "  mailplane-agent enroll --server https://SERVER:7751 --server-ca {ca} --enrollment-token {}",
                    token.token
                )?;
                if ca_file.is_none() {
                    writeln!(
                        out,
                        "\nThe server's CA certificate (save it as ca.pem there, or use --ca-file):\n{}",
                        token.server_ca_pem.trim_end()
                    )?;
                }
            } else {
                output::one(out, format, &value)?;
            }
        }
        ConnectorsCommand::Revoke { agent } => {
            let revoked = client
                .revoke_agent(pb::RevokeAgentRequest { name: agent })
                .await?
                .into_inner();
            output::one(out, format, &agent_json(&revoked))?;
        }
    }
    Ok(())
}
