//! `mailplane audit list` and `mailplane audit verify`: the audit log and its hash chain.

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
    /// Check the tamper-evident hash chain of the audit log: exits non-zero and prints the
    /// first broken link if an event was changed or deleted. Prints the head hash: keep it
    /// elsewhere to detect a truncated tail later.
    Verify,
}

/// What `audit verify` prints.
fn verify_json(r: &pb::VerifyAuditLogResponse) -> Value {
    let broken = r.first_broken_link.as_ref().map(|b| {
        let problem = match b.problem() {
            pb::broken_link::Problem::HashMismatch => "hash mismatch",
            pb::broken_link::Problem::PrevHashMismatch => "prev_hash mismatch",
            pb::broken_link::Problem::Gap => "gap",
            pb::broken_link::Problem::Unspecified => "unknown",
        };
        json!({"seq": b.seq, "event_id": b.event_id, "problem": problem, "detail": b.detail})
    });
    json!({
        "status": if broken.is_some() { "BROKEN" } else { "OK" },
        "events_checked": r.events_checked,
        "sealed_through_seq": r.sealed_through_seq,
        "head_hash": r.head_hash,
        "unsealed_count": r.unsealed_count,
        "first_broken_link": broken,
    })
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
        AuditCommand::Verify => {
            let report = client
                .verify_audit_log(pb::VerifyAuditLogRequest {})
                .await?
                .into_inner();
            let shown = verify_json(&report);
            output::one(out, format, &shown)?;
            if let Some(b) = &report.first_broken_link {
                return Err(CliError::AuditChainBroken(format!(
                    "the audit log's hash chain is broken at seq {} (event {}): {} — {}",
                    b.seq,
                    b.event_id,
                    shown["first_broken_link"]["problem"].as_str().unwrap_or(""),
                    b.detail
                )));
            }
        }
    }
    Ok(())
}
