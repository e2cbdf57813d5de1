//! Hardening: a misbehaving registry. Slow, hanging, resetting, garbage, truncated and oversized
//! answers each give 502 or 504 with an outcome record, and after 200 such requests the gate
//! still answers and holds no connection to the registry open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Harness, Options, raadpleeg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Answers after 3 s (the gate's timeout is 2 s).
    Slow = 0,
    /// Sends the head, then one body byte every 300 ms.
    Trickle,
    /// Never answers.
    Hang,
    /// Resets the connection (RST) after reading the request.
    Reset,
    /// Closes without a word.
    Close,
    /// Not HTTP.
    Garbage,
    /// A 200 whose JSON is broken.
    BadJson,
    /// A 200 that promises more bytes than it sends, then closes.
    Truncated,
    /// A 200 larger than `max_response_bytes`, with a length.
    HugeLength,
    /// A 200 larger than `max_response_bytes`, chunked.
    HugeChunked,
    /// A response head larger than the client accepts.
    HugeHead,
    /// An invalid status line.
    BadStatus,
}

const MODES: [Mode; 12] = [
    Mode::Slow,
    Mode::Trickle,
    Mode::Hang,
    Mode::Reset,
    Mode::Close,
    Mode::Garbage,
    Mode::BadJson,
    Mode::Truncated,
    Mode::HugeLength,
    Mode::HugeChunked,
    Mode::HugeHead,
    Mode::BadStatus,
];

struct Fake {
    mode: Arc<AtomicU8>,
    open: Arc<AtomicUsize>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_registry() -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let mode = Arc::new(AtomicU8::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (m, o) = (Arc::clone(&mode), Arc::clone(&open));
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let mode = MODES[usize::from(m.load(Ordering::SeqCst))];
            let o = Arc::clone(&o);
            o.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                serve_one(s, mode).await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Fake {
        mode,
        open,
        url,
        task,
    }
}

/// Reads one request head and its `Content-Length` body.
async fn read_request(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return true;
        }
    }
}

