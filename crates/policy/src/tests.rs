//! Unit tests for the policy stage, against the shipped `policies/` directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use purpose_gate_model::{
    AnswerPerson, Bsn, CaseAddress, CasePerson, CaseStatus, Kenteken, SearchKind,
};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn engine() -> PolicyEngine {
    match PolicyEngine::load(&shipped_dir()) {
        Ok(e) => e,
        Err(e) => panic!("shipped policies do not load: {e}"),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).single().unwrap()
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap()
}

fn employee(id: &str, org: &str, roles: &[&str]) -> Employee {
    Employee {
        id: id.into(),
        org: org.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        department: None,
    }
}

/// An open parkeervergunning case of Amsterdam, handled by `vv-0363`.
fn pv_case() -> Case {
    Case {
        addresses: vec![],
        persons: vec![],
        id: "Z-2026-000123".into(),
        case_type: "parkeervergunning".into(),
        status: CaseStatus::Open,
        opened: at(2026, 1, 1),
        closes: Some(at(2026, 12, 31)),
        organization: "0363".into(),
        handlers: vec!["vv-0363".into()],
        subjects: vec!["999993653".into(), "999990639".into()],
        vehicles: vec!["AB123C".into()],
        url: None,
    }
}

/// An open-ended handhaving case of Amsterdam, handled by `hh-0363`.
fn hh_case() -> Case {
    Case {
        addresses: vec![],
        persons: vec![],
        id: "Z-2026-000456".into(),
        case_type: "handhaving".into(),
        closes: None,
        handlers: vec!["hh-0363".into()],
        ..pv_case()
    }
}

fn person(bsn: &str) -> Resource {
    Resource::Person(Bsn::parse(bsn).unwrap())
}

fn vehicle(k: &str) -> Resource {
    Resource::Vehicle(Kenteken::parse(k).unwrap())
}

fn search() -> Resource {
    Resource::PersonSearch("ZoekMetGeslachtsnaamEnGeboortedatum".into())
}

const BG_REASON: &str = "acute dreiging, melding politie 2026-0042";

/// One request, with owned parts; `input()` borrows them as a `DecisionInput`.
struct Req {
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

impl Req {
    /// `vv-0363` looks up a subject of the parkeervergunning case: allowed.
    fn lookup() -> Req {
        Req {
            employee: employee("vv-0363", "0363", &["vergunningverlener"]),
            action: Action::BRP_LOOKUP,
            resource: person("999993653"),
            case: Some(pv_case()),
            break_glass: false,
            reason: None,
            fields: vec!["naam".into(), "verblijfplaats".into()],
            client_ip: Some("10.0.0.5".parse().unwrap()),
            now: now(),
            counters: Counters {
                lookups_last_hour: 3,
                lookups_last_day: 9,
            },
            search: None,
            release: None,
        }
    }

    /// The release of `person` found in the answer to a request with `request_action`.
    fn release(mut self, request_action: Action, named: bool, person: AnswerPerson) -> Req {
        self.action = Action::RELEASE;
        self.resource = Resource::Person(person.bsn.clone().unwrap());
        self.release = Some((request_action, named, person, 3));
        if request_action == Action::BRP_SEARCH && self.search.is_none() {
            self.search = Some(name_search());
        }
        self
    }

    fn search(mut self, s: Search) -> Req {
        self.search = Some(s);
        self
    }

    fn by(mut self, e: Employee) -> Req {
        self.employee = e;
        self
    }

    fn action(mut self, a: Action, r: Resource) -> Req {
        self.action = a;
        self.resource = r;
        if a == Action::BRP_SEARCH && self.search.is_none() {
            self.search = Some(name_search());
        }
        self
    }

    fn case(mut self, c: Option<Case>) -> Req {
        self.case = c;
        self
    }

    fn break_glass(mut self, reason: Option<&str>) -> Req {
        self.break_glass = true;
        self.reason = reason.map(str::to_string);
        self
    }

    fn fields(mut self, f: &[&str]) -> Req {
        self.fields = f.iter().map(|s| s.to_string()).collect();
        self
    }

    fn input(&self) -> DecisionInput<'_> {
        DecisionInput {
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
        }
    }
}

fn decide(req: &Req) -> Decision {
    engine().decide(&req.input())
}

#[track_caller]
fn assert_allowed_by(d: &Decision, id: &str) {
    assert!(d.allow, "expected allow by `{id}`, got {d:?}");
    assert_eq!(d.policies, vec![id.to_string()], "{d:?}");
    assert_eq!(d.code, None);
    assert!(d.errors.is_empty(), "{d:?}");
}

#[track_caller]
fn assert_denied(d: &Decision, code: &str, id: &str) {
    assert!(!d.allow, "expected deny `{code}`, got {d:?}");
    assert_eq!(d.code.as_deref(), Some(code), "{d:?}");
    assert_eq!(d.policies.first().map(String::as_str), Some(id), "{d:?}");
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(d.reasons.len(), d.policies.len(), "{d:?}");
}

// ------------------------------------------------------------------------------------------
// Permits: an allow each, and a deny when one of their requirements is missing.
// ------------------------------------------------------------------------------------------

#[test]
fn allow_lookup_of_case_subject_by_handler() {
    assert_allowed_by(&decide(&Req::lookup()), "permit-brp-lookup-for-case");
}

#[test]
fn allow_lookup_with_role_inherited_from_parent_role() {
    // boa-parkeren is inside handhaver, which the handhaving case type allows.
    let req = Req::lookup()
        .by(employee("hh-0363", "0363", &["boa-parkeren"]))
        .case(Some(hh_case()))
        .fields(&["naam", "geboorte"]);
    assert_allowed_by(&decide(&req), "permit-brp-lookup-for-case");
}

#[test]
fn allow_lookup_in_open_ended_case() {
    let req = Req::lookup()
        .by(employee("hh-0363", "0363", &["handhaver"]))
        .case(Some(hh_case()));
    assert!(req.case.as_ref().is_some_and(|c| c.closes.is_none()));
    assert_allowed_by(&decide(&req), "permit-brp-lookup-for-case");
}

fn name_search() -> Search {
    Search {
        kind: SearchKind::Name,
        addresses: vec![],
    }
}

