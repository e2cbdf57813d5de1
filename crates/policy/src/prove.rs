//! Proofs: `purpose-gate policy prove` checks properties of the policy set for *every*
//! schema-valid request, with Cedar's symbolic compiler (`cedar-policy-symcc`) and the cvc5
//! SMT solver, instead of the handful of requests that tests try.
//!
//! A property is a TOML file in `DIR/properties/` (format in `docs/policies.md`):
//! - `check = "implies"`: whatever the live policies allow, the property's policies allow too
//!   (the property is an envelope the live set must stay inside);
//! - `check = "disjoint"`: the live policies never allow what the property's policies allow
//!   (the property describes what must never be allowed);
//! - `check = "never-errors"`: no live policy fails to evaluate on a schema-valid request.
//!
//! Each property is checked for every request environment of the schema (principal type,
//! action, resource type) whose action it names. A violation comes with a counterexample,
//! printed as a `cedar run-tests` case that expects what the property demands: it fails today
//! and passes once the policies are fixed, so it can go into `tests/` as a regression test.
//!
//! Guarantees: a property holds only when the solver answered `unsat` for every environment;
//! `unknown`, a solver crash or a timeout is an error (exit 2), never a pass. Refuses: a
//! property file with unknown keys, an unknown action, or policies that fail strict validation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Entities, PolicySet, Request, RequestEnv, Schema,
    ValidationMode, Validator,
};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};
use serde::Deserialize;

use super::load::one_line;
use super::{PolicyEngine, PolicyLoadError};

/// Directory of the property files, inside the policy directory.
pub const PROPERTIES_DIR: &str = "properties";

/// Environment variable naming the solver executable (as `cedar-policy-symcc` reads it).
pub const SOLVER_ENV: &str = "CVC5";

/// Wall-clock limit per solver query, in milliseconds (cvc5's `--tlimit-per`).
const QUERY_TIME_LIMIT_MS: u32 = 60_000;

/// What a property demands of the live policy set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Implies,
    Disjoint,
    NeverErrors,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Implies => "implies",
            Check::Disjoint => "disjoint",
            Check::NeverErrors => "never-errors",
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProperty {
    description: String,
    check: Check,
    /// Action ids (`brp:lookup`); absent: every action of the schema.
    #[serde(default)]
    actions: Option<Vec<String>>,
    /// Cedar policies (for `implies` and `disjoint`).
    #[serde(default)]
    policies: Option<String>,
}

/// One property as read from its file.
#[derive(Debug, Clone)]
pub struct Property {
    /// The file name without `.toml`.
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub check: Check,
    /// Action ids the property is about.
    pub actions: Vec<String>,
    /// The property's policies (empty for `never-errors`).
    pub policies: PolicySet,
}

/// A request for which a property does not hold.
#[derive(Debug, Clone)]
pub struct Counterexample {
    /// `Gate::Employee, Gate::Action::"brp:lookup", Gate::Person`.
    pub environment: String,
    /// What the live policies decide today, in words.
    pub today: String,
    /// A `cedar run-tests` case expecting what the property demands.
    pub test_case: serde_json::Value,
}

/// The result of one property.
#[derive(Debug, Clone)]
pub struct PropertyResult {
    pub property: Property,
    /// Request environments checked.
    pub environments: usize,
    /// Empty when the property holds.
    pub counterexamples: Vec<Counterexample>,
}

impl PropertyResult {
    pub fn holds(&self) -> bool {
        self.counterexamples.is_empty()
    }
}

/// The result of `policy prove`.
#[derive(Debug, Clone, Default)]
pub struct ProveReport {
    pub results: Vec<PropertyResult>,
}

impl ProveReport {
    /// True when there is at least one property and every one holds.
    pub fn ok(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(PropertyResult::holds)
    }
}

impl fmt::Display for ProveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            let p = &r.property;
            if r.holds() {
                writeln!(
                    f,
                    "property {} ({}, {} request type(s)) ... holds",
                    p.name, p.check, r.environments
                )?;
            } else {
                writeln!(
                    f,
                    "property {} ({}, {} request type(s)) ... FAILS",
                    p.name, p.check, r.environments
                )?;
                writeln!(f, "  demands: {}", p.description)?;
                for c in &r.counterexamples {
                    writeln!(f, "  counterexample for {}: {}", c.environment, c.today)?;
                    writeln!(
                        f,
                        "  as a `cedar run-tests` case (expects what the property demands):"
                    )?;
                    let pretty = serde_json::to_string_pretty(&serde_json::Value::Array(vec![
                        c.test_case.clone(),
                    ]))
                    .unwrap_or_default();
                    for line in pretty.lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        let held = self.results.iter().filter(|r| r.holds()).count();
        write!(
            f,
            "results: {} passed, {} failed",
            held,
            self.results.len() - held
        )
    }
}

