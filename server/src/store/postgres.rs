//! The PostgreSQL backend, for several server replicas sharing one database.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The key of the transaction-scoped advisory lock that serialises writers. Replicas share the
/// database, so an in-process lock would not do; the unique indexes stay the last line.
const WRITE_LOCK_KEY: i64 = 0x6d61_696c_706c_616e; // "mailplan"

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and runs the migrations.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.application_name("mailplane");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Begins a write transaction without the advisory lock, for writes that row locks, foreign
    /// keys and unique indexes keep apart (the outbox's messages): concurrent ones then commit
    /// together, one WAL flush for many.
    pub(super) async fn begin(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Begins a write transaction holding the advisory lock until it ends.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}
