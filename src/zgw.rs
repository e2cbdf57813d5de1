//! Purpose binding against a live ZGW Zaken API (VNG "Zaakgericht Werken", Zaken API 1.5).
//!
//! `X-Case-Id` is a zaak `identificatie`. A lookup asks the Zaken API for
//! `GET /zaken?identificatie=…[&bronorganisatie=…]`, then for `GET /rollen?zaak=<url>` and
//! `GET /zaakobjecten?zaak=<url>` (both at once), follows every `next` link of the paginated
//! answers (`count`/`next`/`previous`/`results`) and maps the zaak onto a [`Case`]:
//!
//! - `status` is open iff `einddatum` is null; the window runs from the start of `startdatum` to
//!   the end of `einddatumGepland` (whole days in UTC), open-ended when that is null;
//! - `handlers` are the `betrokkeneIdentificatie.identificatie` of rollen with
//!   `omschrijvingGeneriek` `behandelaar` and `betrokkeneType` `medewerker`;
//! - `subjects` are the `betrokkeneIdentificatie.inpBsn` of rollen with `betrokkeneType`
//!   `natuurlijk_persoon` (any role);
//! - `persons` are those rollen's `geslachtsnaam`, `voorvoegselGeslachtsnaam`, `voornamen` and
//!   `geboortedatum` (`yyyy-mm-dd` or `yyyymmdd`), when both surname and birth date are given;
//! - `addresses` are the `objectIdentificatie` of zaakobjecten with `objectType` `adres`
//!   (`postcode`, `huisnummer`, `huisletter`, `huisnummertoevoeging`, `gorOpenbareRuimteNaam`,
//!   and `identificatie` when it is a BAG id: a nummeraanduiding (object type `20`) or an
//!   adresseerbaar object (`01`, `02`, `03`); its first four digits give the municipality);
//! - `vehicles` are the `objectIdentificatie.overigeData.kenteken` of zaakobjecten with
//!   `objectType` `overige` and `objectTypeOverige` equal to `cases.vehicle_object_type`;
//! - `organization` is `bronorganisatie` mapped through `[cases.organisaties]` (the RSIN itself
//!   when not mapped), `type` is `zaaktype` mapped through `[cases.zaaktypen]` (`unknown` when not
//!   mapped, so that no policy permits it), `url` is the zaak URL.
//!
//! Guarantees: every lookup ends within `cases.timeout` (all pages included) with the case,
//! `Ok(None)` for an unknown zaak, or an error; an answer that cannot be read, a page the API
//! refuses, a `next` link outside the configured API, or more than [`MAX_PAGES`] pages is an
//! error, never a partial case. Rollen and zaakobjecten of another zaak (a filter the server
//! ignored) are never counted. Found zaken are cached for `cases.cache_ttl`, unknown ones for
//! `cases.negative_ttl`, errors not at all; concurrent lookups of one zaak share one fetch.
//!
//! Refuses: an ambiguous `identificatie` (several zaken; set `cases.bronorganisatie`). Each request
//! carries a ZGW JWT (HS256; `iss` and `client_id` are the client id; `iat`), never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Days, NaiveDate, Utc};
use http::header::{ACCEPT, AUTHORIZATION};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::CasesConfig;
use crate::model::{Bsn, Case, CaseAddress, CasePerson, CaseStatus, Kenteken};
use crate::purpose::{CaseFuture, CaseRegistry, CaseRegistryError};

/// Most pages followed for one list; a longer list is an error.
pub const MAX_PAGES: usize = 50;
/// Largest page body read.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Most zaken kept in the cache; beyond it, expired entries are dropped (all if need be).
pub const MAX_CACHED: usize = 10_000;
/// Case type of a zaak whose zaaktype is not in `[cases.zaaktypen]`.
pub const UNKNOWN_CASE_TYPE: &str = "unknown";

/// Everything the ZGW registry needs; [`ZgwOptions::from_config`] builds it from `[cases]`.
#[derive(Clone)]
pub struct ZgwOptions {
    /// Base URL of the Zaken API, e.g. `https://zaken.gemeente.example/zaken/api/v1`.
    pub base_url: String,
    /// The gate's client id (`iss` and `client_id` of the JWT).
    pub client_id: String,
    /// The shared secret the JWT is signed with.
    pub secret: Vec<u8>,
    /// RSIN filter for `GET /zaken`.
    pub bronorganisatie: Option<String>,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub timeout: Duration,
    /// `objectTypeOverige` of zaakobjecten holding a kenteken.
    pub vehicle_object_type: String,
    /// zaaktype URL → case type id.
    pub zaaktypen: HashMap<String, String>,
    /// RSIN → organisation code.
    pub organisaties: HashMap<String, String>,
}

