//! Who may call what: API tokens (bearer, in the `authorization` metadata), roles, and the one
//! table that says which role each RPC needs. One tower layer ([`layer::AuthLayer`]) enforces it
//! in front of every service, so no handler checks which RPCs a role may call. (One field
//! depends on the role: only an admin may turn on an account's `allow_plaintext_auth`, a rule
//! in `domain::rules` that the accounts service asks with the caller's [`Actor`].)
//!
//! Tokens look like `mpt_{id}_{secret}`. The server keeps only an HMAC-SHA256 of the secret,
//! under a key of its own sealed in the database ([`token_key`]), and compares in constant
//! time. Failed attempts, missing and wrong tokens alike, are rate-limited per peer address,
//! and refused calls are audited once per peer and minute with a count ([`refusals`]).

pub mod layer;
pub mod limit;
pub mod refusals;
pub mod token_key;

use crate::domain::{Role, TokenRecord, now_micros};
use crate::error::{Error, Result};
use crate::store::Store;
use hmac::Mac as _;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Status;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a verified token is trusted without asking the database again. Revocation through
/// this server takes effect at once; through another replica, within this time.
const CACHE_FOR: Duration = Duration::from_secs(5);
/// How often a token's last-use time is written at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Failed attempts allowed per peer address per window.
const MAX_FAILURES: u32 = 10;
/// The rate-limiting window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Who is calling, for the handlers (and the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's id.
    pub token_id: i64,
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks and reflection).
    Public,
    /// A token with at least this role.
    Role(Role),
    /// A token of the sender role, or an operator or admin.
    Sending,
}

impl Access {
    /// Whether a token of `role` may call a method that needs this.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Role(needed) => role.allows(needed),
            Access::Sending => role == Role::Sender || role.allows(Role::Operator),
        }
    }
}

/// The role every RPC needs. Methods not listed need an admin, so a new RPC is locked down
/// until it is given its place here (a test checks that every RPC of the API is listed).
pub const TABLE: &[(&str, Access)] = &[
    ("/grpc.health.v1.Health/Check", Access::Public),
    ("/grpc.health.v1.Health/Watch", Access::Public),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Public,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Public,
    ),
    (
        "/mailplane.v1.SmtpAccountService/CreateAccount",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.SmtpAccountService/GetAccount",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.SmtpAccountService/ListAccounts",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.SmtpAccountService/UpdateAccount",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.SmtpAccountService/DeleteAccount",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.SmtpAccountService/SetDefaultAccount",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.SmtpAccountService/ExportAccounts",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.SmtpAccountService/ListPresets",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.SmtpAccountService/ResolvePreset",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.CredentialService/CreateCredential",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.CredentialService/GetCredential",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.CredentialService/ListCredentials",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.CredentialService/UpdateCredential",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.CredentialService/DeleteCredential",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.SmtpTestService/CreateTest",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.SmtpTestService/GetTest",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.SmtpTestService/ListTests",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.SmtpTestService/WatchTest",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/CreateConnector",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/GetConnector",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/ListConnectors",
        Access::Role(Role::Viewer),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/UpdateConnector",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/DeleteConnector",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/CreateEnrollmentToken",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.NetworkConnectorService/RevokeAgent",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.TokenService/CreateToken",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.TokenService/ListTokens",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.TokenService/RevokeToken",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.AuditService/ListEvents",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.AuditService/VerifyAuditLog",
        Access::Role(Role::Admin),
    ),
    (
        "/mailplane.v1.ReplicaService/ListReplicas",
        Access::Role(Role::Viewer),
    ),
    ("/mailplane.v1.MessageService/SendMessage", Access::Sending),
    ("/mailplane.v1.MessageService/GetMessage", Access::Sending),
    (
        "/mailplane.v1.MessageService/ListMessages",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.MessageService/CancelMessage",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.MessageService/RetryMessage",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.MessageService/PauseAccountDelivery",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.MessageService/ResumeAccountDelivery",
        Access::Role(Role::Operator),
    ),
    (
        "/mailplane.v1.MessageService/ListQueueSummaries",
        Access::Role(Role::Viewer),
    ),
];

/// What `path` needs.
pub fn access(path: &str) -> Access {
    TABLE
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Access::Role(Role::Admin), |(_, a)| *a)
}

