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

/// User + system CPU ticks of this process and of every `postgres` process (`/proc/*/stat`).
fn cpu_ticks() -> (u64, u64) {
    fn ticks(stat: &str) -> Option<(String, u64)> {
        let (head, rest) = stat.rsplit_once(") ")?;
        let comm = head.split_once(" (")?.1.to_string();
        let f: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after `comm`.
        Some((
            comm,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    }
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map_or(0, |(_, t)| t);
    let mut pg = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(s) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((comm, t)) = ticks(&s)
            && comm == "postgres"
        {
            pg += t;
        }
    }
    (own, pg)
}

/// The shipper's per-line work before the store: the columns of each line in one pass (as read
/// back from a segment), by the scan of a line handed over by the writer, and through the audit
/// parser, over the first 200,000 lines of the log.
fn extract_columns(dir: &std::path::Path) {
    const SAMPLE: usize = 200_000;
    let mut lines = Vec::new();
    for (_, path) in purpose_gate::audit::list_segment_files(dir).unwrap() {
        let text = std::fs::read(path).unwrap();
        lines.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .take(SAMPLE - lines.len())
                .map(<[u8]>::to_vec),
        );
        if lines.len() == SAMPLE {
            break;
        }
    }
    let n = lines.len() as f64;
    let t = Instant::now();
    for l in &lines {
        std::hint::black_box(store::ship::ShipLine::new(l.clone()).unwrap());
    }
    let one_pass = t.elapsed().as_secs_f64() * 1e6 / n;
    let t = Instant::now();
    for l in &lines {
        std::hint::black_box(store::ship::ShipLine::parsed(l.clone()).unwrap());
    }
    let parser = t.elapsed().as_secs_f64() * 1e6 / n;
    let handed: Vec<(bytes::Bytes, [u8; 32])> = lines
        .iter()
        .map(|l| (bytes::Bytes::from(l.clone()), store::ship::line_hash(l)))
        .collect();
    let t = Instant::now();
    for (l, hash) in &handed {
        std::hint::black_box(store::ship::ShipLine::framed(l.clone(), *hash).unwrap());
    }
    let scan = t.elapsed().as_secs_f64() * 1e6 / n;
    println!(
        "columns of a line: {one_pass:.2} µs in one pass (with its SHA-256, as read back from a segment), \
         {scan:.2} µs by the scan of a line the writer handed over (its SHA-256 handed over too), \
         {parser:.2} µs through the audit parser ({n} lines)"
    );
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
    if !reuse {
        extract_columns(tmp.path());
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
            let before = cpu_ticks();
            let (n, at) = store::ship::ship_dir(&pool, "gate-1", tmp.path(), 5000, |_| {})
                .await
                .unwrap();
            let took = started.elapsed();
            let after = cpu_ticks();
            assert_eq!(n, at.seq);
            // Clock ticks are 1/100 s on Linux (`getconf CLK_TCK`).
            let per_record = |t: u64| t as f64 * 10_000.0 / n as f64;
            println!(
                "ship: {n} records in {:.2} s = {:.0} records/s (batches of 5000); CPU per record: \
                 shipper {:.1} µs, PostgreSQL {:.1} µs",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64(),
                per_record(after.0 - before.0),
                per_record(after.1 - before.1),
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
