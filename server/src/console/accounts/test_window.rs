//! The "Test Email – Account" window (`/accounts/{id}/test`): Send to, Subject, Message and
//! where to stop. Sending creates the test and shows its run page, where each phase appears as
//! it finishes (`WatchTest` as server-sent events of HTML fragments, swapped in by htmx's SSE
//! extension), then the verdict and the hint. Without script the run page shows the test's
//! current state with a refresh link. The account's history is one click away.

use super::{account_name, account_nav, forbidden};
use crate::console::ctx::PageResult;
use crate::console::fields::{Field, parse_field_error};
use crate::console::i18n::Lang;
use crate::console::layout::{self, Section};
use crate::console::list;
use crate::console::{Ctx, PageError};
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect};
use futures::StreamExt;
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;
use std::convert::Infallible;

/// Where a test stops: form value, API value, catalogue key.
const STOPS: [(&str, pb::StopAfter, &str); 4] = [
    (
        "delivery",
        pb::StopAfter::Delivery,
        "accounts.test.stop.delivery",
    ),
    (
        "connect",
        pb::StopAfter::Connect,
        "accounts.test.stop.connect",
    ),
    ("tls", pb::StopAfter::Tls, "accounts.test.stop.tls"),
    ("auth", pb::StopAfter::Auth, "accounts.test.stop.auth"),
];

/// The test form.
#[derive(Debug, Default, Deserialize)]
pub struct TestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    stop_after: String,
}

fn window(
    ctx: &Ctx,
    account: &pb::SmtpAccount,
    f: &TestForm,
    error: Option<(&str, &str)>,
) -> Markup {
    let lang = ctx.lang;
    let title = lang.tf("accounts.test.title", &[("name", &account.account_name)]);
    let field_error = |field: &str| error.filter(|(f, _)| *f == field).map(|(_, m)| m);
    let general = error.filter(|(f, _)| !["to", "subject", "body", "stop_after"].contains(f));
    let input = |field: &'static str, key: &'static str, kind: &str, value: &str| {
        Field::new("", field, lang.t(key))
            .error(field_error(field))
            .input(kind, value, false)
    };
    let body = html! {
        (account_nav(lang, account.id, ctx.may("SmtpAccountService/UpdateAccount")))
        @if let Some((_, message)) = general {
            p.error role="alert" data-testid="test-error" { (message) }
        }
        form method="post" action={ "/accounts/" (account.id) "/test" } data-testid="test-form" {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            (input("to", "accounts.test.to", "email", &f.to))
            (input("subject", "accounts.test.subject", "text", &f.subject))
            div.field {
                label for="body" { (lang.t("accounts.test.body")) }
                textarea #body name="body" rows="4" { (f.body) }
            }
            div.field {
                label for="stop_after" { (lang.t("accounts.test.stop_after")) }
                select #stop_after name="stop_after" {
                    @for (value, _, key) in STOPS {
                        option value=(value) selected[f.stop_after == value] { (lang.t(key)) }
                    }
                }
            }
            div.actions {
                button type="submit" data-testid="send-test" { (lang.t("accounts.test.send")) }
            }
        }
    };
    layout::page(ctx, Section::Accounts, &title, body)
}

/// `GET /accounts/{id}/test`.
pub async fn form(ctx: Ctx, Path(id): Path<i64>) -> PageResult {
    if !ctx.may("SmtpTestService/CreateTest") {
        return Err(forbidden(&ctx));
    }
    let account = super::form::get_account(&ctx, id).await?;
    let f = TestForm {
        subject: ctx.lang.t("accounts.test.default_subject").to_owned(),
        body: ctx.lang.t("accounts.test.default_body").to_owned(),
        stop_after: "delivery".into(),
        ..Default::default()
    };
    Ok(window(&ctx, &account, &f, None).into_response())
}

