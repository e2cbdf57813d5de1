//! The gate: the request path, stage by stage, in the order of `PRODUCT.md`.
//!
//! route → authenticate → purpose → resources → case → Cedar (one decision per subject) →
//! durable audit → forward or deny → outcome record → answer.
//!
//! INVARIANT: from the moment a request matched a registry route, every answer the gate gives
//! (401, 400, 403, 503, or a forward) is preceded by a durable decision record; if that record
//! cannot be written the answer is 503 `auditUnavailable` and nothing is forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use tracing::Instrument;

use crate::audit::{
    AuditLog, DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal, PurposeRecord,
    RecordBody, ReleaseRecord, RequestRecord, ResourceRef, Verdict,
};
use crate::auth::Authenticator;
use crate::config::{Config, HeadersConfig, RouteConfig};
use crate::counters::LookupCounters;
use crate::error::{GateError, problem_response};
use crate::forward::{FscTransactionId, OutboundPolicy, TraceContext, trace_context};
use crate::logboek::Logboek;
use crate::metrics::{Metrics, RequestLabels};
use crate::model::{Action, Employee, Purpose, Release, Resource};
use crate::policy::{DecisionInput, PolicyEngine};
use crate::purpose::{CaseRegistry, JsonFileCases, parse_purpose};
use crate::registry::Registries;
use crate::resource::Subjects;
use crate::routes::{RouteError, RouteTable, fill_template};
use crate::zgw::ZgwCases;
use tower::{Service, ServiceExt};