fn address_search() -> Search {
    Search {
        kind: SearchKind::Address,
        addresses: vec!["postcode:1017CB:502::".into()],
    }
}

fn answer_person(bsn: &str, secret: bool, addresses: &[&str], name: Option<&str>) -> AnswerPerson {
    AnswerPerson {
        bsn: Some(Bsn::parse(bsn).unwrap()),
        secret,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        name: name.map(str::to_string),
    }
}

fn wijk_case() -> Case {
    let mut c = hh_case();
    c.addresses = vec![CaseAddress {
        postcode: Some("1017 cb".into()),
        huisnummer: Some(502),
        ..CaseAddress::default()
    }];
    c.persons = vec![CasePerson {
        geslachtsnaam: "van Dijk".into(),
        geboortedatum: "1980-01-01".into(),
        ..CasePerson::default()
    }];
    c
}

#[test]
fn release_decisions_follow_the_answer_and_the_case() {
    let hh = || employee("hh-0363", "0363", &["handhaver"]);
    let at = |addr: &[&str]| answer_person("999991802", false, addr, None);
    // An address search: only a resident the answer places at the case's address.
    let req = Req::lookup()
        .by(hh())
        .case(Some(wijk_case()))
        .search(address_search())
        .release(Action::BRP_SEARCH, false, at(&["postcode:1017CB:502::"]));
    assert_allowed_by(&decide(&req), "permit-release-search-named-in-case");
    let req = Req::lookup()
        .by(hh())
        .case(Some(wijk_case()))
        .search(address_search())
        .release(Action::BRP_SEARCH, false, at(&["postcode:1017CB:504::"]));
    assert_denied(
        &decide(&req),
        "residentNotInCase",
        "forbid-release-resident-not-in-case",
    );
    // A name search: by the case's name key (the case says `van Dijk`, the answer `Dijk`).
    let req = Req::lookup().by(hh()).case(Some(wijk_case())).release(
        Action::BRP_SEARCH,
        false,
        answer_person("999991802", false, &[], Some("dijk:1980-01-01")),
    );
    assert_allowed_by(&decide(&req), "permit-release-search-named-in-case");
    let req = Req::lookup().by(hh()).case(Some(wijk_case())).release(
        Action::BRP_SEARCH,
        false,
        answer_person("999991802", false, &[], Some("dijk:1980-01-02")),
    );
    assert_denied(
        &decide(&req),
        "subjectNotInCase",
        "forbid-release-person-not-in-case",
    );
    // A lookup: the named person, unless the answer marks them secret.
    let req = Req::lookup().release(
        Action::BRP_LOOKUP,
        true,
        answer_person("999993653", false, &[], None),
    );
    assert_allowed_by(&decide(&req), "permit-release-named-person");
    let req = Req::lookup().release(
        Action::BRP_LOOKUP,
        true,
        answer_person("999993653", true, &[], None),
    );
    assert_denied(&decide(&req), "protectedPerson", "forbid-release-protected");
    let req = Req::lookup().release(
        Action::BRP_LOOKUP,
        false,
        answer_person("999993653", false, &[], None),
    );
    assert_denied(
        &decide(&req),
        "personNotRequested",
        "forbid-release-person-not-requested",
    );
    // The statically protected person, as a vehicle holder.
    let req = Req::lookup().by(hh()).case(Some(hh_case())).release(
        Action::RDW_HOLDER,
        false,
        answer_person("999990639", false, &[], None),
    );
    assert_denied(&decide(&req), "protectedPerson", "forbid-release-protected");
}

#[test]
fn address_search_is_decided_against_the_case_addresses() {
    let hh = || employee("hh-0363", "0363", &["handhaver"]);
    let postcode = Resource::PersonSearch("ZoekMetPostcodeEnHuisnummer".into());
    let req = Req::lookup()
        .by(hh())
        .action(Action::BRP_SEARCH, postcode.clone())
        .search(address_search())
        .case(Some(wijk_case()));
    assert_allowed_by(&decide(&req), "permit-brp-search-for-case");
    let req = Req::lookup()
        .by(hh())
        .action(Action::BRP_SEARCH, postcode)
        .search(address_search())
        .case(Some(hh_case()));
    assert_denied(
        &decide(&req),
        "addressNotInCase",
        "forbid-address-not-in-case",
    );
}

#[test]
fn allow_search_by_handler_when_case_type_allows_search() {
    let req = Req::lookup()
        .by(employee("hh-0363", "0363", &["handhaver"]))
        .action(Action::BRP_SEARCH, search())
        .case(Some(hh_case()));
    assert_allowed_by(&decide(&req), "permit-brp-search-for-case");
}

#[test]
fn deny_search_when_case_type_forbids_search() {
    let req = Req::lookup().action(Action::BRP_SEARCH, search());
    assert_denied(
        &decide(&req),
        "searchNotAllowed",
        "forbid-search-not-allowed",
    );
}

#[test]
fn allow_holder_for_vehicle_named_in_case() {
    let req = Req::lookup()
        .action(Action::RDW_HOLDER, vehicle("AB-123-C"))
        .fields(&[]);
    assert_allowed_by(&decide(&req), "permit-rdw-for-case");
}

#[test]
fn allow_vehicle_facts_for_vehicle_named_in_case() {
    let req = Req::lookup()
        .action(Action::RDW_VEHICLE, vehicle("AB123C"))
        .fields(&[]);
    assert_allowed_by(&decide(&req), "permit-rdw-for-case");
}

#[test]
fn deny_vehicle_facts_for_vehicle_not_in_case_without_role() {
    let req = Req::lookup()
        .action(Action::RDW_VEHICLE, vehicle("XY999Z"))
        .fields(&[]);
    let d = decide(&req);
    assert!(!d.allow);
    assert_eq!(d.code.as_deref(), Some(CODE_NOT_PERMITTED));
    assert_eq!(d.reasons, vec![REASON_NOT_PERMITTED.to_string()]);
    assert!(d.policies.is_empty());
}

