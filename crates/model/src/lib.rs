//! Domain types shared by the stages: the employee, the case, the data subjects and the actions.
//!
//! These types carry no HTTP and no Cedar; each stage converts from and to them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The authenticated employee behind a request (from the JWT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Employee {
    /// Employee id (the `sub` claim by default).
    pub id: String,
    /// Organisation code, e.g. a CBS municipality code such as `0363`.
    pub org: String,
    /// Role names (the `roles` claim by default).
    pub roles: Vec<String>,
    /// Department (the `department` claim by default), when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

/// Whether a case is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseStatus {
    Open,
    Closed,
}

impl CaseStatus {
    /// The status as Cedar policies see it.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Closed => "closed",
        }
    }
}

/// A case (zaak) from the case registry: the purpose a lookup is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Case identification, e.g. `Z-2026-000123`.
    pub id: String,
    /// Case type id; a `Gate::CaseType` entity of the same id must exist.
    #[serde(rename = "type")]
    pub case_type: String,
    pub status: CaseStatus,
    pub opened: DateTime<Utc>,
    /// End of the case window; `None` means open-ended.
    #[serde(default)]
    pub closes: Option<DateTime<Utc>>,
    pub organization: String,
    #[serde(default)]
    pub handlers: Vec<String>,
    /// BSNs of the persons the case is about.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Kentekens of the vehicles the case is about (normalised).
    #[serde(default)]
    pub vehicles: Vec<String>,
    /// Addresses the case is about: an address search, and the residents it finds, are only
    /// released when the case names the address (ZGW zaakobjecten of type `adres`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<CaseAddress>,
    /// Natural persons the case names by name and birth date (ZGW rollen of type
    /// `natuurlijk_persoon`): a name search releases a person the case names this way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persons: Vec<CasePerson>,
    /// The case's URL in a ZGW Zaken API, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// An address a case names. Any combination of identifications may be given; each one given
/// is compared on its own (see [`CaseAddress::keys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaseAddress {
    /// BAG id of the adresseerbaar object (16 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adresseerbaar_object_identificatie: Option<String>,
    /// BAG id of the nummeraanduiding (16 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nummeraanduiding_identificatie: Option<String>,
    /// Postcode, `1234AB` or `1234 AB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huisnummer: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huisletter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huisnummertoevoeging: Option<String>,
    /// Street name (with `huisnummer` and `gemeente`: the street search's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub straat: Option<String>,
    /// Municipality code (4 digits) of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemeente: Option<String>,
}

impl CaseAddress {
    /// The address keys this address is known by (`Case.addresses` in Cedar): one per
    /// identification given (see [`keys`]).
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(k) = self
            .adresseerbaar_object_identificatie
            .as_deref()
            .and_then(keys::adresseerbaar_object)
        {
            out.push(k);
        }
        if let Some(k) = self
            .nummeraanduiding_identificatie
            .as_deref()
            .and_then(keys::nummeraanduiding)
        {
            out.push(k);
        }
        if let (Some(pc), Some(nr)) = (self.postcode.as_deref(), self.huisnummer)
            && let Some(k) = keys::postcode(
                pc,
                nr,
                self.huisletter.as_deref(),
                self.huisnummertoevoeging.as_deref(),
            )
        {
            out.push(k);
        }
        if let (Some(straat), Some(nr), Some(gemeente)) = (
            self.straat.as_deref(),
            self.huisnummer,
            self.gemeente.as_deref(),
        ) && let Some(k) = keys::straat(
            straat,
            nr,
            self.huisletter.as_deref(),
            self.huisnummertoevoeging.as_deref(),
            gemeente,
        ) {
            out.push(k);
        }
        out
    }
}

/// A natural person a case names by name and birth date.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CasePerson {
    /// The person's BSN, when the case records it (also listed in `subjects`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bsn: Option<String>,
    pub geslachtsnaam: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voorvoegsel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voornamen: Option<String>,
    /// `yyyy-mm-dd`.
    pub geboortedatum: String,
}

impl CasePerson {
    /// The name key this person is known by (`Case.persons` in Cedar), see [`keys::name`].
    pub fn key(&self) -> Option<String> {
        keys::name(&self.geslachtsnaam, &self.geboortedatum)
    }
}

