//! The accounts report (`GET /accounts`): the seed's search fields as a GET form whose filter
//! stays in the URL, 30 accounts a page with next and previous links that keep the filter,
//! the row actions (edit, test, set default, delete), a print view with every matching row,
//! and the CSV download of the same filter.

use super::{account_name, enc, forbidden, security_label, yes_no};
use crate::console::ctx::PageResult;
use crate::console::layout::{self, Section};
use crate::console::list;
use crate::console::signin::CsrfOnly;
use crate::console::{Ctx, PageError};
use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use futures::StreamExt;
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

/// The report's search fields, as they are in the URL.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filter {
    /// The account's code.
    #[serde(default)]
    pub code: String,
    /// A part of the account name.
    #[serde(default)]
    pub name: String,
    /// A part of the sender address.
    #[serde(default)]
    pub sender: String,
    /// A part of the Reply-To address.
    #[serde(default)]
    pub reply_to: String,
    /// A part of the Return-Path address.
    #[serde(default)]
    pub return_path: String,
    /// A part of the confirmation address.
    #[serde(default)]
    pub confirmation: String,
    /// `enabled`, `disabled`, or anything else for both.
    #[serde(default)]
    pub status: String,
}

impl Filter {
    /// The API's filter.
    pub fn to_pb(&self) -> pb::AccountFilter {
        let status = match self.status.as_str() {
            "enabled" => pb::AccountStatusFilter::Enabled,
            "disabled" => pb::AccountStatusFilter::Disabled,
            _ => pb::AccountStatusFilter::Any,
        };
        pb::AccountFilter {
            // A code that is not a number matches no account.
            id: self.code.trim().parse().unwrap_or(0),
            account_name: self.name.trim().to_owned(),
            sender_email: self.sender.trim().to_owned(),
            reply_to_email: self.reply_to.trim().to_owned(),
            return_path_email: self.return_path.trim().to_owned(),
            confirmation_email: self.confirmation.trim().to_owned(),
            status: status.into(),
        }
    }

    /// Whether the code is given and is not a number (it then matches nothing).
    pub fn bad_code(&self) -> bool {
        let code = self.code.trim();
        !code.is_empty() && code.parse::<i64>().is_err()
    }

