//! The replicas that share this database: registration, heartbeats, and the list.

use super::Store;
use super::db::query;
use crate::domain::replica::{
    AgentStream, AgentStreamView, REPLICA_DEAD_AFTER, Replica, ReplicaId,
};
use crate::domain::{ConnectorId, Micros, micros, now_micros};
use crate::error::Result;

type ReplicaRow = (String, String, String, String, String, i64, i64);

impl Store {
    /// Registers a replica (at its start).
    pub async fn register_replica(&self, r: &Replica) -> Result<()> {
        let q = query(
            "INSERT INTO replicas (id, address, agent_address, hostname, version, start_time, \
             heartbeat_time) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id.0)
        .bind(&r.address)
        .bind(&r.agent_address)
        .bind(&r.hostname)
        .bind(&r.version)
        .bind(r.start_time)
        .bind(r.heartbeat_time);
        self.execute(&q).await?;
        Ok(())
    }

    /// Records a replica's heartbeat at `now`; false if its row is gone (another replica
    /// forgot it), in which case it registers again.
    pub async fn replica_heartbeat(&self, id: &ReplicaId, now: Micros) -> Result<bool> {
        let q = query("UPDATE replicas SET heartbeat_time = $1 WHERE id = $2")
            .bind(now)
            .bind(&id.0);
        Ok(self.execute(&q).await? == 1)
    }

    /// Removes a replica (at its clean stop).
    pub async fn remove_replica(&self, id: &ReplicaId) -> Result<()> {
        let q = query("DELETE FROM replicas WHERE id = $1").bind(&id.0);
        self.execute(&q).await?;
        Ok(())
    }

    /// Forgets the replicas silent since before `before`; returns how many.
    pub async fn forget_replicas(&self, before: Micros) -> Result<u64> {
        let q = query("DELETE FROM replicas WHERE heartbeat_time < $1").bind(before);
        self.execute(&q).await
    }

    /// Every registered replica, oldest first.
    pub async fn list_replicas(&self) -> Result<Vec<Replica>> {
        let q = query(
            "SELECT id, address, agent_address, hostname, version, start_time, heartbeat_time \
             FROM replicas ORDER BY start_time, id",
        );
        let rows: Vec<ReplicaRow> = self.all(&q).await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, address, agent_address, hostname, version, start_time, heartbeat_time)| {
                    Replica {
                        id: ReplicaId(id),
                        address,
                        agent_address,
                        hostname,
                        version,
                        start_time,
                        heartbeat_time,
                    }
                },
            )
            .collect())
    }

    /// Records that this replica holds `stream`.
    pub async fn add_agent_stream(&self, stream: &AgentStream) -> Result<()> {
        let q = query(
            "INSERT INTO agent_streams (id, replica_id, agent_id, connector_id, connected_since) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&stream.id)
        .bind(&stream.replica.0)
        .bind(stream.agent.id)
        .bind(stream.agent.connector.0)
        .bind(stream.connected_since);
        self.execute(&q).await?;
        Ok(())
    }

    /// Records that a stream ended.
    pub async fn remove_agent_stream(&self, id: &str) -> Result<()> {
        self.execute(&query("DELETE FROM agent_streams WHERE id = $1").bind(id))
            .await?;
        Ok(())
    }

    /// The streams of `connector`'s agents, on every replica, oldest first.
    pub async fn agent_streams(&self, connector: ConnectorId) -> Result<Vec<AgentStreamView>> {
        let alive_since = now_micros() - micros(REPLICA_DEAD_AFTER);
        let q = query(
            "SELECT s.agent_id, s.replica_id, r.address, s.connected_since, r.heartbeat_time \
             FROM agent_streams s JOIN replicas r ON r.id = s.replica_id \
             WHERE s.connector_id = $1 ORDER BY s.connected_since, s.id",
        )
        .bind(connector.0);
        let rows: Vec<(i64, String, String, i64, i64)> = self.all(&q).await?;
        Ok(rows
            .into_iter()
            .map(
                |(agent_id, replica, replica_address, connected_since, heartbeat)| {
                    AgentStreamView {
                        agent_id,
                        replica: ReplicaId(replica),
                        replica_address,
                        connected_since,
                        replica_alive: heartbeat >= alive_since,
                    }
                },
            )
            .collect())
    }
}
