//! Policy tests: runs `tests/*.json` files in the `cedar run-tests` format with the crate.
//!
//! The format and the pass rule are the CLI's (`cedar-policy-cli` `run_tests`): each file is a
//! JSON array of `{name?, request: {principal, action, resource, context}, entities, decision,
//! reason, num_errors}`; `entities` is an entity array or a path relative to the test file that
//! must stay inside the test file's directory. A case passes when the decision matches, every
//! listed `reason` policy id is among the determining policies, and the number of evaluation
//! errors is exactly `num_errors`; and, beyond the CLI, only when the gate's prepared evaluator
//! (the one that decides in production) and Cedar's `Authorizer` agree on the decision, the
//! determining policies and the errors. Requests, contexts and entities are validated against the
//! schema, as the CLI does when given `--schema`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Context, Entities, EntityUid, Request};
use serde::Deserialize;

use super::load::{at, json_msg, one_line, read_file};
use super::{PolicyEngine, PolicyInfo, PolicyLoadError};

/// The outcome of one test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCaseReport {
    /// The test file.
    pub file: PathBuf,
    /// The case's `name`, or `#N` (1-based) when it has none.
    pub name: String,
    pub passed: bool,
    /// Why the case failed: expected against actual decision, policies, reasons, errors.
    pub failure: Option<String>,
}

/// The outcome of all test files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub files: Vec<PathBuf>,
    pub cases: Vec<TestCaseReport>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// True when there is at least one case and every case passed.
    pub fn ok(&self) -> bool {
        !self.cases.is_empty() && self.failed() == 0
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut current: Option<&Path> = None;
        for c in &self.cases {
            if current != Some(c.file.as_path()) {
                writeln!(f, "{}", c.file.display())?;
                current = Some(c.file.as_path());
            }
            match &c.failure {
                None => writeln!(f, "  test {} ... ok", c.name)?,
                Some(why) => writeln!(f, "  test {} ... FAILED: {why}", c.name)?,
            }
        }
        write!(
            f,
            "results: {} passed, {} failed in {} file(s)",
            self.passed(),
            self.failed(),
            self.files.len()
        )
    }
}

// Unknown fields (and `name`, read separately) are ignored, as the CLI ignores them.
#[derive(Deserialize)]
struct RawCase {
    request: RawRequest,
    entities: serde_json::Value,
    decision: Expected,
    reason: Vec<String>,
    num_errors: usize,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    context: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Allow => "allow",
            Expected::Deny => "deny",
        })
    }
}

/// Runs every `*.json` file directly in `tests_dir`, sorted by name. A missing directory gives
/// an empty report; an unreadable or malformed file is an error naming the file and position.
pub(super) fn run(engine: &PolicyEngine, tests_dir: &Path) -> Result<TestReport, PolicyLoadError> {
    run_with(engine, tests_dir, &mut |_| {})
}

/// What one test case asked and which policies determined its answer (for coverage).
pub(super) struct Seen<'a> {
    /// `file.json: name`.
    pub label: String,
    pub request: &'a Request,
    pub entities: &'a Entities,
    pub determining: Vec<String>,
}

