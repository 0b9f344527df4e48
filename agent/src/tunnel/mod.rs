//! The tunnel: the agent's long-lived stream to the server, reconnected with backoff.

mod backoff;
mod delivery;
mod job;
mod session;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use backoff::{Backoff, BackoffPolicy};

use crate::allowlist::Allowlist;
use crate::channel::{ChannelError, RpcError};
use crate::config::AgentConfig;
use crate::enroll;
use crate::state::StateError;
use session::{Ctx, End};

/// Why the stream to the server cannot be opened (the tunnel logs it and reconnects).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The channel to the server cannot be opened.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The `Connect` call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the certificate when due: at start and every `renew_check_interval`.
async fn renewal_loop(config: AgentConfig) {
    loop {
        match enroll::renew_if_due(&config).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("the client certificate is not due for renewal"),
            Err(e) => tracing::warn!(error = %e, "certificate renewal failed; will retry"),
        }
        tokio::time::sleep(config.renew_check_interval).await;
    }
}

/// Holds the stream to the server until `shutdown` fires, reconnecting with backoff.
/// The agent must be enrolled.
pub async fn run(
    config: AgentConfig,
    allow: Allowlist,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TunnelError> {
    let slots = Arc::new(Semaphore::new(
        usize::try_from(config.max_concurrent_jobs.max(1)).unwrap_or(1),
    ));
    let pool = Arc::new(delivery::pool(&allow, config.max_concurrent_jobs));
    let ctx = Ctx {
        allow: Arc::new(allow),
        slots,
        hostname: enroll::hostname(),
        config,
        pool,
    };
    let _renewal = AbortOnDrop(tokio::spawn(renewal_loop(ctx.config.clone())));
    let mut backoff = Backoff::new(ctx.config.backoff);
    let mut jobs = JoinSet::new();
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        match session::connect_and_serve(&ctx, &mut jobs, &mut shutdown).await {
            End::Shutdown => {
                ctx.pool.close().await;
                tracing::info!("stopped");
                return Ok(());
            }
            End::Lost { reason, uptime } => {
                let delay = backoff.next_delay(uptime);
                tracing::warn!(reason = %reason, uptime = ?uptime, "lost the connection to the server");
                tracing::info!("reconnecting in {delay:?} (attempt {})", backoff.attempt());
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => {
                        session::drain_jobs(&ctx, &mut jobs).await;
                        ctx.pool.close().await;
                        tracing::info!("stopped");
                        return Ok(());
                    }
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
