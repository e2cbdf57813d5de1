//! Operability end to end: policy reload (explicit, polled, SIGHUP), the admin listener
//! (health, readiness, metrics scraped after real traffic), the concurrency cap, shadow mode.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Harness, Options, raadpleeg, repo};
use purpose_gate::reload::{ReloadError, Reloaded};
use serde_json::Value;

/// A copy of the shipped policies (without their tests) in `dir`.
fn copy_policies(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["gate.cedar", "gate.cedarschema", "entities.json"] {
        std::fs::copy(repo().join("policies").join(f), dir.join(f)).unwrap();
    }
}

const FREEZE: &str = r#"
@id("forbid-freeze")
@code("frozen")
@reason("all lookups are frozen")
forbid (principal, action, resource);
"#;

fn add_freeze(dir: &Path) {
    let mut text = std::fs::read_to_string(dir.join("gate.cedar")).unwrap();
    text.push_str(FREEZE);
    std::fs::write(dir.join("gate.cedar"), text).unwrap();
}

fn config_records(h: &Harness) -> Vec<Value> {
    h.records()
        .into_iter()
        .filter(|r| r["kind"] == "config")
        .collect()
}

fn last_decision_version(h: &Harness) -> String {
    h.records()
        .iter()
        .rev()
        .find(|r| r["kind"] == "decision")
        .and_then(|r| r["policy_version"].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn policy_harness(policies_extra: &str) -> (Harness, tempfile::TempDir) {
    let pdir = tempfile::tempdir().unwrap();
    copy_policies(pdir.path());
    let h = Harness::start_with(Options {
        policies_dir: Some(pdir.path().to_path_buf()),
        policies_extra: policies_extra.into(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    (h, pdir)
}

#[tokio::test]
async fn valid_policy_reload_takes_effect_for_the_next_request_and_is_audited() {
    let (h, pdir) = policy_harness("poll_interval = \"0s\"").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let old_version = last_decision_version(&h);
    assert_eq!(old_version.len(), 64);

    add_freeze(pdir.path());
    let reloaded = h.running().reload().reload_policies().await.unwrap();
    let Reloaded::Swapped { old, new } = reloaded else {
        panic!("expected a swap, got {reloaded:?}");
    };
    assert_eq!(old, old_version);
    assert_ne!(new, old_version);

    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 403, "{:?}", a.json());
    assert_eq!(a.code(), "frozen");
    assert_eq!(last_decision_version(&h), new);

    let configs = config_records(&h);
    assert_eq!(configs.len(), 1, "{configs:?}");
    assert_eq!(configs[0]["changed"], "policies");
    assert_eq!(configs[0]["gate"], "test-gate");
    assert_eq!(configs[0]["old_version"], old_version.as_str());
    assert_eq!(configs[0]["new_version"], new.as_str());
    // The config record sits between the decisions of the two versions.
    let kinds: Vec<String> = h
        .records()
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or("").to_string())
        .collect();
    let at = kinds.iter().position(|k| k == "config").unwrap();
    assert!(kinds[..at].contains(&"decision".to_string()));
    assert!(kinds[at..].contains(&"decision".to_string()));
    // The crate's own verifier accepts the new record kind.
    assert!(purpose_gate::audit::verify(&h.audit_dir).is_ok());

    // Reloading the same files again changes nothing and writes nothing.
    let again = h.running().reload().reload_policies().await.unwrap();
    assert_eq!(again, Reloaded::Unchanged);
    assert_eq!(config_records(&h).len(), 1);
}

#[tokio::test]
async fn invalid_policy_reload_is_rejected_and_the_old_policies_stay() {
    let (h, pdir) = policy_harness("poll_interval = \"0s\"").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200);
    let version = last_decision_version(&h);

    // A policy that does not validate against the schema.
    let mut text = std::fs::read_to_string(pdir.path().join("gate.cedar")).unwrap();
    text.push_str("\n@id(\"bad\")\nforbid (principal, action, resource) when { resource.no_such_attribute };\n");
    std::fs::write(pdir.path().join("gate.cedar"), text).unwrap();
    let err = h.running().reload().reload_policies().await.unwrap_err();
    assert!(matches!(err, ReloadError::Invalid { .. }), "{err}");

    // Syntax errors too.
    std::fs::write(pdir.path().join("gate.cedar"), "permit (principal,").unwrap();
    assert!(h.running().reload().reload_policies().await.is_err());

    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "old policies still decide: {:?}", a.json());
    assert_eq!(last_decision_version(&h), version);
    assert!(config_records(&h).is_empty());

    let (_, metrics) = h.admin_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "purpose_gate_reloads_total{what=\"policies\",result=\"failed\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "purpose_gate_reloads_total{what=\"policies\",result=\"ok\"}"
        ),
        None
    );
}