/// `POST /accounts/{id}/test`: creates the test and goes to its run page.
pub async fn create(ctx: Ctx, Path(id): Path<i64>, Form(f): Form<TestForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    if !ctx.may("SmtpTestService/CreateTest") {
        return Err(forbidden(&ctx));
    }
    let stop = STOPS
        .iter()
        .find(|(v, _, _)| *v == f.stop_after)
        .map_or(pb::StopAfter::Delivery, |(_, s, _)| *s);
    let created = ctx
        .api()
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: account_name(id),
            test: Some(pb::SmtpTest {
                to: f.to.trim().to_owned(),
                subject: f.subject.clone(),
                body: f.body.clone(),
                locale: ctx.lang.tag().to_owned(),
                stop_after: stop.into(),
                ..Default::default()
            }),
        })
        .await;
    match created {
        Ok(test) => {
            let name = test.into_inner().name;
            let test_id = name.rsplit('/').next().unwrap_or_default();
            Ok(Redirect::to(&format!("/accounts/{id}/tests/{test_id}")).into_response())
        }
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::FailedPrecondition
            ) =>
        {
            let account = super::form::get_account(&ctx, id).await?;
            let parsed = parse_field_error(s.message());
            let error = match &parsed {
                Some((field, message)) if s.code() == tonic::Code::InvalidArgument => {
                    (field.as_str(), message.as_str())
                }
                _ => ("", s.message()),
            };
            let status = match s.code() {
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            Ok((status, window(&ctx, &account, &f, Some(error))).into_response())
        }
        Err(s) => Err(ctx.fail(PageError::Api(s))),
    }
}

fn phase_key(phase: i32) -> &'static str {
    match pb::Phase::try_from(phase).unwrap_or(pb::Phase::Unspecified) {
        pb::Phase::Unspecified => "accounts.phase.unspecified",
        pb::Phase::DnsResolve => "accounts.phase.dns_resolve",
        pb::Phase::TcpConnect => "accounts.phase.tcp_connect",
        pb::Phase::Banner => "accounts.phase.banner",
        pb::Phase::Ehlo => "accounts.phase.ehlo",
        pb::Phase::Starttls => "accounts.phase.starttls",
        pb::Phase::TlsHandshake => "accounts.phase.tls_handshake",
        pb::Phase::Auth => "accounts.phase.auth",
        pb::Phase::MailFrom => "accounts.phase.mail_from",
        pb::Phase::RcptTo => "accounts.phase.rcpt_to",
        pb::Phase::Data => "accounts.phase.data",
        pb::Phase::Quit => "accounts.phase.quit",
        pb::Phase::Token => "accounts.phase.token",
    }
}

fn status_key(status: i32) -> (&'static str, &'static str) {
    match pb::PhaseStatus::try_from(status).unwrap_or(pb::PhaseStatus::Unspecified) {
        pb::PhaseStatus::Ok => ("ok", "accounts.phase_status.ok"),
        pb::PhaseStatus::Failed => ("failed", "accounts.phase_status.failed"),
        pb::PhaseStatus::Skipped => ("muted", "accounts.phase_status.skipped"),
        pb::PhaseStatus::Running | pb::PhaseStatus::Unspecified => {
            ("muted", "accounts.phase_status.running")
        }
    }
}

/// The phases so far, as `<li>`s; `running` is a phase that started and has not finished.
fn phase_items(lang: Lang, phases: &[pb::PhaseResult], running: Option<i32>) -> Markup {
    html! {
        @for p in phases {
            @let (class, key) = status_key(p.status);
            li data-testid="phase" data-phase=(pb::Phase::try_from(p.phase).map_or("", |x| x.as_str_name())) {
                strong { (lang.t(phase_key(p.phase))) } " — "
                span class=(class) { (lang.t(key)) }
                @if let Some(d) = &p.duration {
                    " " span.muted { (d.seconds * 1000 + i64::from(d.nanos) / 1_000_000) " ms" }
                }
                @if p.reply_code != 0 || !p.reply_text.is_empty() {
                    pre.copy { (p.reply_code) " " (p.reply_text) }
                }
                @for d in &p.detail { div.muted { (d) } }
            }
        }
        @if let Some(phase) = running {
            li data-testid="phase-running" { strong { (lang.t(phase_key(phase))) } " — " span.muted { (lang.t("accounts.phase_status.running")) } }
        }
    }
}