#[test]
fn allow_vehicle_facts_for_voertuiginformatie_role_without_case() {
    let req = Req::lookup()
        .by(employee("vi-0363", "0363", &["voertuiginformatie"]))
        .action(Action::RDW_VEHICLE, vehicle("XY999Z"))
        .case(None)
        .fields(&[]);
    assert_allowed_by(&decide(&req), "permit-rdw-vehicle-by-role");
}

#[test]
fn deny_holder_without_case_even_for_voertuiginformatie() {
    let req = Req::lookup()
        .by(employee("vi-0363", "0363", &["voertuiginformatie"]))
        .action(Action::RDW_HOLDER, vehicle("XY999Z"))
        .case(None)
        .fields(&[]);
    assert_denied(&decide(&req), "caseRequired", "forbid-case-required");
}

#[test]
fn allow_break_glass_lookup_of_protected_person_by_noodtoegang() {
    let req = Req::lookup()
        .by(employee("nood-0363", "0363", &["noodtoegang"]))
        .action(Action::BRP_LOOKUP, person("999990639"))
        .case(None)
        .break_glass(Some(BG_REASON));
    assert_allowed_by(&decide(&req), "permit-break-glass");
}

#[test]
fn allow_break_glass_holder_lookup_by_noodtoegang() {
    let req = Req::lookup()
        .by(employee("nood-0363", "0363", &["noodtoegang"]))
        .action(Action::RDW_HOLDER, vehicle("XY999Z"))
        .case(None)
        .break_glass(Some(BG_REASON));
    assert_allowed_by(&decide(&req), "permit-break-glass");
}

// ------------------------------------------------------------------------------------------
// Forbids: each names one missing requirement.
// ------------------------------------------------------------------------------------------

#[test]
fn deny_lookup_without_case() {
    let d = decide(&Req::lookup().case(None));
    assert_denied(&d, "caseRequired", "forbid-case-required");
    assert_eq!(
        d.reasons,
        vec!["this lookup needs a case (x-case-id) or break-glass access".to_string()]
    );
}

#[test]
fn deny_when_case_closed() {
    let mut case = pv_case();
    case.status = CaseStatus::Closed;
    let d = decide(&Req::lookup().case(Some(case)));
    assert_denied(&d, "caseClosed", "forbid-case-closed");
    assert_eq!(d.reasons, vec!["the case is closed".to_string()]);
}

#[test]
fn deny_before_case_opened() {
    let mut case = pv_case();
    case.opened = at(2026, 6, 1);
    assert_denied(
        &decide(&Req::lookup().case(Some(case))),
        "caseOutsideWindow",
        "forbid-case-outside-window",
    );
}

#[test]
fn deny_at_the_instant_the_case_closes() {
    let mut case = pv_case();
    case.closes = Some(now());
    assert_denied(
        &decide(&Req::lookup().case(Some(case))),
        "caseOutsideWindow",
        "forbid-case-outside-window",
    );
}

#[test]
fn deny_when_case_of_other_organisation() {
    let mut case = pv_case();
    case.handlers.push("vv-0599".into());
    let req = Req::lookup()
        .by(employee("vv-0599", "0599", &["vergunningverlener"]))
        .case(Some(case));
    assert_denied(
        &decide(&req),
        "caseOtherOrganization",
        "forbid-case-other-organization",
    );
}

#[test]
fn deny_when_not_case_handler() {
    let req = Req::lookup().by(employee("vv2-0363", "0363", &["vergunningverlener"]));
    assert_denied(&decide(&req), "notCaseHandler", "forbid-not-case-handler");
}

#[test]
fn deny_when_role_not_allowed_for_case_type() {
    let mut case = pv_case();
    case.handlers.push("hh-0363".into());
    let req = Req::lookup()
        .by(employee("hh-0363", "0363", &["handhaver"]))
        .case(Some(case));
    assert_denied(
        &decide(&req),
        "roleNotAllowedForCaseType",
        "forbid-role-not-allowed-for-case-type",
    );
}

#[test]
fn deny_when_subject_not_in_case() {
    let req = Req::lookup().action(Action::BRP_LOOKUP, person("999991802"));
    assert_denied(
        &decide(&req),
        "subjectNotInCase",
        "forbid-subject-not-in-case",
    );
}

#[test]
fn deny_holder_when_vehicle_not_in_case() {
    let req = Req::lookup()
        .action(Action::RDW_HOLDER, vehicle("XY999Z"))
        .fields(&[]);
    assert_denied(
        &decide(&req),
        "vehicleNotInCase",
        "forbid-vehicle-not-in-case",
    );
}

#[test]
fn deny_when_field_not_allowed_for_case_type() {
    let req = Req::lookup().fields(&["naam", "nationaliteiten"]);
    assert_denied(&decide(&req), "fieldNotAllowed", "forbid-field-not-allowed");
}

#[test]
fn fields_are_compared_as_exact_strings() {
    let req = Req::lookup().fields(&["naam.voornamen"]);
    assert_denied(&decide(&req), "fieldNotAllowed", "forbid-field-not-allowed");
}

#[test]
fn deny_protected_person_even_with_case() {
    let req = Req::lookup().action(Action::BRP_LOOKUP, person("999990639"));
    assert_denied(&decide(&req), "protectedPerson", "forbid-protected-person");
}

#[test]
fn deny_break_glass_for_role_without_noodtoegang() {
    let req = Req::lookup().case(None).break_glass(Some(BG_REASON));
    assert_denied(
        &decide(&req),
        "breakGlassNotAllowed",
        "forbid-break-glass-role",
    );
}

#[test]
fn deny_break_glass_for_search() {
    let req = Req::lookup()
        .by(employee("nood-0363", "0363", &["noodtoegang"]))
        .action(Action::BRP_SEARCH, search())
        .case(None)
        .break_glass(Some(BG_REASON));
    assert_denied(
        &decide(&req),
        "breakGlassNotForAction",
        "forbid-break-glass-action",
    );
}

#[test]
fn deny_break_glass_without_reason() {
    for reason in [None, Some("")] {
        let req = Req::lookup()
            .by(employee("nood-0363", "0363", &["noodtoegang"]))
            .case(None)
            .break_glass(reason);
        assert_denied(
            &decide(&req),
            "breakGlassReasonRequired",
            "forbid-break-glass-reason",
        );
    }
}

