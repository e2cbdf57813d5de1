//! The gate as tower middleware, built from parts: whatever the inner service does — answer,
//! fail, hang, panic, answer too much — the decision record is durable before it is called,
//! and every call ends in an answer and an outcome record.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{AUDIENCE, ISSUER, raadpleeg};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{ServiceExt, service_fn};

use purpose_gate::auth::Authenticator;
use purpose_gate::config::{AuditConfig, AuthConfig, RouteConfig, RouteKind};
use purpose_gate::layer::{BoxError, PurposeGateLayer, UpstreamName};
use purpose_gate::policy::PolicyEngine;
use purpose_gate::purpose::JsonFileCases;

const BRP: &str = "/haalcentraal/api/brp/personen";

async fn layer(dir: &Path, inner_timeout: Duration) -> PurposeGateLayer {
    let cases = dir.join("cases.json");
    std::fs::write(&cases, common::test_cases().to_string()).unwrap();
    let audit = AuditConfig {
        dir: dir.join("audit"),
        ..AuditConfig::default()
    }
    .open()
    .unwrap();
    PurposeGateLayer::builder()
        .gate_id("embedded")
        .route(RouteConfig {
            method: "POST".into(),
            path: BRP.into(),
            upstream: "brp".into(),
            upstream_path: "/personen".into(),
            kind: RouteKind::BRP_PERSONEN,
            action: None,
            enforce: true,
        })
        .policies(PolicyEngine::load(&common::repo().join("policies")).unwrap())
        .authenticator(
            Authenticator::new(&AuthConfig::with_jwks_file(
                ISSUER,
                AUDIENCE,
                common::repo().join("examples/demo/keys/jwks.json"),
            ))
            .await
            .unwrap(),
        )
        .cases(JsonFileCases::load(&cases).unwrap())
        .audit(audit)
        .inner_timeout(inner_timeout)
        .max_response_bytes(64 * 1024)
        .build()
        .unwrap()
}

fn request(token: &str) -> Request<Full<Bytes>> {
    Request::post(BRP)
        .header("authorization", format!("Bearer {token}"))
        .header("x-case-id", "Z-OPEN")
        .header("content-type", "application/json")
        .header("cookie", "session=secret")
        .body(Full::new(Bytes::from(
            raadpleeg(&["999993653"], &["naam"]).to_string(),
        )))
        .unwrap()
}

fn records(dir: &Path) -> Vec<Value> {
    common::read_records(&dir.join("audit"))
}

