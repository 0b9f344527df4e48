//! One connection to the server: the `Connect` stream, heartbeats, dead-link detection,
//! jobs, and draining on shutdown.

use std::sync::Arc;
use std::time::Duration;

use mailplane_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::connect_request::Event;
use pb::connect_response::Event as ServerEvent;
use pb::job_update::Update;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

use super::delivery::{DeliveryCtx, DeliveryPool};
use super::servers::Servers;
use super::tokens::AgentTokens;
use super::{TunnelError, delivery, job};
use crate::allowlist::Allowlist;
use crate::channel::{self, RpcError, Target};
use crate::config::AgentConfig;
use crate::enroll::VERSION;
use crate::metrics::{JobKind, Metrics, StreamState, StreamStatus};
use crate::state;

/// How long to wait for the server to close its side after the agent closed its own.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What every connection shares.
pub(crate) struct Ctx {
    pub config: AgentConfig,
    pub allow: Arc<Allowlist>,
    /// The access tokens this agent gets itself, shared by every stream's jobs.
    pub tokens: Arc<AgentTokens>,
    pub slots: Arc<Semaphore>,
    pub hostname: String,
    /// The SMTP sessions of delivery jobs, kept across reconnections to the server.
    pub pool: Arc<DeliveryPool>,
    /// Which servers the streams hold, and which one was last good.
    pub servers: Servers,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
}

/// How a connection ended.
pub(crate) enum End {
    /// The shutdown future fired; jobs were drained.
    Shutdown,
    /// The link failed; `uptime` is how long the stream was up (zero if it never was).
    Lost { reason: String, uptime: Duration },
}

/// An open stream.
struct Link {
    // Kept so that the connection outlives the call.
    _client: AgentServiceClient<Channel>,
    tx: mpsc::Sender<pb::ConnectRequest>,
    inbound: Streaming<pb::ConnectResponse>,
}

fn request(event: Event) -> pb::ConnectRequest {
    pb::ConnectRequest { event: Some(event) }
}

fn in_flight(jobs: &mut JoinSet<()>) -> u32 {
    while jobs.try_join_next().is_some() {}
    u32::try_from(jobs.len()).unwrap_or(u32::MAX)
}

async fn open(ctx: &Ctx, stream: usize, target: &Target) -> Result<Link, TunnelError> {
    let dir = &ctx.config.state_dir;
    let st = state::require(dir)?;
    let channel = channel::connect_to(
        &ctx.config,
        target,
        Some((&st.cert_pem, st.key_pem.expose())),
        Some(&st.ca_pem),
    )
    .await?;
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(256);
    let hello = Event::Hello(pb::AgentHello {
        hostname: ctx.hostname.clone(),
        version: VERSION.to_owned(),
        max_concurrent_jobs: ctx.config.max_concurrent_jobs,
        stream: u32::try_from(stream).unwrap_or(u32::MAX),
    });
    // The receiver is alive: this cannot fail.
    let _ = tx.send(request(hello)).await;
    let response = client
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| RpcError::new("Connect", &s))?;
    Ok(Link {
        _client: client,
        tx,
        inbound: response.into_inner(),
    })
}

/// Waits for the jobs to finish, up to the drain timeout; abandons the rest.
pub(crate) async fn drain_jobs(ctx: &Ctx, jobs: &mut JoinSet<()>) {
    let all_done = async { while jobs.join_next().await.is_some() {} };
    if tokio::time::timeout(ctx.config.drain_timeout, all_done)
        .await
        .is_err()
    {
        tracing::warn!(
            abandoned = jobs.len(),
            "drain timeout: abandoning the jobs still running"
        );
        jobs.abort_all();
        while jobs.join_next().await.is_some() {}
    }
}

/// One round: opens a stream to the first server of the round's order that answers (see
/// [`Servers::round`]); the reasons of every failure when none does.
async fn open_any(
    ctx: &Ctx,
    stream: usize,
    last: Option<&Target>,
    status: &mut StreamStatus,
) -> Result<(Link, Target), String> {
    let (targets, mut failures) = ctx.servers.round(&ctx.config, stream, last).await;
    let limit = ctx.config.connect_timeout + ctx.config.heartbeat_interval.saturating_mul(3);
    for target in targets {
        status.set(&target.url, StreamState::Connecting);
        let failure = match tokio::time::timeout(limit, open(ctx, stream, &target)).await {
            Ok(Ok(link)) => return Ok((link, target)),
            Ok(Err(TunnelError::Channel(e))) => e.to_string(),
            Ok(Err(e)) => format!("{target}: {e}"),
            Err(_) => format!("{target}: the server did not answer the stream in time"),
        };
        tracing::info!(stream, error = %failure, "cannot open the stream; trying the next server");
        failures.push(failure);
    }
    Err(if failures.is_empty() {
        "no server to connect to".to_owned()
    } else {
        failures.join("; ")
    })
}

