//! Provider presets: the documented submission settings of the big mail providers, so that an
//! account for one of them needs only the sender, the credential and a placeholder or two.
//!
//! A preset is a template. Its host and token URL may name placeholders in braces
//! (`{tenant}`, `{region}`); [`resolve`] fills them with checked values. Presets carry the
//! OAuth2 token URL and scope as data only: the credential that uses them is made separately.
//! A [`PresetError`] becomes an `InvalidArgument` naming the preset or the placeholder.

mod placeholders;

pub use placeholders::Placeholder;

use crate::domain::CredentialKind;
use crate::error::Error;
use mailplane_smtp::{AuthMechanism, Security};
use std::collections::BTreeMap;

/// The longest part of a caller's value echoed in an error message.
const ECHO_MAX: usize = 64;

/// A provider preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PresetId {
    /// Microsoft 365 (Exchange Online), OAuth2 client credentials.
    Microsoft365,
    /// Google Workspace and Gmail, OAuth2 refresh token.
    Google,
    /// Amazon Simple Email Service, SMTP credentials.
    AmazonSes,
    /// Twilio SendGrid, an API key as password.
    SendGrid,
    /// Mailgun, domain SMTP credentials.
    Mailgun,
}

impl PresetId {
    /// Every preset, in the order they are listed.
    pub const ALL: [PresetId; 5] = [
        PresetId::Microsoft365,
        PresetId::Google,
        PresetId::AmazonSes,
        PresetId::SendGrid,
        PresetId::Mailgun,
    ];

    /// The ids of every preset, in the order of [`PresetId::ALL`].
    pub const NAMES: [&'static str; 5] = [
        PresetId::Microsoft365.as_str(),
        PresetId::Google.as_str(),
        PresetId::AmazonSes.as_str(),
        PresetId::SendGrid.as_str(),
        PresetId::Mailgun.as_str(),
    ];

    /// The id, the `{preset_id}` in `presets/{preset_id}`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PresetId::Microsoft365 => "microsoft365",
            PresetId::Google => "google",
            PresetId::AmazonSes => "amazon-ses",
            PresetId::SendGrid => "sendgrid",
            PresetId::Mailgun => "mailgun",
        }
    }

    /// Parses an id, ignoring case and surrounding blanks.
    pub fn parse(given: &str) -> Result<Self, PresetError> {
        let key = given.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == key)
            .ok_or_else(|| PresetError::UnknownPreset { given: echo(given) })
    }

    /// The preset's settings, with its placeholders unfilled.
    pub fn preset(self) -> Preset {
        match self {
            PresetId::Microsoft365 => Preset {
                id: self,
                display_name: "Microsoft 365",
                host: "smtp.office365.com",
                port: 587,
                security: Security::StartTlsRequired,
                auth_mechanism: AuthMechanism::XOAuth2,
                credential_kind: CredentialKind::OAuth2ClientCredentials,
                token_url: Some("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
                scope: Some("https://outlook.office365.com/.default"),
                placeholders: &[Placeholder::Tenant],
                username: None,
                sender_rules: "The sender must be the mailbox the credential signs in as, or a \
                     mailbox on which it has SendAs rights; otherwise Exchange Online answers \
                     5.7.60 (SendAsDenied). SMTP AUTH must be enabled for the mailbox.",
            },
            PresetId::Google => Preset {
                id: self,
                display_name: "Google Workspace / Gmail",
                host: "smtp.gmail.com",
                port: 587,
                security: Security::StartTlsRequired,
                auth_mechanism: AuthMechanism::XOAuth2,
                credential_kind: CredentialKind::OAuth2RefreshToken,
                token_url: Some("https://oauth2.googleapis.com/token"),
                scope: Some("https://mail.google.com/"),
                placeholders: &[],
                username: None,
                sender_rules: "The sender must be the Google account itself or one of its \
                     verified send-as aliases; Gmail rewrites any other From address to the \
                     account's own.",
            },
            PresetId::AmazonSes => Preset {
                id: self,
                display_name: "Amazon SES",
                host: "email-smtp.{region}.amazonaws.com",
                port: 587,
                security: Security::StartTlsRequired,
                auth_mechanism: AuthMechanism::Plain,
                credential_kind: CredentialKind::Password,
                token_url: None,
                scope: None,
                placeholders: &[Placeholder::Region],
                username: None,
                sender_rules: "The sender's address or its domain must be a verified identity \
                     in the same region; while the account is in the SES sandbox, every \
                     recipient must be verified too. Use the SMTP credentials SES generates, \
                     not IAM access keys.",
            },
            PresetId::SendGrid => Preset {
                id: self,
                display_name: "Twilio SendGrid",
                host: "smtp.sendgrid.net",
                port: 587,
                security: Security::StartTlsRequired,
                auth_mechanism: AuthMechanism::Plain,
                credential_kind: CredentialKind::Password,
                token_url: None,
                scope: None,
                placeholders: &[],
                username: Some("apikey"),
                sender_rules: "The sender must be a verified Single Sender or belong to an \
                     authenticated domain. The user name is the literal `apikey` and the \
                     password is an API key with Mail Send permission.",
            },
            PresetId::Mailgun => Preset {
                id: self,
                display_name: "Mailgun",
                host: "smtp.mailgun.org",
                port: 587,
                security: Security::StartTlsRequired,
                auth_mechanism: AuthMechanism::Plain,
                credential_kind: CredentialKind::Password,
                token_url: None,
                scope: None,
                placeholders: &[],
                username: None,
                sender_rules: "The sender must be in a sending domain configured and verified \
                     in Mailgun, and the SMTP credentials must belong to that domain. Domains \
                     in Mailgun's EU region use smtp.eu.mailgun.org instead.",
            },
        }
    }
}

