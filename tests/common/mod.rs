//! Shared test equipment: a real gate on 127.0.0.1:0 in front of the example registry, with the
//! shipped policies, the demo keys, a case file with windows relative to now, and an HTTP client
//! that holds every problem+json answer to the Haal Centraal `Foutbericht` ([`foutbericht`]).

#![allow(dead_code)] // each test crate uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test equipment: a failed unwrap is a failed test

pub mod fake;
pub mod foutbericht;
pub mod pg;
#[path = "../../examples/common/registry.rs"]
pub mod registry;
#[path = "../../examples/common/tokens.rs"]
pub mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use purpose_gate::config::Config;
use purpose_gate::listener::{self, Running};

pub const ISSUER: &str = tokens::DEMO_ISSUER;
pub const AUDIENCE: &str = tokens::DEMO_AUDIENCE;
pub const KID: &str = tokens::DEMO_KID;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn demo_private_key() -> Vec<u8> {
    std::fs::read(repo().join("examples/demo/keys/demo-signing-key.pem")).expect("demo signing key")
}

/// Cases whose windows are relative to the current time.
pub fn test_cases() -> Value {
    let now = Utc::now();
    let t = |days: i64| (now + chrono::Duration::days(days)).to_rfc3339();
    json!({"cases": [
        {"id": "Z-OPEN", "type": "parkeervergunning", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0363", "handlers": ["emp-042"], "subjects": ["999993653", "999991802"],
         "vehicles": ["XX999X"]},
        {"id": "Z-CLOSED", "type": "parkeervergunning", "status": "closed", "opened": t(-40), "closes": t(30),
         "organization": "0363", "handlers": ["emp-042"], "subjects": ["999993653"], "vehicles": []},
        {"id": "Z-ENDED", "type": "parkeervergunning", "status": "open", "opened": t(-60), "closes": t(-1),
         "organization": "0363", "handlers": ["emp-042"], "subjects": ["999993653"], "vehicles": []},
        {"id": "Z-OTHER-ORG", "type": "parkeervergunning", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0599", "handlers": ["emp-042", "emp-555"], "subjects": ["999993653"], "vehicles": []},
        {"id": "Z-HANDHAVING", "type": "handhaving", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0363", "handlers": ["emp-107"], "subjects": ["999993872"], "vehicles": ["AB123C"],
         "addresses": [{"postcode": "1094HH", "huisnummer": 88}],
         "persons": [{"geslachtsnaam": "van Dijk", "geboortedatum": "1980-01-01"}]},
        {"id": "Z-BURGERZAKEN", "type": "burgerzaken", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0363", "handlers": ["emp-311"], "subjects": ["999990639", "999993872"], "vehicles": []},
        {"id": "Z-PROTECTED", "type": "parkeervergunning", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0363", "handlers": ["emp-042"], "subjects": ["999990639"], "vehicles": []},
        {"id": "Z-WIJK", "type": "handhaving", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0363", "handlers": ["emp-107"], "subjects": ["999990007"], "vehicles": ["GZ123K"],
         "addresses": [{"postcode": "1017 CB", "huisnummer": 502},
                       {"adresseerbaarObjectIdentificatie": "0363010000088001"}],
         "persons": [{"geslachtsnaam": "Jansen", "geboortedatum": "1952-07-19"}]},
        {"id": "Z-UNKNOWN-TYPE", "type": "geheim", "status": "open", "opened": t(-10), "closes": t(30),
         "organization": "0363", "handlers": ["emp-042"], "subjects": ["999993653"], "vehicles": []}
    ]})
}

/// Options for starting a harness.
#[derive(Default)]
pub struct Options {
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// Use this audit directory instead of a fresh one.
    pub audit_dir: Option<PathBuf>,
    /// Called by the registry when a request arrives, before it answers.
    pub on_request: Option<registry::RequestHook>,
    /// Upstream URL override (e.g. a dead port).
    pub upstream_url: Option<String>,
    /// Extra keys for the `[audit]` table.
    pub audit_extra: String,
    /// Use this policy directory instead of the shipped `policies/`.
    pub policies_dir: Option<PathBuf>,
    /// Extra keys for the `[policies]` table.
    pub policies_extra: String,
    /// Extra keys for the `[server]` table.
    pub server_extra: String,
    /// Extra keys for both `[upstreams.brp]` and `[upstreams.rdw]` (e.g. TLS files).
    pub upstream_extra: String,
    /// Use this JWKS file instead of the demo's `examples/demo/keys/jwks.json`.
    pub jwks_file: Option<PathBuf>,
    /// The `[cases]` table (with any `[cases.*]` subtables) instead of the generated case file,
    /// e.g. `zgw_url = …` to take cases from a ZGW Zaken API. Relative paths are relative to
    /// the harness's temporary directory (`Harness::tmp`, `Options::files`).
    pub cases: Option<String>,
    /// Files written into the temporary directory before the gate starts (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

pub struct Harness {
    pub addr: SocketAddr,
    pub registry: registry::RegistryData,
    pub audit_dir: PathBuf,
    pub config_path: PathBuf,
    pub tmp: tempfile::TempDir,
    /// The admin listener's address, when `[admin] listen` was configured.
    pub admin: Option<SocketAddr>,
    running: Option<Running>,
    registry_task: tokio::task::JoinHandle<()>,
    client: Client<HttpConnector, Full<Bytes>>,
    key: Vec<u8>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }
    /// The request id of a problem answer, read from its `instance` (`urn:uuid:<request id>`),
    /// checked against the `X-Request-Id` header.
    pub fn request_id(&self) -> String {
        let instance = self.json()["instance"].as_str().unwrap_or("").to_string();
        let id = instance
            .strip_prefix("urn:uuid:")
            .unwrap_or_else(|| panic!("instance `{instance}` is not urn:uuid:<request id>"))
            .to_string();
        assert_eq!(
            self.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some(id.as_str()),
            "instance and X-Request-Id name the same request"
        );
        id
    }

    pub fn is_problem(&self) -> bool {
        self.headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/problem+json")
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Harness {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut data = registry::load_data(&repo().join("examples/data")).expect("registry data");
        if let Some(hook) = opts.on_request {
            data = data.with_on_request(hook);
        }
        let (reg_addr, registry_task) = registry::spawn(data.clone()).await.expect("registry");
        std::fs::write(
            tmp.path().join("cases.json"),
            serde_json::to_vec_pretty(&test_cases()).expect("cases"),
        )
        .expect("write cases");
        for (name, contents) in &opts.files {
            std::fs::write(tmp.path().join(name), contents).expect("write file");
        }
        let cases = opts
            .cases
            .clone()
            .unwrap_or_else(|| "file = \"cases.json\"\npoll_interval = \"100ms\"".to_string());
        let audit_dir = opts
            .audit_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("audit"));
        let up = opts
            .upstream_url
            .clone()
            .unwrap_or_else(|| format!("http://{reg_addr}"));
        let config = format!(
            r#"gate_id = "test-gate"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server_extra}
[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{jwks}"
[policies]
dir = "{policies}"
{policies_extra}
[cases]
{cases}
[audit]
dir = "{audit}"
{audit_extra}
[upstreams.brp]
url = "{up}"
timeout = "2s"
connect_timeout = "500ms"
headers = {{ "X-Api-Key" = "upstream-secret" }}
{upstream_extra}
[upstreams.rdw]
url = "{up}"
timeout = "2s"
connect_timeout = "500ms"
{upstream_extra}
{extra}
"#,
            jwks = opts
                .jwks_file
                .clone()
                .unwrap_or_else(|| repo().join("examples/demo/keys/jwks.json"))
                .display(),
            policies = opts
                .policies_dir
                .clone()
                .unwrap_or_else(|| repo().join("policies"))
                .display(),
            policies_extra = opts.policies_extra,
            server_extra = opts.server_extra,
            audit = audit_dir.display(),
            extra = opts.extra_config,
            audit_extra = opts.audit_extra,
            upstream_extra = opts.upstream_extra,
        );
        let config_path = tmp.path().join("gate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let cfg = Config::load(&config_path).expect("config");
        let running = listener::start(&cfg).await.expect("gate starts");
        Harness {
            addr: running.addr,
            admin: running.admin_addr,
            registry: data,
            audit_dir,
            config_path,
            tmp,
            running: Some(running),
            registry_task,
            client: Client::builder(TokioExecutor::new()).build_http(),
            key: demo_private_key(),
        }
    }

    /// A valid token for an employee.
    pub fn token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        self.token_with(&tokens::employee_claims(
            ISSUER, AUDIENCE, sub, org, roles, 600,
        ))
    }

    pub fn token_with(&self, claims: &Value) -> String {
        tokens::mint(&self.key, KID, claims).expect("mint")
    }

    /// emp-042: vergunningverlener of 0363, handler of Z-OPEN.
    pub fn emp042(&self) -> String {
        self.token("emp-042", "0363", &["vergunningverlener"])
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        self.send_raw_target(
            method,
            &format!("http://{}{}", self.addr, path),
            headers,
            body,
        )
        .await
    }

    pub async fn send_raw_target(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("answer in time")
            .expect("http");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        // Every problem answer any test sees is held to the Haal Centraal Foutbericht.
        if parts
            .headers
            .get("content-type")
            .is_some_and(|v| foutbericht::is_problem_type(v.as_bytes()))
        {
            foutbericht::assert_valid(parts.status.as_u16(), &body, &format!("{method} {uri}"));
        }
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POST a BRP query as `token` with `case` (if any).
    pub async fn brp(&self, token: &str, case: Option<&str>, body: &Value) -> Answer {
        let auth = format!("Bearer {token}");
        let mut h = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(c) = case {
            h.push(("x-case-id", c));
        }
        let body = body.to_string();
        self.send("POST", "/haalcentraal/api/brp/personen", &h, Some(&body))
            .await
    }

    /// Every audit record, parsed independently of the crate (sorted segment files, one JSON
    /// object per line).
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.audit_dir)
    }

    /// The running gate (to trigger a reload as SIGHUP does).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("gate running")
    }

    /// GET on the admin listener: status and body text.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let addr = self.admin.expect("[admin] listen configured");
        let a = self
            .send_raw_target("GET", &format!("http://{addr}{path}"), &[], None)
            .await;
        (a.status, String::from_utf8_lossy(&a.body).into_owned())
    }

    /// The records of one request, in log order.
    pub fn records_of(&self, request_id: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["request_id"] == request_id)
            .collect()
    }

    /// The first record of `kind` (`decision` or `outcome`) of one request.
    pub fn record_of(&self, request_id: &str, kind: &str) -> Value {
        self.records_of(request_id)
            .into_iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} record for request {request_id}"))
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.registry_task.abort();
    }
}

