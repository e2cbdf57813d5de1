//! Haal Centraal BRP Bewoning 2.1 (`POST /bewoningen`): who lived at an address on a date
//! (`BewoningMetPeildatum`) or in a period (`BewoningMetPeriode`). The request names an
//! address (`adresseerbaarObjectIdentificatie`), decided as `brp:bewoning` with
//! `context.search` an address search (the shipped policies want the case to name the
//! address); the persons are only known from the answer: every `bewoners[]` and
//! `mogelijkeBewoners[]` entry of every `bewoningen[]` period is a person to release, placed by
//! the answer at that period's address. Released persons keep only the fields a Bewoning
//! answer has for them (`burgerservicenummer`, `naam`, `geboorte`, and the secrecy and
//! investigation markers); withheld ones are removed from every period.

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use super::{ReadAnswer, Registry};
use crate::config::RouteConfig;
use crate::error::GateError;
use crate::model::{Action, AnswerPerson, Bsn, Resource, Search, SearchKind, keys};
use crate::resource::{ResourceError, Subjects, is_date, parse_strict_object};
use crate::response::ResponseError;
use crate::routes::{RouteMatch, shown};

/// `brp:bewoning`: who lived at an address.
pub const BRP_BEWONING: Action = Action::new("brp:bewoning");

/// What a Bewoning answer says of a person, and so the `fields` decided on (a case type must
/// allow them) and kept by minimisation.
const FIELDS: &[&str] = &["burgerservicenummer", "naam", "geboorte"];
/// Markers kept with every released person.
const AUTOMATIC: &[&str] = &[
    "geheimhoudingPersoonsgegevens",
    "inOnderzoek",
    "verblijfplaatsInOnderzoek",
];

/// The BRP Bewoning registry.
pub struct BrpBewoning;

fn invalid(msg: impl Into<String>) -> GateError {
    GateError::Resource(ResourceError::InvalidBody(msg.into()))
}

impl Registry for BrpBewoning {
    fn kind(&self) -> &'static str {
        "brp-bewoning"
    }

    fn path_params(&self) -> &'static [&'static str] {
        &[]
    }

    fn actions(&self) -> &'static [Action] {
        &[BRP_BEWONING]
    }

    fn route_actions(&self) -> &'static [Action] {
        &[]
    }

    fn check_method(&self, method: &Method) -> Result<(), String> {
        if method == Method::POST {
            Ok(())
        } else {
            Err("a brp-bewoning route takes a JSON body: its method must be `POST`".into())
        }
    }

    fn subjects(
        &self,
        _route: &RouteConfig,
        _m: &RouteMatch<'_>,
        body: &Bytes,
    ) -> Result<Subjects, GateError> {
        let obj = parse_strict_object(body)?;
        let query_type = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(_) => return Err(invalid("`type` must be a string")),
            None => return Err(invalid("missing key `type`: the query type")),
        };
        let dates: &[&str] = match query_type {
            "BewoningMetPeildatum" => &["peildatum"],
            "BewoningMetPeriode" => &["datumVan", "datumTot"],
            other => {
                return Err(invalid(format!(
                    "`type` `{}` is not a query type: expected `BewoningMetPeildatum` or `BewoningMetPeriode`",
                    shown(other)
                )));
            }
        };
        // INVARIANT: every key is checked, so no data the gate did not decide on reaches the
        // registry.
        for key in obj.keys() {
            if key != "type"
                && key != "adresseerbaarObjectIdentificatie"
                && !dates.contains(&key.as_str())
            {
                return Err(invalid(format!(
                    "unknown key `{}` for query type `{query_type}`",
                    shown(key)
                )));
            }
        }
        for d in dates {
            match obj.get(*d) {
                Some(Value::String(s)) if is_date(s) => {}
                Some(_) => return Err(invalid(format!("`{d}` must be a date `yyyy-mm-dd`"))),
                None => {
                    return Err(invalid(format!(
                        "missing key `{d}`: query type `{query_type}` requires it"
                    )));
                }
            }
        }
        if let (Some(Value::String(van)), Some(Value::String(tot))) =
            (obj.get("datumVan"), obj.get("datumTot"))
            && van >= tot
        {
            return Err(invalid("`datumVan` must be before `datumTot`"));
        }
        let aoid = match obj.get("adresseerbaarObjectIdentificatie") {
            Some(Value::String(s)) => keys::adresseerbaar_object(s).ok_or_else(|| {
                invalid("`adresseerbaarObjectIdentificatie` must be a string of 16 digits, not all zero")
            })?,
            Some(_) => {
                return Err(invalid(
                    "`adresseerbaarObjectIdentificatie` must be a string of 16 digits, not all zero",
                ));
            }
            None => {
                return Err(invalid(format!(
                    "missing key `adresseerbaarObjectIdentificatie`: query type `{query_type}` requires it"
                )));
            }
        };
        Ok(Subjects {
            action: BRP_BEWONING,
            resources: vec![Resource::PersonSearch(query_type.to_string())],
            fields: FIELDS.iter().map(|f| f.to_string()).collect(),
            upstream_params: Vec::new(),
            search: Some(Search {
                kind: SearchKind::Address,
                addresses: vec![aoid],
            }),
            upstream_body: None,
        })
    }

    fn read<'a>(
        &self,
        _subjects: &Subjects,
        body: &'a [u8],
    ) -> Result<Box<dyn ReadAnswer + 'a>, ResponseError> {
        Ok(Box::new(Bewoningen::read(body)?))
    }
}

