//! Signed checkpoints, `audit verify --pubkey`, `audit prove` and `audit check-proof`: tamper
//! tests for every kind of alteration, and an inclusion proof checked by an independent
//! RFC 6962 verifier written here (only `sha2`, `base64` and `ed25519-dalek`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use purpose_gate::audit::checkpoint::{CheckpointOptions, NoteSigner, keygen, load_verifying_key};
use purpose_gate::audit::integrity::{InclusionProof, check_proof, prove, verify_log};
use purpose_gate::audit::{
    AuditLog, AuditOptions, DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal,
    PurposeRecord, RecordBody, RequestRecord, ResourceRef, Verdict,
};
use sha2::{Digest, Sha256};

fn decision(request_id: &str, bsn: &str) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        time: "2026-03-01T09:15:00.000Z".into(),
        kind: DecisionKind::Decision,
        gate: "gate-1".into(),
        request_id: request_id.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: "emp-042".into(),
            org: "0363".into(),
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
        purpose: PurposeRecord::default(),
        fields: vec!["naam".into()],
        decision: Verdict::Allow,
        code: None,
        policies: vec!["permit-case-handler".into()],
        reasons: vec![],
        errors: vec![],
        request: RequestRecord {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            client_ip: None,
        },
        policy_version: None,
        inputs: None,
    }))
}

fn outcome(request_id: &str, bsn: &str) -> RecordBody {
    RecordBody::Outcome(OutcomeRecord {
        release: Vec::new(),
        time: "2026-03-01T09:15:01.000Z".into(),
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

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    keys: PathBuf,
    public: PathBuf,
}

/// A log of 20 requests (40 records) with a checkpoint every 8 records and one at close,
/// spread over several segments.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let (private, public) = keygen(&keys).unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open_with_checkpoints(
        &AuditOptions {
            dir: dir.clone(),
            segment_max_bytes: 4000,
            max_batch: 64,
        },
        CheckpointOptions {
            signer: NoteSigner::load(&private, "test.example/audit").unwrap(),
            every: 8,
            interval: Duration::ZERO,
        },
    )
    .unwrap();
    for i in 0..20 {
        let id = format!("req-{i}");
        log.append(vec![decision(&id, "999993653")]).await.unwrap();
        log.append(vec![outcome(&id, "999993653")]).await.unwrap();
    }
    log.close().await;
    Fixture {
        _tmp: tmp,
        dir,
        keys,
        public,
    }
}

/// All lines of the log in order, with their segment file.
fn lines(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            out.push((f.clone(), l.to_string()));
        }
    }
    out
}

/// Rewrites the log from `lines`, renumbering `seq` and recomputing every `prev`: what an
/// attacker with write access but without the signing key can do.
fn rewrite_rechained(dir: &Path, lines: &[(PathBuf, String)]) {
    let mut prev = "0".repeat(64);
    let mut by_file: Vec<(PathBuf, String)> = Vec::new();
    for (i, (file, line)) in lines.iter().enumerate() {
        let body_start = line.find(',').unwrap();
        let body_end = line.rfind(",\"prev\":\"").unwrap();
        let new = format!(
            "{{\"seq\":{}{},\"prev\":\"{prev}\"}}",
            i + 1,
            &line[body_start..body_end]
        );
        prev = hex::encode(Sha256::digest(new.as_bytes()));
        match by_file.last_mut() {
            Some((f, text)) if f == file => {
                text.push_str(&new);
                text.push('\n');
            }
            _ => by_file.push((file.clone(), format!("{new}\n"))),
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            std::fs::remove_file(p).unwrap();
        }
    }
    for (file, text) in by_file {
        std::fs::write(file, text).unwrap();
    }
}

fn verify_message(f: &Fixture) -> String {
    let key = load_verifying_key(&f.public).unwrap();
    verify_log(&f.dir, Some(&key)).unwrap_err().message
}

fn record_lines(f: &Fixture) -> Vec<(PathBuf, String)> {
    lines(&f.dir)
}

