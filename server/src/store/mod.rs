//! Persistence: SQLite (the embedded default) and PostgreSQL (several replicas, one database).
//!
//! Both backends run the same SQL, written once in [`sql`], and so pass the same tests. The
//! invariants that matter (unique names, one default account, etags) are enforced inside one
//! transaction per change, and the database backs them with constraints: a unique index on the
//! case-folded name and a unique partial index on `is_default`.

mod postgres;
mod sql;
mod sqlite;

use crate::crypto::{Cipher, Sealed};
use crate::domain::{
    Account, AccountFilter, AccountId, AccountSpec, AgentName, AgentRecord, Connector, ConnectorId,
    ConnectorSpec, Credential, CredentialId, CredentialSpec, Micros, Role, StoredTest, TestName,
    TestState, TokenRecord,
};
use crate::error::Result;
use crate::secret::Secret;
use std::path::Path;
use std::sync::Arc;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A change to an account: it receives the current fields and edits them in place, inside the
/// store's transaction, so the check-then-write cannot race another writer.
pub type AccountEdit<'a> = &'a (dyn Fn(&mut AccountSpec) -> Result<()> + Send + Sync);

/// A change to a credential's non-secret fields, applied like [`AccountEdit`].
pub type CredentialEdit<'a> = &'a (dyn Fn(&mut CredentialSpec) -> Result<()> + Send + Sync);

/// A change to a connector, applied like [`AccountEdit`].
pub type ConnectorEdit<'a> = &'a (dyn Fn(&mut ConnectorSpec) -> Result<()> + Send + Sync);

