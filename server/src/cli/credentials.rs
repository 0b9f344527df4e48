//! `mailplane credentials …`. Secrets are read from a prompt or standard input, never argv,
//! where they would show in `ps` and shell history.

use super::Conn;
use super::output::{self, Format};
use super::{CliError, resource_name};
use crate::render;
use clap::{Args, Subcommand, ValueEnum};
use mailplane_proto::v1 as pb;
use pb::credential_service_client::CredentialServiceClient;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use std::io::{IsTerminal, Read, Write};

/// The credential commands.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Create a credential; the secret is prompted for, or read from standard input. With
    /// --preset, the user name (when the provider fixes it), the allowed destination and the
    /// kind come from a provider preset; flags still override.
    Create {
        /// The provider preset to start from.
        #[command(flatten)]
        preset: super::presets::PresetArgs,
        /// The credential's fields.
        #[command(flatten)]
        fields: CredentialFields,
    },
    /// Show one credential (never its secret).
    Get {
        /// The credential: its code or credentials/CODE.
        credential: String,
    },
    /// List credentials.
    List {
        /// Credentials per page (at most 500).
        #[arg(long, default_value_t = 30)]
        page_size: i32,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Change fields, or rotate the secret with --rotate-secret. --allow-destination replaces
    /// the whole list: adding a destination that the current ones do not cover needs the admin
    /// role, or --rotate-secret in the same call.
    Update {
        /// The credential: its code or credentials/CODE.
        credential: String,
        /// Refuse the change if the credential changed since this etag was read.
        #[arg(long)]
        etag: Option<String>,
        /// Read a new secret from the prompt or standard input (the client secret, for the
        /// OAuth2 client credentials and refresh token kinds; or --client-secret-file).
        #[arg(long)]
        rotate_secret: bool,
        /// Read a new refresh token from the prompt or standard input (or
        /// --refresh-token-file).
        #[arg(long)]
        rotate_refresh_token: bool,
        /// The fields to change.
        #[command(flatten)]
        fields: CredentialFields,
    },
    /// Delete a credential that no account uses.
    Delete {
        /// The credential: its code or credentials/CODE.
        credential: String,
        /// Refuse if the credential changed since this etag was read.
        #[arg(long)]
        etag: Option<String>,
    },
}

/// What a secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A password (AUTH PLAIN or LOGIN).
    Password,
    /// An OAuth2 access token (AUTH XOAUTH2), used as it is until it expires.
    Oauth2Token,
    /// OAuth2 client credentials: the server gets access tokens from --token-url with
    /// --client-id and the client secret (Microsoft 365 app-only SMTP AUTH).
    Oauth2ClientCredentials,
    /// An OAuth2 refresh token: the server gets access tokens with it (Google, delegated
    /// Microsoft 365); needs the client secret and the refresh token.
    Oauth2RefreshToken,
}

/// Who asks the token endpoint for a credential's access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenSourceArg {
    /// The server, which passes the token to agents in their jobs.
    Server,
    /// The agents of the account's network connector, for an endpoint only their network
    /// reaches (it must be in their allowed_destinations). Setting it needs admin, or the
    /// client secret given again.
    Connector,
}

impl KindArg {
    fn gets_tokens(self) -> bool {
        matches!(
            self,
            KindArg::Oauth2ClientCredentials | KindArg::Oauth2RefreshToken
        )
    }
}

/// A credential's non-secret fields.
#[derive(Debug, Args)]
pub struct CredentialFields {
    /// A name people recognise it by.
    #[arg(long)]
    pub display_name: Option<String>,
    /// The user name sent with AUTH.
    #[arg(long)]
    pub username: Option<String>,
    /// What the secret is [create default: password].
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// A relay the secret may be sent to, HOST or HOST:PORT (repeat for more; required on
    /// create): a host name (smtp.example.com), a wildcard for the names below a domain
    /// (*.example.com), an IPv4 address, or an IPv6 address in brackets ([2001:db8::1]:587).
    /// Without a port, any port. Accounts using the credential must have a host and port in
    /// this list. On update, the list given replaces the current one.
    #[arg(long = "allow-destination", value_name = "HOST[:PORT]")]
    pub allow_destination: Vec<String>,
    /// The OAuth2 token endpoint (https), for the client credentials and refresh token kinds.
    #[arg(long)]
    pub token_url: Option<String>,
    /// The OAuth2 client (application) id.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The OAuth2 scopes, separated by spaces.
    #[arg(long)]
    pub scope: Option<String>,
    /// Who gets the access tokens [create default: server].
    #[arg(long, value_enum)]
    pub token_source: Option<TokenSourceArg>,
    /// Read the OAuth2 client secret from this file instead of the prompt or standard input.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Read the OAuth2 refresh token from this file instead of the prompt or standard input.
    #[arg(long, value_name = "FILE")]
    pub refresh_token_file: Option<std::path::PathBuf>,
}

