//! The ZGW case registry against the example Zaken API, over real HTTP on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../examples/common/zaken.rs"]
mod zaken;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, Utc};
use http::StatusCode;
use serde_json::{Value, json};

use purpose_gate::model::CaseStatus;
use purpose_gate::purpose::CaseRegistry;
use purpose_gate::zgw::{UNKNOWN_CASE_TYPE, ZgwCases, ZgwError, ZgwOptions};

const CLIENT_ID: &str = "purpose-gate";
const SECRET: &[u8] = b"zgw-test-secret-0123456789abcdef";
const ZAAKTYPE_PV: &str = "https://catalogi.example/catalogi/api/v1/zaaktypen/6a1f-pv";
const RSIN: &str = "002220647";
const OTHER_RSIN: &str = "999993653";

fn day(offset: i64) -> String {
    let today = Utc::now().date_naive();
    let d = if offset >= 0 {
        today.checked_add_days(Days::new(offset.unsigned_abs()))
    } else {
        today.checked_sub_days(Days::new(offset.unsigned_abs()))
    };
    d.unwrap().to_string()
}

fn behandelaar(emp: &str) -> Value {
    json!({"betrokkeneType": "medewerker", "omschrijvingGeneriek": "behandelaar",
           "betrokkeneIdentificatie": {"identificatie": emp, "achternaam": "Jansen"}})
}

fn persoon(bsn: &str) -> Value {
    json!({"betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": "belanghebbende",
           "betrokkeneIdentificatie": {"inpBsn": bsn, "geslachtsnaam": "Vries"}})
}

fn kenteken(k: &str) -> Value {
    json!({"objectType": "overige", "objectTypeOverige": "kenteken",
           "objectIdentificatie": {"overigeData": {"kenteken": k}}})
}

fn data() -> Value {
    json!({"zaken": [
        {"identificatie": "Z-OPEN", "bronorganisatie": RSIN, "zaaktype": ZAAKTYPE_PV,
         "startdatum": day(-10), "einddatum": null, "einddatumGepland": day(30),
         "rollen": [
            behandelaar("emp-042"),
            {"betrokkeneType": "medewerker", "omschrijvingGeneriek": "adviseur",
             "betrokkeneIdentificatie": {"identificatie": "emp-900"}},
            {"betrokkeneType": "organisatorische_eenheid", "omschrijvingGeneriek": "behandelaar",
             "betrokkeneIdentificatie": {"identificatie": "team-parkeren"}},
            persoon("999993653"),
            persoon("999991802")
         ],
         "zaakobjecten": [
            kenteken("xx-999-x"),
            {"objectType": "overige", "objectTypeOverige": "vaartuig",
             "objectIdentificatie": {"overigeData": {"kenteken": "AB123C"}}},
            {"objectType": "pand", "objectIdentificatie": {"identificatie": "0363100012345678"}}
         ]},
        {"identificatie": "Z-CLOSED", "bronorganisatie": RSIN, "zaaktype": ZAAKTYPE_PV,
         "startdatum": day(-40), "einddatum": day(-2), "einddatumGepland": day(30),
         "rollen": [behandelaar("emp-042"), persoon("999993653")], "zaakobjecten": []},
        {"identificatie": "Z-MANY-ROLLEN", "bronorganisatie": RSIN, "zaaktype": ZAAKTYPE_PV,
         "startdatum": day(-1),
         "rollen": [persoon("999993653"), persoon("999990639"), persoon("999991802"),
                    persoon("999993872"), behandelaar("emp-107"), behandelaar("emp-311")],
         "zaakobjecten": []},
        {"identificatie": "Z-ODD-TYPE", "bronorganisatie": RSIN,
         "zaaktype": "https://catalogi.example/catalogi/api/v1/zaaktypen/geheim",
         "startdatum": day(-1), "rollen": [behandelaar("emp-042")], "zaakobjecten": []},
        {"identificatie": "Z-TWICE", "bronorganisatie": RSIN, "zaaktype": ZAAKTYPE_PV,
         "startdatum": day(-1), "rollen": [behandelaar("emp-042")], "zaakobjecten": []},
        {"identificatie": "Z-TWICE", "bronorganisatie": OTHER_RSIN, "zaaktype": ZAAKTYPE_PV,
         "startdatum": day(-1), "rollen": [behandelaar("emp-555")], "zaakobjecten": []}
    ]})
}

