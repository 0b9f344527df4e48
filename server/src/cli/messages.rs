//! `mailplane send`, `mailplane messages …` and `mailplane queue`: the outbox.

use super::output::{self, Format};
use super::{CliError, Conn, resource_name};
use clap::{Args, Subcommand, ValueEnum};
use mailplane_proto::v1 as pb;
use pb::message_service_client::MessageServiceClient;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

/// `mailplane send`: a message through an account.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// A To recipient (repeat for more).
    #[arg(long, required = true)]
    pub to: Vec<String>,
    /// A Cc recipient (repeat for more).
    #[arg(long)]
    pub cc: Vec<String>,
    /// A Bcc recipient (repeat for more).
    #[arg(long)]
    pub bcc: Vec<String>,
    /// The subject.
    #[arg(long)]
    pub subject: String,
    /// The account: its code or accounts/CODE [default: the default account].
    #[arg(long)]
    pub account: Option<String>,
    /// The body, as text.
    #[arg(
        long,
        conflicts_with = "body_file",
        required_unless_present = "body_file"
    )]
    pub body: Option<String>,
    /// A file with the body.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Send the body as HTML rather than text.
    #[arg(long)]
    pub html: bool,
    /// A file to attach (repeat for more).
    #[arg(long)]
    pub attach: Vec<PathBuf>,
    /// An idempotency key: the same key within 24 h sends nothing new.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// Message states, for filters.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    /// Waiting for delivery.
    Queued,
    /// Being delivered.
    Sending,
    /// Waiting for a retry.
    Deferred,
    /// Accepted by the relay.
    Sent,
    /// Will not be sent.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// The message commands.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Send a message (same as `mailplane send`).
    Send(SendArgs),
    /// List messages, newest first.
    List {
        /// Only this account's (code or accounts/CODE).
        #[arg(long)]
        account: Option<String>,
        /// Only in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only with a recipient containing this text.
        #[arg(long)]
        recipient: Option<String>,
    },
    /// Show a message with its recipients and attempts.
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
    /// Pause an account's delivery (its messages keep queueing).
    Pause {
        /// The account: its code or accounts/CODE.
        account: String,
    },
    /// Resume an account's delivery.
    Resume {
        /// The account: its code or accounts/CODE.
        account: String,
    },
    /// The queue of every account (same as `mailplane queue`).
    Queue,
}

/// An enum value's name without its prefix, e.g. `QUEUED`.
fn short<E: TryFrom<i32>>(value: i32, name: impl Fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(value).map_or_else(
        |_| String::new(),
        |v| crate::render::short(name(&v), prefix),
    )
}

fn message_json(m: &pb::Message) -> Value {
    json!({
        "name": m.name,
        "account": m.account,
        "state": short(m.state, pb::MessageState::as_str_name, "MESSAGE_STATE_"),
        "to": m.to.join(", "),
        "cc": m.cc.join(", "),
        "bcc": m.bcc.join(", "),
        "subject": m.subject,
        "message_id": m.message_id,
        "size_bytes": m.size_bytes,
        "last_error": m.last_error,
        "create_time": crate::render::time(m.create_time.as_ref()),
        "next_attempt_time": crate::render::time(m.next_attempt_time.as_ref()),
        "recipients": m.recipients.iter().map(|r| json!({
            "address": r.address,
            "kind": short(r.kind, pb::RecipientKind::as_str_name, "RECIPIENT_KIND_"),
            "state": short(r.state, pb::RecipientState::as_str_name, "RECIPIENT_STATE_"),
            "last_reply": r.last_reply,
        })).collect::<Vec<_>>(),
        "attempts": m.attempts.iter().map(|a| json!({
            "time": crate::render::time(a.attempt_time.as_ref()),
            "reply_code": a.reply_code,
            "relay_queue_id": a.relay_queue_id,
            "failure_class": short(a.failure_class, pb::FailureClass::as_str_name, "FAILURE_CLASS_"),
            "message": a.message,
        })).collect::<Vec<_>>(),
    })
}

fn summary_json(q: &pb::QueueSummary) -> Value {
    json!({
        "account": q.account,
        "queued": q.queued_count,
        "sending": q.sending_count,
        "deferred": q.deferred_count,
        "oldest": crate::render::time(q.oldest_create_time.as_ref()),
        "paused": q.paused,
    })
}