fn finished(state: i32) -> bool {
    matches!(
        pb::TestState::try_from(state),
        Ok(pb::TestState::Succeeded | pb::TestState::Failed | pb::TestState::Cancelled)
    )
}

fn state_key(state: i32) -> &'static str {
    match pb::TestState::try_from(state).unwrap_or(pb::TestState::Unspecified) {
        pb::TestState::Succeeded => "accounts.state.succeeded",
        pb::TestState::Failed => "accounts.state.failed",
        pb::TestState::Cancelled => "accounts.state.cancelled",
        pb::TestState::Running => "accounts.state.running",
        pb::TestState::Queued | pb::TestState::Unspecified => "accounts.state.queued",
    }
}

/// The verdict of a finished test, and its hint.
fn verdict(lang: Lang, t: &pb::SmtpTest) -> Markup {
    let ok = t.state == pb::TestState::Succeeded as i32;
    let result = t.result.clone().unwrap_or_default();
    html! {
        div class={ "notice " (if ok { "ok" } else { "failed" }) } role="status" data-testid="verdict-result"
            data-state=(pb::TestState::try_from(t.state).map_or("", |s| s.as_str_name())) {
            p { strong { (lang.t(state_key(t.state))) } }
            @if !result.message.is_empty() { p data-testid="verdict-message" { (result.message) } }
            @if !result.hint.is_empty() { p data-testid="hint" { (lang.t("accounts.test.hint")) " " (result.hint) } }
            @if !result.queue_id.is_empty() { p { (lang.t("accounts.test.queue_id")) " " code { (result.queue_id) } } }
        }
    }
}

fn test_url(id: i64, test: i64) -> String {
    format!("/accounts/{id}/tests/{test}")
}

/// `GET /accounts/{id}/tests/{test}`: the run page.
pub async fn run(ctx: Ctx, Path((id, test)): Path<(i64, i64)>) -> PageResult {
    let lang = ctx.lang;
    let t = ctx
        .api()
        .tests()
        .get_test(pb::GetTestRequest {
            name: format!("accounts/{id}/tests/{test}"),
        })
        .await
        .map_err(|s| ctx.fail(s))?
        .into_inner();
    let account = super::form::get_account(&ctx, id).await?;
    let here = test_url(id, test);
    let done = finished(t.state);
    let body = html! {
        (account_nav(lang, id, ctx.may("SmtpAccountService/UpdateAccount")))
        p { (lang.t("accounts.test.to")) ": " (t.to) " · " (lang.t("accounts.test.subject")) ": " (t.subject) }
        @if done {
            ol #phases.phases data-testid="phases" { (phase_items(lang, &t.transcript, None)) }
            div #verdict data-testid="verdict" { (verdict(lang, &t)) }
        } @else {
            div #live hx-ext="sse" sse-connect={ (here) "/events" } sse-close="verdict" data-testid="live" {
                ol #phases.phases sse-swap="phase" data-testid="phases" { (phase_items(lang, &t.transcript, None)) }
                div #verdict sse-swap="verdict" data-testid="verdict" {
                    p.muted { (lang.t(state_key(t.state))) " " a href=(here) data-testid="refresh" { (lang.t("accounts.test.refresh")) } }
                }
            }
        }
        p { a href={ "/accounts/" (id) "/test" } { (lang.t("accounts.test.again")) } }
    };
    let title = lang.tf("accounts.test.title", &[("name", &account.account_name)]);
    Ok(layout::page(&ctx, Section::Accounts, &title, body).into_response())
}

struct Watch {
    stream: tonic::Streaming<pb::WatchTestResponse>,
    phases: Vec<pb::PhaseResult>,
    lang: Lang,
    done: bool,
}

