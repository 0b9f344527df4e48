//! Messages and the queue: the outgoing log with its filters, one message with its
//! recipients and attempts (Retry, Cancel), and the queue of each account (pause, resume).

use super::{csrf_input, fail, id_of, pager, query, see_other, short, time};
use crate::console::Ctx;
use crate::console::ctx::PageResult;
use crate::console::i18n::Lang;
use crate::console::layout::{Section, page};
use crate::console::list;
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;

/// The filters and the page of the log.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only this account (its id).
    #[serde(default)]
    pub account: String,
    /// Only this state (`QUEUED`, …).
    #[serde(default)]
    pub state: String,
    /// Only recipients containing this.
    #[serde(default)]
    pub recipient: String,
    /// The page.
    #[serde(default)]
    pub page_token: String,
    /// How many per page (50 when unset, at most 500).
    #[serde(default)]
    pub page_size: String,
}

/// Each state's name in the API and its catalogue key.
const STATES: [(&str, &str); 6] = [
    ("QUEUED", "msg.st_queued"),
    ("SENDING", "msg.st_sending"),
    ("DEFERRED", "msg.st_deferred"),
    ("SENT", "msg.st_sent"),
    ("FAILED", "msg.st_failed"),
    ("CANCELLED", "msg.st_cancelled"),
];

/// A state as a cell: the API's name in `data-state`, the words in the user's language.
fn state_cell(lang: Lang, state: i32) -> Markup {
    let raw = state_name(state);
    let label = STATES
        .iter()
        .find(|(s, _)| *s == raw)
        .map_or(raw.as_str(), |(_, key)| lang.t(key));
    html! { span data-state=(raw) { (label) } }
}

fn state_name(state: i32) -> String {
    pb::MessageState::try_from(state).map_or_else(
        |_| state.to_string(),
        |s| short(s.as_str_name(), "MESSAGE_STATE_"),
    )
}

/// The accounts' names by resource name (`accounts/3` → `Alerts`), best effort.
async fn account_names(ctx: &Ctx) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let Ok(resp) = ctx
            .api()
            .accounts()
            .list_accounts(pb::ListAccountsRequest {
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
        else {
            return out;
        };
        let resp = resp.into_inner();
        out.extend(resp.accounts.into_iter().map(|a| (a.name, a.account_name)));
        if resp.next_page_token.is_empty() || out.len() > 5000 {
            return out;
        }
        page_token = resp.next_page_token;
    }
}

fn account_label<'a>(names: &'a HashMap<String, String>, account: &'a str) -> &'a str {
    names.get(account).map_or(account, String::as_str)
}