impl fmt::Debug for ZgwOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZgwOptions")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("secret", &"***")
            .field("bronorganisatie", &self.bronorganisatie)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("timeout", &self.timeout)
            .field("vehicle_object_type", &self.vehicle_object_type)
            .field("zaaktypen", &self.zaaktypen)
            .field("organisaties", &self.organisaties)
            .finish()
    }
}

/// The ZGW registry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ZgwSetupError {
    #[error("missing key `cases.{0}`")]
    Missing(&'static str),
    #[error("cannot read `cases.zgw_secret_file` `{path}`: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
    #[error("`cases.zgw_secret_file` `{0}` is empty")]
    EmptySecret(String),
    #[error("`cases.zgw_url` = `{0}`: expected an http(s) base URL with a host")]
    Url(String),
    #[error("cannot set up TLS for `cases.zgw_url`: {0}")]
    Tls(String),
}

impl ZgwOptions {
    /// Reads `[cases]` (checked by the config loader) and the secret file.
    pub fn from_config(cfg: &CasesConfig) -> Result<ZgwOptions, ZgwSetupError> {
        let base_url = cfg
            .zgw_url
            .clone()
            .ok_or(ZgwSetupError::Missing("zgw_url"))?;
        let client_id = cfg
            .zgw_client_id
            .clone()
            .ok_or(ZgwSetupError::Missing("zgw_client_id"))?;
        let path = cfg
            .zgw_secret_file
            .as_ref()
            .ok_or(ZgwSetupError::Missing("zgw_secret_file"))?;
        let text = std::fs::read(path).map_err(|source| ZgwSetupError::Secret {
            path: path.display().to_string(),
            source,
        })?;
        // A trailing newline is an editor's, not part of the secret.
        let secret = text.trim_ascii().to_vec();
        if secret.is_empty() {
            return Err(ZgwSetupError::EmptySecret(path.display().to_string()));
        }
        Ok(ZgwOptions {
            base_url,
            client_id,
            secret,
            bronorganisatie: cfg.bronorganisatie.clone(),
            cache_ttl: cfg.cache_ttl.0,
            negative_ttl: cfg.negative_ttl.unwrap_or(cfg.cache_ttl).0,
            timeout: cfg.timeout.0,
            vehicle_object_type: cfg.vehicle_object_type.clone(),
            zaaktypen: cfg.zaaktypen.clone().into_iter().collect(),
            organisaties: cfg.organisaties.clone().into_iter().collect(),
        })
    }
}

/// Why a lookup in the Zaken API failed (the gate answers 503 `caseRegistryUnavailable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZgwError {
    #[error("the zaken api did not answer within {0}ms")]
    Timeout(u128),
    #[error("cannot reach `{url}`: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("`{url}` answered {status}")]
    Status { url: String, status: u16 },
    #[error("`{url}` did not answer a page of {what}: {reason}")]
    Shape {
        url: String,
        what: &'static str,
        reason: String,
    },
    #[error("the `next` link `{0}` points outside `cases.zgw_url`; not followed")]
    ForeignLink(String),
    #[error("`{url}` has more than {max} pages")]
    TooManyPages { url: String, max: usize },
    #[error(
        "zaak `{id}` is ambiguous: {count} zaken have this identificatie; set `cases.bronorganisatie`"
    )]
    Ambiguous { id: String, count: usize },
    #[error("cannot sign the zgw jwt: {0}")]
    Token(String),
}

impl From<ZgwError> for CaseRegistryError {
    fn from(e: ZgwError) -> Self {
        CaseRegistryError(e.to_string())
    }
}

/// The HTTP(S) client for the Zaken API: pooled, rustls with the ring provider and webpki roots.
type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn http_client() -> Result<HttpClient, ZgwSetupError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| ZgwSetupError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// The parts of `cases.zgw_url` that `next` links must share.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
    /// Path prefix without a trailing `/`.
    path: String,
}

