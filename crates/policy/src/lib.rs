//! Policy: Cedar schema, policies and static entities, and the decision for one data subject.
//!
//! Guarantees:
//! - Loading validates strictly (Cedar `ValidationMode::Strict`, warnings fail too), checks
//!   that every policy has `@id` and every forbid `@code` and `@reason`, and validates the
//!   static entities against the schema; any error names the file and `line:column`.
//! - The policy set is exactly what the official `cedar` CLI gets: policies are renamed to
//!   their `@id` as `cedar` does, so test files and audit records use the same ids.
//! - A decision is an allow only when Cedar says allow *and* no policy failed to evaluate
//!   (fail closed: any evaluation error is a deny with code `policyError`).
//! - Every deny carries the determining forbids' `@id`s, `@reason`s and the first one's
//!   `@code`, or `notPermitted` when no permit applied.
//!
//! Refuses: a directory without exactly one `*.cedarschema`, at least one `*.cedar` and an
//! `entities.json`; policy templates; duplicate ids. This module knows nothing of HTTP.

mod compiled;
mod conditions;
pub mod coverage;
mod differential;
pub mod explain;
mod load;
mod prepared;
pub mod prove;
pub mod replay;
mod suite;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    EvalResult, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
};
use cedar_policy_core::ast as core_ast;
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use chrono::{DateTime, Utc};
use smol_str::SmolStr;

use purpose_gate_model::{Action, Case, Counters, Employee, Release, Resource, Search};

pub use differential::Evaluator;
pub use load::{ENTITIES_FILE, PolicyInfo};
pub use prepared::{PreparedAnswer, PreparedPolicySet};
pub use suite::{TestCaseReport, TestReport};

/// Policies could not be loaded; the message names the file and `line:column` when known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PolicyLoadError(pub String);

/// What one decision is about.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    pub employee: &'a Employee,
    pub action: Action,
    pub resource: &'a Resource,
    pub case: Option<&'a Case>,
    pub break_glass: bool,
    pub reason: Option<&'a str>,
    pub fields: &'a [String],
    pub client_ip: Option<IpAddr>,
    pub now: DateTime<Utc>,
    pub counters: Counters,
    /// A BRP search: what it looks for (`context.search`).
    pub search: Option<&'a Search>,
    /// For [`Action::RELEASE`]: the person and what the answer says (`ReleaseContext`).
    pub release: Option<Release<'a>>,
}

/// The answer for one data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// `@id`s of the determining policies.
    pub policies: Vec<String>,
    /// `@reason`s of the determining forbids (or the gate's reason when none applied).
    pub reasons: Vec<String>,
    /// `@code` of the first determining forbid, e.g. `caseClosed`; `notPermitted` when no
    /// permit applied; `policyError` on evaluation errors.
    pub code: Option<String>,
    pub errors: Vec<String>,
}

/// Deny code when no permit applied.
pub const CODE_NOT_PERMITTED: &str = "notPermitted";
/// Deny code when a policy could not be evaluated or the request could not be built.
pub const CODE_POLICY_ERROR: &str = "policyError";
/// Reason given with [`CODE_NOT_PERMITTED`].
pub const REASON_NOT_PERMITTED: &str = "no policy permits this request";
/// Reason given with [`CODE_POLICY_ERROR`].
pub const REASON_POLICY_ERROR: &str = "a policy could not be evaluated, so access is denied";
/// `Case.closes` for an open-ended case (`closes` is `None`).
pub const OPEN_ENDED_CLOSES: &str = "9999-12-31T23:59:59.999Z";

/// What `purpose-gate policy check` reports about a valid policy directory.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// [`PolicyEngine::version`] of the loaded files.
    pub version: String,
    pub schema_file: PathBuf,
    pub policy_files: Vec<PathBuf>,
    pub entities_file: PathBuf,
    /// Number of static entities (without the schema's action entities).
    pub entities: usize,
    /// Every policy in load order.
    pub policies: Vec<PolicyInfo>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let permits = self.policies.iter().filter(|p| p.permit).count();
        writeln!(
            f,
            "policies ok: {} permits, {} forbids, {} static entities",
            permits,
            self.policies.len() - permits,
            self.entities
        )?;
        writeln!(f, "schema:   {}", self.schema_file.display())?;
        for p in &self.policy_files {
            writeln!(f, "policies: {}", p.display())?;
        }
        writeln!(f, "entities: {}", self.entities_file.display())?;
        writeln!(f, "version:  {}", self.version)?;
        for p in &self.policies {
            match (&p.code, &p.reason) {
                (Some(code), Some(reason)) => writeln!(
                    f,
                    "  forbid {} [{}] {}:{}: {}",
                    p.id,
                    code,
                    p.file.display(),
                    p.line,
                    reason
                )?,
                _ => writeln!(f, "  permit {} {}:{}", p.id, p.file.display(), p.line)?,
            }
        }
        Ok(())
    }
}

