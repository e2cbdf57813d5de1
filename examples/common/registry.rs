//! An example registry: a stand-in upstream for the demo and the tests, serving a Haal Centraal
//! BRP Personen API v2 (`POST /personen`), BRP Bewoning 2.1 (`POST /bewoningen`) and an
//! RDW-style vehicle lookup
//! (`GET /voertuigen/{kenteken}`, `GET /voertuigen/{kenteken}/tenaamstelling`) on one port.
//!
//! Guarantees:
//! - `POST /personen` accepts the seven `PersonenQuery` types of the BRP Personen API 2.7
//!   (`RaadpleegMetBurgerservicenummer`, `ZoekMetGeslachtsnaamEnGeboortedatum`,
//!   `ZoekMetNaamEnGemeenteVanInschrijving`, `ZoekMetPostcodeEnHuisnummer`,
//!   `ZoekMetStraatHuisnummerEnGemeenteVanInschrijving`, `ZoekMetNummeraanduidingIdentificatie`,
//!   `ZoekMetAdresseerbaarObjectIdentificatie`) and answers `{"type": ..., "personen": [...]}`
//!   holding only the requested `fields` ("Het pad naar een gewenst veld in punt-gescheiden
//!   formaat"): `naam` gives the whole object, `naam.voornamen` only that sub-field, and a path
//!   through an array (`nationaliteiten.nationaliteit`) selects in every element. The `type` of a
//!   polymorphic object (`verblijfplaats`, `nationaliteiten`, dates) comes along when any of its
//!   fields is selected. Searches answer `PersoonBeperkt` (only the fields that schema has);
//!   unknown BSNs are simply absent; searches leave out deceased persons unless
//!   `inclusiefOverledenPersonen` is `true`. `leeftijd` is computed on the day of the request.
//! - Vehicle facts never contain person data; the `tenaamstelling` answers the holder's
//!   `burgerservicenummer`, `naam` and `adres`, taken from the person data.
//! - Every request that arrives is recorded (method, path, query, headers, body) in a shared log
//!   before it is answered, and the optional `on_request` hook runs at that moment too.
//!
//! Refuses, with a `Foutbericht` (`application/problem+json`, RFC 9457 / the spec's 400 shape with
//! `invalidParams`): malformed JSON, unknown `type`, missing or unknown parameters, values that do
//! not match the spec's patterns, unknown `fields` paths and the automatically delivered fields
//! (`inOnderzoek`, `geheimhoudingPersoonsgegevens`, `opschortingBijhouding`, `rni`,
//! `verificatie`), and a `Content-Type` that is not JSON (415). A kenteken that is not 6 uppercase
//! letters or digits is a 400 (a gate must normalise it before forwarding); an unknown one a 404.
//!
//! This is test equipment, not a registry: the data is fictitious, there is no authentication,
//! and automatically delivered fields are never added.

// Included with `#[path]` by several example and test crates, each using a different part.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{Datelike, NaiveDate};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use purpose_gate::error::foutbericht;

/// Largest request body read; larger bodies get a 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Requests kept in the log by default (the oldest are dropped beyond this).
pub const DEFAULT_LOG_LIMIT: usize = 10_000;

/// One request as it reached the registry.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SeenRequest {
    /// The value of a header, when present and valid UTF-8 (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A hook called with every request as it arrives, before it is answered.
pub type RequestHook = Arc<dyn Fn(&SeenRequest) + Send + Sync>;

/// The requests seen so far (the most recent `limit`) and how many arrived in total.
#[derive(Debug, Default)]
pub struct SeenLog {
    entries: VecDeque<SeenRequest>,
    limit: usize,
    total: u64,
}

/// The registry's data plus its request log. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct RegistryData {
    data: Arc<Dataset>,
    seen: Arc<Mutex<SeenLog>>,
    on_request: Option<RequestHook>,
}

struct Dataset {
    /// Persons in file order, each in the `Persoon` shape of the spec.
    persons: Vec<Value>,
    /// BSN → index in `persons`.
    by_bsn: HashMap<String, usize>,
    /// Kenteken → vehicle (with its `tenaamstelling.burgerservicenummer`).
    vehicles: BTreeMap<String, Value>,
}

impl std::fmt::Debug for RegistryData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryData")
            .field("persons", &self.data.persons.len())
            .field("vehicles", &self.data.vehicles.len())
            .field("on_request", &self.on_request.is_some())
            .finish()
    }
}

