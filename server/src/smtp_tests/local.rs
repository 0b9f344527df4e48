//! The direct path: the session runs in this process, through `mailplane_smtp`.

use super::record::{FailureClass, PhaseResult, TestEvent};
use super::watch::LiveTest;
use super::{fail, finish};
use mailplane_smtp::{self as smtp, proto as convert};

/// Runs the session here, publishing each phase, and records the outcome on `live`.
pub async fn run(config: &smtp::SessionConfig, policy: &smtp::DestinationPolicy, live: &LiveTest) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(32);
    let report = {
        let session = smtp::run_session(config, policy, Some(&tx));
        tokio::pin!(session);
        loop {
            tokio::select! {
                Some(event) = rx.recv() => forward(live, event),
                report = &mut session => break report,
            }
        }
    };
    // Events sent just before the session ended are still queued.
    while let Ok(event) = rx.try_recv() {
        forward(live, event);
    }
    match report {
        Ok(report) => finish(live, convert::outcome(&report), None),
        Err(e) => fail(
            live,
            FailureClass::Session(smtp::FailureClass::PermanentFailure),
            None,
            format!("the session could not start: {e}"),
            "check the account's settings",
        ),
    }
}

/// Publishes a session event to the test's watchers. A phase is described exactly as an agent
/// describes it (through the same conversion), so both paths record the same transcript.
pub(super) fn forward(live: &LiveTest, event: smtp::PhaseEvent) {
    match event {
        smtp::PhaseEvent::Started(phase) => {
            live.publish(TestEvent::PhaseStarted(phase), |_| {});
        }
        smtp::PhaseEvent::Finished(record) => {
            let result = PhaseResult::from(convert::phase_result(&record));
            live.publish(TestEvent::PhaseFinished(Box::new(result.clone())), |t| {
                t.transcript.push(result);
            });
        }
    }
}