    /// The filter as a query string (its non-empty fields), without a leading `?`.
    pub fn query(&self) -> String {
        [
            ("code", &self.code),
            ("name", &self.name),
            ("sender", &self.sender),
            ("reply_to", &self.reply_to),
            ("return_path", &self.return_path),
            ("confirmation", &self.confirmation),
            ("status", &self.status),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The report's query: the filter, the page, and the print switch.
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    /// The filter.
    #[serde(flatten)]
    pub filter: Filter,
    /// The page token of this page; empty for the first.
    #[serde(default)]
    pub page: String,
    /// The tokens of the pages before this one, `first` standing for the first page, joined
    /// by dots (tokens are hex), for the previous link.
    #[serde(default)]
    pub trail: String,
    /// Any value: the print view (every matching row, no forms).
    #[serde(default)]
    pub print: String,
}

/// The first page in a trail.
const FIRST: &str = "first";

fn report_url(query: &str, page: &str, trail: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !query.is_empty() {
        parts.push(query.to_owned());
    }
    if !page.is_empty() {
        parts.push(format!("page={}", enc(page)));
    }
    if !trail.is_empty() {
        parts.push(format!("trail={}", enc(&trail.join("."))));
    }
    if parts.is_empty() {
        "/accounts".to_owned()
    } else {
        format!("/accounts?{}", parts.join("&"))
    }
}

/// `GET /accounts`.
pub async fn list(ctx: Ctx, Query(q): Query<ReportQuery>) -> PageResult {
    let lang = ctx.lang;
    let print = !q.print.is_empty();
    let filter = q.filter.to_pb();
    let mut api = ctx.api().accounts();
    let mut accounts = Vec::new();
    let mut token = if print { String::new() } else { q.page.clone() };
    let next = loop {
        if q.filter.bad_code() {
            break String::new();
        }
        let page = api
            .list_accounts(pb::ListAccountsRequest {
                page_size: if print { 500 } else { 30 },
                page_token: token,
                filter: Some(filter.clone()),
            })
            .await
            .map_err(|s| ctx.fail(s))?
            .into_inner();
        accounts.extend(page.accounts);
        if !print || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        token = page.next_page_token;
    };
    let query = q.filter.query();
    let trail: Vec<&str> = q.trail.split('.').filter(|t| !t.is_empty()).collect();
    let body = html! {
        @if !print {
            (search_form(&ctx, &q.filter))
            (menu(&ctx, &query))
        } @else {
            p.noprint { a href=(report_url(&query, "", &[])) { (lang.t("accounts.back")) } }
        }
        (table(&ctx, &accounts, print))
        @if !print {
            (pager(&ctx, &query, &q.page, &trail, &next))
        }
    };
    Ok(layout::page(
        &ctx,
        Section::Accounts,
        lang.t("accounts.report.title"),
        body,
    )
    .into_response())
}

fn search_form(ctx: &Ctx, f: &Filter) -> Markup {
    let lang = ctx.lang;
    let text = [
        ("code", "accounts.field.code", &f.code),
        ("name", "accounts.field.account_name", &f.name),
        ("sender", "accounts.field.sender_email", &f.sender),
        ("reply_to", "accounts.field.reply_to_email", &f.reply_to),
        (
            "return_path",
            "accounts.field.return_path_email",
            &f.return_path,
        ),
        (
            "confirmation",
            "accounts.field.confirmation_email",
            &f.confirmation,
        ),
    ];
    let statuses = [
        ("", "accounts.status.any"),
        ("enabled", "accounts.status.enabled"),
        ("disabled", "accounts.status.disabled"),
    ];
    html! {
        form.search method="get" action="/accounts" role="search" data-testid="search"
            aria-label=(lang.t("accounts.search")) {
            @for (name, key, value) in text {
                @let bad = name == "code" && f.bad_code();
                div {
                    label for={ "f-" (name) } { (lang.t(key)) }
                    input type="search" id={ "f-" (name) } name=(name) value=(value)
                        aria-invalid=[bad.then_some("true")]
                        aria-describedby=[bad.then_some("f-code-error")];
                    @if bad {
                        p.error #f-code-error data-testid="error-code" { (lang.t("accounts.not_a_number")) }
                    }
                }
            }
            div {
                label for="f-status" { (lang.t("accounts.field.status")) }
                select #f-status name="status" {
                    @for (value, key) in statuses {
                        option value=(value) selected[f.status == value] { (lang.t(key)) }
                    }
                }
            }
            div.actions {
                button type="submit" data-testid="search-submit" { (lang.t("accounts.search")) }
                a.button.secondary href="/accounts" { (lang.t("accounts.clear")) }
            }
        }
    }
}

/// The report's actions menu: New, Print, Download CSV (a `<details>`, no script needed).
fn menu(ctx: &Ctx, query: &str) -> Markup {
    let lang = ctx.lang;
    let print = if query.is_empty() {
        "/accounts?print=1".to_owned()
    } else {
        format!("/accounts?{query}&print=1")
    };
    let csv = if query.is_empty() {
        "/accounts/export.csv".to_owned()
    } else {
        format!("/accounts/export.csv?{query}")
    };
    html! {
        details.menu.noprint data-testid="report-actions" {
            summary { (lang.t("accounts.show_actions")) }
            ul {
                @if ctx.may("SmtpAccountService/CreateAccount") {
                    li { a href="/accounts/new" data-testid="new-account" { (lang.t("accounts.new")) } }
                }
                li { a href=(print) data-testid="print" { (lang.t("accounts.print")) } }
                li { a href=(csv) data-testid="download-csv" download { (lang.t("accounts.download_csv")) } }
            }
        }
    }
}

fn table(ctx: &Ctx, accounts: &[pb::SmtpAccount], print: bool) -> Markup {
    let lang = ctx.lang;
    let may_edit = ctx.may("SmtpAccountService/UpdateAccount");
    let may_default = ctx.may("SmtpAccountService/SetDefaultAccount");
    let may_delete = ctx.may("SmtpAccountService/DeleteAccount");
    let may_test = ctx.may("SmtpTestService/CreateTest");
    html! {
        @if accounts.is_empty() {
            p.muted data-testid="no-accounts" { (lang.t("accounts.none")) }
        } @else {
            table #accounts data-testid="accounts" {
                caption.visually-hidden { (lang.t("accounts.report.title")) }
                (list::head(
                    &[lang.t("accounts.field.code"), lang.t("accounts.field.account_name"), lang.t("accounts.field.sender_email"), lang.t("accounts.field.host"), lang.t("accounts.field.security"), lang.t("accounts.field.is_default"), lang.t("accounts.field.enabled")],
                    (!print).then(|| html! { (lang.t("accounts.actions")) }),
                ))
                tbody {
                    @for a in accounts {
                        tr data-testid="account-row" data-id=(a.id) {
                            td { (a.id) }
                            td { (a.account_name) }
                            td { (a.sender_email) }
                            td { (a.host) ":" (a.port) }
                            td { (security_label(lang, a.security)) }
                            td { (yes_no(lang, a.is_default)) }
                            td { (yes_no(lang, a.enabled.unwrap_or(true))) }
                            @if !print { td { div.actions {
                                @if may_edit {
                                    a href={ "/accounts/" (a.id) "/edit" } data-testid="edit" { (lang.t("accounts.edit")) }
                                }
                                @if may_test {
                                    a href={ "/accounts/" (a.id) "/test" } data-testid="test" { (lang.t("accounts.test_setting")) }
                                }
                                @if may_default && !a.is_default {
                                    form method="post" action={ "/accounts/" (a.id) "/default" } {
                                        input type="hidden" name="csrf" value=(ctx.session.csrf);
                                        button.secondary type="submit" data-testid="set-default" { (lang.t("accounts.set_default")) }
                                    }
                                }
                                @if may_delete {
                                    a href={ "/accounts/" (a.id) "/delete" } data-testid="delete" { (lang.t("accounts.delete")) }
                                }
                            } } }
                        }
                    }
                }
            }
        }
    }
}

