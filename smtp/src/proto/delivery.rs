//! Delivery jobs: the outbox's message on an agent's stream, and the agent's [`Delivery`]
//! back. [`delivery_to_pb`] and [`delivery_from_pb`] are inverses (reply texts travel as
//! their lines joined by `\n`).

use mailplane_proto::v1 as pb;
use pb::delivery_recipient::Status;
use pb::delivery_result::Outcome;

use super::{ConvertError, failure_class, job_from_config, phase};
use crate::delivery::{ConnectionUse, Delivery, Envelope, MessageOutcome};
use crate::delivery::{RecipientResult, RecipientStatus, Severity};
use crate::{self as smtp, Failure, Reply};

/// The job that delivers `content` to `envelope` over an agent's pooled session for
/// `pool_key`, connected as `config` says (its `message` and `stop_after` are not sent). The
/// secret goes into the job: send it only over the agent's mTLS stream, and never log it.
pub fn delivery_job(
    job_id: impl Into<String>,
    config: &smtp::SessionConfig,
    pool_key: impl Into<String>,
    envelope: &Envelope,
    content: &[u8],
) -> pb::SmtpJob {
    let mut job = job_from_config(job_id, config);
    job.message = None;
    job.stop_after = pb::StopAfter::Delivery.into();
    job.delivery = Some(pb::JobDelivery {
        pool_key: pool_key.into(),
        mail_from: envelope.mail_from.clone(),
        recipients: envelope.rcpt_to.clone(),
        content: content.to_vec(),
    });
    job
}

/// The envelope of a delivery job.
pub fn envelope_from_job(delivery: &pb::JobDelivery) -> Envelope {
    Envelope::new(delivery.mail_from.clone(), delivery.recipients.clone())
}

fn reply_parts(reply: Option<&Reply>) -> (i32, String, String) {
    reply.map_or((0, String::new(), String::new()), |r| {
        (
            i32::from(r.code),
            r.text(),
            r.enhanced.clone().unwrap_or_default(),
        )
    })
}

fn reply_from_parts(code: i32, text: &str, enhanced: &str) -> Option<Reply> {
    let code = u16::try_from(code).ok().filter(|c| *c != 0)?;
    Some(Reply {
        code,
        enhanced: (!enhanced.is_empty()).then(|| enhanced.to_owned()),
        lines: text.split('\n').map(str::to_owned).collect(),
    })
}

fn recipient_to_pb(r: &RecipientResult) -> pb::DeliveryRecipient {
    let status = match &r.status {
        RecipientStatus::Accepted { .. } => Status::Accepted,
        RecipientStatus::Rejected {
            severity: Severity::Transient,
            ..
        } => Status::RejectedTransient,
        RecipientStatus::Rejected {
            severity: Severity::Permanent,
            ..
        } => Status::RejectedPermanent,
        RecipientStatus::NotTried => Status::NotTried,
    };
    let (reply_code, reply_text, enhanced_status_code) = reply_parts(r.reply());
    pb::DeliveryRecipient {
        address: r.address.clone(),
        status: status.into(),
        reply_code,
        reply_text,
        enhanced_status_code,
    }
}

fn recipient_from_pb(r: &pb::DeliveryRecipient) -> Result<RecipientResult, ConvertError> {
    let reply = reply_from_parts(r.reply_code, &r.reply_text, &r.enhanced_status_code);
    let status = match (Status::try_from(r.status), reply) {
        (Ok(Status::NotTried), _) => RecipientStatus::NotTried,
        (Ok(Status::Accepted), Some(reply)) => RecipientStatus::Accepted { reply },
        (Ok(Status::RejectedTransient), Some(reply)) => RecipientStatus::Rejected {
            severity: Severity::Transient,
            reply,
        },
        (Ok(Status::RejectedPermanent), Some(reply)) => RecipientStatus::Rejected {
            severity: Severity::Permanent,
            reply,
        },
        // An answer without its reply, or a status this version does not know.
        (Ok(Status::Unspecified), _)
        | (Ok(Status::Accepted | Status::RejectedTransient | Status::RejectedPermanent), None)
        | (Err(_), _) => {
            return Err(ConvertError::UnknownEnum {
                field: "delivery.recipients.status",
                value: r.status,
            });
        }
    };
    Ok(RecipientResult {
        address: r.address.clone(),
        status,
    })
}

