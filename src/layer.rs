//! The gate as tower middleware: [`PurposeGateLayer`] wraps any service that answers a registry
//! request, so that every call through it is decided and audited.
//!
//! ```text
//! request ─► PurposeGate ─► route → authenticate → purpose → subjects → case → decide
//!                            → record (durable) ─┬─ deny ─► problem+json
//!                                                └─ allow ─► inner.call ─► inspect (release)
//!                                                            → outcome (durable) ─► answer
//! ```
//!
//! The phases run in this order for every inner service; each refusal, from any phase, goes
//! through one rescue that writes its deny record and answers problem+json (`error.rs`).
//!
//! INVARIANT: the inner service is called only after the request's decision records are
//! durable, and the layer answers only after the outcome record is durable; an inner service
//! that fails (502), hangs (504 after the gate's inner timeout) or panics (502) still gets its
//! outcome record. The layer's error type is [`Infallible`]: it always answers.
//!
//! The inner service receives `Request<Full<Bytes>>`: the method, the route's upstream path
//! (template filled with normalised values), the body decided on (with the fields the release
//! decision needs), only the allowlisted client headers plus `X-Request-Id`, `traceparent` and
//! `Accept-Encoding: identity`, and the [`UpstreamName`] (and, for an FSC Outway, the
//! [`FscTransactionId`]) as extensions. In the binary the inner service is the pooled
//! upstream client ([`crate::forward::Upstreams`]); embedded, it is whatever serves the
//! registry data (an axum router, an application's outbound HTTP client).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

pub use crate::forward::{FscTransactionId, OutboundPolicy, UpstreamName};
pub use crate::gate::{BoxError, ClientAddr, Gate, StartError};

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::config::{Config, HeadersConfig, RouteConfig};
use crate::policy::PolicyEngine;
use crate::purpose::CaseRegistry;

/// Puts a [`Gate`] in front of an inner service.
#[derive(Clone)]
pub struct PurposeGateLayer {
    gate: Arc<Gate>,
}

impl PurposeGateLayer {
    /// A layer over a built gate (shared by every service the layer makes).
    pub fn new(gate: Arc<Gate>) -> PurposeGateLayer {
        PurposeGateLayer { gate }
    }

    /// A gate built from a TOML config (what `purpose-gate serve` runs).
    pub async fn from_config(cfg: &Config) -> Result<PurposeGateLayer, StartError> {
        Ok(PurposeGateLayer::new(Arc::new(Gate::build(cfg).await?)))
    }

    /// A gate built from parts, for embedding.
    pub fn builder() -> GateBuilder {
        GateBuilder::default()
    }

    /// The gate (its audit log, metrics, policy snapshot).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

impl<S> Layer<S> for PurposeGateLayer {
    type Service = PurposeGate<S>;

    fn layer(&self, inner: S) -> PurposeGate<S> {
        PurposeGate {
            gate: Arc::clone(&self.gate),
            inner,
        }
    }
}

/// The service [`PurposeGateLayer`] makes.
#[derive(Clone)]
pub struct PurposeGate<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for PurposeGate<S>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: hyper::body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

    /// Always ready: the inner service's readiness is awaited when an allowed request is
    /// forwarded (after its decision record), so a refusal never waits for the upstream.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let gate = Arc::clone(&self.gate);
        // The clone serves this request; `self.inner` stays ready for the next.
        let inner = self.inner.clone();
        Box::pin(async move { Ok(gate.handle(req, inner).await) })
    }
}

/// Builds a [`Gate`] from parts, for an application that embeds the layer.
pub struct GateBuilder {
    gate_id: String,
    routes: Vec<RouteConfig>,
    policy: Option<PolicyEngine>,
    auth: Option<Authenticator>,
    cases: Option<Arc<dyn CaseRegistry>>,
    audit: Option<AuditLog>,
    snapshots_dir: Option<std::path::PathBuf>,
    headers: HeadersConfig,
    outbound: OutboundPolicy,
    max_body: usize,
    body_timeout: Duration,
    inner_timeout: Duration,
    max_response_bytes: usize,
}

impl Default for GateBuilder {
    fn default() -> Self {
        let server = crate::config::ServerConfig::default();
        GateBuilder {
            gate_id: "gate".into(),
            routes: Vec::new(),
            policy: None,
            auth: None,
            cases: None,
            audit: None,
            snapshots_dir: None,
            headers: HeadersConfig::default(),
            outbound: OutboundPolicy::allowlist_only(),
            max_body: server.max_body_bytes,
            body_timeout: server.body_timeout.0,
            inner_timeout: Duration::from_secs(30),
            max_response_bytes: 8 << 20,
        }
    }
}

impl GateBuilder {
    /// `gate` of every decision record.
    pub fn gate_id(mut self, id: impl Into<String>) -> Self {
        self.gate_id = id.into();
        self
    }

    /// A route (as `[[routes]]` in the config): which requests are registry requests, of
    /// which kind, and the path the inner service gets.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.routes.push(route);
        self
    }

    /// The loaded policies.
    pub fn policies(mut self, policy: PolicyEngine) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Who the employee is (JWT verification).
    pub fn authenticator(mut self, auth: Authenticator) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Where cases come from.
    pub fn cases(mut self, cases: Arc<dyn CaseRegistry>) -> Self {
        self.cases = Some(cases);
        self
    }

    /// The durable decision log.
    pub fn audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The durable decision log in `dir` (default `[audit]` settings), with the case
    /// snapshots its decision records name beside it (`policy replay`).
    pub fn audit_dir(mut self, dir: &std::path::Path) -> Result<Self, StartError> {
        let log = crate::config::AuditConfig {
            dir: dir.to_path_buf(),
            ..crate::config::AuditConfig::default()
        }
        .open()
        .map_err(|e| StartError(format!("audit directory `{}`: {e}", dir.display())))?;
        self.audit = Some(log);
        self.snapshots_dir = Some(dir.to_path_buf());
        Ok(self)
    }

    /// Header names (`X-Case-Id`, …), as `[headers]`.
    pub fn headers(mut self, headers: HeadersConfig) -> Self {
        self.headers = headers;
        self
    }

    /// Which client headers reach the inner service, and which upstreams are FSC Outways.
    pub fn outbound(mut self, outbound: OutboundPolicy) -> Self {
        self.outbound = outbound;
        self
    }

    /// Longest the inner service may take (default 30 s): then 504, recorded.
    pub fn inner_timeout(mut self, t: Duration) -> Self {
        self.inner_timeout = t;
        self
    }

    /// Largest answer read from the inner service (default 8 MiB).
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Largest request body (default as `server.max_body_bytes`).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body = n;
        self
    }

    /// The gate; names the first missing part.
    pub fn build(self) -> Result<PurposeGateLayer, StartError> {
        let missing = |what: &str| StartError(format!("the gate needs {what}"));
        let gate = Gate::from_parts(crate::gate::Parts {
            gate_id: self.gate_id,
            routes: self.routes,
            policy: self.policy.ok_or_else(|| missing("policies"))?,
            auth: self.auth.ok_or_else(|| missing("an authenticator"))?,
            cases: self.cases.ok_or_else(|| missing("a case registry"))?,
            audit: self.audit.ok_or_else(|| missing("an audit log"))?,
            snapshots_dir: self.snapshots_dir,
            headers: self.headers,
            outbound: self.outbound,
            max_body: self.max_body,
            body_timeout: self.body_timeout,
            inner_timeout: self.inner_timeout,
            max_response_bytes: self.max_response_bytes,
        })?;
        Ok(PurposeGateLayer::new(Arc::new(gate)))
    }
}
