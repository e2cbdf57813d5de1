//! The request path end to end: durable-before-forward ordering, fail-closed audit, header
//! handling, request ids and trace context, upstream faults, restart with a torn audit tail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};

use common::{Harness, Options, raadpleeg, read_records};
use serde_json::Value;

#[tokio::test]
async fn decision_record_is_durable_before_the_upstream_sees_the_request() {
    // The registry reads the audit directory the moment a request arrives.
    // (request id, audit records on disk) at the moment each request reached the registry.
    type Snapshots = Arc<Mutex<Vec<(String, Vec<Value>)>>>;
    let seen_at_arrival: Snapshots = Arc::default();
    let audit_dir = tempfile::tempdir().unwrap();
    let dir = audit_dir.path().to_path_buf();
    let sink = Arc::clone(&seen_at_arrival);
    let hook: common::registry::RequestHook = Arc::new(move |req| {
        let rid = req.header("x-request-id").unwrap_or("").to_string();
        sink.lock().unwrap().push((rid, read_records(&dir)));
    });
    let h = Harness::start_with(Options {
        audit_dir: Some(audit_dir.path().to_path_buf()),
        on_request: Some(hook),
        ..Options::default()
    })
    .await;
    for _ in 0..5 {
        let a = h
            .brp(
                &h.emp042(),
                Some("Z-OPEN"),
                &raadpleeg(&["999993653"], &["naam"]),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let seen = seen_at_arrival.lock().unwrap();
    assert_eq!(seen.len(), 5);
    for (rid, records) in seen.iter() {
        assert!(!rid.is_empty(), "the upstream got an X-Request-Id");
        let d = records
            .iter()
            .find(|r| r["request_id"] == rid.as_str() && r["kind"] == "decision")
            .unwrap_or_else(|| panic!("no decision record for {rid} when the upstream saw it"));
        assert_eq!(d["decision"], "allow");
        assert!(
            !records
                .iter()
                .any(|r| r["request_id"] == rid.as_str() && r["kind"] == "outcome"),
            "the outcome comes after the upstream answered"
        );
    }
}

#[tokio::test]
async fn unwritable_audit_directory_means_503_and_nothing_forwarded() {
    // Every batch starts a new segment, so the writer needs the directory for each append.
    let h = Harness::start_with(Options {
        audit_extra: "segment_max_bytes = 1".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200);
    let before = h.registry.seen_count();

    // The directory disappears and a plain file takes its place: no segment can be created.
    let moved = h.audit_dir.with_extension("moved");
    std::fs::rename(&h.audit_dir, &moved).unwrap();
    std::fs::write(&h.audit_dir, b"not a directory").unwrap();

    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 503, "{:?}", a.json());
    assert_eq!(a.code(), "auditUnavailable");
    assert!(a.is_problem());
    assert_eq!(h.registry.seen_count(), before, "nothing forwarded");
    let a = h.brp(&h.emp042(), None, &q).await;
    assert_eq!(
        a.status, 503,
        "a deny is not sent without its record either"
    );
    let a = h
        .send("POST", "/haalcentraal/api/brp/personen", &[], Some("{}"))
        .await;
    assert_eq!(a.status, 503, "even a 401 needs its record");

    // The directory comes back: service resumes by itself with the chain intact.
    std::fs::remove_file(&h.audit_dir).unwrap();
    std::fs::rename(&moved, &h.audit_dir).unwrap();
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let seqs: Vec<u64> = h
        .records()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .args(["audit", "verify", "--dir"])
        .arg(&h.audit_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn client_credentials_and_identity_headers_never_reach_the_upstream() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.emp042());
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-case-id", "Z-OPEN"),
                ("cookie", "session=abc"),
                ("x-gebruiker", "someone-else"),
                ("x-api-key", "client-supplied"),
                ("x-request-id", "client-chosen-id"),
                ("forwarded", "for=1.2.3.4"),
                ("x-forwarded-for", "1.2.3.4"),
                ("x-doelbinding", "PV-parkeren"),
                ("x-verwerking", "verwerking-42"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let seen = h.registry.last_seen().unwrap();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("x-gebruiker"), None);
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-forwarded-for"), None);
    assert_eq!(
        seen.header("x-api-key"),
        Some("upstream-secret"),
        "configured credential"
    );
    let rid = a.headers["x-request-id"].to_str().unwrap();
    assert_ne!(rid, "client-chosen-id");
    assert_eq!(seen.header("x-request-id"), Some(rid));
    assert_eq!(uuid::Uuid::parse_str(rid).unwrap().get_version_num(), 7);
    assert_eq!(seen.header("x-doelbinding"), Some("PV-parkeren"));
    assert_eq!(seen.header("x-verwerking"), Some("verwerking-42"));
    let tp = seen.header("traceparent").unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    // The query decided on is the query forwarded, with the field the release decision needs
    // (who each person in the answer is) added.
    let forwarded: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        forwarded,
        raadpleeg(&["999993653"], &["naam", "burgerservicenummer"]),
        "the body decided on is the body forwarded"
    );
    // The answer holds only what was asked: the added field is removed again.
    assert!(a.json()["personen"][0].get("burgerservicenummer").is_none());
    assert!(a.json()["personen"][0].get("naam").is_some());
    // A query that asks for the BSN itself is forwarded byte for byte.
    let body = raadpleeg(&["999993653"], &["burgerservicenummer", "naam"]).to_string();
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-case-id", "Z-OPEN"),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(
        h.registry.last_seen().unwrap().body.as_ref(),
        body.as_bytes()
    );
    assert_eq!(a.json()["personen"][0]["burgerservicenummer"], "999993653");
    let d = h.record_of(rid, "decision");
    assert_eq!(d["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(d["purpose"]["doelbinding"], "PV-parkeren");
    assert_eq!(d["purpose"]["verwerking"], "verwerking-42");
    assert_eq!(d["request"]["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn upstream_down_gives_502_with_an_outcome_record() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let h = Harness::start_with(Options {
        upstream_url: Some(url),
        ..Options::default()
    })
    .await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 502);
    assert_eq!(a.code(), "upstreamUnavailable");
    let rid = a.request_id();
    let recs = h.records_of(&rid);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["decision"], "allow");
    assert_eq!(recs[1]["kind"], "outcome");
    assert_eq!(recs[1]["status"], 502);
    assert_eq!(recs[1]["disclosed"], serde_json::json!([]));
}

