//! Test records and events between the domain (`smtp_tests::record`) and `mailplane.v1`, for
//! the three edges that speak protobuf: the API, the stored payload and the agents' stream.
//!
//! The stored payload is the same `SmtpTest` message, so these conversions are lossless for
//! every value this server writes. Agents report phases and outcomes in `mailplane.v1` too;
//! the remote run converts them here on arrival.

use super::record::{
    CertificateInfo, ExecutedBy, FailureClass, Phase, PhaseResult, PhaseStatus, TestEvent,
    TestRecord, TestResult, TlsDetails, Verification,
};
use crate::domain::{Locale, Micros, TestName, TestRequest, TestState};
use mailplane_proto::v1 as pb;
use mailplane_proto::{micros, timestamp};
use mailplane_smtp::proto as convert;

/// The session phase for an API phase value; `None` when unset or unknown.
pub fn phase_from_pb(value: i32) -> Option<Phase> {
    Phase::ALL
        .into_iter()
        .find(|p| i32::from(convert::phase(*p)) == value)
}

fn phase_to_pb(phase: Option<Phase>) -> i32 {
    phase.map_or(pb::Phase::Unspecified, convert::phase).into()
}

impl From<FailureClass> for pb::FailureClass {
    fn from(class: FailureClass) -> Self {
        match class {
            FailureClass::Session(c) => convert::failure_class(c),
            FailureClass::ConnectorOffline => Self::ConnectorOffline,
            FailureClass::ConnectorLost => Self::ConnectorLost,
            FailureClass::CredentialUnavailable => Self::CredentialUnavailable,
        }
    }
}

/// The failure class for an API value; `None` when unset or unknown.
fn failure_class_from_pb(value: i32) -> Option<FailureClass> {
    match pb::FailureClass::try_from(value).ok()? {
        pb::FailureClass::Unspecified => None,
        pb::FailureClass::ConnectorOffline => Some(FailureClass::ConnectorOffline),
        pb::FailureClass::ConnectorLost => Some(FailureClass::ConnectorLost),
        pb::FailureClass::CredentialUnavailable => Some(FailureClass::CredentialUnavailable),
        other => mailplane_smtp::FailureClass::ALL
            .into_iter()
            .find(|c| convert::failure_class(*c) == other)
            .map(FailureClass::Session),
    }
}

fn status_to_pb(status: Option<PhaseStatus>) -> i32 {
    match status {
        None => pb::PhaseStatus::Unspecified,
        Some(PhaseStatus::Running) => pb::PhaseStatus::Running,
        Some(PhaseStatus::Ok) => pb::PhaseStatus::Ok,
        Some(PhaseStatus::Failed) => pb::PhaseStatus::Failed,
        Some(PhaseStatus::Skipped) => pb::PhaseStatus::Skipped,
    }
    .into()
}

fn status_from_pb(value: i32) -> Option<PhaseStatus> {
    match pb::PhaseStatus::try_from(value).ok()? {
        pb::PhaseStatus::Unspecified => None,
        pb::PhaseStatus::Running => Some(PhaseStatus::Running),
        pb::PhaseStatus::Ok => Some(PhaseStatus::Ok),
        pb::PhaseStatus::Failed => Some(PhaseStatus::Failed),
        pb::PhaseStatus::Skipped => Some(PhaseStatus::Skipped),
    }
}

fn verification_to_pb(v: Option<Verification>) -> i32 {
    match v {
        None => pb::Verification::Unspecified,
        Some(Verification::Verified) => pb::Verification::Verified,
        Some(Verification::Ignored) => pb::Verification::Ignored,
        Some(Verification::Failed) => pb::Verification::Failed,
    }
    .into()
}

fn verification_from_pb(value: i32) -> Option<Verification> {
    match pb::Verification::try_from(value).ok()? {
        pb::Verification::Unspecified => None,
        pb::Verification::Verified => Some(Verification::Verified),
        pb::Verification::Ignored => Some(Verification::Ignored),
        pb::Verification::Failed => Some(Verification::Failed),
    }
}

impl From<&TlsDetails> for pb::TlsDetails {
    fn from(t: &TlsDetails) -> Self {
        Self {
            protocol_version: t.protocol_version.clone(),
            cipher_suite: t.cipher_suite.clone(),
            peer_certificate: t.peer_certificate.as_ref().map(|c| pb::PeerCertificate {
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                sans: c.sans.clone(),
                not_before: c.not_before.clone(),
                not_after: c.not_after.clone(),
            }),
            verification: verification_to_pb(t.verification),
            verification_detail: t.verification_detail.clone(),
        }
    }
}

impl From<pb::TlsDetails> for TlsDetails {
    fn from(t: pb::TlsDetails) -> Self {
        Self {
            protocol_version: t.protocol_version,
            cipher_suite: t.cipher_suite,
            peer_certificate: t.peer_certificate.map(|c| CertificateInfo {
                subject: c.subject,
                issuer: c.issuer,
                sans: c.sans,
                not_before: c.not_before,
                not_after: c.not_after,
            }),
            verification: verification_from_pb(t.verification),
            verification_detail: t.verification_detail,
        }
    }
}

impl From<&PhaseResult> for pb::PhaseResult {
    fn from(r: &PhaseResult) -> Self {
        Self {
            phase: phase_to_pb(r.phase),
            status: status_to_pb(r.status),
            duration: r
                .duration
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
            commands: r.commands.clone(),
            reply_code: r.reply_code.map_or(0, i32::from),
            reply_text: r.reply_text.clone(),
            detail: r.detail.clone(),
            tls: r.tls.as_ref().map(pb::TlsDetails::from),
        }
    }
}

