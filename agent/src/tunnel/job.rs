//! Running one `SmtpJob` with the session library and reporting it as `JobUpdate`s.

use std::sync::Arc;

use mailplane_proto::v1 as pb;
use pb::connect_request::Event;
use pb::job_update::Update;
use tokio::sync::{Semaphore, mpsc};

use super::tokens::{self, AgentTokens, TokenFailure};
use crate::allowlist::Allowlist;
use crate::metrics::JobResult;
use mailplane_smtp as smtp;
use mailplane_smtp::proto as convert;

/// A request carrying one update of `job_id`.
pub(crate) fn update(job_id: &str, update: Update) -> pb::ConnectRequest {
    pb::ConnectRequest {
        event: Some(Event::JobUpdate(pb::JobUpdate {
            job_id: job_id.to_owned(),
            update: Some(update),
        })),
    }
}

/// An outcome for a job that did not run (nothing was sent).
pub(crate) fn not_run(class: pb::FailureClass, message: String, hint: &str) -> pb::JobOutcome {
    pb::JobOutcome {
        succeeded: false,
        result: Some(pb::TestResult {
            failure_class: class.into(),
            message,
            hint: hint.to_owned(),
            ..Default::default()
        }),
        capabilities: Vec::new(),
        delivery: None,
    }
}

/// The outcome of a job that got no access token (the `TOKEN` phase was reported already).
pub(crate) fn no_token(f: TokenFailure) -> pb::JobOutcome {
    let mut outcome = not_run(convert::failure_class(f.class), f.message, &f.hint);
    if let Some(result) = outcome.result.as_mut() {
        result.failed_phase = pb::Phase::Token.into();
    }
    outcome
}

/// Runs `job` once a slot is free, streaming its phases and its outcome to `out`, and says
/// how it ended. Updates that cannot be sent (the stream is gone) are dropped.
pub(crate) async fn run(
    job: pb::SmtpJob,
    allow: Arc<Allowlist>,
    tokens: Arc<AgentTokens>,
    trust: smtp::TrustStore,
    slots: Arc<Semaphore>,
    out: mpsc::Sender<pb::ConnectRequest>,
) -> JobResult {
    let Ok(_slot) = slots.acquire_owned().await else {
        return JobResult::Abandoned;
    };
    let job_id = job.job_id.clone();
    let outcome = match convert::config_from_job(&job) {
        Err(e) => not_run(
            pb::FailureClass::PermanentFailure,
            format!("the agent cannot run this job: {e}"),
            "the server and the agent disagree about the job; check that their versions match",
        ),
        Ok(mut config) => {
            config.trust = trust;
            match tokens::prepare(&tokens, &mut config, &job_id, &out).await {
                Ok(()) => run_config(&job_id, config, &allow, &out).await,
                Err(f) => no_token(f),
            }
        }
    };
    drop(job);
    let result = outcome.result.as_ref();
    tracing::info!(
        job_id = %job_id,
        succeeded = outcome.succeeded,
        failure_class = result.map_or("", |r| r.failure_class().as_str_name()),
        message = result.map_or("", |r| r.message.as_str()),
        "job finished"
    );
    let result = if outcome.succeeded {
        JobResult::Ok
    } else {
        JobResult::Failed
    };
    let _ = out.send(update(&job_id, Update::Finished(outcome))).await;
    result
}

async fn run_config(
    job_id: &str,
    config: smtp::SessionConfig,
    allow: &Allowlist,
    out: &mpsc::Sender<pb::ConnectRequest>,
) -> pb::JobOutcome {
    let check = allow.check_for(&config.host, config.port);
    tracing::info!(
        job_id = %job_id,
        host = %config.host,
        port = config.port,
        security = config.security.as_str(),
        name_allowed = check.name_allowed(),
        "running job"
    );
    let (events_tx, mut events) = mpsc::channel::<smtp::PhaseEvent>(32);
    let session = async move {
        let report = smtp::run_session(&config, &check, Some(&events_tx)).await;
        drop(events_tx);
        report
    };
    let forward = async {
        while let Some(event) = events.recv().await {
            let u = match event {
                smtp::PhaseEvent::Started(p) => Update::PhaseStarted(convert::phase(p).into()),
                smtp::PhaseEvent::Finished(record) => {
                    Update::PhaseFinished(convert::phase_result(&record))
                }
            };
            // A closed stream is not the job's problem: keep draining the events.
            let _ = out.send(update(job_id, u)).await;
        }
    };
    let (report, ()) = tokio::join!(session, forward);
    match report {
        Ok(report) => convert::outcome(&report),
        Err(e) => not_run(
            pb::FailureClass::PermanentFailure,
            format!("the job's configuration cannot run: {e}"),
            "fix the account's settings",
        ),
    }
}
