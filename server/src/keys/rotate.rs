//! `mailplane keys`: key rotation without downtime, on the host that has the key file, with
//! the database opened directly beside the servers that keep serving.
//!
//! `rotate` generates a key, appends it to the key file (written atomically), records its key
//! check, makes it the primary key in the database (so every server seals new secrets under
//! it), then re-encrypts every ciphertext still under an older key in batches, each its own
//! transaction ([`reencrypt`]). Each step is safe to interrupt: run again, `rotate` finds the
//! newer key in the file or the ciphertexts still under older keys and finishes the same
//! rotation ([`crate::domain::keys::plan`]) instead of starting another. `add` only generates
//! and records the key, so that it can be copied to every replica's key file before `rotate`
//! switches to it. `prune` removes keys that nothing uses any more; `status` and `verify` read.
//! One command that changes keys runs at a time ([`Store::try_lock_keys`]).
//!
//! The design follows Vault's rekey and Kubernetes' KMS v2: a key id on every ciphertext, the
//! old key kept until nothing uses it.

mod reencrypt;
#[cfg(test)]
mod tests;

pub use reencrypt::{Progress, VerifyReport};

use crate::audit::AuditContext;
use crate::crypto::{Cipher, KeyError, KeyId, Keyring};
use crate::domain::keys::{self, Plan, Usage};
use crate::store::keys::KeysLock;
use crate::store::{self, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a command waits for another one that changes keys.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Why a `mailplane keys` command failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] crate::error::Error),
    /// The database cannot be opened.
    #[error("database {url}: {cause}")]
    Open {
        /// The database, with any password redacted.
        url: String,
        /// The cause.
        cause: store::OpenError,
    },
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Another `mailplane keys` command changes keys of this database.
    #[error(
        "another `mailplane keys` command is changing the keys of this database; wait until it \
         ends (an interrupted one lets go when its process ends), then run this one again"
    )]
    Busy,
    /// No server has started on the database yet.
    #[error(
        "this database has no key check yet: start `mailplane serve` on it once first (or pass \
         the server's --data-dir, --database-url or --config)"
    )]
    Uninitialized,
    /// There is no key file.
    #[error(
        "there is no key file at {0}: point --key-file (or --data-dir, --config) at the key file \
         of the server"
    )]
    NoKeyFile(PathBuf),
    /// A ciphertext is sealed under a key that the key file lacks.
    #[error(
        "{at} is sealed under key {id}, which the key file {path} lacks: put that key back into \
         the key file (from your backup, or from another replica's key file), then run the \
         command again"
    )]
    KeyNotInFile {
        /// The ciphertext.
        at: String,
        /// The key it records.
        id: KeyId,
        /// The key file.
        path: PathBuf,
    },
    /// A ciphertext does not decrypt with the key it records.
    #[error(
        "{at} does not decrypt with key {id} of the key file: the data or the key is damaged. \
         Restore the key file or that record from your backup, or store its secret again, then \
         run the command again"
    )]
    Undecryptable {
        /// The ciphertext.
        at: String,
        /// The key it records.
        id: KeyId,
    },
    /// A sealed value this version does not know.
    #[error(
        "{0} is sealed in a way this version of mailplane does not know; run the `mailplane` of \
         the newest server"
    )]
    Unknown(String),
    /// A key that `prune` was asked to remove may not go.
    #[error("key {id} cannot be removed: {reason}")]
    KeyInUse {
        /// The key.
        id: KeyId,
        /// Why.
        reason: String,
    },
    /// The primary key changed while the command ran (another host's rotation?).
    #[error(
        "the primary key changed from {expected} to {found} while this command ran; check \
         `mailplane keys status` and run it again"
    )]
    Raced {
        /// The primary key read first.
        expected: KeyId,
        /// The primary key found.
        found: KeyId,
    },
    /// Printing the progress failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How `rotate` runs.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Ciphertexts per transaction.
    pub batch_size: usize,
    /// A pause after each batch, to spare a busy database.
    pub pause: Duration,
}

impl Default for RotateOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            pause: Duration::ZERO,
        }
    }
}

