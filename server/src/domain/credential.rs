//! Credentials: a user name and a write-only secret, sealed at rest, and the relays the secret
//! may be sent to.

use super::Micros;
use super::oauth::{OAuthSettings, TokenSource};
use crate::error::{Error, Result};
pub use mailplane_smtp::{AuthDestination, MAX_AUTH_DESTINATIONS};

/// A credential's code, the `{id}` in `credentials/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId(pub i64);

impl CredentialId {
    /// The id in a resource name as the server writes it (`credentials/{id}`), for names that
    /// come back from agents; the API parses names people give with its own errors.
    pub fn from_name(name: &str) -> Option<Self> {
        name.strip_prefix("credentials/")?
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(CredentialId)
    }
}

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
    /// An OAuth2 access token for AUTH XOAUTH2, used as it is.
    OAuth2Token,
    /// OAuth2 client credentials: the server gets access tokens with the client secret.
    OAuth2ClientCredentials,
    /// An OAuth2 refresh token: the server gets access tokens with it (and stores a rotated
    /// one).
    OAuth2RefreshToken,
}

impl CredentialKind {
    /// The stored form: the `kind` column and the `oauth_grant` column (the OAuth2 kinds that
    /// get tokens are stored as `oauth2_token` with their grant).
    pub fn columns(self) -> (&'static str, &'static str) {
        match self {
            Self::Password => ("password", ""),
            Self::OAuth2Token => ("oauth2_token", ""),
            Self::OAuth2ClientCredentials => ("oauth2_token", "client_credentials"),
            Self::OAuth2RefreshToken => ("oauth2_token", "refresh_token"),
        }
    }

    /// Parses the stored form ([`CredentialKind::columns`]).
    pub fn from_columns(kind: &str, grant: &str) -> Option<Self> {
        Some(match (kind, grant) {
            ("password", "") => Self::Password,
            ("oauth2_token", "") => Self::OAuth2Token,
            ("oauth2_token", "client_credentials") => Self::OAuth2ClientCredentials,
            ("oauth2_token", "refresh_token") => Self::OAuth2RefreshToken,
            _ => return None,
        })
    }

    /// A short name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::OAuth2Token => "oauth2_token",
            Self::OAuth2ClientCredentials => "oauth2_client_credentials",
            Self::OAuth2RefreshToken => "oauth2_refresh_token",
        }
    }

    /// Whether the server gets access tokens for this kind from a token endpoint.
    pub fn gets_tokens(self) -> bool {
        match self {
            Self::Password | Self::OAuth2Token => false,
            Self::OAuth2ClientCredentials | Self::OAuth2RefreshToken => true,
        }
    }

    /// Whether the secret is sent with AUTH XOAUTH2 (as a token, or to get one).
    pub fn is_oauth2(self) -> bool {
        match self {
            Self::Password => false,
            Self::OAuth2Token | Self::OAuth2ClientCredentials | Self::OAuth2RefreshToken => true,
        }
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
    /// The relays (`HOST` or `HOST:PORT` patterns) the secret may be sent to: an account may
    /// use the credential only while its host and port match one, and a session sends AUTH
    /// only to such a relay. Empty (only after an upgrade, for a credential no account used):
    /// the credential can be used nowhere until an admin sets them.
    pub allowed_destinations: Vec<AuthDestination>,
    /// Where and how the server gets access tokens (the OAuth2 kinds that get them); empty
    /// for the other kinds.
    pub oauth: OAuthSettings,
}

impl CredentialSpec {
    /// Whether the agents of the network connector get this credential's tokens (so only
    /// accounts behind a connector can use it).
    pub fn agents_get_tokens(&self) -> bool {
        self.kind.gets_tokens() && self.oauth.token_source == super::oauth::TokenSource::Connector
    }

    /// Whether agents get this credential's tokens with a refresh token, and so may report the
    /// one their endpoint rotated to (the server stores it for the next job).
    pub fn agents_rotate_refresh_token(&self) -> bool {
        self.kind == CredentialKind::OAuth2RefreshToken && self.agents_get_tokens()
    }

