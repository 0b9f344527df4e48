//! OAuth2 access tokens this agent gets itself, for the credentials whose token endpoint only
//! its network reaches: the job carries a grant (the endpoint, the client and its secrets) in
//! place of a token.
//!
//! Tokens stay in memory only, per credential and etag (a changed credential starts afresh),
//! until shortly before they expire. One fetch per credential runs at a time (the entry's
//! mutex), so jobs that start together share one request. The endpoint is reached like a
//! relay: only where `allowed_destinations` allows, with the job's extra CA. A refresh token
//! the endpoint rotates to is used from then on and sent to the server, which stores it for
//! the jobs it sends next. No token, secret or refresh token is ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mailplane_proto::v1 as pb;
use mailplane_smtp::oauth::{self as client, Grant, HttpSettings, TokenRequest};
use mailplane_smtp::{self as smtp, FailureClass, PhaseRecord, PhaseStatus, Secret, TokenGrant};
use tokio::sync::mpsc;

use crate::allowlist::Allowlist;
use crate::metrics::Metrics;

/// The lifetime assumed when the endpoint does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// A token is renewed this long before it expires (or halfway, for short ones).
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// Past this many credentials, entries with no live token are dropped.
const MAX_ENTRIES: usize = 256;

/// A token in memory.
struct Held {
    token: Secret,
    scope: String,
    renew_at: Instant,
    expires_at: Instant,
    generation: u64,
}

/// What the agent knows of one credential.
#[derive(Default)]
struct Entry {
    /// The credential's etag the rest was got under.
    etag: String,
    held: Option<Held>,
    /// The refresh token the endpoint last rotated to (newer than the job's, for this etag).
    refresh_token: Option<Secret>,
    /// How many tokens were got for this etag.
    generation: u64,
}

/// A token to send.
pub(crate) struct Got {
    pub token: Secret,
    /// The transcript's `TOKEN` phase (never the token).
    pub record: PhaseRecord,
    /// Which token it is, for a refresh that must not return it again.
    pub generation: u64,
    /// The refresh token the endpoint rotated to, for the server to store.
    pub rotated: Option<Secret>,
}

/// Why there is no token to send.
pub(crate) struct TokenFailure {
    pub class: FailureClass,
    pub message: String,
    pub hint: String,
    /// The transcript's `TOKEN` phase (failed).
    pub record: PhaseRecord,
}

/// The access tokens of the credentials whose jobs this agent ran.
pub(crate) struct AgentTokens {
    allow: Arc<Allowlist>,
    /// Where token requests are counted.
    metrics: Arc<Metrics>,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

impl AgentTokens {
    /// Tokens got from endpoints that `allow` allows, their requests counted in `metrics`.
    pub fn new(allow: Arc<Allowlist>, metrics: Arc<Metrics>) -> Self {
        Self {
            allow,
            metrics,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a token request that failed.
    fn fetch_failed(&self, f: TokenFailure) -> TokenFailure {
        self.metrics.token_fetch(f.class.as_str());
        f
    }

    fn entry(&self, credential: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, e| {
                Arc::strong_count(e) > 1
                    || e.try_lock().map_or(true, |e| {
                        e.held.as_ref().is_some_and(|h| h.expires_at > now)
                            || e.refresh_token.is_some()
                    })
            });
        }
        Arc::clone(entries.entry(credential.to_owned()).or_default())
    }

