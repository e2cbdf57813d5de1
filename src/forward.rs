//! Forward: sends an allowed request to its upstream registry.
//!
//! Guarantees: only an allowlist of client headers reaches the upstream (content negotiation,
//! `User-Agent`, `tracestate` and the Dutch purpose headers `X-Doelbinding`/`X-Verwerking`);
//! the client's `Authorization`, cookies, forwarding and identity headers never do. The gate
//! adds the configured upstream credentials, `X-Request-Id` and `traceparent`. The body sent is
//! exactly the body that was decided on. Connect failures give 502, timeouts 504.
//! `https://` upstreams are reached over rustls (the CAs of `ca_file` or the webpki roots, and
//! the optional client certificate); a failed handshake or refused client certificate is 502.
//!
//! Encodings: every forwarded request says `Accept-Encoding: identity` (the client's is never
//! passed on), and [`screen`] refuses an answer the gate could not read: one with a
//! `Content-Encoding` other than `identity`, or a `Transfer-Encoding` other than `chunked`
//! (502 `upstreamEncoding`). The gate decodes no compression: an answer it cannot read is an
//! answer whose disclosed persons it cannot know. An error answer (not 2xx) is passed on only
//! when it is empty, or JSON (`application/json`, `application/problem+json`) that names no
//! person (no `burgerservicenummer` member and no nine-digit number passing the 11-proef
//! anywhere in it); any other error answer becomes the gate's own 502
//! (`upstreamAnswerInvalid`, `upstreamErrorWithheld`).
//!
//! FSC: an upstream with `fsc = true` is reached through an FSC Outway. FSC Logging 1.0
//! (Logius, `fsc-logging`, section Outway, "Writing to the TransactionLog") says:
//!
//! > The Outway **MUST** create a TransactionID which **MUST** be unique for the transaction,
//! > the format is determined in a FSC Profile.
//! >
//! > The Outway **MUST** add the TransactionID to the response sent to the Client using the
//! > HTTP header `Fsc-Transaction-Id`.
//!
//! and its architecture section: "It is RECOMMENDED to also add the TransactionID to logs
//! created by other applications involved with the Transaction. E.g. the client making the
//! request". So the id the Outway returns is the one its TransactionLog holds, and that is the
//! one recorded. The gate also sends a fresh UUID v7 of its own in `Fsc-Transaction-Id` (a
//! Profile may restrict the format "for example UUIDv7", and Outways that take the client's
//! id require one); when the Outway's answer carries no usable id (or no answer came), the id
//! the gate sent is recorded. A client's `Fsc-Transaction-Id` is never forwarded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Config, UpstreamConfig};
use crate::error::GateError;

/// Client headers passed on to the upstream (all others are dropped).
const FORWARDED_CLIENT_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "user-agent",
    "tracestate",
    "accept-crs",
    "content-crs",
];

/// Hop-by-hop headers (RFC 9110 section 7.6.1) never passed on in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// One configured upstream.
struct Upstream {
    /// `scheme://authority`
    origin: String,
    /// Path prefix of the base URL, without trailing `/`.
    prefix: String,
    timeout: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_response_bytes: usize,
    /// Reached through an FSC Outway (`fsc = true`).
    fsc: bool,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What the upstream answered.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
    /// The content or transfer coding of the answer when it is one the gate does not read
    /// (anything but absent/`identity`, or `chunked` framing).
    pub foreign_encoding: Option<String>,
    /// For an FSC upstream: the TransactionID of this request — the Outway's
    /// `Fsc-Transaction-Id` answer header, or the id the gate sent when the answer carried
    /// none it could use. `None` for other upstreams.
    pub fsc_transaction_id: Option<String>,
}

/// Extension of an outbound request: the name of the `[upstreams.NAME]` it goes to (set by
/// the gate layer, read by the upstream client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamName(pub String);

/// Extension of an outbound request (the gate's `Fsc-Transaction-Id` to send) and of an
/// upstream client's response (the TransactionID to record: the Outway's, or the one sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FscTransactionId(pub String);

/// `Fsc-Transaction-Id` (FSC Logging 1.0).
pub const FSC_TRANSACTION_ID: &str = "fsc-transaction-id";