/// Canonical keys under which policies compare addresses and persons: the case's side
/// (`Case.addresses`, `Case.persons`), the request's side (the searched address) and the
/// answer's side (where a person lives, their name and birth date, as the registry says) are
/// each reduced to the same strings, so that a policy compares them with `contains`.
///
/// - `aoid:<16 digits>`, `naid:<16 digits>`: BAG adresseerbaar object and nummeraanduiding;
/// - `postcode:<1234AB>:<huisnummer>:<HUISLETTER>:<TOEVOEGING>` (letter and toevoeging
///   uppercase, empty when absent: `postcode:1017CB:502::`);
/// - `straat:<street>:<huisnummer>:<HUISLETTER>:<TOEVOEGING>:<gemeente>` (street lowercase,
///   diacritics dropped, white space single);
/// - names: `<surname key>:<yyyy-mm-dd>`, the surname reduced as the shared-surname signal
///   does (voorvoegsels and diacritics dropped, lowercase; double names as `a-b`).
///
/// A value that is not well formed gives no key (so it can match nothing).
pub mod keys {
    use unicode_normalization::UnicodeNormalization;

    fn bag(s: &str) -> Option<&str> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit()) && s.bytes().any(|b| b != b'0'))
            .then_some(s)
    }

    /// `aoid:…` of a BAG adresseerbaar object id.
    pub fn adresseerbaar_object(id: &str) -> Option<String> {
        bag(id).map(|id| format!("aoid:{id}"))
    }

    /// `naid:…` of a BAG nummeraanduiding id.
    pub fn nummeraanduiding(id: &str) -> Option<String> {
        bag(id).map(|id| format!("naid:{id}"))
    }

    /// `1234AB` from `1234AB`, `1234 ab`; `None` for anything else.
    pub fn normal_postcode(pc: &str) -> Option<String> {
        let compact: String = pc.chars().filter(|c| *c != ' ').collect();
        let b = compact.as_bytes();
        (b.len() == 6
            && b[0] != b'0'
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4..].iter().all(u8::is_ascii_alphabetic))
        .then(|| compact.to_ascii_uppercase())
    }

    fn part(s: Option<&str>) -> Option<String> {
        let s = s.unwrap_or("").trim();
        (s.len() <= 8
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-'))
        .then(|| s.to_ascii_uppercase())
    }

    /// `postcode:…` key.
    pub fn postcode(
        pc: &str,
        huisnummer: u32,
        huisletter: Option<&str>,
        toevoeging: Option<&str>,
    ) -> Option<String> {
        let pc = normal_postcode(pc)?;
        if huisnummer == 0 {
            return None;
        }
        Some(format!(
            "postcode:{pc}:{huisnummer}:{}:{}",
            part(huisletter)?,
            part(toevoeging)?
        ))
    }

    /// Lowercase, diacritics dropped, runs of white space as one space, trimmed.
    fn text(s: &str) -> String {
        let folded: String = s
            .nfkd()
            .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
            .flat_map(char::to_lowercase)
            .collect();
        folded.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// `straat:…` key; `None` for a street with a wildcard or without letters.
    pub fn straat(
        straat: &str,
        huisnummer: u32,
        huisletter: Option<&str>,
        toevoeging: Option<&str>,
        gemeente: &str,
    ) -> Option<String> {
        let s = text(straat);
        if s.is_empty() || s.contains('*') || s.contains(':') || huisnummer == 0 {
            return None;
        }
        if gemeente.len() != 4 || !gemeente.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(format!(
            "straat:{s}:{huisnummer}:{}:{}:{gemeente}",
            part(huisletter)?,
            part(toevoeging)?
        ))
    }

    /// The name key of a person: surname key and birth date; `None` without a surname with
    /// letters or without a valid `yyyy-mm-dd` date.
    pub fn name(geslachtsnaam: &str, geboortedatum: &str) -> Option<String> {
        if geslachtsnaam.contains('*')
            || chrono::NaiveDate::parse_from_str(geboortedatum, "%Y-%m-%d").is_err()
            || geboortedatum.len() != 10
        {
            return None;
        }
        let surname: Vec<String> = super::names::surname_keys(geslachtsnaam)
            .into_iter()
            .collect();
        if surname.is_empty() {
            return None;
        }
        Some(format!("{}:{geboortedatum}", surname.join("-")))
    }
}

/// Dutch surnames reduced to comparable keys (the shared-surname signal, and the name keys of
/// release decisions): see [`names::surname_keys`].
pub mod names {
    use std::collections::BTreeSet;

    use unicode_normalization::UnicodeNormalization;

    /// Words that are voorvoegsels (surname prefixes) in the BRP, after normalisation
    /// (RvIG voorvoegseltabel, Dutch and the most common foreign ones).
    const VOORVOEGSELS: &[&str] = &[
        "aan", "af", "al", "am", "auf", "aus", "ben", "bij", "bin", "d", "da", "dal", "dalla",
        "das", "de", "degli", "dei", "del", "della", "dem", "den", "der", "des", "di", "die", "do",
        "don", "dos", "du", "el", "het", "i", "im", "in", "l", "la", "las", "le", "les", "lo",
        "los", "onder", "op", "over", "s", "t", "te", "ten", "ter", "tho", "thoe", "thor", "to",
        "toe", "tot", "uit", "uijt", "unter", "van", "ver", "vom", "von", "voor", "vor", "zu",
        "zum", "zur",
    ];

    /// The normalised word forms of `name`: diacritics dropped, lowercase, only letters and digits.
    fn words(part: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        for c in part.nfkd() {
            if unicode_normalization::char::is_combining_mark(c) {
                continue;
            }
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else if matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '.') {
                // `'t`, `d'Ancona`, `St.`: the apostrophe or dot ends a prefix word.
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            } else if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    }

    /// The keys of a surname as compared by the signal (see the module docs); empty for a name
    /// without letters.
    pub fn surname_keys(name: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        // `Berg, van der` (surname, then its voorvoegsels) is `van der Berg`.
        let name = name.split(',').next().unwrap_or_default();
        for part in name.split(['-', '\u{2010}', '\u{2013}']) {
            let w = words(part);
            let start = w
                .iter()
                .position(|x| !VOORVOEGSELS.contains(&x.as_str()))
                // A name of prefix words only (e.g. the surname `Van`) keeps its last word.
                .unwrap_or(w.len().saturating_sub(1));
            let key = w.get(start..).unwrap_or_default().join(" ");
            if !key.is_empty() {
                keys.insert(key);
            }
        }
        keys
    }
}

/// A Dutch citizen service number that passed the 11-proef.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bsn(String);

/// Why a string is not a BSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BsnError {
    #[error("`{0}` is not a BSN: a BSN has exactly 9 digits")]
    Shape(String),
    #[error("`{0}` is not a BSN: it fails the 11-proef")]
    Checksum(String),
}

