//! One delivery attempt: the account's session settings, the send to the recipients still
//! pending (over this server's pool, or through an agent of the account's network connector,
//! see [`remote`]), and the attempt recorded with what it means for the message.

use super::Outbox;
use super::remote;
use crate::domain::ConnectorId;
use crate::domain::message::{Attempt, Claimed, MessageState, RecipientState};
use crate::domain::retry::{AttemptEnd, RecipientVerdict, Settled, settle};
use crate::domain::{micros, now_micros};
use crate::smtp_tests::session_config::{
    AuthUnavailable, CREDENTIAL_UNAVAILABLE_HINT, connection_config, credentials,
};
use mailplane_proto::v1 as pb;
use mailplane_smtp::{self as smtp, proto as convert};
use std::time::{Duration, Instant};

/// How long a message waits when its attempt could not start for a reason of this server (a
/// database error).
const RETRY_SOON: Duration = Duration::from_secs(60);

/// The `agent` of an attempt made by this server itself.
const DIRECT: &str = "direct";

/// Why a message whose attempt the server's shutdown ended is queued again.
const STOPPED: &str = "the server stopped during an attempt; queued again";

/// How a send ended, directly or through a connector.
pub(super) enum SendEnd {
    /// The relay answered.
    Delivered {
        /// Who sent it: `direct`, or the agent's name.
        agent: String,
        /// The answers.
        delivery: smtp::Delivery,
    },
    /// Nothing was sent: the send could not start, no agent came, or the agent did not run
    /// the job. Retried by the schedule (a transient failure of class `class`).
    NotSent {
        /// The agent, if one was asked.
        agent: Option<String>,
        /// Why, as a failure class.
        class: pb::FailureClass,
        /// What happened.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// This server stops: queue it again now.
    Stopped,
    /// The agent went away before DATA: nothing was sent; queue it again now.
    LostBeforeData {
        /// The agent.
        agent: String,
    },
    /// The agent went away after DATA started, or its report cannot be read: the relay may
    /// have the message.
    Unknown {
        /// The agent.
        agent: String,
        /// What happened.
        message: String,
    },
}

/// Returns the message to the queue, due after `delay`, saying why.
async fn requeue(outbox: &Outbox, claimed: &Claimed, delay: Duration, why: &str) {
    let due = now_micros() + micros(delay);
    if let Err(e) = outbox.store.requeue_message(claimed.id, due, why).await {
        tracing::error!(message = %claimed.id, error = %e, "cannot return a message to the queue");
    }
}

/// Records an attempt that failed before anything was sent, as `class`.
fn failed_before_sending(
    claimed: &Claimed,
    pending: &[usize],
    class: pb::FailureClass,
    end: AttemptEnd,
    message: &str,
    hint: &str,
    outbox: &Outbox,
) -> (Attempt, Settled) {
    crate::metrics::delivery_attempt("not_sent", None);
    let verdicts: Vec<_> = pending
        .iter()
        .map(|p| (*p, RecipientVerdict::Retry(String::new())))
        .collect();
    let now = now_micros();
    let settled = settle(
        claimed,
        &verdicts,
        end,
        message,
        &outbox.settings.retry,
        now,
        rand::random::<f64>(),
    );
    let attempt = Attempt {
        time: now,
        agent: DIRECT.into(),
        failure_class: class.as_str_name().to_owned(),
        message: message.to_owned(),
        hint: hint.to_owned(),
        ..Attempt::default()
    };
    (attempt, settled)
}

/// Delivers one claimed message and records the attempt.
pub(super) async fn run(outbox: &Outbox, claimed: Claimed) {
    // Held until the attempt is recorded (see `Outbox::slots`).
    let slots = outbox.slots(claimed.account);
    let _slot = tokio::select! {
        slot = slots.acquire() => slot,
        () = outbox.abort.cancelled() => {
            return requeue(outbox, &claimed, Duration::ZERO, STOPPED).await;
        }
    };
    let started = Instant::now();
    let time = now_micros();
    let account = match outbox.store.get_account(claimed.account).await {
        Ok(account) => account,
        Err(e) => {
            tracing::error!(message = %claimed.id, error = %e, "cannot read the message's account");
            return requeue(
                outbox,
                &claimed,
                RETRY_SOON,
                "the account could not be read",
            )
            .await;
        }
    };
    let pending: Vec<usize> = claimed
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RecipientState::Pending)
        .map(|(i, _)| i)
        .collect();
    let (attempt, settled) = match (&claimed.bytes, pending.is_empty()) {
        (_, true) => (
            Attempt::default(),
            Settled {
                recipients: Vec::new(),
                state: MessageState::Sent,
                next_attempt_time: None,
                last_error: String::new(),
            },
        ),
        (None, false) => failed_before_sending(
            &claimed,
            &pending,
            pb::FailureClass::PermanentFailure,
            AttemptEnd::Permanent,
            "the message's content was purged; it cannot be sent",
            "send it again",
            outbox,
        ),
        (Some(bytes), false) => {
            let auth = match credentials(
                &outbox.store,
                outbox.tokens.keys(),
                &outbox.tokens,
                &account,
            )
            .await
            {
                Ok(auth) => auth.map(|a| a.credentials),
                Err(e) => {
                    // A credential that cannot be read, or a token endpoint that gives no
                    // token, may be fixed by a person: retried with backoff, not failed.
                    let (class, hint) = match &e {
                        AuthUnavailable::Credential(_) => (
                            pb::FailureClass::CredentialUnavailable,
                            CREDENTIAL_UNAVAILABLE_HINT.to_owned(),
                        ),
                        AuthUnavailable::Token(f) => {
                            (convert::failure_class(f.class), f.hint.clone())
                        }
                    };
                    let done = failed_before_sending(
                        &claimed,
                        &pending,
                        class,
                        AttemptEnd::Transient,
                        &e.to_string(),
                        &hint,
                        outbox,
                    );
                    return finish(outbox, &claimed, done.0, done.1).await;
                }
            };
            let config = connection_config(&outbox.smtp, &account, auth);
            let to = pending
                .iter()
                .map(|p| claimed.recipients[*p].address.clone())
                .collect();
            let envelope = smtp::Envelope::new(claimed.envelope_from.clone(), to);
            let connector = account
                .spec
                .network_connector
                .filter(|_| account.spec.use_network_connector);
            let sending = async {
                match connector {
                    None => direct(outbox, &account.id, &config, &envelope, bytes).await,
                    Some(c) => {
                        let c = ConnectorId(c);
                        remote::send(outbox, c, &claimed, &config, &envelope, bytes).await
                    }
                }
            };
            let end = tokio::select! {
                end = sending => end,
                () = outbox.abort.cancelled() => {
                    return requeue(outbox, &claimed, Duration::ZERO, STOPPED).await;
                }
            };
            match end {
                SendEnd::Delivered { agent, delivery } => {
                    let (attempt, settled) = judge(outbox, &claimed, &pending, &delivery, time);
                    (Attempt { agent, ..attempt }, settled)
                }
                SendEnd::NotSent {
                    agent,
                    class,
                    message,
                    hint,
                } => {
                    let (attempt, settled) = failed_before_sending(
                        &claimed,
                        &pending,
                        class,
                        AttemptEnd::Transient,
                        &message,
                        &hint,
                        outbox,
                    );
                    let agent = agent.unwrap_or(attempt.agent.clone());
                    (Attempt { agent, ..attempt }, settled)
                }
                SendEnd::LostBeforeData { agent } => {
                    let message = format!("{agent} went away before DATA; queued again");
                    tracing::warn!(message = %claimed.id, %agent, "agent lost before DATA; queued again");
                    let attempt = Attempt {
                        time,
                        agent,
                        failure_class: pb::FailureClass::ConnectorLost.as_str_name().to_owned(),
                        message: message.clone(),
                        hint: "nothing was sent; another agent of the connector takes it".into(),
                        ..Attempt::default()
                    };
                    let settled = Settled {
                        recipients: Vec::new(),
                        state: MessageState::Queued,
                        next_attempt_time: Some(now_micros()),
                        last_error: message,
                    };
                    (attempt, settled)
                }
                SendEnd::Unknown { agent, message } => {
                    tracing::warn!(message = %claimed.id, %agent, "delivery outcome unknown; not re-sending");
                    let (attempt, settled) = failed_before_sending(
                        &claimed,
                        &pending,
                        pb::FailureClass::ConnectorLost,
                        AttemptEnd::Ambiguous,
                        &message,
                        "look for the message at the relay before calling RetryMessage",
                        outbox,
                    );
                    (Attempt { agent, ..attempt }, settled)
                }
                SendEnd::Stopped => {
                    return requeue(outbox, &claimed, Duration::ZERO, STOPPED).await;
                }
            }
        }
    };
    let attempt = Attempt {
        time,
        duration_micros: micros(started.elapsed()),
        ..attempt
    };
    finish(outbox, &claimed, attempt, settled).await;
}

