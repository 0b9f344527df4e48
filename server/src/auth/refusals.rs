//! Refused calls in the audit log, collapsed so that a flood of them cannot fill it: the first
//! refusal from a peer (and caller) in a minute inserts an event; later ones in the same minute
//! raise that event's `count` instead of adding rows. Kept in memory, so per replica: a peer
//! refused by three replicas in one minute has up to three events.

use crate::audit::AuditContext;
use crate::error::Result;
use crate::store::Store;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long one event collects the refusals of one peer and caller.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Windows kept at most before expired ones are dropped.
const MAX_WINDOWS: usize = 10_000;

/// The event that stands for a peer's refusals in the current window.
struct Window {
    /// When the window (and its event) started.
    since: Instant,
    /// The event's id.
    event: i64,
    /// The first refusal's reason.
    reason: String,
    /// The refusals so far.
    count: u64,
}

/// The details an event records: the first reason, the count, and the last call refused.
fn details(reason: &str, count: u64, last_rpc: &str, last_reason: &str) -> Value {
    json!({
        "reason": reason,
        "count": count,
        "last_rpc": last_rpc,
        "last_reason": last_reason,
    })
}

/// The open windows, by peer and actor.
#[derive(Default)]
pub struct Refusals {
    // A tokio mutex, held across the insert: two refusals from one peer at the same moment
    // must not both insert an event.
    windows: tokio::sync::Mutex<HashMap<(String, String), Window>>,
}

impl Refusals {
    /// Records one refusal of the call `ctx` for `reason`.
    pub async fn record(&self, store: &Store, ctx: &AuditContext, reason: &str) -> Result<()> {
        let key = (ctx.peer.clone(), ctx.actor.clone());
        let mut windows = self.windows.lock().await;
        if let Some(w) = windows.get_mut(&key).filter(|w| w.since.elapsed() < WINDOW) {
            w.count += 1;
            let d = details(&w.reason, w.count, &ctx.rpc, reason);
            if store.update_denied(w.event, &d).await? {
                return Ok(());
            }
            // Its event is sealed in the hash chain (a slow clock, a late refusal): this
            // refusal opens a window of its own.
        }
        let event = store
            .record_denied(ctx, &details(reason, 1, &ctx.rpc, reason))
            .await?;
        if windows.len() >= MAX_WINDOWS {
            windows.retain(|_, w| w.since.elapsed() < WINDOW);
        }
        windows.insert(
            key,
            Window {
                since: Instant::now(),
                event,
                reason: reason.to_owned(),
                count: 1,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_carry_the_count_and_the_last_call() {
        let d = details(
            "Unauthenticated: no token",
            3,
            "/x.Y/Z",
            "Unauthenticated: bad",
        );
        assert_eq!(d["count"], 3);
        assert_eq!(d["reason"], "Unauthenticated: no token");
        assert_eq!(d["last_rpc"], "/x.Y/Z");
    }
}
