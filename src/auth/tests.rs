//! Tests for the authentication stage: every rejection, every accepted algorithm, the cache and
//! the JWKS URL refetch. Keys are generated per test (EC, Ed25519) or read from a test-only RSA
//! key in `testdata/` (RSA key generation is slow in debug builds).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::Dur;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://idp.example";
const AUD: &str = "purpose-gate";
const RSA_PEM: &str = include_str!("testdata/rsa-2048-test-only.pem");

/// A signing key and its public JWK.
struct TestKey {
    enc: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: &str) -> TestKey {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let sk = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).unwrap();
    TestKey {
        enc: EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
        alg: Algorithm::RS256,
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be())}),
    }
}

/// The RSA public key as PEM, the bytes an HS256 confusion attack uses as the "secret".
fn rsa_public_pem() -> String {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let sk = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).unwrap();
    sk.to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
}

fn ec_key(kid: &str) -> TestKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = sk.public_key().to_encoded_point(false);
    TestKey {
        enc: EncodingKey::from_ec_der(sk.to_pkcs8_der().unwrap().as_bytes()),
        alg: Algorithm::ES256,
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                    "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
    }
}

fn ed_key(kid: &str) -> TestKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    TestKey {
        enc: EncodingKey::from_ed_der(sk.to_pkcs8_der().unwrap().as_bytes()),
        alg: Algorithm::EdDSA,
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": b64(sk.verifying_key().as_bytes())}),
    }
}

/// Signs `header.claims` with `key` under `alg` (the header is taken as given).
fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

/// A token from `key` with its kid and the given claims.
fn mint(key: &TestKey, claims: &Value) -> String {
    let kid = key.jwk["kid"].clone();
    let header = json!({"alg": alg_name(key.alg), "typ": "JWT", "kid": kid});
    sign_raw(&header, claims, &key.enc, key.alg)
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        _ => "other",
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "exp": NOW + 600, "iat": NOW, "sub": "e1001",
           "org": "0363", "roles": ["burgerzaken"]})
}

fn employee() -> Employee {
    Employee {
        id: "e1001".into(),
        org: "0363".into(),
        roles: vec!["burgerzaken".into()],
        department: None,
    }
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// A config with the given key source and defaults otherwise (leeway 30 s).
fn config(jwks_file: Option<PathBuf>, jwks_url: Option<String>) -> AuthConfig {
    AuthConfig {
        issuer: ISS.into(),
        audience: AUD.into(),
        jwks_file,
        jwks_url,
        hs256_secret_file: None,
        leeway: Dur(Duration::from_secs(30)),
        max_token_lifetime: Dur(Duration::from_secs(12 * 3600)),
        jwks_min_refresh: Dur(Duration::from_secs(60)),
        max_token_bytes: 8 * 1024,
        token_cache_size: 100,
        claims: ClaimNames::default(),
    }
}

/// A temporary directory holding a JWKS file with these keys.
struct Fixture {
    dir: tempfile::TempDir,
    cfg: AuthConfig,
}

fn fixture(keys: &[&TestKey]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(&path, jwks.to_string()).unwrap();
    let cfg = config(Some(path), None);
    Fixture { dir, cfg }
}

impl Fixture {
    fn with_secret(mut self, secret: &[u8]) -> Fixture {
        let path = self.dir.path().join("hs256.secret");
        std::fs::write(&path, secret).unwrap();
        self.cfg.hs256_secret_file = Some(path);
        self
    }

    async fn auth(&self) -> Authenticator {
        Authenticator::new(&self.cfg).await.unwrap()
    }
}

/// Authenticates a token that must be refused, and checks the message never shows the token.
async fn refused(auth: &Authenticator, header: &[u8], now: i64) -> AuthError {
    let err = auth.authenticate_at(Some(header), now).await.unwrap_err();
    let msg = err.to_string();
    let value = String::from_utf8_lossy(header);
    for part in value.split(['.', ' ']).filter(|p| p.len() > 8) {
        assert!(!msg.contains(part), "message shows the token: {msg}");
    }
    assert!(!msg.contains('\n') && !msg.ends_with('.'), "{msg}");
    assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
    err
}

#[tokio::test]
async fn accepts_rs256_es256_and_eddsa() {
    let (rsa, ec, ed) = (rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1"));
    let fx = fixture(&[&rsa, &ec, &ed]);
    let auth = fx.auth().await;
    assert_eq!(auth.key_count(), 3);
    for key in [&rsa, &ec, &ed] {
        let token = mint(key, &claims());
        let got = auth.authenticate_at(Some(&bearer(&token)), NOW).await;
        assert_eq!(got, Ok(employee()), "{}", alg_name(key.alg));
    }
}

#[tokio::test]
async fn authenticate_uses_the_system_clock() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c["iat"] = json!(unix_now());
    c["exp"] = json!(unix_now() + 600);
    let ok = auth.authenticate(Some(&bearer(&mint(&ec, &c)))).await;
    assert_eq!(ok, Ok(employee()));
    c["exp"] = json!(unix_now() - 3600);
    let expired = auth.authenticate(Some(&bearer(&mint(&ec, &c)))).await;
    assert_eq!(expired, Err(AuthError::Expired));
}

#[tokio::test]
async fn expired_token_is_refused_with_token_expired_code() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let token = mint(&ec, &claims());
    // exp = NOW + 600, leeway 30 s: still valid at NOW + 629, expired at NOW + 630.
    assert!(
        auth.authenticate_at(Some(&bearer(&token)), NOW + 629)
            .await
            .is_ok()
    );
    let fresh = fixture(&[&ec]).auth().await;
    let err = refused(&fresh, &bearer(&token), NOW + 630).await;
    assert_eq!(err, AuthError::Expired);
    assert_eq!(err.code(), "tokenExpired");
}

