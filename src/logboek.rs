//! Logboek Dataverwerkingen: one OpenTelemetry span per data subject per processing, exported
//! over OTLP/HTTP (JSON encoding) to a collector.
//!
//! The standard (Logius, "Logboek Dataverwerkingen", component Applicatie) asks an application to
//! write a log line per action, a separate child action per data subject ("voor iedere
//! Betrokkene een aparte logregel"), with `dpl.core.processing_activity_id`,
//! `dpl.core.data_subject_id` (pseudonymisation recommended) and `dpl.core.data_subject_id_type`,
//! to record W3C Trace Context received from a caller as `foreign_operation`, and to confirm
//! every write.
//!
//! The exporter is a **follower of the local audit log** (`docs/scale-out.md`), like the store's
//! shipper: it reads only records the writer reported durable, joins each outcome record with
//! the decision records of its request, builds the spans, exports them, and only then advances
//! its cursor (`logboek.cursor` in the audit directory, replaced atomically).
//!
//! Guarantees:
//! - at least once, none missing: a span is built from durable records only, and the cursor
//!   moves past a record only after the collector accepted its spans; a failed export is retried
//!   with capped exponential backoff, forever (a collector that is down makes the backlog grow,
//!   visible on `/metrics`); a restart resumes at the cursor;
//! - a retried span is recognisable: its id is derived from `(gate_id, seq of the outcome
//!   record, subject index)`, so every export of it carries the same `spanId`;
//! - only requests that were allowed (or passed in shadow mode) and forwarded produce spans (an
//!   outcome record exists only for those): a refused request processed no personal data;
//! - every span is a child of the gate's span for the request (the decision record's
//!   `span_id`, the parent id of the `traceparent` the registry received);
//! - `dpl.core.data_subject_id` is `hmac-sha256:<hex>` of the BSN (or kenteken), never the
//!   identifier itself. With `[audit] subject_key` the log holds that pseudonym already and
//!   Logboek must use the same key ([`subject_key`] refuses another one);
//! - the request path does not know about this: it writes its audit records as before.
//!
//! Refuses: a cursor file it cannot read (the gate does not start; the file names itself).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::audit::pseudonym::{PSEUDONYM_PREFIX, SubjectKey};
use crate::audit::{ReadDecision, ReadOutcome, Record, Verdict, parse_record};
use crate::config::{AuditConfig, LogboekConfig};
use crate::metrics::{Metrics, SpanResult};
use crate::store::ship::{LocalTail, line_seq};

/// The standard's attribute names (namespace `dpl.core`).
pub const PROCESSING_ACTIVITY_ID: &str = "dpl.core.processing_activity_id";
pub const DATA_SUBJECT_ID: &str = "dpl.core.data_subject_id";
pub const DATA_SUBJECT_ID_TYPE: &str = "dpl.core.data_subject_id_type";
pub const FOREIGN_OPERATION_SPAN_ID: &str = "dpl.core.foreign_operation.span_id";

/// The cursor file in the audit directory.
pub const CURSOR_FILE: &str = "logboek.cursor";

/// OTLP `Span.SpanKind` `SPAN_KIND_INTERNAL`: an action inside the gate.
const SPAN_KIND_INTERNAL: u8 = 1;
/// Largest collector answer read (it is only inspected for `partialSuccess`).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// First wait after a failed export; doubled per failure up to `logboek.max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long a decision waits for its outcome record. A request ends within its upstream's
/// timeout (seconds); a decision without an outcome after this long belongs to a request that
/// was refused as a whole (another subject denied) or cut off by a crash, and gets no span.
const OUTCOME_HORIZON: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// Most requests waiting for their outcome record; the oldest are forgotten beyond it.
const MAX_PENDING: usize = 100_000;
/// How often the cursor moves over records that gave no span (denials, reviews).
const IDLE_CURSOR_EVERY: Duration = Duration::from_secs(1);

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

/// A data subject of a processing, as the audit log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A person, by BSN or by its pseudonym (`dpl.core.data_subject_id_type` = `BSN`).
    Bsn(String),
    /// A vehicle, by kenteken (type `kenteken`): its holder is the data subject.
    Kenteken(String),
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

/// Where the exporter is in the log, as kept in [`CURSOR_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every span of every outcome record up to this seq was accepted by the collector.
    pub exported: u64,
    /// Where reading resumes: the first decision record of a request whose outcome record comes
    /// after `exported` (so its spans can be built), else `exported + 1`.
    pub from: u64,
}

