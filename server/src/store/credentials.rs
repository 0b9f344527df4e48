//! Credentials: a user name and a secret sealed at rest under the key file's key.

use super::audit::record;
use super::db::{Conn, query};
use super::locks::RowLock;
use super::rows::{CREDENTIAL_COLUMNS, CredentialRow, convert};
use super::{CredentialEdit, Store, Write, accounts};
use crate::audit::{AuditContext, REDACTED, diff};
use crate::crypto::{Cipher, Sealed};
use crate::domain::credential::destinations_to_column;
use crate::domain::{Credential, CredentialId, CredentialKind, CredentialSpec, now_micros, rules};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// A credential's sealed secret: key id, nonce and ciphertext, all NULL until a secret is set.
type SealedRow = (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);

/// One credential, on `conn`.
pub(super) async fn fetch(conn: &mut Conn<'_>, id: CredentialId) -> Result<Credential> {
    let q = query(format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1"
    ))
    .bind(id.0);
    match conn.optional::<CredentialRow>(&q).await? {
        Some(row) => row.try_into(),
        None => Err(Error::NotFound(id.to_string())),
    }
}

/// Seals `secret` under `cipher` (bound to the credential's name) and stores it with the key's
/// id.
async fn seal_secret(
    w: &mut Write<'_>,
    id: CredentialId,
    secret: &Secret,
    cipher: &Cipher,
    now: i64,
) -> Result<()> {
    let sealed = cipher.seal(
        &crate::crypto::aad::credential(id.0),
        secret.expose().as_bytes(),
    )?;
    let q = query(
        "UPDATE credentials SET secret_key_id = $1, secret_nonce = $2, secret_ciphertext = $3, \
         secret_update_time = $4 WHERE id = $5",
    )
    .bind(i64::from(sealed.key_id))
    .bind(sealed.nonce)
    .bind(sealed.ciphertext)
    .bind(now)
    .bind(id.0);
    w.conn().execute(&q).await?;
    Ok(())
}

/// Seals `refresh` under `cipher` (bound to the credential's name and `#refresh_token`) and
/// stores it with the key's id.
pub(super) async fn seal_refresh_token(
    w: &mut Write<'_>,
    id: CredentialId,
    refresh: &Secret,
    cipher: &Cipher,
    now: i64,
) -> Result<()> {
    let sealed = cipher.seal(
        &crate::crypto::aad::refresh_token(id.0),
        refresh.expose().as_bytes(),
    )?;
    let q = query(
        "UPDATE credentials SET refresh_nonce = $1, refresh_ciphertext = $2, \
         refresh_update_time = $3, refresh_key_id = $5 WHERE id = $4",
    )
    .bind(sealed.nonce)
    .bind(sealed.ciphertext)
    .bind(now)
    .bind(id.0)
    .bind(i64::from(sealed.key_id));
    w.conn().execute(&q).await?;
    Ok(())
}

/// The secrets an update sets, decided by its edit (they depend on the kind it leaves).
#[derive(Debug, Default)]
pub struct SecretChange {
    /// The new secret (password, access token or client secret).
    pub secret: Option<Secret>,
    /// The new refresh token.
    pub refresh_token: Option<Secret>,
}

impl Store {
    /// Creates a credential, sealing `secret` (and `refresh`, for the refresh-token kind)
    /// under `cipher`.
    pub async fn create_credential(
        &self,
        ctx: &AuditContext,
        spec: CredentialSpec,
        secret: &Secret,
        refresh: Option<&Secret>,
        cipher: &Cipher,
    ) -> Result<Credential> {
        let mut w = self.begin_write().await?;
        let now = now_micros();
        let q = query(
            "INSERT INTO credentials (display_name, username, kind, oauth_grant, \
             allowed_destinations, token_url, client_id, scope, version, create_time, \
             update_time, token_source) VALUES ($1, $2, $3, $9, $4, $5, $6, $7, 1, $8, $8, $10) \
             RETURNING id",
        )
        .bind(&spec.display_name)
        .bind(&spec.username)
        .bind(spec.kind.columns().0)
        .bind(destinations_to_column(&spec.allowed_destinations))
        .bind(&spec.oauth.token_url)
        .bind(&spec.oauth.client_id)
        .bind(&spec.oauth.scope)
        .bind(now)
        .bind(spec.kind.columns().1)
        .bind(spec.oauth.token_source.as_str());
        let (id,): (i64,) = w.conn().one(&q).await?;
        let id = CredentialId(id);
        seal_secret(&mut w, id, secret, cipher, now).await?;
        if let Some(refresh) = refresh {
            seal_refresh_token(&mut w, id, refresh, cipher, now).await?;
        }
        let created = fetch(&mut w.conn(), id).await?;
        let mut after = created.audit_json();
        after["secret"] = serde_json::Value::from(REDACTED);
        if refresh.is_some() {
            after["refresh_token"] = serde_json::Value::from(REDACTED);
        }
        record(&mut w, ctx, &id.to_string(), diff(None, Some(&after))).await?;
        w.commit().await?;
        Ok(created)
    }

    /// Reads one credential, without its secret.
    pub async fn get_credential(&self, id: CredentialId) -> Result<Credential> {
        fetch(&mut self.read().await?.conn(), id).await
    }