/// A read Bewoning answer.
struct Bewoningen {
    doc: Map<String, Value>,
    persons: Vec<AnswerPerson>,
    /// Per `(period, list, entry)`: the index into `persons`.
    slots: Vec<(usize, &'static str, usize, usize)>,
}

const LISTS: [&str; 2] = ["bewoners", "mogelijkeBewoners"];

fn bad(msg: &str) -> ResponseError {
    ResponseError(msg.to_string())
}

impl Bewoningen {
    fn read(body: &[u8]) -> Result<Bewoningen, ResponseError> {
        let doc: Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| ResponseError(e.to_string()))?;
        let periods = doc
            .get("bewoningen")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("`bewoningen` is missing"))?;
        let mut persons: Vec<AnswerPerson> = Vec::new();
        let mut slots = Vec::new();
        for (i, period) in periods.iter().enumerate() {
            let period = period
                .as_object()
                .ok_or_else(|| bad("a `bewoningen` entry is not an object"))?;
            let address = period
                .get("adresseerbaarObjectIdentificatie")
                .and_then(Value::as_str)
                .and_then(keys::adresseerbaar_object);
            for list in LISTS {
                let Some(entries) = period.get(list) else {
                    continue;
                };
                let entries = entries
                    .as_array()
                    .ok_or_else(|| bad("a list of residents is not an array"))?;
                for (j, entry) in entries.iter().enumerate() {
                    let bsn = entry
                        .get("burgerservicenummer")
                        .and_then(Value::as_str)
                        .and_then(|b| Bsn::parse(b).ok());
                    let secret = match entry.get("geheimhoudingPersoonsgegevens") {
                        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
                        Some(_) => true,
                    };
                    // One decision per person: a person in several periods is one person,
                    // placed at each period's address.
                    let found = bsn
                        .as_ref()
                        .and_then(|b| persons.iter().position(|p| p.bsn.as_ref() == Some(b)));
                    let index = match found {
                        Some(k) => {
                            let p = &mut persons[k];
                            p.secret |= secret;
                            if let Some(a) = &address
                                && !p.addresses.contains(a)
                            {
                                p.addresses.push(a.clone());
                            }
                            k
                        }
                        None => {
                            persons.push(AnswerPerson {
                                bsn,
                                secret,
                                addresses: address.iter().cloned().collect(),
                                name: None,
                            });
                            persons.len() - 1
                        }
                    };
                    slots.push((i, list, j, index));
                }
            }
        }
        Ok(Bewoningen {
            doc,
            persons,
            slots,
        })
    }
}

impl ReadAnswer for Bewoningen {
    fn persons(&self) -> &[AnswerPerson] {
        &self.persons
    }

    fn can_cut(&self) -> bool {
        true
    }

    fn release_body(
        &self,
        _fields: &[String],
        keep: &[bool],
    ) -> Result<Option<Vec<u8>>, ResponseError> {
        let mut doc = self.doc.clone();
        if let Some(Value::Array(periods)) = doc.get_mut("bewoningen") {
            for (i, period) in periods.iter_mut().enumerate() {
                let Some(period) = period.as_object_mut() else {
                    continue;
                };
                for list in LISTS {
                    let Some(Value::Array(entries)) = period.get_mut(list) else {
                        continue;
                    };
                    let kept: Vec<Value> = std::mem::take(entries)
                        .into_iter()
                        .enumerate()
                        .filter(|(j, _)| {
                            self.slots
                                .iter()
                                .find(|(pi, l, e, _)| *pi == i && *l == list && e == j)
                                .is_some_and(|(_, _, _, p)| keep.get(*p).copied().unwrap_or(false))
                        })
                        .map(|(_, v)| minimise(v))
                        .collect();
                    *entries = kept;
                }
            }
        }
        serde_json::to_vec(&doc)
            .map(Some)
            .map_err(|e| ResponseError(e.to_string()))
    }
}

