//! Who gets in on the agent listener: the per-address limit on enrollment attempts, the
//! client certificate check (by agent: a revoked agent's every certificate is refused; the
//! certificate an agent renewed with is honoured until its new one is first used, or for
//! [`PREVIOUS_CERT_GRACE`]), and the audit of refusals, collapsed per peer and minute as the
//! API's are ([`crate::auth::refusals`]).

use super::ca;
use crate::audit::AuditContext;
use crate::auth::limit::PeerLimit;
use crate::auth::refusals::Refusals;
use crate::domain::AgentRecord;
use crate::store::Store;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Status};

/// Enrollment attempts allowed per client address per [`ENROLL_WINDOW`] (per replica).
pub const MAX_ENROLL_ATTEMPTS: u32 = 10;
/// The window of [`MAX_ENROLL_ATTEMPTS`].
pub const ENROLL_WINDOW: Duration = Duration::from_secs(60);
/// How long the certificate an agent renewed with stays valid at most, when the agent does
/// not use its new one (the renewal's response was lost).
pub const PREVIOUS_CERT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The RPC paths, for the audit log.
pub const ENROLL_RPC: &str = "/mailplane.v1.AgentService/Enroll";
/// See [`ENROLL_RPC`].
pub const RENEW_RPC: &str = "/mailplane.v1.AgentService/RenewCertificate";
/// See [`ENROLL_RPC`].
pub const CONNECT_RPC: &str = "/mailplane.v1.AgentService/Connect";

/// The listener's gate.
pub struct Admission {
    store: Arc<Store>,
    enrollments: PeerLimit,
    refusals: Refusals,
}

/// The client's address, as the audit log shows it.
pub fn peer_of<T>(request: &Request<T>) -> (Option<IpAddr>, String) {
    let ip = request.remote_addr().map(|a| a.ip());
    (ip, ip.map(|ip| ip.to_string()).unwrap_or_default())
}

impl Admission {
    /// The gate over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            enrollments: PeerLimit::new(MAX_ENROLL_ATTEMPTS, ENROLL_WINDOW),
            refusals: Refusals::default(),
        }
    }

    /// Counts an enrollment attempt from `peer`; `ResourceExhausted` past the limit.
    pub fn enrollment_attempt(&self, peer: Option<IpAddr>) -> Result<(), Status> {
        if self.enrollments.take(peer) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!(
                "too many enrollment attempts from this address (at most \
                 {MAX_ENROLL_ATTEMPTS} a minute); wait a minute"
            )))
        }
    }

    /// Records a refused call in the audit log (one event per peer, caller and minute, with
    /// a count) and hands the status back.
    pub async fn refused(&self, actor: &str, peer: &str, rpc: &str, status: Status) -> Status {
        let context = AuditContext {
            actor: actor.to_owned(),
            peer: peer.to_owned(),
            rpc: rpc.to_owned(),
        };
        let reason = format!("{:?}: {}", status.code(), status.message());
        if let Err(e) = self.refusals.record(&self.store, &context, &reason).await {
            tracing::warn!(error = %e, "cannot record a refused agent call");
        }
        status
    }

    /// The enrolled agent that holds the request's client certificate, and the
    /// certificate's fingerprint. A missing, unknown or retired certificate gives
    /// `Unauthenticated`, a revoked agent `PermissionDenied`; both are audited.
    pub async fn authenticate<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
    ) -> Result<(AgentRecord, String), Status> {
        let (_, peer) = peer_of(request);
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned());
        let Some(leaf) = leaf else {
            let status =
                Status::unauthenticated("a client certificate is required; enroll the agent first");
            return Err(self.refused("agent certificate", &peer, rpc, status).await);
        };
        let fingerprint = ca::fingerprint(leaf.as_ref());
        let actor = "agent certificate";
        let agent = match self.store.agent_by_certificate(&fingerprint).await {
            Ok(Some(agent)) => agent,
            Ok(None) => {
                let status = Status::unauthenticated(
                    "this client certificate belongs to no enrolled agent (or was replaced by \
                     a renewal); enroll the agent again with a new token",
                );
                return Err(self.refused(actor, &peer, rpc, status).await);
            }
            Err(e) => return Err(e.into()),
        };
        if agent.revoked {
            let status = Status::permission_denied(format!(
                "{} was revoked; enroll it again with a new token",
                agent.name
            ));
            let actor = agent.name.to_string();
            return Err(self.refused(&actor, &peer, rpc, status).await);
        }
        Ok((agent, fingerprint))
    }
}
