//! Operational metrics in the Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Guarantees: every counter only grows; label values are route templates, upstream names,
//! decisions, status codes and result words — never a BSN, kenteken, case id, employee id or
//! token, so `/metrics` discloses nothing the audit log alone should hold. Updating a metric
//! never blocks a request for longer than a short uncontended lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub use purpose_gate_audit::stats::{BATCH_BOUNDS, Histogram, LATENCY_BOUNDS};

/// The Prometheus exposition of a [`Histogram`] (the audit crate's primitive, which knows
/// nothing of the format).
pub trait RenderHistogram {
    /// Writes `name_bucket`, `name_sum` and `name_count` lines (with `HELP` and `TYPE`).
    fn render(&self, out: &mut String, name: &str, help: &str);
}

impl<const N: usize> RenderHistogram for Histogram<N> {
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, n) in self.buckets() {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count().max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum();
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters keyed by label values, rendered in key order.
#[derive(Debug, Default)]
struct Family<K: Ord> {
    values: Mutex<BTreeMap<K, u64>>,
}

impl<K: Ord + Clone> Family<K> {
    fn inc(&self, key: K) {
        let mut map = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key).or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<(K, u64)> {
        let map = self.values.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// What the gate learnt about one request, for `purpose_gate_requests_total`.
#[derive(Debug, Clone, Default)]
pub struct RequestLabels {
    /// The route template (`/rdw/voertuigen/{kenteken}`); `none` when no route matched.
    pub route: Option<String>,
    /// `allow` or `deny` when a decision was recorded; `none` otherwise.
    pub decision: Option<&'static str>,
    /// `false` when the route runs in shadow mode.
    pub enforced: bool,
}

/// Every metric of one gate.
#[derive(Debug)]
pub struct Metrics {
    /// (route, decision, status code).
    requests: Family<(String, &'static str, u16)>,
    decision_seconds: Histogram<12>,
    upstream_seconds: Histogram<12>,
    /// (upstream, status code; 502/504 when the upstream failed).
    upstream_responses: Family<(String, u16)>,
    /// (what, result): `("policies", "ok")`.
    reloads: Family<(&'static str, &'static str)>,
    /// Routes whose would-be deny was forwarded in shadow mode.
    shadow_would_deny: Family<String>,
    /// Persons in registry answers by release result: `released` or `withheld`.
    release: Family<&'static str>,
    case_registry_seconds: Histogram<12>,
    case_registry_errors: AtomicU64,
    overloaded: AtomicU64,
    in_flight: AtomicI64,
    audit_append_failures: AtomicU64,
    /// Logboek spans by result: exported, rejected (by the collector, in `partialSuccess`).
    logboek_spans: [AtomicU64; 2],
    /// Whether the last audit append succeeded.
    audit_ok: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            decision_seconds: Histogram::new(LATENCY_BOUNDS),
            upstream_seconds: Histogram::new(LATENCY_BOUNDS),
            upstream_responses: Family::default(),
            reloads: Family::default(),
            shadow_would_deny: Family::default(),
            release: Family::default(),
            case_registry_seconds: Histogram::new(LATENCY_BOUNDS),
            case_registry_errors: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            audit_append_failures: AtomicU64::new(0),
            logboek_spans: [const { AtomicU64::new(0) }; 2],
            audit_ok: AtomicBool::new(true),
        }
    }
}

/// What became of Logboek Dataverwerkingen spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanResult {
    /// The collector accepted them.
    Exported,
    /// The collector answered, but rejected them (`partialSuccess.rejectedSpans`): not sent
    /// again. A failed export is retried, not counted here.
    Rejected,
}

impl SpanResult {
    const ALL: [SpanResult; 2] = [SpanResult::Exported, SpanResult::Rejected];

    fn as_str(self) -> &'static str {
        match self {
            SpanResult::Exported => "exported",
            SpanResult::Rejected => "rejected",
        }
    }
}

