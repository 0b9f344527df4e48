//! Connector jobs handed between replicas through the database: a replica with no stream to
//! any agent of a connector queues the job; one that has a stream claims it with a lease, runs
//! it on its agent, and writes back the agent's updates and how it ended.

use super::{ConnectorId, Micros};
use std::time::Duration;

/// How long a claim lasts without renewal; the claiming replica renews it while it runs.
pub const JOB_LEASE: Duration = Duration::from_secs(15);

/// How often a replica renews its claims and looks for queued jobs it can take.
pub const JOB_TICK: Duration = Duration::from_secs(5);

/// A job's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connector-jobs/{}", self.0)
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a replica with an agent of its connector.
    Queued,
    /// A replica runs it on an agent.
    Claimed,
    /// The agent reported how it ended.
    Finished,
    /// The agent went away (see [`JobStatus::data_started`]).
    Lost,
}

impl JobState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Finished => "finished",
            Self::Lost => "lost",
        }
    }

    /// The state a stored form names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Claimed, Self::Finished, Self::Lost]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// A job as its creator follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// Where it is.
    pub state: JobState,
    /// The agent running it (its name), once claimed.
    pub agent: String,
    /// Until when the claim holds.
    pub lease_until: Option<Micros>,
    /// Whether the agent reported DATA started.
    pub data_started: bool,
    /// The outcome (an encoded `JobOutcome`), once finished.
    pub outcome: Option<Vec<u8>>,
    /// The agent's updates after the sequence number asked for (encoded `JobUpdate`s).
    pub updates: Vec<(i64, Vec<u8>)>,
}

impl JobStatus {
    /// Whether the replica that claimed it stopped renewing its lease by `now` (it died).
    pub fn lease_expired(&self, now: Micros) -> bool {
        self.state == JobState::Claimed && self.lease_until.is_some_and(|until| until < now)
    }
}

/// A job a replica claimed.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Its id.
    pub id: JobId,
    /// Its connector.
    pub connector: ConnectorId,
    /// The sealed job: it carries the credential's secret.
    pub sealed: crate::crypto::Sealed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_leases_expire() {
        for s in [
            JobState::Queued,
            JobState::Claimed,
            JobState::Finished,
            JobState::Lost,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("other"), None);
        let status = JobStatus {
            state: JobState::Claimed,
            agent: String::new(),
            lease_until: Some(10),
            data_started: false,
            outcome: None,
            updates: Vec::new(),
        };
        assert!(!status.lease_expired(10));
        assert!(status.lease_expired(11));
        let finished = JobStatus {
            state: JobState::Finished,
            ..status
        };
        assert!(!finished.lease_expired(11));
    }
}