fn options(addr: std::net::SocketAddr) -> ZgwOptions {
    ZgwOptions {
        base_url: zaken::base_url(addr),
        client_id: CLIENT_ID.into(),
        secret: SECRET.to_vec(),
        bronorganisatie: None,
        cache_ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        vehicle_object_type: "kenteken".into(),
        zaaktypen: HashMap::from([(ZAAKTYPE_PV.to_string(), "parkeervergunning".to_string())]),
        organisaties: HashMap::from([(RSIN.to_string(), "0363".to_string())]),
    }
}

struct Api {
    data: zaken::ZakenData,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn api() -> Api {
    let data = zaken::ZakenData::from_json(&data(), CLIENT_ID, SECRET).unwrap();
    let (addr, task) = zaken::spawn(data.clone()).await.unwrap();
    Api { data, addr, task }
}

async fn registry(api: &Api, tweak: impl FnOnce(&mut ZgwOptions)) -> Arc<ZgwCases> {
    let mut o = options(api.addr);
    tweak(&mut o);
    ZgwCases::new(o).unwrap()
}

#[tokio::test]
async fn open_zaak_of_a_behandelaar_maps_onto_the_case_fields() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let case = reg.find("Z-OPEN").await.unwrap().expect("zaak found");
    assert_eq!(case.id, "Z-OPEN");
    assert_eq!(case.case_type, "parkeervergunning");
    assert_eq!(case.status, CaseStatus::Open);
    assert_eq!(case.organization, "0363");
    assert_eq!(case.handlers, vec!["emp-042"]);
    assert_eq!(case.subjects, vec!["999993653", "999991802"]);
    assert_eq!(case.vehicles, vec!["XX999X"]);
    assert_eq!(case.opened.date_naive().to_string(), day(-10));
    assert_eq!(case.closes.unwrap().date_naive().to_string(), day(31));
    let url = case.url.as_deref().unwrap();
    assert!(
        url.starts_with(&format!("{}/zaken/", zaken::base_url(api.addr))),
        "{url}"
    );
}

#[tokio::test]
async fn adviseur_and_team_are_not_handlers() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let case = reg.find("Z-OPEN").await.unwrap().unwrap();
    assert!(!case.handlers.iter().any(|h| h == "emp-900"));
    assert!(!case.handlers.iter().any(|h| h == "team-parkeren"));
}

#[tokio::test]
async fn person_not_in_the_rollen_is_not_a_subject() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let case = reg.find("Z-OPEN").await.unwrap().unwrap();
    assert!(!case.subjects.iter().any(|s| s == "999990639"));
    assert!(
        !case.vehicles.iter().any(|v| v == "AB123C"),
        "other object types are not vehicles"
    );
}

#[tokio::test]
async fn zaak_with_einddatum_is_closed() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let case = reg.find("Z-CLOSED").await.unwrap().unwrap();
    assert_eq!(case.status, CaseStatus::Closed);
}

#[tokio::test]
async fn zaak_without_planned_end_is_open_ended_and_unknown_zaaktype_is_unknown() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let case = reg.find("Z-ODD-TYPE").await.unwrap().unwrap();
    assert_eq!(case.closes, None);
    assert_eq!(case.case_type, UNKNOWN_CASE_TYPE);
}

#[tokio::test]
async fn unknown_zaak_is_none_and_negatively_cached() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    assert!(reg.find("Z-NOPE").await.unwrap().is_none());
    assert!(reg.lookup("Z-NOPE").await.unwrap().is_none());
    assert_eq!(
        api.data.requests("zaken"),
        1,
        "the second lookup came from the cache"
    );
    assert_eq!(api.data.requests("rollen"), 0);
}

#[tokio::test]
async fn found_zaak_is_cached() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let a = reg.find("Z-OPEN").await.unwrap().unwrap();
    let one_fetch = api.data.total_requests();
    assert_eq!(
        one_fetch,
        1 + 3 + 2,
        "zaken, rollen and zaakobjecten in pages of two"
    );
    let b = reg.find("Z-OPEN").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(
        api.data.total_requests(),
        one_fetch,
        "the second lookup came from the cache"
    );
}