/// The client headers passed on (the allowlist) and which upstreams are FSC Outways: what the
/// gate layer needs to build the outbound request, whatever inner service sends it.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    forwarded: Vec<HeaderName>,
    fsc: Vec<String>,
}

impl OutboundPolicy {
    /// From the config: the allowlist plus `[headers]` purpose headers and `forward`, and the
    /// upstreams with `fsc = true`.
    pub fn new(cfg: &Config) -> Result<OutboundPolicy, String> {
        let mut forwarded: Vec<HeaderName> = FORWARDED_CLIENT_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        for h in [&cfg.headers.doelbinding, &cfg.headers.verwerking]
            .into_iter()
            .chain(&cfg.headers.forward)
        {
            let name = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("`{h}` is not a valid header name"))?;
            forwarded.push(name);
        }
        let fsc = cfg
            .upstreams
            .iter()
            .filter(|(_, u)| u.fsc)
            .map(|(n, _)| n.clone())
            .collect();
        Ok(OutboundPolicy { forwarded, fsc })
    }

    /// Only the built-in allowlist and no FSC upstream (for an embedded gate).
    pub fn allowlist_only() -> OutboundPolicy {
        OutboundPolicy {
            forwarded: FORWARDED_CLIENT_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            fsc: Vec::new(),
        }
    }

    /// A new `Fsc-Transaction-Id` (UUID v7) for a request to `upstream`, when that upstream is
    /// reached through an FSC Outway; `None` otherwise.
    pub fn fsc_transaction_id(&self, upstream: &str) -> Option<String> {
        self.fsc
            .iter()
            .any(|u| u == upstream)
            .then(|| uuid::Uuid::now_v7().to_string())
    }

    /// The request to hand to the inner service: `method` to `path` (the filled upstream
    /// template) with `body`, the allowlisted client headers, `X-Request-Id`, `traceparent`,
    /// `Accept-Encoding: identity`, and the upstream's name (and FSC id) as extensions.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        upstream: &str,
        method: Method,
        path: &str,
        client_headers: &HeaderMap,
        body: Bytes,
        request_id: &str,
        traceparent: &str,
        fsc_transaction_id: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, GateError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))
            .map_err(|_| GateError::UpstreamUnavailable)?;
        let h = req.headers_mut();
        for name in &self.forwarded {
            for v in client_headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        // The gate reads every answer before it leaves: it asks for no compression at all.
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        // INVARIANT: no client `Fsc-Transaction-Id` is in `h` (never in the allowlist, refused
        // in `headers.forward`); only the gate's own is sent.
        h.remove(FSC_TRANSACTION_ID);
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(traceparent) {
            h.insert("traceparent", v);
        }
        req.extensions_mut()
            .insert(UpstreamName(upstream.to_string()));
        if let Some(id) = fsc_transaction_id {
            req.extensions_mut()
                .insert(FscTransactionId(id.to_string()));
        }
        Ok(req)
    }
}

/// The registries' pooled HTTP clients as one tower service: the innermost service of the
/// binary's stack. It sends a request the gate layer built to the upstream its
/// [`UpstreamName`] names (origin and path prefix of the configured URL), with the upstream's
/// credentials and, for an FSC Outway, the gate's `Fsc-Transaction-Id`; it reads the whole
/// answer (at most `max_response_bytes`, within `timeout`) and returns it with the
/// TransactionID to record as a [`FscTransactionId`] extension. Errors are [`GateError`]s
/// (502 `upstreamUnavailable`/`upstreamTooLarge`, 504 `upstreamTimeout`).
#[derive(Clone)]
pub struct Upstreams {
    map: Arc<HashMap<String, Upstream>>,
}

impl Upstreams {
    /// Builds a pooled client per upstream; secret header files are read here.
    pub fn new(cfg: &Config) -> Result<Upstreams, String> {
        let mut map = HashMap::new();
        for (name, up) in &cfg.upstreams {
            map.insert(name.clone(), build_upstream(name, up)?);
        }
        Ok(Upstreams { map: Arc::new(map) })
    }