fn queue_section(
    ctx: &Ctx,
    queues: &[pb::QueueSummary],
    names: &HashMap<String, String>,
) -> Markup {
    let lang = ctx.lang;
    let may_pause = ctx.may("MessageService/PauseAccountDelivery");
    let may_resume = ctx.may("MessageService/ResumeAccountDelivery");
    html! {
        h2 #queue-heading { (lang.t("msg.queue")) }
        @if queues.is_empty() {
            p.muted { (lang.t("msg.queue_none")) }
        } @else {
            table #queue data-testid="queue" aria-labelledby="queue-heading" {
                (list::head(&[lang.t("msg.account"), lang.t("msg.queued"), lang.t("msg.sending"), lang.t("msg.deferred"), lang.t("msg.oldest"), lang.t("msg.delivery")], None))
                tbody {
                    @for q in queues {
                        tr data-testid="queue-row" data-account=(id_of(&q.account)) {
                            td { a href={ "/messages?account=" (id_of(&q.account)) } { (account_label(names, &q.account)) } }
                            td { (q.queued_count) }
                            td { (q.sending_count) }
                            td { (q.deferred_count) }
                            td { (time(q.oldest_create_time.as_ref())) }
                            td {
                                @if q.paused {
                                    span.failed data-testid="paused" { (lang.t("msg.paused")) } " "
                                    @if may_resume {
                                        form method="post" action={ "/queue/" (id_of(&q.account)) "/resume" } {
                                            (csrf_input(ctx))
                                            button.secondary type="submit" data-testid="resume" { (lang.t("msg.resume")) }
                                        }
                                    }
                                } @else {
                                    span.ok { (lang.t("msg.running")) } " "
                                    @if may_pause {
                                        form method="post" action={ "/queue/" (id_of(&q.account)) "/pause" } {
                                            (csrf_input(ctx))
                                            button.secondary type="submit" data-testid="pause" { (lang.t("msg.pause")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /messages`: the log (for roles that may list it) and the queue.
pub async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> PageResult {
    let lang = ctx.lang;
    let names: HashMap<String, String> = account_names(&ctx).await.into_iter().collect();
    let mut accounts: Vec<(&String, &String)> = names.iter().collect();
    accounts.sort_by(|a, b| a.1.cmp(b.1));
    let queues = ctx
        .api()
        .messages()
        .list_queue_summaries(pb::ListQueueSummariesRequest {})
        .await
        .map_err(|s| fail(&ctx, s))?
        .into_inner()
        .queue_summaries;
    let may_list = ctx.may("MessageService/ListMessages");
    let log = if may_list {
        let state = pb::MessageState::from_str_name(&format!("MESSAGE_STATE_{}", q.state))
            .map_or(0, |s| s as i32);
        let filter = pb::MessageFilter {
            account: if q.account.is_empty() {
                String::new()
            } else {
                format!("accounts/{}", id_of(&q.account))
            },
            state,
            recipient: q.recipient.trim().to_owned(),
            ..Default::default()
        };
        Some(
            ctx.api()
                .messages()
                .list_messages(pb::ListMessagesRequest {
                    page_size: super::page_size(&q.page_size),
                    page_token: q.page_token.clone(),
                    filter: Some(filter),
                })
                .await
                .map_err(|s| fail(&ctx, s))?
                .into_inner(),
        )
    } else {
        None
    };
    let kept = query(&[
        ("account", &q.account),
        ("state", &q.state),
        ("recipient", &q.recipient),
        ("page_size", &q.page_size),
    ]);
    let body = html! {
        @if let Some(log) = &log {
            form.search #message-filters method="get" action="/messages" role="search" {
                div {
                    label for="field-account" { (lang.t("msg.account")) }
                    select #field-account name="account" {
                        option value="" { (lang.t("msg.all")) }
                        @for (name, label) in &accounts {
                            option value=(id_of(name)) selected[id_of(name) == q.account] { (label) }
                        }
                    }
                }
                div {
                    label for="field-state" { (lang.t("msg.state")) }
                    select #field-state name="state" {
                        option value="" { (lang.t("msg.all")) }
                        @for (s, key) in STATES {
                            option value=(s) selected[s == q.state] { (lang.t(key)) }
                        }
                    }
                }
                div {
                    label for="field-recipient" { (lang.t("msg.recipient")) }
                    input #field-recipient type="search" name="recipient" value=(q.recipient);
                }
                div.actions { button type="submit" { (lang.t("pages.filter")) } }
            }
            @if log.messages.is_empty() {
                p.muted data-testid="empty" { (lang.t("msg.none")) }
            } @else {
                table #messages data-testid="messages" aria-label=(lang.t("msg.title")) {
                    (list::head(&[lang.t("msg.time"), lang.t("msg.account"), lang.t("msg.recipients"), lang.t("msg.subject"), lang.t("msg.state")], None))
                    tbody {
                        @for m in &log.messages {
                            tr data-testid="message-row" data-id=(id_of(&m.name)) {
                                td { (time(m.create_time.as_ref())) }
                                td { (account_label(&names, &m.account)) }
                                td { (m.to.iter().chain(&m.cc).chain(&m.bcc).cloned().collect::<Vec<_>>().join(", ")) }
                                td { a href={ "/messages/" (id_of(&m.name)) } {
                                    @if m.subject.is_empty() { (lang.t("msg.no_subject")) } @else { (m.subject) }
                                } }
                                td data-testid="message-state" { (state_cell(lang, m.state)) }
                            }
                        }
                    }
                }
            }
            (pager(lang, "/messages", &kept, &log.next_page_token))
        }
        (queue_section(&ctx, &queues, &names))
    };
    Ok(page(&ctx, Section::Messages, lang.t("msg.title"), body).into_response())
}

/// `GET /messages/{id}`.
pub async fn show(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    message_page(&ctx, &id, None).await
}

/// A message's page, with `refused` (what the API said about an action) above it.
async fn message_page(ctx: &Ctx, id: &str, refused: Option<&str>) -> PageResult {
    let lang = ctx.lang;
    let m = ctx
        .api()
        .messages()
        .get_message(pb::GetMessageRequest {
            name: format!("messages/{}", id_of(id)),
        })
        .await
        .map_err(|s| fail(ctx, s))?
        .into_inner();
    let names: HashMap<String, String> = account_names(ctx).await.into_iter().collect();
    let state = pb::MessageState::try_from(m.state).unwrap_or_default();
    let may_retry = ctx.may("MessageService/RetryMessage")
        && matches!(state, pb::MessageState::Deferred | pb::MessageState::Failed);
    let may_cancel = ctx.may("MessageService/CancelMessage")
        && matches!(state, pb::MessageState::Queued | pb::MessageState::Deferred);
    let mid = id_of(&m.name);
    let body = html! {
        @if let Some(refused) = refused {
            p.error role="alert" data-testid="action-refused" { (refused) }
        }
        dl.meta #message {
            dt { (lang.t("msg.state")) } dd data-testid="message-state" { (state_cell(lang, m.state)) }
            dt { (lang.t("msg.account")) } dd { (account_label(&names, &m.account)) }
            dt { (lang.t("msg.time")) } dd { (time(m.create_time.as_ref())) }
            dt { (lang.t("msg.message_id")) } dd { code { (m.message_id) } }
            @if m.next_attempt_time.is_some() {
                dt { (lang.t("msg.next_attempt")) } dd { (time(m.next_attempt_time.as_ref())) }
            }
            @if !m.last_error.is_empty() {
                dt { (lang.t("msg.last_error")) } dd data-testid="last-error" { (m.last_error) }
            }
            dt { (lang.t("msg.size")) } dd { (m.size_bytes) " B" }
        }
        @if may_retry || may_cancel {
            div.actions {
                @if may_retry {
                    form method="post" action={ "/messages/" (mid) "/retry" } {
                        (csrf_input(ctx))
                        button type="submit" data-testid="retry" { (lang.t("msg.retry")) }
                    }
                }
                @if may_cancel {
                    form method="post" action={ "/messages/" (mid) "/cancel" } {
                        (csrf_input(ctx))
                        button.danger type="submit" data-testid="cancel" { (lang.t("msg.cancel")) }
                    }
                }
            }
        }
        h2 { (lang.t("msg.recipients")) }
        table #recipients data-testid="recipients" aria-label=(lang.t("msg.recipients")) {
            (list::head(&[lang.t("msg.address"), lang.t("msg.kind"), lang.t("msg.state"), lang.t("msg.last_reply")], None))
            tbody {
                @for r in &m.recipients {
                    tr {
                        td { (r.address) }
                        td { (pb::RecipientKind::try_from(r.kind).map_or_else(|_| r.kind.to_string(), |k| short(k.as_str_name(), "RECIPIENT_KIND_"))) }
                        td { (pb::RecipientState::try_from(r.state).map_or_else(|_| r.state.to_string(), |k| short(k.as_str_name(), "RECIPIENT_STATE_"))) }
                        td { (r.last_reply) }
                    }
                }
            }
        }
        h2 { (lang.t("msg.attempts")) }
        @if m.attempts.is_empty() {
            p.muted data-testid="no-attempts" { (lang.t("msg.no_attempts")) }
        } @else {
            table #attempts data-testid="attempts" aria-label=(lang.t("msg.attempts")) {
                (list::head(&[lang.t("msg.time"), lang.t("msg.agent"), lang.t("msg.reply"), lang.t("msg.what"), lang.t("msg.hint")], None))
                tbody {
                    @for a in &m.attempts {
                        tr data-testid="attempt-row" {
                            td { (time(a.attempt_time.as_ref())) }
                            td { (a.agent) }
                            td { @if a.reply_code != 0 { (a.reply_code) " " } (a.enhanced_status_code) }
                            td { (a.message) }
                            td { (a.hint) }
                        }
                    }
                }
            }
        }
        p { a href="/messages" { (lang.t("msg.back")) } }
    };
    let title = if m.subject.is_empty() {
        lang.t("msg.no_subject").to_owned()
    } else {
        m.subject.clone()
    };
    let code = if refused.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok((code, page(ctx, Section::Messages, &title, body)).into_response())
}

/// A form with only its CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    /// CSRF.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /messages/{id}/retry`.
pub async fn retry(ctx: Ctx, Path(id): Path<String>, Form(f): Form<CsrfForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let name = format!("messages/{}", id_of(&id));
    let done = ctx
        .api()
        .messages()
        .retry_message(pb::RetryMessageRequest { name })
        .await;
    after_message_action(&ctx, &id, done.map(drop)).await
}

/// `POST /messages/{id}/cancel`.
pub async fn cancel(ctx: Ctx, Path(id): Path<String>, Form(f): Form<CsrfForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let name = format!("messages/{}", id_of(&id));
    let done = ctx
        .api()
        .messages()
        .cancel_message(pb::CancelMessageRequest { name })
        .await;
    after_message_action(&ctx, &id, done.map(drop)).await
}

/// After a retry or a cancel of message `id`: back to the message, or, when the message moved
/// on since the page was shown, the message as it is now with the API's reason.
async fn after_message_action(ctx: &Ctx, id: &str, done: Result<(), tonic::Status>) -> PageResult {
    match done {
        Ok(()) => Ok(see_other(&format!("/messages/{}", id_of(id)))),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            message_page(ctx, id, Some(s.message())).await
        }
        Err(s) => Err(fail(ctx, s)),
    }
}

/// `POST /queue/{account}/pause`.
pub async fn pause(ctx: Ctx, Path(account): Path<String>, Form(f): Form<CsrfForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let account = format!("accounts/{}", id_of(&account));
    let done = ctx
        .api()
        .messages()
        .pause_account_delivery(pb::PauseAccountDeliveryRequest { account })
        .await;
    Ok(back_to_queue(&ctx, done.map(drop)))
}

/// `POST /queue/{account}/resume`.
pub async fn resume(ctx: Ctx, Path(account): Path<String>, Form(f): Form<CsrfForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let account = format!("accounts/{}", id_of(&account));
    let done = ctx
        .api()
        .messages()
        .resume_account_delivery(pb::ResumeAccountDeliveryRequest { account })
        .await;
    Ok(back_to_queue(&ctx, done.map(drop)))
}

/// After a pause or a resume of an account's queue: back to the messages page, or the error
/// page.
fn back_to_queue(ctx: &Ctx, done: Result<(), tonic::Status>) -> axum::response::Response {
    match done {
        Ok(()) => see_other("/messages"),
        Err(s) => fail(ctx, s),
    }
}
