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
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            max_message_size: smtp::DEFAULT_MAX_MESSAGE_SIZE,
            retry: RetrySchedule::default(),
            pool: smtp::PoolConfig::default(),
            batch: 64,
            claim_timeout: Duration::from_secs(15 * 60),
        }
    }
}