impl Origin {
    fn of(url: &str) -> Option<Origin> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(Origin {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
            scheme,
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// Whether `url` is on the same scheme, host and port, under the same path prefix.
    fn contains(&self, url: &str) -> bool {
        let Some(other) = Origin::of(url) else {
            return false;
        };
        other.scheme == self.scheme
            && other.host == self.host
            && other.port == self.port
            && (other.path == self.path || other.path.starts_with(&format!("{}/", self.path)))
    }
}

/// A fetch's result and when the fetch started (the TTL counts from then).
struct Fetched {
    result: Result<Option<Arc<Case>>, ZgwError>,
    started: Instant,
}

/// One cache entry: filled once by the first fetch; joiners wait on the same cell.
#[derive(Default)]
struct Slot {
    cell: OnceCell<Fetched>,
}

/// Cases from a ZGW Zaken API, cached, with one fetch per zaak at a time.
pub struct ZgwCases {
    opts: ZgwOptions,
    base: String,
    origin: Origin,
    client: HttpClient,
    key: EncodingKey,
    cache: Mutex<HashMap<String, Arc<Slot>>>,
}

impl fmt::Debug for ZgwCases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZgwCases")
            .field("opts", &self.opts)
            .finish()
    }
}

impl ZgwCases {
    /// The registry for `[cases]` with `zgw_url` set.
    pub fn from_config(cfg: &CasesConfig) -> Result<Arc<ZgwCases>, ZgwSetupError> {
        ZgwCases::new(ZgwOptions::from_config(cfg)?)
    }

