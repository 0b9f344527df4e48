//! `mailplane accounts …`.

use super::Conn;
use super::output::{self, Format};
use super::{CliError, resource_name};
use crate::render;
use clap::{Args, Subcommand, ValueEnum};
use mailplane_proto::v1 as pb;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use std::io::Write;

/// The account commands.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account. The first account becomes the default. With --preset, the host,
    /// port, security and AUTH mechanism come from a provider preset; flags still override.
    Create {
        /// The provider preset to start from.
        #[command(flatten)]
        preset: super::presets::PresetArgs,
        /// The account's fields.
        #[command(flatten)]
        fields: AccountFields,
    },
    /// List the provider presets that `create --preset` takes.
    Presets,
    /// Show one account.
    Get {
        /// The account: its code or accounts/CODE.
        account: String,
    },
    /// List accounts, 30 per page like the accounts report.
    List(ListArgs),
    /// Change the fields given as flags; the others stay as they are.
    Update {
        /// The account: its code or accounts/CODE.
        account: String,
        /// Refuse the change if the account changed since this etag was read.
        #[arg(long)]
        etag: Option<String>,
        /// The fields to change.
        #[command(flatten)]
        fields: AccountFields,
    },
    /// Delete an account. The default account must hand over its role first.
    Delete {
        /// The account: its code or accounts/CODE.
        account: String,
        /// Refuse if the account changed since this etag was read.
        #[arg(long)]
        etag: Option<String>,
    },
    /// Make an account the default account.
    SetDefault {
        /// The account: its code or accounts/CODE.
        account: String,
    },
    /// Send a test e-mail through the account and show each phase as it happens. Exits 0
    /// only when the test succeeds.
    Test(super::tests::TestArgs),
    /// Download the accounts report as CSV or JSON lines.
    Export {
        /// The file format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Which accounts.
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// The download formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// The report's columns as CSV.
    Csv,
    /// Every field, one JSON object per line.
    Jsonl,
}

/// Security modes, with the seeds' names as aliases.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SecurityArg {
    /// Plain text only.
    None,
    /// STARTTLS when offered, plain text otherwise.
    #[value(alias = "starttls")]
    StarttlsOpportunistic,
    /// STARTTLS or no connection (the seeds' "TLS").
    #[value(alias = "tls")]
    StarttlsRequired,
    /// TLS from the first byte, port 465 (the seeds' "SSL").
    #[value(alias = "ssl")]
    ImplicitTls,
}

/// SASL mechanisms.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MechanismArg {
    /// AUTH PLAIN.
    Plain,
    /// AUTH LOGIN.
    Login,
    /// AUTH XOAUTH2.
    Xoauth2,
}

/// An account's writable fields. On update, only the flags given change.
#[derive(Debug, Args, Default)]
pub struct AccountFields {
    /// The unique account name.
    #[arg(long = "name")]
    pub account_name: Option<String>,
    /// Whether the account may send [create default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub enabled: Option<bool>,
    /// The From address, e.g. "Alerts <alerts@example.com>".
    #[arg(long = "sender")]
    pub sender_email: Option<String>,
    /// The Reply-To address ("" clears it).
    #[arg(long = "reply-to")]
    pub reply_to_email: Option<String>,
    /// The Return-Path (bounce) address ("" clears it).
    #[arg(long = "return-path")]
    pub return_path_email: Option<String>,
    /// The read-confirmation address ("" clears it).
    #[arg(long)]
    pub confirmation_email: Option<String>,
    /// Make this the default account.
    #[arg(long = "default", num_args = 0..=1, default_missing_value = "true")]
    pub is_default: Option<bool>,
    /// Ask for read confirmations.
    #[arg(long = "read-confirmation", num_args = 0..=1, default_missing_value = "true")]
    pub send_read_confirmation: Option<bool>,
    /// Force senders to use these settings.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub force_settings: Option<bool>,
    /// Append this footer to every message ("" turns the footer off).
    #[arg(long = "footer")]
    pub footer_text: Option<String>,
    /// The SMTP server's host.
    #[arg(long)]
    pub host: Option<String>,
    /// The SMTP server's port [create default: from --security].
    #[arg(long)]
    pub port: Option<u32>,
    /// How the connection is secured [create default: starttls-required].
    #[arg(long, value_enum)]
    pub security: Option<SecurityArg>,
    /// Ignore certificate errors (for internal relays with self-signed certificates).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ignore_certificate_errors: Option<bool>,
    /// Authenticate with this credential (its code or credentials/CODE; "" turns AUTH off).
    #[arg(long)]
    pub credential: Option<String>,
    /// The SASL mechanism [default: from the credential's kind].
    #[arg(long, value_enum)]
    pub auth_mechanism: Option<MechanismArg>,
    /// Send through this network connector (connectors/CODE; "" turns it off).
    #[arg(long)]
    pub network_connector: Option<String>,
    /// The EHLO name ("" for the server's host name).
    #[arg(long)]
    pub helo_name: Option<String>,
    /// The message character set [default: UTF-8].
    #[arg(long)]
    pub charset: Option<String>,
    /// Send text/plain only.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub plain_text_only: Option<bool>,
    /// The attachment size limit in bytes (0 for none).
    #[arg(long)]
    pub attachment_size_limit: Option<u64>,
    /// Allow AUTH on a connection without TLS (security none, or starttls-opportunistic when
    /// the relay offers no STARTTLS); the credential then goes in clear. Admin only
    /// ("--allow-plaintext-auth false" turns it off) [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub allow_plaintext_auth: Option<bool>,
}

