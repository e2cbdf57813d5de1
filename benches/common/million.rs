//! The auditor benches' log: 500,000 requests (a decision and an outcome each), 10,000
//! distinct persons, 200 employees, 5,000 cases, checkpoints every 10,000 records, written
//! through the real writer in large batches. Shared by `audit_query` and `console`, and by
//! `tests/cli.rs` (a log larger than a pipe buffers).
// Included with `#[path]` by each bench crate; not every bench uses every item.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use purpose_gate::audit::checkpoint::{CheckpointOptions, NoteSigner};
use purpose_gate::audit::{
    AuditLog, AuditOptions, DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal,
    PurposeRecord, RecordBody, RequestRecord, ResourceRef, Verdict,
};

/// The checkpoint key of the bench log.
pub fn checkpoint_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

/// The BSN looked up by request `i`.
pub fn bsn(i: u64) -> String {
    format!("{:09}", 100_000_000 + (i * 7919) % 10_000)
}

/// The two records of request `i`.
pub fn request(i: u64) -> Vec<RecordBody> {
    let request_id = format!("0190f3a2-7c4e-7b1a-9d2e-{i:012}");
    let subject = bsn(i);
    vec![
        RecordBody::Decision(Box::new(DecisionRecord {
            time: "2026-03-01T09:15:00.123Z".into(),
            kind: DecisionKind::Decision,
            gate: "gate-1".into(),
            request_id: request_id.clone(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: None,
            client_span_id: None,
            principal: Some(Principal {
                id: format!("emp-{:03}", i % 200),
                org: "0363".into(),
                roles: vec!["handhaver".into()],
                department: None,
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

/// Writes `records` records to `dir`; returns the checkpoint key.
pub fn write_log(dir: &std::path::Path, records: u64) -> SigningKey {
    let key = checkpoint_key();
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