#[tokio::test]
async fn rollen_over_several_pages_are_all_read() {
    let api = api().await;
    api.data.set_page_size(2);
    let reg = registry(&api, |_| {}).await;
    let case = reg.find("Z-MANY-ROLLEN").await.unwrap().unwrap();
    assert_eq!(api.data.requests("rollen"), 3, "six rollen in pages of two");
    assert_eq!(
        case.handlers,
        vec!["emp-107", "emp-311"],
        "the last page was read"
    );
    assert_eq!(case.subjects.len(), 4);
}

#[tokio::test]
async fn closed_zaak_is_seen_after_the_ttl_and_not_before() {
    let api = api().await;
    let reg = registry(&api, |o| o.cache_ttl = Duration::from_millis(1500)).await;
    assert_eq!(
        reg.find("Z-OPEN").await.unwrap().unwrap().status,
        CaseStatus::Open
    );
    assert!(api.data.close_zaak("Z-OPEN", &day(0)));
    assert_eq!(
        reg.find("Z-OPEN").await.unwrap().unwrap().status,
        CaseStatus::Open,
        "still the cached answer within the ttl"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        reg.find("Z-OPEN").await.unwrap().unwrap().status,
        CaseStatus::Closed
    );
    assert_eq!(api.data.requests("zaken"), 2);
}

#[tokio::test]
async fn registry_down_is_an_error() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    api.task.abort();
    wait_finished(&api).await;
    let err = reg.find("Z-OPEN").await.unwrap_err();
    assert!(matches!(err, ZgwError::Unreachable { .. }), "{err}");
    let err = reg.lookup("Z-OPEN").await.unwrap_err();
    assert!(
        err.to_string().starts_with("case registry: cannot reach"),
        "{err}"
    );
}

/// Waits until the aborted server task is gone (so its listener is closed).
async fn wait_finished(api: &Api) {
    while !api.task.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn registry_answering_an_error_status_is_an_error_and_not_cached() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    api.data
        .set_failure(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let err = reg.find("Z-OPEN").await.unwrap_err();
    assert!(matches!(err, ZgwError::Status { status: 500, .. }), "{err}");
    api.data.set_failure(None);
    assert!(
        reg.find("Z-OPEN").await.unwrap().is_some(),
        "errors are not cached"
    );
}

#[tokio::test]
async fn slow_registry_is_an_error_within_the_timeout() {
    let api = api().await;
    api.data.set_delay(Duration::from_secs(60));
    let reg = registry(&api, |o| o.timeout = Duration::from_millis(300)).await;
    let err = reg.find("Z-OPEN").await.unwrap_err();
    assert_eq!(err, ZgwError::Timeout(300));
    api.data.set_delay(Duration::ZERO);
    assert!(
        reg.find("Z-OPEN").await.unwrap().is_some(),
        "a timeout is not cached"
    );
}

#[tokio::test]
async fn concurrent_lookups_share_one_fetch() {
    let api = api().await;
    api.data.set_delay(Duration::from_millis(300));
    let reg = registry(&api, |_| {}).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let reg = Arc::clone(&reg);
            tokio::spawn(async move { reg.find("Z-OPEN").await })
        })
        .collect();
    let mut cases = Vec::new();
    for t in tasks {
        cases.push(t.await.unwrap().unwrap().unwrap());
    }
    assert_eq!(api.data.requests("zaken"), 1);
    assert_eq!(
        api.data.total_requests(),
        1 + 3 + 2,
        "the pages of one fetch"
    );
    assert!(cases.iter().all(|c| Arc::ptr_eq(c, &cases[0])));
}

#[tokio::test]
async fn registry_receives_a_valid_zgw_jwt() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    reg.find("Z-OPEN").await.unwrap().unwrap();
    assert_eq!(api.data.rejected_tokens(), 0);
    let token = api.data.last_token().unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims = ["iss".to_string()].into_iter().collect();
    v.validate_exp = false;
    v.set_issuer(&[CLIENT_ID]);
    let claims =
        jsonwebtoken::decode::<Value>(&token, &jsonwebtoken::DecodingKey::from_secret(SECRET), &v)
            .unwrap()
            .claims;
    assert_eq!(claims["client_id"], CLIENT_ID);
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - Utc::now().timestamp()).abs() < 600, "iat is now");
}

