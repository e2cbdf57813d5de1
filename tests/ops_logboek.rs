//! Logboek Dataverwerkingen export end to end: a test collector (a real HTTP server on
//! 127.0.0.1:0) receives the gate's OTLP/HTTP JSON spans. Checks the standard's attributes, the
//! pseudonymised subject id, the trace context, one span per disclosed person, the processing
//! activity from the header or the config, and that a collector that is down, refusing or
//! hanging never delays a request nor touches its audit records.

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
    let h = Harness::start_with(Options {
        audit_extra: format!("subject_key = \"{}\"", key.display()),
        extra_config: format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[logboek]\notlp_endpoint = \"{endpoint}\"\n\
             processing_activity_id = \"{DEFAULT_ACTIVITY}\"\nservice_name = \"gate-test\"\n{logboek_extra}\n"
        ),
        ..Options::default()
    })
    .await;
    (h, keys)
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

#[tokio::test]
async fn a_hanging_collector_delays_no_request_and_overflow_is_dropped() {
    let collector = Collector::start(HANG).await;
    // The export waits up to 30 s; two spans fit in the queue.
    let (h, _keys) = gate(
        &collector.endpoint(),
        "timeout = \"30s\"\nqueue_size = 2\nmax_batch = 1",
    )
    .await;
    let ids = lookups_answer_promptly(&h, 6, Duration::from_secs(5)).await;
    audit_intact(&h, &ids);
    // One span hangs in the export, two wait in the queue, the other three were dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while collector.arrived.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(collector.arrived.lock().unwrap().len(), 1);
    let dropped = metric(&h, "purpose_gate_logboek_spans_total{result=\"dropped\"}").await;
    assert!(dropped >= 3.0, "dropped {dropped}");
    assert_eq!(
        metric(&h, "purpose_gate_logboek_spans_total{result=\"exported\"}").await,
        0.0
    );
    // The collector never answered: nothing reached it as accepted.
    assert!(collector.spans().is_empty());
    collector.mode.store(ACCEPT, Ordering::SeqCst);
}

#[tokio::test]
async fn a_collector_that_is_down_or_refusing_is_counted_as_failed() {
    // Down: a port that was free a moment ago.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (h, _keys) = gate(&format!("http://{dead}/v1/traces"), "timeout = \"1s\"").await;
    let ids = lookups_answer_promptly(&h, 3, Duration::from_secs(5)).await;
    audit_intact(&h, &ids);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut failed = 0.0;
    while failed < 3.0 && Instant::now() < deadline {
        failed = metric(&h, "purpose_gate_logboek_spans_total{result=\"failed\"}").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed, 3.0);

    // Refusing (503), then accepting again: later spans are exported.
    let collector = Collector::start(REFUSE).await;
    let (h, _keys) = gate(&collector.endpoint(), "").await;
    let ids = lookups_answer_promptly(&h, 2, Duration::from_secs(5)).await;
    audit_intact(&h, &ids);
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.arrived.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.mode.store(ACCEPT, Ordering::SeqCst);
    // Let the refused exports be counted before the next request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metric(&h, "purpose_gate_logboek_spans_total{result=\"failed\"}").await,
        2.0
    );
    lookups_answer_promptly(&h, 1, Duration::from_secs(5)).await;
    assert_eq!(collector.wait_for(1).await.len(), 1);
    assert_eq!(
        metric(&h, "purpose_gate_logboek_spans_total{result=\"exported\"}").await,
        1.0
    );
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
