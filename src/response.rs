//! Response: what the registry's answer disclosed, and field minimisation.
//!
//! The disclosed data subjects are read from the upstream's answer *before* minimisation
//! (BRP: `personen[].burgerservicenummer`; RDW: the vehicle, and any holder BSN in the answer).
//! Minimisation keeps, per BRP person, only the requested field paths plus the fields the
//! Haal Centraal API always returns (secrecy and investigation markers).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

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

/// Deepest object level of an RDW answer searched for holder BSNs (the answer's own object is
/// level 0); deeper objects are still read and validated, not searched.
const MAX_BSN_DEPTH: usize = 16;

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

fn invalid(e: serde_json::Error) -> ResponseError {
    ResponseError(e.to_string())
}

/// Disclosed subjects of a successful answer, and the body to pass on.
///
/// The answer is read without building a tree of values: objects are read one level at a time
/// as their members' raw JSON text, only along the requested field paths, and what is kept is
/// copied as it came (member order, numbers and strings exactly as the registry wrote them).
pub fn inspect(
    action: Action,
    resources: &[Resource],
    fields: &[String],
    body: &[u8],
) -> Result<(Vec<ResourceRef>, Option<Vec<u8>>), ResponseError> {
    match action {
        Action::BrpLookup | Action::BrpSearch => {
            // Not an object (or no `personen` array in it) is an error like a missing member.
            let doc: RawObject<'_> = serde_json::from_slice::<MaybeObject<'_>>(body)
                .map_err(invalid)?
                .0
                .ok_or_else(|| ResponseError("`personen` is missing".into()))?;
            let personen: Vec<&RawValue> = doc
                .get("personen")
                .and_then(|raw| serde_json::from_str::<MaybeArray<'_>>(raw.get()).ok())
                .and_then(|a| a.0)
                .ok_or_else(|| ResponseError("`personen` is missing".into()))?;
            let persons: Vec<Option<RawObject<'_>>> = personen
                .iter()
                .map(|raw| {
                    serde_json::from_str::<MaybeObject<'_>>(raw.get())
                        .map(|o| o.0)
                        .map_err(invalid)
                })
                .collect::<Result<_, _>>()?;
            let mut disclosed = Vec::new();
            let mut unidentified = 0usize;
            for p in &persons {
                match p
                    .as_ref()
                    .and_then(|p| p.get("burgerservicenummer"))
                    .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
                {
                    Some(b) if Bsn::parse(&b).is_ok() => disclosed.push(person(&b)),
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
            let paths: Vec<Vec<&str>> = fields.iter().map(|f| f.split('.').collect()).collect();
            let mut out = Vec::with_capacity(body.len());
            out.push(b'{');
            for (i, (k, v)) in doc.members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_key(&mut out, k)?;
                if k == "personen" {
                    out.push(b'[');
                    for (j, (p, raw)) in persons.iter().zip(&personen).enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        match p {
                            Some(p) => write_object(&mut out, &minimise_person(p, &paths)?)?,
                            // Not an object: nothing to minimise, passed on as it came.
                            None => out.extend_from_slice(raw.get().as_bytes()),
                        }
                    }
                    out.push(b']');
                } else {
                    match v {
                        Member::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
                        Member::Object(sub) => write_object(&mut out, sub)?,
                    }
                }
            }
            out.push(b'}');
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
            let mut found = Vec::new();
            let mut de = serde_json::Deserializer::from_slice(body);
            BsnScan {
                out: &mut found,
                depth: 0,
                search: action == Action::RdwHolder,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(invalid)?;
            disclosed.extend(found.iter().map(|b| person(b)));
            dedup(&mut disclosed);
            Ok((disclosed, None))
        }
    }
}

fn dedup(v: &mut Vec<ResourceRef>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|r| seen.insert(r.clone()));
}

/// A JSON object as its members' raw text, in document order. A repeated name keeps its first
/// position and its last value (what a map keyed by name reads from the same text).
#[derive(Default)]
struct RawObject<'a> {
    members: Vec<(Cow<'a, str>, Member<'a>)>,
}

