//! A pool of established, authenticated SMTP connections, keyed by account, for sending
//! many messages: sessions stay open between messages (`RSET` between them), at most
//! [`PoolConfig::max_sessions_per_key`] per key at once, each closed with `QUIT` after
//! [`PoolConfig::idle_timeout`] idle or [`PoolConfig::max_messages_per_connection`]
//! messages.
//!
//! A pooled connection the relay has closed meanwhile (EOF, reset, or `421` to `RSET` or
//! `MAIL FROM`) is noticed before the relay accepted anything, and the message goes over
//! a new connection once, transparently: the caller never sees the stale connection.
//!
//! Connections are opened exactly as [`run_session`](crate::run_session) opens them: the
//! same [`DestinationCheck`] on every resolved address, the same TLS and AUTH behaviour.

mod conn;
mod idle;
mod transaction;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use conn::Pooled;
use idle::{Shared, Slot, lock, reap};

use crate::context::Ctx;
use crate::delivery::{ConnectionUse, Delivery, Envelope, MessageOutcome};
use crate::delivery::{RecipientResult, RecipientStatus};
use crate::message::BuiltMessage;
use crate::policy::DestinationCheck;
use crate::setup::{Prepared, prepare_connection};
use crate::wire::data_payload;
use crate::{SessionConfig, SessionError};

/// The pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections (busy and idle) per key at once (default 4; at least 1). A send
    /// beyond that waits for one to come back.
    pub max_sessions_per_key: usize,
    /// How long a connection may sit idle before it is closed with `QUIT` (default 30 s).
    pub idle_timeout: Duration,
    /// Most messages (transactions) on one connection; then it is closed with `QUIT` and
    /// the next message opens a new one (default 100; at least 1).
    pub max_messages_per_connection: u32,
    /// How often idle connections are checked for [`PoolConfig::idle_timeout`] (default
    /// 1 s). An expired connection is also never handed out, whatever this says.
    pub reap_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_sessions_per_key: 4,
            idle_timeout: Duration::from_secs(30),
            max_messages_per_connection: 100,
            reap_interval: Duration::from_secs(1),
        }
    }
}

/// What a caller of [`Pool::send_with`] may add to a send.
#[derive(Clone, Copy, Default)]
pub struct SendOptions<'a> {
    /// Asked about every address a new connection for this send goes to, instead of the
    /// pool's own policy (e.g. a network connector's allowlist for the job's relay).
    pub check: Option<&'a dyn DestinationCheck>,
    /// Called once when the relay answers `354` to `DATA`, just before the message goes
    /// out: from then on, a connection lost before the final reply leaves the relay's state
    /// unknown (see [`MessageOutcome::AmbiguousAfterData`]).
    pub on_data: Option<&'a (dyn Fn() + Send + Sync)>,
}

impl std::fmt::Debug for SendOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOptions")
            .field("check", &self.check.is_some())
            .field("on_data", &self.on_data.is_some())
            .finish()
    }
}

/// A send that could not start (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The connection settings cannot run.
    #[error(transparent)]
    Config(#[from] SessionError),
    /// The envelope has no recipient.
    #[error("the envelope has no recipient")]
    NoRecipient,
    /// An envelope address contains characters that cannot go in an SMTP command.
    #[error("invalid envelope address {0:?}")]
    InvalidAddress(String),
    /// [`Pool::close`] was called.
    #[error("the pool is closed")]
    Closed,
}

