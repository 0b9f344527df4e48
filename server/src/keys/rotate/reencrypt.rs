//! Re-encryption in batches, and the check that every ciphertext decrypts.
//!
//! Each batch is read outside any transaction, decrypted with the keys it records and sealed
//! under the target key, then written in one short transaction that rewrites only the rows
//! still as they were read ([`Store::rewrite_ciphertexts`]). Passes repeat until one finds
//! nothing under another key: a row that changed meanwhile is read again in the next pass (a
//! user's new secret is under the primary key already, so it simply drops out).

use super::{RotateError, RotateOptions};
use crate::crypto::{Cipher, KeyId, Keyring};
use crate::domain::keys::StoredCiphertext;
use crate::store::Store;
use crate::store::keys::{Table, Which};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// How long to wait before another pass when a whole pass rewrote nothing (its rows were being
/// changed by others at that moment).
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The rows read per page by [`verify`].
const VERIFY_PAGE: usize = 1000;

/// Progress lines of a rotation.
pub struct Progress<'a> {
    out: &'a mut (dyn Write + Send),
    total: u64,
    done: u64,
}

impl<'a> Progress<'a> {
    /// Reports on `out`, out of `total` ciphertexts to do.
    pub fn new(out: &'a mut (dyn Write + Send), total: u64) -> Self {
        Self {
            out,
            total,
            done: 0,
        }
    }

    fn advance(&mut self, rewritten: u64) -> std::io::Result<()> {
        self.done += rewritten;
        // Ciphertexts written under an old key while the rotation ran raise the total.
        self.total = self.total.max(self.done);
        writeln!(
            self.out,
            "re-encrypted {} of {} ciphertexts",
            self.done, self.total
        )
    }
}

/// Re-encrypts under `target` every ciphertext under another key; returns how many.
pub(super) async fn reencrypt(
    store: &Store,
    ring: &Keyring,
    target: &Cipher,
    key_file: &Path,
    options: &RotateOptions,
    progress: &mut Progress<'_>,
) -> Result<u64, RotateError> {
    let which = Which::NotUnder(target.id());
    let batch = options.batch_size.max(1);
    let rotation = Rotation {
        store,
        ring,
        target,
        key_file,
        options,
    };
    let mut total = 0;
    loop {
        let (mut found, mut rewritten) = (0, 0);
        // The sealed values first: the agent CA and the token key.
        for chunk in store.sealed_values(which).await?.chunks(batch) {
            found += chunk.len();
            rewritten += rotation.batch(chunk, progress).await?;
        }
        for table in Table::ALL {
            let mut after = 0;
            loop {
                let rows = store.sealed_rows(table, which, after, batch).await?;
                let Some(last) = rows.last() else { break };
                after = row_id(last);
                found += rows.len();
                rewritten += rotation.batch(&rows, progress).await?;
            }
        }
        total += rewritten;
        if found == 0 {
            return Ok(total);
        }
        if rewritten == 0 {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// The id of a credential's or a job's row (0 for a `meta` value, which is not paged).
fn row_id(row: &StoredCiphertext) -> i64 {
    use crate::domain::keys::Location;
    match row.at {
        Location::Credential(id)
        | Location::RefreshToken(id)
        | Location::AccessToken(id)
        | Location::Job { id, .. } => id,
        Location::Value(_) => 0,
    }
}

struct Rotation<'a> {
    store: &'a Store,
    ring: &'a Keyring,
    target: &'a Cipher,
    key_file: &'a Path,
    options: &'a RotateOptions,
}

impl Rotation<'_> {
    /// Re-encrypts one batch; returns how many rows were rewritten.
    async fn batch(
        &self,
        rows: &[StoredCiphertext],
        progress: &mut Progress<'_>,
    ) -> Result<u64, RotateError> {
        let mut pairs = Vec::with_capacity(rows.len());
        for row in rows {
            let plain = open(self.ring, self.key_file, row)?;
            let aad = row.at.aad().unwrap_or_default();
            pairs.push((row.clone(), self.target.seal(&aad, &plain)?));
        }
        let rewritten = self.store.rewrite_ciphertexts(&pairs).await?;
        progress.advance(rewritten)?;
        if !self.options.pause.is_zero() {
            tokio::time::sleep(self.options.pause).await;
        }
        Ok(rewritten)
    }
}

/// Decrypts one ciphertext with the key it records.
fn open(
    ring: &Keyring,
    key_file: &Path,
    row: &StoredCiphertext,
) -> Result<Zeroizing<Vec<u8>>, RotateError> {
    let at = row.at.to_string();
    let aad = row
        .at
        .aad()
        .ok_or_else(|| RotateError::Unknown(at.clone()))?;
    let id = row.sealed.key_id;
    let key = ring.get(id).ok_or_else(|| RotateError::KeyNotInFile {
        at: at.clone(),
        id,
        path: key_file.to_path_buf(),
    })?;
    key.open(&aad, &row.sealed)
        .map(Zeroizing::new)
        .map_err(|_| RotateError::Undecryptable { at, id })
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Ciphertexts that decrypt, by the key they are under.
    pub ok: BTreeMap<KeyId, u64>,
    /// Those that do not, with why (the first 100).
    pub failures: Vec<String>,
    /// How many do not.
    pub failed: u64,
}

impl VerifyReport {
    fn record(&mut self, result: Result<KeyId, RotateError>) {
        match result {
            Ok(id) => *self.ok.entry(id).or_default() += 1,
            Err(e) => {
                self.failed += 1;
                if self.failures.len() < 100 {
                    self.failures.push(e.to_string());
                }
            }
        }
    }

    /// Every ciphertext that decrypts.
    pub fn decrypted(&self) -> u64 {
        self.ok.values().sum()
    }
}

/// Decrypts every ciphertext with the key of `ring` it records.
pub(super) async fn verify(
    store: &Store,
    ring: &Keyring,
    key_file: &Path,
) -> Result<VerifyReport, RotateError> {
    let mut report = VerifyReport::default();
    let check = |row: &StoredCiphertext| open(ring, key_file, row).map(|_| row.sealed.key_id);
    for row in store.sealed_values(Which::All).await? {
        report.record(check(&row));
    }
    for table in Table::ALL {
        let mut after = 0;
        loop {
            let rows = store
                .sealed_rows(table, Which::All, after, VERIFY_PAGE)
                .await?;
            let Some(last) = rows.last() else { break };
            after = row_id(last);
            rows.iter().for_each(|row| report.record(check(row)));
        }
    }
    Ok(report)
}
