//! The policies of one action, prepared once at load and evaluated with Cedar's own evaluator.
//!
//! Cedar's `Authorizer` rebuilds every policy's condition expression on each evaluation (the
//! scope constraints and the body joined by `&&`, new nodes every time), evaluates it through
//! the partial evaluator and assembles a response with hash sets of reasons. Here each
//! condition is built once, without the action scope constraint, and evaluated with
//! `Evaluator::interpret`; the decision rule is Cedar's: deny when a forbid is satisfied, allow
//! when no forbid and at least one permit is, deny otherwise; a policy that fails to evaluate
//! is skipped and reported, as Cedar does.
//!
//! INVARIANT: a [`Compiled`] made by [`Compiled::new`] is only used for requests whose action
//! is the one it was built for, and only holds policies whose action scope is satisfied by that
//! action (`policies_for`); the action constraint is therefore true for every request it sees
//! and is left out of the condition. Principal and resource constraints are kept.
//! [`Compiled::with_action_scope`] keeps the action constraint too, for requests whose action
//! the schema does not declare. Unit tests, a seeded property test (`differential`), every
//! `policy test` case and Cedar's own integration corpus (`tests/cedar_corpus.rs`) compare
//! decisions, determining policies and errors with Cedar's `Authorizer`.

use std::collections::HashMap;

use cedar_policy::{Entities, Policy, PolicyId, Request};
use cedar_policy_core::ast::{self as core_ast, Effect, Expr, Literal, SlotEnv, ValueKind};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

/// One policy, ready to evaluate.
struct Prepared {
    /// Index in the engine's `infos` (load order).
    index: usize,
    id: core_ast::PolicyID,
    permit: bool,
    /// Principal constraint `&&` resource constraint `&&` the `when`/`unless` conditions.
    condition: Expr,
    env: SlotEnv,
}

/// The policies that can apply to one action, in load order.
pub(super) struct Compiled {
    policies: Vec<Prepared>,
}

/// What the policies say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outcome {
    pub allow: bool,
    /// Indices (load order, ascending) of the satisfied permits when allowed, of the satisfied
    /// forbids when denied.
    pub determining: Vec<usize>,
    /// One line per policy that failed to evaluate, worded as Cedar's `AuthorizationError`.
    pub errors: Vec<String>,
    /// Indices (load order, ascending) of the policies that failed to evaluate.
    pub erroring: Vec<usize>,
}

impl Compiled {
    /// Prepares `policies` (each must be in `order`, the id → load index map).
    pub(super) fn new<'a>(
        policies: impl Iterator<Item = &'a Policy>,
        order: &HashMap<PolicyId, usize>,
    ) -> Result<Compiled, String> {
        Compiled::prepare(policies, order, false)
    }

    /// Prepares `policies` with their action constraints kept: usable for any action.
    pub(super) fn with_action_scope<'a>(
        policies: impl Iterator<Item = &'a Policy>,
        order: &HashMap<PolicyId, usize>,
    ) -> Result<Compiled, String> {
        Compiled::prepare(policies, order, true)
    }

    fn prepare<'a>(
        policies: impl Iterator<Item = &'a Policy>,
        order: &HashMap<PolicyId, usize>,
        keep_action: bool,
    ) -> Result<Compiled, String> {
        let mut prepared = Vec::new();
        for policy in policies {
            let index = *order
                .get(policy.id())
                .ok_or_else(|| format!("policy `{}` is not indexed", policy.id()))?;
            let ast: &core_ast::Policy = policy.as_ref();
            let body = ast
                .non_scope_constraints()
                .cloned()
                .unwrap_or_else(|| Expr::val(true));
            let rest = Expr::and(ast.resource_constraint().as_expr(), body);
            let rest = if keep_action {
                Expr::and(ast.action_constraint().as_expr(), rest)
            } else {
                rest
            };
            let condition = Expr::and(ast.principal_constraint().as_expr(), rest);
            prepared.push(Prepared {
                index,
                id: ast.id().clone(),
                permit: ast.effect() == Effect::Permit,
                condition,
                env: ast.env().clone(),
            });
        }
        prepared.sort_by_key(|p| p.index);
        Ok(Compiled { policies: prepared })
    }

    /// How many policies there are.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.policies.len()
    }

    /// Evaluates every policy for `request` over `entities`.
    pub(super) fn evaluate(&self, request: &Request, entities: &Entities) -> Outcome {
        let core_request: &core_ast::Request = request.as_ref();
        let eval = Evaluator::new(
            core_request.clone(),
            entities.as_ref(),
            Extensions::all_available(),
        );
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errors = Vec::new();
        let mut erroring = Vec::new();
        for p in &self.policies {
            match eval.interpret(&p.condition, &p.env) {
                Ok(v) => match v.value {
                    ValueKind::Lit(Literal::Bool(true)) => {
                        if p.permit {
                            permits.push(p.index);
                        } else {
                            forbids.push(p.index);
                        }
                    }
                    ValueKind::Lit(Literal::Bool(false)) => {}
                    // Unreachable: `&&` yields a boolean or an error.
                    _ => {
                        erroring.push(p.index);
                        errors.push(format!(
                            "error while evaluating policy `{}`: the condition is not a boolean",
                            p.id
                        ));
                    }
                },
                Err(e) => {
                    erroring.push(p.index);
                    errors.push(format!("error while evaluating policy `{}`: {e}", p.id));
                }
            }
        }
        if forbids.is_empty() && !permits.is_empty() {
            Outcome {
                allow: true,
                determining: permits,
                errors,
                erroring,
            }
        } else {
            Outcome {
                allow: false,
                determining: forbids,
                errors,
                erroring,
            }
        }
    }
}