impl Cursor {
    /// Reads the cursor of an audit directory; `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Cursor>, String> {
        let path = dir.join(CURSOR_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "logboek cursor `{}`: cannot read: {e}",
                    path.display()
                ));
            }
        };
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "logboek cursor `{}`: not a cursor ({e}); remove it to export from the end of the log",
                path.display()
            )
        })?;
        if c.from == 0 || c.from > c.exported + 1 {
            return Err(format!(
                "logboek cursor `{}`: `from` = {} does not fit `exported` = {}; remove it to export from the end of the log",
                path.display(),
                c.from,
                c.exported
            ));
        }
        Ok(Some(c))
    }

    /// Replaces the cursor file atomically: a temporary file, fsynced, renamed over it, and the
    /// directory fsynced, so a crash leaves either the old or the new cursor.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
        let mut bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(CURSOR_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// What the follower has done, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct LogboekStatus {
    /// Last seq whose spans the collector accepted (the cursor).
    pub exported_seq: AtomicU64,
    /// Last seq the local writer reported durable.
    pub durable_seq: AtomicU64,
    /// Unix milliseconds of the oldest outcome record whose spans wait for export; 0 when none.
    pub oldest_waiting_ms: AtomicI64,
    /// Failed export attempts (each is retried).
    pub export_errors: AtomicU64,
    /// Whether the last export attempt failed.
    pub failing: AtomicBool,
}

impl LogboekStatus {
    /// Durable records the follower has not yet passed.
    pub fn backlog(&self) -> u64 {
        self.durable_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.exported_seq.load(Ordering::Relaxed))
    }

    /// Age of the oldest span waiting for export (zero when none waits).
    pub fn backlog_age(&self) -> Duration {
        let oldest = self.oldest_waiting_ms.load(Ordering::Relaxed);
        if oldest == 0 {
            return Duration::ZERO;
        }
        let now = Utc::now().timestamp_millis();
        Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0))
    }
}

