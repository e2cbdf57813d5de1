//! The audit log as an outsider sees it: records written through `AuditLog` are checked by an
//! independent verifier written here (files, lines, SHA-256, `serde_json::Value`), and tampering
//! with the files is caught by `audit::verify` at the right seq.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use purpose_gate::audit::{
    AuditLog, AuditOptions, DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal,
    PurposeRecord, RecordBody, RequestRecord, ResourceRef, Verdict, verify,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn decision(request_id: &str, bsn: &str, verdict: Verdict) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        time: "2026-03-01T09:15:00Z".into(),
        kind: DecisionKind::Decision,
        gate: "gate-1".into(),
        request_id: request_id.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: "e123".into(),
            org: "gm0363".into(),
            roles: vec!["handhaver".into()],
            department: None,
        }),
        action: Some("brp:lookup".into()),
        resource: Some(ResourceRef {
            kind: "Person".into(),
            id: bsn.into(),
        }),
        case_id: Some("Z-2026-000123".into()),
        case_url: None,
        purpose: PurposeRecord {
            doelbinding: Some("BRPACT-Toezicht".into()),
            verwerking: None,
            break_glass: false,
            reason: None,
        },
        fields: vec!["naam".into(), "verblijfplaats".into()],
        decision: verdict,
        code: (verdict == Verdict::Deny).then(|| "subjectNotInCase".to_string()),
        policies: vec!["permit-case-handler".into()],
        reasons: vec![],
        errors: vec![],
        request: RequestRecord {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            client_ip: Some("10.0.0.7".into()),
        },
        policy_version: Some("sha256:abc".into()),
        inputs: None,
    }))
}

fn outcome(request_id: &str, bsn: &str) -> RecordBody {
    RecordBody::Outcome(OutcomeRecord {
        release: Vec::new(),
        time: "2026-03-01T09:15:01Z".into(),
        kind: OutcomeKind::Outcome,
        request_id: request_id.into(),
        status: 200,
        upstream_ms: 7,
        disclosed: vec![ResourceRef {
            kind: "Person".into(),
            id: bsn.into(),
        }],
        code: None,
        upstream_status: None,
        fsc_transaction_id: None,
    })
}