/// A released resident with only the fields a Bewoning answer has for a person.
fn minimise(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| FIELDS.contains(&k.as_str()) || AUTOMATIC.contains(&k.as_str()))
                .collect(),
        ),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subjects(body: Value) -> Result<Subjects, GateError> {
        let route = RouteConfig {
            method: "POST".into(),
            path: "/bewoningen".into(),
            upstream: "brp".into(),
            upstream_path: "/bewoningen".into(),
            kind: crate::config::RouteKind::BRP_BEWONING,
            action: None,
            enforce: true,
        };
        let table = crate::routes::RouteTable::new(vec![route.clone()]).unwrap();
        let req = http::Request::post("/bewoningen").body(()).unwrap();
        let m = table.resolve_request(&req).unwrap();
        BrpBewoning.subjects(&route, &m, &Bytes::from(body.to_string()))
    }

    #[test]
    fn a_query_names_its_address_as_an_address_search() {
        let s = subjects(
            json!({"type": "BewoningMetPeildatum", "peildatum": "2026-01-01",
                                "adresseerbaarObjectIdentificatie": "0363010000088001"}),
        )
        .unwrap();
        assert_eq!(s.action, BRP_BEWONING);
        assert_eq!(
            s.search,
            Some(Search {
                kind: SearchKind::Address,
                addresses: vec!["aoid:0363010000088001".into()]
            })
        );
        assert_eq!(s.fields, ["burgerservicenummer", "naam", "geboorte"]);
        let s = subjects(
            json!({"type": "BewoningMetPeriode", "datumVan": "2025-01-01",
                                "datumTot": "2026-01-01",
                                "adresseerbaarObjectIdentificatie": "0363010000088001"}),
        )
        .unwrap();
        assert_eq!(
            s.resources,
            [Resource::PersonSearch("BewoningMetPeriode".into())]
        );
    }

    #[test]
    fn malformed_queries_are_refused() {
        for (body, msg) in [
            (
                json!({"type": "BewoningMetPeildatum", "peildatum": "2026-01-01"}),
                "missing key `adresseerbaarObjectIdentificatie`",
            ),
            (
                json!({"type": "BewoningMetPeildatum", "peildatum": "2026-02-30",
                    "adresseerbaarObjectIdentificatie": "0363010000088001"}),
                "`peildatum` must be a date",
            ),
            (
                json!({"type": "BewoningMetPeildatum", "peildatum": "2026-01-01",
                    "adresseerbaarObjectIdentificatie": "0000000000000000"}),
                "16 digits",
            ),
            (
                json!({"type": "BewoningMetPeriode", "datumVan": "2026-01-01", "datumTot": "2025-01-01",
                    "adresseerbaarObjectIdentificatie": "0363010000088001"}),
                "before",
            ),
            (
                json!({"type": "BewoningMetPeildatum", "peildatum": "2026-01-01", "burgerservicenummer": ["999993653"],
                    "adresseerbaarObjectIdentificatie": "0363010000088001"}),
                "unknown key",
            ),
            (
                json!({"type": "RaadpleegMetBurgerservicenummer"}),
                "not a query type",
            ),
        ] {
            let e = subjects(body.clone()).unwrap_err();
            assert!(e.to_string().contains(msg), "{body}: {e}");
            assert_eq!(e.code(), "invalidBody");
        }
    }

    #[test]
    fn residents_of_every_period_are_persons_once_and_withheld_ones_are_cut_out() {
        let body = json!({"bewoningen": [
            {"adresseerbaarObjectIdentificatie": "0363010000088001",
             "periode": {"datumVan": "2025-01-01", "datumTot": "2025-06-01"},
             "bewoners": [
                {"burgerservicenummer": "999991802", "naam": {"volledigeNaam": "Hendrik Jansen"},
                 "verblijfplaats": {"x": 1}},
                {"burgerservicenummer": "999993872", "geheimhoudingPersoonsgegevens": true}],
             "mogelijkeBewoners": [{"naam": {"volledigeNaam": "Zonder BSN"}}]},
            {"adresseerbaarObjectIdentificatie": "0363010000088001",
             "periode": {"datumVan": "2025-06-01", "datumTot": "2026-01-01"},
             "bewoners": [{"burgerservicenummer": "999991802"}],
             "mogelijkeBewoners": []}]})
        .to_string();
        let a = Bewoningen::read(body.as_bytes()).unwrap();
        let bsns: Vec<Option<&str>> = a
            .persons
            .iter()
            .map(|p| p.bsn.as_ref().map(Bsn::as_str))
            .collect();
        assert_eq!(bsns, [Some("999991802"), Some("999993872"), None]);
        assert!(a.persons[1].secret);
        assert_eq!(a.persons[0].addresses, ["aoid:0363010000088001"]);
        let out = a.release_body(&[], &[true, false, false]).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["bewoningen"][0]["bewoners"],
            json!([{"burgerservicenummer": "999991802", "naam": {"volledigeNaam": "Hendrik Jansen"}}])
        );
        assert_eq!(v["bewoningen"][0]["mogelijkeBewoners"], json!([]));
        assert_eq!(
            v["bewoningen"][1]["bewoners"],
            json!([{"burgerservicenummer": "999991802"}])
        );
        assert_eq!(v["bewoningen"][1]["periode"]["datumVan"], "2025-06-01");
        assert!(Bewoningen::read(b"{}").is_err());
        assert!(Bewoningen::read(br#"{"bewoningen":[{"bewoners":{}}]}"#).is_err());
    }
}
