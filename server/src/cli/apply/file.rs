//! The file `mailplane apply` reads and `mailplane export` writes: connectors, credentials and
//! accounts, each named by its unique name, with the API's field names. Secrets are never in
//! it, only where to read them (`secret_env: NAME` or `secret_file: PATH`).

use super::lines::Lines;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFile {
    /// The file format's version: 1.
    #[serde(default = "version_one")]
    pub version: u32,
    /// The network connectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connectors: Vec<ConnectorEntry>,
    /// The credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialEntry>,
    /// The SMTP accounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountEntry>,
}

fn version_one() -> u32 {
    1
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A network connector, matched by `display_name`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorEntry {
    /// Its unique name.
    pub display_name: String,
    /// What it reaches.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Where a secret is read from when it has to be sent: an environment variable or a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRef {
    /// The environment variable holding it.
    pub env: Option<String>,
    /// The file holding it (one trailing newline is dropped).
    pub file: Option<String>,
}

/// A credential, matched by `display_name`. Its secrets are write-only: they are sent when the
/// credential is created, and again when a change needs them (new destinations, another token
/// endpoint) or `--rotate-secrets` asks.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    /// Its unique name.
    pub display_name: String,
    /// What the secret is.
    #[serde(default)]
    pub kind: CredentialKind,
    /// The user name sent with AUTH.
    pub username: String,
    /// The relays the secret may be sent to.
    #[serde(default)]
    pub allowed_destinations: Vec<String>,
    /// The OAuth2 token endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_url: String,
    /// The OAuth2 client id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// The OAuth2 scopes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Who asks the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_source: Option<TokenSource>,
    /// The password or access token: an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The password or access token: a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// The OAuth2 client secret: an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// The OAuth2 client secret: a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// The OAuth2 refresh token: an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_env: Option<String>,
    /// The OAuth2 refresh token: a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_file: Option<String>,
    /// Refused with a clear message: secrets never live in the file.
    #[serde(default, skip_serializing)]
    pub secret: Option<serde::de::IgnoredAny>,
    /// Refused, as `secret`.
    #[serde(default, skip_serializing)]
    pub client_secret: Option<serde::de::IgnoredAny>,
    /// Refused, as `secret`.
    #[serde(default, skip_serializing)]
    pub refresh_token: Option<serde::de::IgnoredAny>,
}

/// A secret field of a credential and where it is read from.
pub struct SecretField {
    /// The API field (`secret`, `client_secret`, `refresh_token`), also the file's key prefix.
    pub field: &'static str,
    /// Where it is read from.
    pub reference: SecretRef,
}

impl CredentialEntry {
    /// Whether the file gives the secret `field` itself (which is refused).
    pub fn inline(&self, field: &str) -> bool {
        match field {
            "secret" => self.secret.is_some(),
            "client_secret" => self.client_secret.is_some(),
            _ => self.refresh_token.is_some(),
        }
    }

    /// The secrets this entry's kind takes, with where they come from.
    pub fn secrets(&self) -> Vec<SecretField> {
        let r = |env: &Option<String>, file: &Option<String>| SecretRef {
            env: env.clone(),
            file: file.clone(),
        };
        let (secret, client, refresh) = match self.kind {
            CredentialKind::Password | CredentialKind::Oauth2Token => (true, false, false),
            CredentialKind::Oauth2ClientCredentials => (false, true, false),
            CredentialKind::Oauth2RefreshToken => (false, true, true),
        };
        let mut out = Vec::new();
        if secret {
            out.push(SecretField {
                field: "secret",
                reference: r(&self.secret_env, &self.secret_file),
            });
        }
        if client {
            out.push(SecretField {
                field: "client_secret",
                reference: r(&self.client_secret_env, &self.client_secret_file),
            });
        }
        if refresh {
            out.push(SecretField {
                field: "refresh_token",
                reference: r(&self.refresh_token_env, &self.refresh_token_file),
            });
        }
        out
    }
}

/// What a credential's secret is.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A password.
    #[default]
    Password,
    /// An OAuth2 access token.
    Oauth2Token,
    /// OAuth2 client credentials.
    Oauth2ClientCredentials,
    /// An OAuth2 refresh token.
    Oauth2RefreshToken,
}

/// Who asks the token endpoint.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server.
    Server,
    /// The connector's agent.
    Connector,
}

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain text.
    None,
    /// STARTTLS if offered.
    StarttlsOpportunistic,
    /// STARTTLS or no connection.
    #[default]
    StarttlsRequired,
    /// TLS from the first byte.
    ImplicitTls,
}

/// The SASL mechanism.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMechanism {
    /// AUTH PLAIN.
    Plain,
    /// AUTH LOGIN.
    Login,
    /// AUTH XOAUTH2.
    Xoauth2,
}

