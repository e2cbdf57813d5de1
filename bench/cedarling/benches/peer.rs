//! purpose-gate and Janssen's Cedarling side by side, in one criterion run: the same ES256 token
//! (the demo key, claims as `examples/common/tokens.rs` mints them), the same request (a BRP
//! lookup of one BSN, fields `naam` and `verblijfplaats`, case `Z-2026-004711` of a registry of
//! 10,000 cases) and the shipped `policies/`, adapted to Cedarling's model in `policy-store/`
//! (README.md lists every change).
//!
//! Measured, each with a cached token (the same token every iteration) and a fresh one (a new
//! `jti`, so a new token, every iteration; minting is outside the measurement):
//! - `gate_*`: `Authenticator::authenticate` (ES256 against the demo JWKS), the case lookup and
//!   `PolicyEngine::decide`, as `benches/decision_path.rs` (`whole_path_token_*`) does it;
//! - `cedarling_*`: the same case lookup, the request Cedarling takes (resource entity data and
//!   a context JSON carrying the case) and `Cedarling::authorize_multi_issuer` with signature
//!   validation on, keys from the demo JWKS served on 127.0.0.1 by this process;
//! - `cedarling_prebuilt_request_token_cached`: `authorize_multi_issuer` alone, the request built
//!   once and cloned, to show what the lookup and the JSON building add.
//!
//! Before measuring, every variant must allow the measured request and deny a subject that is not
//! in the case, and neither may accept a token whose signature was tampered with. At the end the
//! ratios Cedarling/gate are printed from criterion's medians (`target/criterion/peer/*/new/
//! estimates.json`, written by this run).
//!
//! `cd bench/cedarling && cargo bench`

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a failed unwrap is a failed setup

#[path = "../../../examples/common/tokens.rs"]
mod tokens;

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use cedarling::{
    AuthorizeMultiIssuerRequest, BootstrapConfig, CedarEntityMapping, Cedarling, EntityData,
    JwtConfig, LogConfig, LogLevel, LogTypeConfig, PolicyStoreConfig, PolicyStoreSource,
    TokenInput,
};
use purpose_gate::auth::Authenticator;
use purpose_gate::config::Config;
use purpose_gate::model::{Action, Bsn, Case, Counters, Resource};
use purpose_gate::policy::{DecisionInput, OPEN_ENDED_CLOSES, PolicyEngine};
use purpose_gate::purpose::{CaseRegistry, JsonFileCases};