/// One key in `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// Its id.
    pub id: KeyId,
    /// Whether the key file holds it.
    pub in_file: bool,
    /// Whether the database has its key check.
    pub checked: bool,
    /// Whether it is the primary key.
    pub primary: bool,
    /// What it seals.
    pub usage: Usage,
    /// Whether `prune` would remove it.
    pub prunable: bool,
}

/// What `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The key file.
    pub key_file: PathBuf,
    /// The primary key.
    pub primary: KeyId,
    /// Every key the file or the database knows, in id order.
    pub keys: Vec<KeyStatus>,
    /// Ciphertexts still under keys other than the primary: a rotation is in progress while
    /// this is above zero.
    pub pending: u64,
    /// Every ciphertext.
    pub total: u64,
}

/// How a `rotate` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The key everything is sealed under now.
    pub primary: KeyId,
    /// What was decided about the key.
    pub plan: Plan,
    /// Ciphertexts re-encrypted.
    pub reencrypted: u64,
}

/// The database and key file of a server, opened for `mailplane keys`.
pub struct Maintenance {
    store: Arc<Store>,
    path: PathBuf,
    lock: Option<KeysLock>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("key_file", &self.path)
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    /// Opens the database `url` beside any server that has it open, with the key file at
    /// `key_file`.
    pub async fn open(url: &store::DatabaseUrl, key_file: PathBuf) -> Result<Self, RotateError> {
        let shown = match url {
            store::DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            store::DatabaseUrl::Postgres(u) => store::redact_url(u),
        };
        let store = store::open_beside_server(url)
            .await
            .map_err(|cause| RotateError::Open { url: shown, cause })?;
        Ok(Self::with_store(store, key_file))
    }

    /// Works on `store` with the key file at `path`.
    pub fn with_store(store: Arc<Store>, path: PathBuf) -> Self {
        Self {
            store,
            path,
            lock: None,
        }
    }

