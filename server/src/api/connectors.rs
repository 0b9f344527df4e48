//! `NetworkConnectorService`: connectors, enrollment tokens and agent revocation.

use super::convert::{self, timestamp};
use super::paging;
use crate::domain::replica::AgentStreamView;
use crate::domain::{
    AgentName, AgentRecord, Connector, ConnectorId, ConnectorSpec, micros, now_micros, validate,
};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tunnel::ca::AgentCa;
use crate::tunnel::registry::{LiveAgent, Registry};
use crate::tunnel::service::token_hash;
use mailplane_proto::v1 as pb;
use pb::network_connector_service_server::NetworkConnectorService;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// An enrollment token's lifetime when the request names none.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// The longest an enrollment token may live.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// An agent heard from this recently (by any replica) counts as online.
const ONLINE_WITHIN_MICROS: i64 = 30_000_000;

/// The connector service.
pub struct Connectors {
    store: Arc<Store>,
    registry: Arc<Registry>,
    ca: Arc<AgentCa>,
}

impl Connectors {
    /// The service.
    pub fn new(store: Arc<Store>, registry: Arc<Registry>, ca: Arc<AgentCa>) -> Self {
        Self {
            store,
            registry,
            ca,
        }
    }

    async fn render(&self, connector: &Connector) -> Result<pb::Connector> {
        let live = self.registry.live(connector.id);
        let streams = self.store.agent_streams(connector.id).await?;
        let agents = self
            .store
            .list_agents(connector.id)
            .await?
            .iter()
            .map(|a| {
                let here: Vec<&LiveAgent> = live
                    .iter()
                    .filter(|l| l.name == a.name)
                    .map(Arc::as_ref)
                    .collect();
                let everywhere: Vec<_> =
                    streams.iter().filter(|s| s.agent_id == a.name.id).collect();
                replica(a, &here, &everywhere)
            })
            .collect();
        Ok(pb::Connector {
            name: connector.id.to_string(),
            id: connector.id.0,
            display_name: connector.spec.display_name.clone(),
            description: connector.spec.description.clone(),
            agents,
            etag: crate::domain::etag(connector.version),
            create_time: Some(timestamp(connector.create_time)),
            update_time: Some(timestamp(connector.update_time)),
        })
    }
}

/// An agent as the API shows it, once however many streams it holds: live state from its
/// streams to this server (draining when all of them are; host and version from the newest;
/// jobs over all), its streams on every replica, or the last heartbeat any replica recorded.
fn replica(
    a: &AgentRecord,
    streams: &[&LiveAgent],
    everywhere: &[&AgentStreamView],
) -> pb::AgentReplica {
    let recent = everywhere.iter().any(|s| s.replica_alive)
        || a.last_heartbeat_time
            .is_some_and(|t| now_micros() - t < ONLINE_WITHIN_MICROS);
    let live = streams.iter().max_by_key(|l| l.connected_since).copied();
    let draining = streams.iter().all(|l| l.is_draining());
    let status = match (a.revoked, live) {
        (true, _) => pb::AgentStatus::Revoked,
        (false, Some(_)) if draining => pb::AgentStatus::Draining,
        (false, Some(_)) => pb::AgentStatus::Online,
        (false, None) if recent => pb::AgentStatus::Online,
        (false, None) => pb::AgentStatus::Offline,
    };
    pb::AgentReplica {
        name: a.name.to_string(),
        agent_id: a.name.id.to_string(),
        hostname: live.map_or_else(|| a.hostname.clone(), |l| l.hostname.clone()),
        version: live.map_or_else(|| a.version.clone(), |l| l.version.clone()),
        status: status.into(),
        connected_since: streams
            .iter()
            .map(|l| l.connected_since)
            .min()
            .map(timestamp),
        last_heartbeat_time: streams
            .iter()
            .map(|l| l.last_heartbeat())
            .max()
            .or(a.last_heartbeat_time)
            .map(timestamp),
        jobs_in_flight: streams.iter().map(|l| l.in_flight()).sum(),
        enroll_time: Some(timestamp(a.enroll_time)),
        certificate_expire_time: a.cert_not_after.map(timestamp),
        connections: everywhere
            .iter()
            .map(|s| pb::AgentConnection {
                replica: s.replica.to_string(),
                replica_address: s.replica_address.clone(),
                connect_time: Some(timestamp(s.connected_since)),
                replica_serving: s.replica_alive,
            })
            .collect(),
    }
}

fn connector_id(field: &str, name: &str) -> Result<ConnectorId> {
    convert::parse_name(field, "connectors", name).map(ConnectorId)
}

/// Parses `connectors/{c}/agents/{a}`.
fn agent_name(field: &str, name: &str) -> Result<AgentName> {
    let (connector, id) = convert::parse_child(field, name, "connectors", "agents")?;
    Ok(AgentName {
        connector: ConnectorId(connector),
        id,
    })
}

fn apply(spec: &mut ConnectorSpec, msg: &pb::Connector, field: &str) -> Result<()> {
    match field {
        "display_name" => {
            spec.display_name = validate::line("display_name", &msg.display_name, 100)?
        }
        "description" => {
            if msg.description.chars().count() > 1000 {
                return Err(Error::invalid(
                    "description",
                    "must be at most 1000 characters",
                ));
            }
            spec.description = msg.description.trim().to_owned();
        }
        other => {
            return Err(Error::invalid(
                "update_mask",
                format!(
                    "{other:?} is not a writable field of Connector (display_name, description)"
                ),
            ));
        }
    }
    Ok(())
}

