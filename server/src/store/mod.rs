//! Persistence: SQLite (the embedded default) and PostgreSQL (several replicas, one database).
//!
//! [`Store`] is one type over both backends. Its operations are ordinary methods, grouped by
//! resource: [`accounts`], [`credentials`], [`tests`] (SMTP tests), [`connectors`], [`agents`],
//! [`tokens`], [`messages`] (the outbox), [`queue`] (its summary and pauses), [`audit`] and [`meta`] (installation metadata and the key check). Each writes
//! its SQL once; `db.rs` runs that text on either backend (both accept `$N` placeholders,
//! `RETURNING`, partial unique indexes and `LIKE … ESCAPE`), and `rows.rs` holds the
//! `sqlx::FromRow` row types and the one list of account columns. Only opening a database and
//! beginning a write transaction differ per backend, in [`sqlite`] and [`postgres`].
//!
//! The rules (the first account becomes the default, the default-account rules, credential
//! fit, in-use checks) are decided by plain functions in [`crate::domain::rules`]; the store
//! runs them inside its write transaction, under the row and rule locks of [`locks`] on
//! PostgreSQL (SQLite's writers run one at a time), so the check-then-write cannot race another
//! writer of any replica, and the database backs the invariants with constraints (a unique index on the case-folded
//! name, a unique partial index on `is_default`). Every change that is audited takes the
//! caller's [`crate::audit::AuditContext`] as its first argument and records its event in the
//! same transaction; bookkeeping writes (heartbeats, token use, test progress, metadata)
//! record none and take none.

pub mod accounts;
pub mod agents;
pub mod audit;
pub mod audit_chain;
pub mod connectors;
pub mod credential_tokens;
pub mod credentials;
mod db;
pub mod jobs;
pub mod keys;
mod locks;
pub mod messages;
pub mod messages_attempts;
pub mod messages_claims;
mod messages_create;
/// Helpers for tests of the outbox: a store with an account, new messages.
#[cfg(test)]
pub(crate) use messages_create::tests as messages_tests;
pub mod console_sessions;
pub mod meta;
pub mod notify;
pub mod postgres;
pub mod queue;
pub mod replicas;
mod rows;
pub mod sqlite;
pub mod tests;
pub mod tokens;

use crate::domain::{AccountSpec, ConnectorSpec, CredentialSpec};
use crate::error::Result;
use db::{Conn, Query, Record};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite, Transaction};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::MutexGuard;

pub use postgres::PgStore;
pub use sqlite::{OpenError, SqliteStore};

/// A change to an account: it receives the current fields and edits them in place, inside the
/// store's transaction, so the check-then-write cannot race another writer.
pub type AccountEdit<'a> = &'a (dyn Fn(&mut AccountSpec) -> Result<()> + Send + Sync);

/// A change to a credential's non-secret fields, applied like [`AccountEdit`].
pub type CredentialEdit<'a> = &'a (dyn Fn(&mut CredentialSpec) -> Result<()> + Send + Sync);

/// A change to a connector, applied like [`AccountEdit`].
pub type ConnectorEdit<'a> = &'a (dyn Fn(&mut ConnectorSpec) -> Result<()> + Send + Sync);

/// The database, whichever backend it is. Shared as `Arc<Store>`.
#[derive(Debug)]
pub enum Store {
    /// The embedded SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

/// A write transaction: the backend's writer lock is held until it commits or is dropped.
struct Write<'a> {
    tx: Tx,
    // Dropped after the transaction (fields drop in order).
    _guard: Option<MutexGuard<'a, ()>>,
}

enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Write<'_> {
    /// The transaction's connection.
    fn conn(&mut self) -> Conn<'_> {
        match &mut self.tx {
            Tx::Sqlite(tx) => Conn::Sqlite(tx),
            Tx::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    /// Commits, then lets the next writer in.
    async fn commit(self) -> Result<()> {
        let Write { tx, _guard } = self;
        match tx {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A connection from the pool, for reads and writes outside a transaction.
enum Read {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Read {
    /// The connection.
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Read::Sqlite(c) => Conn::Sqlite(c),
            Read::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl Store {
    /// Begins a write transaction. SQLite queues this process's writers and takes the write
    /// lock up front (`BEGIN IMMEDIATE`); PostgreSQL takes no lock here: the write locks the
    /// rows and rules it relies on ([`locks`]).
    async fn begin_write(&self) -> Result<Write<'_>> {
        Ok(match self {
            Store::Sqlite(s) => {
                let (tx, guard) = s.begin_write().await?;
                Write {
                    tx: Tx::Sqlite(tx),
                    _guard: Some(guard),
                }
            }
            Store::Postgres(p) => Write {
                tx: Tx::Postgres(p.begin().await?),
                _guard: None,
            },
        })
    }

    /// A write transaction for progress that can be rebuilt (a test's phases, a connector
    /// job's updates): on PostgreSQL it takes no writer lock (only its own rows are touched)
    /// and commits without waiting for the WAL flush (`synchronous_commit = off`: a crash may
    /// lose the last few milliseconds of progress, never the order or a later state).
    async fn begin_progress_write(&self) -> Result<Write<'_>> {
        match self {
            Store::Sqlite(_) => self.begin_write().await,
            Store::Postgres(p) => Ok(Write {
                // One round trip for both.
                tx: Tx::Postgres(
                    p.pool
                        .begin_with("BEGIN; SET LOCAL synchronous_commit TO OFF")
                        .await?,
                ),
                _guard: None,
            }),
        }
    }

    /// A write transaction whose commit is durable when it returns: SQLite runs it on its
    /// `synchronous=FULL` connection; a PostgreSQL commit is durable already.
    async fn begin_durable_write(&self) -> Result<Write<'_>> {
        match self {
            Store::Sqlite(s) => {
                let (tx, guard) = s.begin_durable_write().await?;
                Ok(Write {
                    tx: Tx::Sqlite(tx),
                    _guard: Some(guard),
                })
            }
            Store::Postgres(_) => self.begin_write().await,
        }
    }

    /// A write transaction of the outbox's own rows (messages, their recipients and attempts),
    /// durable when it returns if `durable`. On PostgreSQL these lock nothing beyond their
    /// rows: claims lock theirs (`FOR UPDATE SKIP LOCKED`), a change of state locks its
    /// message, the unique `request_id` index refuses a duplicate, and the foreign key to the
    /// account (which `delete_account` locks) keeps a new message from an account being
    /// deleted.
    async fn begin_outbox_write(&self, durable: bool) -> Result<Write<'_>> {
        if durable {
            self.begin_durable_write().await
        } else {
            self.begin_write().await
        }
    }

    /// Whether this is PostgreSQL (for the few statements that differ, e.g. row locks).
    fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Whether this is the embedded SQLite file (one server, no replicas).
    pub fn is_sqlite(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// A connection from the pool.
    async fn read(&self) -> Result<Read> {
        Ok(match self {
            Store::Sqlite(s) => Read::Sqlite(s.pool.acquire().await?),
            Store::Postgres(p) => Read::Postgres(p.pool.acquire().await?),
        })
    }

    /// Every row a query returns, outside any transaction.
    async fn all<T: Record>(&self, q: &Query) -> Result<Vec<T>> {
        Ok(self.read().await?.conn().all(q).await?)
    }

    /// The first row a query returns, if any, outside any transaction.
    async fn optional<T: Record>(&self, q: &Query) -> Result<Option<T>> {
        Ok(self.read().await?.conn().optional(q).await?)
    }

    /// The one row a query returns, outside any transaction.
    async fn one<T: Record>(&self, q: &Query) -> Result<T> {
        Ok(self.read().await?.conn().one(q).await?)
    }

    /// Runs a statement outside any transaction.
    async fn execute(&self, q: &Query) -> Result<u64> {
        Ok(self.read().await?.conn().execute(q).await?)
    }
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

/// A URL with any password replaced, fit for logs and errors: the one in the user info (up to
/// the last `@`, since a password may hold an unescaped `@`, `/` or `?`: when in doubt more is
/// hidden, never less), and the value of any query parameter whose name holds "password".
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let userinfo = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, _password)) => format!("{user}:<redacted>@"),
            None => format!("{info}@"),
        },
        None => String::new(),
    };
    let after = match after.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                        format!("{key}=<redacted>")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => after.to_owned(),
    };
    format!("{scheme}://{userinfo}{after}")
}

/// Opens (creating and migrating as needed) the database that `url` names. An SQLite file
/// that another process has open is refused ([`OpenError::InUse`]).
pub async fn open(url: &DatabaseUrl) -> std::result::Result<Arc<Store>, OpenError> {
    Ok(Arc::new(match url {
        DatabaseUrl::Sqlite(path) => Store::Sqlite(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Store::Postgres(PgStore::open(url).await?),
    }))
}

/// Opens the database that `url` names beside the servers that may have it open, for
/// `mailplane keys` (an SQLite file must exist already; see [`SqliteStore::open_beside_server`]).
pub async fn open_beside_server(url: &DatabaseUrl) -> std::result::Result<Arc<Store>, OpenError> {
    Ok(Arc::new(match url {
        DatabaseUrl::Sqlite(path) => Store::Sqlite(SqliteStore::open_beside_server(path).await?),
        DatabaseUrl::Postgres(url) => Store::Postgres(PgStore::open(url).await?),
    }))
}

/// Opens the default SQLite database in `data_dir`.
pub fn default_sqlite(data_dir: &Path) -> DatabaseUrl {
    DatabaseUrl::Sqlite(data_dir.join("mailplane.db"))
}

#[cfg(test)]
mod url_tests {
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

    #[test]
    fn redacts_passwords_holding_at_signs_and_in_the_query() {
        assert_eq!(
            redact_url("postgres://u:p@ss/w?rd@h:5432/db"),
            "postgres://u:<redacted>@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=hunter2&sslpassword=x2&sslmode=require"),
            "postgres://h/db?user=u&password=<redacted>&sslpassword=<redacted>&sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
        for url in [
            "postgres://u:hunter2@h/db?application_name=a@b",
            "postgres://u:hun@ter2@h/db?password=hunter3",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("hunter2") && !shown.contains("hunter3") && !shown.contains("ter2"),
                "{shown}"
            );
        }
    }
}