impl RegistryData {
    /// Builds the data from the parsed files (`{"personen": [...]}`, `{"voertuigen": [...]}`),
    /// checking BSNs (11-proef), kentekens and that every holder is a known person.
    pub fn from_json(personen: &Value, voertuigen: &Value) -> Result<RegistryData, String> {
        let list = personen
            .get("personen")
            .and_then(Value::as_array)
            .ok_or("personen: expected an object with a `personen` array")?;
        let mut persons = Vec::with_capacity(list.len());
        let mut by_bsn = HashMap::with_capacity(list.len());
        for (i, p) in list.iter().enumerate() {
            let bsn = p
                .get("burgerservicenummer")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("personen[{i}]: missing `burgerservicenummer`"))?;
            if !bsn_is_valid(bsn) {
                return Err(format!("personen[{i}]: `{bsn}` is not a valid BSN"));
            }
            if by_bsn.insert(bsn.to_string(), i).is_some() {
                return Err(format!("personen[{i}]: BSN `{bsn}` appears twice"));
            }
            persons.push(p.clone());
        }
        let list = voertuigen
            .get("voertuigen")
            .and_then(Value::as_array)
            .ok_or("voertuigen: expected an object with a `voertuigen` array")?;
        let mut vehicles = BTreeMap::new();
        for (i, v) in list.iter().enumerate() {
            let k = v
                .get("kenteken")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("voertuigen[{i}]: missing `kenteken`"))?;
            if !kenteken_is_canonical(k) {
                return Err(format!(
                    "voertuigen[{i}]: `{k}` is not a kenteken of 6 uppercase letters or digits"
                ));
            }
            let holder = v
                .pointer("/tenaamstelling/burgerservicenummer")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    format!("voertuigen[{i}]: missing `tenaamstelling.burgerservicenummer`")
                })?;
            if !by_bsn.contains_key(holder) {
                return Err(format!(
                    "voertuigen[{i}]: holder `{holder}` is not one of the persons"
                ));
            }
            if vehicles.insert(k.to_string(), v.clone()).is_some() {
                return Err(format!("voertuigen[{i}]: kenteken `{k}` appears twice"));
            }
        }
        Ok(RegistryData {
            data: Arc::new(Dataset {
                persons,
                by_bsn,
                vehicles,
            }),
            seen: Arc::new(Mutex::new(SeenLog {
                entries: VecDeque::new(),
                limit: DEFAULT_LOG_LIMIT,
                total: 0,
            })),
            on_request: None,
        })
    }

    /// Sets the hook called with every request as it arrives, before it is answered.
    pub fn with_on_request(mut self, hook: RequestHook) -> RegistryData {
        self.on_request = Some(hook);
        self
    }

    /// Keeps at most `limit` requests in the log (0 keeps none; the total is still counted).
    pub fn with_log_limit(self, limit: usize) -> RegistryData {
        {
            let mut log = self.lock_seen();
            log.limit = limit;
            while log.entries.len() > limit {
                log.entries.pop_front();
            }
        }
        self
    }

    /// A copy of the requests seen so far, oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.lock_seen().entries.iter().cloned().collect()
    }

    /// The most recent request, if any.
    pub fn last_seen(&self) -> Option<SeenRequest> {
        self.lock_seen().entries.back().cloned()
    }

    /// How many requests arrived in total (also those dropped from the log).
    pub fn seen_count(&self) -> u64 {
        self.lock_seen().total
    }

    /// Empties the log (the total count is kept).
    pub fn clear_seen(&self) {
        self.lock_seen().entries.clear();
    }

    /// The shared log itself, for callers that want to hold on to it.
    pub fn seen_log(&self) -> Arc<Mutex<SeenLog>> {
        Arc::clone(&self.seen)
    }

    /// A person in the `Persoon` shape, by BSN.
    pub fn person(&self, bsn: &str) -> Option<&Value> {
        self.data.by_bsn.get(bsn).map(|&i| &self.data.persons[i])
    }

    /// All BSNs, in file order.
    pub fn bsns(&self) -> Vec<&str> {
        self.data
            .persons
            .iter()
            .filter_map(|p| p.get("burgerservicenummer").and_then(Value::as_str))
            .collect()
    }

    /// A vehicle as stored (facts plus `tenaamstelling.burgerservicenummer`), by kenteken.
    pub fn vehicle(&self, kenteken: &str) -> Option<&Value> {
        self.data.vehicles.get(kenteken)
    }

    /// All kentekens, sorted.
    pub fn kentekens(&self) -> Vec<&str> {
        self.data.vehicles.keys().map(String::as_str).collect()
    }

    fn lock_seen(&self) -> MutexGuard<'_, SeenLog> {
        // A panic elsewhere while holding the lock leaves the log usable: it is only a log.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, req: &SeenRequest) {
        {
            let mut log = self.lock_seen();
            log.total += 1;
            if log.limit > 0 {
                if log.entries.len() >= log.limit {
                    log.entries.pop_front();
                }
                log.entries.push_back(req.clone());
            }
        }
        if let Some(hook) = &self.on_request {
            hook(req);
        }
    }
}

impl SeenLog {
    /// The requests kept, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &SeenRequest> {
        self.entries.iter()
    }

    /// How many requests arrived in total.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Reads `personen.json` and `voertuigen.json` from `dir`.
pub fn load_data(dir: &Path) -> Result<RegistryData, String> {
    let read = |name: &str| -> Result<Value, String> {
        let path = dir.join(name);
        let text =
            std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        serde_json::from_slice(&text)
            .map_err(|e| format!("`{}` is not valid JSON: {e}", path.display()))
    };
    let personen = read("personen.json")?;
    let voertuigen = read("voertuigen.json")?;
    RegistryData::from_json(&personen, &voertuigen).map_err(|e| format!("`{}`: {e}", dir.display()))
}

/// Serves the registry on `listener` until this future is dropped (or its task aborted).
///
/// Connections are served inside this future, so dropping it also closes every open
/// connection: a test that aborts the task gets an upstream that is really gone.
pub async fn serve(listener: TcpListener, data: RegistryData) {
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
                // Out of file descriptors and the like: wait a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Binds `127.0.0.1:0` and serves there on a new task; returns the address and the task
/// (abort it to stop the registry).
pub async fn spawn(
    data: RegistryData,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(serve(listener, data))))
}

async fn handle(req: Request<Incoming>, data: &RegistryData) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let (body, too_large) = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    let seen = SeenRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    data.record(&seen);
    if too_large {
        return problem_response(
            &Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request te groot.",
                "tooLarge",
                "the request body is too large or could not be read".into(),
            ),
            &instance_of(&seen),
        );
    }
    route(&seen, data)
}

fn route(req: &SeenRequest, data: &RegistryData) -> Response<Full<Bytes>> {
    let path = req.path.as_str();
    let result = if path == "/personen" {
        if req.method == Method::POST {
            personen(req, data)
        } else {
            Err(Problem::method_not_allowed("POST"))
        }
    } else if path == "/bewoningen" {
        if req.method == Method::POST {
            bewoningen(req, data)
        } else {
            Err(Problem::method_not_allowed("POST"))
        }
    } else if let Some(rest) = path.strip_prefix("/voertuigen/") {
        let (kenteken, holder) = match rest.split_once('/') {
            None => (rest, false),
            Some((k, "tenaamstelling")) => (k, true),
            Some(_) => return problem_response(&Problem::not_found(path), &instance_of(req)),
        };
        if req.method == Method::GET {
            voertuig(kenteken, holder, data)
        } else {
            Err(Problem::method_not_allowed("GET"))
        }
    } else {
        Err(Problem::not_found(path))
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, "application/json; charset=utf-8", &body),
        Err(p) => problem_response(&p, &instance_of(req)),
    }
}

