//! One evaluator truth: which evaluator decides, and the comparison of the two.
//!
//! The gate decides with its prepared policies ([`compiled`](super::compiled), the default) or,
//! when the operator sets `[policies] evaluator = "cedar"`, with Cedar's own `Authorizer` over
//! the whole policy set. Both must give the same decision, the same determining policies and
//! the same errors for every request; `purpose-gate policy test` checks every test case with
//! both ([`PolicyEngine::compare`]), a seeded property test below compares them on random
//! requests, entities and policies, and `tests/cedar_corpus.rs` on Cedar's integration corpus.

use std::fmt;

use cedar_policy::{AuthorizationError, Entities, EntityUid, Request};
use serde::Deserialize;

use super::PolicyEngine;
use super::compiled::Outcome;

/// Which evaluator decides requests (`[policies] evaluator`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evaluator {
    /// The policies prepared once at load (the condition expressions built once, split per
    /// action, evaluated with Cedar's core evaluator): the fast path.
    #[default]
    Prepared,
    /// Cedar's `Authorizer` over the whole policy set, as the `cedar` CLI evaluates it.
    Cedar,
}

impl Evaluator {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Evaluator::Prepared => "prepared",
            Evaluator::Cedar => "cedar",
        }
    }
}

impl fmt::Display for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PolicyEngine {
    /// The same engine, deciding with `evaluator`.
    pub fn with_evaluator(mut self, evaluator: Evaluator) -> PolicyEngine {
        self.evaluator = evaluator;
        self
    }

    /// The evaluator that decides requests.
    pub fn evaluator(&self) -> Evaluator {
        self.evaluator
    }

    /// What the prepared policies of `action` say; an error when the gate has none for it.
    pub(super) fn prepared_outcome(
        &self,
        action: &EntityUid,
        request: &Request,
        entities: &Entities,
    ) -> Result<Outcome, String> {
        let compiled = self
            .actions
            .iter()
            .find(|(_, a)| *a == action)
            .and_then(|(id, _)| self.compiled.get(id))
            .ok_or_else(|| format!("the gate has no prepared policies for action `{action}`"))?;
        Ok(compiled.evaluate(request, entities))
    }

    /// What Cedar's `Authorizer` says over the whole policy set, in the prepared evaluator's
    /// terms: policies by load index, errors in load order.
    pub(super) fn cedar_outcome(&self, request: &Request, entities: &Entities) -> Outcome {
        let response = self
            .authorizer
            .is_authorized(request, &self.policies, entities);
        let index = |id: &cedar_policy::PolicyId| self.order.get(id).copied().unwrap_or(usize::MAX);
        let mut determining: Vec<usize> = response.diagnostics().reason().map(index).collect();
        determining.sort_unstable();
        let mut errors: Vec<(usize, String)> = response
            .diagnostics()
            .errors()
            .map(|e| {
                let i = match e {
                    AuthorizationError::PolicyEvaluationError(p) => index(p.policy_id()),
                };
                (i, e.to_string())
            })
            .collect();
        errors.sort();
        Outcome {
            allow: response.decision() == cedar_policy::Decision::Allow,
            determining,
            erroring: errors.iter().map(|(i, _)| *i).collect(),
            errors: errors.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// Runs `request` through both evaluators: `Ok` with Cedar's outcome when they agree, `Err`
    /// naming every difference when they do not.
    pub(super) fn compare(
        &self,
        action: &EntityUid,
        request: &Request,
        entities: &Entities,
    ) -> Result<Outcome, String> {
        let cedar = self.cedar_outcome(request, entities);
        let prepared = self.prepared_outcome(action, request, entities)?;
        match self.difference(&prepared, &cedar) {
            None => Ok(cedar),
            Some(diff) => Err(diff),
        }
    }

    /// Every way in which `prepared` differs from `cedar`, in one line; `None` when they agree.
    pub(super) fn difference(&self, prepared: &Outcome, cedar: &Outcome) -> Option<String> {
        let name = |i: &usize| match self.infos.get(*i) {
            Some(p) => format!("`{}`", p.id),
            None => format!("#{i}"),
        };
        let names = |v: &[usize]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(name).collect::<Vec<_>>().join(", ")
            }
        };
        let decision = |allow: bool| if allow { "allow" } else { "deny" };
        let mut diffs = Vec::new();
        if prepared.allow != cedar.allow {
            diffs.push(format!(
                "decision: prepared {}, cedar {}",
                decision(prepared.allow),
                decision(cedar.allow)
            ));
        }
        if prepared.determining != cedar.determining {
            diffs.push(format!(
                "determining policies: prepared {}, cedar {}",
                names(&prepared.determining),
                names(&cedar.determining)
            ));
        }
        if prepared.erroring != cedar.erroring || prepared.errors != cedar.errors {
            diffs.push(format!(
                "errors: prepared [{}], cedar [{}]",
                prepared.errors.join("; "),
                cedar.errors.join("; ")
            ));
        }
        if diffs.is_empty() {
            None
        } else {
            Some(format!(
                "the gate's prepared evaluator and Cedar's Authorizer disagree: {}",
                diffs.join("; ")
            ))
        }
    }
}

#[cfg(test)]
#[path = "differential_tests.rs"]
mod tests;