/// Loads and validates a policy directory (for `purpose-gate policy check`).
pub fn check(dir: &Path) -> Result<CheckReport, PolicyLoadError> {
    let engine = PolicyEngine::load(dir)?;
    Ok(engine.check_report())
}

/// Runs `dir/tests/*.json` (the `cedar run-tests` format) against the policies in `dir`, with
/// the crate rather than the CLI (for `purpose-gate policy test`).
pub fn run_tests(dir: &Path) -> Result<TestReport, PolicyLoadError> {
    let engine = PolicyEngine::load(dir)?;
    suite::run(&engine, &dir.join("tests"))
}

/// Cedar type names used per request, parsed once.
struct Types {
    employee: EntityTypeName,
    role: EntityTypeName,
    organization: EntityTypeName,
    case_type: EntityTypeName,
    case: EntityTypeName,
    person: EntityTypeName,
    vehicle: EntityTypeName,
    person_search: EntityTypeName,
}

impl Types {
    fn new() -> Result<Types, PolicyLoadError> {
        let t = |name: &str| {
            EntityTypeName::from_str(name)
                .map_err(|e| PolicyLoadError(format!("bad entity type `{name}`: {e}")))
        };
        Ok(Types {
            employee: t("Gate::Employee")?,
            role: t("Gate::Role")?,
            organization: t("Gate::Organization")?,
            case_type: t("Gate::CaseType")?,
            case: t("Gate::Case")?,
            person: t("Gate::Person")?,
            vehicle: t("Gate::Vehicle")?,
            person_search: t("Gate::PersonSearch")?,
        })
    }

    fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// Static entities, indexed at load so that a decision clones only what it needs.
struct Statics {
    /// Role name → the role entity followed by all of its ancestor roles (each with its
    /// ancestors already transitively closed, as the loaded entity set computed them).
    roles: HashMap<String, Vec<Arc<core_ast::Entity>>>,
    case_types: HashMap<String, Arc<core_ast::Entity>>,
    organizations: HashMap<String, Arc<core_ast::Entity>>,
    /// BSNs of persons marked `protected: true`.
    protected: HashSet<String>,
    /// Number of entities in `entities.json`.
    count: usize,
}

impl Statics {
    fn index(entities: &Entities, types: &Types) -> Statics {
        let mut s = Statics {
            roles: HashMap::new(),
            case_types: HashMap::new(),
            organizations: HashMap::new(),
            protected: HashSet::new(),
            count: 0,
        };
        for entity in entities.iter() {
            let uid = entity.uid();
            let ty = uid.type_name();
            let id = uid.id().unescaped().to_string();
            if ty.basename() == "Action" {
                continue;
            }
            s.count += 1;
            if ty == &types.role {
                let mut chain = vec![Arc::new(entity.as_ref().clone())];
                if let Some(ancestors) = entities.ancestors(&uid) {
                    let mut ancestors: Vec<&EntityUid> = ancestors.collect();
                    ancestors.sort();
                    chain.extend(
                        ancestors
                            .into_iter()
                            .filter_map(|a| entities.get(a).map(|e| Arc::new(e.as_ref().clone()))),
                    );
                }
                s.roles.insert(id, chain);
            } else if ty == &types.case_type {
                s.case_types.insert(id, Arc::new(entity.as_ref().clone()));
            } else if ty == &types.organization {
                s.organizations
                    .insert(id, Arc::new(entity.as_ref().clone()));
            } else if ty == &types.person
                && matches!(entity.attr("protected"), Some(Ok(EvalResult::Bool(true))))
            {
                s.protected.insert(id);
            }
        }
        s
    }
}

/// A loaded, validated policy set with its static entities.
pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    /// Per action (in the order of `actions`), the policies whose action scope can match it:
    /// the others can never be satisfied nor fail for that action, so Cedar need not see them.
    #[cfg(test)]
    by_action: HashMap<String, PolicySet>,
    /// The same policies, prepared for evaluation (see [`compiled`]).
    compiled: HashMap<String, compiled::Compiled>,
    /// The schema's entity of each action (in the order of `actions`), with its action groups.
    action_entities: HashMap<String, Arc<core_ast::Entity>>,
    /// `datetime`, the name of Cedar's constructor, parsed once.
    datetime_fn: core_ast::Name,
    /// Cedar's `datetime` and `ip` constructors, looked up once.
    datetime_ctor: &'static core_ast::ExtensionFunction,
    ip_ctor: &'static core_ast::ExtensionFunction,
    authorizer: Authorizer,
    /// Which evaluator decides (see [`differential`]).
    evaluator: Evaluator,
    infos: Vec<PolicyInfo>,
    /// Policy id → index into `infos` (load order).
    order: HashMap<PolicyId, usize>,
    types: Types,
    actions: HashMap<String, EntityUid>,
    statics: Statics,
    schema_file: PathBuf,
    policy_files: Vec<PathBuf>,
    entities_file: PathBuf,
    version: String,
    /// Case entities of earlier decisions (see [`CaseEntities`]).
    case_entities: CaseEntities,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("version", &self.version)
            .field("policies", &self.infos.len())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Loads and validates `*.cedarschema`, `*.cedar` and `entities.json` from `dir`.
    pub fn load(dir: &Path) -> Result<PolicyEngine, PolicyLoadError> {
        let loaded = load::load_dir(dir)?;
        let types = Types::new()?;
        let statics = Statics::index(&loaded.entities, &types);
        let schema_actions = loaded
            .schema
            .action_entities()
            .map_err(|e| PolicyLoadError(format!("cannot read the schema's actions: {e}")))?;
        // Every action the schema declares (whichever registry plug-in asks about it), by id.
        let mut actions: HashMap<String, EntityUid> = HashMap::new();
        let mut by_action: HashMap<String, PolicySet> = HashMap::new();
        let mut action_entities: HashMap<String, Arc<core_ast::Entity>> = HashMap::new();
        for entity in schema_actions.iter() {
            let uid = entity.uid();
            if uid.type_name().basename() != "Action" {
                continue;
            }
            let id = uid.id().unescaped().to_string();
            by_action.insert(
                id.clone(),
                policies_for(&loaded.policies, &schema_actions, &uid)?,
            );
            action_entities.insert(id.clone(), Arc::new(entity.as_ref().clone()));
            actions.insert(id, uid);
        }
        let datetime_fn = core_ast::Name::from_str("datetime")
            .map_err(|e| PolicyLoadError(format!("bad extension function name: {e}")))?;
        let ctor = |name: &str| {
            core_ast::Name::from_str(name)
                .map_err(|e| e.to_string())
                .and_then(|n| {
                    Extensions::all_available()
                        .func(&n)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| PolicyLoadError(format!("Cedar extension function `{name}`: {e}")))
        };
        let datetime_ctor = ctor("datetime")?;
        let ip_ctor = ctor("ip")?;
        let order: HashMap<PolicyId, usize> = loaded
            .infos
            .iter()
            .enumerate()
            .map(|(i, p)| (PolicyId::new(&p.id), i))
            .collect();
        let compile = |set: &PolicySet| {
            compiled::Compiled::new(set.policies(), &order)
                .map_err(|e| PolicyLoadError(format!("cannot prepare the policies: {e}")))
        };
        let compiled = by_action
            .iter()
            .map(|(id, set)| Ok((id.clone(), compile(set)?)))
            .collect::<Result<HashMap<String, compiled::Compiled>, PolicyLoadError>>()?;
        Ok(PolicyEngine {
            schema: loaded.schema,
            policies: loaded.policies,
            #[cfg(test)]
            by_action,
            compiled,
            action_entities,
            datetime_fn,
            datetime_ctor,
            ip_ctor,
            authorizer: Authorizer::new(),
            evaluator: Evaluator::default(),
            infos: loaded.infos,
            order,
            types,
            actions,
            statics,
            schema_file: loaded.schema_file,
            policy_files: loaded.policy_files,
            entities_file: loaded.entities_file,
            version: loaded.version,
            case_entities: CaseEntities::default(),
        })
    }

    /// SHA-256 over the loaded files, as lowercase hex.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every loaded policy, in load order.
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.infos
    }

    /// The summary `policy check` prints.
    pub fn check_report(&self) -> CheckReport {
        CheckReport {
            version: self.version.clone(),
            schema_file: self.schema_file.clone(),
            policy_files: self.policy_files.clone(),
            entities_file: self.entities_file.clone(),
            entities: self.statics.count,
            policies: self.infos.clone(),
        }
    }

    /// Decides one request about one data subject.
    pub fn decide(&self, input: &DecisionInput<'_>) -> Decision {
        // INVARIANT: `build` produces a request and entities that conform to the schema (a unit
        // test validates them), so the request path skips Cedar's per-request schema checks.
        let built = match self.build(input, None) {
            Ok(b) => b,
            Err(e) => return policy_error(vec![], vec![e]),
        };
        self.decide_built(input.action, built)
    }

    /// What every decision about one request shares (see [`RequestBase`]), from `input`'s
    /// employee, case, purpose, fields, counters, search and time; its action, resource and
    /// release are left out.
    pub fn request_base(&self, input: &DecisionInput<'_>) -> RequestBase {
        match self.base(input) {
            Ok(b) => {
                let entities = b
                    .entities
                    .core()
                    .map_err(|e| format!("cannot build entities: {}", load::one_line(&e)));
                RequestBase(entities.map(|entities| BaseParts {
                    principal: b.principal,
                    entities,
                    ctx: Arc::new(b.ctx),
                    note: b.note,
                }))
            }
            Err(e) => RequestBase(Err(e)),
        }
    }

