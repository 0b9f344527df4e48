//! Admission: a direct test to a destination that the server's policy denies is refused
//! before anything is stored or sent. (The per-account cap on tests at once is counted in the
//! database, for all replicas: see `Store::create_test`.)

use crate::domain::{Account, rules};
use crate::error::{Error, Result};
use mailplane_smtp::{DestinationCheck as _, DestinationPolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The tests running on this server, against its cap (`max_tests_running`).
#[derive(Debug, Default)]
pub struct Running(Arc<AtomicUsize>);

/// One running test, counted until dropped.
#[derive(Debug)]
pub struct RunningTest(Arc<AtomicUsize>);

impl Running {
    /// Counts one more test, unless `limit` are running.
    pub fn admit(&self, limit: usize) -> Result<RunningTest> {
        let before = self.0.fetch_add(1, Ordering::SeqCst);
        let admitted = RunningTest(Arc::clone(&self.0));
        rules::server_test_cap(before, limit)?;
        Ok(admitted)
    }
}

impl Drop for RunningTest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks a direct test's destination: when every address the host resolves to is denied,
/// the test is refused with the rule named. A name that does not resolve (within
/// `dns_timeout`) is let through: the session reports it, as DNS.
pub async fn check_destination(
    policy: &DestinationPolicy,
    dns_timeout: Duration,
    account: &Account,
) -> Result<()> {
    let (host, port) = (account.spec.host.as_str(), account.spec.port);
    let lookup = tokio::time::timeout(dns_timeout, tokio::net::lookup_host((host, port))).await;
    let Ok(Ok(addrs)) = lookup else {
        return Ok(());
    };
    let mut denied = None;
    for addr in addrs {
        match policy.check(addr) {
            Ok(()) => return Ok(()),
            Err(d) => denied = Some(d),
        }
    }
    match denied {
        Some(d) => Err(Error::PermissionDenied(format!(
            "{}: destination {} ({host}) is denied by the server's destination policy, rule \
             {:?}; ask the operator to allow it (--smtp-allow) if it is a legitimate relay",
            account.id, d.addr, d.rule
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_cap_counts_running_tests_and_frees_them() {
        let running = Running::default();
        let a = running.admit(2).unwrap();
        let _b = running.admit(2).unwrap();
        let err = running.admit(2).unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        drop(a);
        assert!(running.admit(2).is_ok(), "a finished test frees its place");
    }
}
