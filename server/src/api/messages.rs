//! `MessageService`: the outbox. SendMessage builds the message under the account's settings
//! (`mailplane_smtp::OutgoingMessage`), stores it durably, and wakes the delivery worker.

use super::convert::{self, timestamp};
use super::paging;
use crate::domain::message::{
    AttachmentInfo, Attempt, Message, MessageContent, MessageFilter, MessageId, MessageState,
    NewMessage, QueueSummary, RecipientKind, RecipientState,
};
use crate::domain::{Account, validate};
use crate::error::{Error, Result};
use crate::outbox::Outbox;
use crate::store::Store;
use mailplane_proto::v1 as pb;
use mailplane_smtp as smtp;
use pb::message_service_server::MessageService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The message service.
pub struct Messages {
    store: Arc<Store>,
    outbox: Arc<Outbox>,
}

impl Messages {
    /// The service.
    pub fn new(store: Arc<Store>, outbox: Arc<Outbox>) -> Self {
        Self { store, outbox }
    }

    /// The account that sends: the named one, or the default one.
    async fn account(&self, name: &str) -> Result<Account> {
        let account = if name.is_empty() {
            self.store.default_account().await?.ok_or_else(|| {
                Error::FailedPrecondition(
                    "message.account: empty, and there is no default account; name one, or \
                     make an account the default"
                        .into(),
                )
            })?
        } else {
            let id = convert::account_id("message.account", name)?;
            self.store.get_account(id).await?
        };
        if !account.spec.enabled {
            return Err(Error::FailedPrecondition(format!(
                "{} is disabled; enable it or send through another account",
                account.id
            )));
        }
        Ok(account)
    }
}

fn state_to_pb(s: MessageState) -> pb::MessageState {
    match s {
        MessageState::Queued => pb::MessageState::Queued,
        MessageState::Sending => pb::MessageState::Sending,
        MessageState::Deferred => pb::MessageState::Deferred,
        MessageState::Sent => pb::MessageState::Sent,
        MessageState::Failed => pb::MessageState::Failed,
        MessageState::Cancelled => pb::MessageState::Cancelled,
    }
}

fn state_from_pb(value: i32) -> Result<Option<MessageState>> {
    Ok(match pb::MessageState::try_from(value) {
        Ok(pb::MessageState::Unspecified) => None,
        Ok(pb::MessageState::Queued) => Some(MessageState::Queued),
        Ok(pb::MessageState::Sending) => Some(MessageState::Sending),
        Ok(pb::MessageState::Deferred) => Some(MessageState::Deferred),
        Ok(pb::MessageState::Sent) => Some(MessageState::Sent),
        Ok(pb::MessageState::Failed) => Some(MessageState::Failed),
        Ok(pb::MessageState::Cancelled) => Some(MessageState::Cancelled),
        Err(_) => return Err(Error::invalid("filter.state", "is not a message state")),
    })
}

fn attempt_to_pb(a: &Attempt) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        attempt_time: Some(timestamp(a.time)),
        agent: a.agent.clone(),
        reply_code: a.reply_code,
        enhanced_status_code: a.enhanced_status_code.clone(),
        relay_queue_id: a.relay_queue_id.clone(),
        duration: Some(prost_types::Duration {
            seconds: a.duration_micros / 1_000_000,
            nanos: i32::try_from((a.duration_micros % 1_000_000) * 1000).unwrap_or(0),
        }),
        failure_class: pb::FailureClass::from_str_name(&a.failure_class)
            .unwrap_or(pb::FailureClass::Unspecified)
            .into(),
        message: a.message.clone(),
        hint: a.hint.clone(),
    }
}