    /// The longest `timeout` of any upstream.
    pub fn max_timeout(&self) -> Duration {
        self.map
            .values()
            .map(|u| u.timeout)
            .max()
            .unwrap_or(Duration::from_secs(30))
    }

    /// The largest `max_response_bytes` of any upstream.
    pub fn max_response_bytes(&self) -> usize {
        self.map
            .values()
            .map(|u| u.max_response_bytes)
            .max()
            .unwrap_or(8 << 20)
    }

    async fn send(
        map: Arc<HashMap<String, Upstream>>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Full<Bytes>>, GateError> {
        let Some(UpstreamName(name)) = req.extensions_mut().remove::<UpstreamName>() else {
            return Err(GateError::UpstreamUnavailable);
        };
        let sent_fsc = req.extensions_mut().remove::<FscTransactionId>();
        let up = map.get(&name).ok_or(GateError::UpstreamUnavailable)?;
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = format!("{}{}{}", up.origin, up.prefix, path)
            .parse()
            .map_err(|_| GateError::UpstreamUnavailable)?;
        let h = req.headers_mut();
        for (n, v) in &up.headers {
            h.insert(n.clone(), v.clone());
        }
        h.remove(FSC_TRANSACTION_ID);
        let sent_fsc = sent_fsc.filter(|_| up.fsc);
        if let Some(v) = sent_fsc
            .as_ref()
            .and_then(|id| HeaderValue::from_str(&id.0).ok())
        {
            h.insert(FSC_TRANSACTION_ID, v);
        }
        let max = up.max_response_bytes;
        let exchange = async {
            let resp = up.client.request(req).await.map_err(|e| {
                tracing::warn!(upstream = %name, error = %e, "upstream request failed");
                GateError::UpstreamUnavailable
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        GateError::UpstreamTooLarge
                    } else {
                        tracing::warn!(upstream = %name, error = %e, "upstream body failed");
                        GateError::UpstreamUnavailable
                    }
                })?
                .to_bytes();
            Ok::<_, GateError>((parts, body))
        };
        let (mut parts, body) = tokio::time::timeout(up.timeout, exchange)
            .await
            .map_err(|_| GateError::UpstreamTimeout)??;
        let echoed = parts
            .headers
            .get(FSC_TRANSACTION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| valid_transaction_id(id))
            .map(str::to_string);
        parts.headers.remove(FSC_TRANSACTION_ID);
        if up.fsc {
            if echoed.is_none() {
                tracing::warn!(
                    upstream = %name,
                    "the fsc outway answered without a usable fsc-transaction-id; the id sent is recorded"
                );
            }
            if let Some(id) = echoed.or_else(|| sent_fsc.map(|s| s.0)) {
                parts.extensions.insert(FscTransactionId(id));
            }
        }
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

impl tower::Service<Request<Full<Bytes>>> for Upstreams {
    type Response = Response<Full<Bytes>>;
    type Error = GateError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, GateError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), GateError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        Box::pin(Upstreams::send(Arc::clone(&self.map), req))
    }
}

fn build_upstream(name: &str, up: &UpstreamConfig) -> Result<Upstream, String> {
    let uri: Uri = up
        .url
        .parse()
        .map_err(|_| format!("`upstreams.{name}.url` is not a valid URL"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`upstreams.{name}.url` has no host"))?;
    let prefix = uri.path().trim_end_matches('/').to_string();
    let mut headers = Vec::new();
    for (k, v) in &up.headers {
        headers.push(header_pair(name, k, v)?);
    }
    for (k, path) in &up.header_files {
        let v = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "`upstreams.{name}.header_files.{k}`: cannot read `{}`: {e}",
                path.display()
            )
        })?;
        headers.push(header_pair(name, k, v.trim())?);
    }
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(up.connect_timeout.0));
    connector.set_nodelay(true);
    // The TLS layer passes `http://` through untouched; `https://` upstreams get rustls with
    // `ca_file` (or the webpki roots) and the optional client certificate.
    connector.enforce_http(false);
    let tls = crate::tls::upstream_client_config(name, up)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector);
    Ok(Upstream {
        origin: format!("{scheme}://{authority}"),
        prefix,
        timeout: up.timeout.0,
        headers,
        max_response_bytes: up.max_response_bytes,
        fsc: up.fsc,
        client,
    })
}