impl AccountFields {
    /// The message and the mask of the fields given.
    pub fn to_message(&self) -> (pb::SmtpAccount, Vec<String>) {
        let mut m = pb::SmtpAccount::default();
        let mut mask: Vec<&str> = Vec::new();
        macro_rules! set {
            ($field:ident, $path:literal) => {
                if let Some(v) = &self.$field {
                    m.$field = v.clone();
                    mask.push($path);
                }
            };
        }
        set!(account_name, "account_name");
        set!(sender_email, "sender_email");
        set!(reply_to_email, "reply_to_email");
        set!(return_path_email, "return_path_email");
        set!(confirmation_email, "confirmation_email");
        set!(is_default, "is_default");
        set!(send_read_confirmation, "send_read_confirmation");
        set!(force_settings, "force_settings");
        set!(host, "host");
        set!(port, "port");
        set!(ignore_certificate_errors, "ignore_certificate_errors");
        set!(helo_name, "helo_name");
        set!(charset, "charset");
        set!(plain_text_only, "plain_text_only");
        set!(allow_plaintext_auth, "allow_plaintext_auth");
        if let Some(v) = self.enabled {
            m.enabled = Some(v);
            mask.push("enabled");
        }
        if let Some(v) = &self.footer_text {
            m.enable_footer = !v.is_empty();
            m.footer_text.clone_from(v);
            mask.extend(["enable_footer", "footer_text"]);
        }
        if let Some(v) = self.security {
            m.security = match v {
                SecurityArg::None => pb::SecurityMode::None,
                SecurityArg::StarttlsOpportunistic => pb::SecurityMode::StarttlsOpportunistic,
                SecurityArg::StarttlsRequired => pb::SecurityMode::StarttlsRequired,
                SecurityArg::ImplicitTls => pb::SecurityMode::ImplicitTls,
            }
            .into();
            mask.push("security");
        }
        if let Some(v) = &self.credential {
            m.use_authentication = !v.is_empty();
            m.credential = if v.is_empty() {
                String::new()
            } else {
                resource_name("credentials", v)
            };
            mask.extend(["use_authentication", "credential", "auth_mechanism"]);
        }
        if let Some(v) = self.auth_mechanism {
            m.auth_mechanism = match v {
                MechanismArg::Plain => pb::AuthMechanism::Plain,
                MechanismArg::Login => pb::AuthMechanism::Login,
                MechanismArg::Xoauth2 => pb::AuthMechanism::Xoauth2,
            }
            .into();
            if !mask.contains(&"auth_mechanism") {
                mask.push("auth_mechanism");
            }
        }
        if let Some(v) = &self.network_connector {
            m.use_network_connector = !v.is_empty();
            m.network_connector = if v.is_empty() {
                String::new()
            } else {
                resource_name("connectors", v)
            };
            mask.extend(["use_network_connector", "network_connector"]);
        }
        if let Some(v) = self.attachment_size_limit {
            m.attachment_size_limit_bytes = v;
            mask.push("attachment_size_limit_bytes");
        }
        (m, mask.into_iter().map(str::to_owned).collect())
    }
}

/// The report's search fields.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// The account's code.
    #[arg(long)]
    pub id: Option<i64>,
    /// Part of the account name (any case).
    #[arg(long = "name")]
    pub account_name: Option<String>,
    /// Part of the sender address.
    #[arg(long = "sender")]
    pub sender_email: Option<String>,
    /// Part of the Reply-To address.
    #[arg(long = "reply-to")]
    pub reply_to_email: Option<String>,
    /// Part of the Return-Path address.
    #[arg(long = "return-path")]
    pub return_path_email: Option<String>,
    /// Part of the confirmation address.
    #[arg(long)]
    pub confirmation_email: Option<String>,
    /// Enabled, disabled or any accounts.
    #[arg(long, value_enum, default_value_t = StatusArg::Any)]
    pub status: StatusArg,
}

/// Status filter values.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum StatusArg {
    /// Every account.
    #[default]
    Any,
    /// Enabled accounts.
    Enabled,
    /// Disabled accounts.
    Disabled,
}