    /// Decides `action` on `resource` (with `release` for [`Action::RELEASE`]) within the
    /// request `base`: the same decision as [`PolicyEngine::decide`] with the input `base` was
    /// made from and these three, from the same request and entities, built without
    /// rebuilding what `base` holds.
    pub fn decide_in(
        &self,
        base: &RequestBase,
        action: Action,
        resource: &Resource,
        release: Option<&Release<'_>>,
    ) -> Decision {
        let base = match &base.0 {
            Ok(b) => b,
            Err(e) => return policy_error(vec![], vec![e.clone()]),
        };
        let built = match self.finish_in(base, action, resource, release) {
            Ok(b) => b,
            Err(e) => return policy_error(vec![], vec![e]),
        };
        self.decide_built(action, built)
    }

    /// The request and entities of one decision within `base`.
    fn finish_in(
        &self,
        base: &BaseParts,
        action: Action,
        resource: &Resource,
        release: Option<&Release<'_>>,
    ) -> Result<Built, String> {
        let (resource, resource_entity) = self.resource_entity(resource);
        let action_uid = self
            .action_uid(action)
            .ok_or_else(|| not_in_schema(action))?
            .clone();
        let mut added = vec![Arc::new(resource_entity)];
        if let Some(a) = self.action_entities.get(action.as_str()) {
            added.push(Arc::clone(a));
        }
        let context = match release {
            None => Arc::clone(&base.ctx),
            Some(r) => {
                let mut ctx = (*base.ctx).clone();
                release_context(&mut ctx, r);
                Arc::new(ctx)
            }
        };
        // INVARIANT: the resource (a Person, PersonSearch or Vehicle) and the action are of
        // other types than every entity of the base, so adding them never meets a duplicate,
        // and neither has parents that are not already closed (the action's groups come with
        // the schema's closed hierarchy): the result is the entity set `build` makes.
        let entities = base
            .entities
            .clone()
            .add_entities(
                added,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| format!("cannot build entities: {}", load::one_line(&e.to_string())))?;
        let request = Request::from(core_ast::Request::new_unchecked(
            core_ast::EntityUIDEntry::known(base.principal.clone().into(), None),
            core_ast::EntityUIDEntry::known(action_uid.into(), None),
            core_ast::EntityUIDEntry::known(resource.into(), None),
            Some(core_ast::Context::Value(context)),
        ));
        Ok(Built {
            request,
            entities: Entities::from(entities),
            note: base.note.clone(),
        })
    }

    /// The decision for a built request.
    fn decide_built(&self, action: Action, built: Built) -> Decision {
        let outcome = match self.evaluator {
            Evaluator::Prepared => match self.compiled.get(action.as_str()) {
                Some(c) => c.evaluate(&built.request, &built.entities),
                None => return policy_error(vec![], vec![not_in_schema(action)]),
            },
            Evaluator::Cedar => self.cedar_outcome(&built.request, &built.entities),
        };
        let determining: Vec<&PolicyInfo> = outcome
            .determining
            .iter()
            .filter_map(|i| self.infos.get(*i))
            .collect();
        let eval_errors: Vec<String> = outcome.errors.iter().map(|e| load::one_line(e)).collect();
        let allowed = outcome.allow;

        if !eval_errors.is_empty() || built.note.is_some() {
            // INVARIANT: an evaluation error never allows; an erroring forbid must not be
            // outvoted by a permit that happened to evaluate.
            let mut errors: Vec<String> = built.note.into_iter().collect();
            errors.extend(eval_errors);
            let forbids: Vec<&PolicyInfo> = if allowed {
                vec![]
            } else {
                determining.into_iter().filter(|p| !p.permit).collect()
            };
            return policy_error(forbids, errors);
        }
        if allowed {
            return Decision {
                allow: true,
                policies: determining.iter().map(|p| p.id.clone()).collect(),
                reasons: vec![],
                code: None,
                errors: vec![],
            };
        }
        let forbids: Vec<&PolicyInfo> = determining.into_iter().filter(|p| !p.permit).collect();
        match forbids.first() {
            None => Decision {
                allow: false,
                policies: vec![],
                reasons: vec![REASON_NOT_PERMITTED.to_string()],
                code: Some(CODE_NOT_PERMITTED.to_string()),
                errors: vec![],
            },
            Some(first) => Decision {
                allow: false,
                code: first.code.clone(),
                policies: forbids.iter().map(|p| p.id.clone()).collect(),
                reasons: forbids.iter().filter_map(|p| p.reason.clone()).collect(),
                errors: vec![],
            },
        }
    }

