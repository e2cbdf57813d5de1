//! Purpose: the case (or break-glass reason) a request is bound to, and the case registry.
//!
//! Guarantees: purpose headers are read exactly once each (a repeated header is refused, never
//! "first wins"); a case id is a short token of safe characters; a break-glass reason has at
//! least 20 characters. Cases come from a `CaseRegistry`; the JSON-file registry serves an
//! immutable snapshot and swaps in a new one when the file changes and is valid.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderMap;
use serde::Deserialize;

use crate::config::HeadersConfig;
use crate::error::GateError;
use crate::model::{Case, Kenteken, Purpose};

/// Shortest break-glass reason accepted.
pub const MIN_BREAK_GLASS_REASON: usize = 20;
const MAX_CASE_ID: usize = 64;
const MAX_FREE_TEXT: usize = 500;

/// Reads the purpose headers.
pub fn parse_purpose(headers: &HeaderMap, names: &HeadersConfig) -> Result<Purpose, GateError> {
    let case_id = single(headers, &names.case_id)?;
    let break_glass = single(headers, &names.break_glass)?;
    let doelbinding = single(headers, &names.doelbinding)?;
    let verwerking = single(headers, &names.verwerking)?;

    if let Some(id) = &case_id {
        let ok = !id.is_empty()
            && id.len() <= MAX_CASE_ID
            && id.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')
            });
        if !ok {
            return Err(GateError::InvalidPurpose {
                code: "invalidCaseId",
                header: names.case_id.to_string(),
                message: format!(
                    "`{}` is not a case id: expected up to {MAX_CASE_ID} letters, digits or `-_.:/`",
                    crate::model::truncate_for_message(id)
                ),
            });
        }
    }
    if let Some(reason) = &break_glass
        && reason.trim().chars().count() < MIN_BREAK_GLASS_REASON
    {
        return Err(GateError::InvalidPurpose {
            code: "breakGlassReasonTooShort",
            header: names.break_glass.to_string(),
            message: format!(
                "a break-glass reason needs at least {MIN_BREAK_GLASS_REASON} characters"
            ),
        });
    }
    Ok(Purpose {
        case_id,
        break_glass_reason: break_glass.map(|r| r.trim().to_string()),
        doelbinding,
        verwerking,
    })
}

/// The value of a header that may appear at most once, as trimmed UTF-8 text.
fn single(headers: &HeaderMap, name: &str) -> Result<Option<String>, GateError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GateError::InvalidPurpose {
            code: "invalidPurposeHeader",
            header: name.to_string(),
            message: format!("header `{name}` appears more than once"),
        });
    }
    let text = std::str::from_utf8(first.as_bytes()).map_err(|_| GateError::InvalidPurpose {
        code: "invalidPurposeHeader",
        header: name.to_string(),
        message: format!("header `{name}` is not valid UTF-8"),
    })?;
    let text = text.trim();
    if text.chars().any(char::is_control) || text.chars().count() > MAX_FREE_TEXT {
        return Err(GateError::InvalidPurpose {
            code: "invalidPurposeHeader",
            header: name.to_string(),
            message: format!(
                "header `{name}` has control characters or more than {MAX_FREE_TEXT} characters"
            ),
        });
    }
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(text.to_string()))
}

/// The case registry did not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("case registry: {0}")]
pub struct CaseRegistryError(pub String);

/// A boxed future returned by `CaseRegistry::lookup`.
pub type CaseFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Arc<Case>>, CaseRegistryError>> + Send + 'a>>;

