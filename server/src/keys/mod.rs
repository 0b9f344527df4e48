//! The keys a running server seals and opens with: the key file's keys that match their key
//! checks in the database. New seals use the database's primary key ([`Keys::primary`]), read
//! at each seal so that every replica follows a rotation at once; each ciphertext opens with the
//! key whose id it records.
//!
//! A key id the server does not hold (a rotation on another host made a new primary, and the
//! key file here was updated after this server started) makes it read its key file again: at
//! once if the file changed since it was last read, else at most once per [`RELOAD_EVERY`]. A
//! key still missing fails that call with `FailedPrecondition` naming the key and the key file,
//! and the server serves on.

pub mod rotate;

use crate::crypto::{Cipher, KeyError, KeyId, Keyring, Sealed, aad};
use crate::domain::CredentialId;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often at most the key file is read again for a key id the server does not hold.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The keys of a running server.
pub struct Keys {
    path: PathBuf,
    store: Arc<Store>,
    /// The keys that match their key checks, by id.
    ring: RwLock<BTreeMap<KeyId, Arc<Cipher>>>,
    /// When the key file was last read again, and its modification time then; held while it
    /// is read.
    reloaded: tokio::sync::Mutex<Option<(Instant, Option<SystemTime>)>>,
    reload_every: Duration,
    /// How often the key file was read again.
    reloads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("path", &self.path)
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

fn db(e: Error) -> KeyError {
    KeyError::Database(e.to_string())
}

impl Keys {
    /// Loads the key file at `path` for the database `store`, at start-up: creates the file
    /// (one new key) if there is none and the database holds no secret yet, records the key
    /// checks and the primary key id of a new database, and refuses a key that does not match
    /// its key check or a file without the primary key. Returns the keys and whether the file
    /// was created.
    pub async fn load(path: &Path, store: Arc<Store>) -> Result<(Self, bool), KeyError> {
        let mut checks = store.key_checks().await.map_err(db)?;
        let (ring, created) = match Keyring::load(path)? {
            Some(ring) => (ring, false),
            None if !checks.is_empty() => return Err(KeyError::Missing(path.to_path_buf())),
            None => match Keyring::create(path) {
                Ok(ring) => (ring, true),
                // Another process created it first.
                Err(KeyError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    let ring = Keyring::load(path)?.ok_or(KeyError::Missing(path.to_path_buf()))?;
                    (ring, false)
                }
                Err(e) => return Err(e),
            },
        };
        if checks.is_empty() {
            // A new database: it knows every key of the file, and seals under the newest.
            for cipher in ring.iter() {
                let check = cipher.key_check().map_err(db)?;
                store.add_key_check(&check).await.map_err(db)?;
            }
            if let Some(newest) = ring.highest() {
                store.init_primary_key_id(newest).await.map_err(db)?;
            }
            // Replicas starting together on a new database: the first one's checks won.
            checks = store.key_checks().await.map_err(db)?;
        }
        let mut verified = BTreeMap::new();
        for cipher in ring.iter() {
            match checks.get(&cipher.id()) {
                Some(check) if cipher.verify_key_check(check) => {
                    verified.insert(cipher.id(), Arc::new(cipher.clone()));
                }
                Some(_) => {
                    return Err(KeyError::Mismatch {
                        path: path.to_path_buf(),
                        id: cipher.id(),
                    });
                }
                // A key added for a coming rotation: `keys rotate` records its check.
                None => {}
            }
        }
        let primary = store.primary_key_id().await.map_err(db)?;
        if !verified.contains_key(&primary) {
            return Err(KeyError::MissingKey {
                path: path.to_path_buf(),
                id: primary,
                role: "the primary key of this database (new secrets are sealed under it)",
            });
        }
        store.init_primary_key_id(primary).await.map_err(db)?;
        for (id, usage) in store.key_usage().await.map_err(db)? {
            if !verified.contains_key(&id) {
                tracing::warn!(
                    key = id,
                    ciphertexts = usage.total(),
                    key_file = %path.display(),
                    "the database holds secrets sealed under a key this key file lacks; calls \
                     that need them fail until the key is added to the key file"
                );
            }
        }
        let keys = Self {
            path: path.to_path_buf(),
            store,
            ring: RwLock::new(verified),
            reloaded: tokio::sync::Mutex::new(None),
            reload_every: RELOAD_EVERY,
            reloads: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((keys, created))
    }

    /// The same keys, reading the key file again at most once per `every` (tests).
    pub fn with_reload_interval(mut self, every: Duration) -> Self {
        self.reload_every = every;
        self
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ids of the keys held.
    pub fn ids(&self) -> Vec<KeyId> {
        self.lock_ring().keys().copied().collect()
    }

    fn lock_ring(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<KeyId, Arc<Cipher>>> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn held(&self, id: KeyId) -> Option<Arc<Cipher>> {
        self.lock_ring().get(&id).cloned()
    }

    /// Key `id`, reading the key file again if the server does not hold it (at once if the
    /// file changed since it was last read, else at most once per [`RELOAD_EVERY`]);
    /// `FailedPrecondition` if the key file lacks it.
    pub async fn get(&self, id: KeyId) -> Result<Arc<Cipher>> {
        if let Some(cipher) = self.held(id) {
            return Ok(cipher);
        }
        let mut reloaded = self.reloaded.lock().await;
        // Another call may have read the file while this one waited.
        if let Some(cipher) = self.held(id) {
            return Ok(cipher);
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let due =
            reloaded.is_none_or(|(at, then)| at.elapsed() >= self.reload_every || then != modified);
        if due {
            *reloaded = Some((Instant::now(), modified));
            self.reload().await;
            if let Some(cipher) = self.held(id) {
                return Ok(cipher);
            }
        }
        Err(Error::FailedPrecondition(format!(
            "key {id} is not in this server's key file {}: a key rotation (`mailplane keys \
             rotate` or `keys add`) on another host added it. Copy that host's key file here; \
             the server reads it again by itself",
            self.path.display()
        )))
    }

    /// The primary key: the database's, which new secrets are sealed under.
    pub async fn primary(&self) -> Result<Arc<Cipher>> {
        let id = self.store.primary_key_id().await?;
        self.get(id).await
    }

    /// Decrypts `sealed` with the key it records, binding `aad`.
    pub async fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>> {
        self.get(sealed.key_id).await?.open(aad, sealed)
    }

    /// Decrypts a credential's secret, for the SMTP session that needs it.
    pub async fn credential_secret(&self, id: CredentialId) -> Result<Secret> {
        let sealed = self.store.sealed_secret(id).await?;
        self.open_secret(&aad::credential(id.0), &sealed).await
    }

    /// Decrypts a sealed text secret (a secret, a refresh or an access token).
    pub async fn open_secret(&self, aad: &[u8], sealed: &Sealed) -> Result<Secret> {
        let plain = self.open(aad, sealed).await?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| Error::Crypto("a stored secret is not UTF-8".into()))
    }

    /// How often the key file was read again since start-up.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the key file again and takes in the keys that match their key checks.
    async fn reload(&self) {
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ring = match Keyring::load(&self.path) {
            Ok(Some(ring)) => ring,
            Ok(None) => {
                tracing::warn!(key_file = %self.path.display(), "the key file is gone");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the key file again");
                return;
            }
        };
        for cipher in ring.iter() {
            if self.held(cipher.id()).is_some() {
                continue;
            }
            match self.store.key_check(cipher.id()).await {
                Ok(Some(check)) if cipher.verify_key_check(&check) => {
                    tracing::info!(key = cipher.id(), "key taken from the key file");
                    self.ring
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(cipher.id(), Arc::new(cipher.clone()));
                }
                Ok(Some(_)) => tracing::error!(
                    key = cipher.id(),
                    key_file = %self.path.display(),
                    "key in the key file does not match this database's key of the same id"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read a key check"),
            }
        }
    }
}
