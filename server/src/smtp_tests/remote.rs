//! The connector path: the session runs on an agent of the account's network connector,
//! chosen by the registry, and the agent streams its phases back.

use super::handoff::Handoff;
use super::record::{ExecutedBy, FailureClass, Phase, PhaseResult, TestEvent};
use super::watch::LiveTest;
use super::wire::phase_from_pb;
use super::{fail, finish};
use crate::domain::{ConnectorId, TestName};
use crate::tunnel::registry::{JobEnd, Registry};
use mailplane_proto::v1 as pb;
use mailplane_smtp::{self as smtp, proto as convert};
use std::sync::Arc;
use std::time::Duration;

/// What happens when the agent running a test goes away.
///
/// Before DATA started nothing was sent, so the job moves to another live agent of the
/// connector, up to `max_handoffs` agents in all; after DATA started the message may already be
/// on its way, so the test ends `CONNECTOR_LOST` and nothing is re-sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// How many agents may go away before DATA before the test gives up (`CONNECTOR_LOST`).
    pub max_handoffs: usize,
}

impl Default for FailoverPolicy {
    /// Three agents: enough to ride out a rolling restart of a connector's replicas.
    fn default() -> Self {
        Self { max_handoffs: 3 }
    }
}

impl FailoverPolicy {
    /// Whether, after the agents in `lost` went away before DATA, the test gives up.
    pub fn exhausted(&self, lost: &[String]) -> bool {
        lost.len() >= self.max_handoffs
    }
}

/// Where a remote run happens, and how it waits and fails over.
pub struct Remote<'a> {
    /// The live agents.
    pub registry: &'a Arc<Registry>,
    /// How long to wait for a live agent.
    pub wait: Duration,
    /// When to give up on agents that go away.
    pub failover: FailoverPolicy,
    /// With several replicas: the way to agents that stream to another replica.
    pub handoff: Option<Handoff<'a>>,
}

impl Remote<'_> {
    /// Runs the session on the least-loaded live agent of `connector`, handing it to another
    /// agent as [`FailoverPolicy`] says, and records the outcome on `live`.
    pub async fn run(
        &self,
        name: TestName,
        connector: ConnectorId,
        config: &smtp::SessionConfig,
        live: &LiveTest,
    ) {
        let job = convert::job_from_config(name.to_string(), config);
        let mut lost: Vec<String> = Vec::new();
        loop {
            if let Some(handoff) = &self.handoff
                && lost.is_empty()
                && self.registry.live(connector).is_empty()
            {
                let (wait, failover) = (self.wait, self.failover);
                return handoff
                    .run(name, connector, &job, wait, failover, live)
                    .await;
            }
            let Some(mut dispatched) = self
                .registry
                .dispatch(connector, job.clone(), self.wait)
                .await
            else {
                offline(live, connector, &format!("within {:?}", self.wait), &lost);
                return;
            };
            let agent = dispatched.agent.name.to_string();
            tracing::info!(test = %name, %agent, "test dispatched to agent");
            live.update(|t| t.executed_by = ExecutedBy::Agent(agent.clone()));
            let end = dispatched.follow(|u| publish(u, live)).await;
            drop(dispatched);
            match end {
                JobEnd::Finished(outcome) => {
                    finish(live, *outcome, (!lost.is_empty()).then(|| retried(&lost)));
                    return;
                }
                JobEnd::Lost { data_started: true } => {
                    tracing::warn!(test = %name, %agent, "agent lost after DATA started; not re-sending");
                    lost_after_data(live, &agent);
                    return;
                }
                JobEnd::Lost {
                    data_started: false,
                } => {
                    tracing::warn!(test = %name, %agent, "agent lost before DATA; retrying on another replica");
                    lost.push(agent);
                    if self.failover.exhausted(&lost) {
                        gave_up(live, &lost);
                        return;
                    }
                }
            }
        }
    }
}

/// The test ends `CONNECTOR_OFFLINE`: no agent of `connector` came (`when` says where and
/// how long it waited).
pub(super) fn offline(live: &LiveTest, connector: ConnectorId, when: &str, lost: &[String]) {
    fail(
        live,
        FailureClass::ConnectorOffline,
        None,
        format!("no live agent of {connector} {when}{}", retried(lost)),
        &connector.offline_hint(),
    );
}

/// The test ends `CONNECTOR_LOST`: `agent` went away after DATA started, so nothing is re-sent.
pub(super) fn lost_after_data(live: &LiveTest, agent: &str) {
    fail(
        live,
        FailureClass::ConnectorLost,
        Some(Phase::Data),
        format!(
            "{agent} went away after the message was sent; it was not re-sent, because it may already have been delivered"
        ),
        "look for the message at the relay (or the recipient) before testing again",
    );
}

/// The test ends `CONNECTOR_LOST`: the agents in `lost` went away before DATA, as many as the
/// failover policy allows.
pub(super) fn gave_up(live: &LiveTest, lost: &[String]) {
    fail(
        live,
        FailureClass::ConnectorLost,
        None,
        format!(
            "agents went away before the session finished{}",
            retried(lost)
        ),
        "check the agents' logs and their link to the server",
    );
}

/// Publishes an agent's progress on `live` as it comes.
pub(super) fn publish(update: pb::job_update::Update, live: &LiveTest) {
    match update {
        pb::job_update::Update::PhaseStarted(p) => {
            if let Some(phase) = phase_from_pb(p) {
                live.publish(TestEvent::PhaseStarted(phase), |_| {});
            }
        }
        pb::job_update::Update::PhaseFinished(r) => {
            let result = PhaseResult::from(r);
            live.publish(TestEvent::PhaseFinished(Box::new(result.clone())), |t| {
                t.transcript.push(result);
            });
        }
        // The outcome ends the job; a rotated refresh token is stored where it arrived.
        pb::job_update::Update::Finished(_) | pb::job_update::Update::RefreshTokenRotated(_) => {}
    }
}

/// A note naming the agents that went away before a job finished.
pub(super) fn retried(lost: &[String]) -> String {
    if lost.is_empty() {
        String::new()
    } else {
        format!(" (retried after {} went away before DATA)", lost.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_gives_up_after_three_agents() {
        let policy = FailoverPolicy::default();
        let lost: Vec<String> = ["a", "b", "c"].map(String::from).into();
        assert!(!policy.exhausted(&lost[..2]));
        assert!(policy.exhausted(&lost));
        assert_eq!(
            retried(&lost[..1]),
            " (retried after a went away before DATA)"
        );
    }
}
