//! What the gate passes on from a registry, against real HTTP upstreams on 127.0.0.1:0:
//! - it asks for `Accept-Encoding: identity` whatever the client sent, and a compressed answer
//!   (gzip, br, deflate — really compressed bytes, or a header that lies) is never passed on:
//!   502 `upstreamEncoding`;
//! - a 2xx answer that is not the route's JSON is 502 `upstreamAnswerInvalid`;
//! - an error answer that names a person is 502 `upstreamErrorWithheld`; one that is not JSON is
//!   502 `upstreamAnswerInvalid`; a JSON error answer that names nobody is passed on;
//! - through an FSC Outway (`fsc = true`), the TransactionID of each forwarded request is in its
//!   outcome record and found by `audit query --fsc-transaction-id`; a client's
//!   `Fsc-Transaction-Id` never reaches the upstream.
//!
//! Each refusal: the gate's own problem+json, an outcome record with the status, the code and
//! no person disclosed, and nothing of the registry's body in the answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{Answer, Harness, Options, audit_cli, raadpleeg, stdout};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The registry's answer for one lookup of 999993653 that also names 999990639 (plain text).
const PLAIN: &str = r#"{"type":"RaadpleegMetBurgerservicenummer","personen":[{"burgerservicenummer":"999993653","naam":{"voornamen":"Suzanne","geslachtsnaam":"Moulin"}},{"burgerservicenummer":"999990639","naam":{"voornamen":"Pieter","geslachtsnaam":"Geheim"}}]}"#;

// `PLAIN` compressed, made once and checked by a round trip: gzip and deflate (the zlib format,
// RFC 9110 section 8.4.1.2) with Python's `gzip.compress(b, mtime=0)` and `zlib.compress(b, 9)`,
// br with `brotli -q 11`.
const GZIP: &str = "1f8b08000000000002037d8e310bc2301085ffcbcd1d8460a1195d9c0aa2a3389cf591069a4b49938296fc7753dd44bdf1bdef7ddc42f13e82341d996fe300981671978241981066db4192730854d158222f10d2e785ae5f104dcd7aaadeaa820bb323bdd0ec7d1076eb8e4ee9c12228adc13470d7c7e98d51ebd3608572aefeba37b56a7eb80f16f1f5e7a77a8f1ed615f5253f011f370428ee000000";
const DEFLATE: &str = "78da7d8e310bc2301085ffcbcd1d8460a1195d9c0aa2a3389cf591069a4b49938296fc7753dd44bdf1bdef7ddc42f13e82341d996fe300981671978241981066db4192730854d158222f10d2e785ae5f104dcd7aaadeaa820bb323bdd0ec7d1076eb8e4ee9c12228adc13470d7c7e98d51ebd3608572aefeba37b56a7eb80f16f1f5e7a77a8f1ed615f5253f012f0552c3";
const BROTLI: &str = "a1680740e038b063c13fb05948461f23547a8a6ced993897f2116a8096d5b35085db38fd01b60e4b575f3738e4d0430a234e2d5c78b0092fc72831848ff6ef88af10fa3f00f5036bb2cd35664adec61133651b8149936a62c76ee0bb14166224db8d99598c60e2b7dd8219941acb2054b32efeddc36c43cbf4773056e0c6d5bbc58a3928d1a01db503";

/// What the fake upstream does with `Fsc-Transaction-Id` in its answer.
#[derive(Clone, Debug, PartialEq)]
enum FscEcho {
    /// Sends none.
    None,
    /// Returns the one it received (an Outway that takes its client's id).
    Received,
    /// Returns its own (an Outway that creates the TransactionID, as FSC Logging says).
    Own(String),
}

/// One canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    fsc: FscEcho,
}

impl Canned {
    fn new(status: u16, headers: &[(&'static str, &'static str)], body: &[u8]) -> Canned {
        Canned {
            status,
            headers: headers.to_vec(),
            body: body.to_vec(),
            fsc: FscEcho::None,
        }
    }
}

/// The request heads a fake received: lowercase header name → values, per request.
type Seen = Arc<Mutex<Vec<HashMap<String, Vec<String>>>>>;

