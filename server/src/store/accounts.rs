//! SMTP accounts: create, read, list, update, delete, and the default account.

use super::audit::record;
use super::db::{Conn, Query, like_contains, query};
use super::locks::{RowLock, Rule};
use super::rows::{ACCOUNT_COLUMNS, AccountRow, SPEC_COLUMNS, account_args, convert};
use super::{AccountEdit, Store, Write, connectors, credentials};
use crate::audit::{AuditContext, diff};
use crate::domain::{
    Account, AccountFilter, AccountId, AccountSpec, ConnectorId, StatusFilter, now_micros, rules,
};
use crate::error::{Error, Result};
use std::sync::LazyLock;

/// Inserts an account: the spec, then version, create time and update time.
static INSERT_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    let n = SPEC_COLUMNS.len();
    let values: Vec<String> = (1..=n + 3).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO accounts ({}, version, create_time, update_time) VALUES ({}) RETURNING id",
        SPEC_COLUMNS.join(", "),
        values.join(", ")
    )
});

/// Updates an account: the spec, then version, update time, and the id.
static UPDATE_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
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

/// Clears the default flag on whichever account holds it (other than `$2`).
const CLEAR_DEFAULT: &str = "UPDATE accounts SET is_default = FALSE, \
     version = version + 1, update_time = $1 WHERE is_default AND id <> $2";

/// The query for a page of accounts after id `after`.
fn list_accounts_query(filter: &AccountFilter, after: i64, limit: u32) -> Query {
    let mut q = query(format!(
        "SELECT {} FROM accounts WHERE id > $1",
        *ACCOUNT_COLUMNS
    ))
    .bind(after);
    if let Some(id) = filter.id {
        q = q.and(" AND id = $?", id);
    }
    if let Some(name) = &filter.account_name {
        q = q.and(" AND name_key LIKE $? ESCAPE '\\'", like_contains(name));
    }
    for (column, value) in [
        ("sender_email", &filter.sender_email),
        ("reply_to_email", &filter.reply_to_email),
        ("return_path_email", &filter.return_path_email),
        ("confirmation_email", &filter.confirmation_email),
    ] {
        if let Some(value) = value {
            q = q.and(
                &format!(" AND lower({column}) LIKE $? ESCAPE '\\'"),
                like_contains(value),
            );
        }
    }
    q = match filter.status {
        StatusFilter::Any => q,
        StatusFilter::Enabled => q.and_sql(" AND enabled"),
        StatusFilter::Disabled => q.and_sql(" AND NOT enabled"),
    };
    q.and(" ORDER BY id LIMIT $?", i64::from(limit))
}

/// Maps a failed account write to the error a caller can act on: a unique violation on the
/// name is `AlreadyExists`, one on the default flag means a concurrent change won (`Aborted`),
/// and a foreign-key violation means a referenced credential vanished (`FailedPrecondition`).
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

/// One account, on `conn`.
async fn fetch(conn: &mut Conn<'_>, id: AccountId) -> Result<Account> {
    let q = query(format!(
        "SELECT {} FROM accounts WHERE id = $1",
        *ACCOUNT_COLUMNS
    ))
    .bind(id.0);
    match conn.optional::<AccountRow>(&q).await? {
        Some(row) => row.try_into(),
        None => Err(Error::NotFound(id.to_string())),
    }
}

/// The accounts that use a credential, ordered by id.
pub(super) async fn using_credential(conn: &mut Conn<'_>, id: i64) -> Result<Vec<Account>> {
    let q = query(format!(
        "SELECT {} FROM accounts WHERE credential_id = $1 ORDER BY id",
        *ACCOUNT_COLUMNS
    ))
    .bind(id);
    convert(conn.all::<AccountRow>(&q).await?)
}

/// How many accounts exist.
async fn count(conn: &mut Conn<'_>) -> Result<i64> {
    let (n,): (i64,) = conn.one(&query("SELECT COUNT(*) FROM accounts")).await?;
    Ok(n)
}