#[tokio::test]
async fn token_living_longer_than_the_maximum_is_refused() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    // max_token_lifetime 12 h: exactly 12 h is accepted, one second more is not.
    c["exp"] = json!(NOW + 12 * 3600);
    assert!(
        auth.authenticate_at(Some(&bearer(&mint(&ec, &c))), NOW)
            .await
            .is_ok()
    );
    c["exp"] = json!(NOW + 12 * 3600 + 1);
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(
        err,
        AuthError::LifetimeTooLong {
            lifetime: 12 * 3600 + 1,
            max: 12 * 3600
        }
    );
    assert_eq!(err.code(), "invalidToken");
    assert_eq!(
        err.to_string(),
        "the token lifetime of 43201 s (`exp` - `iat`) exceeds the allowed 43200 s"
    );
    // An old `iat` does not hide a long lifetime: a token issued 11 h ago that lives 13 h.
    c["iat"] = json!(NOW - 11 * 3600);
    c["exp"] = json!(NOW + 2 * 3600);
    assert!(matches!(
        refused(&auth, &bearer(&mint(&ec, &c)), NOW).await,
        AuthError::LifetimeTooLong { .. }
    ));
}

#[tokio::test]
async fn token_without_iat_is_measured_from_now() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iat");
    // Without `iat` the rest of its life counts, with the leeway (30 s) for clock skew.
    c["exp"] = json!(NOW + 12 * 3600 + 30);
    assert!(
        auth.authenticate_at(Some(&bearer(&mint(&ec, &c))), NOW)
            .await
            .is_ok()
    );
    c["exp"] = json!(NOW + 30 * 24 * 3600);
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(
        err,
        AuthError::ExpiresTooLate {
            remaining: 30 * 24 * 3600,
            max: 12 * 3600
        }
    );
}

#[tokio::test]
async fn token_issued_in_the_future_is_refused_beyond_the_leeway() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c["iat"] = json!(NOW + 30);
    assert!(
        auth.authenticate_at(Some(&bearer(&mint(&ec, &c))), NOW)
            .await
            .is_ok()
    );
    c["iat"] = json!(NOW + 31);
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(err, AuthError::IssuedInFuture(31));
    c["iat"] = json!("yesterday");
    assert!(matches!(
        refused(&auth, &bearer(&mint(&ec, &c)), NOW).await,
        AuthError::InvalidClaim { .. }
    ));
}