    /// An access token for `grant`'s credential: the one in memory while it is fresh (and is
    /// not generation `refused`, which the relay just refused), else a new one.
    pub async fn get(
        &self,
        grant: &TokenGrant,
        extra_ca_pem: Option<&[u8]>,
        refused: Option<u64>,
    ) -> Result<Got, TokenFailure> {
        let started = Instant::now();
        let entry = self.entry(&grant.credential);
        let mut e = entry.lock().await;
        if e.etag != grant.etag {
            *e = Entry {
                etag: grant.etag.clone(),
                ..Entry::default()
            };
        }
        let now = Instant::now();
        if let Some(h) = e
            .held
            .as_ref()
            .filter(|h| h.renew_at > now && Some(h.generation) != refused)
        {
            let mut record = PhaseRecord::new(smtp::Phase::Token, PhaseStatus::Ok);
            record.duration = started.elapsed();
            record.detail = vec![
                format!(
                    "access token this agent got before (generation {})",
                    h.generation
                ),
                format!("scope: {}", h.scope),
                format!(
                    "expires in {} s",
                    h.expires_at.saturating_duration_since(now).as_secs()
                ),
            ];
            return Ok(Got {
                token: h.token.clone(),
                record,
                generation: h.generation,
                rotated: None,
            });
        }
        e.held = None;
        let refresh = e.refresh_token.clone().or(grant.refresh_token.clone());
        let request = TokenRequest {
            url: &grant.token_url,
            client_id: &grant.client_id,
            client_secret: &grant.client_secret,
            scope: &grant.scope,
            grant: match &refresh {
                Some(r) => Grant::RefreshToken(r),
                None => Grant::ClientCredentials,
            },
        };
        let mut record = PhaseRecord::new(smtp::Phase::Token, PhaseStatus::Ok);
        record.commands.push(request.shown());
        let Some((host, port)) = client::endpoint(&grant.token_url) else {
            return Err(self.fetch_failed(failure(
                record,
                FailureClass::OAuthEndpointUnreachable,
                "the job's token URL cannot be read".to_owned(),
                "the server and the agent disagree about the job; check that their versions \
                 match"
                    .to_owned(),
                None,
                started,
            )));
        };
        let http = HttpSettings {
            policy: Arc::new(self.allow.check_for(&host, port)),
            extra_ca_pem: extra_ca_pem.map(<[u8]>::to_vec),
        };
        record
            .detail
            .push(format!("requested by this agent from {host}:{port}"));
        let response = match client::request(&http, &request).await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(credential = %grant.credential, error = %err, "token request failed");
                let (class, hint) = err.class_and_hint();
                let status = err.status();
                return Err(self.fetch_failed(failure(
                    record,
                    class,
                    err.to_string(),
                    hint.to_owned(),
                    status,
                    started,
                )));
            }
        };
        let missing = client::missing_scopes(&grant.scope, response.scope.as_deref());
        if !missing.is_empty() {
            let message = format!(
                "the token endpoint granted {:?}, without {}",
                response.scope.as_deref().unwrap_or_default(),
                missing.join(" ")
            );
            return Err(self.fetch_failed(failure(
                record,
                FailureClass::OAuthScopeMissing,
                message,
                FailureClass::OAuthScopeMissing.default_hint().to_owned(),
                Some(response.status),
                started,
            )));
        }
        let lifetime = response
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let granted = response
            .scope
            .clone()
            .unwrap_or_else(|| grant.scope.clone());
        // A refresh token comes back only for the refresh-token grant, and counts as rotated
        // only when it differs from the one sent.
        let rotated = response
            .refresh_token
            .filter(|new| refresh.as_ref().is_some_and(|old| old != new));
        if let Some(new) = &rotated {
            e.refresh_token = Some(new.clone());
        }
        self.metrics.token_fetch("ok");
        e.generation += 1;
        let now = Instant::now();
        let held = Held {
            token: response.access_token,
            scope: granted.clone(),
            renew_at: now + lifetime - RENEW_BEFORE.min(lifetime / 2),
            expires_at: now + lifetime,
            generation: e.generation,
        };
        tracing::info!(
            credential = %grant.credential,
            lifetime_s = lifetime.as_secs(),
            rotated_refresh_token = rotated.is_some(),
            "got an OAuth2 access token"
        );
        record.reply = Some(client::http_reply(response.status));
        record.detail.push(format!("scope: {granted}"));
        record
            .detail
            .push(format!("expires in {} s", lifetime.as_secs()));
        if rotated.is_some() {
            record.detail.push(
                "the endpoint rotated the refresh token; the new one is sent to the server".into(),
            );
        }
        record.duration = started.elapsed();
        let got = Got {
            token: held.token.clone(),
            record,
            generation: held.generation,
            rotated,
        };
        e.held = Some(held);
        Ok(got)
    }
}