/// The case the benchmark request names; every generated case has the same shape.
const CASE_ID: &str = "Z-2026-004711";
/// The subject of the measured request (in the case) and of the deny check (not in the case).
const SUBJECT: &str = "999993653";
const OTHER_SUBJECT: &str = "999990639";
const FIELDS: [&str; 2] = ["naam", "verblijfplaats"];
/// The token type Cedarling maps the JWT to (`policy-store/trusted-issuers.json`).
const TOKEN_MAPPING: &str = "Gate::Access_Token";
const GROUP: &str = "peer";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 10,000 open parkeervergunning cases of organisation 0363, handled by emp-042 (as
/// `benches/decision_path.rs` writes them).
fn write_cases(dir: &Path, n: usize) -> PathBuf {
    let now = Utc::now();
    let opened = (now - chrono::Duration::days(10)).to_rfc3339();
    let closes = (now + chrono::Duration::days(30)).to_rfc3339();
    let cases: Vec<_> = (0..n)
        .map(|i| {
            json!({"id": format!("Z-2026-{i:06}"), "type": "parkeervergunning", "status": "open",
                   "opened": opened, "closes": closes, "organization": "0363",
                   "handlers": ["emp-042", format!("emp-{i}")], "subjects": [SUBJECT, "999991802"],
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

// ---------------------------------------------------------------------------------------------
// The gate
// ---------------------------------------------------------------------------------------------

struct Gate {
    auth: Authenticator,
    engine: PolicyEngine,
}

impl Gate {
    /// JWT (`header` is the `Authorization` value), case lookup, Cedar: `Some(allow)`, or `None`
    /// when the token is refused.
    fn decide(&self, rt: &Runtime, cases: &JsonFileCases, header: &str, bsn: &str) -> Option<bool> {
        let resource = Resource::Person(Bsn::parse(bsn).unwrap());
        let fields: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
        rt.block_on(async {
            let emp = self.auth.authenticate(Some(header.as_bytes())).await.ok()?;
            let case = cases.lookup(CASE_ID).await.ok().flatten();
            let d = self.engine.decide(&DecisionInput {
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
    }
}

// ---------------------------------------------------------------------------------------------
// Cedarling
// ---------------------------------------------------------------------------------------------

struct Peer {
    cedarling: Cedarling,
    /// BSNs of the persons `policies/entities.json` marks protected: the application tells
    /// Cedarling the resource's attributes, as the gate does for its Person entity.
    protected: HashSet<String>,
}

impl Peer {
    /// What an application in front of Cedarling does per request: look the case up, build the
    /// request, call `authorize_multi_issuer`. `Some(allow)`, or `None` when Cedarling refuses
    /// the request (e.g. no valid token).
    fn decide(&self, rt: &Runtime, cases: &JsonFileCases, jwt: &str, bsn: &str) -> Option<bool> {
        rt.block_on(async {
            let case = cases.lookup(CASE_ID).await.ok().flatten();
            let request = self.request(jwt, bsn, case.as_deref(), Utc::now());
            self.authorize(request).await
        })
    }

    async fn authorize(&self, request: AuthorizeMultiIssuerRequest) -> Option<bool> {
        self.cedarling
            .authorize_multi_issuer(request)
            .await
            .ok()
            .map(|r| r.decision)
    }

    fn request(
        &self,
        jwt: &str,
        bsn: &str,
        case: Option<&Case>,
        now: DateTime<Utc>,
    ) -> AuthorizeMultiIssuerRequest {
        let resource = EntityData {
            cedar_mapping: CedarEntityMapping {
                entity_type: "Gate::Person".to_string(),
                id: bsn.to_string(),
            },
            attributes: HashMap::from([(
                "protected".to_string(),
                Value::Bool(self.protected.contains(bsn)),
            )]),
        };
        let mut context = json!({
            "now": datetime(&now),
            "break_glass": false,
            "fields": FIELDS,
            "lookups_last_hour": 0,
            "lookups_last_day": 0,
        });
        if let Some(case) = case {
            context["case"] = case_record(case);
        }
        AuthorizeMultiIssuerRequest::new_with_fields(
            vec![TokenInput::new(TOKEN_MAPPING.to_string(), jwt.to_string())],
            resource,
            "Gate::Action::\"brp:lookup\"".to_string(),
            Some(context),
        )
    }
}

/// A Cedar `datetime` in JSON, as the gate writes it (UTC, milliseconds).
fn datetime(t: &DateTime<Utc>) -> Value {
    datetime_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn datetime_str(s: &str) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": s}})
}

fn entity(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": ty, "id": id}})
}

/// The case as the record `Gate::Case` of the adapted schema: the attributes of the gate's Case
/// entity, with organisation and handlers as ids.
fn case_record(case: &Case) -> Value {
    let closes = match &case.closes {
        Some(c) => datetime(c),
        None => datetime_str(OPEN_ENDED_CLOSES),
    };
    json!({
        "case_type": entity("Gate::CaseType", &case.case_type),
        "status": case.status.as_str(),
        "opened": datetime(&case.opened),
        "closes": closes,
        "organization": case.organization,
        "handlers": case.handlers,
        "subjects": case.subjects.iter().map(|s| entity("Gate::Person", s)).collect::<Vec<_>>(),
        "vehicles": case.vehicles.iter().map(|v| entity("Gate::Vehicle", v)).collect::<Vec<_>>(),
        "addresses": case.addresses.iter().flat_map(|a| a.keys()).collect::<Vec<_>>(),
        "persons": case.persons.iter().filter_map(|p| p.key()).collect::<Vec<_>>(),
    })
}

/// Serves `body` as `application/json` to every HTTP request on 127.0.0.1 (Cedarling fetches a
/// trusted issuer's JWKS from a URL, even when it is local).
async fn serve_jwks(body: Vec<u8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     cache-control: max-age=3600\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// `policies/entities.json` in Cedarling's model: `CaseType.roles` as role ids, each listed role
/// with every role inside it (the gate gets that from `principal in role`). Also returns the
/// protected BSNs. Refuses a role hierarchy under the roles the adapted policies name by id.
fn adapt_entities(shipped: &Value) -> (Value, HashSet<String>) {
    let entities = shipped.as_array().expect("entities.json is an array");
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    let mut protected = HashSet::new();
    for e in entities {
        let id = e["uid"]["id"].as_str().unwrap().to_string();
        match e["uid"]["type"].as_str().unwrap() {
            "Gate::Role" => {
                let ps = e["parents"].as_array().unwrap();
                let ids = ps.iter().map(|p| p["id"].as_str().unwrap().to_string());
                parents.insert(id, ids.collect());
            }
            "Gate::Person" if e["attrs"]["protected"] == json!(true) => {
                protected.insert(id);
            }
            _ => {}
        }
    }
    // Every role with all the roles it is in (transitively).
    let ancestors = |role: &str| {
        let mut seen = HashSet::new();
        let mut todo = vec![role.to_string()];
        while let Some(r) = todo.pop() {
            for p in parents.get(&r).into_iter().flatten() {
                if seen.insert(p.clone()) {
                    todo.push(p.clone());
                }
            }
        }
        seen
    };
    for named in ["noodtoegang", "voertuiginformatie"] {
        let inside: Vec<_> = parents
            .keys()
            .filter(|r| ancestors(r).contains(named))
            .collect();
        assert!(
            inside.is_empty(),
            "roles {inside:?} sit inside `{named}`, which the adapted policies compare by id: \
             list them there too"
        );
    }
    let adapted = entities
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if e["uid"]["type"] == "Gate::CaseType" {
                let listed: HashSet<String> = e["attrs"]["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["__entity"]["id"].as_str().unwrap().to_string())
                    .collect();
                let mut roles: Vec<String> = parents
                    .keys()
                    .filter(|r| listed.contains(*r) || !ancestors(r).is_disjoint(&listed))
                    .cloned()
                    .collect();
                roles.sort();
                e["attrs"]["roles"] = json!(roles);
            }
            e
        })
        .collect();
    (Value::Array(adapted), protected)
}

/// The `@id`s of a Cedar policy file, in order.
fn policy_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("@id(\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Cedarling with the adapted policy store (a copy of `policy-store/` in `dir`, plus
/// `trusted-issuers.json` naming the JWKS URL and `entities/gate.json` from the shipped
/// entities) and signature validation on.
async fn cedarling(dir: &Path) -> Peer {
    let store = crate_dir().join("policy-store");
    let shipped_policies = std::fs::read_to_string(repo().join("policies/gate.cedar")).unwrap();
    let adapted_policies = std::fs::read_to_string(store.join("policies/gate.cedar")).unwrap();
    let mut expected = policy_ids(&shipped_policies);
    expected.push("forbid-token-audience".to_string());
    expected.sort();
    let mut adapted = policy_ids(&adapted_policies);
    adapted.sort();
    assert_eq!(
        adapted, expected,
        "policy-store/policies/gate.cedar no longer adapts every policy of policies/gate.cedar"
    );

    let jwks = std::fs::read(repo().join("examples/demo/keys/jwks.json")).unwrap();
    let jwks_addr = serve_jwks(jwks).await;

    let out = dir.join("cedarling-store");
    std::fs::create_dir_all(out.join("policies")).unwrap();
    std::fs::create_dir_all(out.join("entities")).unwrap();
    for file in ["metadata.json", "schema.cedarschema", "policies/gate.cedar"] {
        std::fs::copy(store.join(file), out.join(file)).unwrap();
    }
    let trusted = json!({
        TOKEN_MAPPING: {
            "type": "jwt",
            "issuer": "Gate",
            "configuration_endpoints": {
                "jwks": format!("http://{jwks_addr}/jwks.json"),
                "iss": tokens::DEMO_ISSUER,
            },
            // The demo IdP's tokens carry no `jti`: the token entity is named by `sub`.
            "token_id": "sub",
        }
    });
    std::fs::write(out.join("trusted-issuers.json"), trusted.to_string()).unwrap();
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(repo().join("policies/entities.json")).unwrap())
            .unwrap();
    let (entities, protected) = adapt_entities(&shipped);
    std::fs::write(out.join("entities/gate.json"), entities.to_string()).unwrap();

    let config = BootstrapConfig {
        application_name: "purpose-gate-peer-bench".to_string(),
        // Cedarling's cheapest setting: no log at all (its default keeps decision logs in memory).
        log_config: LogConfig {
            log_type: LogTypeConfig::Off,
            log_level: LogLevel::WARN,
        },
        policy_store_config: PolicyStoreConfig {
            source: PolicyStoreSource::Directory(out),
            ..Default::default()
        },
        jwt_config: JwtConfig {
            jwks: None,
            jwt_sig_validation: true,
            // The demo IdP publishes no status list (and the gate has none to check).
            jwt_status_validation: false,
            signature_algorithms_supported: HashSet::from([jsonwebtoken::Algorithm::ES256]),
            ..Default::default()
        },
        ..Default::default()
    };
    let cedarling = Cedarling::new(&config)
        .await
        .unwrap_or_else(|e| panic!("cedarling does not start: {e}"));
    Peer {
        cedarling,
        protected,
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn fresh_jwt(key: &[u8], claims: &Value) -> String {
    let mut claims = claims.clone();
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    tokens::mint(key, tokens::DEMO_KID, &claims).unwrap()
}

/// The token with one character of its signature changed.
fn tampered(jwt: &str) -> String {
    let mut bytes = jwt.as_bytes().to_vec();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cases = JsonFileCases::load(&write_cases(tmp.path(), 10_000)).unwrap();
    let config = format!(
        "[auth]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n",
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        repo().join("examples/demo/keys/jwks.json").display()
    );
    let cfg = Config::parse(&config, tmp.path()).unwrap();
    let gate = Gate {
        auth: rt.block_on(Authenticator::new(&cfg.auth)).unwrap(),
        engine: PolicyEngine::load(&repo().join("policies")).unwrap(),
    };
    let peer = rt.block_on(cedarling(tmp.path()));

    let key = std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem")).unwrap();
    let claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        3600,
    );
    let jwt = tokens::mint(&key, tokens::DEMO_KID, &claims).unwrap();
    let bearer = format!("Bearer {jwt}");

    // Both must reach the same decisions before anything is measured: allow the measured
    // request, deny a person the case does not name, refuse a tampered token. The fresh-token
    // checks go first, so that the cached token is not yet in either cache.
    let fresh = fresh_jwt(&key, &claims);
    assert_eq!(
        gate.decide(&rt, &cases, &format!("Bearer {fresh}"), SUBJECT),
        Some(true)
    );
    assert_eq!(
        peer.decide(&rt, &cases, &fresh, SUBJECT),
        Some(true),
        "cedarling: fresh token"
    );
    for (name, t) in [
        ("bad signature", tampered(&jwt)),
        ("bad signature", tampered(&fresh)),
    ] {
        assert_ne!(
            gate.decide(&rt, &cases, &format!("Bearer {t}"), SUBJECT),
            Some(true),
            "gate: {name}"
        );
        assert_ne!(
            peer.decide(&rt, &cases, &t, SUBJECT),
            Some(true),
            "cedarling: {name}"
        );
    }
    let wrong_aud = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        "another-service",
        "emp-042",
        "0363",
        &["vergunningverlener"],
        3600,
    );
    let wrong_aud = tokens::mint(&key, tokens::DEMO_KID, &wrong_aud).unwrap();
    assert_ne!(
        gate.decide(&rt, &cases, &format!("Bearer {wrong_aud}"), SUBJECT),
        Some(true)
    );
    assert_ne!(
        peer.decide(&rt, &cases, &wrong_aud, SUBJECT),
        Some(true),
        "cedarling: audience"
    );
    assert_eq!(
        gate.decide(&rt, &cases, &bearer, SUBJECT),
        Some(true),
        "gate: allow"
    );
    assert_eq!(
        peer.decide(&rt, &cases, &jwt, SUBJECT),
        Some(true),
        "cedarling: allow"
    );
    assert_eq!(
        gate.decide(&rt, &cases, &bearer, OTHER_SUBJECT),
        Some(false),
        "gate: deny"
    );
    assert_eq!(
        peer.decide(&rt, &cases, &jwt, OTHER_SUBJECT),
        Some(false),
        "cedarling: deny"
    );
    let other_org = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0599",
        &["vergunningverlener"],
        3600,
    );
    let other_org = tokens::mint(&key, tokens::DEMO_KID, &other_org).unwrap();
    assert_eq!(
        gate.decide(&rt, &cases, &format!("Bearer {other_org}"), SUBJECT),
        Some(false)
    );
    assert_eq!(
        peer.decide(&rt, &cases, &other_org, SUBJECT),
        Some(false),
        "cedarling: org"
    );

    let mut g = c.benchmark_group(GROUP);
    g.bench_function("gate_token_cached", |b| {
        b.iter(|| black_box(gate.decide(&rt, &cases, &bearer, SUBJECT)))
    });
    g.bench_function("cedarling_token_cached", |b| {
        b.iter(|| black_box(peer.decide(&rt, &cases, &jwt, SUBJECT)))
    });
    g.bench_function("gate_token_fresh", |b| {
        b.iter_batched(
            || format!("Bearer {}", fresh_jwt(&key, &claims)),
            |h| black_box(gate.decide(&rt, &cases, &h, SUBJECT)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("cedarling_token_fresh", |b| {
        b.iter_batched(
            || fresh_jwt(&key, &claims),
            |t| black_box(peer.decide(&rt, &cases, &t, SUBJECT)),
            BatchSize::SmallInput,
        )
    });
    let case = rt.block_on(cases.lookup(CASE_ID)).unwrap();
    let prebuilt = peer.request(&jwt, SUBJECT, case.as_deref(), Utc::now());
    assert_eq!(rt.block_on(peer.authorize(prebuilt.clone())), Some(true));
    g.bench_function("cedarling_prebuilt_request_token_cached", |b| {
        b.iter_batched(
            || prebuilt.clone(),
            |r| black_box(rt.block_on(peer.authorize(r))),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Criterion's median of `name` in this run (ns), from its `estimates.json`; `None` when the
/// benchmark did not run now (filtered out, or `--test`).
fn median_ns(criterion_dir: &Path, name: &str, started: SystemTime) -> Option<f64> {
    let path = criterion_dir
        .join(GROUP)
        .join(name)
        .join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= started;
    if !fresh {
        return None;
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn report(started: SystemTime) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("target"));
    let dir = target.join("criterion");
    println!(
        "\nCedarling / gate, criterion medians of this run ({}):",
        dir.display()
    );
    for (gate, peer) in [
        ("gate_token_cached", "cedarling_token_cached"),
        ("gate_token_fresh", "cedarling_token_fresh"),
        (
            "gate_token_cached",
            "cedarling_prebuilt_request_token_cached",
        ),
    ] {
        match (
            median_ns(&dir, gate, started),
            median_ns(&dir, peer, started),
        ) {
            (Some(g), Some(p)) => println!(
                "  {peer:<40} {:>9.1} µs / {gate:<18} {:>8.1} µs = {:>6.1}×",
                p / 1e3,
                g / 1e3,
                p / g
            ),
            _ => println!("  {peer} / {gate}: not measured in this run"),
        }
    }
}

criterion::criterion_group!(benches, bench);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(started);
}
