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
    /// The case's URL in a ZGW Zaken API, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
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

/// The Cedar actions the gate asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "brp:lookup")]
    BrpLookup,
    #[serde(rename = "brp:search")]
    BrpSearch,
    #[serde(rename = "rdw:vehicle")]
    RdwVehicle,
    #[serde(rename = "rdw:holder")]
    RdwHolder,
}

impl Action {
    /// The action id as written in policies and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::BrpLookup => "brp:lookup",
            Action::BrpSearch => "brp:search",
            Action::RdwVehicle => "rdw:vehicle",
            Action::RdwHolder => "rdw:holder",
        }
    }

    /// Parses an action id.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "brp:lookup" => Some(Action::BrpLookup),
            "brp:search" => Some(Action::BrpSearch),
            "rdw:vehicle" => Some(Action::RdwVehicle),
            "rdw:holder" => Some(Action::RdwHolder),
            _ => None,
        }
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
