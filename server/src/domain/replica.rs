//! Server replicas: the processes that serve the API from one database. Each has a new id at
//! every start, registers itself, beats, and is considered gone when its heartbeat is older
//! than [`REPLICA_DEAD_AFTER`].

use super::{AgentName, Micros, micros};
use std::time::Duration;

/// How often a replica beats.
pub const REPLICA_HEARTBEAT: Duration = Duration::from_secs(5);

/// A replica whose heartbeat is older than this is considered dead.
pub const REPLICA_DEAD_AFTER: Duration = Duration::from_secs(15);

/// A dead replica is forgotten this long after its last heartbeat.
pub const REPLICA_FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A replica's id: random, new at every start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaId(pub String);

impl ReplicaId {
    /// A fresh id (64 random bits, hex).
    pub fn new() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }
}

impl Default for ReplicaId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replicas/{}", self.0)
    }
}

/// One replica as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its id.
    pub id: ReplicaId,
    /// Where it serves the API.
    pub address: String,
    /// Where it serves agents (empty when off).
    pub agent_address: String,
    /// Its host.
    pub hostname: String,
    /// Its version.
    pub version: String,
    /// When it started.
    pub start_time: Micros,
    /// Its last heartbeat.
    pub heartbeat_time: Micros,
}

impl Replica {
    /// Whether its heartbeat is recent at `now`.
    pub fn is_alive(&self, now: Micros) -> bool {
        now.saturating_sub(self.heartbeat_time) <= micros(REPLICA_DEAD_AFTER)
    }
}

/// One agent stream, and the replica that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStream {
    /// The stream's id: the replica's id and the stream's session there.
    pub id: String,
    /// The replica holding it.
    pub replica: ReplicaId,
    /// The agent.
    pub agent: AgentName,
    /// When it connected.
    pub connected_since: Micros,
}

/// An agent stream as listed: where it is connected, and whether that replica is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStreamView {
    /// The agent's id.
    pub agent_id: i64,
    /// The replica holding it.
    pub replica: ReplicaId,
    /// That replica's API address.
    pub replica_address: String,
    /// When it connected.
    pub connected_since: Micros,
    /// Whether the replica's heartbeat is recent.
    pub replica_alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_dead_once_its_heartbeat_is_older_than_the_limit() {
        let r = Replica {
            id: ReplicaId::new(),
            address: "127.0.0.1:7750".into(),
            agent_address: String::new(),
            hostname: "h".into(),
            version: "0".into(),
            start_time: 0,
            heartbeat_time: 1_000_000,
        };
        let limit = micros(REPLICA_DEAD_AFTER);
        assert!(r.is_alive(1_000_000 + limit));
        assert!(!r.is_alive(1_000_000 + limit + 1));
        assert_ne!(ReplicaId::new(), ReplicaId::new());
        assert!(r.id.to_string().starts_with("replicas/"));
    }
}