/// Checks what an account refers to: its credential (which must exist, fit, and allow the
/// account's host and port; the mechanism follows its kind when none was chosen) and its network
/// connector (which must exist). Both stay as read until the write commits: a change of the
/// credential's kind or destinations, or the deletion of either, waits for it (and then sees the
/// account that uses them).
async fn check_references(w: &mut Write<'_>, spec: &mut AccountSpec) -> Result<()> {
    if let Some(id) = spec.credential {
        w.lock_row("credentials", id.0, RowLock::Share).await?;
        let credential = match credentials::fetch(&mut w.conn(), id).await {
            Ok(c) => Some(c.spec),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        rules::account_credential(spec, id, credential.as_ref())?;
    }
    if let Some(id) = spec.network_connector.map(ConnectorId) {
        w.lock_row("connectors", id.0, RowLock::Share).await?;
        match connectors::fetch(&mut w.conn(), id).await {
            Ok(_) => {}
            Err(Error::NotFound(_)) => return Err(rules::missing_connector(id)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Clears the default flag on every account but `except`.
async fn clear_default(w: &mut Write<'_>, now: i64, except: i64) -> Result<()> {
    w.conn()
        .execute(&query(CLEAR_DEFAULT).bind(now).bind(except))
        .await?;
    Ok(())
}

impl Store {
    /// Creates an account. The first account becomes the default; `is_default` moves the flag.
    pub async fn create_account(
        &self,
        ctx: &AuditContext,
        mut spec: AccountSpec,
    ) -> Result<Account> {
        let mut w = self.begin_write().await?;
        w.lock_rule(Rule::Accounts).await?;
        check_references(&mut w, &mut spec).await?;
        let takes_default = rules::create_account(&mut spec, count(&mut w.conn()).await?)?;
        let now = now_micros();
        if takes_default {
            clear_default(&mut w, now, -1).await?;
        }
        let q = query(INSERT_ACCOUNT.as_str())
            .bind_all(account_args(&spec))
            .bind(1_i64)
            .bind(now)
            .bind(now);
        let (id,): (i64,) = w
            .conn()
            .one(&q)
            .await
            .map_err(|e| write_error(e, Some(&spec.account_name)))?;
        let account = Account {
            id: AccountId(id),
            spec,
            version: 1,
            create_time: now,
            update_time: now,
        };
        let change = diff(None, Some(&account.audit_json()));
        record(&mut w, ctx, &account.id.to_string(), change).await?;
        w.commit().await?;
        Ok(account)
    }

    /// Reads one account.
    pub async fn get_account(&self, id: AccountId) -> Result<Account> {
        fetch(&mut self.read().await?.conn(), id).await
    }

    /// The default account, if there is one.
    pub async fn default_account(&self) -> Result<Option<Account>> {
        let q = query(format!(
            "SELECT {} FROM accounts WHERE is_default",
            *ACCOUNT_COLUMNS
        ));
        self.optional::<AccountRow>(&q)
            .await?
            .map(Account::try_from)
            .transpose()
    }

    /// Lists up to `limit` accounts with ids above `after`, ordered by id.
    pub async fn list_accounts(
        &self,
        filter: &AccountFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Account>> {
        let q = list_accounts_query(filter, after, limit);
        convert(self.all::<AccountRow>(&q).await?)
    }

    /// Applies `edit` to an account whose version is `expected_version` (when given).
    pub async fn update_account(
        &self,
        ctx: &AuditContext,
        id: AccountId,
        expected_version: Option<i64>,
        edit: AccountEdit<'_>,
    ) -> Result<Account> {
        let mut w = self.begin_write().await?;
        w.lock_rule(Rule::Accounts).await?;
        let current = fetch(&mut w.conn(), id).await?;
        rules::check_version(&id.to_string(), expected_version, current.version)?;
        let mut spec = current.spec.clone();
        edit(&mut spec)?;
        let takes_default = rules::update_account(id, &current.spec, &spec)?;
        check_references(&mut w, &mut spec).await?;
        let now = now_micros();
        if takes_default {
            clear_default(&mut w, now, id.0).await?;
        }
        let version = current.version + 1;
        let q = query(UPDATE_ACCOUNT.as_str())
            .bind_all(account_args(&spec))
            .bind(version)
            .bind(now)
            .bind(id.0);
        w.conn()
            .execute(&q)
            .await
            .map_err(|e| write_error(e, Some(&spec.account_name)))?;
        let account = Account {
            id,
            spec,
            version,
            create_time: current.create_time,
            update_time: now,
        };
        let change = diff(Some(&current.audit_json()), Some(&account.audit_json()));
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await?;
        Ok(account)
    }

    /// Deletes an account; refused for the default while others exist.
    pub async fn delete_account(
        &self,
        ctx: &AuditContext,
        id: AccountId,
        expected_version: Option<i64>,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        w.lock_rule(Rule::Accounts).await?;
        let current = fetch(&mut w.conn(), id).await?;
        rules::check_version(&id.to_string(), expected_version, current.version)?;
        if current.spec.is_default {
            rules::delete_account(id, &current.spec, count(&mut w.conn()).await?)?;
        }
        // New messages take no lock of their own: their foreign key's share lock on this row
        // orders them against this one, so none is stored after the count below and then
        // deleted with the account.
        w.lock_row("accounts", id.0, RowLock::Delete).await?;
        super::messages::check_none_waiting(&mut w.conn(), id).await?;
        w.conn()
            .execute(&query("DELETE FROM accounts WHERE id = $1").bind(id.0))
            .await?;
        let change = diff(Some(&current.audit_json()), None);
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await
    }

    /// Makes an account the default, clearing the previous default in the same transaction.
    pub async fn set_default_account(&self, ctx: &AuditContext, id: AccountId) -> Result<Account> {
        let mut w = self.begin_write().await?;
        w.lock_rule(Rule::Accounts).await?;
        let current = fetch(&mut w.conn(), id).await?;
        if !rules::set_default_account(id, &current.spec)? {
            return Ok(current);
        }
        let now = now_micros();
        clear_default(&mut w, now, id.0).await?;
        let q = query(
            "UPDATE accounts SET is_default = TRUE, version = version + 1, update_time = $1 \
             WHERE id = $2",
        )
        .bind(now)
        .bind(id.0);
        w.conn()
            .execute(&q)
            .await
            .map_err(|e| write_error(e, None))?;
        let account = fetch(&mut w.conn(), id).await?;
        let change = diff(Some(&current.audit_json()), Some(&account.audit_json()));
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await?;
        Ok(account)
    }
}

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
        let q = list_accounts_query(&f, 10, 31);
        let sql = q.sql();
        assert_eq!(q.arg_count(), 5);
        assert!(sql.contains("id = $2"));
        assert!(sql.contains("name_key LIKE $3"));
        assert!(sql.contains("lower(reply_to_email) LIKE $4"));
        assert!(sql.ends_with("AND enabled ORDER BY id LIMIT $5"));
    }

    #[test]
    fn insert_and_update_have_matching_placeholders() {
        assert!(INSERT_ACCOUNT.contains("$29)"));
        assert!(UPDATE_ACCOUNT.ends_with("WHERE id = $29"));
    }
}
