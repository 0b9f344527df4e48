//! The claim loop: claims due messages while delivery slots are free, and sleeps until a new
//! message, the next due time, or a finished delivery.

use super::{Outbox, deliver};
use crate::domain::{micros, now_micros};
use crate::store::notify::Notice;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, broadcast};

/// The longest sleep between two looks at the queue.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How often messages claimed by replicas that stopped are looked for (a replica is dead
/// after 15 s without a heartbeat).
const ORPHANS_EVERY: Duration = Duration::from_secs(5);
/// The pause after a database error.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

/// Runs until the outbox stops.
pub(super) async fn run(outbox: &Arc<Outbox>) {
    let slots = Arc::new(Semaphore::new(
        usize::try_from(outbox.settings.batch.max(1)).unwrap_or(1),
    ));
    let finished = Arc::new(Notify::new());
    let every = outbox.settings.sweep_interval;
    let mut next_sweep = tokio::time::Instant::now();
    let mut next_orphans = tokio::time::Instant::now();
    let mut notices = outbox.notifier.as_ref().map(|n| n.subscribe());
    let per_account =
        u32::try_from(outbox.settings.pool.max_sessions_per_key.max(1)).unwrap_or(u32::MAX);
    // After a claim held back by an account's cap: the free slots at which to claim again.
    let mut gate: Option<u32> = None;
    loop {
        if outbox.stop.is_cancelled() {
            return;
        }
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + every;
            sweep(outbox).await;
        }
        // SQLite has one replica: what a dead run held was queued again at the start.
        if !outbox.store.is_sqlite() && tokio::time::Instant::now() >= next_orphans {
            next_orphans = tokio::time::Instant::now() + ORPHANS_EVERY;
            match outbox.store.requeue_orphaned().await {
                Ok((0, 0)) => {}
                Ok((queued, deferred)) => tracing::warn!(
                    queued,
                    deferred,
                    "took over messages of a replica that stopped (deferred: DATA had started \
                     on an agent)"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "cannot look for messages of stopped replicas")
                }
            }
        }
        let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
        let sleep = if free < gate.unwrap_or_else(|| min_claim(outbox.settings.batch, free)) {
            None
        } else {
            match claim(outbox, &slots, &finished, free, per_account).await {
                Ok(Claimed::Full) => {
                    gate = None;
                    continue;
                }
                // Held back by an account's cap: claim again once a few deliveries finished
                // (here, or on another replica: the periodic look below).
                Ok(Claimed::Capped) => {
                    let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
                    let batch = outbox.settings.batch.max(1);
                    gate = Some(if free >= batch {
                        // None of them runs here: wait for the periodic look (or new work).
                        u32::MAX
                    } else {
                        free.saturating_add(recheck_after(per_account)).min(batch)
                    });
                    None
                }
                Ok(Claimed::AllDue) => {
                    gate = None;
                    match outbox.store.next_due(&outbox.me).await {
                        Ok(next) => Some(until(next)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the outbox");
                            Some(ERROR_PAUSE)
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim messages for delivery");
                    Some(ERROR_PAUSE)
                }
            }
        };
        let mut sleep = sleep.unwrap_or(MAX_SLEEP).min(every);
        if !outbox.store.is_sqlite() {
            sleep = sleep.min(ORPHANS_EVERY);
        }
        tokio::select! {
            () = outbox.stop.cancelled() => return,
            () = outbox.wake.notified() => gate = None,
            // Messages of its connector may now be delivered here.
            () = outbox.registry.agent_connected() => gate = None,
            // Another replica stored messages or made some due.
            () = outbox_notice(&mut notices) => gate = None,
            () = finished.notified() => {}
            () = tokio::time::sleep(sleep) => gate = None,
        }
    }
}

/// After a claim held back by an account's cap of `per_account` deliveries at once: how many
/// of them must finish before the next claim (a quarter, so that a busy account costs one
/// claim per few deliveries, not one per delivery).
fn recheck_after(per_account: u32) -> u32 {
    (per_account / 4).max(1)
}

