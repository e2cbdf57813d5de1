//! Each shipped policy, allowed and denied, through a real gate over real HTTP; every answer is
//! checked against the durable audit record it produced.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{BG_REASON, Harness, raadpleeg};
use serde_json::{Value, json};

async fn expect_deny(h: &Harness, a: common::Answer, code: &str) {
    assert_eq!(
        a.status,
        403,
        "expected 403 {code}, got {} {:?}",
        a.status,
        a.json()
    );
    assert!(a.is_problem());
    assert_eq!(a.code(), code, "{:?}", a.json());
    let v = a.json();
    assert!(!v["detail"].as_str().unwrap_or("").is_empty());
    let rid = a.request_id();
    let recs = h.records_of(&rid);
    assert!(!recs.is_empty(), "no audit record for the deny");
    assert!(
        recs.iter()
            .all(|r| r["decision"] == "deny" && r["kind"] == "decision")
    );
    assert!(recs.iter().any(|r| r["code"] == code));
}

fn expect_allow(a: &common::Answer) {
    assert_eq!(
        a.status,
        200,
        "expected 200, got {} {:?}",
        a.status,
        a.json()
    );
}

#[tokio::test]
async fn lookup_for_subject_of_open_case_is_allowed_and_recorded() {
    let h = Harness::start().await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam", "burgerservicenummer"]),
        )
        .await;
    expect_allow(&a);
    let v = a.json();
    assert_eq!(v["personen"][0]["burgerservicenummer"], "999993653");
    let rid = a.headers["x-request-id"].to_str().unwrap().to_string();
    let recs = h.records_of(&rid);
    assert_eq!(recs.len(), 2, "decision + outcome: {recs:?}");
    let d = &recs[0];
    assert_eq!(d["kind"], "decision");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["action"], "brp:lookup");
    assert_eq!(d["resource"], json!({"type": "Person", "id": "999993653"}));
    assert_eq!(d["principal"]["id"], "emp-042");
    assert_eq!(d["case_id"], "Z-OPEN");
    assert_eq!(d["gate"], "test-gate");
    assert!(
        d["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("permit-brp-lookup-for-case"))
    );
    let o = &recs[1];
    assert_eq!(o["kind"], "outcome");
    assert_eq!(o["status"], 200);
    assert_eq!(
        o["disclosed"],
        json!([{"type": "Person", "id": "999993653"}])
    );
}

#[tokio::test]
async fn every_case_requirement_has_its_own_deny() {
    let h = Harness::start().await;
    let t = h.emp042();
    let q = raadpleeg(&["999993653"], &["naam"]);
    expect_deny(&h, h.brp(&t, None, &q).await, "caseRequired").await;
    expect_deny(&h, h.brp(&t, Some("Z-CLOSED"), &q).await, "caseClosed").await;
    expect_deny(
        &h,
        h.brp(&t, Some("Z-ENDED"), &q).await,
        "caseOutsideWindow",
    )
    .await;
    expect_deny(
        &h,
        h.brp(&t, Some("Z-OTHER-ORG"), &q).await,
        "caseOtherOrganization",
    )
    .await;
    let other = h.token("emp-043", "0363", &["vergunningverlener"]);
    expect_deny(
        &h,
        h.brp(&other, Some("Z-OPEN"), &q).await,
        "notCaseHandler",
    )
    .await;
    let wrong_role = h.token("emp-042", "0363", &["handhaver"]);
    expect_deny(
        &h,
        h.brp(&wrong_role, Some("Z-OPEN"), &q).await,
        "roleNotAllowedForCaseType",
    )
    .await;
    let outsider = raadpleeg(&["999993872"], &["naam"]);
    expect_deny(
        &h,
        h.brp(&t, Some("Z-OPEN"), &outsider).await,
        "subjectNotInCase",
    )
    .await;
    let field = raadpleeg(&["999993653"], &["geboorte"]);
    expect_deny(
        &h,
        h.brp(&t, Some("Z-OPEN"), &field).await,
        "fieldNotAllowed",
    )
    .await;
    expect_deny(
        &h,
        h.brp(&t, Some("Z-UNKNOWN-TYPE"), &q).await,
        "policyError",
    )
    .await;
    let a = h.brp(&t, Some("Z-NOPE"), &q).await;
    expect_deny(&h, a, "caseNotFound").await;
    assert_eq!(
        h.registry.seen_count(),
        0,
        "no denied request reached the registry"
    );
}