#[tokio::test]
async fn configured_max_token_lifetime_is_used() {
    let ec = ec_key("ec-1");
    let mut fx = fixture(&[&ec]);
    fx.cfg.max_token_lifetime = Dur(Duration::from_secs(300));
    let auth = fx.auth().await;
    // claims(): exp - iat = 600 s.
    assert!(matches!(
        refused(&auth, &bearer(&mint(&ec, &claims())), NOW).await,
        AuthError::LifetimeTooLong {
            lifetime: 600,
            max: 300
        }
    ));
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(err, AuthError::MissingClaim("exp".into()));
    assert_eq!(err.code(), "invalidToken");
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c["nbf"] = json!(NOW + 100);
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(err, AuthError::NotYetValid);
    assert_eq!(err.code(), "invalidToken");
    // Within the leeway it is accepted.
    assert!(
        auth.authenticate_at(Some(&bearer(&mint(&ec, &c))), NOW + 70)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(err, AuthError::WrongIssuer("https://evil.example".into()));
}

#[tokio::test]
async fn wrong_audience_is_refused_as_string_or_array() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    for aud in [json!("other-api"), json!(["other-api", "third"])] {
        let mut c = claims();
        c["aud"] = aud;
        let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
        assert_eq!(err, AuthError::WrongAudience(AUD.into()));
    }
    let mut c = claims();
    c["aud"] = json!(["other-api", AUD]);
    assert!(
        auth.authenticate_at(Some(&bearer(&mint(&ec, &c))), NOW)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn bad_signature_is_refused() {
    let (ec, ed) = (ec_key("ec-1"), ed_key("ed-1"));
    let auth = fixture(&[&ec, &ed]).auth().await;
    for key in [&ec, &ed] {
        let token = mint(key, &claims());
        // Swap in another payload, keep the signature.
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(
            refused(&auth, &bearer(&forged), NOW).await,
            AuthError::BadSignature
        );
    }
    // Signed by a key with the same kid that is not the configured one.
    let impostor = ec_key("ec-1");
    let err = refused(&auth, &bearer(&mint(&impostor, &claims())), NOW).await;
    assert_eq!(err, AuthError::BadSignature);
}

#[tokio::test]
async fn alg_none_is_refused_in_any_spelling() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": none, "kid": "ec-1"});
        let token = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let err = refused(&auth, &bearer(&token), NOW).await;
        assert_eq!(err, AuthError::AlgorithmNotAllowed(none.into()));
    }
}

