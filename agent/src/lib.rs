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
//! `channel` → `enroll` → `tunnel` (each uses only modules before it; `allowlist` stands
//! alone), each with its own error type, gathered in [`AgentError`] here with `#[from]`.

use std::future::Future;

pub mod allowlist;
pub mod channel;
pub mod config;
pub mod enroll;
pub mod proxy;
pub mod state;
pub mod tunnel;

pub use channel::{ChannelError, RpcError};
pub use config::{AgentConfig, BackoffPolicy, ConfigError, LogFormat, ProxySetting, Token};
pub use enroll::{EnrollError, Enrolled};
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
}

/// Runs the agent until `shutdown` completes: enrolls first when there is no state and a
/// token is configured, then holds the stream to the server (reconnecting with backoff),
/// runs jobs, and on shutdown drains (see [`tunnel::run`]). Refuses to start without
/// `allowed_destinations`.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let allow = Allowlist::parse(&config.allowed_destinations)?;
    config.validate()?;
    if state::load(&config.state_dir)?.is_none() {
        if config.enrollment_token.is_none() {
            return Err(StateError::NotEnrolled(config.state_dir.clone()).into());
        }
        enroll::enroll(&config).await?;
    }
    Ok(tunnel::run(config, allow, shutdown).await?)
}

/// Enrolls with the configured token and writes the state directory; refuses when the
/// agent is already enrolled.
pub async fn enroll(config: &AgentConfig) -> Result<Enrolled, AgentError> {
    config.validate()?;
    Ok(enroll::enroll(config).await?)
}