impl std::fmt::Display for PresetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A preset's settings. Its `host` and `token_url` may hold placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// Which preset.
    pub id: PresetId,
    /// The provider's name for people.
    pub display_name: &'static str,
    /// The relay's host (a template).
    pub host: &'static str,
    /// The relay's submission port.
    pub port: u16,
    /// How the connection is secured.
    pub security: Security,
    /// The SASL mechanism the provider takes.
    pub auth_mechanism: AuthMechanism,
    /// The kind of credential the provider expects.
    pub credential_kind: CredentialKind,
    /// The OAuth2 token endpoint (a template), for XOAUTH2 presets.
    pub token_url: Option<&'static str>,
    /// The OAuth2 scope to ask for, for XOAUTH2 presets.
    pub scope: Option<&'static str>,
    /// The values the preset asks for.
    pub placeholders: &'static [Placeholder],
    /// The user name the provider requires, when it is fixed.
    pub username: Option<&'static str>,
    /// What the provider requires of the sender.
    pub sender_rules: &'static str,
}

/// A preset with its placeholders filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The preset (its templates unfilled).
    pub preset: Preset,
    /// The relay's host.
    pub host: String,
    /// The OAuth2 token endpoint, for XOAUTH2 presets.
    pub token_url: Option<String>,
}

/// Why a preset could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    /// No preset has this id.
    #[error("unknown preset {given:?}; choose one of: {}", PresetId::NAMES.join(", "))]
    UnknownPreset {
        /// What was given (cut to a readable length).
        given: String,
    },
    /// A placeholder the preset asks for has no value.
    #[error("is required by preset {preset}: {description}, e.g. {example}")]
    MissingPlaceholder {
        /// The preset.
        preset: PresetId,
        /// The placeholder's key.
        key: &'static str,
        /// What the value is.
        description: &'static str,
        /// An example value.
        example: &'static str,
    },
    /// A value is given for a placeholder the preset does not have.
    #[error("preset {preset} does not ask for {key:?}; it asks for: {expected}")]
    UnexpectedPlaceholder {
        /// The preset.
        preset: PresetId,
        /// The key given (cut to a readable length).
        key: String,
        /// The keys the preset asks for, or "nothing".
        expected: String,
    },
    /// A placeholder's value is malformed.
    #[error("{value:?} is not valid; expected {expected}")]
    InvalidPlaceholder {
        /// The placeholder's key.
        key: &'static str,
        /// The value given (cut to a readable length).
        value: String,
        /// What would be right.
        expected: &'static str,
    },
}

