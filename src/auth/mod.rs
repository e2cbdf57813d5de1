//! Authentication: the bearer JWT in the `Authorization` header becomes an [`Employee`].
//!
//! Guarantees:
//! - accepts RS256, ES256 (P-256) and EdDSA (Ed25519) signed with a key from the configured JWKS
//!   (file or URL), and HS256 only when `auth.hs256_secret_file` is set;
//! - the header is parsed without trusting it: the key is chosen by `kid` from the configured
//!   keys only (`jku`, `x5u`, `jwk` and `x5c` are never read), and each key is pinned to one
//!   algorithm, so `alg: none` and algorithm confusion (an HS256 token "signed" with an RSA public
//!   key, an RS256 token against an EC key) are refused before any signature check;
//! - `exp` is required; `exp`, `nbf`, `iat`, `iss` and `aud` are enforced, with the
//!   configured leeway; a token may not live longer than `auth.max_token_lifetime`
//!   (`exp - iat`, or `exp - now` without `iat`), so a leaked long-lived token is refused;
//! - a verified token is cached by its SHA-256 until it expires (same leeway rule), so repeat
//!   requests skip the signature check;
//! - an unknown `kid` makes a URL JWKS be refetched (one fetch at a time, at most once per
//!   `auth.jwks_min_refresh`), then the lookup is retried once; a JWKS file is never reread.
//!
//! Refuses, each with its own [`AuthError`]: a missing header, another scheme, an oversized
//! header (checked before any parsing), a malformed token, a disallowed algorithm, an unknown key,
//! a bad signature, an expired or not-yet-valid token, a wrong issuer or audience, and missing or
//! wrongly typed claims. Messages never contain the token.

mod cache;
mod claims;
mod jwks;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, ClaimNames};
use crate::model::{Employee, truncate_for_message};
pub use cache::CacheCounts;
use cache::{Lookup, TokenCache, token_hash};
use jwks::{Alg, HttpClient, KeySet, MIN_HS256_SECRET_BYTES, VerifyKey};

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no bearer token in the `Authorization` header")]
    Missing,
    /// Another scheme, no token, or more than one token.
    #[error("the `Authorization` header does not hold exactly one `Bearer` token")]
    NotBearer,
    /// The header value exceeds `auth.max_token_bytes` (checked first).
    #[error("the `Authorization` header is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Not a JWS compact token with a JSON header and payload; the reason never quotes the token.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// `none`, an algorithm the gate does not accept, HS256 without a secret, or no key for it.
    #[error("the token algorithm `{0}` is not allowed")]
    AlgorithmNotAllowed(String),
    /// The `kid` names a key pinned to another algorithm (algorithm confusion).
    #[error("the token algorithm `{alg}` does not match key `{kid}`, which is for `{key_alg}`")]
    AlgorithmMismatch {
        kid: String,
        alg: &'static str,
        key_alg: &'static str,
    },
    /// The `kid` is not in the JWKS (after a refetch, for a JWKS URL).
    #[error("no configured key has kid `{0}`")]
    UnknownKey(String),
    /// No `kid`, and more than one key could have signed the token.
    #[error("the token has no `kid` and several configured keys allow `{0}`")]
    KidRequired(&'static str),
    /// The signature does not verify with the selected key.
    #[error("the token signature does not verify")]
    BadSignature,
    /// `exp` + leeway is not after now (code `tokenExpired`).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is later than now + leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is later than now + leeway.
    #[error("the token was issued in the future (`iat` is {0} s ahead)")]
    IssuedInFuture(i64),
    /// `exp - iat` exceeds `auth.max_token_lifetime`.
    #[error("the token lifetime of {lifetime} s (`exp` - `iat`) exceeds the allowed {max} s")]
    LifetimeTooLong { lifetime: i64, max: i64 },
    /// Without `iat`: `exp - now` exceeds `auth.max_token_lifetime` (plus the leeway).
    #[error(
        "the token has no `iat` and expires in {remaining} s, more than the allowed lifetime of {max} s"
    )]
    ExpiresTooLate { remaining: i64, max: i64 },
    /// `iss` is not `auth.issuer`.
    #[error("the token issuer `{0}` is not the configured issuer")]
    WrongIssuer(String),
    /// `aud` does not contain `auth.audience`.
    #[error("the token audience does not include `{0}`")]
    WrongAudience(String),
    /// A required claim is absent.
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    /// A claim has the wrong type.
    #[error("the token claim `{name}` is not {expected}")]
    InvalidClaim {
        name: String,
        expected: &'static str,
    },
}

