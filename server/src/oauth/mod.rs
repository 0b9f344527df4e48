//! OAuth2 credentials that get their own access tokens (client credentials, refresh token):
//! the server asks the credential's token endpoint when it needs a token, keeps the token
//! sealed in the database until shortly before it expires (shared by every replica), fetches
//! for one credential at a time (single flight: in this process by a mutex, across replicas by
//! the database's lock), and stores a rotated refresh token with the new access token. Every
//! fetch or use of a cached token is one `TOKEN` phase in the transcript; a token never is.

use crate::crypto::aad;
use crate::domain::Credential;
use crate::domain::{CredentialId, CredentialKind, now_micros};
use crate::keys::Keys;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::credential_tokens::CachedToken;
use mailplane_smtp::oauth::{self as client, Grant, HttpSettings, TokenRequest};
use mailplane_smtp::{self as smtp, FailureClass, PhaseRecord, PhaseStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lifetime assumed when the endpoint does not say (RFC 6749 recommends saying).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is renewed this long before it expires (or halfway, for short ones).
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// What a token request needs: the credential (its kind, client id, token URL and scope), the
/// client secret, and the refresh token of that kind.
#[derive(Debug)]
struct TokenGrant {
    credential: Credential,
    client_secret: Secret,
    refresh_token: Option<Secret>,
}

/// A token to send, and the `TOKEN` phase that says where it came from.
#[derive(Debug)]
pub struct Acquired {
    /// The access token.
    pub token: Secret,
    /// The transcript's `TOKEN` phase (ok).
    pub record: PhaseRecord,
    /// The cached token's generation (`None` when it could not be kept).
    pub generation: Option<i64>,
}

/// Why there is no token to send.
#[derive(Debug)]
pub struct TokenFailure {
    /// The class.
    pub class: FailureClass,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// The transcript's `TOKEN` phase (failed).
    pub record: PhaseRecord,
}

/// Gets and caches credentials' access tokens.
pub struct AccessTokens {
    store: Arc<Store>,
    keys: Arc<Keys>,
    http: HttpSettings,
    /// One mutex per credential being fetched: single flight within this process.
    flights: Mutex<HashMap<CredentialId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTokens")
    }
}

/// When a token got at `fetch_time` that expires at `expire_time` is due for renewal.
fn renew_at(fetch_time: i64, expire_time: i64) -> i64 {
    let lifetime = expire_time.saturating_sub(fetch_time).max(0);
    let before = i64::try_from(RENEW_BEFORE.as_micros()).unwrap_or(i64::MAX);
    expire_time.saturating_sub(before.min(lifetime / 2))
}

