//! Installation metadata, and the values in it sealed under a key-encryption key.

use super::Store;
use super::db::query;
use crate::crypto::{KeyId, Sealed};
use crate::error::{Error, Result};

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

    /// A sealed metadata value, with the id of the key it is sealed under.
    pub async fn get_sealed_meta(&self, key: &str) -> Result<Option<Sealed>> {
        let q = query("SELECT value, key_id FROM meta WHERE key = $1").bind(key);
        let row: Option<(Vec<u8>, Option<i64>)> = self.optional(&q).await?;
        row.map(|(value, key_id)| {
            let key_id = key_id.map_or(Ok(1), KeyId::try_from).map_err(|_| {
                Error::Internal(format!("meta value {key:?} has an invalid key id"))
            })?;
            Sealed::from_bytes(key_id, &value)
                .ok_or_else(|| Error::Internal(format!("meta value {key:?} is truncated")))
        })
        .transpose()
    }

    /// Stores a sealed metadata value unless one exists (the first writer wins among replicas).
    pub async fn put_sealed_meta_if_absent(&self, key: &str, sealed: &Sealed) -> Result<()> {
        let q = query(
            "INSERT INTO meta (key, value, key_id) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(sealed.to_bytes())
        .bind(i64::from(sealed.key_id));
        self.execute(&q).await?;
        Ok(())
    }
}