#[tokio::test]
async fn algorithms_outside_the_accepted_set_are_refused() {
    let rsa = rsa_key("rsa-1");
    let auth = fixture(&[&rsa]).auth().await;
    for alg in [Algorithm::RS384, Algorithm::PS256, Algorithm::RS512] {
        let header = json!({"alg": format!("{alg:?}"), "kid": "rsa-1"});
        let token = sign_raw(&header, &claims(), &rsa.enc, alg);
        let err = refused(&auth, &bearer(&token), NOW).await;
        assert_eq!(err, AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let rsa = rsa_key("rsa-1");
    let pem = rsa_public_pem();
    let confused = EncodingKey::from_secret(pem.as_bytes());
    let with_kid = sign_raw(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &claims(),
        &confused,
        Algorithm::HS256,
    );
    let without_kid = sign_raw(
        &json!({"alg": "HS256"}),
        &claims(),
        &confused,
        Algorithm::HS256,
    );

    // Without a configured secret HS256 is not enabled at all.
    let plain = fixture(&[&rsa]).auth().await;
    for token in [&with_kid, &without_kid] {
        let err = refused(&plain, &bearer(token), NOW).await;
        assert_eq!(err, AuthError::AlgorithmNotAllowed("HS256".into()));
    }

    // With a secret, the RSA key is pinned to RS256 and the secret is not the PEM.
    let auth = fixture(&[&rsa])
        .with_secret(b"a-shared-secret-of-at-least-32-bytes!!")
        .auth()
        .await;
    let err = refused(&auth, &bearer(&with_kid), NOW).await;
    assert_eq!(
        err,
        AuthError::AlgorithmMismatch {
            kid: "rsa-1".into(),
            alg: "HS256",
            key_alg: "RS256"
        }
    );
    assert_eq!(
        refused(&auth, &bearer(&without_kid), NOW).await,
        AuthError::BadSignature
    );
}

#[tokio::test]
async fn rs256_token_against_an_ec_key_is_refused() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    let auth = fixture(&[&rsa, &ec]).auth().await;
    let token = sign_raw(
        &json!({"alg": "RS256", "kid": "ec-1"}),
        &claims(),
        &rsa.enc,
        Algorithm::RS256,
    );
    let err = refused(&auth, &bearer(&token), NOW).await;
    assert_eq!(
        err,
        AuthError::AlgorithmMismatch {
            kid: "ec-1".into(),
            alg: "RS256",
            key_alg: "ES256"
        }
    );
    // And an ES256 token naming the Ed25519 key.
    let ed = ed_key("ed-1");
    let auth = fixture(&[&ec, &ed]).auth().await;
    let token = sign_raw(
        &json!({"alg": "ES256", "kid": "ed-1"}),
        &claims(),
        &ec.enc,
        Algorithm::ES256,
    );
    assert!(matches!(
        refused(&auth, &bearer(&token), NOW).await,
        AuthError::AlgorithmMismatch { .. }
    ));
}

#[tokio::test]
async fn unknown_kid_with_a_jwks_file_is_refused() {
    let (ec, other) = (ec_key("ec-1"), ec_key("ec-2"));
    let auth = fixture(&[&ec]).auth().await;
    let err = refused(&auth, &bearer(&mint(&other, &claims())), NOW).await;
    assert_eq!(err, AuthError::UnknownKey("ec-2".into()));
}

#[tokio::test]
async fn token_without_kid_uses_the_only_key_of_its_algorithm() {
    let (ec, ed) = (ec_key("ec-1"), ed_key("ed-1"));
    let auth = fixture(&[&ec, &ed]).auth().await;
    let token = sign_raw(
        &json!({"alg": "ES256"}),
        &claims(),
        &ec.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        auth.authenticate_at(Some(&bearer(&token)), NOW).await,
        Ok(employee())
    );
    // No RS256 key configured: RS256 is not enabled.
    let rsa = rsa_key("rsa-1");
    let token = sign_raw(
        &json!({"alg": "RS256"}),
        &claims(),
        &rsa.enc,
        Algorithm::RS256,
    );
    assert_eq!(
        refused(&auth, &bearer(&token), NOW).await,
        AuthError::AlgorithmNotAllowed("RS256".into())
    );
}

#[tokio::test]
async fn header_that_is_an_array_is_malformed_even_when_signed() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    for header in [json!(["ES256"]), json!(["ES256", "ec-1"]), json!("ES256")] {
        let token = sign_raw(&header, &claims(), &ec.enc, Algorithm::ES256);
        assert!(
            matches!(
                refused(&auth, &bearer(&token), NOW).await,
                AuthError::Malformed(_)
            ),
            "{header}"
        );
    }
}

#[tokio::test]
async fn token_without_kid_is_refused_when_several_keys_match() {
    let (ec1, ec2) = (ec_key("ec-1"), ec_key("ec-2"));
    let auth = fixture(&[&ec1, &ec2]).auth().await;
    let token = sign_raw(
        &json!({"alg": "ES256"}),
        &claims(),
        &ec1.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        refused(&auth, &bearer(&token), NOW).await,
        AuthError::KidRequired("ES256")
    );
}

