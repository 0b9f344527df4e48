//! `mailplane messages …`, and the dispatch of the outbox's commands: `mailplane send`
//! (in `send.rs`), `mailplane messages …` and `mailplane queue …` (in `queue.rs`).

use super::output::{self, Format};
use super::{CliError, Conn, resource_name};
use crate::render;
use clap::{Args, Subcommand, ValueEnum};
use mailplane_proto::v1 as pb;
use pb::message_service_client::MessageServiceClient;
use serde_json::{Value, json};
use std::io::{Read, Write};

pub use super::send::SendArgs;

/// The outbox's commands. `messages` and `queue` are flattened into the top-level commands;
/// `Send` is what the binary dispatches `mailplane send` to.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List, inspect, retry and cancel messages in the outbox.
    #[command(subcommand)]
    Messages(MessageAction),
    /// The queue of every account (queued, sending, deferred, oldest, paused); pause or
    /// resume an account's delivery.
    #[command(name = "queue")]
    QueueCommand(super::queue::QueueArgs),
    /// `mailplane send`.
    #[command(skip)]
    Send(SendArgs),
}

/// Message states, for `--state`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    /// Stored and waiting for delivery.
    Queued,
    /// A delivery attempt is running.
    Sending,
    /// Waiting for a retry.
    Deferred,
    /// Accepted by the relay.
    Sent,
    /// Will not be sent: refused, or the retries ran out.
    Failed,
    /// Cancelled before it was sent.
    Cancelled,
}

impl StateArg {
    fn to_proto(self) -> pb::MessageState {
        match self {
            Self::Queued => pb::MessageState::Queued,
            Self::Sending => pb::MessageState::Sending,
            Self::Deferred => pb::MessageState::Deferred,
            Self::Sent => pb::MessageState::Sent,
            Self::Failed => pb::MessageState::Failed,
            Self::Cancelled => pb::MessageState::Cancelled,
        }
    }
}

/// `mailplane messages list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this account's messages: its code or accounts/CODE.
    #[arg(long)]
    pub account: Option<String>,
    /// Only messages in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Only messages with a recipient containing this text (any case).
    #[arg(long)]
    pub recipient: Option<String>,
    /// Only messages created at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<prost_types::Timestamp>,
    /// Only messages created before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<prost_types::Timestamp>,
    /// Messages per page (at most 500).
    #[arg(long, default_value_t = 30)]
    pub page_size: i32,
    /// Continue from a previous page.
    #[arg(long)]
    pub page_token: Option<String>,
    /// Fetch every page.
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
    /// --watch and its interval.
    #[command(flatten)]
    pub watch: super::watch::WatchArgs,
}

/// `mailplane messages …`.
#[derive(Debug, Subcommand)]
pub enum MessageAction {
    /// List messages, newest first, 30 per page.
    List(ListArgs),
    /// Show a message with its recipients (state and last reply) and its delivery attempts.
    Get {
        /// The message: its code or messages/CODE.
        message: String,
    },
    /// Make a deferred or failed message due now.
    Retry {
        /// The message: its code or messages/CODE.
        message: String,
    },
    /// Cancel a queued or deferred message.
    Cancel {
        /// The message: its code or messages/CODE.
        message: String,
    },
}

/// Parses an RFC 3339 time for `--since` and `--until`.
fn parse_time(given: &str) -> Result<prost_types::Timestamp, String> {
    given
        .parse()
        .map_err(|_| format!("{given:?} is not an RFC 3339 time, e.g. 2026-12-01T08:00:00Z"))
}

/// An enum value's short name (`QUEUED` for `MESSAGE_STATE_QUEUED`), or its number.
fn short<E: TryFrom<i32>>(value: i32, name: impl Fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |v| render::short(name(&v), prefix))
}

/// A message without its recipients and attempts, as listed.
fn summary_json(m: &pb::Message) -> Value {
    json!({
        "name": m.name,
        "account": m.account,
        "state": short(m.state, pb::MessageState::as_str_name, "MESSAGE_STATE_"),
        "to": m.to.join(", "),
        "cc": m.cc.join(", "),
        "bcc": m.bcc.join(", "),
        "subject": m.subject,
        "attachments": m.attachments.iter().map(|a| a.filename.as_str()).collect::<Vec<_>>().join(", "),
        "message_id": m.message_id,
        "request_id": m.request_id,
        "size_bytes": m.size_bytes,
        "last_error": m.last_error,
        "create_time": render::time(m.create_time.as_ref()),
        "update_time": render::time(m.update_time.as_ref()),
        "next_attempt_time": render::time(m.next_attempt_time.as_ref()),
    })
}

fn recipient_json(r: &pb::MessageRecipient) -> Value {
    json!({
        "address": r.address,
        "kind": short(r.kind, pb::RecipientKind::as_str_name, "RECIPIENT_KIND_"),
        "state": short(r.state, pb::RecipientState::as_str_name, "RECIPIENT_STATE_"),
        "last_reply": r.last_reply,
    })
}

fn attempt_json(a: &pb::DeliveryAttempt) -> Value {
    let millis = a
        .duration
        .as_ref()
        .map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000);
    json!({
        "time": render::time(a.attempt_time.as_ref()),
        "agent": a.agent,
        "reply_code": a.reply_code,
        "enhanced_status_code": a.enhanced_status_code,
        "relay_queue_id": a.relay_queue_id,
        "duration_ms": millis,
        "failure_class": short(a.failure_class, pb::FailureClass::as_str_name, "FAILURE_CLASS_"),
        "message": a.message,
        "hint": a.hint,
    })
}

