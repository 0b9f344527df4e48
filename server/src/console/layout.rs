//! The page shell every screen shares (header, navigation, language switch, sign-out), the
//! error page, and the security headers of every response: a strict Content-Security-Policy
//! with no inline script or style, no framing, no sniffing, no referrer, no caching of pages.

use super::Ctx;
use super::i18n::Lang;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// The policy: everything from this origin only, no inline code, no plugins, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the security headers to every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The accounts report and the settings window.
    Accounts,
    /// Credentials.
    Credentials,
    /// Network connectors.
    Connectors,
    /// The outgoing log and the queue.
    Messages,
    /// The audit log.
    Audit,
}

fn head(lang: Lang, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject its indicator styles: the policy allows no inline style.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
            title { (title) " · " (lang.t("app.name")) }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/htmx-2.0.11.min.js" defer {}
            script src="/assets/htmx-ext-sse-2.2.4.min.js" defer {}
        }
    }
}

/// A page of the signed-in console.
pub fn page(ctx: &Ctx, section: Section, title: &str, body: Markup) -> Markup {
    let lang = ctx.lang;
    let nav = [
        (
            Section::Accounts,
            "/accounts",
            "nav.accounts",
            "SmtpAccountService/ListAccounts",
        ),
        (
            Section::Credentials,
            "/credentials",
            "nav.credentials",
            "CredentialService/ListCredentials",
        ),
        (
            Section::Connectors,
            "/connectors",
            "nav.connectors",
            "NetworkConnectorService/ListConnectors",
        ),
        (
            Section::Messages,
            "/messages",
            "nav.messages",
            "MessageService/ListMessages",
        ),
        (
            Section::Audit,
            "/audit",
            "nav.audit",
            "AuditService/ListEvents",
        ),
    ];
    let hx_headers = format!(r#"{{"X-CSRF-Token":"{}"}}"#, ctx.session.csrf);
    html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            (head(lang, title))
            body hx-headers=(hx_headers) {
                a.skip href="#main" { (lang.t("nav.skip")) }
                header.top {
                    span.brand { (lang.t("app.name")) }
                    nav aria-label=(lang.t("nav.label")) {
                        ul {
                            @for (s, href, key, rpc) in nav {
                                @if ctx.may(rpc) {
                                    li {
                                        a href=(href) aria-current=[(s == section).then_some("page")] {
                                            (lang.t(key))
                                        }
                                    }
                                }
                            }
                        }
                    }
                    (language_switch(lang, &ctx.here))
                    form.signout method="post" action="/sign-out" {
                        input type="hidden" name="csrf" value=(ctx.session.csrf);
                        span.who {
                            (ctx.session.actor.name) " (" (ctx.session.actor.role.as_str()) ")"
                        }
                        button type="submit" { (lang.t("nav.sign_out")) }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Links to the other languages, coming back to `here`.
pub fn language_switch(lang: Lang, here: &str) -> Markup {
    let back = percent_encoding::utf8_percent_encode(here, percent_encoding::NON_ALPHANUMERIC);
    html! {
        nav.lang aria-label=(lang.t("nav.language")) {
            @for other in Lang::ALL {
                @if other == lang {
                    span aria-current="true" lang=(other.tag()) { (other.tag()) }
                } @else {
                    a href={ "/lang/" (other.tag()) "?back=" (back) } lang=(other.tag()) hreflang=(other.tag()) {
                        (other.tag())
                    }
                }
            }
        }
    }
}

/// A page without the navigation (sign-in, errors before a session).
pub fn bare(lang: Lang, title: &str, here: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            (head(lang, title))
            body {
                header.top {
                    span.brand { (lang.t("app.name")) }
                    (language_switch(lang, here))
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error page: what the API said, and a way back.
pub fn error_page(lang: Lang, code: StatusCode, message: &str) -> Response {
    let title = lang.t("error.title");
    let body = html! {
        p.error role="alert" { (message) }
        p { a href="/accounts" { (lang.t("error.back")) } }
    };
    (code, bare(lang, title, "/", body)).into_response()
}
