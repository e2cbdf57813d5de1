//! Cedar's own integration corpus (cedar-policy/cedar-integration-tests, Apache-2.0): every
//! request through Cedar's `Authorizer` and through the gate's prepared evaluator
//! ([`PreparedPolicySet`], the code that decides in production), each checked against the
//! expected decision, determining policies (`reason`) and erroring policies (`errors`), and the
//! two checked against each other (including the error texts).
//!
//! The corpus is read from `../shared/reference/cedar-corpus-tests.tar.gz` relative to the
//! repository root (CI clones the repository with `shared/` beside it). Without it the test
//! prints why and checks nothing else. No request is skipped: a corpus file that does not
//! parse, a request that cannot be built and a request that the prepared evaluator could not
//! decide per action (the production path) are all failures.
//!
//! Policies are parsed as the corpus's harness parses them (`PolicySet::from_str`, which names
//! them `policy0`, `policy1`, … in source order); entities and context are parsed with the
//! schema; requests are validated against the schema when `validateRequest` is true (it is for
//! every request of this corpus, and that is asserted, so that a new corpus that turns it off
//! is noticed). The corpus has no templates (asserted too).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, Schema,
};
use purpose_gate::policy::PreparedPolicySet;
use serde::Deserialize;

/// Requests in the corpus this test was written for (cedar-integration-tests, Cedar 4.10).
const EXPECTED_REQUESTS: usize = 62_472;
/// Policy sets in that corpus.
const EXPECTED_SETS: usize = 7_809;
/// Threads that share the policy sets.
const WORKERS: usize = 2;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CorpusTest {
    policies: String,
    entities: String,
    schema: String,
    requests: Vec<CorpusRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CorpusRequest {
    description: String,
    principal: Uid,
    action: Uid,
    resource: Uid,
    context: serde_json::Value,
    validate_request: bool,
    decision: String,
    reason: Vec<String>,
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct Uid {
    #[serde(rename = "type")]
    ty: String,
    id: String,
}

impl Uid {
    fn euid(&self) -> Result<EntityUid, String> {
        let ty = EntityTypeName::from_str(&self.ty)
            .map_err(|e| format!("bad entity type `{}`: {e}", self.ty))?;
        Ok(EntityUid::from_type_name_and_id(
            ty,
            EntityId::new(&self.id),
        ))
    }
}

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/cedar-corpus-tests.tar.gz")
}

/// Every file of the tarball, by path.
fn read_corpus(path: &PathBuf) -> HashMap<String, String> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        files.insert(name, text);
    }
    files
}

fn sorted(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = ids.collect();
    v.sort();
    v
}

fn strings(ids: &[PolicyId]) -> Vec<String> {
    sorted(ids.iter().map(ToString::to_string))
}

#[derive(Default)]
struct Tally {
    sets: usize,
    requests: usize,
    allow: usize,
    deny_by_forbid: usize,
    with_errors: usize,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }
}

