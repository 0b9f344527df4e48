//! The HMAC key of API token hashes: a key of its own, sealed in `meta` under the primary
//! key-encryption key, so that a key rotation re-seals it without changing it and every token
//! keeps working.
//!
//! Before key rotation it was derived from the key file's key (`mailplane:api-token-hash` of
//! key 1); the first start of this version stores that very value, so the tokens issued before
//! it stay valid.

use crate::crypto::{DerivedKey, aad};
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::Store;
use zeroize::Zeroizing;

/// The `meta` key of the sealed HMAC key.
pub const META_KEY: &str = "api_token_key";
/// The label the key was derived with before it was stored.
const DERIVATION_LABEL: &str = "mailplane:api-token-hash";

/// The token HMAC key: read from `meta` and opened with the key it is sealed under; stored
/// there first if the database has none.
pub async fn load_or_create(store: &Store, keys: &Keys) -> Result<DerivedKey> {
    if store.get_sealed_meta(META_KEY).await?.is_none() {
        let value: DerivedKey = match keys.get(1).await {
            // The key every token issued so far was hashed with.
            Ok(first) => first.derive(DERIVATION_LABEL),
            // A new installation whose key file starts at another id has no token yet.
            Err(_) if store.token_count().await? == 0 => Zeroizing::new(rand::random()),
            Err(e) => return Err(e),
        };
        let sealed = keys
            .primary()
            .await?
            .seal(aad::API_TOKEN_KEY, value.as_slice())?;
        // Replicas starting together race here; the first one wins, and all read it back.
        store.put_sealed_meta_if_absent(META_KEY, &sealed).await?;
    }
    let sealed = store
        .get_sealed_meta(META_KEY)
        .await?
        .ok_or_else(|| Error::Internal("the token HMAC key is missing after creation".into()))?;
    let plain = Zeroizing::new(keys.open(aad::API_TOKEN_KEY, &sealed).await?);
    let key: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| Error::Internal("the stored token HMAC key has a wrong length".into()))?;
    Ok(Zeroizing::new(key))
}