/// A pool of SMTP connections keyed by `K` (e.g. an account id). See the module
/// documentation; [`Pool::close`] ends it.
pub struct Pool<K> {
    shared: Arc<Shared<K>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl<K> std::fmt::Debug for Pool<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .field("closed", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Pool<K> {
    /// A pool with `config`, asking `policy` about every address it connects to. Starts
    /// the idle reaper, a task owned by the pool: call it within a Tokio runtime.
    pub fn new(config: PoolConfig, policy: Arc<dyn DestinationCheck>) -> Self {
        let shared = Arc::new(Shared {
            config,
            policy,
            slots: Mutex::new(HashMap::new()),
        });
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        tasks.spawn(reap(Arc::clone(&shared), cancel.clone()));
        Pool {
            shared,
            tasks,
            cancel,
        }
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// How many idle connections `key` has now.
    pub fn idle_connections(&self, key: &K) -> usize {
        let slot = lock(&self.shared.slots).get(key).cloned();
        slot.map_or(0, |s| lock(&s.idle).len())
    }

    /// Sends one message for `key` over a pooled connection to the relay in `config`
    /// (its `message` and `stop_after` are ignored). `message` is the message as built
    /// (e.g. [`BuiltMessage::bytes`](crate::BuiltMessage::bytes)); it is sent with CRLF
    /// line endings and dot-stuffed by [`data_payload`].
    ///
    /// Connections are reused only for the same key and an equal `config`. Opening a
    /// connection and each transaction are each bounded by `config.timeouts.overall`, and
    /// every step by its own timeout from `config.timeouts`. Returns `Err` only when
    /// nothing could be sent; every relay or network problem is in the [`Delivery`].
    pub async fn send(
        &self,
        key: &K,
        config: &SessionConfig,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivery, PoolError> {
        self.send_with(key, config, envelope, message, SendOptions::default())
            .await
    }

    /// [`Pool::send`] with [`SendOptions`]: another destination check, and a call when the
    /// message starts going out.
    pub async fn send_with(
        &self,
        key: &K,
        config: &SessionConfig,
        envelope: &Envelope,
        message: &[u8],
        options: SendOptions<'_>,
    ) -> Result<Delivery, PoolError> {
        let policy = options.check.unwrap_or(self.shared.policy.as_ref());
        if self.cancel.is_cancelled() {
            return Err(PoolError::Closed);
        }
        check_envelope(envelope)?;
        let prepared = prepare_connection(config)?;
        let payload = data_payload(message);
        let slot = self.shared.slot(key);
        let _permit = tokio::select! {
            permit = Arc::clone(&slot.permits).acquire_owned() => {
                permit.map_err(|_| PoolError::Closed)?
            }
            () = self.cancel.cancelled() => return Err(PoolError::Closed),
        };
        let (mut conn, mut used) = match self.checkout(&slot, config).await {
            Some(conn) => (conn, ConnectionUse::Reused),
            None => match self.open(config, &prepared, policy, envelope).await {
                Ok(conn) => (conn, ConnectionUse::Fresh),
                Err(delivery) => return Ok(delivery),
            },
        };
        loop {
            let ctx = Ctx {
                cfg: config,
                host: prepared.host.clone(),
                helo: prepared.helo.clone(),
                deadline: Instant::now() + config.timeouts.overall,
                extra_ca: prepared.extra_ca.clone(),
            };
            let tx = transaction::run(&ctx, &mut conn, envelope, &payload, options.on_data).await;
            if tx.dead_before_accept && used == ConnectionUse::Reused {
                tracing::debug!(
                    target: "mailplane::smtp::pool",
                    "a pooled connection was dead ({}); reconnecting",
                    tx.outcome.failure().map(|f| f.message.as_str()).unwrap_or_default()
                );
                conn.drop_link().await;
                used = ConnectionUse::Reconnected;
                conn = match self.open(config, &prepared, policy, envelope).await {
                    Ok(conn) => conn,
                    Err(mut delivery) => {
                        delivery.connection = used;
                        return Ok(delivery);
                    }
                };
                continue;
            }
            self.checkin(&slot, conn, tx.reusable).await;
            return Ok(Delivery {
                recipients: tx.recipients,
                message: tx.outcome,
                connection: used,
            });
        }
    }

    /// [`Pool::send`] for a message built with [`build_message`](crate::build_message),
    /// to its envelope.
    pub async fn send_message(
        &self,
        key: &K,
        config: &SessionConfig,
        message: &BuiltMessage,
    ) -> Result<Delivery, PoolError> {
        self.send(key, config, &Envelope::of(message), &message.bytes)
            .await
    }

    /// Opens a connection, or gives the delivery that reports why it could not.
    async fn open(
        &self,
        config: &SessionConfig,
        prepared: &Prepared,
        policy: &dyn DestinationCheck,
        envelope: &Envelope,
    ) -> Result<Pooled, Delivery> {
        Pooled::open(config, prepared, policy)
            .await
            .map_err(|failure| Delivery {
                recipients: not_tried(envelope),
                message: MessageOutcome::failed(failure),
                connection: ConnectionUse::Fresh,
            })
    }

    /// The most recently used idle connection for `config` that has not expired; the
    /// expired and the stale ones met on the way are closed.
    async fn checkout(&self, slot: &Slot, config: &SessionConfig) -> Option<Pooled> {
        let idle_timeout = self.shared.config.idle_timeout;
        loop {
            let conn = lock(&slot.idle).pop()?;
            if conn.expired(idle_timeout, Instant::now()) || conn.config != *config {
                conn.quit().await;
                continue;
            }
            return Some(conn);
        }
    }

    /// Hands `conn` back, or closes it: when it is broken, used up, or the pool is closed.
    async fn checkin(&self, slot: &Slot, mut conn: Pooled, reusable: bool) {
        let limit = self.shared.config.max_messages_per_connection.max(1);
        if !reusable {
            conn.drop_link().await;
        } else if conn.messages >= limit || self.cancel.is_cancelled() {
            conn.quit().await;
        } else {
            conn.idle_since = Instant::now();
            lock(&slot.idle).push(conn);
        }
    }

    /// Stops the reaper, waits for it, and closes every idle connection with `QUIT`.
    /// Sends still running finish and then close their connection; new sends fail with
    /// [`PoolError::Closed`].
    pub async fn close(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        for (conn, _) in self.shared.take_idle(Instant::now(), true) {
            conn.quit().await;
        }
    }
}

impl<K> Drop for Pool<K> {
    fn drop(&mut self) {
        // The reaper ends on its own; idle connections are dropped without QUIT.
        self.cancel.cancel();
    }
}

/// Every recipient, not tried.
fn not_tried(envelope: &Envelope) -> Vec<RecipientResult> {
    envelope
        .rcpt_to
        .iter()
        .map(|a| RecipientResult {
            address: a.clone(),
            status: RecipientStatus::NotTried,
        })
        .collect()
}

/// At least one recipient, and no address that could smuggle a command.
fn check_envelope(envelope: &Envelope) -> Result<(), PoolError> {
    if envelope.rcpt_to.is_empty() {
        return Err(PoolError::NoRecipient);
    }
    let bad = |a: &str| a.chars().any(|c| c.is_control() || matches!(c, '<' | '>'));
    // The sender may be empty (the null sender `<>`); a recipient may not.
    let invalid = std::iter::once(&envelope.mail_from)
        .filter(|a| bad(a))
        .chain(envelope.rcpt_to.iter().filter(|a| a.is_empty() || bad(a)))
        .next();
    match invalid {
        Some(a) => Err(PoolError::InvalidAddress(a.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented() {
        let c = PoolConfig::default();
        assert_eq!(c.max_sessions_per_key, 4);
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.max_messages_per_connection, 100);
    }

    #[test]
    fn envelopes_that_could_smuggle_commands_are_refused() {
        let ok = Envelope::new("", vec!["b@example.org".into()]);
        assert!(check_envelope(&ok).is_ok());
        for env in [
            Envelope::new("a@example.org", vec![]),
            Envelope::new("a@example.org\r\nRSET", vec!["b@example.org".into()]),
            Envelope::new("a@example.org", vec!["b@example.org>".into()]),
            Envelope::new("a@example.org", vec![String::new()]),
        ] {
            assert!(check_envelope(&env).is_err(), "{env:?}");
        }
    }
}
