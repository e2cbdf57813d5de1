//! Logboek Dataverwerkingen export end to end: a test collector (a real HTTP server on
//! 127.0.0.1:0) receives the gate's OTLP/HTTP JSON spans. Checks the standard's attributes, the
//! pseudonymised subject id, the trace context, one span per disclosed person, the processing
//! activity from the header or the config, that a collector that is down, refusing or hanging
//! never delays a request nor touches its audit records, and that the exporter, a follower of
//! the audit log, loses no span: every decided request's spans arrive once the collector is
//! back, across a restart of the gate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, Options, raadpleeg};
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;

const DEFAULT_ACTIVITY: &str = "https://register.gemeente.example/verwerkingsactiviteiten/parkeren";
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-logboek";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// How the collector answers.
const ACCEPT: u8 = 0;
const REFUSE: u8 = 1;
const HANG: u8 = 2;

/// A collector on 127.0.0.1:0 that keeps every request body it accepted.
struct Collector {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Export requests that arrived, whatever the answer.
    arrived: Arc<Mutex<Vec<String>>>,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start(mode: u8) -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(AtomicU8::new(mode));
        let (b, a, m) = (bodies.clone(), arrived.clone(), mode.clone());
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (b, a, m) = (b.clone(), a.clone(), m.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (b, a, m) = (b.clone(), a.clone(), m.clone());
                    async move {
                        let ct = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        a.lock().unwrap().push(format!("{path} {ct}"));
                        match m.load(Ordering::SeqCst) {
                            HANG => std::future::pending::<()>().await,
                            REFUSE => {
                                let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                return Ok::<_, std::convert::Infallible>(r);
                            }
                            _ => {}
                        }
                        b.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                conns.push(tokio::spawn(
                    http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
                ));
            }
        });
        Collector {
            addr,
            bodies,
            arrived,
            mode,
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        out.push(s.clone());
                    }
                }
            }
        }
        out
    }

    /// Waits until at least `n` spans arrived (at most 10 s), then returns all of them.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

fn hmac_hex(id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(id.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

fn key_file(h_tmp: &tempfile::TempDir) -> PathBuf {
    let p = h_tmp.path().join("logboek.key");
    std::fs::write(&p, KEY).unwrap();
    p
}

/// A gate exporting to `endpoint`, with the admin listener, the subject key given as
/// `audit.subject_key` (so audit records and spans share pseudonyms) and `logboek_extra` keys.
async fn gate(endpoint: &str, logboek_extra: &str) -> (Harness, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(&keys);
    let h = gate_in(endpoint, logboek_extra, &key, None).await;
    (h, keys)
}

/// [`gate`] with a given key file and, when given, audit directory (to restart a gate on it).
async fn gate_in(
    endpoint: &str,
    logboek_extra: &str,
    key: &std::path::Path,
    audit_dir: Option<PathBuf>,
) -> Harness {
    Harness::start_with(Options {
        audit_extra: format!("subject_key = \"{}\"", key.display()),
        audit_dir,
        extra_config: format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[logboek]\notlp_endpoint = \"{endpoint}\"\n\
             processing_activity_id = \"{DEFAULT_ACTIVITY}\"\nservice_name = \"gate-test\"\n{logboek_extra}\n"
        ),
        ..Options::default()
    })
    .await
}

async fn lookup(h: &Harness, bsn: &str, extra: &[(&str, &str)]) -> common::Answer {
    let auth = format!("Bearer {}", h.emp042());
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("x-case-id", "Z-OPEN"),
    ];
    headers.extend_from_slice(extra);
    let body = raadpleeg(&[bsn], &["naam"]).to_string();
    h.send(
        "POST",
        "/haalcentraal/api/brp/personen",
        &headers,
        Some(&body),
    )
    .await
}

fn request_id(a: &common::Answer) -> String {
    a.headers["x-request-id"].to_str().unwrap().to_string()
}

