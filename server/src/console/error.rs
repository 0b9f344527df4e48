//! How a page fails: a status the API gave, shown in the user's language with the API's own
//! message, or a redirect to sign in.

use super::i18n::Lang;
use super::layout;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a page cannot be shown.
#[derive(Debug)]
pub enum PageError {
    /// No live session: sign in, then come back to `next`.
    SignIn {
        /// Where to come back to.
        next: String,
    },
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// The API refused or failed.
    Api(tonic::Status),
}

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        PageError::Api(status)
    }
}

/// `next` if it is a path on this site, `/` otherwise (no open redirect).
pub fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next
    } else {
        "/"
    }
}

impl PageError {
    /// The response, with the page in `lang`.
    pub fn into_page(self, lang: Lang) -> Response {
        match self {
            PageError::SignIn { next } => {
                let to = format!(
                    "/sign-in?next={}",
                    percent_encoding::utf8_percent_encode(
                        local_path(&next),
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, to.clone()),
                        (header::HeaderName::from_static("hx-redirect"), to),
                    ],
                )
                    .into_response()
            }
            PageError::Csrf => {
                layout::error_page(lang, StatusCode::FORBIDDEN, lang.t("error.csrf"))
            }
            PageError::Api(status) => {
                let code = match status.code() {
                    tonic::Code::Unauthenticated => {
                        return PageError::SignIn { next: "/".into() }.into_page(lang);
                    }
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::AlreadyExists
                    | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
                    tonic::Code::Aborted => StatusCode::CONFLICT,
                    tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                    tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                layout::error_page(lang, code, status.message())
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.into_page(Lang::En)
    }
}