/// The gate could not start; the message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Everything a request needs, built once at start.
pub struct Gate {
    gate_id: String,
    routes: RouteTable,
    /// The registry plug-ins, by route kind.
    registries: &'static Registries,
    auth: Authenticator,
    cases: Arc<dyn CaseRegistry>,
    policy: Arc<ArcSwap<PolicyEngine>>,
    audit: AuditLog,
    /// `[audit] subject_key`: BSNs in records are pseudonymised with it.
    subject_key: Option<crate::audit::pseudonym::SubjectKey>,
    /// Which client headers go on, and which upstreams are FSC Outways.
    outbound: OutboundPolicy,
    /// Longest an inner service may take to answer (an inner that hangs is cut off: 504).
    inner_timeout: std::time::Duration,
    /// Largest answer read from the inner service (502 `upstreamTooLarge` above).
    max_response_bytes: usize,
    /// Case snapshots beside the log, named by decision records (`inputs.case`).
    snapshots: Option<Arc<crate::audit::snapshots::CaseSnapshots>>,
    counters: Arc<LookupCounters>,
    /// `[store]`: the shipper and cluster counters, when configured.
    store: Option<crate::store::Attached>,
    headers: HeadersConfig,
    max_body: usize,
    /// Operational metrics (`/metrics`).
    metrics: Arc<Metrics>,
    /// The case file, when cases come from one (reloaded on SIGHUP).
    case_file: Option<Arc<JsonFileCases>>,
    /// `[logboek]`: the Logboek Dataverwerkingen exporter, when configured.
    logboek: Option<Logboek>,
    /// `server.body_timeout`: time a client gets to send the request body.
    body_timeout: std::time::Duration,
    /// Background tasks (file watchers) stopped when the gate is dropped.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The parts of a gate built without a config ([`crate::layer::GateBuilder`]).
pub struct Parts {
    pub gate_id: String,
    pub routes: Vec<RouteConfig>,
    pub policy: PolicyEngine,
    pub auth: Authenticator,
    pub cases: Arc<dyn CaseRegistry>,
    pub audit: AuditLog,
    /// The audit directory, for the case snapshots decision records name (`policy replay`);
    /// without it, records carry no `inputs`.
    pub snapshots_dir: Option<std::path::PathBuf>,
    pub headers: HeadersConfig,
    pub outbound: OutboundPolicy,
    pub max_body: usize,
    pub body_timeout: std::time::Duration,
    pub inner_timeout: std::time::Duration,
    pub max_response_bytes: usize,
}

/// Facts about the request that every audit record repeats.
struct RequestCtx {
    request_id: String,
    trace: TraceContext,
    method: String,
    path: String,
    client_ip: Option<String>,
    now: DateTime<Utc>,
    /// When the request arrived (for the decision latency metric).
    started: Instant,
}

/// What is known so far about a request, for its decision record(s).
#[derive(Default)]
struct Draft {
    principal: Option<Principal>,
    action: Option<String>,
    purpose: PurposeRecord,
    case_id: Option<String>,
    case_url: Option<String>,
    fields: Vec<String>,
}

impl Gate {
    /// Loads policies, keys, cases and the audit log named in the config.
    pub async fn build(cfg: &Config) -> Result<Gate, StartError> {
        let routes = RouteTable::new(cfg.effective_routes()).map_err(StartError)?;
        let policy = PolicyEngine::load(&cfg.policies.dir)
            .map_err(|e| StartError(format!("policies: {e}")))?
            .with_evaluator(cfg.policies.evaluator);
        let auth = Authenticator::new(&cfg.auth)
            .await
            .map_err(|e| StartError(format!("auth: {e}")))?;
        // The case registry: a ZGW Zaken API when `cases.zgw_url` is set, else the case file.
        let mut case_file = None;
        let (cases, tasks): (Arc<dyn CaseRegistry>, Vec<tokio::task::JoinHandle<()>>) =
            match (&cfg.cases.zgw_url, &cfg.cases.file) {
                (Some(_), _) => (
                    ZgwCases::from_config(&cfg.cases)
                        .map_err(|e| StartError(format!("cases: {e}")))?,
                    vec![],
                ),
                (None, Some(file)) => {
                    let cases = JsonFileCases::load(file).map_err(StartError)?;
                    let watcher = cases.spawn_watcher(cfg.cases.poll_interval.0);
                    case_file = Some(Arc::clone(&cases));
                    (cases, vec![watcher])
                }
                (None, None) => {
                    return Err(StartError(
                        "missing key `cases.file` or `cases.zgw_url`".into(),
                    ));
                }
            };
        // The `[audit]` section decides checkpoint signing (auditor toolkit, issue 3).
        let audit = cfg.audit.open().map_err(|e| {
            StartError(format!(
                "audit directory `{}`: {e}",
                cfg.audit.dir.display()
            ))
        })?;
        let subject_key = cfg
            .audit
            .subject_key
            .as_deref()
            .map(crate::audit::pseudonym::SubjectKey::load)
            .transpose()
            .map_err(StartError)?;
        let outbound = OutboundPolicy::new(cfg).map_err(StartError)?;
        // The upstream client cuts each exchange off at its upstream's `timeout`; the layer's
        // own bound is a second above the longest, for whatever inner service it wraps.
        let inner_timeout = cfg
            .upstreams
            .values()
            .map(|u| u.timeout.0)
            .max()
            .unwrap_or(std::time::Duration::from_secs(10))
            + std::time::Duration::from_secs(1);
        let max_response_bytes = cfg
            .upstreams
            .values()
            .map(|u| u.max_response_bytes)
            .max()
            .unwrap_or(8 << 20);
        let metrics = Arc::new(Metrics::default());
        // The Logboek exporter follows the audit log: it reads what the writer made durable.
        let logboek = match &cfg.logboek {
            Some(l) => {
                let log = audit.clone();
                let durable: Arc<dyn Fn() -> u64 + Send + Sync> =
                    Arc::new(move || log.durable_seq());
                Some(
                    Logboek::start(l, &cfg.audit, &cfg.gate_id, Arc::clone(&metrics), durable)
                        .map_err(StartError)?,
                )
            }
            None => None,
        };
        // Counters survive a restart: rebuilt from the log's last 24 hours.
        let counters = Arc::new(LookupCounters::default());
        match counters.rebuild(&cfg.audit.dir, Utc::now().timestamp()) {
            Ok(n) => tracing::info!(lookups = n, "counters rebuilt from the audit log"),
            Err(e) => tracing::warn!(error = %e, "counters: cannot rebuild from the audit log"),
        }
        let store = match &cfg.store {
            Some(s) => Some(
                crate::store::Attached::start(
                    s,
                    &cfg.gate_id,
                    &cfg.audit.dir,
                    &audit,
                    Arc::clone(&counters),
                )
                .await
                .map_err(|e| StartError(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Gate {
            gate_id: cfg.gate_id.clone(),
            routes,
            registries: Registries::standard(),
            auth,
            cases,
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            audit,
            subject_key,
            outbound,
            inner_timeout,
            max_response_bytes,
            snapshots: Some(Arc::new(crate::audit::snapshots::CaseSnapshots::new(
                &cfg.audit.dir,
            ))),
            counters,
            store,
            headers: cfg.headers.clone(),
            max_body: cfg.server.max_body_bytes,
            metrics,
            logboek,
            body_timeout: cfg.server.body_timeout.0,
            case_file,
            tasks,
        })
    }

    /// A gate from parts (the layer's builder): no case-file watcher, Logboek exporter or
    /// pseudonymisation key; routes are checked as the config's are.
    pub fn from_parts(p: Parts) -> Result<Gate, StartError> {
        Ok(Gate {
            gate_id: p.gate_id,
            routes: RouteTable::new(p.routes).map_err(StartError)?,
            registries: Registries::standard(),
            auth: p.auth,
            cases: p.cases,
            policy: Arc::new(ArcSwap::from_pointee(p.policy)),
            audit: p.audit,
            subject_key: None,
            snapshots: p
                .snapshots_dir
                .as_deref()
                .map(|d| Arc::new(crate::audit::snapshots::CaseSnapshots::new(d))),
            outbound: p.outbound,
            inner_timeout: p.inner_timeout,
            max_response_bytes: p.max_response_bytes,
            counters: Arc::new(LookupCounters::default()),
            store: None,
            headers: p.headers,
            max_body: p.max_body,
            metrics: Arc::new(Metrics::default()),
            logboek: None,
            body_timeout: p.body_timeout,
            case_file: None,
            tasks: Vec::new(),
        })
    }

    /// The audit log (to flush it at shutdown).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// `gate_id` from the config.
    pub fn gate_id(&self) -> &str {
        &self.gate_id
    }

    /// The policy snapshot every request reads once (a reload swaps it).
    pub fn policy(&self) -> &Arc<ArcSwap<PolicyEngine>> {
        &self.policy
    }

    /// The authenticator (its JWKS file is reloaded on SIGHUP).
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The case file, when cases come from one.
    pub fn case_file(&self) -> Option<&Arc<JsonFileCases>> {
        self.case_file.as_ref()
    }

    /// The Logboek exporter, when `[logboek]` is configured (flushed at shutdown).
    pub fn logboek(&self) -> Option<&Logboek> {
        self.logboek.as_ref()
    }

    /// The central store, when `[store]` is configured.
    pub fn store(&self) -> Option<&crate::store::Attached> {
        self.store.as_ref()
    }

    /// The gate's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Ready for traffic: policies are loaded (always, once built) and the audit log is
    /// writable (the writer runs and the last append succeeded).
    pub fn ready(&self) -> bool {
        self.audit.is_alive() && self.metrics.audit_ok()
    }

    /// Appends records, keeping the audit health metric current.
    async fn append(&self, records: Vec<RecordBody>) -> Result<Vec<u64>, crate::audit::AuditError> {
        let result = self.audit.append(records).await;
        self.metrics.audit_append(result.is_ok());
        result
    }

    /// Answers one request, forwarding it (when allowed) to `inner`. Never panics; every
    /// refusal is problem+json. The client's address is the request's [`ClientAddr`]
    /// extension, when the server put one there.
    pub async fn handle<B, S, RB>(&self, req: Request<B>, inner: S) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
        S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        RB: hyper::body::Body<Data = Bytes>,
        RB::Error: Into<BoxError>,
    {
        let peer = req.extensions().get::<ClientAddr>().map(|a| a.0);
        let ctx = RequestCtx {
            request_id: uuid::Uuid::now_v7().to_string(),
            trace: trace_context(req.headers()),
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            client_ip: peer.map(|p| p.ip().to_string()),
            now: Utc::now(),
            started: Instant::now(),
        };
        // One span per request; its fields are the request id and the trace id only (never
        // the path, which can hold a BSN or kenteken, nor any header).
        let span = tracing::info_span!("request", request_id = %ctx.request_id, trace_id = %ctx.trace.trace_id);
        let mut labels = RequestLabels {
            enforced: true,
            ..RequestLabels::default()
        };
        let mut resp = async {
            self.metrics.in_flight(1);
            // `[store] max_backlog_age`: the operator chose to fail closed while the central
            // trail is behind.
            if self.store.as_ref().is_some_and(|s| s.backlog_exceeded()) {
                self.metrics.in_flight(-1);
                tracing::warn!("refused: the central audit store is behind");
                return problem_response(&GateError::AuditBacklog, &ctx.request_id);
            }
            // The one rescue: every refusal, from any stage, becomes its problem+json here.
            let resp = match self.process(req, inner, &ctx, &mut labels).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::info!(code = e.code(), status = e.status().as_u16(), "refused");
                    problem_response(&e, &ctx.request_id)
                }
            };
            self.metrics.in_flight(-1);
            resp
        }
        .instrument(span)
        .await;
        self.metrics.request(&labels, resp.status().as_u16());
        if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
    }

    async fn process<B, S, RB>(
        &self,
        req: Request<B>,
        inner: S,
        ctx: &RequestCtx,
        labels: &mut RequestLabels,
    ) -> Result<Response<Full<Bytes>>, GateError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
        S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        RB: hyper::body::Body<Data = Bytes>,
        RB::Error: Into<BoxError>,
    {
        // Stage: route. Paths that match no registry route are refused without a record.
        let m = match self.routes.resolve_request(&req) {
            Ok(m) => m,
            Err(RouteError::MethodNotAllowed(method)) => {
                return Err(GateError::MethodNotAllowed {
                    method,
                    allow: self.routes.allowed_methods(req.uri()),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let route: &RouteConfig = m.route;
        labels.route = Some(route.path.clone());
        labels.enforced = route.enforce;
        // Every answer from here on follows a decision record; a refusal's record says deny.
        labels.decision = Some("deny");
        let mut draft = Draft {
            action: route.action.map(|a| a.as_str().to_string()),
            ..Draft::default()
        };

        // Stage: authenticate.
        let authz = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let employee = match self.auth.authenticate(authz).await {
            Ok(e) => e,
            Err(e) => return Err(self.refuse(ctx, &draft, e.into()).await),
        };
        draft.principal = Some(principal(&employee));

        // Stage: purpose.
        let purpose = match parse_purpose(req.headers(), &self.headers) {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(ctx, &draft, e).await),
        };
        draft.purpose = purpose_record(&purpose);
        draft.case_id = purpose.case_id.clone();

        // Stage: resources (reads the body; the same bytes are forwarded).
        let (parts, body) = req.into_parts();
        // Limit: `server.body_timeout` for the whole body; a client that trickles or stalls it
        // is refused (408, recorded like every refusal from authentication on).
        let read = tokio::time::timeout(
            self.body_timeout,
            read_body(body, self.max_body, &parts.headers),
        );
        let body = match read.await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(self.refuse(ctx, &draft, e).await),
            Err(_) => {
                let e = GateError::RequestTimeout(self.body_timeout.as_millis());
                return Err(self.refuse(ctx, &draft, e).await);
            }
        };
        // INVARIANT: `RouteTable::new` accepted the route, so its kind names a registry.
        let Some(registry) = self.registries.get(route.kind.as_str()) else {
            return Err(self
                .refuse(
                    ctx,
                    &draft,
                    GateError::BadRequest("this route serves no registry".into()),
                )
                .await);
        };
        let mut subjects = match registry.subjects(route, &m, &body) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ctx, &draft, e).await),
        };
        draft.action = Some(subjects.action.as_str().to_string());
        draft.fields = subjects.fields.clone();

        // Stage: case.
        let case = match &purpose.case_id {
            None => None,
            Some(id) => match self.timed_case_lookup(id).await {
                Ok(Some(c)) => Some(c),
                Ok(None) => {
                    return Err(self
                        .refuse(ctx, &draft, GateError::CaseNotFound(id.clone()))
                        .await);
                }
                Err(e) => {
                    tracing::error!(error = %e, "case registry failed");
                    return Err(self
                        .refuse(ctx, &draft, GateError::CaseRegistryUnavailable)
                        .await);
                }
            },
        };
        draft.case_url = case.as_ref().and_then(|c| c.url.clone());

        // Stage: Cedar, one decision per data subject; all must allow.
        let policy = self.policy.load();
        let n = u32::try_from(subjects.resources.len()).unwrap_or(u32::MAX);
        let counters = self
            .counters
            .count_and_add(&employee.id, ctx.now.timestamp(), n);
        let client_ip = ctx.client_ip.as_deref().and_then(|s| s.parse().ok());
        // What every decision of this request shares (the employee, the case, the context),
        // built once for the decisions here and the release decisions on the answer. The
        // request's own resource is not part of it (a shadow-mode request may have none).
        let nobody = Resource::PersonSearch(String::new());
        let base = policy.request_base(&DecisionInput {
            employee: &employee,
            action: subjects.action,
            resource: subjects.resources.first().unwrap_or(&nobody),
            case: case.as_deref(),
            break_glass: purpose.break_glass_reason.is_some(),
            reason: purpose.break_glass_reason.as_deref(),
            fields: &subjects.fields,
            client_ip,
            now: ctx.now,
            counters,
            search: subjects.search.as_ref(),
            release: None,
        });
        let decisions: Vec<_> = subjects
            .resources
            .iter()
            .map(|r| policy.decide_in(&base, subjects.action, r, None))
            .collect();
        let allowed = !decisions.is_empty() && decisions.iter().all(|d| d.allow);
        let first_deny = decisions.iter().find(|d| !d.allow);
        // What the decisions depended on (audit format 1.2), for `policy replay`; the case
        // snapshot is durable before the records that name it are written.
        let inputs = match &self.snapshots {
            Some(snapshots) => {
                crate::audit::snapshots::decision_inputs(
                    snapshots,
                    case.as_ref(),
                    self.subject_key.as_ref(),
                    counters,
                    subjects.search.as_ref(),
                )
                .await
            }
            None => None,
        };

        // Stage: audit, durable before anything is forwarded or denied.
        let records: Vec<RecordBody> = subjects
            .resources
            .iter()
            .zip(&decisions)
            .map(|(r, d)| {
                let (kind, id) = r.type_and_id();
                let (verdict, code, reasons) = if allowed {
                    (Verdict::Allow, None, d.reasons.clone())
                } else if d.allow {
                    (
                        Verdict::Deny,
                        Some("requestDenied".to_string()),
                        vec!["another subject of the same request was denied".to_string()],
                    )
                } else {
                    (Verdict::Deny, d.code.clone(), d.reasons.clone())
                };
                let mut rec = Box::new(self.record(
                    ctx,
                    &draft,
                    Some(ResourceRef {
                        kind: kind.to_string(),
                        id: crate::audit::pseudonym::subject_id(
                            self.subject_key.as_ref(),
                            kind,
                            id,
                        ),
                    }),
                    verdict,
                    code,
                    d.policies.clone(),
                    reasons,
                    d.errors.clone(),
                    Some(policy.version().to_string()),
                ));
                rec.inputs = inputs.clone();
                if route.enforce {
                    RecordBody::Decision(rec)
                } else {
                    RecordBody::ShadowDecision(rec)
                }
            })
            .collect();
        if let Err(e) = self.append(records).await {
            tracing::error!(error = %e, "audit append failed; request not forwarded");
            return Err(GateError::AuditUnavailable);
        }
        self.metrics.decision_latency(ctx.started.elapsed());
        labels.decision = Some(if allowed { "allow" } else { "deny" });
        if !allowed && !route.enforce {
            // Shadow mode: the would-be deny is recorded above; forward regardless.
            self.metrics.shadow_would_deny(&route.path);
            tracing::info!(
                code = first_deny
                    .and_then(|d| d.code.as_deref())
                    .unwrap_or("notPermitted"),
                "shadow mode: would deny; forwarded"
            );
        } else if !allowed {
            let (code, reason) = match first_deny {
                Some(d) => (
                    d.code.clone().unwrap_or_else(|| "notPermitted".to_string()),
                    d.reasons
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "no policy permits this request".to_string()),
                ),
                None => (
                    "notPermitted".into(),
                    "no policy permits this request".into(),
                ),
            };
            return Err(GateError::Denied { code, reason });
        }