/// The problem `instance` (a URI): `urn:uuid:` with the request id the gate sent in
/// `X-Request-Id`, or a fresh one.
fn instance_of(req: &SeenRequest) -> String {
    match req.header("x-request-id") {
        Some(id) => foutbericht::instance(id),
        None => foutbericht::instance(&uuid::Uuid::new_v4().to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// BRP Bewoning: POST /bewoningen

/// Who lived at `adresseerbaarObjectIdentificatie` on `peildatum` (or in `datumVan`–`datumTot`):
/// the persons whose `verblijfplaats` is that object from its `datumVan` on (and who are not
/// deceased by then), as one `bewoning` over the asked date or period.
fn bewoningen(req: &SeenRequest, data: &RegistryData) -> Result<Value, Problem> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| Problem::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let date =
        |k: &str| text(k).and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let mut invalid = Vec::new();
    let aoid = text("adresseerbaarObjectIdentificatie").filter(|a| {
        a.len() == 16 && a.bytes().all(|b| b.is_ascii_digit()) && a.bytes().any(|b| b != b'0')
    });
    if aoid.is_none() {
        invalid.push(InvalidParam {
            name: "adresseerbaarObjectIdentificatie".into(),
            code: "pattern",
            reason: REASON_PATTERN,
        });
    }
    let (van, tot) = match text("type") {
        Some("BewoningMetPeildatum") => (
            date("peildatum"),
            date("peildatum").and_then(|d| d.succ_opt()),
        ),
        Some("BewoningMetPeriode") => (date("datumVan"), date("datumTot")),
        _ => {
            invalid.push(InvalidParam {
                name: "type".into(),
                code: "value",
                reason: REASON_ENUM,
            });
            (None, None)
        }
    };
    let (Some(aoid), Some(van), Some(tot)) = (aoid, van, tot) else {
        if invalid.is_empty() {
            invalid.push(InvalidParam {
                name: "peildatum".into(),
                code: "date",
                reason: REASON_PATTERN,
            });
        }
        return Err(with_params(invalid));
    };
    let lived = |p: &&Value| {
        let vp = &p["verblijfplaats"];
        let from = vp["datumVan"]["datum"]
            .as_str()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let died = p["overlijden"]["datum"]["datum"]
            .as_str()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        vp["adresseerbaarObjectIdentificatie"].as_str() == Some(aoid)
            && from.is_none_or(|f| f < tot)
            && died.is_none_or(|d| d >= van)
    };
    let bewoners: Vec<Value> = data
        .data
        .persons
        .iter()
        .filter(lived)
        .map(|p| {
            let mut b = json!({"burgerservicenummer": p["burgerservicenummer"],
                               "naam": {"volledigeNaam": p["naam"]["volledigeNaam"]},
                               "geboorte": {"datum": p["geboorte"]["datum"]}});
            if p["geheimhoudingPersoonsgegevens"].as_bool() == Some(true) {
                b["geheimhoudingPersoonsgegevens"] = Value::Bool(true);
            }
            b
        })
        .collect();
    Ok(json!({"bewoningen": [{
        "adresseerbaarObjectIdentificatie": aoid,
        "periode": {"datumVan": van.to_string(), "datumTot": tot.to_string()},
        "bewoners": bewoners,
        "mogelijkeBewoners": []
    }]}))
}

// ---------------------------------------------------------------------------------------------
// Errors: the spec's Foutbericht / BadRequestFoutbericht.

#[derive(Debug)]
struct InvalidParam {
    name: String,
    code: &'static str,
    reason: &'static str,
}

#[derive(Debug)]
struct Problem {
    status: StatusCode,
    title: &'static str,
    code: &'static str,
    detail: String,
    invalid_params: Vec<InvalidParam>,
    allow: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, code: &'static str, detail: String) -> Self {
        Problem {
            status,
            title,
            code,
            detail,
            invalid_params: Vec::new(),
            allow: None,
        }
    }

    fn bad_request(detail: String) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Een of meerdere parameters zijn niet correct.",
            "paramsValidation",
            detail,
        )
    }

    fn not_found(path: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "Opgevraagde resource bestaat niet.",
            "notFound",
            format!("no resource at `{}`", truncate(path)),
        )
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        let mut p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Methode niet toegestaan.",
            "methodNotAllowed",
            format!("only `{allow}` is allowed here"),
        );
        p.allow = Some(allow);
        p
    }
}

fn problem_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.1",
        404 => "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.5",
        405 => "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.6",
        413 => "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.14",
        415 => "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.16",
        _ => "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html",
    }
}

/// The spec's `Foutbericht` (a 400: `BadRequestFoutbericht`), every member fitted to the spec's
/// patterns by the gate's own [`foutbericht`] functions: the gate passes a registry's 4xx on.
fn problem_response(p: &Problem, instance: &str) -> Response<Full<Bytes>> {
    let mut body = json!({
        "type": problem_type(p.status),
        "title": foutbericht::title(p.title),
        "status": p.status.as_u16(),
        "detail": foutbericht::detail(&p.detail),
        "instance": instance,
        "code": foutbericht::code_or(p.code, p.status),
    });
    let mut params = p.invalid_params.iter().collect::<Vec<_>>();
    let whole_body = InvalidParam {
        name: "body".into(),
        code: "json",
        reason: "Waarde is geen geldig JSON object.",
    };
    if p.status == StatusCode::BAD_REQUEST && params.is_empty() {
        params.push(&whole_body);
    }
    if !params.is_empty()
        && let Some(obj) = body.as_object_mut()
    {
        let params: Vec<Value> = params
            .iter()
            .map(|ip| {
                let code = foutbericht::code_or(ip.code, p.status);
                json!({
                    "type": format!("https://www.vng.nl/realisatie/api/validaties/{code}"),
                    // `fields[3]` is `fields`; a key that is no name (`{"12 x": 1}`) is `body`.
                    "name": foutbericht::param_name(&ip.name).unwrap_or_else(|| "body".into()),
                    "code": code,
                    "reason": foutbericht::reason(ip.reason),
                })
            })
            .collect();
        obj.insert("invalidParams".into(), Value::Array(params));
    }
    let mut resp = json_response(p.status, "application/problem+json", &body);
    if let Some(allow) = p.allow {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: &Value,
) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn truncate(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------------------------------------
// BRP Personen: POST /personen

/// A parameter of a `PersonenQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Burgerservicenummer,
    GemeenteVanInschrijving,
    InclusiefOverledenPersonen,
    Geboortedatum,
    Geslachtsnaam,
    Geslacht,
    Voorvoegsel,
    VoornamenOptioneel,
    VoornamenVerplicht,
    Postcode,
    Huisnummer,
    Huisletter,
    Huisnummertoevoeging,
    Straat,
    NummeraanduidingIdentificatie,
    AdresseerbaarObjectIdentificatie,
}

impl Param {
    fn name(self) -> &'static str {
        match self {
            Param::Burgerservicenummer => "burgerservicenummer",
            Param::GemeenteVanInschrijving => "gemeenteVanInschrijving",
            Param::InclusiefOverledenPersonen => "inclusiefOverledenPersonen",
            Param::Geboortedatum => "geboortedatum",
            Param::Geslachtsnaam => "geslachtsnaam",
            Param::Geslacht => "geslacht",
            Param::Voorvoegsel => "voorvoegsel",
            Param::VoornamenOptioneel | Param::VoornamenVerplicht => "voornamen",
            Param::Postcode => "postcode",
            Param::Huisnummer => "huisnummer",
            Param::Huisletter => "huisletter",
            Param::Huisnummertoevoeging => "huisnummertoevoeging",
            Param::Straat => "straat",
            Param::NummeraanduidingIdentificatie => "nummeraanduidingIdentificatie",
            Param::AdresseerbaarObjectIdentificatie => "adresseerbaarObjectIdentificatie",
        }
    }
}