impl FilterArgs {
    fn to_message(&self) -> pb::AccountFilter {
        pb::AccountFilter {
            id: self.id.unwrap_or(0),
            account_name: self.account_name.clone().unwrap_or_default(),
            sender_email: self.sender_email.clone().unwrap_or_default(),
            reply_to_email: self.reply_to_email.clone().unwrap_or_default(),
            return_path_email: self.return_path_email.clone().unwrap_or_default(),
            confirmation_email: self.confirmation_email.clone().unwrap_or_default(),
            status: match self.status {
                StatusArg::Any => pb::AccountStatusFilter::Any,
                StatusArg::Enabled => pb::AccountStatusFilter::Enabled,
                StatusArg::Disabled => pb::AccountStatusFilter::Disabled,
            }
            .into(),
        }
    }
}

/// `accounts list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The search fields.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Accounts per page (at most 500).
    #[arg(long, default_value_t = 30)]
    pub page_size: i32,
    /// Continue from a previous page.
    #[arg(long)]
    pub page_token: Option<String>,
    /// Fetch every page.
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
}

/// The table columns of `accounts list`.
const COLUMNS: [(&str, &str); 8] = [
    ("CODE", "id"),
    ("NAME", "account_name"),
    ("ENABLED", "enabled"),
    ("DEFAULT", "is_default"),
    ("SENDER", "sender_email"),
    ("HOST", "host"),
    ("PORT", "port"),
    ("SECURITY", "security"),
];

/// Runs an account command against the server on `channel`.
pub async fn run(
    channel: Conn,
    format: Format,
    command: AccountsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = SmtpAccountServiceClient::new(channel.clone());
    match command {
        AccountsCommand::Create { preset, fields } => {
            let (mut account, _) = fields.to_message();
            if let Some(resolved) = super::presets::resolve(&mut client, &preset).await? {
                super::presets::fill_account(&mut account, &fields, &resolved);
            }
            let created = client
                .create_account(pb::CreateAccountRequest {
                    account: Some(account),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::account_json(&created))?;
        }
        AccountsCommand::Presets => super::presets::list(&mut client, format, out).await?,
        AccountsCommand::Get { account } => {
            let got = client
                .get_account(pb::GetAccountRequest {
                    name: resource_name("accounts", &account),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::account_json(&got))?;
        }
        AccountsCommand::List(args) => {
            let mut token = args.page_token.clone().unwrap_or_default();
            let mut items = Vec::new();
            loop {
                let page = client
                    .list_accounts(pb::ListAccountsRequest {
                        page_size: args.page_size,
                        page_token: token.clone(),
                        filter: Some(args.filter.to_message()),
                    })
                    .await?
                    .into_inner();
                items.extend(page.accounts.iter().map(render::account_json));
                token = page.next_page_token;
                if !args.all || token.is_empty() {
                    break;
                }
            }
            output::list(out, format, &items, &COLUMNS, "accounts")?;
            if !token.is_empty() {
                eprintln!("more accounts: add --page-token {token} (or --all)");
            }
        }
        AccountsCommand::Update {
            account,
            etag,
            fields,
        } => {
            let (mut msg, mask) = fields.to_message();
            if mask.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give at least one field flag (see --help)".into(),
                ));
            }
            msg.name = resource_name("accounts", &account);
            msg.etag = etag.unwrap_or_default();
            let updated = client
                .update_account(pb::UpdateAccountRequest {
                    account: Some(msg),
                    update_mask: Some(prost_types::FieldMask { paths: mask }),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::account_json(&updated))?;
        }
        AccountsCommand::Delete { account, etag } => {
            let name = resource_name("accounts", &account);
            client
                .delete_account(pb::DeleteAccountRequest {
                    name: name.clone(),
                    etag: etag.unwrap_or_default(),
                })
                .await?;
            eprintln!("deleted {name}");
        }
        AccountsCommand::SetDefault { account } => {
            let updated = client
                .set_default_account(pb::SetDefaultAccountRequest {
                    name: resource_name("accounts", &account),
                })
                .await?
                .into_inner();
            output::one(out, format, &render::account_json(&updated))?;
        }
        AccountsCommand::Test(args) => {
            return super::tests::run_test(channel, format, args, out).await;
        }
        AccountsCommand::Export {
            format: f,
            file,
            filter,
        } => {
            let mut stream = client
                .export_accounts(pb::ExportAccountsRequest {
                    filter: Some(filter.to_message()),
                    format: match f {
                        ExportFormat::Csv => pb::ExportFormat::Csv,
                        ExportFormat::Jsonl => pb::ExportFormat::JsonLines,
                    }
                    .into(),
                })
                .await?
                .into_inner();
            let mut sink: Box<dyn Write> = match &file {
                Some(path) => Box::new(std::fs::File::create(path)?),
                None => Box::new(&mut *out),
            };
            while let Some(chunk) = stream.message().await? {
                sink.write_all(&chunk.data)?;
            }
            sink.flush()?;
            if let Some(path) = file {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
