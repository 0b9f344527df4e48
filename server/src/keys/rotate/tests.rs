//! Rotation on an SQLite store: seal and open by key id, a user's update during re-encryption
//! wins, interrupted rotations resume without a new key, prune refuses keys in use, the
//! running server's keys follow the key file, and one command at a time.

use super::*;
use crate::domain::{CredentialId, CredentialKind, CredentialSpec};
use crate::error::Error;
use crate::keys::Keys;
use crate::secret::Secret;
use crate::store::keys::{Table, Which};
use crate::store::{DatabaseUrl, open};

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    keys: Keys,
    path: PathBuf,
}

/// A new SQLite store and key file (key 1) with `n` credentials whose secrets are `secret-{i}`.
async fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&DatabaseUrl::Sqlite(dir.path().join("t.db")))
        .await
        .unwrap();
    let path = dir.path().join("mailplane.key");
    let (keys, created) = Keys::load(&path, Arc::clone(&store)).await.unwrap();
    assert!(created);
    let setup = Setup {
        _dir: dir,
        store,
        keys,
        path,
    };
    for i in 0..n {
        setup.create(&format!("secret-{i}")).await;
    }
    setup
}

impl Setup {
    async fn create(&self, secret: &str) -> CredentialId {
        let spec = CredentialSpec {
            display_name: "c".into(),
            username: "u".into(),
            kind: CredentialKind::Password,
            allowed_destinations: vec![],
            oauth: Default::default(),
        };
        let primary = self.keys.primary().await.unwrap();
        self.store
            .create_credential(
                &AuditContext::system(),
                spec,
                &Secret::new(secret.to_owned()),
                None,
                &primary,
            )
            .await
            .unwrap()
            .id
    }

    async fn secret(&self, id: CredentialId) -> String {
        self.keys
            .credential_secret(id)
            .await
            .unwrap()
            .expose()
            .to_owned()
    }

    fn maintenance(&self) -> Maintenance {
        Maintenance::with_store(Arc::clone(&self.store), self.path.clone())
    }

    async fn rotate(&self, batch_size: usize) -> (RotateReport, String) {
        let mut out = Vec::new();
        let report = self
            .maintenance()
            .rotate(
                &RotateOptions {
                    batch_size,
                    pause: Duration::ZERO,
                },
                &mut out,
            )
            .await
            .unwrap();
        (report, String::from_utf8(out).unwrap())
    }

    fn file_ids(&self) -> Vec<KeyId> {
        Keyring::load(&self.path).unwrap().unwrap().ids().collect()
    }
}

#[tokio::test]
async fn a_rotation_reencrypts_everything_and_every_secret_still_opens() {
    let s = setup(7).await;
    // The sealed values a server makes at start-up. The token key is the one derived from key
    // 1 before it was stored, so tokens issued by earlier versions stay valid.
    let token_key = crate::auth::token_key::load_or_create(&s.store, &s.keys)
        .await
        .unwrap();
    let first = s.keys.get(1).await.unwrap();
    assert_eq!(*token_key, *first.derive("mailplane:api-token-hash"));
    let before = s.maintenance().status().await.unwrap();
    assert_eq!((before.primary, before.pending, before.total), (1, 0, 8));
    let (report, out) = s.rotate(3).await;
    assert_eq!(report.plan, Plan::Generate(2));
    assert_eq!((report.primary, report.reencrypted), (2, 8));
    assert!(out.contains("re-encrypted 8 of 8"), "{out}");
    assert!(out.contains("Keys no longer used: 1"), "{out}");
    assert_eq!(s.file_ids(), [1, 2]);
    let status = s.maintenance().status().await.unwrap();
    assert_eq!((status.primary, status.pending, status.total), (2, 0, 8));
    let [one, two] = status.keys.as_slice() else {
        panic!("{status:?}")
    };
    assert!(
        one.prunable && one.in_file && one.usage.total() == 0,
        "{one:?}"
    );
    assert!(
        two.primary && !two.prunable && two.usage.credentials == 7,
        "{two:?}"
    );
    assert_eq!(two.usage.values, ["api_token_key"]);
    for i in 0..7 {
        assert_eq!(s.secret(CredentialId(i + 1)).await, format!("secret-{i}"));
    }
    // New secrets are sealed under the new primary.
    let id = s.create("fresh").await;
    let rows = s
        .store
        .sealed_rows(Table::Credentials, Which::All, id.0 - 1, 10)
        .await
        .unwrap();
    assert_eq!(rows[0].sealed.key_id, 2);
    let report = s.maintenance().verify().await.unwrap();
    assert_eq!((report.decrypted(), report.failed), (9, 0));
    // Re-sealed under key 2, the token key is unchanged.
    let after = crate::auth::token_key::load_or_create(&s.store, &s.keys)
        .await
        .unwrap();
    assert_eq!(*after, *token_key);
    assert_eq!(
        s.store
            .get_sealed_meta("api_token_key")
            .await
            .unwrap()
            .unwrap()
            .key_id,
        2
    );
    assert_eq!(report.ok.keys().copied().collect::<Vec<_>>(), [2]);
}

