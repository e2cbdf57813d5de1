//! Resource: which data subjects a request is about, and which fields it asks for.
//!
//! The Haal Centraal BRP Personen body is parsed strictly (duplicate keys, trailing data,
//! wrong types and invalid BSNs are refused) so that the gate never decides on one reading
//! of a body while the upstream acts on another; the upstream gets exactly the bytes decided on.
//!
//! Guarantees for an accepted BRP body (spec: Haal Centraal BRP Personen API 2.7.0,
//! `PersonenQuery`): it is valid UTF-8 holding exactly one JSON object, nested at most
//! [`MAX_DEPTH`] levels, with no duplicate key in any object (compared after unescaping, so
//! `"ty\u0070e"` repeats `"type"`); `type` is one of the seven query types; every other key is
//! one the spec defines for that type, with the spec's JSON type and pattern (`postcode`,
//! `huisnummer`, `geslachtsnaam` wildcards, ...); the type's required keys are present;
//! `fields` holds 1 to 130 dot-paths (`naam.voornamen`); for `RaadpleegMetBurgerservicenummer`,
//! `burgerservicenummer` holds 1 to 20 distinct BSNs that pass the 11-proef.
//!
//! Path routes: the `{kenteken}` parameter is normalised (`xx-999-x` → `XX999X`) and the
//! `{bsn}` parameter checked; the upstream path is filled with the normalised value only.
//!
//! Refused (400): everything else. Messages name the key (in backticks) or the array index,
//! and do not repeat the values, which are personal data.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::config::RouteConfig;
use crate::model::{Action, Bsn, BsnError, Kenteken, Resource, Search, SearchKind, keys};
use crate::routes::{RouteMatch, fill_template, shown};

/// Deepest nesting of arrays and objects accepted in a BRP body (the top-level object is 1).
pub const MAX_DEPTH: usize = 16;
/// Most entries in `fields` (spec: `maxItems: 130`).
pub const MAX_FIELDS: usize = 130;
/// Most BSNs in one `RaadpleegMetBurgerservicenummer` query (spec: `maxItems: 20`).
pub const MAX_BSNS: usize = 20;
/// Longest field path (spec: `Field` pattern `{1,200}`).
const MAX_FIELD_LEN: usize = 200;
/// Most items in any array while parsing; larger arrays are refused before they are built.
const MAX_ARRAY_ITEMS: usize = 256;
/// Most keys in any object while parsing.
const MAX_OBJECT_KEYS: usize = 64;

/// Why the request does not name its subjects properly (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidBsn(String),
    #[error("{0}")]
    InvalidKenteken(String),
}

impl ResourceError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ResourceError::InvalidBody(_) => "invalidBody",
            ResourceError::InvalidBsn(_) => "invalidBsn",
            ResourceError::InvalidKenteken(_) => "invalidKenteken",
        }
    }
}

/// The subjects of one request: one Cedar decision per resource, all must allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    pub action: Action,
    pub resources: Vec<Resource>,
    /// Requested fields (BRP `fields`, duplicates removed, in request order), empty for other
    /// routes.
    pub fields: Vec<String>,
    /// Normalised path parameters for the route's `upstream_path` (e.g. `kenteken` =
    /// `XX999X`); empty for BRP routes.
    pub upstream_params: Vec<(String, String)>,
    /// A BRP search: what it looks for (for `context.search`).
    pub search: Option<Search>,
    /// The body to send upstream when it differs from the client's: the same query with the
    /// [`release_fields`] the answer must hold added to `fields`.
    pub upstream_body: Option<Vec<u8>>,
}

impl Subjects {
    /// The path to request at the upstream: the route's `upstream_path` filled with the
    /// normalised parameters (never with the raw request path).
    pub fn upstream_path(&self, route: &RouteConfig) -> String {
        fill_template(&route.upstream_path, &self.upstream_params)
    }
}

/// The query type that looks persons up by BSN; all others are searches.
const RAADPLEEG: &str = "RaadpleegMetBurgerservicenummer";

/// The JSON type and pattern of a query parameter, as the spec defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `InclusiefOverledenPersonen`: boolean.
    Bool,
    /// `DatumFilter`: `format: date`.
    Date,
    /// `GeslachtsnaamFilter` and `VoornamenVerplichtFilter` (same pattern).
    NameWithWildcard,
    /// `VoornamenOptioneelFilter`.
    VoornamenOptioneel,
    /// `GeslachtFilter`.
    Geslacht,
    /// `VoorvoegselFilter`.
    Voorvoegsel,
    /// `Huisletter`.
    Huisletter,
    /// `Huisnummer`: integer 1..=99999.
    Huisnummer,
    /// `Huisnummertoevoeging`.
    Huisnummertoevoeging,
    /// `Postcode`.
    Postcode,
    /// `StraatFilter`.
    Straat,
    /// `NummeraanduidingIdentificatieFilter`, `AdresseerbaarObjectIdentificatieFilter`.
    BagId,
    /// `GemeenteVanInschrijving`.
    Gemeente,
    /// `burgerservicenummer`: checked by [`parse_bsns`].
    Bsns,
}