/// The API view of a message.
pub fn render(m: &Message) -> pb::Message {
    let c = &m.content;
    pb::Message {
        name: m.id.to_string(),
        account: m.account.to_string(),
        to: c.to.clone(),
        cc: c.cc.clone(),
        bcc: c.bcc.clone(),
        subject: c.subject.clone(),
        text_body: c.text_body.clone().unwrap_or_default(),
        html_body: c.html_body.clone().unwrap_or_default(),
        attachments: c
            .attachments
            .iter()
            .map(|a| pb::MessageAttachment {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                content: Vec::new(),
            })
            .collect(),
        headers: c
            .headers
            .iter()
            .map(|(name, value)| pb::MessageHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        from: c.from.clone().unwrap_or_default(),
        reply_to: c.reply_to.clone().unwrap_or_default(),
        request_id: m.request_id.clone().unwrap_or_default(),
        state: state_to_pb(m.state).into(),
        recipients: m
            .recipients
            .iter()
            .map(|r| pb::MessageRecipient {
                address: r.address.clone(),
                kind: match r.kind {
                    RecipientKind::To => pb::RecipientKind::To,
                    RecipientKind::Cc => pb::RecipientKind::Cc,
                    RecipientKind::Bcc => pb::RecipientKind::Bcc,
                }
                .into(),
                state: match r.state {
                    RecipientState::Pending => pb::RecipientState::Pending,
                    RecipientState::Accepted => pb::RecipientState::Accepted,
                    RecipientState::Rejected => pb::RecipientState::Rejected,
                }
                .into(),
                last_reply: r.last_reply.clone(),
            })
            .collect(),
        attempts: m.attempts.iter().map(attempt_to_pb).collect(),
        message_id: m.message_id.clone(),
        last_error: m.last_error.clone(),
        create_time: Some(timestamp(m.create_time)),
        update_time: Some(timestamp(m.update_time)),
        next_attempt_time: m.next_attempt_time.map(timestamp),
        size_bytes: m.size_bytes,
    }
}

/// The API view of an account's queue.
fn render_summary(q: &QueueSummary) -> pb::QueueSummary {
    pb::QueueSummary {
        account: q.account.to_string(),
        queued_count: q.queued,
        sending_count: q.sending,
        deferred_count: q.deferred,
        oldest_create_time: q.oldest.map(timestamp),
        paused: q.paused,
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The message a request composes, under `account`'s settings.
fn outgoing(account: &Account, m: &pb::Message) -> smtp::OutgoingMessage {
    let s = &account.spec;
    smtp::OutgoingMessage {
        sender: s.sender_email.clone(),
        from_override: non_empty(&m.from),
        reply_to: s.reply_to_email.clone(),
        reply_to_override: non_empty(&m.reply_to),
        return_path: s.return_path_email.clone(),
        disposition_notification_to: s
            .send_read_confirmation
            .then(|| s.confirmation_email.clone())
            .flatten(),
        to: m.to.clone(),
        cc: m.cc.clone(),
        bcc: m.bcc.clone(),
        subject: m.subject.clone(),
        text_body: non_empty(&m.text_body),
        html_body: non_empty(&m.html_body),
        footer: s.enable_footer.then(|| s.footer_text.clone()),
        charset: Some(s.charset.clone()),
        plain_text_only: s.plain_text_only,
        force_settings: s.force_settings,
        attachments: m
            .attachments
            .iter()
            .map(|a| smtp::Attachment {
                filename: a.filename.clone(),
                content_type: if a.content_type.is_empty() {
                    smtp::DEFAULT_ATTACHMENT_TYPE.to_owned()
                } else {
                    a.content_type.clone()
                },
                content: a.content.clone(),
            })
            .collect(),
        extra_headers: m
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
    }
}

/// The error a caller sees for a message that cannot be built; a size error names the limit.
fn build_error(e: smtp::OutgoingError, limit_name: &str) -> Error {
    let too_large = matches!(e, smtp::OutgoingError::TooLarge { .. });
    match Error::from(e) {
        Error::InvalidArgument { field, message } if too_large => {
            Error::invalid(field, format!("{message} ({limit_name})"))
        }
        other => other,
    }
}

/// How each envelope address was given: To, Cc, or else Bcc.
fn kind_of(address: &str, m: &pb::Message) -> RecipientKind {
    let address = address.to_lowercase();
    let given = |list: &[String]| {
        list.iter()
            .any(|g| smtp::bare_address(g).is_some_and(|a| a.to_lowercase() == address))
    };
    if given(&m.to) {
        RecipientKind::To
    } else if given(&m.cc) {
        RecipientKind::Cc
    } else {
        RecipientKind::Bcc
    }
}

#[tonic::async_trait]
impl MessageService for Messages {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let m = req
            .message
            .ok_or_else(|| Error::invalid("message", "is required"))?;
        let request_id = if req.request_id.is_empty() {
            None
        } else {
            Some(validate::line("request_id", &req.request_id, 100)?)
        };
        let account = self.account(&m.account).await?;
        let server_max = self.outbox.settings().max_message_size;
        let account_max = usize::try_from(account.spec.attachment_size_limit_bytes)
            .ok()
            .filter(|l| *l > 0);
        let (limit, limit_name) = match account_max {
            Some(l) if l < server_max => (l, "the account's attachment_size_limit_bytes"),
            _ => (server_max, "the server's maximum message size"),
        };
        let message = outgoing(&account, &m);
        // The raw content alone over the limit: refused before anything is built.
        let raw = message
            .attachments
            .iter()
            .map(|a| a.content.len())
            .sum::<usize>()
            + m.text_body.len()
            + m.html_body.len();
        smtp::check_message_size(raw, limit).map_err(|e| build_error(e, limit_name))?;
        let built = message.build().map_err(|e| build_error(e, limit_name))?;
        smtp::check_message_size(built.size(), limit).map_err(|e| build_error(e, limit_name))?;
        let content = MessageContent {
            to: m.to.clone(),
            cc: m.cc.clone(),
            bcc: m.bcc.clone(),
            subject: m.subject.clone(),
            text_body: non_empty(&m.text_body),
            html_body: non_empty(&m.html_body),
            attachments: message
                .attachments
                .iter()
                .map(|a| AttachmentInfo {
                    filename: a.filename.clone(),
                    content_type: a.content_type.clone(),
                    size: u64::try_from(a.content.len()).unwrap_or(u64::MAX),
                })
                .collect(),
            headers: message.extra_headers.clone(),
            from: non_empty(&m.from),
            reply_to: non_empty(&m.reply_to),
        };
        let new = NewMessage {
            account: account.id,
            request_id,
            content,
            envelope_from: built.envelope_from.clone(),
            recipients: built
                .envelope_to
                .iter()
                .map(|a| (a.clone(), kind_of(a, &m)))
                .collect(),
            message_id: built.message_id.clone(),
            bytes: built.bytes,
            last_error: String::new(),
        };
        let recipients = new.recipients.len();
        let (stored, created) = self.outbox.create_message(ctx, new).await?;
        if created {
            tracing::info!(message = %stored.id, account = %stored.account, recipients, size = stored.size_bytes, "message queued");
        }
        Ok(Response::new(render(&stored)))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let id = convert::parse_name("name", "messages", &request.into_inner().name)?;
        let message = self.store.get_message(MessageId(id)).await?;
        Ok(Response::new(render(&message)))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let req = request.into_inner();
        let f = req.filter.unwrap_or_default();
        let filter = MessageFilter {
            account: if f.account.is_empty() {
                None
            } else {
                Some(convert::account_id("filter.account", &f.account)?)
            },
            state: state_from_pb(f.state)?,
            recipient: non_empty(f.recipient.trim()),
            create_time_start: f
                .create_time_start
                .as_ref()
                .map(|t| convert::micros("filter.create_time_start", t))
                .transpose()?,
            create_time_end: f
                .create_time_end
                .as_ref()
                .map(|t| convert::micros("filter.create_time_end", t))
                .transpose()?,
        };
        let size = paging::page_size(req.page_size)?;
        let context = format!("messages {filter:?}");
        let before = paging::decode(&req.page_token, &context)?;
        let rows = self.store.list_messages(&filter, before, size + 1).await?;
        let (rows, next_page_token) = paging::finish(rows, size, &context, |m| m.id.0);
        Ok(Response::new(pb::ListMessagesResponse {
            messages: rows.iter().map(render).collect(),
            next_page_token,
        }))
    }

    async fn cancel_message(
        &self,
        request: Request<pb::CancelMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let ctx = crate::audit::context(&request);
        let id = convert::parse_name("name", "messages", &request.into_inner().name)?;
        let message = self.store.cancel_message(&ctx, MessageId(id)).await?;
        tracing::info!(message = %message.id, "message cancelled");
        Ok(Response::new(render(&message)))
    }

    async fn retry_message(
        &self,
        request: Request<pb::RetryMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let ctx = crate::audit::context(&request);
        let id = convert::parse_name("name", "messages", &request.into_inner().name)?;
        let message = self.store.retry_message(&ctx, MessageId(id)).await?;
        tracing::info!(message = %message.id, "message queued again");
        self.outbox.wake_everywhere().await;
        Ok(Response::new(render(&message)))
    }

    async fn pause_account_delivery(
        &self,
        request: Request<pb::PauseAccountDeliveryRequest>,
    ) -> Result<Response<pb::QueueSummary>, Status> {
        let ctx = crate::audit::context(&request);
        let id = convert::account_id("account", &request.into_inner().account)?;
        let summary = self.store.set_delivery_paused(&ctx, id, true).await?;
        tracing::info!(account = %id, "delivery paused");
        Ok(Response::new(render_summary(&summary)))
    }

    async fn resume_account_delivery(
        &self,
        request: Request<pb::ResumeAccountDeliveryRequest>,
    ) -> Result<Response<pb::QueueSummary>, Status> {
        let ctx = crate::audit::context(&request);
        let id = convert::account_id("account", &request.into_inner().account)?;
        let summary = self.store.set_delivery_paused(&ctx, id, false).await?;
        tracing::info!(account = %id, "delivery resumed");
        self.outbox.wake_everywhere().await;
        Ok(Response::new(render_summary(&summary)))
    }

    async fn list_queue_summaries(
        &self,
        _request: Request<pb::ListQueueSummariesRequest>,
    ) -> Result<Response<pb::ListQueueSummariesResponse>, Status> {
        let summaries = self.store.queue_summaries().await?;
        Ok(Response::new(pb::ListQueueSummariesResponse {
            queue_summaries: summaries.iter().map(render_summary).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_classified_by_their_exact_address() {
        let m = pb::Message {
            to: vec!["Ops <OPS@example.com>".into()],
            cc: vec!["bops@example.com".into()],
            ..Default::default()
        };
        assert_eq!(kind_of("ops@example.com", &m), RecipientKind::To);
        assert_eq!(kind_of("bops@example.com", &m), RecipientKind::Cc);
        assert_eq!(kind_of("other@example.com", &m), RecipientKind::Bcc);
    }
}
