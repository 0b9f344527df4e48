//! The session library's transcript, in the API's terms.

use crate::api::convert::timestamp;
use mailplane_agent::smtp;
use mailplane_proto::v1 as pb;

/// The API's phase for a session phase.
pub fn phase(p: smtp::Phase) -> pb::Phase {
    match p {
        smtp::Phase::Dns => pb::Phase::DnsResolve,
        smtp::Phase::Connect => pb::Phase::TcpConnect,
        smtp::Phase::Banner => pb::Phase::Banner,
        smtp::Phase::Ehlo => pb::Phase::Ehlo,
        smtp::Phase::StartTls => pb::Phase::Starttls,
        smtp::Phase::TlsHandshake => pb::Phase::TlsHandshake,
        smtp::Phase::Auth => pb::Phase::Auth,
        smtp::Phase::MailFrom => pb::Phase::MailFrom,
        smtp::Phase::RcptTo => pb::Phase::RcptTo,
        smtp::Phase::Data => pb::Phase::Data,
        smtp::Phase::Quit => pb::Phase::Quit,
    }
}

/// The API's failure class for a session's.
pub fn failure_class(c: smtp::FailureClass) -> pb::FailureClass {
    match c {
        smtp::FailureClass::Dns => pb::FailureClass::Dns,
        smtp::FailureClass::ConnectionRefused => pb::FailureClass::ConnectionRefused,
        smtp::FailureClass::Timeout => pb::FailureClass::Timeout,
        smtp::FailureClass::TlsHandshake => pb::FailureClass::TlsHandshake,
        smtp::FailureClass::CertificateExpired => pb::FailureClass::CertificateExpired,
        smtp::FailureClass::CertificateUntrusted => pb::FailureClass::CertificateUntrusted,
        smtp::FailureClass::CertificateNameMismatch => pb::FailureClass::CertificateNameMismatch,
        smtp::FailureClass::StartTlsUnavailable => pb::FailureClass::StarttlsUnavailable,
        smtp::FailureClass::AuthRejected => pb::FailureClass::AuthRejected,
        smtp::FailureClass::AuthMechanismUnsupported => pb::FailureClass::AuthMechanismUnsupported,
        smtp::FailureClass::SenderRejected => pb::FailureClass::SenderRejected,
        smtp::FailureClass::RecipientRejected => pb::FailureClass::RecipientRejected,
        smtp::FailureClass::MessageRejected => pb::FailureClass::MessageRejected,
        smtp::FailureClass::TemporaryFailure => pb::FailureClass::TemporaryFailure,
        smtp::FailureClass::PermanentFailure => pb::FailureClass::PermanentFailure,
        smtp::FailureClass::ProtocolMismatch => pb::FailureClass::ProtocolMismatch,
        smtp::FailureClass::DestinationNotAllowed => pb::FailureClass::DestinationNotAllowed,
    }
}

fn tls(info: &smtp::TlsInfo) -> pb::TlsDetails {
    let (verification, detail) = match &info.verification {
        smtp::Verification::Verified => (pb::Verification::Verified, String::new()),
        smtp::Verification::IgnoredByConfig { reason } => {
            (pb::Verification::Ignored, reason.clone())
        }
        smtp::Verification::Failed { reason } => (pb::Verification::Failed, reason.clone()),
    };
    pb::TlsDetails {
        protocol_version: info.protocol_version.clone(),
        cipher_suite: info.cipher_suite.clone(),
        peer_certificate: info.peer_certificate.as_ref().map(|c| pb::PeerCertificate {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            sans: c.sans.clone(),
            not_before: c.not_before.clone(),
            not_after: c.not_after.clone(),
        }),
        verification: verification.into(),
        verification_detail: detail,
    }
}

/// One transcript entry.
pub fn phase_result(r: &smtp::PhaseRecord) -> pb::PhaseResult {
    pb::PhaseResult {
        phase: phase(r.phase).into(),
        status: match r.status {
            smtp::PhaseStatus::Ok => pb::PhaseStatus::Ok,
            smtp::PhaseStatus::Failed => pb::PhaseStatus::Failed,
            smtp::PhaseStatus::Skipped => pb::PhaseStatus::Skipped,
        }
        .into(),
        duration: prost_types::Duration::try_from(r.duration).ok(),
        commands: r.commands.clone(),
        reply_code: r.reply.as_ref().map_or(0, |reply| i32::from(reply.code)),
        reply_text: r
            .reply
            .as_ref()
            .map(|reply| reply.lines.join("\n"))
            .unwrap_or_default(),
        detail: r.detail.clone(),
        tls: r.tls.as_ref().map(tls),
    }
}

/// Records a session's end on `test`.
pub fn finish(test: &mut pb::SmtpTest, report: &smtp::SessionReport, now: i64) {
    test.capabilities.clone_from(&report.capabilities);
    test.end_time = Some(timestamp(now));
    let message_id = report.message_id.clone().unwrap_or_default();
    match &report.outcome {
        smtp::Outcome::Success(s) => {
            test.state = pb::TestState::Succeeded.into();
            test.result = Some(pb::TestResult {
                message: match s.final_reply.as_ref() {
                    Some(reply) => format!("accepted: {} {}", reply.code, reply.lines.join(" ")),
                    None => format!("stopped after {:?} as asked", s.stopped_after),
                },
                queue_id: s.queue_id.clone().unwrap_or_default(),
                message_id,
                ..Default::default()
            });
        }
        smtp::Outcome::Failure(f) => {
            test.state = pb::TestState::Failed.into();
            test.result = Some(pb::TestResult {
                failure_class: failure_class(f.class).into(),
                failed_phase: phase(f.phase).into(),
                message: f.message.clone(),
                hint: f.hint.clone(),
                queue_id: String::new(),
                message_id,
            });
        }
    }
}