    /// Builds the Cedar request and the per-request entity set. With `schema`, both are
    /// validated against it (tests do this; the request path builds them by construction).
    fn build(&self, input: &DecisionInput<'_>, schema: Option<&Schema>) -> Result<Built, String> {
        let Base {
            principal,
            mut entities,
            mut ctx,
            note,
        } = self.base(input)?;
        if let Some(release) = &input.release {
            release_context(&mut ctx, release);
        }
        let (resource, resource_entity) = self.resource_entity(input.resource);
        entities.push(resource_entity);
        // The action with its groups, so that `action in Group` sees the schema's hierarchy.
        if let Some(action) = self.action_entities.get(input.action.as_str()) {
            entities.push_ref(action);
        }
        let action = self
            .action_uid(input.action)
            .ok_or_else(|| not_in_schema(input.action))?
            .clone();
        let context = core_ast::Context::Value(Arc::new(ctx));
        let request = match schema {
            Some(schema) => Request::new(principal, action, resource, context.into(), Some(schema))
                .map_err(|e| format!("cannot build request: {}", load::one_line(&e.to_string())))?,
            None => Request::from(core_ast::Request::new_unchecked(
                core_ast::EntityUIDEntry::known(principal.into(), None),
                core_ast::EntityUIDEntry::known(action.into(), None),
                core_ast::EntityUIDEntry::known(resource.into(), None),
                Some(context),
            )),
        };
        let entities = entities
            .build(schema)
            .map_err(|e| format!("cannot build entities: {}", load::one_line(&e)))?;
        Ok(Built {
            request,
            entities,
            note,
        })
    }

    /// What the decisions of one request share: the principal, the entities without the
    /// resource's and the action's, the context without the release's members.
    fn base(&self, input: &DecisionInput<'_>) -> Result<Base, String> {
        let t = &self.types;
        let employee = input.employee;
        let principal = Types::uid(&t.employee, &employee.id);
        let mut entities = EntitySet::default();
        let mut note = None;

        // INVARIANT: every entity is pushed with all of its ancestors (transitively closed), so
        // the set needs no closure computation: the employee's parents are its organisation,
        // its roles and all of their ancestor roles (organisations have no parents in the
        // schema); static roles carry their closed ancestors from the loaded entity set.
        let mut parents: HashSet<core_ast::EntityUID> =
            HashSet::with_capacity(employee.roles.len() + 2);
        parents.insert(Types::uid(&t.organization, &employee.org).into());
        for role in &employee.roles {
            parents.insert(Types::uid(&t.role, role).into());
            if let Some(chain) = self.statics.roles.get(role) {
                for entity in chain {
                    parents.insert(entity.uid().clone());
                    entities.push_ref(entity);
                }
            }
        }
        entities.push(plain_entity(&principal, parents, None));
        if let Some(org) = self.statics.organizations.get(&employee.org) {
            entities.push_ref(org);
        }

        // The context is built from Cedar values directly: `Context::from_pairs` would run
        // Cedar's restricted-expression evaluator over every member on each request.
        let mut ctx: BTreeMap<SmolStr, core_ast::Value> = BTreeMap::new();
        ctx.insert(SmolStr::new_static("now"), self.now_value(&input.now)?);
        if let Some(case) = input.case {
            let uid = Types::uid(&t.case, &case.id);
            match self.statics.case_types.get(&case.case_type) {
                Some(ct) => entities.push_ref(ct),
                None => {
                    note = Some(format!(
                        "case type `{}` is not defined in the static entities",
                        purpose_gate_model::truncate_for_message(&case.case_type)
                    ));
                }
            }
            if case.organization != employee.org
                && let Some(org) = self.statics.organizations.get(&case.organization)
            {
                entities.push_ref(org);
            }
            entities.push_ref(
                &self
                    .case_entities
                    .get_or_build(case, || self.case_entity(uid.clone(), case))?,
            );
            ctx.insert(
                SmolStr::new_static("case"),
                core_ast::Value::from(core_ast::EntityUID::from(uid)),
            );
        }
        ctx.insert(
            SmolStr::new_static("break_glass"),
            core_ast::Value::from(input.break_glass),
        );
        if let Some(reason) = input.reason {
            ctx.insert(SmolStr::new_static("reason"), core_ast::Value::from(reason));
        }
        ctx.insert(
            SmolStr::new_static("fields"),
            core_ast::Value::set_of_lits(
                input
                    .fields
                    .iter()
                    .map(|f| core_ast::Literal::from(f.as_str())),
                None,
            ),
        );
        if let Some(ip) = input.client_ip {
            ctx.insert(SmolStr::new_static("client_ip"), self.ip_value(ip)?);
        }
        ctx.insert(
            SmolStr::new_static("lookups_last_hour"),
            core_ast::Value::from(input.counters.lookups_last_hour),
        );
        ctx.insert(
            SmolStr::new_static("lookups_last_day"),
            core_ast::Value::from(input.counters.lookups_last_day),
        );
        if let Some(search) = input.search {
            ctx.insert(
                SmolStr::new_static("search"),
                core_ast::Value::record(
                    [
                        (
                            SmolStr::new_static("kind"),
                            core_ast::Value::from(search.kind.as_str()),
                        ),
                        (
                            SmolStr::new_static("addresses"),
                            string_set(&search.addresses),
                        ),
                    ],
                    None,
                ),
            );
        }
        Ok(Base {
            principal,
            entities,
            ctx,
            note,
        })
    }