/// The value of one series on `/metrics`.
async fn metric(h: &Harness, series: &str) -> f64 {
    let (status, text) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn a_lookup_gives_one_span_with_the_standard_attributes_and_the_request_trace() {
    let collector = Collector::start(ACCEPT).await;
    let (h, _keys) = gate(&collector.endpoint(), "").await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let a = lookup(&h, "999993653", &[("traceparent", &traceparent)]).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let spans = collector.wait_for(1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];

    // The request's trace: the client's trace id; the parent is the gate's span, the one the
    // registry received in `traceparent`; the client's span is the foreign operation.
    assert_eq!(span["traceId"], CLIENT_TRACE);
    let upstream_tp = h
        .registry
        .seen()
        .iter()
        .rev()
        .find_map(|r| r.header("traceparent").map(str::to_string))
        .unwrap();
    let gate_span = upstream_tp.split('-').nth(2).unwrap();
    assert_eq!(span["parentSpanId"], gate_span);
    assert_ne!(span["spanId"], gate_span);
    assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    assert_eq!(
        attr(span, "dpl.core.foreign_operation.span_id"),
        Some(CLIENT_SPAN)
    );

    // The standard's core attributes; the subject is the HMAC of the BSN, never the BSN.
    assert_eq!(
        attr(span, "dpl.core.processing_activity_id"),
        Some(DEFAULT_ACTIVITY)
    );
    assert_eq!(
        attr(span, "dpl.core.data_subject_id"),
        Some(hmac_hex("999993653").as_str())
    );
    assert_eq!(attr(span, "dpl.core.data_subject_id_type"), Some("BSN"));
    assert_eq!(span["name"], "brp:lookup");
    assert_eq!(span["status"]["code"], 1);
    let start: u128 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u128 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && start <= end, "{start} {end}");
    let body = serde_json::to_string(&*collector.bodies.lock().unwrap()).unwrap();
    assert!(!body.contains("999993653"), "clear BSN exported: {body}");
    let resource = collector.bodies.lock().unwrap()[0]["resourceSpans"][0]["resource"].clone();
    assert!(
        resource["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "gate-test")
    );
    assert!(
        collector.arrived.lock().unwrap()[0].starts_with("/v1/traces application/json"),
        "{:?}",
        collector.arrived.lock().unwrap()
    );

    // The audit record of the same request: same trace, same pseudonym.
    let decision = h.record_of(&request_id(&a), "decision");
    assert_eq!(decision["trace_id"], CLIENT_TRACE);
    // The trace context the span is built from is in the record (audit format 1.4).
    assert_eq!(decision["span_id"], gate_span);
    assert_eq!(decision["client_span_id"], CLIENT_SPAN);
    // The span id is derived from the gate and the outcome record's seq.
    let outcome = h.record_of(&request_id(&a), "outcome");
    assert_eq!(
        span["spanId"],
        purpose_gate::logboek::span_id("test-gate", outcome["seq"].as_u64().unwrap(), 0)
    );
    assert_eq!(
        decision["resource"]["id"].as_str(),
        attr(span, "dpl.core.data_subject_id")
    );
    assert_eq!(
        metric(&h, "purpose_gate_logboek_spans_total{result=\"exported\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_search_gives_one_span_per_disclosed_person() {
    let collector = Collector::start(ACCEPT).await;
    let (h, _keys) = gate(&collector.endpoint(), "").await;
    let handhaver = h.token("emp-107", "0363", &["handhaver"]);
    // Javastraat 88: two living persons and one deceased; the answer gives no address for the
    // deceased person, so the case's address cannot release them: two spans.
    let search = json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1094HH",
                        "huisnummer": 88, "inclusiefOverledenPersonen": true,
                        "fields": ["burgerservicenummer", "naam"]});
    let a = h.brp(&handhaver, Some("Z-HANDHAVING"), &search).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let outcome = h.record_of(&request_id(&a), "outcome");
    let disclosed = outcome["disclosed"].as_array().unwrap().clone();
    assert_eq!(disclosed.len(), 2, "{disclosed:?}");
    let withheld: Vec<&Value> = outcome["release"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["released"] == false)
        .collect();
    assert_eq!(withheld.len(), 1, "{outcome}");
    assert_eq!(withheld[0]["code"], "residentNotInCase");
    let spans = collector.wait_for(2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let mut ids: Vec<&str> = spans
        .iter()
        .map(|s| attr(s, "dpl.core.data_subject_id").unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = disclosed
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "one span per disclosed person, same pseudonyms"
    );
    let parent = &spans[0]["parentSpanId"];
    let mut span_ids: Vec<&str> = spans
        .iter()
        .map(|s| s["spanId"].as_str().unwrap())
        .collect();
    span_ids.dedup();
    assert_eq!(span_ids.len(), 2);
    for s in &spans {
        assert_eq!(s["name"], "brp:search");
        assert_eq!(
            s["parentSpanId"], *parent,
            "children of the one request span"
        );
        assert_eq!(s["traceId"], spans[0]["traceId"]);
        assert_eq!(attr(s, "dpl.core.data_subject_id_type"), Some("BSN"));
        assert!(attr(s, "dpl.core.foreign_operation.span_id").is_none());
    }
    // The trace the gate started is the one in the audit record.
    assert_eq!(
        h.record_of(&request_id(&a), "decision")["trace_id"],
        spans[0]["traceId"]
    );
}

#[tokio::test]
async fn processing_activity_comes_from_the_header_else_the_config_and_denials_give_no_span() {
    let collector = Collector::start(ACCEPT).await;
    let (h, _keys) = gate(&collector.endpoint(), "").await;
    // A denied lookup (not a subject of the case) processed nothing: no span.
    let denied = lookup(&h, "999993872", &[]).await;
    assert_eq!(denied.status, 403);
    let own = "https://register.gemeente.example/verwerkingsactiviteiten/handhaving-42";
    let a = lookup(&h, "999993653", &[("x-verwerking", own)]).await;
    assert_eq!(a.status, 200);
    let b = lookup(&h, "999991802", &[]).await;
    assert_eq!(b.status, 200);
    let spans = collector.wait_for(2).await;
    // Give a span of the denied request time to arrive if there were one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = if collector.spans().len() > spans.len() {
        collector.spans()
    } else {
        spans
    };
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let activity_of = |bsn: &str| {
        spans
            .iter()
            .find(|s| attr(s, "dpl.core.data_subject_id") == Some(hmac_hex(bsn).as_str()))
            .and_then(|s| attr(s, "dpl.core.processing_activity_id"))
            .map(str::to_string)
    };
    assert_eq!(activity_of("999993653").as_deref(), Some(own));
    assert_eq!(activity_of("999991802").as_deref(), Some(DEFAULT_ACTIVITY));
    assert_eq!(activity_of("999993872"), None);
    // The header is recorded in the audit and forwarded, as before.
    assert_eq!(
        h.record_of(&request_id(&a), "decision")["purpose"]["verwerking"],
        own
    );
}

#[tokio::test]
async fn a_vehicle_holder_lookup_gives_a_kenteken_span() {
    let collector = Collector::start(ACCEPT).await;
    let (h, _keys) = gate(&collector.endpoint(), "").await;
    let auth = format!("Bearer {}", h.emp042());
    let a = h
        .send(
            "GET",
            "/rdw/voertuigen/XX-999-X/tenaamstelling",
            &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let spans = collector.wait_for(1).await;
    let vehicle = spans
        .iter()
        .find(|s| attr(s, "dpl.core.data_subject_id_type") == Some("kenteken"))
        .expect("a kenteken span");
    assert_eq!(
        attr(vehicle, "dpl.core.data_subject_id"),
        Some(hmac_hex("XX999X").as_str())
    );
    assert_eq!(vehicle["name"], "rdw:holder");
    let body = serde_json::to_string(&*collector.bodies.lock().unwrap()).unwrap();
    assert!(!body.contains("XX999X"), "clear kenteken exported: {body}");
}

/// Sends `n` lookups one after the other; each must answer 200 within `limit`.
async fn lookups_answer_promptly(h: &Harness, n: usize, limit: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let a = lookup(h, "999993653", &[]).await;
        assert_eq!(a.status, 200, "{:?}", a.json());
        assert!(
            started.elapsed() < limit,
            "a request waited for the collector: {:?}",
            started.elapsed()
        );
        ids.push(request_id(&a));
    }
    ids
}

fn audit_intact(h: &Harness, ids: &[String]) {
    for id in ids {
        let kinds: Vec<String> = h
            .records_of(id)
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["decision", "outcome"], "request {id}");
    }
    assert!(purpose_gate::audit::verify(&h.audit_dir).is_ok());
}