impl AccessTokens {
    /// A token manager over `store`, opening and sealing secrets with `keys`.
    pub fn new(store: Arc<Store>, keys: Arc<Keys>, http: HttpSettings) -> Self {
        Self {
            store,
            keys,
            http,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The keys secrets are opened with.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn flight(&self, id: CredentialId) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Drop the mutexes no one holds or waits for, so the map stays small.
        flights.retain(|_, m| Arc::strong_count(m) > 1);
        Arc::clone(flights.entry(id).or_default())
    }

    /// An access token for credential `id`: the cached one while it is fresh, else a new one.
    /// `refused` is the generation of a token the relay just refused: it is dropped, and a
    /// token of another generation (a replica may have renewed it meanwhile) or a new one is
    /// returned.
    pub async fn access_token(
        &self,
        id: CredentialId,
        refused: Option<i64>,
    ) -> Result<Acquired, TokenFailure> {
        let started = Instant::now();
        if refused.is_none()
            && let Some(acquired) = self.fresh_cached(id, None, started).await?
        {
            return Ok(acquired);
        }
        let flight = self.flight(id);
        let _in_process = flight.lock().await;
        let _across_replicas = self
            .store
            .lock_token_fetch(id)
            .await
            .map_err(|e| unavailable(&e, started))?;
        // Someone may have fetched while this call waited.
        if let Some(acquired) = self.fresh_cached(id, refused, started).await? {
            return Ok(acquired);
        }
        if let Some(generation) = refused {
            self.store
                .forget_token(id, generation)
                .await
                .map_err(|e| unavailable(&e, started))?;
        }
        let grant = self.grant(id).await.map_err(|e| unavailable(&e, started))?;
        self.fetch(id, &grant, started).await
    }

    /// What an agent needs to get credential `id`'s tokens itself: the endpoint, the client,
    /// and the client secret and refresh token, decrypted (they travel in the job, over the
    /// agent's mTLS stream).
    pub async fn connector_grant(
        &self,
        id: CredentialId,
    ) -> Result<smtp::TokenGrant, TokenFailure> {
        let started = Instant::now();
        let grant = self.grant(id).await.map_err(|e| unavailable(&e, started))?;
        let c = grant.credential;
        if c.spec.kind == CredentialKind::OAuth2RefreshToken && grant.refresh_token.is_none() {
            return Err(no_refresh_token(id, started));
        }
        Ok(smtp::TokenGrant {
            credential: id.to_string(),
            etag: crate::domain::etag(c.version),
            token_url: c.spec.oauth.token_url,
            client_id: c.spec.oauth.client_id,
            client_secret: grant.client_secret,
            refresh_token: grant.refresh_token,
            scope: c.spec.oauth.scope,
        })
    }

    /// Stores the refresh token an agent's token endpoint rotated to, for credential `id`
    /// whose tokens agents get. Returns whether it was stored (the credential may have gone,
    /// or changed its kind or token source meanwhile).
    pub async fn store_rotated_refresh_token(
        &self,
        id: CredentialId,
        refresh: &Secret,
    ) -> crate::error::Result<bool> {
        let primary = self.keys.primary().await?;
        let stored = self
            .store
            .store_rotated_refresh_token(id, refresh, &primary)
            .await?;
        if stored {
            tracing::info!(credential = %id, "stored the refresh token an agent's endpoint rotated to");
        }
        Ok(stored)
    }

    /// What a token request for credential `id` needs, decrypted.
    async fn grant(&self, id: CredentialId) -> crate::error::Result<TokenGrant> {
        let stored = self.store.token_grant(id).await?;
        let client_secret = self.keys.credential_secret(id).await?;
        let refresh_token = match &stored.refresh_token {
            Some(sealed) => Some(
                self.keys
                    .open_secret(&aad::refresh_token(id.0), sealed)
                    .await?,
            ),
            None => None,
        };
        Ok(TokenGrant {
            credential: stored.credential,
            client_secret,
            refresh_token,
        })
    }

    /// The credential's cached access token, if it has one that this server's keys open (one
    /// that does not is only a cache miss).
    async fn cached(&self, id: CredentialId) -> crate::error::Result<Option<CachedToken>> {
        let Some(stored) = self.store.cached_token(id).await? else {
            return Ok(None);
        };
        let Ok(token) = self
            .keys
            .open_secret(&aad::access_token(id.0), &stored.sealed)
            .await
        else {
            return Ok(None);
        };
        Ok(Some(CachedToken {
            token,
            scope: stored.scope,
            expire_time: stored.expire_time,
            fetch_time: stored.fetch_time,
            generation: stored.generation,
        }))
    }

    /// The cached token, if it is fresh and not generation `refused`.
    async fn fresh_cached(
        &self,
        id: CredentialId,
        refused: Option<i64>,
        started: Instant,
    ) -> Result<Option<Acquired>, TokenFailure> {
        let cached = self
            .cached(id)
            .await
            .map_err(|e| unavailable(&e, started))?;
        let now = now_micros();
        Ok(cached
            .filter(|c| renew_at(c.fetch_time, c.expire_time) > now)
            .filter(|c| Some(c.generation) != refused)
            .map(|c| {
                let mut record = PhaseRecord::new(smtp::Phase::Token, PhaseStatus::Ok);
                record.duration = started.elapsed();
                record.detail = vec![
                    format!("cached access token (generation {})", c.generation),
                    format!("scope: {}", c.scope),
                    format!("expires in {} s", (c.expire_time - now).max(0) / 1_000_000),
                ];
                Acquired {
                    token: c.token,
                    record,
                    generation: Some(c.generation),
                }
            }))
    }

    /// Asks the endpoint for a token, checks it, and stores it.
    async fn fetch(
        &self,
        id: CredentialId,
        grant: &TokenGrant,
        started: Instant,
    ) -> Result<Acquired, TokenFailure> {
        let c = &grant.credential;
        let request = TokenRequest {
            url: &c.spec.oauth.token_url,
            client_id: &c.spec.oauth.client_id,
            client_secret: &grant.client_secret,
            scope: &c.spec.oauth.scope,
            grant: match (c.spec.kind, &grant.refresh_token) {
                (CredentialKind::OAuth2RefreshToken, Some(refresh)) => Grant::RefreshToken(refresh),
                (CredentialKind::OAuth2RefreshToken, None) => {
                    return Err(no_refresh_token(id, started));
                }
                _ => Grant::ClientCredentials,
            },
        };
        let mut record = PhaseRecord::new(smtp::Phase::Token, PhaseStatus::Ok);
        record.commands.push(request.shown());
        let response = match client::request(&self.http, &request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(credential = %id, error = %e, "token request failed");
                let (class, hint) = e.class_and_hint();
                crate::metrics::token_request(
                    mailplane_smtp::proto::failure_class(class).as_str_name(),
                );
                let mut f = failure(class, e.to_string(), hint.to_owned(), e.status(), started);
                f.record.commands = record.commands;
                return Err(f);
            }
        };
        let scope = c.spec.oauth.scope.as_str();
        let missing = client::missing_scopes(scope, response.scope.as_deref());
        crate::metrics::token_request(if missing.is_empty() {
            "ok"
        } else {
            "FAILURE_CLASS_OAUTH_SCOPE_MISSING"
        });
        if !missing.is_empty() {
            let mut f = failure(
                FailureClass::OAuthScopeMissing,
                format!(
                    "the token endpoint granted {:?}, without {}",
                    response.scope.as_deref().unwrap_or_default(),
                    missing.join(" ")
                ),
                FailureClass::OAuthScopeMissing.default_hint().to_owned(),
                Some(response.status),
                started,
            );
            f.record.commands = record.commands;
            return Err(f);
        }
        let lifetime = response
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let now = now_micros();
        let granted = response.scope.clone().unwrap_or_else(|| scope.to_owned());
        let token = CachedToken {
            token: response.access_token,
            scope: granted.clone(),
            expire_time: now
                .saturating_add(i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX)),
            fetch_time: now,
            generation: 0,
        };
        let rotated = response.refresh_token.as_ref().filter(|new| {
            grant
                .refresh_token
                .as_ref()
                .is_none_or(|old| old.expose() != new.expose())
                && c.spec.kind == CredentialKind::OAuth2RefreshToken
        });
        let primary = self
            .keys
            .primary()
            .await
            .map_err(|e| unavailable(&e, started))?;
        let generation = self
            .store
            .save_token(id, c.version, &token, rotated, &primary)
            .await
            .map_err(|e| unavailable(&e, started))?;
        tracing::info!(
            credential = %id,
            lifetime_s = lifetime.as_secs(),
            rotated_refresh_token = rotated.is_some(),
            "got an OAuth2 access token"
        );
        record.reply = Some(client::http_reply(response.status));
        record.detail = vec![
            format!("scope: {granted}"),
            format!("expires in {} s", lifetime.as_secs()),
        ];
        if rotated.is_some() {
            record
                .detail
                .push("the endpoint rotated the refresh token; the new one is stored".into());
        }
        record.duration = started.elapsed();
        Ok(Acquired {
            token: token.token,
            record,
            generation,
        })
    }
}

