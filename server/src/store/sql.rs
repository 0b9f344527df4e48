//! The SQL that both backends run, written once.
//!
//! Both SQLite and PostgreSQL accept `$N` placeholders, `RETURNING`, partial unique indexes and
//! `LIKE … ESCAPE`, so one text serves both. The `sql_store!` macro stamps the same
//! implementation onto each backend's connection types; only how a write transaction begins
//! (and how writers are serialised) differs, in `sqlite.rs` and `postgres.rs`.

use crate::domain::AccountFilter;
use crate::domain::account::StatusFilter;
use crate::error::Error;
use std::sync::LazyLock;

/// The account columns that hold its writable fields, in bind order.
pub(super) const SPEC_COLUMNS: [&str; 25] = [
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
];

/// Every account column, as read back.
pub(super) static ACCOUNT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, {}, version, create_time, update_time",
        SPEC_COLUMNS.join(", ")
    )
});

/// Inserts an account: the spec, then version, create time and update time.
pub(super) static INSERT_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    let n = SPEC_COLUMNS.len();
    let values: Vec<String> = (1..=n + 3).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO accounts ({}, version, create_time, update_time) VALUES ({}) RETURNING id",
        SPEC_COLUMNS.join(", "),
        values.join(", ")
    )
});

/// Updates an account: the spec, then version, update time, and the id.
pub(super) static UPDATE_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    let n = SPEC_COLUMNS.len();
    let sets: Vec<String> = SPEC_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    format!(
        "UPDATE accounts SET {}, version = ${}, update_time = ${} WHERE id = ${}",
        sets.join(", "),
        n + 1,
        n + 2,
        n + 3
    )
});

/// Selects one account by id.
pub(super) static SELECT_ACCOUNT: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM accounts WHERE id = $1", *ACCOUNT_COLUMNS));

/// Clears the default flag on whichever account holds it.
pub(super) const CLEAR_DEFAULT: &str = "UPDATE accounts SET is_default = FALSE, \
     version = version + 1, update_time = $1 WHERE is_default AND id <> $2";

/// The credential columns, as read back (never the secret).
pub(super) const CREDENTIAL_COLUMNS: &str =
    "id, display_name, username, kind, secret_update_time, version, create_time, update_time";

/// A value to bind to a dynamically built query.
#[derive(Debug, Clone)]
pub(super) enum Bind {
    /// An integer.
    Int(i64),
    /// A text.
    Text(String),
}

/// A `LIKE` pattern matching `needle` as a case-insensitive substring, with the pattern
/// characters in `needle` escaped so that a search for "50%" means just that.
pub(super) fn like_contains(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A `LIKE` pattern matching `needle` as a substring, case and all.
pub(super) fn like_contains_exact_case(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The query for a page of accounts after id `after`, and its binds.
pub(super) fn list_accounts_query(
    filter: &AccountFilter,
    after: i64,
    limit: u32,
) -> (String, Vec<Bind>) {
    let mut sql = format!("SELECT {} FROM accounts WHERE id > $1", *ACCOUNT_COLUMNS);
    let mut binds = vec![Bind::Int(after)];
    let mut push = |sql: &mut String, clause: &str, bind: Bind| {
        binds.push(bind);
        sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
    };
    if let Some(id) = filter.id {
        push(&mut sql, " AND id = $?", Bind::Int(id));
    }
    if let Some(name) = &filter.account_name {
        push(
            &mut sql,
            " AND name_key LIKE $? ESCAPE '\\'",
            Bind::Text(like_contains(name)),
        );
    }
    for (column, value) in [
        ("sender_email", &filter.sender_email),
        ("reply_to_email", &filter.reply_to_email),
        ("return_path_email", &filter.return_path_email),
        ("confirmation_email", &filter.confirmation_email),
    ] {
        if let Some(value) = value {
            push(
                &mut sql,
                &format!(" AND lower({column}) LIKE $? ESCAPE '\\'"),
                Bind::Text(like_contains(value)),
            );
        }
    }
    match filter.status {
        StatusFilter::Any => {}
        StatusFilter::Enabled => sql.push_str(" AND enabled"),
        StatusFilter::Disabled => sql.push_str(" AND NOT enabled"),
    }
    push(
        &mut sql,
        " ORDER BY id LIMIT $?",
        Bind::Int(i64::from(limit)),
    );
    (sql, binds)
}

/// Maps a failed write to the error a caller can act on: a unique violation on the name is
/// `AlreadyExists`, one on the default flag means a concurrent change won (`Aborted`), and a
/// foreign-key violation means a referenced credential vanished (`FailedPrecondition`).
pub(super) fn write_error(err: sqlx::Error, account_name: Option<&str>) -> Error {
    if let sqlx::Error::Database(db) = &err {
        let what = format!("{} {}", db.constraint().unwrap_or(""), db.message());
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation if what.contains("name_key") => {
                return Error::AlreadyExists(format!(
                    "an account named {:?} already exists (names are compared \
                     case-insensitively); choose another account_name",
                    account_name.unwrap_or("")
                ));
            }
            sqlx::error::ErrorKind::UniqueViolation if what.contains("default") => {
                return Error::Aborted(
                    "another request changed the default account at the same time; retry".into(),
                );
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return Error::FailedPrecondition(
                    "a referenced credential does not exist (it may just have been deleted)".into(),
                );
            }
            _ => {}
        }
    }
    Error::Database(err)
}

/// `Aborted` when the caller's etag names another version than the current one.
pub(super) fn check_version(name: &str, expected: Option<i64>, current: i64) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != current => Err(Error::Aborted(format!(
            "{name} was changed by someone else (your etag {} is stale, the current one is {}); \
             read it again and reapply your change",
            crate::domain::etag(expected),
            crate::domain::etag(current)
        ))),
        _ => Ok(()),
    }
}