/// A new connector's fields from `msg`, validated (CreateConnector, and `mailplane apply`).
pub fn connector_spec(msg: &pb::Connector) -> Result<ConnectorSpec> {
    let mut spec = ConnectorSpec {
        display_name: String::new(),
        description: String::new(),
    };
    apply(&mut spec, msg, "display_name")?;
    apply(&mut spec, msg, "description")?;
    Ok(spec)
}

#[tonic::async_trait]
impl NetworkConnectorService for Connectors {
    async fn create_connector(
        &self,
        request: Request<pb::CreateConnectorRequest>,
    ) -> Result<Response<pb::Connector>, Status> {
        let ctx = crate::audit::context(&request);
        let msg = request
            .into_inner()
            .connector
            .ok_or_else(|| Error::invalid("connector", "is required"))?;
        let spec = connector_spec(&msg)?;
        let connector = self.store.create_connector(&ctx, spec).await?;
        tracing::info!(connector = %connector.id, "connector created");
        Ok(Response::new(self.render(&connector).await?))
    }

    async fn get_connector(
        &self,
        request: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::Connector>, Status> {
        let id = connector_id("name", &request.into_inner().name)?;
        let connector = self.store.get_connector(id).await?;
        Ok(Response::new(self.render(&connector).await?))
    }

    async fn list_connectors(
        &self,
        request: Request<pb::ListConnectorsRequest>,
    ) -> Result<Response<pb::ListConnectorsResponse>, Status> {
        let req = request.into_inner();
        let size = paging::page_size(req.page_size)?;
        let after = paging::decode(&req.page_token, "connectors")?;
        let rows = self.store.list_connectors(after, size + 1).await?;
        let (rows, next_page_token) = paging::finish(rows, size, "connectors", |c| c.id.0);
        let mut connectors = Vec::with_capacity(rows.len());
        for c in &rows {
            connectors.push(self.render(c).await?);
        }
        Ok(Response::new(pb::ListConnectorsResponse {
            connectors,
            next_page_token,
        }))
    }

    async fn update_connector(
        &self,
        request: Request<pb::UpdateConnectorRequest>,
    ) -> Result<Response<pb::Connector>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let msg = req
            .connector
            .ok_or_else(|| Error::invalid("connector", "is required"))?;
        let id = connector_id("connector.name", &msg.name)?;
        let mut fields = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if fields.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "is required: display_name, description, or \"*\"",
            )
            .into());
        }
        if fields.iter().any(|f| f == "*") {
            fields = vec!["display_name".into(), "description".into()];
        }
        let expected = convert::expected_version(&id.to_string(), &msg.etag)?;
        let edit = |spec: &mut ConnectorSpec| {
            for field in &fields {
                apply(spec, &msg, field)?;
            }
            Ok(())
        };
        let connector = self
            .store
            .update_connector(&ctx, id, expected, &edit)
            .await?;
        Ok(Response::new(self.render(&connector).await?))
    }

    async fn delete_connector(
        &self,
        request: Request<pb::DeleteConnectorRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let id = connector_id("name", &req.name)?;
        let expected = convert::expected_version(&id.to_string(), &req.etag)?;
        self.store.delete_connector(&ctx, id, expected).await?;
        for agent in self.registry.live(id) {
            agent.close();
        }
        tracing::info!(connector = %id, "connector deleted");
        Ok(Response::new(()))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::EnrollmentToken>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let id = connector_id("parent", &req.parent)?;
        let ttl = match req.ttl {
            None => DEFAULT_TOKEN_TTL,
            Some(d) => Duration::try_from(d)
                .ok()
                .filter(|d| !d.is_zero() && *d <= MAX_TOKEN_TTL)
                .ok_or_else(|| Error::invalid("ttl", "must be positive and at most 7 days"))?,
        };
        let token = format!("mpe_{}", hex::encode(rand::random::<[u8; 32]>()));
        let expire_time = now_micros().saturating_add(micros(ttl));
        self.store
            .create_enrollment_token(&ctx, id, &token_hash(&token), expire_time)
            .await?;
        tracing::info!(connector = %id, ttl = ?ttl, "enrollment token created");
        Ok(Response::new(pb::EnrollmentToken {
            token,
            connector: id.to_string(),
            expire_time: Some(timestamp(expire_time)),
            server_ca_pem: self.ca.cert_pem().to_owned(),
        }))
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::AgentReplica>, Status> {
        let ctx = crate::audit::context(&request);
        let name = agent_name("name", &request.into_inner().name)?;
        let record = self.store.revoke_agent(&ctx, name).await?;
        self.registry.close(name.id);
        tracing::info!(agent = %name, "agent revoked");
        Ok(Response::new(replica(&record, &[], &[])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names() {
        let n = agent_name("n", "connectors/2/agents/7").unwrap();
        assert_eq!(n.to_string(), "connectors/2/agents/7");
        assert!(agent_name("n", "connectors/2/agents/x").is_err());
        assert!(agent_name("n", "agents/7").is_err());
    }
}
