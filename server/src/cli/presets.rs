//! Provider presets on the command line: `--preset` for `accounts create` and
//! `credentials create`, and `accounts presets`.

use super::output::{self, Format};
use super::{CliError, Conn};
use crate::domain::presets::PresetId;
use crate::render;
use clap::Args;
use mailplane_proto::v1 as pb;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use std::collections::HashMap;
use std::io::Write;

/// The preset flags.
#[derive(Debug, Args, Default)]
pub struct PresetArgs {
    /// Start from a provider preset (see `mailplane accounts presets`).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PresetId::NAMES))]
    pub preset: Option<String>,
    /// The Microsoft Entra tenant for --preset microsoft365: its ID (a GUID) or a domain such
    /// as contoso.onmicrosoft.com.
    #[arg(long, requires = "preset")]
    pub tenant: Option<String>,
    /// The AWS region for --preset amazon-ses, e.g. eu-west-1.
    #[arg(long, requires = "preset")]
    pub region: Option<String>,
}

impl PresetArgs {
    /// The placeholder values given, checked against what the preset asks for: every
    /// placeholder it has must be given, and no other.
    fn values(&self, id: PresetId) -> Result<HashMap<String, String>, CliError> {
        let given = [("tenant", &self.tenant), ("region", &self.region)];
        let wanted = id.preset().placeholders;
        let mut values = HashMap::new();
        for (key, value) in given {
            let asked = wanted.iter().find(|p| p.key() == key);
            match (asked, value) {
                (Some(_), Some(v)) => {
                    values.insert(key.to_owned(), v.clone());
                }
                (Some(p), None) => {
                    return Err(CliError::Usage(format!(
                        "--preset {id} needs --{key}: {}, e.g. --{key} {}",
                        p.description(),
                        p.example()
                    )));
                }
                (None, Some(_)) => {
                    let takes: Vec<String> =
                        wanted.iter().map(|p| format!("--{}", p.key())).collect();
                    return Err(CliError::Usage(format!(
                        "--preset {id} takes no --{key}{}",
                        if takes.is_empty() {
                            String::new()
                        } else {
                            format!(" (it takes {})", takes.join(", "))
                        }
                    )));
                }
                (None, None) => {}
            }
        }
        Ok(values)
    }
}

/// The preset named by `args`, filled in by the server, or `None` without `--preset`.
pub async fn resolve(
    client: &mut SmtpAccountServiceClient<Conn>,
    args: &PresetArgs,
) -> Result<Option<pb::Preset>, CliError> {
    let Some(given) = &args.preset else {
        return Ok(None);
    };
    let id = PresetId::parse(given).map_err(|e| CliError::Usage(format!("--preset: {e}")))?;
    let placeholder_values = args.values(id)?;
    let preset = client
        .resolve_preset(pb::ResolvePresetRequest {
            name: format!("presets/{id}"),
            placeholder_values,
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::InvalidArgument => {
                CliError::Usage(format!("--preset {id}: {}", status.message()))
            }
            _ => CliError::Status(status),
        })?
        .into_inner();
    eprintln!("{}: {}", preset.display_name, preset.sender_rules);
    Ok(Some(preset))
}

/// Fills the account's connection settings from `preset` where no flag set them.
pub fn fill_account(
    account: &mut pb::SmtpAccount,
    flags: &super::accounts::AccountFields,
    preset: &pb::Preset,
) {
    if flags.host.is_none() {
        account.host.clone_from(&preset.host);
    }
    if flags.port.is_none() {
        account.port = preset.port;
    }
    if flags.security.is_none() {
        account.security = preset.security;
    }
    if flags.auth_mechanism.is_none() {
        account.auth_mechanism = preset.auth_mechanism;
    }
}

/// Fills a credential from `preset` where no flag set it: the fixed user name, the preset's
/// relay as the one allowed destination, and the kind (an OAuth2 access token for XOAUTH2
/// presets, a password otherwise).
pub fn fill_credential(
    credential: &mut pb::Credential,
    flags: &super::credentials::CredentialFields,
    preset: &pb::Preset,
) {
    if flags.username.is_none() && !preset.username.is_empty() {
        credential.username.clone_from(&preset.username);
    }
    if flags.allow_destination.is_empty() {
        credential.allowed_destinations = vec![format!("{}:{}", preset.host, preset.port)];
    }
    if flags.kind.is_none() {
        credential.kind = preset.credential_kind;
    }
    let oauth = [
        pb::CredentialKind::Oauth2ClientCredentials,
        pb::CredentialKind::Oauth2RefreshToken,
    ]
    .map(i32::from)
    .contains(&credential.kind);
    if oauth && flags.token_url.is_none() {
        credential.token_url.clone_from(&preset.token_url);
    }
    if oauth && flags.scope.is_none() {
        credential.scope.clone_from(&preset.scope);
    }
}

