//! The decision path, stage by stage and whole: JWT verification (ES256 and RS256, token cache
//! warm and cold; the signing keys are always cached), case lookup in a registry of 10,000
//! cases (and, warm, in the cache of the ZGW Zaken API registry), entity and context building plus Cedar evaluation with the shipped policies, and the
//! serialisation and hashing of the audit record. The bar (PRODUCT.md) is on
//! `whole_path_token_cached`: median ≤ 25 µs.
//!
//! `cargo bench --bench decision_path`

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a failed unwrap is a failed setup

#[path = "../examples/common/tokens.rs"]
mod tokens;

#[path = "common/mod.rs"]
mod common;

#[path = "../examples/common/zaken.rs"]
mod zaken;

use std::hint::black_box;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::Utc;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use purpose_gate::audit::RecordBody;
use purpose_gate::auth::Authenticator;
use purpose_gate::config::Config;
use purpose_gate::model::{Action, Bsn, Counters, Resource};
use purpose_gate::policy::{DecisionInput, PolicyEngine};
use purpose_gate::purpose::{CaseRegistry, JsonFileCases};
use purpose_gate::zgw::{ZgwCases, ZgwOptions};

const RSA_PEM: &str = include_str!("../src/auth/testdata/rsa-2048-test-only.pem");
const RSA_KID: &str = "bench-rsa";
/// The case the benchmark request names; every generated case has the same shape.
const CASE_ID: &str = "Z-2026-004711";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 10,000 open parkeervergunning cases of organisation 0363, handled by emp-042.
fn write_cases(dir: &Path, n: usize) -> PathBuf {
    let now = Utc::now();
    let opened = (now - chrono::Duration::days(10)).to_rfc3339();
    let closes = (now + chrono::Duration::days(30)).to_rfc3339();
    let cases: Vec<_> = (0..n)
        .map(|i| {
            json!({"id": format!("Z-2026-{i:06}"), "type": "parkeervergunning", "status": "open",
                   "opened": opened, "closes": closes, "organization": "0363",
                   "handlers": ["emp-042", format!("emp-{i}")], "subjects": ["999993653", "999991802"],
                   "vehicles": ["XX999X"]})
        })
        .collect();
    let path = dir.join("cases.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({ "cases": cases })).unwrap(),
    )
    .unwrap();
    path
}