#[test]
fn deny_over_volume_limit_and_allow_at_it() {
    let mut req = Req::lookup();
    req.counters.lookups_last_hour = 200;
    assert_allowed_by(&decide(&req), "permit-brp-lookup-for-case");
    req.counters.lookups_last_hour = 201;
    assert_denied(&decide(&req), "volumeLimit", "forbid-volume-limit");
}

#[test]
fn several_forbids_are_reported_in_load_order() {
    // bz-0363 neither handles the handhaving case nor has a role for it.
    let req = Req::lookup()
        .by(employee("bz-0363", "0363", &["burgerzaken"]))
        .case(Some(hh_case()));
    let d = decide(&req);
    assert_denied(&d, "notCaseHandler", "forbid-not-case-handler");
    assert_eq!(
        d.policies,
        vec![
            "forbid-not-case-handler".to_string(),
            "forbid-role-not-allowed-for-case-type".to_string()
        ]
    );
    assert_eq!(
        d.reasons,
        vec![
            "you are not a handler of this case".to_string(),
            "your role may not work on cases of this type".to_string()
        ]
    );
}

// ------------------------------------------------------------------------------------------
// Fail closed
// ------------------------------------------------------------------------------------------

#[test]
fn fail_closed_on_unknown_case_type() {
    let mut case = pv_case();
    case.case_type = "onbekend".into();
    let d = decide(&Req::lookup().case(Some(case)));
    assert!(!d.allow);
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_ERROR));
    assert!(d.errors.iter().any(|e| e.contains("`onbekend`")), "{d:?}");
    // Cedar itself fails on the missing entity, which alone would deny.
    assert!(d.errors.len() > 1, "{d:?}");
    assert!(d.reasons.contains(&REASON_POLICY_ERROR.to_string()));
}

#[test]
fn fail_closed_when_a_date_does_not_fit_cedar() {
    let mut case = pv_case();
    case.closes = Some(Utc.with_ymd_and_hms(12026, 1, 1, 0, 0, 0).single().unwrap());
    let d = decide(&Req::lookup().case(Some(case)));
    assert!(!d.allow);
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_ERROR));
    assert!(!d.errors.is_empty());
}

/// A copy of the shipped directory with `gate.cedar` replaced, in a temp dir.
fn dir_with_policies(policies: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["gate.cedarschema", ENTITIES_FILE] {
        std::fs::copy(shipped_dir().join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("gate.cedar"), policies).unwrap();
    tmp
}

#[test]
fn an_erroring_forbid_never_lets_a_permit_through() {
    let tmp = dir_with_policies(
        r#"@id("permit-all")
permit (principal, action, resource);

@id("forbid-overflow")
@code("overflow")
@reason("this forbid overflows")
forbid (principal, action, resource)
when { context.lookups_last_hour + 9223372036854775807 > 0 };
"#,
    );
    let engine = PolicyEngine::load(tmp.path()).unwrap();
    let req = Req::lookup();
    let d = engine.decide(&req.input());
    assert!(!d.allow, "{d:?}");
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_ERROR));
    assert!(
        d.errors.iter().any(|e| e.contains("forbid-overflow")),
        "{d:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Loading
// ------------------------------------------------------------------------------------------

#[test]
fn every_shipped_policy_has_id_and_every_forbid_code_and_reason() {
    let engine = engine();
    let infos = engine.policies();
    assert!(infos.iter().filter(|p| p.permit).count() >= 5);
    let mut ids: Vec<&str> = infos.iter().map(|p| p.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), infos.len(), "duplicate ids");
    for p in infos.iter().filter(|p| !p.permit) {
        let code = p.code.as_deref().unwrap_or("");
        let reason = p.reason.as_deref().unwrap_or("");
        assert!(!code.is_empty() && !reason.is_empty(), "{p:?}");
        assert_eq!(reason, reason.to_lowercase(), "reason not lowercase: {p:?}");
        assert!(!reason.ends_with('.'), "reason ends with a period: {p:?}");
    }
    let codes: Vec<&str> = infos.iter().filter_map(|p| p.code.as_deref()).collect();
    for code in [
        "caseRequired",
        "caseClosed",
        "caseOutsideWindow",
        "notCaseHandler",
        "caseOtherOrganization",
        "subjectNotInCase",
        "vehicleNotInCase",
        "roleNotAllowedForCaseType",
        "fieldNotAllowed",
        "searchNotAllowed",
        "protectedPerson",
        "breakGlassNotAllowed",
        "volumeLimit",
    ] {
        assert!(codes.contains(&code), "no forbid with code `{code}`");
    }
}

#[test]
fn shipped_cedar_tests_pass_with_the_crate() {
    let report = run_tests(&shipped_dir()).unwrap();
    assert!(report.ok(), "{report}");
    assert!(report.cases.len() >= 30, "{report}");
    assert_eq!(report.files.len(), 6);
}

#[test]
fn every_shipped_policy_is_named_by_a_cedar_test() {
    let mut named = std::collections::HashSet::new();
    for entry in std::fs::read_dir(shipped_dir().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let cases: Vec<serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for c in cases {
                for r in c["reason"].as_array().unwrap() {
                    named.insert(r.as_str().unwrap().to_string());
                }
            }
        }
    }
    for p in engine().policies() {
        assert!(named.contains(&p.id), "no cedar test names `{}`", p.id);
    }
}

#[test]
fn test_fixtures_carry_the_shipped_static_entities_unchanged() {
    let read = |p: PathBuf| -> Vec<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let fixtures = read(shipped_dir().join("tests/fixtures/entities.json"));
    for e in read(shipped_dir().join(ENTITIES_FILE)) {
        assert!(fixtures.contains(&e), "fixtures lack {e}");
    }
}

/// The gaps of a coverage report, one line each: a policy never determining, a condition never
/// false.
fn coverage_gaps(report: &coverage::CoverageReport) -> Vec<String> {
    let mut gaps = Vec::new();
    for p in &report.policies {
        if p.reached == 0 {
            gaps.push(format!("{}: no test reaches it", p.id));
        }
        if p.determining.is_empty() {
            gaps.push(format!("{}: determining in no test", p.id));
        }
        for c in p.never_false() {
            gaps.push(format!("{}: never false: {c}", p.id));
        }
    }
    gaps
}

