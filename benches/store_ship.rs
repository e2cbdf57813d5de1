//! Shipping into the central store: records/s from an audit directory into PostgreSQL (the
//! shipper's transaction, as `audit ship` runs it), and `audit query --db --subject` over what
//! was shipped. Needs a PostgreSQL: `STORE_BENCH_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench --bench store_ship` (a database `pg_bench_ship` is dropped and created there).
//! `STORE_BENCH_RECORDS` sets the log size (default 200,000). `STORE_BENCH_REUSE=1` skips writing
//! and shipping and times the query over what an earlier run left in `pg_bench_ship`. Figures:
//! BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use purpose_gate::audit::{AuditLog, AuditOptions};
use purpose_gate::store;

#[path = "common/million.rs"]
mod million;
use million::{bsn, request};

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
    let reuse = std::env::var_os("STORE_BENCH_REUSE").is_some();
    let tmp = tempfile::tempdir().unwrap();
    if !reuse {
        write_log(tmp.path(), records);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (prefix, _) = base.rsplit_once('/').unwrap();
        let url = format!("{prefix}/pg_bench_ship");
        let n = if reuse {
            let pool = store::pool(&store::StoreConfig::from_url(&url)).unwrap();
            let client = pool.get().await.unwrap();
            let row = client
                .query_one(
                    "SELECT shipped_seq FROM pg_gates WHERE gate_id = 'gate-1'",
                    &[],
                )
                .await
                .unwrap();
            let n: i64 = row.get(0);
            println!("ship: skipped (STORE_BENCH_REUSE), the store holds {n} records");
            u64::try_from(n).unwrap()
        } else {
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
            n
        };
        let pool = store::pool(&store::StoreConfig::from_url(&url)).unwrap();
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
