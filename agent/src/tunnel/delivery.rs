//! Running one delivery job: the outbox's message, sent over the agent's own pooled SMTP
//! session for the job's account, with the agent's allowlist as the destination check.
//!
//! The server decides what a lost agent means from whether DATA had started: the agent
//! reports `PHASE_DATA` started when the relay answers 354, before the message goes out. A
//! job whose stream to the server is lost before that point is abandoned (the server queues
//! the message again, and must not find it delivered twice); after it, the job finishes, since
//! the relay may be taking the message already.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mailplane_proto::v1 as pb;
use pb::job_update::Update;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::job::{no_token, not_run, update};
use super::tokens::{self, AgentTokens};
use crate::allowlist::Allowlist;
use crate::metrics::JobResult;
use mailplane_smtp as smtp;
use mailplane_smtp::proto as convert;

/// The agent's pooled sessions, keyed by the job's `pool_key` (the account).
pub(crate) type DeliveryPool = smtp::Pool<String>;

/// A pool whose sessions reach only what `allow` allows (every send also passes the job's
/// own check); `sessions_per_key` is the agent's job limit, since the server already bounds
/// each account's sessions.
pub(crate) fn pool(allow: &Allowlist, sessions_per_key: u32) -> DeliveryPool {
    let config = smtp::PoolConfig {
        max_sessions_per_key: usize::try_from(sessions_per_key.max(1)).unwrap_or(1),
        ..smtp::PoolConfig::default()
    };
    smtp::Pool::new(config, Arc::new(allow.check_for("", 0)))
}

/// What a delivery job needs besides the job.
pub(crate) struct DeliveryCtx {
    pub allow: Arc<Allowlist>,
    pub tokens: Arc<AgentTokens>,
    /// The roots relays' certificates are verified against (the agent's `trust`).
    pub trust: smtp::TrustStore,
    pub slots: Arc<Semaphore>,
    pub pool: Arc<DeliveryPool>,
    /// Cancelled when the stream the job came on is lost.
    pub link_lost: CancellationToken,
}

/// Runs the delivery job once a slot is free, reports its outcome on `out`, and says how it
/// ended.
pub(crate) async fn run(
    mut job: pb::SmtpJob,
    ctx: DeliveryCtx,
    out: mpsc::Sender<pb::ConnectRequest>,
) -> JobResult {
    let job_id = job.job_id.clone();
    let Some(delivery) = job.delivery.take() else {
        return JobResult::Abandoned;
    };
    let slot = tokio::select! {
        slot = Arc::clone(&ctx.slots).acquire_owned() => slot,
        () = ctx.link_lost.cancelled() => {
            tracing::info!(job_id = %job_id, "delivery abandoned before it started: the stream to the server was lost");
            return JobResult::Abandoned;
        }
    };
    let Ok(_slot) = slot else {
        return JobResult::Abandoned;
    };
    let outcome = match convert::config_from_job(&job) {
        Err(e) => not_run(
            pb::FailureClass::PermanentFailure,
            format!("the agent cannot run this delivery: {e}"),
            "the server and the agent disagree about the job; check that their versions match",
        ),
        Ok(mut config) => {
            config.trust = ctx.trust;
            match tokens::prepare(&ctx.tokens, &mut config, &job_id, &out).await {
                Err(f) => no_token(f),
                Ok(()) => match send(&job_id, &config, &delivery, &ctx, &out).await {
                    Some(outcome) => outcome,
                    None => return JobResult::Abandoned,
                },
            }
        }
    };
    drop(job);
    tracing::info!(
        job_id = %job_id,
        sent = outcome.succeeded,
        outcome = outcome.delivery.as_ref().map_or("not run", |d| d.outcome().as_str_name()),
        queue_id = outcome.delivery.as_ref().map_or("", |d| d.queue_id.as_str()),
        "delivery finished"
    );
    let result = if outcome.succeeded {
        JobResult::Ok
    } else {
        JobResult::Failed
    };
    let _ = out.send(update(&job_id, Update::Finished(outcome))).await;
    result
}

/// Sends the message; `None` when the job was abandoned because its stream was lost before
/// DATA.
async fn send(
    job_id: &str,
    config: &smtp::SessionConfig,
    delivery: &pb::JobDelivery,
    ctx: &DeliveryCtx,
    out: &mpsc::Sender<pb::ConnectRequest>,
) -> Option<pb::JobOutcome> {
    let check = ctx.allow.check_for(&config.host, config.port);
    let envelope = convert::envelope_from_job(delivery);
    tracing::info!(
        job_id = %job_id,
        host = %config.host,
        port = config.port,
        recipients = envelope.rcpt_to.len(),
        size = delivery.content.len(),
        "delivering"
    );
    let data_started = AtomicBool::new(false);
    let on_data = || {
        data_started.store(true, Ordering::SeqCst);
        // Queued before the message goes out, so the server hears it before any outcome.
        let started = Update::PhaseStarted(pb::Phase::Data.into());
        if out.try_send(update(job_id, started)).is_err() {
            tracing::warn!(job_id = %job_id, "cannot report that DATA started: the stream is full or gone");
        }
    };
    let options = smtp::SendOptions {
        check: Some(&check),
        on_data: Some(&on_data),
    };
    let sending = ctx.pool.send_with(
        &delivery.pool_key,
        config,
        &envelope,
        &delivery.content,
        options,
    );
    tokio::pin!(sending);
    let sent = tokio::select! {
        sent = &mut sending => sent,
        () = ctx.link_lost.cancelled() => {
            if !data_started.load(Ordering::SeqCst) {
                tracing::warn!(job_id = %job_id, "delivery abandoned before DATA: the stream to the server was lost; the server queues it again");
                return None;
            }
            sending.await
        }
    };
    Some(match sent {
        Ok(delivery) => pb::JobOutcome {
            succeeded: matches!(delivery.message, smtp::MessageOutcome::Sent { .. }),
            result: None,
            capabilities: Vec::new(),
            delivery: Some(convert::delivery_to_pb(&delivery)),
        },
        Err(e) => not_run(
            pb::FailureClass::PermanentFailure,
            format!("the delivery could not start: {e}"),
            "check the account's settings and the message's addresses",
        ),
    })
}