#[tokio::test]
async fn hanging_upstream_gives_504_with_an_outcome_record() {
    // A listener that accepts and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let h = Harness::start_with(Options {
        upstream_url: Some(url),
        ..Options::default()
    })
    .await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 504);
    assert_eq!(a.code(), "upstreamTimeout");
    let rid = a.request_id();
    let o = h.record_of(&rid, "outcome");
    assert_eq!(o["status"], 504);
    hold.abort();
}

#[tokio::test]
async fn restart_recovers_a_torn_tail_and_continues_the_chain() {
    let audit = tempfile::tempdir().unwrap();
    let opts = || Options {
        audit_dir: Some(audit.path().to_path_buf()),
        ..Options::default()
    };
    let mut h = Harness::start_with(opts()).await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200);
    h.stop().await;
    let n_before = read_records(audit.path()).len();
    assert_eq!(n_before, 2);
    // A crash in the middle of a write leaves half a line.
    let mut segs: Vec<_> = std::fs::read_dir(audit.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":3,\"time\":\"2026-").unwrap();
    drop(f);

    let h = Harness::start_with(opts()).await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200);
    let recs = read_records(audit.path());
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .args(["audit", "verify", "--dir"])
        .arg(audit.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn oversized_body_is_refused_with_413_and_recorded() {
    let h = Harness::start().await;
    let big = format!(
        "{{\"type\":\"RaadpleegMetBurgerservicenummer\",\"fields\":[\"naam\"],\"burgerservicenummer\":[\"999993653\"],\"x\":\"{}\"}}",
        "a".repeat(200 * 1024)
    );
    let auth = format!("Bearer {}", h.emp042());
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
            Some(&big),
        )
        .await;
    assert_eq!(a.status, 413);
    assert_eq!(a.code(), "bodyTooLarge");
    assert_eq!(h.registry.seen_count(), 0);
}

#[tokio::test]
async fn a_new_case_in_the_case_file_is_used_without_a_restart() {
    let h = Harness::start().await;
    let q = raadpleeg(&["999993872"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-NEW"), &q).await;
    assert_eq!(a.code(), "caseNotFound");
    let mut cases = common::test_cases();
    let mut new_case = cases["cases"][0].clone();
    new_case["id"] = "Z-NEW".into();
    new_case["subjects"] = serde_json::json!(["999993872"]);
    cases["cases"].as_array_mut().unwrap().push(new_case);
    std::fs::write(h.tmp.path().join("cases.json"), cases.to_string()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let a = h.brp(&h.emp042(), Some("Z-NEW"), &q).await;
        if a.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new case was never picked up: {:?}",
            a.json()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A broken case file keeps the cases that were loaded.
    std::fs::write(h.tmp.path().join("cases.json"), "{ broken").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let a = h.brp(&h.emp042(), Some("Z-NEW"), &q).await;
    assert_eq!(a.status, 200);
}