impl AuthError {
    /// The stable error code (`tokenExpired` or `invalidToken`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Expired => "tokenExpired",
            _ => "invalidToken",
        }
    }
}

/// The authentication could not be set up (bad key material).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(pub String);

/// Where the JWKS came from, and how to fetch it again.
struct Remote {
    url: String,
    client: HttpClient,
    /// When the last fetch started (`None`: refetch allowed now); the lock makes fetches one
    /// at a time.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Verifies tokens against the configured keys.
pub struct Authenticator {
    issuer: String,
    audience: String,
    claims: ClaimNames,
    leeway: i64,
    /// `auth.max_token_lifetime` in seconds.
    max_lifetime: i64,
    max_token_bytes: usize,
    min_refresh: Duration,
    keys: ArcSwap<KeySet>,
    hs256: Option<Arc<VerifyKey>>,
    remote: Option<Remote>,
    cache: TokenCache,
    /// `auth.jwks_file`, reread by [`Authenticator::reload_jwks_file`].
    jwks_file: Option<std::path::PathBuf>,
    /// SHA-256 of the JWKS file's contents now in force (a reload of the same bytes is a no-op).
    jwks_digest: std::sync::Mutex<Option<[u8; 32]>>,
}

/// The JOSE header members the gate reads; all others (`jku`, `x5u`, `jwk`, `x5c`, …) are ignored.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl Authenticator {
    /// Loads the keys named in the config: the JWKS file or URL (fetched now, within 10 s) and
    /// the optional HS256 secret.
    pub async fn new(cfg: &AuthConfig) -> Result<Authenticator, AuthSetupError> {
        let hs256 = match &cfg.hs256_secret_file {
            Some(path) => Some(Arc::new(load_secret(path).await?)),
            None => None,
        };
        let mut jwks_digest = None;
        let (keys, remote) = match (&cfg.jwks_file, &cfg.jwks_url) {
            (Some(path), _) => {
                let source = format!("jwks file `{}`", path.display());
                let doc = tokio::fs::read(path)
                    .await
                    .map_err(|e| AuthSetupError(format!("cannot read {source}: {e}")))?;
                jwks_digest = Some(sha256(&doc));
                (KeySet::parse(&doc, &source)?, None)
            }
            (None, Some(url)) => {
                let client = jwks::http_client()?;
                let started = Instant::now();
                let doc = jwks::fetch(&client, url)
                    .await
                    .map_err(|e| AuthSetupError(format!("cannot load `auth.jwks_url`: {e}")))?;
                let source = format!("jwks url `{}`", jwks::redact_url(url));
                let keys = KeySet::parse(&doc, &source)?;
                let remote = Remote {
                    url: url.clone(),
                    client,
                    last_fetch: tokio::sync::Mutex::new(Some(started)),
                };
                (keys, Some(remote))
            }
            (None, None) if hs256.is_some() => (KeySet::default(), None),
            (None, None) => {
                return Err(AuthSetupError(
                    "missing key `auth.jwks_file` or `auth.jwks_url`: the gate needs the identity provider's keys".into(),
                ));
            }
        };
        Ok(Authenticator {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            claims: cfg.claims.clone(),
            leeway: i64::try_from(cfg.leeway.0.as_secs()).unwrap_or(i64::MAX),
            max_lifetime: i64::try_from(cfg.max_token_lifetime.0.as_secs()).unwrap_or(i64::MAX),
            max_token_bytes: cfg.max_token_bytes,
            min_refresh: cfg.jwks_min_refresh.0,
            keys: ArcSwap::from_pointee(keys),
            hs256,
            remote,
            cache: TokenCache::new(cfg.token_cache_size),
            jwks_file: cfg.jwks_file.clone(),
            jwks_digest: std::sync::Mutex::new(jwks_digest),
        })
    }

