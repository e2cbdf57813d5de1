//! Response: what the registry's answer disclosed, and field minimisation.
//!
//! The disclosed data subjects are read from the upstream's answer *before* minimisation
//! (BRP: `personen[].burgerservicenummer`; RDW: the vehicle, and any holder BSN in the answer).
//! Minimisation keeps, per BRP person, only the requested field paths plus the fields the
//! Haal Centraal API always returns (secrecy and investigation markers).

use serde_json::{Map, Value};

use crate::audit::ResourceRef;
use crate::model::{Action, Bsn, Resource};

/// Fields the BRP API returns without being asked, kept by minimisation.
const BRP_AUTOMATIC_FIELDS: &[&str] = &[
    "geheimhoudingPersoonsgegevens",
    "opschortingBijhouding",
    "rni",
    "verificatie",
    "inOnderzoek",
];

/// The answer could not be read as the registry's documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the registry answer is not valid: {0}")]
pub struct ResponseError(pub String);

fn person(id: &str) -> ResourceRef {
    ResourceRef {
        kind: "Person".into(),
        id: id.to_string(),
    }
}

/// Disclosed subjects of a successful answer, and the body to pass on.
pub fn inspect(
    action: Action,
    resources: &[Resource],
    fields: &[String],
    body: &[u8],
) -> Result<(Vec<ResourceRef>, Option<Vec<u8>>), ResponseError> {
    match action {
        Action::BrpLookup | Action::BrpSearch => {
            let mut doc: Value =
                serde_json::from_slice(body).map_err(|e| ResponseError(e.to_string()))?;
            let personen = doc
                .get_mut("personen")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| ResponseError("`personen` is missing".into()))?;
            let mut disclosed = Vec::new();
            let mut unidentified = 0usize;
            for p in personen.iter() {
                match p.get("burgerservicenummer").and_then(Value::as_str) {
                    Some(b) if Bsn::parse(b).is_ok() => disclosed.push(person(b)),
                    _ => unidentified += 1,
                }
            }
            if unidentified > 0 {
                if action == Action::BrpLookup {
                    // The answer does not say which of the asked persons it holds: count every
                    // asked person as disclosed (an over-estimate, never an under-estimate).
                    for r in resources {
                        if let Resource::Person(b) = r {
                            disclosed.push(person(b.as_str()));
                        }
                    }
                } else {
                    for _ in 0..unidentified {
                        disclosed.push(person("unidentified"));
                    }
                }
            }
            dedup(&mut disclosed);
            for p in personen.iter_mut() {
                minimise_person(p, fields);
            }
            let out = serde_json::to_vec(&doc).map_err(|e| ResponseError(e.to_string()))?;
            Ok((disclosed, Some(out)))
        }
        Action::RdwVehicle | Action::RdwHolder => {
            let mut disclosed: Vec<ResourceRef> = resources
                .iter()
                .map(|r| {
                    let (t, id) = r.type_and_id();
                    ResourceRef {
                        kind: t.to_string(),
                        id: id.to_string(),
                    }
                })
                .collect();
            // An answer that is not JSON is refused, not passed on: for a holder it could name
            // a person that `disclosed` would then miss.
            let doc: Value =
                serde_json::from_slice(body).map_err(|e| ResponseError(e.to_string()))?;
            if action == Action::RdwHolder {
                collect_bsns(&doc, &mut disclosed, 0);
            }
            dedup(&mut disclosed);
            Ok((disclosed, None))
        }
    }
}

fn dedup(v: &mut Vec<ResourceRef>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|r| seen.insert(r.clone()));
}

fn collect_bsns(v: &Value, out: &mut Vec<ResourceRef>, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "burgerservicenummer"
                    && let Some(b) = x.as_str()
                    && Bsn::parse(b).is_ok()
                {
                    out.push(person(b));
                }
                collect_bsns(x, out, depth + 1);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_bsns(x, out, depth + 1)),
        _ => {}
    }
}