impl Kind {
    /// What a value must be, for messages.
    fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "`true` or `false`",
            Kind::Date => "a date `yyyy-mm-dd`",
            Kind::NameWithWildcard => {
                "a string of 1 to 200 letters, or of 3 to 199 letters followed by `*`"
            }
            Kind::VoornamenOptioneel => "a string of 1 to 199 letters, optionally followed by `*`",
            Kind::Geslacht => "`M`, `V` or `O`",
            Kind::Voorvoegsel => "a string of 1 to 10 letters, spaces or `'`",
            Kind::Huisletter => "a single letter",
            Kind::Huisnummer => "an integer from 1 to 99999",
            Kind::Huisnummertoevoeging => "a string of 1 to 4 letters, digits, spaces or `-`",
            Kind::Postcode => "a postcode such as `1234AB` or `1234 AB`",
            Kind::Straat => {
                "a street name of 1 to 80 characters, or of 7 to 79 with a leading or trailing `*`"
            }
            Kind::BagId => "a string of 16 digits, not all zero",
            Kind::Gemeente => "a 4-digit municipality code",
            Kind::Bsns => "an array of 1 to 20 BSN strings",
        }
    }

    /// Whether `v` has this kind's JSON type and matches its pattern.
    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Huisnummer, Value::Number(n)) => {
                n.as_u64().is_some_and(|n| (1..=99_999).contains(&n))
            }
            (Kind::Bsns, Value::Array(_)) => true,
            (_, Value::String(s)) => self.accepts_str(s),
            _ => false,
        }
    }

    /// The spec's pattern for string kinds.
    fn accepts_str(self, s: &str) -> bool {
        match self {
            Kind::Date => is_date(s),
            Kind::NameWithWildcard => wildcard_text(s, (1, 200), Some((3, 199)), None),
            Kind::VoornamenOptioneel => wildcard_text(s, (1, 199), Some((1, 199)), None),
            Kind::Geslacht => matches!(s, "M" | "m" | "V" | "v" | "O" | "o"),
            Kind::Voorvoegsel => {
                (1..=10).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphabetic() || c == ' ' || c == '\'')
            }
            Kind::Huisletter => s.len() == 1 && s.chars().all(|c| c.is_ascii_alphabetic()),
            Kind::Huisnummertoevoeging => {
                (1..=4).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
            }
            Kind::Postcode => is_postcode(s),
            Kind::Straat => wildcard_text(s, (1, 80), Some((7, 79)), Some((7, 79))),
            Kind::BagId => {
                s.len() == 16
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && s.bytes().any(|b| b != b'0')
            }
            Kind::Gemeente => s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()),
            Kind::Bool | Kind::Huisnummer | Kind::Bsns => false,
        }
    }
}

/// The character class `[a-zA-Z0-9À-ž \.\-\']` of the spec's name and street patterns.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || ('\u{C0}'..='\u{17E}').contains(&c)
        || matches!(c, ' ' | '.' | '-' | '\'')
}

/// `^N{plain}$ | ^N{trailing}\*$ | ^\*N{leading}$` over [`is_name_char`], lengths in characters.
fn wildcard_text(
    s: &str,
    plain: (usize, usize),
    trailing: Option<(usize, usize)>,
    leading: Option<(usize, usize)>,
) -> bool {
    let fits = |t: &str, (min, max): (usize, usize)| {
        let n = t.chars().count();
        (min..=max).contains(&n) && t.chars().all(is_name_char)
    };
    if fits(s, plain) {
        return true;
    }
    if let (Some(r), Some(t)) = (trailing, s.strip_suffix('*'))
        && fits(t, r)
    {
        return true;
    }
    if let (Some(r), Some(t)) = (leading, s.strip_prefix('*'))
        && fits(t, r)
    {
        return true;
    }
    false
}

/// `^[1-9][0-9]{3}[ ]?[A-Za-z]{2}$`
fn is_postcode(s: &str) -> bool {
    let b = s.as_bytes();
    let (digits, rest) = match b.len() {
        6 => (&b[..4], &b[4..]),
        7 if b[4] == b' ' => (&b[..4], &b[5..]),
        _ => return false,
    };
    digits[0] != b'0'
        && digits.iter().all(u8::is_ascii_digit)
        && rest.iter().all(u8::is_ascii_alphabetic)
}

