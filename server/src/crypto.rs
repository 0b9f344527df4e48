//! Encryption at rest for credential secrets: AES-256-GCM under a key-encryption key (KEK)
//! kept in a file outside the database.
//!
//! Each record gets a fresh random 96-bit nonce, and the record's resource name is bound in as
//! associated data, so a ciphertext copied onto another record fails to decrypt instead of
//! yielding the other record's secret. A known value sealed under the key is kept in the
//! database, so a wrong key file is reported at start-up rather than as garbage later.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The length of an AES-GCM nonce in bytes.
const NONCE_LEN: usize = 12;
/// The plaintext sealed under the key to recognise it later.
const KEY_CHECK_PLAINTEXT: &[u8] = b"mailplane key check v1";
/// The associated data of the key check.
const KEY_CHECK_AAD: &[u8] = b"mailplane:key-check";

/// Why the key could not be used.
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
    /// The key file does not hold 64 hexadecimal digits.
    #[error("key file {0} is malformed: expected 64 hexadecimal digits (a 256-bit key)")]
    Malformed(PathBuf),
    /// The database holds secrets sealed under another key.
    #[error(
        "key file {0} does not match this database: its secrets were encrypted with another key. \
         Restore the key file from your backup, or point --key-file at the right one"
    )]
    Mismatch(PathBuf),
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
}

/// A sealed secret: the nonce and the ciphertext with its tag.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The record's own random nonce.
    pub nonce: Vec<u8>,
    /// The ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
}

/// The key-encryption key, ready to seal and open secrets. Every copy of the key is wiped
/// from memory when dropped: the raw key here, and the AES round keys and GHASH key inside
/// the AEAD (the `zeroize` features of `aes` and `aes-gcm`).
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
    /// The raw key, kept only to derive purpose-bound subkeys from it.
    key: Zeroizing<[u8; 32]>,
}

/// A key derived from the key-encryption key ([`Cipher::derive`]), wiped when dropped.
pub type DerivedKey = Zeroizing<[u8; 32]>;

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

impl Cipher {
    /// A cipher with a new random key, and the key's hex form for the key file.
    pub fn generate() -> (Self, Zeroizing<String>) {
        let mut key = Aes256Gcm::generate_key(OsRng);
        let hex = Zeroizing::new(hex::encode(key));
        let cipher = Self {
            aead: Aes256Gcm::new(&key),
            key: Zeroizing::new(key.into()),
        };
        zeroize::Zeroize::zeroize(key.as_mut_slice());
        (cipher, hex)
    }

    /// A cipher from the hex text of a key file.
    pub fn from_hex(text: &str) -> Option<Self> {
        let decoded = Zeroizing::new(hex::decode(text.trim()).ok()?);
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(decoded.as_slice().try_into().ok()?);
        Some(Self {
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes.as_slice())),
            key: bytes,
        })
    }

    /// Encrypts `plaintext`, binding `aad` (the record's resource name) to it.
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
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts a sealed secret; fails if the key, the nonce, the data or `aad` differ.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, crate::error::Error> {
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

    /// Whether `check` was sealed under this key.
    pub fn verify_key_check(&self, check: &Sealed) -> bool {
        self.open(KEY_CHECK_AAD, check)
            .is_ok_and(|p| p == KEY_CHECK_PLAINTEXT)
    }
}

/// Loads the key file, or creates it (mode 0600) when it is missing and the database holds no
/// secrets yet. Returns the cipher and whether the file was created.
pub fn load_or_create(path: &Path, database_has_key: bool) -> Result<(Cipher, bool), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path).map(Zeroizing::new) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_path_buf(),
                    mode: mode & 0o777,
                });
            }
            Cipher::from_hex(&text)
                .map(|c| (c, false))
                .ok_or_else(|| KeyError::Malformed(path.to_path_buf()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if database_has_key {
                return Err(KeyError::Missing(path.to_path_buf()));
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let (cipher, hex) = Cipher::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(Zeroizing::new(format!("{}\n", hex.as_str())).as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((cipher, true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_binds_aad() {
        let (c, _) = Cipher::generate();
        let sealed = c.seal(b"credentials/1", b"s3cret").unwrap();
        assert_eq!(c.open(b"credentials/1", &sealed).unwrap(), b"s3cret");
        assert!(c.open(b"credentials/2", &sealed).is_err(), "aad must bind");
        let (other, _) = Cipher::generate();
        assert!(
            other.open(b"credentials/1", &sealed).is_err(),
            "wrong key must fail"
        );
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"s3cret"));
    }

    #[test]
    fn nonces_differ_per_record() {
        let (c, _) = Cipher::generate();
        let a = c.seal(b"x", b"same").unwrap();
        let b = c.seal(b"x", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mailplane.key");
        let (c1, created) = load_or_create(&path, false).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (c2, created) = load_or_create(&path, true).unwrap();
        assert!(!created);
        let check = c1.key_check().unwrap();
        assert!(c2.verify_key_check(&check));
    }

    #[test]
    fn a_key_file_that_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailplane.key");
        let (_, created) = load_or_create(&path, false).unwrap();
        assert!(created);
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_or_create(&path, true).unwrap_err();
            assert!(
                matches!(err, KeyError::Permissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            load_or_create(&path, true).expect("a private key file is fine");
        }
    }

    #[test]
    fn the_key_and_derived_keys_are_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let (c, hex) = Cipher::generate();
        wiped(&c.key);
        wiped(&hex);
        wiped(&c.derive("label"));
        // The AES key schedule inside the AEAD, with the `zeroize` feature of `aes`.
        let aes = <aes::Aes256 as aes::cipher::KeyInit>::new(&[0u8; 32].into());
        wiped(&aes);
        assert_eq!(*c.derive("label"), *c.clone().derive("label"));
    }

    #[test]
    fn missing_key_with_existing_secrets_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailplane.key");
        assert!(matches!(
            load_or_create(&path, true),
            Err(KeyError::Missing(_))
        ));
        assert!(
            !path.exists(),
            "must not generate a new key over existing secrets"
        );
        std::fs::write(&path, "not hex").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create(&path, false),
            Err(KeyError::Malformed(_))
        ));
    }
}
