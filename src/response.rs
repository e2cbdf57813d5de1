//! Response: what the registry's answer disclosed, and field minimisation.
//!
//! Every person in the upstream's answer is read *before* minimisation, with what the answer says
//! of them (BRP: `personen[]` with `burgerservicenummer`, `geheimhoudingPersoonsgegevens`, the
//! address in `verblijfplaats` or `adressering`, surname and birth date; RDW: any holder BSN in
//! the answer), so that the gate decides the release of each one (`gate`). What is passed on
//! holds only the released persons, each minimised to the requested field paths plus the fields
//! the Haal Centraal API always returns (secrecy and investigation markers).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::{Action, AnswerPerson, Bsn, keys};

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

fn invalid(e: serde_json::Error) -> ResponseError {
    ResponseError(e.to_string())
}

/// A successful answer, read: every person in it with what it says of each, and what is needed
/// to pass on the released part.
///
/// The answer is read without building a tree of values: objects are read one level at a time
/// as their members' raw JSON text, only along the requested field paths, and what is kept is
/// copied as it came (member order, numbers and strings exactly as the registry wrote them).
pub struct Answer<'a> {
    kind: AnswerKind<'a>,
    /// Every person in the answer, in order: BRP, one per `personen` entry (an entry that is not
    /// an object, or has no valid BSN, has no `bsn`); RDW holder, one per holder BSN found.
    pub persons: Vec<AnswerPerson>,
}

enum AnswerKind<'a> {
    Brp {
        doc: RawObject<'a>,
        /// Each `personen` entry: the object, or `None` when it is not one.
        entries: Vec<Option<RawObject<'a>>>,
    },
    /// Passed on as it came, or refused whole.
    Opaque,
}

/// Reads a successful answer of a request with `action`. An answer that is not the JSON the
/// action's registry answers with is an error: it is never passed on.
pub fn read(action: Action, body: &[u8]) -> Result<Answer<'_>, ResponseError> {
    match action {
        Action::BRP_LOOKUP | Action::BRP_SEARCH => {
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
            let entries: Vec<Option<RawObject<'_>>> = personen
                .iter()
                .map(|raw| {
                    serde_json::from_str::<MaybeObject<'_>>(raw.get())
                        .map(|o| o.0)
                        .map_err(invalid)
                })
                .collect::<Result<_, _>>()?;
            let persons = entries
                .iter()
                .map(|e| e.as_ref().map(answer_person).unwrap_or_default())
                .collect();
            Ok(Answer {
                kind: AnswerKind::Brp { doc, entries },
                persons,
            })
        }
        _ => {
            // An answer that is not JSON is refused, not passed on: for a holder it could name
            // a person that the release would then miss.
            let mut found = Vec::new();
            let mut de = serde_json::Deserializer::from_slice(body);
            BsnScan {
                out: &mut found,
                depth: 0,
                search: action == Action::RDW_HOLDER,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(invalid)?;
            let mut persons: Vec<AnswerPerson> = Vec::new();
            for b in found {
                if let Ok(bsn) = Bsn::parse(&b)
                    && !persons.iter().any(|p| p.bsn.as_ref() == Some(&bsn))
                {
                    persons.push(AnswerPerson {
                        bsn: Some(bsn),
                        ..AnswerPerson::default()
                    });
                }
            }
            Ok(Answer {
                kind: AnswerKind::Opaque,
                persons,
            })
        }
    }
}

impl Answer<'_> {
    /// A BRP `personen` answer (withheld persons can be cut out); otherwise an answer that is
    /// passed on whole or refused.
    pub fn is_brp(&self) -> bool {
        matches!(self.kind, AnswerKind::Brp { .. })
    }

    /// The body to pass on when only the persons with `keep[i]` are released, each minimised
    /// to `fields` (and the fields the API always returns); `None`: pass the answer on as it
    /// came (an opaque answer, which the caller passes on only when every person in it is
    /// released). Entries that are not objects are never passed on.
    pub fn release_body(
        &self,
        fields: &[String],
        keep: &[bool],
    ) -> Result<Option<Vec<u8>>, ResponseError> {
        let AnswerKind::Brp { doc, entries } = &self.kind else {
            return Ok(None);
        };
        let paths: Vec<Vec<&str>> = fields.iter().map(|f| f.split('.').collect()).collect();
        let mut out = Vec::new();
        out.push(b'{');
        for (i, (k, v)) in doc.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, k)?;
            if k == "personen" {
                out.push(b'[');
                let mut first = true;
                for (j, entry) in entries.iter().enumerate() {
                    let Some(p) = entry else { continue };
                    if !keep.get(j).copied().unwrap_or(false) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_object(&mut out, &minimise_person(p, &paths)?)?;
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
        Ok(Some(out))
    }
}