/// Why `prove` could not give an answer (exit 2): bad property files or a solver problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProveError(pub String);

impl From<PolicyLoadError> for ProveError {
    fn from(e: PolicyLoadError) -> Self {
        ProveError(e.0)
    }
}

/// Reads every `DIR/properties/*.toml`, sorted by name.
pub fn load_properties(engine: &PolicyEngine, dir: &Path) -> Result<Vec<Property>, ProveError> {
    let pdir = dir.join(PROPERTIES_DIR);
    let entries = std::fs::read_dir(&pdir).map_err(|e| {
        ProveError(format!(
            "cannot read property directory `{}`: {e}",
            pdir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ProveError(format!(
            "no properties (`*.toml`) in `{}`",
            pdir.display()
        )));
    }
    let schema_actions: Vec<String> = engine
        .schema
        .actions()
        .map(|a| a.id().unescaped().to_string())
        .collect();
    files
        .iter()
        .map(|f| load_property(&engine.schema, &schema_actions, f))
        .collect()
}

fn load_property(
    schema: &Schema,
    schema_actions: &[String],
    file: &Path,
) -> Result<Property, ProveError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ProveError(format!("`{}`: cannot read: {e}", file.display())))?;
    let raw: RawProperty = toml::from_str(&text).map_err(|e| {
        ProveError(format!(
            "`{}`: {}",
            file.display(),
            one_line(&e.to_string())
        ))
    })?;
    let actions = match raw.actions {
        None => schema_actions.to_vec(),
        Some(list) => {
            for a in &list {
                if !schema_actions.contains(a) {
                    return Err(ProveError(format!(
                        "`{}`: unknown action `{a}` (the schema has {})",
                        file.display(),
                        schema_actions.join(", ")
                    )));
                }
            }
            list
        }
    };
    let policies = match (raw.check, raw.policies) {
        (Check::NeverErrors, None) => PolicySet::new(),
        (Check::NeverErrors, Some(_)) => {
            return Err(ProveError(format!(
                "`{}`: `never-errors` takes no `policies`",
                file.display()
            )));
        }
        (_, None) => {
            return Err(ProveError(format!(
                "`{}`: missing key `policies` (Cedar policies the live set is compared with)",
                file.display()
            )));
        }
        (_, Some(src)) => {
            let set = PolicySet::from_str(&src).map_err(|e| {
                ProveError(format!(
                    "`{}`: policies do not parse: {}",
                    file.display(),
                    one_line(&format!("{:?}", miette::Report::new(e)))
                ))
            })?;
            let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            if !validation.validation_passed() {
                let msgs: Vec<String> = validation
                    .validation_errors()
                    .map(|e| one_line(&e.to_string()))
                    .collect();
                return Err(ProveError(format!(
                    "`{}`: policies do not validate: {}",
                    file.display(),
                    msgs.join("; ")
                )));
            }
            set
        }
    };
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Property {
        name,
        file: file.to_path_buf(),
        description: raw.description.trim().to_string(),
        check: raw.check,
        actions,
        policies,
    })
}

/// The solver to run: `solver` if given, else `$CVC5`, else `cvc5` on the `PATH`.
fn solver_command(solver: Option<&Path>) -> PathBuf {
    match solver {
        Some(s) => s.to_path_buf(),
        None => std::env::var_os(SOLVER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("cvc5")),
    }
}

/// Checks every property in `dir/properties/` against the policies in `dir`.
pub fn prove(dir: &Path, solver: Option<&Path>) -> Result<ProveReport, ProveError> {
    let engine = PolicyEngine::load(dir)?;
    let properties = load_properties(&engine, dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProveError(format!("cannot start the runtime: {e}")))?;
    let cmd = solver_command(solver);
    rt.block_on(async {
        let local = LocalSolver::from_command(
            tokio::process::Command::new(&cmd)
                .args(["--lang", "smt"])
                .arg(format!("--tlimit-per={QUERY_TIME_LIMIT_MS}")),
        )
        .map_err(|e| {
            ProveError(format!(
                "cannot start the solver `{}`: {e} (install cvc5, see docs/policies.md)",
                cmd.display()
            ))
        })?;
        let mut symcc = CedarSymCompiler::new(local)
            .map_err(|e| ProveError(format!("solver: {}", one_line(&e.to_string()))))?;
        let mut report = ProveReport::default();
        for property in properties {
            let result = check_property(&engine, &mut symcc, property).await?;
            report.results.push(result);
        }
        Ok(report)
    })
}