#[tokio::test]
async fn intact_log_with_checkpoints_verifies_with_signatures() {
    let f = fixture().await;
    let key = load_verifying_key(&f.public).unwrap();
    let summary = verify_log(&f.dir, Some(&key)).unwrap();
    assert!(summary.signatures_checked);
    // 40 records + 5 checkpoint records (after 8 records each, and one at close).
    assert_eq!(summary.records, 45);
    assert!(summary.checkpoints >= 5, "{summary:?}");
    assert!(summary.segments > 1, "{summary:?}");
    let (size, note) = summary.latest.unwrap();
    assert_eq!(size, 44, "the close checkpoint covers everything before it");
    assert!(note.starts_with("test.example/audit\n44\n"), "{note}");
    // Every checkpoint record names a file and covers fewer records than its own seq.
    let cps: Vec<serde_json::Value> = lines(&f.dir)
        .iter()
        .map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "checkpoint")
        .collect();
    assert_eq!(cps.len(), 5);
    for cp in &cps {
        assert!(cp["tree_size"].as_u64().unwrap() < cp["seq"].as_u64().unwrap());
        assert!(f.dir.join(cp["file"].as_str().unwrap()).is_file());
    }
}

#[tokio::test]
async fn edited_record_is_detected_by_the_chain() {
    let f = fixture().await;
    let all = record_lines(&f);
    let (file, _) = &all[3];
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(file, text.replacen("\"req-1\"", "\"req-X\"", 1)).unwrap();
    let key = load_verifying_key(&f.public).unwrap();
    let failure = verify_log(&f.dir, Some(&key)).unwrap_err();
    assert_eq!(failure.seq, Some(4), "{failure}");
}

#[tokio::test]
async fn edited_record_with_recomputed_chain_is_detected_by_the_signed_root() {
    let f = fixture().await;
    let mut all = record_lines(&f);
    all[2].1 = all[2].1.replace("999993653", "999990639");
    rewrite_rechained(&f.dir, &all);
    // The chain alone is fooled ...
    assert!(purpose_gate::audit::verify(&f.dir).is_ok());
    // ... the checkpoints are not.
    let message = verify_message(&f);
    assert!(
        message.contains("does not match the records 1..=8"),
        "{message}"
    );
}

#[tokio::test]
async fn deleted_record_with_recomputed_chain_is_detected() {
    let f = fixture().await;
    let mut all = record_lines(&f);
    all.remove(5);
    rewrite_rechained(&f.dir, &all);
    // The first checkpoint record moved to seq 8 but still claims 8 records before it.
    let message = verify_message(&f);
    assert!(message.starts_with("checkpoint record seq 8"), "{message}");
}

#[tokio::test]
async fn inserted_record_with_recomputed_chain_is_detected() {
    let f = fixture().await;
    let mut all = record_lines(&f);
    let copy = all[1].clone();
    all.insert(1, copy);
    rewrite_rechained(&f.dir, &all);
    let message = verify_message(&f);
    assert!(message.contains("does not match the records"), "{message}");
}

#[tokio::test]
async fn reordered_records_are_detected() {
    let f = fixture().await;
    let mut all = record_lines(&f);
    // Without re-chaining: the chain breaks at the first moved record.
    let (file, _) = all[1].clone();
    all.swap(1, 2);
    let text: String = all
        .iter()
        .filter(|(p, _)| *p == file)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&file, text).unwrap();
    let key = load_verifying_key(&f.public).unwrap();
    assert_eq!(verify_log(&f.dir, Some(&key)).unwrap_err().seq, Some(2));
    // With re-chaining: the signed root.
    rewrite_rechained(&f.dir, &all);
    let message = verify_message(&f);
    assert!(message.contains("does not match the records"), "{message}");
}

#[tokio::test]
async fn truncation_before_the_last_checkpoint_is_detected() {
    let f = fixture().await;
    let all = record_lines(&f);
    // Cut the log after record 30: still a valid chain, but checkpoints cover up to 44.
    rewrite_rechained(&f.dir, &all[..30]);
    assert!(purpose_gate::audit::verify(&f.dir).is_ok());
    let message = verify_message(&f);
    assert!(
        message.contains("log truncated") && message.contains("only 30"),
        "{message}"
    );
}

