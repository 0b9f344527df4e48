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
        /// Read a new secret from the prompt or standard input.
        #[arg(long)]
        rotate_secret: bool,
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
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// A password (AUTH PLAIN or LOGIN).
    Password,
    /// An OAuth2 access token (AUTH XOAUTH2).
    Oauth2Token,
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
            }
            .into();
            mask.push("kind".to_owned());
        }
        if !self.allow_destination.is_empty() {
            m.allowed_destinations.clone_from(&self.allow_destination);
            mask.push("allowed_destinations".to_owned());
        }
        (m, mask)
    }
}

/// Reads a secret: from a hidden prompt on a terminal, else all of standard input without its
/// final line break.
fn read_secret() -> Result<String, CliError> {
    let secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Secret (input hidden): ")?
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
            let (mut msg, _) = fields.to_message();
            let mut accounts = SmtpAccountServiceClient::new(channel);
            if let Some(resolved) = super::presets::resolve(&mut accounts, &preset).await? {
                super::presets::fill_credential(&mut msg, &fields, &resolved);
            }
            msg.secret = read_secret()?;
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
            fields,
        } => {
            let (mut msg, mut mask) = fields.to_message();
            if rotate_secret {
                msg.secret = read_secret()?;
                mask.push("secret".to_owned());
            }
            if mask.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give a field flag or --rotate-secret".into(),
                ));
            }
            msg.name = resource_name("credentials", &credential);
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