    /// Lists up to `limit` credentials with ids above `after`, ordered by id.
    pub async fn list_credentials(&self, after: i64, limit: u32) -> Result<Vec<Credential>> {
        let q = query(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit));
        convert(self.all::<CredentialRow>(&q).await?)
    }

    /// Applies `edit`, and rotates the secret when `new_secret` is given (sealed under its key).
    /// Accounts that use the credential must still fit its kind and stay among its allowed
    /// destinations.
    pub async fn update_credential(
        &self,
        ctx: &AuditContext,
        id: CredentialId,
        expected_version: Option<i64>,
        edit: CredentialEdit<'_>,
        secrets: &std::sync::Mutex<SecretChange>,
        cipher: &Cipher,
    ) -> Result<Credential> {
        let mut w = self.begin_write().await?;
        w.lock_row("credentials", id.0, RowLock::Update).await?;
        let current = fetch(&mut w.conn(), id).await?;
        rules::check_version(&id.to_string(), expected_version, current.version)?;
        let mut spec = current.spec.clone();
        edit(&mut spec)?;
        let change = std::mem::take(
            &mut *secrets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let new_secret = change.secret.as_ref();
        let kind_changed = spec.kind != current.spec.kind;
        let destinations_changed = spec.allowed_destinations != current.spec.allowed_destinations;
        let source_changed = spec.agents_get_tokens() != current.spec.agents_get_tokens();
        if kind_changed || destinations_changed || source_changed {
            // Accounts that use the credential must still fit its new kind, stay among its
            // allowed destinations, and send through a connector if its agents get the tokens.
            let users = accounts::using_credential(&mut w.conn(), id.0).await?;
            rules::credential_kind(id, spec.kind, &users)?;
            rules::credential_destinations(id, &spec.allowed_destinations, &users)?;
            rules::credential_token_source(id, &spec, &users)?;
        }
        let now = now_micros();
        let q = query(
            "UPDATE credentials SET display_name = $1, username = $2, kind = $3, \
             allowed_destinations = $4, token_url = $5, client_id = $6, scope = $7, \
             version = version + 1, update_time = $8, oauth_grant = $10, token_source = $11 \
             WHERE id = $9",
        )
        .bind(&spec.display_name)
        .bind(&spec.username)
        .bind(spec.kind.columns().0)
        .bind(destinations_to_column(&spec.allowed_destinations))
        .bind(&spec.oauth.token_url)
        .bind(&spec.oauth.client_id)
        .bind(&spec.oauth.scope)
        .bind(now)
        .bind(id.0)
        .bind(spec.kind.columns().1)
        .bind(spec.oauth.token_source.as_str());
        w.conn().execute(&q).await?;
        if let Some(secret) = new_secret {
            seal_secret(&mut w, id, secret, cipher, now).await?;
        }
        if let Some(refresh) = &change.refresh_token {
            seal_refresh_token(&mut w, id, refresh, cipher, now).await?;
        }
        if spec.kind != CredentialKind::OAuth2RefreshToken {
            let q = query(
                "UPDATE credentials SET refresh_nonce = NULL, refresh_ciphertext = NULL, \
                 refresh_key_id = NULL, refresh_update_time = NULL \
                 WHERE id = $1 AND refresh_update_time IS NOT NULL",
            )
            .bind(id.0);
            w.conn().execute(&q).await?;
        }
        if kind_changed
            || new_secret.is_some()
            || change.refresh_token.is_some()
            || spec.oauth != current.spec.oauth
            || spec.username != current.spec.username
        {
            // A token got with other settings or secrets is not this credential's any more.
            let q = query("DELETE FROM credential_tokens WHERE credential_id = $1").bind(id.0);
            w.conn().execute(&q).await?;
        }
        let updated = fetch(&mut w.conn(), id).await?;
        let mut audit = diff(Some(&current.audit_json()), Some(&updated.audit_json()));
        if new_secret.is_some() {
            audit["secret"] = serde_json::json!({ "before": REDACTED, "after": REDACTED });
        }
        if change.refresh_token.is_some() {
            audit["refresh_token"] = serde_json::json!({ "before": REDACTED, "after": REDACTED });
        }
        record(&mut w, ctx, &id.to_string(), audit).await?;
        w.commit().await?;
        Ok(updated)
    }

    /// Deletes a credential; refused while accounts use it.
    pub async fn delete_credential(
        &self,
        ctx: &AuditContext,
        id: CredentialId,
        expected_version: Option<i64>,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        w.lock_row("credentials", id.0, RowLock::Delete).await?;
        let current = fetch(&mut w.conn(), id).await?;
        rules::check_version(&id.to_string(), expected_version, current.version)?;
        let q = query("SELECT id, account_name FROM accounts WHERE credential_id = $1 ORDER BY id")
            .bind(id.0);
        let users: Vec<(i64, String)> = w.conn().all(&q).await?;
        rules::not_in_use(
            &id.to_string(),
            &users,
            "point those accounts at another credential first",
        )?;
        w.conn()
            .execute(&query("DELETE FROM credentials WHERE id = $1").bind(id.0))
            .await
            .map_err(|e| accounts::write_error(e, None))?;
        let change = diff(Some(&current.audit_json()), None);
        record(&mut w, ctx, &id.to_string(), change).await?;
        w.commit().await
    }

    /// A credential's sealed secret (`crate::keys::Keys::credential_secret` opens it).
    pub async fn sealed_secret(&self, id: CredentialId) -> Result<Sealed> {
        let q = query(
            "SELECT secret_key_id, secret_nonce, secret_ciphertext FROM credentials WHERE id = $1",
        )
        .bind(id.0);
        let row: Option<SealedRow> = self.optional(&q).await?;
        match row {
            None => Err(Error::NotFound(id.to_string())),
            Some((key_id, Some(nonce), Some(ciphertext))) => {
                let key_id = key_id
                    .map_or(Ok(1), crate::crypto::KeyId::try_from)
                    .map_err(|_| Error::Internal(format!("{id} has an invalid key id")))?;
                Ok(Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                })
            }
            Some(_) => Err(Error::FailedPrecondition(format!("{id} has no secret"))),
        }
    }
}
