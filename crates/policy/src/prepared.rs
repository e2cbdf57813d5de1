//! The gate's prepared evaluator for any Cedar policy set and schema, not only the gate's own.
//!
//! [`PreparedPolicySet`] splits a policy set per action of the schema exactly as
//! [`PolicyEngine`](super::PolicyEngine) does at load (`policies_for`), prepares each part with
//! [`Compiled::new`] (the action constraint left out) and evaluates a request with the part of
//! its action. It exists so that inputs the gate's own schema cannot express — Cedar's
//! integration corpus (`tests/cedar_corpus.rs`), random policy sets — run through the very code
//! that decides in production and are compared with Cedar's `Authorizer`.
//!
//! What it cannot represent, and what it does then:
//! - a request whose action the schema does not declare, or an entity store whose groups of
//!   that action differ from the schema's (the per-action split would be wrong): the policies
//!   are evaluated with their action constraints kept ([`Compiled::with_action_scope`]);
//! - templates themselves are never evaluated (Cedar evaluates only static and linked
//!   policies, and so does this); a set with template-linked policies is not split per
//!   action (the split is a `PolicySet` per action, which holds static policies only): all of
//!   its requests are evaluated with the action constraints kept, links with their slot
//!   values. (The gate's own loader refuses templates.)
//! - partial requests (unknowns) are not supported: Cedar's partial evaluator is not used, so
//!   a residual is reported as an evaluation error of that policy.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Entities, EntityUid, PolicyId, PolicySet, Request, Schema};

use super::PolicyLoadError;
use super::compiled::{Compiled, Outcome};

/// A policy set prepared for the gate's evaluator, split per action of a schema.
pub struct PreparedPolicySet {
    /// Load index → policy id (the set's iteration order).
    ids: Vec<PolicyId>,
    /// Per schema action: its action groups (transitively closed) and its policies.
    by_action: HashMap<EntityUid, (HashSet<EntityUid>, Compiled)>,
    /// Every policy with its action constraint kept, for any other request.
    any_action: Compiled,
}

/// What the prepared evaluator says about one request, in Cedar's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedAnswer {
    pub allow: bool,
    /// The satisfied permits when allowed, the satisfied forbids when denied (sorted).
    pub determining: Vec<PolicyId>,
    /// The policies that failed to evaluate (sorted).
    pub erroring: Vec<PolicyId>,
    /// One line per failed policy, worded as Cedar's `AuthorizationError`.
    pub errors: Vec<String>,
    /// True when the request was decided by the per-action split (the production path), false
    /// when by the policies with their action constraints kept.
    pub per_action: bool,
}

impl PreparedPolicySet {
    /// Prepares `policies` per action of `schema` (and once with action constraints kept).
    pub fn new(
        policies: &PolicySet,
        schema: &Schema,
    ) -> Result<PreparedPolicySet, PolicyLoadError> {
        let ids: Vec<PolicyId> = policies.policies().map(|p| p.id().clone()).collect();
        let order: HashMap<PolicyId, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let actions = schema
            .action_entities()
            .map_err(|e| PolicyLoadError(format!("cannot read the schema's actions: {e}")))?;
        let mut by_action = HashMap::new();
        // The per-action split is made as the gate's loader makes it, with a `PolicySet` per
        // action, which cannot hold template-linked policies; a set with links is decided by
        // the policies with their action constraints kept.
        let linked = policies.policies().any(|p| p.template_id().is_some());
        for action in actions.iter().filter(|_| !linked) {
            let uid = action.uid();
            let groups: HashSet<EntityUid> = actions
                .ancestors(&uid)
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            let part = super::policies_for(policies, &actions, &uid)?;
            let compiled = Compiled::new(part.policies(), &order)
                .map_err(|e| PolicyLoadError(format!("cannot prepare the policies: {e}")))?;
            by_action.insert(uid, (groups, compiled));
        }
        let any_action = Compiled::with_action_scope(policies.policies(), &order)
            .map_err(|e| PolicyLoadError(format!("cannot prepare the policies: {e}")))?;
        Ok(PreparedPolicySet {
            ids,
            by_action,
            any_action,
        })
    }

    /// Evaluates `request` over `entities`.
    pub fn is_authorized(&self, request: &Request, entities: &Entities) -> PreparedAnswer {
        let part = request.action().and_then(|a| {
            let (groups, compiled) = self.by_action.get(a)?;
            // The split is valid only when the entity store places the action in the same
            // groups as the schema did when the split was made.
            let seen: HashSet<EntityUid> = entities
                .ancestors(a)
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            (&seen == groups).then_some(compiled)
        });
        let per_action = part.is_some();
        let outcome = part.unwrap_or(&self.any_action).evaluate(request, entities);
        self.answer(outcome, per_action)
    }

    fn answer(&self, outcome: Outcome, per_action: bool) -> PreparedAnswer {
        let ids = |v: &[usize]| {
            let mut ids: Vec<PolicyId> =
                v.iter().filter_map(|i| self.ids.get(*i).cloned()).collect();
            ids.sort();
            ids
        };
        PreparedAnswer {
            allow: outcome.allow,
            determining: ids(&outcome.determining),
            erroring: ids(&outcome.erroring),
            errors: outcome.errors,
            per_action,
        }
    }
}
