//! The rows the store reads, as `sqlx::FromRow` structs, and their conversion into domain
//! types; and the one list of account columns that every account query is built from.

use super::db::Arg;
use crate::domain::account::name_key;
use crate::domain::credential::destinations_from_column;
use crate::domain::oauth::{OAuthSettings, TokenSource};
use crate::domain::{
    Account, AccountId, AccountSpec, AgentName, AgentRecord, AuthMechanism, Connector, ConnectorId,
    ConnectorSpec, Credential, CredentialId, CredentialKind, CredentialSpec, Role, Security,
    StoredTest, TestName, TestState, TokenRecord,
};
use crate::error::{Error, Result};
use std::sync::LazyLock;

/// The account columns that hold its writable fields, in the order of [`account_args`].
pub(super) const SPEC_COLUMNS: [&str; 26] = [
    "account_name",
    "name_key",
    "enabled",
    "sender_email",
    "reply_to_email",
    "return_path_email",
    "confirmation_email",
    "is_default",
    "send_read_confirmation",
    "force_settings",
    "enable_footer",
    "footer_text",
    "host",
    "port",
    "security",
    "ignore_certificate_errors",
    "use_authentication",
    "auth_mechanism",
    "credential_id",
    "use_network_connector",
    "network_connector_id",
    "helo_name",
    "charset",
    "plain_text_only",
    "attachment_size_limit_bytes",
    "allow_plaintext_auth",
];

/// Every account column, as read back into an [`AccountRow`].
pub(super) static ACCOUNT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, {}, version, create_time, update_time",
        SPEC_COLUMNS.join(", ")
    )
});

/// An account's writable fields as arguments, in [`SPEC_COLUMNS`] order.
pub(super) fn account_args(s: &AccountSpec) -> [Arg; 26] {
    [
        Arg::from(&s.account_name),
        Arg::from(name_key(&s.account_name)),
        Arg::from(s.enabled),
        Arg::from(&s.sender_email),
        Arg::from(&s.reply_to_email),
        Arg::from(&s.return_path_email),
        Arg::from(&s.confirmation_email),
        Arg::from(s.is_default),
        Arg::from(s.send_read_confirmation),
        Arg::from(s.force_settings),
        Arg::from(s.enable_footer),
        Arg::from(&s.footer_text),
        Arg::from(&s.host),
        Arg::from(i64::from(s.port)),
        Arg::from(s.security.as_str().to_ascii_lowercase()),
        Arg::from(s.ignore_certificate_errors),
        Arg::from(s.use_authentication),
        Arg::from(s.auth_mechanism.map(AuthMechanism::as_str)),
        Arg::from(s.credential.map(|c| c.0)),
        Arg::from(s.use_network_connector),
        Arg::from(s.network_connector),
        Arg::from(&s.helo_name),
        Arg::from(&s.charset),
        Arg::from(s.plain_text_only),
        Arg::from(i64::try_from(s.attachment_size_limit_bytes).unwrap_or(i64::MAX)),
        Arg::from(s.allow_plaintext_auth),
    ]
}

/// A decoding error for a stored value this version does not understand.
pub(super) fn bad_value(column: &str, value: &str) -> Error {
    Error::Database(sqlx::Error::Decode(
        format!("unexpected value {value:?} in column {column}").into(),
    ))
}

/// A row of `accounts` ([`ACCOUNT_COLUMNS`]; `name_key` is not read back).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AccountRow {
    id: i64,
    account_name: String,
    enabled: bool,
    sender_email: String,
    reply_to_email: Option<String>,
    return_path_email: Option<String>,
    confirmation_email: Option<String>,
    is_default: bool,
    send_read_confirmation: bool,
    force_settings: bool,
    enable_footer: bool,
    footer_text: String,
    host: String,
    port: i64,
    security: String,
    ignore_certificate_errors: bool,
    use_authentication: bool,
    auth_mechanism: Option<String>,
    credential_id: Option<i64>,
    use_network_connector: bool,
    network_connector_id: Option<i64>,
    helo_name: Option<String>,
    charset: String,
    plain_text_only: bool,
    attachment_size_limit_bytes: i64,
    allow_plaintext_auth: bool,
    version: i64,
    create_time: i64,
    update_time: i64,
}

impl TryFrom<AccountRow> for Account {
    type Error = Error;

    fn try_from(r: AccountRow) -> Result<Self> {
        let auth_mechanism = match r.auth_mechanism {
            None => None,
            Some(m) => {
                Some(AuthMechanism::parse(&m).ok_or_else(|| bad_value("auth_mechanism", &m))?)
            }
        };
        Ok(Account {
            id: AccountId(r.id),
            spec: AccountSpec {
                account_name: r.account_name,
                enabled: r.enabled,
                sender_email: r.sender_email,
                reply_to_email: r.reply_to_email,
                return_path_email: r.return_path_email,
                confirmation_email: r.confirmation_email,
                is_default: r.is_default,
                send_read_confirmation: r.send_read_confirmation,
                force_settings: r.force_settings,
                enable_footer: r.enable_footer,
                footer_text: r.footer_text,
                host: r.host,
                port: u16::try_from(r.port).map_err(|_| bad_value("port", &r.port.to_string()))?,
                security: Security::parse(&r.security)
                    .ok_or_else(|| bad_value("security", &r.security))?,
                ignore_certificate_errors: r.ignore_certificate_errors,
                use_authentication: r.use_authentication,
                auth_mechanism,
                credential: r.credential_id.map(CredentialId),
                use_network_connector: r.use_network_connector,
                network_connector: r.network_connector_id,
                helo_name: r.helo_name,
                charset: r.charset,
                plain_text_only: r.plain_text_only,
                attachment_size_limit_bytes: u64::try_from(r.attachment_size_limit_bytes)
                    .unwrap_or(0),
                allow_plaintext_auth: r.allow_plaintext_auth,
            },
            version: r.version,
            create_time: r.create_time,
            update_time: r.update_time,
        })
    }
}

