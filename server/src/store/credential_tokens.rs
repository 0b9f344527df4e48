//! The OAuth2 access tokens credentials got: sealed, shared by every replica until shortly
//! before they expire; the secrets they are got with; and the lock that lets one fetch per
//! credential run at a time across replicas.

use super::credentials::{fetch, seal_refresh_token};
use super::locks::{RowLock, Rule};
use super::{Store, Write};
use crate::crypto::{Cipher, KeyId, Sealed, aad};
use crate::domain::{Credential, CredentialId, now_micros};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// What a token request needs, as stored: the credential (its kind, client id, token URL and
/// scope) and the sealed refresh token of that kind. The caller opens it with its keys.
#[derive(Debug)]
pub struct StoredGrant {
    /// The credential as it was read.
    pub credential: Credential,
    /// The sealed refresh token (the refresh-token kind).
    pub refresh_token: Option<Sealed>,
}

/// A cached access token as stored: sealed, with what is known about it in clear.
#[derive(Debug)]
pub struct StoredToken {
    /// The sealed token.
    pub sealed: Sealed,
    /// The scopes it grants, separated by spaces.
    pub scope: String,
    /// When it expires, in microseconds since the epoch.
    pub expire_time: i64,
    /// When it was got.
    pub fetch_time: i64,
    /// How many tokens the credential has got so far (this one included).
    pub generation: i64,
}

/// An access token a credential got.
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// The token.
    pub token: Secret,
    /// The scopes it grants, separated by spaces.
    pub scope: String,
    /// When it expires, in microseconds since the epoch.
    pub expire_time: i64,
    /// When it was got.
    pub fetch_time: i64,
    /// How many tokens the credential has got so far (this one included).
    pub generation: i64,
}

/// Held while a token is fetched: on PostgreSQL a transaction holding the credential's
/// advisory lock, so one replica fetches and the others wait and then use its token. SQLite
/// has one server, whose fetches the token manager serialises itself.
pub struct FetchLock<'a>(#[allow(dead_code)] Option<Write<'a>>);

/// A `credential_tokens` row: key id, nonce, ciphertext, scope, expiry, fetch time,
/// generation.
type TokenRow = (i64, Vec<u8>, Vec<u8>, String, i64, i64, i64);

/// A sealed refresh token's key id, nonce and ciphertext.
type SealedTriple = (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);

/// A stored key id (rows from before key ids are under key 1).
fn stored_key(id: Option<i64>) -> Result<KeyId> {
    id.map_or(Ok(1), KeyId::try_from)
        .map_err(|_| Error::Crypto("a stored key id is out of range".into()))
}