impl Bsn {
    /// Parses a BSN: exactly nine ASCII digits passing the 11-proef
    /// (9A+8B+7C+6D+5E+4F+3G+2H-1I divisible by 11, and not all zeros).
    pub fn parse(s: &str) -> Result<Bsn, BsnError> {
        let b = s.as_bytes();
        if b.len() != 9 || !b.iter().all(u8::is_ascii_digit) {
            return Err(BsnError::Shape(truncate_for_message(s)));
        }
        let mut sum: i64 = 0;
        for (i, d) in b.iter().enumerate() {
            let v = i64::from(d - b'0');
            let w = if i == 8 { -1 } else { 9 - i as i64 };
            sum += w * v;
        }
        if sum % 11 != 0 || b.iter().all(|d| *d == b'0') {
            return Err(BsnError::Checksum(s.to_string()));
        }
        Ok(Bsn(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Dutch licence plate: 6 uppercase letters/digits without hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kenteken(String);

/// Why a string is not a kenteken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a kenteken: expected 6 letters or digits, hyphens allowed")]
pub struct KentekenError(pub String);

impl Kenteken {
    /// Normalises (uppercase, hyphens removed) and checks a kenteken.
    pub fn parse(s: &str) -> Result<Kenteken, KentekenError> {
        let mut out = String::with_capacity(6);
        for c in s.chars() {
            if c == '-' {
                continue;
            }
            if !c.is_ascii_alphanumeric() || out.len() >= 6 {
                return Err(KentekenError(truncate_for_message(s)));
            }
            out.push(c.to_ascii_uppercase());
        }
        if out.len() != 6 || s.starts_with('-') || s.ends_with('-') || s.contains("--") {
            return Err(KentekenError(truncate_for_message(s)));
        }
        Ok(Kenteken(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kenteken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cuts user input for use in a one-line message.
pub fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

/// A Cedar action the gate asks about, e.g. `brp:lookup`: named by the registry plug-in that
/// serves the request (`purpose_gate::registry`), and `release` for each person in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action(&'static str);

impl Action {
    /// BRP Personen `RaadpleegMetBurgerservicenummer`, one decision per BSN.
    pub const BRP_LOOKUP: Action = Action("brp:lookup");
    /// BRP Personen `ZoekMet…` searches.
    pub const BRP_SEARCH: Action = Action("brp:search");
    /// RDW vehicle facts.
    pub const RDW_VEHICLE: Action = Action("rdw:vehicle");
    /// RDW holder (tenaamstelling).
    pub const RDW_HOLDER: Action = Action("rdw:holder");
    /// The release of one person found in a registry's answer, decided before the answer
    /// leaves the gate (never a route's action).
    pub const RELEASE: Action = Action("release");

    /// An action with this id (a registry plug-in's own).
    pub const fn new(id: &'static str) -> Action {
        Action(id)
    }

    /// The action id as written in policies and the audit log.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The data subject of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A person, by BSN (`brp:lookup`).
    Person(Bsn),
    /// A search over persons (`brp:search`), named by the search type.
    PersonSearch(String),
    /// A vehicle, by kenteken (`rdw:vehicle`, `rdw:holder`).
    Vehicle(Kenteken),
}

impl Resource {
    /// The Cedar entity type name (without namespace) and id.
    pub fn type_and_id(&self) -> (&'static str, &str) {
        match self {
            Resource::Person(b) => ("Person", b.as_str()),
            Resource::PersonSearch(t) => ("PersonSearch", t.as_str()),
            Resource::Vehicle(k) => ("Vehicle", k.as_str()),
        }
    }
}

/// What a BRP search looks for (`context.search` in Cedar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub kind: SearchKind,
    /// The key of the searched address (see [`keys`]); empty for a name search, or for an
    /// address that has no key (a street with a wildcard).
    pub addresses: Vec<String>,
}

/// The two kinds of BRP search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// Postcode and house number, street and number, BAG ids.
    Address,
    /// Name and birth date, name and municipality.
    Name,
}

impl SearchKind {
    /// The kind as Cedar policies see it.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Address => "address",
            SearchKind::Name => "name",
        }
    }
}

/// What a registry's answer says of one person, for the release decision
/// (`ReleaseContext` in Cedar).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerPerson {
    /// The person's BSN, when the answer gives a valid one.
    pub bsn: Option<Bsn>,
    /// BRP `geheimhoudingPersoonsgegevens` above 0.
    pub secret: bool,
    /// Address keys of where the answer says the person lives (see [`keys`]).
    pub addresses: Vec<String>,
    /// Name key (surname and birth date) as the answer gives them.
    pub name: Option<String>,
}

/// The release of one person: the request's action and what the answer says.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The action of the request whose answer holds the person.
    pub request_action: Action,
    /// The request named this person and decided allow for it.
    pub named: bool,
    pub person: &'a AnswerPerson,
    /// Number of persons in the registry's answer.
    pub persons_in_answer: usize,
}

/// The purpose a request names: a case, or break-glass with a reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purpose {
    /// `X-Case-Id`.
    pub case_id: Option<String>,
    /// `X-Break-Glass` reason, when break-glass is asked for.
    pub break_glass_reason: Option<String>,
    /// `X-Doelbinding`, recorded and forwarded.
    pub doelbinding: Option<String>,
    /// `X-Verwerking`, recorded and forwarded.
    pub verwerking: Option<String>,
}

/// Counters the gate keeps per employee and hands to Cedar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub lookups_last_hour: i64,
    pub lookups_last_day: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rvig_test_bsns_pass_the_11_proef() {
        for b in ["999993653", "999990639", "999991802", "999993872"] {
            assert!(Bsn::parse(b).is_ok(), "{b}");
        }
    }

