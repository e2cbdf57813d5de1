//! Differential tests: the prepared evaluator against Cedar's `Authorizer`.
//!
//! A seeded generator (reproducible: the seed is printed and fixed) makes random decision
//! inputs — employees with random roles and organisations, cases of random types, states,
//! windows, handlers, subjects and vehicles, break-glass, fields, client addresses, counters
//! up to `i64::MAX` — built into Cedar requests and entities as the request path builds them
//! (and checked against the shipped schema), and random policy sets over the shipped schema's
//! attributes (scopes, `has`, `in`, sets, datetimes, ip addresses, arithmetic that overflows,
//! attributes that do not exist). Each request is compared on decision, determining policies
//! and error texts, for the shipped policies (the engine's own prepared arrays and `decide`
//! with both evaluators) and for every random policy set ([`PreparedPolicySet`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use cedar_policy::{PolicySet, ValidationMode, Validator};
use cedar_policy_core::ast as core_ast;
use cedar_policy_core::entities::Entities as CoreEntities;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::suite;
use super::super::{DecisionInput, PolicyEngine, PreparedPolicySet};
use super::{Evaluator, Outcome};
use purpose_gate_model::{
    Action, AnswerPerson, Bsn, Case, CaseAddress, CasePerson, CaseStatus, Counters, Employee,
    Kenteken, Release, Resource, Search, SearchKind,
};
/// The BRP Bewoning registry's action (the gate's `registry::BRP_BEWONING`), as the schema names it.
const BRP_BEWONING: Action = Action::new("brp:bewoning");

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Random policy sets, and random requests per set.
const POLICY_SETS: usize = 150;
const REQUESTS_PER_SET: usize = 24;
/// Random requests against the shipped policies.
const SHIPPED_REQUESTS: usize = 1500;

const EMPLOYEES: [&str; 5] = ["emp-042", "emp-107", "emp-311", "emp-900", "emp-x"];
const ORGS: [&str; 3] = ["0363", "0599", "9999"];
const BSNS: [&str; 4] = ["999993653", "999990639", "999991802", "999993872"];
const KENTEKENS: [&str; 2] = ["XX999X", "AB123C"];
const FIELDS: [&str; 5] = [
    "naam",
    "verblijfplaats",
    "geboorte.datum",
    "burgerservicenummer",
    "nationaliteiten",
];
const SEARCHES: [&str; 2] = [
    "ZoekMetGeslachtsnaamEnGeboortedatum",
    "ZoekMetPostcodeEnHuisnummer",
];
const ACTIONS: [Action; 6] = [
    Action::BRP_LOOKUP,
    Action::BRP_SEARCH,
    Action::RDW_VEHICLE,
    Action::RDW_HOLDER,
    Action::RELEASE,
    BRP_BEWONING,
];
/// Address keys, of cases, searches and answers (one that no case names).
const ADDRESS_KEYS: [&str; 3] = [
    "postcode:1017CB:502::",
    "aoid:0363010000502001",
    "postcode:9999ZZ:1::",
];
/// Name keys as answers give them.
const NAME_KEYS: [&str; 2] = ["dijk:1980-01-01", "jansen:1952-07-19"];
const COUNTS: [i64; 8] = [0, 3, 199, 200, 201, 10_000, i64::MAX - 1, i64::MAX];