/// A failed `TOKEN` phase.
fn failure(
    mut record: PhaseRecord,
    class: FailureClass,
    message: String,
    hint: String,
    status: Option<u16>,
    started: Instant,
) -> TokenFailure {
    record.status = PhaseStatus::Failed;
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

/// Tells the server the refresh token job `job_id`'s endpoint rotated to.
pub(crate) async fn report_rotated(
    out: &mpsc::Sender<pb::ConnectRequest>,
    job_id: &str,
    refresh_token: &Secret,
) {
    let rotated = pb::job_update::Update::RefreshTokenRotated(pb::RotatedRefreshToken {
        refresh_token: refresh_token.expose().to_owned(),
    });
    let request = pb::ConnectRequest {
        event: Some(pb::connect_request::Event::JobUpdate(pb::JobUpdate {
            job_id: job_id.to_owned(),
            update: Some(rotated),
        })),
    };
    if out.send(request).await.is_err() {
        tracing::warn!(
            job_id,
            "cannot send the rotated refresh token: the stream is gone"
        );
    }
}

/// The session's hook for a refused token: one new token from the agent's endpoint.
struct Refresher {
    tokens: Arc<AgentTokens>,
    grant: TokenGrant,
    extra_ca_pem: Option<Vec<u8>>,
    generation: u64,
    job_id: String,
    out: mpsc::Sender<pb::ConnectRequest>,
}

impl smtp::TokenRefresh for Refresher {
    fn refresh(&self) -> smtp::RefreshFuture<'_> {
        Box::pin(async move {
            let got = self
                .tokens
                .get(
                    &self.grant,
                    self.extra_ca_pem.as_deref(),
                    Some(self.generation),
                )
                .await
                .map_err(|f| smtp::RefreshError {
                    class: f.class,
                    message: f.message,
                    hint: f.hint,
                })?;
            if let Some(rotated) = &got.rotated {
                report_rotated(&self.out, &self.job_id, rotated).await;
            }
            Ok(smtp::RefreshedToken {
                token: got.token,
                summary: got.record.detail.join(", "),
            })
        })
    }
}

/// Puts an access token in `config`'s credentials if the job carries a grant: reports the
/// `TOKEN` phase on `out` (and a rotated refresh token), and gives the session a refresher
/// for one retry. `Ok(())` with nothing done for jobs without a grant.
pub(crate) async fn prepare(
    tokens: &Arc<AgentTokens>,
    config: &mut smtp::SessionConfig,
    job_id: &str,
    out: &mpsc::Sender<pb::ConnectRequest>,
) -> Result<(), TokenFailure> {
    let extra_ca_pem = config.extra_ca_pem.clone();
    let Some(auth) = config.auth.as_mut() else {
        return Ok(());
    };
    let Some(grant) = auth.token_grant.take() else {
        return Ok(());
    };
    let send = |u: pb::job_update::Update| pb::ConnectRequest {
        event: Some(pb::connect_request::Event::JobUpdate(pb::JobUpdate {
            job_id: job_id.to_owned(),
            update: Some(u),
        })),
    };
    let started = pb::job_update::Update::PhaseStarted(pb::Phase::Token.into());
    let _ = out.send(send(started)).await;
    let got = tokens.get(&grant, extra_ca_pem.as_deref(), None).await;
    let record = match &got {
        Ok(g) => &g.record,
        Err(f) => &f.record,
    };
    let finished = pb::job_update::Update::PhaseFinished(smtp::proto::phase_result(record));
    let _ = out.send(send(finished)).await;
    let got = got?;
    if let Some(rotated) = &got.rotated {
        report_rotated(out, job_id, rotated).await;
    }
    auth.secret = got.token;
    auth.refresh = Some(smtp::TokenRefresher(Arc::new(Refresher {
        tokens: Arc::clone(tokens),
        grant,
        extra_ca_pem,
        generation: got.generation,
        job_id: job_id.to_owned(),
        out: out.clone(),
    })));
    Ok(())
}