/// Runs one corpus test file (a policy set and its requests).
fn run_set(name: &str, test: &CorpusTest, files: &HashMap<String, String>, tally: &mut Tally) {
    tally.sets += 1;
    let file = |path: &str| {
        files
            .get(path)
            .ok_or_else(|| format!("{name}: `{path}` is not in the corpus"))
    };
    let parsed = (|| -> Result<(Schema, PolicySet, Entities), String> {
        let (schema, _warnings) = Schema::from_cedarschema_str(file(&test.schema)?)
            .map_err(|e| format!("{name}: schema: {e}"))?;
        let policies = PolicySet::from_str(file(&test.policies)?)
            .map_err(|e| format!("{name}: policies: {e}"))?;
        let entities = Entities::from_json_str(file(&test.entities)?, Some(&schema))
            .map_err(|e| format!("{name}: entities: {e}"))?;
        Ok((schema, policies, entities))
    })();
    let (schema, policies, entities) = match parsed {
        Ok(p) => p,
        Err(e) => {
            // Every request of a set that does not load fails; none is skipped.
            tally.requests += test.requests.len();
            for r in &test.requests {
                tally.fail(format!("{name} {}: {e}", r.description));
            }
            return;
        }
    };
    assert_eq!(
        policies.templates().count(),
        0,
        "{name}: the corpus has templates"
    );
    let prepared = match PreparedPolicySet::new(&policies, &schema) {
        Ok(p) => p,
        Err(e) => {
            tally.requests += test.requests.len();
            for r in &test.requests {
                tally.fail(format!("{name} {}: cannot prepare: {e}", r.description));
            }
            return;
        }
    };
    let authorizer = Authorizer::new();
    for r in &test.requests {
        tally.requests += 1;
        let at = format!("{name} {}", r.description);
        assert!(r.validate_request, "{at}: validateRequest is false");
        let request = (|| -> Result<Request, String> {
            let action = r.action.euid()?;
            let context = Context::from_json_value(r.context.clone(), Some((&schema, &action)))
                .map_err(|e| format!("context: {e}"))?;
            Request::new(
                r.principal.euid()?,
                action,
                r.resource.euid()?,
                context,
                r.validate_request.then_some(&schema),
            )
            .map_err(|e| format!("request: {e}"))
        })();
        let request = match request {
            Ok(req) => req,
            Err(e) => {
                tally.fail(format!("{at}: {e}"));
                continue;
            }
        };
        let expected_allow = match r.decision.as_str() {
            "allow" => true,
            "deny" => false,
            other => {
                tally.fail(format!("{at}: unknown decision `{other}`"));
                continue;
            }
        };
        let expected_reason = sorted(r.reason.iter().cloned());
        let expected_errors = sorted(r.errors.iter().cloned());

        let cedar = authorizer.is_authorized(&request, &policies, &entities);
        let cedar_allow = cedar.decision() == Decision::Allow;
        let cedar_reason = sorted(cedar.diagnostics().reason().map(ToString::to_string));
        let cedar_erroring = sorted(cedar.diagnostics().errors().map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(p) => p.policy_id().to_string(),
        }));
        let mut cedar_errors: Vec<String> = cedar
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        cedar_errors.sort();

        let ours = prepared.is_authorized(&request, &entities);
        let mut our_errors = ours.errors.clone();
        our_errors.sort();

        let mut diffs = Vec::new();
        if (cedar_allow, &cedar_reason, &cedar_erroring)
            != (expected_allow, &expected_reason, &expected_errors)
        {
            diffs.push(format!(
                "cedar: {} {:?} errors {:?}",
                cedar.decision() == Decision::Allow,
                cedar_reason,
                cedar_erroring
            ));
        }
        if (
            ours.allow,
            &strings(&ours.determining),
            &strings(&ours.erroring),
        ) != (expected_allow, &expected_reason, &expected_errors)
        {
            diffs.push(format!(
                "prepared: allow={} {:?} errors {:?}",
                ours.allow,
                strings(&ours.determining),
                strings(&ours.erroring)
            ));
        }
        if our_errors != cedar_errors {
            diffs.push(format!(
                "error texts: prepared {our_errors:?}, cedar {cedar_errors:?}"
            ));
        }
        if !ours.per_action {
            diffs.push("prepared: not decided by the per-action policies".to_string());
        }
        if diffs.is_empty() {
            if expected_allow {
                tally.allow += 1;
            } else if !expected_reason.is_empty() {
                tally.deny_by_forbid += 1;
            }
            if !expected_errors.is_empty() {
                tally.with_errors += 1;
            }
        } else {
            tally.fail(format!(
                "{at}: expected allow={expected_allow} {expected_reason:?} errors {expected_errors:?}; {}",
                diffs.join("; ")
            ));
        }
    }
}

#[test]
fn prepared_evaluator_and_cedar_agree_with_cedars_integration_corpus() {
    let path = corpus_path();
    if !path.is_file() {
        eprintln!(
            "skipped: Cedar's integration corpus is not at `{}` (it comes with the shared \
             reference files beside the repository)",
            path.display()
        );
        return;
    }
    let started = Instant::now();
    let files = read_corpus(&path);
    let read = started.elapsed();
    let mut names: Vec<&String> = files
        .keys()
        .filter(|k| k.ends_with(".json") && !k.ends_with(".entities.json"))
        .collect();
    names.sort();
    // Two workers (the machine's cores), each taking every other policy set.
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (names, files) = (&names, &files);
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    for name in names.iter().skip(w).step_by(WORKERS) {
                        match serde_json::from_str::<CorpusTest>(&files[*name]) {
                            Ok(test) => run_set(name, &test, files, &mut tally),
                            Err(e) => tally.fail(format!("{name}: not a corpus test: {e}")),
                        }
                    }
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut tally = Tally::default();
    for t in tallies {
        tally.sets += t.sets;
        tally.requests += t.requests;
        tally.allow += t.allow;
        tally.deny_by_forbid += t.deny_by_forbid;
        tally.with_errors += t.with_errors;
        tally.failures.extend(t.failures);
    }
    eprintln!(
        "cedar corpus: {} policy sets, {} requests ({} allow, {} deny by a forbid, {} with \
         errors): {} agree with the expected answers through both evaluators, {} failed \
         (read {:.1?}, total {:.1?})",
        tally.sets,
        tally.requests,
        tally.allow,
        tally.deny_by_forbid,
        tally.with_errors,
        tally.requests - tally.failures.len(),
        tally.failures.len(),
        read,
        started.elapsed()
    );
    for f in tally.failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(
        tally.failures.is_empty(),
        "{} failures",
        tally.failures.len()
    );
    assert_eq!(tally.sets, EXPECTED_SETS);
    assert_eq!(tally.requests, EXPECTED_REQUESTS);
}