#[test]
fn shipped_tests_reach_every_policy_and_falsify_every_condition() {
    let (tests, report) = coverage::run(&shipped_dir()).unwrap();
    assert!(tests.ok(), "{tests}");
    assert_eq!(report.policies.len(), engine().policies().len());
    let gaps = coverage_gaps(&report);
    assert!(
        gaps.is_empty(),
        "the shipped tests in policies/tests/ leave gaps; add a test for each:\n{}",
        gaps.join("\n")
    );
    assert!(report.complete());
}

#[test]
fn a_policy_without_tests_is_a_coverage_gap() {
    let shipped = std::fs::read_to_string(shipped_dir().join("gate.cedar")).unwrap();
    let extra = r#"
@id("permit-untested")
permit (principal, action == Gate::Action::"rdw:vehicle", resource)
when { context.lookups_last_day > 100000 && !context.break_glass };
"#;
    let tmp = dir_with_policies(&format!("{shipped}{extra}"));
    let tests = tmp.path().join("tests");
    std::fs::create_dir_all(tests.join("fixtures")).unwrap();
    for entry in std::fs::read_dir(shipped_dir().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, tests.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(
        shipped_dir().join("tests/fixtures/entities.json"),
        tests.join("fixtures/entities.json"),
    )
    .unwrap();
    let (_, report) = coverage::run(tmp.path()).unwrap();
    let gaps = coverage_gaps(&report);
    assert!(!report.complete());
    assert!(
        gaps.iter()
            .any(|g| g == "permit-untested: determining in no test"),
        "{gaps:?}"
    );
    assert!(
        gaps.iter()
            .any(|g| g == "permit-untested: never false: !context.break_glass"),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| g.starts_with("permit-untested: ")),
        "{gaps:?}"
    );
}

#[test]
fn run_tests_reports_a_readable_diff_on_failure() {
    let tmp =
        dir_with_policies(&std::fs::read_to_string(shipped_dir().join("gate.cedar")).unwrap());
    let tests = tmp.path().join("tests");
    std::fs::create_dir_all(tests.join("fixtures")).unwrap();
    std::fs::copy(
        shipped_dir().join("tests/fixtures/entities.json"),
        tests.join("fixtures/entities.json"),
    )
    .unwrap();
    let case = serde_json::json!([{
        "name": "wrongly_expects_allow_for_closed_case",
        "request": {
            "principal": "Gate::Employee::\"vv-0363\"",
            "action": "Gate::Action::\"brp:lookup\"",
            "resource": "Gate::Person::\"999993653\"",
            "context": {
                "now": {"__extn": {"fn": "datetime", "arg": "2026-03-02T10:00:00Z"}},
                "case": {"__entity": {"type": "Gate::Case", "id": "Z-PV-CLOSED"}},
                "break_glass": false,
                "fields": ["naam"],
                "lookups_last_hour": 1,
                "lookups_last_day": 1
            }
        },
        "entities": "fixtures/entities.json",
        "decision": "allow",
        "reason": ["permit-brp-lookup-for-case"],
        "num_errors": 0
    }]);
    std::fs::write(tests.join("wrong.json"), case.to_string()).unwrap();
    let report = run_tests(tmp.path()).unwrap();
    assert_eq!(report.failed(), 1);
    let failure = report.cases[0].failure.clone().unwrap_or_default();
    assert_eq!(
        failure,
        "expected allow, got deny by `forbid-case-closed` (the case is closed)"
    );
}

#[test]
fn broken_policy_file_reports_file_and_position() {
    let tmp =
        dir_with_policies("@id(\"a\")\npermit (principal, action, resource)\nwhen { context. };\n");
    let err = PolicyLoadError::to_string(&PolicyEngine::load(tmp.path()).unwrap_err());
    let file = tmp.path().join("gate.cedar");
    assert!(err.starts_with(&format!("{}:3:", file.display())), "{err}");
}

#[test]
fn policy_without_id_reports_its_position() {
    let tmp = dir_with_policies(
        "@id(\"ok\")\npermit (principal, action, resource);\n\n  permit (principal, action, resource);\n",
    );
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    let file = tmp.path().join("gate.cedar");
    assert_eq!(
        err,
        format!(
            "{}:4:3: policy has no `@id(\"…\")` annotation",
            file.display()
        )
    );
}

#[test]
fn forbid_without_code_or_reason_is_refused() {
    let tmp =
        dir_with_policies("@id(\"f\")\n@reason(\"no\")\nforbid (principal, action, resource);\n");
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("gate.cedar:1:1: forbid `f` has no `@code"),
        "{err}"
    );
    let tmp =
        dir_with_policies("@id(\"f\")\n@code(\"no\")\nforbid (principal, action, resource);\n");
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("gate.cedar:1:1: forbid `f` has no `@reason"),
        "{err}"
    );
}

#[test]
fn validation_error_reports_file_and_position() {
    let tmp = dir_with_policies(
        "@id(\"p\")\npermit (principal, action, resource)\nwhen { context.nope };\n",
    );
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    let file = tmp.path().join("gate.cedar");
    assert!(
        err.starts_with(&format!("{}:3:8:", file.display())),
        "{err}"
    );
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn duplicate_policy_ids_across_files_are_refused() {
    let tmp = dir_with_policies("@id(\"p\")\npermit (principal, action, resource);\n");
    std::fs::write(
        tmp.path().join("more.cedar"),
        "\n@id(\"p\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("more.cedar:2:1: duplicate policy id `p`"),
        "{err}"
    );
}

#[test]
fn entity_not_matching_schema_reports_its_position() {
    let tmp = dir_with_policies("@id(\"p\")\npermit (principal, action, resource);\n");
    std::fs::write(
        tmp.path().join(ENTITIES_FILE),
        "[\n  {\"uid\": {\"type\": \"Gate::Organization\", \"id\": \"0363\"}, \"attrs\": {}, \"parents\": []},\n  {\"uid\": {\"type\": \"Gate::Person\", \"id\": \"999990639\"}, \"attrs\": {\"protected\": \"ja\"}, \"parents\": []}\n]\n",
    )
    .unwrap();
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("entities.json:3:3:"), "{err}");
}