        // Stage: forward. INVARIANT: the decision records above are durable.
        let upstream_path = fill_template(&route.upstream_path, &subjects.upstream_params);
        // The gate's own `Fsc-Transaction-Id` when the upstream is an FSC Outway.
        let fsc_sent = self.outbound.fsc_transaction_id(&route.upstream);
        let started = std::time::Instant::now();
        let sent = match self.outbound.request(
            &route.upstream,
            parts.method.clone(),
            &upstream_path,
            &parts.headers,
            // The query decided on, with the fields the release decision needs added.
            match subjects.upstream_body.take() {
                Some(b) => Bytes::from(b),
                None => body,
            },
            &ctx.request_id,
            &ctx.trace.traceparent,
            fsc_sent.as_deref(),
        ) {
            Ok(out) => self.call_inner(inner, out, &route.upstream).await,
            Err(e) => Err(e),
        };

        // Stage: response — an answer the gate could not read is never passed on; every person
        // in the answer decided (release), the released ones minimised; the outcome record.
        let mut release: Vec<ReleaseRecord> = Vec::new();
        let mut upstream_status = None;
        let mut fsc_transaction_id = fsc_sent;
        let (status, upstream_ms, disclosed, answer) = match sent {
            Err(e) => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                (e.status().as_u16(), ms, vec![], Err(e))
            }
            Ok(up) => {
                let ms = u64::try_from(up.elapsed.as_millis()).unwrap_or(u64::MAX);
                upstream_status = Some(up.status.as_u16());
                fsc_transaction_id = up.fsc_transaction_id.clone();
                if let Err(e) = crate::forward::screen(&up) {
                    // Not the body: an error answer withheld for naming a person holds a BSN.
                    tracing::warn!(
                        upstream = %route.upstream,
                        upstream_status = up.status.as_u16(),
                        encoding = up.foreign_encoding.as_deref().map(crate::model::truncate_for_message),
                        code = e.code(),
                        "upstream answer not passed on"
                    );
                    (e.status().as_u16(), ms, vec![], Err(e))
                } else if up.status.is_success() {
                    match registry.read(&subjects, &up.body) {
                        Ok(read) => {
                            // Each person's decision names the person, within the request's
                            // base (the same employee, case and context as its decisions).
                            let released = self.release(
                                &policy,
                                &base,
                                &subjects,
                                &decisions,
                                &*read,
                                route.enforce,
                            );
                            let mut disclosed: Vec<ResourceRef> = subjects
                                .resources
                                .iter()
                                .filter(|r| matches!(r, Resource::Vehicle(_)))
                                .map(resource_ref)
                                .collect();
                            disclosed.extend(released.disclosed);
                            release = released.records;
                            match (
                                released.refusal,
                                read.release_body(&subjects.fields, &released.keep),
                            ) {
                                (Some(refusal), _) => {
                                    // An answer that cannot be cut down (RDW) is refused whole
                                    // when a person in it is withheld: nothing is disclosed.
                                    (refusal.status().as_u16(), ms, vec![], Err(refusal))
                                }
                                (None, Ok(body)) => {
                                    let body = body.map(Bytes::from).unwrap_or(up.body.clone());
                                    (
                                        up.status.as_u16(),
                                        ms,
                                        disclosed,
                                        Ok((up.status, up.headers, body)),
                                    )
                                }
                                (None, Err(_)) => {
                                    tracing::warn!(upstream = %route.upstream, "upstream answer could not be minimised");
                                    (502, ms, vec![], Err(GateError::UpstreamAnswerInvalid))
                                }
                            }
                        }
                        Err(_) => {
                            // Not the error text: a parse error can quote the answer (BSNs).
                            tracing::warn!(upstream = %route.upstream, "upstream answer unreadable");
                            (502, ms, vec![], Err(GateError::UpstreamAnswerInvalid))
                        }
                    }
                } else {
                    (
                        up.status.as_u16(),
                        ms,
                        vec![],
                        Ok((up.status, up.headers, up.body)),
                    )
                }
            }
        };
        let outcome = RecordBody::Outcome(OutcomeRecord {
            time: timestamp(Utc::now()),
            kind: OutcomeKind::Outcome,
            request_id: ctx.request_id.clone(),
            status,
            upstream_ms,
            disclosed: crate::audit::pseudonym::pseudonymise_refs(
                self.subject_key.as_ref(),
                disclosed,
            ),
            release: release
                .into_iter()
                .map(|mut r| {
                    if r.id != UNIDENTIFIED {
                        r.id = crate::audit::pseudonym::subject_id(
                            self.subject_key.as_ref(),
                            &r.kind,
                            &r.id,
                        );
                    }
                    r
                })
                .collect(),
            code: answer.as_ref().err().map(|e| e.code().to_string()),
            upstream_status,
            fsc_transaction_id,
        });
        self.metrics.upstream(
            &route.upstream,
            status,
            std::time::Duration::from_millis(upstream_ms),
        );
        let recorded = self.append(vec![outcome]).await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "outcome record failed; answer withheld");
            return Err(GateError::AuditUnavailable);
        }
        let (status, headers, body) = answer?;
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// Stage: forward. Calls the inner service (the upstream client, or any service a Rust
    /// team wraps) and reads its whole answer. Whatever the inner does, this returns: an error
    /// becomes 502 (or the [`GateError`] it carried), a hang 504 after `inner_timeout`, a panic
    /// 502, an answer over `max_response_bytes` 502 `upstreamTooLarge`.
    async fn call_inner<S, RB>(
        &self,
        inner: S,
        req: Request<Full<Bytes>>,
        upstream: &str,
    ) -> Result<crate::forward::UpstreamResponse, GateError>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        RB: hyper::body::Body<Data = Bytes>,
        RB::Error: Into<BoxError>,
    {
        use futures_util::FutureExt;
        let started = Instant::now();
        let max = self.max_response_bytes;
        let exchange = async {
            let resp = inner
                .oneshot(req)
                .await
                .map_err(|e| inner_error(e.into(), upstream))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    GateError::UpstreamTooLarge
                } else {
                    inner_error(e, upstream)
                }
            })?;
            Ok::<_, GateError>((parts, body.to_bytes()))
        };
        let guarded = std::panic::AssertUnwindSafe(exchange).catch_unwind();
        let (mut parts, body) = match tokio::time::timeout(self.inner_timeout, guarded).await {
            Err(_) => return Err(GateError::UpstreamTimeout),
            Ok(Err(_)) => {
                tracing::error!(upstream = %upstream, "the inner service panicked");
                return Err(GateError::UpstreamUnavailable);
            }
            Ok(Ok(r)) => r?,
        };
        let foreign_encoding = crate::forward::foreign_encoding(&parts.headers);
        let fsc_transaction_id = parts.extensions.remove::<FscTransactionId>().map(|id| id.0);
        crate::forward::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        // Only the id that is recorded reaches the client, and only from an FSC upstream.
        parts.headers.remove(crate::forward::FSC_TRANSACTION_ID);
        if let Some(v) = fsc_transaction_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            parts.headers.insert(crate::forward::FSC_TRANSACTION_ID, v);
        }
        Ok(crate::forward::UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            elapsed: started.elapsed(),
            foreign_encoding,
            fsc_transaction_id,
        })
    }

    /// Stage: release. One decision per person in the answer (`release` in Cedar), within the
    /// request's `base` (its employee, case and context) with what the answer says of the
    /// person. A person without a valid BSN is withheld without asking Cedar (nothing
    /// identifies them to decide on).
    ///
    /// INVARIANT: with `enforce`, only persons with an allow decision here are passed on; an
    /// answer that cannot be cut down (not BRP `personen`) is refused whole when one is withheld.
    fn release(
        &self,
        policy: &PolicyEngine,
        base: &crate::policy::RequestBase,
        subjects: &Subjects,
        decisions: &[crate::policy::Decision],
        read: &dyn crate::registry::ReadAnswer,
        enforce: bool,
    ) -> Released {
        let mut out = Released::default();
        let opaque = !read.can_cut();
        for person in read.persons() {
            let (record, allow) = match &person.bsn {
                None => (
                    ReleaseRecord {
                        kind: "Person".into(),
                        id: UNIDENTIFIED.into(),
                        decision: Verdict::Deny,
                        released: !enforce,
                        code: Some(CODE_NOT_IDENTIFIED.into()),
                        policies: vec![],
                    },
                    None,
                ),
                Some(bsn) => {
                    let resource = Resource::Person(bsn.clone());
                    // Named: the request asked for this person and decided allow for it.
                    let named = subjects
                        .resources
                        .iter()
                        .zip(decisions)
                        .any(|(r, d)| d.allow && *r == resource);
                    let d = policy.decide_in(
                        base,
                        Action::RELEASE,
                        &resource,
                        Some(&Release {
                            request_action: subjects.action,
                            named,
                            person,
                            persons_in_answer: read.persons().len(),
                        }),
                    );
                    let record = ReleaseRecord {
                        kind: "Person".into(),
                        id: bsn.as_str().to_string(),
                        decision: if d.allow {
                            Verdict::Allow
                        } else {
                            Verdict::Deny
                        },
                        released: d.allow || !enforce,
                        code: d.code.clone(),
                        policies: d.policies.clone(),
                    };
                    (record, Some(d))
                }
            };
            if record.released {
                if record.id != UNIDENTIFIED {
                    out.disclosed.push(ResourceRef {
                        kind: "Person".into(),
                        id: record.id.clone(),
                    });
                }
            } else if opaque && out.refusal.is_none() {
                out.refusal = Some(match &allow {
                    Some(d) => GateError::Denied {
                        code: d.code.clone().unwrap_or_else(|| "notPermitted".into()),
                        reason: d
                            .reasons
                            .first()
                            .cloned()
                            .unwrap_or_else(|| "no policy permits this request".into()),
                    },
                    None => GateError::Denied {
                        code: CODE_NOT_IDENTIFIED.into(),
                        reason: REASON_NOT_IDENTIFIED.into(),
                    },
                });
            }
            self.metrics.release(record.released);
            out.keep.push(record.released);
            out.records.push(record);
        }
        out
    }

    /// Writes the decision record of a refusal; returns the error to answer with
    /// (`AuditUnavailable` when the record could not be made durable).
    async fn refuse(&self, ctx: &RequestCtx, draft: &Draft, err: GateError) -> GateError {
        let rec = self.record(
            ctx,
            draft,
            None,
            Verdict::Deny,
            Some(err.code().to_string()),
            vec![],
            vec![err.to_string()],
            vec![],
            None,
        );
        match self.append(vec![RecordBody::Decision(Box::new(rec))]).await {
            Ok(_) => err,
            Err(e) => {
                tracing::error!(error = %e, "audit append failed");
                GateError::AuditUnavailable
            }
        }
    }

    /// Looks a case up, counting its latency and failures.
    async fn timed_case_lookup(
        &self,
        id: &str,
    ) -> Result<Option<Arc<crate::model::Case>>, crate::purpose::CaseRegistryError> {
        let started = Instant::now();
        let found = self.cases.lookup(id).await;
        self.metrics.case_lookup(started.elapsed(), found.is_ok());
        found
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &RequestCtx,
        draft: &Draft,
        resource: Option<ResourceRef>,
        decision: Verdict,
        code: Option<String>,
        policies: Vec<String>,
        reasons: Vec<String>,
        errors: Vec<String>,
        policy_version: Option<String>,
    ) -> DecisionRecord {
        DecisionRecord {
            time: timestamp(ctx.now),
            kind: DecisionKind::Decision,
            gate: self.gate_id.clone(),
            request_id: ctx.request_id.clone(),
            trace_id: ctx.trace.trace_id.clone(),
            span_id: Some(ctx.trace.span_id.clone()),
            client_span_id: ctx.trace.client_span_id.clone(),
            principal: draft.principal.clone(),
            action: draft.action.clone(),
            resource,
            case_id: draft.case_id.clone(),
            case_url: draft.case_url.clone(),
            purpose: draft.purpose.clone(),
            fields: draft.fields.clone(),
            decision,
            code,
            policies,
            reasons,
            errors,
            request: RequestRecord {
                method: ctx.method.clone(),
                path: ctx.path.clone(),
                client_ip: ctx.client_ip.clone(),
            },
            policy_version,
            inputs: None,
        }
    }
}

