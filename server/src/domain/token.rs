//! API tokens and roles.

use super::Micros;

/// What a caller may do. Viewer, operator and admin each include the ones below them; the
/// sender role stands apart: it may only send messages and read them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Send messages and read them back (`SendMessage`, `GetMessage`), nothing else.
    Sender,
    /// Read accounts, tests and connectors.
    Viewer,
    /// Also manage accounts and credentials, and run tests.
    Operator,
    /// Everything, including tokens and connectors.
    Admin,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sender => "sender",
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sender" => Self::Sender,
            "viewer" => Self::Viewer,
            "operator" => Self::Operator,
            "admin" => Self::Admin,
            _ => return None,
        })
    }

    /// Whether this role may do what `needed` may. The sender role allows only itself, and no
    /// other role includes it (operators send through [`crate::auth::Access::Sending`]).
    pub fn allows(self, needed: Role) -> bool {
        match (self, needed) {
            (Self::Sender, needed) => needed == Self::Sender,
            (_, Self::Sender) => false,
            (role, needed) => role >= needed,
        }
    }
}

/// A stored API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its code, the `{id}` in `tokens/{id}`.
    pub id: i64,
    /// Its unique name.
    pub display_name: String,
    /// What it may do.
    pub role: Role,
    /// When it stops working.
    pub expire_time: Option<Micros>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was created.
    pub create_time: Micros,
    /// When it was last used.
    pub last_use_time: Option<Micros>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Sender.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Sender));
        assert!(Role::Sender.allows(Role::Sender));
        for r in [Role::Admin, Role::Operator, Role::Viewer, Role::Sender] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
