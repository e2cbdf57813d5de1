//! Conditions of a policy, one by one: the scope's principal and resource constraints and each
//! conjunct of its `when` / `unless` clauses, evaluated in order as Cedar does (a condition
//! after the first one that fails is never evaluated). Used by `policy explain` (which
//! condition held or failed) and `policy test --coverage` (which condition was never false).

use cedar_policy::{Entities, Policy, Request};
use cedar_policy_core::ast::{self as core_ast, Expr, ExprKind, Literal};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

/// One condition of a policy.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The condition in Cedar syntax (`unless` conditions negated: `!(…)`).
    pub text: String,
    expr: Expr,
}

/// The conditions of one policy, and its action scope.
#[derive(Debug, Clone)]
pub struct Conditions {
    action: Expr,
    pub conditions: Vec<Condition>,
}

/// What one condition did for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Held,
    Failed,
    /// Evaluation failed (e.g. an attribute that is absent).
    Error(String),
    /// An earlier condition failed or erred, so this one was not evaluated.
    NotReached,
}

impl Conditions {
    /// Splits `policy` into its conditions.
    pub fn of(policy: &Policy) -> Conditions {
        let core: &core_ast::Policy = policy.as_ref();
        let mut conditions = Vec::new();
        for scope in [
            core.principal_constraint().as_expr(),
            core.resource_constraint().as_expr(),
        ] {
            if !is_true(&scope) {
                conditions.push(Condition {
                    text: scope.to_string(),
                    expr: scope,
                });
            }
        }
        if let Some(body) = core.non_scope_constraints() {
            let mut parts = Vec::new();
            flatten(body, &mut parts);
            for e in parts {
                if !is_true(&e) {
                    conditions.push(Condition {
                        text: e.to_string(),
                        expr: e,
                    });
                }
            }
        }
        Conditions {
            action: core.action_constraint().as_expr(),
            conditions,
        }
    }

    /// `None` when the policy's action scope does not match the request; else the outcome of
    /// each condition, in order.
    pub fn evaluate(&self, request: &Request, entities: &Entities) -> Option<Vec<Outcome>> {
        let core_request: &core_ast::Request = request.as_ref();
        let extensions = Extensions::all_available();
        let core_entities: &cedar_policy_core::entities::Entities = entities.as_ref();
        let eval = Evaluator::new(core_request.clone(), core_entities, extensions);
        let slots = core_ast::SlotEnv::new();
        let holds = |e: &Expr| -> Result<bool, String> {
            match eval.interpret(e, &slots) {
                Ok(v) => match v.value_kind() {
                    core_ast::ValueKind::Lit(Literal::Bool(b)) => Ok(*b),
                    _ => Err("not a boolean".to_string()),
                },
                Err(err) => Err(super::load::one_line(&err.to_string())),
            }
        };
        if !matches!(holds(&self.action), Ok(true)) {
            return None;
        }
        let mut out = Vec::with_capacity(self.conditions.len());
        let mut reached = true;
        for c in &self.conditions {
            if !reached {
                out.push(Outcome::NotReached);
                continue;
            }
            let o = match holds(&c.expr) {
                Ok(true) => Outcome::Held,
                Ok(false) => Outcome::Failed,
                Err(e) => Outcome::Error(e),
            };
            reached = o == Outcome::Held;
            out.push(o);
        }
        Some(out)
    }
}

fn is_true(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::Lit(Literal::Bool(true)))
}

fn flatten(e: &Expr, out: &mut Vec<Expr>) {
    match e.expr_kind() {
        ExprKind::And { left, right } => {
            flatten(left, out);
            flatten(right, out);
        }
        _ => out.push(e.clone()),
    }
}

/// The shipped policies' conditions in words an employee or auditor understands; conditions
/// not listed are shown in Cedar syntax.
pub fn in_words(text: &str) -> Option<&'static str> {
    const WORDS: &[(&str, &str)] = &[
        ("context has case", "the request names a case"),
        ("!(context has case)", "the request names no case"),
        ("context.case.status == \"open\"", "the case is open"),
        ("context.case.status != \"open\"", "the case is not open"),
        ("context.case.opened <= context.now", "the case had opened"),
        (
            "context.now < context.case.closes",
            "the case had not yet closed",
        ),
        (
            "principal in context.case.organization",
            "the employee belongs to the case's organisation",
        ),
        (
            "!(principal in context.case.organization)",
            "the employee does not belong to the case's organisation",
        ),
        (
            "context.case.handlers.contains(principal)",
            "the employee handles the case",
        ),
        (
            "!context.case.handlers.contains(principal)",
            "the employee does not handle the case",
        ),
        (
            "principal in context.case.case_type.roles",
            "the employee's role may work on this type of case",
        ),
        (
            "!(principal in context.case.case_type.roles)",
            "the employee's role may not work on this type of case",
        ),
        (
            "context.case.subjects.contains(resource)",
            "the person is a subject of the case",
        ),
        (
            "!context.case.subjects.contains(resource)",
            "the person is not a subject of the case",
        ),
        (
            "context.case.vehicles.contains(resource)",
            "the vehicle is named in the case",
        ),
        (
            "!context.case.vehicles.contains(resource)",
            "the vehicle is not named in the case",
        ),
        (
            "context.case.case_type.allowed_fields.containsAll(context.fields)",
            "every requested field is allowed for the case type",
        ),
        (
            "!context.case.case_type.allowed_fields.containsAll(context.fields)",
            "a requested field is not allowed for the case type",
        ),
        ("!resource.protected", "the person is not protected"),
        ("resource.protected", "the person is protected"),
        (
            "context.lookups_last_hour <= 200",
            "the employee made at most 200 lookups in the last hour",
        ),
        (
            "context.lookups_last_hour > 200",
            "the employee made more than 200 lookups in the last hour",
        ),
        (
            "context.break_glass",
            "the request asks for break-glass access",
        ),
        (
            "!context.break_glass",
            "the request does not ask for break-glass access",
        ),
        ("context has reason", "a break-glass reason is given"),
        (
            "context.reason != \"\"",
            "the break-glass reason is not empty",
        ),
        (
            "principal in Gate::Role::\"noodtoegang\"",
            "the employee has the role noodtoegang (break-glass)",
        ),
        (
            "principal in Gate::Role::\"voertuiginformatie\"",
            "the employee has the role voertuiginformatie",
        ),
        (
            "!(principal in Gate::Role::\"noodtoegang\")",
            "the employee lacks the role noodtoegang (break-glass)",
        ),
        (
            "context.case.case_type.search_allowed",
            "the case type allows searching for persons",
        ),
        (
            "!context.case.case_type.search_allowed",
            "the case type does not allow searching for persons",
        ),
        ("context has search", "the request is a search"),
        (
            "context.named",
            "the request named this person and was allowed for them",
        ),
        ("!context.named", "the request did not name this person"),
        (
            "context.search.kind == \"address\"",
            "the search is an address search",
        ),
        (
            "context.request_action == \"rdw:holder\"",
            "the answer is a vehicle holder answer",
        ),
        (
            "context.request_action == \"brp:search\"",
            "the answer is a person search answer",
        ),
        (
            "context.request_action == \"brp:lookup\"",
            "the answer is a person lookup answer",
        ),
        (
            "!context.secret",
            "the answer does not mark the person secret",
        ),
        (
            "context.persons_in_answer <= context.case.case_type.search_release_limit",
            "the answer holds no more persons than the case type releases whole",
        ),
    ];
    WORDS.iter().find(|(t, _)| *t == text).map(|(_, w)| *w)
}