/// An inner service's error as the gate's: the [`GateError`] it carried (the upstream client's
/// 502/504), a tower timeout as 504, anything else as 502.
fn inner_error(e: BoxError, upstream: &str) -> GateError {
    if let Some(g) = e.downcast_ref::<GateError>() {
        return g.clone();
    }
    if e.is::<tower::timeout::error::Elapsed>() {
        return GateError::UpstreamTimeout;
    }
    tracing::warn!(upstream = %upstream, error = %e, "the inner service failed");
    GateError::UpstreamUnavailable
}

/// A boxed error, as tower and hyper pass them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request extension: the client's address (the listener sets it; an embedding server may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// `id` of a person the answer gives no valid BSN for.
const UNIDENTIFIED: &str = "unidentified";
/// Code of a person withheld because the answer does not identify them.
const CODE_NOT_IDENTIFIED: &str = "personNotIdentified";
const REASON_NOT_IDENTIFIED: &str = "the registry answered with a person it does not identify";

/// The outcome of the release stage.
#[derive(Default)]
struct Released {
    /// One per person in the answer, in its order (subject ids in clear).
    records: Vec<ReleaseRecord>,
    /// Per person: passed on.
    keep: Vec<bool>,
    /// The released persons.
    disclosed: Vec<ResourceRef>,
    /// Set when the answer must be refused whole.
    refusal: Option<GateError>,
}