    /// The registry for these options (no request is made yet).
    pub fn new(opts: ZgwOptions) -> Result<Arc<ZgwCases>, ZgwSetupError> {
        let base = opts.base_url.trim_end_matches('/').to_string();
        let origin = Origin::of(&base).ok_or_else(|| ZgwSetupError::Url(base.clone()))?;
        if opts.secret.is_empty() {
            return Err(ZgwSetupError::Missing("zgw_secret_file"));
        }
        Ok(Arc::new(ZgwCases {
            key: EncodingKey::from_secret(&opts.secret),
            client: http_client()?,
            base,
            origin,
            opts,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// Looks a zaak up: from the cache when fresh, else by one shared fetch; within the timeout.
    pub async fn find(&self, id: &str) -> Result<Option<Arc<Case>>, ZgwError> {
        let deadline = Instant::now() + self.opts.timeout;
        let slot = self.slot(id, Instant::now());
        let fetch = slot.cell.get_or_init(|| self.fetch_bounded(id));
        match tokio::time::timeout_at(deadline, fetch).await {
            Ok(f) => f.result.clone(),
            Err(_) => Err(ZgwError::Timeout(self.opts.timeout.as_millis())),
        }
    }

    /// Drops every cached zaak (the next lookups fetch again).
    pub fn clear_cache(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The slot to wait on: the cached one when fresh or still being fetched, else a new one.
    fn slot(&self, id: &str, now: Instant) -> Arc<Slot> {
        let mut map = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get(id) {
            match slot.cell.get() {
                None => return Arc::clone(slot),
                Some(f) if self.fresh(f, now) => return Arc::clone(slot),
                Some(_) => {}
            }
        }
        if map.len() >= MAX_CACHED {
            map.retain(|_, s| s.cell.get().is_none_or(|f| self.fresh(f, now)));
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        let slot = Arc::new(Slot::default());
        map.insert(id.to_string(), Arc::clone(&slot));
        slot
    }

    /// Whether a finished fetch may still be used at `now`; errors never are.
    fn fresh(&self, f: &Fetched, now: Instant) -> bool {
        let ttl = match &f.result {
            Ok(Some(_)) => self.opts.cache_ttl,
            Ok(None) => self.opts.negative_ttl,
            Err(_) => return false,
        };
        now.saturating_duration_since(f.started) < ttl
    }

    async fn fetch_bounded(&self, id: &str) -> Fetched {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.opts.timeout, self.fetch(id)).await {
            Ok(r) => r,
            Err(_) => Err(ZgwError::Timeout(self.opts.timeout.as_millis())),
        };
        if let Err(e) = &result {
            tracing::warn!(case_id = %id, error = %e, "zaken api lookup failed");
        }
        Fetched { result, started }
    }

    async fn fetch(&self, id: &str) -> Result<Option<Arc<Case>>, ZgwError> {
        let token = self.token()?;
        let mut query = format!("identificatie={}", encode(id));
        if let Some(b) = &self.opts.bronorganisatie {
            query.push_str("&bronorganisatie=");
            query.push_str(&encode(b));
        }
        let zaken: Vec<Zaak> = self
            .list(
                format!("{}/zaken?{query}", self.base),
                "zaken",
                &token,
                true,
            )
            .await?;
        let mut matching: Vec<Zaak> = zaken
            .into_iter()
            .filter(|z| z.identificatie == id)
            .filter(|z| {
                self.opts
                    .bronorganisatie
                    .as_ref()
                    .is_none_or(|b| &z.bronorganisatie == b)
            })
            .collect();
        let zaak = match matching.len() {
            0 => return Ok(None),
            1 => matching.remove(0),
            count => {
                return Err(ZgwError::Ambiguous {
                    id: id.to_string(),
                    count,
                });
            }
        };
        let zaak_param = encode(&zaak.url);
        let (rollen, objecten) = tokio::try_join!(
            self.list::<Rol>(
                format!("{}/rollen?zaak={zaak_param}", self.base),
                "rollen",
                &token,
                false
            ),
            self.list::<ZaakObject>(
                format!("{}/zaakobjecten?zaak={zaak_param}", self.base),
                "zaakobjecten",
                &token,
                false
            ),
        )?;
        Ok(Some(Arc::new(to_case(
            &self.opts, zaak, &rollen, &objecten,
        ))))
    }

    /// All results of a paginated list, following `next` links inside the API only.
    async fn list<T: DeserializeOwned>(
        &self,
        first: String,
        what: &'static str,
        token: &str,
        crs: bool,
    ) -> Result<Vec<T>, ZgwError> {
        let mut url = first;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self.get_page(&url, what, token, crs).await?;
            out.extend(page.results);
            match page.next {
                Some(next) if !next.is_empty() => {
                    if !self.origin.contains(&next) {
                        return Err(ZgwError::ForeignLink(crate::model::truncate_for_message(
                            &next,
                        )));
                    }
                    url = next;
                }
                _ => return Ok(out),
            }
        }
        Err(ZgwError::TooManyPages {
            url,
            max: MAX_PAGES,
        })
    }

    async fn get_page<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &'static str,
        token: &str,
        crs: bool,
    ) -> Result<Page<T>, ZgwError> {
        let unreachable = |reason: String| ZgwError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| unreachable("not a valid URL".into()))?;
        let mut req = http::Request::get(uri)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if crs {
            // The spec marks both headers `required: true` on `GET /zaken` (zaakgeometrie).
            req = req
                .header("Accept-Crs", "EPSG:4326")
                .header("Content-Crs", "EPSG:4326");
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| unreachable(one_line(&e)))?;
        if resp.status() != StatusCode::OK {
            return Err(ZgwError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = Limited::new(resp.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .map_err(|e| ZgwError::Shape {
                url: url.to_string(),
                what,
                reason: e.to_string(),
            })?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| ZgwError::Shape {
            url: url.to_string(),
            what,
            reason: e.to_string(),
        })
    }

    /// A ZGW JWT: HS256 with `iss` and `client_id` the client id, and `iat`.
    fn token(&self) -> Result<String, ZgwError> {
        let claims = ZgwClaims {
            iss: &self.opts.client_id,
            iat: Utc::now().timestamp(),
            client_id: &self.opts.client_id,
            user_id: &self.opts.client_id,
            user_representation: "purpose-gate",
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| ZgwError::Token(e.to_string()))
    }
}

impl CaseRegistry for ZgwCases {
    fn lookup<'a>(&'a self, case_id: &'a str) -> CaseFuture<'a> {
        Box::pin(async move { self.find(case_id).await.map_err(CaseRegistryError::from) })
    }
}

/// The error and its sources on one line.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.replace('\n', " ")
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
struct ZgwClaims<'a> {
    iss: &'a str,
    iat: i64,
    client_id: &'a str,
    user_id: &'a str,
    user_representation: &'a str,
}

/// `Paginated…List`: `count`, `next`, `previous`, `results`.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default)]
    next: Option<String>,
    results: Vec<T>,
}

/// The fields of a `Zaak` the gate uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Zaak {
    url: String,
    identificatie: String,
    bronorganisatie: String,
    zaaktype: String,
    startdatum: NaiveDate,
    #[serde(default)]
    einddatum: Option<NaiveDate>,
    #[serde(default)]
    einddatum_gepland: Option<NaiveDate>,
}

/// The fields of a `Rol` the gate uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rol {
    zaak: String,
    betrokkene_type: String,
    omschrijving_generiek: String,
    #[serde(default)]
    betrokkene_identificatie: Option<Value>,
}