/// The demo ES256 key plus the RS256 test key, as one JWKS file.
fn write_jwks(dir: &Path) -> PathBuf {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let demo: Value = serde_json::from_slice(
        &std::fs::read(repo().join("examples/demo/keys/jwks.json")).unwrap(),
    )
    .unwrap();
    let sk = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).unwrap();
    let mut keys = demo["keys"].as_array().unwrap().clone();
    keys.push(
        json!({"kty": "RSA", "kid": RSA_KID, "use": "sig", "alg": "RS256",
                     "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be())}),
    );
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap();
    path
}

fn mint_rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(RSA_KID.to_string());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// What the audit writer does per record before the write: serialise the body and hash the
/// framed line (SHA-256, lowercase hex), as `audit::format` does.
fn encode_and_hash(body: &RecordBody, prev: &str) -> String {
    let bytes = match body {
        RecordBody::Decision(d) => serde_json::to_vec(d),
        RecordBody::Outcome(o) => serde_json::to_vec(o),
        // The benchmark only hashes decision and outcome records.
        _ => Ok(b"{}".to_vec()),
    }
    .unwrap();
    let mut line = Vec::with_capacity(bytes.len() + 96);
    line.extend_from_slice(b"{\"seq\":12345,");
    line.extend_from_slice(&bytes[1..bytes.len() - 1]);
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev.as_bytes());
    line.extend_from_slice(b"\"}");
    hex::encode(Sha256::digest(&line))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cases_path = write_cases(tmp.path(), 10_000);
    let jwks_path = write_jwks(tmp.path());
    let config = format!(
        "[auth]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n",
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        jwks_path.display()
    );
    let cfg = Config::parse(&config, tmp.path()).unwrap();
    let auth = rt.block_on(Authenticator::new(&cfg.auth)).unwrap();
    let engine = PolicyEngine::load(&repo().join("policies")).unwrap();
    let cases = JsonFileCases::load(&cases_path).unwrap();
    let key = std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem")).unwrap();
    let claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        3600,
    );
    let es256 = format!(
        "Bearer {}",
        tokens::mint(&key, tokens::DEMO_KID, &claims).unwrap()
    );
    let rs256 = format!("Bearer {}", mint_rs256(&claims));
    let resource = Resource::Person(Bsn::parse("999993653").unwrap());
    let fields = vec!["naam".to_string(), "verblijfplaats".to_string()];

    let decide_once = |header: &str| {
        rt.block_on(async {
            let emp = auth.authenticate(Some(header.as_bytes())).await.ok()?;
            let case = cases.lookup(CASE_ID).await.ok().flatten();
            let d = engine.decide(&DecisionInput {
                search: None,
                release: None,
                employee: &emp,
                action: Action::BRP_LOOKUP,
                resource: &resource,
                case: case.as_deref(),
                break_glass: false,
                reason: None,
                fields: &fields,
                client_ip: None,
                now: Utc::now(),
                counters: Counters::default(),
            });
            Some(d.allow)
        })
    };
    // The benchmark measures the allow path: refuse to measure anything else.
    assert_eq!(decide_once(&es256), Some(true), "es256 request not allowed");
    assert_eq!(decide_once(&rs256), Some(true), "rs256 request not allowed");

    let mut g = c.benchmark_group("decision_path");

    // The bar: JWT (cached), case lookup, entities + context, Cedar.
    g.bench_function("whole_path_token_cached", |b| {
        b.iter(|| black_box(decide_once(&es256)))
    });
    // The same with a token never seen before: the ES256 signature is verified every time.
    g.bench_function("whole_path_token_cold", |b| {
        b.iter_batched(
            || fresh_es256(&key, &claims),
            |h| black_box(decide_once(&h)),
            BatchSize::SmallInput,
        )
    });

    for (name, header) in [("es256", &es256), ("rs256", &rs256)] {
        g.bench_function(format!("jwt_{name}_cached"), |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(auth.authenticate(Some(header.as_bytes())))
                        .is_ok(),
                )
            })
        });
    }
    // Cold token cache: every token is new (fresh `jti`), so its signature is verified; the
    // signing key comes from the loaded JWKS. Minting is in the setup, outside the measurement.
    g.bench_function("jwt_es256_cold", |b| {
        b.iter_batched(
            || fresh_es256(&key, &claims),
            |h| black_box(rt.block_on(auth.authenticate(Some(h.as_bytes()))).is_ok()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("jwt_rs256_cold", |b| {
        b.iter_batched(
            || {
                let mut claims = claims.clone();
                claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
                format!("Bearer {}", mint_rs256(&claims))
            },
            |h| black_box(rt.block_on(auth.authenticate(Some(h.as_bytes()))).is_ok()),
            BatchSize::SmallInput,
        )
    });

    g.bench_function("case_lookup_10k", |b| {
        b.iter(|| black_box(rt.block_on(cases.lookup(CASE_ID)).is_ok()))
    });

    // The same lookup through the ZGW registry with a warm cache: the example Zaken API (on
    // 127.0.0.1:0, driven by this runtime) answers the first lookup; every measured one is a
    // cache hit, which the request count checks afterwards.
    let (zgw, zaken_api, zaken_task) = rt.block_on(zgw_registry());
    let warm = rt.block_on(zgw.lookup(CASE_ID)).unwrap().unwrap();
    assert_eq!(warm.handlers, vec!["emp-042".to_string()]);
    g.bench_function("case_lookup_zgw_warm", |b| {
        b.iter(|| black_box(rt.block_on(zgw.lookup(CASE_ID)).is_ok()))
    });
    assert_eq!(
        zaken_api.requests("zaken"),
        1,
        "every measured lookup was a cache hit"
    );
    zaken_task.abort();

    // Entities and context building plus Cedar evaluation (`PolicyEngine::decide`), for an allow
    // and for a deny (another subject: `subjectNotInCase`).
    let emp = rt
        .block_on(auth.authenticate(Some(es256.as_bytes())))
        .unwrap();
    let case = rt.block_on(cases.lookup(CASE_ID)).unwrap();
    let other = Resource::Person(Bsn::parse("999990639").unwrap());
    for (name, resource) in [("allow", &resource), ("deny", &other)] {
        g.bench_function(format!("cedar_decide_{name}"), |b| {
            b.iter(|| {
                black_box(engine.decide(&DecisionInput {
                    search: None,
                    release: None,
                    employee: &emp,
                    action: Action::BRP_LOOKUP,
                    resource,
                    case: case.as_deref(),
                    break_glass: false,
                    reason: None,
                    fields: &fields,
                    client_ip: None,
                    now: Utc::now(),
                    counters: Counters::default(),
                }))
            })
        });
    }

    let record = common::decision(42);
    let prev = "0".repeat(64);
    g.bench_function("audit_record_encode_hash", |b| {
        b.iter(|| black_box(encode_and_hash(&record, &prev)))
    });
    g.finish();
}

/// The ZGW registry in front of the example Zaken API holding one open zaak `CASE_ID`, handled by
/// emp-042, about 999993653; cached for an hour.
async fn zgw_registry() -> (
    std::sync::Arc<ZgwCases>,
    zaken::ZakenData,
    tokio::task::JoinHandle<()>,
) {
    const SECRET: &[u8] = b"bench-zgw-secret-0123456789abcdef";
    const ZAAKTYPE: &str = "https://catalogi.example/catalogi/api/v1/zaaktypen/pv";
    let today = Utc::now().date_naive();
    let doc = json!({"zaken": [{
        "identificatie": CASE_ID, "bronorganisatie": "002564440", "zaaktype": ZAAKTYPE,
        "startdatum": (today - chrono::Days::new(10)).to_string(),
        "einddatumGepland": (today + chrono::Days::new(30)).to_string(),
        "rollen": [
            {"betrokkeneType": "medewerker", "omschrijvingGeneriek": "behandelaar",
             "betrokkeneIdentificatie": {"identificatie": "emp-042"}},
            {"betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "initiator",
             "betrokkeneIdentificatie": {"inpBsn": "999993653"}}],
        "zaakobjecten": []}]});
    let data = zaken::ZakenData::from_json(&doc, "purpose-gate", SECRET).unwrap();
    let (addr, task) = zaken::spawn(data.clone()).await.unwrap();
    let registry = ZgwCases::new(ZgwOptions {
        base_url: zaken::base_url(addr),
        client_id: "purpose-gate".into(),
        secret: SECRET.to_vec(),
        bronorganisatie: None,
        cache_ttl: std::time::Duration::from_secs(3600),
        negative_ttl: std::time::Duration::from_secs(3600),
        timeout: std::time::Duration::from_secs(2),
        vehicle_object_type: "kenteken".into(),
        zaaktypen: [(ZAAKTYPE.to_string(), "parkeervergunning".to_string())].into(),
        organisaties: [("002564440".to_string(), "0363".to_string())].into(),
    })
    .unwrap();
    (registry, data, task)
}

fn fresh_es256(key: &[u8], claims: &Value) -> String {
    let mut claims = claims.clone();
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    format!(
        "Bearer {}",
        tokens::mint(key, tokens::DEMO_KID, &claims).unwrap()
    )
}

criterion_group!(benches, bench);
criterion_main!(benches);
