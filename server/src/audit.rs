//! The audit log: who changed what, when, from where, and how.
//!
//! The auth layer puts each call's [`AuditContext`] into the request's extensions; handlers
//! read it with [`context`] and pass it to every audited store change, which records its event
//! inside its own transaction: the change and its event commit together or not at all. Work
//! that no call asked for uses [`AuditContext::system`]. Refused calls are recorded by the auth
//! layer.

use crate::domain::audit_chain::{ChainEvent, Link as ChainLink};
use serde_json::{Map, Value, json};

/// Who is calling, from where, and which RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// `tokens/{id} (name)`, an agent's name, or `system`.
    pub actor: String,
    /// The caller's address.
    pub peer: String,
    /// The RPC path.
    pub rpc: String,
}

impl AuditContext {
    /// The context of work that no call asked for.
    pub fn system() -> Self {
        Self {
            actor: "system".into(),
            peer: String::new(),
            rpc: String::new(),
        }
    }
}

/// The context the auth layer attached to `request`, or [`AuditContext::system`] when there
/// is none (a call that did not pass through the layer).
pub fn context<T>(request: &tonic::Request<T>) -> AuditContext {
    request
        .extensions()
        .get::<AuditContext>()
        .cloned()
        .unwrap_or_else(AuditContext::system)
}

/// The value every secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// The fields that differ between `before` and `after` (either may be absent, for a create or
/// a delete), as `{"field": {"before": …, "after": …}}`.
pub fn diff(before: Option<&Value>, after: Option<&Value>) -> Value {
    let empty = Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut out = Map::new();
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        // Bookkeeping fields change on every write and say nothing about the change.
        if matches!(key.as_str(), "etag" | "update_time" | "version") {
            continue;
        }
        let (old, new) = (b.get(key), a.get(key));
        if old != new {
            out.insert(
                key.clone(),
                json!({ "before": old.cloned().unwrap_or(Value::Null), "after": new.cloned().unwrap_or(Value::Null) }),
            );
        }
    }
    Value::Object(out)
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its code.
    pub id: i64,
    /// When, in microseconds since the epoch.
    pub time: i64,
    /// Who.
    pub actor: String,
    /// From where.
    pub peer: String,
    /// Which RPC.
    pub rpc: String,
    /// Which resource.
    pub resource: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// The diff, as JSON text.
    pub diff: String,
    /// Its place in the hash chain, once sealed (see `domain::audit_chain`).
    pub link: Option<ChainLink>,
}

impl AuditEvent {
    /// What its hash in the chain covers.
    pub fn chain_event(&self) -> ChainEvent<'_> {
        ChainEvent {
            id: self.id,
            time: self.time,
            actor: &self.actor,
            peer: &self.peer,
            rpc: &self.rpc,
            resource: &self.resource,
            outcome: &self.outcome,
            diff: &self.diff,
        }
    }

    /// The event as one JSON object, for a SIEM. A sealed event carries its link (`seq`,
    /// `prev_hash`, `hash`) and what its hash covers that the other fields do not show
    /// exactly: `time_micros` and `diff_text` (the diff as stored).
    pub fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "time": crate::domain::audit::rfc3339(self.time),
            "actor": self.actor,
            "peer": self.peer,
            "rpc": self.rpc,
            "resource": self.resource,
            "outcome": self.outcome,
            "diff": serde_json::from_str::<Value>(&self.diff).unwrap_or(Value::Null),
        });
        if let (Some(link), Some(o)) = (&self.link, v.as_object_mut()) {
            o.insert("time_micros".into(), self.time.into());
            o.insert("diff_text".into(), self.diff.clone().into());
            o.insert("seq".into(), link.seq.into());
            o.insert("prev_hash".into(), link.prev_hash.clone().into());
            o.insert("hash".into(), link.hash.clone().into());
        }
        v
    }
}

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exactly this resource.
    pub resource: Option<String>,
    /// A substring of the actor.
    pub actor: Option<String>,
    /// At or after this time.
    pub start: Option<i64>,
    /// Before this time.
    pub end: Option<i64>,
}

impl AuditFilter {
    /// A stable text form, tying page tokens to their filter.
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lists_changed_fields_only() {
        let before = json!({"host": "a", "port": 25, "etag": "1"});
        let after = json!({"host": "b", "port": 25, "etag": "2", "footer": "x"});
        let d = diff(Some(&before), Some(&after));
        assert_eq!(
            d,
            json!({"host": {"before": "a", "after": "b"}, "footer": {"before": null, "after": "x"}})
        );
        let created = diff(None, Some(&json!({"name": "n"})));
        assert_eq!(created["name"]["after"], "n");
    }

    #[test]
    fn outside_a_call_the_actor_is_system() {
        assert_eq!(context(&tonic::Request::new(())).actor, "system");
    }
}
