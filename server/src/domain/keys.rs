//! Key rotation's rules: where ciphertexts live, which key a rotation moves to, when a rotation
//! is unfinished, and which keys may leave the key file. `keys::rotate` carries them out.

use crate::crypto::{KeyId, Sealed, aad};
use std::collections::{BTreeMap, BTreeSet};

/// The `meta` values sealed under a key-encryption key, and what each is bound to.
pub const SEALED_VALUES: [(&str, &[u8]); 2] = [
    ("agent_ca", aad::AGENT_CA),
    ("api_token_key", aad::API_TOKEN_KEY),
];

/// Where a ciphertext is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A credential's secret (`credentials.id`).
    Credential(i64),
    /// A credential's OAuth2 refresh token (`credentials.id`).
    RefreshToken(i64),
    /// A credential's cached OAuth2 access token (`credential_tokens.credential_id`).
    AccessToken(i64),
    /// A sealed `meta` value (its key).
    Value(String),
    /// A connector job handed between replicas (`connector_jobs.id`, and its connector).
    Job {
        /// The job.
        id: i64,
        /// Its connector.
        connector: i64,
    },
}

impl Location {
    /// The associated data the ciphertext is bound to; `None` for a `meta` value mailplane
    /// does not know (from a newer version).
    pub fn aad(&self) -> Option<Vec<u8>> {
        match self {
            Location::Credential(id) => Some(aad::credential(*id)),
            Location::RefreshToken(id) => Some(aad::refresh_token(*id)),
            Location::AccessToken(id) => Some(aad::access_token(*id)),
            Location::Job { connector, .. } => Some(aad::job(*connector)),
            Location::Value(key) => SEALED_VALUES
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, aad)| aad.to_vec()),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Credential(id) => write!(f, "credentials/{id}"),
            Location::RefreshToken(id) => write!(f, "the refresh token of credentials/{id}"),
            Location::AccessToken(id) => {
                write!(f, "the cached access token of credentials/{id}")
            }
            Location::Value(key) => write!(f, "the sealed value {key:?}"),
            Location::Job { id, .. } => write!(f, "connector-jobs/{id}"),
        }
    }
}

/// A ciphertext as read: where it is and what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCiphertext {
    /// Where.
    pub at: Location,
    /// The sealed bytes and the key id they record.
    pub sealed: Sealed,
}

/// How many ciphertexts one key seals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Credential secrets.
    pub credentials: u64,
    /// OAuth2 refresh tokens.
    pub refresh_tokens: u64,
    /// Cached OAuth2 access tokens.
    pub access_tokens: u64,
    /// Connector jobs waiting in the database.
    pub jobs: u64,
    /// The sealed `meta` values (`agent_ca`, `api_token_key`).
    pub values: Vec<String>,
}

impl Usage {
    /// Every ciphertext under the key.
    pub fn total(&self) -> u64 {
        self.credentials
            + self.refresh_tokens
            + self.access_tokens
            + self.jobs
            + self.values.len() as u64
    }
}

/// Every ciphertext under a key other than `primary`: what a rotation still has to do.
pub fn pending(usage: &BTreeMap<KeyId, Usage>, primary: KeyId) -> u64 {
    usage
        .iter()
        .filter(|(id, _)| **id != primary)
        .map(|(_, u)| u.total())
        .sum()
}

/// What `keys rotate` does about the key to rotate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The primary is the key to rotate to, and ciphertexts remain under older keys: an
    /// earlier rotation is unfinished; finish it.
    Resume(KeyId),
    /// The key file holds a key newer than the primary (from `keys add`, or from a rotation
    /// interrupted before it switched): switch to it, then re-encrypt.
    Adopt(KeyId),
    /// Everything is under the primary: generate a key with this id, then switch to it.
    Generate(KeyId),
}

/// Decides [`Plan`] from the ids in the key file, the ids with a key check in the database,
/// the primary, and the ciphertexts still under other keys. A new key's id is above every id
/// either side knows, so an id is never used for two keys.
pub fn plan(
    file: &BTreeSet<KeyId>,
    checked: &BTreeSet<KeyId>,
    primary: KeyId,
    pending: u64,
) -> Plan {
    match file.last() {
        Some(&newest) if newest > primary => Plan::Adopt(newest),
        _ if pending > 0 => Plan::Resume(primary),
        _ => Plan::Generate(next_id(file, checked, primary)),
    }
}

/// The id of a new key: above every id in the key file, with a key check, or primary.
pub fn next_id(file: &BTreeSet<KeyId>, checked: &BTreeSet<KeyId>, primary: KeyId) -> KeyId {
    file.iter()
        .chain(checked)
        .copied()
        .chain([primary])
        .max()
        .unwrap_or(0)
        .saturating_add(1)
}

/// The keys `keys prune` removes from the file: those older than the primary that nothing is
/// sealed under. The primary and newer keys (added for a coming rotation) always stay.
pub fn prunable(
    file: &BTreeSet<KeyId>,
    usage: &BTreeMap<KeyId, Usage>,
    primary: KeyId,
) -> Vec<KeyId> {
    file.iter()
        .copied()
        .filter(|id| *id < primary && usage.get(id).is_none_or(|u| u.total() == 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[KeyId]) -> BTreeSet<KeyId> {
        ids.iter().copied().collect()
    }

    fn used(credentials: u64) -> Usage {
        Usage {
            credentials,
            ..Usage::default()
        }
    }

    #[test]
    fn a_rotation_resumes_adopts_or_generates() {
        // Everything under the primary: a new key above every known id.
        assert_eq!(plan(&set(&[1]), &set(&[1]), 1, 0), Plan::Generate(2));
        assert_eq!(plan(&set(&[3]), &set(&[1, 3, 5]), 3, 0), Plan::Generate(6));
        // Interrupted before the switch (or `keys add`): the newer key in the file is adopted,
        // with or without its key check.
        assert_eq!(plan(&set(&[1, 2]), &set(&[1]), 1, 0), Plan::Adopt(2));
        assert_eq!(plan(&set(&[1, 2]), &set(&[1, 2]), 1, 7), Plan::Adopt(2));
        // Interrupted after the switch: resume, no new key.
        assert_eq!(plan(&set(&[1, 2]), &set(&[1, 2]), 2, 7), Plan::Resume(2));
    }

    #[test]
    fn only_unused_keys_older_than_the_primary_are_prunable() {
        let usage = BTreeMap::from([(1, used(0)), (2, used(3)), (4, used(10))]);
        assert_eq!(prunable(&set(&[1, 2, 3, 4, 5]), &usage, 4), vec![1, 3]);
        assert_eq!(pending(&usage, 4), 3);
        assert_eq!(prunable(&set(&[4]), &usage, 4), Vec::<KeyId>::new());
    }

    #[test]
    fn locations_know_their_associated_data() {
        assert_eq!(
            Location::Credential(7).aad().unwrap(),
            b"credentials/7".to_vec()
        );
        assert_eq!(
            Location::Job {
                id: 1,
                connector: 3
            }
            .aad()
            .unwrap(),
            b"connectors/3/jobs".to_vec()
        );
        assert_eq!(
            Location::Value("agent_ca".into()).aad().unwrap(),
            aad::AGENT_CA.to_vec()
        );
        assert_eq!(Location::Value("unknown".into()).aad(), None);
        let usage = Usage {
            credentials: 2,
            refresh_tokens: 1,
            access_tokens: 1,
            jobs: 1,
            values: vec!["agent_ca".into()],
        };
        assert_eq!(usage.total(), 6);
    }
}