/// A new token's bearer string and the hash to store.
pub struct NewToken {
    /// The secret part, `mpt_{id}_{secret}` once the id is known.
    pub secret: String,
    /// Its keyed hash.
    pub hash: String,
}

struct Cached {
    record: TokenRecord,
    hash: Vec<u8>,
    verified: Instant,
    touched: Instant,
}

/// Verifies tokens.
pub struct Authenticator {
    store: Arc<Store>,
    key: crate::crypto::DerivedKey,
    cache: Mutex<HashMap<i64, Cached>>,
    failures: limit::PeerLimit,
    refusals: refusals::Refusals,
}

/// The message for every authentication failure: it says what to do, and nothing about why a
/// given token was refused.
const UNAUTHENTICATED: &str = "a valid API token is required: pass `authorization: Bearer \
     <token>` (mailplane --token or MAILPLANE_TOKEN)";

impl Authenticator {
    /// An authenticator over `store`, with token hashes keyed with `key` ([`token_key`]).
    pub fn new(store: Arc<Store>, key: crate::crypto::DerivedKey) -> Self {
        Self {
            store,
            key,
            cache: Mutex::new(HashMap::new()),
            failures: limit::PeerLimit::new(MAX_FAILURES, FAILURE_WINDOW),
            refusals: refusals::Refusals::default(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    /// A fresh secret and its hash.
    pub fn new_secret(&self) -> NewToken {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        NewToken {
            hash: hex::encode(mac.finalize().into_bytes()),
            secret,
        }
    }

    /// Records a refused call in the audit log: one event per peer (and caller) and minute,
    /// whose `count` the later refusals of that minute raise (per replica). A flood of refused
    /// calls from one address is also cut short by the rate limit, whose refusals are not
    /// recorded.
    pub async fn record_denied(
        &self,
        path: &str,
        peer: &str,
        status: &Status,
        actor: Option<&Actor>,
    ) {
        if status.code() == tonic::Code::ResourceExhausted {
            return;
        }
        let context = crate::audit::AuditContext {
            actor: actor.map_or_else(
                || "unauthenticated".to_owned(),
                |a| format!("tokens/{} ({})", a.token_id, a.name),
            ),
            peer: peer.to_owned(),
            rpc: path.to_owned(),
        };
        let reason = format!("{:?}: {}", status.code(), status.message());
        if let Err(e) = self.refusals.record(&self.store, &context, &reason).await {
            tracing::warn!(error = %e, "cannot record a refused call");
        }
    }

    /// Forgets a token at once (revocation).
    pub fn forget(&self, id: i64) {
        self.lock_cache().remove(&id);
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a call to `path` with this `authorization` value from `peer`.
    pub async fn check(
        &self,
        path: &str,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Option<Actor>, Status> {
        let needed = access(path);
        if needed == Access::Public {
            return Ok(None);
        }
        if self.failures.exceeded(peer) {
            return Err(Status::resource_exhausted(
                "too many failed authentications from this address; wait a minute",
            ));
        }
        let actor = match self.verify(authorization).await {
            Ok(actor) => actor,
            Err(status) => {
                // A missing token counts like a wrong one: both are refused calls that would
                // otherwise be free to repeat.
                if status.code() == tonic::Code::Unauthenticated {
                    self.failures.count(peer);
                }
                return Err(status);
            }
        };
        if !needed.allows(actor.role) {
            let status = Status::permission_denied(format!(
                "the {} role may not call {path}",
                actor.role.as_str()
            ));
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            self.record_denied(path, &peer, &status, Some(&actor)).await;
            return Err(status);
        }
        Ok(Some(actor))
    }

    /// Checks a token given to sign in to the web console from `peer`, whatever its role: the
    /// same verification, rate limit and audit of failures as an API call to `path`.
    pub async fn sign_in(
        &self,
        path: &str,
        token: &str,
        peer: Option<IpAddr>,
    ) -> Result<Actor, Status> {
        if self.failures.exceeded(peer) {
            return Err(Status::resource_exhausted(
                "too many failed authentications from this address; wait a minute",
            ));
        }
        let authorization = format!("Bearer {}", token.trim());
        match self.verify(Some(&authorization)).await {
            Ok(actor) => Ok(actor),
            Err(status) => {
                if status.code() == tonic::Code::Unauthenticated {
                    self.failures.count(peer);
                    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
                    self.record_denied(path, &peer, &status, None).await;
                }
                Err(status)
            }
        }
    }

    /// Who `token` is, if it is still valid (not revoked or expired): the console checks its
    /// session's token at every page. Not a sign-in, so a refusal is neither counted nor
    /// recorded.
    pub async fn actor(&self, token: &str) -> Result<Actor, Status> {
        self.verify(Some(&format!("Bearer {}", token.trim()))).await
    }

    async fn verify(&self, authorization: Option<&str>) -> Result<Actor, Status> {
        let unauthenticated = || Status::unauthenticated(UNAUTHENTICATED);
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(unauthenticated)?;
        let (id, secret) = token
            .strip_prefix("mpt_")
            .and_then(|t| t.split_once('_'))
            .and_then(|(id, secret)| id.parse::<i64>().ok().map(|id| (id, secret)))
            .ok_or_else(unauthenticated)?;
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        let fresh = {
            let cache = self.lock_cache();
            cache
                .get(&id)
                .filter(|c| c.verified.elapsed() < CACHE_FOR)
                .map(|c| (c.record.clone(), c.hash.clone()))
        };
        let (record, hash) = match fresh {
            Some(hit) => hit,
            None => {
                let (record, hash) = self
                    .store
                    .token_for_auth(id)
                    .await
                    .map_err(Status::from)?
                    .ok_or_else(unauthenticated)?;
                let hash = hex::decode(hash).map_err(|_| unauthenticated())?;
                (record, hash)
            }
        };
        mac.verify_slice(&hash).map_err(|_| unauthenticated())?;
        if record.revoked || record.expire_time.is_some_and(|t| t <= now_micros()) {
            self.forget(id);
            return Err(unauthenticated());
        }
        let touch = {
            let mut cache = self.lock_cache();
            let entry = cache.entry(id).or_insert_with(|| Cached {
                record: record.clone(),
                hash: hash.clone(),
                verified: Instant::now(),
                touched: Instant::now() - TOUCH_EVERY,
            });
            if entry.verified.elapsed() >= CACHE_FOR {
                entry.record = record.clone();
                entry.hash = hash;
                entry.verified = Instant::now();
            }
            let due = entry.touched.elapsed() >= TOUCH_EVERY;
            if due {
                entry.touched = Instant::now();
            }
            due
        };
        if touch && let Err(e) = self.store.touch_token(id).await {
            tracing::warn!(error = %e, "cannot record a token's use");
        }
        Ok(Actor {
            token_id: id,
            name: record.display_name,
            role: record.role,
        })
    }
}

/// The bearer string of a token.
pub fn bearer(id: i64, secret: &str) -> String {
    format!("mpt_{id}_{secret}")
}

/// The file the first admin token is written to.
pub fn bootstrap_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// On the first start of an empty database, creates an admin token and writes it to a 0600
/// file in the data dir, like Vault's root token. Returns the token when one was made.
pub async fn bootstrap(
    store: &Store,
    auth: &Authenticator,
    data_dir: &Path,
) -> Result<Option<String>> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let new = auth.new_secret();
    let record = match store
        .create_token(
            &crate::audit::AuditContext::system(),
            "bootstrap admin",
            Role::Admin,
            &new.hash,
            None,
        )
        .await
    {
        Ok(record) => record,
        // Another replica bootstrapped at the same moment.
        Err(Error::AlreadyExists(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let token = bearer(record.id, &new.secret);
    let path = bootstrap_file(data_dir);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(data_dir)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()
    };
    write().map_err(|e| Error::Crypto(format!("cannot write {}: {e}", path.display())))?;
    tracing::warn!(
        file = %path.display(),
        "created the first admin token and wrote it to this file (mode 0600): keep it somewhere \
         safe, create other tokens with `mailplane tokens create`, then delete the file"
    );
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn every_rpc_of_the_api_is_in_the_table() {
        let fds =
            prost_types::FileDescriptorSet::decode(mailplane_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut count = 0;
        for file in &fds.file {
            for service in &file.service {
                // The agents' service has its own listener, authenticated by certificates.
                if service.name() == "AgentService" {
                    continue;
                }
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(
                        TABLE.iter().any(|(p, _)| *p == path),
                        "{path} is missing from auth::TABLE"
                    );
                    count += 1;
                }
            }
        }
        assert!(count >= 27, "the API has {count} RPCs");
        assert_eq!(
            access("/mailplane.v1.Unknown/Thing"),
            Access::Role(Role::Admin)
        );
    }
}