#[tokio::test]
async fn garbage_is_malformed() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let good = mint(&ec, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let not_json = b64(b"not json");
    let array = b64(b"[1,2]");
    let no_alg = b64(br#"{"kid":"ec-1"}"#);
    let two_algs = b64(br#"{"alg":"ES256","alg":"none","kid":"ec-1"}"#);
    let cases = [
        "garbage".to_string(),
        "a.b".to_string(),
        "a.b.c.d".to_string(),
        format!("..{}", parts[2]),
        format!("{}.{}.{}", "!!!", parts[1], parts[2]),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{not_json}.{}.{}", parts[1], parts[2]),
        format!("{array}.{}.{}", parts[1], parts[2]),
        format!("{no_alg}.{}.{}", parts[1], parts[2]),
        format!("{two_algs}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "***"),
        format!("{}.{}.{}x", parts[0], parts[1], parts[2]),
    ];
    for token in &cases {
        let err = refused(&auth, &bearer(token), NOW).await;
        assert!(
            matches!(err, AuthError::Malformed(_) | AuthError::BadSignature),
            "{token}: {err:?}"
        );
        assert_eq!(err.code(), "invalidToken");
    }
    // A signed payload that is not an object is malformed, after the signature check.
    let token = sign_raw(
        &json!({"alg": "ES256", "kid": "ec-1"}),
        &json!([1, 2, 3]),
        &ec.enc,
        Algorithm::ES256,
    );
    assert!(matches!(
        refused(&auth, &bearer(&token), NOW).await,
        AuthError::Malformed(_)
    ));
    // Critical extensions the gate does not understand (RFC 7515 §4.1.11).
    let token = sign_raw(
        &json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"], "exp": 1}),
        &claims(),
        &ec.enc,
        Algorithm::ES256,
    );
    assert!(matches!(
        refused(&auth, &bearer(&token), NOW).await,
        AuthError::Malformed(_)
    ));
}

#[tokio::test]
async fn missing_header_and_other_schemes_are_refused() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    assert_eq!(
        auth.authenticate_at(None, NOW).await,
        Err(AuthError::Missing)
    );
    let token = mint(&ec, &claims());
    for value in [
        format!("Basic {token}"),
        token.clone(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        format!("Bearer{token}"),
        format!("Bearer {token} {token}"),
        format!("Bearer {token}\t"),
        // Whitespace decides before a character outside base64url does.
        format!("Bearer !{token} x"),
        format!("Token {token}"),
    ] {
        let err = refused(&auth, value.as_bytes(), NOW).await;
        assert_eq!(err, AuthError::NotBearer, "{value}");
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {token}");
        assert_eq!(
            auth.authenticate_at(Some(value.as_bytes()), NOW).await,
            Ok(employee())
        );
    }
    // Non-ASCII bytes are refused, never interpreted.
    let err = refused(&auth, b"Bearer \xff\xfe.a.b", NOW).await;
    assert!(matches!(err, AuthError::Malformed(_)));
}

#[tokio::test]
async fn oversized_header_is_refused_before_parsing() {
    let ec = ec_key("ec-1");
    let mut fx = fixture(&[&ec]);
    fx.cfg.max_token_bytes = 64;
    let auth = fx.auth().await;
    let value = vec![b'x'; 65];
    assert_eq!(
        refused(&auth, &value, NOW).await,
        AuthError::TooLarge { limit: 64 }
    );
    let token = mint(&ec, &claims());
    assert_eq!(
        refused(&auth, &bearer(&token), NOW).await,
        AuthError::TooLarge { limit: 64 }
    );
}

#[tokio::test]
async fn missing_or_wrongly_typed_claims_are_named() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    for claim in ["sub", "org", "roles", "iss", "aud"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
        assert_eq!(err, AuthError::MissingClaim(claim.into()));
        assert!(err.to_string().contains(&format!("`{claim}`")));
    }
    let mut c = claims();
    c["roles"] = json!("burgerzaken");
    let err = refused(&auth, &bearer(&mint(&ec, &c)), NOW).await;
    assert_eq!(
        err.to_string(),
        "the token claim `roles` is not an array of non-empty strings"
    );
}

#[tokio::test]
async fn hs256_is_accepted_only_when_configured() {
    let ec = ec_key("ec-1");
    let secret = b"a-shared-secret-of-at-least-32-bytes!!";
    let token = sign_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    );
    let plain = fixture(&[&ec]).auth().await;
    assert_eq!(
        refused(&plain, &bearer(&token), NOW).await,
        AuthError::AlgorithmNotAllowed("HS256".into())
    );
    // The secret file may end with a newline; it is not part of the secret.
    let mut with_newline = secret.to_vec();
    with_newline.push(b'\n');
    let auth = fixture(&[&ec]).with_secret(&with_newline).auth().await;
    assert_eq!(
        auth.authenticate_at(Some(&bearer(&token)), NOW).await,
        Ok(employee())
    );
    // HS256-only deployment: no JWKS at all.
    let mut fx = fixture(&[]).with_secret(secret);
    fx.cfg.jwks_file = None;
    let auth = fx.auth().await;
    assert_eq!(
        auth.authenticate_at(Some(&bearer(&token)), NOW).await,
        Ok(employee())
    );
}

#[tokio::test]
async fn short_hs256_secret_is_a_setup_error() {
    let ec = ec_key("ec-1");
    let fx = fixture(&[&ec]).with_secret(b"too-short");
    let err = Authenticator::new(&fx.cfg).await.err().unwrap();
    assert!(err.0.contains("hs256.secret"), "{err}");
    assert!(err.0.contains("at least 32"), "{err}");
    assert!(!err.0.contains("too-short"), "secret in message: {err}");
}

#[tokio::test]
async fn cached_token_returns_the_same_employee_without_verifying_again() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let token = mint(&ec, &claims());
    let first = auth.authenticate_at(Some(&bearer(&token)), NOW).await;
    assert_eq!(first, Ok(employee()));
    assert_eq!(auth.cache.len(), 1);
    // Remove every key: only the cache can still answer.
    auth.keys.store(Arc::new(KeySet::default()));
    let second = auth.authenticate_at(Some(&bearer(&token)), NOW + 1).await;
    assert_eq!(second, first);
    // A token that was never verified is not answered from the cache.
    let other = mint(&ec, &json!({"sub": "x"}));
    assert!(
        auth.authenticate_at(Some(&bearer(&other)), NOW)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn expired_cached_token_is_refused() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let token = mint(&ec, &claims());
    assert!(
        auth.authenticate_at(Some(&bearer(&token)), NOW)
            .await
            .is_ok()
    );
    assert_eq!(auth.cache.len(), 1);
    // Same rule as uncached: valid until exp + leeway.
    assert!(
        auth.authenticate_at(Some(&bearer(&token)), NOW + 629)
            .await
            .is_ok()
    );
    let err = refused(&auth, &bearer(&token), NOW + 630).await;
    assert_eq!(err, AuthError::Expired);
    assert_eq!(auth.cache.len(), 0, "the expired entry is dropped");
}

#[tokio::test]
async fn refused_tokens_are_not_cached() {
    let ec = ec_key("ec-1");
    let auth = fixture(&[&ec]).auth().await;
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    let token = mint(&ec, &c);
    let _ = refused(&auth, &bearer(&token), NOW).await;
    assert_eq!(auth.cache.len(), 0);
}

/// A tiny JWKS server on 127.0.0.1:0 that counts requests and serves the current document.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    doc: Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let doc = Arc::new(std::sync::Mutex::new(String::new()));
        let (h, d) = (hits.clone(), doc.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = d.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        let server = JwksServer {
            url,
            hits,
            doc,
            task,
        };
        server.serve(keys);
        server
    }

    fn serve(&self, keys: &[&TestKey]) {
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        *self.doc.lock().unwrap() = jwks.to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn jwks_url_is_refetched_on_an_unknown_kid() {
    let (ec1, ec2) = (ec_key("ec-1"), ec_key("ec-2"));
    let server = JwksServer::start(&[&ec1]).await;
    let mut cfg = config(None, Some(server.url.clone()));
    cfg.jwks_min_refresh = Dur(Duration::ZERO);
    let auth = Authenticator::new(&cfg).await.unwrap();
    assert_eq!(server.hits(), 1, "fetched at start");

    let old = mint(&ec1, &claims());
    assert!(auth.authenticate_at(Some(&bearer(&old)), NOW).await.is_ok());
    assert_eq!(server.hits(), 1, "a known kid needs no fetch");

    // The identity provider rotates to ec-2.
    server.serve(&[&ec2]);
    let new = mint(&ec2, &claims());
    assert_eq!(
        auth.authenticate_at(Some(&bearer(&new)), NOW).await,
        Ok(employee())
    );
    assert_eq!(server.hits(), 2, "one refetch for the unknown kid");
    // The rotated-out key is gone, and tokens it signed are not served from the cache.
    assert_eq!(
        refused(&auth, &bearer(&old), NOW).await,
        AuthError::UnknownKey("ec-1".into())
    );
}

#[tokio::test]
async fn jwks_refetch_is_rate_limited() {
    let (ec1, ec2) = (ec_key("ec-1"), ec_key("ec-2"));
    let server = JwksServer::start(&[&ec1]).await;
    let mut cfg = config(None, Some(server.url.clone()));
    cfg.jwks_min_refresh = Dur(Duration::from_secs(3600));
    let auth = Authenticator::new(&cfg).await.unwrap();
    server.serve(&[&ec1, &ec2]);
    let new = mint(&ec2, &claims());
    for _ in 0..3 {
        let err = refused(&auth, &bearer(&new), NOW).await;
        assert_eq!(err, AuthError::UnknownKey("ec-2".into()));
    }
    assert_eq!(server.hits(), 1, "no refetch within jwks_min_refresh");
}

#[tokio::test]
async fn concurrent_unknown_kids_cause_one_fetch() {
    let (ec1, ec2) = (ec_key("ec-1"), ec_key("ec-2"));
    let server = JwksServer::start(&[&ec1]).await;
    let mut cfg = config(None, Some(server.url.clone()));
    cfg.jwks_min_refresh = Dur(Duration::from_secs(3600));
    let auth = Arc::new(Authenticator::new(&cfg).await.unwrap());
    // Forget the start fetch, so that exactly one refetch is allowed.
    *auth.remote.as_ref().unwrap().last_fetch.lock().await = None;
    server.serve(&[&ec1, &ec2]);
    let token = mint(&ec2, &claims());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (auth, value) = (auth.clone(), bearer(&token));
        tasks.push(tokio::spawn(async move {
            auth.authenticate_at(Some(&value), NOW).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(employee()));
    }
    assert_eq!(server.hits(), 2, "start fetch plus one refetch");
}

#[tokio::test]
async fn header_key_sources_are_never_used() {
    let ec = ec_key("ec-1");
    let attacker = ec_key("evil");
    let trap = JwksServer::start(&[&attacker]).await;
    let auth = fixture(&[&ec]).auth().await;
    let header = |kid: Option<&str>| {
        let mut h = json!({"alg": "ES256", "jku": trap.url, "x5u": trap.url,
                           "jwk": attacker.jwk, "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]});
        if let Some(kid) = kid {
            h["kid"] = json!(kid);
        }
        h
    };
    let named = sign_raw(
        &header(Some("evil")),
        &claims(),
        &attacker.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        refused(&auth, &bearer(&named), NOW).await,
        AuthError::UnknownKey("evil".into())
    );
    let unnamed = sign_raw(&header(None), &claims(), &attacker.enc, Algorithm::ES256);
    assert_eq!(
        refused(&auth, &bearer(&unnamed), NOW).await,
        AuthError::BadSignature
    );
    assert_eq!(trap.hits(), 0, "a header URL was fetched");
}

#[tokio::test]
async fn unreachable_jwks_url_is_a_setup_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = config(None, Some(format!("http://{addr}/jwks.json")));
    let err = Authenticator::new(&cfg).await.err().unwrap();
    assert!(err.0.contains("auth.jwks_url"), "{err}");
    assert!(err.0.contains(&addr.to_string()), "{err}");
}

async fn setup_error(jwks: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let err = Authenticator::new(&config(Some(path), None))
        .await
        .err()
        .unwrap();
    assert!(err.0.contains("jwks.json"), "names the file: {err}");
    assert!(!err.0.contains('\n'), "{err}");
    err.0
}

#[tokio::test]
async fn bad_key_material_names_the_file_and_the_key() {
    let ec = ec_key("ec-1");
    let rsa = rsa_key("rsa-1");
    let mut off_curve = ec.jwk.clone();
    off_curve["kid"] = json!("bad-point");
    off_curve["y"] = off_curve["x"].clone();
    let mut short_x = ec.jwk.clone();
    short_x["kid"] = json!("short");
    short_x["x"] = json!(b64(&[1u8; 31]));
    let mut ed_short = ed_key("ed-short").jwk;
    ed_short["x"] = json!(b64(&[9u8; 16]));
    let mut small_rsa = rsa.jwk.clone();
    small_rsa["kid"] = json!("rsa-1024");
    small_rsa["n"] = json!(b64(&[0xc5u8; 128]));
    let mut even_e = rsa.jwk.clone();
    even_e["kid"] = json!("even-e");
    even_e["e"] = json!(b64(&[1, 0, 0]));
    let mut confused = ec.jwk.clone();
    confused["kid"] = json!("confused");
    confused["alg"] = json!("RS256");
    let mut private = ec.jwk.clone();
    private["kid"] = json!("private");
    private["d"] = json!(b64(&[7u8; 32]));
    let oct = json!({"kty": "oct", "kid": "sym", "k": b64(&[1u8; 32])});
    let mut not_b64 = ec.jwk.clone();
    not_b64["kid"] = json!("padded");
    not_b64["x"] = json!("AAAA==");
    for (jwk, kid) in [
        (off_curve, "bad-point"),
        (short_x, "short"),
        (ed_short, "ed-short"),
        (small_rsa, "rsa-1024"),
        (even_e, "even-e"),
        (confused, "confused"),
        (private, "private"),
        (oct, "sym"),
        (not_b64, "padded"),
    ] {
        let err = setup_error(json!({"keys": [jwk]})).await;
        assert!(err.contains(&format!("key `{kid}`")), "{err}");
    }
    let err = setup_error(json!({"keys": [ec.jwk, ec.jwk]})).await;
    assert!(err.contains("two keys"), "{err}");
    let err = setup_error(json!({"nokeys": []})).await;
    assert!(err.contains("JWKS"), "{err}");
}

#[tokio::test]
async fn keys_for_other_uses_and_algorithms_are_skipped() {
    let ec = ec_key("ec-1");
    let mut enc = rsa_key("rsa-enc").jwk;
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let mut rs384 = rsa_key("rsa-384").jwk;
    rs384["alg"] = json!("RS384");
    let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"});
    let x25519 = json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AA"});
    let pq = json!({"kty": "AKP", "kid": "pq", "alg": "ML-DSA-44", "pub": "AA"});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let doc = json!({"keys": [enc, rs384, p384, x25519, pq, ec.jwk]});
    std::fs::write(&path, doc.to_string()).unwrap();
    let auth = Authenticator::new(&config(Some(path), None)).await.unwrap();
    assert_eq!(auth.key_count(), 1);
    // Only skipped keys: nothing usable is an error.
    let err = setup_error(json!({"keys": [p384_only()]})).await;
    assert!(err.contains("no usable signing key"), "{err}");
}

fn p384_only() -> Value {
    json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"})
}

#[test]
fn error_codes_are_stable() {
    assert_eq!(AuthError::Expired.code(), "tokenExpired");
    for e in [
        AuthError::Missing,
        AuthError::NotBearer,
        AuthError::BadSignature,
        AuthError::NotYetValid,
        AuthError::UnknownKey("k".into()),
        AuthError::AlgorithmNotAllowed("none".into()),
    ] {
        assert_eq!(e.code(), "invalidToken", "{e}");
    }
}

#[test]
fn authenticator_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Authenticator>();
    assert_send_sync::<AuthError>();
}