fn header_pair(up: &str, k: &str, v: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| format!("`upstreams.{up}.headers`: `{k}` is not a valid header name"))?;
    let mut v = HeaderValue::from_str(v)
        .map_err(|_| format!("`upstreams.{up}.headers.{k}`: not a valid header value"))?;
    v.set_sensitive(true);
    Ok((n, v))
}

/// A TransactionID the gate records and passes on: 1 to 128 characters of letters, digits and
/// `-._:`. FSC leaves the format to a Profile (a UUID fits); this keeps a recorded id one
/// plain JSON string that an auditor can search for as it is.
pub fn valid_transaction_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

/// The coding of an answer the gate cannot read, if any: a `Content-Encoding` other than
/// `identity`, or a `Transfer-Encoding` other than `chunked` (which the HTTP client removes).
pub fn foreign_encoding(headers: &HeaderMap) -> Option<String> {
    let tokens = |name: header::HeaderName, fine: &'static str| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
            .filter(move |t| !t.is_empty() && t != fine)
            .collect::<Vec<_>>()
    };
    let mut foreign = tokens(header::CONTENT_ENCODING, "identity");
    foreign.extend(tokens(header::TRANSFER_ENCODING, "chunked"));
    (!foreign.is_empty()).then(|| foreign.join(", "))
}

/// Whether the gate may pass this answer on as the upstream gave it (before the response
/// stage reads a 2xx answer for its data subjects). Refuses what it cannot read:
/// - any answer in a coding other than identity: `upstreamEncoding`;
/// - an error answer (not 2xx) with a body that is not JSON (`application/json` or
///   `application/*+json`, and parsing as such): `upstreamAnswerInvalid`;
/// - an error answer whose JSON names a person: `upstreamErrorWithheld`.
///
/// An empty error answer is passed on (it discloses nothing).
pub fn screen(up: &UpstreamResponse) -> Result<(), GateError> {
    if up.foreign_encoding.is_some() {
        return Err(GateError::UpstreamEncoding);
    }
    if up.status.is_success() || up.body.is_empty() {
        return Ok(());
    }
    let json_type = up
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !json_type {
        return Err(GateError::UpstreamAnswerInvalid);
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&up.body).map_err(|_| GateError::UpstreamAnswerInvalid)?;
    if names_person(&doc) {
        return Err(GateError::UpstreamErrorWithheld);
    }
    Ok(())
}

/// Whether a JSON document names a person: a member called `burgerservicenummer` (any
/// value), or a BSN — nine digits passing the 11-proef, not part of a longer run of digits
/// and not inside a UUID — in any string or number, key or value.
fn names_person(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => holds_bsn(s),
        Value::Number(n) => holds_bsn(&n.to_string()),
        Value::Array(items) => items.iter().any(names_person),
        Value::Object(members) => members.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("burgerservicenummer") || holds_bsn(k) || names_person(v)
        }),
        Value::Bool(_) | Value::Null => false,
    }
}

