//! The audit log (admin only): ListEvents with its filters (resource, actor, time range) and
//! paging.

use super::{fail, pager, parse_time, query, time};
use crate::console::Ctx;
use crate::console::ctx::PageResult;
use crate::console::layout::{Section, page};
use crate::console::list;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mailplane_proto::v1 as pb;
use maud::html;
use serde::Deserialize;

/// The filters and the page.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only events about this resource (`accounts/3`).
    #[serde(default)]
    pub resource: String,
    /// Only events by an actor containing this (`tokens/2`).
    #[serde(default)]
    pub actor: String,
    /// From this time (a date, `YYYY-MM-DDTHH:MM`, or RFC 3339), UTC.
    #[serde(default)]
    pub start: String,
    /// Before this time.
    #[serde(default)]
    pub end: String,
    /// The page.
    #[serde(default)]
    pub page_token: String,
    /// How many per page (50 when unset, at most 500).
    #[serde(default)]
    pub page_size: String,
}

/// `GET /audit`.
pub async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> PageResult {
    let lang = ctx.lang;
    if !ctx.may("AuditService/ListEvents") {
        return Err(fail(&ctx, tonic::Status::permission_denied("")));
    }
    let start = parse_time(&q.start);
    let end = parse_time(&q.end);
    let bad_start = matches!(start, Some(Err(())));
    let bad_end = matches!(end, Some(Err(())));
    let events = if bad_start || bad_end {
        None
    } else {
        Some(
            ctx.api()
                .audit()
                .list_events(pb::ListEventsRequest {
                    resource: q.resource.trim().to_owned(),
                    actor: q.actor.trim().to_owned(),
                    start_time: start.and_then(Result::ok),
                    end_time: end.and_then(Result::ok),
                    page_size: super::page_size(&q.page_size),
                    page_token: q.page_token.clone(),
                })
                .await
                .map_err(|s| fail(&ctx, s))?
                .into_inner(),
        )
    };
    let kept = query(&[
        ("resource", &q.resource),
        ("actor", &q.actor),
        ("start", &q.start),
        ("end", &q.end),
        ("page_size", &q.page_size),
    ]);
    let body = html! {
        form.search #audit-filters method="get" action="/audit" role="search" {
            div {
                label for="field-resource" { (lang.t("audit.resource")) }
                input #field-resource type="search" name="resource" value=(q.resource)
                    placeholder="accounts/3";
            }
            div {
                label for="field-actor" { (lang.t("audit.actor")) }
                input #field-actor type="search" name="actor" value=(q.actor) placeholder="tokens/2";
            }
            div {
                label for="field-start" { (lang.t("audit.start")) }
                input #field-start type="text" name="start" value=(q.start) placeholder="2026-12-01"
                    aria-invalid=[bad_start.then_some("true")];
                @if bad_start { p.error data-testid="error-start" { (lang.t("audit.bad_time")) } }
            }
            div {
                label for="field-end" { (lang.t("audit.end")) }
                input #field-end type="text" name="end" value=(q.end) placeholder="2026-12-02T08:00"
                    aria-invalid=[bad_end.then_some("true")];
                @if bad_end { p.error data-testid="error-end" { (lang.t("audit.bad_time")) } }
            }
            div.actions { button type="submit" { (lang.t("pages.filter")) } }
        }
        @if let Some(events) = &events {
            @if events.events.is_empty() {
                p.muted data-testid="empty" { (lang.t("audit.none")) }
            } @else {
                table #events data-testid="events" aria-label=(lang.t("audit.title")) {
                    (list::head(&[lang.t("audit.time"), lang.t("audit.actor"), lang.t("audit.peer"), lang.t("audit.rpc"), lang.t("audit.resource"), lang.t("audit.outcome"), lang.t("audit.diff")], None))
                    tbody {
                        @for e in &events.events {
                            tr data-testid="event-row" data-id=(e.id) {
                                td { (time(e.time.as_ref())) }
                                td { (e.actor) }
                                td { (e.peer) }
                                td data-testid="event-rpc" { code { (e.rpc) } }
                                td { (e.resource) }
                                td {
                                    @if e.outcome == "ok" { span.ok { (e.outcome) } }
                                    @else { span.failed { (e.outcome) } }
                                }
                                td { @if !e.diff.is_empty() { code.diff { (e.diff) } } }
                            }
                        }
                    }
                }
            }
            (pager(lang, "/audit", &kept, &events.next_page_token))
        }
    };
    let page = page(&ctx, Section::Audit, lang.t("audit.title"), body);
    let code = if events.is_none() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((code, page).into_response())
}
