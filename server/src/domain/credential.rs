//! Credentials: a user name and a write-only secret, sealed at rest.

use super::Micros;

/// A credential's code, the `{id}` in `credentials/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId(pub i64);

impl std::fmt::Display for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "credentials/{}", self.0)
    }
}

/// What a secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A password for AUTH PLAIN or LOGIN.
    Password,
    /// An OAuth2 access token for AUTH XOAUTH2.
    OAuth2Token,
}

impl CredentialKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::OAuth2Token => "oauth2_token",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "password" => Self::Password,
            "oauth2_token" => Self::OAuth2Token,
            _ => return None,
        })
    }
}

/// The non-secret writable fields of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    /// The name people know it by.
    pub display_name: String,
    /// The user name sent with AUTH.
    pub username: String,
    /// What the secret is.
    pub kind: CredentialKind,
}

/// A stored credential, as the API may show it: never with its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The credential's code.
    pub id: CredentialId,
    /// Its fields.
    pub spec: CredentialSpec,
    /// Whether a secret is stored.
    pub has_secret: bool,
    /// When the secret was last set.
    pub secret_update_time: Option<Micros>,
    /// Bumped on every change.
    pub version: i64,
    /// When it was created.
    pub create_time: Micros,
    /// When it last changed.
    pub update_time: Micros,
}
