//! Encryption at rest: AES-256-GCM under key-encryption keys (KEKs) kept in a file outside the
//! database ([`keyring`]: one or more keys, each with a small numeric id).
//!
//! Each record gets a fresh random 96-bit nonce, and what the record is (a credential's resource
//! name, "the agent CA") is bound in as associated data ([`aad`]), so a ciphertext copied onto
//! another record fails to decrypt instead of yielding the other record's secret. Every
//! ciphertext records the id of the key it is sealed under, so that keys can be rotated while
//! the server runs ([`crate::keys`]): new seals use the database's primary key, and each
//! ciphertext opens with its own. A known value sealed
//! under each key (its key check) is kept in the database, so a wrong key file is reported at
//! start-up rather than as garbage later.

pub mod keyring;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use std::path::PathBuf;
use zeroize::Zeroizing;

pub use keyring::Keyring;

/// A key's id in the key file and on every ciphertext sealed under it: a small positive
/// integer, 1 for the key of an installation that never rotated.
pub type KeyId = u32;

/// The length of an AES-GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// The plaintext sealed under each key to recognise it later.
const KEY_CHECK_PLAINTEXT: &[u8] = b"mailplane key check v1";
/// The associated data of the key check.
const KEY_CHECK_AAD: &[u8] = b"mailplane:key-check";

/// What each kind of ciphertext is bound to (its associated data).
pub mod aad {
    /// A credential's secret: its resource name.
    pub fn credential(id: i64) -> Vec<u8> {
        format!("credentials/{id}").into_bytes()
    }

    /// A credential's OAuth2 refresh token: its resource name and `#refresh_token`, so that it
    /// never opens as the secret, nor the other way round.
    pub fn refresh_token(id: i64) -> Vec<u8> {
        format!("credentials/{id}#refresh_token").into_bytes()
    }

    /// A credential's cached OAuth2 access token: its resource name and `#access_token`.
    pub fn access_token(id: i64) -> Vec<u8> {
        format!("credentials/{id}#access_token").into_bytes()
    }

    /// A connector job handed between replicas: its connector's jobs.
    pub fn job(connector: i64) -> Vec<u8> {
        format!("connectors/{connector}/jobs").into_bytes()
    }

    /// The agent CA's certificate and private key (`meta` key `agent_ca`).
    pub const AGENT_CA: &[u8] = b"mailplane:agent-ca";

    /// The HMAC key of API token hashes (`meta` key `api_token_key`).
    pub const API_TOKEN_KEY: &[u8] = b"mailplane:api-token-key";
}

/// Why the keys could not be used. Every message says what to do, and none holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is not a key file.
    #[error(
        "key file {path} is malformed{}: {reason}. Expected 64 hexadecimal digits (one 256-bit \
         key), or one key per line as `<id> <64 hex digits>`",
        line.map(|l| format!(" at line {l}")).unwrap_or_default()
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// The line at fault, if one is.
        line: Option<usize>,
        /// What is wrong (never the line's text: it may hold a key).
        reason: String,
    },
    /// A key in the file is not the key the database knows by its id.
    #[error(
        "key {id} in key file {path} does not match this database: its secrets were encrypted \
         with another key {id}. Restore the key file from your backup, or point --key-file at \
         the right one"
    )]
    Mismatch {
        /// The key file.
        path: PathBuf,
        /// The key's id.
        id: KeyId,
    },
    /// Group or others may read the key file (as ssh refuses such a private key).
    #[error(
        "key file {path} is readable by group or others (mode {mode:03o}); the key that protects \
         every stored secret must be private: run `chmod 600 {path}`"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The database holds secrets but the key file is gone.
    #[error(
        "key file {0} is missing, but this database holds secrets encrypted with it. \
         Restore the key file from your backup, or point --key-file at it"
    )]
    Missing(PathBuf),
    /// The key file lacks a key the database needs.
    #[error(
        "key file {path} lacks key {id}, {role}. Copy the key file from the host where \
         `mailplane keys rotate` (or `keys add`) ran, or restore it from your backup"
    )]
    MissingKey {
        /// The key file.
        path: PathBuf,
        /// The key's id.
        id: KeyId,
        /// Why the key is needed.
        role: &'static str,
    },
    /// The database could not be read or written.
    #[error("database: {0}")]
    Database(String),
}

/// A sealed secret: the id of the key it is sealed under, the nonce, and the ciphertext with
/// its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The key it is sealed under.
    pub key_id: KeyId,
    /// The record's own random nonce.
    pub nonce: Vec<u8>,
    /// The ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// The nonce followed by the ciphertext, as one value (how `meta` stores it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut value = self.nonce.clone();
        value.extend_from_slice(&self.ciphertext);
        value
    }

    /// Splits a value of [`Sealed::to_bytes`]; `None` if it is too short to be one.
    pub fn from_bytes(key_id: KeyId, value: &[u8]) -> Option<Self> {
        (value.len() > NONCE_LEN).then(|| Self {
            key_id,
            nonce: value[..NONCE_LEN].to_vec(),
            ciphertext: value[NONCE_LEN..].to_vec(),
        })
    }
}