/// The records of the one request in the log, as (kind, decision or status).
fn kinds(dir: &Path) -> Vec<String> {
    records(dir)
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn body(resp: Response<Full<Bytes>>) -> (StatusCode, Value) {
    let status = resp.status();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// An inner service that, when called, first checks that the decision record of the request
/// it got is already in the log on disk, then does `then`.
fn checking_inner<F, Fut>(
    dir: &Path,
    checked: Arc<AtomicUsize>,
    then: F,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static
where
    F: Fn(Request<Full<Bytes>>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send + 'static,
{
    let dir = dir.to_path_buf();
    service_fn(move |req: Request<Full<Bytes>>| {
        let rid = req.headers()["x-request-id"].to_str().unwrap().to_string();
        let decided = records(&dir)
            .iter()
            .any(|r| r["kind"] == "decision" && r["request_id"] == rid && r["decision"] == "allow");
        assert!(
            decided,
            "the inner service was called before the decision record was durable"
        );
        checked.fetch_add(1, Ordering::SeqCst);
        (then.clone())(req)
    })
}

#[tokio::test]
async fn an_inner_service_gets_the_decided_request_after_the_record_and_its_answer_is_released() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = layer(tmp.path(), Duration::from_secs(5)).await;
    let token = common::emp042_demo_token(600);
    let checked = Arc::new(AtomicUsize::new(0));
    let inner = checking_inner(
        tmp.path(),
        Arc::clone(&checked),
        |req: Request<Full<Bytes>>| async move {
            // What the inner service gets: the upstream path, the upstream's name, no client
            // credentials, the query with the release field added.
            assert_eq!(req.uri().path(), "/personen");
            assert_eq!(req.extensions().get::<UpstreamName>().unwrap().0, "brp");
            assert!(req.headers().get("authorization").is_none());
            assert!(req.headers().get("cookie").is_none());
            assert_eq!(req.headers()["accept-encoding"], "identity");
            let q: Value =
                serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            assert_eq!(q["fields"], json!(["naam", "burgerservicenummer"]));
            let answer = json!({"type": "RaadpleegMetBurgerservicenummer", "personen": [
            {"burgerservicenummer": "999993653", "naam": {"voornamen": "Suzanne"}},
            {"burgerservicenummer": "999991802", "naam": {"voornamen": "Extra"}}]});
            Ok::<_, BoxError>(Response::new(Full::new(Bytes::from(answer.to_string()))))
        },
    );
    let svc = tower::ServiceBuilder::new().layer(layer).service(inner);
    let (status, v) = body(svc.oneshot(request(&token)).await.unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(checked.load(Ordering::SeqCst), 1);
    assert_eq!(v["personen"], json!([{"naam": {"voornamen": "Suzanne"}}]));
    assert_eq!(kinds(tmp.path()), ["decision", "outcome"]);
    let outcome = &records(tmp.path())[1];
    assert_eq!(outcome["release"][1]["released"], false);
}

#[tokio::test]
async fn a_failing_hanging_or_panicking_inner_service_gets_an_answer_and_an_outcome_record() {
    let token = common::emp042_demo_token(600);
    type Case = (
        &'static str,
        u16,
        &'static str,
        fn(
            Request<Full<Bytes>>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>,
        >,
    );
    let cases: [Case; 4] = [
        ("fails", 502, "upstreamUnavailable", |_| {
            Box::pin(async {
                Err::<Response<Full<Bytes>>, BoxError>("the registry is gone".into())
            })
        }),
        ("hangs", 504, "upstreamTimeout", |_| {
            Box::pin(std::future::pending::<
                Result<Response<Full<Bytes>>, BoxError>,
            >())
        }),
        ("panics", 502, "upstreamUnavailable", |_| {
            Box::pin(async { panic!("the inner service panicked") })
        }),
        ("answers too much", 502, "upstreamTooLarge", |_| {
            Box::pin(async {
                Ok::<_, BoxError>(Response::new(Full::new(Bytes::from(vec![b' '; 65 * 1024]))))
            })
        }),
    ];
    for (what, status, code, then) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let layer = layer(tmp.path(), Duration::from_millis(300)).await;
        let checked = Arc::new(AtomicUsize::new(0));
        let inner = checking_inner(tmp.path(), Arc::clone(&checked), then);
        let svc = tower::ServiceBuilder::new().layer(layer).service(inner);
        let resp: Result<_, Infallible> = svc.oneshot(request(&token)).await;
        let (got, v) = body(resp.unwrap()).await;
        assert_eq!(got.as_u16(), status, "{what}: {v}");
        assert_eq!(v["code"], code, "{what}");
        assert_eq!(
            checked.load(Ordering::SeqCst),
            1,
            "{what}: inner called once"
        );
        assert_eq!(kinds(tmp.path()), ["decision", "outcome"], "{what}");
        let outcome = &records(tmp.path())[1];
        assert_eq!(outcome["status"], status, "{what}");
        assert_eq!(outcome["disclosed"], json!([]), "{what}");
    }
}

#[tokio::test]
async fn a_refused_request_never_reaches_the_inner_service() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = layer(tmp.path(), Duration::from_secs(5)).await;
    let called = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&called);
    let inner = service_fn(move |_req: Request<Full<Bytes>>| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(Response::new(Full::new(Bytes::new()))) }
    });
    let svc = tower::ServiceBuilder::new().layer(layer).service(inner);
    // No token, another person, a closed case.
    let token = common::emp042_demo_token(600);
    let mut no_token = request(&token);
    no_token.headers_mut().remove("authorization");
    let mut other = request(&token);
    *other.body_mut() = Full::new(Bytes::from(
        raadpleeg(&["999993872"], &["naam"]).to_string(),
    ));
    let mut closed = request(&token);
    closed
        .headers_mut()
        .insert("x-case-id", http::HeaderValue::from_static("Z-CLOSED"));
    for (req, status, code) in [
        (no_token, 401, "invalidToken"),
        (other, 403, "subjectNotInCase"),
        (closed, 403, "caseClosed"),
    ] {
        let (got, v) = body(svc.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(got.as_u16(), status, "{v}");
        assert_eq!(v["code"], code);
    }
    assert_eq!(called.load(Ordering::SeqCst), 0);
    assert_eq!(kinds(tmp.path()), ["decision", "decision", "decision"]);
}

#[tokio::test]
async fn the_builder_names_a_missing_part() {
    let err = PurposeGateLayer::builder()
        .build()
        .err()
        .expect("a gate without parts is refused");
    assert_eq!(err.to_string(), "the gate needs policies");
}