fn pager(ctx: &Ctx, query: &str, page: &str, trail: &[&str], next: &str) -> Markup {
    let lang = ctx.lang;
    let prev = trail.split_last().map(|(last, before)| {
        let token = if *last == FIRST { "" } else { *last };
        report_url(query, token, before)
    });
    let next = (!next.is_empty()).then(|| {
        let mut t = trail.to_vec();
        t.push(if page.is_empty() { FIRST } else { page });
        report_url(query, next, &t)
    });
    let number = (trail.len() + 1).to_string();
    html! {
        nav.pager aria-label=(lang.t("accounts.pages")) data-testid="pager" {
            @if let Some(prev) = prev {
                a rel="prev" href=(prev) data-testid="prev" { (lang.t("accounts.previous")) }
            }
            span data-testid="page-number" { (lang.tf("accounts.page", &[("n", &number)])) }
            @if let Some(next) = next {
                a rel="next" href=(next) data-testid="next" { (lang.t("accounts.next")) }
            }
        }
    }
}

/// `GET /accounts/export.csv?<filter>`: the API's CSV export, streamed as a download.
pub async fn export(ctx: Ctx, Query(f): Query<Filter>) -> PageResult {
    let stream = ctx
        .api()
        .accounts()
        .export_accounts(pb::ExportAccountsRequest {
            filter: Some(f.to_pb()),
            format: pb::ExportFormat::Csv.into(),
        })
        .await
        .map_err(|s| ctx.fail(s))?
        .into_inner();
    let body = Body::from_stream(stream.map(|chunk| chunk.map(|c| c.data)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"accounts.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// `POST /accounts/{id}/default`.
pub async fn set_default(ctx: Ctx, Path(id): Path<i64>, Form(form): Form<CsrfOnly>) -> PageResult {
    ctx.check_csrf(&form.csrf).map_err(|e| ctx.fail(e))?;
    if !ctx.may("SmtpAccountService/SetDefaultAccount") {
        return Err(forbidden(&ctx));
    }
    ctx.api()
        .accounts()
        .set_default_account(pb::SetDefaultAccountRequest {
            name: account_name(id),
        })
        .await
        .map_err(|s| ctx.fail(s))?;
    Ok(Redirect::to("/accounts").into_response())
}

/// The delete form: the CSRF token and the etag the user saw.
#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// The etag of the account as shown.
    #[serde(default)]
    pub etag: String,
}

fn delete_page(ctx: &Ctx, account: &pb::SmtpAccount, error: Option<&str>) -> Markup {
    let lang = ctx.lang;
    let title = lang.tf("accounts.delete.title", &[("name", &account.account_name)]);
    let body = html! {
        @if let Some(error) = error {
            p.error role="alert" data-testid="delete-error" { (error) }
        }
        p { (lang.tf("accounts.delete.confirm", &[("name", &account.account_name), ("code", &account.id.to_string())])) }
        form method="post" action={ "/accounts/" (account.id) "/delete" } data-testid="delete-form" {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            input type="hidden" name="etag" value=(account.etag);
            div.actions {
                button.danger type="submit" data-testid="confirm-delete" { (lang.t("accounts.delete")) }
                a.button.secondary href="/accounts" { (lang.t("accounts.cancel")) }
            }
        }
    };
    layout::page(ctx, Section::Accounts, &title, body)
}

/// `GET /accounts/{id}/delete`: the confirmation page.
pub async fn delete_form(ctx: Ctx, Path(id): Path<i64>) -> PageResult {
    if !ctx.may("SmtpAccountService/DeleteAccount") {
        return Err(forbidden(&ctx));
    }
    let account = super::form::get_account(&ctx, id).await?;
    Ok(delete_page(&ctx, &account, None).into_response())
}

/// `POST /accounts/{id}/delete`.
pub async fn delete(ctx: Ctx, Path(id): Path<i64>, Form(form): Form<DeleteForm>) -> PageResult {
    ctx.check_csrf(&form.csrf).map_err(|e| ctx.fail(e))?;
    if !ctx.may("SmtpAccountService/DeleteAccount") {
        return Err(forbidden(&ctx));
    }
    let result = ctx
        .api()
        .accounts()
        .delete_account(pb::DeleteAccountRequest {
            name: account_name(id),
            etag: form.etag,
        })
        .await;
    match result {
        Ok(_) => Ok(Redirect::to("/accounts").into_response()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::FailedPrecondition | tonic::Code::Aborted
            ) =>
        {
            let account = super::form::get_account(&ctx, id).await?;
            let status = if s.code() == tonic::Code::Aborted {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            Ok((status, delete_page(&ctx, &account, Some(s.message()))).into_response())
        }
        Err(s) => Err(ctx.fail(PageError::Api(s))),
    }
}