/// `FailedPrecondition` naming the accounts that still use `name`.
pub(super) fn in_use(name: &str, users: &[(i64, String)], advice: &str) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = users
        .iter()
        .map(|(id, account)| format!("{} ({account})", crate::domain::AccountId(*id)))
        .collect();
    Err(Error::FailedPrecondition(format!(
        "{name} is used by {}; {advice}",
        names.join(", ")
    )))
}

/// A decoding error for a stored value this version does not understand.
pub(super) fn bad_value(column: &str, value: &str) -> Error {
    Error::Database(sqlx::Error::Decode(
        format!("unexpected value {value:?} in column {column}").into(),
    ))
}

/// The store implementation shared by both backends. `$store` must have a `pool` field and a
/// `begin_write` method returning a guard with a `tx` field.
macro_rules! sql_store {
    ($store:ty, $db:ty, $row:ty) => {
        use $crate::crypto::{Cipher, Sealed};
        use $crate::domain::account::name_key;
        use $crate::domain::{
            mechanism_for, now_micros, Account, AccountFilter, AccountId, AccountSpec, AuthMechanism,
            AgentName, AgentRecord, Connector, ConnectorId, ConnectorSpec, Credential,
            CredentialId, CredentialKind, CredentialSpec, Micros, Role, Security, StoredTest,
            TestName, TestState, TokenRecord,
        };
        use $crate::error::{Error, Result};
        use $crate::secret::Secret;
        use $crate::store::sql::{self, Bind};
        use $crate::store::{AccountEdit, ConnectorEdit, CredentialEdit, Store};
        use sqlx::Row as _;

        type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>;
        type Conn = <$db as sqlx::Database>::Connection;

        fn account_from_row(row: &$row) -> Result<Account> {
            let text = |c: &str| -> Result<String> { Ok(row.try_get::<String, _>(c)?) };
            let security = text("security")?;
            let mechanism: Option<String> = row.try_get("auth_mechanism")?;
            let port: i64 = row.try_get("port")?;
            let limit: i64 = row.try_get("attachment_size_limit_bytes")?;
            Ok(Account {
                id: AccountId(row.try_get("id")?),
                spec: AccountSpec {
                    account_name: text("account_name")?,
                    enabled: row.try_get("enabled")?,
                    sender_email: text("sender_email")?,
                    reply_to_email: row.try_get("reply_to_email")?,
                    return_path_email: row.try_get("return_path_email")?,
                    confirmation_email: row.try_get("confirmation_email")?,
                    is_default: row.try_get("is_default")?,
                    send_read_confirmation: row.try_get("send_read_confirmation")?,
                    force_settings: row.try_get("force_settings")?,
                    enable_footer: row.try_get("enable_footer")?,
                    footer_text: text("footer_text")?,
                    host: text("host")?,
                    port: u16::try_from(port)
                        .map_err(|_| sql::bad_value("port", &port.to_string()))?,
                    security: Security::parse(&security)
                        .ok_or_else(|| sql::bad_value("security", &security))?,
                    ignore_certificate_errors: row.try_get("ignore_certificate_errors")?,
                    use_authentication: row.try_get("use_authentication")?,
                    auth_mechanism: match mechanism {
                        None => None,
                        Some(m) => Some(
                            AuthMechanism::parse(&m)
                                .ok_or_else(|| sql::bad_value("auth_mechanism", &m))?,
                        ),
                    },
                    credential: row
                        .try_get::<Option<i64>, _>("credential_id")?
                        .map(CredentialId),
                    use_network_connector: row.try_get("use_network_connector")?,
                    network_connector: row.try_get("network_connector_id")?,
                    helo_name: row.try_get("helo_name")?,
                    charset: text("charset")?,
                    plain_text_only: row.try_get("plain_text_only")?,
                    attachment_size_limit_bytes: u64::try_from(limit).unwrap_or(0),
                },
                version: row.try_get("version")?,
                create_time: row.try_get("create_time")?,
                update_time: row.try_get("update_time")?,
            })
        }

        fn credential_from_row(row: &$row) -> Result<Credential> {
            let kind: String = row.try_get("kind")?;
            let secret_update_time: Option<i64> = row.try_get("secret_update_time")?;
            Ok(Credential {
                id: CredentialId(row.try_get("id")?),
                spec: CredentialSpec {
                    display_name: row.try_get("display_name")?,
                    username: row.try_get("username")?,
                    kind: CredentialKind::parse(&kind)
                        .ok_or_else(|| sql::bad_value("kind", &kind))?,
                },
                has_secret: secret_update_time.is_some(),
                secret_update_time,
                version: row.try_get("version")?,
                create_time: row.try_get("create_time")?,
                update_time: row.try_get("update_time")?,
            })
        }

        /// Binds an account's writable fields in `SPEC_COLUMNS` order.
        fn bind_spec<'q>(q: Query<'q>, s: &'q AccountSpec) -> Query<'q> {
            q.bind(&s.account_name)
                .bind(name_key(&s.account_name))
                .bind(s.enabled)
                .bind(&s.sender_email)
                .bind(&s.reply_to_email)
                .bind(&s.return_path_email)
                .bind(&s.confirmation_email)
                .bind(s.is_default)
                .bind(s.send_read_confirmation)
                .bind(s.force_settings)
                .bind(s.enable_footer)
                .bind(&s.footer_text)
                .bind(&s.host)
                .bind(i64::from(s.port))
                .bind(s.security.as_str().to_ascii_lowercase())
                .bind(s.ignore_certificate_errors)
                .bind(s.use_authentication)
                .bind(s.auth_mechanism.map(AuthMechanism::as_str))
                .bind(s.credential.map(|c| c.0))
                .bind(s.use_network_connector)
                .bind(s.network_connector)
                .bind(&s.helo_name)
                .bind(&s.charset)
                .bind(s.plain_text_only)
                .bind(i64::try_from(s.attachment_size_limit_bytes).unwrap_or(i64::MAX))
        }

        async fn fetch_account(conn: &mut Conn, id: AccountId) -> Result<Account> {
            let row = sqlx::query(&sql::SELECT_ACCOUNT)
                .bind(id.0)
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => account_from_row(&row),
                None => Err(Error::NotFound(id.to_string())),
            }
        }

        async fn fetch_credential(conn: &mut Conn, id: CredentialId) -> Result<Credential> {
            let row = sqlx::query(&format!(
                "SELECT {} FROM credentials WHERE id = $1",
                sql::CREDENTIAL_COLUMNS
            ))
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some(row) => credential_from_row(&row),
                None => Err(Error::NotFound(id.to_string())),
            }
        }

        /// Checks that the credential an account names exists and suits its mechanism, and
        /// fills in the mechanism from the credential's kind when none was chosen.
        async fn check_account_credential(conn: &mut Conn, spec: &mut AccountSpec) -> Result<()> {
            let Some(id) = spec.credential else {
                return Ok(());
            };
            match fetch_credential(conn, id).await {
                Ok(c) => {
                    if spec.auth_mechanism.is_none() {
                        spec.auth_mechanism = Some(mechanism_for(c.spec.kind));
                    }
                    spec.check_credential(c.spec.kind)
                }
                Err(Error::NotFound(_)) => Err(Error::FailedPrecondition(format!(
                    "credential {id} does not exist; create it first (mailplane credentials \
                     create) or name an existing one"
                ))),
                Err(e) => Err(e),
            }
        }

        /// Checks that the connector an account names exists.
        async fn check_account_connector(conn: &mut Conn, spec: &AccountSpec) -> Result<()> {
            let Some(id) = spec.network_connector.map(ConnectorId) else {
                return Ok(());
            };
            match fetch_connector(conn, id).await {
                Ok(_) => Ok(()),
                Err(Error::NotFound(_)) => Err(Error::FailedPrecondition(format!(
                    "network connector {id} does not exist; create it first (mailplane \
                     connectors create) or name an existing one"
                ))),
                Err(e) => Err(e),
            }
        }

        fn connector_from_row(row: &$row) -> Result<Connector> {
            Ok(Connector {
                id: ConnectorId(row.try_get("id")?),
                spec: ConnectorSpec {
                    display_name: row.try_get("display_name")?,
                    description: row.try_get("description")?,
                },
                version: row.try_get("version")?,
                create_time: row.try_get("create_time")?,
                update_time: row.try_get("update_time")?,
            })
        }

        fn agent_from_row(row: &$row) -> Result<AgentRecord> {
            Ok(AgentRecord {
                name: AgentName {
                    connector: ConnectorId(row.try_get("connector_id")?),
                    id: row.try_get("id")?,
                },
                hostname: row.try_get("hostname")?,
                version: row.try_get("version")?,
                cert_not_after: row.try_get("cert_not_after")?,
                revoked: row.try_get("revoked")?,
                enroll_time: row.try_get("enroll_time")?,
                last_heartbeat_time: row.try_get("last_heartbeat_time")?,
            })
        }

        const TOKEN_COLUMNS: &str = "id, display_name, role, expire_time, revoked, \
             create_time, last_use_time";

        fn token_from_row(row: &$row) -> Result<TokenRecord> {
            let role: String = row.try_get("role")?;
            Ok(TokenRecord {
                id: row.try_get("id")?,
                display_name: row.try_get("display_name")?,
                role: Role::parse(&role).ok_or_else(|| sql::bad_value("role", &role))?,
                expire_time: row.try_get("expire_time")?,
                revoked: row.try_get("revoked")?,
                create_time: row.try_get("create_time")?,
                last_use_time: row.try_get("last_use_time")?,
            })
        }

        const AGENT_COLUMNS: &str = "id, connector_id, hostname, version, cert_not_after, \
             revoked, enroll_time, last_heartbeat_time";

        async fn fetch_connector(conn: &mut Conn, id: ConnectorId) -> Result<Connector> {
            let row = sqlx::query(
                "SELECT id, display_name, description, version, create_time, update_time \
                 FROM connectors WHERE id = $1",
            )
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some(row) => connector_from_row(&row),
                None => Err(Error::NotFound(id.to_string())),
            }
        }

        fn connector_write_error(err: sqlx::Error, name: &str) -> Error {
            if let sqlx::Error::Database(db) = &err
                && db.kind() == sqlx::error::ErrorKind::UniqueViolation
            {
                return Error::AlreadyExists(format!(
                    "a connector named {name:?} already exists (names are compared \
                     case-insensitively); choose another display_name"
                ));
            }
            Error::Database(err)
        }

        /// Records an audit event for the current call, in the caller's transaction.
        async fn record(conn: &mut Conn, resource: &str, diff: serde_json::Value) -> Result<()> {
            let ctx = $crate::audit::current();
            sqlx::query(
                "INSERT INTO audit_events (time, actor, peer, rpc, resource, outcome, diff) \
                 VALUES ($1, $2, $3, $4, $5, 'ok', $6)",
            )
            .bind(now_micros())
            .bind(&ctx.actor)
            .bind(&ctx.peer)
            .bind(&ctx.rpc)
            .bind(resource)
            .bind(diff.to_string())
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        fn account_json(a: &Account) -> serde_json::Value {
            $crate::render::account_json(&a.into())
        }

        fn credential_json(c: &Credential) -> serde_json::Value {
            $crate::render::credential_json(&c.into())
        }

        fn connector_json(c: &Connector) -> serde_json::Value {
            serde_json::json!({
                "display_name": c.spec.display_name,
                "description": c.spec.description,
            })
        }

        fn event_from_row(row: &$row) -> Result<$crate::audit::AuditEvent> {
            Ok($crate::audit::AuditEvent {
                id: row.try_get("id")?,
                time: row.try_get("time")?,
                actor: row.try_get("actor")?,
                peer: row.try_get("peer")?,
                rpc: row.try_get("rpc")?,
                resource: row.try_get("resource")?,
                outcome: row.try_get("outcome")?,
                diff: row.try_get("diff")?,
            })
        }

        async fn account_count(conn: &mut Conn) -> Result<i64> {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
                .fetch_one(&mut *conn)
                .await?)
        }

        async fn seal_secret(
            conn: &mut Conn,
            id: CredentialId,
            secret: &Secret,
            cipher: &Cipher,
            now: i64,
        ) -> Result<()> {
            let sealed = cipher.seal(id.to_string().as_bytes(), secret.expose().as_bytes())?;
            sqlx::query(
                "UPDATE credentials SET secret_nonce = $1, secret_ciphertext = $2, \
                 secret_update_time = $3 WHERE id = $4",
            )
            .bind(sealed.nonce)
            .bind(sealed.ciphertext)
            .bind(now)
            .bind(id.0)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        fn test_from_row(row: &$row) -> Result<StoredTest> {
            let state: String = row.try_get("state")?;
            Ok(StoredTest {
                name: TestName {
                    account: AccountId(row.try_get("account_id")?),
                    id: row.try_get("id")?,
                },
                state: TestState::parse(&state).ok_or_else(|| sql::bad_value("state", &state))?,
                payload: row.try_get("payload")?,
                create_time: row.try_get("create_time")?,
            })
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn create_account(&self, mut spec: AccountSpec) -> Result<Account> {
                let mut w = self.begin_write().await?;
                check_account_credential(&mut w.tx, &mut spec).await?;
                check_account_connector(&mut w.tx, &spec).await?;
                if account_count(&mut w.tx).await? == 0 {
                    if !spec.enabled {
                        return Err(Error::FailedPrecondition(
                            "the first account becomes the default account, and a default \
                             account must be enabled; create it enabled"
                                .into(),
                        ));
                    }
                    spec.is_default = true;
                }
                let now = now_micros();
                if spec.is_default {
                    sqlx::query(sql::CLEAR_DEFAULT)
                        .bind(now)
                        .bind(-1_i64)
                        .execute(&mut *w.tx)
                        .await?;
                }
                let id: i64 = bind_spec(sqlx::query(&sql::INSERT_ACCOUNT), &spec)
                    .bind(1_i64)
                    .bind(now)
                    .bind(now)
                    .fetch_one(&mut *w.tx)
                    .await
                    .map_err(|e| sql::write_error(e, Some(&spec.account_name)))?
                    .try_get("id")?;
                let account = Account {
                    id: AccountId(id),
                    spec,
                    version: 1,
                    create_time: now,
                    update_time: now,
                };
                let diff = $crate::audit::diff(None, Some(&account_json(&account)));
                record(&mut w.tx, &account.id.to_string(), diff).await?;
                w.tx.commit().await?;
                Ok(account)
            }

            async fn get_account(&self, id: AccountId) -> Result<Account> {
                let mut conn = self.pool.acquire().await?;
                fetch_account(&mut conn, id).await
            }

            async fn list_accounts(
                &self,
                filter: &AccountFilter,
                after: i64,
                limit: u32,
            ) -> Result<Vec<Account>> {
                let (text, binds) = sql::list_accounts_query(filter, after, limit);
                let mut q = sqlx::query(&text);
                for b in binds {
                    q = match b {
                        Bind::Int(v) => q.bind(v),
                        Bind::Text(v) => q.bind(v),
                    };
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.iter().map(account_from_row).collect()
            }

            async fn update_account(
                &self,
                id: AccountId,
                expected_version: Option<i64>,
                edit: AccountEdit<'_>,
            ) -> Result<Account> {
                let mut w = self.begin_write().await?;
                let current = fetch_account(&mut w.tx, id).await?;
                sql::check_version(&id.to_string(), expected_version, current.version)?;
                let mut spec = current.spec.clone();
                edit(&mut spec)?;
                if current.spec.is_default && !spec.is_default {
                    return Err(Error::FailedPrecondition(format!(
                        "{id} is the default account; make another account the default \
                         (SetDefaultAccount) instead of clearing is_default"
                    )));
                }
                if current.spec.is_default && !spec.enabled {
                    return Err(Error::FailedPrecondition(format!(
                        "{id} is the default account and must stay enabled; make another \
                         account the default first"
                    )));
                }
                spec.check()?;
                check_account_credential(&mut w.tx, &mut spec).await?;
                check_account_connector(&mut w.tx, &spec).await?;
                let now = now_micros();
                if spec.is_default && !current.spec.is_default {
                    sqlx::query(sql::CLEAR_DEFAULT)
                        .bind(now)
                        .bind(id.0)
                        .execute(&mut *w.tx)
                        .await?;
                }
                let version = current.version + 1;
                bind_spec(sqlx::query(&sql::UPDATE_ACCOUNT), &spec)
                    .bind(version)
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *w.tx)
                    .await
                    .map_err(|e| sql::write_error(e, Some(&spec.account_name)))?;
                let account = Account {
                    id,
                    spec,
                    version,
                    create_time: current.create_time,
                    update_time: now,
                };
                let diff = $crate::audit::diff(Some(&account_json(&current)), Some(&account_json(&account)));
                record(&mut w.tx, &id.to_string(), diff).await?;
                w.tx.commit().await?;
                Ok(account)
            }

            async fn delete_account(
                &self,
                id: AccountId,
                expected_version: Option<i64>,
            ) -> Result<()> {
                let mut w = self.begin_write().await?;
                let current = fetch_account(&mut w.tx, id).await?;
                sql::check_version(&id.to_string(), expected_version, current.version)?;
                if current.spec.is_default && account_count(&mut w.tx).await? > 1 {
                    return Err(Error::FailedPrecondition(format!(
                        "{id} is the default account and other accounts exist; make another \
                         account the default (mailplane accounts set-default) before deleting it"
                    )));
                }
                sqlx::query("DELETE FROM accounts WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *w.tx)
                    .await?;
                record(&mut w.tx, &id.to_string(), $crate::audit::diff(Some(&account_json(&current)), None)).await?;
                w.tx.commit().await?;
                Ok(())
            }

            async fn set_default_account(&self, id: AccountId) -> Result<Account> {
                let mut w = self.begin_write().await?;
                let current = fetch_account(&mut w.tx, id).await?;
                if current.spec.is_default {
                    return Ok(current);
                }
                if !current.spec.enabled {
                    return Err(Error::FailedPrecondition(format!(
                        "{id} is disabled, and a default account must be enabled; enable it \
                         first"
                    )));
                }
                let now = now_micros();
                sqlx::query(sql::CLEAR_DEFAULT)
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *w.tx)
                    .await?;
                sqlx::query(
                    "UPDATE accounts SET is_default = TRUE, version = version + 1, \
                     update_time = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(id.0)
                .execute(&mut *w.tx)
                .await
                .map_err(|e| sql::write_error(e, None))?;
                let account = fetch_account(&mut w.tx, id).await?;
                let diff = $crate::audit::diff(Some(&account_json(&current)), Some(&account_json(&account)));
                record(&mut w.tx, &id.to_string(), diff).await?;
                w.tx.commit().await?;
                Ok(account)
            }

            async fn create_credential(
                &self,
                spec: CredentialSpec,
                secret: &Secret,
                cipher: &Cipher,
            ) -> Result<Credential> {
                let mut w = self.begin_write().await?;
                let now = now_micros();
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO credentials (display_name, username, kind, version, \
                     create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4) RETURNING id",
                )
                .bind(&spec.display_name)
                .bind(&spec.username)
                .bind(spec.kind.as_str())
                .bind(now)
                .fetch_one(&mut *w.tx)
                .await?;
                let id = CredentialId(id);
                seal_secret(&mut w.tx, id, secret, cipher, now).await?;
                let created = fetch_credential(&mut w.tx, id).await?;
                let mut after = credential_json(&created);
                after["secret"] = serde_json::Value::from($crate::audit::REDACTED);
                record(&mut w.tx, &id.to_string(), $crate::audit::diff(None, Some(&after))).await?;
                w.tx.commit().await?;
                Ok(created)
            }

            async fn get_credential(&self, id: CredentialId) -> Result<Credential> {
                let mut conn = self.pool.acquire().await?;
                fetch_credential(&mut conn, id).await
            }

            async fn list_credentials(&self, after: i64, limit: u32) -> Result<Vec<Credential>> {
                let rows = sqlx::query(&format!(
                    "SELECT {} FROM credentials WHERE id > $1 ORDER BY id LIMIT $2",
                    sql::CREDENTIAL_COLUMNS
                ))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(credential_from_row).collect()
            }

            async fn update_credential(
                &self,
                id: CredentialId,
                expected_version: Option<i64>,
                edit: CredentialEdit<'_>,
                new_secret: Option<&Secret>,
                cipher: &Cipher,
            ) -> Result<Credential> {
                let mut w = self.begin_write().await?;
                let current = fetch_credential(&mut w.tx, id).await?;
                sql::check_version(&id.to_string(), expected_version, current.version)?;
                let mut spec = current.spec.clone();
                edit(&mut spec)?;
                if spec.kind != current.spec.kind {
                    // Accounts that use the credential must still fit its new kind.
                    let rows = sqlx::query(&format!(
                        "SELECT {} FROM accounts WHERE credential_id = $1 ORDER BY id",
                        *sql::ACCOUNT_COLUMNS
                    ))
                    .bind(id.0)
                    .fetch_all(&mut *w.tx)
                    .await?;
                    for row in &rows {
                        let account = account_from_row(row)?;
                        account.spec.check_credential(spec.kind).map_err(|_| {
                            Error::FailedPrecondition(format!(
                                "{} uses {id} with auth_mechanism {}, which does not fit kind \
                                 {}; change the account first",
                                account.id,
                                account.spec.auth_mechanism.map_or("", AuthMechanism::as_str),
                                spec.kind.as_str()
                            ))
                        })?;
                    }
                }
                let now = now_micros();
                sqlx::query(
                    "UPDATE credentials SET display_name = $1, username = $2, kind = $3, \
                     version = version + 1, update_time = $4 WHERE id = $5",
                )
                .bind(&spec.display_name)
                .bind(&spec.username)
                .bind(spec.kind.as_str())
                .bind(now)
                .bind(id.0)
                .execute(&mut *w.tx)
                .await?;
                if let Some(secret) = new_secret {
                    seal_secret(&mut w.tx, id, secret, cipher, now).await?;
                }
                let updated = fetch_credential(&mut w.tx, id).await?;
                let mut diff = $crate::audit::diff(Some(&credential_json(&current)), Some(&credential_json(&updated)));
                if new_secret.is_some() {
                    diff["secret"] = serde_json::json!({
                        "before": $crate::audit::REDACTED,
                        "after": $crate::audit::REDACTED,
                    });
                }
                record(&mut w.tx, &id.to_string(), diff).await?;
                w.tx.commit().await?;
                Ok(updated)
            }

            async fn delete_credential(
                &self,
                id: CredentialId,
                expected_version: Option<i64>,
            ) -> Result<()> {
                let mut w = self.begin_write().await?;
                let current = fetch_credential(&mut w.tx, id).await?;
                sql::check_version(&id.to_string(), expected_version, current.version)?;
                let users: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, account_name FROM accounts WHERE credential_id = $1 ORDER BY id",
                )
                .bind(id.0)
                .fetch_all(&mut *w.tx)
                .await?;
                sql::in_use(
                    &id.to_string(),
                    &users,
                    "point those accounts at another credential first",
                )?;
                sqlx::query("DELETE FROM credentials WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *w.tx)
                    .await
                    .map_err(|e| sql::write_error(e, None))?;
                record(&mut w.tx, &id.to_string(), $crate::audit::diff(Some(&credential_json(&current)), None)).await?;
                w.tx.commit().await?;
                Ok(())
            }

            async fn credential_secret(&self, id: CredentialId, cipher: &Cipher) -> Result<Secret> {
                let row: Option<(Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
                    "SELECT secret_nonce, secret_ciphertext FROM credentials WHERE id = $1",
                )
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    None => Err(Error::NotFound(id.to_string())),
                    Some((Some(nonce), Some(ciphertext))) => {
                        let plain = cipher
                            .open(id.to_string().as_bytes(), &Sealed { nonce, ciphertext })?;
                        String::from_utf8(plain)
                            .map(Secret::new)
                            .map_err(|_| Error::Crypto("stored secret is not UTF-8".into()))
                    }
                    Some(_) => Err(Error::FailedPrecondition(format!("{id} has no secret"))),
                }
            }

            async fn create_test(
                &self,
                account: AccountId,
                state: TestState,
                payload: &[u8],
            ) -> Result<TestName> {
                let now = now_micros();
                let mut w = self.begin_write().await?;
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO smtp_tests (account_id, state, payload, create_time, update_time) \
                     SELECT id, $2, $3, $4, $4 FROM accounts WHERE id = $1 RETURNING id",
                )
                .bind(account.0)
                .bind(state.as_str())
                .bind(payload)
                .bind(now)
                .fetch_optional(&mut *w.tx)
                .await?;
                let Some(id) = id else {
                    return Err(Error::NotFound(account.to_string()));
                };
                let name = TestName { account, id };
                let test = <mailplane_proto::v1::SmtpTest as prost::Message>::decode(payload)
                    .unwrap_or_default();
                let started = serde_json::json!({
                    "account": account.to_string(),
                    "to": test.to,
                    "subject": test.subject,
                    "stop_after": test.stop_after,
                });
                record(&mut w.tx, &name.to_string(), $crate::audit::diff(None, Some(&started))).await?;
                w.tx.commit().await?;
                Ok(name)
            }

            async fn update_test(
                &self,
                name: TestName,
                state: TestState,
                payload: &[u8],
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE smtp_tests SET state = $1, payload = $2, update_time = $3 \
                     WHERE id = $4 AND account_id = $5",
                )
                .bind(state.as_str())
                .bind(payload)
                .bind(now_micros())
                .bind(name.id)
                .bind(name.account.0)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_test(&self, name: TestName) -> Result<StoredTest> {
                let row = sqlx::query(
                    "SELECT id, account_id, state, payload, create_time FROM smtp_tests \
                     WHERE id = $1 AND account_id = $2",
                )
                .bind(name.id)
                .bind(name.account.0)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => test_from_row(&row),
                    None => Err(Error::NotFound(name.to_string())),
                }
            }

            async fn list_tests(
                &self,
                account: AccountId,
                before: i64,
                limit: u32,
            ) -> Result<Vec<StoredTest>> {
                let rows = sqlx::query(
                    "SELECT id, account_id, state, payload, create_time FROM smtp_tests \
                     WHERE account_id = $1 AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3",
                )
                .bind(account.0)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(test_from_row).collect()
            }

            async fn stale_tests(&self, before: Micros) -> Result<Vec<StoredTest>> {
                let rows = sqlx::query(
                    "SELECT id, account_id, state, payload, create_time FROM smtp_tests \
                     WHERE state IN ('queued', 'running') AND create_time < $1 ORDER BY id",
                )
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(test_from_row).collect()
            }

            async fn create_connector(&self, spec: ConnectorSpec) -> Result<Connector> {
                let now = now_micros();
                let mut w = self.begin_write().await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO connectors (display_name, name_key, description, version, \
                     create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4) RETURNING id",
                )
                .bind(&spec.display_name)
                .bind(name_key(&spec.display_name))
                .bind(&spec.description)
                .bind(now)
                .fetch_one(&mut *w.tx)
                .await
                .map_err(|e| connector_write_error(e, &spec.display_name))?;
                let connector = Connector {
                    id: ConnectorId(id),
                    spec,
                    version: 1,
                    create_time: now,
                    update_time: now,
                };
                record(&mut w.tx, &connector.id.to_string(), $crate::audit::diff(None, Some(&connector_json(&connector)))).await?;
                w.tx.commit().await?;
                Ok(connector)
            }

            async fn get_connector(&self, id: ConnectorId) -> Result<Connector> {
                let mut conn = self.pool.acquire().await?;
                fetch_connector(&mut conn, id).await
            }

            async fn list_connectors(&self, after: i64, limit: u32) -> Result<Vec<Connector>> {
                let rows = sqlx::query(
                    "SELECT id, display_name, description, version, create_time, update_time \
                     FROM connectors WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(connector_from_row).collect()
            }

            async fn update_connector(
                &self,
                id: ConnectorId,
                expected_version: Option<i64>,
                edit: ConnectorEdit<'_>,
            ) -> Result<Connector> {
                let mut w = self.begin_write().await?;
                let current = fetch_connector(&mut w.tx, id).await?;
                sql::check_version(&id.to_string(), expected_version, current.version)?;
                let mut spec = current.spec.clone();
                edit(&mut spec)?;
                let now = now_micros();
                sqlx::query(
                    "UPDATE connectors SET display_name = $1, name_key = $2, description = $3, \
                     version = version + 1, update_time = $4 WHERE id = $5",
                )
                .bind(&spec.display_name)
                .bind(name_key(&spec.display_name))
                .bind(&spec.description)
                .bind(now)
                .bind(id.0)
                .execute(&mut *w.tx)
                .await
                .map_err(|e| connector_write_error(e, &spec.display_name))?;
                let connector = Connector { id, spec, version: current.version + 1, create_time: current.create_time, update_time: now };
                record(&mut w.tx, &id.to_string(), $crate::audit::diff(Some(&connector_json(&current)), Some(&connector_json(&connector)))).await?;
                w.tx.commit().await?;
                Ok(connector)
            }

            async fn delete_connector(
                &self,
                id: ConnectorId,
                expected_version: Option<i64>,
            ) -> Result<()> {
                let mut w = self.begin_write().await?;
                let current = fetch_connector(&mut w.tx, id).await?;
                sql::check_version(&id.to_string(), expected_version, current.version)?;
                let users: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, account_name FROM accounts WHERE network_connector_id = $1 \
                     ORDER BY id",
                )
                .bind(id.0)
                .fetch_all(&mut *w.tx)
                .await?;
                sql::in_use(&id.to_string(), &users, "point those accounts elsewhere first")?;
                sqlx::query("DELETE FROM connectors WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *w.tx)
                    .await?;
                record(&mut w.tx, &id.to_string(), $crate::audit::diff(Some(&connector_json(&current)), None)).await?;
                w.tx.commit().await?;
                Ok(())
            }

            async fn create_enrollment_token(
                &self,
                connector: ConnectorId,
                token_hash: &str,
                expire_time: Micros,
            ) -> Result<()> {
                let mut w = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO enrollment_tokens (connector_id, token_hash, expire_time, \
                     create_time) SELECT id, $2, $3, $4 FROM connectors WHERE id = $1",
                )
                .bind(connector.0)
                .bind(token_hash)
                .bind(expire_time)
                .bind(now_micros())
                .execute(&mut *w.tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(Error::NotFound(connector.to_string()));
                }
                let made = serde_json::json!({
                    "enrollment_token": $crate::audit::REDACTED,
                    "enrollment_token_expire_time": $crate::api::convert::timestamp(expire_time).to_string(),
                });
                record(&mut w.tx, &connector.to_string(), $crate::audit::diff(None, Some(&made))).await?;
                w.tx.commit().await?;
                Ok(())
            }

            async fn enroll_agent(
                &self,
                token_hash: &str,
                hostname: &str,
                version: &str,
            ) -> Result<AgentRecord> {
                let mut w = self.begin_write().await?;
                let now = now_micros();
                let row: Option<(i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT connector_id, expire_time, used_time FROM enrollment_tokens \
                     WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&mut *w.tx)
                .await?;
                let connector = match row {
                    None => {
                        return Err(Error::Unauthenticated(
                            "the enrollment token is not valid; create one with `mailplane \
                             connectors token CONNECTOR`"
                                .into(),
                        ));
                    }
                    Some((_, _, Some(_))) => {
                        return Err(Error::Unauthenticated(
                            "the enrollment token was already used (each token enrolls one \
                             agent); create a new one with `mailplane connectors token`"
                                .into(),
                        ));
                    }
                    Some((_, expire, None)) if expire <= now => {
                        return Err(Error::Unauthenticated(
                            "the enrollment token has expired; create a new one with \
                             `mailplane connectors token`"
                                .into(),
                        ));
                    }
                    Some((connector, _, None)) => connector,
                };
                sqlx::query("UPDATE enrollment_tokens SET used_time = $1 WHERE token_hash = $2")
                    .bind(now)
                    .bind(token_hash)
                    .execute(&mut *w.tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO agents (connector_id, hostname, version, enroll_time) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(connector)
                .bind(hostname)
                .bind(version)
                .bind(now)
                .fetch_one(&mut *w.tx)
                .await?;
                let name = AgentName { connector: ConnectorId(connector), id };
                let enrolled = serde_json::json!({ "hostname": hostname, "version": version });
                record(&mut w.tx, &name.to_string(), $crate::audit::diff(None, Some(&enrolled))).await?;
                w.tx.commit().await?;
                Ok(AgentRecord {
                    name: AgentName { connector: ConnectorId(connector), id },
                    hostname: hostname.to_owned(),
                    version: version.to_owned(),
                    cert_not_after: None,
                    revoked: false,
                    enroll_time: now,
                    last_heartbeat_time: None,
                })
            }

            async fn set_agent_certificate(
                &self,
                agent: AgentName,
                fingerprint: &str,
                not_after: Micros,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE agents SET cert_fingerprint = $1, cert_not_after = $2 \
                     WHERE id = $3 AND connector_id = $4",
                )
                .bind(fingerprint)
                .bind(not_after)
                .bind(agent.id)
                .bind(agent.connector.0)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn agent_by_fingerprint(&self, fingerprint: &str) -> Result<Option<AgentRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE cert_fingerprint = $1"
                ))
                .bind(fingerprint)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(agent_from_row).transpose()
            }

            async fn list_agents(&self, connector: ConnectorId) -> Result<Vec<AgentRecord>> {
                let rows = sqlx::query(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE connector_id = $1 ORDER BY id"
                ))
                .bind(connector.0)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(agent_from_row).collect()
            }

            async fn revoke_agent(&self, agent: AgentName) -> Result<AgentRecord> {
                let mut w = self.begin_write().await?;
                let row = sqlx::query(&format!(
                    "UPDATE agents SET revoked = TRUE WHERE id = $1 AND connector_id = $2 \
                     RETURNING {AGENT_COLUMNS}"
                ))
                .bind(agent.id)
                .bind(agent.connector.0)
                .fetch_optional(&mut *w.tx)
                .await?;
                let Some(row) = row else {
                    return Err(Error::NotFound(agent.to_string()));
                };
                let record_ = agent_from_row(&row)?;
                let diff = serde_json::json!({ "revoked": { "before": false, "after": true } });
                record(&mut w.tx, &agent.to_string(), diff).await?;
                w.tx.commit().await?;
                Ok(record_)
            }

            async fn revoked_agent_ids(&self) -> Result<Vec<i64>> {
                Ok(sqlx::query_scalar("SELECT id FROM agents WHERE revoked ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn touch_agent(&self, agent: AgentName, hostname: &str, version: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE agents SET last_heartbeat_time = $1, hostname = $2, version = $3 \
                     WHERE id = $4",
                )
                .bind(now_micros())
                .bind(hostname)
                .bind(version)
                .bind(agent.id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn create_token(
                &self,
                display_name: &str,
                role: Role,
                secret_hash: &str,
                expire_time: Option<Micros>,
            ) -> Result<TokenRecord> {
                let now = now_micros();
                let mut w = self.begin_write().await?;
                let row = sqlx::query(&format!(
                    "INSERT INTO api_tokens (display_name, name_key, role, secret_hash, \
                     expire_time, create_time) VALUES ($1, $2, $3, $4, $5, $6) \
                     RETURNING {TOKEN_COLUMNS}"
                ))
                .bind(display_name)
                .bind(name_key(display_name))
                .bind(role.as_str())
                .bind(secret_hash)
                .bind(expire_time)
                .bind(now)
                .fetch_one(&mut *w.tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db)
                        if db.kind() == sqlx::error::ErrorKind::UniqueViolation =>
                    {
                        Error::AlreadyExists(format!(
                            "a token named {display_name:?} already exists; choose another \
                             display_name"
                        ))
                    }
                    _ => Error::Database(e),
                })?;
                let token = token_from_row(&row)?;
                let made = serde_json::json!({
                    "display_name": token.display_name,
                    "role": token.role.as_str(),
                    "expire_time": token.expire_time,
                    "token": $crate::audit::REDACTED,
                });
                record(&mut w.tx, &format!("tokens/{}", token.id), $crate::audit::diff(None, Some(&made))).await?;
                w.tx.commit().await?;
                Ok(token)
            }

            async fn token_for_auth(&self, id: i64) -> Result<Option<(TokenRecord, String)>> {
                let row = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS}, secret_hash FROM api_tokens WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => Ok(Some((token_from_row(&row)?, row.try_get("secret_hash")?))),
                    None => Ok(None),
                }
            }

            async fn list_tokens(&self, after: i64, limit: u32) -> Result<Vec<TokenRecord>> {
                let rows = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn revoke_token(&self, id: i64) -> Result<TokenRecord> {
                let mut w = self.begin_write().await?;
                let row = sqlx::query(&format!(
                    "UPDATE api_tokens SET revoked = TRUE WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
                ))
                .bind(id)
                .fetch_optional(&mut *w.tx)
                .await?;
                let Some(row) = row else {
                    return Err(Error::NotFound(format!("tokens/{id}")));
                };
                let token = token_from_row(&row)?;
                let diff = serde_json::json!({ "revoked": { "before": false, "after": true } });
                record(&mut w.tx, &format!("tokens/{id}"), diff).await?;
                w.tx.commit().await?;
                Ok(token)
            }

            async fn touch_token(&self, id: i64) -> Result<()> {
                sqlx::query("UPDATE api_tokens SET last_use_time = $1 WHERE id = $2")
                    .bind(now_micros())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn token_count(&self) -> Result<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn record_denied(&self, ctx: &$crate::audit::AuditContext, reason: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO audit_events (time, actor, peer, rpc, resource, outcome, diff) \
                     VALUES ($1, $2, $3, $4, '', 'denied', $5)",
                )
                .bind(now_micros())
                .bind(&ctx.actor)
                .bind(&ctx.peer)
                .bind(&ctx.rpc)
                .bind(serde_json::json!({ "reason": reason }).to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_audit_events(
                &self,
                filter: &$crate::audit::AuditFilter,
                before: i64,
                limit: u32,
            ) -> Result<Vec<$crate::audit::AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT id, time, actor, peer, rpc, resource, outcome, diff FROM audit_events \
                     WHERE ($1 = 0 OR id < $1) AND ($2 = '' OR resource = $2) \
                     AND ($3 = '' OR actor LIKE $3 ESCAPE '\\') AND time >= $4 AND time < $5 \
                     ORDER BY id DESC LIMIT $6",
                )
                .bind(before)
                .bind(filter.resource.clone().unwrap_or_default())
                .bind(filter.actor.as_deref().map(sql::like_contains_exact_case).unwrap_or_default())
                .bind(filter.start.unwrap_or(i64::MIN))
                .bind(filter.end.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(event_from_row).collect()
            }

            async fn audit_events_after(&self, after: i64, limit: u32) -> Result<Vec<$crate::audit::AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT id, time, actor, peer, rpc, resource, outcome, diff FROM audit_events \
                     WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(event_from_row).collect()
            }

            async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<()> {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn key_check(&self) -> Result<Option<Sealed>> {
                let value: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT value FROM meta WHERE key = 'key_check'")
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(value.and_then(|v| {
                    (v.len() > 12).then(|| Sealed {
                        nonce: v[..12].to_vec(),
                        ciphertext: v[12..].to_vec(),
                    })
                }))
            }

            async fn set_key_check(&self, check: &Sealed) -> Result<()> {
                let mut value = check.nonce.clone();
                value.extend_from_slice(&check.ciphertext);
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('key_check', $1) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(value)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

pub(super) use sql_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes() {
        assert_eq!(like_contains("50%_A\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn list_query_numbers_binds_in_order() {
        let f = AccountFilter {
            id: Some(3),
            account_name: Some("x".into()),
            reply_to_email: Some("y".into()),
            status: StatusFilter::Enabled,
            ..AccountFilter::default()
        };
        let (sql, binds) = list_accounts_query(&f, 10, 31);
        assert_eq!(binds.len(), 5);
        assert!(sql.contains("id = $2"));
        assert!(sql.contains("name_key LIKE $3"));
        assert!(sql.contains("lower(reply_to_email) LIKE $4"));
        assert!(sql.ends_with("AND enabled ORDER BY id LIMIT $5"));
    }

    #[test]
    fn insert_and_update_have_matching_placeholders() {
        assert!(INSERT_ACCOUNT.contains("$28)"));
        assert!(UPDATE_ACCOUNT.ends_with("WHERE id = $28"));
    }
}