/// One query type: its required and optional parameters (besides `type` and `fields`).
struct QueryType {
    name: &'static str,
    required: &'static [Param],
    optional: &'static [Param],
}

impl QueryType {
    fn is_search(&self) -> bool {
        self.name != "RaadpleegMetBurgerservicenummer"
    }
}

use Param as P;

/// The query types of the BRP Personen API 2.7 (`PersonenQuery` discriminator mapping).
const QUERY_TYPES: &[QueryType] = &[
    QueryType {
        name: "RaadpleegMetBurgerservicenummer",
        required: &[P::Burgerservicenummer],
        optional: &[P::GemeenteVanInschrijving],
    },
    QueryType {
        name: "ZoekMetGeslachtsnaamEnGeboortedatum",
        required: &[P::Geslachtsnaam, P::Geboortedatum],
        optional: &[
            P::GemeenteVanInschrijving,
            P::InclusiefOverledenPersonen,
            P::Geslacht,
            P::Voorvoegsel,
            P::VoornamenOptioneel,
        ],
    },
    QueryType {
        name: "ZoekMetNaamEnGemeenteVanInschrijving",
        required: &[
            P::Geslachtsnaam,
            P::GemeenteVanInschrijving,
            P::VoornamenVerplicht,
        ],
        optional: &[P::InclusiefOverledenPersonen, P::Geslacht, P::Voorvoegsel],
    },
    QueryType {
        name: "ZoekMetPostcodeEnHuisnummer",
        required: &[P::Postcode, P::Huisnummer],
        optional: &[
            P::GemeenteVanInschrijving,
            P::InclusiefOverledenPersonen,
            P::Huisletter,
            P::Huisnummertoevoeging,
            P::Geboortedatum,
            P::Geslachtsnaam,
        ],
    },
    QueryType {
        name: "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving",
        required: &[P::Straat, P::Huisnummer, P::GemeenteVanInschrijving],
        optional: &[
            P::InclusiefOverledenPersonen,
            P::Huisletter,
            P::Huisnummertoevoeging,
        ],
    },
    QueryType {
        name: "ZoekMetNummeraanduidingIdentificatie",
        required: &[P::NummeraanduidingIdentificatie],
        optional: &[P::GemeenteVanInschrijving, P::InclusiefOverledenPersonen],
    },
    QueryType {
        name: "ZoekMetAdresseerbaarObjectIdentificatie",
        required: &[P::AdresseerbaarObjectIdentificatie],
        optional: &[P::GemeenteVanInschrijving, P::InclusiefOverledenPersonen],
    },
];

/// Field paths of `Persoon` this registry knows (the spec's schema, as far as the data goes).
const PERSOON_FIELDS: &[&str] = &[
    "aNummer",
    "burgerservicenummer",
    "datumEersteInschrijvingGBA",
    "datumInschrijvingInGemeente",
    "europeesKiesrecht",
    "geboorte",
    "geboorte.datum",
    "geboorte.land",
    "geboorte.land.code",
    "geboorte.land.omschrijving",
    "geboorte.plaats",
    "geboorte.plaats.code",
    "geboorte.plaats.omschrijving",
    "gemeenteVanInschrijving",
    "gemeenteVanInschrijving.code",
    "gemeenteVanInschrijving.omschrijving",
    "geslacht",
    "geslacht.code",
    "geslacht.omschrijving",
    "gezag",
    "immigratie",
    "indicatieCurateleRegister",
    "kinderen",
    "kinderen.burgerservicenummer",
    "kinderen.geboorte",
    "kinderen.geboorte.datum",
    "kinderen.geslacht",
    "kinderen.naam",
    "kinderen.naam.geslachtsnaam",
    "kinderen.naam.voorletters",
    "kinderen.naam.voornamen",
    "kinderen.naam.voorvoegsel",
    "leeftijd",
    "naam",
    "naam.aanduidingNaamgebruik",
    "naam.aanduidingNaamgebruik.code",
    "naam.aanduidingNaamgebruik.omschrijving",
    "naam.adellijkeTitelPredicaat",
    "naam.adellijkeTitelPredicaat.code",
    "naam.adellijkeTitelPredicaat.omschrijving",
    "naam.adellijkeTitelPredicaat.soort",
    "naam.geslachtsnaam",
    "naam.volledigeNaam",
    "naam.voorletters",
    "naam.voornamen",
    "naam.voorvoegsel",
    "nationaliteiten",
    "nationaliteiten.datumIngangGeldigheid",
    "nationaliteiten.nationaliteit",
    "nationaliteiten.nationaliteit.code",
    "nationaliteiten.nationaliteit.omschrijving",
    "nationaliteiten.redenOpname",
    "nationaliteiten.redenOpname.code",
    "nationaliteiten.redenOpname.omschrijving",
    "nationaliteiten.type",
    "ouders",
    "ouders.burgerservicenummer",
    "ouders.datumIngangFamilierechtelijkeBetrekking",
    "ouders.geboorte",
    "ouders.geboorte.datum",
    "ouders.geslacht",
    "ouders.naam",
    "ouders.naam.geslachtsnaam",
    "ouders.naam.voorletters",
    "ouders.naam.voornamen",
    "ouders.naam.voorvoegsel",
    "ouders.ouderAanduiding",
    "overlijden",
    "overlijden.datum",
    "overlijden.land",
    "overlijden.plaats",
    "partners",
    "partners.aangaanHuwelijkPartnerschap",
    "partners.aangaanHuwelijkPartnerschap.datum",
    "partners.aangaanHuwelijkPartnerschap.land",
    "partners.aangaanHuwelijkPartnerschap.plaats",
    "partners.burgerservicenummer",
    "partners.geboorte",
    "partners.geboorte.datum",
    "partners.geslacht",
    "partners.naam",
    "partners.naam.geslachtsnaam",
    "partners.naam.voorletters",
    "partners.naam.voornamen",
    "partners.naam.voorvoegsel",
    "partners.soortVerbintenis",
    "uitsluitingKiesrecht",
    "verblijfplaats",
    "verblijfplaats.adresseerbaarObjectIdentificatie",
    "verblijfplaats.datumIngangGeldigheid",
    "verblijfplaats.datumVan",
    "verblijfplaats.functieAdres",
    "verblijfplaats.nummeraanduidingIdentificatie",
    "verblijfplaats.type",
    "verblijfplaats.verblijfadres",
    "verblijfplaats.verblijfadres.huisletter",
    "verblijfplaats.verblijfadres.huisnummer",
    "verblijfplaats.verblijfadres.huisnummertoevoeging",
    "verblijfplaats.verblijfadres.korteStraatnaam",
    "verblijfplaats.verblijfadres.officieleStraatnaam",
    "verblijfplaats.verblijfadres.postcode",
    "verblijfplaats.verblijfadres.woonplaats",
    "verblijfstitel",
    "adressering",
    "adressering.aanhef",
    "adressering.aanschrijfwijze",
    "adressering.aanschrijfwijze.aanspreekvorm",
    "adressering.aanschrijfwijze.naam",
    "adressering.adresregel1",
    "adressering.adresregel2",
    "adressering.adresregel3",
    "adressering.gebruikInLopendeTekst",
    "adressering.indicatieVastgesteldVerblijftNietOpAdres",
    "adressering.land",
    "adressering.land.code",
    "adressering.land.omschrijving",
];