#[tokio::test]
async fn one_denied_subject_denies_the_whole_request() {
    let h = Harness::start().await;
    let q = raadpleeg(&["999993653", "999993872"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    let rid = a.request_id();
    expect_deny(&h, a, "subjectNotInCase").await;
    let recs = h.records_of(&rid);
    assert_eq!(recs.len(), 2, "one record per subject");
    assert_eq!(recs[0]["code"], "requestDenied");
    assert_eq!(recs[1]["code"], "subjectNotInCase");
    assert_eq!(h.registry.seen_count(), 0);
}

#[tokio::test]
async fn protected_person_needs_break_glass_by_an_allowed_role() {
    let h = Harness::start().await;
    let q = raadpleeg(&["999990639"], &["naam"]);
    expect_deny(
        &h,
        h.brp(&h.emp042(), Some("Z-PROTECTED"), &q).await,
        "protectedPerson",
    )
    .await;

    let nood = h.token("emp-900", "0363", &["noodtoegang"]);
    let body = q.to_string();
    let auth = format!("Bearer {nood}");
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-break-glass", BG_REASON),
            ],
            Some(&body),
        )
        .await;
    expect_allow(&a);
    let rid = a.headers["x-request-id"].to_str().unwrap().to_string();
    let d = h.record_of(&rid, "decision");
    assert_eq!(d["purpose"]["break_glass"], true);
    assert_eq!(d["purpose"]["reason"], BG_REASON);
    assert!(
        d["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("permit-break-glass"))
    );
}

#[tokio::test]
async fn break_glass_rules() {
    let h = Harness::start().await;
    let q = raadpleeg(&["999993872"], &["naam"]);
    let bg = |tok: String, reason: &'static str, body: Value| {
        let h = &h;
        async move {
            let auth = format!("Bearer {tok}");
            let b = body.to_string();
            h.send(
                "POST",
                "/haalcentraal/api/brp/personen",
                &[("authorization", &auth), ("x-break-glass", reason)],
                Some(&b),
            )
            .await
        }
    };
    expect_deny(
        &h,
        bg(h.emp042(), BG_REASON, q.clone()).await,
        "breakGlassNotAllowed",
    )
    .await;
    let nood = h.token("emp-900", "0363", &["noodtoegang"]);
    let search = json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1011AB", "huisnummer": 1, "fields": ["naam"]});
    expect_deny(
        &h,
        bg(nood.clone(), BG_REASON, search).await,
        "breakGlassNotForAction",
    )
    .await;
    let short = bg(nood.clone(), "because", q.clone()).await;
    assert_eq!(short.status, 400);
    assert_eq!(short.code(), "breakGlassReasonTooShort");
    expect_allow(&bg(nood, BG_REASON, q).await);
}

#[tokio::test]
async fn search_needs_a_case_type_that_allows_searching() {
    let h = Harness::start().await;
    let search = json!({"type": "ZoekMetGeslachtsnaamEnGeboortedatum", "geslachtsnaam": "Jansen",
                        "geboortedatum": "1980-01-01", "fields": ["naam"]});
    expect_deny(
        &h,
        h.brp(&h.emp042(), Some("Z-OPEN"), &search).await,
        "searchNotAllowed",
    )
    .await;
    let handhaver = h.token("emp-107", "0363", &["handhaver"]);
    let a = h.brp(&handhaver, Some("Z-HANDHAVING"), &search).await;
    expect_allow(&a);
    assert_eq!(a.json()["type"], "ZoekMetGeslachtsnaamEnGeboortedatum");
    let rid = a.headers["x-request-id"].to_str().unwrap().to_string();
    let d = h.record_of(&rid, "decision");
    assert_eq!(d["action"], "brp:search");
    assert_eq!(d["resource"]["type"], "PersonSearch");
    assert!(
        d["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("permit-brp-search-for-case"))
    );
}

#[tokio::test]
async fn holder_lookup_needs_a_case_naming_the_vehicle() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.emp042());
    let get = |path: &'static str, case: Option<&'static str>| {
        let h = &h;
        let auth = auth.clone();
        async move {
            let mut hd = vec![("authorization", auth.as_str())];
            if let Some(c) = case {
                hd.push(("x-case-id", c));
            }
            h.send("GET", path, &hd, None).await
        }
    };
    let a = get("/rdw/voertuigen/xx-999-x/tenaamstelling", Some("Z-OPEN")).await;
    expect_allow(&a);
    let seen = h.registry.last_seen().unwrap();
    assert_eq!(
        seen.path, "/voertuigen/XX999X/tenaamstelling",
        "kenteken normalised upstream"
    );
    expect_deny(
        &h,
        get("/rdw/voertuigen/AB123C/tenaamstelling", Some("Z-OPEN")).await,
        "vehicleNotInCase",
    )
    .await;
    expect_deny(
        &h,
        get("/rdw/voertuigen/XX999X/tenaamstelling", None).await,
        "caseRequired",
    )
    .await;
    let rid = a.headers["x-request-id"].to_str().unwrap().to_string();
    let o = h.record_of(&rid, "outcome");
    assert!(
        o["disclosed"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "Vehicle", "id": "XX999X"}))
    );
}

#[tokio::test]
async fn vehicle_facts_by_role_or_case() {
    let h = Harness::start().await;
    let info = h.token("emp-700", "0363", &["voertuiginformatie"]);
    let auth = format!("Bearer {info}");
    let a = h
        .send(
            "GET",
            "/rdw/voertuigen/AB-123-C",
            &[("authorization", &auth)],
            None,
        )
        .await;
    expect_allow(&a);
    let auth = format!("Bearer {}", h.emp042());
    let a = h
        .send(
            "GET",
            "/rdw/voertuigen/AB123C",
            &[("authorization", &auth)],
            None,
        )
        .await;
    expect_deny(&h, a, "notPermitted").await;
    let a = h
        .send(
            "GET",
            "/rdw/voertuigen/XX999X",
            &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
            None,
        )
        .await;
    expect_allow(&a);
}

#[tokio::test]
async fn volume_limit_is_enforced_by_policy() {
    let h = Harness::start().await;
    let t = h.emp042();
    let q = raadpleeg(&["999993653", "999991802"], &["naam"]);
    let mut last = None;
    for _ in 0..110 {
        let a = h.brp(&t, Some("Z-OPEN"), &q).await;
        if a.status != 200 {
            last = Some(a);
            break;
        }
    }
    let a = last.expect("the volume limit was never reached");
    expect_deny(&h, a, "volumeLimit").await;
}
