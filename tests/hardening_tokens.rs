//! Hardening: token tricks through a real gate, beyond the matrix of `tests/gate_jwt.rs`.
//! `jku`, `x5u`, `x5c` and an embedded `jwk` are never followed or trusted; `kid` tricks, `crit`,
//! keys that were rotated out and other audiences are refused; oversized tokens are refused
//! before any parsing; clock skew is accepted only within the configured leeway (30 s).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{AUDIENCE, Harness, ISSUER, KID, raadpleeg};
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

fn claims(nbf_off: i64, exp_off: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
           "roles": ["vergunningverlener"], "iat": now, "nbf": now + nbf_off, "exp": now + exp_off})
}

/// An ES256 token with any JOSE header, signed with `pem`.
fn sign(pem: &[u8], header: &Value, claims: &Value) -> String {
    let msg = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = EncodingKey::from_ec_pem(pem).unwrap();
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{msg}.{sig}")
}

/// A listener that counts connections: a `jku`/`x5u` that is followed would show up here.
async fn tripwire() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys.json", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let task = tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits, task)
}

async fn lookup(h: &Harness, token: &str) -> common::Answer {
    h.brp(token, Some("Z-OPEN"), &raadpleeg(&["999993653"], &["naam"]))
        .await
}

#[tokio::test]
async fn jku_x5u_x5c_and_embedded_jwk_are_never_trusted_or_fetched() {
    let h = Harness::start().await;
    let (url, hits, task) = tripwire().await;
    let demo = common::demo_private_key();
    let attacker = p256::SecretKey::random(&mut rand::thread_rng());
    let attacker_pem = attacker.to_pkcs8_pem(LineEnding::LF).unwrap();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&attacker.public_key(), false);
    let attacker_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "attacker",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap())});

    let refused: Vec<(&str, Value)> = vec![
        (
            "jku to the attacker's keys",
            json!({"alg": "ES256", "kid": "attacker", "jku": url}),
        ),
        (
            "x5u to the attacker's chain",
            json!({"alg": "ES256", "kid": "attacker", "x5u": url}),
        ),
        (
            "embedded jwk under the trusted kid",
            json!({"alg": "ES256", "kid": KID, "jwk": attacker_jwk}),
        ),
        (
            "embedded jwk without kid",
            json!({"alg": "ES256", "jwk": attacker_jwk}),
        ),
        (
            "jku under the trusted kid",
            json!({"alg": "ES256", "kid": KID, "jku": url}),
        ),
        (
            "x5c under the trusted kid",
            json!({"alg": "ES256", "kid": KID, "x5c": ["MIIBIjANBgkq"]}),
        ),
    ];
    for (what, header) in &refused {
        let t = sign(attacker_pem.as_bytes(), header, &claims(0, 600));
        let a = lookup(&h, &t).await;
        assert_eq!(a.status, 401, "{what}: {:?}", a.json());
        assert_eq!(a.code(), "invalidToken", "{what}");
    }
    // The same header members on a token the trusted key did sign change nothing.
    let t = sign(
        &demo,
        &json!({"alg": "ES256", "kid": KID, "jku": url, "x5u": url, "jwk": attacker_jwk}),
        &claims(0, 600),
    );
    assert_eq!(lookup(&h, &t).await.status, 200, "ignored members");
    assert_eq!(
        h.registry.seen_count(),
        1,
        "only the genuinely signed token"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a jku or x5u was fetched");
    task.abort();
}

