//! The key set: JWKS parsing, key pinning and fetching a JWKS URL.
//!
//! Guarantees: every usable key is pinned to exactly one algorithm, derived from its `kty`/`crv`
//! and checked against its `alg` when present; key material is validated when loaded, so a
//! request never meets a key that cannot be used. Refuses private or symmetric key material in a
//! JWKS, duplicate `kid`s, inconsistent `alg`s and malformed keys, naming the source and the key.
//! Skips (with a warning) keys that are not for signatures (`use` other than `sig`) and keys of
//! algorithms the gate does not accept (RS384, PS256, P-384, X25519, RSA-OAEP, …).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::AuthSetupError;

/// Time a JWKS fetch gets, connect to last body byte.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash output size).
pub(crate) const MIN_HS256_SECRET_BYTES: usize = 32;
/// Smallest and largest RSA modulus accepted, in bytes (2048 and 4096 bits).
const MIN_RSA_BYTES: usize = 256;
const MAX_RSA_BYTES: usize = 512;

/// The signature algorithms the gate can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Alg {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

impl Alg {
    /// Parses a JOSE `alg` value (case-sensitive, RFC 7515 §4.1.1).
    pub(crate) fn parse(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            "HS256" => Some(Alg::Hs256),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
            Alg::Hs256 => Algorithm::HS256,
        }
    }
}

/// A verification key pinned to one algorithm.
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Alg,
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    /// The HS256 shared secret as a key.
    pub(crate) fn hs256_secret(secret: &[u8]) -> VerifyKey {
        VerifyKey {
            kid: None,
            alg: Alg::Hs256,
            key: DecodingKey::from_secret(secret),
        }
    }
}

/// An immutable snapshot of the identity provider's public keys.
#[derive(Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// The key with this `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.by_kid.get(kid)
    }

    /// All keys pinned to `alg` (for tokens without a `kid`).
    pub(crate) fn for_alg(&self, alg: Alg) -> impl Iterator<Item = &Arc<VerifyKey>> {
        self.all.iter().filter(move |k| k.alg == alg)
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Parses a JWKS document. `source` names it in errors, e.g. "jwks file `/etc/jwks.json`".
    pub(crate) fn parse(doc: &[u8], source: &str) -> Result<KeySet, AuthSetupError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(doc).map_err(|e| {
            AuthSetupError(format!(
                "{source}: not a JWKS document (`{{\"keys\": [...]}}`): {e}"
            ))
        })?;
        let mut set = KeySet::default();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            let jwk: RawJwk = serde_json::from_value(raw)
                .map_err(|e| AuthSetupError(format!("{source}: key #{}: not a JWK: {e}", i + 1)))?;
            let name = match &jwk.kid {
                Some(kid) => format!("key `{kid}`"),
                None => format!("key #{}", i + 1),
            };
            let key = match jwk.into_key() {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(Skip::Skipped(why)) => {
                    tracing::warn!("{source}: {name} skipped: {why}");
                    continue;
                }
                Err(Skip::Refused(why)) => {
                    return Err(AuthSetupError(format!("{source}: {name}: {why}")));
                }
            };
            let key = Arc::new(key);
            if let Some(kid) = &key.kid
                && set.by_kid.insert(kid.clone(), key.clone()).is_some()
            {
                return Err(AuthSetupError(format!(
                    "{source}: {name}: the `kid` is used by two keys"
                )));
            }
            set.all.push(key);
        }
        if set.all.is_empty() {
            return Err(AuthSetupError(format!(
                "{source}: no usable signing key (RS256, ES256 on P-256 or EdDSA on Ed25519)"
            )));
        }
        Ok(set)
    }
}

/// Why a JWK was not loaded: skipped (not a key for us) or refused (broken).
enum Skip {
    Skipped(String),
    Refused(String),
}

fn skip(message: impl Into<String>) -> Skip {
    Skip::Skipped(message.into())
}

fn refuse(message: impl Into<String>) -> Skip {
    Skip::Refused(message.into())
}

/// A JWK as published; only the members the gate reads.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    d: Option<serde_json::Value>,
    #[serde(default)]
    k: Option<serde_json::Value>,
}

