//! Installation metadata, and the key check that ties the database to its key file.

use super::Store;
use super::db::query;
use crate::crypto::Sealed;
use crate::error::Result;

impl Store {
    /// A value of the installation's metadata.
    pub async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = self
            .optional(&query("SELECT value FROM meta WHERE key = $1").bind(key))
            .await?;
        Ok(row.map(|(v,)| v))
    }

    /// Stores a metadata value unless one exists (the first writer wins among replicas).
    pub async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<()> {
        let q = query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value);
        self.execute(&q).await?;
        Ok(())
    }

    /// The sealed key check, if the database has one.
    pub async fn key_check(&self) -> Result<Option<Sealed>> {
        let value = self.get_meta("key_check").await?;
        Ok(value.and_then(|v| {
            (v.len() > 12).then(|| Sealed {
                nonce: v[..12].to_vec(),
                ciphertext: v[12..].to_vec(),
            })
        }))
    }

    /// Stores the key check (first start only).
    pub async fn set_key_check(&self, check: &Sealed) -> Result<()> {
        let mut value = check.nonce.clone();
        value.extend_from_slice(&check.ciphertext);
        self.put_meta_if_absent("key_check", &value).await
    }
}
