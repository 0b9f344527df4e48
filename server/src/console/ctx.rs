//! What a page handler knows about its request: the session, the language, the browser's
//! address, and the API as the signed-in user.

use super::api::UserApi;
use super::i18n::Lang;
use super::session::{self, Session};
use super::{PageError, Shared};
use crate::auth::access;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use std::net::SocketAddr;
use std::sync::Arc;

/// A signed-in request. Extracting it from a request without a live session redirects to the
/// sign-in page, which comes back to this page afterwards.
pub struct Ctx {
    /// The console.
    pub console: Shared,
    /// The session.
    pub session: Arc<Session>,
    /// The session's id (the cookie's value).
    pub session_id: String,
    /// The language of the page.
    pub lang: Lang,
    /// The browser's address.
    pub peer: Option<SocketAddr>,
    /// The path and query of this request, to come back to.
    pub here: String,
    /// Whether htmx made the request (a fragment is answered).
    pub htmx: bool,
    /// The CSRF token htmx sent as `X-CSRF-Token` (empty without one).
    pub csrf_header: String,
}

/// The browser's address.
pub fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// The language: the user's switch (a cookie), else the browser's `Accept-Language`.
pub fn lang(headers: &HeaderMap) -> Lang {
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    session::cookie(cookies, session::LANG_COOKIE)
        .and_then(Lang::from_tag)
        .unwrap_or_else(|| {
            Lang::negotiate(
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok()),
            )
        })
}

/// The browser's address, as an extractor.
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(parts)))
    }
}

impl FromRequestParts<Shared> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, console: &Shared) -> Result<Self, PageError> {
        let here = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let cookies = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok());
        let lang = lang(&parts.headers);
        let Some(session_id) = session::cookie(cookies, session::COOKIE).map(str::to_owned) else {
            return Err(PageError::SignIn { next: here });
        };
        let session = match console.sessions.get(&session_id).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(PageError::SignIn { next: here }),
            Err(e) => {
                tracing::error!(error = %e, "console: cannot read the session");
                return Err(PageError::Api(tonic::Status::unavailable(
                    "the console cannot read its sessions from the database; try again",
                )));
            }
        };
        // A token revoked or expired since the sign-in ends the session on every replica.
        if let Err(status) = console.auth.actor(session.token.expose()).await {
            if status.code() == tonic::Code::Unauthenticated {
                if let Err(e) = console.sessions.remove(&session_id).await {
                    tracing::warn!(error = %e, "console: cannot end a session");
                }
                return Err(PageError::SignIn { next: here });
            }
            return Err(PageError::Api(status));
        }
        Ok(Self {
            console: Arc::clone(console),
            session,
            session_id,
            lang,
            peer: peer(parts),
            here,
            htmx: parts.headers.contains_key("hx-request"),
            csrf_header: parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

impl Ctx {
    /// The API as this user.
    pub fn api(&self) -> UserApi {
        // A token that made a session is header-safe: it was sent as one to sign in.
        UserApi::new(
            self.console.api.clone(),
            self.session.token.expose(),
            self.peer,
        )
        .unwrap_or_else(|| unreachable!("a signed-in token is a valid header value"))
    }

    /// Whether the user's role may call `rpc` (`"SmtpAccountService/UpdateAccount"`), by the
    /// API's own RBAC table: what it may not do, the console does not offer.
    pub fn may(&self, rpc: &str) -> bool {
        access(&format!("/mailplane.v1.{rpc}")).allows(self.session.actor.role)
    }

    /// Checks the CSRF token of a write: the form's `csrf` field (`form`), or, when the form
    /// has none, the `X-CSRF-Token` header htmx sends.
    pub fn check_csrf(&self, form: &str) -> Result<(), PageError> {
        let sent = if form.is_empty() {
            self.csrf_header.as_str()
        } else {
            form
        };
        if session::same_secret(sent, &self.session.csrf) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }
}

/// What a page handler returns: the page, or the error page in the user's language.
pub type PageResult = Result<axum::response::Response, axum::response::Response>;

impl Ctx {
    /// The error page for `e`, in the user's language (a refused token leads to sign-in).
    pub fn fail(&self, e: impl Into<PageError>) -> axum::response::Response {
        e.into().into_page(self.lang)
    }
}