impl CredentialFields {
    fn to_message(&self) -> (pb::Credential, Vec<String>) {
        let mut m = pb::Credential::default();
        let mut mask = Vec::new();
        if let Some(v) = &self.display_name {
            m.display_name.clone_from(v);
            mask.push("display_name".to_owned());
        }
        if let Some(v) = &self.username {
            m.username.clone_from(v);
            mask.push("username".to_owned());
        }
        if let Some(v) = self.kind {
            m.kind = match v {
                KindArg::Password => pb::CredentialKind::Password,
                KindArg::Oauth2Token => pb::CredentialKind::Oauth2Token,
                KindArg::Oauth2ClientCredentials => pb::CredentialKind::Oauth2ClientCredentials,
                KindArg::Oauth2RefreshToken => pb::CredentialKind::Oauth2RefreshToken,
            }
            .into();
            mask.push("kind".to_owned());
        }
        if !self.allow_destination.is_empty() {
            m.allowed_destinations.clone_from(&self.allow_destination);
            mask.push("allowed_destinations".to_owned());
        }
        if let Some(v) = self.token_source {
            m.token_source = match v {
                TokenSourceArg::Server => pb::TokenSource::Server,
                TokenSourceArg::Connector => pb::TokenSource::Connector,
            }
            .into();
            mask.push("token_source".to_owned());
        }
        for (value, field, name) in [
            (&self.token_url, &mut m.token_url, "token_url"),
            (&self.client_id, &mut m.client_id, "client_id"),
            (&self.scope, &mut m.scope, "scope"),
        ] {
            if let Some(v) = value {
                field.clone_from(v);
                mask.push(name.to_owned());
            }
        }
        (m, mask)
    }
}

/// Reads a secret from `file` (without its final line break), or else as [`read_secret`]
/// does, prompting with `what`.
fn read_secret_from(file: Option<&std::path::Path>, what: &str) -> Result<String, CliError> {
    let Some(path) = file else {
        return read_secret_prompt(what);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim_end_matches(['\r', '\n']).to_owned();
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!("{} is empty", path.display())));
    }
    Ok(trimmed)
}

/// Sets the secrets of a credential of `kind` on `msg` (and names them in `mask`): the
/// password or token as `secret`, or the client secret (and the refresh token when
/// `refresh`) for the kinds that get tokens.
fn add_secrets(
    msg: &mut pb::Credential,
    mask: &mut Vec<String>,
    kind: KindArg,
    fields: &CredentialFields,
    secret: bool,
    refresh: bool,
) -> Result<(), CliError> {
    if refresh
        && kind == KindArg::Oauth2RefreshToken
        && fields.refresh_token_file.is_none()
        && secret
        && fields.client_secret_file.is_none()
        && !std::io::stdin().is_terminal()
    {
        return Err(CliError::Usage(
            "standard input can carry one secret: give the client secret or the refresh token \
             with --client-secret-file or --refresh-token-file"
                .into(),
        ));
    }
    if secret {
        if kind.gets_tokens() {
            msg.client_secret =
                read_secret_from(fields.client_secret_file.as_deref(), "Client secret")?;
            mask.push("client_secret".to_owned());
        } else {
            msg.secret = read_secret()?;
            mask.push("secret".to_owned());
        }
    }
    if refresh {
        if kind != KindArg::Oauth2RefreshToken {
            return Err(CliError::Usage(
                "a refresh token applies only to --kind oauth2-refresh-token".into(),
            ));
        }
        msg.refresh_token =
            read_secret_from(fields.refresh_token_file.as_deref(), "Refresh token")?;
        mask.push("refresh_token".to_owned());
    }
    Ok(())
}

/// Reads a secret: from a hidden prompt on a terminal, else all of standard input without its
/// final line break.
fn read_secret() -> Result<String, CliError> {
    read_secret_prompt("Secret")
}

/// [`read_secret`], prompting with `what`.
fn read_secret_prompt(what: &str) -> Result<String, CliError> {
    let secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{what} (input hidden): "))?
    } else {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
    };
    if secret.is_empty() {
        return Err(CliError::Usage(
            "no secret given: type it at the prompt or pipe it on standard input".into(),
        ));
    }
    Ok(secret)
}

