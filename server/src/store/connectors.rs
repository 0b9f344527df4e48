//! Network connectors and their enrollment tokens.

use super::audit::record;
use super::db::{Conn, query};
use super::locks::RowLock;
use super::rows::{CONNECTOR_COLUMNS, ConnectorRow};
use super::{ConnectorEdit, Store};
use crate::audit::{AuditContext, REDACTED, diff};
use crate::domain::account::name_key;
use crate::domain::audit::rfc3339;
use crate::domain::{Connector, ConnectorId, ConnectorSpec, Micros, now_micros, rules};
use crate::error::{Error, Result};

/// One connector, on `conn`.
pub(super) async fn fetch(conn: &mut Conn<'_>, id: ConnectorId) -> Result<Connector> {
    let q = query(format!(
        "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id = $1"
    ))
    .bind(id.0);
    match conn.optional::<ConnectorRow>(&q).await? {
        Some(row) => Ok(row.into()),
        None => Err(Error::NotFound(id.to_string())),
    }
}

/// A unique violation on the name is `AlreadyExists`.
fn write_error(err: sqlx::Error, name: &str) -> Error {
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

impl Store {
    /// Creates a connector.
    pub async fn create_connector(
        &self,
        ctx: &AuditContext,
        spec: ConnectorSpec,
    ) -> Result<Connector> {
        let now = now_micros();
        let mut w = self.begin_write().await?;
        let q = query(
            "INSERT INTO connectors (display_name, name_key, description, version, \
             create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4) RETURNING id",
        )
        .bind(&spec.display_name)
        .bind(name_key(&spec.display_name))
        .bind(&spec.description)
        .bind(now);
        let (id,): (i64,) = w
            .conn()
            .one(&q)
            .await
            .map_err(|e| write_error(e, &spec.display_name))?;
        let connector = Connector {
            id: ConnectorId(id),
            spec,
            version: 1,
            create_time: now,
            update_time: now,
        };
        let change = diff(None, Some(&connector.audit_json()));
        record(&mut w, ctx, &connector.id.to_string(), change).await?;
        w.commit().await?;
        Ok(connector)
    }

    /// Reads one connector.
    pub async fn get_connector(&self, id: ConnectorId) -> Result<Connector> {
        fetch(&mut self.read().await?.conn(), id).await
    }

    /// Lists up to `limit` connectors with ids above `after`, ordered by id.
    pub async fn list_connectors(&self, after: i64, limit: u32) -> Result<Vec<Connector>> {
        let q = query(format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit));
        let rows: Vec<ConnectorRow> = self.all(&q).await?;
        Ok(rows.into_iter().map(Connector::from).collect())
    }

    /// Every connector with the number of its agents that hold a stream to some replica.
    pub async fn connector_agent_counts(&self) -> Result<Vec<(i64, i64)>> {
        let q = query(
            "SELECT c.id, COUNT(DISTINCT s.agent_id) FROM connectors c \
             LEFT JOIN agent_streams s ON s.connector_id = c.id GROUP BY c.id ORDER BY c.id",
        );
        self.all(&q).await
    }

    /// Applies `edit` to a connector whose version is `expected_version` (when given).
    pub async fn update_connector(
        &self,
        ctx: &AuditContext,
        id: ConnectorId,
        expected_version: Option<i64>,
        edit: ConnectorEdit<'_>,
    ) -> Result<Connector> {
        let mut w = self.begin_write().await?;
        w.lock_row("connectors", id.0, RowLock::Update).await?;
        let current = fetch(&mut w.conn(), id).await?;
        rules::check_version(&id.to_string(), expected_version, current.version)?;
        let mut spec = current.spec.clone();
        edit(&mut spec)?;
        let now = now_micros();
        let q = query(
            "UPDATE connectors SET display_name = $1, name_key = $2, description = $3, \
             version = version + 1, update_time = $4 WHERE id = $5",
        )
        .bind(&spec.display_name)
        .bind(name_key(&spec.display_name))
        .bind(&spec.description)
        .bind(now)
        .bind(id.0);
        w.conn()
            .execute(&q)
            .await
            .map_err(|e| write_error(e, &spec.display_name))?;
        let connector = Connector {
            id,
            spec,
            version: current.version + 1,
            create_time: current.create_time,
            update_time: now,
        };
        let change = diff(Some(&current.audit_json()), Some(&connector.audit_json()));
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await?;
        Ok(connector)
    }

    /// Deletes a connector; refused while accounts use it.
    pub async fn delete_connector(
        &self,
        ctx: &AuditContext,
        id: ConnectorId,
        expected_version: Option<i64>,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        w.lock_row("connectors", id.0, RowLock::Delete).await?;
        let current = fetch(&mut w.conn(), id).await?;
        rules::check_version(&id.to_string(), expected_version, current.version)?;
        let q = query(
            "SELECT id, account_name FROM accounts WHERE network_connector_id = $1 ORDER BY id",
        )
        .bind(id.0);
        let users: Vec<(i64, String)> = w.conn().all(&q).await?;
        rules::not_in_use(
            &id.to_string(),
            &users,
            "point those accounts elsewhere first",
        )?;
        w.conn()
            .execute(&query("DELETE FROM connectors WHERE id = $1").bind(id.0))
            .await?;
        let change = diff(Some(&current.audit_json()), None);
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await
    }

    /// Stores the hash of a new enrollment token.
    pub async fn create_enrollment_token(
        &self,
        ctx: &AuditContext,
        connector: ConnectorId,
        token_hash: &str,
        expire_time: Micros,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let q = query(
            "INSERT INTO enrollment_tokens (connector_id, token_hash, expire_time, create_time) \
             SELECT id, $2, $3, $4 FROM connectors WHERE id = $1",
        )
        .bind(connector.0)
        .bind(token_hash)
        .bind(expire_time)
        .bind(now_micros());
        if w.conn().execute(&q).await? == 0 {
            return Err(Error::NotFound(connector.to_string()));
        }
        let made = serde_json::json!({
            "enrollment_token": REDACTED,
            "enrollment_token_expire_time": rfc3339(expire_time),
        });
        record(&mut w, ctx, &connector.to_string(), diff(None, Some(&made))).await?;
        w.commit().await
    }
}
