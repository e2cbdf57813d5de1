//! Coverage: `purpose-gate policy test --coverage` tells, per policy, which tests made it
//! determining and which of its conditions (scope constraints and each conjunct of `when` /
//! `unless`) were never false in any test — a condition no test falsifies could be dropped
//! without any test noticing.
//!
//! A condition counts as false in a test when every condition before it held and it did not
//! (Cedar's order of evaluation: a later condition is never evaluated). A policy whose action no
//! test asks about is reported as not reached.

use std::fmt;
use std::path::Path;

use cedar_policy::PolicyId;

use super::conditions::{Conditions, Outcome};
use super::suite::{self, Seen};
use super::{PolicyEngine, PolicyLoadError, TestReport};

/// Coverage of one policy.
#[derive(Debug, Clone)]
pub struct PolicyCoverage {
    pub id: String,
    pub permit: bool,
    /// Tests whose request the policy's action scope matched.
    pub reached: usize,
    /// Tests (`file: name`) in which the policy was determining.
    pub determining: Vec<String>,
    /// Each condition with the number of tests in which it was the one that was false.
    pub conditions: Vec<(String, usize)>,
}

impl PolicyCoverage {
    /// Conditions never false in any test.
    pub fn never_false(&self) -> Vec<&str> {
        self.conditions
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(t, _)| t.as_str())
            .collect()
    }

    /// Reached, determining at least once, and every condition false at least once.
    pub fn complete(&self) -> bool {
        self.reached > 0 && !self.determining.is_empty() && self.never_false().is_empty()
    }
}

/// Coverage of the whole policy set by the tests.
#[derive(Debug, Clone, Default)]
pub struct CoverageReport {
    pub policies: Vec<PolicyCoverage>,
}

impl CoverageReport {
    pub fn complete(&self) -> bool {
        self.policies.iter().all(PolicyCoverage::complete)
    }
}

impl fmt::Display for CoverageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "coverage:")?;
        for p in &self.policies {
            let kind = if p.permit { "permit" } else { "forbid" };
            let never = p.never_false();
            writeln!(
                f,
                "  {kind} {}: reached by {} test(s), determining in {}{}",
                p.id,
                p.reached,
                p.determining.len(),
                if p.complete() {
                    ", every condition falsified"
                } else {
                    ""
                }
            )?;
            for t in p.determining.iter().take(5) {
                writeln!(f, "    determining: {t}")?;
            }
            if p.determining.len() > 5 {
                writeln!(f, "    determining: … {} more", p.determining.len() - 5)?;
            }
            for c in never {
                writeln!(f, "    never false: {c}")?;
            }
        }
        let complete = self.policies.iter().filter(|p| p.complete()).count();
        write!(
            f,
            "coverage: {complete} of {} policies fully covered",
            self.policies.len()
        )
    }
}

/// Runs the tests in `dir/tests` and measures what they cover.
pub fn run(dir: &Path) -> Result<(TestReport, CoverageReport), PolicyLoadError> {
    let engine = PolicyEngine::load(dir)?;
    let mut policies: Vec<(PolicyCoverage, Conditions)> = engine
        .infos
        .iter()
        .filter_map(|info| {
            let policy = engine.policies.policy(&PolicyId::new(&info.id))?;
            let conds = Conditions::of(policy);
            Some((
                PolicyCoverage {
                    id: info.id.clone(),
                    permit: info.permit,
                    reached: 0,
                    determining: vec![],
                    conditions: conds
                        .conditions
                        .iter()
                        .map(|c| (c.text.clone(), 0))
                        .collect(),
                },
                conds,
            ))
        })
        .collect();
    let tests = suite::run_with(&engine, &dir.join("tests"), &mut |seen: Seen<'_>| {
        for (cov, conds) in policies.iter_mut() {
            let Some(outcomes) = conds.evaluate(seen.request, seen.entities) else {
                continue;
            };
            cov.reached += 1;
            if seen.determining.contains(&cov.id) {
                cov.determining.push(seen.label.clone());
            }
            for (i, o) in outcomes.iter().enumerate() {
                if let (Outcome::Failed, Some(c)) = (o, cov.conditions.get_mut(i)) {
                    c.1 += 1;
                }
            }
        }
    })?;
    Ok((
        tests,
        CoverageReport {
            policies: policies.into_iter().map(|(c, _)| c).collect(),
        },
    ))
}
