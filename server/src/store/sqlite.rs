//! The embedded SQLite backend: one file in the data directory, in WAL mode, created and
//! migrated on start, and used by one server process at a time: an exclusive lock on
//! `<file>.lock` (held as long as the store is open) refuses a second one with a clear error.

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::fs::{File, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has the database open.
    #[error(
        "{} is in use by another mailplane server ({holder}); the embedded SQLite database \
         serves one server process: stop the other one, or use PostgreSQL \
         (`--database-url postgres://…`) to run several replicas",
        path.display()
    )]
    InUse {
        /// The database file.
        path: PathBuf,
        /// Who holds it, as it wrote in the lock file.
        holder: String,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// There is no database file to open beside a server.
    #[error(
        "there is no database at {}: start `mailplane serve` once first, or pass the server's \
         --data-dir, --database-url or --config",
        .0.display()
    )]
    NoDatabase(PathBuf),
    /// The database (SQLite or PostgreSQL) cannot be opened or migrated.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Takes the exclusive lock on `<path>.lock` and writes this process's id into it.
fn lock_exclusively(path: &Path) -> Result<File, OpenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let failed = |source| OpenError::Lock {
        path: lock_path.clone(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "a process that did not say which".to_owned(),
                h => h.to_owned(),
            };
            return Err(OpenError::InUse {
                path: path.to_owned(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(failed(e)),
    }
    // Only the holder writes, so a reader sees the current holder's id.
    let me = format!("pid {}", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()))
        .map_err(failed)?;
    Ok(file)
}

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
    /// The database file.
    pub(super) path: PathBuf,
    /// The exclusive lock on `<file>.lock`, released when the store is dropped (none for a
    /// store opened beside a server by [`SqliteStore::open_beside_server`]).
    _process_lock: Option<File>,
}

/// Creates the database file with mode 0600 when it does not exist yet (SQLite would create
/// it with the umask's mode, often readable by everyone): it holds sealed secrets, token
/// hashes and message bodies. SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database file at `path`, unless another
    /// process has it open.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let process_lock = lock_exclusively(path)?;
        create_private(path).map_err(sqlx::Error::Io)?;
        Self::connect(path, Some(process_lock)).await
    }

    /// Opens the existing database file at `path` even while a server has it open, for
    /// `mailplane keys`: its short transactions take SQLite's own write lock (which the
    /// server's writers wait for, and it for theirs), and it runs none of a server's work.
    pub async fn open_beside_server(path: &Path) -> Result<Self, OpenError> {
        if !path.exists() {
            return Err(OpenError::NoDatabase(path.to_path_buf()));
        }
        Self::connect(path, None).await
    }

    async fn connect(path: &Path, process_lock: Option<File>) -> Result<Self, OpenError> {
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
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(sqlx::Error::from)?;
        let durable = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(durable_options)
            .await?;
        Ok(Self {
            pool,
            durable,
            write_lock: Mutex::new(()),
            path: path.to_path_buf(),
            _process_lock: process_lock,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn the_database_file_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailplane.db");
        let store = SqliteStore::open(&path).await.unwrap();
        for file in [path.clone(), dir.path().join("mailplane.db-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
        }
        drop(store);
    }
}
