//! The state directory: what enrollment leaves behind.
//!
//! | file | content |
//! | --- | --- |
//! | `key.pem` | the agent's private key (mode 0600, never replaced in place) |
//! | `cert.pem` | its client certificate, replaced atomically on renewal |
//! | `ca.pem` | the CA returned by `Enroll` |
//! | `agent` | the agent's resource name, `connectors/{c}/agents/{a}` |

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The private key file.
pub const KEY_FILE: &str = "key.pem";
/// The certificate file.
pub const CERT_FILE: &str = "cert.pem";
/// The CA file.
pub const CA_FILE: &str = "ca.pem";
/// The file holding the agent's resource name.
pub const AGENT_FILE: &str = "agent";
/// The URL of the server the agent was last connected to (a preference, not state the
/// agent needs).
pub const LAST_SERVER_FILE: &str = "last-server";

/// A private key (PEM). Its `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(String);

impl KeyPem {
    /// Wraps a key.
    pub fn new(pem: impl Into<String>) -> Self {
        KeyPem(pem.into())
    }

    /// The PEM text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An enrolled agent's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The directory.
    pub dir: PathBuf,
    /// The private key.
    pub key_pem: KeyPem,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The CA returned by enrollment (PEM).
    pub ca_pem: String,
    /// The agent's resource name.
    pub agent: String,
}

/// A problem with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Some files are there, others are not.
    #[error(
        "the state directory {dir} is incomplete ({missing} is missing); remove it and run \
         `mailplane-agent enroll` again"
    )]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// The missing file.
        missing: &'static str,
    },
    /// There is already a key: enrolling again would overwrite an identity.
    #[error(
        "{0} already exists: this agent is enrolled; remove the state directory to enroll it again"
    )]
    AlreadyEnrolled(PathBuf),
    /// There is no enrollment (and, where one was needed, no token to make one).
    #[error(
        "this agent is not enrolled ({0} holds no key): run `mailplane-agent enroll` first, \
         or configure an enrollment token"
    )]
    NotEnrolled(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Loads the state, which must be there: [`StateError::NotEnrolled`] otherwise.
pub fn require(dir: &Path) -> Result<State, StateError> {
    load(dir)?.ok_or_else(|| StateError::NotEnrolled(dir.to_owned()))
}

/// Loads the state; `Ok(None)` when the directory holds no enrollment at all.
pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
    let key = read_optional(&dir.join(KEY_FILE))?;
    let cert = read_optional(&dir.join(CERT_FILE))?;
    let ca = read_optional(&dir.join(CA_FILE))?;
    let agent = read_optional(&dir.join(AGENT_FILE))?;
    let incomplete = |missing| StateError::Incomplete {
        dir: dir.to_owned(),
        missing,
    };
    match (key, cert, ca, agent) {
        (None, None, None, None) => Ok(None),
        (Some(key), Some(cert), Some(ca), Some(agent)) => Ok(Some(State {
            dir: dir.to_owned(),
            key_pem: KeyPem(key),
            cert_pem: cert,
            ca_pem: ca,
            agent: agent.trim().to_owned(),
        })),
        (None, ..) => Err(incomplete(KEY_FILE)),
        (_, None, ..) => Err(incomplete(CERT_FILE)),
        (_, _, None, _) => Err(incomplete(CA_FILE)),
        (.., None) => Err(incomplete(AGENT_FILE)),
    }
}

/// Creates the directory (mode 0700) if needed.
pub fn create_dir(dir: &Path) -> Result<(), StateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Fails when the directory already holds a key.
pub fn ensure_not_enrolled(dir: &Path) -> Result<(), StateError> {
    let key = dir.join(KEY_FILE);
    if key.exists() {
        return Err(StateError::AlreadyEnrolled(key));
    }
    Ok(())
}

/// Writes `contents` to `dir/name` through a temporary file and a rename, so that a
/// reader sees the old file or the new one, never half of one.
fn write_atomic(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io(&path))
}

/// Writes a new enrollment. The key is created with `create_new` and mode 0600, so an
/// existing identity is never overwritten.
pub fn save(
    dir: &Path,
    key_pem: &KeyPem,
    cert_pem: &str,
    ca_pem: &str,
    agent: &str,
) -> Result<State, StateError> {
    create_dir(dir)?;
    let key_path = dir.join(KEY_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                StateError::AlreadyEnrolled(key_path.clone())
            } else {
                io(&key_path)(e)
            }
        })?;
    f.write_all(key_pem.expose().as_bytes())
        .map_err(io(&key_path))?;
    f.sync_all().map_err(io(&key_path))?;
    write_atomic(dir, CA_FILE, ca_pem, 0o644)?;
    write_atomic(dir, AGENT_FILE, &format!("{agent}\n"), 0o644)?;
    // The certificate last: its presence completes the state.
    write_atomic(dir, CERT_FILE, cert_pem, 0o644)?;
    Ok(State {
        dir: dir.to_owned(),
        key_pem: key_pem.clone(),
        cert_pem: cert_pem.to_owned(),
        ca_pem: ca_pem.to_owned(),
        agent: agent.to_owned(),
    })
}

/// Replaces `cert.pem` atomically.
pub fn replace_certificate(dir: &Path, cert_pem: &str) -> Result<(), StateError> {
    write_atomic(dir, CERT_FILE, cert_pem, 0o644)
}

/// The server the agent was last connected to, if it noted one.
pub fn last_server(dir: &Path) -> Result<Option<String>, StateError> {
    Ok(read_optional(&dir.join(LAST_SERVER_FILE))?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

/// Notes the server the agent is connected to.
pub fn save_last_server(dir: &Path, url: &str) -> Result<(), StateError> {
    write_atomic(dir, LAST_SERVER_FILE, &format!("{url}\n"), 0o644)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn save_load_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert!(load(&dir).unwrap().is_none());
        ensure_not_enrolled(&dir).unwrap();
        let key = KeyPem::new("-----BEGIN PRIVATE KEY-----\nsecret\n");
        let saved = save(&dir, &key, "CERT", "CA", "connectors/1/agents/a").unwrap();
        assert_eq!(load(&dir).unwrap(), Some(saved.clone()));
        assert_eq!(saved.agent, "connectors/1/agents/a");

        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!format!("{saved:?}").contains("secret"));

        // Never overwrite an identity.
        assert!(matches!(
            save(&dir, &key, "C2", "CA", "x"),
            Err(StateError::AlreadyEnrolled(_))
        ));
        assert!(matches!(
            ensure_not_enrolled(&dir),
            Err(StateError::AlreadyEnrolled(_))
        ));

        replace_certificate(&dir, "CERT2").unwrap();
        assert_eq!(load(&dir).unwrap().unwrap().cert_pem, "CERT2");
        assert_eq!(mode(KEY_FILE), 0o600);

        fs::remove_file(dir.join(CA_FILE)).unwrap();
        let err = load(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Incomplete {
                    missing: CA_FILE,
                    ..
                }
            ),
            "{err}"
        );
    }
}