/// Where cases come from: a JSON file, or a ZGW Zaken API.
pub trait CaseRegistry: Send + Sync {
    /// The case with this id; `Ok(None)` when the registry does not know it.
    fn lookup<'a>(&'a self, case_id: &'a str) -> CaseFuture<'a>;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

/// Parses and checks a case file's text; errors name the case and what is wrong.
pub fn parse_case_file(text: &str) -> Result<HashMap<String, Arc<Case>>, String> {
    let file: CaseFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut map = HashMap::with_capacity(file.cases.len());
    for mut case in file.cases {
        let mut vehicles = Vec::with_capacity(case.vehicles.len());
        for v in &case.vehicles {
            let k = Kenteken::parse(v).map_err(|e| format!("case `{}`: {e}", case.id))?;
            vehicles.push(k.as_str().to_string());
        }
        case.vehicles = vehicles;
        for s in &case.subjects {
            crate::model::Bsn::parse(s).map_err(|e| format!("case `{}`: {e}", case.id))?;
        }
        for (i, a) in case.addresses.iter().enumerate() {
            if a.keys().is_empty() {
                return Err(format!(
                    "case `{}`: `addresses[{i}]` names no address: give a BAG id (16 digits), \
                     `postcode` and `huisnummer`, or `straat`, `huisnummer` and `gemeente`",
                    case.id
                ));
            }
        }
        for (i, p) in case.persons.iter().enumerate() {
            if p.key().is_none() {
                return Err(format!(
                    "case `{}`: `persons[{i}]` needs a `geslachtsnaam` with letters and a \
                     `geboortedatum` `yyyy-mm-dd`",
                    case.id
                ));
            }
            if let Some(b) = &p.bsn {
                crate::model::Bsn::parse(b).map_err(|e| format!("case `{}`: {e}", case.id))?;
            }
        }
        if let Some(closes) = case.closes
            && closes < case.opened
        {
            return Err(format!("case `{}`: `closes` is before `opened`", case.id));
        }
        let id = case.id.clone();
        if map.insert(id.clone(), Arc::new(case)).is_some() {
            return Err(format!("case `{id}` appears more than once"));
        }
    }
    Ok(map)
}

/// File fingerprint used to notice changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let md = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: md.modified().ok(),
        len: md.len(),
    })
}

/// Cases from a JSON file, reloaded when the file changes.
pub struct JsonFileCases {
    path: PathBuf,
    snapshot: ArcSwap<HashMap<String, Arc<Case>>>,
    stamp: std::sync::Mutex<Option<Stamp>>,
}

impl JsonFileCases {
    /// Loads the file; an unreadable or invalid file is an error naming it.
    pub fn load(path: &Path) -> Result<Arc<JsonFileCases>, String> {
        let st = stamp(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read case file `{}`: {e}", path.display()))?;
        let map =
            parse_case_file(&text).map_err(|e| format!("case file `{}`: {e}", path.display()))?;
        Ok(Arc::new(JsonFileCases {
            path: path.to_path_buf(),
            snapshot: ArcSwap::from_pointee(map),
            stamp: std::sync::Mutex::new(st),
        }))
    }

    /// Number of cases in the current snapshot.
    pub fn len(&self) -> usize {
        self.snapshot.load().len()
    }

    /// Whether the current snapshot is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reloads when the file changed. Returns `Ok(true)` when a new snapshot was swapped in;
    /// an invalid file keeps the old snapshot and returns the error.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.path);
        {
            let Ok(mut last) = self.stamp.lock() else {
                return Err("case file state is unavailable".into());
            };
            if *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read case file `{}`: {e}", self.path.display()))?;
        let map = parse_case_file(&text)
            .map_err(|e| format!("case file `{}`: {e}", self.path.display()))?;
        self.snapshot.store(Arc::new(map));
        Ok(true)
    }

    /// Polls the file every `interval` until the returned task is aborted.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match me.reload_if_changed() {
                    Ok(true) => tracing::info!(cases = me.len(), "case file reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "case file not reloaded; keeping the previous cases")
                    }
                }
            }
        })
    }
}

impl CaseRegistry for JsonFileCases {
    fn lookup<'a>(&'a self, case_id: &'a str) -> CaseFuture<'a> {
        let found = self.snapshot.load().get(case_id).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn names() -> HeadersConfig {
        HeadersConfig::default()
    }

    #[test]
    fn case_header_is_read() {
        let mut h = HeaderMap::new();
        h.insert("x-case-id", HeaderValue::from_static("Z-2026-000123"));
        h.insert("x-doelbinding", HeaderValue::from_static("PV-parkeren"));
        let p = parse_purpose(&h, &names()).unwrap();
        assert_eq!(p.case_id.as_deref(), Some("Z-2026-000123"));
        assert_eq!(p.doelbinding.as_deref(), Some("PV-parkeren"));
        assert_eq!(p.break_glass_reason, None);
    }

    #[test]
    fn repeated_case_header_is_refused() {
        let mut h = HeaderMap::new();
        h.append("x-case-id", HeaderValue::from_static("Z-1"));
        h.append("x-case-id", HeaderValue::from_static("Z-2"));
        let e = parse_purpose(&h, &names()).unwrap_err();
        assert_eq!(e.code(), "invalidPurposeHeader");
    }

    #[test]
    fn short_break_glass_reason_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-break-glass", HeaderValue::from_static("urgent"));
        assert_eq!(
            parse_purpose(&h, &names()).unwrap_err().code(),
            "breakGlassReasonTooShort"
        );
        h.insert(
            "x-break-glass",
            HeaderValue::from_static("life-threatening situation reported by police"),
        );
        assert!(
            parse_purpose(&h, &names())
                .unwrap()
                .break_glass_reason
                .is_some()
        );
    }

