//! Domain types: what mailplane stores and reasons about, free of any wire format.
//!
//! The gRPC edge (`api/`) converts prost messages into these types with `TryFrom`, and that is
//! where field syntax is validated. Rules that span several fields live here, so that create and
//! update (after its field mask is applied) check exactly the same things.

pub mod account;
pub mod audit;
pub mod audit_chain;
pub mod connector;
pub mod credential;
pub mod job;
pub mod keys;
pub mod message;
pub mod oauth;
pub mod presets;
pub mod replica;
pub mod retry;
pub mod rules;
pub mod smtp_test;
pub mod token;
pub mod validate;

pub use account::{
    Account, AccountFilter, AccountId, AccountSpec, AuthMechanism, Security, StatusFilter,
    mechanism_for,
};
pub use connector::{AgentName, AgentRecord, Connector, ConnectorId, ConnectorSpec};
pub use credential::{AuthDestination, Credential, CredentialId, CredentialKind, CredentialSpec};
pub use smtp_test::{Locale, StopAfter, StoredTest, TestName, TestRequest, TestState};
pub use token::{Role, TokenRecord};

/// Microseconds since the Unix epoch, the unit of every stored time.
pub type Micros = i64;

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(micros)
        .unwrap_or(0)
}

/// A duration in microseconds, the unit of every stored time (saturating).
pub fn micros(d: std::time::Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The etag of a resource at `version`. Opaque to clients; compared as a string.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The version an etag names, if it is one of ours.
pub fn parse_etag(etag: &str) -> Option<i64> {
    etag.strip_prefix("W/\"")?.strip_suffix('"')?.parse().ok()
}