#[tokio::test]
async fn forged_checkpoint_fails_the_signature_and_the_root() {
    let f = fixture().await;
    let path = f.dir.join("checkpoints/000000000008.ckpt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut parts: Vec<String> = text.split('\n').map(str::to_string).collect();
    parts[2] = B64.encode([0u8; 32]);
    std::fs::write(&path, parts.join("\n")).unwrap();
    let message = verify_message(&f);
    assert!(message.contains("no valid signature"), "{message}");
    // Without the key the root still gives it away.
    let failure = verify_log(&f.dir, None).unwrap_err();
    assert!(failure.message.contains("does not match"), "{failure}");
}

#[tokio::test]
async fn missing_checkpoint_file_and_wrong_key_are_reported() {
    let f = fixture().await;
    let other = keygen(&f.keys.join("other")).unwrap().1;
    let other = load_verifying_key(&other).unwrap();
    assert!(
        verify_log(&f.dir, Some(&other))
            .unwrap_err()
            .message
            .contains("no valid signature")
    );
    std::fs::remove_file(f.dir.join("checkpoints/000000000017.ckpt")).unwrap();
    let failure = verify_log(&f.dir, None).unwrap_err();
    assert!(
        failure
            .message
            .contains("`checkpoints/000000000017.ckpt` is missing"),
        "{failure}"
    );
    assert_eq!(failure.seq, Some(18));
}

#[tokio::test]
async fn writer_reopened_continues_the_tree() {
    let f = fixture().await;
    let private = f.keys.join("checkpoint-signing-key.pem");
    let log = AuditLog::open_with_checkpoints(
        &AuditOptions {
            dir: f.dir.clone(),
            segment_max_bytes: 4000,
            max_batch: 64,
        },
        CheckpointOptions {
            signer: NoteSigner::load(&private, "test.example/audit").unwrap(),
            every: 1000,
            interval: Duration::ZERO,
        },
    )
    .unwrap();
    log.append(vec![decision("late", "999991802")])
        .await
        .unwrap();
    log.close().await;
    let key = load_verifying_key(&f.public).unwrap();
    let summary = verify_log(&f.dir, Some(&key)).unwrap();
    assert_eq!(summary.latest.unwrap().0, 46);
}

// ---- An independent RFC 6962 verifier (RFC 9162 §2.1.3.2), written from the RFC. ----

fn h_node(l: &[u8], r: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().to_vec()
}

fn independent_root_from_path(
    index: u64,
    size: u64,
    leaf: Vec<u8>,
    path: &[Vec<u8>],
) -> Option<Vec<u8>> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, leaf);
    for p in path {
        if snode == 0 {
            return None;
        }
        if fnode % 2 == 1 || fnode == snode {
            r = h_node(p, &r);
            while fnode % 2 == 0 && fnode != 0 {
                fnode /= 2;
                snode /= 2;
            }
        } else {
            r = h_node(&r, p);
        }
        fnode /= 2;
        snode /= 2;
    }
    (snode == 0).then_some(r)
}