/// An RFC 3339 `full-date` (`yyyy-mm-dd`) that exists in the calendar.
pub(crate) fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// One parameter a query type accepts.
#[derive(Debug, Clone, Copy)]
struct Param {
    key: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(key: &'static str, kind: Kind) -> Param {
    Param {
        key,
        kind,
        required: true,
    }
}

const fn opt(key: &'static str, kind: Kind) -> Param {
    Param {
        key,
        kind,
        required: false,
    }
}

/// The `PersonenQuery` types and their parameters besides `type` and `fields`
/// (`gemeenteVanInschrijving` is defined on `PersonenQuery` itself, so every type takes it).
const QUERY_TYPES: &[(&str, &[Param])] = &[
    (
        RAADPLEEG,
        &[
            req("burgerservicenummer", Kind::Bsns),
            opt("gemeenteVanInschrijving", Kind::Gemeente),
        ],
    ),
    (
        "ZoekMetGeslachtsnaamEnGeboortedatum",
        &[
            req("geslachtsnaam", Kind::NameWithWildcard),
            req("geboortedatum", Kind::Date),
            opt("inclusiefOverledenPersonen", Kind::Bool),
            opt("geslacht", Kind::Geslacht),
            opt("voorvoegsel", Kind::Voorvoegsel),
            opt("voornamen", Kind::VoornamenOptioneel),
            opt("gemeenteVanInschrijving", Kind::Gemeente),
        ],
    ),
    (
        "ZoekMetNaamEnGemeenteVanInschrijving",
        &[
            req("geslachtsnaam", Kind::NameWithWildcard),
            req("voornamen", Kind::NameWithWildcard),
            req("gemeenteVanInschrijving", Kind::Gemeente),
            opt("inclusiefOverledenPersonen", Kind::Bool),
            opt("geslacht", Kind::Geslacht),
            opt("voorvoegsel", Kind::Voorvoegsel),
        ],
    ),
    (
        "ZoekMetPostcodeEnHuisnummer",
        &[
            req("postcode", Kind::Postcode),
            req("huisnummer", Kind::Huisnummer),
            opt("inclusiefOverledenPersonen", Kind::Bool),
            opt("huisletter", Kind::Huisletter),
            opt("huisnummertoevoeging", Kind::Huisnummertoevoeging),
            opt("geboortedatum", Kind::Date),
            opt("geslachtsnaam", Kind::NameWithWildcard),
            opt("gemeenteVanInschrijving", Kind::Gemeente),
        ],
    ),
    (
        "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving",
        &[
            req("straat", Kind::Straat),
            req("huisnummer", Kind::Huisnummer),
            req("gemeenteVanInschrijving", Kind::Gemeente),
            opt("inclusiefOverledenPersonen", Kind::Bool),
            opt("huisletter", Kind::Huisletter),
            opt("huisnummertoevoeging", Kind::Huisnummertoevoeging),
        ],
    ),
    (
        "ZoekMetNummeraanduidingIdentificatie",
        &[
            req("nummeraanduidingIdentificatie", Kind::BagId),
            opt("inclusiefOverledenPersonen", Kind::Bool),
            opt("gemeenteVanInschrijving", Kind::Gemeente),
        ],
    ),
    (
        "ZoekMetAdresseerbaarObjectIdentificatie",
        &[
            req("adresseerbaarObjectIdentificatie", Kind::BagId),
            opt("inclusiefOverledenPersonen", Kind::Bool),
            opt("gemeenteVanInschrijving", Kind::Gemeente),
        ],
    ),
];

fn invalid(msg: impl Into<String>) -> ResourceError {
    ResourceError::InvalidBody(msg.into())
}

/// Parses a Haal Centraal BRP Personen query body.
pub fn parse_brp_body(body: &[u8]) -> Result<Subjects, ResourceError> {
    let obj = parse_strict_object(body)?;

    let query_type = match obj.get("type") {
        None => return Err(invalid("missing key `type`: the query type")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid("`type` must be a string")),
    };
    let Some((query_type, params)) = QUERY_TYPES.iter().find(|(t, _)| *t == query_type) else {
        let known: Vec<String> = QUERY_TYPES.iter().map(|(t, _)| format!("`{t}`")).collect();
        return Err(invalid(format!(
            "`type` `{}` is not a query type: expected one of {}",
            shown(query_type),
            known.join(", ")
        )));
    };

    // INVARIANT: after this loop every key is `type`, `fields` or a parameter of this query
    // type with a valid value, so no data the gate did not check reaches the upstream.
    for (key, value) in &obj {
        if key == "type" || key == "fields" {
            continue;
        }
        let Some(p) = params.iter().find(|p| p.key == key) else {
            return Err(invalid(format!(
                "unknown key `{}` for query type `{query_type}`",
                shown(key)
            )));
        };
        if !p.kind.accepts(value) {
            return Err(invalid(format!(
                "`{}` must be {}",
                p.key,
                p.kind.expected()
            )));
        }
    }
    if let Some(p) = params
        .iter()
        .find(|p| p.required && !obj.contains_key(p.key))
    {
        return Err(invalid(format!(
            "missing key `{}`: query type `{query_type}` requires it",
            p.key
        )));
    }

    let fields = parse_fields(obj.get("fields"))?;

    if *query_type == RAADPLEEG {
        let bsns = parse_bsns(obj.get("burgerservicenummer"))?;
        let upstream_body = with_release_fields(obj, &fields, release_fields(None))?;
        Ok(Subjects {
            action: Action::BRP_LOOKUP,
            resources: bsns.into_iter().map(Resource::Person).collect(),
            fields,
            upstream_params: Vec::new(),
            search: None,
            upstream_body,
        })
    } else {
        let search = search_of(query_type, &obj);
        let upstream_body = with_release_fields(obj, &fields, release_fields(Some(search.kind)))?;
        Ok(Subjects {
            action: Action::BRP_SEARCH,
            resources: vec![Resource::PersonSearch((*query_type).to_string())],
            fields,
            upstream_params: Vec::new(),
            search: Some(search),
            upstream_body,
        })
    }
}

/// The fields a BRP answer must hold for the release decision of each person in it, beside
/// what the employee asked: the BSN (who the person is) and, for searches, the surname and
/// birth date (a name search) or the address lines (an address search). They are asked from
/// the registry and removed again by minimisation unless the employee asked for them.
/// (`geheimhoudingPersoonsgegevens` the registry returns unasked.)
pub fn release_fields(search: Option<SearchKind>) -> &'static [&'static str] {
    match search {
        None => &["burgerservicenummer"],
        Some(SearchKind::Name) => &[
            "burgerservicenummer",
            "naam.geslachtsnaam",
            "geboorte.datum",
        ],
        Some(SearchKind::Address) => &[
            "burgerservicenummer",
            "adressering.adresregel1",
            "adressering.adresregel2",
        ],
    }
}

/// The body with `extra` added to `fields` where neither the path nor one of its ancestors is
/// asked already, within the spec's 130 entries; `None` when nothing is added. The body was
/// checked to be exactly one object without duplicate keys, so re-serialising it keeps its
/// meaning (member order and escapes may differ).
fn with_release_fields(
    mut obj: Map<String, Value>,
    fields: &[String],
    extra: &[&str],
) -> Result<Option<Vec<u8>>, ResourceError> {
    let covered = |path: &str| {
        fields.iter().any(|f| {
            f == path
                || (path.starts_with(f.as_str()) && path.as_bytes().get(f.len()) == Some(&b'.'))
        })
    };
    let missing: Vec<&str> = extra.iter().copied().filter(|p| !covered(p)).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let Some(Value::Array(list)) = obj.get_mut("fields") else {
        return Ok(None);
    };
    for p in missing {
        if list.len() >= MAX_FIELDS {
            break;
        }
        list.push(Value::String(p.to_string()));
    }
    serde_json::to_vec(&obj)
        .map(Some)
        .map_err(|e| invalid(format!("the query could not be re-encoded: {e}")))
}

