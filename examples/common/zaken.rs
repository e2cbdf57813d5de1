//! An example ZGW Zaken API: a stand-in case registry for the demo and the tests, serving the
//! subset of the VNG Zaken API 1.5 that purpose-gate reads, under `/zaken/api/v1`:
//!
//! - `GET /zaken?identificatie=…[&bronorganisatie=…]` → `PaginatedZaakList`
//! - `GET /rollen?zaak=<zaak url>` → `PaginatedRolList`
//! - `GET /zaakobjecten?zaak=<zaak url>` → `PaginatedZaakObjectList`
//!
//! Guarantees:
//! - Answers are in the spec's shapes (`count`/`next`/`previous`/`results`; `Zaak`, `Rol`,
//!   `ZaakObject` with their required fields), paginated with a small page size (default 2) so that
//!   clients must follow `next`; `?page=N` past the end is a 404 as in the reference server.
//! - Every request needs a ZGW JWT: HS256 signed with the configured secret, `iss` and the
//!   `client_id` claim equal to the configured client id (401 otherwise). `GET /zaken` needs
//!   `Accept-Crs: EPSG:4326` (412 otherwise), as the spec marks it required.
//! - Every request is counted per endpoint before it is answered; the last bearer token is kept.
//! - It can be told to be slow (`set_delay`), to fail (`set_failure`), to hand out `next` links to
//!   another host (`set_foreign_next`), and zaken can be changed at runtime (`close_zaak`).
//!
//! The data file holds zaken in a short authoring form — the `Zaak` fields plus embedded `rollen`
//! and `zaakobjecten` — and the server fills in `url`, `uuid`, `zaak` and the other required fields.
//! This is test equipment, not a case registry: no writes, no other filters, fictitious data.

// Included with `#[path]` by several example and test crates, each using a different part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Path prefix of the API, as in a typical Open Zaak deployment.
pub const PREFIX: &str = "/zaken/api/v1";
/// Results per page unless told otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 2;

/// The base URL (`cases.zgw_url`) of a server listening on `addr`.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}{PREFIX}")
}

/// The example API's data and controls. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ZakenData {
    inner: Arc<Inner>,
}

struct Inner {
    client_id: String,
    secret: Vec<u8>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Zaken in the authoring form, with their rollen and zaakobjecten embedded.
    zaken: Vec<Value>,
    /// `http://addr/zaken/api/v1`, set when serving starts.
    base: String,
    page_size: usize,
    delay: Duration,
    failure: Option<StatusCode>,
    foreign_next: bool,
    requests: HashMap<&'static str, u64>,
    last_token: Option<String>,
    rejected_tokens: u64,
}

impl ZakenData {
    /// Data from a document `{"zaken": [...]}`; each zaak needs `identificatie`,
    /// `bronorganisatie`, `zaaktype` and `startdatum`.
    pub fn from_json(doc: &Value, client_id: &str, secret: &[u8]) -> Result<ZakenData, String> {
        let zaken = doc
            .get("zaken")
            .and_then(Value::as_array)
            .ok_or("expected `{\"zaken\": [...]}`")?;
        for (i, z) in zaken.iter().enumerate() {
            for key in ["identificatie", "bronorganisatie", "zaaktype", "startdatum"] {
                if z.get(key).and_then(Value::as_str).is_none() {
                    return Err(format!("zaken[{i}]: missing `{key}`"));
                }
            }
        }
        Ok(ZakenData {
            inner: Arc::new(Inner {
                client_id: client_id.to_string(),
                secret: secret.to_vec(),
                state: Mutex::new(State {
                    zaken: zaken.clone(),
                    page_size: DEFAULT_PAGE_SIZE,
                    ..State::default()
                }),
            }),
        })
    }

    /// Data from a JSON file.
    pub fn load(path: &Path, client_id: &str, secret: &[u8]) -> Result<ZakenData, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?;
        ZakenData::from_json(&doc, client_id, secret)
            .map_err(|e| format!("`{}`: {e}", path.display()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Results per page (at least 1).
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Every request is answered with this status (a `Fout`), or normally again with `None`.
    pub fn set_failure(&self, status: Option<StatusCode>) {
        self.state().failure = status;
    }

    /// `next` links point to another host (a misconfigured or hostile server).
    pub fn set_foreign_next(&self, on: bool) {
        self.state().foreign_next = on;
    }

    /// Sets `einddatum` of the zaak (closes it); false when there is no such zaak.
    pub fn close_zaak(&self, identificatie: &str, einddatum: &str) -> bool {
        let mut st = self.state();
        match st
            .zaken
            .iter_mut()
            .find(|z| z["identificatie"] == identificatie)
        {
            Some(z) => {
                z["einddatum"] = Value::String(einddatum.to_string());
                true
            }
            None => false,
        }
    }

    /// Requests that reached an endpoint (`zaken`, `rollen`, `zaakobjecten` or `other`).
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.state().requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Requests that reached the server, all endpoints together.
    pub fn total_requests(&self) -> u64 {
        self.state().requests.values().sum()
    }

    /// The bearer token of the last request.
    pub fn last_token(&self) -> Option<String> {
        self.state().last_token.clone()
    }

    /// Requests refused for a missing or invalid JWT.
    pub fn rejected_tokens(&self) -> u64 {
        self.state().rejected_tokens
    }
}

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, data: ZakenData) {
    if let Ok(addr) = listener.local_addr() {
        data.state().base = base_url(addr);
    }
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let data = data.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let data = data.clone();
                            async move { Ok::<_, Infallible>(handle(req, &data).await) }
                        });
                        // A connection error (a client hanging up) ends only that connection.
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Starts the API on `127.0.0.1:0`; returns its address (see [`base_url`]) and task.
pub async fn spawn(data: ZakenData) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    data.state().base = base_url(addr);
    Ok((addr, tokio::spawn(serve(listener, data))))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let ct = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut()
        .insert("api-version", HeaderValue::from_static("1.5.1"));
    resp
}

