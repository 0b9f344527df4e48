//! Console sessions: signing in with an API token makes a server-side session, named by a
//! random id in an HttpOnly, `SameSite=Strict` cookie (`Secure` under TLS). The token stays on
//! the server. A session ends at sign-out, after the idle timeout, or when the API stops
//! accepting its token. Each session has a CSRF token that every form and htmx request sends.

use crate::auth::Actor;
use crate::secret::Secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One signed-in browser.
pub struct Session {
    /// The API token it calls with.
    pub token: Secret,
    /// Who the token is.
    pub actor: Actor,
    /// The token every form of this session carries.
    pub csrf: String,
    last_seen: Mutex<Instant>,
}

/// The live sessions of this server.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    idle: Duration,
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn new(idle: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Starts a session; returns its id (the cookie's value).
    pub fn create(&self, token: Secret, actor: Actor) -> String {
        let id = random_token();
        let session = Arc::new(Session {
            token,
            actor,
            csrf: random_token(),
            last_seen: Mutex::new(Instant::now()),
        });
        let mut map = self.lock();
        let idle = self.idle;
        map.retain(|_, s| !s.expired(idle));
        map.insert(id.clone(), session);
        id
    }

    /// The live session `id`, marked as seen now.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.lock();
        let session = map.get(id).cloned()?;
        if session.expired(self.idle) {
            map.remove(id);
            return None;
        }
        *session
            .last_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        Some(session)
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().remove(id)
    }

    /// Ends every session of token `token_id` (its token was refused).
    pub fn remove_token(&self, token_id: i64) {
        self.lock().retain(|_, s| s.actor.token_id != token_id);
    }
}

impl Session {
    fn expired(&self, idle: Duration) -> bool {
        self.last_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
            >= idle
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
    use crate::domain::Role;

    fn actor() -> Actor {
        Actor {
            token_id: 7,
            name: "ops".into(),
            role: Role::Viewer,
        }
    }

    #[test]
    fn a_session_lives_until_idle_and_goes_with_its_token() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.create(Secret::new("mpt_7_x"), actor());
        assert!(sessions.get(&id).is_some());
        assert!(sessions.get("other").is_none());
        sessions.remove_token(7);
        assert!(sessions.get(&id).is_none());

        let sessions = Sessions::new(Duration::ZERO);
        let id = sessions.create(Secret::new("mpt_7_x"), actor());
        assert!(sessions.get(&id).is_none(), "idle at once");
    }

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