/// Sends over this server's own pool.
async fn direct(
    outbox: &Outbox,
    account: &crate::domain::AccountId,
    config: &smtp::SessionConfig,
    envelope: &smtp::Envelope,
    bytes: &[u8],
) -> SendEnd {
    match outbox.pool.send(account, config, envelope, bytes).await {
        Ok(delivery) => SendEnd::Delivered {
            agent: DIRECT.into(),
            delivery,
        },
        // The pool is closing: the server stops.
        Err(smtp::PoolError::Closed) => SendEnd::Stopped,
        // The account's settings or an address the relay was never asked about: a person
        // may fix the account, so it is retried until the maximum age.
        Err(e) => SendEnd::NotSent {
            agent: None,
            class: pb::FailureClass::PermanentFailure,
            message: format!("the attempt could not start: {e}"),
            hint: "check the account's settings and the message's addresses".into(),
        },
    }
}

/// Stores the attempt and the message's new state.
async fn finish(outbox: &Outbox, claimed: &Claimed, attempt: Attempt, settled: Settled) {
    tracing::info!(message = %claimed.id, state = settled.state.as_str(), queue_id = %attempt.relay_queue_id, "delivery attempt");
    if let Err(e) = outbox.record_attempt(claimed.id, &attempt, &settled).await {
        tracing::error!(message = %claimed.id, error = %e, "cannot record a delivery attempt");
    }
}

