//! Credentials between prost messages and domain types: the output (never a secret), the
//! writable fields of a create or an update mask, and the syntax of the secrets that come in.

use crate::domain::credential::parse_destinations;
use crate::domain::oauth;
use crate::domain::validate;
use crate::domain::{Credential, CredentialKind, CredentialSpec, etag};
use crate::error::{Error, Result};
use mailplane_proto::timestamp;
use mailplane_proto::v1 as pb;

impl From<CredentialKind> for pb::CredentialKind {
    fn from(k: CredentialKind) -> Self {
        match k {
            CredentialKind::Password => Self::Password,
            CredentialKind::OAuth2Token => Self::Oauth2Token,
            CredentialKind::OAuth2ClientCredentials => Self::Oauth2ClientCredentials,
            CredentialKind::OAuth2RefreshToken => Self::Oauth2RefreshToken,
        }
    }
}

impl From<&Credential> for pb::Credential {
    fn from(c: &Credential) -> Self {
        Self {
            name: c.id.to_string(),
            id: c.id.0,
            display_name: c.spec.display_name.clone(),
            username: c.spec.username.clone(),
            // Write-only: the secret never leaves the server.
            secret: String::new(),
            kind: pb::CredentialKind::from(c.spec.kind).into(),
            has_secret: c.has_secret,
            secret_update_time: c.secret_update_time.map(timestamp),
            token_url: c.spec.oauth.token_url.clone(),
            client_id: c.spec.oauth.client_id.clone(),
            scope: c.spec.oauth.scope.clone(),
            token_source: match c.spec.oauth.token_source {
                _ if !c.spec.kind.gets_tokens() => pb::TokenSource::Unspecified,
                oauth::TokenSource::Server => pb::TokenSource::Server,
                oauth::TokenSource::Connector => pb::TokenSource::Connector,
            }
            .into(),
            // Write-only, as the secret.
            client_secret: String::new(),
            refresh_token: String::new(),
            has_client_secret: c.has_client_secret(),
            has_refresh_token: c.has_refresh_token,
            etag: etag(c.version),
            create_time: Some(timestamp(c.create_time)),
            update_time: Some(timestamp(c.update_time)),
            allowed_destinations: c
                .spec
                .allowed_destinations
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

/// The writable credential fields, as named in update masks.
pub const CREDENTIAL_FIELDS: [&str; 11] = [
    "display_name",
    "username",
    "secret",
    "kind",
    "allowed_destinations",
    "token_url",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "token_source",
];

/// The write-only credential fields, as named in update masks.
pub const CREDENTIAL_SECRET_FIELDS: [&str; 3] = ["secret", "client_secret", "refresh_token"];

/// Sets one non-secret credential field from `msg`.
pub fn apply_credential_field(
    spec: &mut CredentialSpec,
    msg: &pb::Credential,
    field: &str,
) -> Result<()> {
    match field {
        "display_name" => spec.display_name = validate::line(field, &msg.display_name, 100)?,
        "username" => spec.username = validate::line(field, &msg.username, 320)?,
        "kind" => {
            let k = pb::CredentialKind::try_from(msg.kind)
                .map_err(|_| Error::invalid(field, format!("unknown value {}", msg.kind)))?;
            spec.kind = match k {
                pb::CredentialKind::Unspecified | pb::CredentialKind::Password => {
                    CredentialKind::Password
                }
                pb::CredentialKind::Oauth2Token => CredentialKind::OAuth2Token,
                pb::CredentialKind::Oauth2ClientCredentials => {
                    CredentialKind::OAuth2ClientCredentials
                }
                pb::CredentialKind::Oauth2RefreshToken => CredentialKind::OAuth2RefreshToken,
            };
        }
        "allowed_destinations" => {
            spec.allowed_destinations = parse_destinations(field, &msg.allowed_destinations)?;
        }
        // Empty is checked against the kind by `CredentialSpec::check`.
        "token_url" => {
            spec.oauth.token_url = match msg.token_url.trim() {
                "" => String::new(),
                url => oauth::parse_token_url("credential.token_url", url)?,
            };
        }
        "client_id" => {
            spec.oauth.client_id = match msg.client_id.trim() {
                "" => String::new(),
                id => oauth::parse_client_id("credential.client_id", id)?,
            };
        }
        "scope" => {
            spec.oauth.scope = match msg.scope.trim() {
                "" => String::new(),
                scope => oauth::parse_scope("credential.scope", scope)?,
            };
        }
        "token_source" => {
            spec.oauth.token_source = match pb::TokenSource::try_from(msg.token_source) {
                Ok(pb::TokenSource::Unspecified | pb::TokenSource::Server) => {
                    oauth::TokenSource::Server
                }
                Ok(pb::TokenSource::Connector) => oauth::TokenSource::Connector,
                Err(_) => {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "unknown value {}: use TOKEN_SOURCE_SERVER or TOKEN_SOURCE_CONNECTOR",
                            msg.token_source
                        ),
                    ));
                }
            };
        }
        // Secrets are handled apart, so they never sit in a spec that might be logged.
        "secret" | "client_secret" | "refresh_token" => {}
        other => {
            return Err(Error::invalid(
                "update_mask",
                format!("{other:?} is not a writable field of Credential"),
            ));
        }
    }
    Ok(())
}

/// Checks a secret: present, and free of line breaks that would corrupt an AUTH exchange.
pub fn check_secret(secret: &str) -> Result<()> {
    check_secret_field("secret", secret)
}

/// Checks the secret given as `field` (`secret`, `client_secret` or `refresh_token`).
pub fn check_secret_field(field: &str, secret: &str) -> Result<()> {
    if secret.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if secret.contains(['\r', '\n', '\0']) {
        return Err(Error::invalid(
            field,
            "must not contain CR, LF or NUL (they cannot be sent in an SMTP AUTH exchange)",
        ));
    }
    if secret.len() > 4096 {
        return Err(Error::invalid(field, "must be at most 4096 bytes"));
    }
    Ok(())
}

/// The credential to create (without its secret, which the caller takes separately).
impl TryFrom<&pb::Credential> for CredentialSpec {
    type Error = Error;

    fn try_from(msg: &pb::Credential) -> Result<Self> {
        let mut spec = CredentialSpec {
            display_name: String::new(),
            username: String::new(),
            kind: CredentialKind::Password,
            allowed_destinations: Vec::new(),
            oauth: Default::default(),
        };
        for field in CREDENTIAL_FIELDS {
            apply_credential_field(&mut spec, msg, field)?;
        }
        spec.check()?;
        Ok(spec)
    }
}