#[tokio::test]
async fn wrong_secret_is_refused_by_the_api_and_is_an_error() {
    let api = api().await;
    let reg = registry(&api, |o| o.secret = b"not-the-secret".to_vec()).await;
    let err = reg.find("Z-OPEN").await.unwrap_err();
    assert!(matches!(err, ZgwError::Status { status: 401, .. }), "{err}");
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(api.data.rejected_tokens(), 1);
}

#[tokio::test]
async fn next_link_to_another_host_is_not_followed() {
    let api = api().await;
    api.data.set_page_size(1);
    api.data.set_foreign_next(true);
    let reg = registry(&api, |_| {}).await;
    let err = reg.find("Z-OPEN").await.unwrap_err();
    assert!(matches!(err, ZgwError::ForeignLink(_)), "{err}");
}

#[tokio::test]
async fn same_identificatie_twice_needs_bronorganisatie() {
    let api = api().await;
    let reg = registry(&api, |_| {}).await;
    let err = reg.find("Z-TWICE").await.unwrap_err();
    assert!(matches!(err, ZgwError::Ambiguous { count: 2, .. }), "{err}");
    let reg = registry(&api, |o| o.bronorganisatie = Some(OTHER_RSIN.into())).await;
    let case = reg.find("Z-TWICE").await.unwrap().unwrap();
    assert_eq!(case.handlers, vec!["emp-555"]);
    assert_eq!(
        case.organization, OTHER_RSIN,
        "an unmapped RSIN stays the organisation"
    );
}

#[tokio::test]
async fn demo_config_and_data_map_the_demo_zaken() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let demo = repo.join("examples/zaken-demo");
    let mut cfg = purpose_gate::config::Config::load(&demo.join("config.toml")).unwrap();
    let secret = std::fs::read(demo.join("zgw.secret")).unwrap();
    let text = std::fs::read_to_string(demo.join("zaken.json")).unwrap();
    let data = zaken::ZakenData::from_json(
        &serde_json::from_str(&text).unwrap(),
        CLIENT_ID,
        secret.trim_ascii(),
    )
    .unwrap();
    let (addr, task) = zaken::spawn(data).await.unwrap();
    cfg.cases.zgw_url = Some(zaken::base_url(addr));
    let reg = ZgwCases::from_config(&cfg.cases).unwrap();
    let case = reg.find("Z-2026-000123").await.unwrap().unwrap();
    assert_eq!(case.case_type, "parkeervergunning");
    assert_eq!(case.organization, "0363");
    assert_eq!(case.handlers, vec!["emp-042"]);
    assert_eq!(case.subjects, vec!["999993653"]);
    assert_eq!(case.vehicles, vec!["XX999X"]);
    let other = reg.find("Z-2026-000404").await.unwrap().unwrap();
    assert_eq!(other.organization, "0599");
    let closed = reg.find("Z-2026-000087").await.unwrap().unwrap();
    assert_eq!(closed.status, CaseStatus::Closed);
    task.abort();
}

#[tokio::test]
async fn more_than_the_page_limit_is_an_error_not_a_partial_case() {
    let rollen: Vec<Value> = (0..=purpose_gate::zgw::MAX_PAGES)
        .map(|i| behandelaar(&format!("emp-{i:03}")))
        .collect();
    let doc = json!({"zaken": [{"identificatie": "Z-HUGE", "bronorganisatie": RSIN,
        "zaaktype": ZAAKTYPE_PV, "startdatum": day(-1), "rollen": rollen, "zaakobjecten": []}]});
    let data = zaken::ZakenData::from_json(&doc, CLIENT_ID, SECRET).unwrap();
    data.set_page_size(1);
    let (addr, task) = zaken::spawn(data.clone()).await.unwrap();
    let api = Api { data, addr, task };
    let reg = registry(&api, |_| {}).await;
    let err = reg.find("Z-HUGE").await.unwrap_err();
    assert!(
        matches!(err, ZgwError::TooManyPages { max: 50, .. }),
        "{err}"
    );
    assert_eq!(api.data.requests("rollen"), 50);
}