/// What a search looks for: its kind, and the key of the searched address.
fn search_of(query_type: &str, obj: &Map<String, Value>) -> Search {
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let number = || {
        obj.get("huisnummer")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let key = match query_type {
        "ZoekMetPostcodeEnHuisnummer" => text("postcode").zip(number()).and_then(|(pc, nr)| {
            keys::postcode(pc, nr, text("huisletter"), text("huisnummertoevoeging"))
        }),
        "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving" => {
            match (text("straat"), number(), text("gemeenteVanInschrijving")) {
                (Some(straat), Some(nr), Some(gemeente)) => keys::straat(
                    straat,
                    nr,
                    text("huisletter"),
                    text("huisnummertoevoeging"),
                    gemeente,
                ),
                _ => None,
            }
        }
        "ZoekMetNummeraanduidingIdentificatie" => {
            text("nummeraanduidingIdentificatie").and_then(keys::nummeraanduiding)
        }
        "ZoekMetAdresseerbaarObjectIdentificatie" => {
            text("adresseerbaarObjectIdentificatie").and_then(keys::adresseerbaar_object)
        }
        _ => {
            return Search {
                kind: SearchKind::Name,
                addresses: Vec::new(),
            };
        }
    };
    Search {
        kind: SearchKind::Address,
        addresses: key.into_iter().collect(),
    }
}

/// `fields`: 1 to 130 dot-paths of `[a-zA-Z][a-zA-Z0-9]*` segments, at most 200 characters
/// (the spec's `Field` pattern `^[a-zA-Z0-9\._]{1,200}$`, narrowed to the shape of the field
/// names the spec defines, e.g. `verblijfplaats.verblijfadres.regel1`). The spec does not
/// require unique items, so a repeated path is accepted and listed once.
fn parse_fields(v: Option<&Value>) -> Result<Vec<String>, ResourceError> {
    let expected = || {
        invalid(format!(
            "`fields` must be an array of 1 to {MAX_FIELDS} field paths"
        ))
    };
    let items = match v {
        None => return Err(invalid("missing key `fields`: the fields to return")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(expected()),
    };
    if items.is_empty() || items.len() > MAX_FIELDS {
        return Err(expected());
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if is_field_path(s) => {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            _ => {
                return Err(invalid(format!(
                    "`fields[{i}]` must be a field path such as `naam.voornamen`"
                )));
            }
        }
    }
    Ok(out)
}

fn is_field_path(s: &str) -> bool {
    (1..=MAX_FIELD_LEN).contains(&s.len())
        && s.split('.').all(|seg| {
            let mut b = seg.bytes();
            b.next().is_some_and(|c| c.is_ascii_alphabetic())
                && b.all(|c| c.is_ascii_alphanumeric())
        })
}

/// `burgerservicenummer`: 1 to 20 distinct strings, each a BSN passing the 11-proef.
fn parse_bsns(v: Option<&Value>) -> Result<Vec<Bsn>, ResourceError> {
    let Some(Value::Array(items)) = v else {
        return Err(invalid(format!(
            "`burgerservicenummer` must be {}",
            Kind::Bsns.expected()
        )));
    };
    if items.is_empty() || items.len() > MAX_BSNS {
        return Err(invalid(format!(
            "`burgerservicenummer` must be {}",
            Kind::Bsns.expected()
        )));
    }
    let mut out: Vec<Bsn> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(invalid(format!(
                "`burgerservicenummer[{i}]` must be a string"
            )));
        };
        let bsn = Bsn::parse(s).map_err(|e| {
            let why = match e {
                BsnError::Shape(_) => "a BSN has exactly 9 digits",
                BsnError::Checksum(_) => "it fails the 11-proef",
            };
            ResourceError::InvalidBsn(format!(
                "`burgerservicenummer[{i}]` is not a valid BSN: {why}"
            ))
        })?;
        if out.contains(&bsn) {
            return Err(invalid(format!(
                "`burgerservicenummer[{i}]` repeats an earlier BSN"
            )));
        }
        out.push(bsn);
    }
    Ok(out)
}

/// The subjects of a path route: the normalised `{kenteken}` or the checked `{bsn}`.
pub fn subjects_for_path(
    route: &RouteConfig,
    m: &RouteMatch<'_>,
) -> Result<Subjects, ResourceError> {
    // INVARIANT: `RouteTable::new` accepted `route`, so a path route has exactly the parameter
    // of its kind and an action that fits it; the errors below are the fail-closed fallback.
    let Some(action) = route.action else {
        return Err(invalid("this route has no cedar action configured"));
    };
    match route.kind.as_str() {
        "kenteken" => {
            let raw = m.param("kenteken").ok_or_else(|| {
                ResourceError::InvalidKenteken("the path names no kenteken".into())
            })?;
            let k = Kenteken::parse(raw).map_err(|_| {
                ResourceError::InvalidKenteken(format!(
                    "`{}` is not a kenteken: expected 6 letters or digits, hyphens allowed",
                    shown(raw)
                ))
            })?;
            Ok(Subjects {
                action,
                upstream_params: vec![("kenteken".into(), k.as_str().into())],
                resources: vec![Resource::Vehicle(k)],
                fields: Vec::new(),
                search: None,
                upstream_body: None,
            })
        }
        "bsn" => {
            let raw = m
                .param("bsn")
                .ok_or_else(|| ResourceError::InvalidBsn("the path names no BSN".into()))?;
            let bsn = Bsn::parse(raw).map_err(|e| {
                let why = match e {
                    BsnError::Shape(_) => "a BSN has exactly 9 digits",
                    BsnError::Checksum(_) => "it fails the 11-proef",
                };
                ResourceError::InvalidBsn(format!("the BSN in the path is not valid: {why}"))
            })?;
            Ok(Subjects {
                action,
                upstream_params: vec![("bsn".into(), bsn.as_str().into())],
                resources: vec![Resource::Person(bsn)],
                fields: Vec::new(),
                search: None,
                upstream_body: None,
            })
        }
        _ => Err(invalid(
            "this route takes its subjects from the body, not the path",
        )),
    }
}

/// Parses `body` as exactly one JSON object, refusing invalid UTF-8, duplicate keys at any
/// level, nesting deeper than [`MAX_DEPTH`], oversized arrays and objects, and trailing data.
pub(crate) fn parse_strict_object(body: &[u8]) -> Result<Map<String, Value>, ResourceError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        invalid(format!(
            "the body is not valid utf-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
        return Err(invalid("the body is empty: expected a json object"));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue { depth: 1 }
        .deserialize(&mut de)
        .map_err(json_error)?;
    de.end().map_err(json_error)?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(invalid("the body must be a json object")),
    }
}

/// One-line, lowercase message for a JSON error (position included, input not repeated).
fn json_error(e: serde_json::Error) -> ResourceError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => invalid(format!(
            "the body is incomplete json (ends at line {}, column {})",
            e.line(),
            e.column()
        )),
        Category::Syntax => invalid(format!("the body is not valid json: {e}")),
        // Only `StrictValue` raises data errors; its messages are written for clients.
        Category::Data => invalid(e.to_string()),
        Category::Io => invalid("the body could not be read"),
    }
}