/// `GET /accounts/{id}/tests/{test}/events`: `WatchTest` as server-sent events: `phase` with
/// the phase list so far, then `verdict`, and the stream ends.
pub async fn events(ctx: Ctx, Path((id, test)): Path<(i64, i64)>) -> PageResult {
    let stream = ctx
        .api()
        .tests()
        .watch_test(pb::WatchTestRequest {
            name: format!("accounts/{id}/tests/{test}"),
        })
        .await
        .map_err(|s| ctx.fail(s))?
        .into_inner();
    let state = Watch {
        stream,
        phases: Vec::new(),
        lang: ctx.lang,
        done: false,
    };
    let events = futures::stream::unfold(state, |mut w| async move {
        if w.done {
            return None;
        }
        use pb::watch_test_response::Event as E;
        let event = loop {
            match w.stream.message().await {
                Ok(Some(pb::WatchTestResponse { event: Some(e) })) => break Ok(e),
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(s) => break Err(s),
            }
        };
        let lang = w.lang;
        let sse = match event {
            Ok(E::PhaseStarted(p)) => Event::default()
                .event("phase")
                .data(phase_items(lang, &w.phases, Some(p)).into_string()),
            Ok(E::PhaseFinished(r)) => {
                w.phases.push(r);
                Event::default()
                    .event("phase")
                    .data(phase_items(lang, &w.phases, None).into_string())
            }
            Ok(E::Finished(t)) => {
                w.done = true;
                Event::default()
                    .event("verdict")
                    .data(verdict(lang, &t).into_string())
            }
            Err(s) => {
                w.done = true;
                let m = html! { p.error role="alert" { (s.message()) } };
                Event::default().event("verdict").data(m.into_string())
            }
        };
        Some((Ok::<_, Infallible>(sse), w))
    });
    Ok(Sse::new(events.boxed())
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `?page=` of the history.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    #[serde(default)]
    page: String,
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map(|d| {
            format!(
                "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                d.year(),
                u8::from(d.month()),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        })
        .unwrap_or_default()
}

/// `GET /accounts/{id}/tests`: the account's tests, newest first.
pub async fn history(ctx: Ctx, Path(id): Path<i64>, Query(q): Query<Page>) -> PageResult {
    let lang = ctx.lang;
    let account = super::form::get_account(&ctx, id).await?;
    let page = ctx
        .api()
        .tests()
        .list_tests(pb::ListTestsRequest {
            parent: account_name(id),
            page_size: 30,
            page_token: q.page.clone(),
        })
        .await
        .map_err(|s| ctx.fail(s))?
        .into_inner();
    let body = html! {
        (account_nav(lang, id, ctx.may("SmtpAccountService/UpdateAccount")))
        @if page.tests.is_empty() {
            p.muted data-testid="no-tests" { (lang.t("accounts.history.none")) }
        } @else {
            table data-testid="tests" {
                (list::head(&[lang.t("accounts.history.when"), lang.t("accounts.test.to"), lang.t("accounts.test.stop_after"), lang.t("accounts.history.state"), lang.t("accounts.history.result")], None))
                tbody {
                    @for t in &page.tests {
                        @let test_id = t.name.rsplit('/').next().unwrap_or_default();
                        tr data-testid="test-row" {
                            td { a href={ "/accounts/" (id) "/tests/" (test_id) } { (when(t.create_time.as_ref())) } }
                            td { (t.to) }
                            td { (STOPS.iter().find(|(_, s, _)| *s as i32 == t.stop_after).map_or("", |(_, _, k)| lang.t(k))) }
                            td { (lang.t(state_key(t.state))) }
                            td { (t.result.as_ref().map(|r| r.message.as_str()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        @if !page.next_page_token.is_empty() {
            (list::NextPage {
                href: format!("/accounts/{id}/tests?page={}", super::enc(&page.next_page_token)),
                label: lang.t("accounts.next"),
                testid: "next",
                rel: Some("next"),
                nav_label: None,
            }
            .render())
        }
    };
    let title = lang.tf("accounts.history.title", &[("name", &account.account_name)]);
    Ok(layout::page(&ctx, Section::Accounts, &title, body).into_response())
}