/// A member's value: as it came, or (after minimisation) an object filtered from it.
enum Member<'a> {
    Raw(&'a RawValue),
    Object(RawObject<'a>),
}

impl<'a> RawObject<'a> {
    /// The raw value of member `name` as read (a read object holds only raw values).
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| match v {
                Member::Raw(raw) => Some(*raw),
                Member::Object(_) => None,
            })
    }

    /// Sets `name`: in place when present, else at the end.
    fn insert(&mut self, name: Cow<'a, str>, value: &'a RawValue) {
        match self.members.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = Member::Raw(value),
            None => self.members.push((name, Member::Raw(value))),
        }
    }
}

/// Writes a JSON string (for an object key).
fn write_key(out: &mut Vec<u8>, k: &str) -> Result<(), ResponseError> {
    serde_json::to_writer(&mut *out, k).map_err(invalid)?;
    out.push(b':');
    Ok(())
}

fn write_object(out: &mut Vec<u8>, obj: &RawObject<'_>) -> Result<(), ResponseError> {
    out.push(b'{');
    for (i, (k, v)) in obj.members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, k)?;
        match v {
            Member::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Member::Object(sub) => write_object(out, sub)?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// Borrows an object key from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `Some` for a JSON object (read one level deep), `None` for any other JSON value.
struct MaybeObject<'a>(Option<RawObject<'a>>);