/// What a BRP person object says of the person, for the release decision.
///
/// Each member is read from its raw text with borrowed, lenient readers (a member of another
/// JSON type than expected counts as absent, a repeated name with its last value), without
/// building a tree of values; a member that `serde_json::Value` could not read (nested deeper
/// than its recursion limit) counts as absent, as it did when it was read as a tree.
fn answer_person(p: &RawObject<'_>) -> AnswerPerson {
    fn member<'a, T: de::Deserialize<'a>>(p: &RawObject<'a>, name: &str) -> Option<T> {
        p.get(name)
            .and_then(|raw| serde_json::from_str::<T>(raw.get()).ok())
    }
    let bsn = p
        .get("burgerservicenummer")
        .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
        .and_then(|b| Bsn::parse(&b).ok());
    // `geheimhoudingPersoonsgegevens`: a boolean in BRP Personen 2.x, a number 0..7 before; any
    // other value counts as secret (fail closed).
    let secret = member::<Secret>(p, "geheimhoudingPersoonsgegevens").is_some_and(|s| s.0);
    let mut addresses = Vec::new();
    if let Some(Lenient(v)) = member::<Lenient<Verblijfplaats<'_>>>(p, "verblijfplaats") {
        if let Some(k) = v
            .adresseerbaar_object
            .as_deref()
            .and_then(keys::adresseerbaar_object)
        {
            addresses.push(k);
        }
        if let Some(k) = v
            .nummeraanduiding
            .as_deref()
            .and_then(keys::nummeraanduiding)
        {
            addresses.push(k);
        }
        let a = v.verblijfadres.map(|a| a.0).unwrap_or_default();
        let nr = a.huisnummer.and_then(|n| u32::try_from(n).ok());
        if let (Some(pc), Some(nr)) = (a.postcode.as_deref(), nr)
            && let Some(k) = keys::postcode(
                pc,
                nr,
                a.huisletter.as_deref(),
                a.huisnummertoevoeging.as_deref(),
            )
        {
            addresses.push(k);
        }
    }
    if let Some(Lenient(v)) = member::<Lenient<Adressering<'_>>>(p, "adressering")
        && let (Some(r1), Some(r2)) = (v.adresregel1.as_deref(), v.adresregel2.as_deref())
        && let Some(k) = address_lines_key(r1, r2)
        && !addresses.contains(&k)
    {
        addresses.push(k);
    }
    let surname = member::<Lenient<Naam<'_>>>(p, "naam").and_then(|n| n.0.geslachtsnaam);
    // `geboorte.datum` is an `AbstractDatum`: only a whole date (`type` `Datum`) counts.
    let born = member::<Lenient<Geboorte<'_>>>(p, "geboorte")
        .and_then(|g| g.0.datum)
        .and_then(|Lenient(d)| {
            if d.kind.as_deref() == Some("Datum") {
                d.datum
            } else {
                None
            }
        });
    let name = surname.zip(born).and_then(|(s, d)| keys::name(&s, &d));
    AnswerPerson {
        bsn,
        secret,
        addresses,
        name,
    }
}

/// The members of a JSON object that a lenient reader takes; the others are skipped.
trait LenientFields<'de>: Default {
    /// Reads member `key`'s value from `map` when it is one of this object's; `false` when not
    /// (the caller skips it).
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// A JSON object's members as `T` reads them; any other JSON value gives `T::default()` (what
/// `Value::get` on a non-object gives: nothing).
struct Lenient<T>(T);

impl<'de, T: LenientFields<'de>> de::Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: LenientFields<'de>> Visitor<'de> for V<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut t = T::default();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    if !t.member(&k, &mut map)? {
                        map.next_value::<Skip>()?;
                    }
                }
                Ok(Lenient(t))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Lenient(T::default()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Lenient(T::default()))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(T::default()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: Default> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(T::default())
    }
}

/// A JSON string (borrowed when it has no escapes); `None` for any other JSON value.
#[derive(Default)]
struct LenientStr<'a>(Option<Cow<'a, str>>);

