//! Release decisions: no person leaves the gate without an allow decision for that person.
//! A registry that over-answers, swaps persons, marks a person secret, or answers a search
//! with persons the case does not name; the example registry's searches end to end; shadow
//! mode; and an RDW holder that may not be released.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::fake::Fake;
use common::{Harness, Options, raadpleeg};
use serde_json::{Value, json};

async fn gate_in_front_of_fake(extra: &str) -> (Harness, Fake) {
    let (fake, addr) = Fake::start().await;
    let h = Harness::start_with(Options {
        upstream_url: Some(format!("http://{addr}")),
        extra_config: extra.to_string(),
        ..Options::default()
    })
    .await;
    (h, fake)
}

/// emp-042 looks up 999993653, the subject of `Z-OPEN`, asking for `naam`.
async fn lookup_of_the_case_subject(h: &Harness) -> common::Answer {
    h.brp(
        &h.emp042(),
        Some("Z-OPEN"),
        &raadpleeg(&["999993653"], &["naam"]),
    )
    .await
}

/// The holder of GZ123K, a vehicle `Z-WIJK` names, asked by `token`.
async fn holder_of_gz123k(h: &Harness, token: &str) -> common::Answer {
    h.send(
        "GET",
        "/rdw/voertuigen/GZ123K/tenaamstelling",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-case-id", "Z-WIJK"),
        ],
        None,
    )
    .await
}

fn person(bsn: &str, name: &str) -> Value {
    json!({"burgerservicenummer": bsn, "naam": {"voornamen": name, "geslachtsnaam": "X"}})
}

/// The release entries of the outcome record of the request answered by `a`.
fn release_of(h: &Harness, a: &common::Answer) -> (Value, Vec<(String, String, bool, String)>) {
    let rid = a.headers["x-request-id"].to_str().unwrap();
    let outcome = h.record_of(rid, "outcome");
    let entries = outcome["release"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["decision"].as_str().unwrap().to_string(),
                r["released"].as_bool().unwrap(),
                r["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (outcome, entries)
}

fn disclosed(outcome: &Value) -> Vec<String> {
    outcome["disclosed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

fn entry(id: &str, decision: &str, released: bool, code: &str) -> (String, String, bool, String) {
    (id.into(), decision.into(), released, code.into())
}

#[tokio::test]
async fn a_lookup_answered_with_an_extra_person_releases_only_the_person_asked_for() {
    let (h, fake) = gate_in_front_of_fake("").await;
    fake.answer(
        json!({"type": "RaadpleegMetBurgerservicenummer", "personen": [
        person("999993653", "Suzanne"), person("999991802", "Pieter")]}),
    );
    let a = lookup_of_the_case_subject(&h).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let body = String::from_utf8_lossy(&a.body).to_string();
    assert!(body.contains("Suzanne"), "{body}");
    assert!(!body.contains("Pieter"), "the extra person leaked: {body}");
    assert_eq!(a.json()["personen"].as_array().unwrap().len(), 1);
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(
        entries,
        vec![
            entry("999993653", "allow", true, ""),
            entry("999991802", "deny", false, "personNotRequested"),
        ]
    );
    assert_eq!(disclosed(&outcome), ["999993653"]);
    // The registry was asked who each person is.
    assert_eq!(
        fake.last_seen()["fields"],
        json!(["naam", "burgerservicenummer"])
    );
}

#[tokio::test]
async fn a_lookup_answered_with_another_person_releases_nobody() {
    let (h, fake) = gate_in_front_of_fake("").await;
    fake.answer(
        json!({"type": "RaadpleegMetBurgerservicenummer", "personen": [
        person("999991802", "Pieter")]}),
    );
    let a = lookup_of_the_case_subject(&h).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["personen"], json!([]));
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(
        entries,
        vec![entry("999991802", "deny", false, "personNotRequested")]
    );
    assert!(disclosed(&outcome).is_empty());
}

#[tokio::test]
async fn persons_the_answer_does_not_identify_are_withheld() {
    let (h, fake) = gate_in_front_of_fake("").await;
    fake.answer(json!({"personen": [
        person("999993653", "Suzanne"),
        {"naam": {"voornamen": "Nobody"}},
        {"burgerservicenummer": "123456789", "naam": {"voornamen": "Invalid"}},
        "Jan Jansen, Herengracht 1",
        null]}));
    let a = lookup_of_the_case_subject(&h).await;
    assert_eq!(a.status, 200);
    let body = String::from_utf8_lossy(&a.body).to_string();
    for leaked in ["Nobody", "Invalid", "Herengracht"] {
        assert!(!body.contains(leaked), "{leaked} leaked: {body}");
    }
    let (_, entries) = release_of(&h, &a);
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0], entry("999993653", "allow", true, ""));
    for e in &entries[1..] {
        assert_eq!(
            *e,
            entry("unidentified", "deny", false, "personNotIdentified")
        );
    }
}

#[tokio::test]
async fn a_person_the_answer_marks_secret_is_released_only_with_break_glass() {
    let (h, fake) = gate_in_front_of_fake("").await;
    fake.answer(json!({"personen": [{"burgerservicenummer": "999993653",
        "naam": {"voornamen": "Suzanne"}, "geheimhoudingPersoonsgegevens": true}]}));
    let a = lookup_of_the_case_subject(&h).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["personen"], json!([]));
    let (_, entries) = release_of(&h, &a);
    assert_eq!(
        entries,
        vec![entry("999993653", "deny", false, "protectedPerson")]
    );

    let token = h.token("emp-900", "0363", &["noodtoegang"]);
    let auth = format!("Bearer {token}");
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-break-glass", common::BG_REASON),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["personen"][0]["naam"]["voornamen"], "Suzanne");
    let (_, entries) = release_of(&h, &a);
    assert_eq!(entries, vec![entry("999993653", "allow", true, "")]);
}

