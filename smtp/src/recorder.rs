//! The transcript recorder: opens and closes phase records, streams
//! [`PhaseEvent`]s to the caller as phases start and finish, and keeps the secrets that
//! must be scrubbed from whatever the server echoes back.

use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio::time::Instant;

use crate::classify::FailureClass;
use crate::transcript::{Phase, PhaseEvent, PhaseRecord, PhaseStatus};
use crate::wire::Reply;
use crate::{Failure, Secret};

/// A failure inside a phase (the phase is added when the record is closed).
pub(crate) struct Fail {
    /// The class.
    pub(crate) class: FailureClass,
    /// What happened.
    pub(crate) message: String,
    /// What to do about it.
    pub(crate) hint: String,
    /// The reply that caused it, if any.
    pub(crate) reply: Option<Reply>,
    /// Whether the connection can still carry a polite `QUIT`.
    pub(crate) can_quit: bool,
}

impl Fail {
    /// A failure without a reply, after which the connection is dropped.
    pub(crate) fn new(
        class: FailureClass,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Fail {
            class,
            message: message.into(),
            hint: hint.into(),
            reply: None,
            can_quit: false,
        }
    }
}

impl Fail {
    /// The failure for a report, naming the phase where it happened.
    pub(crate) fn into_failure(self, phase: Phase) -> Failure {
        Failure {
            class: self.class,
            phase,
            message: self.message,
            hint: self.hint,
            reply: self.reply,
        }
    }
}

/// A phase that has started.
pub(crate) struct Running {
    /// The record being filled.
    pub(crate) rec: PhaseRecord,
    /// When the phase started.
    t0: Instant,
}

/// A phase closed with a failure.
pub(crate) struct Closed {
    /// The failure for the report.
    pub(crate) failure: Failure,
    /// Whether the connection can still carry a polite `QUIT`.
    pub(crate) can_quit: bool,
}

/// Records the phases of one session.
pub(crate) struct Recorder<'a> {
    /// Where live events go, when the caller listens.
    events: Option<&'a Sender<PhaseEvent>>,
    /// The session's overall deadline (sending an event never waits past it, much).
    deadline: Instant,
    /// The records so far.
    transcript: Vec<PhaseRecord>,
    /// Strings to scrub from replies: the secret (the client adds its encodings).
    secrets: Vec<Secret>,
}

impl<'a> Recorder<'a> {
    /// A recorder sending to `events`; `secrets` are scrubbed from server replies.
    pub(crate) fn new(
        events: Option<&'a Sender<PhaseEvent>>,
        deadline: Instant,
        secrets: Vec<Secret>,
    ) -> Self {
        Recorder {
            events,
            deadline,
            transcript: Vec::new(),
            secrets,
        }
    }

    /// The strings to scrub from everything the server says.
    pub(crate) fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// The records, in order.
    pub(crate) fn into_transcript(self) -> Vec<PhaseRecord> {
        self.transcript
    }

    async fn emit(&self, event: PhaseEvent) {
        if let Some(tx) = self.events {
            let left = self
                .deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            let _ = tokio::time::timeout(left, tx.send(event)).await;
        }
    }

    /// Starts `phase` (announced as [`PhaseEvent::Started`]).
    pub(crate) async fn begin(&self, phase: Phase) -> Running {
        self.emit(PhaseEvent::Started(phase)).await;
        Running {
            rec: PhaseRecord::new(phase, PhaseStatus::Ok),
            t0: Instant::now(),
        }
    }

    /// Ends `run` with `status`, announces it and adds it to the transcript.
    pub(crate) async fn finish(&mut self, mut run: Running, status: PhaseStatus) {
        run.rec.status = status;
        run.rec.duration = run.t0.elapsed();
        tracing::debug!(
            target: "mailplane::smtp",
            phase = run.rec.phase.as_str(),
            status = ?status,
            duration_ms = run.rec.duration.as_millis() as u64,
            "phase finished"
        );
        self.emit(PhaseEvent::Finished(Box::new(run.rec.clone())))
            .await;
        self.transcript.push(run.rec);
    }

    /// Records `phase` as skipped for `reason`.
    pub(crate) async fn skip(&mut self, phase: Phase, reason: &str) {
        let mut run = self.begin(phase).await;
        run.rec.detail.push(format!("skipped: {reason}"));
        self.finish(run, PhaseStatus::Skipped).await;
    }

    /// Closes `run` with `result`, turning a [`Fail`] into a [`Failure`]. The caller
    /// then says `QUIT` or hangs up, as [`Closed::can_quit`] allows.
    pub(crate) async fn close<T>(
        &mut self,
        mut run: Running,
        result: Result<T, Fail>,
    ) -> Result<T, Closed> {
        match result {
            Ok(v) => {
                self.finish(run, PhaseStatus::Ok).await;
                Ok(v)
            }
            Err(fail) => {
                let phase = run.rec.phase;
                run.rec
                    .detail
                    .push(format!("{}: {}", fail.class, fail.message));
                if run.rec.reply.is_none() {
                    run.rec.reply.clone_from(&fail.reply);
                }
                self.finish(run, PhaseStatus::Failed).await;
                Err(Closed {
                    can_quit: fail.can_quit,
                    failure: fail.into_failure(phase),
                })
            }
        }
    }
}