#[test]
fn per_request_entity_types_are_refused_in_static_entities() {
    let tmp = dir_with_policies("@id(\"p\")\npermit (principal, action, resource);\n");
    std::fs::write(
        tmp.path().join(ENTITIES_FILE),
        "[\n  {\"uid\": {\"type\": \"Gate::Employee\", \"id\": \"e1\"}, \"attrs\": {}, \"parents\": []}\n]\n",
    )
    .unwrap();
    let err = PolicyEngine::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("entities.json:2:3: entity `Gate::Employee::\"e1\"`"),
        "{err}"
    );
}

#[test]
fn version_is_sha256_hex_and_follows_the_files() {
    let a = engine();
    assert_eq!(a.version().len(), 64);
    assert!(
        a.version()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(a.version(), engine().version());
    let src = std::fs::read_to_string(shipped_dir().join("gate.cedar")).unwrap();
    let tmp = dir_with_policies(&format!("{src}\n// changed\n"));
    let b = PolicyEngine::load(tmp.path()).unwrap();
    assert_ne!(a.version(), b.version());
}

#[test]
fn check_reports_every_policy_with_its_position() {
    let report = check(&shipped_dir()).unwrap();
    assert_eq!(report.policies.len(), engine().policies().len());
    let first = &report.policies[0];
    assert_eq!(first.id, "permit-brp-lookup-for-case");
    assert!(first.line > 1);
    assert!(report.entities >= 13, "{}", report.entities);
    assert!(
        report
            .to_string()
            .contains("forbid forbid-case-closed [caseClosed]")
    );
}

// ------------------------------------------------------------------------------------------
// Per-request entities
// ------------------------------------------------------------------------------------------

#[test]
fn built_request_and_entities_conform_to_the_schema() {
    let engine = engine();
    let reqs = [
        Req::lookup(),
        Req::lookup()
            .by(employee(
                "hh-0363",
                "0363",
                &["boa-parkeren", "onbekende-rol"],
            ))
            .action(Action::BRP_SEARCH, search())
            .case(Some(hh_case())),
        Req::lookup()
            .by(employee("nood-0363", "0363", &["noodtoegang"]))
            .action(Action::RDW_HOLDER, vehicle("XY999Z"))
            .case(None)
            .break_glass(Some(BG_REASON)),
    ];
    for req in &reqs {
        let built = engine.build(&req.input(), Some(&engine.schema));
        assert!(built.is_ok(), "{:?}", built.err());
    }
}

/// The context as Cedar's public API builds it from restricted expressions.
fn context_from_pairs(req: &Req) -> cedar_policy::Context {
    let mut pairs = vec![
        (
            "now".to_string(),
            RestrictedExpression::new_datetime(cedar_datetime(&req.now)),
        ),
        (
            "break_glass".to_string(),
            RestrictedExpression::new_bool(req.break_glass),
        ),
        (
            "fields".to_string(),
            RestrictedExpression::new_set(
                req.fields
                    .iter()
                    .map(|f| RestrictedExpression::new_string(f.clone())),
            ),
        ),
        (
            "lookups_last_hour".to_string(),
            RestrictedExpression::new_long(req.counters.lookups_last_hour),
        ),
        (
            "lookups_last_day".to_string(),
            RestrictedExpression::new_long(req.counters.lookups_last_day),
        ),
    ];
    if let Some(case) = &req.case {
        pairs.push((
            "case".to_string(),
            RestrictedExpression::new_entity_uid(
                EntityUid::from_str(&format!("Gate::Case::{:?}", case.id)).unwrap(),
            ),
        ));
    }
    if let Some(reason) = &req.reason {
        pairs.push((
            "reason".to_string(),
            RestrictedExpression::new_string(reason.clone()),
        ));
    }
    if let Some(ip) = req.client_ip {
        pairs.push((
            "client_ip".to_string(),
            RestrictedExpression::new_ip(ip.to_string()),
        ));
    }
    let strings = |v: &[String]| {
        RestrictedExpression::new_set(
            v.iter()
                .map(|s| RestrictedExpression::new_string(s.clone())),
        )
    };
    if let Some(search) = &req.search {
        pairs.push((
            "search".to_string(),
            RestrictedExpression::new_record([
                (
                    "kind".to_string(),
                    RestrictedExpression::new_string(search.kind.as_str().to_string()),
                ),
                ("addresses".to_string(), strings(&search.addresses)),
            ])
            .unwrap(),
        ));
    }
    if let Some((action, named, person, n)) = &req.release {
        pairs.push((
            "request_action".to_string(),
            RestrictedExpression::new_string(action.as_str().to_string()),
        ));
        pairs.push(("named".to_string(), RestrictedExpression::new_bool(*named)));
        pairs.push((
            "secret".to_string(),
            RestrictedExpression::new_bool(person.secret),
        ));
        pairs.push(("addresses".to_string(), strings(&person.addresses)));
        if let Some(name) = &person.name {
            pairs.push((
                "name".to_string(),
                RestrictedExpression::new_string(name.clone()),
            ));
        }
        pairs.push((
            "persons_in_answer".to_string(),
            RestrictedExpression::new_long(i64::try_from(*n).unwrap()),
        ));
    }
    cedar_policy::Context::from_pairs(pairs).unwrap()
}

#[test]
fn context_is_the_one_cedar_builds_from_restricted_expressions() {
    let engine = engine();
    let mut reqs = request_matrix();
    let mut v6 = Req::lookup();
    v6.client_ip = Some("2001:db8::7".parse().unwrap());
    reqs.push(v6);
    let mut no_ip = Req::lookup();
    no_ip.client_ip = None;
    reqs.push(no_ip);
    // A millisecond later, then back (the last `now` and `client_ip` values are reused per
    // thread only for the same millisecond and address).
    let mut later = Req::lookup();
    later.now += chrono::Duration::milliseconds(1);
    reqs.push(later);
    reqs.push(Req::lookup());
    let mut v4 = Req::lookup();
    v4.client_ip = Some("10.0.0.6".parse().unwrap());
    reqs.push(v4);
    for req in &reqs {
        let built = engine.build(&req.input(), None).unwrap();
        let request: &core_ast::Request = built.request.as_ref();
        let expected = context_from_pairs(req);
        assert_eq!(request.context(), Some(expected.as_ref()));
        // With the schema (the validating path) the context is the same.
        let checked = engine.build(&req.input(), Some(&engine.schema)).unwrap();
        let checked: &core_ast::Request = checked.request.as_ref();
        assert_eq!(checked.context(), Some(expected.as_ref()));
    }
}

#[test]
fn per_request_entities_hold_only_what_the_decision_needs() {
    let engine = engine();
    let req = Req::lookup();
    let built = engine.build(&req.input(), None).unwrap();
    // employee, its role, its organisation, the case, the case type, the person, the action.
    assert_eq!(built.entities.iter().count(), 7);
    let req = Req::lookup().by(employee("hh-0363", "0363", &["boa-parkeren"]));
    let built = engine.build(&req.input(), None).unwrap();
    // boa-parkeren brings its parent role handhaver along.
    assert_eq!(built.entities.iter().count(), 8);
}

/// Requests of many shapes: employees with one, several, overlapping and unknown roles, every
/// action, with and without a case, with break-glass.
fn request_matrix() -> Vec<Req> {
    let employees = [
        employee("vv-0363", "0363", &["vergunningverlener"]),
        employee("hh-0363", "0363", &["boa-parkeren", "handhaver"]),
        employee("hh-0363", "0363", &["boa-parkeren", "onbekende-rol"]),
        employee("nood-0363", "0363", &["noodtoegang", "vergunningverlener"]),
        employee("vi-0599", "0599", &["voertuiginformatie"]),
    ];
    let targets = [
        (Action::BRP_LOOKUP, person("999993653")),
        (Action::BRP_LOOKUP, person("999990639")),
        (Action::BRP_SEARCH, search()),
        (Action::RDW_VEHICLE, vehicle("XY999Z")),
        (Action::RDW_HOLDER, vehicle("XY999Z")),
    ];
    let mut reqs = Vec::new();
    for e in &employees {
        for (action, resource) in &targets {
            for case in [Some(pv_case()), Some(hh_case()), None] {
                let base = Req::lookup()
                    .by(e.clone())
                    .action(*action, resource.clone())
                    .case(case);
                reqs.push(base.clone_req());
                reqs.push(base.break_glass(Some(BG_REASON)));
            }
        }
        // Releases: each request action, named or not, with what an answer can say.
        let answered = [
            answer_person("999993653", false, &[], None),
            answer_person(
                "999990639",
                true,
                &["postcode:1017CB:502::", "aoid:0363010000502001"],
                Some("dijk:1980-01-01"),
            ),
        ];
        for request_action in [Action::BRP_LOOKUP, Action::BRP_SEARCH, Action::RDW_HOLDER] {
            for p in &answered {
                for case in [Some(hh_case()), None] {
                    for named in [true, false] {
                        let base = Req::lookup().by(e.clone()).case(case.clone()).release(
                            request_action,
                            named,
                            p.clone(),
                        );
                        reqs.push(base.clone_req().search(address_search()));
                        reqs.push(base.break_glass(Some(BG_REASON)));
                    }
                }
            }
        }
    }
    reqs
}

impl Req {
    fn clone_req(&self) -> Req {
        Req {
            employee: self.employee.clone(),
            action: self.action,
            resource: self.resource.clone(),
            case: self.case.clone(),
            break_glass: self.break_glass,
            reason: self.reason.clone(),
            fields: self.fields.clone(),
            client_ip: self.client_ip,
            now: self.now,
            counters: self.counters,
            search: self.search.clone(),
            release: self.release.clone(),
        }
    }
}

#[test]
fn request_entities_carry_the_closure_cedar_computes() {
    let engine = engine();
    for req in request_matrix() {
        let fast = engine.build(&req.input(), None).unwrap();
        let checked = engine.build(&req.input(), Some(&engine.schema)).unwrap();
        // With the schema, Cedar adds every action; the request path adds the request's own.
        let uids = |e: &Entities| {
            let mut v: Vec<EntityUid> = e
                .iter()
                .map(|e| e.uid())
                .filter(|u| {
                    u.type_name().basename() != "Action" || Some(u) == engine.action_uid(req.action)
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(uids(&fast.entities), uids(&checked.entities));
        assert!(uids(&fast.entities).contains(engine.action_uid(req.action).unwrap()));
        for uid in uids(&checked.entities) {
            let ancestors = |e: &Entities| {
                let mut v: Vec<EntityUid> = e
                    .ancestors(&uid)
                    .map(|a| a.cloned().collect())
                    .unwrap_or_default();
                v.sort();
                v
            };
            assert_eq!(
                ancestors(&fast.entities),
                ancestors(&checked.entities),
                "ancestors of {uid} for {:?}",
                req.employee.roles
            );
        }
    }
}

/// What Cedar's `Authorizer` says over the engine's whole policy set, as an [`compiled::Outcome`].
fn cedar_outcome(engine: &PolicyEngine, built: &Built) -> compiled::Outcome {
    let mut o = engine.cedar_outcome(&built.request, &built.entities);
    o.errors.sort();
    o
}

/// The engine's own evaluation of `req` (errors sorted, as [`cedar_outcome`]).
fn compiled_outcome(engine: &PolicyEngine, req: &Req) -> compiled::Outcome {
    let built = engine.build(&req.input(), None).unwrap();
    let mut o = engine.compiled[req.action.as_str()].evaluate(&built.request, &built.entities);
    o.errors.sort();
    o
}

#[test]
fn policies_indexed_by_action_decide_like_the_whole_set() {
    let engine = engine();
    let mut allows = 0;
    let mut denies_by_forbid = 0;
    for req in request_matrix() {
        let built = engine.build(&req.input(), None).unwrap();
        let whole = cedar_outcome(&engine, &built);
        let indexed = engine.authorizer.is_authorized(
            &built.request,
            engine.policies_of(req.action),
            &built.entities,
        );
        assert_eq!(
            whole.allow,
            indexed.decision() == cedar_policy::Decision::Allow
        );
        let mut reasons: Vec<usize> = indexed
            .diagnostics()
            .reason()
            .map(|id| engine.order[id])
            .collect();
        reasons.sort_unstable();
        assert_eq!(whole.determining, reasons);
        assert_eq!(whole.errors.len(), indexed.diagnostics().errors().count());
        // The prepared conditions (no action constraint, built once) decide as Cedar does.
        assert_eq!(
            compiled_outcome(&engine, &req),
            whole,
            "{:?}",
            req.input().action
        );
        if whole.allow {
            allows += 1;
        } else if !whole.determining.is_empty() {
            denies_by_forbid += 1;
        }
    }
    // The matrix exercises both outcomes.
    assert!(allows > 0);
    assert!(denies_by_forbid > 0);
    assert!(
        engine.policies_of(Action::RDW_VEHICLE).policies().count()
            < engine.policies.policies().count()
    );
    assert_eq!(
        engine.compiled["rdw:vehicle"].len(),
        engine.policies_of(Action::RDW_VEHICLE).policies().count()
    );
}

#[test]
fn prepared_policies_keep_scope_constraints_and_report_errors_as_cedar() {
    // Principal and resource scopes, `unless`, action groups by list, a permit and a forbid
    // that fail to evaluate, a policy for another action only.
    let tmp = dir_with_policies(
        r#"@id("permit-role-scoped")
permit (principal in Gate::Role::"handhaver", action, resource is Gate::Vehicle);

@id("permit-person-eq")
permit (principal, action == Gate::Action::"brp:lookup", resource == Gate::Person::"999993653")
unless { context.break_glass };

@id("permit-erroring")
permit (principal, action in [Gate::Action::"brp:lookup", Gate::Action::"rdw:holder"], resource)
when { context.lookups_last_day * 9223372036854775807 > 0 };

@id("forbid-erroring")
@code("overflow")
@reason("this forbid overflows")
forbid (principal is Gate::Employee, action, resource)
when { context.break_glass && context.lookups_last_hour + 9223372036854775807 > 0 };

@id("forbid-search-only")
@code("noSearch")
@reason("no searches")
forbid (principal, action == Gate::Action::"brp:search", resource)
when { context.fields.contains("naam") };

@id("forbid-other-org")
@code("otherOrg")
@reason("other organisation")
forbid (principal in Gate::Organization::"0599", action, resource);
"#,
    );
    let engine = PolicyEngine::load(tmp.path()).unwrap();
    let mut seen_errors = 0;
    let mut seen_allow = 0;
    let mut seen_forbid = 0;
    for req in request_matrix() {
        let built = engine.build(&req.input(), None).unwrap();
        let cedar = cedar_outcome(&engine, &built);
        assert_eq!(
            compiled_outcome(&engine, &req),
            cedar,
            "{:?}",
            req.input().action
        );
        seen_errors += usize::from(!cedar.errors.is_empty());
        seen_allow += usize::from(cedar.allow);
        seen_forbid += usize::from(!cedar.allow && !cedar.determining.is_empty());
    }
    assert!(seen_errors > 0 && seen_allow > 0 && seen_forbid > 0);
}

#[test]
fn a_cached_case_entity_is_never_used_for_a_changed_case() {
    let engine = engine();
    let req = Req::lookup();
    assert_allowed_by(&engine.decide(&req.input()), "permit-brp-lookup-for-case");
    let mut closed = pv_case();
    closed.status = CaseStatus::Closed;
    let req = Req::lookup().case(Some(closed));
    assert_denied(
        &engine.decide(&req.input()),
        "caseClosed",
        "forbid-case-closed",
    );
    let mut other_subjects = pv_case();
    other_subjects.subjects = vec!["999991802".into()];
    let req = Req::lookup().case(Some(other_subjects));
    assert_denied(
        &engine.decide(&req.input()),
        "subjectNotInCase",
        "forbid-subject-not-in-case",
    );
    assert_allowed_by(
        &engine.decide(&Req::lookup().input()),
        "permit-brp-lookup-for-case",
    );
}

#[test]
fn engine_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<PolicyEngine>();
    let engine = std::sync::Arc::new(engine());
    let req = Req::lookup();
    let expected = engine.decide(&req.input());
    let other = std::sync::Arc::clone(&engine);
    let from_thread = std::thread::spawn(move || other.decide(&Req::lookup().input()))
        .join()
        .unwrap();
    assert_eq!(from_thread, expected);
}

#[test]
fn cedar_datetime_literals_are_utc_with_milliseconds() {
    assert_eq!(cedar_datetime(&now()), "2026-03-02T10:00:00.000Z");
}

/// Informal timing of `decide`; run with
/// `cargo test --lib policy::tests::decide_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn decide_timing() {
    let engine = engine();
    let req = Req::lookup();
    let input = req.input();
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = std::time::Instant::now();
        let d = engine.decide(&input);
        samples.push(t.elapsed());
        assert!(d.allow);
    }
    samples.sort();
    println!(
        "decide: median {:?}, p99 {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
}

/// Informal timing of the stages of `decide` (building, authorizing); run like `decide_timing`.
#[test]
#[ignore]
fn decide_timing_by_stage() {
    let engine = engine();
    let req = Req::lookup();
    let input = req.input();
    let n = 2_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(engine.build(&input, None).unwrap());
    }
    println!("build:     {:?}", t.elapsed() / n);
    let b = engine.build(&input, None).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(engine.authorizer.is_authorized(
            &b.request,
            &engine.policies,
            &b.entities,
        ));
    }
    println!("authorize: {:?}", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            engine.case_entity(Types::uid(&engine.types.case, "x"), input.case.unwrap()),
        )
        .unwrap();
    }
    println!("case:      {:?}", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(RestrictedExpression::new_datetime(
            "2026-03-02T10:00:00.000Z",
        ));
    }
    println!("dt expr:   {:?}", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            cedar_policy::Context::from_pairs([(
                "now".to_string(),
                RestrictedExpression::new_datetime("2026-03-02T10:00:00.000Z"),
            )])
            .unwrap(),
        );
    }
    println!("dt ctx:    {:?}", t.elapsed() / n);
}