/// A `Fout` (the spec's problem+json error).
fn fout(status: StatusCode, code: &str, title: &str, instance: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"type": format!("https://zaken.example/ref/fouten/{code}/"), "code": code,
                "title": title, "status": status.as_u16(), "detail": title, "instance": instance}),
    )
}

async fn handle(req: Request<Incoming>, data: &ZakenData) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let endpoint: &'static str = match path.strip_prefix(PREFIX) {
        Some("/zaken") => "zaken",
        Some("/rollen") => "rollen",
        Some("/zaakobjecten") => "zaakobjecten",
        _ => "other",
    };
    let (delay, failure) = {
        let mut st = data.state();
        *st.requests.entry(endpoint).or_insert(0) += 1;
        (st.delay, st.failure)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = failure {
        return fout(
            status,
            "error",
            "the example zaken api was told to fail",
            &path,
        );
    }
    if endpoint == "other" {
        return fout(StatusCode::NOT_FOUND, "not_found", "niet gevonden", &path);
    }
    if req.method() != Method::GET {
        return fout(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET is served",
            &path,
        );
    }
    if let Err(why) = check_jwt(&req, data) {
        data.state().rejected_tokens += 1;
        return fout(StatusCode::UNAUTHORIZED, "not_authenticated", &why, &path);
    }
    if endpoint == "zaken"
        && req.headers().get("accept-crs").map(HeaderValue::as_bytes) != Some(b"EPSG:4326")
    {
        return fout(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "'Accept-Crs' header ontbreekt",
            &path,
        );
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let st = data.state();
    let results: Vec<Value> = match endpoint {
        "zaken" => (0..st.zaken.len())
            .filter(|&i| {
                let z = &st.zaken[i];
                ["identificatie", "bronorganisatie"]
                    .iter()
                    .all(|k| query.get(*k).is_none_or(|v| z[*k] == v.as_str()))
            })
            .map(|i| render_zaak(&st, i))
            .collect(),
        _ => {
            let key = if endpoint == "rollen" {
                "rollen"
            } else {
                "zaakobjecten"
            };
            let mut out = Vec::new();
            for i in 0..st.zaken.len() {
                let url = zaak_url(&st, i);
                if query.get("zaak").is_some_and(|z| *z != url) {
                    continue;
                }
                let items = st.zaken[i][key].as_array().cloned().unwrap_or_default();
                for (j, item) in items.iter().enumerate() {
                    out.push(if key == "rollen" {
                        render_rol(&st, i, j, item)
                    } else {
                        render_object(&st, i, j, item)
                    });
                }
            }
            out
        }
    };
    paginate(&st, &path, &query, results)
}

/// Checks the ZGW JWT: HS256 with the secret, `iss` and `client_id` equal to the client id.
fn check_jwt(req: &Request<Incoming>, data: &ZakenData) -> Result<(), String> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("no bearer token")?
        .to_string();
    data.state().last_token = Some(token.clone());
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims = ["iss".to_string()].into_iter().collect();
    v.validate_exp = false;
    v.set_issuer(&[&data.inner.client_id]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(&data.inner.secret),
        &v,
    )
    .map_err(|e| format!("invalid token: {e}"))?
    .claims;
    if claims["client_id"] != data.inner.client_id.as_str() {
        return Err("`client_id` claim does not match".into());
    }
    if !claims["iat"].is_i64() {
        return Err("`iat` claim missing".into());
    }
    Ok(())
}

fn uuid(kind: u32, zaak: usize, item: usize) -> String {
    format!("{kind:08}-{zaak:04}-4000-8000-{item:012}")
}

fn zaak_url(st: &State, i: usize) -> String {
    format!("{}/zaken/{}", st.base, uuid(0, i, 0))
}