/// The leaves of `PersoonBeperkt` (what searches answer): a field of a search is valid when it is
/// one of these, a parent of some of these (`naam`), or a known sub-path of one (`geslacht.code`).
const PERSOON_BEPERKT_LEAVES: &[&str] = &[
    "burgerservicenummer",
    "geslacht",
    "leeftijd",
    "naam.voornamen",
    "naam.adellijkeTitelPredicaat",
    "naam.voorvoegsel",
    "naam.geslachtsnaam",
    "naam.voorletters",
    "naam.volledigeNaam",
    "geboorte.datum",
    "adressering.adresregel1",
    "adressering.adresregel2",
    "adressering.adresregel3",
    "adressering.land",
    "adressering.indicatieVastgesteldVerblijftNietOpAdres",
];

/// Fields the real API delivers automatically and refuses in `fields`.
const AUTOMATIC_FIELDS: &[&str] = &[
    "inOnderzoek",
    "geheimhoudingPersoonsgegevens",
    "opschortingBijhouding",
    "rni",
    "verificatie",
];

const REASON_REQUIRED: &str = "Parameter is verplicht.";
const REASON_UNKNOWN_PARAM: &str = "Parameter is niet verwacht.";
const REASON_PATTERN: &str = "Waarde voldoet niet aan patroon.";
const REASON_ENUM: &str = "Waarde heeft geen geldige waarde uit de enumeratie.";
const REASON_FIELD: &str = "Parameter bevat een niet bestaande veldnaam.";
const REASON_FIELD_NOT_ALLOWED: &str = "Parameter bevat een niet toegestane veldnaam.";

fn personen(req: &SeenRequest, data: &RegistryData) -> Result<Value, Problem> {
    if let Some(ct) = req.header("content-type")
        && !ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Media Type wordt niet ondersteund.",
            "unsupported",
            format!(
                "content type `{}` is not supported: expected `application/json`",
                truncate(ct)
            ),
        ));
    }
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| Problem::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(query) = body else {
        return Err(Problem::bad_request(
            "the request body is not a JSON object".into(),
        ));
    };
    let mut invalid = Vec::new();
    let qtype = match query.get("type") {
        None => {
            invalid.push(InvalidParam {
                name: "type".into(),
                code: "required",
                reason: REASON_REQUIRED,
            });
            None
        }
        Some(t) => {
            let found = t
                .as_str()
                .and_then(|t| QUERY_TYPES.iter().find(|q| q.name == t));
            if found.is_none() {
                invalid.push(InvalidParam {
                    name: "type".into(),
                    code: "value",
                    reason: REASON_ENUM,
                });
            }
            found
        }
    };
    let Some(qtype) = qtype else {
        return Err(with_params(invalid));
    };
    let fields = check_fields(query.get("fields"), qtype.is_search(), &mut invalid);
    for key in query.keys() {
        let known = key == "type"
            || key == "fields"
            || qtype
                .required
                .iter()
                .chain(qtype.optional)
                .any(|p| p.name() == key);
        if !known {
            invalid.push(InvalidParam {
                name: key.clone(),
                code: "unknownParam",
                reason: REASON_UNKNOWN_PARAM,
            });
        }
    }
    for p in qtype.required {
        if !query.contains_key(p.name()) {
            invalid.push(InvalidParam {
                name: p.name().into(),
                code: "required",
                reason: REASON_REQUIRED,
            });
        }
    }
    for p in qtype.required.iter().chain(qtype.optional) {
        if let Some(v) = query.get(p.name()) {
            check_param(*p, v, &mut invalid);
        }
    }
    if !invalid.is_empty() {
        return Err(with_params(invalid));
    }
    let tree = FieldTree::from_paths(&fields);
    let today = chrono::Utc::now().date_naive();
    let matches: Vec<&Value> = if qtype.is_search() {
        let include_deceased = query
            .get("inclusiefOverledenPersonen")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        data.data
            .persons
            .iter()
            .filter(|p| include_deceased || p.get("overlijden").is_none())
            .filter(|p| {
                qtype.required.iter().chain(qtype.optional).all(|param| {
                    match query.get(param.name()) {
                        Some(v) => person_matches(p, *param, v),
                        None => true,
                    }
                })
            })
            .collect()
    } else {
        let mut seen_bsns = Vec::new();
        let requested = query
            .get("burgerservicenummer")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let gemeente = query.get("gemeenteVanInschrijving");
        requested
            .iter()
            .filter_map(Value::as_str)
            .filter(|b| {
                if seen_bsns.contains(b) {
                    false
                } else {
                    seen_bsns.push(*b);
                    true
                }
            })
            .filter_map(|b| data.person(b))
            .filter(|p| match gemeente {
                Some(g) => person_matches(p, Param::GemeenteVanInschrijving, g),
                None => true,
            })
            .collect()
    };
    let personen: Vec<Value> = matches
        .into_iter()
        .map(|p| select_fields(p, &tree, today))
        .collect();
    Ok(json!({ "type": qtype.name, "personen": personen }))
}

fn with_params(invalid: Vec<InvalidParam>) -> Problem {
    let first = invalid
        .first()
        .map(|p| format!("parameter `{}`: {}", p.name, p.code))
        .unwrap_or_default();
    let mut p = Problem::bad_request(format!(
        "{} invalid parameter(s), first {first}",
        invalid.len()
    ));
    p.invalid_params = invalid;
    p
}

