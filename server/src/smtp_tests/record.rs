//! A test e-mail as the runner and the store know it: its request, state, transcript and
//! outcome, in domain types. It becomes a `mailplane.v1.SmtpTest` only at the API edge
//! (`smtp_tests::wire`), and in the one stored-payload codec below ([`encode`], [`decode`]),
//! whose bytes are that same message, so that existing databases keep working.

use crate::domain::{Micros, StoredTest, TestName, TestRequest, TestState};
use crate::error::{Error, Result};
use mailplane_proto::v1 as pb;
pub use mailplane_smtp::{CertificateInfo, Phase};
use prost::Message as _;
use std::time::Duration;

/// Why a test failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The SMTP session failed, as the session library classified it.
    Session(mailplane_smtp::FailureClass),
    /// The account's network connector had no live agent within the wait.
    ConnectorOffline,
    /// The agent running the session went away after the message was sent.
    ConnectorLost,
    /// The account's credential cannot be read: it is gone, or this server's key cannot
    /// decrypt it. Nothing was sent.
    CredentialUnavailable,
}

/// How a phase of the transcript ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseStatus {
    /// It is running.
    Running,
    /// It succeeded.
    Ok,
    /// It failed.
    Failed,
    /// It did not apply.
    Skipped,
}

/// The outcome of certificate verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The certificate is valid for the host.
    Verified,
    /// Verification failed, and the account ignores certificate errors.
    Ignored,
    /// Verification failed.
    Failed,
}

/// What a TLS handshake negotiated, and what verification said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsDetails {
    /// E.g. `TLSv1_3`.
    pub protocol_version: String,
    /// E.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The server's certificate.
    pub peer_certificate: Option<CertificateInfo>,
    /// The verification outcome, if a certificate was checked.
    pub verification: Option<Verification>,
    /// Why verification failed or was ignored.
    pub verification_detail: String,
}

/// One phase of a transcript. Secrets never appear: AUTH lines are redacted by the session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhaseResult {
    /// The phase (`None`: not set).
    pub phase: Option<Phase>,
    /// How it ended (`None`: not set).
    pub status: Option<PhaseStatus>,
    /// How long it took.
    pub duration: Option<Duration>,
    /// The commands sent.
    pub commands: Vec<String>,
    /// The server's reply code, if it replied.
    pub reply_code: Option<u16>,
    /// The server's reply text (all lines).
    pub reply_text: String,
    /// Further facts: addresses tried, capabilities, reasons.
    pub detail: Vec<String>,
    /// The TLS handshake's details.
    pub tls: Option<TlsDetails>,
}

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestResult {
    /// Why it failed; `None` when it did not.
    pub failure_class: Option<FailureClass>,
    /// The phase that failed, if one did.
    pub failed_phase: Option<Phase>,
    /// What happened, in one line.
    pub message: String,
    /// What to do about it, in one line written for a person.
    pub hint: String,
    /// The queue id from the server's final reply.
    pub queue_id: Option<String>,
    /// The Message-ID of the message sent.
    pub message_id: Option<String>,
}

/// Where a test's session ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutedBy {
    /// In this server's process.
    Direct,
    /// On an agent, `connectors/{connector}/agents/{agent}`.
    Agent(String),
}

/// A test e-mail and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    /// The test's name. Not part of the stored payload: the row's key holds it.
    pub name: TestName,
    /// What was asked.
    pub request: TestRequest,
    /// Where it is in its lifecycle.
    pub state: TestState,
    /// One entry per phase.
    pub transcript: Vec<PhaseResult>,
    /// The outcome, once finished.
    pub result: Option<TestResult>,
    /// The capabilities the server advertised in EHLO.
    pub capabilities: Vec<String>,
    /// Where the session ran.
    pub executed_by: ExecutedBy,
    /// When the test was created.
    pub create_time: Micros,
    /// When its session started.
    pub start_time: Option<Micros>,
    /// When it finished.
    pub end_time: Option<Micros>,
}

impl TestRecord {
    /// A test just accepted for `account` (its id is 0 until it is stored).
    pub fn queued(account: crate::domain::AccountId, request: TestRequest, now: Micros) -> Self {
        Self {
            name: TestName { account, id: 0 },
            request,
            state: TestState::Queued,
            transcript: Vec::new(),
            result: None,
            capabilities: Vec::new(),
            executed_by: ExecutedBy::Direct,
            create_time: now,
            start_time: None,
            end_time: None,
        }
    }

    /// Marks the session started.
    pub fn start(&mut self, now: Micros) {
        self.state = TestState::Running;
        self.start_time = Some(now);
    }

    /// Ends the test with `result`.
    pub fn finish(&mut self, state: TestState, result: TestResult, now: Micros) {
        self.state = state;
        self.result = Some(result);
        self.end_time = Some(now);
    }

