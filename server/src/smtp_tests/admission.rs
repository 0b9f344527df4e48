//! Admission: whether a test may start. An account runs a limited number of tests at once,
//! and a direct test to a destination that the server's policy denies is refused before
//! anything is stored or sent.

use crate::domain::{Account, AccountId};
use crate::error::{Error, Result};
use mailplane_smtp::{DestinationCheck as _, DestinationPolicy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The running tests of each account, against a per-account limit.
pub struct Slots {
    limit: usize,
    running: Arc<Mutex<HashMap<AccountId, usize>>>,
}

/// One of an account's slots, held until dropped.
pub struct Slot {
    running: Arc<Mutex<HashMap<AccountId, usize>>>,
    account: AccountId,
}

fn lock(running: &Mutex<HashMap<AccountId, usize>>) -> MutexGuard<'_, HashMap<AccountId, usize>> {
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slots {
    /// At most `limit` tests at once per account.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            running: Arc::default(),
        }
    }

    /// Takes a slot of `account`; `ResourceExhausted` when all are taken.
    pub fn take(&self, account: AccountId) -> Result<Slot> {
        let mut running = lock(&self.running);
        let n = running.entry(account).or_insert(0);
        if *n >= self.limit {
            return Err(Error::ResourceExhausted(format!(
                "{account} already has {n} tests running (the limit is {}); wait for one to finish",
                self.limit
            )));
        }
        *n += 1;
        Ok(Slot {
            running: Arc::clone(&self.running),
            account,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = lock(&self.running);
        if let Some(n) = running.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.account);
            }
        }
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
    fn slots_are_limited_per_account_and_freed_on_drop() {
        let slots = Slots::new(2);
        let a = slots.take(AccountId(1)).unwrap();
        let _b = slots.take(AccountId(1)).unwrap();
        let err = slots.take(AccountId(1)).err().unwrap();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        let _other = slots.take(AccountId(2)).unwrap();
        drop(a);
        assert!(slots.take(AccountId(1)).is_ok());
    }
}
