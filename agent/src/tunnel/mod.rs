//! The tunnel: the agent's long-lived streams to the servers (`connections` of them, to
//! different servers when it can; see `servers`), each reconnected with backoff.

mod backoff;
mod delivery;
mod job;
mod servers;
mod session;
mod tokens;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use backoff::{Backoff, BackoffPolicy};

use crate::allowlist::Allowlist;
use crate::channel::{ChannelError, RpcError};
use crate::config::AgentConfig;
use crate::enroll;
use crate::metrics::{Metrics, StreamState};
use crate::state::StateError;
use servers::Servers;
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

/// Holds `config.connections` streams to the servers until `shutdown` fires, each
/// reconnecting with its own backoff, all sharing the job slots, the allowlist and the
/// delivery pool, and counting in `metrics`; on shutdown every stream drains, then this
/// returns. The agent must be enrolled.
pub async fn run(
    config: AgentConfig,
    allow: Allowlist,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TunnelError> {
    let slots = Arc::new(Semaphore::new(
        usize::try_from(config.max_concurrent_jobs.max(1)).unwrap_or(1),
    ));
    let pool = Arc::new(delivery::pool(&allow, config.max_concurrent_jobs));
    let allow = Arc::new(allow);
    let ctx = Arc::new(Ctx {
        tokens: Arc::new(tokens::AgentTokens::new(
            Arc::clone(&allow),
            Arc::clone(&metrics),
        )),
        metrics,
        allow,
        slots,
        hostname: enroll::hostname(),
        servers: Servers::new(&config),
        config,
        pool,
    });
    let _renewal = AbortOnDrop(tokio::spawn(renewal_loop(ctx.config.clone())));
    let stop = CancellationToken::new();
    let mut streams = JoinSet::new();
    for stream in 0..usize::try_from(ctx.config.connections.max(1)).unwrap_or(1) {
        streams.spawn(stream_loop(Arc::clone(&ctx), stream, stop.clone()));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = shutdown.as_mut() => break,
            // The loops end only on shutdown: one ending now has panicked; the others go on.
            Some(ended) = streams.join_next() => if let Err(e) = ended {
                tracing::error!(error = %e, "a stream loop failed; the other streams go on");
            },
        }
    }
    stop.cancel();
    while let Some(ended) = streams.join_next().await {
        if let Err(e) = ended {
            tracing::error!(error = %e, "a stream to the server failed while draining");
        }
    }
    ctx.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// One stream: connects, serves, and reconnects with backoff (after a whole round of the
/// servers failed) until `stop` is cancelled; then drains its jobs.
async fn stream_loop(ctx: Arc<Ctx>, stream: usize, stop: CancellationToken) {
    let mut backoff = Backoff::new(ctx.config.backoff);
    let mut jobs = JoinSet::new();
    let mut last = None;
    let mut status = ctx.metrics.stream();
    loop {
        match session::connect_and_serve(&ctx, stream, &mut last, &mut jobs, &mut status, &stop)
            .await
        {
            End::Shutdown => return,
            End::Lost { reason, uptime } => {
                let delay = backoff.next_delay(uptime);
                // The server lost, or the last one of the failed round (the first configured
                // when the round had none to try).
                let server = status
                    .server()
                    .or(ctx.config.servers.first().map(String::as_str))
                    .unwrap_or_default()
                    .to_owned();
                status.set(&server, StreamState::Backoff);
                ctx.metrics.reconnect(&server);
                tracing::warn!(stream, reason = %reason, uptime = ?uptime, "lost the connection to the server");
                tracing::info!(
                    stream,
                    "reconnecting in {delay:?} (attempt {})",
                    backoff.attempt()
                );
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        session::drain_jobs(&ctx, &mut jobs).await;
                        return;
                    }
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
