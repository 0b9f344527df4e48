//! A pooled connection: opened by the same phases as [`run_session`](crate::run_session)
//! (DNS, connect, greeting, EHLO, STARTTLS, TLS, AUTH — same destination check, same TLS
//! and AUTH behaviour), then kept with what the relay advertised.

use std::time::Duration;

use tokio::time::Instant;

use crate::capabilities::Capabilities;
use crate::client::Link;
use crate::command::Command;
use crate::context::Ctx;
use crate::policy::DestinationCheck;
use crate::recorder::Recorder;
use crate::session::{Session, secrets_of};
use crate::setup::Prepared;
use crate::{Failure, SessionConfig};

/// An established, authenticated connection.
pub(crate) struct Pooled {
    /// The connection.
    pub(crate) link: Link,
    /// What the last `EHLO` advertised.
    pub(crate) capabilities: Capabilities,
    /// The configuration it was opened with; a different one for the same key does not
    /// reuse it.
    pub(crate) config: SessionConfig,
    /// Transactions started on it.
    pub(crate) messages: u32,
    /// When it was last handed back.
    pub(crate) idle_since: Instant,
}

impl Pooled {
    /// Opens a connection for `config` (checked into `prepared`), asking `policy` about
    /// every address first.
    pub(crate) async fn open(
        config: &SessionConfig,
        prepared: &Prepared,
        policy: &dyn DestinationCheck,
    ) -> Result<Pooled, Failure> {
        let deadline = Instant::now() + config.timeouts.overall;
        let mut session = Session {
            ctx: Ctx {
                cfg: config,
                host: prepared.host.clone(),
                helo: prepared.helo.clone(),
                deadline,
                extra_ca: prepared.extra_ca.clone(),
            },
            rec: Recorder::new(None, deadline, secrets_of(config)),
            policy,
            capabilities: Capabilities::default(),
        };
        let link = session.establish().await.inspect_err(|f| {
            tracing::info!(
                target: "mailplane::smtp::pool",
                class = f.class.as_str(),
                phase = f.phase.as_str(),
                "opening a pooled connection failed: {}", f.message
            );
        })?;
        tracing::debug!(
            target: "mailplane::smtp::pool",
            host = %prepared.host,
            port = config.port,
            pipelining = session.capabilities.pipelining,
            "pooled connection established"
        );
        Ok(Pooled {
            link,
            capabilities: session.capabilities,
            config: config.clone(),
            messages: 0,
            idle_since: Instant::now(),
        })
    }

    /// Whether it has been idle for `idle_timeout` or longer at `now`.
    pub(crate) fn expired(&self, idle_timeout: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.idle_since) >= idle_timeout
    }

    /// Says `QUIT` (its answer does not matter) and hangs up.
    pub(crate) async fn quit(mut self) {
        let limit = self.config.timeouts.quit;
        if let Err(e) = self.link.client.command(&Command::Quit, limit).await {
            tracing::debug!(target: "mailplane::smtp::pool", "QUIT on a pooled connection: {e}");
        }
        self.link.client.shutdown().await;
    }

    /// Hangs up without a word (the connection is broken or the relay is closing it).
    pub(crate) async fn drop_link(mut self) {
        self.link.client.shutdown().await;
    }
}
