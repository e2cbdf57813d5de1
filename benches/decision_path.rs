//! The decision path: JWT check (cached key; token cache warm and cold), case lookup in a
//! registry of 10,000 cases, entity building and Cedar evaluation with the shipped policies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

#[path = "../examples/common/tokens.rs"]
mod tokens;

use std::hint::black_box;
use std::path::{Path, PathBuf};

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use purpose_gate::auth::Authenticator;
use purpose_gate::config::Config;
use purpose_gate::model::{Action, Bsn, Counters, Resource};
use purpose_gate::policy::{DecisionInput, PolicyEngine};
use purpose_gate::purpose::{CaseRegistry, JsonFileCases};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
        serde_json::to_vec(&json!({ "cases": cases })).unwrap_or_default(),
    )
    .unwrap_or_default();
    path
}

fn bench(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(tmp) = tempfile::tempdir() else { return };
    let cases_path = write_cases(tmp.path(), 10_000);
    let config = format!(
        "[auth]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n",
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        repo().join("examples/demo/keys/jwks.json").display()
    );
    let Ok(cfg) = Config::parse(&config, tmp.path()) else {
        eprintln!("bench config invalid");
        return;
    };
    let Ok(auth) = rt.block_on(Authenticator::new(&cfg.auth)) else {
        eprintln!("auth setup failed");
        return;
    };
    let Ok(engine) = PolicyEngine::load(&repo().join("policies")) else {
        eprintln!("policies failed to load");
        return;
    };
    let Ok(cases) = JsonFileCases::load(&cases_path) else {
        eprintln!("cases failed to load");
        return;
    };
    let Ok(key) = std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem")) else {
        return;
    };
    let claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        3600,
    );
    let Ok(token) = tokens::mint(&key, tokens::DEMO_KID, &claims) else {
        return;
    };
    let header = format!("Bearer {token}");
    let Ok(bsn) = Bsn::parse("999993653") else {
        return;
    };
    let resource = Resource::Person(bsn);
    let fields = vec!["naam".to_string(), "verblijfplaats".to_string()];

    let decide_once = |auth: &Authenticator| {
        rt.block_on(async {
            let emp = auth.authenticate(Some(header.as_bytes())).await;
            let Ok(emp) = emp else { return false };
            let case = cases.lookup("Z-2026-004711").await.ok().flatten();
            let d = engine.decide(&DecisionInput {
                employee: &emp,
                action: Action::BrpLookup,
                resource: &resource,
                case: case.as_deref(),
                break_glass: false,
                reason: None,
                fields: &fields,
                client_ip: None,
                now: Utc::now(),
                counters: Counters::default(),
            });
            d.allow
        })
    };
    if !decide_once(&auth) {
        eprintln!("the benchmark request is not allowed: check policies and cases");
        return;
    }

    let mut g = c.benchmark_group("decision_path");
    g.bench_function("whole_path_token_cached", |b| {
        b.iter(|| black_box(decide_once(&auth)))
    });
    g.bench_function("jwt_es256_cached", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(auth.authenticate(Some(header.as_bytes())))
                    .is_ok(),
            )
        })
    });
    if let Ok(emp) = rt.block_on(auth.authenticate(Some(header.as_bytes()))) {
        let case = rt.block_on(cases.lookup("Z-2026-004711")).ok().flatten();
        g.bench_function("cedar_decide", |b| {
            b.iter(|| {
                black_box(engine.decide(&DecisionInput {
                    employee: &emp,
                    action: Action::BrpLookup,
                    resource: &resource,
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
    g.bench_function("case_lookup_10k", |b| {
        b.iter(|| black_box(rt.block_on(cases.lookup("Z-2026-004711")).is_ok()))
    });
    // Cold token cache: a fresh authenticator per batch, so each check verifies the signature.
    g.bench_function("jwt_es256_uncached", |b| {
        b.iter_batched(
            || {
                let mut claims = claims.clone();
                claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
                tokens::mint(&key, tokens::DEMO_KID, &claims).map(|t| format!("Bearer {t}"))
            },
            |h| {
                if let Ok(h) = h {
                    black_box(rt.block_on(auth.authenticate(Some(h.as_bytes()))).is_ok());
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
