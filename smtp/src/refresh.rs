//! A fresh OAuth2 access token on demand: when a relay refuses the token a session was given,
//! the session asks its [`TokenRefresher`] for a new one and tries AUTH once more. The server
//! gets tokens from the credential's endpoint; an agent gets none (the server fetched its
//! token just before sending the job), unless the job carries a [`TokenGrant`] for it to
//! get the token itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{FailureClass, Secret};

/// How to get a credential's access tokens, for an agent that asks the token endpoint itself
/// (the endpoint is reachable only from its network). Travels in the job in place of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The credential's resource name (`credentials/{id}`).
    pub credential: String,
    /// The credential's etag: with the name, the key of the agent's token cache.
    pub etag: String,
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The refresh token, for the refresh-token grant (else client credentials).
    pub refresh_token: Option<Secret>,
    /// The scopes asked for, separated by spaces.
    pub scope: String,
}

/// A new access token, and what the transcript may say of it (never the token).
#[derive(Debug)]
pub struct RefreshedToken {
    /// The token.
    pub token: Secret,
    /// The endpoint, HTTP status, scopes granted and lifetime, for the transcript.
    pub summary: String,
}

/// Why no new token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RefreshError {
    /// The failure class (one of the `OAuth*` classes).
    pub class: FailureClass,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// The future a refresh returns.
pub type RefreshFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RefreshedToken, RefreshError>> + Send + 'a>>;

/// Gets a new access token in place of the one the relay refused.
pub trait TokenRefresh: Send + Sync {
    /// A new token (not the cached one the relay refused).
    fn refresh(&self) -> RefreshFuture<'_>;
}

/// A shared [`TokenRefresh`].
#[derive(Clone)]
pub struct TokenRefresher(pub Arc<dyn TokenRefresh>);

impl std::fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenRefresher")
    }
}

/// Refreshers are interchangeable (each asks the server for the credential's token), so two
/// configurations that differ only in theirs are the same: a pooled connection stays usable.
impl PartialEq for TokenRefresher {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TokenRefresher {}