    /// Rereads `auth.jwks_file` (on SIGHUP and by the poller). Changed contents that are valid
    /// replace the key set and empty the token cache (a removed key must not keep verifying
    /// cached tokens); invalid contents keep the old keys and are returned as the error (and
    /// are tried again at the next reload). `Ok(false)`: no `jwks_file` is configured, or its
    /// contents are those in force.
    pub async fn reload_jwks_file(&self) -> Result<bool, AuthSetupError> {
        let Some(path) = &self.jwks_file else {
            return Ok(false);
        };
        let source = format!("jwks file `{}`", path.display());
        let doc = tokio::fs::read(path)
            .await
            .map_err(|e| AuthSetupError(format!("cannot read {source}: {e}")))?;
        let digest = sha256(&doc);
        let in_force = self.jwks_digest.lock().map(|d| *d).unwrap_or(None);
        if in_force == Some(digest) {
            return Ok(false);
        }
        let keys = KeySet::parse(&doc, &source)?;
        self.keys.store(Arc::new(keys));
        self.cache.clear();
        if let Ok(mut d) = self.jwks_digest.lock() {
            *d = Some(digest);
        }
        Ok(true)
    }

    /// How often the verified-token cache answered a lookup, by answer (for `/metrics`).
    pub fn token_cache_counts(&self) -> CacheCounts {
        self.cache.counts()
    }

    /// Number of keys in the current JWKS snapshot (for the startup log).
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Verifies the value of the `Authorization` header.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Employee, AuthError> {
        self.authenticate_at(authorization, unix_now()).await
    }

    /// [`Authenticator::authenticate`] at a given time (seconds since the epoch).
    async fn authenticate_at(
        &self,
        authorization: Option<&[u8]>,
        now: i64,
    ) -> Result<Employee, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        // INVARIANT: the size limit is checked before the value is looked at.
        if value.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge {
                limit: self.max_token_bytes,
            });
        }
        let token = bearer_token(value)?;
        let hash = token_hash(token);
        match self.cache.get(&hash, now, self.leeway) {
            Lookup::Valid(employee) => return Ok(employee),
            Lookup::Expired => return Err(AuthError::Expired),
            Lookup::Miss => {}
        }

        // Read before the key is chosen: see `TokenCache::insert`.
        let generation = self.cache.generation();
        let (header_b64, payload_b64, signature_b64) = split_token(token)?;
        const HEADER_SHAPE: &str =
            "is not a JSON object with a string `alg` and an optional string `kid`";
        // RFC 7515 section 4: the header is a JSON object. serde also reads a struct from an
        // array by position, so the object shape is checked on its own (only on a cache miss).
        let _: Map<String, Value> = decode_json(header_b64, "header", HEADER_SHAPE)?;
        // The struct refuses a repeated `alg`, `kid` or `crit`.
        let header: JoseHeader = decode_json(header_b64, "header", HEADER_SHAPE)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed(
                "the header names critical extensions (`crit`) the gate does not support".into(),
            ));
        }
        let alg = match Alg::parse(&header.alg) {
            Some(Alg::Hs256) if self.hs256.is_none() => None,
            other => other,
        }
        .ok_or_else(|| AuthError::AlgorithmNotAllowed(truncate_for_message(&header.alg)))?;
        let key = self.select_key(alg, header.kid.as_deref()).await?;

        let message_len = header_b64.len() + 1 + payload_b64.len();
        let message = &token.as_bytes()[..message_len];
        match jsonwebtoken::crypto::verify(signature_b64, message, &key.key, alg.jwt()) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::BadSignature),
            Err(_) => {
                return Err(AuthError::Malformed(
                    "the signature is not unpadded base64url".into(),
                ));
            }
        }

        let claims: Map<String, Value> =
            decode_json(payload_b64, "payload", "is not a JSON object")?;
        let expect = claims::Expect {
            issuer: &self.issuer,
            audience: &self.audience,
            names: &self.claims,
            leeway: self.leeway,
            max_lifetime: self.max_lifetime,
        };
        let (employee, exp) = claims::check(&claims, &expect, now)?;
        self.cache
            .insert(hash, (employee.clone(), exp), generation, now, self.leeway);
        Ok(employee)
    }

    /// The key for a token, chosen by `kid` among the configured keys only.
    async fn select_key(&self, alg: Alg, kid: Option<&str>) -> Result<Arc<VerifyKey>, AuthError> {
        let keys = self.keys.load();
        match kid {
            Some(kid) => {
                if let Some(k) = keys.get(kid) {
                    return pinned(k, alg, kid);
                }
                if alg == Alg::Hs256 {
                    // The HS256 key is always the configured secret, never JWKS material.
                    return self
                        .hs256
                        .clone()
                        .ok_or(AuthError::AlgorithmNotAllowed(alg.as_str().to_string()));
                }
                drop(keys);
                match self.refetch_for(kid).await {
                    Some(k) => pinned(&k, alg, kid),
                    None => Err(AuthError::UnknownKey(truncate_for_message(kid))),
                }
            }
            None => {
                if alg == Alg::Hs256 {
                    return self
                        .hs256
                        .clone()
                        .ok_or(AuthError::AlgorithmNotAllowed(alg.as_str().to_string()));
                }
                let mut candidates = keys.for_alg(alg);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Ok(k.clone()),
                    (Some(_), Some(_)) => Err(AuthError::KidRequired(alg.as_str())),
                    (None, _) => Err(AuthError::AlgorithmNotAllowed(alg.as_str().to_string())),
                }
            }
        }
    }

    /// Refetches a URL JWKS for an unknown `kid`: one fetch at a time, at most once per
    /// `jwks_min_refresh`. Returns the key if the (possibly new) key set has it.
    async fn refetch_for(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        let remote = self.remote.as_ref()?;
        let mut last_fetch = remote.last_fetch.lock().await;
        // Another request may have fetched the key while this one waited for the lock.
        if let Some(k) = self.keys.load().get(kid) {
            return Some(k.clone());
        }
        if last_fetch.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return None;
        }
        *last_fetch = Some(Instant::now());
        let source = format!("jwks url `{}`", jwks::redact_url(&remote.url));
        let fetched = jwks::fetch(&remote.client, &remote.url)
            .await
            .and_then(|doc| KeySet::parse(&doc, &source).map_err(|e| e.0));
        match fetched {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "{source}: refetched for an unknown kid");
                self.keys.store(Arc::new(keys));
                // Tokens verified with a key that is gone must be verified again.
                self.cache.clear();
            }
            Err(e) => tracing::warn!("{source}: refetch failed, keeping the old keys: {e}"),
        }
        self.keys.load().get(kid).cloned()
    }
}

