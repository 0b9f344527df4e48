//! The connector path of a delivery: the message goes to the least-loaded live agent of the
//! account's network connector, which sends it over its own pooled session (with its own
//! allowlist) and reports the relay's answers.
//!
//! What a lost agent means depends on whether DATA had started (the agent reports `PHASE_DATA`
//! started when the relay answers 354, before the message goes out): before, nothing was sent
//! and the message goes back to the queue, due now, for any agent; after, the relay may
//! already have it, so it is DEFERRED with `CONNECTOR_LOST` until a person calls
//! `RetryMessage`. A report this server cannot read is treated the same way.

use super::Outbox;
use super::deliver::SendEnd;
use crate::domain::ConnectorId;
use crate::domain::message::Claimed;
use crate::tunnel::registry::JobEnd;
use mailplane_proto::v1 as pb;
use mailplane_smtp::{self as smtp, proto as convert};
use std::time::Duration;

/// Sends `content` to `envelope` through an agent of `connector`.
pub(super) async fn send(
    outbox: &Outbox,
    connector: ConnectorId,
    claimed: &Claimed,
    config: &smtp::SessionConfig,
    envelope: &smtp::Envelope,
    content: &[u8],
) -> SendEnd {
    let job_id = format!("{}/attempts/{}", claimed.id, claimed.attempt_count + 1);
    let job = convert::delivery_job(
        job_id,
        config,
        claimed.account.to_string(),
        envelope,
        content,
    );
    // A connector with no live agent fails at once (the schedule retries it): waiting would
    // hold a delivery slot that other accounts' messages could use. Agents that are only
    // busy are waited for, as tests wait.
    let wait = if outbox.registry.live(connector).is_empty() {
        Duration::ZERO
    } else {
        outbox.smtp.connector_wait
    };
    let Some(mut dispatched) = outbox.registry.dispatch(connector, job, wait).await else {
        return SendEnd::NotSent {
            agent: None,
            class: pb::FailureClass::ConnectorOffline,
            message: if wait.is_zero() {
                format!("no live agent of {connector}")
            } else {
                format!("no agent of {connector} was free within {wait:?}")
            },
            hint: connector.offline_hint(),
        };
    };
    let agent = dispatched.agent.name.to_string();
    tracing::debug!(message = %claimed.id, %agent, "delivery dispatched to agent");
    // DATA started is written down (for PostgreSQL's other replicas: if this one dies now,
    // the agent may still hand the message over, and they must not send it again). The write
    // runs beside the job and always to its end: a database call is never cut off midway.
    let (data_tx, data_rx) = tokio::sync::oneshot::channel::<()>();
    let mut data_tx = Some(data_tx);
    let data = pb::Phase::Data as i32;
    let follow = dispatched.follow(move |update| {
        let started = match &update {
            pb::job_update::Update::PhaseStarted(p) => *p == data,
            pb::job_update::Update::PhaseFinished(r) => r.phase == data,
            pb::job_update::Update::Finished(_)
            | pb::job_update::Update::RefreshTokenRotated(_) => false,
        };
        if started && let Some(tx) = data_tx.take() {
            let _ = tx.send(());
        }
    });
    let mark = async {
        // Closed unsent when the job ends without DATA.
        if data_rx.await.is_ok()
            && let Err(e) = outbox
                .store
                .mark_data_started(claimed.id, &outbox.me, &agent)
                .await
        {
            tracing::warn!(message = %claimed.id, error = %e, "cannot record that DATA started");
        }
    };
    let (end, ()) = tokio::join!(follow, mark);
    drop(dispatched);
    match end {
        JobEnd::Lost { data_started: true } => SendEnd::Unknown {
            message: format!("{agent} went away after DATA started"),
            agent,
        },
        JobEnd::Lost {
            data_started: false,
        } => SendEnd::LostBeforeData { agent },
        JobEnd::Finished(outcome) => match outcome.delivery.as_ref().map(convert::delivery_from_pb)
        {
            Some(Ok(delivery)) => SendEnd::Delivered { agent, delivery },
            // The relay may have accepted it: a person decides (the versions disagree).
            Some(Err(e)) => SendEnd::Unknown {
                message: format!(
                    "the report of {agent} cannot be read ({e}); check that the server and the \
                     agent run the same version"
                ),
                agent,
            },
            None => {
                let result = outcome.result.unwrap_or_default();
                SendEnd::NotSent {
                    agent: Some(agent),
                    class: result.failure_class(),
                    message: result.message,
                    hint: result.hint,
                }
            }
        },
    }
}