/// Waits (at most `secs`) until `series` on `/metrics` is at least `min`; returns its value.
async fn metric_reaches(h: &Harness, series: &str, min: f64, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = metric(h, series).await;
        if v >= min || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most `secs`) until `series` on `/metrics` is 0; returns its value.
async fn metric_drains(h: &Harness, series: &str, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = metric(h, series).await;
        if v == 0.0 || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The trace ids of the requests, from their decision records.
fn traces_of(h: &Harness, ids: &[String]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            h.record_of(id, "decision")["trace_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_hanging_collector_delays_no_request_and_nothing_is_dropped() {
    let collector = Collector::start(HANG).await;
    let (h, _keys) = gate(
        &collector.endpoint(),
        "timeout = \"300ms\"\nmax_backoff = \"200ms\"\nmax_batch = 1",
    )
    .await;
    let ids = lookups_answer_promptly(&h, 6, Duration::from_secs(5)).await;
    audit_intact(&h, &ids);
    // The export hangs: attempts time out and are retried; the spans wait in the log.
    assert!(metric_reaches(&h, "purpose_gate_logboek_export_errors_total", 2.0, 10).await >= 2.0);
    assert!(metric(&h, "purpose_gate_logboek_backlog_records").await >= 2.0);
    assert!(metric(&h, "purpose_gate_logboek_backlog_age_seconds").await > 0.0);
    assert!(collector.spans().is_empty());
    assert_eq!(
        metric(&h, "purpose_gate_logboek_spans_total{result=\"exported\"}").await,
        0.0
    );
    let (_, ready) = h.admin_get("/readyz").await;
    assert!(
        ready.contains("logboek:") && ready.contains("exports failing"),
        "{ready}"
    );
    // The collector answers again: every request's span arrives.
    collector.mode.store(ACCEPT, Ordering::SeqCst);
    let spans = collector.wait_for(6).await;
    let mut got: Vec<&str> = spans
        .iter()
        .map(|s| s["traceId"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    got.dedup();
    let mut want = traces_of(&h, &ids);
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(
        metric_reaches(
            &h,
            "purpose_gate_logboek_spans_total{result=\"exported\"}",
            6.0,
            5
        )
        .await,
        6.0
    );
    assert_eq!(
        metric_drains(&h, "purpose_gate_logboek_backlog_records", 5).await,
        0.0
    );
}

#[tokio::test]
async fn a_collector_that_is_down_or_refusing_is_retried_until_it_accepts() {
    // Down: a port that was free a moment ago. Exports fail and are retried; the backlog grows.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (h, _keys) = gate(&format!("http://{dead}/v1/traces"), "timeout = \"1s\"").await;
    let ids = lookups_answer_promptly(&h, 3, Duration::from_secs(5)).await;
    audit_intact(&h, &ids);
    assert!(metric_reaches(&h, "purpose_gate_logboek_export_errors_total", 2.0, 10).await >= 2.0);
    // Six records (a decision and an outcome each) were written; the exporter can have passed
    // only the first decision (it gives no span by itself), never the first outcome.
    assert!(metric(&h, "purpose_gate_logboek_backlog_records").await >= 5.0);
    drop(h);

    // Refusing (503), then accepting: the refused spans are sent again, with the same ids.
    let collector = Collector::start(REFUSE).await;
    let (h, _keys) = gate(&collector.endpoint(), "max_backoff = \"200ms\"").await;
    let ids = lookups_answer_promptly(&h, 2, Duration::from_secs(5)).await;
    audit_intact(&h, &ids);
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.arrived.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(collector.arrived.lock().unwrap().len() >= 3);
    assert!(collector.spans().is_empty());
    collector.mode.store(ACCEPT, Ordering::SeqCst);
    let spans = collector.wait_for(2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let mut got: Vec<&str> = spans
        .iter()
        .map(|s| s["traceId"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    let mut want = traces_of(&h, &ids);
    want.sort_unstable();
    assert_eq!(got, want);
    lookups_answer_promptly(&h, 1, Duration::from_secs(5)).await;
    assert_eq!(collector.wait_for(3).await.len(), 3);
    assert_eq!(
        metric_reaches(
            &h,
            "purpose_gate_logboek_spans_total{result=\"exported\"}",
            3.0,
            5
        )
        .await,
        3.0
    );
}

/// One span expected per forwarded request of this test (one subject each): the request's trace,
/// its subject's pseudonym, and the span id derived from the gate id and the outcome's seq.
fn expected_spans(h: &Harness, ids: &[String]) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = ids
        .iter()
        .map(|id| {
            let decision = h.record_of(id, "decision");
            let outcome = h.record_of(id, "outcome");
            (
                decision["trace_id"].as_str().unwrap().to_string(),
                decision["resource"]["id"].as_str().unwrap().to_string(),
                purpose_gate::logboek::span_id("test-gate", outcome["seq"].as_u64().unwrap(), 0),
            )
        })
        .collect();
    out.sort();
    out
}

fn received(collector: &Collector) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = collector
        .spans()
        .iter()
        .map(|s| {
            (
                s["traceId"].as_str().unwrap().to_string(),
                attr(s, "dpl.core.data_subject_id").unwrap().to_string(),
                s["spanId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// 24 concurrent lookups: 16 of persons in the case (allowed), 8 of one who is not (denied, no
/// span). Returns the allowed requests' ids.
async fn load(h: &Harness) -> Vec<String> {
    let sends = (0..24).map(|i| {
        let bsn = match i % 3 {
            0 => "999993653",
            1 => "999991802",
            _ => "999993872",
        };
        lookup(h, bsn, &[])
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut allowed = Vec::new();
    for a in &answers {
        match a.status.as_u16() {
            200 => allowed.push(request_id(a)),
            403 => {}
            s => panic!("unexpected status {s}: {:?}", a.json()),
        }
    }
    assert_eq!(allowed.len(), 16);
    allowed
}

/// Issue 13: the Logboek follower with a collector that is down for a while: every span arrives
/// once the collector is back (at least once, none missing), across a restart of the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_for_a_while_and_a_restart_lose_no_span() {
    let collector = Collector::start(REFUSE).await;
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(&keys);
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let extra = "max_backoff = \"200ms\"\nmax_batch = 7";
    let mut h = gate_in(&collector.endpoint(), extra, &key, Some(audit_dir.clone())).await;

    // Load while the collector refuses: concurrent lookups of two persons, and denials.
    let mut ids = load(&h).await;
    assert!(metric_reaches(&h, "purpose_gate_logboek_export_errors_total", 1.0, 10).await >= 1.0);
    assert!(collector.spans().is_empty());
    let cursor_before: Value =
        serde_json::from_slice(&std::fs::read(audit_dir.join("logboek.cursor")).unwrap()).unwrap();

    // Restart the gate on the same log while the collector still refuses.
    h.stop().await;
    let cursor: Value =
        serde_json::from_slice(&std::fs::read(audit_dir.join("logboek.cursor")).unwrap()).unwrap();
    assert_eq!(
        cursor, cursor_before,
        "nothing was accepted, the cursor did not move"
    );
    let h = gate_in(&collector.endpoint(), extra, &key, Some(audit_dir.clone())).await;
    ids.extend(load(&h).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(collector.spans().is_empty());
    // 80 records (48 decisions, 32 outcomes); nothing was accepted, so the exporter can have
    // passed at most the decisions before the first outcome (24).
    assert!(metric(&h, "purpose_gate_logboek_backlog_records").await >= 56.0);

    // The collector is back: every forwarded request's span arrives, from before and after the
    // restart; repeats (at least once) carry the same span id.
    collector.mode.store(ACCEPT, Ordering::SeqCst);
    let want = expected_spans(&h, &ids);
    assert_eq!(want.len(), 32);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = received(&collector);
    got.dedup();
    while got.len() < want.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = received(&collector);
        got.dedup();
    }
    assert_eq!(
        got, want,
        "every span once its collector is back, none missing, none other"
    );
    let pseudonyms = [hmac_hex("999993653"), hmac_hex("999991802")];
    assert!(
        got.iter()
            .all(|(_, subject, _)| pseudonyms.contains(subject))
    );

    // The cursor reached the log's end; a restart does not export the history again.
    assert_eq!(
        metric_drains(&h, "purpose_gate_logboek_backlog_records", 5).await,
        0.0
    );
    let mut h = h;
    h.stop().await;
    let before = collector.spans().len();
    let h = gate_in(&collector.endpoint(), extra, &key, Some(audit_dir.clone())).await;
    let more = lookups_answer_promptly(&h, 2, Duration::from_secs(5)).await;
    let spans = collector.wait_for(before + 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        collector.spans().len(),
        before + 2,
        "only the new requests' spans"
    );
    let new: Vec<String> = spans[before..]
        .iter()
        .map(|s| s["spanId"].as_str().unwrap().to_string())
        .collect();
    let mut new_sorted = new.clone();
    new_sorted.sort();
    let mut expected: Vec<String> = expected_spans(&h, &more).into_iter().map(|e| e.2).collect();
    expected.sort();
    assert_eq!(new_sorted, expected);
}

#[tokio::test]
async fn logboek_without_a_subject_key_is_a_config_error() {
    let text = format!(
        "[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k.json\"\n\
         [logboek]\notlp_endpoint = \"http://collector:4318/v1/traces\"\n\
         processing_activity_id = \"{DEFAULT_ACTIVITY}\"\n"
    );
    let err =
        purpose_gate::config::Config::parse(&text, std::path::Path::new("/etc/pg")).unwrap_err();
    assert!(err.contains("logboek.subject_key"), "{err}");
    let with_key = format!("{text}subject_key = \"lb.key\"\n");
    let cfg =
        purpose_gate::config::Config::parse(&with_key, std::path::Path::new("/etc/pg")).unwrap();
    let lb = cfg.logboek.unwrap();
    assert_eq!(lb.subject_key.unwrap(), PathBuf::from("/etc/pg/lb.key"));
    assert_eq!(lb.queue_size, 4096);
    assert_eq!(lb.max_backoff.0, Duration::from_secs(30));
    assert_eq!(lb.service_name, "purpose-gate");
    let bad = text.replace("http://collector:4318", "ftp://collector");
    assert!(
        purpose_gate::config::Config::parse(
            &format!("{bad}subject_key = \"k\"\n"),
            std::path::Path::new("/")
        )
        .unwrap_err()
        .contains("logboek.otlp_endpoint")
    );
}