#[tokio::test]
async fn kid_crit_rotated_keys_and_other_audiences_are_refused() {
    let h = Harness::start().await;
    let demo = common::demo_private_key();
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "kid path traversal",
            json!({"alg": "ES256", "kid": "../../examples/demo/keys/jwks.json"}),
            claims(0, 600),
        ),
        (
            "kid with nul",
            json!({"alg": "ES256", "kid": format!("{KID}\u{0}")}),
            claims(0, 600),
        ),
        (
            "kid as sql",
            json!({"alg": "ES256", "kid": "' OR '1'='1"}),
            claims(0, 600),
        ),
        (
            "kid long",
            json!({"alg": "ES256", "kid": "k".repeat(2000)}),
            claims(0, 600),
        ),
        (
            "kid empty",
            json!({"alg": "ES256", "kid": ""}),
            claims(0, 600),
        ),
        (
            "kid a number",
            json!({"alg": "ES256", "kid": 7}),
            claims(0, 600),
        ),
        (
            "kid of a rotated-out key",
            json!({"alg": "ES256", "kid": "demo-2025"}),
            claims(0, 600),
        ),
        (
            "kid in another case",
            json!({"alg": "ES256", "kid": KID.to_uppercase()}),
            claims(0, 600),
        ),
        (
            "crit extension",
            json!({"alg": "ES256", "kid": KID, "crit": ["exp"], "exp": 1}),
            claims(0, 600),
        ),
        (
            "alg in lowercase",
            json!({"alg": "es256", "kid": KID}),
            claims(0, 600),
        ),
        (
            "alg ES384 on the ES256 key",
            json!({"alg": "ES384", "kid": KID}),
            claims(0, 600),
        ),
        ("header not an object", json!(["ES256"]), claims(0, 600)),
        (
            "another audience",
            json!({"alg": "ES256", "kid": KID}),
            json!({"iss": ISSUER, "aud": "brp-direct", "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "iat": now, "exp": now + 600}),
        ),
        (
            "another audience in a list",
            json!({"alg": "ES256", "kid": KID}),
            json!({"iss": ISSUER, "aud": ["brp-direct", "rdw-direct"], "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "iat": now, "exp": now + 600}),
        ),
        (
            "issuer with a trailing slash",
            json!({"alg": "ES256", "kid": KID}),
            json!({"iss": format!("{ISSUER}/"), "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "iat": now, "exp": now + 600}),
        ),
        (
            "exp as a string",
            json!({"alg": "ES256", "kid": KID}),
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "iat": now, "exp": (now + 600).to_string()}),
        ),
    ];
    for (what, header, claims) in &cases {
        let t = sign(&demo, header, claims);
        let a = lookup(&h, &t).await;
        assert_eq!(a.status, 401, "{what}: {:?}", a.json());
        assert!(a.is_problem(), "{what}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains(t.as_str()),
            "{what}: token echoed"
        );
    }
    assert_eq!(h.registry.seen_count(), 0);
    // Control: the same key and claims with a plain header pass.
    let t = sign(&demo, &json!({"alg": "ES256", "kid": KID}), &claims(0, 600));
    assert_eq!(lookup(&h, &t).await.status, 200);
}

#[tokio::test]
async fn huge_tokens_are_refused_before_parsing() {
    let h = Harness::start().await;
    let demo = common::demo_private_key();
    // Validly signed, but over `auth.max_token_bytes` (8 KiB) because of one fat claim.
    let mut fat = claims(0, 600);
    fat["padding"] = json!("x".repeat(9 * 1024));
    let t = sign(&demo, &json!({"alg": "ES256", "kid": KID}), &fat);
    let a = lookup(&h, &t).await;
    assert_eq!(a.status, 401, "{:?}", a.json());
    assert_eq!(a.code(), "invalidToken");
    assert!(
        a.json()["detail"].as_str().unwrap_or("").contains("8192"),
        "{:?}",
        a.json()
    );

    // Larger than the whole request head allowed (16 KiB): refused by the HTTP layer.
    let huge = format!(
        "GET /rdw/voertuigen/XX999X HTTP/1.1\r\nHost: gate\r\nX-Case-Id: Z-OPEN\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let resp = common::raw_http(h.addr, huge.as_bytes()).await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431") || resp.starts_with("HTTP/1.1 400"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    // Many segments, deep JSON in the header: refused, no panic.
    let deep = B64.encode(format!("{}{}", "[".repeat(3000), "]".repeat(3000)));
    let a = lookup(&h, &format!("{deep}.e30.sig")).await;
    assert_eq!(a.status, 401);
    let a = lookup(&h, &"a.".repeat(2000)).await;
    assert_eq!(a.status, 401);
    assert_eq!(h.registry.seen_count(), 0);
    // The gate is still serving.
    assert_eq!(lookup(&h, &h.emp042()).await.status, 200);
}

#[tokio::test]
async fn clock_skew_is_accepted_only_within_the_leeway() {
    let h = Harness::start().await;
    let demo = common::demo_private_key();
    let hdr = json!({"alg": "ES256", "kid": KID});
    // Leeway is 30 s: 10 s of skew either way passes, 90 s does not.
    let t = sign(&demo, &hdr, &claims(-600, -10));
    assert_eq!(lookup(&h, &t).await.status, 200, "expired 10 s ago");
    let t = sign(&demo, &hdr, &claims(10, 600));
    assert_eq!(lookup(&h, &t).await.status, 200, "valid from 10 s ahead");
    let t = sign(&demo, &hdr, &claims(-600, -90));
    let a = lookup(&h, &t).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.code(), "tokenExpired");
    let t = sign(&demo, &hdr, &claims(90, 600));
    let a = lookup(&h, &t).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.code(), "invalidToken");
    assert_eq!(h.registry.seen_count(), 2);
}

#[tokio::test]
async fn tokens_living_too_long_or_issued_in_the_future_are_recorded_401s() {
    let h = Harness::start().await;
    let demo = common::demo_private_key();
    let header = json!({"alg": "ES256", "kid": KID});
    let now = chrono::Utc::now().timestamp();
    let cases = [
        // `[auth] max_token_lifetime` defaults to 12 h.
        (
            "13 h lifetime",
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "iat": now, "exp": now + 13 * 3600}),
            "lifetime of 46800 s",
        ),
        (
            "no iat, expires in 30 days",
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "exp": now + 30 * 86400}),
            "has no `iat`",
        ),
        (
            "issued 10 minutes from now",
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                   "roles": ["vergunningverlener"], "iat": now + 600, "exp": now + 1200}),
            "issued in the future",
        ),
    ];
    for (what, claims, detail) in &cases {
        let a = lookup(&h, &sign(&demo, &header, claims)).await;
        assert_eq!(a.status, 401, "{what}: {:?}", a.json());
        assert_eq!(a.code(), "invalidToken", "{what}");
        // The answer's `detail` is the message fitted to the Foutbericht pattern (backticks
        // dropped); the audit record keeps it as written.
        let got = a.json()["detail"].as_str().unwrap_or("").to_string();
        let fitted = purpose_gate::error::foutbericht::detail(detail);
        assert!(got.contains(&fitted), "{what}: {got}");
        let rec = h.record_of(a.headers["x-request-id"].to_str().unwrap(), "decision");
        assert_eq!(rec["decision"], "deny", "{what}");
        assert!(
            rec["reasons"][0].as_str().unwrap_or("").contains(detail),
            "{what}: {rec}"
        );
    }
    assert_eq!(h.registry.seen_count(), 0);
    // A 12 h token with `iat` is fine.
    let ok = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-042", "org": "0363",
                    "roles": ["vergunningverlener"], "iat": now, "exp": now + 12 * 3600});
    assert_eq!(lookup(&h, &sign(&demo, &header, &ok)).await.status, 200);
}