fn resource_ref(r: &Resource) -> ResourceRef {
    let (kind, id) = r.type_and_id();
    ResourceRef {
        kind: kind.to_string(),
        id: id.to_string(),
    }
}

/// RFC 3339 UTC with milliseconds, as in every record.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn principal(e: &Employee) -> Principal {
    Principal {
        id: e.id.clone(),
        org: e.org.clone(),
        roles: e.roles.clone(),
        department: e.department.clone(),
    }
}

fn purpose_record(p: &Purpose) -> PurposeRecord {
    PurposeRecord {
        doelbinding: p.doelbinding.clone(),
        verwerking: p.verwerking.clone(),
        break_glass: p.break_glass_reason.is_some(),
        reason: p.break_glass_reason.clone(),
    }
}

/// Reads the request body up to `max` bytes (413 above). A body framed by `Transfer-Encoding`
/// is refused: with `Content-Length` beside it the two framings disagree (a smuggling shape; the
/// HTTP parser keeps only the chunked one and drops the length), and a lookup body is small
/// enough to be sent with its length.
async fn read_body<B>(body: B, max: usize, headers: &http::HeaderMap) -> Result<Bytes, GateError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(GateError::BadRequest(
            "a request body framed by `transfer-encoding` is refused: send it with `content-length`"
                .into(),
        ));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(GateError::BodyTooLarge(max));
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(GateError::BodyTooLarge(max))
        }
        Err(e) => Err(GateError::BadRequest(format!(
            "the request body could not be read: {e}"
        ))),
    }
}
