//! `ReplicaService`: the server replicas that share this database.

use super::convert::timestamp;
use crate::domain::now_micros;
use crate::domain::replica::{Replica, ReplicaId};
use crate::store::Store;
use mailplane_proto::v1 as pb;
use pb::replica_service_server::ReplicaService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The replica service.
pub struct Replicas {
    store: Arc<Store>,
    me: ReplicaId,
}

impl Replicas {
    /// The service of the replica `me`.
    pub fn new(store: Arc<Store>, me: ReplicaId) -> Self {
        Self { store, me }
    }
}

fn render(r: &Replica, me: &ReplicaId, now: i64) -> pb::Replica {
    let status = if r.is_alive(now) {
        pb::ReplicaStatus::Serving
    } else {
        pb::ReplicaStatus::Unresponsive
    };
    pb::Replica {
        name: r.id.to_string(),
        address: r.address.clone(),
        agent_address: r.agent_address.clone(),
        hostname: r.hostname.clone(),
        version: r.version.clone(),
        start_time: Some(timestamp(r.start_time)),
        heartbeat_time: Some(timestamp(r.heartbeat_time)),
        status: status.into(),
        current: r.id == *me,
    }
}

#[tonic::async_trait]
impl ReplicaService for Replicas {
    async fn list_replicas(
        &self,
        _request: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        let now = now_micros();
        let replicas = self.store.list_replicas().await?;
        Ok(Response::new(pb::ListReplicasResponse {
            replicas: replicas.iter().map(|r| render(r, &self.me, now)).collect(),
        }))
    }
}
