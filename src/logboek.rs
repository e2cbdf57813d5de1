//! Logboek Dataverwerkingen: one OpenTelemetry span per data subject per processing, exported
//! over OTLP/HTTP (JSON encoding) to a collector.
//!
//! The standard (Logius, "Logboek Dataverwerkingen", component Applicatie) asks an application to
//! write a log line per action, a separate child action per data subject ("voor iedere
//! Betrokkene een aparte logregel"), with `dpl.core.processing_activity_id`,
//! `dpl.core.data_subject_id` (pseudonymisation recommended) and `dpl.core.data_subject_id_type`,
//! and to record W3C Trace Context received from a caller as `foreign_operation`.
//!
//! Guarantees:
//! - only requests that were allowed (or passed in shadow mode) and forwarded produce spans: a
//!   refused request processed no personal data at the registry;
//! - every span is a child of the gate's span for the request (the parent id of the
//!   `traceparent` the registry received) in the request's trace;
//! - `dpl.core.data_subject_id` is `hmac-sha256:<hex>` of the BSN (or kenteken) with the
//!   configured key, never the identifier itself;
//! - the request path only calls [`Logboek::record`], which never waits: spans go into a bounded
//!   queue with `try_send`; a full queue drops them. One background task exports batches, each
//!   bounded by `logboek.timeout`; a failed export is not retried. Every span is counted once as
//!   exported, dropped or failed (`purpose_gate_logboek_spans_total`);
//! - the audit log does not depend on this: a request's decision record is durable before it is
//!   forwarded, and its spans are handed over after its outcome record was written.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::audit::pseudonym::SubjectKey;
use crate::config::{AuditConfig, LogboekConfig};
use crate::forward::TraceContext;
use crate::metrics::{Metrics, SpanResult};

/// The standard's attribute names (namespace `dpl.core`).
pub const PROCESSING_ACTIVITY_ID: &str = "dpl.core.processing_activity_id";
pub const DATA_SUBJECT_ID: &str = "dpl.core.data_subject_id";
pub const DATA_SUBJECT_ID_TYPE: &str = "dpl.core.data_subject_id_type";
pub const FOREIGN_OPERATION_SPAN_ID: &str = "dpl.core.foreign_operation.span_id";

/// OTLP `Span.SpanKind` `SPAN_KIND_INTERNAL`: an action inside the gate.
const SPAN_KIND_INTERNAL: u8 = 1;
/// Largest collector answer read (it is only inspected for `partialSuccess`).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The OTLP status of a processing (Logboek `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// Processed without an error of the gate or the registry (e.g. the registry answered 404).
    Unset,
    /// The registry answered with success.
    Ok,
    /// The processing failed (registry unreachable, too slow, 5xx, unreadable answer):
    /// `exception.type` and `exception.message` are set.
    Error { kind: String, message: String },
}

/// A data subject of a processing, before pseudonymisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A person, by BSN (`dpl.core.data_subject_id_type` = `BSN`).
    Bsn(String),
    /// A vehicle, by kenteken (type `kenteken`): its holder is the data subject.
    Kenteken(String),
}

/// What the gate knows of one forwarded request, for its spans.
pub struct Processing<'a> {
    pub trace: &'a TraceContext,
    /// The request's `X-Verwerking`, when sent; else `logboek.processing_activity_id`.
    pub processing_activity: Option<&'a str>,
    /// The Cedar action (`brp:lookup`, …), the span's name.
    pub action: &'a str,
    pub subjects: Vec<Subject>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub status: SpanStatus,
}

/// One span, ready to encode.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    start_ns: i64,
    end_ns: i64,
    attributes: Vec<(&'static str, String)>,
    status: SpanStatus,
}

enum Msg {
    Span(Box<Span>),
    /// Answered once every span queued before it was exported (or failed).
    Flush(oneshot::Sender<()>),
}

/// The exporter: a bounded queue and the background task that empties it.
pub struct Logboek {
    tx: mpsc::Sender<Msg>,
    default_activity: String,
    key: SubjectKey,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where and how batches are sent.
struct Exporter {
    client: HttpClient,
    endpoint: Uri,
    timeout: Duration,
    max_batch: usize,
    resource: Value,
    metrics: Arc<Metrics>,
}

impl Logboek {
    /// Reads the subject key and starts the export task (needs a Tokio runtime).
    pub fn start(
        cfg: &LogboekConfig,
        audit: &AuditConfig,
        gate_id: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Logboek, String> {
        let key_file = cfg.key_file(audit).ok_or_else(|| {
            "missing key `logboek.subject_key` (or `audit.subject_key`)".to_string()
        })?;
        let key = SubjectKey::load(key_file).map_err(|e| format!("logboek: {e}"))?;
        let endpoint: Uri = cfg.otlp_endpoint.parse().map_err(|_| {
            format!(
                "`logboek.otlp_endpoint` = `{}` is not a valid URL",
                crate::model::truncate_for_message(&cfg.otlp_endpoint)
            )
        })?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("logboek: cannot set up TLS: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        let resource = json!({"attributes": [
            attr("service.name", &cfg.service_name),
            attr("service.instance.id", gate_id),
            attr("service.version", env!("CARGO_PKG_VERSION")),
        ]});
        let (tx, rx) = mpsc::channel(cfg.queue_size);
        let exporter = Exporter {
            client,
            endpoint,
            timeout: cfg.timeout.0,
            max_batch: cfg.max_batch,
            resource,
            metrics: Arc::clone(&metrics),
        };
        tokio::spawn(exporter.run(rx));
        Ok(Logboek {
            tx,
            default_activity: cfg.processing_activity_id.trim().to_string(),
            key,
            metrics,
            timeout: cfg.timeout.0,
        })
    }