/// The key if it is pinned to the token's algorithm.
fn pinned(key: &Arc<VerifyKey>, alg: Alg, kid: &str) -> Result<Arc<VerifyKey>, AuthError> {
    if key.alg == alg {
        Ok(key.clone())
    } else {
        Err(AuthError::AlgorithmMismatch {
            kid: truncate_for_message(kid),
            alg: alg.as_str(),
            key_alg: key.alg.as_str(),
        })
    }
}

/// `Bearer <token>` (RFC 6750 §2.1): the scheme case-insensitive, then spaces, then exactly one
/// token of base64url characters and dots.
fn bearer_token(value: &[u8]) -> Result<&str, AuthError> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::NotBearer);
    }
    let rest = &value[SCHEME.len()..];
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    // One pass over the token (it is read on every request): whitespace anywhere means this is
    // not a bearer token, any other byte outside base64url and dots a malformed one.
    let (mut whitespace, mut other) = (false, false);
    for b in token {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {}
            b if b.is_ascii_whitespace() => whitespace = true,
            _ => other = true,
        }
    }
    if token.is_empty() || whitespace {
        return Err(AuthError::NotBearer);
    }
    if other {
        return Err(AuthError::Malformed(
            "only base64url characters and dots are allowed".into(),
        ));
    }
    // All bytes are ASCII, checked above.
    std::str::from_utf8(token).map_err(|_| AuthError::Malformed("not ASCII".into()))
}

/// The three parts of a JWS compact serialization (RFC 7515 §7.1).
fn split_token(token: &str) -> Result<(&str, &str, &str), AuthError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok((h, p, s)),
        _ => Err(AuthError::Malformed(
            "expected three dot-separated parts with a header and a payload".into(),
        )),
    }
}

/// Decodes one base64url part as JSON.
fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    what: &'static str,
    shape: &'static str,
) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("the {what} is not unpadded base64url")))?;
    // serde_json's messages may quote token content: the message stays fixed.
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(format!("the {what} {shape}")))
}

/// Reads the HS256 secret: the file's bytes without one trailing newline, at least 32 bytes.
async fn load_secret(path: &std::path::Path) -> Result<VerifyKey, AuthSetupError> {
    let source = format!("hs256 secret file `{}`", path.display());
    let mut secret = tokio::fs::read(path)
        .await
        .map_err(|e| AuthSetupError(format!("cannot read {source}: {e}")))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthSetupError(format!(
            "{source}: the secret is {} bytes: at least {MIN_HS256_SECRET_BYTES} required",
            secret.len()
        )));
    }
    Ok(VerifyKey::hs256_secret(&secret))
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

/// SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}
