//! The pages around the accounts: credentials, connectors, messages and the queue, and the
//! audit log. Every write is a plain form POST carrying the session's CSRF token (htmx sends
//! it as `X-CSRF-Token`); what a role may not call is not offered, and the API refuses it
//! anyway (403).

pub mod audit;
pub mod connectors;
pub mod credentials;
pub mod messages;

use super::fields::{Field, parse_field_error};
use super::i18n::Lang;
use super::list::NextPage;
use super::{Ctx, PageError, Shared};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

/// The routes of these pages.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route("/credentials/new", get(credentials::new_form))
        .route(
            "/credentials/{id}/rotate",
            get(credentials::rotate_form).post(credentials::rotate),
        )
        .route(
            "/connectors",
            get(connectors::list).post(connectors::create),
        )
        .route("/connectors/{id}", get(connectors::show))
        .route(
            "/connectors/{id}/enrollment-tokens",
            post(connectors::enrollment_token),
        )
        .route(
            "/connectors/{id}/agents/{agent}/revoke",
            get(connectors::revoke_confirm).post(connectors::revoke),
        )
        .route("/messages", get(messages::list))
        .route("/messages/{id}", get(messages::show))
        .route("/messages/{id}/retry", post(messages::retry))
        .route("/messages/{id}/cancel", post(messages::cancel))
        .route("/queue/{account}/pause", post(messages::pause))
        .route("/queue/{account}/resume", post(messages::resume))
        .route("/audit", get(audit::list))
}

/// The hidden CSRF input of a form.
pub fn csrf_input(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.session.csrf); }
}

/// A 303 to `to` (after a POST).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// A page with a status other than 200 (a form with errors is 400).
pub fn with_status(code: StatusCode, page: Markup) -> Response {
    (code, page).into_response()
}

/// A timestamp as `2026-12-02 13:54:27 UTC`; an em dash when unset.
pub fn time(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(ts) if ts.seconds != 0 || ts.nanos != 0 => {
            let full = ts.to_string();
            let (date, rest) = full.split_once('T').unwrap_or((full.as_str(), ""));
            let clock: String = rest.chars().take(8).collect();
            format!("{date} {clock} UTC")
        }
        _ => "—".to_owned(),
    }
}

/// A time filter's value (`2026-12-01`, `2026-12-01T08:00`, or RFC 3339) as a timestamp.
pub fn parse_time(given: &str) -> Option<Result<prost_types::Timestamp, ()>> {
    let given = given.trim();
    if given.is_empty() {
        return None;
    }
    let full = match given.len() {
        10 => format!("{given}T00:00:00Z"),
        16 => format!("{given}:00Z"),
        19 => format!("{given}Z"),
        _ => given.to_owned(),
    };
    Some(full.parse().map_err(|_| ()))
}

/// The id in a resource name (`credentials/7` → `7`).
pub fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// An enum value's short name (`QUEUED` for `MESSAGE_STATE_QUEUED`).
pub fn short(full: &str, prefix: &str) -> String {
    crate::render::short(full, prefix)
}

/// A refusal the user can fix on the form: `INVALID_ARGUMENT`, `FAILED_PRECONDITION`,
/// `ALREADY_EXISTS`, `PERMISSION_DENIED` on a field-level check (adding a destination), or
/// `ABORTED`. Returns `(field, message)` (see [`parse_field_error`]), or `None` when the
/// status is not about the form.
pub fn form_error(status: &tonic::Status) -> Option<(String, String)> {
    use tonic::Code;
    if !matches!(
        status.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted
    ) {
        return None;
    }
    let message = status.message();
    if status.code() == Code::InvalidArgument
        && let Some(field) = parse_field_error(message)
    {
        return Some(field);
    }
    Some((String::new(), message.to_owned()))
}

/// The error shown next to `field`, if the form's error is about it.
pub fn field_error<'a>(error: Option<&'a (String, String)>, field: &str) -> Option<&'a str> {
    error
        .filter(|(f, _)| f == field)
        .map(|(_, message)| message.as_str())
}