    /// The resource's uid and entity (a person with `protected` from the static entities).
    fn resource_entity(&self, resource: &Resource) -> (EntityUid, core_ast::Entity) {
        let t = &self.types;
        match resource {
            Resource::Person(bsn) => {
                let uid = Types::uid(&t.person, bsn.as_str());
                let protected = self.statics.protected.contains(bsn.as_str());
                let entity = plain_entity(
                    &uid,
                    HashSet::new(),
                    Some((
                        SmolStr::new_static("protected"),
                        core_ast::Value::from(protected),
                    )),
                );
                (uid, entity)
            }
            Resource::PersonSearch(kind) => {
                let uid = Types::uid(&t.person_search, kind);
                let entity = plain_entity(&uid, HashSet::new(), None);
                (uid, entity)
            }
            Resource::Vehicle(kenteken) => {
                let uid = Types::uid(&t.vehicle, kenteken.as_str());
                let entity = plain_entity(&uid, HashSet::new(), None);
                (uid, entity)
            }
        }
    }

    fn case_entity(&self, uid: EntityUid, case: &Case) -> Result<core_ast::Entity, String> {
        let t = &self.types;
        let refs = |ty: &EntityTypeName, ids: &[String]| {
            RestrictedExpression::new_set(
                ids.iter()
                    .map(|id| RestrictedExpression::new_entity_uid(Types::uid(ty, id))),
            )
        };
        let closes = match &case.closes {
            Some(c) => cedar_datetime(c),
            None => OPEN_ENDED_CLOSES.to_string(),
        };
        let attrs: HashMap<String, RestrictedExpression> = HashMap::from([
            (
                "case_type".to_string(),
                RestrictedExpression::new_entity_uid(Types::uid(&t.case_type, &case.case_type)),
            ),
            (
                "status".to_string(),
                RestrictedExpression::new_string(case.status.as_str().to_string()),
            ),
            (
                "opened".to_string(),
                self.datetime_expression(cedar_datetime(&case.opened)),
            ),
            ("closes".to_string(), self.datetime_expression(closes)),
            (
                "organization".to_string(),
                RestrictedExpression::new_entity_uid(Types::uid(
                    &t.organization,
                    &case.organization,
                )),
            ),
            ("handlers".to_string(), refs(&t.employee, &case.handlers)),
            ("subjects".to_string(), refs(&t.person, &case.subjects)),
            ("vehicles".to_string(), refs(&t.vehicle, &case.vehicles)),
            (
                "addresses".to_string(),
                RestrictedExpression::new_set(
                    case.addresses
                        .iter()
                        .flat_map(purpose_gate_model::CaseAddress::keys)
                        .map(RestrictedExpression::new_string),
                ),
            ),
            (
                "persons".to_string(),
                RestrictedExpression::new_set(
                    case.persons
                        .iter()
                        .filter_map(purpose_gate_model::CasePerson::key)
                        .map(RestrictedExpression::new_string),
                ),
            ),
        ]);
        Entity::new(uid, attrs, HashSet::new())
            .map(|e| e.as_ref().clone())
            .map_err(|e| {
                format!(
                    "cannot build case `{}`: {}",
                    purpose_gate_model::truncate_for_message(&case.id),
                    load::one_line(&e.to_string())
                )
            })
    }

    /// `context.now`: Cedar's `datetime` of `now` (the last one made on this thread is reused
    /// within the same millisecond).
    fn now_value(&self, now: &DateTime<Utc>) -> Result<core_ast::Value, String> {
        thread_local! {
            static LAST: LastValue<i64> = const { RefCell::new(None) };
        }
        reuse_last(&LAST, now.timestamp_millis(), || {
            extension_value(self.datetime_ctor, "datetime", cedar_datetime(now))
        })
    }

    /// `context.client_ip`: Cedar's `ip` of `ip` (the last one made on this thread is reused
    /// for the same address).
    fn ip_value(&self, ip: IpAddr) -> Result<core_ast::Value, String> {
        thread_local! {
            static LAST: LastValue<IpAddr> = const { RefCell::new(None) };
        }
        reuse_last(&LAST, ip, || {
            extension_value(self.ip_ctor, "ip", ip.to_string())
        })
    }