/// Connects (stream number `stream`, to the first server that answers), serves the stream
/// until it fails or `shutdown` fires, and says how it ended. `last` is the server the
/// stream last held; it is updated when it connects.
pub(crate) async fn connect_and_serve(
    ctx: &Ctx,
    stream: usize,
    last: &mut Option<Target>,
    jobs: &mut JoinSet<()>,
    status: &mut StreamStatus,
    shutdown: &CancellationToken,
) -> End {
    let hb = ctx.config.heartbeat_interval;
    let dead_after = hb.saturating_mul(3);
    let opened = tokio::select! {
        biased;
        () = shutdown.cancelled() => {
            drain_jobs(ctx, jobs).await;
            return End::Shutdown;
        }
        r = open_any(ctx, stream, last.as_ref(), status) => r,
    };
    let (mut link, target) = match opened {
        Ok(opened) => opened,
        Err(reason) => {
            return End::Lost {
                reason,
                uptime: Duration::ZERO,
            };
        }
    };
    let _holding = ctx.servers.hold(stream, &target);
    status.set(&target.url, StreamState::Connected);
    *last = Some(target.clone());
    let up = Instant::now();
    // Delivery jobs of this stream that have not reached DATA stop when it is lost.
    let link_lost = CancellationToken::new();
    let _lost_on_return = link_lost.clone().drop_guard();
    tracing::info!(stream, server = %target, "connected; waiting for jobs");
    let mut heartbeat = tokio::time::interval_at(Instant::now() + hb, hb);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let dead = tokio::time::sleep(dead_after);
    tokio::pin!(dead);
    let reason = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                drain(ctx, jobs, link, &mut heartbeat).await;
                return End::Shutdown;
            }
            message = link.inbound.message() => match message {
                Ok(Some(m)) => {
                    dead.as_mut().reset(Instant::now() + dead_after);
                    match m.event {
                        Some(ServerEvent::Job(job)) if job.delivery.is_some() => {
                            tracing::info!(
                                job_id = %job.job_id,
                                host = %job.host,
                                port = job.port,
                                "delivery job received"
                            );
                            let dctx = DeliveryCtx {
                                allow: ctx.allow.clone(),
                                tokens: ctx.tokens.clone(),
                                trust: ctx.config.trust,
                                slots: ctx.slots.clone(),
                                pool: ctx.pool.clone(),
                                link_lost: link_lost.clone(),
                            };
                            let counted = ctx.metrics.job_started(JobKind::Delivery);
                            let run = delivery::run(job, dctx, link.tx.clone());
                            jobs.spawn(async move { counted.finish(run.await) });
                        }
                        Some(ServerEvent::Job(job)) => {
                            tracing::info!(
                                job_id = %job.job_id,
                                host = %job.host,
                                port = job.port,
                                "job received"
                            );
                            let counted = ctx.metrics.job_started(JobKind::Test);
                            let run = job::run(
                                job,
                                ctx.allow.clone(),
                                ctx.tokens.clone(),
                                ctx.config.trust,
                                ctx.slots.clone(),
                                link.tx.clone(),
                            );
                            jobs.spawn(async move { counted.finish(run.await) });
                        }
                        Some(ServerEvent::Heartbeat(_)) | None => {}
                    }
                }
                Ok(None) => break "the server closed the stream".to_owned(),
                Err(status) => {
                    break format!("the stream failed: {:?}: {}", status.code(), status.message())
                }
            },
            _ = heartbeat.tick() => {
                let jobs_in_flight = in_flight(jobs);
                let beat = request(Event::Heartbeat(pb::AgentHeartbeat { jobs_in_flight }));
                if link.tx.send(beat).await.is_err() {
                    break "the outgoing stream closed".to_owned();
                }
            }
            () = &mut dead => {
                break format!("no message from the server for {dead_after:?}: the link is dead");
            }
        }
    };
    End::Lost {
        reason,
        uptime: up.elapsed(),
    }
}

/// Says the agent is draining, finishes the running jobs (refusing new ones) within the
/// drain timeout, then closes the stream.
async fn drain(ctx: &Ctx, jobs: &mut JoinSet<()>, link: Link, heartbeat: &mut Interval) {
    let Link {
        _client,
        tx,
        mut inbound,
    } = link;
    tracing::info!(
        jobs_in_flight = in_flight(jobs),
        "shutting down: draining (no new jobs; waiting for running ones)"
    );
    let _ = tx
        .send(request(Event::Draining(pb::AgentDraining {})))
        .await;
    let deadline = tokio::time::sleep(ctx.config.drain_timeout);
    tokio::pin!(deadline);
    let mut stream_open = true;
    loop {
        tokio::select! {
            () = &mut deadline => {
                tracing::warn!(
                    abandoned = jobs.len(),
                    "drain timeout: abandoning the jobs still running"
                );
                jobs.abort_all();
                while jobs.join_next().await.is_some() {}
                break;
            }
            done = jobs.join_next() => if done.is_none() { break },
            message = inbound.message(), if stream_open => match message {
                Ok(Some(pb::ConnectResponse { event: Some(ServerEvent::Job(job)) })) => {
                    tracing::info!(job_id = %job.job_id, "refusing a job: draining");
                    let outcome = job::not_run(
                        pb::FailureClass::TemporaryFailure,
                        "the agent is shutting down".to_owned(),
                        "run it again; another agent of the connector can take it",
                    );
                    let _ = tx.send(job::update(&job.job_id, Update::Finished(outcome))).await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => stream_open = false,
            },
            _ = heartbeat.tick() => {
                let jobs_in_flight = in_flight(jobs);
                let _ = tx
                    .send(request(Event::Heartbeat(pb::AgentHeartbeat { jobs_in_flight })))
                    .await;
            }
        }
    }
    // Close our side; wait briefly for the server to close its own, so that the last
    // updates are delivered before the connection goes away.
    drop(tx);
    if stream_open {
        let rest = async { while let Ok(Some(_)) = inbound.message().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, rest).await;
    }
    tracing::info!("drained; stream closed");
}