    /// Ends the test with a failure that the session itself did not report.
    pub fn fail(
        &mut self,
        class: FailureClass,
        phase: Option<Phase>,
        message: String,
        hint: &str,
        now: Micros,
    ) {
        let result = TestResult {
            failure_class: Some(class),
            failed_phase: phase,
            message,
            hint: hint.to_owned(),
            ..TestResult::default()
        };
        self.finish(TestState::Failed, result, now);
    }

    /// Ends the test as cancelled, saying why.
    pub fn cancel(&mut self, message: &str, now: Micros) {
        let result = TestResult {
            message: message.to_owned(),
            hint: "run the test again".into(),
            ..TestResult::default()
        };
        self.finish(TestState::Cancelled, result, now);
    }
}

/// One event of a watched test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestEvent {
    /// A phase started.
    PhaseStarted(Phase),
    /// A phase finished.
    PhaseFinished(Box<PhaseResult>),
    /// The test finished; nothing follows.
    Finished(Box<TestRecord>),
}

/// The stored payload of a test: `mailplane.v1.SmtpTest`, protobuf-encoded, without the name
/// (the row's key).
pub fn encode(record: &TestRecord) -> Vec<u8> {
    let mut msg = pb::SmtpTest::from(record);
    msg.name.clear();
    msg.encode_to_vec()
}

/// A stored test, from its payload; fields the payload lacks come from the row.
pub fn decode(stored: &StoredTest) -> Result<TestRecord> {
    let msg = pb::SmtpTest::decode(stored.payload.as_slice())
        .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(super::wire::record_from_pb(
        stored.name,
        stored.state,
        stored.create_time,
        msg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, Locale, StopAfter};

    fn request() -> TestRequest {
        TestRequest {
            to: "a@example.com".into(),
            subject: "s".into(),
            body: "b".into(),
            locale: Locale::PtBr,
            stop_after: StopAfter::Auth,
        }
    }

    #[test]
    fn the_payload_round_trips() {
        let mut record = TestRecord::queued(AccountId(3), request(), 1_000_000);
        record.name.id = 9;
        record.start(2_000_000);
        record.executed_by = ExecutedBy::Agent("connectors/1/agents/2".into());
        record.capabilities = vec!["STARTTLS".into()];
        record.transcript.push(PhaseResult {
            phase: Some(Phase::TlsHandshake),
            status: Some(PhaseStatus::Ok),
            duration: Some(Duration::from_millis(12)),
            commands: vec!["STARTTLS".into()],
            reply_code: Some(220),
            reply_text: "go ahead".into(),
            detail: vec!["x".into()],
            tls: Some(TlsDetails {
                protocol_version: "TLSv1_3".into(),
                peer_certificate: Some(CertificateInfo {
                    subject: "CN=x".into(),
                    ..CertificateInfo::default()
                }),
                verification: Some(Verification::Ignored),
                verification_detail: "expired".into(),
                ..TlsDetails::default()
            }),
        });
        record.fail(
            FailureClass::CredentialUnavailable,
            None,
            "m".into(),
            "h",
            3_000_000,
        );
        let stored = StoredTest {
            name: record.name,
            state: record.state,
            payload: encode(&record),
            create_time: 1,
        };
        assert_eq!(decode(&stored).unwrap(), record);
        // The bytes are a `mailplane.v1.SmtpTest`, as before.
        let msg = pb::SmtpTest::decode(stored.payload.as_slice()).unwrap();
        assert_eq!(msg.locale, "pt-BR");
        assert_eq!(msg.state, i32::from(pb::TestState::Failed));
        assert_eq!(
            msg.result.unwrap().failure_class,
            i32::from(pb::FailureClass::CredentialUnavailable)
        );
    }

    #[test]
    fn an_older_payload_decodes() {
        // The first payload of a test, as the previous runner wrote it (no name).
        let msg = pb::SmtpTest {
            to: "a@example.com".into(),
            subject: "s".into(),
            body: "b".into(),
            locale: "en".into(),
            state: pb::TestState::Queued.into(),
            executed_by: "direct".into(),
            create_time: Some(mailplane_proto::timestamp(5_000_000)),
            ..Default::default()
        };
        let name = TestName {
            account: AccountId(1),
            id: 2,
        };
        let stored = StoredTest {
            name,
            state: TestState::Queued,
            payload: msg.encode_to_vec(),
            create_time: 5_000_000,
        };
        let record = decode(&stored).unwrap();
        assert_eq!(record.name, name);
        assert_eq!(record.state, TestState::Queued);
        assert_eq!(record.executed_by, ExecutedBy::Direct);
        assert_eq!(record.create_time, 5_000_000);
        assert_eq!(record.request.stop_after, StopAfter::Delivery);
    }
}