/// A registry (or an FSC Outway in front of one) on 127.0.0.1:0 that answers every request
/// with the current canned answer and keeps the request heads it received.
struct Fake {
    url: String,
    answer: Arc<Mutex<Canned>>,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(Canned::new(200, &[], b"{}")));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (Arc::clone(&answer), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let (a, s) = (Arc::clone(&a), Arc::clone(&s));
                tokio::spawn(serve(stream, a, s));
            }
        });
        Fake {
            url,
            answer,
            seen,
            task,
        }
    }

    fn set(&self, c: Canned) {
        *self.answer.lock().unwrap() = c;
    }

    /// The headers of the last request received.
    fn last(&self) -> HashMap<String, Vec<String>> {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve(mut s: TcpStream, answer: Arc<Mutex<Canned>>, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.first())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < end + 4 + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let received_fsc = headers
        .get("fsc-transaction-id")
        .and_then(|v| v.first())
        .cloned();
    seen.lock().unwrap().push(headers);
    let c = answer.lock().unwrap().clone();
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", c.status);
    for (k, v) in &c.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let echo = match &c.fsc {
        FscEcho::None => None,
        FscEcho::Received => received_fsc,
        FscEcho::Own(id) => Some(id.clone()),
    };
    if let Some(id) = echo {
        out.push_str(&format!("Fsc-Transaction-Id: {id}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", c.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&c.body);
    let _ = s.write_all(&bytes).await;
    let _ = s.shutdown().await;
}

async fn gate(fake: &Fake, upstream_extra: &str) -> Harness {
    Harness::start_with(Options {
        upstream_url: Some(fake.url.clone()),
        upstream_extra: upstream_extra.to_string(),
        ..Options::default()
    })
    .await
}

/// A BRP lookup of 999993653 on Z-OPEN, with the headers a client might add.
async fn lookup(h: &Harness, extra: &[(&str, &str)]) -> Answer {
    let auth = format!("Bearer {}", h.emp042());
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("x-case-id", "Z-OPEN"),
    ];
    headers.extend_from_slice(extra);
    h.send(
        "POST",
        "/haalcentraal/api/brp/personen",
        &headers,
        Some(&body),
    )
    .await
}

fn request_id(a: &Answer) -> String {
    a.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_gate_cannot_read_are_refused_recorded_and_not_passed_on() {
    let fake = Fake::start().await;
    let h = gate(&fake, "").await;
    let hex = |s: &str| hex::decode(s).unwrap();
    let (gzip, deflate, br) = (hex(GZIP), hex(DEFLATE), hex(BROTLI));
    // The constants are compressed: their framing, and no person in the clear.
    assert_eq!(&gzip[..3], &[0x1f, 0x8b, 0x08]);
    assert_eq!(&deflate[..2], &[0x78, 0xda]);
    for c in [&gzip, &deflate, &br] {
        assert!(!contains(c, b"999993653") && !contains(c, b"Moulin"));
        assert!(c.len() < PLAIN.len());
    }
    let json = ("content-type", "application/json");
    let problem = ("content-type", "application/problem+json");
    let error_naming_a_person = br#"{"type":"about:blank","title":"Niet gevonden","status":404,"detail":"persoon 999990639 heeft geheimhouding","code":"notFound"}"#;
    let cases: Vec<(&str, Canned, &str)> = vec![
        (
            "gzip",
            Canned::new(200, &[json, ("content-encoding", "gzip")], &gzip),
            "upstreamEncoding",
        ),
        (
            "br",
            Canned::new(200, &[json, ("content-encoding", "br")], &br),
            "upstreamEncoding",
        ),
        (
            "deflate",
            Canned::new(200, &[json, ("content-encoding", "deflate")], &deflate),
            "upstreamEncoding",
        ),
        (
            "a lying header: gzip over plain JSON",
            Canned::new(200, &[json, ("content-encoding", "gzip")], PLAIN.as_bytes()),
            "upstreamEncoding",
        ),
        (
            "gzip bytes without a content-encoding",
            Canned::new(200, &[json], &gzip),
            "upstreamAnswerInvalid",
        ),
        (
            "a compressed error answer",
            Canned::new(404, &[problem, ("content-encoding", "gzip")], &gzip),
            "upstreamEncoding",
        ),
        (
            "non-JSON 2xx",
            Canned::new(
                200,
                &[("content-type", "text/html")],
                b"<html><body>Suzanne Moulin, 999993653</body></html>",
            ),
            "upstreamAnswerInvalid",
        ),
        (
            "JSON 2xx without personen",
            Canned::new(
                200,
                &[json],
                br#"{"persoon":{"burgerservicenummer":"999993653"}}"#,
            ),
            "upstreamAnswerInvalid",
        ),
        (
            "an error answer that names a person",
            Canned::new(404, &[problem], error_naming_a_person),
            "upstreamErrorWithheld",
        ),
        (
            "a non-JSON error answer",
            Canned::new(
                503,
                &[("content-type", "text/html")],
                b"<html>Suzanne Moulin is onderhoud</html>",
            ),
            "upstreamAnswerInvalid",
        ),
    ];
    for (name, canned, code) in cases {
        let upstream_status = canned.status;
        let body = canned.body.clone();
        fake.set(canned);
        let before = fake.count();
        // The client asks for compression, and sends an FSC id of its own.
        let a = lookup(
            &h,
            &[
                ("accept-encoding", "gzip, br, deflate"),
                ("fsc-transaction-id", "client-chosen-1"),
            ],
        )
        .await;
        assert_eq!(fake.count(), before + 1, "{name}: forwarded once");
        let seen = fake.last();
        assert_eq!(
            seen.get("accept-encoding"),
            Some(&vec!["identity".to_string()]),
            "{name}: the gate asks for identity only"
        );
        assert!(
            !seen.contains_key("fsc-transaction-id"),
            "{name}: a client's fsc id is not forwarded, nor one of the gate's for a plain upstream"
        );
        assert_eq!(a.status, 502, "{name}: {:?}", a.json());
        assert_eq!(a.code(), code, "{name}");
        assert!(a.is_problem(), "{name}");
        assert!(!a.headers.contains_key("content-encoding"), "{name}");
        for leak in [
            &body[..],
            b"999993653",
            b"999990639",
            b"Moulin",
            &body[..body.len().min(16)],
        ] {
            assert!(
                !contains(&a.body, leak),
                "{name}: the answer holds the registry's bytes"
            );
        }
        let rid = request_id(&a);
        let d = h.record_of(&rid, "decision");
        assert_eq!(d["decision"], "allow", "{name}");
        let o = h.record_of(&rid, "outcome");
        assert_eq!(o["status"], 502, "{name}");
        assert_eq!(o["code"], code, "{name}");
        assert_eq!(o["upstream_status"], upstream_status, "{name}");
        assert_eq!(o["disclosed"], serde_json::json!([]), "{name}");
        assert!(o.get("fsc_transaction_id").is_none(), "{name}: {o}");
    }

    // A JSON error answer that names nobody is the registry's, passed on and recorded as such.
    // A Haal Centraal Foutbericht as the registry writes it (`instance` the URI of the call).
    let not_found = br#"{"type":"https://www.rfc-editor.org/rfc/rfc9110#name-404-not-found","title":"Opgevraagde resource bestaat niet.","status":404,"detail":"niet gevonden","instance":"https://brp.example/personen","code":"notFound"}"#;
    fake.set(Canned::new(404, &[problem], not_found));
    let a = lookup(&h, &[]).await;
    assert_eq!(a.status, 404);
    assert_eq!(&a.body[..], &not_found[..]);
    let o = h.record_of(&request_id(&a), "outcome");
    assert_eq!(o["status"], 404);
    assert_eq!(o["upstream_status"], 404);
    assert!(o.get("code").is_none(), "{o}");
    assert_eq!(o["disclosed"], serde_json::json!([]));

    // An identity answer (declared or not) is read as before.
    for headers in [vec![json], vec![json, ("content-encoding", "identity")]] {
        fake.set(Canned::new(
            200,
            &headers,
            br#"{"type":"RaadpleegMetBurgerservicenummer","personen":[{"burgerservicenummer":"999993653","naam":{"geslachtsnaam":"Moulin"}}]}"#,
        ));
        let a = lookup(&h, &[]).await;
        assert_eq!(a.status, 200, "{headers:?}: {:?}", a.json());
        assert_eq!(a.json()["personen"][0]["naam"]["geslachtsnaam"], "Moulin");
        let o = h.record_of(&request_id(&a), "outcome");
        assert_eq!(o["status"], 200);
        assert!(o.get("code").is_none(), "{o}");
        assert_eq!(
            o["disclosed"],
            serde_json::json!([{"type": "Person", "id": "999993653"}])
        );
    }
}

/// `purpose-gate audit query --fsc-transaction-id ID` in `format`.
fn query_fsc(h: &Harness, id: &str, format: &str) -> String {
    let out = audit_cli(
        &["query", "--fsc-transaction-id", id, "--format", format],
        &h.audit_dir,
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    stdout(&out)
}

fn is_uuid_v7(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 7) && s.len() == 36
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsc_transaction_ids_are_recorded_and_queryable_and_never_the_clients() {
    let outway = Fake::start().await;
    let h = gate(&outway, "fsc = true").await;
    let answer = br#"{"type":"RaadpleegMetBurgerservicenummer","personen":[{"burgerservicenummer":"999993653","naam":{"geslachtsnaam":"Moulin"}}]}"#;
    let forged = "0190a5b2-7c3d-7def-8123-456789abcdef";

    // 1. An Outway that creates the TransactionID and returns it (FSC Logging 1.0): that id is
    //    recorded, and returned to the client.
    let outway_id = "01977a3e-5b1c-7a2b-9c3d-4e5f60718293";
    let mut c = Canned::new(200, &[("content-type", "application/json")], answer);
    c.fsc = FscEcho::Own(outway_id.to_string());
    outway.set(c.clone());
    let a = lookup(&h, &[("fsc-transaction-id", forged)]).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let sent = outway.last()["fsc-transaction-id"].clone();
    assert_eq!(sent.len(), 1, "one id sent: {sent:?}");
    assert_ne!(sent[0], forged, "the client's id is never forwarded");
    assert!(
        is_uuid_v7(&sent[0]),
        "the gate sends a UUID v7: {}",
        sent[0]
    );
    assert_eq!(
        outway.last()["accept-encoding"],
        vec!["identity".to_string()]
    );
    let rid1 = request_id(&a);
    let o = h.record_of(&rid1, "outcome");
    assert_eq!(o["fsc_transaction_id"], outway_id);
    assert_eq!(
        a.headers.get("fsc-transaction-id").map(|v| v.as_bytes()),
        Some(outway_id.as_bytes())
    );

    // 2. An Outway that takes its client's id and returns it: the gate's id is recorded.
    c.fsc = FscEcho::Received;
    outway.set(c.clone());
    let a = lookup(&h, &[("fsc-transaction-id", forged)]).await;
    assert_eq!(a.status, 200);
    let sent2 = outway.last()["fsc-transaction-id"][0].clone();
    assert!(
        is_uuid_v7(&sent2) && sent2 != sent[0] && sent2 != forged,
        "{sent2}"
    );
    let rid2 = request_id(&a);
    assert_eq!(
        h.record_of(&rid2, "outcome")["fsc_transaction_id"],
        sent2.as_str()
    );

    // 3. An answer without the header (or with one the gate cannot record): the id the gate
    //    sent is recorded — never the client's.
    for echo in [FscEcho::None, FscEcho::Own("bad id\"}".into())] {
        c.fsc = echo.clone();
        outway.set(c.clone());
        let a = lookup(&h, &[("fsc-transaction-id", forged)]).await;
        assert_eq!(a.status, 200, "{echo:?}");
        let sent3 = outway.last()["fsc-transaction-id"][0].clone();
        let o = h.record_of(&request_id(&a), "outcome");
        assert_eq!(o["fsc_transaction_id"], sent3.as_str(), "{echo:?}");
        assert_ne!(o["fsc_transaction_id"], forged, "{echo:?}");
    }

    // 4. A refused answer through the Outway still records its TransactionID.
    let mut gz = Canned::new(
        200,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &hex::decode(GZIP).unwrap(),
    );
    let refused_id = "01977a3e-0000-7000-8000-00000000beef";
    gz.fsc = FscEcho::Own(refused_id.into());
    outway.set(gz);
    let a = lookup(&h, &[]).await;
    assert_eq!(a.code(), "upstreamEncoding");
    let o = h.record_of(&request_id(&a), "outcome");
    assert_eq!(o["fsc_transaction_id"], refused_id);
    assert_eq!(o["code"], "upstreamEncoding");

    // No record anywhere holds the client's id.
    assert!(
        h.records().iter().all(|r| !r.to_string().contains(forged)),
        "the client's fsc id is in the log"
    );

    // The auditor finds the gate's records from an FSC TransactionLog id.
    for (id, rid) in [(outway_id, &rid1), (sent2.as_str(), &rid2)] {
        let rows: Vec<Value> = query_fsc(&h, id, "json")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 1, "{id}: {rows:?}");
        assert_eq!(rows[0]["request_id"], rid.as_str());
        assert_eq!(rows[0]["fsc_transaction_id"], id);
        assert_eq!(rows[0]["decision"], "allow");
        assert_eq!(rows[0]["employee"], "emp-042");
        let csv = query_fsc(&h, id, "csv");
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().ends_with(",fsc_transaction_id"));
        let row = lines.next().unwrap();
        assert!(row.ends_with(&format!(",{id}")), "{row}");
        assert_eq!(lines.next(), None);
    }
    assert_eq!(
        query_fsc(&h, forged, "json"),
        "",
        "the client's id finds nothing"
    );
}