/// The table columns of `accounts presets`.
const COLUMNS: [(&str, &str); 7] = [
    ("PRESET", "preset_id"),
    ("PROVIDER", "display_name"),
    ("HOST", "host"),
    ("PORT", "port"),
    ("SECURITY", "security"),
    ("AUTH", "auth_mechanism"),
    ("ASKS FOR", "placeholders"),
];

/// `mailplane accounts presets`.
pub async fn list(
    client: &mut SmtpAccountServiceClient<Conn>,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let presets = client
        .list_presets(pb::ListPresetsRequest {})
        .await?
        .into_inner()
        .presets;
    let items: Vec<_> = presets.iter().map(render::preset_json).collect();
    output::list(out, format, &items, &COLUMNS, "presets")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::accounts::AccountFields;
    use crate::cli::credentials::CredentialFields;

    fn args(preset: &str, tenant: Option<&str>, region: Option<&str>) -> PresetArgs {
        PresetArgs {
            preset: Some(preset.to_owned()),
            tenant: tenant.map(str::to_owned),
            region: region.map(str::to_owned),
        }
    }

    #[test]
    fn placeholders_are_checked_against_the_preset() {
        let v = args("microsoft365", Some("contoso.onmicrosoft.com"), None)
            .values(PresetId::Microsoft365)
            .unwrap();
        assert_eq!(v["tenant"], "contoso.onmicrosoft.com");
        let err = args("microsoft365", None, None)
            .values(PresetId::Microsoft365)
            .unwrap_err();
        assert!(err.to_string().contains("needs --tenant"), "{err}");
        let err = args("sendgrid", None, Some("eu-west-1"))
            .values(PresetId::SendGrid)
            .unwrap_err();
        assert!(err.to_string().contains("takes no --region"), "{err}");
        let err = args("amazon-ses", Some("a.com"), Some("eu-west-1"))
            .values(PresetId::AmazonSes)
            .unwrap_err();
        assert!(err.to_string().contains("it takes --region"), "{err}");
    }

    fn sendgrid() -> pb::Preset {
        crate::api::presets::list()
            .presets
            .into_iter()
            .find(|p| p.preset_id == "sendgrid")
            .unwrap()
    }

    #[test]
    fn flags_override_the_preset() {
        let preset = sendgrid();
        let mut flags = AccountFields::default();
        let mut account = pb::SmtpAccount::default();
        fill_account(&mut account, &flags, &preset);
        assert_eq!(
            (account.host.as_str(), account.port),
            ("smtp.sendgrid.net", 587)
        );
        assert_eq!(account.auth_mechanism, i32::from(pb::AuthMechanism::Plain));
        flags.host = Some("relay.example.com".into());
        flags.port = Some(2525);
        let (mut account, _) = flags.to_message();
        fill_account(&mut account, &flags, &preset);
        assert_eq!(
            (account.host.as_str(), account.port),
            ("relay.example.com", 2525)
        );
        assert_eq!(
            account.security,
            i32::from(pb::SecurityMode::StarttlsRequired)
        );
    }

    #[test]
    fn credentials_get_the_fixed_username_and_the_relay() {
        let preset = sendgrid();
        let flags = CredentialFields {
            display_name: Some("SendGrid".into()),
            username: None,
            kind: None,
            allow_destination: Vec::new(),
            token_url: None,
            client_id: None,
            scope: None,
            token_source: None,
            client_secret_file: None,
            refresh_token_file: None,
        };
        let mut credential = pb::Credential::default();
        fill_credential(&mut credential, &flags, &preset);
        assert_eq!(credential.username, "apikey");
        assert_eq!(credential.allowed_destinations, ["smtp.sendgrid.net:587"]);
        assert_eq!(credential.kind, i32::from(pb::CredentialKind::Password));
        assert!(credential.token_url.is_empty() && credential.scope.is_empty());

        // An OAuth2 preset fills the kind, the token endpoint and the scope.
        let m365 = pb::Preset {
            credential_kind: pb::CredentialKind::Oauth2ClientCredentials.into(),
            token_url:
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token".into(),
            scope: "https://outlook.office365.com/.default".into(),
            host: "smtp.office365.com".into(),
            port: 587,
            ..Default::default()
        };
        let mut credential = pb::Credential::default();
        fill_credential(&mut credential, &flags, &m365);
        assert_eq!(
            credential.kind,
            i32::from(pb::CredentialKind::Oauth2ClientCredentials)
        );
        assert_eq!(credential.token_url, m365.token_url);
        assert_eq!(credential.scope, m365.scope);
        assert_eq!(credential.allowed_destinations, ["smtp.office365.com:587"]);
    }
}
