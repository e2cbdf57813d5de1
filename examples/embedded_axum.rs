//! An axum application that serves registry data itself, with purpose-gate in front of it as a
//! tower layer: every call to its `POST /haalcentraal/api/brp/personen` is authenticated,
//! bound to a case, decided by the shipped Cedar policies and recorded durably before the
//! handler runs, and what the handler answers is released person by person.
//!
//! ```sh
//! cargo run --example embedded_axum                      # prints ready-to-paste curl commands
//! cargo run --example embedded_axum -- --listen 127.0.0.1:9100
//! ```
//!
//! The gate is built from parts here ([`PurposeGateLayer::builder`]); an application with a
//! purpose-gate config file can use `PurposeGateLayer::from_config(&cfg)` instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: a failed unwrap is a clear message

#[path = "common/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use purpose_gate::auth::Authenticator;
use purpose_gate::config::{AuditConfig, AuthConfig, RouteConfig, RouteKind};
use purpose_gate::layer::PurposeGateLayer;
use purpose_gate::policy::PolicyEngine;
use purpose_gate::purpose::JsonFileCases;

/// The application's own registry endpoint: a tiny BRP Personen that knows two persons.
async fn personen(Json(query): Json<Value>) -> Json<Value> {
    let known = [
        json!({"burgerservicenummer": "999993653",
               "naam": {"voornamen": "Suzanne", "geslachtsnaam": "Dijk", "voorvoegsel": "van"},
               "geboorte": {"datum": {"type": "Datum", "datum": "1980-01-01"}}}),
        json!({"burgerservicenummer": "999991802",
               "naam": {"voornamen": "Pieter", "geslachtsnaam": "Jansen"}}),
    ];
    let asked: Vec<&str> = query["burgerservicenummer"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let personen: Vec<&Value> = known
        .iter()
        .filter(|p| {
            p["burgerservicenummer"]
                .as_str()
                .is_some_and(|b| asked.contains(&b))
        })
        .collect();
    Json(json!({"type": "RaadpleegMetBurgerservicenummer", "personen": personen}))
}

/// The repository root (policies, demo keys).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the application with the gate in front, writing cases and the audit log under
/// `work`; returns the address it serves on.
pub async fn start(listen: SocketAddr, work: &Path) -> Result<SocketAddr, String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let cases = work.join("cases.json");
    let now = chrono::Utc::now();
    std::fs::write(
        &cases,
        json!({"cases": [{"id": "Z-EMBED-1", "type": "parkeervergunning", "status": "open",
            "opened": (now - chrono::Duration::days(1)).to_rfc3339(),
            "closes": (now + chrono::Duration::days(30)).to_rfc3339(),
            "organization": "0363", "handlers": ["emp-042"], "subjects": ["999993653"],
            "vehicles": []}]})
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let gate = PurposeGateLayer::builder()
        .gate_id("embedded-axum")
        .route(RouteConfig {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            upstream: "app".into(),
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

    // The registry the application serves, behind the gate: the layer hands the handler the
    // decided request at the route's `upstream_path`.
    let registry = Router::new().route("/personen", post(personen));
    let app = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<Full<Bytes>>| r.map(axum::body::Body::new))
        .layer(gate)
        .map_request(|r: Request<Full<Bytes>>| r.map(axum::body::Body::new))
        .service(registry);

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on `{listen}`: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, tower::make::Shared::new(app)).await {
            eprintln!("error: {e}");
        }
    });
    Ok(addr)
}

/// A token of emp-042 (handler of `Z-EMBED-1`), signed with the demo key.
pub fn token() -> Result<String, String> {
    let key = std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem"))
        .map_err(|e| e.to_string())?;
    tokens::mint(
        &key,
        tokens::DEMO_KID,
        &tokens::employee_claims(
            tokens::DEMO_ISSUER,
            tokens::DEMO_AUDIENCE,
            "emp-042",
            "0363",
            &["vergunningverlener"],
            8 * 3600,
        ),
    )
}

#[allow(dead_code)] // the tests start the application through `start`
#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:9100".parse().expect("address");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(l) => listen = l,
                Err(_) => {
                    eprintln!("error: `{v}` is not an address");
                    std::process::exit(2);
                }
            },
            _ => {
                eprintln!("usage: cargo run --example embedded_axum [-- --listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let work = repo().join("target/embedded-axum");
    let (addr, token) = match start(listen, &work).await.and_then(|a| Ok((a, token()?))) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let url = format!("http://{addr}/haalcentraal/api/brp/personen");
    let body = |bsn: &str| {
        format!(
            r#"'{{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["{bsn}"],"fields":["naam"]}}'"#
        )
    };
    println!("an axum application with purpose-gate in front, on http://{addr}");
    println!("  audit log: {}\n", work.join("audit").display());
    println!("export T042={token}\n");
    println!("# 1. allowed: the subject of case Z-EMBED-1");
    println!(
        "curl -s -i {url} -H \"Authorization: Bearer $T042\" -H 'X-Case-Id: Z-EMBED-1' -H 'Content-Type: application/json' -d {}\n",
        body("999993653")
    );
    println!(
        "# 2. denied (subjectNotInCase): a person the case does not name; the handler never runs"
    );
    println!(
        "curl -s {url} -H \"Authorization: Bearer $T042\" -H 'X-Case-Id: Z-EMBED-1' -H 'Content-Type: application/json' -d {}\n",
        body("999991802")
    );
    println!("# then: is the audit log intact?");
    println!(
        "cargo run --quiet -- audit verify --dir {}",
        work.join("audit").display()
    );
    let _ = tokio::signal::ctrl_c().await;
}
