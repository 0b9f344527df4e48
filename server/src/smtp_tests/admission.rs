//! Admission: a direct test to a destination that the server's policy denies is refused
//! before anything is stored or sent. (The per-account cap on tests at once is counted in the
//! database, for all replicas: see `Store::create_test`.)

use crate::domain::Account;
use crate::error::{Error, Result};
use mailplane_smtp::{DestinationCheck as _, DestinationPolicy};
use std::time::Duration;

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