/// An SMTP account, matched by `account_name` (case-insensitively). A field left out takes the
/// value `mailplane accounts create` would give it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// Its unique name.
    pub account_name: String,
    /// Whether it may send (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Whether it is the default account. Only `true` is acted on: the flag moves to it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_default: bool,
    /// The From address.
    pub sender_email: String,
    /// Reply-To.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reply_to_email: String,
    /// Return-Path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub return_path_email: String,
    /// Disposition-Notification-To.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub confirmation_email: String,
    /// Ask for read confirmations.
    #[serde(default, skip_serializing_if = "is_false")]
    pub send_read_confirmation: bool,
    /// Refuse the callers' overrides.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_settings: bool,
    /// Append `footer_text`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_footer: bool,
    /// The footer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub footer_text: String,
    /// The relay's host.
    pub host: String,
    /// The relay's port (default: from `security`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// How the connection is secured.
    #[serde(default)]
    pub security: Security,
    /// Ignore certificate errors.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_certificate_errors: bool,
    /// Authenticate with `credential`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_authentication: bool,
    /// The SASL mechanism (default: from the credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mechanism: Option<AuthMechanism>,
    /// The credential's `display_name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
    /// Run the session through `network_connector`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_network_connector: bool,
    /// The connector's `display_name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_connector: String,
    /// The EHLO name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helo_name: String,
    /// The charset (default UTF-8).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub charset: String,
    /// Send text/plain only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub plain_text_only: bool,
    /// The attachment size limit in bytes; 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attachment_size_limit_bytes: u64,
    /// Allow AUTH without TLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plaintext_auth: bool,
}

/// One problem in the file, at a line when it can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The 1-based line.
    pub line: Option<usize>,
    /// What is wrong and what would be right.
    pub message: String,
}

/// Parses `text`: a YAML syntax or type error comes back with its line.
pub fn parse(text: &str) -> Result<DesiredFile, Problem> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        // Most likely a mistake (an empty pipe, the wrong file); with --prune it would delete
        // everything. A file that means "nothing" says `version: 1` and no more.
        return Err(Problem {
            line: None,
            message: "the file is empty: write `version: 1` (and the connectors, credentials \
                      and accounts) to describe the server"
                .into(),
        });
    }
    let file: DesiredFile = serde_yaml_ng::from_str(text).map_err(|e| Problem {
        line: e.location().map(|l| l.line()),
        message: strip_location(&e.to_string()),
    })?;
    Ok(file)
}

/// serde_yaml_ng appends " at line L column C"; the report puts the line first instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The checks that need only the file: the version, inline secrets, names given twice, and the
/// references between entries that the file alone settles.
pub fn check_shape(file: &DesiredFile, lines: &Lines) -> Vec<Problem> {
    let mut problems = Vec::new();
    if file.version != 1 {
        problems.push(Problem {
            line: lines.top_key("version"),
            message: format!("version: {} is not supported; use 1", file.version),
        });
    }
    duplicates(
        "connectors",
        file.connectors.iter().map(|c| c.display_name.as_str()),
        lines,
        &mut problems,
    );
    duplicates(
        "credentials",
        file.credentials.iter().map(|c| c.display_name.as_str()),
        lines,
        &mut problems,
    );
    duplicates(
        "accounts",
        file.accounts.iter().map(|a| a.account_name.as_str()),
        lines,
        &mut problems,
    );
    for (i, c) in file.credentials.iter().enumerate() {
        for (field, given) in [
            ("secret", c.secret.is_some()),
            ("client_secret", c.client_secret.is_some()),
            ("refresh_token", c.refresh_token.is_some()),
        ] {
            if given {
                problems.push(Problem {
                    line: lines.field("credentials", i, field),
                    message: format!(
                        "credential {:?}: {field} is never read from the file; use \
                         {field}_env: VARIABLE or {field}_file: PATH",
                        c.display_name
                    ),
                });
            }
        }
        for s in c.secrets() {
            if s.reference.env.is_some() && s.reference.file.is_some() {
                problems.push(Problem {
                    line: lines.field("credentials", i, &format!("{}_file", s.field)),
                    message: format!(
                        "credential {:?}: give {f}_env or {f}_file, not both",
                        c.display_name,
                        f = s.field
                    ),
                });
            }
        }
    }
    let defaults: Vec<usize> = (0..file.accounts.len())
        .filter(|i| file.accounts[*i].is_default)
        .collect();
    if defaults.len() > 1 {
        for i in &defaults[1..] {
            problems.push(Problem {
                line: lines.field("accounts", *i, "is_default"),
                message: format!(
                    "account {:?}: only one account can be the default ({:?} is already)",
                    file.accounts[*i].account_name, file.accounts[defaults[0]].account_name
                ),
            });
        }
    }
    problems
}

fn duplicates<'a>(
    section: &str,
    names: impl Iterator<Item = &'a str>,
    lines: &Lines,
    problems: &mut Vec<Problem>,
) {
    let mut seen: Vec<String> = Vec::new();
    for (i, name) in names.enumerate() {
        let key = name.trim().to_lowercase();
        if let Some(first) = seen.iter().position(|s| *s == key) {
            problems.push(Problem {
                line: lines.item(section, i),
                message: format!(
                    "{section}: {name:?} is given twice (first at {})",
                    lines
                        .item(section, first)
                        .map_or_else(|| format!("item {}", first + 1), |l| format!("line {l}"))
                ),
            });
        }
        seen.push(key);
    }
}
