//! The admin listener (`[admin] listen`): `/healthz`, `/readyz` and `/metrics`, on its own
//! address, separate from traffic.
//!
//! Guarantees: `/healthz` answers 200 while the process serves; `/readyz` answers 200 only when
//! policies are loaded and the audit log is writable (writer running, last append succeeded),
//! else 503; `/metrics` is the Prometheus text format of [`crate::metrics`]. Refuses every
//! other path (404) and method (405); it never touches the audit log or a registry, and serves
//! nothing that identifies a person.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::gate::Gate;
use crate::metrics::ScrapeInfo;

/// Binds the admin address; the returned task serves until aborted.
pub async fn start(
    addr: SocketAddr,
    gate: Arc<Gate>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on `{addr}` (`admin.listen`): {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the admin address: {e}"))?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let gate = Arc::clone(&gate);
                    async move { Ok::<_, Infallible>(answer(&gate, &req)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        }
    });
    Ok((bound, task))
}

fn answer<B>(gate: &Gate, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            // Readiness, with the followers' detail (store: backlog and its age; Logboek: its
            // backlog) when they run. A backlog alone does not make the gate unready.
            let mut detail = String::new();
            if let Some(store) = gate.store() {
                detail.push_str(&store.readiness());
                detail.push('\n');
            }
            if let Some(lb) = gate.logboek() {
                detail.push_str(&lb.readiness());
                detail.push('\n');
            }
            let (status, head) = if gate.ready() {
                (StatusCode::OK, "ready")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the audit log is not writable",
                )
            };
            let mut resp = text(status, "");
            *resp.body_mut() = Full::new(Bytes::from(format!("{head}\n{detail}")));
            resp
        }
        "/metrics" => {
            let policy = gate.policy().load();
            let info = ScrapeInfo {
                policy_version: policy.version().to_string(),
                policy_evaluator: policy.evaluator().as_str(),
                ready: gate.ready(),
                token_cache: gate.auth().token_cache_counts(),
            };
            let mut resp = text(StatusCode::OK, "");
            let mut body = gate.metrics().render(&info);
            if let Some(store) = gate.store() {
                body.push_str(&store.render_metrics());
            }
            if let Some(lb) = gate.logboek() {
                body.push_str(&lb.render_metrics());
            }
            *resp.body_mut() = Full::new(Bytes::from(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}
