//! How tests run: the server's SMTP settings.

use super::remote::FailoverPolicy;
use mailplane_smtp as smtp;
use std::time::Duration;

/// How tests run.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Which destinations a test may connect to, checked after DNS on every address.
    pub policy: smtp::DestinationPolicy,
    /// Per-phase timeouts and the overall deadline.
    pub timeouts: smtp::Timeouts,
    /// An extra CA (PEM) trusted for relays with an internal PKI.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The roots relays' certificates are verified against besides the extra CA.
    pub trust: smtp::TrustStore,
    /// The most tests that may run at once on one account (on all replicas together).
    pub max_tests_per_account: usize,
    /// The most tests that may run at once on this server, all accounts together.
    pub max_tests_running: usize,
    /// How long a finished test's record and transcript are kept (default 30 days).
    pub test_retention: Duration,
    /// How long a test waits for a live agent of its account's connector.
    pub connector_wait: Duration,
    /// What happens when the agent running a test goes away.
    pub failover: FailoverPolicy,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            policy: smtp::DestinationPolicy {
                deny: smtp::DestinationPolicy::default_deny(),
                allow: Vec::new(),
            },
            timeouts: smtp::Timeouts::default(),
            extra_ca_pem: None,
            trust: smtp::TrustStore::default(),
            max_tests_per_account: 4,
            max_tests_running: 64,
            test_retention: Duration::from_secs(30 * 86_400),
            connector_wait: Duration::from_secs(30),
            failover: FailoverPolicy::default(),
        }
    }
}