impl PresetError {
    /// The placeholder the error is about, when it is about one.
    pub fn placeholder(&self) -> Option<&str> {
        match self {
            PresetError::UnknownPreset { .. } => None,
            PresetError::MissingPlaceholder { key, .. }
            | PresetError::InvalidPlaceholder { key, .. } => Some(key),
            PresetError::UnexpectedPlaceholder { key, .. } => Some(key),
        }
    }
}

impl From<PresetError> for Error {
    /// A preset that cannot be used is the caller's input: `InvalidArgument` on `name` for an
    /// unknown preset, on `placeholder_values[KEY]` for a missing, unexpected or bad value.
    fn from(e: PresetError) -> Self {
        use PresetError as P;
        let field = match &e {
            P::UnknownPreset { .. } => "name".to_owned(),
            P::UnexpectedPlaceholder { .. } => "placeholder_values".to_owned(),
            P::MissingPlaceholder { key, .. } | P::InvalidPlaceholder { key, .. } => {
                format!("placeholder_values[{key}]")
            }
        };
        Self::invalid(field, e.to_string())
    }
}

/// `value`, cut to [`ECHO_MAX`] characters for an error message.
fn echo(value: &str) -> String {
    let mut cut: String = value.chars().take(ECHO_MAX).collect();
    if value.chars().count() > ECHO_MAX {
        cut.push('…');
    }
    cut
}

