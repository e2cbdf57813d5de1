//! Listener: accepts connections, applies connection limits, and shuts down gracefully.
//!
//! Guarantees: a slow client that does not send its request head within
//! `header_read_timeout` is dropped; request heads above `max_header_bytes` are refused by the
//! HTTP parser; on SIGTERM/SIGINT the gate stops accepting, lets in-flight requests finish
//! (up to `shutdown_grace`), then flushes and closes the audit log.
//!
//! With `[server.tls]` every connection is a rustls handshake first, bounded by
//! `header_read_timeout` (a client that never finishes it is dropped), with the certificate in
//! force at that moment (a reload changes it for new handshakes only); then HTTP/2 when ALPN
//! chose `h2`, HTTP/1.1 otherwise. A client that does not speak TLS gets no HTTP answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

use crate::config::Config;
use crate::error::{GateError, problem_response};
use crate::forward::Upstreams;
use crate::gate::{BoxError, ClientAddr, Gate, StartError};
use crate::layer::PurposeGateLayer;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::tls::ServerTls;

/// A running gate: its address and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    reloader: Arc<Reloader>,
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    /// Reload poller, SIGHUP handler, admin listener: stopped with the gate.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, waits for in-flight requests, closes the audit log.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        let _ = self.stop.send(true);
        let _ = (&mut self.done).await;
    }

    /// Waits until the server stopped (after a signal or `shutdown`).
    pub async fn wait(mut self) {
        let _ = (&mut self.done).await;
        self.stop_tasks();
    }

    /// The reloader (what SIGHUP runs: `reload().reload_all()`).
    pub fn reload(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    fn stop_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// Builds the gate and starts serving on `cfg.server.listen` (port 0 picks a free port).
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    // The TLS files first: a bad certificate stops the start before the audit log is opened.
    let tls = match &cfg.server.tls {
        Some(t) => Some(Arc::new(ServerTls::load(t).map_err(StartError)?)),
        None => None,
    };
    let gate = Arc::new(Gate::build(cfg).await?);
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on `{}`: {e}", cfg.server.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listen address: {e}")))?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let settings = ConnSettings {
        header_read_timeout: cfg.server.header_read_timeout.0,
        max_header_bytes: cfg.server.max_header_bytes,
        grace: cfg.server.shutdown_grace.0,
    };
    let reloader = Reloader::new(Arc::clone(&gate), &cfg.policies.dir, tls.clone());
    let mut tasks = vec![reloader.spawn_sighup()];
    if !cfg.policies.poll_interval.0.is_zero() {
        tasks.push(reloader.spawn_poller(cfg.policies.poll_interval.0));
    }
    let admin_addr = match cfg.admin.listen {
        Some(a) => {
            let (bound, task) = crate::admin::start(a, Arc::clone(&gate))
                .await
                .map_err(StartError)?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    let upstreams = Upstreams::new(cfg).map_err(StartError)?;
    let stack = stack(Arc::clone(&gate), upstreams, cfg.server.max_concurrent);
    let done = tokio::spawn(serve(listener, gate, stack, settings, tls, stop_rx));
    Ok(Running {
        addr,
        admin_addr,
        reloader,
        stop,
        done,
        tasks,
    })
}

/// The service every connection runs: the binary's whole request path, composed here and
/// nowhere else. Outermost first; [`overload`] turns load shedding's refusal into an answer.
pub fn stack(gate: Arc<Gate>, upstreams: Upstreams, max_concurrent: usize) -> GateStack {
    let stack = ServiceBuilder::new()
        // Refuse at once when the limit is reached: a queue would only hold clients longer.
        .load_shed()
        // `server.max_concurrent` requests in flight, each holding its permit to the end.
        .concurrency_limit(max_concurrent)
        // The gate: route → … → decision record → inner → release → outcome record.
        .layer(PurposeGateLayer::new(gate))
        // Innermost: the pooled upstream HTTP clients.
        .service(upstreams);
    BoxCloneService::new(stack)
}

/// The type of [`stack`]: its only error is load shedding's refusal.
pub type GateStack = BoxCloneService<Request<Incoming>, Response<Full<Bytes>>, BoxError>;

/// The stack's result as an answer: load shedding's refusal is the gate's 503 `overloaded`
/// (no stage ran, so nothing is recorded).
pub fn overload(
    r: Result<Response<Full<Bytes>>, BoxError>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    match r {
        Ok(resp) => resp,
        Err(e) => {
            if e.is::<tower::load_shed::error::Overloaded>() {
                metrics.overloaded();
                tracing::warn!("refused: too many requests in flight");
            } else {
                tracing::error!(error = %e, "the request path failed");
            }
            problem_response(&GateError::Overloaded, &uuid::Uuid::now_v7().to_string())
        }
    }
}

#[derive(Clone, Copy)]
struct ConnSettings {
    header_read_timeout: Duration,
    max_header_bytes: usize,
    grace: Duration,
}

async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    stack: GateStack,
    settings: ConnSettings,
    tls: Option<Arc<ServerTls>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    // HTTP/2 (only over TLS, chosen by ALPN): the head size limit as the header list limit.
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let stack = stack.clone();
                let metrics = Arc::clone(gate.metrics());
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    let call = stack.clone().oneshot(req);
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, Infallible>(overload(call.await, &metrics)) }
                });
                let Some(tls) = &tls else {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                    continue;
                };
                // The watcher is taken before the handshake: shutdown also waits for
                // handshakes in progress (each bounded by the header-read timeout).
                let watcher = graceful.watcher();
                let acceptor = tls.acceptor();
                let (h1, h2) = (builder.clone(), h2.clone());
                let timeout = settings.header_read_timeout;
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    };
                    let is_h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
                    let io = TokioIo::new(stream);
                    let result = if is_h2 {
                        watcher.watch(h2.serve_connection(io, svc)).await
                    } else {
                        watcher.watch(h1.serve_connection(io, svc)).await
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(settings.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period ended with requests still in flight");
    }
    gate.audit().close().await;
    // Ship what is durable before leaving (a backlog left behind ships at the next start).
    if let Some(store) = gate.store() {
        store.drain(std::time::Duration::from_secs(3)).await;
    }
    tracing::info!("audit log flushed");
    // Export what is durable before leaving (what is left is exported after the next start).
    if let Some(lb) = gate.logboek() {
        lb.drain(std::time::Duration::from_secs(3)).await;
    }
    tracing::info!("stopped");
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
