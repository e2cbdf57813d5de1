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

#[path = "common/million.rs"]
mod million;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use million::{bsn, checkpoint_key, write_log};
use purpose_gate::audit::integrity::verify_log;
use purpose_gate::audit::query::{Filter, query};

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
        checkpoint_key()
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