fn postcode_search(pc: &str, nr: u32, fields: &[&str]) -> Value {
    json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": pc, "huisnummer": nr, "fields": fields})
}

fn resident(bsn: &str, name: &str, regel1: &str, regel2: &str) -> Value {
    json!({"burgerservicenummer": bsn, "naam": {"voornamen": name},
           "adressering": {"adresregel1": regel1, "adresregel2": regel2}})
}

#[tokio::test]
async fn an_address_search_releases_only_residents_at_an_address_the_case_names() {
    let (h, fake) = gate_in_front_of_fake("").await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    fake.answer(json!({"type": "ZoekMetPostcodeEnHuisnummer", "personen": [
        resident("999990007", "Jan", "Herengracht 502", "1017 CB  AMSTERDAM"),
        resident("999990019", "Anna", "Herengracht 502", "1017 CB  AMSTERDAM"),
        resident("999991802", "Elsewhere", "Herengracht 504", "1017 CB  AMSTERDAM"),
        resident("999990639", "Protected", "Herengracht 502", "1017 CB  AMSTERDAM"),
        {"burgerservicenummer": "999990020", "naam": {"voornamen": "NoAddress"}}]}));
    let a = h
        .brp(
            &emp107,
            Some("Z-WIJK"),
            &postcode_search("1017CB", 502, &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let names: Vec<String> = a.json()["personen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["naam"]["voornamen"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Jan", "Anna"]);
    // Minimised: the address lines the gate asked for are not passed on.
    assert!(a.json()["personen"][0].get("adressering").is_none());
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(
        entries,
        vec![
            entry("999990007", "allow", true, ""),
            entry("999990019", "allow", true, ""),
            entry("999991802", "deny", false, "residentNotInCase"),
            entry("999990639", "deny", false, "protectedPerson"),
            entry("999990020", "deny", false, "residentNotInCase"),
        ]
    );
    assert_eq!(disclosed(&outcome), ["999990007", "999990019"]);
    let policies = outcome["release"][0]["policies"].as_array().unwrap();
    assert_eq!(policies, &[json!("permit-release-search-named-in-case")]);
    assert_eq!(
        fake.last_seen()["fields"],
        json!([
            "naam",
            "burgerservicenummer",
            "adressering.adresregel1",
            "adressering.adresregel2"
        ])
    );
}

#[tokio::test]
async fn an_address_search_for_an_address_the_case_does_not_name_is_refused_before_forwarding() {
    let (h, fake) = gate_in_front_of_fake("").await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    for body in [
        postcode_search("1017CB", 504, &["naam"]),
        postcode_search("1094HH", 88, &["naam"]),
        json!({"type": "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving", "straat": "Herengr*",
               "huisnummer": 502, "gemeenteVanInschrijving": "0363", "fields": ["naam"]}),
    ] {
        let a = h.brp(&emp107, Some("Z-WIJK"), &body).await;
        assert_eq!(a.status, 403, "{body}");
        assert_eq!(a.code(), "addressNotInCase");
    }
    assert_eq!(fake.seen_count(), 0, "nothing forwarded");
    // The BAG id the case names is searchable.
    fake.answer(json!({"personen": []}));
    let a = h
        .brp(
            &emp107,
            Some("Z-WIJK"),
            &json!({"type": "ZoekMetAdresseerbaarObjectIdentificatie",
                    "adresseerbaarObjectIdentificatie": "0363010000088001", "fields": ["naam"]}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
}

#[tokio::test]
async fn a_name_search_releases_case_subjects_by_bsn_or_by_name_and_birth_date() {
    let (h, fake) = gate_in_front_of_fake("").await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    let born = |d: &str| json!({"datum": {"type": "Datum", "datum": d}});
    fake.answer(json!({"type": "ZoekMetGeslachtsnaamEnGeboortedatum", "personen": [
        {"burgerservicenummer": "999990007", "naam": {"geslachtsnaam": "Vries"}, "geboorte": born("1978-06-14")},
        {"burgerservicenummer": "999991802", "naam": {"geslachtsnaam": "Jansen"}, "geboorte": born("1952-07-19")},
        {"burgerservicenummer": "999990032", "naam": {"geslachtsnaam": "Jansen"}, "geboorte": born("1925-05-04")}]}));
    let a = h
        .brp(
            &emp107,
            Some("Z-WIJK"),
            &json!({"type": "ZoekMetGeslachtsnaamEnGeboortedatum", "geslachtsnaam": "Jans*",
                    "geboortedatum": "1952-07-19", "fields": ["naam"]}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(
        entries,
        vec![
            entry("999990007", "allow", true, ""),
            entry("999991802", "allow", true, ""),
            entry("999990032", "deny", false, "subjectNotInCase"),
        ]
    );
    assert_eq!(disclosed(&outcome), ["999990007", "999991802"]);
    assert_eq!(a.json()["personen"].as_array().unwrap().len(), 2);
    // The birth date was asked for the decision only.
    assert!(a.json()["personen"][0].get("geboorte").is_none());
    assert_eq!(
        fake.last_seen()["fields"],
        json!(["naam", "burgerservicenummer", "geboorte.datum"])
    );
}

#[tokio::test]
async fn shadow_mode_records_withholdings_and_passes_the_answer_on() {
    let routes = "[route_enforce]\n\"/haalcentraal/api/brp/personen\" = false\n";
    let (h, fake) = gate_in_front_of_fake(routes).await;
    fake.answer(
        json!({"personen": [person("999993653", "Suzanne"), person("999991802", "Pieter")]}),
    );
    let a = lookup_of_the_case_subject(&h).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["personen"].as_array().unwrap().len(), 2);
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(
        entries,
        vec![
            entry("999993653", "allow", true, ""),
            entry("999991802", "deny", true, "personNotRequested"),
        ]
    );
    assert_eq!(disclosed(&outcome), ["999993653", "999991802"]);
}

#[tokio::test]
async fn a_vehicle_holder_that_may_not_be_released_refuses_the_whole_answer() {
    let (h, fake) = gate_in_front_of_fake("").await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    fake.answer(
        json!({"kenteken": "GZ123K", "houder": {"burgerservicenummer": "999990639",
        "naam": "Protected Person", "adres": "Kinkerstraat 12A"}}),
    );
    let a = holder_of_gz123k(&h, &emp107).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.code(), "protectedPerson");
    assert!(!String::from_utf8_lossy(&a.body).contains("Kinkerstraat"));
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(outcome["status"], 403);
    assert!(disclosed(&outcome).is_empty());
    assert_eq!(
        entries,
        vec![entry("999990639", "deny", false, "protectedPerson")]
    );
    // A holder who may be released: vehicle and holder are disclosed.
    fake.answer(json!({"kenteken": "GZ123K", "houder": {"burgerservicenummer": "999991802"}}));
    let a = holder_of_gz123k(&h, &emp107).await;
    assert_eq!(a.status, 200);
    let (outcome, entries) = release_of(&h, &a);
    assert_eq!(disclosed(&outcome), ["GZ123K", "999991802"]);
    assert_eq!(entries, vec![entry("999991802", "allow", true, "")]);
}

#[tokio::test]
async fn example_registry_address_search_releases_the_residents_of_the_case_address() {
    let h = Harness::start().await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    let a = h
        .brp(
            &emp107,
            Some("Z-WIJK"),
            &postcode_search("1017 CB", 502, &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let (outcome, entries) = release_of(&h, &a);
    let mut released: Vec<String> = entries
        .iter()
        .filter(|e| e.2)
        .map(|e| e.0.clone())
        .collect();
    released.sort();
    assert_eq!(released, ["999990007", "999990019", "999993653"]);
    assert_eq!(a.json()["personen"].as_array().unwrap().len(), 3);
    assert_eq!(disclosed(&outcome).len(), 3);
    // Only the asked field left the gate.
    for p in a.json()["personen"].as_array().unwrap() {
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["naam"], "{p}");
    }
}