    /// The database.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Takes the keys lock, waiting a little for it (the session of a command killed a moment
    /// ago may still be closing on PostgreSQL).
    async fn lock(&mut self) -> Result<(), RotateError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        while self.lock.is_none() {
            self.lock = self.store.try_lock_keys().await?;
            if self.lock.is_none() {
                if std::time::Instant::now() >= deadline {
                    return Err(RotateError::Busy);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The key file's keys, each checked against its key check, and the ids with a key check.
    async fn keyring(&self) -> Result<(Keyring, BTreeSet<KeyId>), RotateError> {
        let checks = self.store.key_checks().await?;
        if checks.is_empty() {
            return Err(RotateError::Uninitialized);
        }
        let ring =
            Keyring::load(&self.path)?.ok_or_else(|| RotateError::NoKeyFile(self.path.clone()))?;
        for cipher in ring.iter() {
            if let Some(check) = checks.get(&cipher.id())
                && !cipher.verify_key_check(check)
            {
                return Err(KeyError::Mismatch {
                    path: self.path.clone(),
                    id: cipher.id(),
                }
                .into());
            }
        }
        Ok((ring, checks.into_keys().collect()))
    }

    /// The primary key id, which the key file must hold.
    async fn primary(&self, ring: &Keyring) -> Result<KeyId, RotateError> {
        let primary = self.store.primary_key_id().await?;
        if ring.get(primary).is_none() {
            return Err(KeyError::MissingKey {
                path: self.path.clone(),
                id: primary,
                role: "the primary key of this database",
            }
            .into());
        }
        Ok(primary)
    }

    /// The keys, what each seals, and whether a rotation is in progress.
    pub async fn status(&self) -> Result<Status, RotateError> {
        let (ring, checked) = self.keyring().await?;
        let primary = self.store.primary_key_id().await?;
        let usage = self.store.key_usage().await?;
        let file: BTreeSet<KeyId> = ring.ids().collect();
        let prunable = keys::prunable(&file, &usage, primary);
        let ids: BTreeSet<KeyId> = file
            .iter()
            .chain(&checked)
            .chain(usage.keys())
            .copied()
            .chain([primary])
            .collect();
        let keys = ids
            .into_iter()
            .map(|id| KeyStatus {
                id,
                in_file: file.contains(&id),
                checked: checked.contains(&id),
                primary: id == primary,
                usage: usage.get(&id).cloned().unwrap_or_default(),
                prunable: prunable.contains(&id),
            })
            .collect();
        Ok(Status {
            key_file: self.path.clone(),
            primary,
            keys,
            pending: keys::pending(&usage, primary),
            total: usage.values().map(Usage::total).sum(),
        })
    }

    /// Generates a key and appends it to the key file, with its key check in the database,
    /// without using it yet; returns its id. If the file holds a key newer than the primary
    /// already, that one is kept and no other is made.
    pub async fn add(&mut self, out: &mut (dyn Write + Send)) -> Result<KeyId, RotateError> {
        self.lock().await?;
        let (mut ring, checked) = self.keyring().await?;
        let primary = self.primary(&ring).await?;
        if let Some(newest) = ring.highest().filter(|n| *n > primary) {
            self.record_check(&ring, newest).await?;
            writeln!(
                out,
                "key {newest} is in {} already and not yet in use: copy the key file to every \
                 host that runs a replica, then run `mailplane keys rotate`",
                self.path.display()
            )?;
            return Ok(newest);
        }
        let file: BTreeSet<KeyId> = ring.ids().collect();
        let id = keys::next_id(&file, &checked, primary);
        self.append(&mut ring, id).await?;
        writeln!(
            out,
            "added key {id} to {}; it is not used yet. Copy the key file to every host that runs \
             a replica, then run `mailplane keys rotate`",
            self.path.display()
        )?;
        Ok(id)
    }

    /// Rotates to a new key (or finishes an unfinished rotation), re-encrypting every
    /// ciphertext under an older key; progress goes to `out`.
    pub async fn rotate(
        &mut self,
        options: &RotateOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<RotateReport, RotateError> {
        self.lock().await?;
        let (mut ring, checked) = self.keyring().await?;
        let primary = self.primary(&ring).await?;
        let usage = self.store.key_usage().await?;
        let pending = keys::pending(&usage, primary);
        let file: BTreeSet<KeyId> = ring.ids().collect();
        let plan = keys::plan(&file, &checked, primary, pending);
        let target = match plan {
            Plan::Resume(id) => {
                writeln!(
                    out,
                    "resuming the unfinished rotation to key {id}: {pending} ciphertexts are \
                     still under older keys (no new key is made)"
                )?;
                id
            }
            Plan::Adopt(id) => {
                self.record_check(&ring, id).await?;
                self.switch(primary, id).await?;
                writeln!(
                    out,
                    "key {id} was in the key file already (from `keys add`, or from a rotation \
                     interrupted before it switched): it is the primary key now"
                )?;
                id
            }
            Plan::Generate(id) => {
                self.append(&mut ring, id).await?;
                self.switch(primary, id).await?;
                writeln!(
                    out,
                    "generated key {id}, added it to {} and made it the primary key; servers seal \
                     new secrets under it from now on. Servers on other hosts need it in their \
                     key files: copy the file to them",
                    self.path.display()
                )?;
                id
            }
        };
        let target_cipher = ring
            .get(target)
            .cloned()
            .ok_or_else(|| RotateError::Config(format!("key {target} vanished from the ring")))?;
        let mut progress = Progress::new(out, pending);
        let reencrypted = reencrypt::reencrypt(
            &self.store,
            &ring,
            &target_cipher,
            &self.path,
            options,
            &mut progress,
        )
        .await?;
        let status = self.status().await?;
        let old: Vec<String> = status
            .keys
            .iter()
            .filter(|k| k.prunable)
            .map(|k| k.id.to_string())
            .collect();
        writeln!(
            out,
            "done: {reencrypted} ciphertexts re-encrypted; all {} are under key {target}.",
            status.total
        )?;
        if !old.is_empty() {
            writeln!(
                out,
                "Keys no longer used: {}. Once every replica's key file holds key {target}, \
                 remove them with `mailplane keys prune` (keep the old key file with the \
                 database backups made before this rotation: they need it)",
                old.join(", ")
            )?;
        }
        Ok(RotateReport {
            primary: target,
            plan,
            reencrypted,
        })
    }

    /// Removes from the key file the keys `ids` (none: every key that may go), refusing the
    /// primary, newer keys and keys that still seal something; returns the removed ids.
    pub async fn prune(
        &mut self,
        ids: &[KeyId],
        out: &mut (dyn Write + Send),
    ) -> Result<Vec<KeyId>, RotateError> {
        self.lock().await?;
        let (mut ring, _) = self.keyring().await?;
        let primary = self.primary(&ring).await?;
        let usage = self.store.key_usage().await?;
        let file: BTreeSet<KeyId> = ring.ids().collect();
        let prunable = keys::prunable(&file, &usage, primary);
        let targets = if ids.is_empty() {
            prunable
        } else {
            for &id in ids {
                refuse_prune(id, &file, &usage, primary)?;
            }
            ids.to_vec()
        };
        if targets.is_empty() {
            writeln!(out, "no key to remove: every key in the key file is in use")?;
            return Ok(targets);
        }
        for id in &targets {
            ring.remove(*id);
        }
        ring.write(&self.path)?;
        for id in &targets {
            self.store.remove_key_check(*id).await?;
            // Web console sessions are not re-encrypted: those sealed under a removed key end
            // (their users sign in again).
            self.store.delete_console_sessions_under(*id).await?;
        }
        let shown: Vec<String> = targets.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "removed key(s) {} from {}. Other replicas' key files still hold them: prune there \
             too",
            shown.join(", "),
            self.path.display()
        )?;
        Ok(targets)
    }

    /// Decrypts every ciphertext with the key it records; nothing is changed.
    pub async fn verify(&self) -> Result<VerifyReport, RotateError> {
        let (ring, _) = self.keyring().await?;
        reencrypt::verify(&self.store, &ring, &self.path).await
    }

    /// Records the key check of key `id` of `ring`, unless the database has it.
    async fn record_check(&self, ring: &Keyring, id: KeyId) -> Result<(), RotateError> {
        let cipher = ring
            .get(id)
            .ok_or_else(|| RotateError::Config(format!("key {id} is not in the key file")))?;
        self.store.add_key_check(&cipher.key_check()?).await?;
        match self.store.key_check(id).await? {
            Some(check) if cipher.verify_key_check(&check) => Ok(()),
            _ => Err(KeyError::Mismatch {
                path: self.path.clone(),
                id,
            }
            .into()),
        }
    }

    /// Generates key `id`, writes the key file with it, and records its key check.
    async fn append(&self, ring: &mut Keyring, id: KeyId) -> Result<(), RotateError> {
        if !ring.insert(Cipher::generate(id)) {
            return Err(RotateError::Config(format!("key {id} exists already")));
        }
        ring.write(&self.path)?;
        self.record_check(ring, id).await
    }

    /// Makes `to` the primary key, if `from` still is.
    async fn switch(&self, from: KeyId, to: KeyId) -> Result<(), RotateError> {
        if self
            .store
            .switch_primary_key(&audit_context(), from, to)
            .await?
        {
            return Ok(());
        }
        Err(RotateError::Raced {
            expected: from,
            found: self.store.primary_key_id().await?,
        })
    }

    /// The key file.
    pub fn key_file(&self) -> &Path {
        &self.path
    }
}

/// Why key `id` may not be pruned, if it may not.
fn refuse_prune(
    id: KeyId,
    file: &BTreeSet<KeyId>,
    usage: &BTreeMap<KeyId, Usage>,
    primary: KeyId,
) -> Result<(), RotateError> {
    let used = usage.get(&id).map_or(0, Usage::total);
    let reason = if !file.contains(&id) {
        "the key file does not hold it".to_owned()
    } else if id == primary {
        "it is the primary key (new secrets are sealed under it)".to_owned()
    } else if id > primary {
        "it is newer than the primary key, added for a coming rotation; run `mailplane keys \
         rotate` to use it"
            .to_owned()
    } else if used > 0 {
        format!(
            "{used} ciphertexts are still sealed under it; run `mailplane keys rotate` to finish the rotation"
        )
    } else {
        return Ok(());
    };
    Err(RotateError::KeyInUse { id, reason })
}

/// Who changes the primary key, for the audit log.
fn audit_context() -> AuditContext {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    AuditContext {
        actor: "mailplane keys (on the host with the key file)".into(),
        peer: host,
        rpc: "keys rotate".into(),
    }
}