/// Checks `fields` and returns the paths to select (for searches expanded to `PersoonBeperkt`).
fn check_fields(
    fields: Option<&Value>,
    search: bool,
    invalid: &mut Vec<InvalidParam>,
) -> Vec<String> {
    let Some(fields) = fields else {
        invalid.push(InvalidParam {
            name: "fields".into(),
            code: "required",
            reason: REASON_REQUIRED,
        });
        return Vec::new();
    };
    let Some(list) = fields.as_array() else {
        invalid.push(InvalidParam {
            name: "fields".into(),
            code: "array",
            reason: "Parameter is geen array.",
        });
        return Vec::new();
    };
    if list.is_empty() || list.len() > 130 {
        invalid.push(InvalidParam {
            name: "fields".into(),
            code: if list.is_empty() {
                "minItems"
            } else {
                "maxItems"
            },
            reason: if list.is_empty() {
                "Array bevat minder dan 1 items."
            } else {
                "Array bevat meer dan 130 items."
            },
        });
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let name = format!("fields[{i}]");
        let Some(f) = f.as_str() else {
            invalid.push(InvalidParam {
                name,
                code: "string",
                reason: "Waarde is geen string.",
            });
            continue;
        };
        let shape_ok = !f.is_empty()
            && f.len() <= 200
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if !shape_ok {
            invalid.push(InvalidParam {
                name,
                code: "pattern",
                reason: REASON_PATTERN,
            });
            continue;
        }
        if f.split('.').any(|seg| AUTOMATIC_FIELDS.contains(&seg)) {
            invalid.push(InvalidParam {
                name,
                code: "fields",
                reason: REASON_FIELD_NOT_ALLOWED,
            });
            continue;
        }
        if !PERSOON_FIELDS.contains(&f) {
            invalid.push(InvalidParam {
                name,
                code: "fields",
                reason: REASON_FIELD,
            });
            continue;
        }
        if !search {
            out.push(f.to_string());
            continue;
        }
        // PersoonBeperkt: a leaf, a parent of leaves (expanded to them), or below a leaf.
        let prefix = format!("{f}.");
        let below: Vec<&str> = PERSOON_BEPERKT_LEAVES
            .iter()
            .copied()
            .filter(|leaf| leaf.starts_with(&prefix))
            .collect();
        if PERSOON_BEPERKT_LEAVES.contains(&f)
            || PERSOON_BEPERKT_LEAVES
                .iter()
                .any(|leaf| f.starts_with(&format!("{leaf}.")))
        {
            out.push(f.to_string());
        } else if !below.is_empty() {
            out.extend(below.into_iter().map(str::to_string));
        } else {
            invalid.push(InvalidParam {
                name,
                code: "fields",
                reason: REASON_FIELD_NOT_ALLOWED,
            });
        }
    }
    out
}

fn check_param(p: Param, v: &Value, invalid: &mut Vec<InvalidParam>) {
    let mut bad = |name: String, code: &'static str, reason: &'static str| {
        invalid.push(InvalidParam { name, code, reason });
    };
    let name = p.name().to_string();
    match p {
        Param::Burgerservicenummer => {
            let Some(list) = v.as_array() else {
                return bad(name, "array", "Parameter is geen array.");
            };
            if list.is_empty() {
                return bad(name, "minItems", "Array bevat minder dan 1 items.");
            }
            if list.len() > 20 {
                return bad(name, "maxItems", "Array bevat meer dan 20 items.");
            }
            for (i, b) in list.iter().enumerate() {
                let ok = b
                    .as_str()
                    .is_some_and(|b| b.len() == 9 && b.bytes().all(|c| c.is_ascii_digit()));
                if !ok {
                    bad(format!("{name}[{i}]"), "pattern", REASON_PATTERN);
                }
            }
        }
        Param::InclusiefOverledenPersonen => {
            if !v.is_boolean() {
                bad(name, "boolean", "Waarde is geen boolean.");
            }
        }
        Param::Huisnummer => match v.as_i64() {
            Some(n) if (1..=99_999).contains(&n) => {}
            Some(n) if n < 1 => bad(name, "minimum", "Waarde is lager dan minimum 1."),
            Some(_) => bad(name, "maximum", "Waarde is hoger dan maximum 99999."),
            None => bad(name, "integer", "Waarde is geen geldig getal."),
        },
        _ => {
            let Some(s) = v.as_str() else {
                return bad(name, "string", "Waarde is geen string.");
            };
            if !string_param_ok(p, s) {
                let code = if p == Param::Geboortedatum {
                    "date"
                } else {
                    "pattern"
                };
                let reason = if p == Param::Geboortedatum {
                    "Waarde is geen geldige datum."
                } else {
                    REASON_PATTERN
                };
                bad(name, code, reason);
            }
        }
    }
}

/// The spec's patterns, without a regex engine.
fn string_param_ok(p: Param, s: &str) -> bool {
    let name_char =
        |c: char| c.is_ascii_alphanumeric() || ('À'..='ž').contains(&c) || " .-'".contains(c);
    let len = s.chars().count();
    // `^[chars]{1,200}$|^[chars]{min,199}\*$`
    let wildcard_name = |min_before_star: usize| match s.strip_suffix('*') {
        Some(stem) => {
            let n = stem.chars().count();
            n >= min_before_star && n <= 199 && stem.chars().all(name_char)
        }
        None => (1..=200).contains(&len) && s.chars().all(name_char),
    };
    match p {
        Param::Geboortedatum => s.len() == 10 && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        Param::Geslachtsnaam | Param::VoornamenVerplicht => wildcard_name(3),
        Param::VoornamenOptioneel => wildcard_name(1),
        Param::Geslacht => matches!(s, "M" | "m" | "V" | "v" | "O" | "o"),
        Param::Voorvoegsel => {
            (1..=10).contains(&len)
                && s.chars()
                    .all(|c| c.is_ascii_alphabetic() || " '".contains(c))
        }
        Param::GemeenteVanInschrijving => s.len() == 4 && s.bytes().all(|c| c.is_ascii_digit()),
        Param::Postcode => {
            let b = s.as_bytes();
            let letters = match b.len() {
                6 => &b[4..],
                7 if b[4] == b' ' => &b[5..],
                _ => return false,
            };
            (b'1'..=b'9').contains(&b[0])
                && b[1..4].iter().all(u8::is_ascii_digit)
                && letters.iter().all(u8::is_ascii_alphabetic)
        }
        Param::Huisletter => len == 1 && s.chars().all(|c| c.is_ascii_alphabetic()),
        Param::Huisnummertoevoeging => {
            (1..=4).contains(&len)
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " -".contains(c))
        }
        Param::Straat => {
            let street_char = |c: char| {
                c.is_ascii_alphanumeric() || ('À'..='ž').contains(&c) || " -'.".contains(c)
            };
            let stem_ok = |stem: &str| {
                let n = stem.chars().count();
                (7..=79).contains(&n) && stem.chars().all(street_char)
            };
            if let Some(stem) = s.strip_suffix('*') {
                stem_ok(stem)
            } else if let Some(stem) = s.strip_prefix('*') {
                stem_ok(stem)
            } else {
                (1..=80).contains(&len) && s.chars().all(street_char)
            }
        }
        Param::NummeraanduidingIdentificatie | Param::AdresseerbaarObjectIdentificatie => {
            s.len() == 16 && s.bytes().all(|c| c.is_ascii_digit()) && s.bytes().any(|c| c != b'0')
        }
        Param::Burgerservicenummer | Param::InclusiefOverledenPersonen | Param::Huisnummer => false,
    }
}