/// The exporter of a running gate: the follower task and what it reports.
pub struct Logboek {
    status: Arc<LogboekStatus>,
    /// The writer's last durable seq, read again for each report (the follower may be waiting).
    durable: Arc<dyn Fn() -> u64 + Send + Sync>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where and how batches are sent.
struct Exporter {
    client: HttpClient,
    endpoint: Uri,
    timeout: Duration,
    resource: Value,
}

/// The follower: reads the log, builds spans, exports them, moves the cursor.
struct Follower {
    dir: PathBuf,
    gate_id: String,
    key: SubjectKey,
    default_activity: String,
    max_batch: usize,
    max_backoff: Duration,
    exporter: Exporter,
    status: Arc<LogboekStatus>,
    metrics: Arc<Metrics>,
    durable: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// The key for `dpl.core.data_subject_id`: `logboek.subject_key`, else `audit.subject_key`.
///
/// With `[audit] subject_key` the log holds `hmac-sha256:` pseudonyms of BSNs, not BSNs, and a
/// follower of the log cannot make another key's pseudonym of them. So Logboek then uses the
/// audit's key: a `logboek.subject_key` holding another key is refused.
pub fn subject_key(cfg: &LogboekConfig, audit: &AuditConfig) -> Result<SubjectKey, String> {
    let key_file = cfg
        .key_file(audit)
        .ok_or_else(|| "missing key `logboek.subject_key` (or `audit.subject_key`)".to_string())?;
    let key = SubjectKey::load(key_file).map_err(|e| format!("logboek: {e}"))?;
    if let (Some(own), Some(audit_file)) = (&cfg.subject_key, &audit.subject_key)
        && own != audit_file
    {
        let audit_key = SubjectKey::load(audit_file).map_err(|e| format!("audit: {e}"))?;
        // Equal pseudonyms of a probe: the same key (HMAC-SHA256 of any input then agrees).
        const PROBE: &str = "purpose-gate logboek key probe";
        if audit_key.pseudonymise(PROBE) != key.pseudonymise(PROBE) {
            return Err(format!(
                "`logboek.subject_key` (`{}`) holds another key than `audit.subject_key` (`{}`): the audit log holds pseudonyms made with `audit.subject_key`, and Logboek spans are built from the log, so both must be the same key; leave `logboek.subject_key` out",
                own.display(),
                audit_file.display()
            ));
        }
    }
    Ok(key)
}

impl Logboek {
    /// Checks the subject key, reads (or creates) the cursor and starts the follower of the
    /// audit log in `dir` (needs a Tokio runtime). `durable` reports the writer's last durable
    /// seq.
    pub fn start(
        cfg: &LogboekConfig,
        audit: &AuditConfig,
        gate_id: &str,
        metrics: Arc<Metrics>,
        durable: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Logboek, String> {
        let key = subject_key(cfg, audit)?;
        let endpoint: Uri = cfg.otlp_endpoint.parse().map_err(|_| {
            format!(
                "`logboek.otlp_endpoint` = `{}` is not a valid URL",
                crate::model::truncate_for_message(&cfg.otlp_endpoint)
            )
        })?;
        let dir = audit.dir.clone();
        let durable_now = durable();
        let cursor = match Cursor::load(&dir)? {
            Some(c) if c.exported <= durable_now => c,
            Some(c) => {
                tracing::error!(
                    cursor = c.exported,
                    log_end = durable_now,
                    "logboek: the cursor is past the end of the audit log (a replaced log?); exporting from the end of the log"
                );
                Cursor {
                    exported: durable_now,
                    from: durable_now + 1,
                }
            }
            None => {
                // A first start with `[logboek]`: the requests from now on. Earlier ones were
                // exported by an earlier version (or not configured to be).
                let c = Cursor {
                    exported: durable_now,
                    from: durable_now + 1,
                };
                c.store(&dir).map_err(|e| {
                    format!(
                        "logboek cursor `{}`: cannot write: {e}",
                        dir.join(CURSOR_FILE).display()
                    )
                })?;
                tracing::info!(
                    from = durable_now + 1,
                    "logboek: new cursor, exporting the requests from now on"
                );
                c
            }
        };
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
        let status = Arc::new(LogboekStatus::default());
        status
            .exported_seq
            .store(cursor.exported, Ordering::Relaxed);
        status.durable_seq.store(durable_now, Ordering::Relaxed);
        let follower = Follower {
            dir,
            gate_id: gate_id.to_string(),
            key,
            default_activity: cfg.processing_activity_id.trim().to_string(),
            max_batch: cfg.max_batch,
            max_backoff: cfg.max_backoff.0.max(MIN_BACKOFF),
            exporter: Exporter {
                client,
                endpoint,
                timeout: cfg.timeout.0,
                resource,
            },
            status: Arc::clone(&status),
            metrics,
            durable: Arc::clone(&durable),
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follower.run(cursor, stop_rx));
        Ok(Logboek {
            status,
            durable,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// What the follower reports, with the writer's durable seq as of now.
    pub fn status(&self) -> &LogboekStatus {
        self.status
            .durable_seq
            .fetch_max((self.durable)(), Ordering::Relaxed);
        &self.status
    }

    /// At shutdown, after the audit log was closed: gives the follower up to `grace` to export
    /// what is durable, then stops it. What is left is exported after the next start.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(mut task) = task
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            task.abort();
            tracing::warn!(
                backlog = self.status.backlog(),
                "logboek: spans still waiting at shutdown; they are exported after the next start"
            );
        }
    }

    /// One line for `/readyz`.
    pub fn readiness(&self) -> String {
        let _ = self.status();
        format!(
            "logboek: exported up to seq {}, backlog {} records, oldest waiting {} ms{}",
            self.status.exported_seq.load(Ordering::Relaxed),
            self.status.backlog(),
            self.status.backlog_age().as_millis(),
            if self.status.failing.load(Ordering::Relaxed) {
                ", exports failing (retried)"
            } else {
                ""
            }
        )
    }

    /// The follower's lines for `/metrics` (Prometheus text format).
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let s = self.status();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "purpose_gate_logboek_exported_seq",
            "gauge",
            "Last audit seq whose Logboek spans the collector accepted (the cursor).",
            s.exported_seq.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "purpose_gate_logboek_backlog_records",
            "gauge",
            "Durable audit records the Logboek exporter has not yet passed.",
            s.backlog().to_string(),
        );
        metric(
            "purpose_gate_logboek_backlog_age_seconds",
            "gauge",
            "Age of the oldest Logboek span waiting for export.",
            format!("{:.3}", s.backlog_age().as_secs_f64()),
        );
        metric(
            "purpose_gate_logboek_export_errors_total",
            "counter",
            "Failed Logboek export attempts (each is retried).",
            s.export_errors.load(Ordering::Relaxed).to_string(),
        );
        out
    }
}

impl Drop for Logboek {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

/// A request whose decision records were read and whose outcome record was not (yet).
#[derive(Debug, Clone)]
struct Pending {
    first_seq: u64,
    time: DateTime<Utc>,
    action: String,
    trace_id: String,
    span_id: Option<String>,
    client_span_id: Option<String>,
    verwerking: Option<String>,
    subjects: Vec<Subject>,
}

/// Joins outcome records with the decision records of their request.
#[derive(Debug, Default)]
struct Join {
    pending: HashMap<String, Pending>,
    /// `(first seq, request id)` in log order, for eviction and the low-water mark.
    order: VecDeque<(u64, String)>,
}

impl Join {
    /// Takes a decision record: a forwarded request (allowed, or in shadow mode) waits for its
    /// outcome record.
    fn decision(&mut self, d: &ReadDecision) {
        let time = parse_time(&d.time);
        if let Some(t) = time {
            self.evict(t - OUTCOME_HORIZON);
        }
        let Some(action) = &d.action else {
            return;
        };
        if d.decision != Verdict::Allow && d.enforced {
            return;
        }
        let subject = d.resource.as_ref().and_then(|r| match r.kind.as_str() {
            "Person" => Some(Subject::Bsn(r.id.clone())),
            "Vehicle" => Some(Subject::Kenteken(r.id.clone())),
            _ => None,
        });
        let entry = self.pending.entry(d.request_id.clone()).or_insert_with(|| {
            self.order.push_back((d.seq, d.request_id.clone()));
            Pending {
                first_seq: d.seq,
                time: time.unwrap_or_else(Utc::now),
                action: action.clone(),
                trace_id: d.trace_id.clone(),
                span_id: d.span_id.clone(),
                client_span_id: d.client_span_id.clone(),
                verwerking: d.purpose.verwerking.clone(),
                subjects: Vec::new(),
            }
        });
        if let Some(s) = subject
            && !entry.subjects.contains(&s)
        {
            entry.subjects.push(s);
        }
        while self.pending.len() > MAX_PENDING {
            self.pop_oldest();
        }
    }

