//! Key ids in the database: the key checks (one per key id), the primary key id, what each key
//! seals, and the rewrite of ciphertexts under a new key for `mailplane keys rotate`.
//!
//! A rewrite changes a row only if it is as it was read (same key id and nonce), so a change
//! made meanwhile (a user's new secret) wins and is never overwritten; on PostgreSQL the batch
//! also skips rows that another transaction holds (`SKIP LOCKED`), so it never waits for a
//! user's write and a user's write waits at most for one short batch.

use super::audit::record;
use super::db::{Arg, query};
use super::{Store, Write};
use crate::audit::AuditContext;
use crate::crypto::{KeyId, Sealed};
use crate::domain::keys::{Location, StoredCiphertext, Usage};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};

/// The `meta` key of the primary key id.
const PRIMARY: &str = "primary_key_id";
/// The prefix of the `meta` keys of the key checks.
const CHECK_PREFIX: &str = "key_check:";

fn key_id(v: i64) -> Result<KeyId> {
    KeyId::try_from(v).map_err(|_| Error::Internal(format!("stored key id {v} is out of range")))
}

/// The advisory lock key of `mailplane keys` work on PostgreSQL ("mp" in the top 16 bits, then
/// 0xffff: no rule lock of `store::locks` uses it).
const MAINTENANCE_LOCK: i64 = (0x6d70 << 48) | (0xffff << 32);

/// Held while one `mailplane keys` command changes keys: released when dropped, or when its
/// process dies (a lock file's lock, or a PostgreSQL session's advisory lock).
#[derive(Debug)]
pub enum KeysLock {
    /// The lock on `<database file>.keys.lock`.
    File(std::fs::File),
    /// A connection of its own that holds the advisory lock until it closes.
    Postgres(sqlx::PgConnection),
}

/// A sealed row: its id, its connector (jobs) or 0, key id, nonce, ciphertext.
type SealedRow = (i64, i64, i64, Vec<u8>, Vec<u8>);

/// The tables of rows with a ciphertext each, read page by page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Credential secrets.
    Credentials,
    /// OAuth2 refresh tokens (on credentials).
    RefreshTokens,
    /// Cached OAuth2 access tokens.
    AccessTokens,
    /// Connector jobs.
    Jobs,
}

impl Table {
    /// Every table, in the order a rotation takes them.
    pub const ALL: [Table; 4] = [
        Table::Credentials,
        Table::RefreshTokens,
        Table::AccessTokens,
        Table::Jobs,
    ];

    /// The table, its id column, its connector column (or `0`), and its key id, nonce and
    /// ciphertext columns.
    fn columns(self) -> [&'static str; 6] {
        match self {
            Table::Credentials => [
                "credentials",
                "id",
                "CAST(0 AS BIGINT)",
                "secret_key_id",
                "secret_nonce",
                "secret_ciphertext",
            ],
            Table::RefreshTokens => [
                "credentials",
                "id",
                "CAST(0 AS BIGINT)",
                "refresh_key_id",
                "refresh_nonce",
                "refresh_ciphertext",
            ],
            Table::AccessTokens => [
                "credential_tokens",
                "credential_id",
                "CAST(0 AS BIGINT)",
                "token_key_id",
                "token_nonce",
                "token_ciphertext",
            ],
            Table::Jobs => [
                "connector_jobs",
                "id",
                "connector_id",
                "job_key_id",
                "job_nonce",
                "job_sealed",
            ],
        }
    }

    /// Where a row of this table is.
    fn location(self, id: i64, connector: i64) -> Location {
        match self {
            Table::Credentials => Location::Credential(id),
            Table::RefreshTokens => Location::RefreshToken(id),
            Table::AccessTokens => Location::AccessToken(id),
            Table::Jobs => Location::Job { id, connector },
        }
    }