async fn check_property(
    engine: &PolicyEngine,
    symcc: &mut CedarSymCompiler<LocalSolver>,
    property: Property,
) -> Result<PropertyResult, ProveError> {
    let schema = &engine.schema;
    let envs: Vec<RequestEnv> = schema
        .request_envs()
        .filter(|env| {
            property
                .actions
                .iter()
                .any(|a| env.action().id().unescaped() == a.as_str())
        })
        .collect();
    let solver_err = |e: cedar_policy_symcc::err::Error| {
        ProveError(format!(
            "property `{}`: the solver gave no answer: {}",
            property.name,
            one_line(&format!("{:?}", miette::Report::new(e)))
        ))
    };
    let mut counterexamples = Vec::new();
    for env in &envs {
        let found: Option<Env> = match property.check {
            Check::Implies | Check::Disjoint => {
                let live = CompiledPolicySet::compile(&engine.policies, env, schema)
                    .map_err(solver_err)?;
                let prop = CompiledPolicySet::compile(&property.policies, env, schema)
                    .map_err(solver_err)?;
                if property.check == Check::Implies {
                    symcc
                        .check_implies_with_counterexample_opt(&live, &prop)
                        .await
                        .map_err(solver_err)?
                } else {
                    symcc
                        .check_disjoint_with_counterexample_opt(&live, &prop)
                        .await
                        .map_err(solver_err)?
                }
            }
            Check::NeverErrors => {
                let mut found = None;
                for policy in engine.policies.policies() {
                    let compiled =
                        CompiledPolicy::compile(policy, env, schema).map_err(solver_err)?;
                    if let Some(cex) = symcc
                        .check_never_errors_with_counterexample_opt(&compiled)
                        .await
                        .map_err(solver_err)?
                    {
                        found = Some(cex);
                        break;
                    }
                }
                found
            }
        };
        if let Some(cex) = found {
            counterexamples.push(counterexample(engine, &property, env, &cex)?);
        }
    }
    Ok(PropertyResult {
        property,
        environments: envs.len(),
        counterexamples,
    })
}

/// Turns the solver's model into a `cedar run-tests` case that expects what the property
/// demands, and says what the live policies decide for it today.
fn counterexample(
    engine: &PolicyEngine,
    property: &Property,
    env: &RequestEnv,
    cex: &Env,
) -> Result<Counterexample, ProveError> {
    let response = Authorizer::new().is_authorized(&cex.request, &engine.policies, &cex.entities);
    let determining: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| id.to_string())
        .collect();
    let errors = response.diagnostics().errors().count();
    let today = match (response.decision(), errors) {
        (_, n) if n > 0 => format!(
            "today {} policy evaluation error(s): {}",
            n,
            response
                .diagnostics()
                .errors()
                .map(|e| one_line(&e.to_string()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (CedarDecision::Allow, _) => {
            format!("today allowed by {}", quoted_list(&determining))
        }
        (CedarDecision::Deny, _) => "today denied".to_string(),
    };
    let (decision, reason, num_errors): (&str, Vec<String>, usize) = match property.check {
        // The live set must not allow this request.
        Check::Implies | Check::Disjoint => ("deny", vec![], 0),
        // The live set must decide without errors; the decision is what it decides today.
        Check::NeverErrors => (
            match response.decision() {
                CedarDecision::Allow => "allow",
                CedarDecision::Deny => "deny",
            },
            vec![],
            0,
        ),
    };
    let test_case = serde_json::json!({
        "name": format!("property {}: counterexample", property.name),
        "request": request_json(&cex.request)?,
        "entities": entities_json(&cex.entities)?,
        "decision": decision,
        "reason": reason,
        "num_errors": num_errors,
    });
    Ok(Counterexample {
        environment: format!("{}, {}, {}", env.principal(), env.action(), env.resource()),
        today,
        test_case,
    })
}

fn quoted_list(items: &[String]) -> String {
    if items.is_empty() {
        "no policy".to_string()
    } else {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `request` member of a `cedar run-tests` case.
pub(super) fn request_json(request: &Request) -> Result<serde_json::Value, ProveError> {
    let uid = |u: Option<&cedar_policy::EntityUid>| u.map(|u| u.to_string());
    let context = match request.context() {
        Some(c) => AsRef::<cedar_policy_core::ast::Context>::as_ref(c)
            .to_json_value()
            .map_err(|e| ProveError(format!("cannot write the context: {e}")))?,
        None => serde_json::json!({}),
    };
    Ok(serde_json::json!({
        "principal": uid(request.principal()),
        "action": uid(request.action()),
        "resource": uid(request.resource()),
        "context": context,
    }))
}

/// The `entities` member of a `cedar run-tests` case (without action entities: the schema
/// supplies those).
pub(super) fn entities_json(entities: &Entities) -> Result<serde_json::Value, ProveError> {
    let all = entities
        .to_json_value()
        .map_err(|e| ProveError(format!("cannot write the entities: {e}")))?;
    Ok(match all {
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .filter(|e| {
                    e.pointer("/uid/type")
                        .and_then(|t| t.as_str())
                        .is_none_or(|t| !t.ends_with("Action"))
                })
                .collect(),
        ),
        other => other,
    })
}