impl From<pb::PhaseResult> for PhaseResult {
    fn from(r: pb::PhaseResult) -> Self {
        Self {
            phase: phase_from_pb(r.phase),
            status: status_from_pb(r.status),
            duration: r
                .duration
                .and_then(|d| std::time::Duration::try_from(d).ok()),
            commands: r.commands,
            reply_code: u16::try_from(r.reply_code).ok().filter(|c| *c != 0),
            reply_text: r.reply_text,
            detail: r.detail,
            tls: r.tls.map(TlsDetails::from),
        }
    }
}

impl From<&TestResult> for pb::TestResult {
    fn from(r: &TestResult) -> Self {
        Self {
            failure_class: r
                .failure_class
                .map_or(pb::FailureClass::Unspecified, pb::FailureClass::from)
                .into(),
            failed_phase: phase_to_pb(r.failed_phase),
            message: r.message.clone(),
            hint: r.hint.clone(),
            queue_id: r.queue_id.clone().unwrap_or_default(),
            message_id: r.message_id.clone().unwrap_or_default(),
        }
    }
}

impl From<pb::TestResult> for TestResult {
    fn from(r: pb::TestResult) -> Self {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Self {
            failure_class: failure_class_from_pb(r.failure_class),
            failed_phase: phase_from_pb(r.failed_phase),
            message: r.message,
            hint: r.hint,
            queue_id: non_empty(r.queue_id),
            message_id: non_empty(r.message_id),
        }
    }
}

fn state_to_pb(state: TestState) -> pb::TestState {
    match state {
        TestState::Queued => pb::TestState::Queued,
        TestState::Running => pb::TestState::Running,
        TestState::Succeeded => pb::TestState::Succeeded,
        TestState::Failed => pb::TestState::Failed,
        TestState::Cancelled => pb::TestState::Cancelled,
    }
}

fn state_from_pb(value: i32) -> Option<TestState> {
    match pb::TestState::try_from(value).ok()? {
        pb::TestState::Unspecified => None,
        pb::TestState::Queued => Some(TestState::Queued),
        pb::TestState::Running => Some(TestState::Running),
        pb::TestState::Succeeded => Some(TestState::Succeeded),
        pb::TestState::Failed => Some(TestState::Failed),
        pb::TestState::Cancelled => Some(TestState::Cancelled),
    }
}

impl From<&TestRecord> for pb::SmtpTest {
    fn from(t: &TestRecord) -> Self {
        Self {
            name: t.name.to_string(),
            to: t.request.to.clone(),
            subject: t.request.subject.clone(),
            body: t.request.body.clone(),
            locale: t.request.locale.as_str().into(),
            stop_after: convert::stop_after_to_pb(t.request.stop_after).into(),
            state: state_to_pb(t.state).into(),
            transcript: t.transcript.iter().map(pb::PhaseResult::from).collect(),
            result: t.result.as_ref().map(pb::TestResult::from),
            capabilities: t.capabilities.clone(),
            executed_by: match &t.executed_by {
                ExecutedBy::Direct => "direct".into(),
                ExecutedBy::Agent(agent) => agent.clone(),
            },
            create_time: Some(timestamp(t.create_time)),
            start_time: t.start_time.map(timestamp),
            end_time: t.end_time.map(timestamp),
        }
    }
}

/// A test record from its `SmtpTest` message; `name`, and the row's `state` and `create_time`,
/// stand in for what the message lacks. The request was validated when the test was created,
/// so it is taken as it is.
pub fn record_from_pb(
    name: TestName,
    state: TestState,
    create_time: Micros,
    msg: pb::SmtpTest,
) -> TestRecord {
    let time = |ts: Option<prost_types::Timestamp>| ts.and_then(|ts| micros(&ts));
    TestRecord {
        name,
        request: TestRequest {
            to: msg.to,
            subject: msg.subject,
            body: msg.body,
            locale: Locale::parse(&msg.locale).unwrap_or(Locale::En),
            stop_after: convert::stop_after_from_pb(msg.stop_after).unwrap_or_default(),
        },
        state: state_from_pb(msg.state).unwrap_or(state),
        transcript: msg.transcript.into_iter().map(PhaseResult::from).collect(),
        result: msg.result.map(TestResult::from),
        capabilities: msg.capabilities,
        executed_by: match msg.executed_by.as_str() {
            "" | "direct" => ExecutedBy::Direct,
            _ => ExecutedBy::Agent(msg.executed_by),
        },
        create_time: time(msg.create_time).unwrap_or(create_time),
        start_time: time(msg.start_time),
        end_time: time(msg.end_time),
    }
}

impl From<&TestEvent> for pb::WatchTestResponse {
    fn from(event: &TestEvent) -> Self {
        use pb::watch_test_response::Event;
        let event = match event {
            TestEvent::PhaseStarted(p) => Event::PhaseStarted(convert::phase(*p).into()),
            TestEvent::PhaseFinished(r) => Event::PhaseFinished(r.as_ref().into()),
            TestEvent::Finished(t) => Event::Finished(t.as_ref().into()),
        };
        Self { event: Some(event) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_and_phase_maps_back() {
        for c in mailplane_smtp::FailureClass::ALL {
            let v = i32::from(pb::FailureClass::from(FailureClass::Session(c)));
            assert_eq!(failure_class_from_pb(v), Some(FailureClass::Session(c)));
        }
        for c in [
            FailureClass::ConnectorOffline,
            FailureClass::ConnectorLost,
            FailureClass::CredentialUnavailable,
        ] {
            assert_eq!(
                failure_class_from_pb(pb::FailureClass::from(c).into()),
                Some(c)
            );
        }
        for p in Phase::ALL {
            assert_eq!(phase_from_pb(convert::phase(p).into()), Some(p));
        }
        assert_eq!(phase_from_pb(0), None);
    }
}
