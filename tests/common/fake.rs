//! A registry that answers every request with the JSON it is given, for tests of what the gate
//! does with an answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// A registry that answers every request with the JSON it is given, and keeps the bodies it saw.
#[derive(Clone, Default)]
pub struct Fake {
    answer: Arc<Mutex<Value>>,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Fake {
    pub async fn start() -> (Fake, SocketAddr) {
        let fake = Fake::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let f = f.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            f.seen
                                .lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                            let answer = f.answer.lock().unwrap().to_string();
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(answer)));
                            resp.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (fake, addr)
    }

    pub fn answer(&self, v: Value) {
        *self.answer.lock().unwrap() = v;
    }

    pub fn last_seen(&self) -> Value {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn seen_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}