    /// Queues one span per subject of a processing. Never waits: a span that does not fit in
    /// the queue is dropped and counted.
    pub fn record(&self, p: &Processing<'_>) {
        for span in self.spans(p) {
            match self.tx.try_send(Msg::Span(Box::new(span))) {
                Ok(()) => {}
                Err(_) => self.metrics.logboek_spans(SpanResult::Dropped, 1),
            }
        }
    }

    /// Waits (at most `logboek.timeout` plus a second) until every span queued so far was
    /// exported or failed; at shutdown.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        let budget = self.timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(budget, async {
            if self.tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        })
        .await;
    }

    fn spans(&self, p: &Processing<'_>) -> Vec<Span> {
        let activity = p
            .processing_activity
            .unwrap_or(&self.default_activity)
            .to_string();
        let start_ns = nanos(p.start);
        let end_ns = nanos(p.end).max(start_ns);
        p.subjects
            .iter()
            .map(|s| {
                let (id, kind) = match s {
                    Subject::Bsn(b) => (self.key.pseudonymise(b), "BSN"),
                    Subject::Kenteken(k) => (self.key.pseudonymise(k), "kenteken"),
                };
                let mut attributes = vec![
                    (PROCESSING_ACTIVITY_ID, activity.clone()),
                    (DATA_SUBJECT_ID, id),
                    (DATA_SUBJECT_ID_TYPE, kind.to_string()),
                ];
                if let Some(client) = &p.trace.client_span_id {
                    attributes.push((FOREIGN_OPERATION_SPAN_ID, client.clone()));
                }
                if let SpanStatus::Error { kind, message } = &p.status {
                    attributes.push(("exception.type", kind.clone()));
                    attributes.push(("exception.message", message.clone()));
                }
                Span {
                    trace_id: p.trace.trace_id.clone(),
                    span_id: new_span_id(),
                    parent_span_id: p.trace.span_id.clone(),
                    name: p.action.to_string(),
                    start_ns,
                    end_ns,
                    attributes,
                    status: p.status.clone(),
                }
            })
            .collect()
    }
}

impl Exporter {
    /// Takes what is queued (up to `max_batch` spans), exports it, repeats; ends when the
    /// gate (the only sender) is dropped.
    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut healthy = true;
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Span(s) => batch.push(*s),
                    Msg::Flush(done) => flushes.push(done),
                }
                next = if batch.len() < self.max_batch {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                let n = batch.len() as u64;
                match self.export(&batch).await {
                    Ok(rejected) => {
                        self.metrics
                            .logboek_spans(SpanResult::Exported, n.saturating_sub(rejected));
                        if rejected > 0 {
                            self.metrics.logboek_spans(SpanResult::Failed, rejected);
                            tracing::warn!(rejected, "logboek collector rejected spans");
                        }
                        if !healthy {
                            tracing::info!("logboek export works again");
                            healthy = true;
                        }
                    }
                    Err(e) => {
                        self.metrics.logboek_spans(SpanResult::Failed, n);
                        // One warning when exports start failing, not one per batch.
                        if healthy {
                            tracing::warn!(error = %e, spans = n, "logboek export failed; spans are counted as failed until it works again");
                            healthy = false;
                        }
                    }
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// POSTs one `ExportTraceServiceRequest`; returns the number of spans the collector
    /// rejected (`partialSuccess.rejectedSpans`).
    async fn export(&self, batch: &[Span]) -> Result<u64, String> {
        let body = encode(&self.resource, batch);
        let req = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("cannot reach the collector: {e}"))?;
            let status = resp.status();
            let answer = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if !status.is_success() {
                return Err(format!("the collector answered {status}"));
            }
            let rejected = serde_json::from_slice::<Value>(&answer)
                .ok()
                .and_then(|v| rejected_spans(&v))
                .unwrap_or(0);
            Ok(rejected)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("the collector did not answer within {:?}", self.timeout))?
    }
}