/// Builds a [`Value`] like `serde_json` does, but refuses duplicate keys, deep nesting and
/// oversized containers instead of silently keeping the last duplicate.
struct StrictValue {
    depth: usize,
}

impl StrictValue {
    fn child(&self) -> StrictValue {
        StrictValue {
            depth: self.depth + 1,
        }
    }

    fn check_depth<E: de::Error>(&self) -> Result<(), E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format!(
                "the body nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number in the body is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.check_depth()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            if out.len() >= MAX_ARRAY_ITEMS {
                return Err(de::Error::custom(format!(
                    "an array in the body has more than {MAX_ARRAY_ITEMS} items"
                )));
            }
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.check_depth()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key `{}`",
                    shown(&key)
                )));
            }
            if out.len() >= MAX_OBJECT_KEYS {
                return Err(de::Error::custom(format!(
                    "an object in the body has more than {MAX_OBJECT_KEYS} keys"
                )));
            }
            let v = map.next_value_seed(self.child())?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use http::{Method, Uri};

    use super::*;
    use crate::config::RouteKind;
    use crate::model::Action;
    use crate::routes::RouteTable;

    const GOOD: &str = r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam","verblijfplaats.verblijfadres.regel1"],"burgerservicenummer":["999993653","999990639"]}"#;

    fn body_err(body: &str) -> ResourceError {
        match parse_brp_body(body.as_bytes()) {
            Ok(s) => panic!("accepted {body}: {s:?}"),
            Err(e) => e,
        }
    }

    /// Asserts `body` is refused as an invalid body whose message contains `want`.
    fn refused(body: &str, want: &str) {
        let e = body_err(body);
        assert_eq!(e.code(), "invalidBody", "{body}: {e}");
        let m = e.to_string();
        assert!(m.contains(want), "{body}: `{m}` lacks `{want}`");
        assert!(!m.contains('\n') && !m.ends_with('.'), "{m}");
    }

    fn raadpleeg(extra: &str) -> String {
        format!(
            r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":["999993653"]{extra}}}"#
        )
    }

    #[test]
    fn good_raadpleeg_body_gives_one_person_per_bsn() {
        let s = parse_brp_body(GOOD.as_bytes()).unwrap();
        assert_eq!(s.action, Action::BRP_LOOKUP);
        assert_eq!(
            s.resources,
            vec![
                Resource::Person(Bsn::parse("999993653").unwrap()),
                Resource::Person(Bsn::parse("999990639").unwrap()),
            ]
        );
        assert_eq!(
            s.fields,
            vec!["naam", "verblijfplaats.verblijfadres.regel1"]
        );
        assert!(s.upstream_params.is_empty());
    }

    #[test]
    fn raadpleeg_accepts_gemeente_van_inschrijving_from_the_base_query() {
        let s =
            parse_brp_body(raadpleeg(r#","gemeenteVanInschrijving":"0363""#).as_bytes()).unwrap();
        assert_eq!(s.resources.len(), 1);
        refused(
            &raadpleeg(r#","gemeenteVanInschrijving":"363""#),
            "`gemeenteVanInschrijving` must be a 4-digit municipality code",
        );
    }

    #[test]
    fn duplicate_type_is_refused() {
        refused(
            r#"{"type":"ZoekMetPostcodeEnHuisnummer","type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":["999993653"]}"#,
            "duplicate key `type`",
        );
    }

    #[test]
    fn duplicate_key_written_with_an_escape_is_refused() {
        refused(
            &raadpleeg(r#","ty\u0070e":"ZoekMetPostcodeEnHuisnummer""#),
            "duplicate key `type`",
        );
    }

    #[test]
    fn duplicate_burgerservicenummer_key_is_refused() {
        refused(
            &raadpleeg(r#","burgerservicenummer":["999990639"]"#),
            "duplicate key `burgerservicenummer`",
        );
    }

    #[test]
    fn repeated_bsn_in_the_list_is_refused() {
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":["999993653","999990639","999993653"]}"#,
            "`burgerservicenummer[2]` repeats an earlier BSN",
        );
    }

    #[test]
    fn duplicate_nested_key_is_refused() {
        // The nested object is refused while parsing, before the unknown-key check.
        refused(
            &raadpleeg(r#","x":{"a":1,"b":{"c":1,"c":2}}"#),
            "duplicate key `c`",
        );
        refused(
            &raadpleeg(r#","x":[{"a":1},{"a":1,"a":1}]"#),
            "duplicate key `a`",
        );
    }

    #[test]
    fn non_utf8_body_is_refused() {
        let mut body = GOOD.as_bytes().to_vec();
        body[30] = 0xff;
        let e = parse_brp_body(&body).unwrap_err();
        assert_eq!(
            e,
            ResourceError::InvalidBody("the body is not valid utf-8 (at byte 30)".into())
        );
        let overlong = b"{\"type\":\"Raadpleeg\xc0\xae\"}";
        assert!(
            parse_brp_body(overlong)
                .unwrap_err()
                .to_string()
                .contains("utf-8")
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = |n: usize| raadpleeg(&format!(r#","x":{}{}"#, "[".repeat(n), "]".repeat(n)));
        // The top-level object is level 1, so 15 arrays inside it are the deepest accepted
        // nesting; the unknown key `x` is what refuses that body.
        refused(&deep(MAX_DEPTH - 1), "unknown key `x`");
        refused(&deep(MAX_DEPTH), "nests deeper than 16 levels");
        refused(&deep(100_000), "nests deeper than 16 levels");
        let objects = format!("{}{}", r#"{"a":"#.repeat(50), "}".repeat(50));
        refused(&objects, "nests deeper");
    }

    #[test]
    fn huge_arrays_are_refused() {
        let many = vec!["1"; 100_000].join(",");
        refused(
            &raadpleeg(&format!(r#","x":[{many}]"#)),
            "more than 256 items",
        );
        let fields = vec!["\"naam\""; MAX_FIELDS + 1].join(",");
        refused(
            &format!(
                r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":[{fields}],"burgerservicenummer":["999993653"]}}"#
            ),
            "`fields` must be an array of 1 to 130 field paths",
        );
        let keys: Vec<String> = (0..100).map(|i| format!(r#""k{i}":1"#)).collect();
        refused(&format!("{{{}}}", keys.join(",")), "more than 64 keys");
    }

    #[test]
    fn twenty_bsns_are_accepted_and_twenty_one_refused() {
        let valid: Vec<String> = (0..1_000_000u32)
            .map(|i| format!("{:09}", 100_000_000 + i))
            .filter(|s| Bsn::parse(s).is_ok())
            .take(21)
            .collect();
        let list = |n: usize| {
            let quoted: Vec<String> = valid[..n].iter().map(|b| format!("\"{b}\"")).collect();
            format!(
                r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":[{}]}}"#,
                quoted.join(",")
            )
        };
        let s = parse_brp_body(list(20).as_bytes()).unwrap();
        assert_eq!(s.resources.len(), 20);
        refused(
            &list(21),
            "`burgerservicenummer` must be an array of 1 to 20 BSN strings",
        );
        refused(
            &list(0),
            "`burgerservicenummer` must be an array of 1 to 20 BSN strings",
        );
    }

    #[test]
    fn invalid_bsn_is_refused_with_its_index() {
        let e = body_err(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":["999993653","999993654"]}"#,
        );
        assert_eq!(e.code(), "invalidBsn");
        assert_eq!(
            e.to_string(),
            "`burgerservicenummer[1]` is not a valid BSN: it fails the 11-proef"
        );
        for bad in [
            "12345678",
            "99999365a",
            "٩٩٩٩٩٣٦٥٣",
            " 999993653",
            "000000000",
        ] {
            let body = format!(
                r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":["{bad}"]}}"#
            );
            assert_eq!(body_err(&body).code(), "invalidBsn", "{bad}");
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        refused(&format!("{GOOD}x"), "trailing characters");
        refused(&format!("{GOOD}{GOOD}"), "trailing characters");
        refused(&format!("{GOOD},"), "trailing characters");
        refused(&format!("{GOOD}\u{0}"), "not valid json");
        // Whitespace after the object is not data.
        assert!(parse_brp_body(format!("{GOOD} \r\n").as_bytes()).is_ok());
    }

    #[test]
    fn non_json_and_non_object_bodies_are_refused() {
        refused("", "the body is empty");
        refused("  \n", "the body is empty");
        refused(&format!("\u{feff}{GOOD}"), "not valid json");
        refused(&format!("[{GOOD}]"), "must be a json object");
        refused(
            "\"RaadpleegMetBurgerservicenummer\"",
            "must be a json object",
        );
        refused("null", "must be a json object");
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer""#,
            "incomplete json",
        );
        refused(
            r#"{"type":'RaadpleegMetBurgerservicenummer'}"#,
            "not valid json",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer",}"#,
            "not valid json",
        );
        refused(r#"{"type":"\ud800"}"#, "not valid json");
    }

    #[test]
    fn wrong_types_are_refused() {
        refused(r#"{"type":1,"fields":["naam"]}"#, "`type` must be a string");
        refused(
            r#"{"type":["RaadpleegMetBurgerservicenummer"],"fields":["naam"]}"#,
            "`type` must be a string",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":"naam","burgerservicenummer":["999993653"]}"#,
            "`fields` must be an array",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam",1],"burgerservicenummer":["999993653"]}"#,
            "`fields[1]` must be a field path",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":"999993653"}"#,
            "`burgerservicenummer` must be an array of 1 to 20 BSN strings",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"],"burgerservicenummer":[999993653]}"#,
            "`burgerservicenummer[0]` must be a string",
        );
        let postcode = |extra: &str| {
            format!(
                r#"{{"type":"ZoekMetPostcodeEnHuisnummer","fields":["naam"],"postcode":"1234AB"{extra}}}"#
            )
        };
        refused(
            &postcode(r#","huisnummer":"12""#),
            "`huisnummer` must be an integer from 1 to 99999",
        );
        refused(
            &postcode(r#","huisnummer":12.0"#),
            "`huisnummer` must be an integer",
        );
        refused(
            &postcode(r#","huisnummer":1e1"#),
            "`huisnummer` must be an integer",
        );
        refused(
            &postcode(r#","huisnummer":0"#),
            "`huisnummer` must be an integer",
        );
        refused(
            &postcode(r#","huisnummer":-1"#),
            "`huisnummer` must be an integer",
        );
        refused(
            &postcode(r#","huisnummer":100000"#),
            "`huisnummer` must be an integer",
        );
        refused(
            &postcode(r#","huisnummer":null"#),
            "`huisnummer` must be an integer",
        );
        refused(
            &postcode(r#","huisnummer":1,"inclusiefOverledenPersonen":"true""#),
            "`inclusiefOverledenPersonen` must be `true` or `false`",
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        refused(r#"{"fields":["naam"]}"#, "missing key `type`");
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993653"]}"#,
            "missing key `fields`",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam"]}"#,
            "missing key `burgerservicenummer`",
        );
        refused(
            r#"{"type":"ZoekMetPostcodeEnHuisnummer","fields":["naam"],"postcode":"1234AB"}"#,
            "missing key `huisnummer`: query type `ZoekMetPostcodeEnHuisnummer` requires it",
        );
        refused(
            r#"{"type":"RaadpleegMetBurgerservicenummer","fields":[],"burgerservicenummer":["999993653"]}"#,
            "`fields` must be an array of 1 to 130",
        );
    }

    #[test]
    fn unknown_type_and_unknown_keys_are_refused() {
        refused(
            r#"{"type":"ZoekMetAlles","fields":["naam"]}"#,
            "`type` `ZoekMetAlles` is not a query type: expected one of `RaadpleegMetBurgerservicenummer`",
        );
        refused(
            r#"{"type":"raadpleegMetBurgerservicenummer","fields":["naam"]}"#,
            "is not a query type",
        );
        refused(
            &raadpleeg(r#","extra":true"#),
            "unknown key `extra` for query type `RaadpleegMetBurgerservicenummer`",
        );
        refused(&raadpleeg(r#","Type":"x""#), "unknown key `Type`");
        // A key the spec defines for another query type is unknown here.
        refused(
            &raadpleeg(r#","inclusiefOverledenPersonen":true"#),
            "unknown key `inclusiefOverledenPersonen`",
        );
        refused(
            &raadpleeg(r#","postcode":"1234AB""#),
            "unknown key `postcode`",
        );
        refused(
            r#"{"type":"ZoekMetNummeraanduidingIdentificatie","fields":["naam"],"nummeraanduidingIdentificatie":"0363200000000001","burgerservicenummer":["999993653"]}"#,
            "unknown key `burgerservicenummer`",
        );
        // The key is shown on one line, even when it holds a newline or a backtick.
        refused(
            &raadpleeg(r#","a\nb`c":1"#),
            "unknown key `a\\u{a}b\\u{60}c`",
        );
    }

    #[test]
    fn field_paths_are_checked_and_repeats_listed_once() {
        for bad in [
            "",
            "naam.",
            ".naam",
            "naam..voornamen",
            "naam voornamen",
            "naam_x",
            "1naam",
            "naam.*",
            "naäm",
        ] {
            let body = format!(
                r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":["{bad}"],"burgerservicenummer":["999993653"]}}"#
            );
            refused(&body, "`fields[0]` must be a field path");
        }
        let long = format!("a{}", ".b".repeat(100));
        let body = format!(
            r#"{{"type":"RaadpleegMetBurgerservicenummer","fields":["{long}"],"burgerservicenummer":["999993653"]}}"#
        );
        refused(&body, "`fields[0]` must be a field path");
        let s = parse_brp_body(
            br#"{"type":"RaadpleegMetBurgerservicenummer","fields":["naam","geboorte.datum","naam"],"burgerservicenummer":["999993653"]}"#,
        )
        .unwrap();
        assert_eq!(s.fields, vec!["naam", "geboorte.datum"]);
    }

    fn search(body: &str) -> Subjects {
        match parse_brp_body(body.as_bytes()) {
            Ok(s) => s,
            Err(e) => panic!("refused {body}: {e}"),
        }
    }

    fn assert_search(s: &Subjects, query_type: &str) {
        assert_eq!(s.action, Action::BRP_SEARCH);
        assert_eq!(s.resources, vec![Resource::PersonSearch(query_type.into())]);
        assert_eq!(s.fields, vec!["naam"]);
    }

    #[test]
    fn zoek_met_geslachtsnaam_en_geboortedatum() {
        let t = "ZoekMetGeslachtsnaamEnGeboortedatum";
        let s = search(&format!(
            r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","geboortedatum":"1980-02-29","geslacht":"V","voorvoegsel":"van der","voornamen":"Jan*","inclusiefOverledenPersonen":true,"gemeenteVanInschrijving":"0363"}}"#
        ));
        assert_search(&s, t);
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","geboortedatum":"1981-02-29"}}"#
            ),
            "`geboortedatum` must be a date `yyyy-mm-dd`",
        );
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Ja*","geboortedatum":"1980-01-01"}}"#
            ),
            "`geslachtsnaam` must be a string of 1 to 200 letters, or of 3 to 199 letters followed by `*`",
        );
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","geboortedatum":"1980-1-1"}}"#
            ),
            "`geboortedatum` must be a date",
        );
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","geboortedatum":"1980-01-01","geslacht":"X"}}"#
            ),
            "`geslacht` must be `M`, `V` or `O`",
        );
    }

    #[test]
    fn zoek_met_naam_en_gemeente_van_inschrijving() {
        let t = "ZoekMetNaamEnGemeenteVanInschrijving";
        let s = search(&format!(
            r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Ö'Brien-Smit","voornamen":"Anne Marie","gemeenteVanInschrijving":"0363","geslacht":"m","voorvoegsel":"d'"}}"#
        ));
        assert_search(&s, t);
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","voornamen":"Jan"}}"#
            ),
            "missing key `gemeenteVanInschrijving`",
        );
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","voornamen":"J*","gemeenteVanInschrijving":"0363"}}"#
            ),
            "`voornamen` must be",
        );
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"geslachtsnaam":"Jansen","voornamen":"Jan","gemeenteVanInschrijving":"0363","geboortedatum":"1980-01-01"}}"#
            ),
            "unknown key `geboortedatum`",
        );
    }

    #[test]
    fn zoek_met_postcode_en_huisnummer() {
        let t = "ZoekMetPostcodeEnHuisnummer";
        let s = search(&format!(
            r#"{{"type":"{t}","fields":["naam"],"postcode":"1234 ab","huisnummer":12,"huisletter":"a","huisnummertoevoeging":"bis","geboortedatum":"1980-01-01","geslachtsnaam":"Jansen","inclusiefOverledenPersonen":false}}"#
        ));
        assert_search(&s, t);
        for bad in ["0234AB", "1234  AB", "123AB", "1234A", "12345B", "1234ÄB"] {
            refused(
                &format!(r#"{{"type":"{t}","fields":["naam"],"postcode":"{bad}","huisnummer":1}}"#),
                "`postcode` must be a postcode",
            );
        }
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"postcode":"1234AB","huisnummer":1,"huisletter":"ab"}}"#
            ),
            "`huisletter` must be a single letter",
        );
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"postcode":"1234AB","huisnummer":1,"huisnummertoevoeging":"12345"}}"#
            ),
            "`huisnummertoevoeging` must be",
        );
    }

    #[test]
    fn zoek_met_straat_huisnummer_en_gemeente_van_inschrijving() {
        let t = "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving";
        for straat in [
            "Dorpsstraat",
            "Dorpsstr*",
            "*straat.",
            "'s-Gravendijckseweg",
        ] {
            let s = search(&format!(
                r#"{{"type":"{t}","fields":["naam"],"straat":"{straat}","huisnummer":1,"gemeenteVanInschrijving":"0599"}}"#
            ));
            assert_search(&s, t);
        }
        for bad in ["Dorp*", "*dorp", "*", "Dorps*straat", "Dorpsstraat**"] {
            refused(
                &format!(
                    r#"{{"type":"{t}","fields":["naam"],"straat":"{bad}","huisnummer":1,"gemeenteVanInschrijving":"0599"}}"#
                ),
                "`straat` must be a street name",
            );
        }
    }

    #[test]
    fn zoek_met_nummeraanduiding_identificatie() {
        let t = "ZoekMetNummeraanduidingIdentificatie";
        let s = search(&format!(
            r#"{{"type":"{t}","fields":["naam"],"nummeraanduidingIdentificatie":"0363200000006110"}}"#
        ));
        assert_search(&s, t);
        for bad in [
            "0000000000000000",
            "036320000000611",
            "03632000000061100",
            "036320000000611x",
        ] {
            refused(
                &format!(
                    r#"{{"type":"{t}","fields":["naam"],"nummeraanduidingIdentificatie":"{bad}"}}"#
                ),
                "`nummeraanduidingIdentificatie` must be a string of 16 digits, not all zero",
            );
        }
    }

    #[test]
    fn zoek_met_adresseerbaar_object_identificatie() {
        let t = "ZoekMetAdresseerbaarObjectIdentificatie";
        let s = search(&format!(
            r#"{{"type":"{t}","fields":["naam"],"adresseerbaarObjectIdentificatie":"0226010000038820","inclusiefOverledenPersonen":true}}"#
        ));
        assert_search(&s, t);
        refused(
            &format!(
                r#"{{"type":"{t}","fields":["naam"],"adresseerbaarObjectIdentificatie":226010000038820}}"#
            ),
            "`adresseerbaarObjectIdentificatie` must be a string of 16 digits",
        );
    }

    #[test]
    fn every_query_type_of_the_spec_is_known() {
        let names: Vec<&str> = QUERY_TYPES.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            names,
            vec![
                "RaadpleegMetBurgerservicenummer",
                "ZoekMetGeslachtsnaamEnGeboortedatum",
                "ZoekMetNaamEnGemeenteVanInschrijving",
                "ZoekMetPostcodeEnHuisnummer",
                "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving",
                "ZoekMetNummeraanduidingIdentificatie",
                "ZoekMetAdresseerbaarObjectIdentificatie",
            ]
        );
    }

    fn rdw_table() -> RouteTable {
        RouteTable::new(vec![
            RouteConfig {
                method: "GET".into(),
                path: "/rdw/voertuigen/{kenteken}/tenaamstelling".into(),
                upstream: "rdw".into(),
                upstream_path: "/voertuigen/{kenteken}/tenaamstelling".into(),
                kind: RouteKind::KENTEKEN,
                action: Some(Action::RDW_HOLDER),
                enforce: true,
            },
            RouteConfig {
                method: "GET".into(),
                path: "/brp/personen/{bsn}".into(),
                upstream: "brp".into(),
                upstream_path: "/personen/{bsn}".into(),
                kind: RouteKind::BSN,
                action: Some(Action::BRP_LOOKUP),
                enforce: true,
            },
        ])
        .unwrap()
    }

    fn path_subjects(t: &RouteTable, target: &'static str) -> Result<Subjects, ResourceError> {
        let m = t.resolve(&Method::GET, &Uri::from_static(target)).unwrap();
        subjects_for_path(m.route, &m)
    }

    #[test]
    fn kenteken_in_the_path_is_normalised_for_decision_and_upstream() {
        let t = rdw_table();
        let s = path_subjects(&t, "/rdw/voertuigen/xx-999-x/tenaamstelling").unwrap();
        assert_eq!(s.action, Action::RDW_HOLDER);
        assert_eq!(
            s.resources,
            vec![Resource::Vehicle(Kenteken::parse("XX999X").unwrap())]
        );
        assert_eq!(
            s.upstream_params,
            vec![("kenteken".to_string(), "XX999X".to_string())]
        );
        assert_eq!(
            s.upstream_path(&t.routes()[0]),
            "/voertuigen/XX999X/tenaamstelling"
        );
        assert!(s.fields.is_empty());
    }

    #[test]
    fn invalid_kenteken_in_the_path_is_refused() {
        let t = rdw_table();
        for target in [
            "/rdw/voertuigen/XX999/tenaamstelling",
            "/rdw/voertuigen/XX999XY/tenaamstelling",
            "/rdw/voertuigen/-XX999X/tenaamstelling",
            "/rdw/voertuigen/XX--999X/tenaamstelling",
            "/rdw/voertuigen/XX_999X/tenaamstelling",
        ] {
            let e = path_subjects(&t, target).unwrap_err();
            assert_eq!(e.code(), "invalidKenteken", "{target}");
            assert!(e.to_string().contains("is not a kenteken"), "{e}");
        }
    }

    #[test]
    fn bsn_in_the_path_is_checked() {
        let t = rdw_table();
        let s = path_subjects(&t, "/brp/personen/999993653").unwrap();
        assert_eq!(s.action, Action::BRP_LOOKUP);
        assert_eq!(
            s.resources,
            vec![Resource::Person(Bsn::parse("999993653").unwrap())]
        );
        assert_eq!(s.upstream_path(&t.routes()[1]), "/personen/999993653");
        let e = path_subjects(&t, "/brp/personen/999993654").unwrap_err();
        assert_eq!(e.code(), "invalidBsn");
        assert_eq!(
            path_subjects(&t, "/brp/personen/12345").unwrap_err().code(),
            "invalidBsn"
        );
    }

    #[test]
    fn brp_route_or_missing_action_is_not_a_path_subject() {
        let brp = RouteConfig {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            upstream: "brp".into(),
            upstream_path: "/personen".into(),
            kind: RouteKind::BRP_PERSONEN,
            action: Some(Action::BRP_LOOKUP),
            enforce: true,
        };
        let m = RouteMatch {
            route: &brp,
            params: vec![],
        };
        assert!(subjects_for_path(&brp, &m).is_err());
        let no_action = RouteConfig {
            action: None,
            kind: RouteKind::KENTEKEN,
            ..brp.clone()
        };
        let m = RouteMatch {
            route: &no_action,
            params: vec![("kenteken".into(), "XX999X".into())],
        };
        assert!(subjects_for_path(&no_action, &m).is_err());
    }
}