/// Whether a person matches one (already validated) search parameter. Text is compared
/// case-insensitively; a trailing (or, for `straat`, leading) `*` is a wildcard.
fn person_matches(person: &Value, p: Param, v: &Value) -> bool {
    let at = |ptr: &str| person.pointer(ptr).and_then(Value::as_str);
    let text = |ptr: &str| match (at(ptr), v.as_str()) {
        (Some(have), Some(want)) => wildcard_eq(have, want),
        _ => false,
    };
    match p {
        Param::Burgerservicenummer => true,
        Param::InclusiefOverledenPersonen => true,
        Param::GemeenteVanInschrijving => at("/gemeenteVanInschrijving/code") == v.as_str(),
        Param::Geboortedatum => at("/geboorte/datum/datum") == v.as_str(),
        Param::Geslachtsnaam => text("/naam/geslachtsnaam"),
        Param::VoornamenOptioneel | Param::VoornamenVerplicht => text("/naam/voornamen"),
        Param::Voorvoegsel => text("/naam/voorvoegsel"),
        Param::Geslacht => text("/geslacht/code"),
        Param::Postcode => {
            let norm = |s: &str| s.replace(' ', "").to_uppercase();
            match (at("/verblijfplaats/verblijfadres/postcode"), v.as_str()) {
                (Some(have), Some(want)) => norm(have) == norm(want),
                _ => false,
            }
        }
        Param::Huisnummer => {
            person
                .pointer("/verblijfplaats/verblijfadres/huisnummer")
                .and_then(Value::as_i64)
                == v.as_i64()
        }
        Param::Huisletter => text("/verblijfplaats/verblijfadres/huisletter"),
        Param::Huisnummertoevoeging => text("/verblijfplaats/verblijfadres/huisnummertoevoeging"),
        Param::Straat => {
            text("/verblijfplaats/verblijfadres/officieleStraatnaam")
                || text("/verblijfplaats/verblijfadres/korteStraatnaam")
        }
        Param::NummeraanduidingIdentificatie => {
            at("/verblijfplaats/nummeraanduidingIdentificatie") == v.as_str()
        }
        Param::AdresseerbaarObjectIdentificatie => {
            at("/verblijfplaats/adresseerbaarObjectIdentificatie") == v.as_str()
        }
    }
}

fn wildcard_eq(have: &str, want: &str) -> bool {
    let have = have.to_lowercase();
    if let Some(stem) = want.strip_suffix('*') {
        have.starts_with(&stem.to_lowercase())
    } else if let Some(stem) = want.strip_prefix('*') {
        have.ends_with(&stem.to_lowercase())
    } else {
        have == want.to_lowercase()
    }
}

/// The requested field paths as a tree; a node marked `all` selects everything below it.
#[derive(Debug, Default)]
struct FieldTree {
    all: bool,
    children: BTreeMap<String, FieldTree>,
}

impl FieldTree {
    fn from_paths(paths: &[String]) -> FieldTree {
        let mut root = FieldTree::default();
        for path in paths {
            let mut node = &mut root;
            for seg in path.split('.') {
                if node.all {
                    break;
                }
                node = node.children.entry(seg.to_string()).or_default();
            }
            if !node.all {
                node.all = true;
                node.children.clear();
            }
        }
        root
    }

    /// The parts of `v` this tree selects, or `None` when nothing is selected.
    fn project(&self, v: &Value) -> Option<Value> {
        if self.all {
            return Some(v.clone());
        }
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, sub) in &self.children {
                    if let Some(p) = m.get(k).and_then(|x| sub.project(x)) {
                        out.insert(k.clone(), p);
                    }
                }
                if out.is_empty() {
                    return None;
                }
                // A polymorphic object keeps its discriminator (`type`).
                if let Some(t) = m.get("type")
                    && !out.contains_key("type")
                {
                    out.insert("type".into(), t.clone());
                }
                Some(Value::Object(out))
            }
            Value::Array(items) => {
                let items: Vec<Value> = items.iter().filter_map(|x| self.project(x)).collect();
                (!items.is_empty()).then_some(Value::Array(items))
            }
            _ => None,
        }
    }
}

/// One person reduced to the selected fields, with `leeftijd` computed when asked for.
fn select_fields(person: &Value, tree: &FieldTree, today: NaiveDate) -> Value {
    let mut out = match tree.project(person) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if tree.children.contains_key("leeftijd")
        && person.get("overlijden").is_none()
        && let Some(age) = person
            .pointer("/geboorte/datum/datum")
            .and_then(Value::as_str)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .and_then(|born| age_on(born, today))
    {
        out.insert("leeftijd".into(), Value::from(age));
    }
    Value::Object(out)
}

fn age_on(born: NaiveDate, today: NaiveDate) -> Option<u32> {
    let mut age = today.year().checked_sub(born.year())?;
    if (today.month(), today.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    u32::try_from(age).ok()
}

/// Nine digits passing the 11-proef (9A+8B+7C+6D+5E+4F+3G+2H-1I divisible by 11), not all zeros.
/// Written here rather than taken from the gate, so the registry does not share the code it tests.
pub fn bsn_is_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 9 || !b.iter().all(u8::is_ascii_digit) || b.iter().all(|&c| c == b'0') {
        return false;
    }
    let sum: i64 = b
        .iter()
        .zip([9i64, 8, 7, 6, 5, 4, 3, 2, -1])
        .map(|(d, w)| i64::from(d - b'0') * w)
        .sum();
    sum % 11 == 0
}