    #[test]
    fn odd_case_id_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-case-id", HeaderValue::from_static("Z 1; drop"));
        assert_eq!(
            parse_purpose(&h, &names()).unwrap_err().code(),
            "invalidCaseId"
        );
    }

    #[test]
    fn case_file_is_checked_and_kentekens_normalised() {
        let ok = r#"{"cases":[{"id":"Z-1","type":"parkeervergunning","status":"open",
            "opened":"2026-11-01T00:00:00Z","closes":"2027-01-31T00:00:00Z","organization":"0363",
            "handlers":["emp-042"],"subjects":["999993653"],"vehicles":["xx-999-x"]}]}"#;
        let map = parse_case_file(ok).unwrap();
        assert_eq!(map["Z-1"].vehicles, vec!["XX999X".to_string()]);
        let bad_bsn = ok.replace("999993653", "123456789");
        assert!(parse_case_file(&bad_bsn).unwrap_err().contains("Z-1"));
        let unknown_key = ok.replace("\"handlers\"", "\"handler\"");
        assert!(parse_case_file(&unknown_key).is_err());
    }

    #[test]
    fn case_addresses_and_persons_are_checked_on_load() {
        let case = |extra: &str| {
            format!(
                r#"{{"cases":[{{"id":"Z-1","type":"t","status":"open","opened":"2026-01-01T00:00:00Z",
                "organization":"0363","handlers":[],"subjects":[],"vehicles":[]{extra}}}]}}"#
            )
        };
        let ok = parse_case_file(&case(
            r#","addresses":[{"postcode":"1017 cb","huisnummer":502},{"nummeraanduidingIdentificatie":"0363200000502001"}],
               "persons":[{"geslachtsnaam":"van Dijk","geboortedatum":"1980-01-01"}]"#,
        ))
        .unwrap();
        assert_eq!(
            ok["Z-1"].addresses[0].keys(),
            vec!["postcode:1017CB:502::".to_string()]
        );
        assert_eq!(
            ok["Z-1"].persons[0].key().as_deref(),
            Some("dijk:1980-01-01")
        );
        let err = parse_case_file(&case(r#","addresses":[{"huisnummer":502}]"#)).unwrap_err();
        assert!(err.contains("`addresses[0]` names no address"), "{err}");
        let err = parse_case_file(&case(
            r#","persons":[{"geslachtsnaam":"Dijk","geboortedatum":"1980-13-01"}]"#,
        ))
        .unwrap_err();
        assert!(err.contains("`persons[0]`"), "{err}");
        let err = parse_case_file(&case(
            r#","addresses":[{"postcode":"1017CB","huisnummer":1,"x":1}]"#,
        ))
        .unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[tokio::test]
    async fn case_file_reload_swaps_only_valid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.json");
        let one = r#"{"cases":[{"id":"Z-1","type":"t","status":"open","opened":"2026-11-01T00:00:00Z","organization":"0363"}]}"#;
        std::fs::write(&path, one).unwrap();
        let reg = JsonFileCases::load(&path).unwrap();
        assert!(reg.lookup("Z-1").await.unwrap().is_some());
        assert!(reg.lookup("Z-2").await.unwrap().is_none());

        std::fs::write(&path, one.replace("Z-1", "Z-2") + "  ").unwrap();
        assert_eq!(reg.reload_if_changed(), Ok(true));
        assert!(reg.lookup("Z-2").await.unwrap().is_some());
        assert!(reg.lookup("Z-1").await.unwrap().is_none());

        std::fs::write(&path, "{ not json").unwrap();
        assert!(reg.reload_if_changed().is_err());
        assert!(
            reg.lookup("Z-2").await.unwrap().is_some(),
            "old snapshot kept"
        );
    }
}
