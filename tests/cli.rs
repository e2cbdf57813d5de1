//! The binary: exit codes, bad config, audit verification, and graceful shutdown on SIGTERM
//! with a request in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Harness, raadpleeg, read_records};

#[path = "../benches/common/million.rs"]
mod million;

fn gate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
}

#[test]
fn bad_config_exits_2_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.toml");
    std::fs::write(&path, "[server]\nlsten = \"127.0.0.1:1\"\n").unwrap();
    let out = gate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gate.toml") && err.contains("lsten"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let out = gate()
        .args(["serve", "--config", "/nonexistent/gate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = gate().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn policy_check_and_test_pass_on_the_shipped_policies_and_fail_on_broken_ones() {
    let repo = common::repo();
    let out = gate()
        .args(["policy", "check", "--dir"])
        .arg(repo.join("policies"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gate()
        .args(["policy", "test", "--dir"])
        .arg(repo.join("policies"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));

    let broken = tempfile::tempdir().unwrap();
    for f in ["gate.cedarschema", "entities.json"] {
        std::fs::copy(repo.join("policies").join(f), broken.path().join(f)).unwrap();
    }
    std::fs::write(
        broken.path().join("gate.cedar"),
        "@id(\"x\")\npermit (principal, action, resource) when { nonsense };\n",
    )
    .unwrap();
    let out = gate()
        .args(["policy", "check", "--dir"])
        .arg(broken.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gate.cedar"));
}

#[tokio::test]
async fn audit_verify_names_the_first_altered_record() {
    let h = Harness::start().await;
    for _ in 0..3 {
        let a = h
            .brp(
                &h.emp042(),
                Some("Z-OPEN"),
                &raadpleeg(&["999993653"], &["naam"]),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let out = gate()
        .args(["audit", "verify", "--dir"])
        .arg(&h.audit_dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(read_records(&h.audit_dir).len(), 6);

    // Change who looked: emp-042 becomes emp-999 in record 3.
    let seg = std::fs::read_dir(&h.audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = lines[2].replace("emp-042", "emp-999");
    std::fs::write(&seg, lines.join("\n") + "\n").unwrap();
    let out = gate()
        .args(["audit", "verify", "--dir"])
        .arg(&h.audit_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(
        msg.contains("seq 4"),
        "the next record's prev no longer matches: {msg}"
    );

    let out = gate()
        .args(["audit", "verify", "--dir", "/nonexistent/audit"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A registry stand-in that answers one BRP query after `delay`.
fn slow_upstream(delay: Duration) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            std::thread::sleep(delay);
            let body = br#"{"type":"RaadpleegMetBurgerservicenummer","personen":[{"burgerservicenummer":"999993653","naam":{"voornamen":"Jan"}}]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    (addr, t)
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let (up, up_thread) = slow_upstream(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    std::fs::write(
        dir.path().join("cases.json"),
        common::test_cases().to_string(),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n[policies]\ndir = \"{}\"\n[upstreams.brp]\nurl = \"http://{up}\"\n",
        common::ISSUER,
        common::AUDIENCE,
        repo.join("examples/demo/keys/jwks.json").display(),
        repo.join("policies").display(),
    );
    std::fs::write(dir.path().join("gate.toml"), config).unwrap();
    let mut child = gate()
        .args(["serve", "--config"])
        .arg(dir.path().join("gate.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gate did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = common::emp042_demo_token(600);
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let req = format!(
        "POST /haalcentraal/api/brp/personen HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Case-Id: Z-OPEN\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let in_flight = tokio::spawn(async move { common::raw_http(addr, req.as_bytes()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let resp = in_flight.await.unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "the request in flight finished: {resp}"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    up_thread.join().unwrap();
    let recs = read_records(&dir.path().join("audit"));
    assert_eq!(recs.len(), 2, "decision and outcome are on disk: {recs:?}");
    assert_eq!(recs[1]["kind"], "outcome");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// `audit query … | head -1`: the reader closes the pipe while the command still has rows to
/// print. The command ends as a Unix tool does (exit 141, as if killed by SIGPIPE), with no
/// panic and nothing on stderr.
#[test]
fn a_command_whose_reader_closes_the_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // 2,000 requests: far more rows than a pipe buffers (64 KiB).
    million::write_log(dir.path(), 4_000);
    let mut child = gate()
        .args(["audit", "query", "--format", "json", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 4096];
    out.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"{"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{status:?}: {err}");
    assert!(err.is_empty(), "{err}");

    // Read to the end, the same command prints every row and exits 0.
    let all = gate()
        .args(["audit", "query", "--format", "json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(all.status.success(), "{all:?}");
    assert_eq!(all.stdout.iter().filter(|b| **b == b'\n').count(), 2_000);
}
