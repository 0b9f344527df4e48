//! `AgentService`: enrollment, certificate renewal and the agents' job streams.

use super::admission::{
    Admission, CONNECT_RPC, ENROLL_RPC, PREVIOUS_CERT_GRACE, RENEW_RPC, peer_of,
};
use super::ca::AgentCa;
use super::registry::{LiveAgent, Registry};
use crate::domain::replica::{AgentStream, ReplicaId};
use crate::domain::{now_micros, validate};
use crate::error::Error;
use crate::oauth::AccessTokens;
use crate::secret::Secret;
use crate::store::Store;
use futures::StreamExt as _;
use mailplane_proto::timestamp;
use mailplane_proto::v1 as pb;
use pb::agent_service_server::AgentService;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// The hash under which an enrollment token is stored. Tokens carry 256 random bits, so a
/// fast hash is enough: nothing is gained by guessing against it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// How the agent listener runs.
#[derive(Debug, Clone, Copy)]
pub struct AgentSettings {
    /// The server sends a heartbeat this often; a stream silent for three is dead.
    pub heartbeat: Duration,
    /// How long issued agent certificates are valid.
    pub cert_lifetime: Duration,
}

/// The agent-facing service.
pub struct AgentApi {
    store: Arc<Store>,
    ca: Arc<AgentCa>,
    registry: Arc<Registry>,
    /// Stores the refresh tokens that agents' token endpoints rotate to.
    tokens: Arc<AccessTokens>,
    settings: AgentSettings,
    admission: Admission,
    /// This replica: its streams are recorded under it, for the other replicas to see.
    me: ReplicaId,
}

impl AgentApi {
    /// The service.
    pub fn new(
        store: Arc<Store>,
        ca: Arc<AgentCa>,
        registry: Arc<Registry>,
        tokens: Arc<AccessTokens>,
        settings: AgentSettings,
        me: ReplicaId,
    ) -> Self {
        Self {
            admission: Admission::new(Arc::clone(&store)),
            store,
            ca,
            registry,
            tokens,
            settings,
            me,
        }
    }
}

/// Stores the refresh token that job `job_id`'s token endpoint rotated to, if the job runs on
/// `live` and carries a token grant: an agent can only speak for the credential of a job it
/// was given. The token is never logged.
async fn store_rotated(
    tokens: &AccessTokens,
    live: &LiveAgent,
    job_id: &str,
    rotated: pb::RotatedRefreshToken,
) {
    let refresh = Secret::new(rotated.refresh_token);
    let Some(name) = live.token_credential(job_id) else {
        tracing::warn!(agent = %live.name, job = job_id, "ignored a rotated refresh token for a job without a token grant");
        return;
    };
    let Some(id) = crate::domain::CredentialId::from_name(&name) else {
        return;
    };
    if refresh.is_empty() || refresh.expose().len() > 8192 {
        tracing::warn!(agent = %live.name, credential = %id, "ignored an empty or oversized rotated refresh token");
        return;
    }
    match tokens.store_rotated_refresh_token(id, &refresh).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(credential = %id, "a rotated refresh token arrived for a credential whose tokens agents no longer get; not stored");
        }
        Err(e) => {
            tracing::warn!(credential = %id, error = %e, "cannot store the rotated refresh token");
        }
    }
}

/// Checks an agent's host name and version as reported by `Enroll` or `AgentHello`: one
/// printable line each, at most 253 and 64 characters; an empty version is `unknown`.
fn check_agent_fields(
    prefix: &str,
    hostname: &str,
    version: &str,
) -> Result<(String, String), Error> {
    let hostname = validate::line(&format!("{prefix}hostname"), hostname, 253)?;
    let version = if version.is_empty() {
        "unknown"
    } else {
        version
    };
    let version = validate::line(&format!("{prefix}version"), version, 64)?;
    Ok((hostname, version))
}

type ConnectStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ConnectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let (ip, peer) = peer_of(&request);
        self.admission.enrollment_attempt(ip)?;
        let req = request.into_inner();
        if req.token.trim().is_empty() {
            return Err(Error::invalid("token", "is required").into());
        }
        let (hostname, version) = check_agent_fields("", &req.hostname, &req.version)?;
        // Check the CSR before the token is used up, so a malformed request costs no token.
        rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).map_err(|e| {
            Error::invalid("csr_pem", format!("is not a valid PKCS#10 request: {e}"))
        })?;
        let context = crate::audit::AuditContext {
            actor: "enrollment token".into(),
            peer,
            rpc: ENROLL_RPC.into(),
        };
        let agent = match self
            .store
            .enroll_agent(&context, &token_hash(&req.token), &hostname, &version)
            .await
        {
            Ok(agent) => agent,
            Err(e @ Error::Unauthenticated(_)) => {
                let status = Status::from(e);
                return Err(self
                    .admission
                    .refused(&context.actor, &context.peer, ENROLL_RPC, status)
                    .await);
            }
            Err(e) => return Err(e.into()),
        };
        let issued = self
            .ca
            .sign_agent(&req.csr_pem, agent.name, self.settings.cert_lifetime)?;
        self.store
            .set_agent_certificate(agent.name, &issued.fingerprint, issued.not_after)
            .await?;
        tracing::info!(agent = %agent.name, %hostname, "agent enrolled");
        Ok(Response::new(pb::EnrollResponse {
            agent: agent.name.to_string(),
            certificate_pem: issued.pem,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
            expire_time: Some(timestamp(issued.not_after)),
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let (agent, presented) = self.admission.authenticate(&request, RENEW_RPC).await?;
        let (_, peer) = peer_of(&request);
        let issued = self.ca.sign_agent(
            &request.into_inner().csr_pem,
            agent.name,
            self.settings.cert_lifetime,
        )?;
        let context = crate::audit::AuditContext {
            actor: agent.name.to_string(),
            peer,
            rpc: RENEW_RPC.into(),
        };
        // The certificate it called with stays valid until the new one is first used: if
        // this response is lost, the agent still gets in, and renews again.
        let grace = i64::try_from(PREVIOUS_CERT_GRACE.as_micros()).unwrap_or(i64::MAX);
        self.store
            .renew_agent_certificate(
                &context,
                agent.name,
                &presented,
                (&issued.fingerprint, issued.not_after),
                now_micros().saturating_add(grace),
            )
            .await?;
        tracing::info!(agent = %agent.name, "agent certificate renewed");
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem: issued.pem,
            expire_time: Some(timestamp(issued.not_after)),
        }))
    }

    type ConnectStream = ConnectStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (agent, _) = self.admission.authenticate(&request, CONNECT_RPC).await?;
        let mut inbound = request.into_inner();
        let heartbeat = self.settings.heartbeat;
        let hello = match tokio::time::timeout(heartbeat * 3, inbound.message()).await {
            Ok(Ok(Some(pb::ConnectRequest {
                event: Some(pb::connect_request::Event::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "the stream must start with an AgentHello",
                ));
            }
        };
        let (hostname, version) = check_agent_fields("hello.", &hello.hostname, &hello.version)?;
        let hello = pb::AgentHello {
            hostname,
            version,
            ..hello
        };
        self.store
            .touch_agent(agent.name, &hello.hostname, &hello.version)
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (close_tx, mut close_rx) = tokio::sync::watch::channel(false);
        let (ended_tx, mut ended_rx) = tokio::sync::watch::channel(false);
        let live = Arc::new(LiveAgent::new(agent.name, &hello, tx.clone(), close_tx));
        let stream = AgentStream {
            id: format!("{}/{}", self.me.0, live.session()),
            replica: self.me.clone(),
            agent: agent.name,
            connected_since: live.connected_since,
        };
        // On record before it takes work here, so that work waiting for it is found.
        if let Err(e) = self.store.add_agent_stream(&stream).await {
            tracing::warn!(agent = %agent.name, error = %e, "cannot record the agent's stream");
        }
        self.registry.register(Arc::clone(&live));
        tracing::info!(agent = %agent.name, stream = hello.stream, hostname = %hello.hostname, version = %hello.version, "agent connected");

        let (store, registry) = (Arc::clone(&self.store), Arc::clone(&self.registry));
        let tokens = Arc::clone(&self.tokens);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            let silence = heartbeat * 3;
            let mut deadline = tokio::time::Instant::now() + silence;
            let reason = loop {
                tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(message)) => {
                            live.heard();
                            deadline = tokio::time::Instant::now() + silence;
                            match message.event {
                                Some(pb::connect_request::Event::JobUpdate(update)) => match update.update {
                                    Some(pb::job_update::Update::RefreshTokenRotated(r)) => {
                                        store_rotated(&tokens, &live, &update.job_id, r).await;
                                    }
                                    Some(u) => {
                                        live.route(&update.job_id, u);
                                    }
                                    None => {}
                                },
                                Some(pb::connect_request::Event::Draining(_)) => {
                                    tracing::info!(agent = %live.name, "agent draining");
                                    live.set_draining();
                                }
                                Some(pb::connect_request::Event::Heartbeat(_)) => {
                                    // Revocation on another replica reaches this one here. The
                                    // agent, not the certificate the stream opened with: a
                                    // renewal meanwhile changes nothing for the stream.
                                    match store.agent(live.name.id).await {
                                        Ok(Some(a)) if !a.revoked => {
                                            let _ = store.touch_agent(live.name, &live.hostname, &live.version).await;
                                        }
                                        Ok(_) => break "revoked",
                                        Err(e) => tracing::warn!(error = %e, "cannot check the agent"),
                                    }
                                }
                                Some(pb::connect_request::Event::Hello(_)) | None => {}
                            }
                        }
                        Ok(None) => break "the agent closed the stream",
                        Err(_) => break "the stream failed",
                    },
                    _ = close_rx.changed() => break "revoked",
                    _ = tick.tick() => {
                        let beat = pb::ConnectResponse { event: Some(pb::connect_response::Event::Heartbeat(pb::ServerHeartbeat {})) };
                        if tx.send(Box::new(Ok(beat))).await.is_err() {
                            break "the agent went away";
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break "no heartbeat for three intervals",
                }
            };
            if reason == "revoked" {
                let _ = tx
                    .send(Box::new(Err(Status::permission_denied(
                        "this agent was revoked",
                    ))))
                    .await;
            }
            registry.unregister(&live);
            if let Err(e) = store.remove_agent_stream(&stream.id).await {
                tracing::warn!(agent = %live.name, error = %e, "cannot record the end of the agent's stream");
            }
            let _ = ended_tx.send(true);
            tracing::info!(agent = %live.name, stream = live.stream, reason, "agent disconnected");
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|message| *message)
            .take_until(async move {
                let _ = ended_rx.wait_for(|ended| *ended).await;
            });
        Ok(Response::new(Box::pin(stream)))
    }
}
