//! How the decision path grows with the work in a request and with the size of the case
//! registry: JWT verification (token cache warm), case lookup and one Cedar decision per data
//! subject, as the gate decides a request, with the shipped policies.
//!
//! - `scaling/subjects/N`: a BRP lookup naming N persons (1, 10, 20), all in the case, in a
//!   registry of 10,000 cases. Expected: linear in N (one decision per subject).
//! - `scaling/cases/N`: a lookup of one person in a registry of N cases (10,000, 100,000,
//!   1,000,000). Expected: flat (the registry is a map from case id to case).
//!
//! `cargo bench --bench scaling`

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a failed unwrap is a failed setup

#[path = "../examples/common/tokens.rs"]
mod tokens;

use std::hint::black_box;
use std::path::{Path, PathBuf};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

use purpose_gate::auth::Authenticator;
use purpose_gate::config::Config;
use purpose_gate::model::{Action, Bsn, Counters, Employee, Resource};
use purpose_gate::policy::{DecisionInput, PolicyEngine};
use purpose_gate::purpose::{CaseRegistry, JsonFileCases};

const SUBJECT_COUNTS: [usize; 3] = [1, 10, 20];
const CASE_COUNTS: [usize; 3] = [10_000, 100_000, 1_000_000];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `n`-th valid BSN (eleven-test) from 100000009 upwards.
fn valid_bsns(n: usize) -> Vec<Bsn> {
    (10_000_000u64..)
        .filter_map(|prefix| {
            let digits: Vec<i64> = prefix
                .to_string()
                .bytes()
                .map(|d| i64::from(d - b'0'))
                .collect();
            let sum: i64 = digits
                .iter()
                .enumerate()
                .map(|(i, d)| (9 - i as i64) * d)
                .sum();
            let check = sum % 11;
            (check < 10).then(|| Bsn::parse(&format!("{prefix}{check}")).unwrap())
        })
        .take(n)
        .collect()
}

/// `n` open parkeervergunning cases of organisation 0363, each handled by emp-042 and about
/// `subjects`; the case ids are `Z-SCALE-{i:07}`.
fn write_cases(dir: &Path, n: usize, subjects: &[Bsn]) -> PathBuf {
    let now = Utc::now();
    let opened = (now - chrono::Duration::days(10)).to_rfc3339();
    let closes = (now + chrono::Duration::days(30)).to_rfc3339();
    let subjects: Vec<&str> = subjects.iter().map(Bsn::as_str).collect();
    let cases: Vec<_> = (0..n)
        .map(|i| {
            json!({"id": format!("Z-SCALE-{i:07}"), "type": "parkeervergunning", "status": "open",
                   "opened": opened, "closes": closes, "organization": "0363",
                   "handlers": ["emp-042", format!("emp-{i}")], "subjects": subjects})
        })
        .collect();
    let path = dir.join(format!("cases-{n}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({ "cases": cases })).unwrap(),
    )
    .unwrap();
    path
}

/// What does not change between the measured requests.
struct Fixture {
    rt: tokio::runtime::Runtime,
    auth: Authenticator,
    header: String,
    engine: PolicyEngine,
    fields: Vec<String>,
}

impl Fixture {
    /// What the gate does to decide a request: authenticate (cached token), look up the case,
    /// one decision per subject. Returns whether every subject was allowed.
    fn decide(&self, cases: &JsonFileCases, case_id: &str, resources: &[Resource]) -> bool {
        self.rt.block_on(async {
            let emp: Employee = self
                .auth
                .authenticate(Some(self.header.as_bytes()))
                .await
                .unwrap();
            let case = cases.lookup(case_id).await.unwrap();
            let now = Utc::now();
            resources.iter().all(|resource| {
                self.engine
                    .decide(&DecisionInput {
                        search: None,
                        release: None,
                        employee: &emp,
                        action: Action::BRP_LOOKUP,
                        resource,
                        case: case.as_deref(),
                        break_glass: false,
                        reason: None,
                        fields: &self.fields,
                        client_ip: None,
                        now,
                        counters: Counters::default(),
                    })
                    .allow
            })
        })
    }
}

fn scaling(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "[auth]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n",
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        repo().join("examples/demo/keys/jwks.json").display()
    );
    let cfg = Config::parse(&config, tmp.path()).unwrap();
    let auth = rt.block_on(Authenticator::new(&cfg.auth)).unwrap();
    let engine = PolicyEngine::load(&repo().join("policies")).unwrap();
    let key = std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem")).unwrap();
    let claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        3600,
    );
    let header = format!(
        "Bearer {}",
        tokens::mint(&key, tokens::DEMO_KID, &claims).unwrap()
    );
    let fx = Fixture {
        rt,
        auth,
        header,
        engine,
        fields: vec!["naam".to_string(), "verblijfplaats".to_string()],
    };
    let bsns = valid_bsns(*SUBJECT_COUNTS.iter().max().unwrap());
    let resources: Vec<Resource> = bsns.iter().cloned().map(Resource::Person).collect();

    let mut g = c.benchmark_group("scaling");
    let cases = JsonFileCases::load(&write_cases(tmp.path(), 10_000, &bsns)).unwrap();
    let case_id = "Z-SCALE-0004711";
    for n in SUBJECT_COUNTS {
        let subset = &resources[..n];
        // Measure the allow path only: every subject must be allowed.
        assert!(
            fx.decide(&cases, case_id, subset),
            "{n} subjects: not every subject was allowed"
        );
        g.bench_with_input(BenchmarkId::new("subjects", n), &n, |b, _| {
            b.iter(|| black_box(fx.decide(&cases, case_id, subset)))
        });
    }
    drop(cases);

    for n in CASE_COUNTS {
        let cases = JsonFileCases::load(&write_cases(tmp.path(), n, &bsns[..1])).unwrap();
        // A case in the middle of the file.
        let case_id = format!("Z-SCALE-{:07}", n / 2);
        let one = &resources[..1];
        assert!(
            fx.decide(&cases, &case_id, one),
            "{n} cases: the lookup was not allowed"
        );
        g.bench_with_input(BenchmarkId::new("cases", n), &n, |b, _| {
            b.iter(|| black_box(fx.decide(&cases, &case_id, one)))
        });
    }
    g.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
