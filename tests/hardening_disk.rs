//! Hardening: a full disk under the audit log.
//!
//! The audit directory lives on a 256 KiB tmpfs (`mount -t tmpfs`, needs root; where mounting is
//! not permitted the test prints why and passes without checking). The disk is filled while the
//! gate runs: requests get 503 `auditUnavailable` and nothing is forwarded; when space returns the
//! gate serves again by itself, with `seq` gap-free and `purpose-gate audit verify` passing.
//! The writer's handling of a failed `fdatasync` (never retried on the same data as if it had
//! succeeded) is unit-tested with a fault-injecting store in `crates/audit/src/writer.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Harness, Options, raadpleeg};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut n = 0;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    // Single bytes into the last partial page.
    while f.write_all(&[0]).is_ok() && f.flush().is_ok() {
        n += 1;
        if n % 4096 == 0 {
            break;
        }
    }
    let _ = f.sync_all();
    n
}

fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .args(["audit", "verify", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn full_disk_means_503_nothing_forwarded_and_service_resumes_when_space_returns() {
    let fs = match Tmpfs::mount("256k") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED full-disk test: {why}");
            return;
        }
    };
    let audit_dir = fs.dir.join("audit");
    let h = Harness::start_with(Options {
        audit_dir: Some(audit_dir.clone()),
        // Small segments, so rotation (a new file) happens on the full disk too.
        audit_extra: "segment_max_bytes = 16384".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());

    let filler = fs.dir.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);

    // The last page of a segment may still hold a record or two; after that, every request
    // must be refused without being forwarded.
    let mut refused = 0;
    let mut withheld = 0;
    for i in 0..200 {
        let before = h.registry.seen_count();
        let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
        match a.status.as_u16() {
            // A failed write is cut back, which may free a page for a later, durable record.
            200 => {}
            503 => {
                assert_eq!(a.code(), "auditUnavailable");
                assert!(a.is_problem());
                if h.registry.seen_count() == before {
                    refused += 1;
                    if refused == 5 {
                        break;
                    }
                } else {
                    // The decision record was durable and the request forwarded; then the
                    // outcome record did not fit and the answer was withheld. The allow record
                    // must be on disk (checked for every forwarded request below).
                    withheld += 1;
                }
            }
            other => panic!("request {i}: unexpected {other}: {:?}", a.json()),
        }
    }
    assert_eq!(refused, 5, "a full disk never gave 503 before forwarding");
    eprintln!("full disk: {withheld} answers withheld after a durable decision");
    let forwarded_while_full = h.registry.seen_count();
    // Denials need their record too.
    let a = h.brp(&h.emp042(), None, &q).await;
    assert_eq!(a.status, 503, "a deny without its record");
    let rdw = h
        .send(
            "GET",
            "/rdw/voertuigen/XX999X",
            &[
                ("authorization", &format!("Bearer {}", h.emp042())),
                ("x-case-id", "Z-OPEN"),
            ],
            None,
        )
        .await;
    assert_eq!(rdw.status, 503);
    assert_eq!(h.registry.seen_count(), forwarded_while_full);

    // Space returns: the gate serves again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut ok = false;
    for _ in 0..20 {
        let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
        if a.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(a.status, 503);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the gate did not resume when space returned");
    for _ in 0..20 {
        let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
        assert_eq!(a.status, 200);
    }

    let records = h.records();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Every forwarded request has its allow record.
    for s in h.registry.seen() {
        let rid = s.header("x-request-id").unwrap();
        assert!(
            records
                .iter()
                .any(|r| r["request_id"] == rid && r["decision"] == "allow"),
            "`{rid}` forwarded without a durable record"
        );
    }
    let (ok, out) = verify(&audit_dir);
    assert!(ok, "{out}");

    // Full again, then a restart on the full disk: the gate starts and refuses, never forwards.
    let mut h = h;
    h.stop().await;
    fill(&filler);
    let h2 = Harness::start_with(Options {
        audit_dir: Some(audit_dir.clone()),
        audit_extra: "segment_max_bytes = 16384".into(),
        ..Options::default()
    })
    .await;
    let mut refused = false;
    for _ in 0..200 {
        let before = h2.registry.seen_count();
        let a = h2.brp(&h2.emp042(), Some("Z-OPEN"), &q).await;
        if a.status == 503 && h2.registry.seen_count() == before {
            refused = true;
            break;
        }
        if a.status == 503 {
            continue; // forwarded after a durable decision; the outcome did not fit
        }
        assert_eq!(a.status, 200);
    }
    assert!(refused, "a full disk after a restart never gave 503");
    std::fs::remove_file(&filler).unwrap();
    let a = h2.brp(&h2.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let records = h2.records();
    for s in h2.registry.seen() {
        let rid = s.header("x-request-id").unwrap();
        assert!(
            records
                .iter()
                .any(|r| r["request_id"] == rid && r["decision"] == "allow"),
            "`{rid}` forwarded without a durable record"
        );
    }
    let (ok, out) = verify(&audit_dir);
    assert!(ok, "{out}");
    drop(h2);
    drop(h);
}

/// The gate as a process whose log (stderr) is on the same full disk as its audit log, as in
/// a deployment with one data volume. A log line that cannot be written must never take a
/// thread down with it: before, the audit writer logged its failed write, the log write failed
/// too, tracing-subscriber reported that with `eprintln!`, which panicked, and the writer
/// thread ended with the torn batch still in the segment; every request after that got 503
/// until a restart, even once space returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_under_the_log_too_never_stops_the_audit_writer() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let fs = match Tmpfs::mount("512k") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED full-disk log test: {why}");
            return;
        }
    };
    let data = common::registry::load_data(&common::repo().join("examples/data"))
        .unwrap()
        .with_log_limit(usize::MAX);
    let (reg_addr, reg_task) = common::registry::spawn(data.clone()).await.unwrap();
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("cases.json"),
        serde_json::to_vec(&common::test_cases()).unwrap(),
    )
    .unwrap();
    let audit_dir = fs.dir.join("audit");
    let config = conf.path().join("gate.toml");
    std::fs::write(
        &config,
        format!(
            r#"gate_id = "disk-gate"
[server]
listen = "127.0.0.1:0"
[auth]
issuer = "{issuer}"
audience = "{audience}"
jwks_file = "{jwks}"
[policies]
dir = "{policies}"
[cases]
file = "cases.json"
[audit]
dir = "{audit}"
segment_max_bytes = 16384
[upstreams.brp]
url = "http://{reg_addr}"
[upstreams.rdw]
url = "http://{reg_addr}"
"#,
            issuer = common::ISSUER,
            audience = common::AUDIENCE,
            jwks = common::repo()
                .join("examples/demo/keys/jwks.json")
                .display(),
            policies = common::repo().join("policies").display(),
            audit = audit_dir.display(),
        ),
    )
    .unwrap();
    let log_path = fs.dir.join("gate.log");
    let mut gate = GateProcess(
        Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            // Every request logs, so the full disk fails log writes on every thread.
            .env("RUST_LOG", "debug")
            .stdout(std::fs::File::create(fs.dir.join("gate.out")).unwrap())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = gate_address(&log_path, &mut gate.0);
    let token = common::emp042_demo_token(3600);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let lookup = || async {
        let req = http::Request::post(format!("http://{addr}/haalcentraal/api/brp/personen"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("x-case-id", "Z-OPEN")
            .body(Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let resp = client
            .request(req)
            .await
            .expect("every request gets an answer, also on a full disk");
        let status = resp.status().as_u16();
        let problem = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| common::foutbericht::is_problem_type(v.as_bytes()));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if problem {
            common::foutbericht::assert_valid(status, &body, "lookup on a full disk");
        }
        status
    };
    assert_eq!(lookup().await, 200);

    let filler = fs.dir.join("filler");
    fill(&filler);
    let mut refused = 0;
    for i in 0..400 {
        let before = data.seen_count();
        match lookup().await {
            200 => {}
            503 if data.seen_count() == before => {
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            503 => {} // forwarded after a durable decision; the outcome record did not fit
            other => panic!("request {i}: unexpected {other}"),
        }
    }
    assert_eq!(refused, 20, "a full disk never gave 503 before forwarding");
    assert!(gate.0.try_wait().unwrap().is_none(), "the gate exited");

    // Space returns: the gate serves again by itself.
    std::fs::remove_file(&filler).unwrap();
    let mut resumed = false;
    for _ in 0..100 {
        if lookup().await == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        resumed,
        "the gate did not resume when space returned (the audit writer stopped)"
    );
    for _ in 0..20 {
        assert_eq!(lookup().await, 200);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &gate.0.id().to_string()])
        .status();
    let _ = gate.0.wait();
    reg_task.abort();

    let records = common::read_records(&audit_dir);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    for s in data.seen() {
        let rid = s.header("x-request-id").unwrap();
        assert!(
            records
                .iter()
                .any(|r| r["request_id"] == rid && r["decision"] == "allow"),
            "`{rid}` forwarded without a durable record"
        );
    }
    let (ok, out) = verify(&audit_dir);
    assert!(ok, "{out}");
}

/// A gate process, killed when dropped so that a failing test leaves none behind.
struct GateProcess(std::process::Child);

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the gate's "listening" log line (`addr=…`) in `log` and returns the address.
fn gate_address(log: &Path, child: &mut std::process::Child) -> std::net::SocketAddr {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            return addr;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gate exited: {text}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no address in: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
