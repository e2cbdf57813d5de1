//! Hardening: a full disk under the audit log.
//!
//! The audit directory lives on a 256 KiB tmpfs (`mount -t tmpfs`, needs root; where mounting is
//! not permitted the test prints why and passes without checking). The disk is filled while the
//! gate runs: requests get 503 `auditUnavailable` and nothing is forwarded; when space returns the
//! gate serves again by itself, with `seq` gap-free and `purpose-gate audit verify` passing.
//! The writer's handling of a failed `fdatasync` (never retried on the same data as if it had
//! succeeded) is unit-tested with a fault-injecting store in `src/audit/writer.rs`.

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
