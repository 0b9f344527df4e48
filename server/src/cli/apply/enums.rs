//! The file's enum values (lower case, `starttls_required`) and the API's, both ways, in one
//! place: `apply` sends the API's, `export` writes the file's.

use super::file::{AuthMechanism, CredentialKind, Security, TokenSource};
use mailplane_proto::v1 as pb;

impl From<CredentialKind> for pb::CredentialKind {
    fn from(k: CredentialKind) -> Self {
        match k {
            CredentialKind::Password => Self::Password,
            CredentialKind::Oauth2Token => Self::Oauth2Token,
            CredentialKind::Oauth2ClientCredentials => Self::Oauth2ClientCredentials,
            CredentialKind::Oauth2RefreshToken => Self::Oauth2RefreshToken,
        }
    }
}

impl CredentialKind {
    /// The kind of an API credential (unspecified is a password, as on create).
    pub fn from_api(kind: i32) -> Self {
        match pb::CredentialKind::try_from(kind).unwrap_or(pb::CredentialKind::Unspecified) {
            pb::CredentialKind::Unspecified | pb::CredentialKind::Password => Self::Password,
            pb::CredentialKind::Oauth2Token => Self::Oauth2Token,
            pb::CredentialKind::Oauth2ClientCredentials => Self::Oauth2ClientCredentials,
            pb::CredentialKind::Oauth2RefreshToken => Self::Oauth2RefreshToken,
        }
    }
}

/// The API's token source of the file's (none: unspecified, the server).
pub fn token_source_to_api(source: Option<TokenSource>) -> pb::TokenSource {
    match source {
        None => pb::TokenSource::Unspecified,
        Some(TokenSource::Server) => pb::TokenSource::Server,
        Some(TokenSource::Connector) => pb::TokenSource::Connector,
    }
}

/// The file's token source of the API's: only `connector` is written (the server is the
/// default).
pub fn token_source_from_api(source: i32) -> Option<TokenSource> {
    match pb::TokenSource::try_from(source).unwrap_or(pb::TokenSource::Unspecified) {
        pb::TokenSource::Connector => Some(TokenSource::Connector),
        pb::TokenSource::Unspecified | pb::TokenSource::Server => None,
    }
}

impl From<Security> for pb::SecurityMode {
    fn from(s: Security) -> Self {
        match s {
            Security::None => Self::None,
            Security::StarttlsOpportunistic => Self::StarttlsOpportunistic,
            Security::StarttlsRequired => Self::StarttlsRequired,
            Security::ImplicitTls => Self::ImplicitTls,
        }
    }
}

impl Security {
    /// The security of an API account (unspecified is STARTTLS required, as on create).
    pub fn from_api(mode: i32) -> Self {
        match pb::SecurityMode::try_from(mode).unwrap_or(pb::SecurityMode::Unspecified) {
            pb::SecurityMode::None => Self::None,
            pb::SecurityMode::StarttlsOpportunistic => Self::StarttlsOpportunistic,
            pb::SecurityMode::Unspecified | pb::SecurityMode::StarttlsRequired => {
                Self::StarttlsRequired
            }
            pb::SecurityMode::ImplicitTls => Self::ImplicitTls,
        }
    }
}

/// The API's mechanism of the file's (none: unspecified, chosen from the credential).
pub fn mechanism_to_api(mechanism: Option<AuthMechanism>) -> pb::AuthMechanism {
    match mechanism {
        None => pb::AuthMechanism::Unspecified,
        Some(AuthMechanism::Plain) => pb::AuthMechanism::Plain,
        Some(AuthMechanism::Login) => pb::AuthMechanism::Login,
        Some(AuthMechanism::Xoauth2) => pb::AuthMechanism::Xoauth2,
    }
}

/// The file's mechanism of the API's.
pub fn mechanism_from_api(mechanism: i32) -> Option<AuthMechanism> {
    match pb::AuthMechanism::try_from(mechanism).unwrap_or(pb::AuthMechanism::Unspecified) {
        pb::AuthMechanism::Unspecified => None,
        pb::AuthMechanism::Plain => Some(AuthMechanism::Plain),
        pb::AuthMechanism::Login => Some(AuthMechanism::Login),
        pb::AuthMechanism::Xoauth2 => Some(AuthMechanism::Xoauth2),
    }
}
