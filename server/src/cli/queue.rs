//! `mailplane queue`: the outbox's queue per account, and pausing and resuming an account's
//! delivery.

use super::output::{self, Format};
use super::{CliError, Conn, resource_name};
use crate::render;
use clap::{Args, Subcommand};
use mailplane_proto::v1 as pb;
use pb::message_service_client::MessageServiceClient;
use serde_json::{Value, json};
use std::io::Write;

/// `mailplane queue` arguments: without a subcommand, the summary of every account.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Pause or resume an account's delivery.
    #[command(subcommand)]
    pub action: Option<QueueAction>,
}

/// `mailplane queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Stop an account's delivery: its messages keep queueing and wait until it is resumed.
    /// Attempts already running finish.
    Pause {
        /// The account: its code or accounts/CODE.
        account: String,
    },
    /// Resume a paused account's delivery; its due messages are sent at once.
    Resume {
        /// The account: its code or accounts/CODE.
        account: String,
    },
}

/// The table columns of `mailplane queue`.
const COLUMNS: [(&str, &str); 6] = [
    ("ACCOUNT", "account"),
    ("QUEUED", "queued"),
    ("SENDING", "sending"),
    ("DEFERRED", "deferred"),
    ("OLDEST", "oldest"),
    ("PAUSED", "paused"),
];

/// One account's queue as a JSON object.
fn summary_json(q: &pb::QueueSummary) -> Value {
    json!({
        "account": q.account,
        "queued": q.queued_count,
        "sending": q.sending_count,
        "deferred": q.deferred_count,
        "oldest": render::time(q.oldest_create_time.as_ref()),
        "paused": q.paused,
    })
}

/// Runs `mailplane queue` (no `action`) or `mailplane queue pause|resume ACCOUNT`.
pub async fn run(
    channel: Conn,
    format: Format,
    action: Option<QueueAction>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = MessageServiceClient::new(channel);
    let summary = match action {
        None => {
            let summaries = client
                .list_queue_summaries(pb::ListQueueSummariesRequest {})
                .await?
                .into_inner()
                .queue_summaries;
            let items: Vec<Value> = summaries.iter().map(summary_json).collect();
            return Ok(output::list(
                out,
                format,
                &items,
                &COLUMNS,
                "queue_summaries",
            )?);
        }
        Some(QueueAction::Pause { account }) => client
            .pause_account_delivery(pb::PauseAccountDeliveryRequest {
                account: resource_name("accounts", &account),
            })
            .await?
            .into_inner(),
        Some(QueueAction::Resume { account }) => client
            .resume_account_delivery(pb::ResumeAccountDeliveryRequest {
                account: resource_name("accounts", &account),
            })
            .await?
            .into_inner(),
    };
    Ok(output::one(out, format, &summary_json(&summary))?)
}