    /// Takes an outcome record: the request's decisions, when they were read.
    fn outcome(&mut self, o: &ReadOutcome) -> Option<Pending> {
        self.pending.remove(&o.request_id)
    }

    /// Forgets requests decided before `before` (see [`OUTCOME_HORIZON`]).
    fn evict(&mut self, before: DateTime<Utc>) {
        while let Some((seq, id)) = self.order.front() {
            match self.pending.get(id) {
                Some(p) if p.first_seq == *seq && p.time >= before => return,
                Some(p) if p.first_seq == *seq => {
                    tracing::debug!(request_id = %id, "logboek: decision without an outcome record; no span");
                    self.pending.remove(id);
                    self.order.pop_front();
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    fn pop_oldest(&mut self) {
        while let Some((seq, id)) = self.order.pop_front() {
            if self.pending.get(&id).is_some_and(|p| p.first_seq == seq) {
                self.pending.remove(&id);
                return;
            }
        }
    }

    /// Where reading must resume to rebuild every waiting request: its first decision's seq,
    /// else `next`.
    fn low_water(&mut self, next: u64) -> u64 {
        while let Some((seq, id)) = self.order.front() {
            if self.pending.get(id).is_some_and(|p| p.first_seq == *seq) {
                return (*seq).min(next);
            }
            self.order.pop_front();
        }
        next
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The status of a forwarded request from its outcome record: `Error` when the gate answered
/// with an error of its own (`code`: the registry unreachable, too slow, unreadable …) or the
/// registry answered 5xx, `Ok` for a 2xx answer, `Unset` otherwise (e.g. 404: processed without
/// a fault).
fn span_status(o: &ReadOutcome) -> SpanStatus {
    use crate::error::GateError;
    if let Some(code) = &o.code {
        let known = [
            GateError::UpstreamUnavailable,
            GateError::UpstreamTimeout,
            GateError::UpstreamTooLarge,
            GateError::UpstreamEncoding,
            GateError::UpstreamAnswerInvalid,
            GateError::UpstreamErrorWithheld,
            GateError::AuditUnavailable,
        ];
        let message = known
            .iter()
            .find(|e| e.code() == code)
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("the gate refused the answer (`{code}`)"));
        return SpanStatus::Error {
            kind: code.clone(),
            message,
        };
    }
    match o.status {
        200..=299 => SpanStatus::Ok,
        500..=599 => SpanStatus::Error {
            kind: "upstreamError".to_string(),
            message: format!("the registry answered {}", o.status),
        },
        _ => SpanStatus::Unset,
    }
}

/// The span id of subject `index` of the outcome record `seq` of gate `gate_id`: the first 8
/// bytes of SHA-256 over the three, in hex (never all zeros). The same on every retry.
pub fn span_id(gate_id: &str, seq: u64, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(b"purpose-gate logboek span\0");
    h.update(gate_id.as_bytes());
    h.update(b"\0");
    h.update(seq.to_be_bytes());
    h.update((index as u64).to_be_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    hex::encode(id)
}

/// The spans of one forwarded request: one per subject, the subjects it named first, then
/// each person or vehicle its answer disclosed (once each). Persons disclosed without a
/// BSN have no identifier and get no span.
fn build_spans(
    gate_id: &str,
    key: &SubjectKey,
    default_activity: &str,
    seq: u64,
    p: &Pending,
    o: &ReadOutcome,
) -> Vec<Span> {
    let mut subjects = p.subjects.clone();
    for r in &o.disclosed {
        let s = match r.kind.as_str() {
            "Person"
                if r.id.starts_with(PSEUDONYM_PREFIX)
                    || crate::model::Bsn::parse(&r.id).is_ok() =>
            {
                Subject::Bsn(r.id.clone())
            }
            "Vehicle" => Subject::Kenteken(r.id.clone()),
            _ => continue,
        };
        if !subjects.contains(&s) {
            subjects.push(s);
        }
    }
    let activity = p
        .verwerking
        .clone()
        .unwrap_or_else(|| default_activity.to_string());
    let start_ns = nanos(p.time);
    let end_ns = parse_time(&o.time).map_or(start_ns, nanos).max(start_ns);
    let status = span_status(o);
    subjects
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (id, kind) = match s {
                Subject::Bsn(b) => (pseudonym(key, b), "BSN"),
                Subject::Kenteken(k) => (pseudonym(key, k), "kenteken"),
            };
            let mut attributes = vec![
                (PROCESSING_ACTIVITY_ID, activity.clone()),
                (DATA_SUBJECT_ID, id),
                (DATA_SUBJECT_ID_TYPE, kind.to_string()),
            ];
            if let Some(client) = &p.client_span_id {
                attributes.push((FOREIGN_OPERATION_SPAN_ID, client.clone()));
            }
            if let SpanStatus::Error { kind, message } = &status {
                attributes.push(("exception.type", kind.clone()));
                attributes.push(("exception.message", message.clone()));
            }
            Span {
                trace_id: p.trace_id.clone(),
                span_id: span_id(gate_id, seq, i),
                parent_span_id: p.span_id.clone().unwrap_or_default(),
                name: p.action.clone(),
                start_ns,
                end_ns,
                attributes,
                status: status.clone(),
            }
        })
        .collect()
}

/// The subject id for `dpl.core.data_subject_id`: a pseudonym from the log as it is (made with
/// the same key, see [`subject_key`]), else the HMAC of the clear identifier.
fn pseudonym(key: &SubjectKey, id: &str) -> String {
    if id.starts_with(PSEUDONYM_PREFIX) {
        id.to_string()
    } else {
        key.pseudonymise(id)
    }
}

impl Follower {
    fn spans(&self, seq: u64, p: &Pending, o: &ReadOutcome) -> Vec<Span> {
        build_spans(&self.gate_id, &self.key, &self.default_activity, seq, p, o)
    }

    /// Follows the log until stopped: reads durable records from `cursor.from`, exports the
    /// spans of each outcome record after `cursor.exported`, moves the cursor after each
    /// accepted export. After a stop it keeps going until it has caught up or an export fails.
    async fn run(self, mut cursor: Cursor, mut stop: watch::Receiver<bool>) {
        let mut join = Join::default();
        let mut tail: Option<LocalTail> = None;
        // The last seq read from the log.
        let mut read_to = cursor.from - 1;
        let mut batch: Vec<Span> = Vec::new();
        let mut backoff = MIN_BACKOFF;
        let mut cursor_written = Instant::now();
        let mut stored = cursor;
        loop {
            let stopping = *stop.borrow();
            let durable = (self.durable)();
            self.status.durable_seq.store(durable, Ordering::Relaxed);
            if tail.is_none() {
                match LocalTail::open_at(&self.dir, read_to + 1) {
                    Ok(t) => tail = Some(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "logboek: cannot read the audit log, will retry");
                        if stopping {
                            return;
                        }
                        let _ = tokio::time::timeout(self.max_backoff, stop.changed()).await;
                        continue;
                    }
                }
            }
            let Some(t) = tail.as_mut() else {
                continue;
            };
            // Fill a batch from durable records; the spans of one request stay together.
            while batch.len() < self.max_batch && read_to < durable {
                let line = match t.peek_line() {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "logboek: cannot read the audit log, will retry");
                        tail = None;
                        break;
                    }
                };
                let Some(seq) = line_seq(line).filter(|s| *s <= durable) else {
                    break;
                };
                let line = t.take();
                if seq <= read_to {
                    continue;
                }
                if seq > read_to + 1 {
                    tracing::error!(
                        expected = read_to + 1,
                        found = seq,
                        "logboek: records missing from the audit log"
                    );
                }
                read_to = seq;
                match parse_record(&line) {
                    Ok(Record::Decision(d)) => join.decision(&d),
                    Ok(Record::Outcome(o)) => {
                        if let Some(p) = join.outcome(&o)
                            && seq > cursor.exported
                        {
                            if batch.is_empty() {
                                self.status.oldest_waiting_ms.store(
                                    parse_time(&o.time).map_or(1, |t| t.timestamp_millis().max(1)),
                                    Ordering::Relaxed,
                                );
                            }
                            batch.extend(self.spans(seq, &p, &o));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(seq, error = %e, "logboek: unreadable audit record, skipped");
                    }
                }
            }
            if batch.is_empty() {
                self.status.oldest_waiting_ms.store(0, Ordering::Relaxed);
                if read_to > cursor.exported {
                    cursor = Cursor {
                        exported: read_to,
                        from: join.low_water(read_to + 1),
                    };
                    self.status
                        .exported_seq
                        .store(cursor.exported, Ordering::Relaxed);
                }
                let caught_up = read_to >= durable;
                if cursor != stored && (stopping || cursor_written.elapsed() >= IDLE_CURSOR_EVERY) {
                    self.store_cursor(&cursor, &mut stored, &mut cursor_written);
                }
                if stopping && caught_up {
                    self.store_cursor(&cursor, &mut stored, &mut cursor_written);
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
                continue;
            }
            match self.exporter.export(&batch).await {
                Ok(rejected) => {
                    let n = batch.len() as u64;
                    self.metrics
                        .logboek_spans(SpanResult::Exported, n.saturating_sub(rejected));
                    if rejected > 0 {
                        self.metrics.logboek_spans(SpanResult::Rejected, rejected);
                        tracing::warn!(
                            rejected,
                            "logboek: the collector rejected spans (partialSuccess); they are not sent again"
                        );
                    }
                    if self.status.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("logboek: export works again");
                    }
                    backoff = MIN_BACKOFF;
                    batch.clear();
                    self.status.oldest_waiting_ms.store(0, Ordering::Relaxed);
                    cursor = Cursor {
                        exported: read_to,
                        from: join.low_water(read_to + 1),
                    };
                    self.status
                        .exported_seq
                        .store(cursor.exported, Ordering::Relaxed);
                    self.store_cursor(&cursor, &mut stored, &mut cursor_written);
                }
                Err(e) => {
                    self.status.export_errors.fetch_add(1, Ordering::Relaxed);
                    // One warning when exports start failing, not one per attempt.
                    if !self.status.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, spans = batch.len(), "logboek: export failed; retrying with backoff, spans wait (none is dropped)");
                    }
                    if stopping {
                        return;
                    }
                    let _ = tokio::time::timeout(backoff, stop.changed()).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    /// Writes the cursor; a failure is logged and the old cursor stays (its spans are exported
    /// again after a restart: at least once).
    fn store_cursor(&self, cursor: &Cursor, stored: &mut Cursor, written: &mut Instant) {
        if cursor == stored {
            return;
        }
        match cursor.store(&self.dir) {
            Ok(()) => {
                *stored = *cursor;
                *written = Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "logboek: cannot write the cursor; spans since the last cursor are exported again after a restart");
            }
        }
    }
}

impl Exporter {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn key() -> SubjectKey {
        SubjectKey::new(vec![7; 32]).unwrap()
    }

    fn decision(
        seq: u64,
        request: &str,
        resource: Value,
        verdict: &str,
        extra: Value,
    ) -> ReadDecision {
        let mut d = json!({
            "seq": seq, "prev": "0", "time": "2026-03-01T10:00:00.000Z", "gate": "g",
            "request_id": request, "trace_id": TRACE, "span_id": "1111111111111111",
            "principal": null, "action": "brp:lookup", "resource": resource, "case_id": null,
            "purpose": {"doelbinding": null, "verwerking": null, "break_glass": false, "reason": null},
            "fields": [], "decision": verdict, "policies": [], "reasons": [], "errors": [],
            "request": {"method": "POST", "path": "/p", "client_ip": null},
        });
        if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(extra.clone());
        }
        serde_json::from_value(d).unwrap()
    }

    fn outcome(
        seq: u64,
        request: &str,
        status: u16,
        disclosed: Value,
        code: Option<&str>,
    ) -> ReadOutcome {
        serde_json::from_value(json!({
            "seq": seq, "prev": "0", "time": "2026-03-01T10:00:00.250Z", "request_id": request,
            "status": status, "upstream_ms": 3, "disclosed": disclosed, "code": code,
        }))
        .unwrap()
    }

    fn person(id: &str) -> Value {
        json!({"type": "Person", "id": id})
    }

    fn get(s: &Span, k: &str) -> Option<String> {
        s.attributes
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn one_span_per_subject_with_pseudonym_parent_and_derived_ids() {
        let mut join = Join::default();
        join.decision(&decision(
            1,
            "r1",
            person("999993653"),
            "allow",
            json!({"client_span_id": "00f067aa0ba902b7"}),
        ));
        join.decision(&decision(
            2,
            "r1",
            json!({"type": "Vehicle", "id": "XX999X"}),
            "allow",
            json!({}),
        ));
        let o = outcome(
            3,
            "r1",
            200,
            json!([person("999993653"), person("999990639")]),
            None,
        );
        let p = join.outcome(&o).expect("waiting request");
        let spans = build_spans("gate-a", &key(), "https://register.example/va/1", 3, &p, &o);
        // The BSN named and disclosed once, the vehicle, the other disclosed person.
        assert_eq!(spans.len(), 3);
        assert_eq!(
            get(&spans[0], DATA_SUBJECT_ID),
            Some(key().pseudonymise("999993653"))
        );
        assert_eq!(get(&spans[0], DATA_SUBJECT_ID_TYPE).as_deref(), Some("BSN"));
        assert_eq!(
            get(&spans[1], DATA_SUBJECT_ID_TYPE).as_deref(),
            Some("kenteken")
        );
        assert_eq!(
            get(&spans[2], DATA_SUBJECT_ID),
            Some(key().pseudonymise("999990639"))
        );
        assert_eq!(
            get(&spans[0], FOREIGN_OPERATION_SPAN_ID).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(
            get(&spans[0], PROCESSING_ACTIVITY_ID).as_deref(),
            Some("https://register.example/va/1")
        );
        for (i, s) in spans.iter().enumerate() {
            assert_eq!(s.parent_span_id, "1111111111111111");
            assert_eq!(s.trace_id, TRACE);
            assert_eq!(s.span_id, span_id("gate-a", 3, i));
            assert!(!s.attributes.iter().any(|(_, v)| v.contains("999993653")));
            assert!(s.end_ns > s.start_ns);
        }
        // Rebuilt (a retry, or after a restart): the same ids.
        let again = build_spans("gate-a", &key(), "x", 3, &p, &o);
        assert_eq!(again[1].span_id, spans[1].span_id);
    }

    #[test]
    fn span_ids_differ_by_gate_seq_and_subject() {
        let a = span_id("gate-a", 7, 0);
        assert_eq!(a.len(), 16);
        assert_eq!(a, span_id("gate-a", 7, 0));
        assert_ne!(a, span_id("gate-b", 7, 0));
        assert_ne!(a, span_id("gate-a", 8, 0));
        assert_ne!(a, span_id("gate-a", 7, 1));
    }

    #[test]
    fn a_pseudonym_from_the_log_is_exported_as_it_is() {
        let mut join = Join::default();
        let pseudonym = key().pseudonymise("999993653");
        join.decision(&decision(1, "r1", person(&pseudonym), "allow", json!({})));
        let o = outcome(
            2,
            "r1",
            200,
            json!([person(&pseudonym), person("unidentified")]),
            None,
        );
        let p = join.outcome(&o).unwrap();
        let spans = build_spans("g", &key(), "a", 2, &p, &o);
        assert_eq!(spans.len(), 1, "the unidentified person has no span");
        assert_eq!(get(&spans[0], DATA_SUBJECT_ID), Some(pseudonym));
    }

    #[test]
    fn only_forwarded_requests_wait_for_an_outcome() {
        let mut join = Join::default();
        join.decision(&decision(
            1,
            "denied",
            person("999993653"),
            "deny",
            json!({}),
        ));
        join.decision(&decision(
            2,
            "shadow",
            person("999993653"),
            "deny",
            json!({"enforced": false}),
        ));
        assert!(
            join.outcome(&outcome(3, "denied", 403, json!([]), None))
                .is_none()
        );
        assert!(
            join.outcome(&outcome(4, "shadow", 200, json!([]), None))
                .is_some()
        );
    }

    #[test]
    fn low_water_is_the_first_decision_still_waiting() {
        let mut join = Join::default();
        join.decision(&decision(5, "a", person("999993653"), "allow", json!({})));
        join.decision(&decision(6, "b", person("999993653"), "allow", json!({})));
        assert_eq!(join.low_water(7), 5);
        join.outcome(&outcome(7, "a", 200, json!([]), None));
        assert_eq!(join.low_water(8), 6);
        join.outcome(&outcome(8, "b", 200, json!([]), None));
        assert_eq!(join.low_water(9), 9);
    }

    #[test]
    fn a_decision_without_outcome_is_forgotten_after_the_horizon() {
        let mut join = Join::default();
        join.decision(&decision(
            1,
            "lost",
            person("999993653"),
            "allow",
            json!({}),
        ));
        join.decision(&decision(
            2,
            "later",
            person("999993653"),
            "allow",
            json!({"time": "2026-03-01T10:30:00.000Z"}),
        ));
        assert_eq!(join.low_water(3), 2);
        assert!(
            join.outcome(&outcome(3, "lost", 200, json!([]), None))
                .is_none()
        );
    }

    #[test]
    fn status_follows_the_outcome_record() {
        assert_eq!(
            span_status(&outcome(1, "r", 200, json!([]), None)),
            SpanStatus::Ok
        );
        assert_eq!(
            span_status(&outcome(1, "r", 404, json!([]), None)),
            SpanStatus::Unset
        );
        assert_eq!(
            span_status(&outcome(1, "r", 504, json!([]), Some("upstreamTimeout"))),
            SpanStatus::Error {
                kind: "upstreamTimeout".into(),
                message: "the registry did not answer in time".into()
            }
        );
        assert!(matches!(
            span_status(&outcome(1, "r", 503, json!([]), None)),
            SpanStatus::Error { kind, .. } if kind == "upstreamError"
        ));
    }

    #[test]
    fn cursor_is_replaced_atomically_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cursor::load(dir.path()).unwrap(), None);
        let c = Cursor {
            exported: 41,
            from: 40,
        };
        c.store(dir.path()).unwrap();
        assert_eq!(Cursor::load(dir.path()).unwrap(), Some(c));
        assert!(!dir.path().join(format!("{CURSOR_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(CURSOR_FILE), b"{\"exported\":4").unwrap();
        let err = Cursor::load(dir.path()).unwrap_err();
        assert!(err.contains(CURSOR_FILE), "{err}");
        std::fs::write(dir.path().join(CURSOR_FILE), b"{\"exported\":4,\"from\":9}").unwrap();
        assert!(Cursor::load(dir.path()).is_err());
    }

    fn configs(
        dir: &Path,
        logboek_key: Option<&[u8]>,
        audit_key: Option<&[u8]>,
    ) -> (LogboekConfig, AuditConfig) {
        let mut text = String::from(
            "[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k.json\"\n[audit]\n",
        );
        if let Some(k) = audit_key {
            std::fs::write(dir.join("audit.key"), k).unwrap();
            text.push_str("subject_key = \"audit.key\"\n");
        }
        text.push_str("[logboek]\notlp_endpoint = \"http://c:4318/v1/traces\"\nprocessing_activity_id = \"x\"\n");
        if let Some(k) = logboek_key {
            std::fs::write(dir.join("lb.key"), k).unwrap();
            text.push_str("subject_key = \"lb.key\"\n");
        }
        let cfg = crate::config::Config::parse(&text, dir).unwrap();
        (cfg.logboek.unwrap(), cfg.audit)
    }

    #[test]
    fn another_key_than_the_audit_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = [1u8; 32];
        let b = [2u8; 32];
        let (lb, audit) = configs(dir.path(), Some(&b), Some(&a));
        let err = subject_key(&lb, &audit).unwrap_err();
        assert!(
            err.contains("logboek.subject_key") && err.contains("audit.subject_key"),
            "{err}"
        );
        // The same key in another file, the audit's key, or only a Logboek key: fine.
        let (lb, audit) = configs(dir.path(), Some(&a), Some(&a));
        assert!(subject_key(&lb, &audit).is_ok());
        let (lb, audit) = configs(dir.path(), None, Some(&a));
        assert!(subject_key(&lb, &audit).is_ok());
        let (lb, audit) = configs(dir.path(), Some(&b), None);
        assert!(subject_key(&lb, &audit).is_ok());
    }

    #[test]
    fn encoding_follows_the_otlp_json_mapping() {
        let mut join = Join::default();
        join.decision(&decision(1, "r", person("999993653"), "allow", json!({})));
        let o = outcome(2, "r", 504, json!([]), Some("upstreamTimeout"));
        let p = join.outcome(&o).unwrap();
        let spans = build_spans("g", &key(), "a", 2, &p, &o);
        let doc: Value =
            serde_json::from_slice(&encode(&json!({"attributes": []}), &spans)).unwrap();
        let span = &doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], TRACE);
        assert_eq!(span["parentSpanId"], "1111111111111111");
        assert_eq!(span["spanId"], span_id("g", 2, 0));
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
