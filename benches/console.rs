//! The auditor console over a 1,000,000-record log (the log of `audit_query`, written the same
//! way): the server time of *Overzicht* and of a BSN search (target ≤ 1 s each), and, apart,
//! the background build of the snapshot *Overzicht* and *Signalen* read (chain verification,
//! one query over the whole log, the signals).
//!
//! The console runs in this process on a loopback port behind the example IdP; the bench logs
//! in through the OpenID Connect flow once and then times whole HTTP requests with the session
//! cookie, so each figure includes the access record the page appends durably (fdatasync)
//! before it answers, and the loopback round trip. The console's own 30-second refresh keeps
//! running, as in production.
//!
//! `AUDIT_BENCH_RECORDS` and `AUDIT_BENCH_DIR` as in `audit_query` (a log kept there is reused).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/common/idp.rs"]
mod idp;
#[path = "common/million.rs"]
mod million;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use million::{bsn, checkpoint_key, write_log};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

struct Answer {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

async fn send(
    client: &Client,
    method: &str,
    url: &str,
    cookie: &str,
    form: Option<String>,
) -> Answer {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let body = Full::new(Bytes::from(form.unwrap_or_default()));
    let resp = client.request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        location,
        cookies,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Logs in as `auditor` through the example IdP; returns the session's cookie header.
async fn login(client: &Client, base: &str) -> String {
    let start = send(client, "GET", &format!("{base}/login"), "", None).await;
    assert_eq!(start.status, 303, "login does not redirect to the IdP");
    let authorize = start.location.unwrap();
    let login_cookie = start.cookies.join("; ");
    let (endpoint, query) = authorize.split_once('?').unwrap();
    let mut form: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    form.insert("username".into(), "auditor".into());
    form.insert("password".into(), "auditor".into());
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let issued = send(client, "POST", endpoint, "", Some(form)).await;
    assert_eq!(issued.status, 303, "the IdP refused the login");
    let back = send(
        client,
        "GET",
        &issued.location.unwrap(),
        &login_cookie,
        None,
    )
    .await;
    assert_eq!(back.status, 200, "the callback failed: {}", back.body);
    back.cookies.join("; ")
}

fn console(c: &mut Criterion) {
    let records: u64 = std::env::var("AUDIT_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("AUDIT_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &kept {
        Some(d) => d.join("audit"),
        None => tmp.path().join("audit"),
    };
    let key = if dir.join("audit-000001.jsonl").exists() {
        checkpoint_key()
    } else {
        write_log(&dir, records)
    };
    let public = key.verifying_key();
    let pub_pem = {
        use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
        public.to_public_key_pem(LineEnding::LF).unwrap()
    };
    std::fs::write(tmp.path().join("checkpoint.pub.pem"), pub_pem).unwrap();
    std::fs::write(tmp.path().join("session.key"), [7u8; 32]).unwrap();
    std::fs::write(tmp.path().join("client.secret"), "bench-secret").unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, base, cookie, _console) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (issuer, _idp) = idp::spawn(listener, "console", "bench-secret", idp::demo_users())
            .await
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_url = "http://127.0.0.1:9/jwks"
[audit]
dir = "{}"
[console]
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
client_id = "console"
client_secret_file = "client.secret"
redirect_url = "http://127.0.0.1:{port}/callback"
session_key_file = "session.key"
public_key_file = "checkpoint.pub.pem"
"#,
            dir.display()
        );
        let cfg = purpose_gate::config::Config::parse(&config, tmp.path()).unwrap();
        let console = purpose_gate::console::start(&cfg).await.unwrap();
        let base = format!("http://{}", console.addr);
        let client: Client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let cookie = login(&client, &base).await;
        // The first Overzicht waits for the first snapshot; the timed ones read it.
        let first = send(&client, "GET", &format!("{base}/"), &cookie, None).await;
        assert_eq!(first.status, 200, "Overzicht: {}", first.body);
        (client, base, cookie, (console, _idp))
    });

    let mut group = c.benchmark_group("console");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    let overview = format!("{base}/");
    group.bench_function("overzicht", |b| {
        b.iter(|| {
            let a = rt.block_on(send(&client, "GET", &overview, &cookie, None));
            assert_eq!(a.status, 200);
            assert!(a.body.contains("<svg"), "no chart on Overzicht");
        })
    });
    let subject = bsn(12_345);
    let search = format!("{base}/zoeken?by=bsn&q={subject}");
    group.bench_function("search_bsn", |b| {
        b.iter(|| {
            let a = rt.block_on(send(&client, "GET", &search, &cookie, None));
            assert_eq!(a.status, 200);
            assert!(a.body.contains("Z-2026-"), "no rows for `{subject}`");
        })
    });
    let hours = purpose_gate::audit::report::WorkingHours::parse("Mon-Fri 07:00-19:00").unwrap();
    group.bench_function("snapshot_build", |b| {
        b.iter(|| {
            let s = purpose_gate::console::snapshot::build(&dir, &hours, Some(&public)).unwrap();
            assert!(s.chain.is_ok());
            assert!(s.records >= records);
        })
    });
    group.finish();
}

criterion_group!(benches, console);
criterion_main!(benches);
