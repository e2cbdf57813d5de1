//! Demo identity-provider helpers: mint ES256 employee tokens with the demo signing key.
//!
//! Guarantees: tokens carry `kid` in the header and `iss`, `aud`, `sub`, `org`, `roles`, `iat`,
//! `nbf` and `exp` from the current time, which is what the gate's `[auth]` expects by default.
//! Refuses: a key that is not an EC P-256 private key in PKCS#8 PEM. Errors never contain key
//! material.
//!
//! Test and demo equipment only: the key in `examples/demo/keys/` is public.

// Included with `#[path]` by several example and test crates, each using a different part.
#![allow(dead_code)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The `kid` of the demo key in `examples/demo/keys/jwks.json`.
pub const DEMO_KID: &str = "demo-2026";
/// The issuer and audience the demo config expects.
pub const DEMO_ISSUER: &str = "https://idp.demo.purpose-gate.example";
pub const DEMO_AUDIENCE: &str = "purpose-gate";

/// Signs `claims` with ES256 under `private_key_pem` (PKCS#8 PEM, P-256), with `kid` in the header.
pub fn mint(private_key_pem: &[u8], kid: &str, claims: &Value) -> Result<String, String> {
    let key = EncodingKey::from_ec_pem(private_key_pem)
        .map_err(|e| format!("cannot read the ES256 private key: {e}"))?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| format!("cannot sign the token: {e}"))
}

/// The claims of an employee token valid from now for `ttl_secs` seconds
/// (a negative `ttl_secs` gives an already expired token).
pub fn employee_claims(
    issuer: &str,
    audience: &str,
    sub: &str,
    org: &str,
    roles: &[&str],
    ttl_secs: i64,
) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "org": org,
        "roles": roles,
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(ttl_secs),
    })
}
