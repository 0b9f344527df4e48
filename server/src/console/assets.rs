//! The static files, embedded in the binary (no CDN, no npm at build time): htmx and its SSE
//! extension, checked in at their versions, and the stylesheet (screen and print).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "htmx-ext-sse-2.2.4.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-ext-sse-2.2.4.min.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
];

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, bytes)) => {
            let mut response = (*bytes).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
            // The names carry versions; the stylesheet changes only with the binary.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