#[tokio::test]
async fn changed_policy_files_are_picked_up_by_polling() {
    let (h, pdir) = policy_harness("poll_interval = \"100ms\"").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    assert_eq!(h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status, 200);
    add_freeze(pdir.path());
    // Wait (bounded) for the poller; this is a wait for an event, not a timing assertion.
    let mut status = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if config_records(&h).len() == 1 {
            status = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status.as_u16();
            break;
        }
    }
    assert_eq!(status, 403, "the polled reload swapped in the freeze");
}

/// Value of one exposition line `series value`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every sample line parses as `name{labels} value` with a float value.
fn assert_exposition_parses(text: &str) {
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_after_real_traffic_count_requests_decisions_upstreams_and_audit() {
    let h = Harness::start_with(Options {
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    for _ in 0..3 {
        assert_eq!(h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status, 200);
    }
    assert_eq!(h.brp(&h.emp042(), Some("Z-CLOSED"), &q).await.status, 403);
    assert_eq!(h.send("GET", "/nowhere", &[], None).await.status, 404);

    let (status, healthz) = h.admin_get("/healthz").await;
    assert_eq!((status.as_u16(), healthz.as_str()), (200, "ok\n"));
    let (status, _) = h.admin_get("/readyz").await;
    assert_eq!(status, 200);
    let (status, text) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert_exposition_parses(&text);

    let brp = "route=\"/haalcentraal/api/brp/personen\"";
    assert_eq!(
        sample(
            &text,
            &format!("purpose_gate_requests_total{{{brp},decision=\"allow\",code=\"200\"}}")
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("purpose_gate_requests_total{{{brp},decision=\"deny\",code=\"403\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "purpose_gate_requests_total{route=\"none\",decision=\"none\",code=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "purpose_gate_decision_seconds_count"),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "purpose_gate_upstream_responses_total{upstream=\"brp\",code=\"200\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "purpose_gate_upstream_seconds_count"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "purpose_gate_case_registry_seconds_count"),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "purpose_gate_case_registry_errors_total"),
        Some(0.0)
    );
    // Process-wide writer statistics: at least this gate's 8 appends (4 decisions, 3 outcomes,
    // and the deny's single record).
    assert!(sample(&text, "purpose_gate_audit_batch_records_count").unwrap() >= 7.0);
    assert!(sample(&text, "purpose_gate_audit_fdatasync_seconds_count").unwrap() >= 7.0);
    assert_eq!(sample(&text, "purpose_gate_ready"), Some(1.0));
    assert_eq!(sample(&text, "purpose_gate_requests_in_flight"), Some(0.0));
    // Nothing that identifies a person or a case.
    for secret in ["999993653", "Z-OPEN", "emp-042"] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }

    let (status, _) = h.admin_get("/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn readyz_fails_while_the_audit_log_is_unwritable_and_recovers() {
    let h = Harness::start_with(Options {
        audit_extra: "segment_max_bytes = 1".into(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    assert_eq!(h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status, 200);
    assert_eq!(h.admin_get("/readyz").await.0, 200);

    let moved = h.audit_dir.with_extension("moved");
    std::fs::rename(&h.audit_dir, &moved).unwrap();
    std::fs::write(&h.audit_dir, b"not a directory").unwrap();
    assert_eq!(h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status, 503);
    assert_eq!(h.admin_get("/readyz").await.0, 503);
    assert_eq!(h.admin_get("/healthz").await.0, 200, "alive, not ready");

    std::fs::remove_file(&h.audit_dir).unwrap();
    std::fs::rename(&moved, &h.audit_dir).unwrap();
    assert_eq!(h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status, 200);
    assert_eq!(h.admin_get("/readyz").await.0, 200);
    let (_, text) = h.admin_get("/metrics").await;
    assert_eq!(
        sample(&text, "purpose_gate_audit_append_failures_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn above_max_concurrent_requests_get_503_overloaded_with_retry_after() {
    // An upstream that accepts and never answers holds the one permit (until its 2s timeout).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let accepted = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = std::sync::Arc::clone(&accepted);
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
            signal.notify_one();
        }
    });
    let h = Harness::start_with(Options {
        upstream_url: Some(url),
        server_extra: "max_concurrent = 1".into(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let token = h.emp042();
    let (first, second) = tokio::join!(h.brp(&token, Some("Z-OPEN"), &q), async {
        accepted.notified().await;
        h.brp(&token, Some("Z-OPEN"), &q).await
    });
    assert_eq!(first.status, 504, "the first request held the permit");
    assert_eq!(second.status, 503, "{:?}", second.json());
    assert_eq!(second.code(), "overloaded");
    assert!(second.is_problem());
    assert_eq!(
        second.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // The overloaded request reached no stage: only the first request's records exist.
    let request_ids: std::collections::BTreeSet<String> = h
        .records()
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(request_ids.len(), 1);
    let (_, text) = h.admin_get("/metrics").await;
    assert_eq!(sample(&text, "purpose_gate_overloaded_total"), Some(1.0));
    hold.abort();
}

#[tokio::test]
async fn shadow_mode_forwards_a_would_be_deny_and_records_it_as_not_enforced() {
    let h = Harness::start_with(Options {
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n[route_enforce]\n\"/haalcentraal/api/brp/personen\" = false\n".into(),
        ..Options::default()
    })
    .await;
    let before = h.registry.seen_count();
    // A protected person: the shipped policies deny this lookup.
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-PROTECTED"),
            &raadpleeg(&["999990639"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200, "forwarded regardless: {:?}", a.json());
    assert_eq!(h.registry.seen_count(), before + 1);
    let records = h.records();
    let decision = records.iter().find(|r| r["kind"] == "decision").unwrap();
    assert_eq!(decision["decision"], "deny");
    assert_eq!(decision["code"], "protectedPerson");
    assert_eq!(decision["enforced"], false);
    let outcome = records.iter().find(|r| r["kind"] == "outcome").unwrap();
    assert_eq!(outcome["status"], 200);
    assert!(purpose_gate::audit::verify(&h.audit_dir).is_ok());
    let parsed = purpose_gate::audit::read_records(&h.audit_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    match parsed.1 {
        purpose_gate::audit::Record::Decision(d) => assert!(!d.enforced),
        other => panic!("expected a decision, got {other:?}"),
    }

    // A refusal before the policy stage is still enforced (no token: 401, nothing forwarded).
    let a = h
        .brp(
            "",
            Some("Z-PROTECTED"),
            &raadpleeg(&["999990639"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(h.registry.seen_count(), before + 1);

    let (_, text) = h.admin_get("/metrics").await;
    assert_eq!(
        sample(
            &text,
            "purpose_gate_shadow_would_deny_total{route=\"/haalcentraal/api/brp/personen\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn enforced_routes_keep_denying_and_their_records_have_no_enforced_key() {
    let h = Harness::start().await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-PROTECTED"),
            &raadpleeg(&["999990639"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 403);
    let records = h.records();
    let decision = records.iter().find(|r| r["kind"] == "decision").unwrap();
    assert!(decision.get("enforced").is_none(), "{decision}");
}

/// A JWK for a P-256 public key.
fn es256_jwk(key: &p256::SecretKey, kid: &str) -> Value {
    use base64::Engine as _;
    let point = key.public_key().to_sec1_bytes(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                       "kid": kid, "alg": "ES256", "use": "sig"})
}

/// Polls (bounded) until `status` answers `want`.
async fn eventually_status(h: &Harness, token: &str, want: u16) -> bool {
    let q = raadpleeg(&["999993653"], &["naam"]);
    for _ in 0..100 {
        if h.brp(token, Some("Z-OPEN"), &q).await.status.as_u16() == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn changed_jwks_file_is_picked_up_by_polling_and_an_invalid_one_is_kept_out() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let tmp = tempfile::tempdir().unwrap();
    let jwks_path = tmp.path().join("jwks.json");
    let demo: Value = serde_json::from_slice(
        &std::fs::read(repo().join("examples/demo/keys/jwks.json")).unwrap(),
    )
    .unwrap();
    std::fs::write(&jwks_path, serde_json::to_vec(&demo).unwrap()).unwrap();
    let h = Harness::start_with(Options {
        jwks_file: Some(jwks_path.clone()),
        policies_extra: "poll_interval = \"100ms\"".into(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let old_token = h.emp042();
    assert_eq!(h.brp(&old_token, Some("Z-OPEN"), &q).await.status, 200);

    // A key the gate does not know yet.
    let new_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let new_pem = new_key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let claims = common::tokens::employee_claims(
        common::ISSUER,
        common::AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        600,
    );
    let new_token = common::tokens::mint(new_pem.as_bytes(), "rotated-2027", &claims).unwrap();
    assert_eq!(h.brp(&new_token, Some("Z-OPEN"), &q).await.status, 401);

    // Both keys: the new token is accepted without a restart or SIGHUP.
    let mut both = demo.clone();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(es256_jwk(&new_key, "rotated-2027"));
    std::fs::write(&jwks_path, serde_json::to_vec(&both).unwrap()).unwrap();
    assert!(
        eventually_status(&h, &new_token, 200).await,
        "new key not picked up"
    );
    assert_eq!(h.brp(&old_token, Some("Z-OPEN"), &q).await.status, 200);

    // The old key rotated out: its token is refused although it was verified (and cached) before.
    let only_new = serde_json::json!({"keys": [es256_jwk(&new_key, "rotated-2027")]});
    std::fs::write(&jwks_path, serde_json::to_vec(&only_new).unwrap()).unwrap();
    assert!(
        eventually_status(&h, &old_token, 401).await,
        "removed key still accepted"
    );

    // An invalid file is refused and counted; the keys in force stay.
    std::fs::write(&jwks_path, b"{\"keys\": [{\"kty\": \"EC\"").unwrap();
    let mut failed = false;
    for _ in 0..100 {
        let (_, metrics) = h.admin_get("/metrics").await;
        if sample(
            &metrics,
            "purpose_gate_reloads_total{what=\"jwks\",result=\"failed\"}",
        )
        .is_some_and(|n| n >= 1.0)
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "invalid jwks file not counted as a failed reload");
    assert_eq!(h.brp(&new_token, Some("Z-OPEN"), &q).await.status, 200);
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        sample(
            &metrics,
            "purpose_gate_reloads_total{what=\"jwks\",result=\"ok\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(Options {
        server_extra: "header_read_timeout = \"500ms\"".into(),
        ..Options::default()
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    // Half a request head, then silence.
    conn.write_all(
        b"POST /haalcentraal/api/brp/personen HTTP/1.1\r\nHost: gate\r\nContent-Type: app",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed before the timeout: {elapsed:?}"
    );
    // Whatever hyper wrote before closing, it is no answer from the registry.
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    assert_eq!(h.registry.seen_count(), 0);
    assert!(h.records().is_empty(), "no stage ran, nothing to record");
}
