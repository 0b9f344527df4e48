//! The embedded SQLite backend: one file in the data directory, in WAL mode, created and
//! migrated on start.

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// One connection with `synchronous=FULL`, for writes that must survive a power loss once
    /// committed (a message accepted by `SendMessage`). The other connections run with
    /// `NORMAL`, which in WAL mode is consistent but may lose the last commits on power loss.
    durable: SqlitePool,
    /// SQLite has one writer at a time; queuing this process's writers here keeps them from
    /// spinning on the database lock.
    write_lock: Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Reads are most of the load: map the file rather than copy pages through read(2),
            // and give each connection a larger page cache than SQLite's 2 MiB default.
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-16384");
        let durable_options = options.clone().synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            // Few connections: each is a worker thread, and this is sized for small machines.
            .max_connections(4)
            // A connection to a local file does not go stale; the test before each use would
            // be one more trip to the connection's worker thread for every query.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        let durable = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(durable_options)
            .await?;
        Ok(Self {
            pool,
            durable,
            write_lock: Mutex::new(()),
        })
    }

    /// Begins a write transaction, after this process's earlier writers.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, MutexGuard<'_, ()>), sqlx::Error> {
        let guard = self.write_lock.lock().await;
        // IMMEDIATE takes the write lock up front (waiting out other writers, such as another
        // process, with the busy timeout) instead of failing when a read upgrades to a write.
        Ok((self.pool.begin_with("BEGIN IMMEDIATE").await?, guard))
    }

    /// [`SqliteStore::begin_write`] on the `synchronous=FULL` connection: the commit is on
    /// disk (fsync of the WAL) when it returns.
    pub(super) async fn begin_durable_write(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, MutexGuard<'_, ()>), sqlx::Error> {
        let guard = self.write_lock.lock().await;
        Ok((self.durable.begin_with("BEGIN IMMEDIATE").await?, guard))
    }
}