impl<'de> de::Deserialize<'de> for MaybeObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut obj = RawObject::default();
                // A large object gets an index so that repeated names stay linear.
                let mut index: Option<std::collections::HashMap<Cow<'de, str>, usize>> = None;
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    if obj.members.len() >= 32 && index.is_none() {
                        index = Some(
                            obj.members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                    match &mut index {
                        Some(ix) => match ix.get(&k) {
                            Some(&i) => {
                                if let Some(slot) = obj.members.get_mut(i) {
                                    slot.1 = Member::Raw(v);
                                }
                            }
                            None => {
                                ix.insert(k.clone(), obj.members.len());
                                obj.members.push((k, Member::Raw(v)));
                            }
                        },
                        None => obj.insert(k, v),
                    }
                }
                Ok(MaybeObject(Some(obj)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeObject(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Some` for a JSON array (its elements' raw text), `None` for any other JSON value.
struct MaybeArray<'a>(Option<Vec<&'a RawValue>>);

impl<'de> de::Deserialize<'de> for MaybeArray<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeArray<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<&'de RawValue>()? {
                    out.push(v);
                }
                Ok(MaybeArray(Some(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeArray(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeArray(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeArray(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeArray(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeArray(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeArray(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeArray(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads (and so validates) a whole JSON value, collecting the valid BSNs of every
/// `burgerservicenummer` string member of objects up to [`MAX_BSN_DEPTH`] levels deep.
struct BsnScan<'o> {
    out: &'o mut Vec<String>,
    depth: usize,
    search: bool,
}

impl<'de> DeserializeSeed<'de> for BsnScan<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BsnScan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let search = self.search && self.depth <= MAX_BSN_DEPTH;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if search && k == "burgerservicenummer" {
                // A string value is checked; any value is then searched like the others.
                let raw: &'de RawValue = map.next_value()?;
                if let Ok(b) = serde_json::from_str::<Cow<'_, str>>(raw.get()) {
                    if Bsn::parse(&b).is_ok() {
                        self.out.push(b.into_owned());
                    }
                } else {
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    BsnScan {
                        out: self.out,
                        depth: self.depth + 1,
                        search,
                    }
                    .deserialize(&mut de)
                    .map_err(de::Error::custom)?;
                }
            } else {
                map.next_value_seed(BsnScan {
                    out: self.out,
                    depth: self.depth + 1,
                    search,
                })?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let search = self.search && self.depth <= MAX_BSN_DEPTH;
        while seq
            .next_element_seed(BsnScan {
                out: self.out,
                depth: self.depth + 1,
                search,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Keeps only the requested dot-paths (and automatic fields) of one person object.
fn minimise_person<'a>(
    p: &RawObject<'a>,
    paths: &[Vec<&str>],
) -> Result<RawObject<'a>, ResponseError> {
    let mut out = filter_object(p, paths, 0)?;
    for auto in BRP_AUTOMATIC_FIELDS {
        if let Some(v) = p.get(auto) {
            out.insert(Cow::Borrowed(*auto), v);
        }
    }
    Ok(out)
}

fn filter_object<'a>(
    map: &RawObject<'a>,
    paths: &[Vec<&str>],
    depth: usize,
) -> Result<RawObject<'a>, ResponseError> {
    let mut out = RawObject::default();
    for (k, v) in &map.members {
        let Member::Raw(v) = v else { continue };
        let matching: Vec<Vec<&str>> = paths
            .iter()
            .filter(|p| p.get(depth) == Some(&k.as_ref()))
            .cloned()
            .collect();
        if matching.is_empty() {
            continue;
        }
        if matching.iter().any(|p| p.len() == depth + 1) {
            out.members.push((k.clone(), Member::Raw(v)));
        } else if let Some(inner) = serde_json::from_str::<MaybeObject<'a>>(v.get())
            .map_err(invalid)?
            .0
        {
            let sub = filter_object(&inner, &matching, depth + 1)?;
            if !sub.members.is_empty() {
                out.members.push((k.clone(), Member::Object(sub)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn bsn(s: &str) -> Resource {
        Resource::Person(Bsn::parse(s).unwrap())
    }

    /// The tree-based minimisation this module used before it read raw text: the results must
    /// be the same JSON.
    fn reference(body: &[u8], fields: &[String]) -> Value {
        fn filter(
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
                    let sub = filter(inner, &matching, depth + 1);
                    if !sub.is_empty() {
                        out.insert(k.clone(), Value::Object(sub));
                    }
                }
            }
            out
        }
        let mut doc: Value = serde_json::from_slice(body).unwrap();
        let paths: Vec<Vec<&str>> = fields.iter().map(|f| f.split('.').collect()).collect();
        for p in doc["personen"].as_array_mut().unwrap() {
            let Value::Object(map) = p else { continue };
            let mut out = filter(map, &paths, 0);
            for auto in BRP_AUTOMATIC_FIELDS {
                if let Some(v) = map.get(*auto) {
                    out.insert((*auto).to_string(), v.clone());
                }
            }
            *p = Value::Object(out);
        }
        doc
    }

    #[test]
    fn minimisation_gives_the_same_json_as_the_tree_based_one() {
        let body = br#"{"type":"RaadpleegMetBurgerservicenummer","personen":[
            {"burgerservicenummer":"999993653","naam":{"voornamen":"Jan","voorletters":"J.",
             "geslachtsnaam":"Jansen","aanduidingNaamgebruik":{"code":"E","omschrijving":"eigen"}},
             "verblijfplaats":{"type":"Adres","verblijfadres":{"straat":"Dorpsstraat","huisnummer":12,
             "postcode":"1234AB"},"datumVan":{"type":"Datum","datum":"2001-01-01"}},
             "geboorte":{"datum":{"type":"Datum","datum":"1980-02-03"}},
             "inOnderzoek":{"naam":true,"datum":"2020"},"rni":[{"deelnemer":{"code":"101"}}],
             "partners":[{"naam":{"voornamen":"Marie"}}]},
            {"burgerservicenummer":"999990639","naam":"not an object","verblijfplaats":null},
            "not a person", 12, null]}"#;
        let cases: &[&[&str]] = &[
            &["naam"],
            &["naam.voornamen", "naam.aanduidingNaamgebruik.code"],
            &["verblijfplaats", "naam.geslachtsnaam"],
            &[
                "verblijfplaats.verblijfadres.huisnummer",
                "geboorte.datum.datum",
            ],
            &["inOnderzoek.naam", "partners"],
            &["burgerservicenummer", "naam.voornamen.x"],
            &[],
        ];
        for fields in cases {
            let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            let (_, out) = inspect(Action::BrpSearch, &[], &fields, body).unwrap();
            let got: Value = serde_json::from_slice(&out.unwrap()).unwrap();
            assert_eq!(got, reference(body, &fields), "fields {fields:?}");
        }
    }

    #[test]
    fn minimised_values_are_passed_on_exactly_as_the_registry_wrote_them() {
        let body = br#"{"personen":[{"burgerservicenummer":"999993653","naam":{"voornamen":"Ren\u00e9",
            "nummer":12345678901234567890123,"factor":1.50}},{"burgerservicenummer":"999990639"}],"type":"x"}"#;
        let (_, out) = inspect(
            Action::BrpLookup,
            &[bsn("999993653")],
            &["naam".to_string()],
            body,
        )
        .unwrap();
        let out = String::from_utf8(out.unwrap()).unwrap();
        assert!(out.contains(r#""voornamen":"Ren\u00e9""#), "{out}");
        assert!(out.contains("12345678901234567890123"), "{out}");
        assert!(out.contains("1.50"), "{out}");
        // Member order as sent, the second person reduced to an empty object.
        assert!(out.starts_with(r#"{"personen":[{"naam":"#), "{out}");
        assert!(out.ends_with(r#"},{}],"type":"x"}"#), "{out}");
    }

    #[test]
    fn repeated_member_counts_with_its_last_value() {
        let body = br#"{"personen":[{"burgerservicenummer":"999993653","naam":{"voornamen":"A"},
            "burgerservicenummer":"999990639","naam":{"voornamen":"B"}}]}"#;
        let (disc, out) = inspect(Action::BrpSearch, &[], &["naam".to_string()], body).unwrap();
        assert_eq!(disc, vec![person("999990639")]);
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(v["personen"][0]["naam"]["voornamen"], "B");
    }

    #[test]
    fn holder_bsn_is_found_up_to_the_depth_limit_and_deeper_json_still_validated() {
        let k = || Resource::Vehicle(crate::model::Kenteken::parse("XX999X").unwrap());
        let nest = |levels: usize, bsn: &str| {
            let mut s = format!(r#"{{"burgerservicenummer":"{bsn}"}}"#);
            for _ in 0..levels {
                s = format!(r#"{{"a":[1,{s}]}}"#);
            }
            s
        };
        // Level 16 (an object inside 8 object+array pairs) is searched; deeper is not.
        let (disc, _) = inspect(
            Action::RdwHolder,
            &[k()],
            &[],
            nest(8, "999991802").as_bytes(),
        )
        .unwrap();
        assert_eq!(disc, vec![disc[0].clone(), person("999991802")]);
        let (disc, _) = inspect(
            Action::RdwHolder,
            &[k()],
            &[],
            nest(9, "999991802").as_bytes(),
        )
        .unwrap();
        assert_eq!(disc.len(), 1);
        // A vehicle answer names no holder to record.
        let (disc, _) = inspect(
            Action::RdwVehicle,
            &[k()],
            &[],
            nest(1, "999991802").as_bytes(),
        )
        .unwrap();
        assert_eq!(disc.len(), 1);
        // Invalid JSON deep inside, or after the value, is refused.
        assert!(inspect(Action::RdwHolder, &[k()], &[], br#"{"a":[{"b":[1,]}]}"#).is_err());
        assert!(inspect(Action::RdwHolder, &[k()], &[], br#"{"a":1} x"#).is_err());
        // An invalid BSN is not recorded as a person.
        let (disc, _) = inspect(
            Action::RdwHolder,
            &[k()],
            &[],
            br#"{"houder":{"burgerservicenummer":"123456789"}}"#,
        )
        .unwrap();
        assert_eq!(disc.len(), 1);
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
