//! Every token rejection through a real gate: 401 problem+json with a stable code, an audit
//! record without a principal, nothing forwarded, and the token never echoed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{AUDIENCE, Harness, ISSUER, KID, raadpleeg, tokens};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;

fn claims(iss: &str, aud: &str, nbf_off: i64, exp_off: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": iss, "aud": aud, "sub": "emp-042", "org": "0363", "roles": ["vergunningverlener"],
           "iat": now, "nbf": now + nbf_off, "exp": now + exp_off})
}

async fn expect_401(h: &Harness, authorization: Option<&str>, code: &str, what: &str) {
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let mut hd = vec![
        ("x-case-id", "Z-OPEN"),
        ("content-type", "application/json"),
    ];
    if let Some(a) = authorization {
        hd.push(("authorization", a));
    }
    let a = h
        .send("POST", "/haalcentraal/api/brp/personen", &hd, Some(&body))
        .await;
    assert_eq!(a.status, 401, "{what}: {:?}", a.json());
    assert!(a.is_problem(), "{what}");
    assert_eq!(a.code(), code, "{what}: {:?}", a.json());
    assert!(a.headers.contains_key("www-authenticate"), "{what}");
    if let Some(tok) = authorization.and_then(|s| s.strip_prefix("Bearer "))
        && tok.len() > 8
    {
        let text = String::from_utf8_lossy(&a.body);
        assert!(!text.contains(tok), "{what}: the token was echoed");
    }
    let rid = a.request_id();
    let rec = h
        .records()
        .into_iter()
        .find(|r| r["request_id"] == rid.as_str())
        .unwrap_or_else(|| panic!("{what}: no audit record"));
    assert_eq!(rec["decision"], "deny", "{what}");
    assert_eq!(rec["principal"], serde_json::Value::Null, "{what}");
    assert_eq!(rec["code"], code, "{what}");
    assert_eq!(h.registry.seen_count(), 0, "{what}: forwarded");
}

