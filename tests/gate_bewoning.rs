//! BRP Bewoning as a registry plug-in, end to end: who lived at an address, only for an address
//! the case names, each resident released or withheld, against the example registry and a
//! registry that answers with residents of another address.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::fake::Fake;
use common::{Harness, Options};
use serde_json::{Value, json};

const BEWONING: &str = "/haalcentraal/api/bewoning/bewoningen";

async fn bewoning(h: &Harness, token: &str, case: &str, body: &Value) -> common::Answer {
    let auth = format!("Bearer {token}");
    h.send(
        "POST",
        BEWONING,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x-case-id", case),
        ],
        Some(&body.to_string()),
    )
    .await
}

fn peildatum(aoid: &str) -> Value {
    json!({"type": "BewoningMetPeildatum", "peildatum": chrono::Utc::now().date_naive().to_string(),
           "adresseerbaarObjectIdentificatie": aoid})
}

fn release(h: &Harness, a: &common::Answer) -> (Value, Vec<(String, bool, String)>) {
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
                r["released"].as_bool().unwrap(),
                r["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (outcome, entries)
}

#[tokio::test]
async fn the_residents_of_an_address_the_case_names_are_released_from_the_example_registry() {
    let h = Harness::start().await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    // Javastraat 88: the case names it by its BAG id.
    let a = bewoning(&h, &emp107, "Z-WIJK", &peildatum("0363010000088001")).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    let mut bsns: Vec<&str> = v["bewoningen"][0]["bewoners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["burgerservicenummer"].as_str().unwrap())
        .collect();
    bsns.sort_unstable();
    assert_eq!(bsns, ["999991802", "999993872"]);
    let rid = a.headers["x-request-id"].to_str().unwrap();
    let decision = h.record_of(rid, "decision");
    assert_eq!(decision["action"], "brp:bewoning");
    assert_eq!(decision["decision"], "allow");
    let (outcome, entries) = release(&h, &a);
    assert!(entries.iter().all(|e| e.1), "{entries:?}");
    assert_eq!(outcome["disclosed"].as_array().unwrap().len(), 2);
    // The registry got the query as the client sent it.
    assert_eq!(h.registry.last_seen().unwrap().path, "/bewoningen");
}

#[tokio::test]
async fn bewoning_of_an_address_the_case_does_not_name_is_refused_before_forwarding() {
    let h = Harness::start().await;
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    let a = bewoning(&h, &emp107, "Z-WIJK", &peildatum("0363010000502001")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.code(), "addressNotInCase");
    // A case type that may not search, and a malformed query.
    let a = bewoning(&h, &h.emp042(), "Z-OPEN", &peildatum("0363010000088001")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.code(), "searchNotAllowed");
    let a = bewoning(
        &h,
        &emp107,
        "Z-WIJK",
        &json!({"type": "BewoningMetPeildatum", "adresseerbaarObjectIdentificatie": "0363010000088001"}),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.code(), "invalidBody");
    assert_eq!(h.registry.seen_count(), 0, "nothing forwarded");
}

#[tokio::test]
async fn residents_the_answer_places_elsewhere_or_marks_secret_are_withheld() {
    let (fake, addr) = Fake::start().await;
    let h = Harness::start_with(Options {
        upstream_url: Some(format!("http://{addr}")),
        ..Options::default()
    })
    .await;
    fake.answer(json!({"bewoningen": [
        {"adresseerbaarObjectIdentificatie": "0363010000088001",
         "periode": {"datumVan": "2026-01-01", "datumTot": "2026-01-02"},
         "bewoners": [
            {"burgerservicenummer": "999991802", "naam": {"volledigeNaam": "Hendrik Jansen"},
             "verblijfplaats": {"straat": "Javastraat"}},
            {"burgerservicenummer": "999993872", "naam": {"volledigeNaam": "Secret"},
             "geheimhoudingPersoonsgegevens": true},
            {"burgerservicenummer": "999990639", "naam": {"volledigeNaam": "Protected"}}],
         "mogelijkeBewoners": [{"naam": {"volledigeNaam": "No BSN"}}]},
        {"adresseerbaarObjectIdentificatie": "0363010000502001",
         "periode": {"datumVan": "2026-01-01", "datumTot": "2026-01-02"},
         "bewoners": [{"burgerservicenummer": "999993653", "naam": {"volledigeNaam": "Elsewhere"}}],
         "mogelijkeBewoners": []}]}));
    let emp107 = h.token("emp-107", "0363", &["handhaver"]);
    let a = bewoning(&h, &emp107, "Z-WIJK", &peildatum("0363010000088001")).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let body = String::from_utf8_lossy(&a.body).to_string();
    for leaked in ["Secret", "Protected", "No BSN", "Elsewhere", "Javastraat"] {
        assert!(!body.contains(leaked), "{leaked} leaked: {body}");
    }
    assert_eq!(
        a.json()["bewoningen"][0]["bewoners"],
        json!([{"burgerservicenummer": "999991802", "naam": {"volledigeNaam": "Hendrik Jansen"}}])
    );
    let (outcome, entries) = release(&h, &a);
    assert_eq!(
        entries,
        vec![
            ("999991802".to_string(), true, String::new()),
            (
                "999993872".to_string(),
                false,
                "protectedPerson".to_string()
            ),
            (
                "999990639".to_string(),
                false,
                "protectedPerson".to_string()
            ),
            (
                "unidentified".to_string(),
                false,
                "personNotIdentified".to_string()
            ),
            (
                "999993653".to_string(),
                false,
                "residentNotInCase".to_string()
            ),
        ]
    );
    assert_eq!(
        outcome["disclosed"],
        json!([{"type": "Person", "id": "999991802"}])
    );
}