/// The agent's report of a [`Delivery`].
pub fn delivery_to_pb(d: &Delivery) -> pb::DeliveryResult {
    let (outcome, reply, failure) = match &d.message {
        MessageOutcome::Sent { reply, .. } => (Outcome::Sent, Some(reply), None),
        MessageOutcome::Transient { failure } => {
            (Outcome::Transient, failure.reply.as_ref(), Some(failure))
        }
        MessageOutcome::AmbiguousAfterData { failure } => (
            Outcome::AmbiguousAfterData,
            failure.reply.as_ref(),
            Some(failure),
        ),
        MessageOutcome::Permanent { failure } => {
            (Outcome::Permanent, failure.reply.as_ref(), Some(failure))
        }
    };
    let (reply_code, reply_text, enhanced_status_code) = reply_parts(reply);
    pb::DeliveryResult {
        outcome: outcome.into(),
        recipients: d.recipients.iter().map(recipient_to_pb).collect(),
        reply_code,
        reply_text,
        enhanced_status_code,
        queue_id: d.queue_id().unwrap_or_default().to_owned(),
        failure_class: failure.map_or(pb::FailureClass::Unspecified, |f| failure_class(f.class))
            as i32,
        failed_phase: failure.map_or(pb::Phase::Unspecified, |f| phase(f.phase)) as i32,
        message: failure.map(|f| f.message.clone()).unwrap_or_default(),
        hint: failure.map(|f| f.hint.clone()).unwrap_or_default(),
        reused_connection: d.connection != ConnectionUse::Fresh,
    }
}

