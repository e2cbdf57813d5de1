//! Shipping into the central store: records/s from an audit directory into PostgreSQL (the
//! shipper's transaction, as `audit ship` runs it), and `audit query --db --subject` over what
//! was shipped. Needs a PostgreSQL: `STORE_BENCH_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench --bench store_ship` (a database `pg_bench_ship` is dropped and created there).
//! `STORE_BENCH_RECORDS` sets the log size (default 200,000). Figures: BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use purpose_gate::audit::{
    AuditLog, AuditOptions, DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal,
    PurposeRecord, RecordBody, RequestRecord, ResourceRef, Verdict,
};
use purpose_gate::store;

fn bsn(i: u64) -> String {
    format!("{:09}", 100_000_000 + (i * 7919) % 10_000)
}

fn request(i: u64) -> Vec<RecordBody> {
    let request_id = format!("0190f3a2-7c4e-7b1a-9d2e-{i:012}");
    let subject = bsn(i);
    vec![
        RecordBody::Decision(Box::new(DecisionRecord {
            inputs: None,
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

fn write_log(dir: &std::path::Path, records: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = AuditLog::open(&AuditOptions {
            dir: dir.to_path_buf(),
            segment_max_bytes: 64 * 1024 * 1024,
            max_batch: 8192,
        })
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
}

fn main() {
    let Ok(base) = std::env::var("STORE_BENCH_URL") else {
        eprintln!("store_ship: set STORE_BENCH_URL to a PostgreSQL URL to run this benchmark");
        return;
    };
    let records: u64 = std::env::var("STORE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), records);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        admin
            .batch_execute("DROP DATABASE IF EXISTS pg_bench_ship WITH (FORCE)")
            .await
            .unwrap();
        admin
            .batch_execute("CREATE DATABASE pg_bench_ship")
            .await
            .unwrap();
        let (prefix, _) = base.rsplit_once('/').unwrap();
        let url = format!("{prefix}/pg_bench_ship");
        let pool = store::pool(&store::StoreConfig::from_url(&url)).unwrap();
        store::schema::migrate(&mut pool.get().await.unwrap())
            .await
            .unwrap();
        let started = Instant::now();
        let (n, at) = store::ship::ship_dir(&pool, "gate-1", tmp.path(), 5000, |_| {})
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(n, at.seq);
        println!(
            "ship: {n} records in {:.2} s = {:.0} records/s (batches of 5000)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        let client = pool.get().await.unwrap();
        client.batch_execute("ANALYZE").await.unwrap();
        let filter = purpose_gate::audit::query::Filter {
            subject: Some(bsn(4242)),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let r = store::query::query_store(&client, &filter, None)
                .await
                .unwrap();
            times.push(t.elapsed());
            rows = r.iter().map(|(_, q)| q.rows.len()).sum::<usize>();
        }
        times.sort();
        let median: Duration = times[times.len() / 2];
        println!(
            "query --db --subject: {rows} rows over {n} records, median {:.1} ms of 7",
            median.as_secs_f64() * 1000.0
        );
    });
}