pub fn read_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push(v);
            }
        }
    }
    out
}

pub fn raadpleeg(bsns: &[&str], fields: &[&str]) -> Value {
    json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": bsns, "fields": fields})
}

/// Sends raw bytes on a new connection and returns everything the gate answered.
pub async fn raw_http(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    foutbericht::assert_valid_raw(&out, "raw HTTP");
    String::from_utf8_lossy(&out).into_owned()
}

/// The break-glass reason the tests send.
pub const BG_REASON: &str = "acute threat reported by police, officer on duty J. de Vries";

/// Runs `purpose-gate audit <args[0]> --dir <dir> <args[1..]>` and returns its output.
pub fn audit_cli(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .arg("audit")
        .args(&args[..1])
        .arg("--dir")
        .arg(dir)
        .args(&args[1..])
        .output()
        .unwrap()
}

/// Standard output of a finished command, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error of a finished command, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A token of emp-042 (vergunningverlener of 0363) signed with the demo key, valid `ttl_secs`:
/// for tests that start the gate binary themselves rather than through [`Harness`].
pub fn emp042_demo_token(ttl_secs: i64) -> String {
    tokens::mint(
        &demo_private_key(),
        KID,
        &tokens::employee_claims(
            ISSUER,
            AUDIENCE,
            "emp-042",
            "0363",
            &["vergunningverlener"],
            ttl_secs,
        ),
    )
    .unwrap()
}
