//! Network connectors and their agents.

use super::Micros;

/// A connector's code, the `{id}` in `connectors/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectorId(pub i64);

impl ConnectorId {
    /// What to do when none of its agents is connected.
    pub fn offline_hint(self) -> String {
        format!(
            "start mailplane-agent for {self} (see `mailplane connectors get {}`)",
            self.0
        )
    }
}

impl std::fmt::Display for ConnectorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connectors/{}", self.0)
    }
}

/// An agent's name, `connectors/{connector}/agents/{agent}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentName {
    /// The connector it serves.
    pub connector: ConnectorId,
    /// The agent's own id.
    pub id: i64,
}

impl std::fmt::Display for AgentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/agents/{}", self.connector, self.id)
    }
}

/// The writable fields of a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorSpec {
    /// The unique display name.
    pub display_name: String,
    /// What it reaches.
    pub description: String,
}

/// A stored connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    /// Its code.
    pub id: ConnectorId,
    /// Its fields.
    pub spec: ConnectorSpec,
    /// Bumped on every change.
    pub version: i64,
    /// When it was created.
    pub create_time: Micros,
    /// When it last changed.
    pub update_time: Micros,
}

/// A stored agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its name.
    pub name: AgentName,
    /// The host it reported.
    pub hostname: String,
    /// The version it reported.
    pub version: String,
    /// When its certificate expires.
    pub cert_not_after: Option<Micros>,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it enrolled.
    pub enroll_time: Micros,
    /// When a server last heard from it.
    pub last_heartbeat_time: Option<Micros>,
}