    /// The table of a location's row (`None` for a `meta` value).
    fn of(at: &Location) -> Option<(Table, i64)> {
        match at {
            Location::Credential(id) => Some((Table::Credentials, *id)),
            Location::RefreshToken(id) => Some((Table::RefreshTokens, *id)),
            Location::AccessToken(id) => Some((Table::AccessTokens, *id)),
            Location::Job { id, .. } => Some((Table::Jobs, *id)),
            Location::Value(_) => None,
        }
    }
}

/// Which ciphertexts to read.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// All of them.
    All,
    /// Those sealed under another key than this one.
    NotUnder(KeyId),
}

impl Which {
    /// The condition on `column` (placeholder `$1`), and its argument: key ids are positive,
    /// so "not under key 0" is all of them (and never a NULL).
    fn clause(self, column: &str) -> (String, Arg) {
        let id = match self {
            Which::All => 0,
            Which::NotUnder(id) => id,
        };
        (format!("{column} <> $1"), Arg::from(i64::from(id)))
    }
}

impl Store {
    /// Takes the lock that keeps two `mailplane keys` commands that change keys (of any host)
    /// from running at once; `None` if another one holds it.
    pub async fn try_lock_keys(&self) -> Result<Option<KeysLock>> {
        match self {
            Store::Sqlite(s) => {
                let mut name = s.path.as_os_str().to_owned();
                name.push(".keys.lock");
                let file = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(std::path::PathBuf::from(name))
                    .map_err(|e| Error::Internal(format!("the keys lock file: {e}")))?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(KeysLock::File(file))),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => {
                        Err(Error::Internal(format!("the keys lock file: {e}")))
                    }
                }
            }
            Store::Postgres(p) => {
                let mut conn = p.pool.acquire().await?.detach();
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(MAINTENANCE_LOCK)
                    .fetch_one(&mut conn)
                    .await?;
                Ok(got.then_some(KeysLock::Postgres(conn)))
            }
        }
    }

    /// The primary key id: the key new secrets are sealed under (1 until a rotation).
    pub async fn primary_key_id(&self) -> Result<KeyId> {
        match self.get_meta(PRIMARY).await? {
            None => Ok(1),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Internal("the stored primary key id is not a number".into())),
        }
    }

    /// Records the primary key id on a database that has none yet.
    pub async fn init_primary_key_id(&self, id: KeyId) -> Result<()> {
        self.put_meta_if_absent(PRIMARY, id.to_string().as_bytes())
            .await
    }

    /// Makes `to` the primary key if `from` still is; whether it did. Audited.
    pub async fn switch_primary_key(
        &self,
        ctx: &AuditContext,
        from: KeyId,
        to: KeyId,
    ) -> Result<bool> {
        self.init_primary_key_id(from).await?;
        let mut w = self.begin_write().await?;
        let q = query("UPDATE meta SET value = $1 WHERE key = $2 AND value = $3")
            .bind(to.to_string().into_bytes())
            .bind(PRIMARY)
            .bind(from.to_string().into_bytes());
        if w.conn().execute(&q).await? == 0 {
            return Ok(false);
        }
        let change = serde_json::json!({ "primary_key_id": { "before": from, "after": to } });
        record(&mut w, ctx, &format!("keys/{to}"), change).await?;
        w.commit().await?;
        Ok(true)
    }

    /// The key checks, by key id.
    pub async fn key_checks(&self) -> Result<BTreeMap<KeyId, Sealed>> {
        let q = query("SELECT key, value FROM meta WHERE key LIKE 'key_check:%'");
        let rows: Vec<(String, Vec<u8>)> = self.all(&q).await?;
        let mut checks = BTreeMap::new();
        for (key, value) in rows {
            let id = key
                .strip_prefix(CHECK_PREFIX)
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| Error::Internal(format!("malformed key check name {key:?}")))?;
            let check = Sealed::from_bytes(id, &value)
                .ok_or_else(|| Error::Internal(format!("key check {id} is truncated")))?;
            checks.insert(id, check);
        }
        Ok(checks)
    }

    /// The key check of key `id`, if the database has one.
    pub async fn key_check(&self, id: KeyId) -> Result<Option<Sealed>> {
        let value = self.get_meta(&format!("{CHECK_PREFIX}{id}")).await?;
        Ok(value.and_then(|v| Sealed::from_bytes(id, &v)))
    }

    /// Stores a key check unless one exists for its key id (the first writer wins).
    pub async fn add_key_check(&self, check: &Sealed) -> Result<()> {
        let name = format!("{CHECK_PREFIX}{}", check.key_id);
        self.put_meta_if_absent(&name, &check.to_bytes()).await
    }

    /// Forgets the key check of key `id` (a key removed from the key file).
    pub async fn remove_key_check(&self, id: KeyId) -> Result<()> {
        let q = query("DELETE FROM meta WHERE key = $1").bind(format!("{CHECK_PREFIX}{id}"));
        self.execute(&q).await?;
        Ok(())
    }

    /// What each key seals.
    pub async fn key_usage(&self) -> Result<BTreeMap<KeyId, Usage>> {
        let mut usage: BTreeMap<KeyId, Usage> = BTreeMap::new();
        for table in Table::ALL {
            let [name, _, _, key, _, value] = table.columns();
            let q = query(format!(
                "SELECT {key}, COUNT(*) FROM {name} WHERE {value} IS NOT NULL GROUP BY {key}"
            ));
            for (id, n) in self.all::<(i64, i64)>(&q).await? {
                let entry = usage.entry(key_id(id)?).or_default();
                let count = match table {
                    Table::Credentials => &mut entry.credentials,
                    Table::RefreshTokens => &mut entry.refresh_tokens,
                    Table::AccessTokens => &mut entry.access_tokens,
                    Table::Jobs => &mut entry.jobs,
                };
                *count = n.unsigned_abs();
            }
        }
        let q = query("SELECT key, key_id FROM meta WHERE key_id IS NOT NULL ORDER BY key");
        for (key, id) in self.all::<(String, i64)>(&q).await? {
            usage.entry(key_id(id)?).or_default().values.push(key);
        }
        Ok(usage)
    }

    /// Up to `limit` sealed rows of `table` with ids above `after`, in id order.
    pub async fn sealed_rows(
        &self,
        table: Table,
        which: Which,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredCiphertext>> {
        let [name, id, connector, key, nonce, value] = table.columns();
        let (clause, arg) = which.clause(key);
        let q = query(format!(
            "SELECT {id}, {connector}, {key}, {nonce}, {value} FROM {name} \
             WHERE {clause} AND {id} > $2 AND {value} IS NOT NULL ORDER BY {id} LIMIT $3"
        ))
        .bind_all([arg])
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<SealedRow> = self.all(&q).await?;
        rows.into_iter()
            .map(|(id, connector, key, nonce, ciphertext)| {
                Ok(StoredCiphertext {
                    at: table.location(id, connector),
                    sealed: Sealed {
                        key_id: key_id(key)?,
                        nonce,
                        ciphertext,
                    },
                })
            })
            .collect()
    }

    /// The sealed `meta` values.
    pub async fn sealed_values(&self, which: Which) -> Result<Vec<StoredCiphertext>> {
        let (clause, arg) = which.clause("key_id");
        let q = query(format!(
            "SELECT key, key_id, value FROM meta WHERE {clause} AND key_id IS NOT NULL \
             ORDER BY key"
        ))
        .bind_all([arg]);
        let rows: Vec<(String, i64, Vec<u8>)> = self.all(&q).await?;
        rows.into_iter()
            .map(|(key, id, value)| {
                let sealed = Sealed::from_bytes(key_id(id)?, &value)
                    .ok_or_else(|| Error::Internal(format!("meta value {key:?} is truncated")))?;
                Ok(StoredCiphertext {
                    at: Location::Value(key),
                    sealed,
                })
            })
            .collect()
    }

    /// Replaces each ciphertext with its new sealing, in one transaction, where the row is
    /// still as it was read (and, on PostgreSQL, not held by another transaction). Returns how
    /// many were rewritten; the others changed meanwhile, and a later pass reads them again.
    pub async fn rewrite_ciphertexts(&self, batch: &[(StoredCiphertext, Sealed)]) -> Result<u64> {
        let mut w = self.begin_write().await?;
        let free = self.lock_free_rows(&mut w, batch).await?;
        let mut rewritten = 0;
        for (old, new) in batch {
            if let Some(free) = &free
                && !free.contains(&old.at)
            {
                continue;
            }
            let Some((table, row)) = Table::of(&old.at) else {
                let Location::Value(key) = &old.at else {
                    continue;
                };
                let q = query(
                    "UPDATE meta SET value = $1, key_id = $2 WHERE key = $3 AND key_id = $4 \
                     AND value = $5",
                )
                .bind(new.to_bytes())
                .bind(i64::from(new.key_id))
                .bind(key.as_str())
                .bind(i64::from(old.sealed.key_id))
                .bind(old.sealed.to_bytes());
                rewritten += w.conn().execute(&q).await?;
                continue;
            };
            let [table, id_column, _, key_column, nonce_column, value_column] = table.columns();
            let q = query(format!(
                "UPDATE {table} SET {key_column} = $1, {nonce_column} = $2, {value_column} = $3 \
                 WHERE {id_column} = $4 AND {key_column} = $5 AND {nonce_column} = $6"
            ))
            .bind(i64::from(new.key_id))
            .bind(new.nonce.clone())
            .bind(new.ciphertext.clone())
            .bind(row)
            .bind(i64::from(old.sealed.key_id))
            .bind(old.sealed.nonce.clone());
            rewritten += w.conn().execute(&q).await?;
        }
        w.commit().await?;
        Ok(rewritten)
    }

    /// On PostgreSQL, locks the batch's rows that no other transaction holds, and returns them
    /// (`None` on SQLite, whose writers run one at a time).
    async fn lock_free_rows(
        &self,
        w: &mut Write<'_>,
        batch: &[(StoredCiphertext, Sealed)],
    ) -> Result<Option<HashSet<Location>>> {
        if !self.is_postgres() {
            return Ok(None);
        }
        let mut free = HashSet::new();
        let tables: HashSet<&'static str> = batch
            .iter()
            .filter_map(|(old, _)| Table::of(&old.at))
            .map(|(t, _)| t.columns()[0])
            .collect();
        for name in tables {
            let rows: Vec<(Table, i64)> = batch
                .iter()
                .filter_map(|(old, _)| Table::of(&old.at))
                .filter(|(t, _)| t.columns()[0] == name)
                .collect();
            let id_column = rows[0].0.columns()[1];
            let q = query(format!(
                "SELECT {id_column} FROM {name} WHERE {id_column} IN ("
            ))
            .list(rows.iter().map(|(_, id)| Arg::from(*id)))
            .and_sql(") FOR NO KEY UPDATE SKIP LOCKED");
            let locked: HashSet<i64> = w
                .conn()
                .all::<(i64,)>(&q)
                .await?
                .into_iter()
                .map(|(id,)| id)
                .collect();
            free.extend(
                batch
                    .iter()
                    .filter(|(old, _)| {
                        Table::of(&old.at)
                            .is_some_and(|(t, id)| t.columns()[0] == name && locked.contains(&id))
                    })
                    .map(|(old, _)| old.at.clone()),
            );
        }
        let values: Vec<Arg> = batch
            .iter()
            .filter_map(|(old, _)| match &old.at {
                Location::Value(key) => Some(Arg::from(key.as_str())),
                _ => None,
            })
            .collect();
        if !values.is_empty() {
            let q = query("SELECT key FROM meta WHERE key IN (")
                .list(values)
                .and_sql(") FOR NO KEY UPDATE SKIP LOCKED");
            for (key,) in w.conn().all::<(String,)>(&q).await? {
                free.insert(Location::Value(key));
            }
        }
        Ok(Some(free))
    }
}