#[tokio::test]
async fn every_token_rejection_is_a_recorded_401() {
    let h = Harness::start().await;
    let key = common::demo_private_key();
    let mint = |c: &serde_json::Value| tokens::mint(&key, KID, c).unwrap();

    let expired = mint(&claims(ISSUER, AUDIENCE, -600, -300));
    expect_401(
        &h,
        Some(&format!("Bearer {expired}")),
        "tokenExpired",
        "expired",
    )
    .await;
    let early = mint(&claims(ISSUER, AUDIENCE, 600, 1200));
    expect_401(
        &h,
        Some(&format!("Bearer {early}")),
        "invalidToken",
        "not yet valid",
    )
    .await;
    let iss = mint(&claims("https://evil.example", AUDIENCE, 0, 600));
    expect_401(
        &h,
        Some(&format!("Bearer {iss}")),
        "invalidToken",
        "wrong issuer",
    )
    .await;
    let aud = mint(&claims(ISSUER, "another-api", 0, 600));
    expect_401(
        &h,
        Some(&format!("Bearer {aud}")),
        "invalidToken",
        "wrong audience",
    )
    .await;

    // Signed by another P-256 key under the trusted kid.
    let other = p256::SecretKey::random(&mut rand::thread_rng());
    let other_pem = other.to_pkcs8_pem(LineEnding::LF).unwrap();
    let forged =
        tokens::mint(other_pem.as_bytes(), KID, &claims(ISSUER, AUDIENCE, 0, 600)).unwrap();
    expect_401(
        &h,
        Some(&format!("Bearer {forged}")),
        "invalidToken",
        "bad signature",
    )
    .await;

    // Unknown kid.
    let unknown = tokens::mint(&key, "rotated-out", &claims(ISSUER, AUDIENCE, 0, 600)).unwrap();
    expect_401(
        &h,
        Some(&format!("Bearer {unknown}")),
        "invalidToken",
        "unknown kid",
    )
    .await;

    // alg: none.
    let hdr = B64.encode(json!({"alg": "none", "typ": "JWT", "kid": KID}).to_string());
    let pl = B64.encode(claims(ISSUER, AUDIENCE, 0, 600).to_string());
    expect_401(
        &h,
        Some(&format!("Bearer {hdr}.{pl}.")),
        "invalidToken",
        "alg none",
    )
    .await;

    // HS256 signed with the public key as the shared secret (algorithm confusion).
    let pem = String::from_utf8(key.clone()).unwrap();
    let public_pem = p256::SecretKey::from_pkcs8_pem(&pem)
        .unwrap()
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(KID.to_string());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims(ISSUER, AUDIENCE, 0, 600),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    expect_401(
        &h,
        Some(&format!("Bearer {confused}")),
        "invalidToken",
        "hs/es confusion",
    )
    .await;
    let jwks = std::fs::read(common::repo().join("examples/demo/keys/jwks.json")).unwrap();
    let confused2 = jsonwebtoken::encode(
        &hs,
        &claims(ISSUER, AUDIENCE, 0, 600),
        &EncodingKey::from_secret(&jwks),
    )
    .unwrap();
    expect_401(
        &h,
        Some(&format!("Bearer {confused2}")),
        "invalidToken",
        "hs with jwks secret",
    )
    .await;

    // Garbage of several kinds.
    expect_401(&h, None, "invalidToken", "missing").await;
    expect_401(&h, Some("Bearer"), "invalidToken", "empty bearer").await;
    expect_401(&h, Some("Basic ZW1wOnB3"), "invalidToken", "basic auth").await;
    expect_401(
        &h,
        Some("Bearer abc.def.ghi"),
        "invalidToken",
        "garbage segments",
    )
    .await;
    expect_401(
        &h,
        Some("Bearer not-a-jwt-at-all"),
        "invalidToken",
        "garbage",
    )
    .await;
    let huge = format!("Bearer {}", "a".repeat(12 * 1024));
    expect_401(&h, Some(&huge), "invalidToken", "oversized").await;

    // And a good token still works afterwards.
    let ok = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn token_for_wrong_role_claim_type_is_refused() {
    let h = Harness::start().await;
    let now = chrono::Utc::now().timestamp();
    let t = h.token_with(
        &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                                  "roles": "vergunningverlener", "iat": now, "exp": now + 600}),
    );
    expect_401(
        &h,
        Some(&format!("Bearer {t}")),
        "invalidToken",
        "roles not an array",
    )
    .await;
    let t = h.token_with(&json!({"iss": ISSUER, "aud": AUDIENCE, "org": "0363",
                                  "roles": ["vergunningverlener"], "iat": now, "exp": now + 600}));
    expect_401(&h, Some(&format!("Bearer {t}")), "invalidToken", "no sub").await;
    let t = h.token_with(
        &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                                  "roles": ["vergunningverlener"], "iat": now}),
    );
    expect_401(&h, Some(&format!("Bearer {t}")), "invalidToken", "no exp").await;
}

#[tokio::test]
async fn the_department_claim_is_recorded_with_the_principal() {
    let h = Harness::start().await;
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let mut claims = common::tokens::employee_claims(
        ISSUER,
        AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        600,
    );
    claims["department"] = json!("Vergunningen en Handhaving");
    let t = h.token_with(&claims);
    let bearer = format!("Bearer {t}");
    let hd = [
        ("x-case-id", "Z-OPEN"),
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let a = h
        .send("POST", "/haalcentraal/api/brp/personen", &hd, Some(&body))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let rec = h
        .records_of(&forwarded_id(&a))
        .into_iter()
        .find(|r| r["kind"] == "decision")
        .expect("no decision record");
    assert_eq!(
        rec["principal"]["department"], "Vergunningen en Handhaving",
        "{rec}"
    );

    // Without the claim the member is absent (records as before format 1.4).
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[
                ("x-case-id", "Z-OPEN"),
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {}", h.emp042())),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(a.status, 200);
    let rec = h
        .records_of(&forwarded_id(&a))
        .into_iter()
        .find(|r| r["kind"] == "decision")
        .unwrap();
    assert!(rec["principal"].get("department").is_none(), "{rec}");

    // A department that is not a string is a malformed identity: refused, never guessed (a
    // fresh gate, so that nothing forwarded before counts).
    let h = Harness::start().await;
    claims["department"] = json!(["a", "b"]);
    let t = h.token_with(&claims);
    expect_401(
        &h,
        Some(&format!("Bearer {t}")),
        "invalidToken",
        "department not a string",
    )
    .await;
}

/// The request id of an answer that is not a problem: its `X-Request-Id`.
fn forwarded_id(a: &common::Answer) -> String {
    a.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("no X-Request-Id")
        .to_string()
}