/// A failed `TOKEN` phase.
fn failure(
    class: FailureClass,
    message: String,
    hint: String,
    status: Option<u16>,
    started: Instant,
) -> TokenFailure {
    let mut record = PhaseRecord::new(smtp::Phase::Token, PhaseStatus::Failed);
    record.duration = started.elapsed();
    record.detail.push(message.clone());
    if let Some(code) = status {
        record.reply = Some(client::http_reply(code));
    }
    TokenFailure {
        class,
        message,
        hint,
        record,
    }
}

/// A refresh-token credential without its refresh token.
fn no_refresh_token(id: CredentialId, started: Instant) -> TokenFailure {
    failure(
        FailureClass::OAuthGrantRejected,
        format!("{id} has no refresh token stored"),
        "store the refresh token with UpdateCredential (update_mask: refresh_token)".into(),
        None,
        started,
    )
}

impl TokenFailure {
    /// The credential's tokens are got by agents, and the account sends without a connector.
    pub fn connector_required(id: CredentialId) -> Self {
        failure(
            FailureClass::OAuthEndpointUnreachable,
            format!(
                "the tokens of {id} are fetched by a network connector's agents, and the \
                 account does not use a network connector"
            ),
            "send through a network connector, or set the credential's token_source to \
             TOKEN_SOURCE_SERVER"
                .into(),
            None,
            Instant::now(),
        )
    }
}

/// The credential's secrets cannot be read (or the database failed).
fn unavailable(e: &crate::error::Error, started: Instant) -> TokenFailure {
    failure(
        FailureClass::OAuthEndpointUnreachable,
        format!("cannot read the credential's OAuth2 settings: {e}"),
        "check that the server runs with the key file the credential was stored with, or store \
         the client secret again"
            .to_owned(),
        None,
        started,
    )
}

/// The session's hook for a refused token: one new token from the same manager.
pub struct Refresher {
    /// The manager.
    pub tokens: Arc<AccessTokens>,
    /// The credential.
    pub id: CredentialId,
    /// The generation of the token the session was given.
    pub generation: Option<i64>,
}

impl smtp::TokenRefresh for Refresher {
    fn refresh(&self) -> smtp::RefreshFuture<'_> {
        Box::pin(async move {
            // Without a generation the token was never cached: any new one will do.
            let refused = Some(self.generation.unwrap_or(i64::MIN));
            match self.tokens.access_token(self.id, refused).await {
                Ok(a) => Ok(smtp::RefreshedToken {
                    token: a.token,
                    summary: a.record.detail.join(", "),
                }),
                Err(f) => Err(smtp::RefreshError {
                    class: f.class,
                    message: f.message,
                    hint: f.hint,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_a_minute_early_or_halfway() {
        let s = 1_000_000;
        assert_eq!(renew_at(0, 3600 * s), 3540 * s);
        assert_eq!(renew_at(0, 100 * s), 50 * s);
        assert_eq!(renew_at(0, 0), 0);
        assert_eq!(renew_at(10, 5), 5);
    }
}