impl RawJwk {
    fn into_key(self) -> Result<Option<VerifyKey>, Skip> {
        if self.d.is_some() {
            return Err(refuse(
                "private key material (`d`) is not accepted: publish only public keys",
            ));
        }
        if self.kty == "oct" || self.k.is_some() {
            return Err(refuse(
                "symmetric keys are not accepted: an HS256 secret belongs in `auth.hs256_secret_file`",
            ));
        }
        if let Some(u) = &self.use_
            && u != "sig"
        {
            return Err(skip(format!("its `use` is `{u}`, not `sig`")));
        }
        let crv = self.crv.as_deref();
        let natural = match (self.kty.as_str(), crv) {
            ("RSA", _) => Alg::Rs256,
            ("EC", Some("P-256")) => Alg::Es256,
            ("OKP", Some("Ed25519")) => Alg::EdDsa,
            ("EC" | "OKP", Some(c)) => return Err(skip(format!("curve `{c}` is not accepted"))),
            ("EC" | "OKP", None) => return Err(refuse("missing member `crv`")),
            (kty, _) => return Err(skip(format!("key type `{kty}` is not accepted"))),
        };
        if let Some(alg) = &self.alg {
            // `Ed25519` is the fully-specified name for EdDSA on Ed25519 (RFC 9864).
            let pinned = if alg == "Ed25519" {
                Some(Alg::EdDsa)
            } else {
                Alg::parse(alg)
            };
            match pinned {
                Some(a) if a == natural => {}
                Some(_) => {
                    return Err(refuse(format!(
                        "`alg` is `{alg}` but a `{}` key is for `{}`",
                        self.describe(),
                        natural.as_str()
                    )));
                }
                None => return Err(skip(format!("algorithm `{alg}` is not accepted"))),
            }
        }
        let key = match natural {
            Alg::Rs256 => {
                let n = member_bytes("n", self.n.as_deref())?;
                let e = member_bytes("e", self.e.as_deref())?;
                check_rsa(&n, &e)?;
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
            Alg::Es256 => {
                let x = member_bytes("x", self.x.as_deref())?;
                let y = member_bytes("y", self.y.as_deref())?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(refuse("`x` and `y` must be 32 bytes each for P-256"));
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                check_public_key(
                    &signature::ECDSA_P256_SHA256_FIXED,
                    &sec1,
                    "the point is not on the P-256 curve",
                )?;
                DecodingKey::from_ec_der(&sec1)
            }
            Alg::EdDsa => {
                let x = member_bytes("x", self.x.as_deref())?;
                // INVARIANT: exactly 32 bytes; the EdDSA verifier slices `[..32]`.
                if x.len() != 32 {
                    return Err(refuse("`x` must be 32 bytes for Ed25519"));
                }
                check_public_key(&signature::ED25519, &x, "`x` is not an Ed25519 public key")?;
                DecodingKey::from_ed_der(&x)
            }
            Alg::Hs256 => return Ok(None),
        };
        Ok(Some(VerifyKey {
            kid: self.kid,
            alg: natural,
            key,
        }))
    }

    fn describe(&self) -> String {
        match &self.crv {
            Some(c) => format!("{} {c}", self.kty),
            None => self.kty.clone(),
        }
    }
}

fn member_bytes(name: &str, value: Option<&str>) -> Result<Vec<u8>, Skip> {
    let v = value.ok_or_else(|| refuse(format!("missing member `{name}`")))?;
    URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|_| refuse(format!("`{name}` is not unpadded base64url")))
}

/// RSA public key sanity: 2048..=4096 bits, odd exponent of at least 3.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), Skip> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    if n.len() < MIN_RSA_BYTES || n.len() > MAX_RSA_BYTES {
        return Err(refuse(format!(
            "the RSA modulus is {} bits: expected 2048 to 4096",
            n.len() * 8
        )));
    }
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    let at_least_3 = e.len() > 1 || e.first().is_some_and(|b| *b >= 3);
    if !odd || !at_least_3 || e.len() > 4 {
        return Err(refuse(
            "the RSA exponent `e` is not a valid public exponent",
        ));
    }
    Ok(())
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

/// Parses the key as the crypto backend (aws-lc) will when it verifies: a point that is not on
/// the curve, or bytes that are not a key, are refused at load and not at the first token.
fn check_public_key(
    alg: &'static dyn signature::VerificationAlgorithm,
    bytes: &[u8],
    problem: &str,
) -> Result<(), Skip> {
    signature::ParsedPublicKey::new(alg, bytes)
        .map(|_| ())
        .map_err(|_| refuse(problem))
}

/// The HTTP(S) client used for the JWKS URL.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Builds the client: rustls with the ring provider and the webpki roots; `http://` allowed for
/// an identity provider on a private network or loopback.
pub(crate) fn http_client() -> Result<HttpClient, AuthSetupError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| AuthSetupError(format!("cannot set up TLS for `auth.jwks_url`: {e}")))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The URL for messages: any `user:password@` part is replaced by `***@`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_string(),
    }
}

/// GETs the JWKS document at `url`: status 200, at most [`MAX_JWKS_BYTES`], within
/// [`FETCH_TIMEOUT`].
pub(crate) async fn fetch(client: &HttpClient, url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("`{}` is not a valid URL", redact_url(url)))?;
    let url = redact_url(url);
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request for `{url}`: {e}"))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("cannot fetch `{url}`: {}", one_line(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("`{url}` answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read `{url}`: {e}"))?;
        Ok(body.to_bytes())
    };
    match tokio::time::timeout(FETCH_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "fetching `{url}` took longer than {}s",
            FETCH_TIMEOUT.as_secs()
        )),
    }
}

/// An error and its sources on one line.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_credentials() {
        assert_eq!(
            redact_url("https://user:pw@idp.example/jwks?x=a@b"),
            "https://***@idp.example/jwks?x=a@b"
        );
        assert_eq!(
            redact_url("https://idp.example/a@b"),
            "https://idp.example/a@b"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn alg_names_round_trip_and_are_case_sensitive() {
        for a in [Alg::Rs256, Alg::Es256, Alg::EdDsa, Alg::Hs256] {
            assert_eq!(Alg::parse(a.as_str()), Some(a));
        }
        assert_eq!(Alg::parse("rs256"), None);
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("HS384"), None);
    }
}
