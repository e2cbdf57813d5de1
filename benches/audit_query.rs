//! Auditor tooling over a 1,000,000-record log (500,000 requests: a decision and an outcome
//! each, 10,000 distinct persons, checkpoints every 10,000 records): `audit query --subject`
//! (target ≤ 1 s), `audit query --employee`, and `audit verify` with checkpoints (target
//! ≥ 100 MB/s). The log is written once through the real writer (with large batches).
//!
//! `AUDIT_BENCH_RECORDS` overrides the record count (e.g. for a quick run). With
//! `AUDIT_BENCH_DIR=DIR` the log is written to `DIR/audit` (reused when it exists) and kept, with
//! the checkpoints' public key in `DIR/checkpoint.pub.pem`, so that the binary can be timed on
//! the same log: `time purpose-gate audit verify --dir DIR/audit --pubkey DIR/checkpoint.pub.pem`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use purpose_gate::audit::checkpoint::{CheckpointOptions, NoteSigner};
use purpose_gate::audit::integrity::verify_log;
use purpose_gate::audit::query::{Filter, query};
use purpose_gate::audit::{
    AuditLog, AuditOptions, DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal,
    PurposeRecord, RecordBody, RequestRecord, ResourceRef, Verdict,
};

fn bsn(i: u64) -> String {
    format!("{:09}", 100_000_000 + (i * 7919) % 10_000)
}

fn request(i: u64) -> Vec<RecordBody> {
    let request_id = format!("0190f3a2-7c4e-7b1a-9d2e-{i:012}");
    let subject = bsn(i);
    vec![
        RecordBody::Decision(Box::new(DecisionRecord {
            time: "2026-03-01T09:15:00.123Z".into(),
            kind: DecisionKind::Decision,
            gate: "gate-1".into(),
            request_id: request_id.clone(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            principal: Some(Principal {
                id: format!("emp-{:03}", i % 200),
                org: "0363".into(),
                roles: vec!["handhaver".into()],
            }),
            action: Some("brp:lookup".into()),
            resource: Some(ResourceRef {
                kind: "Person".into(),
                id: subject.clone(),
            }),
            case_id: Some(format!("Z-2026-{:06}", i % 5000)),
            case_url: None,
            purpose: PurposeRecord {
                doelbinding: Some("BRPACT-Toezicht".into()),
                verwerking: Some("Handhaving".into()),
                break_glass: false,
                reason: None,
            },
            fields: vec!["naam".into(), "verblijfplaats".into()],
            decision: Verdict::Allow,
            code: None,
            policies: vec!["permit-case-handler".into()],
            reasons: vec![],
            errors: vec![],
            request: RequestRecord {
                method: "POST".into(),
                path: "/haalcentraal/api/brp/personen".into(),
                client_ip: Some("10.0.0.7".into()),
            },
            policy_version: Some("sha256:0f1e2d3c".into()),
            inputs: None,
        })),
        RecordBody::Outcome(OutcomeRecord {
            release: Vec::new(),
            time: "2026-03-01T09:15:00.140Z".into(),
            kind: OutcomeKind::Outcome,
            request_id,
            status: 200,
            upstream_ms: 17,
            disclosed: vec![ResourceRef {
                kind: "Person".into(),
                id: subject,
            }],
            code: None,
            upstream_status: None,
            fsc_transaction_id: None,
        }),
    ]
}

fn write_log(dir: &std::path::Path, records: u64) -> SigningKey {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = AuditLog::open_with_checkpoints(
            &AuditOptions {
                dir: dir.to_path_buf(),
                segment_max_bytes: 64 * 1024 * 1024,
                max_batch: 8192,
            },
            CheckpointOptions {
                signer: NoteSigner::new("bench.example/audit", key.clone()).unwrap(),
                every: 10_000,
                interval: Duration::ZERO,
            },
        )
        .unwrap();
        let mut i = 0;
        while i * 2 < records {
            let mut batch = Vec::with_capacity(2000);
            for _ in 0..1000 {
                batch.extend(request(i));
                i += 1;
            }
            log.append(batch).await.unwrap();
        }
        log.close().await;
    });
    key
}

fn auditor(c: &mut Criterion) {
    let records: u64 = std::env::var("AUDIT_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("AUDIT_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &kept {
        Some(d) => d.join("audit"),
        None => tmp.path().to_path_buf(),
    };
    let key = if dir.join("audit-000001.jsonl").exists() {
        SigningKey::from_bytes(&[42u8; 32])
    } else {
        write_log(&dir, records)
    };
    if let Some(d) = &kept {
        use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(d.join("checkpoint.pub.pem"), pem).unwrap();
    }
    let bytes: u64 = std::fs::read_dir(dir.as_path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    let mut group = c.benchmark_group("audit_query");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(records));
    let subject = Filter {
        subject: Some(bsn(12_345)),
        ..Filter::default()
    };
    group.bench_function("by_subject", |b| {
        b.iter(|| {
            let r = query(dir.as_path(), &subject).unwrap();
            assert!(!r.rows.is_empty());
        })
    });
    let employee = Filter {
        employee: Some("emp-017".into()),
        ..Filter::default()
    };
    group.bench_function("by_employee", |b| {
        b.iter(|| {
            let r = query(dir.as_path(), &employee).unwrap();
            assert!(!r.rows.is_empty());
        })
    });
    group.throughput(Throughput::Bytes(bytes));
    let public = key.verifying_key();
    group.bench_function("verify_with_checkpoints", |b| {
        b.iter(|| {
            let s = verify_log(dir.as_path(), Some(&public)).unwrap();
            assert!(s.checkpoints > 0);
        })
    });
    group.finish();
}

criterion_group!(benches, auditor);
criterion_main!(benches);
