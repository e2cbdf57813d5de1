//! Forward: sends an allowed request to its upstream registry.
//!
//! Guarantees: only an allowlist of client headers reaches the upstream (content negotiation,
//! `User-Agent`, `tracestate` and the Dutch purpose headers `X-Doelbinding`/`X-Verwerking`);
//! the client's `Authorization`, cookies, forwarding and identity headers never do. The gate
//! adds the configured upstream credentials, `X-Request-Id` and `traceparent`. The body sent is
//! exactly the body that was decided on. Connect failures give 502, timeouts 504.
//! `https://` upstreams are reached over rustls (the CAs of `ca_file` or the webpki roots, and
//! the optional client certificate); a failed handshake or refused client certificate is 502.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What the upstream answered.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

/// A request that was decided on, ready to forward.
pub struct Outbound<'a> {
    pub upstream: &'a str,
    pub method: Method,
    /// Path at the upstream (template filled with normalised values).
    pub path: &'a str,
    pub client_headers: &'a HeaderMap,
    pub body: Bytes,
    pub request_id: &'a str,
    pub traceparent: &'a str,
}

/// All upstreams with their pooled clients.
pub struct Upstreams {
    map: HashMap<String, Upstream>,
    forwarded: Vec<HeaderName>,
}

impl Upstreams {
    /// Builds a pooled client per upstream; secret header files are read here.
    pub fn new(cfg: &Config) -> Result<Upstreams, String> {
        let mut map = HashMap::new();
        for (name, up) in &cfg.upstreams {
            map.insert(name.clone(), build_upstream(name, up)?);
        }
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
        Ok(Upstreams { map, forwarded })
    }

    /// Sends the request and reads the whole answer (bounded).
    pub async fn send(&self, out: Outbound<'_>) -> Result<UpstreamResponse, GateError> {
        let up = self
            .map
            .get(out.upstream)
            .ok_or(GateError::UpstreamUnavailable)?;
        let uri: Uri = format!("{}{}{}", up.origin, up.prefix, out.path)
            .parse()
            .map_err(|_| GateError::UpstreamUnavailable)?;
        let mut req = Request::builder()
            .method(out.method)
            .uri(uri)
            .body(Full::new(out.body))
            .map_err(|_| GateError::UpstreamUnavailable)?;
        let h = req.headers_mut();
        for name in &self.forwarded {
            for v in out.client_headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        for (n, v) in &up.headers {
            h.insert(n.clone(), v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(out.request_id) {
            h.insert("x-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(out.traceparent) {
            h.insert("traceparent", v);
        }

        let started = Instant::now();
        let max = up.max_response_bytes;
        let exchange =
            async {
                let resp = up.client.request(req).await.map_err(|e| {
                    tracing::warn!(upstream = out.upstream, error = %e, "upstream request failed");
                    GateError::UpstreamUnavailable
                })?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        GateError::UpstreamTooLarge
                    } else {
                        tracing::warn!(upstream = out.upstream, error = %e, "upstream body failed");
                        GateError::UpstreamUnavailable
                    }
                })?
                .to_bytes();
                Ok::<_, GateError>((parts, body))
            };
        let (parts, body) = tokio::time::timeout(up.timeout, exchange)
            .await
            .map_err(|_| GateError::UpstreamTimeout)??;
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        Ok(UpstreamResponse {
            status: parts.status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
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