// ---------------------------------------------------------------------------------------------
// RDW: GET /voertuigen/{kenteken}[/tenaamstelling]

fn kenteken_is_canonical(k: &str) -> bool {
    k.len() == 6
        && k.bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

fn voertuig(kenteken: &str, holder: bool, data: &RegistryData) -> Result<Value, Problem> {
    if !kenteken_is_canonical(kenteken) {
        let mut p = Problem::bad_request(format!(
            "`{}` is not a kenteken: expected 6 uppercase letters or digits without hyphens",
            truncate(kenteken)
        ));
        p.invalid_params.push(InvalidParam {
            name: "kenteken".into(),
            code: "pattern",
            reason: REASON_PATTERN,
        });
        return Err(p);
    }
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "Opgevraagde resource bestaat niet.",
            "notFound",
            format!("no vehicle with kenteken `{kenteken}`"),
        )
    };
    let v = data.vehicle(kenteken).ok_or_else(not_found)?;
    if !holder {
        let mut facts = v.as_object().cloned().unwrap_or_default();
        facts.remove("tenaamstelling");
        return Ok(Value::Object(facts));
    }
    let bsn = v
        .pointer("/tenaamstelling/burgerservicenummer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let person = data.person(bsn).ok_or_else(not_found)?;
    let pick = |ptr: &str| person.pointer(ptr).cloned();
    let mut naam = Map::new();
    for key in ["voornamen", "voorvoegsel", "geslachtsnaam", "voorletters"] {
        if let Some(x) = pick(&format!("/naam/{key}")) {
            naam.insert(key.into(), x);
        }
    }
    let mut adres = Map::new();
    for (out, key) in [
        ("straat", "officieleStraatnaam"),
        ("huisnummer", "huisnummer"),
        ("huisletter", "huisletter"),
        ("huisnummertoevoeging", "huisnummertoevoeging"),
        ("postcode", "postcode"),
        ("woonplaats", "woonplaats"),
    ] {
        if let Some(x) = pick(&format!("/verblijfplaats/verblijfadres/{key}")) {
            adres.insert(out.into(), x);
        }
    }
    let mut out = Map::new();
    out.insert("kenteken".into(), Value::from(kenteken));
    if let Some(d) = v.get("datumTenaamstelling") {
        out.insert("datumTenaamstelling".into(), d.clone());
    }
    out.insert("burgerservicenummer".into(), Value::from(bsn));
    out.insert("naam".into(), Value::Object(naam));
    out.insert("adres".into(), Value::Object(adres));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rvig_test_bsns_pass_and_a_wrong_check_digit_fails() {
        for b in ["999993653", "999990639", "999991802", "999993872"] {
            assert!(bsn_is_valid(b), "{b}");
        }
        assert!(!bsn_is_valid("999993654"));
        assert!(!bsn_is_valid("000000000"));
        assert!(!bsn_is_valid("99999365"));
    }

    #[test]
    fn nested_field_selects_only_that_sub_field_and_keeps_polymorphic_type() {
        let person = json!({
            "naam": {"voornamen": "Jan", "geslachtsnaam": "Boer"},
            "verblijfplaats": {"type": "Adres", "verblijfadres": {"woonplaats": "Rotterdam", "postcode": "3011AD"}},
            "nationaliteiten": [{"type": "Nationaliteit", "nationaliteit": {"code": "0001"}, "redenOpname": {"code": "001"}}]
        });
        let tree = FieldTree::from_paths(&[
            "naam.voornamen".into(),
            "verblijfplaats.verblijfadres.woonplaats".into(),
            "nationaliteiten.nationaliteit".into(),
        ]);
        let out = tree.project(&person);
        assert_eq!(
            out,
            Some(json!({
                "naam": {"voornamen": "Jan"},
                "verblijfplaats": {"type": "Adres", "verblijfadres": {"woonplaats": "Rotterdam"}},
                "nationaliteiten": [{"type": "Nationaliteit", "nationaliteit": {"code": "0001"}}]
            }))
        );
    }

    #[test]
    fn whole_object_wins_over_its_sub_field_in_either_order() {
        let person = json!({"naam": {"voornamen": "Jan", "geslachtsnaam": "Boer"}});
        for paths in [["naam", "naam.voornamen"], ["naam.voornamen", "naam"]] {
            let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
            let tree = FieldTree::from_paths(&paths);
            assert_eq!(tree.project(&person), Some(person.clone()));
        }
    }

    #[test]
    fn age_counts_whole_years() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(age_on(d("1980-01-01"), d("2026-11-29")), Some(46));
        assert_eq!(age_on(d("1980-12-01"), d("2026-11-29")), Some(45));
        assert_eq!(age_on(d("2030-01-01"), d("2026-11-29")), None);
    }

    #[test]
    fn spec_patterns_are_enforced() {
        assert!(string_param_ok(Param::Postcode, "1017CB"));
        assert!(string_param_ok(Param::Postcode, "1017 cb"));
        assert!(!string_param_ok(Param::Postcode, "0017CB"));
        assert!(!string_param_ok(Param::Postcode, "1017C"));
        assert!(string_param_ok(Param::Geslachtsnaam, "Öztürk"));
        assert!(string_param_ok(Param::Geslachtsnaam, "Boe*"));
        assert!(!string_param_ok(Param::Geslachtsnaam, "Bo*"));
        assert!(!string_param_ok(Param::Geboortedatum, "1970-02-30"));
        assert!(!string_param_ok(Param::Straat, "Cool*"));
        assert!(string_param_ok(Param::Straat, "Coolsin*"));
    }

    #[test]
    fn search_fields_are_limited_to_persoon_beperkt() {
        let mut invalid = Vec::new();
        let out = check_fields(Some(&json!(["naam", "geboorte"])), true, &mut invalid);
        assert!(invalid.is_empty(), "{invalid:?}");
        assert!(out.contains(&"naam.voornamen".to_string()));
        assert!(!out.contains(&"naam".to_string()));
        assert_eq!(
            out.iter()
                .filter(|f| f.starts_with("geboorte"))
                .collect::<Vec<_>>(),
            ["geboorte.datum"]
        );
        let _ = check_fields(Some(&json!(["verblijfplaats"])), true, &mut invalid);
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].name, "fields[0]");
    }

    #[test]
    fn automatic_and_unknown_fields_are_refused() {
        let mut invalid = Vec::new();
        let _ = check_fields(
            Some(&json!(["naam.inOnderzoek", "schoenmaat", "naam"])),
            false,
            &mut invalid,
        );
        let names: Vec<&str> = invalid.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fields[0]", "fields[1]"]);
    }
}