/// The [`Delivery`] an agent reported. Fails on values this version does not know, so that a
/// newer agent's answer is never misread.
pub fn delivery_from_pb(r: &pb::DeliveryResult) -> Result<Delivery, ConvertError> {
    let recipients = r
        .recipients
        .iter()
        .map(recipient_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    let reply = reply_from_parts(r.reply_code, &r.reply_text, &r.enhanced_status_code);
    let failure = || -> Result<Failure, ConvertError> {
        let class = smtp::FailureClass::ALL
            .into_iter()
            .find(|c| failure_class(*c) as i32 == r.failure_class)
            .ok_or(ConvertError::UnknownEnum {
                field: "delivery.failure_class",
                value: r.failure_class,
            })?;
        let failed_phase = smtp::Phase::ALL
            .into_iter()
            .find(|p| phase(*p) as i32 == r.failed_phase)
            .ok_or(ConvertError::UnknownEnum {
                field: "delivery.failed_phase",
                value: r.failed_phase,
            })?;
        Ok(Failure {
            class,
            phase: failed_phase,
            message: r.message.clone(),
            hint: r.hint.clone(),
            reply: reply.clone(),
        })
    };
    let unknown = ConvertError::UnknownEnum {
        field: "delivery.outcome",
        value: r.outcome,
    };
    let message = match Outcome::try_from(r.outcome) {
        Ok(Outcome::Sent) => MessageOutcome::Sent {
            queue_id: (!r.queue_id.is_empty()).then(|| r.queue_id.clone()),
            reply: reply.clone().ok_or(unknown)?,
        },
        Ok(Outcome::Transient) => MessageOutcome::Transient {
            failure: failure()?,
        },
        Ok(Outcome::AmbiguousAfterData) => MessageOutcome::AmbiguousAfterData {
            failure: failure()?,
        },
        Ok(Outcome::Permanent) => MessageOutcome::Permanent {
            failure: failure()?,
        },
        Ok(Outcome::Unspecified) | Err(_) => return Err(unknown),
    };
    Ok(Delivery {
        recipients,
        message,
        connection: if r.reused_connection {
            ConnectionUse::Reused
        } else {
            ConnectionUse::Fresh
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, enhanced: Option<&str>, lines: &[&str]) -> Reply {
        Reply {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn recipients() -> Vec<RecipientResult> {
        vec![
            RecipientResult {
                address: "a@example.org".into(),
                status: RecipientStatus::Accepted {
                    reply: reply(250, Some("2.1.5"), &["Ok"]),
                },
            },
            RecipientResult {
                address: "b@example.org".into(),
                status: RecipientStatus::Rejected {
                    severity: Severity::Permanent,
                    reply: reply(550, Some("5.1.1"), &["no such user", "really"]),
                },
            },
            RecipientResult {
                address: "c@example.org".into(),
                status: RecipientStatus::Rejected {
                    severity: Severity::Transient,
                    reply: reply(451, None, &["later"]),
                },
            },
            RecipientResult {
                address: "d@example.org".into(),
                status: RecipientStatus::NotTried,
            },
        ]
    }

    #[test]
    fn every_outcome_survives_the_trip() {
        let failure = |class, phase, reply| Failure {
            class,
            phase,
            message: "what happened".into(),
            hint: "what to do".into(),
            reply,
        };
        let outcomes = [
            MessageOutcome::Sent {
                queue_id: Some("4XyZ".into()),
                reply: reply(250, Some("2.0.0"), &["Ok: queued as 4XyZ"]),
            },
            MessageOutcome::Transient {
                failure: failure(
                    smtp::FailureClass::TemporaryFailure,
                    smtp::Phase::MailFrom,
                    Some(reply(451, Some("4.3.0"), &["try later"])),
                ),
            },
            MessageOutcome::AmbiguousAfterData {
                failure: failure(smtp::FailureClass::Timeout, smtp::Phase::Data, None),
            },
            MessageOutcome::Permanent {
                failure: failure(
                    smtp::FailureClass::MessageRejected,
                    smtp::Phase::Data,
                    Some(reply(554, Some("5.7.1"), &["spam"])),
                ),
            },
        ];
        for message in outcomes {
            for connection in [ConnectionUse::Fresh, ConnectionUse::Reused] {
                let d = Delivery {
                    recipients: recipients(),
                    message: message.clone(),
                    connection,
                };
                assert_eq!(delivery_from_pb(&delivery_to_pb(&d)), Ok(d));
            }
        }
    }

    #[test]
    fn unknown_values_are_refused_not_guessed() {
        let d = Delivery {
            recipients: recipients(),
            message: MessageOutcome::Sent {
                queue_id: None,
                reply: reply(250, None, &["Ok"]),
            },
            connection: ConnectionUse::Fresh,
        };
        let mut unknown_outcome = delivery_to_pb(&d);
        unknown_outcome.outcome = 99;
        assert!(delivery_from_pb(&unknown_outcome).is_err());
        let mut unset = delivery_to_pb(&d);
        unset.outcome = 0;
        assert!(delivery_from_pb(&unset).is_err());
        let mut accepted_without_reply = delivery_to_pb(&d);
        accepted_without_reply.recipients[0].reply_code = 0;
        assert!(delivery_from_pb(&accepted_without_reply).is_err());
        let mut server_only_class = delivery_to_pb(&Delivery {
            message: MessageOutcome::Transient {
                failure: Failure {
                    class: smtp::FailureClass::Timeout,
                    phase: smtp::Phase::Connect,
                    message: String::new(),
                    hint: String::new(),
                    reply: None,
                },
            },
            ..d
        });
        server_only_class.failure_class = pb::FailureClass::ConnectorLost as i32;
        assert!(delivery_from_pb(&server_only_class).is_err());
    }

    #[test]
    fn a_delivery_job_carries_the_envelope_and_content_not_a_test_message() {
        let config =
            smtp::SessionConfig::new("relay.example.org", 587, smtp::Security::StartTlsRequired);
        let envelope = Envelope::new("from@example.org", vec!["to@example.org".into()]);
        let job = delivery_job(
            "messages/7",
            &config,
            "accounts/3",
            &envelope,
            b"Subject: x\r\n",
        );
        assert!(job.message.is_none());
        let d = job.delivery.as_ref().expect("delivery");
        assert_eq!(d.pool_key, "accounts/3");
        assert_eq!(envelope_from_job(d), envelope);
        assert_eq!(d.content, b"Subject: x\r\n");
    }
}
