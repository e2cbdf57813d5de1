//! The embedding examples run: the axum application with the gate in front
//! (`examples/embedded_axum.rs`) over real HTTP, and an application's outbound BRP client
//! wrapped by the gate (`examples/client_side.rs`). Each decides, refuses and audits.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// test code: a failed unwrap is a failed test
// The examples are compiled here as they are, each with its own copy of the shared example
// modules (registry, tokens) that `tests/common` also loads.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/client_side.rs"]
#[allow(dead_code)]
mod client_side;
mod common;
#[path = "../examples/embedded_axum.rs"]
#[allow(dead_code)]
mod embedded_axum;

use serde_json::{Value, json};

fn verify(dir: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .args(["audit", "verify", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_axum_application_behind_the_layer_decides_refuses_and_audits() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = embedded_axum::start("127.0.0.1:0".parse().unwrap(), tmp.path())
        .await
        .unwrap();
    let token = embedded_axum::token().unwrap();
    let client = reqwest_like::Client::new();
    let url = format!("http://{addr}/haalcentraal/api/brp/personen");
    let call = |bsn: &str| {
        json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": [bsn],
               "fields": ["naam"]})
        .to_string()
    };
    let (status, body) = client
        .post(&url, &token, "Z-EMBED-1", &call("999993653"))
        .await;
    assert_eq!(status, 200, "{body}");
    // The handler's answer, released and minimised: no BSN, no birth date.
    assert_eq!(
        body["personen"],
        json!([{"naam": {"voornamen": "Suzanne", "geslachtsnaam": "Dijk", "voorvoegsel": "van"}}])
    );
    let (status, body) = client
        .post(&url, &token, "Z-EMBED-1", &call("999991802"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "subjectNotInCase");
    let (status, body) = client
        .post(&url, "not-a-token", "Z-EMBED-1", &call("999993653"))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalidToken");
    let records = common::read_records(&tmp.path().join("audit"));
    let kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["decision"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("decision", "allow"),
            ("outcome", "-"),
            ("decision", "deny"),
            ("decision", "deny")
        ]
    );
    assert_eq!(records[0]["gate"], "embedded-axum");
    assert!(verify(&tmp.path().join("audit")).contains("ok: 4 records"));
}

#[tokio::test]
async fn an_applications_outbound_client_wrapped_by_the_layer_is_decided_and_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let calls = client_side::run(tmp.path()).await.unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, 200, "{}", calls[0].1);
    assert_eq!(
        calls[0].1["personen"][0]["naam"]["geslachtsnaam"],
        Value::from("Dijk")
    );
    assert_eq!(calls[1].0, 403);
    assert_eq!(calls[1].1["code"], "subjectNotInCase");
    let records = common::read_records(&tmp.path().join("audit"));
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[1]["kind"], "outcome");
    assert_eq!(
        records[1]["disclosed"],
        json!([{"type": "Person", "id": "999993653"}])
    );
    assert!(verify(&tmp.path().join("audit")).contains("ok: 3 records"));
}

/// A minimal HTTP client for the test (hyper's).
mod reqwest_like {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use serde_json::Value;

    pub struct Client(Hyper<HttpConnector, Full<Bytes>>);

    impl Client {
        pub fn new() -> Client {
            Client(Hyper::builder(TokioExecutor::new()).build_http())
        }

        pub async fn post(&self, url: &str, token: &str, case: &str, body: &str) -> (u16, Value) {
            let req = http::Request::post(url)
                .header("authorization", format!("Bearer {token}"))
                .header("x-case-id", case)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let resp = self.0.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
        }
    }
}