    /// `datetime(src)` with the constructor's name parsed at load (`RestrictedExpression::
    /// new_datetime` parses it with Cedar's grammar on every call).
    fn datetime_expression(&self, src: String) -> RestrictedExpression {
        RestrictedExpression::from(core_ast::RestrictedExpr::call_extension_fn(
            self.datetime_fn.clone(),
            [core_ast::RestrictedExpr::val(src)],
        ))
    }

    /// The policies that can apply to `action`.
    #[cfg(test)]
    fn policies_of(&self, action: Action) -> &PolicySet {
        &self.by_action[action.as_str()]
    }

    /// The schema's uid of `action`; `None` when the schema does not declare it.
    fn action_uid(&self, action: Action) -> Option<&EntityUid> {
        self.actions.get(action.as_str())
    }
}

/// The Cedar entities of recently decided cases, keyed by case id and checked against the
/// whole case on every hit: a case's entity is the same for every request until the registry
/// answers differently, and building one evaluates two `datetime` constructors and three sets.
/// Bounded: when full it starts over (a cold entry costs one build).
#[derive(Default)]
struct CaseEntities {
    map: Mutex<HashMap<String, (Case, Arc<core_ast::Entity>)>>,
}

/// Most cases [`CaseEntities`] keeps.
const CASE_ENTITIES_MAX: usize = 4096;

impl CaseEntities {
    fn get_or_build(
        &self,
        case: &Case,
        build: impl FnOnce() -> Result<core_ast::Entity, String>,
    ) -> Result<Arc<core_ast::Entity>, String> {
        if let Ok(map) = self.map.lock()
            && let Some((cached, entity)) = map.get(&case.id)
            // INVARIANT: an entry is used only for exactly the case it was built from.
            && cached == case
        {
            return Ok(Arc::clone(entity));
        }
        let entity = Arc::new(build()?);
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CASE_ENTITIES_MAX {
                map.clear();
            }
            map.insert(case.id.clone(), (case.clone(), Arc::clone(&entity)));
        }
        Ok(entity)
    }
}

/// The context members of a release decision: the request's action and what the answer says
/// of the person.
fn release_context(ctx: &mut BTreeMap<SmolStr, core_ast::Value>, release: &Release<'_>) {
    ctx.insert(
        SmolStr::new_static("request_action"),
        core_ast::Value::from(release.request_action.as_str()),
    );
    ctx.insert(
        SmolStr::new_static("named"),
        core_ast::Value::from(release.named),
    );
    ctx.insert(
        SmolStr::new_static("secret"),
        core_ast::Value::from(release.person.secret),
    );
    ctx.insert(
        SmolStr::new_static("addresses"),
        string_set(&release.person.addresses),
    );
    if let Some(name) = &release.person.name {
        ctx.insert(
            SmolStr::new_static("name"),
            core_ast::Value::from(name.as_str()),
        );
    }
    ctx.insert(
        SmolStr::new_static("persons_in_answer"),
        core_ast::Value::from(i64::try_from(release.persons_in_answer).unwrap_or(i64::MAX)),
    );
}

/// The error of a decision about an action the schema does not declare (fail closed).
fn not_in_schema(action: Action) -> String {
    format!(
        "action `{}` is not declared in the schema",
        purpose_gate_model::truncate_for_message(action.as_str())
    )
}

/// The entities of one request, each at most once (shared ones by reference).
#[derive(Default)]
struct EntitySet {
    entities: Vec<Arc<core_ast::Entity>>,
}

impl EntitySet {
    fn has(&self, entity: &core_ast::Entity) -> bool {
        self.entities.iter().any(|e| e.uid() == entity.uid())
    }

    fn push(&mut self, entity: core_ast::Entity) {
        if !self.has(&entity) {
            self.entities.push(Arc::new(entity));
        }
    }

    /// [`EntitySet::push`] of a shared entity (not copied).
    fn push_ref(&mut self, entity: &Arc<core_ast::Entity>) {
        if !self.has(entity) {
            self.entities.push(Arc::clone(entity));
        }
    }

    /// Without `schema`, trusts the closure the pushes maintain (the request path); with it,
    /// validates every entity and computes the closure as Cedar's public API does (tests).
    fn build(self, schema: Option<&Schema>) -> Result<Entities, String> {
        match schema {
            Some(schema) => Entities::from_entities(
                self.entities
                    .into_iter()
                    .map(|e| Entity::from(Arc::unwrap_or_clone(e))),
                Some(schema),
            )
            .map_err(|e| e.to_string()),
            None => self.core().map(Entities::from),
        }
    }

    /// The entity set as Cedar's core store, trusting the closure the pushes maintain.
    fn core(self) -> Result<CoreEntities, String> {
        CoreEntities::new()
            .add_entities(
                self.entities,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| e.to_string())
    }
}

