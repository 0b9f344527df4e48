//! `mailplane audit list`: the audit log.

use super::output::{self, Format};
use super::{CliError, Conn};
use clap::Subcommand;
use mailplane_proto::v1 as pb;
use pb::audit_service_client::AuditServiceClient;
use serde_json::{Value, json};
use std::io::Write;

/// The audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    List {
        /// Only events about this resource, e.g. accounts/3.
        #[arg(long)]
        resource: Option<String>,
        /// Only events by this actor (a substring, e.g. tokens/2).
        #[arg(long)]
        actor: Option<String>,
        /// Events per page (at most 500).
        #[arg(long, default_value_t = 30)]
        page_size: i32,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
}

fn event_json(e: &pb::AuditEvent) -> Value {
    json!({
        "id": e.id,
        "time": crate::render::time(e.time.as_ref()),
        "actor": e.actor,
        "peer": e.peer,
        "rpc": e.rpc,
        "resource": e.resource,
        "outcome": e.outcome,
        "diff": serde_json::from_str::<Value>(&e.diff).unwrap_or(Value::Null),
    })
}

const COLUMNS: [(&str, &str); 6] = [
    ("TIME", "time"),
    ("ACTOR", "actor"),
    ("RPC", "rpc"),
    ("RESOURCE", "resource"),
    ("OUTCOME", "outcome"),
    ("CHANGES", "diff"),
];

/// Runs an audit command.
pub async fn run(
    channel: Conn,
    format: Format,
    command: AuditCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = AuditServiceClient::new(channel);
    match command {
        AuditCommand::List {
            resource,
            actor,
            page_size,
            page_token,
        } => {
            let page = client
                .list_events(pb::ListEventsRequest {
                    resource: resource.unwrap_or_default(),
                    actor: actor.unwrap_or_default(),
                    page_size,
                    page_token: page_token.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let items: Vec<Value> = page.events.iter().map(event_json).collect();
            output::list(out, format, &items, &COLUMNS, "events")?;
            if !page.next_page_token.is_empty() {
                eprintln!("more events: add --page-token {}", page.next_page_token);
            }
        }
    }
    Ok(())
}