const COLUMNS: [(&str, &str); 5] = [
    ("NAME", "name"),
    ("STATE", "state"),
    ("TO", "to"),
    ("SUBJECT", "subject"),
    ("CREATED", "create_time"),
];

const QUEUE_COLUMNS: [(&str, &str); 6] = [
    ("ACCOUNT", "account"),
    ("QUEUED", "queued"),
    ("SENDING", "sending"),
    ("DEFERRED", "deferred"),
    ("OLDEST", "oldest"),
    ("PAUSED", "paused"),
];

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// The request `mailplane send` makes.
fn send_request(args: SendArgs) -> Result<pb::SendMessageRequest, CliError> {
    let body = match (args.body, &args.body_file) {
        (Some(body), _) => body,
        (None, Some(path)) => String::from_utf8(read(path)?)
            .map_err(|_| CliError::Usage(format!("{} is not UTF-8 text", path.display())))?,
        (None, None) => return Err(CliError::Usage("give --body or --body-file".into())),
    };
    let mut attachments = Vec::new();
    for path in &args.attach {
        attachments.push(pb::MessageAttachment {
            filename: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            content_type: String::new(),
            content: read(path)?,
        });
    }
    let (text_body, html_body) = if args.html {
        (String::new(), body)
    } else {
        (body, String::new())
    };
    Ok(pb::SendMessageRequest {
        message: Some(pb::Message {
            account: args
                .account
                .map(|a| resource_name("accounts", &a))
                .unwrap_or_default(),
            to: args.to,
            cc: args.cc,
            bcc: args.bcc,
            subject: args.subject,
            text_body,
            html_body,
            attachments,
            ..Default::default()
        }),
        request_id: args.request_id.unwrap_or_default(),
    })
}

/// Runs a message command.
pub async fn run(
    channel: Conn,
    format: Format,
    command: MessagesCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = MessageServiceClient::new(channel);
    let name = |m: &str| resource_name("messages", m);
    let one = match command {
        MessagesCommand::Send(args) => client.send_message(send_request(args)?).await?,
        MessagesCommand::Get { message } => {
            client
                .get_message(pb::GetMessageRequest {
                    name: name(&message),
                })
                .await?
        }
        MessagesCommand::Retry { message } => {
            client
                .retry_message(pb::RetryMessageRequest {
                    name: name(&message),
                })
                .await?
        }
        MessagesCommand::Cancel { message } => {
            client
                .cancel_message(pb::CancelMessageRequest {
                    name: name(&message),
                })
                .await?
        }
        MessagesCommand::List {
            account,
            state,
            recipient,
        } => {
            let state = state.map_or(pb::MessageState::Unspecified, |s| match s {
                StateArg::Queued => pb::MessageState::Queued,
                StateArg::Sending => pb::MessageState::Sending,
                StateArg::Deferred => pb::MessageState::Deferred,
                StateArg::Sent => pb::MessageState::Sent,
                StateArg::Failed => pb::MessageState::Failed,
                StateArg::Cancelled => pb::MessageState::Cancelled,
            });
            let page = client
                .list_messages(pb::ListMessagesRequest {
                    filter: Some(pb::MessageFilter {
                        account: account
                            .map(|a| resource_name("accounts", &a))
                            .unwrap_or_default(),
                        state: state.into(),
                        recipient: recipient.unwrap_or_default(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let items: Vec<Value> = page.messages.iter().map(message_json).collect();
            return Ok(output::list(out, format, &items, &COLUMNS, "messages")?);
        }
        MessagesCommand::Pause { account } => {
            let summary = client
                .pause_account_delivery(pb::PauseAccountDeliveryRequest {
                    account: resource_name("accounts", &account),
                })
                .await?
                .into_inner();
            return Ok(output::one(out, format, &summary_json(&summary))?);
        }
        MessagesCommand::Resume { account } => {
            let summary = client
                .resume_account_delivery(pb::ResumeAccountDeliveryRequest {
                    account: resource_name("accounts", &account),
                })
                .await?
                .into_inner();
            return Ok(output::one(out, format, &summary_json(&summary))?);
        }
        MessagesCommand::Queue => {
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
                &QUEUE_COLUMNS,
                "accounts",
            )?);
        }
    };
    Ok(output::one(out, format, &message_json(&one.into_inner()))?)
}