/// Keeps only the requested dot-paths (and automatic fields) of one person object.
fn minimise_person(p: &mut Value, fields: &[String]) {
    let Value::Object(map) = p else { return };
    let paths: Vec<Vec<&str>> = fields.iter().map(|f| f.split('.').collect()).collect();
    let kept = filter_object(map, &paths, 0);
    let mut out = kept;
    for auto in BRP_AUTOMATIC_FIELDS {
        if let Some(v) = map.get(*auto) {
            out.insert((*auto).to_string(), v.clone());
        }
    }
    *p = Value::Object(out);
}

fn filter_object(
    map: &Map<String, Value>,
    paths: &[Vec<&str>],
    depth: usize,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in map {
        let matching: Vec<Vec<&str>> = paths
            .iter()
            .filter(|p| p.get(depth) == Some(&k.as_str()))
            .cloned()
            .collect();
        if matching.is_empty() {
            continue;
        }
        if matching.iter().any(|p| p.len() == depth + 1) {
            out.insert(k.clone(), v.clone());
        } else if let Value::Object(inner) = v {
            let sub = filter_object(inner, &matching, depth + 1);
            if !sub.is_empty() {
                out.insert(k.clone(), Value::Object(sub));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bsn(s: &str) -> Resource {
        Resource::Person(Bsn::parse(s).unwrap())
    }

    #[test]
    fn disclosed_bsns_are_read_and_fields_minimised() {
        let body = br#"{"type":"RaadpleegMetBurgerservicenummer","personen":[
            {"burgerservicenummer":"999993653","naam":{"voornamen":"Jan","geslachtsnaam":"Jansen"},
             "geboorte":{"datum":"1980"},"geheimhoudingPersoonsgegevens":1}]}"#;
        let fields = vec!["naam.voornamen".to_string()];
        let (disc, out) = inspect(Action::BrpLookup, &[bsn("999993653")], &fields, body).unwrap();
        assert_eq!(disc, vec![person("999993653")]);
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        let p = &v["personen"][0];
        assert_eq!(p["naam"]["voornamen"], "Jan");
        assert!(p["naam"].get("geslachtsnaam").is_none());
        assert!(p.get("geboorte").is_none());
        assert!(p.get("burgerservicenummer").is_none());
        assert_eq!(p["geheimhoudingPersoonsgegevens"], 1);
    }

    #[test]
    fn lookup_without_bsn_in_answer_counts_every_asked_person() {
        let body = br#"{"personen":[{"naam":{"voornamen":"Jan"}}]}"#;
        let (disc, _) = inspect(
            Action::BrpLookup,
            &[bsn("999993653"), bsn("999990639")],
            &["naam".to_string()],
            body,
        )
        .unwrap();
        assert_eq!(disc, vec![person("999993653"), person("999990639")]);
    }

    #[test]
    fn garbage_brp_answer_is_an_error() {
        assert!(inspect(Action::BrpSearch, &[], &[], b"<html>").is_err());
        assert!(inspect(Action::BrpSearch, &[], &[], b"{}").is_err());
    }

    #[test]
    fn holder_answer_discloses_vehicle_and_holder() {
        let k = Resource::Vehicle(crate::model::Kenteken::parse("XX999X").unwrap());
        let body =
            br#"{"kenteken":"XX999X","houder":{"burgerservicenummer":"999991802","naam":"P"}}"#;
        let (disc, out) = inspect(Action::RdwHolder, &[k], &[], body).unwrap();
        assert!(out.is_none());
        assert_eq!(disc.len(), 2);
        assert_eq!(disc[1], person("999991802"));
    }

    #[test]
    fn unreadable_rdw_answer_is_an_error_not_passed_on() {
        let k = || Resource::Vehicle(crate::model::Kenteken::parse("XX999X").unwrap());
        // Truncated JSON that a lenient client could still read a holder from.
        let body =
            br#"{"kenteken":"XX999X","houder":{"burgerservicenummer":"999991802","naam":"P""#;
        assert!(inspect(Action::RdwHolder, &[k()], &[], body).is_err());
        assert!(inspect(Action::RdwVehicle, &[k()], &[], b"{\"type\":[").is_err());
        assert!(inspect(Action::RdwVehicle, &[k()], &[], b"<html>").is_err());
    }
}