/// Copies `from` into `out`, over the defaults already there.
fn overlay(mut out: Map<String, Value>, from: &Value, skip: &[&str]) -> Value {
    if let Some(m) = from.as_object() {
        for (k, v) in m {
            if !skip.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn render_zaak(st: &State, i: usize) -> Value {
    let z = &st.zaken[i];
    let n_rollen = z["rollen"].as_array().map_or(0, Vec::len);
    let n_objecten = z["zaakobjecten"].as_array().map_or(0, Vec::len);
    let defaults = json!({
        "url": zaak_url(st, i), "uuid": uuid(0, i, 0),
        "omschrijving": "", "toelichting": "", "registratiedatum": z["startdatum"],
        "verantwoordelijkeOrganisatie": z["bronorganisatie"],
        "einddatum": null, "einddatumGepland": null, "uiterlijkeEinddatumAfdoening": null,
        "publicatiedatum": null, "communicatiekanaal": "", "productenOfDiensten": [],
        "vertrouwelijkheidaanduiding": "openbaar", "betalingsindicatie": "",
        "betalingsindicatieWeergave": "", "laatsteBetaaldatum": null, "zaakgeometrie": null,
        "verlenging": null, "opschorting": {"indicatie": false, "reden": ""},
        "selectielijstklasse": "", "hoofdzaak": null, "deelzaken": [], "relevanteAndereZaken": [],
        "eigenschappen": [],
        "rollen": (0..n_rollen).map(|j| format!("{}/rollen/{}", st.base, uuid(1, i, j))).collect::<Vec<_>>(),
        "status": null, "zaakinformatieobjecten": [],
        "zaakobjecten": (0..n_objecten).map(|j| format!("{}/zaakobjecten/{}", st.base, uuid(2, i, j))).collect::<Vec<_>>(),
        "kenmerken": [], "archiefnominatie": null, "archiefstatus": "nog_te_archiveren",
        "archiefactiedatum": null, "resultaat": null, "opdrachtgevendeOrganisatie": "",
        "processobjectaard": null, "startdatumBewaartermijn": null, "processobject": null
    });
    let Value::Object(d) = defaults else {
        return Value::Null;
    };
    overlay(d, z, &["rollen", "zaakobjecten"])
}

fn render_rol(st: &State, i: usize, j: usize, rol: &Value) -> Value {
    let generiek = rol["omschrijvingGeneriek"]
        .as_str()
        .unwrap_or("behandelaar");
    let defaults = json!({
        "url": format!("{}/rollen/{}", st.base, uuid(1, i, j)), "uuid": uuid(1, i, j),
        "zaak": zaak_url(st, i), "betrokkene": "", "betrokkeneType": "medewerker",
        "afwijkendeNaamBetrokkene": "",
        "roltype": format!("https://catalogi.example/catalogi/api/v1/roltypen/{generiek}"),
        "omschrijving": generiek, "omschrijvingGeneriek": generiek, "roltoelichting": generiek,
        "registratiedatum": "2026-11-01T09:00:00Z", "indicatieMachtiging": "",
        "contactpersoonRol": null, "statussen": [], "betrokkeneIdentificatie": {}
    });
    let Value::Object(d) = defaults else {
        return Value::Null;
    };
    overlay(d, rol, &[])
}

fn render_object(st: &State, i: usize, j: usize, obj: &Value) -> Value {
    let defaults = json!({
        "url": format!("{}/zaakobjecten/{}", st.base, uuid(2, i, j)), "uuid": uuid(2, i, j),
        "zaak": zaak_url(st, i), "object": "", "zaakobjecttype": "", "objectType": "overige",
        "objectTypeOverige": "", "objectTypeOverigeDefinitie": null, "relatieomschrijving": ""
    });
    let Value::Object(d) = defaults else {
        return Value::Null;
    };
    overlay(d, obj, &[])
}

/// One page of `results` as `count`/`next`/`previous`/`results` (`?page=N`, 1-based).
fn paginate(
    st: &State,
    path: &str,
    query: &HashMap<String, String>,
    results: Vec<Value>,
) -> Response<Full<Bytes>> {
    let page: usize = match query.get("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return fout(
                StatusCode::NOT_FOUND,
                "not_found",
                "Ongeldige pagina.",
                path,
            );
        }
    };
    let count = results.len();
    let size = st.page_size.max(1);
    let pages = count.div_ceil(size).max(1);
    if page > pages {
        return fout(
            StatusCode::NOT_FOUND,
            "not_found",
            "Ongeldige pagina.",
            path,
        );
    }
    let link = |n: usize| -> Value {
        if n < 1 || n > pages {
            return Value::Null;
        }
        let mut q: Vec<String> = query
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        q.sort();
        q.push(format!("page={n}"));
        let base = if st.foreign_next {
            "http://zaken.elsewhere.example/zaken/api/v1".to_string()
        } else {
            st.base.clone()
        };
        let endpoint = path.strip_prefix(PREFIX).unwrap_or(path);
        Value::String(format!("{base}{endpoint}?{}", q.join("&")))
    };
    let items: Vec<Value> = results
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"count": count, "next": link(page + 1), "previous": link(page.wrapping_sub(1)),
                "results": items}),
    )
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
