//! How the outbox delivers: limits, the retry schedule and the connection pool.

use crate::domain::retry::RetrySchedule;
use mailplane_smtp as smtp;
use std::time::Duration;

/// How the outbox delivers.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// The largest message `SendMessage` accepts, built (default 25 MiB). An account's
    /// `attachment_size_limit_bytes`, when set, lowers it for that account.
    pub max_message_size: usize,
    /// When transient failures are retried and when the outbox gives up.
    pub retry: RetrySchedule,
    /// SMTP sessions per account at once, idle time, messages per connection.
    pub pool: smtp::PoolConfig,
    /// The most messages claimed at once (and so delivered at once, over all accounts).
    pub batch: u32,
    /// How long a message may stay SENDING before another start of the server (or, with
    /// PostgreSQL, another replica) takes it for dead and queues it again.
    pub claim_timeout: Duration,
    /// How long the content of a finished (sent, failed, cancelled) message is kept (default
    /// 7 days); then only its record remains.
    pub body_retention: Duration,
    /// How long the record of a finished message is kept (default 90 days).
    pub log_retention: Duration,
    /// How often finished messages are purged and stuck claims looked for (default 1 min).
    pub sweep_interval: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            max_message_size: smtp::DEFAULT_MAX_MESSAGE_SIZE,
            retry: RetrySchedule::default(),
            pool: smtp::PoolConfig::default(),
            batch: 64,
            claim_timeout: Duration::from_secs(15 * 60),
            body_retention: Duration::from_secs(7 * 86_400),
            log_retention: Duration::from_secs(90 * 86_400),
            sweep_interval: Duration::from_secs(60),
        }
    }
}