/// What the relay's answers mean for the message.
fn judge(
    outbox: &Outbox,
    claimed: &Claimed,
    pending: &[usize],
    delivery: &smtp::Delivery,
    time: i64,
) -> (Attempt, Settled) {
    let verdicts: Vec<_> = delivery
        .recipients
        .iter()
        .zip(pending)
        .map(|(r, position)| {
            let reply = r.reply().map(ToString::to_string).unwrap_or_default();
            let verdict = match &r.status {
                smtp::RecipientStatus::Accepted { .. } => RecipientVerdict::Accepted(reply),
                smtp::RecipientStatus::Rejected {
                    severity: smtp::Severity::Permanent,
                    ..
                } => RecipientVerdict::Rejected(reply),
                smtp::RecipientStatus::Rejected { .. } | smtp::RecipientStatus::NotTried => {
                    RecipientVerdict::Retry(reply)
                }
            };
            (*position, verdict)
        })
        .collect();
    let (end, reply, failure) = match &delivery.message {
        smtp::MessageOutcome::Sent { reply, .. } => (AttemptEnd::Sent, Some(reply), None),
        smtp::MessageOutcome::Transient { failure } => {
            (AttemptEnd::Transient, failure.reply.as_ref(), Some(failure))
        }
        smtp::MessageOutcome::AmbiguousAfterData { failure } => {
            (AttemptEnd::Ambiguous, failure.reply.as_ref(), Some(failure))
        }
        smtp::MessageOutcome::Permanent { failure } => {
            (AttemptEnd::Permanent, failure.reply.as_ref(), Some(failure))
        }
    };
    crate::metrics::delivery_attempt(
        match end {
            AttemptEnd::Sent => "sent",
            AttemptEnd::Transient => "transient",
            AttemptEnd::Ambiguous => "ambiguous",
            AttemptEnd::Permanent => "permanent",
        },
        reply.map(|r| r.code),
    );
    let summary = failure.map(ToString::to_string).unwrap_or_default();
    let settled = settle(
        claimed,
        &verdicts,
        end,
        &summary,
        &outbox.settings.retry,
        now_micros(),
        rand::random::<f64>(),
    );
    let attempt = Attempt {
        time,
        agent: DIRECT.into(),
        reply_code: reply.map_or(0, |r| i32::from(r.code)),
        enhanced_status_code: reply.and_then(|r| r.enhanced.clone()).unwrap_or_default(),
        relay_queue_id: delivery.queue_id().unwrap_or_default().to_owned(),
        duration_micros: 0,
        failure_class: failure.map_or_else(String::new, |f| {
            convert::failure_class(f.class).as_str_name().to_owned()
        }),
        message: failure.map_or_else(String::new, |f| f.message.clone()),
        hint: failure.map_or_else(String::new, |f| f.hint.clone()),
    };
    (attempt, settled)
}