/// The fewest free slots worth a claim: a quarter of the batch while deliveries are running
/// (a claim is a write transaction; one per finished delivery would cost more than the
/// deliveries under load, and three quarters of the batch are still in flight), or any when
/// none is running.
fn min_claim(batch: u32, free: u32) -> u32 {
    let batch = batch.max(1);
    if free >= batch { 1 } else { (batch / 4).max(1) }
}

/// Queues again the claims a dead server left, and purges finished messages past retention.
async fn sweep(outbox: &Outbox) {
    let now = now_micros();
    let s = &outbox.settings;
    match outbox
        .store
        .requeue_sending(now - micros(s.claim_timeout))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(messages = n, "queued again messages stuck in delivery"),
        Err(e) => tracing::error!(error = %e, "cannot look for messages stuck in delivery"),
    }
    let (body_before, log_before) = (
        now - micros(s.body_retention),
        now - micros(s.log_retention),
    );
    match outbox.store.purge_messages(body_before, log_before).await {
        Ok((0, 0)) => {}
        Ok((bodies, records)) => {
            tracing::info!(
                bodies,
                records,
                "purged finished messages past their retention"
            );
        }
        Err(e) => tracing::error!(error = %e, "cannot purge finished messages"),
    }
}

/// Waits for another replica's announcement of new outbox work (never, without a notifier).
async fn outbox_notice(notices: &mut Option<broadcast::Receiver<Notice>>) {
    let Some(rx) = notices else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(Notice::Outbox | Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                return;
            }
            Ok(Notice::Test(_) | Notice::Jobs(_) | Notice::Job(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// How long until `next` (microseconds since the epoch), at most [`MAX_SLEEP`].
fn until(next: Option<i64>) -> Duration {
    next.map_or(MAX_SLEEP, |t| {
        Duration::from_micros(u64::try_from(t - now_micros()).unwrap_or(0)).min(MAX_SLEEP)
    })
}

/// What a claim did.
enum Claimed {
    /// Every free slot was filled: more may be due.
    Full,
    /// An account with due messages is at its cap on deliveries at once.
    Capped,
    /// Every due message this replica may deliver was claimed.
    AllDue,
}

/// Claims up to `free` due messages (at most the per-account cap of each account on all
/// replicas together) and starts their deliveries.
async fn claim(
    outbox: &Arc<Outbox>,
    slots: &Arc<Semaphore>,
    finished: &Arc<Notify>,
    free: u32,
    per_account: u32,
) -> crate::error::Result<Claimed> {
    let claims = outbox
        .store
        .claim_due(now_micros(), free, per_account, &outbox.me)
        .await?;
    let full = u32::try_from(claims.messages.len()).unwrap_or(u32::MAX) >= free;
    for message in claims.messages {
        let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
            // Cannot happen: `free` permits were available and only this loop takes them.
            outbox
                .store
                .requeue_message(message.id, now_micros(), "")
                .await?;
            continue;
        };
        let outbox = Arc::clone(outbox);
        let finished = Arc::clone(finished);
        outbox.tasks.clone().spawn(async move {
            deliver::run(&outbox, message).await;
            drop(permit);
            finished.notify_one();
        });
    }
    Ok(if full {
        Claimed::Full
    } else if claims.capped {
        Claimed::Capped
    } else {
        Claimed::AllDue
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_wait_for_a_quarter_of_the_batch_while_deliveries_run() {
        assert_eq!(
            min_claim(64, 64),
            1,
            "idle: any due message is claimed at once"
        );
        assert_eq!(min_claim(64, 15), 16);
        assert_eq!(min_claim(64, 16), 16);
        assert_eq!(min_claim(2, 1), 1);
        assert_eq!(min_claim(0, 0), 1);
    }

    #[test]
    fn a_capped_account_is_claimed_again_after_a_quarter_of_its_cap() {
        assert_eq!(recheck_after(20), 5);
        assert_eq!(recheck_after(4), 1);
        assert_eq!(recheck_after(1), 1);
    }
}
