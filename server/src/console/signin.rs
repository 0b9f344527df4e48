//! Signing in with an API token (as Vault's UI does), signing out, and the language switch.
//! Sign-ins, failed ones included, are in the audit log; failures count toward the same
//! per-address limit as the API's.

use super::ctx::{self, Ctx};
use super::error::local_path;
use super::i18n::Lang;
use super::layout;
use super::session::{self, SIGNIN_COOKIE};
use super::{PageError, Shared};
use crate::audit::AuditContext;
use crate::domain::Role;
use crate::secret::Secret;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

/// The audit log's name of a console sign-in.
pub const SIGN_IN_RPC: &str = "console/SignIn";
/// The audit log's name of a console sign-out.
pub const SIGN_OUT_RPC: &str = "console/SignOut";

/// `?next=` of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct Next {
    /// Where to go after signing in.
    #[serde(default)]
    pub next: String,
}

fn signin_form(lang: Lang, csrf: &str, next: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.error role="alert" #signin-error { (error) }
        }
        form method="post" action="/sign-in" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="next" value=(next);
            div.field {
                label for="token" { (lang.t("signin.token")) }
                input #token type="password" name="token" required autocomplete="off"
                    aria-describedby="token-help"
                    aria-invalid=[error.map(|_| "true")];
                p.muted #token-help { (lang.t("signin.token_help")) }
            }
            div.actions { button type="submit" { (lang.t("signin.submit")) } }
        }
    }
}

/// The sign-in page: a fresh CSRF cookie for its form.
fn render(
    lang: Lang,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
    secure: bool,
) -> Response {
    let csrf = session::random_token();
    let here = format!(
        "/sign-in?next={}",
        percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
    );
    let body = signin_form(lang, &csrf, next, error);
    (
        status,
        [(
            header::SET_COOKIE,
            session::set_cookie(SIGNIN_COOKIE, &csrf, secure, None),
        )],
        layout::bare(lang, lang.t("signin.title"), &here, body),
    )
        .into_response()
}

/// `GET /sign-in`.
pub async fn form(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(next): Query<Next>,
) -> Response {
    let lang = ctx::lang(&headers);
    render(
        lang,
        local_path(&next.next),
        None,
        StatusCode::OK,
        console.tls,
    )
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    /// The API token.
    #[serde(default)]
    pub token: String,
    /// The form's CSRF token (also in the sign-in cookie).
    #[serde(default)]
    pub csrf: String,
    /// Where to go next.
    #[serde(default)]
    pub next: String,
}

/// `POST /sign-in`.
pub async fn submit(
    State(console): State<Shared>,
    ctx::Peer(peer): ctx::Peer,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let lang = ctx::lang(&headers);
    let token = Secret::new(form.token);
    let next = local_path(&form.next).to_owned();
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let expected = session::cookie(cookies, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same_secret(&form.csrf, expected) {
        return render(
            lang,
            &next,
            Some(lang.t("error.csrf")),
            StatusCode::FORBIDDEN,
            console.tls,
        );
    }
    let actor = match console
        .auth
        .sign_in(SIGN_IN_RPC, token.expose(), peer.map(|p| p.ip()))
        .await
    {
        Ok(actor) => actor,
        Err(status) => {
            let message = if status.code() == tonic::Code::ResourceExhausted {
                lang.t("signin.too_many")
            } else {
                lang.t("signin.failed")
            };
            return render(
                lang,
                &next,
                Some(message),
                StatusCode::UNAUTHORIZED,
                console.tls,
            );
        }
    };
    if actor.role == Role::Sender {
        return render(
            lang,
            &next,
            Some(lang.t("signin.sender")),
            StatusCode::FORBIDDEN,
            console.tls,
        );
    }
    let audit = AuditContext {
        actor: format!("tokens/{} ({})", actor.token_id, actor.name),
        peer: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        rpc: SIGN_IN_RPC.into(),
    };
    let resource = format!("tokens/{}", actor.token_id);
    let id = match console.sessions.create(token, actor).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot store a session");
            return PageError::Api(tonic::Status::unavailable(
                "the console cannot store the session in the database; try again",
            ))
            .into_page(lang);
        }
    };
    if let Err(e) = console
        .store
        .record_event(
            &audit,
            &resource,
            &serde_json::json!({"console": "signed in"}),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot record a console sign-in");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (
                header::SET_COOKIE,
                session::set_cookie(session::COOKIE, &id, console.tls, None),
            ),
        ],
    )
        .into_response()
}

/// A form that carries only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /sign-out`.
pub async fn sign_out(ctx: Ctx, Form(form): Form<CsrfOnly>) -> Response {
    if let Err(e) = ctx.check_csrf(&form.csrf) {
        return ctx.fail(e);
    }
    if let Err(e) = ctx.console.sessions.remove(&ctx.session_id).await {
        tracing::error!(error = %e, "console: cannot end a session");
        return ctx.fail(tonic::Status::unavailable(
            "the console cannot end the session in the database; try again",
        ));
    }
    let actor = &ctx.session.actor;
    let audit = AuditContext {
        actor: format!("tokens/{} ({})", actor.token_id, actor.name),
        peer: ctx.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        rpc: SIGN_OUT_RPC.into(),
    };
    if let Err(e) = ctx
        .console
        .store
        .record_event(
            &audit,
            &format!("tokens/{}", actor.token_id),
            &serde_json::json!({"console": "signed out"}),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot record a console sign-out");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/sign-in".to_owned()),
            (
                header::SET_COOKIE,
                session::set_cookie(session::COOKIE, "", ctx.console.tls, Some(0)),
            ),
        ],
    )
        .into_response()
}

/// `?back=` of the language switch.
#[derive(Debug, Deserialize)]
pub struct Back {
    /// The page to return to.
    #[serde(default)]
    pub back: String,
}

/// `GET /lang/{tag}`: remembers the language for a year and returns to the page.
pub async fn switch_language(
    State(console): State<Shared>,
    Path(tag): Path<String>,
    Query(back): Query<Back>,
) -> Response {
    let Some(lang) = Lang::from_tag(&tag) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cookie = session::set_cookie(
        session::LANG_COOKIE,
        lang.tag(),
        console.tls,
        Some(365 * 24 * 3600),
    );
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(local_path(&back.back)),
    )
        .into_response()
}