/// A labelled text input (id `field-{name}`) with its error below it.
pub fn text_field(
    lang: Lang,
    name: &str,
    label: &'static str,
    value: &str,
    error: Option<&str>,
    required: bool,
) -> Markup {
    Field::new("field-", name, lang.t(label))
        .error(error)
        .input("text", value, required)
}

/// A labelled password input (always empty: a secret is never rendered back).
pub fn secret_field(
    lang: Lang,
    name: &str,
    label: &'static str,
    error: Option<&str>,
    help: Option<&'static str>,
) -> Markup {
    Field::new("field-", name, lang.t(label))
        .error(error)
        .help(help.map(|h| lang.t(h)))
        .password()
}

/// A general error of a form (not about one field).
pub fn form_alert(error: Option<&(String, String)>, fields: &[&str]) -> Markup {
    html! {
        @if let Some((field, message)) = error {
            @if !fields.contains(&field.as_str()) {
                p.error role="alert" data-testid="form-error" {
                    @if !field.is_empty() { (field) ": " }
                    (message)
                }
            }
        }
    }
}

/// "Next page" for a list, keeping the filters in `query` (already encoded, `&`-joined).
pub fn pager(lang: Lang, path: &str, query: &str, next: &str) -> Markup {
    let token = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC);
    let sep = if query.is_empty() { "" } else { "&" };
    html! {
        @if !next.is_empty() {
            (NextPage {
                href: format!("{path}?{query}{sep}page_token={token}"),
                label: lang.t("pages.next_page"),
                testid: "next-page",
                rel: None,
                nav_label: Some(lang.t("pages.paging")),
            }
            .render())
        }
    }
}

/// A list's page size from `?page_size=`: 50 when unset or not a number, 1 to 500.
pub fn page_size(given: &str) -> i32 {
    given.trim().parse::<i32>().map_or(50, |n| n.clamp(1, 500))
}

/// `name=value` pairs percent-encoded into a query string, skipping empty values.
pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Turns an API failure into the error page.
pub fn fail(ctx: &Ctx, status: tonic::Status) -> Response {
    ctx.fail(PageError::Api(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_lose_the_prefix_and_the_index() {
        let s = tonic::Status::invalid_argument("credential.allowed_destinations[2]: bad host");
        assert_eq!(
            form_error(&s),
            Some(("allowed_destinations".into(), "bad host".into()))
        );
        let s = tonic::Status::invalid_argument("username: required");
        assert_eq!(form_error(&s), Some(("username".into(), "required".into())));
        let s = tonic::Status::permission_denied("no");
        assert_eq!(form_error(&s), None);
    }

    #[test]
    fn times_parse_and_show() {
        let t = parse_time("2026-12-01").unwrap().unwrap();
        assert_eq!(time(Some(&t)), "2026-12-01 00:00:00 UTC");
        let t = parse_time("2026-12-01T08:30").unwrap().unwrap();
        assert_eq!(time(Some(&t)), "2026-12-01 08:30:00 UTC");
        assert!(parse_time("yesterday").unwrap().is_err());
        assert!(parse_time(" ").is_none());
        assert_eq!(time(None), "—");
    }

    /// Every catalogue key named in these pages' code exists in both languages: also the
    /// labels passed to the field helpers, which the catalogue test (it looks only at calls
    /// of `t` with a literal) does not see.
    #[test]
    fn every_key_of_these_pages_exists_in_both_languages() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console/pages");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for piece in text.split('"').skip(1).step_by(2) {
                let Some((area, rest)) = piece.split_once('.') else {
                    continue;
                };
                if !["pages", "cred", "conn", "msg", "audit"].contains(&area)
                    || rest.is_empty()
                    || !rest
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    continue;
                }
                let key: &'static str = Box::leak(piece.to_owned().into_boxed_str());
                for lang in Lang::ALL {
                    assert_ne!(lang.t(key), key, "{key} is missing in {}", lang.tag());
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "the scan found {checked} keys");
    }
}
