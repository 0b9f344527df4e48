//! `mailplane-agent`: the network connector. It runs SMTP sessions with `mailplane-smtp`, the
//! same session library as the server's direct path, so that every send takes one code path.
//!
//! The agent runs inside a restricted network, dials out to the server's agent listener
//! over TLS and holds an `AgentService.Connect` stream (or several, to several server
//! replicas: see [`tunnel`]): the server sends `SmtpJob`s, the agent runs each with
//! [`mailplane_smtp::run_session`] (limited to its `allowed_destinations`) and streams the
//! phases and the outcome back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mailplane_agent::AgentError> {
//! use mailplane_agent::{AgentConfig, run};
//! let config = AgentConfig::new(
//!     "https://mailplane.example.org:7751",
//!     "/etc/mailplane-agent/server-ca.pem",
//!     "/var/lib/mailplane-agent",
//!     vec!["smtp.corp.example:587".into()],
//! );
//! run(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

//! The modules depend on each other in one direction only: `proxy` → `config` → `state` →
//! `channel` → `enroll` → `tunnel` (each uses only modules before it; `allowlist` and
//! `metrics` stand alone), each with its own error type, gathered in [`AgentError`] here
//! with `#[from]`.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub mod allowlist;
pub mod channel;
pub mod config;
pub mod enroll;
pub mod metrics;
pub mod proxy;
pub mod state;
pub mod tunnel;

pub use channel::{ChannelError, RpcError};
pub use config::{AgentConfig, BackoffPolicy, ConfigError, LogFormat, ProxySetting, Token};
pub use enroll::{EnrollError, Enrolled};
pub use metrics::Metrics;
pub use proxy::{ProxyError, ProxyUrl};
pub use state::StateError;
pub use tunnel::TunnelError;

use allowlist::{Allowlist, AllowlistError};

/// Why the agent cannot enroll or run: each module's own error, gathered here.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid (including the server URL).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `allowed_destinations` is empty or invalid.
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    /// The state directory is unusable, or holds no enrollment.
    #[error(transparent)]
    State(#[from] StateError),
    /// The channel to the server cannot be opened.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Enrollment or renewal failed.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// The stream to the server failed.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// The metrics listener (`--metrics-listen`) cannot be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` completes: enrolls first when there is no state and a
/// token is configured, then holds the stream to the server (reconnecting with backoff),
/// runs jobs, and on shutdown drains (see [`tunnel::run`]). Refuses to start without
/// `allowed_destinations`. With `metrics_listen` set, binds it first (a failure is an
/// error) and serves the agent's metrics there until the agent stops.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    run_with(config, listener, shutdown).await
}

/// [`run`] with the metrics served on `metrics_listener` (bound already, e.g. to
/// `127.0.0.1:0` by a test; `config.metrics_listen` is not used), if any.
pub async fn run_with(
    config: AgentConfig,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let allow = Allowlist::parse(&config.allowed_destinations)?;
    config.validate()?;
    let metrics = Metrics::new(&config.servers);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if let Some(listener) = metrics_listener {
        match listener.local_addr() {
            Ok(addr) => tracing::info!(addr = %addr, "metrics listening"),
            Err(e) => tracing::warn!(error = %e, "metrics listening (address unknown)"),
        }
        let (metrics, stop) = (Arc::clone(&metrics), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = metrics::http::serve(listener, metrics, stop.cancelled_owned()).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    let result = enroll_and_run(config, allow, metrics, shutdown).await;
    stop.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Err(e) = ended {
            tracing::error!(error = %e, "the metrics listener task failed");
        }
    }
    result
}

/// Enrolls first when there is no state (and a token), then runs the tunnel.
async fn enroll_and_run(
    config: AgentConfig,
    allow: Allowlist,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    if state::load(&config.state_dir)?.is_none() {
        if config.enrollment_token.is_none() {
            return Err(StateError::NotEnrolled(config.state_dir.clone()).into());
        }
        enroll::enroll(&config).await?;
    }
    Ok(tunnel::run(config, allow, metrics, shutdown).await?)
}

/// Enrolls with the configured token and writes the state directory; refuses when the
/// agent is already enrolled.
pub async fn enroll(config: &AgentConfig) -> Result<Enrolled, AgentError> {
    config.validate()?;
    Ok(enroll::enroll(config).await?)
}