fn shipped() -> PolicyEngine {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    match PolicyEngine::load(&dir) {
        Ok(e) => e,
        Err(e) => panic!("shipped policies do not load: {e}"),
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

fn subset(rng: &mut StdRng, items: &[&str]) -> Vec<String> {
    items
        .iter()
        .filter(|_| rng.gen_bool(0.4))
        .map(|s| s.to_string())
        .collect()
}

/// What one random decision is about (owns what [`DecisionInput`] borrows).
struct Input {
    employee: Employee,
    action: Action,
    resource: Resource,
    case: Option<Case>,
    break_glass: bool,
    reason: Option<String>,
    fields: Vec<String>,
    client_ip: Option<IpAddr>,
    now: DateTime<Utc>,
    counters: Counters,
    search: Option<Search>,
    /// For `release`: request action, named, the person, persons in the answer.
    release: Option<(Action, bool, AnswerPerson, usize)>,
}

impl Input {
    fn random(rng: &mut StdRng, roles: &[&str], case_types: &[&str]) -> Input {
        let base = Utc.with_ymd_and_hms(2026, 3, 2, 9, 30, 0).single().unwrap();
        let now = base + Duration::minutes(rng.gen_range(-600..600));
        let action = *pick(rng, &ACTIONS);
        let resource = match action {
            Action::BRP_LOOKUP | Action::RELEASE => {
                Resource::Person(Bsn::parse(pick::<&str>(rng, &BSNS)).unwrap())
            }
            Action::BRP_SEARCH => Resource::PersonSearch(pick(rng, &SEARCHES).to_string()),
            BRP_BEWONING => Resource::PersonSearch("BewoningMetPeildatum".to_string()),
            _ => Resource::Vehicle(Kenteken::parse(pick::<&str>(rng, &KENTEKENS)).unwrap()),
        };
        let case = rng.gen_bool(0.75).then(|| Case {
            id: format!("Z-{}", rng.gen_range(0..4)),
            case_type: pick(rng, case_types).to_string(),
            status: if rng.gen_bool(0.8) {
                CaseStatus::Open
            } else {
                CaseStatus::Closed
            },
            opened: now + Duration::days(rng.gen_range(-30..3)),
            closes: rng
                .gen_bool(0.8)
                .then(|| now + Duration::days(rng.gen_range(-3..30))),
            organization: pick(rng, &ORGS).to_string(),
            handlers: subset(rng, &EMPLOYEES),
            subjects: subset(rng, &BSNS),
            vehicles: subset(rng, &KENTEKENS),
            addresses: [
                CaseAddress {
                    postcode: Some("1017 CB".into()),
                    huisnummer: Some(502),
                    ..CaseAddress::default()
                },
                CaseAddress {
                    adresseerbaar_object_identificatie: Some("0363010000502001".into()),
                    ..CaseAddress::default()
                },
            ]
            .into_iter()
            .filter(|_| rng.gen_bool(0.5))
            .collect(),
            persons: rng
                .gen_bool(0.5)
                .then(|| CasePerson {
                    geslachtsnaam: "van Dijk".into(),
                    geboortedatum: "1980-01-01".into(),
                    ..CasePerson::default()
                })
                .into_iter()
                .collect(),
            url: None,
        });
        let search = (action == Action::BRP_SEARCH
            || action == BRP_BEWONING
            || (action == Action::RELEASE && rng.gen_bool(0.6)))
        .then(|| Search {
            kind: if rng.gen_bool(0.5) {
                SearchKind::Address
            } else {
                SearchKind::Name
            },
            addresses: subset(rng, &ADDRESS_KEYS),
        });
        let release = (action == Action::RELEASE).then(|| {
            let Resource::Person(bsn) = &resource else {
                unreachable!("a release is about a person")
            };
            (
                *pick(
                    rng,
                    &[Action::BRP_LOOKUP, Action::BRP_SEARCH, Action::RDW_HOLDER],
                ),
                rng.gen_bool(0.5),
                AnswerPerson {
                    bsn: Some(bsn.clone()),
                    secret: rng.gen_bool(0.2),
                    addresses: subset(rng, &ADDRESS_KEYS),
                    name: rng.gen_bool(0.5).then(|| pick(rng, &NAME_KEYS).to_string()),
                },
                rng.gen_range(0..8),
            )
        });
        let break_glass = rng.gen_bool(0.25);
        Input {
            employee: Employee {
                id: pick(rng, &EMPLOYEES).to_string(),
                org: pick(rng, &ORGS).to_string(),
                roles: subset(rng, roles),
                department: None,
            },
            action,
            resource,
            case,
            break_glass,
            reason: (break_glass || rng.gen_bool(0.1))
                .then(|| "acute threat reported by police, officer on duty".to_string()),
            fields: subset(rng, &FIELDS),
            client_ip: match rng.gen_range(0..3) {
                0 => None,
                1 => Some(IpAddr::from([10, 0, rng.r#gen(), rng.r#gen()])),
                _ => Some(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, rng.r#gen()])),
            },
            now,
            counters: Counters {
                lookups_last_hour: *pick(rng, &COUNTS),
                lookups_last_day: *pick(rng, &COUNTS),
            },
            search,
            release,
        }
    }

    fn decision_input(&self) -> DecisionInput<'_> {
        DecisionInput {
            employee: &self.employee,
            action: self.action,
            resource: &self.resource,
            case: self.case.as_ref(),
            break_glass: self.break_glass,
            reason: self.reason.as_deref(),
            fields: &self.fields,
            client_ip: self.client_ip,
            now: self.now,
            counters: self.counters,
            search: self.search.as_ref(),
            release: self
                .release
                .as_ref()
                .map(|(action, named, person, n)| Release {
                    request_action: *action,
                    named: *named,
                    person,
                    persons_in_answer: *n,
                }),
        }
    }
}

/// Random Cedar policies over the shipped schema.
struct PolicyGen<'a> {
    roles: &'a [&'a str],
}

impl PolicyGen<'_> {
    fn policy(&self, rng: &mut StdRng) -> String {
        let effect = if rng.gen_bool(0.5) {
            "permit"
        } else {
            "forbid"
        };
        let role = pick(rng, self.roles);
        let principal = match rng.gen_range(0..6) {
            0 | 1 => "principal".to_string(),
            2 => format!("principal in Gate::Role::\"{role}\""),
            3 => format!("principal == Gate::Employee::\"{}\"", pick(rng, &EMPLOYEES)),
            4 => format!("principal in Gate::Organization::\"{}\"", pick(rng, &ORGS)),
            _ => format!("principal is Gate::Employee in Gate::Role::\"{role}\""),
        };
        let action_name =
            |rng: &mut StdRng| format!("Gate::Action::\"{}\"", pick(rng, &ACTIONS).as_str());
        let action = match rng.gen_range(0..3) {
            0 => "action".to_string(),
            1 => format!("action == {}", action_name(rng)),
            _ => format!("action in [{}, {}]", action_name(rng), action_name(rng)),
        };
        let resource = match rng.gen_range(0..7) {
            0 | 1 => "resource".to_string(),
            2 => "resource is Gate::Person".to_string(),
            3 => format!("resource == Gate::Person::\"{}\"", pick(rng, &BSNS)),
            4 => "resource is Gate::Vehicle".to_string(),
            5 => format!("resource == Gate::Vehicle::\"{}\"", pick(rng, &KENTEKENS)),
            _ => "resource is Gate::PersonSearch".to_string(),
        };
        let mut text = format!("{effect} ({principal}, {action}, {resource})");
        for _ in 0..rng.gen_range(0..3) {
            let kind = if rng.gen_bool(0.7) { "when" } else { "unless" };
            text.push_str(&format!(" {kind} {{ {} }}", self.condition(rng, 3)));
        }
        text.push_str(";\n");
        text
    }

    fn condition(&self, rng: &mut StdRng, depth: u32) -> String {
        if depth == 0 || rng.gen_bool(0.45) {
            return self.atom(rng);
        }
        match rng.gen_range(0..4) {
            0 => format!("!({})", self.condition(rng, depth - 1)),
            1 => format!(
                "({} && {})",
                self.condition(rng, depth - 1),
                self.condition(rng, depth - 1)
            ),
            2 => format!(
                "({} || {})",
                self.condition(rng, depth - 1),
                self.condition(rng, depth - 1)
            ),
            _ => format!(
                "(if {} then {} else {})",
                self.condition(rng, depth - 1),
                self.condition(rng, depth - 1),
                self.condition(rng, depth - 1)
            ),
        }
    }

    fn atom(&self, rng: &mut StdRng) -> String {
        let n = *pick(rng, &COUNTS);
        let field = pick(rng, &FIELDS);
        let role = pick(rng, self.roles);
        match rng.gen_range(0..34) {
            0 => "context has case".into(),
            1 => "context has reason".into(),
            2 => "context has client_ip".into(),
            3 => "context.break_glass".into(),
            4 => "context.case.status == \"open\"".into(),
            5 => "context.case.opened <= context.now".into(),
            6 => "context.now < context.case.closes".into(),
            7 => "principal in context.case.organization".into(),
            8 => "context.case.handlers.contains(principal)".into(),
            9 => "principal in context.case.case_type.roles".into(),
            10 => "context.case.subjects.contains(resource)".into(),
            11 => "context.case.vehicles.contains(resource)".into(),
            12 => "context.case.case_type.allowed_fields.containsAll(context.fields)".into(),
            13 => "context.case.case_type.search_allowed".into(),
            14 => "resource.protected".into(),
            15 => format!("context.lookups_last_hour <= {n}"),
            16 => format!("context.lookups_last_day + {n} > 0"),
            17 => format!("context.lookups_last_hour * {} > 0", rng.gen_range(1..4)),
            18 => format!("context.fields.contains(\"{field}\")"),
            19 => "context.fields.isEmpty()".into(),
            20 => "context.reason like \"*police*\"".into(),
            21 => "context.client_ip.isInRange(ip(\"10.0.0.0/8\"))".into(),
            22 => "context.client_ip.isIpv6()".into(),
            23 => format!(
                "context.now.toTime() < duration(\"{}h\")",
                rng.gen_range(0..24)
            ),
            24 => "principal.nickname == \"x\"".into(),
            27 => "context.named && !context.secret".into(),
            28 => format!(
                "context.request_action == \"{}\"",
                pick(rng, &ACTIONS).as_str()
            ),
            29 => "context.case.addresses.containsAny(context.addresses)".into(),
            30 => "context has search && context.search.kind == \"address\"".into(),
            31 => "context.case.addresses.containsAny(context.search.addresses)".into(),
            32 => "context has name && context.case.persons.contains(context.name)".into(),
            33 => format!(
                "context.persons_in_answer <= context.case.case_type.search_release_limit + {}",
                rng.gen_range(0..3)
            ),
            25 => format!("principal in Gate::Role::\"{role}\""),
            _ => "resource has protected && resource.protected".into(),
        }
    }

    fn set(&self, rng: &mut StdRng) -> String {
        (0..rng.gen_range(1..7)).map(|_| self.policy(rng)).collect()
    }
}

/// Tallies of what the compared requests covered, so that the test proves it saw each kind.
#[derive(Default, Debug)]
struct Seen {
    compared: usize,
    allow: usize,
    deny_by_forbid: usize,
    errors: usize,
}

impl Seen {
    fn count(&mut self, o: &Outcome) {
        self.compared += 1;
        self.allow += usize::from(o.allow);
        self.deny_by_forbid += usize::from(!o.allow && !o.determining.is_empty());
        self.errors += usize::from(!o.errors.is_empty());
    }
}

fn static_names(engine: &PolicyEngine) -> (Vec<String>, Vec<String>) {
    let mut roles: Vec<String> = engine.statics.roles.keys().cloned().collect();
    roles.sort();
    roles.push("onbekend".into());
    let mut case_types: Vec<String> = engine.statics.case_types.keys().cloned().collect();
    case_types.sort();
    case_types.push("geheim".into());
    (roles, case_types)
}

#[test]
fn random_requests_decide_alike_with_the_shipped_policies() {
    let engine = shipped();
    let cedar_engine = shipped().with_evaluator(Evaluator::Cedar);
    assert_eq!(cedar_engine.evaluator(), Evaluator::Cedar);
    let (roles, case_types) = static_names(&engine);
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let case_types: Vec<&str> = case_types.iter().map(String::as_str).collect();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut seen = Seen::default();
    for i in 0..SHIPPED_REQUESTS {
        let input = Input::random(&mut rng, &roles, &case_types);
        let di = input.decision_input();
        // The request path's build conforms to the schema: the checked build accepts it.
        if let Err(e) = engine.build(&di, Some(&engine.schema)) {
            panic!("request {i} does not conform to the schema: {e}");
        }
        let built = engine.build(&di, None).unwrap();
        let action = engine.action_uid(input.action).unwrap().clone();
        let cedar = engine.cedar_outcome(&built.request, &built.entities);
        let prepared =
            engine.compiled[input.action.as_str()].evaluate(&built.request, &built.entities);
        if let Some(diff) = engine.difference(&prepared, &cedar) {
            panic!("request {i} (seed {SEED:#x}): {diff}");
        }
        assert_eq!(
            engine.compare(&action, &built.request, &built.entities),
            Ok(cedar.clone())
        );
        // `decide` itself, with either evaluator, gives the same decision.
        assert_eq!(engine.decide(&di), cedar_engine.decide(&di), "request {i}");
        // Within a request base (the request path: built once per request, then one decision
        // per subject and one release per person): the same request and entities as built
        // from scratch, and the same decision with either evaluator.
        let base = engine.request_base(&di);
        let within = engine
            .finish_in(
                base.0.as_ref().unwrap(),
                di.action,
                di.resource,
                di.release.as_ref(),
            )
            .unwrap();
        let (ours, theirs): (&core_ast::Request, &core_ast::Request) =
            (within.request.as_ref(), built.request.as_ref());
        // (`Debug` of the uids; the context by value: a set's hash index has no fixed order.)
        for (a, b) in [
            (ours.principal(), theirs.principal()),
            (ours.action(), theirs.action()),
            (ours.resource(), theirs.resource()),
        ] {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "request {i}");
        }
        assert_eq!(ours.context(), theirs.context(), "request {i}");
        assert!(
            AsRef::<CoreEntities>::as_ref(&within.entities)
                .deep_eq(AsRef::<CoreEntities>::as_ref(&built.entities)),
            "request {i}: entities differ"
        );
        assert_eq!(within.note, built.note, "request {i}");
        let release = di.release.as_ref();
        assert_eq!(
            engine.decide_in(&base, di.action, di.resource, release),
            engine.decide(&di),
            "request {i}"
        );
        assert_eq!(
            cedar_engine.decide_in(
                &cedar_engine.request_base(&di),
                di.action,
                di.resource,
                release
            ),
            engine.decide(&di),
            "request {i}"
        );
        seen.count(&cedar);
    }
    eprintln!("shipped policies: {seen:?} random requests through both evaluators");
    assert_eq!(seen.compared, SHIPPED_REQUESTS);
    assert!(
        seen.allow > 0 && seen.deny_by_forbid > 0 && seen.errors > 0,
        "{seen:?}"
    );
}

#[test]
fn random_policies_and_requests_decide_alike() {
    let engine = shipped();
    let (roles, case_types) = static_names(&engine);
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let case_types: Vec<&str> = case_types.iter().map(String::as_str).collect();
    let generator = PolicyGen { roles: &roles };
    let validator = Validator::new(engine.schema.clone());
    let mut rng = StdRng::seed_from_u64(SEED ^ 1);
    let mut seen = Seen::default();
    let mut valid_sets = 0;
    for s in 0..POLICY_SETS {
        let text = generator.set(&mut rng);
        let set = match PolicySet::from_str(&text) {
            Ok(set) => set,
            Err(e) => panic!("generated policy set {s} does not parse: {e}\n{text}"),
        };
        valid_sets += usize::from(
            validator
                .validate(&set, ValidationMode::Strict)
                .validation_passed(),
        );
        let prepared = PreparedPolicySet::new(&set, &engine.schema).unwrap();
        let order: HashMap<_, _> = set
            .policies()
            .enumerate()
            .map(|(i, p)| (p.id().clone(), i))
            .collect();
        for r in 0..REQUESTS_PER_SET {
            let input = Input::random(&mut rng, &roles, &case_types);
            let built = engine.build(&input.decision_input(), None).unwrap();
            let cedar = engine
                .authorizer
                .is_authorized(&built.request, &set, &built.entities);
            let ours = prepared.is_authorized(&built.request, &built.entities);
            let mut cedar_reason: Vec<_> = cedar.diagnostics().reason().cloned().collect();
            cedar_reason.sort();
            let mut cedar_errors: Vec<String> = cedar
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect();
            cedar_errors.sort();
            let mut our_errors = ours.errors.clone();
            our_errors.sort();
            let agree = ours.allow == (cedar.decision() == cedar_policy::Decision::Allow)
                && ours.determining == cedar_reason
                && our_errors == cedar_errors
                && ours.per_action;
            assert!(
                agree,
                "set {s} request {r} (seed {SEED:#x}) disagree:\nprepared {ours:?}\ncedar {:?} {cedar_reason:?} {cedar_errors:?}\n{text}",
                cedar.decision()
            );
            let mut determining: Vec<usize> = ours.determining.iter().map(|id| order[id]).collect();
            determining.sort_unstable();
            seen.count(&Outcome {
                allow: ours.allow,
                determining,
                errors: our_errors,
                erroring: vec![],
            });
        }
    }
    eprintln!(
        "random policies: {POLICY_SETS} sets ({valid_sets} pass strict validation), {seen:?} \
         requests through both evaluators"
    );
    assert_eq!(seen.compared, POLICY_SETS * REQUESTS_PER_SET);
    assert!(
        seen.allow > 0 && seen.deny_by_forbid > 0 && seen.errors > 0,
        "{seen:?}"
    );
    assert!(valid_sets > 0 && valid_sets < POLICY_SETS, "{valid_sets}");
}

#[test]
fn linked_templates_are_decided_like_cedar_decides_them() {
    let engine = shipped();
    let mut set = PolicySet::from_str(
        r#"@id("t") permit (principal == ?principal, action, resource in ?resource)
           when { context.break_glass };"#,
    )
    .unwrap();
    let template = cedar_policy::PolicyId::new("policy0");
    let link = |set: &mut PolicySet, id: &str, emp: &str, bsn: &str| {
        let vals = HashMap::from([
            (
                cedar_policy::SlotId::principal(),
                cedar_policy::EntityUid::from_str(&format!("Gate::Employee::\"{emp}\"")).unwrap(),
            ),
            (
                cedar_policy::SlotId::resource(),
                cedar_policy::EntityUid::from_str(&format!("Gate::Person::\"{bsn}\"")).unwrap(),
            ),
        ]);
        set.link(template.clone(), cedar_policy::PolicyId::new(id), vals)
            .unwrap();
    };
    link(&mut set, "l1", "emp-042", "999993653");
    link(&mut set, "l2", "emp-107", "999993872");
    let prepared = PreparedPolicySet::new(&set, &engine.schema).unwrap();
    let mut rng = StdRng::seed_from_u64(SEED ^ 2);
    let (roles, case_types) = static_names(&engine);
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let case_types: Vec<&str> = case_types.iter().map(String::as_str).collect();
    let mut allowed = 0;
    for _ in 0..400 {
        let mut input = Input::random(&mut rng, &roles, &case_types);
        input.action = Action::BRP_LOOKUP;
        input.resource = Resource::Person(Bsn::parse(pick::<&str>(&mut rng, &BSNS)).unwrap());
        let built = engine.build(&input.decision_input(), None).unwrap();
        let cedar = engine
            .authorizer
            .is_authorized(&built.request, &set, &built.entities);
        let ours = prepared.is_authorized(&built.request, &built.entities);
        let mut reason: Vec<_> = cedar.diagnostics().reason().cloned().collect();
        reason.sort();
        assert_eq!(
            ours.allow,
            cedar.decision() == cedar_policy::Decision::Allow
        );
        assert_eq!(ours.determining, reason);
        // Not the per-action split: links are decided with their action constraints kept.
        assert!(!ours.per_action);
        allowed += usize::from(ours.allow);
    }
    assert!(allowed > 0);
}

#[test]
fn policy_test_fails_naming_the_case_when_the_evaluators_disagree() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut engine = shipped();
    let clean = suite::run(&engine, &dir.join("tests")).unwrap();
    assert!(clean.ok(), "{clean}");
    // A prepared evaluator that lost the policies of `brp:lookup`: Cedar still allows what
    // the shipped tests expect, so only the comparison can catch it.
    let order = HashMap::new();
    *engine.compiled.get_mut("brp:lookup").unwrap() =
        super::super::compiled::Compiled::new(std::iter::empty(), &order).unwrap();
    let report = suite::run(&engine, &dir.join("tests")).unwrap();
    assert!(!report.ok());
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert!(!failed.is_empty());
    for case in &failed {
        let why = case.failure.as_deref().unwrap_or("");
        assert!(
            why.contains("prepared evaluator and Cedar's Authorizer disagree"),
            "{}: {why}",
            case.name
        );
    }
    let text = report.to_string();
    let first = failed[0];
    assert!(
        text.contains(&format!(
            "test {} ... FAILED: the gate's prepared",
            first.name
        )),
        "{text}"
    );
    // Cases of the other actions still pass.
    assert!(failed.len() < report.cases.len());
}
