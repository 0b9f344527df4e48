//! The metrics listener (`--metrics-listen`): `/metrics` in the Prometheus text format,
//! `/healthz` (the process answers) and `/readyz` (it serves, and its database answers), for
//! load balancers and probes that do not speak gRPC health. Plain HTTP: bind it where only
//! the scraper reaches it.

use super::{AccountLabels, ConnectorLabels, StateLabels, global};
use crate::store::Store;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use mailplane_exposition::Format;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// What the handlers read.
#[derive(Clone)]
pub struct MetricsState {
    /// The database, for the gauges read at scrape time.
    pub store: Arc<Store>,
    /// The agent streams live here and the jobs they run.
    pub agent_load: Arc<dyn Fn() -> (usize, u64) + Send + Sync>,
    /// Set while the API serves; cleared when shutdown starts.
    pub ready: Arc<AtomicBool>,
}

/// The exposition: OpenMetrics when the scraper asks for it (Prometheus does), the classic
/// text format otherwise (`promtool check metrics`, `curl`, older agents).
async fn metrics(State(state): State<MetricsState>, headers: HeaderMap) -> impl IntoResponse {
    refresh(&state).await;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match global().encode(format) {
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

/// Sets the gauges that describe now: messages by state and each account's queue from the
/// database (left as they were if it does not answer), and the live agent streams.
async fn refresh(state: &MetricsState) {
    let m = global();
    let (streams, jobs) = (state.agent_load)();
    m.agent_streams
        .set(i64::try_from(streams).unwrap_or(i64::MAX));
    m.agent_jobs.set(i64::try_from(jobs).unwrap_or(i64::MAX));
    match state.store.connector_agent_counts().await {
        Ok(counts) => {
            m.connector_agents.clear();
            for (connector, agents) in counts {
                m.connector_agents
                    .get_or_create(&ConnectorLabels {
                        connector: connector.to_string(),
                    })
                    .set(agents);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the connectors' agents"),
    }
    let summaries = match state.store.queue_summaries().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue");
            return;
        }
    };
    let now = crate::domain::now_micros();
    m.queue_depth.clear();
    m.queue_oldest.clear();
    let (mut queued, mut sending, mut deferred) = (0, 0, 0);
    for q in &summaries {
        queued += q.queued;
        sending += q.sending;
        deferred += q.deferred;
        let account = AccountLabels {
            account: q.account.0.to_string(),
        };
        m.queue_depth
            .get_or_create(&account)
            .set(q.queued + q.sending + q.deferred);
        let age = q.oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
        m.queue_oldest.get_or_create(&account).set(age);
    }
    for (state, n) in [
        ("QUEUED", queued),
        ("SENDING", sending),
        ("DEFERRED", deferred),
    ] {
        m.messages
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .set(n);
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<MetricsState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match state.store.queue_summaries().await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer\n",
        ),
    }
}

/// Serves the metrics listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: MetricsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