/// The fields of a `ZaakObject` the gate uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZaakObject {
    zaak: String,
    object_type: String,
    #[serde(default)]
    object_type_overige: Option<String>,
    #[serde(default)]
    object_identificatie: Option<Value>,
}

fn start_of(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// Maps a zaak, its rollen and zaakobjecten onto a [`Case`] (see the module docs).
fn to_case(opts: &ZgwOptions, zaak: Zaak, rollen: &[Rol], objecten: &[ZaakObject]) -> Case {
    let id = zaak.identificatie;
    let text = |v: &Option<Value>, key: &str| -> Option<String> {
        v.as_ref()?.get(key)?.as_str().map(str::to_string)
    };
    let mut handlers = Vec::new();
    let mut subjects = Vec::new();
    let mut persons = Vec::new();
    for rol in rollen.iter().filter(|r| r.zaak == zaak.url) {
        match rol.betrokkene_type.as_str() {
            "medewerker" if rol.omschrijving_generiek == "behandelaar" => {
                match text(&rol.betrokkene_identificatie, "identificatie") {
                    Some(emp) if !emp.is_empty() => push_new(&mut handlers, emp),
                    _ => {
                        tracing::warn!(case_id = %id, "behandelaar rol without a medewerker identificatie; ignored")
                    }
                }
            }
            "natuurlijk_persoon" => {
                let bsn =
                    text(&rol.betrokkene_identificatie, "inpBsn").filter(|b| Bsn::parse(b).is_ok());
                let named = natural_person(&rol.betrokkene_identificatie, bsn.clone());
                if let Some(p) = named
                    && !persons.contains(&p)
                {
                    persons.push(p);
                }
                match bsn {
                    Some(bsn) => push_new(&mut subjects, bsn),
                    // Rollen without a (valid) BSN name nobody the gate can look up by BSN.
                    None => {
                        tracing::warn!(case_id = %id, "natuurlijk_persoon rol without a valid inpBsn")
                    }
                }
            }
            _ => {}
        }
    }
    let mut vehicles = Vec::new();
    let mut addresses = Vec::new();
    for obj in objecten.iter().filter(|o| o.zaak == zaak.url) {
        if obj.object_type == "adres" {
            match address(obj.object_identificatie.as_ref()) {
                Some(a) if !addresses.contains(&a) => addresses.push(a),
                Some(_) => {}
                None => {
                    tracing::warn!(case_id = %id, "adres zaakobject without a usable address; ignored")
                }
            }
            continue;
        }
        if obj.object_type != "overige"
            || obj.object_type_overige.as_deref() != Some(opts.vehicle_object_type.as_str())
        {
            continue;
        }
        let kenteken = obj
            .object_identificatie
            .as_ref()
            .and_then(|v| v.get("overigeData"))
            .and_then(|v| v.get("kenteken"))
            .and_then(Value::as_str)
            .and_then(|k| Kenteken::parse(k).ok());
        match kenteken {
            Some(k) => push_new(&mut vehicles, k.as_str().to_string()),
            None => {
                tracing::warn!(case_id = %id, "zaakobject without a valid overigeData.kenteken; ignored")
            }
        }
    }
    let case_type = match opts.zaaktypen.get(&zaak.zaaktype) {
        Some(t) => t.clone(),
        None => {
            tracing::warn!(case_id = %id, zaaktype = %zaak.zaaktype, "zaaktype not in `cases.zaaktypen`; case type `unknown`");
            UNKNOWN_CASE_TYPE.to_string()
        }
    };
    let organization = opts
        .organisaties
        .get(&zaak.bronorganisatie)
        .cloned()
        .unwrap_or(zaak.bronorganisatie);
    Case {
        id,
        case_type,
        status: if zaak.einddatum.is_some() {
            CaseStatus::Closed
        } else {
            CaseStatus::Open
        },
        opened: start_of(zaak.startdatum),
        // The window includes the whole planned end day.
        closes: zaak
            .einddatum_gepland
            .and_then(|d| d.checked_add_days(Days::new(1)))
            .map(start_of),
        organization,
        handlers,
        subjects,
        vehicles,
        addresses,
        persons,
        url: Some(zaak.url),
    }
}

/// A natural person's name and birth date from a rol's `betrokkeneIdentificatie`; `None`
/// without a surname or a valid birth date.
fn natural_person(ident: &Option<Value>, bsn: Option<String>) -> Option<CasePerson> {
    let v = ident.as_ref()?;
    let text = |key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let geslachtsnaam = text("geslachtsnaam")?;
    let raw = text("geboortedatum")?;
    // `yyyymmdd` (StUF) or `yyyy-mm-dd`.
    let date = NaiveDate::parse_from_str(&raw, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(&raw, "%Y%m%d"))
        .ok()?;
    Some(CasePerson {
        bsn,
        geslachtsnaam,
        voorvoegsel: text("voorvoegselGeslachtsnaam"),
        voornamen: text("voornamen"),
        geboortedatum: date.format("%Y-%m-%d").to_string(),
    })
}

/// The address of an `adres` zaakobject's `objectIdentificatie` (`ObjectAdres`); `None` when
/// it gives no address a key can be made of.
fn address(ident: Option<&Value>) -> Option<CaseAddress> {
    let v = ident?;
    let text = |key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut a = CaseAddress {
        postcode: text("postcode"),
        huisnummer: v
            .get("huisnummer")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        huisletter: text("huisletter"),
        huisnummertoevoeging: text("huisnummertoevoeging"),
        straat: text("gorOpenbareRuimteNaam"),
        ..CaseAddress::default()
    };
    if let Some(id) = text("identificatie")
        && id.len() == 16
        && id.bytes().all(|b| b.is_ascii_digit())
    {
        a.gemeente = Some(id[..4].to_string());
        match &id[4..6] {
            "20" => a.nummeraanduiding_identificatie = Some(id),
            "01" | "02" | "03" => a.adresseerbaar_object_identificatie = Some(id),
            _ => {}
        }
    }
    (!a.keys().is_empty()).then_some(a)
}

fn push_new(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ZAAK_URL: &str = "https://zaken.example/zaken/api/v1/zaken/1b2c";

    fn opts() -> ZgwOptions {
        ZgwOptions {
            base_url: "https://zaken.example/zaken/api/v1/".into(),
            client_id: "purpose-gate".into(),
            secret: b"test-secret-of-enough-length-0123".to_vec(),
            bronorganisatie: None,
            cache_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            vehicle_object_type: "kenteken".into(),
            zaaktypen: HashMap::from([(
                "https://catalogi.example/zaaktypen/pv".to_string(),
                "parkeervergunning".to_string(),
            )]),
            organisaties: HashMap::from([("002220647".to_string(), "0363".to_string())]),
        }
    }

    fn zaak(v: Value) -> Zaak {
        serde_json::from_value(v).unwrap()
    }

    fn open_zaak() -> Value {
        json!({"url": ZAAK_URL, "uuid": "1b2c", "identificatie": "Z-1", "bronorganisatie": "002220647",
               "zaaktype": "https://catalogi.example/zaaktypen/pv", "startdatum": "2026-11-01",
               "einddatum": null, "einddatumGepland": "2027-01-31", "rollen": [], "zaakobjecten": []})
    }

    fn rollen() -> Vec<Rol> {
        serde_json::from_value(json!([
            {"zaak": ZAAK_URL, "betrokkeneType": "medewerker", "omschrijvingGeneriek": "behandelaar",
             "betrokkeneIdentificatie": {"identificatie": "emp-042"}},
            {"zaak": ZAAK_URL, "betrokkeneType": "medewerker", "omschrijvingGeneriek": "adviseur",
             "betrokkeneIdentificatie": {"identificatie": "emp-900"}},
            {"zaak": ZAAK_URL, "betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "belanghebbende",
             "betrokkeneIdentificatie": {"inpBsn": "999993653"}},
            {"zaak": ZAAK_URL, "betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "initiator",
             "betrokkeneIdentificatie": {"inpBsn": "123456789"}},
            {"zaak": "https://zaken.example/zaken/api/v1/zaken/other", "betrokkeneType": "medewerker",
             "omschrijvingGeneriek": "behandelaar", "betrokkeneIdentificatie": {"identificatie": "emp-666"}}
        ]))
        .unwrap()
    }

    fn objecten() -> Vec<ZaakObject> {
        serde_json::from_value(json!([
            {"zaak": ZAAK_URL, "objectType": "overige", "objectTypeOverige": "kenteken",
             "objectIdentificatie": {"overigeData": {"kenteken": "xx-999-x"}}},
            {"zaak": ZAAK_URL, "objectType": "overige", "objectTypeOverige": "boot",
             "objectIdentificatie": {"overigeData": {"kenteken": "AB123C"}}},
            {"zaak": ZAAK_URL, "objectType": "pand", "objectIdentificatie": {"identificatie": "0363100012345678"}}
        ]))
        .unwrap()
    }

    #[test]
    fn open_zaak_maps_onto_a_case() {
        let case = to_case(&opts(), zaak(open_zaak()), &rollen(), &objecten());
        assert_eq!(case.id, "Z-1");
        assert_eq!(case.case_type, "parkeervergunning");
        assert_eq!(case.status, CaseStatus::Open);
        assert_eq!(case.opened.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(
            case.closes.map(|c| c.to_rfc3339()),
            Some("2027-02-01T00:00:00+00:00".to_string())
        );
        assert_eq!(case.organization, "0363");
        assert_eq!(case.handlers, vec!["emp-042"]);
        assert_eq!(case.subjects, vec!["999993653"]);
        assert_eq!(case.vehicles, vec!["XX999X"]);
        assert_eq!(case.url.as_deref(), Some(ZAAK_URL));
    }

    #[test]
    fn adres_zaakobjecten_and_named_natural_persons_map_onto_addresses_and_persons() {
        let rollen: Vec<Rol> = serde_json::from_value(json!([
            {"zaak": ZAAK_URL, "betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "betrokkene",
             "betrokkeneIdentificatie": {"inpBsn": "999993653", "geslachtsnaam": "Dijk",
               "voorvoegselGeslachtsnaam": "van", "voornamen": "Suzanne", "geboortedatum": "1980-01-01"}},
            {"zaak": ZAAK_URL, "betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "betrokkene",
             "betrokkeneIdentificatie": {"inpBsn": "", "geslachtsnaam": "Jansen", "geboortedatum": "19520719"}},
            {"zaak": ZAAK_URL, "betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "betrokkene",
             "betrokkeneIdentificatie": {"geslachtsnaam": "Zonder", "geboortedatum": "onbekend"}}
        ]))
        .unwrap();
        let objecten: Vec<ZaakObject> = serde_json::from_value(json!([
            {"zaak": ZAAK_URL, "objectType": "adres", "objectIdentificatie": {
                "identificatie": "0363200000502001", "wplWoonplaatsNaam": "Amsterdam",
                "gorOpenbareRuimteNaam": "Herengracht", "huisnummer": 502, "postcode": "1017CB"}},
            {"zaak": ZAAK_URL, "objectType": "adres", "objectIdentificatie": {
                "identificatie": "0363010000088001", "wplWoonplaatsNaam": "Amsterdam",
                "gorOpenbareRuimteNaam": "Javastraat", "huisnummer": 88}},
            {"zaak": ZAAK_URL, "objectType": "adres", "objectIdentificatie": {
                "identificatie": "x", "wplWoonplaatsNaam": "Amsterdam",
                "gorOpenbareRuimteNaam": "Nergens", "huisnummer": 0}},
            {"zaak": "https://zaken.example/zaken/api/v1/zaken/other", "objectType": "adres",
             "objectIdentificatie": {"identificatie": "0363200000999001", "huisnummer": 9, "postcode": "1000AA"}}
        ]))
        .unwrap();
        let case = to_case(&opts(), zaak(open_zaak()), &rollen, &objecten);
        assert_eq!(case.subjects, vec!["999993653"]);
        let persons: Vec<Option<String>> = case.persons.iter().map(CasePerson::key).collect();
        assert_eq!(
            persons,
            vec![
                Some("dijk:1980-01-01".to_string()),
                Some("jansen:1952-07-19".to_string())
            ]
        );
        assert_eq!(case.persons[0].bsn.as_deref(), Some("999993653"));
        let keys: Vec<Vec<String>> = case.addresses.iter().map(CaseAddress::keys).collect();
        assert_eq!(
            keys,
            vec![
                vec![
                    "naid:0363200000502001".to_string(),
                    "postcode:1017CB:502::".into(),
                    "straat:herengracht:502:::0363".into()
                ],
                vec![
                    "aoid:0363010000088001".to_string(),
                    "straat:javastraat:88:::0363".into()
                ],
            ]
        );
    }

    #[test]
    fn zaak_with_einddatum_is_closed_and_without_planned_end_is_open_ended() {
        let mut v = open_zaak();
        v["einddatum"] = json!("2026-11-20");
        v["einddatumGepland"] = Value::Null;
        let case = to_case(&opts(), zaak(v), &[], &[]);
        assert_eq!(case.status, CaseStatus::Closed);
        assert_eq!(case.closes, None);
    }

    #[test]
    fn unmapped_zaaktype_and_rsin_give_unknown_type_and_the_rsin() {
        let mut v = open_zaak();
        v["zaaktype"] = json!("https://catalogi.example/zaaktypen/geheim");
        v["bronorganisatie"] = json!("999993653");
        let case = to_case(&opts(), zaak(v), &[], &[]);
        assert_eq!(case.case_type, UNKNOWN_CASE_TYPE);
        assert_eq!(case.organization, "999993653");
    }

    #[test]
    fn rollen_of_another_zaak_are_ignored() {
        let case = to_case(&opts(), zaak(open_zaak()), &rollen(), &[]);
        assert!(!case.handlers.contains(&"emp-666".to_string()));
    }

    #[test]
    fn next_links_must_stay_inside_the_configured_api() {
        let o = Origin::of("https://zaken.example/zaken/api/v1").unwrap();
        assert!(o.contains("https://zaken.example/zaken/api/v1/rollen?page=2"));
        assert!(o.contains("https://ZAKEN.example:443/zaken/api/v1/rollen?page=2"));
        assert!(!o.contains("http://zaken.example/zaken/api/v1/rollen?page=2"));
        assert!(!o.contains("https://evil.example/zaken/api/v1/rollen?page=2"));
        assert!(!o.contains("https://zaken.example:8443/zaken/api/v1/rollen?page=2"));
        assert!(!o.contains("https://zaken.example/zaken/api/v10/rollen"));
        assert!(!o.contains("https://user@zaken.example/zaken/api/v1/rollen"));
        assert!(!o.contains("/zaken/api/v1/rollen?page=2"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("Z-2026.1_~"), "Z-2026.1_~");
        assert_eq!(
            encode("https://z.example/a?b=c&d"),
            "https%3A%2F%2Fz.example%2Fa%3Fb%3Dc%26d"
        );
    }

    #[tokio::test]
    async fn jwt_is_hs256_with_client_id_and_issuer() {
        let reg = ZgwCases::new(opts()).unwrap();
        let token = reg.token().unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims = ["iss".to_string()].into();
        v.validate_exp = false;
        v.set_issuer(&["purpose-gate"]);
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"test-secret-of-enough-length-0123"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["client_id"], "purpose-gate");
        assert!(data.claims["iat"].as_i64().unwrap() > 0);
    }

    #[tokio::test]
    async fn freshness_follows_the_positive_and_negative_ttls_and_errors_are_never_fresh() {
        let reg = ZgwCases::new(opts()).unwrap();
        let t0 = Instant::now();
        let case = Arc::new(to_case(&opts(), zaak(open_zaak()), &[], &[]));
        let found = Fetched {
            result: Ok(Some(case)),
            started: t0,
        };
        let missing = Fetched {
            result: Ok(None),
            started: t0,
        };
        let failed = Fetched {
            result: Err(ZgwError::Timeout(1)),
            started: t0,
        };
        assert!(reg.fresh(&found, t0 + Duration::from_secs(29)));
        assert!(!reg.fresh(&found, t0 + Duration::from_secs(30)));
        assert!(reg.fresh(&missing, t0 + Duration::from_secs(4)));
        assert!(!reg.fresh(&missing, t0 + Duration::from_secs(5)));
        assert!(!reg.fresh(&failed, t0));
    }

    #[tokio::test]
    async fn a_stale_slot_is_replaced_and_a_fresh_one_shared() {
        let reg = ZgwCases::new(opts()).unwrap();
        let t0 = Instant::now();
        let a = reg.slot("Z-1", t0);
        let b = reg.slot("Z-1", t0);
        assert!(Arc::ptr_eq(&a, &b), "an unfinished fetch is joined");
        let _ = a.cell.set(Fetched {
            result: Ok(None),
            started: t0,
        });
        assert!(Arc::ptr_eq(
            &a,
            &reg.slot("Z-1", t0 + Duration::from_secs(1))
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &reg.slot("Z-1", t0 + Duration::from_secs(6))
        ));
    }

    #[test]
    fn bad_base_url_is_refused() {
        let mut o = opts();
        o.base_url = "ftp://zaken.example".into();
        assert!(matches!(ZgwCases::new(o), Err(ZgwSetupError::Url(_))));
    }
}