const COLUMNS: [(&str, &str); 6] = [
    ("CODE", "id"),
    ("NAME", "display_name"),
    ("USERNAME", "username"),
    ("KIND", "kind"),
    ("DESTINATIONS", "allowed_destinations"),
    ("SECRET SET", "secret_update_time"),
];

/// Runs a credential command against the server on `channel`.
pub async fn run(
    channel: Conn,
    format: Format,
    command: CredentialsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = CredentialServiceClient::new(channel.clone());
    match command {
        CredentialsCommand::Create { preset, fields } => {
            let (mut msg, mut mask) = fields.to_message();
            let mut accounts = SmtpAccountServiceClient::new(channel);
            if let Some(resolved) = super::presets::resolve(&mut accounts, &preset).await? {
                super::presets::fill_credential(&mut msg, &fields, &resolved);
            }
            let kind = match pb::CredentialKind::try_from(msg.kind) {
                Ok(pb::CredentialKind::Oauth2Token) => KindArg::Oauth2Token,
                Ok(pb::CredentialKind::Oauth2ClientCredentials) => KindArg::Oauth2ClientCredentials,
                Ok(pb::CredentialKind::Oauth2RefreshToken) => KindArg::Oauth2RefreshToken,
                _ => KindArg::Password,
            };
            add_secrets(
                &mut msg,
                &mut mask,
                kind,
                &fields,
                true,
                kind == KindArg::Oauth2RefreshToken,
            )?;
            let created = client
                .create_credential(pb::CreateCredentialRequest {
                    credential: Some(msg),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::credential_json(&created))?;
        }
        CredentialsCommand::Get { credential } => {
            let got = client
                .get_credential(pb::GetCredentialRequest {
                    name: resource_name("credentials", &credential),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::credential_json(&got))?;
        }
        CredentialsCommand::List {
            page_size,
            page_token,
        } => {
            let page = client
                .list_credentials(pb::ListCredentialsRequest {
                    page_size,
                    page_token: page_token.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let items: Vec<_> = page
                .credentials
                .iter()
                .map(render::credential_json)
                .collect();
            output::list(out, format, &items, &COLUMNS, "credentials")?;
            if !page.next_page_token.is_empty() {
                eprintln!(
                    "more credentials: add --page-token {}",
                    page.next_page_token
                );
            }
        }
        CredentialsCommand::Update {
            credential,
            etag,
            rotate_secret,
            rotate_refresh_token,
            fields,
        } => {
            let (mut msg, mut mask) = fields.to_message();
            let name = resource_name("credentials", &credential);
            if rotate_secret || rotate_refresh_token {
                // The secret's field depends on the kind: the one given, or the current one.
                let kind = match fields.kind {
                    Some(kind) => kind,
                    None => {
                        let current = client
                            .get_credential(pb::GetCredentialRequest { name: name.clone() })
                            .await?
                            .into_inner();
                        match pb::CredentialKind::try_from(current.kind) {
                            Ok(pb::CredentialKind::Oauth2Token) => KindArg::Oauth2Token,
                            Ok(pb::CredentialKind::Oauth2ClientCredentials) => {
                                KindArg::Oauth2ClientCredentials
                            }
                            Ok(pb::CredentialKind::Oauth2RefreshToken) => {
                                KindArg::Oauth2RefreshToken
                            }
                            _ => KindArg::Password,
                        }
                    }
                };
                add_secrets(
                    &mut msg,
                    &mut mask,
                    kind,
                    &fields,
                    rotate_secret,
                    rotate_refresh_token,
                )?;
            }
            if mask.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give a field flag, --rotate-secret or \
                     --rotate-refresh-token"
                        .into(),
                ));
            }
            msg.name = name;
            msg.etag = etag.unwrap_or_default();
            let updated = client
                .update_credential(pb::UpdateCredentialRequest {
                    credential: Some(msg),
                    update_mask: Some(prost_types::FieldMask { paths: mask }),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::credential_json(&updated))?;
        }
        CredentialsCommand::Delete { credential, etag } => {
            let name = resource_name("credentials", &credential);
            client
                .delete_credential(pb::DeleteCredentialRequest {
                    name: name.clone(),
                    etag: etag.unwrap_or_default(),
                })
                .await?;
            eprintln!("deleted {name}");
        }
    }
    Ok(())
}
