//! The OAuth2 access tokens credentials got: sealed, shared by every replica until shortly
//! before they expire; the secrets they are got with; and the lock that lets one fetch per
//! credential run at a time across replicas.

use super::credentials::{fetch, refresh_aad, seal_refresh_token};
use super::locks::{RowLock, Rule};
use super::{Store, Write};
use crate::crypto::{Cipher, Sealed};
use crate::domain::{Credential, CredentialId, now_micros};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// What a token request needs: the credential (its kind, client id, token URL and scope), the
/// client secret, and the refresh token of that kind.
#[derive(Debug)]
pub struct TokenGrant {
    /// The credential as it was read.
    pub credential: Credential,
    /// The client secret.
    pub client_secret: Secret,
    /// The refresh token (the refresh-token kind).
    pub refresh_token: Option<Secret>,
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

/// The associated data an access token is sealed with.
fn access_aad(id: CredentialId) -> String {
    format!("{id}#access_token")
}

/// A `credential_tokens` row: nonce, ciphertext, scope, expiry, fetch time, generation.
type TokenRow = (Vec<u8>, Vec<u8>, String, i64, i64, i64);

/// A sealed row's nonce and ciphertext.
type SealedPair = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Store {
    /// The credential's cached access token, if it has one that this server's key opens (one
    /// that does not is only a cache miss).
    pub async fn cached_token(
        &self,
        id: CredentialId,
        cipher: &Cipher,
    ) -> Result<Option<CachedToken>> {
        let q = super::db::query(
            "SELECT token_nonce, token_ciphertext, scope, expire_time, fetch_time, generation \
             FROM credential_tokens WHERE credential_id = $1",
        )
        .bind(id.0);
        let row: Option<TokenRow> = self.optional(&q).await?;
        let Some((nonce, ciphertext, scope, expire_time, fetch_time, generation)) = row else {
            return Ok(None);
        };
        let Ok(plain) = cipher.open(access_aad(id).as_bytes(), &Sealed { nonce, ciphertext })
        else {
            return Ok(None);
        };
        let Ok(token) = String::from_utf8(plain) else {
            return Ok(None);
        };
        Ok(Some(CachedToken {
            token: Secret::new(token),
            scope,
            expire_time,
            fetch_time,
            generation,
        }))
    }

    /// What a token request for credential `id` needs, decrypted.
    pub async fn token_grant(&self, id: CredentialId, cipher: &Cipher) -> Result<TokenGrant> {
        let credential = fetch(&mut self.read().await?.conn(), id).await?;
        let client_secret = self.credential_secret(id, cipher).await?;
        let q = super::db::query(
            "SELECT refresh_nonce, refresh_ciphertext FROM credentials WHERE id = $1",
        )
        .bind(id.0);
        let row: Option<SealedPair> = self.optional(&q).await?;
        let refresh_token = match row {
            Some((Some(nonce), Some(ciphertext))) => {
                let plain =
                    cipher.open(refresh_aad(id).as_bytes(), &Sealed { nonce, ciphertext })?;
                Some(Secret::new(String::from_utf8(plain).map_err(|_| {
                    Error::Crypto("stored refresh token is not UTF-8".into())
                })?))
            }
            _ => None,
        };
        Ok(TokenGrant {
            credential,
            client_secret,
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
        let sealed = cipher.seal(access_aad(id).as_bytes(), token.token.expose().as_bytes())?;
        let q = super::db::query(
            "INSERT INTO credential_tokens (credential_id, token_nonce, token_ciphertext, scope, \
             expire_time, fetch_time, generation) VALUES ($1, $2, $3, $4, $5, $6, 1) \
             ON CONFLICT (credential_id) DO UPDATE SET token_nonce = excluded.token_nonce, \
             token_ciphertext = excluded.token_ciphertext, scope = excluded.scope, \
             expire_time = excluded.expire_time, fetch_time = excluded.fetch_time, \
             generation = credential_tokens.generation + 1 RETURNING generation",
        )
        .bind(id.0)
        .bind(sealed.nonce)
        .bind(sealed.ciphertext)
        .bind(&token.scope)
        .bind(token.expire_time)
        .bind(token.fetch_time);
        let (generation,): (i64,) = w.conn().one(&q).await?;
        w.commit().await?;
        Ok(Some(generation))
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
