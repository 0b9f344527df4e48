//! The agent's metrics listener (`--metrics-listen`): `/metrics` (OpenMetrics when the
//! scraper asks for it, as Prometheus does; the classic text format otherwise), `/healthz`
//! (the process answers) and `/readyz` (at least one stream to a server is up). Plain HTTP:
//! bind it where only the scraper reaches it.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use mailplane_exposition::Format;
use tokio::net::TcpListener;

use super::Metrics;

async fn metrics(State(m): State<Arc<Metrics>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match m.encode(format) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.streams_connected() > 0 {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no stream to a server is connected\n",
        )
    }
}

/// The routes of the listener.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

/// Serves the metrics listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}