/// Writes `requests` requests (decision + outcome each, every third denied without outcome)
/// from concurrent tasks; returns the number of records.
async fn write_log(dir: &Path, segment_max_bytes: u64, requests: usize) -> u64 {
    let log = AuditLog::open(&AuditOptions {
        dir: dir.to_path_buf(),
        segment_max_bytes,
        max_batch: 64,
    })
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..requests {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("req-{i:04}");
            if i % 3 == 2 {
                let seqs = log
                    .append(vec![decision(&id, "999990639", Verdict::Deny)])
                    .await
                    .unwrap();
                return seqs.len() as u64;
            }
            let mut n = log
                .append(vec![decision(&id, "999993653", Verdict::Allow)])
                .await
                .unwrap()
                .len() as u64;
            n += log
                .append(vec![outcome(&id, "999993653")])
                .await
                .unwrap()
                .len() as u64;
            n
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    log.close().await;
    total
}

/// The segment files in order, found by name.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let n = name
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// An independent verifier, as an auditor would write it: no code of the crate.
fn independent_verify(dir: &Path) -> Result<u64, String> {
    let mut prev = "0".repeat(64);
    let mut seq = 0u64;
    for path in segments(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let Some(body) = bytes.strip_suffix(b"\n") else {
            return Err(format!("{} does not end with a newline", path.display()));
        };
        for line in body.split(|b| *b == b'\n') {
            seq += 1;
            let value: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
            if value["seq"] != seq {
                return Err(format!("seq {seq}: found {}", value["seq"]));
            }
            if value["prev"] != prev.as_str() {
                return Err(format!("seq {seq}: prev mismatch"));
            }
            prev = hex::encode(Sha256::digest(line));
        }
    }
    Ok(seq)
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_verifier_accepts_the_written_chain() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 1 << 30, 300).await;
    assert_eq!(written, 500);
    assert_eq!(independent_verify(dir.path()), Ok(written));
    assert_eq!(verify(dir.path()).unwrap().records, written);

    // Every record has the documented fields, seq first and prev last.
    for line in lines_of(&segments(dir.path())[0]) {
        assert!(line.starts_with("{\"seq\":"), "{line}");
        let value: Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        match value["kind"].as_str().unwrap() {
            "decision" => {
                for key in [
                    "seq",
                    "time",
                    "kind",
                    "gate",
                    "request_id",
                    "trace_id",
                    "principal",
                    "action",
                    "resource",
                    "case_id",
                    "purpose",
                    "fields",
                    "decision",
                    "policies",
                    "reasons",
                    "errors",
                    "request",
                    "prev",
                ] {
                    assert!(keys.contains(&key), "missing `{key}` in {line}");
                }
            }
            "outcome" => {
                for key in [
                    "seq",
                    "time",
                    "kind",
                    "request_id",
                    "status",
                    "upstream_ms",
                    "disclosed",
                    "prev",
                ] {
                    assert!(keys.contains(&key), "missing `{key}` in {line}");
                }
            }
            other => panic!("unknown kind `{other}`"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_verifier_accepts_a_chain_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(dir.path(), 8 * 1024, 200).await;
    assert!(segments(dir.path()).len() >= 5);
    assert_eq!(independent_verify(dir.path()), Ok(written));
    let summary = verify(dir.path()).unwrap();
    assert_eq!(summary.records, written);
    assert_eq!(summary.segments, segments(dir.path()).len());
}

async fn small_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&AuditOptions {
        dir: dir.path().to_path_buf(),
        segment_max_bytes: 1 << 30,
        max_batch: 64,
    })
    .unwrap();
    for i in 0..10 {
        let id = format!("req-{i}");
        log.append(vec![decision(&id, "999993653", Verdict::Allow)])
            .await
            .unwrap();
    }
    log.close().await;
    let path = segments(dir.path())[0].clone();
    (dir, path)
}

#[tokio::test]
async fn editing_one_byte_is_detected_at_the_next_seq() {
    let (dir, path) = small_log().await;
    let mut lines = lines_of(&path);
    // Record 5 now names another person; its own bytes still parse.
    lines[4] = lines[4].replace("999993653", "999993654");
    write_lines(&path, &lines);
    let failure = verify(dir.path()).unwrap_err();
    assert_eq!(failure.seq, Some(6), "{failure}");
    assert!(failure.message.contains("line 6"), "{failure}");
    assert!(independent_verify(dir.path()).is_err());
}

#[tokio::test]
async fn deleting_a_line_is_detected_at_its_seq() {
    let (dir, path) = small_log().await;
    let mut lines = lines_of(&path);
    lines.remove(4);
    write_lines(&path, &lines);
    let failure = verify(dir.path()).unwrap_err();
    assert_eq!(failure.seq, Some(5), "{failure}");
    assert!(
        failure.message.contains("expected seq 5, found seq 6"),
        "{failure}"
    );
    assert!(independent_verify(dir.path()).is_err());
}

#[tokio::test]
async fn deleting_the_last_line_keeps_a_valid_shorter_chain() {
    // A hash chain alone cannot tell a truncated log from a shorter one; this documents it
    // (the gate's own logs and the auditor's last known seq cover this case).
    let (dir, path) = small_log().await;
    let mut lines = lines_of(&path);
    lines.pop();
    write_lines(&path, &lines);
    assert_eq!(verify(dir.path()).unwrap().records, 9);
}

#[tokio::test]
async fn swapping_two_lines_is_detected_at_the_first_of_them() {
    let (dir, path) = small_log().await;
    let mut lines = lines_of(&path);
    lines.swap(4, 5);
    write_lines(&path, &lines);
    let failure = verify(dir.path()).unwrap_err();
    assert_eq!(failure.seq, Some(5), "{failure}");
    assert!(independent_verify(dir.path()).is_err());
}

#[tokio::test]
async fn editing_a_line_into_garbage_names_file_and_line() {
    let (dir, path) = small_log().await;
    let mut lines = lines_of(&path);
    lines[2].truncate(20);
    write_lines(&path, &lines);
    let failure = verify(dir.path()).unwrap_err();
    assert_eq!(failure.seq, None);
    assert!(
        failure.message.contains("`audit-000001.jsonl` line 3"),
        "{failure}"
    );
}