    /// The rules across fields: the kinds that get tokens need every OAuth2 setting, the
    /// others none.
    pub fn check(&self) -> Result<()> {
        if self.kind.gets_tokens() {
            let o = &self.oauth;
            for (field, value) in [
                ("credential.token_url", &o.token_url),
                ("credential.client_id", &o.client_id),
                ("credential.scope", &o.scope),
            ] {
                if value.is_empty() {
                    return Err(Error::invalid(
                        field,
                        format!("is required for kind {}", self.kind.as_str()),
                    ));
                }
            }
        } else if !self.oauth.is_empty() {
            let field = if self.oauth.token_source == TokenSource::Server {
                "credential.token_url"
            } else {
                "credential.token_source"
            };
            return Err(Error::invalid(
                field,
                format!(
                    "token_url, client_id, scope and token_source apply only to the OAuth2 \
                     client credentials and refresh token kinds, not to kind {}",
                    self.kind.as_str()
                ),
            ));
        }
        Ok(())
    }
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
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// Bumped on every change.
    pub version: i64,
    /// When it was created.
    pub create_time: Micros,
    /// When it last changed.
    pub update_time: Micros,
}

impl Credential {
    /// Whether a client secret is stored (the secret of the kinds that get tokens).
    pub fn has_client_secret(&self) -> bool {
        self.spec.kind.gets_tokens() && self.has_secret
    }
}

/// Parses `allowed_destinations` from the API: at least one pattern, at most
/// [`MAX_AUTH_DESTINATIONS`], each `HOST` or `HOST:PORT`; duplicates are dropped and the order
/// kept. `InvalidArgument` names the field, and the entry when one is malformed.
pub fn parse_destinations(field: &str, values: &[String]) -> Result<Vec<AuthDestination>> {
    if values.is_empty() {
        return Err(Error::invalid(
            field,
            "is required: list the relays the secret may be sent to, as HOST or HOST:PORT \
             (e.g. smtp.example.com:587, *.example.com, 192.0.2.10, [2001:db8::1]:465)",
        ));
    }
    if values.len() > MAX_AUTH_DESTINATIONS {
        return Err(Error::invalid(
            field,
            format!("must list at most {MAX_AUTH_DESTINATIONS} destinations"),
        ));
    }
    let mut out: Vec<AuthDestination> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let d = value
            .parse::<AuthDestination>()
            .map_err(|e| Error::invalid(format!("{field}[{i}]"), e.to_string()))?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// The stored form of `allowed_destinations`: canonical patterns separated by spaces (a
/// pattern has none).
pub fn destinations_to_column(destinations: &[AuthDestination]) -> String {
    destinations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses the stored form; `None` names the first entry that does not parse.
pub fn destinations_from_column(column: &str) -> std::result::Result<Vec<AuthDestination>, String> {
    column
        .split_whitespace()
        .map(|d| d.parse().map_err(|_| d.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_with_the_field_named() {
        let ok = parse_destinations(
            "credential.allowed_destinations",
            &[
                "Relay.Example.com:587".into(),
                "relay.example.com:587".into(),
                "*.example.org".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            destinations_to_column(&ok),
            "relay.example.com:587 *.example.org"
        );
        assert_eq!(
            destinations_from_column(&destinations_to_column(&ok)).unwrap(),
            ok
        );
        assert_eq!(destinations_from_column("").unwrap(), []);

        let err = parse_destinations("credential.allowed_destinations", &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(
            err.to_string().contains("credential.allowed_destinations"),
            "{err}"
        );
        assert!(err.to_string().contains("is required"), "{err}");

        let err = parse_destinations(
            "credential.allowed_destinations",
            &["ok.example.com".into(), "bad host:25".into()],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("credential.allowed_destinations[1]"),
            "{err}"
        );
        let many: Vec<String> = (0..=MAX_AUTH_DESTINATIONS)
            .map(|i| format!("h{i}.example.com"))
            .collect();
        assert!(parse_destinations("f", &many).is_err());
    }
}