/// Fills the placeholders of preset `id` with `values` (keyed by [`Placeholder::key`]). Every
/// placeholder the preset asks for is required, and no other key is accepted.
pub fn resolve(id: PresetId, values: &BTreeMap<String, String>) -> Result<Resolved, PresetError> {
    let preset = id.preset();
    if let Some(extra) = values
        .keys()
        .find(|k| !preset.placeholders.iter().any(|p| p.key() == k.as_str()))
    {
        let expected: Vec<&str> = preset.placeholders.iter().map(|p| p.key()).collect();
        return Err(PresetError::UnexpectedPlaceholder {
            preset: id,
            key: echo(extra),
            expected: if expected.is_empty() {
                "nothing".to_owned()
            } else {
                expected.join(", ")
            },
        });
    }
    let mut host = preset.host.to_owned();
    let mut token_url = preset.token_url.map(str::to_owned);
    for p in preset.placeholders {
        let given = values.get(p.key()).filter(|v| !v.trim().is_empty()).ok_or(
            PresetError::MissingPlaceholder {
                preset: id,
                key: p.key(),
                description: p.description(),
                example: p.example(),
            },
        )?;
        let value = p.check(given)?;
        let braced = format!("{{{}}}", p.key());
        host = host.replace(&braced, &value);
        token_url = token_url.map(|u| u.replace(&braced, &value));
    }
    Ok(Resolved {
        preset,
        host,
        token_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ids_round_trip_and_unknown_lists_the_choices() {
        for id in PresetId::ALL {
            assert_eq!(PresetId::parse(id.as_str()), Ok(id));
            assert_eq!(id.preset().id, id);
        }
        assert_eq!(
            PresetId::parse(" Microsoft365 "),
            Ok(PresetId::Microsoft365)
        );
        let err = PresetId::parse("yahoo").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"yahoo\""), "{text}");
        for name in PresetId::NAMES {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn every_template_names_only_its_own_placeholders() {
        for id in PresetId::ALL {
            let p = id.preset();
            let template = format!("{} {}", p.host, p.token_url.unwrap_or_default());
            let braces = template.matches('{').count();
            assert_eq!(braces, p.placeholders.len(), "{id}");
            for ph in p.placeholders {
                assert!(template.contains(&format!("{{{}}}", ph.key())), "{id}");
            }
            assert_eq!(p.port, 587, "{id}");
            assert_eq!(p.security, Security::StartTlsRequired, "{id}");
            assert_eq!(
                p.auth_mechanism == AuthMechanism::XOAuth2,
                p.token_url.is_some() && p.scope.is_some(),
                "{id}"
            );
            assert!(!p.sender_rules.is_empty());
        }
    }

    #[test]
    fn microsoft365_fills_the_tenant_into_the_token_url() {
        let r = resolve(
            PresetId::Microsoft365,
            &values(&[("tenant", "Contoso.onmicrosoft.com")]),
        )
        .unwrap();
        assert_eq!(r.host, "smtp.office365.com");
        assert_eq!(
            r.token_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        let guid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let r = resolve(PresetId::Microsoft365, &values(&[("tenant", guid)])).unwrap();
        assert!(r.token_url.unwrap().contains(guid));
    }

    #[test]
    fn amazon_ses_fills_the_region_into_the_host() {
        for (region, host) in [
            ("eu-west-1", "email-smtp.eu-west-1.amazonaws.com"),
            ("us-gov-west-1", "email-smtp.us-gov-west-1.amazonaws.com"),
            ("AP-SOUTHEAST-2", "email-smtp.ap-southeast-2.amazonaws.com"),
        ] {
            let r = resolve(PresetId::AmazonSes, &values(&[("region", region)])).unwrap();
            assert_eq!(r.host, host);
            assert_eq!(r.token_url, None);
        }
    }

    #[test]
    fn missing_placeholders_are_named() {
        let err = resolve(PresetId::Microsoft365, &values(&[])).unwrap_err();
        assert_eq!(err.placeholder(), Some("tenant"));
        assert!(err.to_string().contains("microsoft365"), "{err}");
        let err = resolve(PresetId::AmazonSes, &values(&[("region", "  ")])).unwrap_err();
        assert!(matches!(
            err,
            PresetError::MissingPlaceholder { key: "region", .. }
        ));
    }

    #[test]
    fn bad_values_are_refused_and_named() {
        for bad in [
            "common",
            "contoso",
            "a/b.com",
            "contoso.com/../x",
            "72f988bf-86f1-41af-91ab-2d7cd011db4",
            "x\r\ny.com",
        ] {
            let err = resolve(PresetId::Microsoft365, &values(&[("tenant", bad)])).unwrap_err();
            assert_eq!(err.placeholder(), Some("tenant"), "{bad}");
        }
        for bad in [
            "eu",
            "euwest1",
            "eu-west",
            "eu-west-1.evil.com",
            "e-west-1",
            "eu-west-123",
        ] {
            let err = resolve(PresetId::AmazonSes, &values(&[("region", bad)])).unwrap_err();
            assert!(
                matches!(err, PresetError::InvalidPlaceholder { key: "region", .. }),
                "{bad}: {err}"
            );
        }
        let long = "a".repeat(70_000);
        let err = resolve(PresetId::AmazonSes, &values(&[("region", &long)])).unwrap_err();
        assert!(err.to_string().len() < 200, "the message echoes too much");
    }

    #[test]
    fn placeholders_a_preset_does_not_have_are_refused() {
        let err = resolve(PresetId::SendGrid, &values(&[("tenant", "a.com")])).unwrap_err();
        assert_eq!(err.placeholder(), Some("tenant"));
        assert!(err.to_string().contains("nothing"), "{err}");
        let err = resolve(
            PresetId::AmazonSes,
            &values(&[("region", "eu-west-1"), ("tenant", "a.com")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn presets_without_placeholders_resolve_to_themselves() {
        for id in [PresetId::Google, PresetId::SendGrid, PresetId::Mailgun] {
            let r = resolve(id, &values(&[])).unwrap();
            assert_eq!(r.host, id.preset().host);
            assert_eq!(r.token_url.as_deref(), id.preset().token_url);
        }
        assert_eq!(PresetId::SendGrid.preset().username, Some("apikey"));
    }
}