/// `partialSuccess.rejectedSpans` of an `ExportTraceServiceResponse` (an int64: a JSON string
/// or number).
fn rejected_spans(answer: &Value) -> Option<u64> {
    match answer.get("partialSuccess")?.get("rejectedSpans")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` (protobuf JSON mapping: lowerCamelCase fields,
/// trace and span ids as hex, 64-bit integers as decimal strings, enums as numbers).
fn encode(resource: &Value, batch: &[Span]) -> Vec<u8> {
    let spans: Vec<Value> = batch
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s.attributes.iter().map(|(k, v)| attr(k, v)).collect();
            let status = match &s.status {
                SpanStatus::Unset => json!({"code": 0}),
                SpanStatus::Ok => json!({"code": 1}),
                SpanStatus::Error { message, .. } => json!({"code": 2, "message": message}),
            };
            json!({
                "traceId": s.trace_id,
                "spanId": s.span_id,
                "parentSpanId": s.parent_span_id,
                "name": s.name,
                "kind": SPAN_KIND_INTERNAL,
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": attributes,
                "status": status,
            })
        })
        .collect();
    let doc = json!({"resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{
            "scope": {"name": "purpose-gate", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans,
        }],
    }]});
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(0)
}

/// A random, non-zero 8-byte span id in lowercase hex.
fn new_span_id() -> String {
    loop {
        let b: [u8; 8] = crate::forward::rand_bytes();
        if b != [0; 8] {
            return hex::encode(b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn trace(client: Option<&str>) -> TraceContext {
        TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "1111111111111111".into(),
            client_span_id: client.map(str::to_string),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01".into(),
        }
    }

    fn logboek() -> (Logboek, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel(2);
        (
            Logboek {
                tx,
                default_activity: "https://register.example/va/1".into(),
                key: SubjectKey::new(vec![7; 32]).unwrap(),
                metrics: Arc::new(Metrics::default()),
                timeout: Duration::from_secs(1),
            },
            rx,
        )
    }

    fn processing<'a>(t: &'a TraceContext, subjects: Vec<Subject>) -> Processing<'a> {
        Processing {
            trace: t,
            processing_activity: None,
            action: "brp:lookup",
            subjects,
            start: Utc::now(),
            end: Utc::now(),
            status: SpanStatus::Ok,
        }
    }

    #[test]
    fn one_span_per_subject_with_pseudonym_and_parent() {
        let (lb, _rx) = logboek();
        let t = trace(Some("00f067aa0ba902b7"));
        let spans = lb.spans(&processing(
            &t,
            vec![
                Subject::Bsn("999993653".into()),
                Subject::Kenteken("XX999X".into()),
            ],
        ));
        assert_eq!(spans.len(), 2);
        let get = |s: &Span, k: &str| {
            s.attributes
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&spans[0], DATA_SUBJECT_ID),
            Some(lb.key.pseudonymise("999993653"))
        );
        assert_eq!(get(&spans[0], DATA_SUBJECT_ID_TYPE).as_deref(), Some("BSN"));
        assert_eq!(
            get(&spans[1], DATA_SUBJECT_ID_TYPE).as_deref(),
            Some("kenteken")
        );
        assert_eq!(
            get(&spans[0], FOREIGN_OPERATION_SPAN_ID).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(
            get(&spans[0], PROCESSING_ACTIVITY_ID).as_deref(),
            Some("https://register.example/va/1")
        );
        for s in &spans {
            assert_eq!(s.parent_span_id, "1111111111111111");
            assert_eq!(s.span_id.len(), 16);
            assert!(!s.attributes.iter().any(|(_, v)| v.contains("999993653")));
        }
        assert_ne!(spans[0].span_id, spans[1].span_id);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (lb, _rx) = logboek();
        let t = trace(None);
        let subjects = (0..5).map(|i| Subject::Bsn(format!("{i}"))).collect();
        lb.record(&processing(&t, subjects));
        assert_eq!(lb.metrics.logboek_span_count(SpanResult::Dropped), 3);
    }

    #[test]
    fn encoding_follows_the_otlp_json_mapping() {
        let (lb, _rx) = logboek();
        let t = trace(None);
        let mut p = processing(&t, vec![Subject::Bsn("999993653".into())]);
        p.status = SpanStatus::Error {
            kind: "upstreamTimeout".into(),
            message: "the registry did not answer in time".into(),
        };
        let spans = lb.spans(&p);
        let doc: Value =
            serde_json::from_slice(&encode(&json!({"attributes": []}), &spans)).unwrap();
        let span = &doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["parentSpanId"], "1111111111111111");
        assert_eq!(span["status"]["code"], 2);
        assert!(
            span["startTimeUnixNano"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
        assert!(
            span["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "exception.type"
                    && a["value"]["stringValue"] == "upstreamTimeout")
        );
    }

    #[test]
    fn rejected_spans_is_read_as_string_or_number() {
        assert_eq!(
            rejected_spans(&json!({"partialSuccess": {"rejectedSpans": "2"}})),
            Some(2)
        );
        assert_eq!(
            rejected_spans(&json!({"partialSuccess": {"rejectedSpans": 3}})),
            Some(3)
        );
        assert_eq!(rejected_spans(&json!({})), None);
    }
}