/// A message with its recipients and attempts, for the structured formats.
fn message_json(m: &pb::Message) -> Value {
    let mut v = summary_json(m);
    v["recipients"] = m.recipients.iter().map(recipient_json).collect();
    v["attempts"] = m.attempts.iter().map(attempt_json).collect();
    v
}

/// The table columns of `messages list`.
const COLUMNS: [(&str, &str); 6] = [
    ("NAME", "name"),
    ("STATE", "state"),
    ("ACCOUNT", "account"),
    ("TO", "to"),
    ("SUBJECT", "subject"),
    ("CREATED", "create_time"),
];

/// The recipients table of `messages get`.
const RECIPIENT_COLUMNS: [(&str, &str); 4] = [
    ("RECIPIENT", "address"),
    ("KIND", "kind"),
    ("STATE", "state"),
    ("LAST REPLY", "last_reply"),
];

/// The attempts table of `messages get`.
const ATTEMPT_COLUMNS: [(&str, &str); 7] = [
    ("ATTEMPT", "time"),
    ("AGENT", "agent"),
    ("CODE", "reply_code"),
    ("STATUS", "enhanced_status_code"),
    ("MS", "duration_ms"),
    ("CLASS", "failure_class"),
    ("MESSAGE", "message"),
];

/// Prints one message: its fields, then (in a table, with `details`) its recipients and
/// attempts as tables of their own.
fn print_message(
    out: &mut impl Write,
    format: Format,
    m: &pb::Message,
    details: bool,
) -> Result<(), CliError> {
    if format != Format::Table {
        return Ok(output::one(out, format, &message_json(m))?);
    }
    output::one(out, format, &summary_json(m))?;
    if details {
        let recipients: Vec<Value> = m.recipients.iter().map(recipient_json).collect();
        writeln!(out)?;
        output::list(out, format, &recipients, &RECIPIENT_COLUMNS, "recipients")?;
        writeln!(out)?;
        if m.attempts.is_empty() {
            writeln!(out, "no delivery attempts yet")?;
        } else {
            let attempts: Vec<Value> = m.attempts.iter().map(attempt_json).collect();
            output::list(out, format, &attempts, &ATTEMPT_COLUMNS, "attempts")?;
        }
    }
    Ok(())
}

/// Runs an outbox command, reading files named "-" from standard input.
pub async fn run(
    channel: Conn,
    format: Format,
    command: MessagesCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    run_with_input(channel, format, command, &mut std::io::stdin(), out).await
}

/// Runs an outbox command, reading files named "-" from `stdin`.
pub async fn run_with_input(
    channel: Conn,
    format: Format,
    command: MessagesCommand,
    stdin: &mut impl Read,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let action = match command {
        MessagesCommand::Send(args) => {
            let request = super::send::request(args, stdin)?;
            let sent = MessageServiceClient::new(channel)
                .send_message(request)
                .await?
                .into_inner();
            return print_message(out, format, &sent, false);
        }
        MessagesCommand::QueueCommand(args) => {
            return super::queue::run(channel, format, args.action, out).await;
        }
        MessagesCommand::Messages(action) => action,
    };
    let mut client = MessageServiceClient::new(channel);
    let name = |m: &str| resource_name("messages", m);
    let (message, details) = match action {
        MessageAction::List(args) => return list(&mut client, format, args, out).await,
        MessageAction::Get { message } => {
            let request = pb::GetMessageRequest {
                name: name(&message),
            };
            (client.get_message(request).await?, true)
        }
        MessageAction::Retry { message } => {
            let request = pb::RetryMessageRequest {
                name: name(&message),
            };
            (client.retry_message(request).await?, false)
        }
        MessageAction::Cancel { message } => {
            let request = pb::CancelMessageRequest {
                name: name(&message),
            };
            (client.cancel_message(request).await?, false)
        }
    };
    print_message(out, format, &message.into_inner(), details)
}

/// `mailplane messages list`: one page, or every page with `--all`.
async fn list(
    client: &mut MessageServiceClient<Conn>,
    format: Format,
    args: ListArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let filter = pb::MessageFilter {
        account: args
            .account
            .map(|a| resource_name("accounts", &a))
            .unwrap_or_default(),
        state: args
            .state
            .map_or(pb::MessageState::Unspecified, StateArg::to_proto)
            .into(),
        recipient: args.recipient.unwrap_or_default(),
        create_time_start: args.since,
        create_time_end: args.until,
    };
    let first = args.page_token.unwrap_or_default();
    let mut left = String::new();
    super::watch::run(
        args.watch,
        format,
        out,
        super::watch::interrupted(),
        async |buf: &mut Vec<u8>| {
            let mut token = first.clone();
            let mut items = Vec::new();
            loop {
                let page = client
                    .list_messages(pb::ListMessagesRequest {
                        page_size: args.page_size,
                        page_token: token.clone(),
                        filter: Some(filter.clone()),
                    })
                    .await?
                    .into_inner();
                items.extend(page.messages.iter().map(summary_json));
                token = page.next_page_token;
                if !args.all || token.is_empty() {
                    break;
                }
            }
            output::list(buf, format, &items, &COLUMNS, "messages")?;
            left = token;
            Ok(())
        },
    )
    .await?;
    if !left.is_empty() {
        eprintln!("more messages: add --page-token {left} (or --all)");
    }
    Ok(())
}
