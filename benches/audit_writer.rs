//! Durable records per second of the audit writer (group commit) with 1, 16 and 256
//! concurrent appenders, each appending one decision record at a time, on a temp directory.
//! Every counted record was acknowledged only after its batch's fdatasync returned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use purpose_gate::audit::{AuditLog, AuditOptions};

#[path = "common/mod.rs"]
mod common;
use common::decision;

fn durable_appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("audit_writer");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for appenders in [1u64, 16, 256] {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&AuditOptions {
            dir: dir.path().to_path_buf(),
            segment_max_bytes: 64 * 1024 * 1024,
            max_batch: 4096,
        })
        .unwrap();
        group.bench_with_input(
            BenchmarkId::new("appenders", appenders),
            &appenders,
            |b, &appenders| {
                b.iter_custom(|records| {
                    let per_task = records.div_ceil(appenders);
                    runtime.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..appenders)
                            .map(|t| {
                                let log = log.clone();
                                tokio::spawn(async move {
                                    for i in 0..per_task {
                                        log.append(vec![decision(t * per_task + i)]).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.unwrap();
                        }
                        // Time per record: scale to the records actually appended.
                        start
                            .elapsed()
                            .mul_f64(records as f64 / (per_task * appenders) as f64)
                    })
                });
            },
        );
        runtime.block_on(log.close());
    }
    group.finish();
}

/// Bytes per second of `verify` (parse + chain check of every line) over a log of 100,000
/// decision records, read from the page cache.
fn verify_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let log = AuditLog::open(&AuditOptions {
            dir: dir.path().to_path_buf(),
            segment_max_bytes: 16 * 1024 * 1024,
            max_batch: 4096,
        })
        .unwrap();
        for chunk in 0..100u64 {
            log.append((0..1000).map(|i| decision(chunk * 1000 + i)).collect())
                .await
                .unwrap();
        }
        log.close().await;
    });
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("100k_records", |b| {
        b.iter(|| {
            let summary = purpose_gate::audit::verify(dir.path()).unwrap();
            assert_eq!(summary.records, 100_000);
        })
    });
    group.finish();
}

criterion_group!(benches, durable_appends, verify_throughput);
criterion_main!(benches);
