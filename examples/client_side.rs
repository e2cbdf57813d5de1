//! purpose-gate on the client side: an application wraps its own outbound HTTP client service
//! with the gate layer, so every call it makes to the BRP is decided and audited exactly as
//! the gate in front of the BRP would — before the request leaves the application.
//!
//! ```sh
//! cargo run --example client_side
//! ```
//!
//! It starts the example registry (BRP Personen v2) on a free port, makes two calls through
//! the wrapped client — one the shipped policies allow, one they refuse — prints what came
//! back, and the command that verifies the audit log it wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: a failed unwrap is a clear message

#[path = "common/registry.rs"]
mod registry;
#[path = "common/tokens.rs"]
mod tokens;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::{Service, ServiceExt, service_fn};

use purpose_gate::auth::Authenticator;
use purpose_gate::config::{AuditConfig, AuthConfig, RouteConfig, RouteKind};
use purpose_gate::layer::{BoxError, PurposeGateLayer};
use purpose_gate::policy::PolicyEngine;
use purpose_gate::purpose::JsonFileCases;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The application's own outbound HTTP client as a tower service: it sends whatever request it
/// gets to the BRP at `base` (the gate hands it the route's upstream path).
fn brp_client(
    base: String,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    service_fn(move |mut req: Request<Full<Bytes>>| {
        let client = client.clone();
        let uri = format!("{base}{}", req.uri().path());
        async move {
            *req.uri_mut() = uri.parse()?;
            Ok::<_, BoxError>(client.request(req).await?)
        }
    })
}

/// One call the application makes: a person lookup under a case, as employee `token`.
fn lookup(token: &str, case: &str, bsn: &str) -> Request<Full<Bytes>> {
    Request::post("/haalcentraal/api/brp/personen")
        .header("authorization", format!("Bearer {token}"))
        .header("x-case-id", case)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": [bsn],
                   "fields": ["naam"]})
            .to_string(),
        )))
        .unwrap()
}

/// Starts the example registry, wraps the client, makes an allowed and a refused call; returns
/// each call's status and body. The audit log is written under `work/audit`.
pub async fn run(work: &Path) -> Result<Vec<(u16, Value)>, String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let data = registry::load_data(&repo().join("examples/data"))?;
    let (registry_addr, _task) = registry::spawn(data).await.map_err(|e| e.to_string())?;
    let cases = work.join("cases.json");
    let now = chrono::Utc::now();
    std::fs::write(
        &cases,
        json!({"cases": [{"id": "Z-CLIENT-1", "type": "parkeervergunning", "status": "open",
            "opened": (now - chrono::Duration::days(1)).to_rfc3339(),
            "closes": (now + chrono::Duration::days(30)).to_rfc3339(),
            "organization": "0363", "handlers": ["emp-042"], "subjects": ["999993653"],
            "vehicles": []}]})
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let gate = PurposeGateLayer::builder()
        .gate_id("client-side")
        .route(RouteConfig {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            upstream: "brp".into(),
            upstream_path: "/personen".into(),
            kind: RouteKind::BRP_PERSONEN,
            action: None,
            enforce: true,
        })
        .policies(PolicyEngine::load(&repo().join("policies")).map_err(|e| e.to_string())?)
        .authenticator(
            Authenticator::new(&AuthConfig::with_jwks_file(
                tokens::DEMO_ISSUER,
                tokens::DEMO_AUDIENCE,
                repo().join("examples/demo/keys/jwks.json"),
            ))
            .await
            .map_err(|e| e.to_string())?,
        )
        .cases(JsonFileCases::load(&cases)?)
        .audit(
            AuditConfig {
                dir: work.join("audit"),
                ..AuditConfig::default()
            }
            .open()
            .map_err(|e| e.to_string())?,
        )
        .build()
        .map_err(|e| e.to_string())?;
    // The application's BRP client, decided and audited.
    let brp = tower::ServiceBuilder::new()
        .layer(gate)
        .service(brp_client(format!("http://{registry_addr}")));

    let key = std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem"))
        .map_err(|e| e.to_string())?;
    let token = tokens::mint(
        &key,
        tokens::DEMO_KID,
        &tokens::employee_claims(
            tokens::DEMO_ISSUER,
            tokens::DEMO_AUDIENCE,
            "emp-042",
            "0363",
            &["vergunningverlener"],
            600,
        ),
    )?;
    let mut out = Vec::new();
    for bsn in ["999993653", "999991802"] {
        let resp = match brp.clone().oneshot(lookup(&token, "Z-CLIENT-1", bsn)).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        out.push((
            status,
            serde_json::from_slice(&body).map_err(|e| e.to_string())?,
        ));
    }
    Ok(out)
}

#[allow(dead_code)] // the tests call `run`
#[tokio::main]
async fn main() {
    let work = repo().join("target/client-side");
    let _ = std::fs::remove_dir_all(&work);
    match run(&work).await {
        Ok(calls) => {
            for ((status, body), what) in calls.iter().zip([
                "the subject of the case (allowed)",
                "a person the case does not name (refused before it left)",
            ]) {
                println!("{what}: {status}\n  {body}\n");
            }
            println!("the audit log the application wrote:");
            println!(
                "cargo run --quiet -- audit verify --dir {}",
                work.join("audit").display()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