/// What the server needs from a database.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account. The first account becomes the default; `is_default` moves the flag.
    async fn create_account(&self, spec: AccountSpec) -> Result<Account>;
    /// Reads one account.
    async fn get_account(&self, id: AccountId) -> Result<Account>;
    /// Lists up to `limit` accounts with ids above `after`, ordered by id.
    async fn list_accounts(
        &self,
        filter: &AccountFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Account>>;
    /// Applies `edit` to an account whose version is `expected_version` (when given).
    async fn update_account(
        &self,
        id: AccountId,
        expected_version: Option<i64>,
        edit: AccountEdit<'_>,
    ) -> Result<Account>;
    /// Deletes an account; refused for the default while others exist.
    async fn delete_account(&self, id: AccountId, expected_version: Option<i64>) -> Result<()>;
    /// Makes an account the default, clearing the previous default in the same transaction.
    async fn set_default_account(&self, id: AccountId) -> Result<Account>;

    /// Creates a credential, sealing `secret` under `cipher`.
    async fn create_credential(
        &self,
        spec: CredentialSpec,
        secret: &Secret,
        cipher: &Cipher,
    ) -> Result<Credential>;
    /// Reads one credential, without its secret.
    async fn get_credential(&self, id: CredentialId) -> Result<Credential>;
    /// Lists up to `limit` credentials with ids above `after`, ordered by id.
    async fn list_credentials(&self, after: i64, limit: u32) -> Result<Vec<Credential>>;
    /// Applies `edit`, and rotates the secret when `new_secret` is given.
    async fn update_credential(
        &self,
        id: CredentialId,
        expected_version: Option<i64>,
        edit: CredentialEdit<'_>,
        new_secret: Option<&Secret>,
        cipher: &Cipher,
    ) -> Result<Credential>;
    /// Deletes a credential; refused while accounts use it.
    async fn delete_credential(
        &self,
        id: CredentialId,
        expected_version: Option<i64>,
    ) -> Result<()>;
    /// Decrypts a credential's secret, for the SMTP session that needs it.
    async fn credential_secret(&self, id: CredentialId, cipher: &Cipher) -> Result<Secret>;

    /// Stores a new test for `account`; `NotFound` if the account is gone.
    async fn create_test(
        &self,
        account: AccountId,
        state: TestState,
        payload: &[u8],
    ) -> Result<TestName>;
    /// Replaces a test's state and payload.
    async fn update_test(&self, name: TestName, state: TestState, payload: &[u8]) -> Result<()>;
    /// Reads one test.
    async fn get_test(&self, name: TestName) -> Result<StoredTest>;
    /// Lists up to `limit` of an account's tests with ids below `before` (0: from the newest),
    /// newest first.
    async fn list_tests(
        &self,
        account: AccountId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<StoredTest>>;
    /// Tests still queued or running that were created before `before`: left over by a server
    /// that stopped without finishing them.
    async fn stale_tests(&self, before: Micros) -> Result<Vec<StoredTest>>;

    /// Creates a connector.
    async fn create_connector(&self, spec: ConnectorSpec) -> Result<Connector>;
    /// Reads one connector.
    async fn get_connector(&self, id: ConnectorId) -> Result<Connector>;
    /// Lists up to `limit` connectors with ids above `after`, ordered by id.
    async fn list_connectors(&self, after: i64, limit: u32) -> Result<Vec<Connector>>;
    /// Applies `edit` to a connector whose version is `expected_version` (when given).
    async fn update_connector(
        &self,
        id: ConnectorId,
        expected_version: Option<i64>,
        edit: ConnectorEdit<'_>,
    ) -> Result<Connector>;
    /// Deletes a connector; refused while accounts use it.
    async fn delete_connector(&self, id: ConnectorId, expected_version: Option<i64>) -> Result<()>;
    /// Stores the hash of a new enrollment token.
    async fn create_enrollment_token(
        &self,
        connector: ConnectorId,
        token_hash: &str,
        expire_time: Micros,
    ) -> Result<()>;
    /// Uses up an enrollment token and records a new agent, in one transaction; a token that
    /// is unknown, used or expired gives `Unauthenticated`.
    async fn enroll_agent(
        &self,
        token_hash: &str,
        hostname: &str,
        version: &str,
    ) -> Result<AgentRecord>;
    /// Records the certificate an agent now authenticates with.
    async fn set_agent_certificate(
        &self,
        agent: AgentName,
        fingerprint: &str,
        not_after: Micros,
    ) -> Result<()>;
    /// The agent whose certificate has this SHA-256 fingerprint.
    async fn agent_by_fingerprint(&self, fingerprint: &str) -> Result<Option<AgentRecord>>;
    /// A connector's agents, ordered by id.
    async fn list_agents(&self, connector: ConnectorId) -> Result<Vec<AgentRecord>>;
    /// Revokes an agent.
    async fn revoke_agent(&self, agent: AgentName) -> Result<AgentRecord>;
    /// The ids of every revoked agent.
    async fn revoked_agent_ids(&self) -> Result<Vec<i64>>;
    /// Records that an agent was heard from.
    async fn touch_agent(&self, agent: AgentName, hostname: &str, version: &str) -> Result<()>;
    /// Creates an API token with the keyed hash of its secret.
    async fn create_token(
        &self,
        display_name: &str,
        role: Role,
        secret_hash: &str,
        expire_time: Option<Micros>,
    ) -> Result<TokenRecord>;
    /// A token and its secret's hash, for authentication.
    async fn token_for_auth(&self, id: i64) -> Result<Option<(TokenRecord, String)>>;
    /// Lists up to `limit` tokens with ids above `after`.
    async fn list_tokens(&self, after: i64, limit: u32) -> Result<Vec<TokenRecord>>;
    /// Revokes a token.
    async fn revoke_token(&self, id: i64) -> Result<TokenRecord>;
    /// Records that a token was used.
    async fn touch_token(&self, id: i64) -> Result<()>;
    /// How many tokens exist (revoked ones too).
    async fn token_count(&self) -> Result<i64>;
    /// Records a refused call in the audit log.
    async fn record_denied(&self, ctx: &crate::audit::AuditContext, reason: &str) -> Result<()>;
    /// Audit events matching `filter` with ids below `before` (0: from the newest), newest first.
    async fn list_audit_events(
        &self,
        filter: &crate::audit::AuditFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEvent>>;
    /// Audit events with ids above `after`, oldest first (for the export sink).
    async fn audit_events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEvent>>;
    /// A value of the installation's metadata.
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores a metadata value unless one exists (the first writer wins among replicas).
    async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<()>;

    /// The sealed key check, if the database has one.
    async fn key_check(&self) -> Result<Option<Sealed>>;
    /// Stores the key check (first start only).
    async fn set_key_check(&self, check: &Sealed) -> Result<()>;
}

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite:PATH`, `sqlite://PATH`, `postgres://…` or `postgresql://…`.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err("sqlite URL names no file; use sqlite:///path/to/mailplane.db".into());
            }
            Ok(Self::Sqlite(path.into()))
        } else {
            Err(format!(
                "unsupported database URL {:?}: use postgres://user@host/db or sqlite:///path",
                redact_url(url)
            ))
        }
    }
}

/// A URL with any password replaced, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:<redacted>@{host}");
    }
    url.to_owned()
}

/// Opens (creating and migrating as needed) the database that `url` names.
pub async fn open(url: &DatabaseUrl) -> std::result::Result<Arc<dyn Store>, sqlx::Error> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PgStore::open(url).await?),
    })
}

/// Opens the default SQLite database in `data_dir`.
pub fn default_sqlite(data_dir: &Path) -> DatabaseUrl {
    DatabaseUrl::Sqlite(data_dir.join("mailplane.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_redacts() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        let err = DatabaseUrl::parse("mysql://u:hunter2@h/db").unwrap_err();
        assert!(!err.contains("hunter2"));
        assert_eq!(
            redact_url("postgres://u:pw@h/db"),
            "postgres://u:<redacted>@h/db"
        );
    }
}