/// [`run`], handing every case that could be evaluated to `seen`.
pub(super) fn run_with(
    engine: &PolicyEngine,
    tests_dir: &Path,
    seen: &mut dyn FnMut(Seen<'_>),
) -> Result<TestReport, PolicyLoadError> {
    let mut report = TestReport::default();
    if !tests_dir.is_dir() {
        return Ok(report);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(tests_dir)
        .map_err(|e| {
            PolicyLoadError(format!(
                "cannot read test directory `{}`: {e}",
                tests_dir.display()
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut entity_files: HashMap<PathBuf, Result<Entities, String>> = HashMap::new();
    for file in files {
        let src = read_file(&file)?;
        let cases: Vec<serde_json::Value> = serde_json::from_str(&src.text).map_err(|e| {
            at(
                &file,
                e.line(),
                e.column(),
                &format!("expected a JSON array of test cases: {}", json_msg(&e)),
            )
        })?;
        let dir = file.parent().unwrap_or(Path::new("."));
        for (i, value) in cases.into_iter().enumerate() {
            let fallback = format!("#{}", i + 1);
            let name = value
                .get("name")
                .and_then(|n| n.as_str())
                .map_or(fallback, str::to_string);
            let label = format!(
                "{}: {name}",
                file.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
            let failure = match run_case(engine, value, dir, &mut entity_files, &label, seen) {
                Ok(failure) => failure,
                Err(e) => Some(e),
            };
            report.cases.push(TestCaseReport {
                file: file.clone(),
                name,
                passed: failure.is_none(),
                failure,
            });
        }
        report.files.push(file);
    }
    Ok(report)
}

/// `Ok(None)` when the case passes, `Ok(Some(diff))` when it fails, `Err` when it is malformed.
fn run_case(
    engine: &PolicyEngine,
    value: serde_json::Value,
    dir: &Path,
    entity_files: &mut HashMap<PathBuf, Result<Entities, String>>,
    label: &str,
    seen: &mut dyn FnMut(Seen<'_>),
) -> Result<Option<String>, String> {
    let case: RawCase =
        serde_json::from_value(value).map_err(|e| format!("malformed test case: {e}"))?;
    let euid = |field: &str, v: Option<String>| -> Result<EntityUid, String> {
        let v = v.ok_or_else(|| format!("request has no `{field}`"))?;
        EntityUid::from_str(&v)
            .map_err(|e| format!("cannot parse {field} `{v}`: {}", one_line(&e.to_string())))
    };
    let principal = euid("principal", case.request.principal)?;
    let action = euid("action", case.request.action)?;
    let resource = euid("resource", case.request.resource)?;
    let schema = &engine.schema;
    let context = Context::from_json_value(case.request.context, Some((schema, &action)))
        .map_err(|e| format!("invalid context: {}", one_line(&e.to_string())))?;
    let request = Request::new(principal, action.clone(), resource, context, Some(schema))
        .map_err(|e| format!("invalid request: {}", one_line(&e.to_string())))?;

    let inline;
    let entities: &Entities = match case.entities {
        serde_json::Value::String(rel) => {
            let path = entities_path(dir, &rel)?;
            let loaded = entity_files.entry(path.clone()).or_insert_with(|| {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read entities `{rel}`: {e}"))?;
                Entities::from_json_str(&text, Some(schema)).map_err(|e| {
                    format!("invalid entities in `{rel}`: {}", one_line(&e.to_string()))
                })
            });
            loaded.as_ref().map_err(Clone::clone)?
        }
        other => {
            inline = Entities::from_json_value(other, Some(schema))
                .map_err(|e| format!("invalid entities: {}", one_line(&e.to_string())))?;
            &inline
        }
    };

    // Every case runs through the evaluator that decides in production and through Cedar's
    // `Authorizer`; any difference between the two fails the case, whatever it expected.
    let outcome = match engine.compare(&action, &request, entities) {
        Ok(outcome) => outcome,
        Err(diff) => return Ok(Some(diff)),
    };
    let got: Vec<&PolicyInfo> = outcome
        .determining
        .iter()
        .filter_map(|i| engine.infos.get(*i))
        .collect();
    let errors: Vec<String> = outcome.errors.iter().map(|e| one_line(e)).collect();
    seen(Seen {
        label: label.to_string(),
        request: &request,
        entities,
        determining: got.iter().map(|p| p.id.clone()).collect(),
    });
    let decision = if outcome.allow {
        Expected::Allow
    } else {
        Expected::Deny
    };

    let describe = || {
        if got.is_empty() {
            match decision {
                Expected::Deny => "no policy applied".to_string(),
                Expected::Allow => "no determining policy".to_string(),
            }
        } else {
            got.iter()
                .map(|p| match p.reason.as_deref() {
                    Some(reason) => format!("`{}` ({reason})", p.id),
                    None => format!("`{}`", p.id),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    };

    let mut diffs = Vec::new();
    if decision != case.decision {
        diffs.push(format!(
            "expected {}, got {} by {}",
            case.decision,
            decision,
            describe()
        ));
    } else {
        let missing: Vec<String> = case
            .reason
            .iter()
            .filter(|r| !got.iter().any(|g| g.id == **r))
            .map(|r| format!("`{r}`"))
            .collect();
        if !missing.is_empty() {
            diffs.push(format!(
                "{} as expected, but missing determining {}; got {}",
                decision,
                missing.join(", "),
                describe()
            ));
        }
    }
    if errors.len() != case.num_errors {
        diffs.push(format!(
            "expected {} evaluation error(s), got {}{}",
            case.num_errors,
            errors.len(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        ));
    }
    Ok(if diffs.is_empty() {
        None
    } else {
        Some(diffs.join("; "))
    })
}

/// Resolves an entities file named by a test; like the CLI, it must stay inside `dir`.
fn entities_path(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let path = dir.join(rel);
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("cannot open entities `{rel}`: {e}"))?;
    let base = dir
        .canonicalize()
        .map_err(|e| format!("cannot open test directory `{}`: {e}", dir.display()))?;
    if !canonical.starts_with(&base) {
        return Err(format!(
            "entities `{rel}` are outside the test file's directory"
        ));
    }
    Ok(canonical)
}