impl Store {
    /// The credential's cached access token, sealed, if it has one.
    pub async fn cached_token(&self, id: CredentialId) -> Result<Option<StoredToken>> {
        let q = super::db::query(
            "SELECT token_key_id, token_nonce, token_ciphertext, scope, expire_time, fetch_time, \
             generation FROM credential_tokens WHERE credential_id = $1",
        )
        .bind(id.0);
        let row: Option<TokenRow> = self.optional(&q).await?;
        let Some((key, nonce, ciphertext, scope, expire_time, fetch_time, generation)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredToken {
            sealed: Sealed {
                key_id: stored_key(Some(key))?,
                nonce,
                ciphertext,
            },
            scope,
            expire_time,
            fetch_time,
            generation,
        }))
    }

    /// What a token request for credential `id` needs, as stored (the client secret is read
    /// like any credential's secret).
    pub async fn token_grant(&self, id: CredentialId) -> Result<StoredGrant> {
        let credential = fetch(&mut self.read().await?.conn(), id).await?;
        let q = super::db::query(
            "SELECT refresh_key_id, refresh_nonce, refresh_ciphertext FROM credentials \
             WHERE id = $1",
        )
        .bind(id.0);
        let row: Option<SealedTriple> = self.optional(&q).await?;
        let refresh_token = match row {
            Some((key, Some(nonce), Some(ciphertext))) => Some(Sealed {
                key_id: stored_key(key)?,
                nonce,
                ciphertext,
            }),
            _ => None,
        };
        Ok(StoredGrant {
            credential,
            refresh_token,
        })
    }

    /// Takes the lock under which one replica at a time fetches credential `id`'s token;
    /// released when dropped.
    pub async fn lock_token_fetch(&self, id: CredentialId) -> Result<FetchLock<'_>> {
        if !self.is_postgres() {
            return Ok(FetchLock(None));
        }
        let mut w = self.begin_write().await?;
        w.lock_rule(Rule::CredentialToken(id)).await?;
        Ok(FetchLock(Some(w)))
    }

    /// Stores the access token `token` that credential `id` got (with `version` as read for
    /// the request), and the refresh token the endpoint rotated to, in one transaction.
    /// Returns the token's generation, or `None` when the credential changed meanwhile (the
    /// token is then used once and not kept; a rotated refresh token is still stored, as the
    /// old one may no longer work).
    pub async fn save_token(
        &self,
        id: CredentialId,
        version: i64,
        token: &CachedToken,
        rotated_refresh: Option<&Secret>,
        cipher: &Cipher,
    ) -> Result<Option<i64>> {
        let mut w = self.begin_write().await?;
        w.lock_row("credentials", id.0, RowLock::Update).await?;
        let current = fetch(&mut w.conn(), id).await?;
        let now = now_micros();
        if let Some(refresh) = rotated_refresh {
            seal_refresh_token(&mut w, id, refresh, cipher, now).await?;
        }
        if current.version != version {
            w.commit().await?;
            return Ok(None);
        }
        let sealed = cipher.seal(&aad::access_token(id.0), token.token.expose().as_bytes())?;
        let q = super::db::query(
            "INSERT INTO credential_tokens (credential_id, token_nonce, token_ciphertext, scope, \
             expire_time, fetch_time, generation, token_key_id) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7) \
             ON CONFLICT (credential_id) DO UPDATE SET token_nonce = excluded.token_nonce, \
             token_key_id = excluded.token_key_id, \
             token_ciphertext = excluded.token_ciphertext, scope = excluded.scope, \
             expire_time = excluded.expire_time, fetch_time = excluded.fetch_time, \
             generation = credential_tokens.generation + 1 RETURNING generation",
        )
        .bind(id.0)
        .bind(sealed.nonce)
        .bind(sealed.ciphertext)
        .bind(&token.scope)
        .bind(token.expire_time)
        .bind(token.fetch_time)
        .bind(i64::from(sealed.key_id));
        let (generation,): (i64,) = w.conn().one(&q).await?;
        w.commit().await?;
        Ok(Some(generation))
    }

    /// Stores `refresh`, the refresh token an agent's token endpoint rotated to, as credential
    /// `id`'s, if agents still get its tokens (it may have changed meanwhile). Returns whether
    /// it was stored.
    pub async fn store_rotated_refresh_token(
        &self,
        id: CredentialId,
        refresh: &Secret,
        cipher: &Cipher,
    ) -> Result<bool> {
        let mut w = self.begin_write().await?;
        w.lock_row("credentials", id.0, RowLock::Update).await?;
        let current = match fetch(&mut w.conn(), id).await {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !current.spec.agents_rotate_refresh_token() {
            return Ok(false);
        }
        seal_refresh_token(&mut w, id, refresh, cipher, now_micros()).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Forgets credential `id`'s cached token if it is still generation `generation` (the
    /// relay refused it); a newer one is kept.
    pub async fn forget_token(&self, id: CredentialId, generation: i64) -> Result<()> {
        let q = super::db::query(
            "DELETE FROM credential_tokens WHERE credential_id = $1 AND generation = $2",
        )
        .bind(id.0)
        .bind(generation);
        self.execute(&q).await?;
        Ok(())
    }
}