#[tokio::test]
async fn a_users_update_during_reencryption_wins() {
    let s = setup(2).await;
    let read = s
        .store
        .sealed_rows(Table::Credentials, Which::NotUnder(2), 0, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    let mut out = Vec::new();
    let new_key = s.maintenance().add(&mut out).await.unwrap();
    assert_eq!(new_key, 2);
    let ring = Keyring::load(&s.path).unwrap().unwrap();
    let (one, two) = (ring.get(1).unwrap(), ring.get(2).unwrap());
    // Between the rotation's read and its write, a user stores a new secret for credential 1.
    s.store
        .update_credential(
            &AuditContext::system(),
            CredentialId(1),
            None,
            &|_| Ok(()),
            &std::sync::Mutex::new(crate::store::credentials::SecretChange {
                secret: Some(Secret::new("users-new-secret".to_owned())),
                refresh_token: None,
            }),
            one,
        )
        .await
        .unwrap();
    let pairs: Vec<_> = read
        .iter()
        .map(|row| {
            let aad = row.at.aad().unwrap();
            let plain = one.open(&aad, &row.sealed).unwrap();
            (row.clone(), two.seal(&aad, &plain).unwrap())
        })
        .collect();
    assert_eq!(
        s.store.rewrite_ciphertexts(&pairs).await.unwrap(),
        1,
        "only the unchanged row is rewritten"
    );
    assert_eq!(s.secret(CredentialId(1)).await, "users-new-secret");
    assert_eq!(s.secret(CredentialId(2)).await, "secret-1");
    // The rotation's next pass takes the user's row (still under key 1) too.
    let (report, _) = s.rotate(10).await;
    assert_eq!(report.plan, Plan::Adopt(2));
    assert_eq!(s.secret(CredentialId(1)).await, "users-new-secret");
    assert_eq!(s.maintenance().status().await.unwrap().pending, 0);
}

#[tokio::test]
async fn an_interrupted_rotation_resumes_without_a_new_key() {
    let s = setup(5).await;
    // Interrupted after the key was written, before its check and the switch: it is adopted.
    Keyring::load(&s.path)
        .unwrap()
        .map(|mut ring| {
            assert!(ring.insert(Cipher::generate(2)));
            ring.write(&s.path).unwrap();
        })
        .unwrap();
    assert!(s.store.key_check(2).await.unwrap().is_none());
    let (report, out) = s.rotate(2).await;
    assert_eq!(report.plan, Plan::Adopt(2), "{out}");
    assert!(out.contains("key 2 was in the key file already"), "{out}");
    assert_eq!(s.file_ids(), [1, 2], "no key was generated");
    assert!(s.store.key_check(2).await.unwrap().is_some());
    // Interrupted after the switch to key 3, before any re-encryption: the next rotate
    // resumes.
    let mut m = s.maintenance();
    m.add(&mut Vec::new()).await.unwrap();
    assert!(
        s.store
            .switch_primary_key(&AuditContext::system(), 2, 3)
            .await
            .unwrap()
    );
    let status = s.maintenance().status().await.unwrap();
    assert_eq!(status.pending, 5);
    drop(m);
    let (report, out) = s.rotate(2).await;
    assert_eq!(report.plan, Plan::Resume(3));
    assert!(
        out.contains("resuming the unfinished rotation to key 3"),
        "{out}"
    );
    assert_eq!(s.file_ids(), [1, 2, 3]);
    for i in 0..5 {
        assert_eq!(s.secret(CredentialId(i + 1)).await, format!("secret-{i}"));
    }
}

#[tokio::test]
async fn prune_removes_only_unused_older_keys() {
    let s = setup(3).await;
    let mut m = s.maintenance();
    let err = m.prune(&[1], &mut Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("primary"), "{err}");
    m.add(&mut Vec::new()).await.unwrap();
    let err = m.prune(&[2], &mut Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("newer than the primary"), "{err}");
    // A half-done rotation: key 1 still seals something.
    assert!(
        s.store
            .switch_primary_key(&AuditContext::system(), 1, 2)
            .await
            .unwrap()
    );
    let err = m.prune(&[1], &mut Vec::new()).await.unwrap_err();
    assert!(
        matches!(err, RotateError::KeyInUse { id: 1, .. })
            && err.to_string().contains("3 ciphertexts"),
        "{err}"
    );
    assert!(m.prune(&[], &mut Vec::new()).await.unwrap().is_empty());
    m.rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(m.prune(&[], &mut Vec::new()).await.unwrap(), [1]);
    assert_eq!(s.file_ids(), [2]);
    assert!(s.store.key_check(1).await.unwrap().is_none());
    let status = m.status().await.unwrap();
    assert_eq!(
        status.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
        [2],
        "{status:?}"
    );
    for i in 0..3 {
        assert_eq!(s.secret(CredentialId(i + 1)).await, format!("secret-{i}"));
    }
}

#[tokio::test]
async fn a_server_follows_the_key_file_and_names_a_missing_key() {
    let s = setup(1).await;
    let keys = Keys::load(&s.path, Arc::clone(&s.store))
        .await
        .unwrap()
        .0
        .with_reload_interval(Duration::from_secs(3600));
    // Key 2 exists in the database (another host's `keys add`), not in this file.
    let ring = Keyring::load(&s.path).unwrap().unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_path = other.path().join("mailplane.key");
    ring.write(&other_path).unwrap();
    let mut elsewhere = Maintenance::with_store(Arc::clone(&s.store), other_path.clone());
    elsewhere.add(&mut Vec::new()).await.unwrap();
    drop(elsewhere);
    let err = keys.get(2).await.unwrap_err();
    let Error::FailedPrecondition(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("key 2"), "{message}");
    assert!(message.contains(&s.path.display().to_string()), "{message}");
    assert_eq!(keys.reloads(), 1);
    // Unchanged, the file is not read again within the interval...
    assert!(keys.get(2).await.is_err());
    assert_eq!(keys.reloads(), 1);
    // ...but once it changes it is read at once, and the key is taken after its check.
    std::fs::copy(&other_path, &s.path).unwrap();
    let two = keys.get(2).await.unwrap();
    assert_eq!(two.id(), 2);
    assert_eq!(keys.ids(), [1, 2]);
    // A file key that does not match its key check is never taken.
    let mut forged = Keyring::load(&s.path).unwrap().unwrap();
    forged.remove(2);
    assert!(forged.insert(Cipher::generate(3)));
    forged.write(&s.path).unwrap();
    s.store
        .add_key_check(&Cipher::generate(3).key_check().unwrap())
        .await
        .unwrap();
    assert!(keys.get(3).await.is_err());
}

#[tokio::test]
async fn a_key_file_without_the_primary_key_is_refused_at_start() {
    let s = setup(1).await;
    s.maintenance()
        .rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    let mut ring = Keyring::load(&s.path).unwrap().unwrap();
    ring.remove(2);
    ring.write(&s.path).unwrap();
    let err = Keys::load(&s.path, Arc::clone(&s.store)).await.unwrap_err();
    assert!(matches!(err, KeyError::MissingKey { id: 2, .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("lacks key 2") && text.contains("primary"),
        "{text}"
    );
}

#[tokio::test]
async fn one_keys_command_changes_keys_at_a_time() {
    let s = setup(0).await;
    let mut first = s.maintenance();
    first.add(&mut Vec::new()).await.unwrap();
    let err = s.maintenance().add(&mut Vec::new()).await.unwrap_err();
    assert!(matches!(err, RotateError::Busy), "{err}");
    // Reading needs no lock.
    assert_eq!(s.maintenance().status().await.unwrap().primary, 1);
    drop(first);
    let mut out = Vec::new();
    assert_eq!(
        s.maintenance().add(&mut out).await.unwrap(),
        2,
        "kept, not a third key"
    );
    assert!(String::from_utf8(out).unwrap().contains("already"));
}