/// Values read from elsewhere at scrape time.
#[derive(Debug, Clone, Default)]
pub struct ScrapeInfo {
    /// `policy_version` of the loaded policy set.
    pub policy_version: String,
    /// The evaluator that decides (`[policies] evaluator`: `prepared` or `cedar`).
    pub policy_evaluator: &'static str,
    /// Whether the gate is ready for traffic.
    pub ready: bool,
    /// Answers of the verified-token cache, counted by the authentication stage.
    pub token_cache: crate::auth::CacheCounts,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, labels: &RequestLabels, status: u16) {
        let route = labels.route.clone().unwrap_or_else(|| "none".into());
        self.requests
            .inc((route, labels.decision.unwrap_or("none"), status));
    }

    /// Time from the request's arrival until its decision records were durable.
    pub fn decision_latency(&self, d: Duration) {
        self.decision_seconds.observe_duration(d);
    }

    /// One forwarded request's upstream answer (or 502/504 when it failed).
    pub fn upstream(&self, upstream: &str, status: u16, d: Duration) {
        self.upstream_seconds.observe_duration(d);
        self.upstream_responses.inc((upstream.to_string(), status));
    }

    /// A reload of `what` (`policies`, `cases`, `jwks`) succeeded or failed.
    pub fn reload(&self, what: &'static str, ok: bool) {
        self.reloads.inc((what, if ok { "ok" } else { "failed" }));
    }

    /// A route in shadow mode forwarded a request its policies would have denied.
    pub fn shadow_would_deny(&self, route: &str) {
        self.shadow_would_deny.inc(route.to_string());
    }

    /// One person in a registry's answer was released (passed on) or withheld.
    pub fn release(&self, released: bool) {
        self.release
            .inc(if released { "released" } else { "withheld" });
    }

    /// One case-registry lookup; `ok` is false when the registry failed.
    pub fn case_lookup(&self, d: Duration, ok: bool) {
        self.case_registry_seconds.observe_duration(d);
        if !ok {
            self.case_registry_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request refused because `server.max_concurrent` requests were in flight.
    pub fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// A request started (`+1`) or ended (`-1`).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// The result of an audit append.
    pub fn audit_append(&self, ok: bool) {
        self.audit_ok.store(ok, Ordering::Relaxed);
        if !ok {
            self.audit_append_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `n` Logboek spans ended as `result`.
    pub fn logboek_spans(&self, result: SpanResult, n: u64) {
        self.logboek_spans[result as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Logboek spans that ended as `result` so far.
    pub fn logboek_span_count(&self, result: SpanResult) -> u64 {
        self.logboek_spans[result as usize].load(Ordering::Relaxed)
    }

    /// Whether the last audit append succeeded (true before the first).
    pub fn audit_ok(&self) -> bool {
        self.audit_ok.load(Ordering::Relaxed)
    }

    /// The whole exposition.
    pub fn render(&self, info: &ScrapeInfo) -> String {
        let mut out = String::with_capacity(8 * 1024);
        header(
            &mut out,
            "purpose_gate_requests_total",
            "counter",
            "Requests answered, by route template, decision and HTTP status.",
        );
        for ((route, decision, code), n) in self.requests.snapshot() {
            let _ = writeln!(
                out,
                "purpose_gate_requests_total{{route=\"{}\",decision=\"{decision}\",code=\"{code}\"}} {n}",
                escape(&route)
            );
        }
        self.decision_seconds.render(
            &mut out,
            "purpose_gate_decision_seconds",
            "Time from request arrival until its decision records were durable.",
        );
        header(
            &mut out,
            "purpose_gate_shadow_would_deny_total",
            "counter",
            "Requests forwarded in shadow mode (enforce = false) that the policies would have denied.",
        );
        for (route, n) in self.shadow_would_deny.snapshot() {
            let _ = writeln!(
                out,
                "purpose_gate_shadow_would_deny_total{{route=\"{}\"}} {n}",
                escape(&route)
            );
        }
        header(
            &mut out,
            "purpose_gate_release_total",
            "counter",
            "Persons in registry answers by release result (released, withheld).",
        );
        for (result, n) in self.release.snapshot() {
            let _ = writeln!(out, "purpose_gate_release_total{{result=\"{result}\"}} {n}");
        }
        self.upstream_seconds.render(
            &mut out,
            "purpose_gate_upstream_seconds",
            "Time the upstream took to answer a forwarded request.",
        );
        header(
            &mut out,
            "purpose_gate_upstream_responses_total",
            "counter",
            "Forwarded requests by upstream and status (502/504: the upstream failed).",
        );
        for ((up, code), n) in self.upstream_responses.snapshot() {
            let _ = writeln!(
                out,
                "purpose_gate_upstream_responses_total{{upstream=\"{}\",code=\"{code}\"}} {n}",
                escape(&up)
            );
        }
        header(
            &mut out,
            "purpose_gate_reloads_total",
            "counter",
            "Reloads by what was reloaded and result.",
        );
        for ((what, result), n) in self.reloads.snapshot() {
            let _ = writeln!(
                out,
                "purpose_gate_reloads_total{{what=\"{what}\",result=\"{result}\"}} {n}"
            );
        }
        header(
            &mut out,
            "purpose_gate_token_cache_total",
            "counter",
            "Bearer tokens looked up in the verified-token cache, by result (hit: no signature check; expired: refused from the cache; miss: verified in full).",
        );
        let tc = &info.token_cache;
        for (result, n) in [("hit", tc.hit), ("expired", tc.expired), ("miss", tc.miss)] {
            let _ = writeln!(
                out,
                "purpose_gate_token_cache_total{{result=\"{result}\"}} {n}"
            );
        }
        self.case_registry_seconds.render(
            &mut out,
            "purpose_gate_case_registry_seconds",
            "Time a case-registry lookup took.",
        );
        counter(
            &mut out,
            "purpose_gate_case_registry_errors_total",
            "Case-registry lookups that failed (503 caseRegistryUnavailable).",
            self.case_registry_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "purpose_gate_overloaded_total",
            "Requests refused with 503 overloaded (server.max_concurrent reached).",
            self.overloaded.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "purpose_gate_requests_in_flight",
            "gauge",
            "Requests being handled now.",
        );
        let _ = writeln!(
            out,
            "purpose_gate_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed).max(0)
        );
        counter(
            &mut out,
            "purpose_gate_audit_append_failures_total",
            "Audit appends that failed (the request was answered 503 auditUnavailable).",
            self.audit_append_failures.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "purpose_gate_logboek_spans_total",
            "counter",
            "Logboek Dataverwerkingen spans by result (exported; rejected: refused by the collector in partialSuccess).",
        );
        for r in SpanResult::ALL {
            let _ = writeln!(
                out,
                "purpose_gate_logboek_spans_total{{result=\"{}\"}} {}",
                r.as_str(),
                self.logboek_span_count(r)
            );
        }
        let stats = &crate::audit::stats::WRITER_STATS;
        stats.batch_records.render(
            &mut out,
            "purpose_gate_audit_batch_records",
            "Records written per fdatasync by the audit writer (all gates of this process).",
        );
        stats.sync_seconds.render(
            &mut out,
            "purpose_gate_audit_fdatasync_seconds",
            "Time of one write plus fdatasync of the audit writer (all gates of this process).",
        );
        header(
            &mut out,
            "purpose_gate_policy_info",
            "gauge",
            "The loaded policy set (the version is the policy_version of decision records) and the evaluator that decides.",
        );
        let _ = writeln!(
            out,
            "purpose_gate_policy_info{{version=\"{}\",evaluator=\"{}\"}} 1",
            escape(&info.policy_version),
            escape(info.policy_evaluator)
        );
        header(
            &mut out,
            "purpose_gate_ready",
            "gauge",
            "1 when policies are loaded and the audit log is writable.",
        );
        let _ = writeln!(out, "purpose_gate_ready {}", u8::from(info.ready));
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value (`\`, `"`, newline) as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_the_overflow() {
        let h = Histogram::new([1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert_eq!(value(&out, "x_bucket{le=\"1\"}"), Some(1.0));
        assert_eq!(value(&out, "x_bucket{le=\"2\"}"), Some(3.0));
        assert_eq!(value(&out, "x_bucket{le=\"+Inf\"}"), Some(4.0));
        assert_eq!(value(&out, "x_count"), Some(4.0));
        assert_eq!(value(&out, "x_sum"), Some(12.7));
    }

    #[test]
    fn request_counters_are_labelled_by_route_decision_and_code() {
        let m = Metrics::default();
        let labels = RequestLabels {
            route: Some("/rdw/voertuigen/{kenteken}".into()),
            decision: Some("deny"),
            enforced: true,
        };
        m.request(&labels, 403);
        m.request(&labels, 403);
        m.request(&RequestLabels::default(), 404);
        let text = m.render(&ScrapeInfo::default());
        assert_eq!(
            value(
                &text,
                "purpose_gate_requests_total{route=\"/rdw/voertuigen/{kenteken}\",decision=\"deny\",code=\"403\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "purpose_gate_requests_total{route=\"none\",decision=\"none\",code=\"404\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn token_cache_results_are_rendered_from_the_scrape_info() {
        let info = ScrapeInfo {
            token_cache: crate::auth::CacheCounts {
                hit: 5,
                expired: 1,
                miss: 2,
            },
            ..ScrapeInfo::default()
        };
        let text = Metrics::default().render(&info);
        assert_eq!(
            value(&text, "purpose_gate_token_cache_total{result=\"hit\"}"),
            Some(5.0)
        );
        assert_eq!(
            value(&text, "purpose_gate_token_cache_total{result=\"expired\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "purpose_gate_token_cache_total{result=\"miss\"}"),
            Some(2.0)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn failed_audit_append_makes_audit_not_ok_until_the_next_success() {
        let m = Metrics::default();
        assert!(m.audit_ok());
        m.audit_append(false);
        assert!(!m.audit_ok());
        m.audit_append(true);
        assert!(m.audit_ok());
        let text = m.render(&ScrapeInfo::default());
        assert_eq!(
            value(&text, "purpose_gate_audit_append_failures_total"),
            Some(1.0)
        );
    }
}