/// The policies of `all` whose action scope can match `action`: unconstrained, `==` it, or
/// `in` a list naming it or one of its action groups (`actions`: the schema's action entities,
/// with their groups).
fn policies_for(
    all: &PolicySet,
    actions: &Entities,
    action: &EntityUid,
) -> Result<PolicySet, PolicyLoadError> {
    let groups: HashSet<EntityUid> = actions
        .ancestors(action)
        .map(|a| a.cloned().collect())
        .unwrap_or_default();
    let mut set = PolicySet::new();
    for policy in all.policies() {
        let applies = match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(list) => list.iter().any(|a| a == action || groups.contains(a)),
        };
        if applies {
            set.add(policy.clone())
                .map_err(|e| PolicyLoadError(format!("cannot index policies by action: {e}")))?;
        }
    }
    Ok(set)
}

/// The last Cedar value made on a thread, with the input it was made from.
type LastValue<K> = RefCell<Option<(K, core_ast::Value)>>;

/// `last`'s value when it was made from `key`, else `make()` (remembered when it succeeds).
fn reuse_last<K: PartialEq + Copy + 'static>(
    last: &'static std::thread::LocalKey<LastValue<K>>,
    key: K,
    make: impl FnOnce() -> Result<core_ast::Value, String>,
) -> Result<core_ast::Value, String> {
    if let Some(v) = last.with_borrow(|l| {
        l.as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }) {
        return Ok(v);
    }
    let v = make()?;
    last.set(Some((key, v.clone())));
    Ok(v)
}

/// The value of Cedar extension constructor `f` (named `name`) applied to `src`.
fn extension_value(
    f: &core_ast::ExtensionFunction,
    name: &str,
    src: String,
) -> Result<core_ast::Value, String> {
    let what = || {
        format!(
            "cannot build context: `{name}(\"{}\")`",
            purpose_gate_model::truncate_for_message(&src)
        )
    };
    match f.call(&[core_ast::Value::from(src.as_str())]) {
        Ok(core_ast::PartialValue::Value(v)) => Ok(v),
        Ok(core_ast::PartialValue::Residual(_)) => Err(format!("{}: not a value", what())),
        Err(e) => Err(format!("{}: {}", what(), load::one_line(&e.to_string()))),
    }
}

/// A per-request entity: `uid` with `parents` (already transitively closed) and at most one
/// attribute, built as Cedar's `Entity::new` would build it without evaluating expressions.
fn plain_entity(
    uid: &EntityUid,
    parents: HashSet<core_ast::EntityUID>,
    attr: Option<(SmolStr, core_ast::Value)>,
) -> core_ast::Entity {
    core_ast::Entity::new_with_attr_partial_value(
        uid.clone().into(),
        attr.map(|(k, v)| (k, core_ast::PartialValue::Value(v))),
        HashSet::new(),
        parents,
        [],
    )
}

/// A Cedar set of strings.
fn string_set(items: &[String]) -> core_ast::Value {
    core_ast::Value::set_of_lits(
        items.iter().map(|s| core_ast::Literal::from(s.as_str())),
        None,
    )
}

/// What the decisions of one request share, before the resource and the action (and, for a
/// release, what the answer says of the person) are added.
struct Base {
    principal: EntityUid,
    entities: EntitySet,
    ctx: BTreeMap<SmolStr, core_ast::Value>,
    note: Option<String>,
}

/// What every decision about one request shares, built once ([`PolicyEngine::request_base`]):
/// the employee with its roles and organisation, the case with its case type, and the context
/// (time, purpose, fields, counters, search). Each decision of the request — one per data
/// subject, then one `release` per person in the answer — adds only its resource, its action
/// and its release members ([`PolicyEngine::decide_in`]). A base that could not be built
/// makes every decision in it a `policyError` deny with the reason.
pub struct RequestBase(Result<BaseParts, String>);

struct BaseParts {
    principal: EntityUid,
    /// The base's entities, transitively closed.
    entities: CoreEntities,
    ctx: Arc<BTreeMap<SmolStr, core_ast::Value>>,
    note: Option<String>,
}

/// A built request with its entities and, when something is missing, a note for the errors.
struct Built {
    request: Request,
    entities: Entities,
    note: Option<String>,
}

fn policy_error(forbids: Vec<&PolicyInfo>, errors: Vec<String>) -> Decision {
    let mut reasons: Vec<String> = forbids.iter().filter_map(|p| p.reason.clone()).collect();
    reasons.push(REASON_POLICY_ERROR.to_string());
    Decision {
        allow: false,
        policies: forbids.iter().map(|p| p.id.clone()).collect(),
        reasons,
        code: Some(CODE_POLICY_ERROR.to_string()),
        errors,
    }
}

/// A Cedar `datetime` literal (`YYYY-MM-DDThh:mm:ss.SSSZ`, UTC). Years beyond 9999 do not fit
/// Cedar's format; Cedar then fails to build the value and the decision fails closed.
fn cedar_datetime(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