/// Waits until the gate closes the connection.
async fn until_closed(s: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

async fn serve_one(mut s: TcpStream, mode: Mode) {
    if !read_request(&mut s).await {
        return;
    }
    // `Connection: close` everywhere: the gate's pool must not reuse a fault for the next mode.
    let ok_head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n";
    match mode {
        Mode::Slow => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => {
                    let body = r#"{"kenteken":"XX999X"}"#;
                    let _ = s.write_all(format!("{ok_head}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
                }
                _ = until_closed(&mut s) => {}
            }
        }
        Mode::Trickle => {
            let _ = s
                .write_all(format!("{ok_head}Content-Length: 1000\r\n\r\n").as_bytes())
                .await;
            for _ in 0..1000 {
                if s.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Mode::Hang => until_closed(&mut s).await,
        Mode::Reset => {
            // SO_LINGER 0: closing sends RST (tokio deprecates it for blocking on drop, which
            // a zero linger does not).
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        Mode::Close => {}
        Mode::Garbage => {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n\x00\xff").await;
        }
        Mode::BadJson => {
            let _ = s
                .write_all(format!("{ok_head}Content-Length: 9\r\n\r\n{{\"type\":[").as_bytes())
                .await;
        }
        Mode::Truncated => {
            let _ = s
                .write_all(
                    format!("{ok_head}Content-Length: 500\r\n\r\n{{\"type\":\"Raad").as_bytes(),
                )
                .await;
        }
        Mode::HugeLength => {
            let _ = s
                .write_all(format!("{ok_head}Content-Length: 100000000\r\n\r\n").as_bytes())
                .await;
            let zeros = vec![b' '; 16 * 1024];
            for _ in 0..6000 {
                if s.write_all(&zeros).await.is_err() {
                    return;
                }
            }
        }
        Mode::HugeChunked => {
            let _ = s
                .write_all(format!("{ok_head}Transfer-Encoding: chunked\r\n\r\n").as_bytes())
                .await;
            let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
            for _ in 0..6000 {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        Mode::HugeHead => {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..4000 {
                head.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(100)));
            }
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(b"Content-Length: 2\r\n\r\n{}").await;
        }
        Mode::BadStatus => {
            let _ = s
                .write_all(b"HTTP/1.1 2000 Very OK\r\nContent-Length: 2\r\n\r\n{}")
                .await;
        }
    }
}

fn expected(mode: Mode) -> (u16, &'static str) {
    match mode {
        Mode::Slow | Mode::Trickle | Mode::Hang => (504, "upstreamTimeout"),
        Mode::HugeLength | Mode::HugeChunked => (502, "upstreamTooLarge"),
        // Read, but not the JSON the route expects.
        Mode::BadJson => (502, "upstreamAnswerInvalid"),
        _ => (502, "upstreamUnavailable"),
    }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_is_a_recorded_502_or_504_and_nothing_leaks() {
    let fake = fake_registry().await;
    let h = Harness::start_with(Options {
        upstream_url: Some(fake.url.clone()),
        // Appended inside `[upstreams.rdw]`: a small answer limit for the RDW route.
        extra_config: "max_response_bytes = 65536".into(),
        ..Options::default()
    })
    .await;
    let auth = format!("Bearer {}", h.emp042());
    let brp = raadpleeg(&["999993653"], &["naam"]);

    // Each fault once, on the route where it matters, with its outcome record.
    for (i, mode) in MODES.iter().enumerate() {
        fake.mode.store(i as u8, Ordering::SeqCst);
        let a = if *mode == Mode::BadJson {
            h.brp(&h.emp042(), Some("Z-OPEN"), &brp).await
        } else {
            h.send(
                "GET",
                "/rdw/voertuigen/XX999X",
                &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
                None,
            )
            .await
        };
        let (status, code) = expected(*mode);
        assert_eq!(a.status, status, "{mode:?}: {:?}", a.json());
        assert_eq!(a.code(), code, "{mode:?}");
        assert!(a.is_problem(), "{mode:?}");
        let rid = a.request_id();
        let recs: Vec<_> = h
            .records()
            .into_iter()
            .filter(|r| r["request_id"] == rid.as_str())
            .collect();
        assert_eq!(recs.len(), 2, "{mode:?}: decision and outcome");
        assert_eq!(recs[0]["decision"], "allow", "{mode:?}");
        assert_eq!(recs[1]["kind"], "outcome", "{mode:?}");
        assert_eq!(recs[1]["status"], status, "{mode:?}");
        assert_eq!(recs[1]["disclosed"], serde_json::json!([]), "{mode:?}");
        assert_eq!(recs[1]["code"], code, "{mode:?}");
    }

    // 200 more faults, 25 at a time, cycling through every mode.
    let baseline_fds = fd_count();
    let auth107 = format!("Bearer {}", h.token("emp-107", "0363", &["handhaver"]));
    let h = Arc::new(h);
    for wave in 0..8 {
        let mut tasks = Vec::new();
        for j in 0..25 {
            let idx = (wave * 25 + j) % MODES.len();
            let h = Arc::clone(&h);
            // Two employees, so that the 200-lookups-an-hour policy does not deny first.
            let (auth, case, path) = if j % 2 == 0 {
                (auth.clone(), "Z-OPEN", "/rdw/voertuigen/XX999X")
            } else {
                (auth107.clone(), "Z-HANDHAVING", "/rdw/voertuigen/AB123C")
            };
            let mode = Arc::clone(&fake.mode);
            tasks.push(tokio::spawn(async move {
                // The mode is read when the fake accepts; serialise the choice per request.
                mode.store(idx as u8, Ordering::SeqCst);
                let a = h
                    .send(
                        "GET",
                        path,
                        &[("authorization", &auth), ("x-case-id", case)],
                        None,
                    )
                    .await;
                a.status.as_u16()
            }));
        }
        for t in tasks {
            let status = t.await.unwrap();
            assert!(matches!(status, 502 | 504), "wave {wave}: {status}");
        }
    }
    let outcomes = h
        .records()
        .iter()
        .filter(|r| r["kind"] == "outcome")
        .count();
    assert_eq!(
        outcomes,
        MODES.len() + 200,
        "one outcome per forwarded request"
    );

    // The gate still answers, and lets go of every registry connection.
    let a = h
        .send(
            "GET",
            "/rdw/voertuigen/XX999X",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(a.status, 403, "a plain denial still works: {:?}", a.json());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while fake.open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fake.open.load(Ordering::SeqCst),
        0,
        "connections to the registry left open"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while fd_count() > baseline_fds + 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fd_count() <= baseline_fds + 8,
        "file descriptors grew from {baseline_fds} to {}",
        fd_count()
    );
}