/// One key-encryption key and its id, ready to seal and open secrets. Every copy of the key is
/// wiped from memory when dropped: the raw key here, and the AES round keys and GHASH key
/// inside the AEAD (the `zeroize` features of `aes` and `aes-gcm`).
#[derive(Clone)]
pub struct Cipher {
    id: KeyId,
    aead: Aes256Gcm,
    /// The raw key, kept to derive purpose-bound subkeys from it and to write the key file.
    key: Zeroizing<[u8; 32]>,
}

/// A key derived from a key-encryption key ([`Cipher::derive`]), wiped when dropped.
pub type DerivedKey = Zeroizing<[u8; 32]>;

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cipher({}, <redacted>)", self.id)
    }
}

impl Cipher {
    /// A new random key with id `id`.
    pub fn generate(id: KeyId) -> Self {
        let mut key = Aes256Gcm::generate_key(OsRng);
        let cipher = Self {
            id,
            aead: Aes256Gcm::new(&key),
            key: Zeroizing::new(key.into()),
        };
        zeroize::Zeroize::zeroize(key.as_mut_slice());
        cipher
    }

    /// Key `id` from its hex text (64 hexadecimal digits, surrounding blanks ignored).
    pub fn from_hex(id: KeyId, text: &str) -> Option<Self> {
        let decoded = Zeroizing::new(hex::decode(text.trim()).ok()?);
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(decoded.as_slice().try_into().ok()?);
        Some(Self {
            id,
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes.as_slice())),
            key: bytes,
        })
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's hex text, for the key file.
    pub(crate) fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_slice()))
    }

    /// Encrypts `plaintext`, binding `aad` (what the record is) to it.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, crate::error::Error> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| crate::error::Error::Crypto("encryption failed".into()))?;
        Ok(Sealed {
            key_id: self.id,
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts a sealed secret; fails if it is sealed under another key id, or if the key,
    /// the nonce, the data or `aad` differ.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, crate::error::Error> {
        if sealed.key_id != self.id {
            return Err(crate::error::Error::Crypto(format!(
                "sealed under key {}, opened with key {}",
                sealed.key_id, self.id
            )));
        }
        if sealed.nonce.len() != NONCE_LEN {
            return Err(crate::error::Error::Crypto(
                "stored nonce has a wrong length".into(),
            ));
        }
        self.aead
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map_err(|_| {
                crate::error::Error::Crypto("decryption failed (wrong key or tampered data)".into())
            })
    }

    /// A subkey for one purpose (HMAC-SHA256 of `label` under the key), so that, for example,
    /// token hashes never share a key with encryption.
    pub fn derive(&self, label: &str) -> DerivedKey {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The key check to keep in the database.
    pub fn key_check(&self) -> Result<Sealed, crate::error::Error> {
        self.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `check` was sealed under this key (and this key id).
    pub fn verify_key_check(&self, check: &Sealed) -> bool {
        self.open(KEY_CHECK_AAD, check)
            .is_ok_and(|p| p == KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_binds_aad() {
        let c = Cipher::generate(1);
        let sealed = c.seal(b"credentials/1", b"s3cret").unwrap();
        assert_eq!(sealed.key_id, 1);
        assert_eq!(c.open(b"credentials/1", &sealed).unwrap(), b"s3cret");
        assert!(c.open(b"credentials/2", &sealed).is_err(), "aad must bind");
        let other = Cipher::generate(1);
        assert!(
            other.open(b"credentials/1", &sealed).is_err(),
            "wrong key must fail"
        );
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"s3cret"));
    }

    #[test]
    fn a_ciphertext_opens_only_under_its_key_id() {
        let c = Cipher::generate(1);
        let sealed = c.seal(b"x", b"secret").unwrap();
        // The same key material under another id refuses: the id is part of what is opened.
        let renamed = Cipher::from_hex(2, &c.to_hex()).unwrap();
        let err = renamed.open(b"x", &sealed).unwrap_err().to_string();
        assert!(err.contains("key 1") && err.contains("key 2"), "{err}");
        let relabelled = Sealed {
            key_id: 2,
            ..sealed.clone()
        };
        assert_eq!(renamed.open(b"x", &relabelled).unwrap(), b"secret");
        assert!(!c.verify_key_check(&renamed.key_check().unwrap()));
        assert!(c.verify_key_check(&c.key_check().unwrap()));
    }

    #[test]
    fn sealed_values_round_trip_as_bytes() {
        let sealed = Cipher::generate(7).seal(b"a", b"b").unwrap();
        assert_eq!(Sealed::from_bytes(7, &sealed.to_bytes()), Some(sealed));
        assert_eq!(Sealed::from_bytes(7, &[0; NONCE_LEN]), None);
    }

    #[test]
    fn nonces_differ_per_record() {
        let c = Cipher::generate(1);
        let a = c.seal(b"x", b"same").unwrap();
        let b = c.seal(b"x", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn the_key_and_derived_keys_are_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let c = Cipher::generate(1);
        wiped(&c.key);
        wiped(&c.to_hex());
        wiped(&c.derive("label"));
        // The AES key schedule inside the AEAD, with the `zeroize` feature of `aes`.
        let aes = <aes::Aes256 as aes::cipher::KeyInit>::new(&[0u8; 32].into());
        wiped(&aes);
        assert_eq!(*c.derive("label"), *c.clone().derive("label"));
        assert_eq!(format!("{c:?}"), "Cipher(1, <redacted>)");
    }
}