impl<'de> de::Deserialize<'de> for LenientStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(v))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| LenientStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| LenientStr(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON integer that fits `u64` (`Value::as_u64`); `None` for any other JSON value.
#[derive(Default)]
struct LenientU64(Option<u64>);

impl<'de> de::Deserialize<'de> for LenientU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientU64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LenientU64(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientU64(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientU64(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| LenientU64(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| LenientU64(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LenientU64(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(LenientU64(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LenientU64(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `geheimhoudingPersoonsgegevens`: secret unless `false`, `null` or a number equal to 0.
struct Secret(bool);

impl<'de> de::Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Secret(v))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Secret(false))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Secret(v as f64 != 0.0))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Secret(v as f64 != 0.0))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Secret(v != 0.0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Secret(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Secret(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Secret(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value, read and dropped through `deserialize_any` (so nesting counts against
/// serde_json's recursion limit exactly as when a `Value` is built; `IgnoredAny` does not).
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                skip_map(map).map(|()| Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
                skip_seq(seq).map(|()| Skip)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
        }
        d.deserialize_any(V)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// BRP `verblijfplaats`: the address identifiers and the `verblijfadres`.
#[derive(Default)]
struct Verblijfplaats<'a> {
    adresseerbaar_object: Option<Cow<'a, str>>,
    nummeraanduiding: Option<Cow<'a, str>>,
    verblijfadres: Option<Lenient<Verblijfadres<'a>>>,
}

impl<'de> LenientFields<'de> for Verblijfplaats<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "adresseerbaarObjectIdentificatie" => {
                self.adresseerbaar_object = map.next_value::<LenientStr<'de>>()?.0;
            }
            "nummeraanduidingIdentificatie" => {
                self.nummeraanduiding = map.next_value::<LenientStr<'de>>()?.0;
            }
            "verblijfadres" => self.verblijfadres = Some(map.next_value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// BRP `verblijfplaats.verblijfadres`: postcode and house number.
#[derive(Default)]
struct Verblijfadres<'a> {
    postcode: Option<Cow<'a, str>>,
    huisnummer: Option<u64>,
    huisletter: Option<Cow<'a, str>>,
    huisnummertoevoeging: Option<Cow<'a, str>>,
}

impl<'de> LenientFields<'de> for Verblijfadres<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "postcode" => self.postcode = map.next_value::<LenientStr<'de>>()?.0,
            "huisnummer" => self.huisnummer = map.next_value::<LenientU64>()?.0,
            "huisletter" => self.huisletter = map.next_value::<LenientStr<'de>>()?.0,
            "huisnummertoevoeging" => {
                self.huisnummertoevoeging = map.next_value::<LenientStr<'de>>()?.0;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// BRP `adressering`: the two address lines.
#[derive(Default)]
struct Adressering<'a> {
    adresregel1: Option<Cow<'a, str>>,
    adresregel2: Option<Cow<'a, str>>,
}

impl<'de> LenientFields<'de> for Adressering<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "adresregel1" => self.adresregel1 = map.next_value::<LenientStr<'de>>()?.0,
            "adresregel2" => self.adresregel2 = map.next_value::<LenientStr<'de>>()?.0,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// BRP `naam`: the surname.
#[derive(Default)]
struct Naam<'a> {
    geslachtsnaam: Option<Cow<'a, str>>,
}

impl<'de> LenientFields<'de> for Naam<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        if key != "geslachtsnaam" {
            return Ok(false);
        }
        self.geslachtsnaam = map.next_value::<LenientStr<'de>>()?.0;
        Ok(true)
    }
}

/// BRP `geboorte`: the birth date (an `AbstractDatum`).
#[derive(Default)]
struct Geboorte<'a> {
    datum: Option<Lenient<Datum<'a>>>,
}

impl<'de> LenientFields<'de> for Geboorte<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        if key != "datum" {
            return Ok(false);
        }
        self.datum = Some(map.next_value()?);
        Ok(true)
    }
}

/// A BRP `AbstractDatum`: its `type` and, for `Datum`, the date.
#[derive(Default)]
struct Datum<'a> {
    kind: Option<Cow<'a, str>>,
    datum: Option<Cow<'a, str>>,
}

impl<'de> LenientFields<'de> for Datum<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "type" => self.kind = map.next_value::<LenientStr<'de>>()?.0,
            "datum" => self.datum = map.next_value::<LenientStr<'de>>()?.0,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The `postcode:` key of a BRP `adressering` (`adresregel1` "Herengracht 502 A-2",
/// `adresregel2` "1017 CB  AMSTERDAM"): the postcode opens line 2, the house number is the last
/// token of line 1 after the street that starts with a digit and is followed by at most two
/// short tokens (huisletter, toevoeging), or the number before it when both are plain numbers
/// (`12 2`). `None` when the lines do not have that shape: the person then matches no address.
pub fn address_lines_key(regel1: &str, regel2: &str) -> Option<String> {
    let r2 = regel2.trim();
    let pc = if r2.len() >= 7 && r2.as_bytes().get(4) == Some(&b' ') {
        r2.get(..7)
    } else {
        r2.get(..6)
    }?;
    let tokens: Vec<&str> = regel1.split_whitespace().collect();
    let numeric = |t: &str| t.starts_with(|c: char| c.is_ascii_digit());
    let mut i = (1..tokens.len()).rev().find(|&i| {
        numeric(tokens[i])
            && tokens.len() - i - 1 <= 2
            && tokens[i + 1..].iter().all(|t| t.len() <= 5)
    })?;
    // `Kerkstraat 12 2`: a short number after a house number is its toevoeging.
    if i >= 2 && tokens[i].len() <= 4 && tokens[i - 1].bytes().all(|b| b.is_ascii_digit()) {
        i -= 1;
    }
    let tok = tokens[i];
    let digits = tok.bytes().take_while(u8::is_ascii_digit).count();
    let nr: u32 = tok.get(..digits)?.parse().ok()?;
    // A letter right after the number, or alone in the next token, is the huisletter (`12A`,
    // `12 a-3`); what follows a hyphen or comes after that is the toevoeging (`301-2`, `1001-H`).
    let mut letter: Option<String> = None;
    let mut toev: Vec<String> = Vec::new();
    let mut take = |part: &str, first: bool| {
        let mut rest = part;
        if letter.is_none() && toev.is_empty() && (first || !rest.starts_with('-')) {
            let mut chars = rest.chars();
            if let Some(c) = chars.next()
                && c.is_ascii_alphabetic()
                && chars.next().is_none_or(|n| n == '-')
            {
                letter = Some(c.to_string());
                rest = &rest[1..];
            }
        }
        let rest = rest.trim_start_matches('-');
        if !rest.is_empty() {
            toev.push(rest.to_string());
        }
    };
    take(tok.get(digits..)?, true);
    for t in &tokens[i + 1..] {
        take(t, false);
    }
    let toev = toev.join(" ");
    let letter = letter.as_deref();
    keys::postcode(
        pc,
        nr,
        letter,
        Some(toev.as_str()).filter(|t| !t.is_empty()),
    )
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

    fn bsns(a: &Answer<'_>) -> Vec<Option<String>> {
        a.persons
            .iter()
            .map(|p| p.bsn.as_ref().map(|b| b.as_str().to_string()))
            .collect()
    }

    fn released(body: &[u8], action: Action, fields: &[String], keep: &[bool]) -> Value {
        let a = read(action, body).unwrap();
        serde_json::from_slice(&a.release_body(fields, keep).unwrap().unwrap()).unwrap()
    }

    /// The tree-based minimisation this module used before it read raw text: the results must
    /// be the same JSON (entries that are not objects are never passed on).
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
        let list = doc["personen"].as_array_mut().unwrap();
        list.retain(Value::is_object);
        for p in list {
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
            let got = released(body, Action::BRP_SEARCH, &fields, &[true; 5]);
            assert_eq!(got, reference(body, &fields), "fields {fields:?}");
        }
        // Five entries, three of them not persons: nobody identifies those.
        let a = read(Action::BRP_SEARCH, body).unwrap();
        assert_eq!(
            bsns(&a),
            vec![
                Some("999993653".into()),
                Some("999990639".into()),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn withheld_persons_are_removed_and_the_others_kept_in_order() {
        let body = br#"{"type":"ZoekMetPostcodeEnHuisnummer","personen":[
            {"burgerservicenummer":"999993653","naam":{"voornamen":"A"}},
            {"burgerservicenummer":"999990639","naam":{"voornamen":"B"}},
            {"burgerservicenummer":"999991802","naam":{"voornamen":"C"}}]}"#;
        let fields = vec!["naam".to_string()];
        let v = released(body, Action::BRP_SEARCH, &fields, &[false, true, true]);
        let names: Vec<&str> = v["personen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["naam"]["voornamen"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["B", "C"]);
        assert!(!v.to_string().contains("999993653"));
        let v = released(body, Action::BRP_SEARCH, &fields, &[false, false, false]);
        assert_eq!(v["personen"], serde_json::json!([]));
        assert_eq!(v["type"], "ZoekMetPostcodeEnHuisnummer");
        // A missing keep entry withholds.
        let v = released(body, Action::BRP_SEARCH, &fields, &[true]);
        assert_eq!(v["personen"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn minimised_values_are_passed_on_exactly_as_the_registry_wrote_them() {
        let body = br#"{"personen":[{"burgerservicenummer":"999993653","naam":{"voornamen":"Ren\u00e9",
            "nummer":12345678901234567890123,"factor":1.50}},{"burgerservicenummer":"999990639"}],"type":"x"}"#;
        let a = read(Action::BRP_LOOKUP, body).unwrap();
        let out = a
            .release_body(&["naam".to_string()], &[true, true])
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out).unwrap();
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
        let a = read(Action::BRP_SEARCH, body).unwrap();
        assert_eq!(bsns(&a), vec![Some("999990639".into())]);
        let v = released(body, Action::BRP_SEARCH, &["naam".to_string()], &[true]);
        assert_eq!(v["personen"][0]["naam"]["voornamen"], "B");
    }

    #[test]
    fn holder_bsn_is_found_up_to_the_depth_limit_and_deeper_json_still_validated() {
        let nest = |levels: usize, bsn: &str| {
            let mut s = format!(r#"{{"burgerservicenummer":"{bsn}"}}"#);
            for _ in 0..levels {
                s = format!(r#"{{"a":[1,{s}]}}"#);
            }
            s
        };
        // Level 16 (an object inside 8 object+array pairs) is searched; deeper is not.
        let body = nest(8, "999991802");
        let a = read(Action::RDW_HOLDER, body.as_bytes()).unwrap();
        assert_eq!(bsns(&a), vec![Some("999991802".into())]);
        let body = nest(9, "999991802");
        assert!(
            read(Action::RDW_HOLDER, body.as_bytes())
                .unwrap()
                .persons
                .is_empty()
        );
        // A vehicle answer names no holder to decide on.
        let body = nest(1, "999991802");
        assert!(
            read(Action::RDW_VEHICLE, body.as_bytes())
                .unwrap()
                .persons
                .is_empty()
        );
        // Invalid JSON deep inside, or after the value, is refused.
        assert!(read(Action::RDW_HOLDER, br#"{"a":[{"b":[1,]}]}"#).is_err());
        assert!(read(Action::RDW_HOLDER, br#"{"a":1} x"#).is_err());
        // An invalid BSN is no person.
        let a = read(
            Action::RDW_HOLDER,
            br#"{"houder":{"burgerservicenummer":"123456789"}}"#,
        )
        .unwrap();
        assert!(a.persons.is_empty());
        // An opaque answer is passed on as it came.
        assert!(a.release_body(&[], &[]).unwrap().is_none());
    }

    #[test]
    fn fields_are_minimised_and_automatic_fields_kept() {
        let body = br#"{"type":"RaadpleegMetBurgerservicenummer","personen":[
            {"burgerservicenummer":"999993653","naam":{"voornamen":"Jan","geslachtsnaam":"Jansen"},
             "geboorte":{"datum":"1980"},"geheimhoudingPersoonsgegevens":true}]}"#;
        let fields = vec!["naam.voornamen".to_string()];
        let a = read(Action::BRP_LOOKUP, body).unwrap();
        assert_eq!(bsns(&a), vec![Some("999993653".into())]);
        assert!(a.persons[0].secret);
        let v = released(body, Action::BRP_LOOKUP, &fields, &[true]);
        let p = &v["personen"][0];
        assert_eq!(p["naam"]["voornamen"], "Jan");
        assert!(p["naam"].get("geslachtsnaam").is_none());
        assert!(p.get("geboorte").is_none());
        assert!(p.get("burgerservicenummer").is_none());
        assert_eq!(p["geheimhoudingPersoonsgegevens"], true);
    }

    /// `answer_person` as it was written over `serde_json::Value` trees: the reference the
    /// borrowed readers must agree with.
    fn answer_person_by_value(p: &RawObject<'_>) -> AnswerPerson {
        let value = |name: &str| -> Option<Value> {
            p.get(name)
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        };
        let bsn = p
            .get("burgerservicenummer")
            .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
            .and_then(|b| Bsn::parse(&b).ok());
        let secret = match value("geheimhoudingPersoonsgegevens") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(_) => true,
        };
        let mut addresses = Vec::new();
        if let Some(v) = value("verblijfplaats") {
            let text = |path: &[&str]| -> Option<String> {
                let mut cur = &v;
                for k in path {
                    cur = cur.get(k)?;
                }
                cur.as_str().map(str::to_string)
            };
            if let Some(k) = text(&["adresseerbaarObjectIdentificatie"])
                .and_then(|s| keys::adresseerbaar_object(&s))
            {
                addresses.push(k);
            }
            if let Some(k) =
                text(&["nummeraanduidingIdentificatie"]).and_then(|s| keys::nummeraanduiding(&s))
            {
                addresses.push(k);
            }
            let adres = v.get("verblijfadres");
            let nr = adres
                .and_then(|a| a.get("huisnummer"))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            if let (Some(pc), Some(nr)) = (text(&["verblijfadres", "postcode"]), nr)
                && let Some(k) = keys::postcode(
                    &pc,
                    nr,
                    text(&["verblijfadres", "huisletter"]).as_deref(),
                    text(&["verblijfadres", "huisnummertoevoeging"]).as_deref(),
                )
            {
                addresses.push(k);
            }
        }
        if let Some(v) = value("adressering")
            && let (Some(r1), Some(r2)) = (
                v.get("adresregel1").and_then(Value::as_str),
                v.get("adresregel2").and_then(Value::as_str),
            )
            && let Some(k) = address_lines_key(r1, r2)
            && !addresses.contains(&k)
        {
            addresses.push(k);
        }
        let surname = value("naam").and_then(|n| {
            n.get("geslachtsnaam")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let born = value("geboorte").and_then(|g| {
            let d = g.get("datum")?;
            (d.get("type").and_then(Value::as_str) == Some("Datum"))
                .then(|| d.get("datum").and_then(Value::as_str).map(str::to_string))
                .flatten()
        });
        let name = surname.zip(born).and_then(|(s, d)| keys::name(&s, &d));
        AnswerPerson {
            bsn,
            secret,
            addresses,
            name,
        }
    }

    /// A small deterministic generator (xorshift64*), so the property test needs no crate.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }

        /// A JSON value for a member named like the BRP's, often of the expected type, often
        /// not: other types, escapes, repeated names, numbers at the edges, deep nesting.
        fn value(&mut self, depth: usize) -> String {
            let scalars = [
                "null",
                "true",
                "false",
                "0",
                "-0",
                "0.0",
                "-0.0",
                "7",
                "1.5",
                "-3",
                "1e3",
                "502",
                "4294967296",
                "18446744073709551615",
                "18446744073709551616",
                r#""1017 CB""#,
                r#""1017cb""#,
                r#""a""#,
                r#""A-2""#,
                r#""Datum""#,
                r#""JaarDatum""#,
                r#""1980-01-01""#,
                r#""Dijk""#,
                r#""van Dijk""#,
                r#""0363010000502001""#,
                r#""0363200000502001""#,
                r#""\u0044ijk""#,
                r#""Herengracht 502 A-2""#,
                r#""1017 CB  AMSTERDAM""#,
                r#""Kerkstraat 12 2""#,
                r#""1234 AB  DORP""#,
                r#""""#,
                r#""\ud800""#,
            ];
            let names = [
                "verblijfadres",
                "postcode",
                "huisnummer",
                "huisletter",
                "huisnummertoevoeging",
                "adresseerbaarObjectIdentificatie",
                "nummeraanduidingIdentificatie",
                "adresregel1",
                "adresregel2",
                "geslachtsnaam",
                "datum",
                "type",
                "other",
                "p\\u006fstcode",
            ];
            match self.next() % 10 {
                0 if depth < 4 => {
                    let n = self.next() % 4;
                    let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                    format!("[{}]", items.join(","))
                }
                1..=4 if depth < 4 => {
                    let n = self.next() % 6;
                    let members: Vec<String> = (0..n)
                        .map(|_| {
                            let k = self.pick(&names);
                            format!("\"{k}\":{}", self.value(depth + 1))
                        })
                        .collect();
                    format!("{{{}}}", members.join(","))
                }
                5 if self.next().is_multiple_of(20) => {
                    // Deeper than serde_json's recursion limit.
                    format!("{}{}", "[".repeat(130), "]".repeat(130))
                }
                _ => self.pick(&scalars).to_string(),
            }
        }
    }

    #[test]
    fn person_facts_read_borrowed_agree_with_the_value_tree_reading() {
        let members = [
            "burgerservicenummer",
            "geheimhoudingPersoonsgegevens",
            "verblijfplaats",
            "adressering",
            "naam",
            "geboorte",
        ];
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut with_facts = 0;
        for _ in 0..20_000 {
            let n = 1 + g.next() % 8;
            let body: Vec<String> = (0..n)
                .map(|_| {
                    let k = g.pick(&members);
                    let v = if k == "burgerservicenummer" {
                        g.pick(&[r#""999993653""#, r#""123""#, "7"]).to_string()
                    } else {
                        g.value(0)
                    };
                    format!("\"{k}\":{v}")
                })
                .collect();
            let text = format!("{{{}}}", body.join(","));
            let Ok(MaybeObject(Some(obj))) = serde_json::from_str::<MaybeObject<'_>>(&text) else {
                continue;
            };
            let want = answer_person_by_value(&obj);
            assert_eq!(answer_person(&obj), want, "{text}");
            with_facts +=
                usize::from(want.secret || !want.addresses.is_empty() || want.name.is_some());
        }
        assert!(
            with_facts > 1_000,
            "the generator reaches the facts: {with_facts}"
        );
    }

    #[test]
    fn person_facts_read_from_hand_written_shapes_agree_with_the_value_tree_reading() {
        let cases = [
            r#"{"verblijfplaats":{"verblijfadres":{"postcode":"1017 CB","huisnummer":502,"huisletter":"a"}}}"#,
            r#"{"verblijfplaats":{"verblijfadres":{"postcode":"1017 CB","huisnummer":502.0}}}"#,
            r#"{"verblijfplaats":{"verblijfadres":{"postcode":"1017 CB","huisnummer":4294967296}}}"#,
            r#"{"verblijfplaats":{"verblijfadres":{"postcode":"1017 CB","huisnummer":1},"verblijfadres":7}}"#,
            r#"{"verblijfplaats":{"verblijfadres":{"p\u006fstcode":"1017 CB","huisnummer":1}}}"#,
            r#"{"verblijfplaats":{"verblijfadres":{"postcode":"1017 CB","huisnummer":1,"x":[[[[]]]]}}}"#,
            r#"{"naam":{"geslachtsnaam":"D\u0133k"},"geboorte":{"datum":{"type":"Datum","datum":"1980-01-01"}}}"#,
            r#"{"naam":{"geslachtsnaam":"Dijk"},"geboorte":{"datum":{"datum":"1980-01-01","type":"Datum"}}}"#,
            r#"{"naam":{"geslachtsnaam":"Dijk"},"geboorte":{"datum":"1980-01-01"}}"#,
            r#"{"geheimhoudingPersoonsgegevens":-0.0}"#,
            r#"{"geheimhoudingPersoonsgegevens":[]}"#,
            r#"{"geheimhoudingPersoonsgegevens":{}}"#,
        ];
        for text in cases {
            let obj = serde_json::from_str::<MaybeObject<'_>>(text)
                .unwrap()
                .0
                .unwrap();
            assert_eq!(answer_person(&obj), answer_person_by_value(&obj), "{text}");
        }
        let deep = format!(
            r#"{{"verblijfplaats":{{"adresseerbaarObjectIdentificatie":"0363010000502001","x":{}{}}}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        let obj = serde_json::from_str::<MaybeObject<'_>>(&deep)
            .unwrap()
            .0
            .unwrap();
        assert_eq!(answer_person(&obj), answer_person_by_value(&obj));
        assert!(
            answer_person(&obj).addresses.is_empty(),
            "too deep for a tree: absent"
        );
    }

    #[test]
    fn secrecy_marker_counts_unless_false_zero_or_absent() {
        let secret = |marker: &str| {
            let body = format!(r#"{{"personen":[{{"burgerservicenummer":"999993653"{marker}}}]}}"#);
            read(Action::BRP_LOOKUP, body.as_bytes()).unwrap().persons[0].secret
        };
        assert!(!secret(""));
        assert!(!secret(r#","geheimhoudingPersoonsgegevens":false"#));
        assert!(!secret(r#","geheimhoudingPersoonsgegevens":0"#));
        assert!(!secret(r#","geheimhoudingPersoonsgegevens":null"#));
        assert!(secret(r#","geheimhoudingPersoonsgegevens":true"#));
        assert!(secret(r#","geheimhoudingPersoonsgegevens":7"#));
        assert!(secret(r#","geheimhoudingPersoonsgegevens":"ja""#));
    }

    #[test]
    fn address_and_name_keys_are_read_from_the_answer() {
        let body = br#"{"personen":[{"burgerservicenummer":"999993653",
            "naam":{"geslachtsnaam":"Dijk","voorvoegsel":"van"},
            "geboorte":{"datum":{"type":"Datum","datum":"1980-01-01"}},
            "verblijfplaats":{"type":"Adres","verblijfadres":{"postcode":"1017 cb","huisnummer":502,
              "huisletter":"a"},"adresseerbaarObjectIdentificatie":"0363010000502001",
              "nummeraanduidingIdentificatie":"0363200000502001"}},
            {"burgerservicenummer":"999990639","geboorte":{"datum":{"type":"JaarDatum","jaar":1980}},
             "naam":{"geslachtsnaam":"Dijk"},
             "adressering":{"adresregel1":"Herengracht 502","adresregel2":"1017 CB  AMSTERDAM"}}]}"#;
        let a = read(Action::BRP_SEARCH, body).unwrap();
        assert_eq!(
            a.persons[0].addresses,
            vec![
                "aoid:0363010000502001".to_string(),
                "naid:0363200000502001".into(),
                "postcode:1017CB:502:A:".into()
            ]
        );
        assert_eq!(a.persons[0].name.as_deref(), Some("dijk:1980-01-01"));
        assert_eq!(
            a.persons[1].addresses,
            vec!["postcode:1017CB:502::".to_string()]
        );
        // Only a whole date gives a name key.
        assert_eq!(a.persons[1].name, None);
    }

    #[test]
    fn address_lines_give_the_postcode_key() {
        let k = |r1: &str, r2: &str| address_lines_key(r1, r2);
        assert_eq!(
            k("Herengracht 502", "1017 CB  AMSTERDAM").as_deref(),
            Some("postcode:1017CB:502::")
        );
        assert_eq!(
            k("Herengracht 502 A", "1017CB AMSTERDAM").as_deref(),
            Some("postcode:1017CB:502:A:")
        );
        assert_eq!(
            k("Kerkstraat 12-2", "1234 AB  DORP").as_deref(),
            Some("postcode:1234AB:12::2")
        );
        assert_eq!(
            k("Kerkstraat 12 a-3", "1234 AB  DORP").as_deref(),
            Some("postcode:1234AB:12:A:3")
        );
        assert_eq!(
            k("Laan 1940-1945 7", "1234 AB  DORP").as_deref(),
            Some("postcode:1234AB:7::")
        );
        assert_eq!(
            k("Dorpsstraat 3 bis", "1234 AB  DORP").as_deref(),
            Some("postcode:1234AB:3::BIS")
        );
        assert_eq!(
            k("Kerkstraat 12 2", "1234 AB  DORP").as_deref(),
            Some("postcode:1234AB:12::2")
        );
        assert_eq!(
            k("Kinkerstraat 12A", "1053 DZ  AMSTERDAM").as_deref(),
            Some("postcode:1053DZ:12:A:")
        );
        assert_eq!(
            k("Bijlmerdreef 1001-H", "1103 TV  AMSTERDAM").as_deref(),
            Some("postcode:1103TV:1001::H")
        );
        assert_eq!(k("Herengracht", "1017 CB  AMSTERDAM"), None);
        assert_eq!(k("Herengracht 502", "AMSTERDAM"), None);
        assert_eq!(k("502", "1017 CB"), None);
    }

    #[test]
    fn garbage_brp_answer_is_an_error() {
        assert!(read(Action::BRP_SEARCH, b"<html>").is_err());
        assert!(read(Action::BRP_SEARCH, b"{}").is_err());
        assert!(read(Action::BRP_SEARCH, br#"{"personen":{}}"#).is_err());
    }

    #[test]
    fn holder_answer_names_the_holder() {
        let body =
            br#"{"kenteken":"XX999X","houder":{"burgerservicenummer":"999991802","naam":"P"}}"#;
        let a = read(Action::RDW_HOLDER, body).unwrap();
        assert_eq!(bsns(&a), vec![Some("999991802".into())]);
    }

    #[test]
    fn unreadable_rdw_answer_is_an_error_not_passed_on() {
        // Truncated JSON that a lenient client could still read a holder from.
        let body =
            br#"{"kenteken":"XX999X","houder":{"burgerservicenummer":"999991802","naam":"P""#;
        assert!(read(Action::RDW_HOLDER, body).is_err());
        assert!(read(Action::RDW_VEHICLE, b"{\"type\":[").is_err());
        assert!(read(Action::RDW_VEHICLE, b"<html>").is_err());
    }
}
