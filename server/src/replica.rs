//! This process as one replica among those sharing the database: it registers itself at
//! start, beats every [`REPLICA_HEARTBEAT`] (registering again if another replica forgot it),
//! forgets replicas silent for a day, and removes itself at a clean stop.

use crate::domain::micros;
use crate::domain::now_micros;
use crate::domain::replica::{REPLICA_FORGOTTEN_AFTER, REPLICA_HEARTBEAT, Replica, ReplicaId};
use crate::error::Result;
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;

/// The host name: `/proc/sys/kernel/hostname`, `$HOSTNAME`, or `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This replica, as registered.
pub fn describe(api: Option<SocketAddr>, agents: Option<SocketAddr>) -> Replica {
    let now = now_micros();
    Replica {
        id: ReplicaId::new(),
        address: api.map(|a| a.to_string()).unwrap_or_default(),
        agent_address: agents.map(|a| a.to_string()).unwrap_or_default(),
        hostname: hostname(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        start_time: now,
        heartbeat_time: now,
    }
}

/// Registers `me`. On SQLite, whose file one process holds at a time, any other replica
/// listed is a previous run of this server that did not stop cleanly: it is forgotten.
pub async fn join(store: &Store, me: &Replica) -> Result<()> {
    if store.is_sqlite() {
        store.forget_replicas(i64::MAX).await?;
    }
    store.register_replica(me).await?;
    tracing::info!(replica = %me.id, address = %me.address, "replica registered");
    Ok(())
}

/// Beats until cancelled (by the server's background owner).
pub async fn beat(store: Arc<Store>, me: Replica) {
    let mut every = tokio::time::interval(REPLICA_HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = now_micros();
        match store.replica_heartbeat(&me.id, now).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(replica = %me.id, "this replica was forgotten; registering again");
                let again = Replica {
                    heartbeat_time: now,
                    ..me.clone()
                };
                if let Err(e) = store.register_replica(&again).await {
                    tracing::warn!(error = %e, "cannot register this replica again");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record this replica's heartbeat"),
        }
        // On SQLite the one replica forgot every other at its start.
        if store.is_sqlite() {
            continue;
        }
        match store
            .forget_replicas(now - micros(REPLICA_FORGOTTEN_AFTER))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(replicas = n, "forgot replicas silent for a day"),
            Err(e) => tracing::warn!(error = %e, "cannot forget silent replicas"),
        }
    }
}

/// Removes `me` at a clean stop.
pub async fn leave(store: &Store, me: &ReplicaId) {
    if let Err(e) = store.remove_replica(me).await {
        tracing::warn!(replica = %me, error = %e, "cannot remove this replica's registration");
    }
}