/// The credential columns, as read back (never the secret).
pub(super) const CREDENTIAL_COLUMNS: &str = "id, display_name, username, kind, allowed_destinations, secret_update_time, version, \
     create_time, update_time, oauth_grant, token_url, client_id, scope, refresh_update_time, \
     token_source";

/// A row of `credentials` ([`CREDENTIAL_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct CredentialRow {
    id: i64,
    display_name: String,
    username: String,
    kind: String,
    allowed_destinations: String,
    secret_update_time: Option<i64>,
    version: i64,
    create_time: i64,
    update_time: i64,
    oauth_grant: String,
    token_url: String,
    client_id: String,
    scope: String,
    refresh_update_time: Option<i64>,
    token_source: String,
}

impl TryFrom<CredentialRow> for Credential {
    type Error = Error;

    fn try_from(r: CredentialRow) -> Result<Self> {
        Ok(Credential {
            id: CredentialId(r.id),
            spec: CredentialSpec {
                display_name: r.display_name,
                username: r.username,
                kind: CredentialKind::from_columns(&r.kind, &r.oauth_grant)
                    .ok_or_else(|| bad_value("kind", &format!("{} {}", r.kind, r.oauth_grant)))?,
                allowed_destinations: destinations_from_column(&r.allowed_destinations)
                    .map_err(|d| bad_value("allowed_destinations", &d))?,
                oauth: OAuthSettings {
                    token_url: r.token_url,
                    client_id: r.client_id,
                    scope: r.scope,
                    token_source: TokenSource::parse(&r.token_source)
                        .ok_or_else(|| bad_value("token_source", &r.token_source))?,
                },
            },
            has_secret: r.secret_update_time.is_some(),
            has_refresh_token: r.refresh_update_time.is_some(),
            secret_update_time: r.secret_update_time,
            version: r.version,
            create_time: r.create_time,
            update_time: r.update_time,
        })
    }
}

/// The connector columns.
pub(super) const CONNECTOR_COLUMNS: &str =
    "id, display_name, description, version, create_time, update_time";

/// A row of `connectors` ([`CONNECTOR_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ConnectorRow {
    id: i64,
    display_name: String,
    description: String,
    version: i64,
    create_time: i64,
    update_time: i64,
}

impl From<ConnectorRow> for Connector {
    fn from(r: ConnectorRow) -> Self {
        Connector {
            id: ConnectorId(r.id),
            spec: ConnectorSpec {
                display_name: r.display_name,
                description: r.description,
            },
            version: r.version,
            create_time: r.create_time,
            update_time: r.update_time,
        }
    }
}

/// The agent columns.
pub(super) const AGENT_COLUMNS: &str = "id, connector_id, hostname, version, cert_not_after, \
     revoked, enroll_time, last_heartbeat_time";

/// A row of `agents` ([`AGENT_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AgentRow {
    id: i64,
    connector_id: i64,
    hostname: String,
    version: String,
    cert_not_after: Option<i64>,
    revoked: bool,
    enroll_time: i64,
    last_heartbeat_time: Option<i64>,
}

impl From<AgentRow> for AgentRecord {
    fn from(r: AgentRow) -> Self {
        AgentRecord {
            name: AgentName {
                connector: ConnectorId(r.connector_id),
                id: r.id,
            },
            hostname: r.hostname,
            version: r.version,
            cert_not_after: r.cert_not_after,
            revoked: r.revoked,
            enroll_time: r.enroll_time,
            last_heartbeat_time: r.last_heartbeat_time,
        }
    }
}

/// The API token columns (never the secret's hash).
pub(super) const TOKEN_COLUMNS: &str =
    "id, display_name, role, expire_time, revoked, create_time, last_use_time";

/// A row of `api_tokens` ([`TOKEN_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TokenRow {
    id: i64,
    display_name: String,
    role: String,
    expire_time: Option<i64>,
    revoked: bool,
    create_time: i64,
    last_use_time: Option<i64>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = Error;

    fn try_from(r: TokenRow) -> Result<Self> {
        Ok(TokenRecord {
            id: r.id,
            display_name: r.display_name,
            role: Role::parse(&r.role).ok_or_else(|| bad_value("role", &r.role))?,
            expire_time: r.expire_time,
            revoked: r.revoked,
            create_time: r.create_time,
            last_use_time: r.last_use_time,
        })
    }
}

/// The SMTP test columns.
pub(super) const TEST_COLUMNS: &str = "id, account_id, state, payload, create_time";

/// A row of `smtp_tests` ([`TEST_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TestRow {
    id: i64,
    account_id: i64,
    state: String,
    payload: Vec<u8>,
    create_time: i64,
}

impl TryFrom<TestRow> for StoredTest {
    type Error = Error;

    fn try_from(r: TestRow) -> Result<Self> {
        Ok(StoredTest {
            name: TestName {
                account: AccountId(r.account_id),
                id: r.id,
            },
            state: TestState::parse(&r.state).ok_or_else(|| bad_value("state", &r.state))?,
            payload: r.payload,
            create_time: r.create_time,
        })
    }
}

/// Converts every row.
pub(super) fn convert<R, T: TryFrom<R, Error = Error>>(rows: Vec<R>) -> Result<Vec<T>> {
    rows.into_iter().map(T::try_from).collect()
}
