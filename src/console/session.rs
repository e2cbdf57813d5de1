//! Sessions of the auditor console: a random id in a signed cookie, the session itself in
//! memory.
//!
//! Guarantees: the cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the
//! console speaks TLS; its value is `<id>.<HMAC-SHA256(session key, id)>`, so a forged or
//! altered cookie names no session. A session unused for `idle_timeout` is gone (checked on
//! every request, swept on login). Each session has its own CSRF token, compared in constant
//! time. Logout removes the session on the server: the old cookie is then worthless.
//! Refuses: a session key shorter than 32 bytes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pg_session";
/// The cookie that binds an unfinished login to this browser (`SameSite=Lax`: it must come
/// back with the issuer's redirect to `/callback`).
pub const LOGIN_COOKIE: &str = "pg_login";

/// A logged-in auditor.
#[derive(Debug, Clone)]
pub struct Session {
    /// The ID token's `sub`.
    pub sub: String,
    /// The ID token's `name` (or `preferred_username`), when it has one.
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// The CSRF token of every form of this session.
    pub csrf: String,
    last_seen: Instant,
}

/// A login on its way through the issuer.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub verifier: String,
    pub nonce: String,
    started: Instant,
}

/// The sessions and unfinished logins of one console.
pub struct Sessions {
    key: Vec<u8>,
    idle: Duration,
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
    logins: Mutex<HashMap<String, PendingLogin>>,
}

/// A random token: 32 bytes, hex.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Constant-time equality of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    /// Loads the session key (at least 32 bytes) from `path`.
    pub fn load(path: &Path, idle: Duration, secure: bool) -> Result<Sessions, String> {
        let key = std::fs::read(path)
            .map_err(|e| format!("`console.session_key_file` = `{}`: {e}", path.display()))?;
        Sessions::new(key, idle, secure)
            .map_err(|e| format!("`console.session_key_file` = `{}`: {e}", path.display()))
    }

    /// Sessions signed with `key`.
    pub fn new(key: Vec<u8>, idle: Duration, secure: bool) -> Result<Sessions, String> {
        if key.len() < 32 {
            return Err("the key must be at least 32 bytes".into());
        }
        Ok(Sessions {
            key,
            idle,
            secure,
            sessions: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        })
    }

    fn sign(&self, id: &str) -> String {
        // INVARIANT: HMAC accepts keys of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The id in a cookie value, when its signature holds.
    fn verified_id(&self, value: &str) -> Option<String> {
        let (id, sig) = value.split_once('.')?;
        let expected = self.sign(id);
        (!expected.is_empty() && same_token(sig, &expected)).then(|| id.to_string())
    }

    fn cookie(&self, name: &str, value: &str, same_site: &str, max_age: Option<u64>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        c
    }

    /// Starts a login: its `state`, the PKCE verifier and nonce, and the cookie that binds it
    /// to this browser.
    pub fn begin_login(&self) -> (String, PendingLogin, String) {
        let state = random_token();
        let pending = PendingLogin {
            verifier: random_token(),
            nonce: random_token(),
            started: Instant::now(),
        };
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.retain(|_, l| l.started.elapsed() < Duration::from_secs(600));
        logins.insert(state.clone(), pending.clone());
        let value = format!("{state}.{}", self.sign(&state));
        let cookie = self.cookie(LOGIN_COOKIE, &value, "Lax", Some(600));
        (state, pending, cookie)
    }

    /// Takes the login of `state`, if this browser's login cookie names it.
    pub fn finish_login(&self, state: &str, cookie: Option<&str>) -> Option<PendingLogin> {
        let bound = cookie.and_then(|c| self.verified_id(c))?;
        if !same_token(&bound, state) {
            return None;
        }
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins
            .remove(state)
            .filter(|l| l.started.elapsed() < Duration::from_secs(600))
    }

    /// Creates a session; the `Set-Cookie` values (session, and clearing the login cookie).
    pub fn create(&self, sub: String, name: Option<String>, roles: Vec<String>) -> [String; 2] {
        let id = random_token();
        let session = Session {
            sub,
            name,
            roles,
            csrf: random_token(),
            last_seen: Instant::now(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        sessions.insert(id.clone(), session);
        let value = format!("{id}.{}", self.sign(&id));
        [
            self.cookie(SESSION_COOKIE, &value, "Strict", None),
            self.cookie(LOGIN_COOKIE, "", "Lax", Some(0)),
        ]
    }

    /// The session of a cookie value, refreshed; `None` when unknown, forged or idle too long
    /// (then it is removed).
    pub fn get(&self, cookie: Option<&str>) -> Option<Session> {
        let id = self.verified_id(cookie?)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let expired = sessions
            .get(&id)
            .is_some_and(|s| s.last_seen.elapsed() >= self.idle);
        if expired {
            sessions.remove(&id);
            return None;
        }
        let s = sessions.get_mut(&id)?;
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// Ends the session of a cookie value; the `Set-Cookie` that clears the cookie.
    pub fn end(&self, cookie: Option<&str>) -> String {
        if let Some(id) = cookie.and_then(|c| self.verified_id(c)) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.remove(&id);
        }
        self.cookie(SESSION_COOKIE, "", "Strict", Some(0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn value(set_cookie: &str) -> &str {
        let first = set_cookie.split(';').next().unwrap();
        first.split_once('=').unwrap().1
    }

    #[test]
    fn forged_or_altered_cookie_names_no_session() {
        let s = Sessions::new(vec![7; 32], Duration::from_secs(60), true).unwrap();
        let [cookie, _] = s.create("a-1".into(), None, vec!["auditor".into()]);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("; Secure"));
        let v = value(&cookie);
        assert_eq!(s.get(Some(v)).unwrap().sub, "a-1");
        let (id, sig) = v.split_once('.').unwrap();
        let mut altered = sig.to_string();
        altered.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert!(s.get(Some(&format!("{id}.{altered}"))).is_none());
        assert!(s.get(Some(id)).is_none());
        let other = Sessions::new(vec![8; 32], Duration::from_secs(60), true).unwrap();
        assert!(other.get(Some(v)).is_none());
    }

    #[test]
    fn idle_session_ends_and_logout_ends_it_on_the_server() {
        let s = Sessions::new(vec![7; 32], Duration::from_millis(50), false).unwrap();
        let [cookie, _] = s.create("a-1".into(), None, vec![]);
        assert!(!cookie.contains("Secure"));
        let v = value(&cookie).to_string();
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(Some(&v)).is_none());

        let s = Sessions::new(vec![7; 32], Duration::from_secs(60), false).unwrap();
        let [cookie, _] = s.create("a-1".into(), None, vec![]);
        let v = value(&cookie).to_string();
        assert!(s.get(Some(&v)).is_some());
        assert!(s.end(Some(&v)).contains("Max-Age=0"));
        assert!(s.get(Some(&v)).is_none());
    }

    #[test]
    fn a_login_finishes_only_in_the_browser_that_began_it() {
        let s = Sessions::new(vec![7; 32], Duration::from_secs(60), false).unwrap();
        let (state, pending, cookie) = s.begin_login();
        let (other_state, _, other_cookie) = s.begin_login();
        assert!(s.finish_login(&state, Some(value(&other_cookie))).is_none());
        let got = s.finish_login(&state, Some(value(&cookie))).unwrap();
        assert_eq!(got.verifier, pending.verifier);
        // Used once.
        assert!(s.finish_login(&state, Some(value(&cookie))).is_none());
        assert!(s.finish_login(&other_state, None).is_none());
        assert!(Sessions::new(vec![1; 31], Duration::from_secs(1), false).is_err());
    }
}