fn independent_check(proof: &serde_json::Value, public: &ed25519_dalek::VerifyingKey) -> bool {
    let note = proof["checkpoint"].as_str().unwrap();
    let (body, sigs) = note.split_once("\n\n").unwrap();
    let body = format!("{body}\n");
    let mut body_lines = body.lines();
    let origin = body_lines.next().unwrap();
    let size: u64 = body_lines.next().unwrap().parse().unwrap();
    let root = B64.decode(body_lines.next().unwrap()).unwrap();
    // Signature: "— <name> base64(keyid || sig)".
    let sig_line = sigs.lines().next().unwrap();
    let rest = sig_line.strip_prefix("\u{2014} ").unwrap();
    let (name, blob) = rest.rsplit_once(' ').unwrap();
    assert_eq!(name, origin);
    let blob = B64.decode(blob).unwrap();
    let mut id_input = format!("{name}\n").into_bytes();
    id_input.push(1);
    id_input.extend_from_slice(public.as_bytes());
    if blob[..4] != Sha256::digest(&id_input)[..4] {
        return false;
    }
    let sig = ed25519_dalek::Signature::from_slice(&blob[4..]).unwrap();
    if public.verify_strict(body.as_bytes(), &sig).is_err() {
        return false;
    }
    assert_eq!(proof["tree_size"].as_u64().unwrap(), size);
    let mut leaf = Sha256::new();
    leaf.update([0u8]);
    leaf.update(proof["line"].as_str().unwrap().as_bytes());
    let path: Vec<Vec<u8>> = proof["audit_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| B64.decode(p.as_str().unwrap()).unwrap())
        .collect();
    independent_root_from_path(
        proof["leaf_index"].as_u64().unwrap(),
        size,
        leaf.finalize().to_vec(),
        &path,
    ) == Some(root)
}

#[tokio::test]
async fn every_proof_verifies_with_the_crate_and_an_independent_verifier() {
    let f = fixture().await;
    let key = load_verifying_key(&f.public).unwrap();
    for seq in 1..=44u64 {
        let proof = prove(&f.dir, seq).unwrap();
        assert_eq!(proof.tree_size, 44);
        assert!(proof.line.starts_with(&format!("{{\"seq\":{seq},")));
        check_proof(&proof, &key).unwrap();
        let json = serde_json::to_value(&proof).unwrap();
        assert!(independent_check(&json, &key), "seq {seq}");
        // A changed line no longer verifies, with either verifier.
        let mut forged = proof.clone();
        forged.line = forged.line.replacen("2026", "2025", 1);
        assert!(check_proof(&forged, &key).is_err());
        let json = serde_json::to_value(&forged).unwrap();
        assert!(!independent_check(&json, &key), "seq {seq}");
    }
    assert!(
        prove(&f.dir, 45).is_err(),
        "seq 45 is after the latest checkpoint"
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
}

#[tokio::test]
async fn cli_keygen_verify_prove_and_check_proof() {
    let f = fixture().await;
    let out = tempfile::tempdir().unwrap();
    let keygen = bin()
        .args(["audit", "keygen", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(keygen.status.success());
    assert!(out.path().join("checkpoint-signing-key.pem").is_file());

    let verify = bin()
        .args(["audit", "verify", "--dir"])
        .arg(&f.dir)
        .arg("--pubkey")
        .arg(&f.public)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("signatures valid"), "{stdout}");

    let prove = bin()
        .args(["audit", "prove", "--dir"])
        .arg(&f.dir)
        .args(["--seq", "7"])
        .output()
        .unwrap();
    assert_eq!(prove.status.code(), Some(0));
    let proof_file = out.path().join("proof.json");
    std::fs::write(&proof_file, &prove.stdout).unwrap();
    let parsed: InclusionProof = serde_json::from_slice(&prove.stdout).unwrap();
    assert_eq!(parsed.seq, 7);

    let check = bin()
        .args(["audit", "check-proof"])
        .arg(&proof_file)
        .arg("--pubkey")
        .arg(&f.public)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let wrong_key = bin()
        .args(["audit", "check-proof"])
        .arg(&proof_file)
        .arg("--pubkey")
        .arg(out.path().join("checkpoint-signing-key.pub.pem"))
        .output()
        .unwrap();
    assert_eq!(wrong_key.status.code(), Some(1));

    let usage = bin()
        .args(["audit", "prove", "--dir"])
        .arg(&f.dir)
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));

    // Truncated below the last checkpoint: exit 1 naming the checkpoint.
    let all = lines(&f.dir);
    rewrite_rechained(&f.dir, &all[..10]);
    let verify = bin()
        .args(["audit", "verify", "--dir"])
        .arg(&f.dir)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("log truncated"));
}
