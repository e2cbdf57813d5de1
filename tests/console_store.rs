//! The auditor console over the central PostgreSQL store (`[console] db`): two gates' logs are
//! shipped into a fresh database; the console's *Overzicht* lists both gates with their stored
//! chain and shipping position, a BSN search finds the lookups of both gates, and the access
//! record of that search is written through the console's `[audit] dir`.
//!
//! Needs `PURPOSE_GATE_TEST_DATABASE_URL` (as `tests/store_scaleout.rs`): without it the test
//! says why and passes; set but unusable, it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/common/idp.rs"]
mod idp;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use purpose_gate::audit::record::*;
use purpose_gate::audit::{AuditLog, AuditOptions, Record, read_records};

const URL_VAR: &str = "PURPOSE_GATE_TEST_DATABASE_URL";
const BIN: &str = env!("CARGO_BIN_EXE_purpose-gate");
const BSN: &str = "999993653";

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn decision(gate: &str, request_id: &str, case: &str) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        inputs: None,
        time: "2026-03-02T09:15:00Z".into(),
        kind: DecisionKind::Decision,
        gate: gate.into(),
        request_id: request_id.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: "emp-042".into(),
            org: "gm0363".into(),
            roles: vec!["handhaver".into()],
        }),
        action: Some("brp:lookup".into()),
        resource: Some(ResourceRef {
            kind: "Person".into(),
            id: BSN.into(),
        }),
        case_id: Some(case.into()),
        case_url: None,
        purpose: PurposeRecord {
            doelbinding: Some("BRPACT-Toezicht".into()),
            verwerking: None,
            break_glass: false,
            reason: None,
        },
        fields: vec!["naam".into()],
        decision: Verdict::Allow,
        code: None,
        policies: vec!["permit-case-handler".into()],
        reasons: vec![],
        errors: vec![],
        request: RequestRecord {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            client_ip: None,
        },
        policy_version: None,
    }))
}

/// Writes one lookup of `BSN` by `gate` (case `case`) to `dir` and ships it into the store.
async fn gate_log(dir: &Path, gate: &str, case: &str, url: &str) {
    let log = AuditLog::open(&AuditOptions {
        dir: dir.to_path_buf(),
        segment_max_bytes: 1 << 20,
        max_batch: 64,
    })
    .unwrap();
    log.append(vec![decision(gate, &format!("{gate}-r1"), case)])
        .await
        .unwrap();
    log.close().await;
    let out = Command::new(BIN)
        .args(["audit", "ship", "--dir"])
        .arg(dir)
        .args(["--db", url, "--gate", gate])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ship {gate}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Answer {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

async fn send(c: &Client, method: &str, url: &str, cookie: &str, form: Option<String>) -> Answer {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = c
        .request(
            req.body(Full::new(Bytes::from(form.unwrap_or_default())))
                .unwrap(),
        )
        .await
        .unwrap();
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

/// Logs in as `auditor` through the example IdP, following its redirects; the session cookie.
async fn login(c: &Client, base: &str) -> String {
    let start = send(c, "GET", &format!("{base}/login"), "", None).await;
    assert_eq!(start.status, 303);
    let authorize = start.location.unwrap();
    let (endpoint, query) = authorize.split_once('?').unwrap();
    let mut form: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    form.insert("username".into(), "auditor".into());
    form.insert("password".into(), "auditor".into());
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let issued = send(c, "POST", endpoint, "", Some(form)).await;
    assert_eq!(issued.status, 303, "the IdP refused: {}", issued.body);
    let back = send(
        c,
        "GET",
        &issued.location.unwrap(),
        &start.cookies.join("; "),
        None,
    )
    .await;
    assert_eq!(back.status, 200, "callback: {}", back.body);
    back.cookies.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_every_gate_from_the_store() {
    let Ok(base_url) = std::env::var(URL_VAR) else {
        eprintln!("skipping the console over the store: {URL_VAR} is not set (see .ci/run)");
        return;
    };
    let (admin, conn) = tokio_postgres::connect(&base_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but unusable: {e}"));
    tokio::spawn(conn);
    let db = format!("pg_test_console_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let (prefix, _) = base_url.rsplit_once('/').expect("URL with a database name");
    let url = format!("{prefix}/{db}");
    let out = Command::new(BIN)
        .args(["store", "migrate", "--db", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "migrate failed");

    let tmp = tempfile::tempdir().unwrap();
    let dir_a = tmp.path().join("gate-a");
    gate_log(&dir_a, "gate-a", "Z-GATE-A-1", &url).await;
    gate_log(&tmp.path().join("gate-b"), "gate-b", "Z-GATE-B-1", &url).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (issuer, _idp) = idp::spawn(listener, "console", "secret", idp::demo_users())
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(tmp.path().join("session.key"), [9u8; 32]).unwrap();
    std::fs::write(tmp.path().join("client.secret"), "secret").unwrap();
    // The console writes its access records to gate-a's log (which gate-a ships).
    let config = format!(
        r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_url = "http://127.0.0.1:9/jwks"
[audit]
dir = "gate-a"
[console]
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
client_id = "console"
client_secret_file = "client.secret"
redirect_url = "http://127.0.0.1:{port}/callback"
session_key_file = "session.key"
db = "{url}"
"#
    );
    let cfg = purpose_gate::config::Config::parse(&config, tmp.path()).unwrap();
    let console = purpose_gate::console::start(&cfg).await.unwrap();
    let base = format!("http://{}", console.addr);
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let cookie = login(&client, &base).await;

    // Overzicht: both gates, each with its stored chain verified and its shipping position.
    let over = send(&client, "GET", &format!("{base}/"), &cookie, None).await;
    assert_eq!(over.status, 200);
    assert!(!over.body.contains("store-error"), "{}", over.body);
    let gates = over
        .body
        .split("id=\"gates\"")
        .nth(1)
        .expect("no gates table on Overzicht");
    let gates = gates.split("</table>").next().unwrap();
    for g in ["gate-a", "gate-b"] {
        let row = gates
            .split("<tr>")
            .find(|r| r.contains(&format!("<code>{g}</code>")))
            .unwrap_or_else(|| panic!("no row for {g}: {gates}"));
        assert!(row.contains("Keten geverifieerd"), "{g}: {row}");
        assert!(row.contains("<td class=\"num\">1</td>"), "{g}: {row}");
    }
    // Lookups per day count both gates' records (one allowed lookup each, on 2026-03-02).
    assert!(
        over.body.contains("2026-03-02: 2 / 0"),
        "the chart does not count both gates"
    );

    // A BSN search finds the lookups of both gates, from the store.
    let found = send(
        &client,
        "GET",
        &format!("{base}/zoeken?by=bsn&q={BSN}"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains("Z-GATE-A-1"), "gate-a's lookup missing");
    assert!(found.body.contains("Z-GATE-B-1"), "gate-b's lookup missing");

    // The access record of that search is durable in the console's directory.
    let mut records = read_records(&dir_a).unwrap();
    let mut searched = false;
    while let Some(Ok((_, record))) = records.next_ref() {
        if let Record::Access(a) = record {
            searched |= a.view == "search" && a.query.get("bsn").map(String::as_str) == Some(BSN);
        }
    }
    assert!(searched, "no access record for the search in gate-a's log");

    console.shutdown().await;
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
}