    #[test]
    fn bsn_with_wrong_checksum_or_shape_is_rejected() {
        assert!(matches!(
            Bsn::parse("999993654"),
            Err(BsnError::Checksum(_))
        ));
        assert!(matches!(Bsn::parse("12345678"), Err(BsnError::Shape(_))));
        assert!(matches!(Bsn::parse("99999365a"), Err(BsnError::Shape(_))));
        assert!(matches!(Bsn::parse("٩٩٩٩٩٣٦٥٣"), Err(BsnError::Shape(_))));
        assert!(matches!(
            Bsn::parse("000000000"),
            Err(BsnError::Checksum(_))
        ));
    }

    #[test]
    fn kenteken_is_normalised() {
        assert_eq!(
            Kenteken::parse("xx-999-x").map(|k| k.0),
            Ok("XX999X".into())
        );
        assert_eq!(Kenteken::parse("XX999X").map(|k| k.0), Ok("XX999X".into()));
        assert!(Kenteken::parse("XX999").is_err());
        assert!(Kenteken::parse("XX999XY").is_err());
        assert!(Kenteken::parse("XX 999X").is_err());
        assert!(Kenteken::parse("-XX999X").is_err());
        assert!(Kenteken::parse("ＸＸ999Ｘ").is_err());
    }
}