/// Whether `text` holds a run of exactly nine digits that is a valid BSN, outside any UUID
/// in its canonical form (8-4-4-4-12 hex digits). An error answer's `instance` often names
/// a UUID — the gate's own request id among them — and one in about forty random UUIDs
/// holds nine digits in a row that pass the 11-proef; such a run is not a person.
fn holds_bsn(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut run_start = None;
    let mut i = 0;
    while i <= bytes.len() {
        if run_start.is_none() && is_uuid_at(bytes, i) {
            i += UUID_LEN;
            continue;
        }
        match (bytes.get(i).is_some_and(u8::is_ascii_digit), run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                run_start = None;
                if i - start == 9 && crate::model::Bsn::parse(&text[start..i]).is_ok() {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

const UUID_LEN: usize = 36;

/// Whether a canonical UUID starts at `at`: neither preceded nor followed by a hex digit.
fn is_uuid_at(bytes: &[u8], at: usize) -> bool {
    let hex_at = |k: usize| bytes.get(k).is_some_and(u8::is_ascii_hexdigit);
    if (at > 0 && hex_at(at - 1)) || hex_at(at + UUID_LEN) {
        return false;
    }
    bytes.get(at..at + UUID_LEN).is_some_and(|window| {
        window.iter().enumerate().all(|(k, b)| match k {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
    })
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// The W3C trace context of a request: the trace id and the `traceparent` sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    /// The gate's span for this request (lowercase hex, 16 digits): the parent id in the
    /// `traceparent` sent upstream.
    pub span_id: String,
    /// The client's span (the parent id of its `traceparent`), when it sent a valid one.
    pub client_span_id: Option<String>,
    pub traceparent: String,
}

/// Continues the client's `traceparent` (version 00) or starts a new trace.
pub fn trace_context(headers: &HeaderMap) -> TraceContext {
    let span: [u8; 8] = rand_bytes();
    let span_hex = hex::encode(span);
    if let Some((trace_id, parent, flags)) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        return TraceContext {
            traceparent: format!("00-{trace_id}-{span_hex}-{flags}"),
            trace_id,
            span_id: span_hex,
            client_span_id: Some(parent),
        };
    }
    let trace: [u8; 16] = rand_bytes();
    let trace_id = hex::encode(trace);
    TraceContext {
        traceparent: format!("00-{trace_id}-{span_hex}-01"),
        trace_id,
        span_id: span_hex,
        client_span_id: None,
    }
}

/// `(trace id, parent id, flags)` of a version 00 `traceparent`.
fn parse_traceparent(v: &str) -> Option<(String, String, String)> {
    let mut parts = v.trim().split('-');
    let (ver, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.next().is_some()
        || ver != "00"
        || !lower_hex(trace, 32)
        || !lower_hex(parent, 16)
        || !lower_hex(flags, 2)
        || trace.bytes().all(|b| b == b'0')
        || parent.bytes().all(|b| b == b'0')
    {
        return None;
    }
    Some((trace.to_string(), parent.to_string(), flags.to_string()))
}

/// Random bytes from the thread-local CSPRNG (`rand::thread_rng`: ChaCha, seeded and reseeded
/// from the OS), without a system call per id.
pub(crate) fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let t = trace_context(&h);
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            t.traceparent
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(!t.traceparent.contains("00f067aa0ba902b7"));
        assert!(t.traceparent.ends_with("-01"));
        assert_eq!(t.client_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(t.traceparent[36..52], t.span_id);
    }

    #[test]
    fn random_ids_are_not_repeated() {
        let a: [u8; 16] = rand_bytes();
        let b: [u8; 16] = rand_bytes();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
        let t = (
            trace_context(&HeaderMap::new()),
            trace_context(&HeaderMap::new()),
        );
        assert_ne!(t.0.trace_id, t.1.trace_id);
        assert_ne!(t.0.span_id, t.1.span_id);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        let t = trace_context(&h);
        assert_ne!(t.trace_id, "00000000000000000000000000000000");
        assert_eq!(t.trace_id.len(), 32);
        assert_eq!(t.traceparent.len(), 55);
    }

    fn answer(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: &str,
    ) -> UpstreamResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_static(v));
        }
        UpstreamResponse {
            status: StatusCode::from_u16(status).unwrap(),
            foreign_encoding: foreign_encoding(&h),
            headers: h,
            body: Bytes::from(body.to_string()),
            elapsed: Duration::ZERO,
            fsc_transaction_id: None,
        }
    }

    #[test]
    fn only_identity_answers_are_read() {
        for (k, v) in [
            ("content-encoding", "gzip"),
            ("content-encoding", "br"),
            ("content-encoding", "deflate"),
            ("content-encoding", "identity, gzip"),
            ("content-encoding", "x-custom"),
            ("transfer-encoding", "gzip, chunked"),
        ] {
            let a = answer(200, &[(k, v)], r#"{"personen":[]}"#);
            assert!(a.foreign_encoding.is_some(), "{k}: {v}");
            assert!(
                matches!(screen(&a), Err(GateError::UpstreamEncoding)),
                "{k}: {v}"
            );
            // Also on an error answer.
            let a = answer(404, &[(k, v), ("content-type", "application/json")], "{}");
            assert!(
                matches!(screen(&a), Err(GateError::UpstreamEncoding)),
                "{k}: {v}"
            );
        }
        for ok in [
            &[][..],
            &[("content-encoding", "identity")][..],
            &[("content-encoding", "IDENTITY")][..],
            &[("transfer-encoding", "chunked")][..],
        ] {
            let a = answer(200, ok, r#"{"personen":[]}"#);
            assert_eq!(a.foreign_encoding, None, "{ok:?}");
            assert!(screen(&a).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn error_answers_pass_only_as_json_that_names_no_person() {
        let problem = ("content-type", "application/problem+json; charset=utf-8");
        let pass = [
            answer(
                404,
                &[problem],
                r#"{"status":404,"title":"Opgevraagde resource bestaat niet.","code":"notFound"}"#,
            ),
            answer(
                400,
                &[("content-type", "application/json")],
                r#"{"invalidParams":[{"name":"fields","reason":"123456789 is te lang"}]}"#,
            ),
            answer(503, &[], ""),
            // Ten digits, or nine failing the 11-proef, are not a BSN.
            answer(
                500,
                &[problem],
                r#"{"detail":"ref 9999936531 and 123456789"}"#,
            ),
            // Nor nine digits inside a UUID: 328472025 passes the 11-proef.
            answer(
                404,
                &[problem],
                r#"{"instance":"urn:uuid:01a23b12-6344-703d-a183-328472025e13","status":404}"#,
            ),
            answer(
                404,
                &[problem],
                r#"{"instance":"/x/01A23B12-6344-703D-A183-E13328472025"}"#,
            ),
        ];
        for a in &pass {
            assert!(screen(a).is_ok(), "{:?}", a.body);
        }
        let withheld = [
            r#"{"detail":"persoon 999993653 niet gevonden"}"#,
            r#"{"invalidParams":[{"name":"burgerservicenummer[0]","reason":"x"}],"burgerservicenummer":"000000000"}"#,
            r#"{"personen":[{"burgerservicenummer":"x"}]}"#,
            r#"{"detail":{"bsn":999990639}}"#,
            r#"{"999991802":"key"}"#,
            r#"["a",["b",{"c":"BSN:999993872."}]]"#,
            // A BSN beside a UUID is still a BSN.
            r#"{"instance":"urn:uuid:01a23b12-6344-703d-a183-328472025e13 999993653"}"#,
            r#"{"detail":"999993653/01a23b12-6344-703d-a183-328472025e13"}"#,
            r#"{"detail":"01a23b12-6344-703d-a183-328472025e1"}"#,
            r#"{"detail":"01a23b12-6344-703d-a183-328472025e13a"}"#,
        ];
        for body in withheld {
            let mut a = answer(404, &[problem], "");
            a.body = Bytes::from(body);
            assert!(
                matches!(screen(&a), Err(GateError::UpstreamErrorWithheld)),
                "{body}"
            );
        }
        let invalid = [
            answer(
                502,
                &[("content-type", "text/html")],
                "<html>bad gateway</html>",
            ),
            answer(500, &[], r#"{"detail":"no type"}"#),
            answer(400, &[problem], "{not json"),
        ];
        for a in &invalid {
            assert!(
                matches!(screen(a), Err(GateError::UpstreamAnswerInvalid)),
                "{:?}",
                a.body
            );
        }
        // A 2xx answer is the response stage's to read, not screened for persons here.
        assert!(screen(&answer(200, &[], r#"{"burgerservicenummer":"999993653"}"#)).is_ok());
    }

    #[test]
    fn transaction_ids_are_plain_and_bounded() {
        assert!(valid_transaction_id("0190a5b2-7c3d-7def-8123-456789abcdef"));
        assert!(valid_transaction_id("tx.1:a_b"));
        for bad in ["", "a b", "a\"b", "é", "x\\y", &"a".repeat(129)] {
            assert!(!valid_transaction_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
