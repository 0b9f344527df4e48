//! Console sessions: signing in with an API token makes a server-side session, named by a
//! random id in an HttpOnly, `SameSite=Strict` cookie (`Secure` under TLS). The token stays on
//! the server. A session ends at sign-out, after the idle timeout, or when the API stops
//! accepting its token. Each session has a CSRF token that every form and htmx request sends.

use crate::auth::Actor;
use crate::domain::{Role, now_micros};
use crate::error::Result;
use crate::keys::Keys;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::console_sessions::SessionRecord;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The session cookie.
pub const COOKIE: &str = "mailplane_session";
/// The cookie of the sign-in form's CSRF token (before a session exists).
pub const SIGNIN_COOKIE: &str = "mailplane_signin";
/// The language cookie.
pub const LANG_COOKIE: &str = "mailplane_lang";

/// 32 random bytes, in hex.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// One signed-in browser.
pub struct Session {
    /// The API token it calls with.
    pub token: Secret,
    /// Who the token is.
    pub actor: Actor,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// How often a session's last use is written back (not at every request).
const TOUCH_EVERY: Duration = Duration::from_secs(15);

/// The sessions, in the database: every replica sees them, and they outlive a restart.
pub struct Sessions {
    store: Arc<Store>,
    keys: Arc<Keys>,
    idle: Duration,
}

/// The stored name of a session: the SHA-256 of its cookie's value.
fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// What the sealed token is bound to.
fn aad(id_hash: &str) -> Vec<u8> {
    format!("console-session:{id_hash}").into_bytes()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn new(store: Arc<Store>, keys: Arc<Keys>, idle: Duration) -> Self {
        Self { store, keys, idle }
    }

    /// Starts a session; returns its id (the cookie's value). Sessions idle for longer than the
    /// timeout are deleted on the way.
    pub async fn create(&self, token: Secret, actor: Actor) -> Result<String> {
        let now = now_micros();
        let _ = self
            .store
            .purge_console_sessions(now - micros(self.idle))
            .await?;
        let id = random_token();
        let hash = id_hash(&id);
        let sealed = self
            .keys
            .primary()
            .await?
            .seal(&aad(&hash), token.expose().as_bytes())?;
        let record = SessionRecord {
            token_id: actor.token_id,
            actor_name: actor.name,
            role: actor.role.as_str().to_owned(),
            csrf: random_token(),
            token: sealed,
            last_seen: now,
        };
        self.store.create_console_session(&hash, &record).await?;
        Ok(id)
    }

    /// The live session `id`, marked as used now.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Session>>> {
        let now = now_micros();
        let hash = id_hash(id);
        let Some(record) = self
            .store
            .console_session(&hash, now - micros(self.idle))
            .await?
        else {
            return Ok(None);
        };
        // A session sealed under a key retired since cannot open: sign in again.
        let Ok(token) = self.keys.open_secret(&aad(&hash), &record.token).await else {
            self.store.delete_console_session(&hash).await?;
            return Ok(None);
        };
        let Some(role) = Role::parse(&record.role) else {
            return Ok(None);
        };
        if now - record.last_seen >= micros(TOUCH_EVERY) {
            self.store.touch_console_session(&hash, now).await?;
        }
        Ok(Some(Arc::new(Session {
            token,
            actor: Actor {
                token_id: record.token_id,
                name: record.actor_name,
                role,
            },
            csrf: record.csrf,
        })))
    }

    /// Ends session `id`.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.store.delete_console_session(&id_hash(id)).await
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure under TLS; `max_age` 0
/// deletes it, `None` makes it last for the browser session.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_and_written_strictly() {
        assert_eq!(
            cookie(Some("a=1; mailplane_session=xyz; b=2"), COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie(Some("a=1"), COOKIE), None);
        let c = set_cookie(COOKIE, "v", true, None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(COOKIE, "v", false, Some(0)).contains("Secure"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
