//! The accounts area: the accounts report ([`report`]), the SMTP server settings window
//! ([`form`]), and the test e-mail window with its live run page ([`test_window`]).
//!
//! Every screen works without JavaScript: forms are plain GET and POST forms, the run page of a
//! test shows its current state with a refresh link, and htmx's SSE extension only makes the
//! phases appear as they finish.

pub mod form;
pub mod form_view;
pub mod report;
pub mod test_window;

use super::i18n::Lang;
use super::{Ctx, PageError, Shared};
use axum::Router;
use axum::routing::{get, post};
use mailplane_proto::v1 as pb;
use maud::{Markup, html};

/// The routes of the accounts area.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/accounts", get(report::list))
        .route("/accounts/export.csv", get(report::export))
        .route("/accounts/new", get(form::new_form).post(form::create))
        .route(
            "/accounts/{id}/edit",
            get(form::edit_form).post(form::update),
        )
        .route("/accounts/{id}/default", post(report::set_default))
        .route(
            "/accounts/{id}/delete",
            get(report::delete_form).post(report::delete),
        )
        .route(
            "/accounts/{id}/test",
            get(test_window::form).post(test_window::create),
        )
        .route("/accounts/{id}/tests", get(test_window::history))
        .route("/accounts/{id}/tests/{test}", get(test_window::run))
        .route(
            "/accounts/{id}/tests/{test}/events",
            get(test_window::events),
        )
}

/// The resource name of account `id`.
pub fn account_name(id: i64) -> String {
    format!("accounts/{id}")
}

/// `value` encoded for a query string.
pub fn enc(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A refusal for what the user's role may not do, before the API is even asked.
pub fn forbidden(ctx: &Ctx) -> axum::response::Response {
    ctx.fail(PageError::Api(tonic::Status::permission_denied(
        ctx.lang.t("accounts.forbidden"),
    )))
}

/// The security modes, as form values and catalogue keys.
pub const SECURITY: [(pb::SecurityMode, &str, &str); 4] = [
    (pb::SecurityMode::None, "none", "accounts.security.none"),
    (
        pb::SecurityMode::StarttlsOpportunistic,
        "starttls_opportunistic",
        "accounts.security.starttls_opportunistic",
    ),
    (
        pb::SecurityMode::StarttlsRequired,
        "starttls_required",
        "accounts.security.starttls_required",
    ),
    (
        pb::SecurityMode::ImplicitTls,
        "implicit_tls",
        "accounts.security.implicit_tls",
    ),
];

/// The label of security mode `value` (a `pb::SecurityMode` number).
pub fn security_label(lang: Lang, value: i32) -> &'static str {
    SECURITY
        .iter()
        .find(|(m, _, _)| *m as i32 == value)
        .map_or("", |(_, _, key)| lang.t(key))
}

/// "Yes" or "No".
pub fn yes_no(lang: Lang, value: bool) -> &'static str {
    if value {
        lang.t("accounts.yes")
    } else {
        lang.t("accounts.no")
    }
}

/// The links between the screens of one account.
pub fn account_nav(lang: Lang, id: i64, may_edit: bool) -> Markup {
    html! {
        nav.actions aria-label=(lang.t("accounts.account_nav")) {
            a.button.secondary href="/accounts" { (lang.t("accounts.back")) }
            @if may_edit {
                a.button.secondary href={ "/accounts/" (id) "/edit" } data-testid="nav-edit" {
                    (lang.t("accounts.edit"))
                }
            }
            a.button.secondary href={ "/accounts/" (id) "/test" } data-testid="nav-test" {
                (lang.t("accounts.test_setting"))
            }
            a.button.secondary href={ "/accounts/" (id) "/tests" } data-testid="nav-history" {
                (lang.t("accounts.history"))
            }
        }
    }
}
