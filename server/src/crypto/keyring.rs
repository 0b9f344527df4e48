//! The key file: the key-encryption keys by id.
//!
//! One key per line as `<id> <64 hexadecimal digits>`; blank lines and lines starting with `#`
//! are ignored. A file of one bare key (64 hexadecimal digits, how every installation began) is
//! key 1. The file is private (mode 0600, or the server refuses it) and always replaced whole:
//! a new version is written to a temporary file in the same directory, flushed to disk, and
//! renamed over the old one, so a crash leaves either the old or the new file, never a part.

use super::{Cipher, KeyError, KeyId};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The comment at the top of every key file mailplane writes.
const HEADER: &str = "# mailplane key-encryption keys, one per line: <id> <key>. Keep this file \
private (mode 0600)\n# and backed up; `mailplane keys status` shows which keys are in use.\n";

/// The keys of a key file, by id. Each key is wiped from memory when the ring is dropped
/// ([`Cipher`]), and `Debug` shows only the ids.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<KeyId, Cipher>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses the text of the key file at `path` (named in errors, which never quote a line).
    pub fn parse(path: &Path, text: &str) -> Result<Self, KeyError> {
        let malformed = |line: Option<usize>, reason: &str| KeyError::Malformed {
            path: path.to_path_buf(),
            line,
            reason: reason.to_owned(),
        };
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if let [(n, only)] = lines.as_slice()
            && !only.contains(char::is_whitespace)
        {
            // The single bare key of a file from before key rotation.
            let cipher = Cipher::from_hex(1, only)
                .ok_or_else(|| malformed(Some(*n), "not 64 hexadecimal digits"))?;
            return Ok(Self::from_iter([cipher]));
        }
        let mut ring = Self::default();
        for (n, line) in lines {
            let mut fields = line.split_whitespace();
            let (Some(id), Some(hex), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(malformed(Some(n), "expected `<id> <key>`"));
            };
            let id: KeyId = id
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| malformed(Some(n), "the key id is not a positive integer"))?;
            let cipher = Cipher::from_hex(id, hex)
                .ok_or_else(|| malformed(Some(n), "the key is not 64 hexadecimal digits"))?;
            if ring.keys.insert(id, cipher).is_some() {
                return Err(malformed(Some(n), &format!("key {id} is listed twice")));
            }
        }
        if ring.keys.is_empty() {
            return Err(malformed(None, "it holds no key"));
        }
        Ok(ring)
    }

    /// The file's text: the header, then `<id> <key>` per key in id order. Wiped when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(HEADER));
        for (id, cipher) in &self.keys {
            text.push_str(&id.to_string());
            text.push(' ');
            text.push_str(&cipher.to_hex());
            text.push('\n');
        }
        text
    }

    /// Key `id`, if the ring has it.
    pub fn get(&self, id: KeyId) -> Option<&Cipher> {
        self.keys.get(&id)
    }

    /// The ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// The highest id.
    pub fn highest(&self) -> Option<KeyId> {
        self.keys.keys().next_back().copied()
    }

    /// The keys, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Cipher> {
        self.keys.values()
    }

    /// Adds a key; `false` (and no change) if the ring has one with its id.
    pub fn insert(&mut self, cipher: Cipher) -> bool {
        match self.keys.entry(cipher.id()) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(cipher);
                true
            }
        }
    }

    /// Removes key `id`.
    pub fn remove(&mut self, id: KeyId) -> Option<Cipher> {
        self.keys.remove(&id)
    }

    /// Reads the key file at `path`: `None` if there is none. A file that group or others may
    /// read is refused.
    pub fn load(path: &Path) -> Result<Option<Self>, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        Self::parse(path, &text).map(Some)
    }

    /// Writes the ring to `path`, replacing any file there atomically (mode 0600).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let temp = self.write_temp(path)?;
        std::fs::rename(&temp, path)
            .and_then(|()| sync_dir(path))
            .map_err(|source| {
                let _ = std::fs::remove_file(&temp);
                KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })
    }

    /// Writes a new key file at `path` with one new key, id 1; fails if a file is there
    /// already (another process made one first), never replacing it.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let ring = Self::from_iter([Cipher::generate(1)]);
        let temp = ring.write_temp(path)?;
        // A hard link, unlike a rename, fails when the name is taken.
        let linked = std::fs::hard_link(&temp, path).and_then(|()| sync_dir(path));
        let _ = std::fs::remove_file(&temp);
        linked.map_err(io)?;
        Ok(ring)
    }

    /// Writes the ring to a new temporary file next to `path`, flushed to disk.
    fn write_temp(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let name = path.file_name().map_or_else(
            || "mailplane.key".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let temp = path.with_file_name(format!(
            ".{name}.{}.{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let io = |source| KeyError::Io {
            path: temp.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
        let written = file
            .write_all(self.to_text().as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io(e));
        }
        Ok(temp)
    }
}

impl FromIterator<Cipher> for Keyring {
    fn from_iter<I: IntoIterator<Item = Cipher>>(iter: I) -> Self {
        Self {
            keys: iter.into_iter().map(|c| (c.id(), c)).collect(),
        }
    }
}

/// Flushes the directory holding `path`, so that a rename or link in it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const HEX_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn p() -> &'static Path {
        Path::new("/etc/mailplane.key")
    }

    #[test]
    fn a_bare_key_is_key_1() {
        for text in [
            format!("{HEX_A}\n"),
            format!("  {HEX_A}  "),
            format!("# a comment\n\n{HEX_A}\n"),
        ] {
            let ring = Keyring::parse(p(), &text).unwrap();
            assert_eq!(ring.ids().collect::<Vec<_>>(), [1]);
            assert_eq!(ring.get(1).unwrap().to_hex().as_str(), HEX_A);
        }
    }

    #[test]
    fn several_keys_by_id_round_trip() {
        let text = format!("# keys\n1 {HEX_A}\n\n  7\t{HEX_B}  \n");
        let ring = Keyring::parse(p(), &text).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), [1, 7]);
        assert_eq!(ring.highest(), Some(7));
        assert_eq!(ring.get(7).unwrap().to_hex().as_str(), HEX_B);
        assert_eq!(ring.get(7).unwrap().id(), 7);
        let again = Keyring::parse(p(), &ring.to_text()).unwrap();
        assert_eq!(again.ids().collect::<Vec<_>>(), [1, 7]);
        assert_eq!(again.get(1).unwrap().to_hex().as_str(), HEX_A);
        assert!(ring.to_text().starts_with('#'));
        let one = Keyring::parse(p(), &format!("1 {HEX_A}\n")).unwrap();
        assert_eq!(one.ids().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn malformed_files_name_the_line_and_never_quote_it() {
        let cases = [
            (String::new(), None, "holds no key"),
            ("# only a comment\n".to_owned(), None, "holds no key"),
            ("not-hex".to_owned(), Some(1), "not 64 hexadecimal"),
            (
                format!("{HEX_A}\n{HEX_B}\n"),
                Some(1),
                "expected `<id> <key>`",
            ),
            (
                format!("1 {HEX_A}\n{HEX_B}\n"),
                Some(2),
                "expected `<id> <key>`",
            ),
            (format!("0 {HEX_A}\n"), Some(1), "positive integer"),
            (format!("-1 {HEX_A}\n"), Some(1), "positive integer"),
            (format!("x {HEX_A}\n"), Some(1), "positive integer"),
            (format!("1 {}\n", &HEX_A[..62]), Some(1), "64 hexadecimal"),
            (
                format!("1 {HEX_A} extra\n"),
                Some(1),
                "expected `<id> <key>`",
            ),
            (format!("1 {HEX_A}\n\n1 {HEX_B}\n"), Some(3), "listed twice"),
        ];
        for (text, line, reason) in cases {
            let err = Keyring::parse(p(), &text).unwrap_err();
            let KeyError::Malformed { line: at, .. } = &err else {
                panic!("{text:?}: {err}");
            };
            assert_eq!(*at, line, "{text:?}: {err}");
            let shown = err.to_string();
            assert!(shown.contains(reason), "{shown}");
            assert!(shown.contains("/etc/mailplane.key"), "{shown}");
            assert!(
                !shown.contains(&HEX_A[..16]) && !shown.contains(&HEX_B[..16]),
                "no key material in errors: {shown}"
            );
        }
    }

    #[test]
    fn written_files_are_private_whole_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mailplane.key");
        let created = Keyring::create(&path).unwrap();
        assert_eq!(created.ids().collect::<Vec<_>>(), [1]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            matches!(Keyring::create(&path), Err(KeyError::Io { .. })),
            "never replaces a key file"
        );
        let mut ring = Keyring::load(&path).unwrap().unwrap();
        assert_eq!(
            ring.get(1).unwrap().to_hex().as_str(),
            created.get(1).unwrap().to_hex().as_str()
        );
        assert!(ring.insert(Cipher::generate(2)));
        assert!(!ring.insert(Cipher::generate(2)), "ids are unique");
        ring.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Keyring::load(&path).unwrap().unwrap();
        assert_eq!(back.ids().collect::<Vec<_>>(), [1, 2]);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["mailplane.key"]);
        assert!(Keyring::load(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn a_key_file_that_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailplane.key");
        Keyring::create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Keyring::load(&path).unwrap_err();
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
            Keyring::load(&path).expect("a private key file is fine");
        }
    }

    #[test]
    fn debug_shows_ids_only() {
        let ring = Keyring::parse(p(), &format!("3 {HEX_A}\n")).unwrap();
        let shown = format!("{ring:?}");
        assert!(
            shown.contains("[3]") && !shown.contains(&HEX_A[..8]),
            "{shown}"
        );
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        wiped(&ring.to_text());
    }
}
