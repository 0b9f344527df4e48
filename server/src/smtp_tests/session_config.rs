//! The session configuration of a test: every field of the account, its credential's secret,
//! the request, and the server's SMTP settings.

use super::SmtpSettings;
use crate::domain::oauth::TokenSource;
use crate::domain::{Account, TestRequest, mechanism_for};
use crate::keys::Keys;
use crate::oauth::{AccessTokens, Refresher, TokenFailure};
use crate::store::Store;
use mailplane_smtp as smtp;
use std::sync::Arc;

/// The account's credential cannot be read: it is gone, or its secret does not decrypt with
/// this server's key. The test fails as `CREDENTIAL_UNAVAILABLE`, and nothing is sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the account's credential: {0}")]
pub struct CredentialUnavailable(#[source] pub crate::error::Error);

/// What a person should do about [`CredentialUnavailable`].
pub const CREDENTIAL_UNAVAILABLE_HINT: &str = "the account's credential cannot be read: check \
     that the server runs with the key file the credential was stored with, or store the secret \
     again";

/// The credentials for AUTH, and where a token came from.
#[derive(Debug)]
pub struct SessionAuth {
    /// What the session sends.
    pub credentials: smtp::Credentials,
    /// The `TOKEN` phase, for the kinds the server gets tokens for.
    pub token: Option<smtp::PhaseRecord>,
}

/// Why a session cannot authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthUnavailable {
    /// The credential cannot be read.
    #[error(transparent)]
    Credential(#[from] CredentialUnavailable),
    /// No access token could be had.
    #[error("{}", .0.message)]
    Token(Box<TokenFailure>),
}

/// The credentials for AUTH, if the account authenticates: the credential's user name, its
/// decrypted secret (or, for the kinds that get tokens, an access token from `tokens`, with a
/// refresher for one retry), and the destinations it may be sent to (which the session checks
/// again).
pub async fn credentials(
    store: &Store,
    keys: &Keys,
    tokens: &Arc<AccessTokens>,
    account: &Account,
) -> Result<Option<SessionAuth>, AuthUnavailable> {
    let s = &account.spec;
    let Some(id) = s.credential.filter(|_| s.use_authentication) else {
        return Ok(None);
    };
    let credential = store
        .get_credential(id)
        .await
        .map_err(CredentialUnavailable)?;
    let mechanism = s
        .auth_mechanism
        .unwrap_or(mechanism_for(credential.spec.kind));
    let from_connector = credential.spec.kind.gets_tokens()
        && credential.spec.oauth.token_source == TokenSource::Connector;
    if from_connector {
        // The agent asks the endpoint (reachable only from its network): the job carries the
        // grant, and the session's secret stays empty until the agent puts a token there.
        if !(s.use_network_connector && s.network_connector.is_some()) {
            return Err(AuthUnavailable::Token(Box::new(
                TokenFailure::connector_required(id),
            )));
        }
        let grant = tokens
            .connector_grant(id)
            .await
            .map_err(|f| AuthUnavailable::Token(Box::new(f)))?;
        let mut credentials =
            smtp::Credentials::new(mechanism, credential.spec.username, smtp::Secret::new(""))
                .allowed_to(credential.spec.allowed_destinations);
        credentials.token_grant = Some(grant);
        return Ok(Some(SessionAuth {
            credentials,
            token: None,
        }));
    }
    let (secret, token, refresh) = if credential.spec.kind.gets_tokens() {
        let acquired = tokens
            .access_token(id, None)
            .await
            .map_err(|f| AuthUnavailable::Token(Box::new(f)))?;
        let refresher = Refresher {
            tokens: Arc::clone(tokens),
            id,
            generation: acquired.generation,
        };
        (
            acquired.token,
            Some(acquired.record),
            Some(smtp::TokenRefresher(Arc::new(refresher))),
        )
    } else {
        let secret = keys
            .credential_secret(id)
            .await
            .map_err(CredentialUnavailable)?;
        (secret, None, None)
    };
    let mut credentials = smtp::Credentials::new(mechanism, credential.spec.username, secret)
        .allowed_to(credential.spec.allowed_destinations);
    credentials.refresh = refresh;
    Ok(Some(SessionAuth { credentials, token }))
}

/// How to reach and authenticate to `account`'s relay: its host, port, security, certificate
/// and EHLO settings, the server's SMTP settings, and `auth`. No message; tests add theirs,
/// and the outbox sends its own through the pool.
pub fn connection_config(
    settings: &SmtpSettings,
    account: &Account,
    auth: Option<smtp::Credentials>,
) -> smtp::SessionConfig {
    let s = &account.spec;
    let mut config = smtp::SessionConfig::new(s.host.clone(), s.port, s.security);
    config.ignore_certificate_errors = s.ignore_certificate_errors;
    config.extra_ca_pem.clone_from(&settings.extra_ca_pem);
    config.trust = settings.trust;
    config.helo_name.clone_from(&s.helo_name);
    config.timeouts = settings.timeouts;
    config.auth = auth;
    config.allow_plaintext_auth = s.allow_plaintext_auth;
    config
}

/// The session settings for a test of `account`.
pub fn session_config(
    settings: &SmtpSettings,
    account: &Account,
    auth: Option<smtp::Credentials>,
    request: &TestRequest,
) -> smtp::SessionConfig {
    let s = &account.spec;
    let mut config = connection_config(settings, account, auth);
    config.stop_after = request.stop_after;
    config.message = Some(smtp::MessageSpec {
        sender: s.sender_email.clone(),
        recipients: vec![request.to.clone()],
        reply_to: s.reply_to_email.clone(),
        return_path: s.return_path_email.clone(),
        disposition_notification_to: if s.send_read_confirmation {
            s.confirmation_email.clone()
        } else {
            None
        },
        subject: request.subject.clone(),
        body: request.body.clone(),
        footer: s.enable_footer.then(|| s.footer_text.clone()),
        charset: Some(s.charset.clone()),
        plain_text_only: s.plain_text_only,
    });
    config
}
