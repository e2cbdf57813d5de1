//! The example registry over real HTTP, and the consistency of the demo data it ships with
//! (persons, vehicles, cases, keys, config).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/foutbericht.rs"]
mod foutbericht;
#[path = "../examples/common/registry.rs"]
mod registry;
#[path = "../examples/common/tokens.rs"]
mod tokens;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use registry::RegistryData;

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data"))
}

fn demo_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo"))
}

fn load() -> RegistryData {
    registry::load_data(data_dir()).unwrap()
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    // The gate passes the registry's 4xx on: each must be a Haal Centraal Foutbericht too.
    if foutbericht::is_problem_type(content_type.as_bytes()) {
        foutbericht::assert_valid(status.as_u16(), &bytes, path);
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        content_type,
        body,
    }
}

async fn personen(addr: SocketAddr, query: Value) -> Answer {
    send(
        addr,
        Method::POST,
        "/personen",
        &[("content-type", "application/json")],
        query.to_string().as_bytes(),
    )
    .await
}

fn bsns_of(answer: &Answer) -> BTreeSet<String> {
    answer.body["personen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["burgerservicenummer"].as_str().unwrap().to_string())
        .collect()
}

fn assert_problem(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["status"], status);
    assert_eq!(a.body["code"], code, "{}", a.body);
    for key in ["type", "title", "detail", "instance"] {
        assert!(a.body[key].is_string(), "missing `{key}` in {}", a.body);
    }
}

fn invalid_param_names(a: &Answer) -> Vec<String> {
    a.body["invalidParams"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn nested_field_returns_only_that_sub_field() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let a = personen(
        addr,
        json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"],
               "fields": ["naam.voornamen"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type.starts_with("application/json"));
    assert_eq!(
        a.body,
        json!({"type": "RaadpleegMetBurgerservicenummer",
               "personen": [{"naam": {"voornamen": "Suzanne Maria"}}]})
    );
}

#[tokio::test]
async fn whole_object_field_and_unknown_bsn_is_absent() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    // 999990226 passes the 11-proef but is not in the data.
    let a = personen(
        addr,
        json!({"type": "RaadpleegMetBurgerservicenummer",
               "burgerservicenummer": ["999990226", "999991802"],
               "fields": ["burgerservicenummer", "naam", "verblijfplaats.verblijfadres.postcode"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let personen = a.body["personen"].as_array().unwrap();
    assert_eq!(personen.len(), 1);
    let p = &personen[0];
    assert_eq!(p["burgerservicenummer"], "999991802");
    assert_eq!(p["naam"]["geslachtsnaam"], "Jansen");
    assert_eq!(p["naam"]["voorletters"], "H.");
    assert_eq!(
        p["verblijfplaats"],
        json!({"type": "Adres", "verblijfadres": {"postcode": "1094HH"}})
    );
    let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["burgerservicenummer", "naam", "verblijfplaats"])
    );
}

#[tokio::test]
async fn leeftijd_is_computed_and_partners_disclose_their_bsn() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let a = personen(
        addr,
        json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"],
               "fields": ["leeftijd", "partners.burgerservicenummer"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let p = &a.body["personen"][0];
    assert!(p["leeftijd"].as_u64().unwrap() >= 46, "{p}");
    assert_eq!(p["partners"], json!([{"burgerservicenummer": "999990007"}]));
}

#[tokio::test]
async fn search_by_name_and_birth_date_is_case_insensitive() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let query = |extra: Value| {
        let mut q = json!({"type": "ZoekMetGeslachtsnaamEnGeboortedatum",
                           "geslachtsnaam": "BOER", "geboortedatum": "1970-03-03",
                           "fields": ["burgerservicenummer", "naam"]});
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        q
    };
    let a = personen(addr, query(json!({}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["type"], "ZoekMetGeslachtsnaamEnGeboortedatum");
    assert_eq!(
        bsns_of(&a),
        BTreeSet::from(["999990093".to_string(), "999990111".to_string()])
    );
    // Searches answer PersoonBeperkt: `naam` without `aanduidingNaamgebruik`.
    for p in a.body["personen"].as_array().unwrap() {
        assert!(p["naam"]["voornamen"].is_string());
        assert!(p["naam"].get("aanduidingNaamgebruik").is_none(), "{p}");
    }
    let a = personen(addr, query(json!({"gemeenteVanInschrijving": "0599"}))).await;
    assert_eq!(bsns_of(&a), BTreeSet::from(["999990111".to_string()]));
    let a = personen(addr, query(json!({"geslachtsnaam": "boe*"}))).await;
    assert_eq!(bsns_of(&a).len(), 2);
    let a = personen(addr, query(json!({"geboortedatum": "1970-03-04"}))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["personen"], json!([]));
}

#[tokio::test]
async fn search_by_postcode_and_huisnummer_honours_huisletter_and_deceased() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let fields = json!(["burgerservicenummer"]);
    let a = personen(
        addr,
        json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1053 dz", "huisnummer": 12,
               "fields": fields}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        bsns_of(&a),
        BTreeSet::from(["999990639".to_string(), "999990020".to_string()])
    );
    let a = personen(
        addr,
        json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1053DZ", "huisnummer": 12,
               "huisletter": "a", "fields": fields}),
    )
    .await;
    assert_eq!(bsns_of(&a), BTreeSet::from(["999990639".to_string()]));
    // Javastraat 88: two living persons and one deceased.
    let a = personen(
        addr,
        json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1094HH", "huisnummer": 88,
               "fields": fields}),
    )
    .await;
    assert_eq!(
        bsns_of(&a),
        BTreeSet::from(["999991802".to_string(), "999993872".to_string()])
    );
    let a = personen(
        addr,
        json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1094HH", "huisnummer": 88,
               "inclusiefOverledenPersonen": true, "fields": fields}),
    )
    .await;
    assert_eq!(bsns_of(&a).len(), 3);
}

#[tokio::test]
async fn street_name_and_bag_id_searches_find_the_residents() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let fields = json!(["burgerservicenummer"]);
    let a = personen(
        addr,
        json!({"type": "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving", "straat": "coolsingel",
               "huisnummer": 40, "gemeenteVanInschrijving": "0599", "fields": fields}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(bsns_of(&a).len(), 3);
    let a = personen(
        addr,
        json!({"type": "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving", "straat": "Coolsingel",
               "huisnummer": 40, "gemeenteVanInschrijving": "0363", "fields": fields}),
    )
    .await;
    assert_eq!(a.body["personen"], json!([]));
    let a = personen(
        addr,
        json!({"type": "ZoekMetNaamEnGemeenteVanInschrijving", "geslachtsnaam": "öztürk",
               "voornamen": "Yus*", "gemeenteVanInschrijving": "0363", "fields": fields}),
    )
    .await;
    assert_eq!(bsns_of(&a), BTreeSet::from(["999990056".to_string()]));
    let a = personen(
        addr,
        json!({"type": "ZoekMetNummeraanduidingIdentificatie",
               "nummeraanduidingIdentificatie": "0363200000012011", "fields": fields}),
    )
    .await;
    assert_eq!(bsns_of(&a), BTreeSet::from(["999990639".to_string()]));
    let a = personen(
        addr,
        json!({"type": "ZoekMetAdresseerbaarObjectIdentificatie",
               "adresseerbaarObjectIdentificatie": "0599010000040001", "fields": fields}),
    )
    .await;
    assert_eq!(bsns_of(&a).len(), 3);
    // A required parameter missing is named.
    let a = personen(
        addr,
        json!({"type": "ZoekMetNaamEnGemeenteVanInschrijving", "geslachtsnaam": "Boer",
               "gemeenteVanInschrijving": "0363", "fields": fields}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(invalid_param_names(&a), ["voornamen"]);
}

#[tokio::test]
async fn oversized_body_is_refused_but_still_logged() {
    let data = load();
    let (addr, _task) = registry::spawn(data.clone()).await.unwrap();
    let big = vec![b' '; registry::MAX_BODY_BYTES + 1];
    let a = send(
        addr,
        Method::POST,
        "/personen",
        &[("content-type", "application/json")],
        &big,
    )
    .await;
    assert_problem(&a, 413, "tooLarge");
    assert_eq!(data.seen()[0].path, "/personen");
}

#[tokio::test]
async fn search_refuses_fields_outside_persoon_beperkt() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let a = personen(
        addr,
        json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1017CB", "huisnummer": 502,
               "fields": ["naam", "verblijfplaats"]}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(invalid_param_names(&a), ["fields.1"]);
}

#[tokio::test]
async fn bad_brp_requests_get_a_foutbericht_naming_each_parameter() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();

    let a = personen(
        addr,
        json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"]}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(invalid_param_names(&a), ["fields"]);
    assert_eq!(a.body["invalidParams"][0]["code"], "required");
    assert!(
        a.body["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("urn:uuid:")),
        "{}",
        a.body
    );

    let a = personen(
        addr,
        json!({"type": "ZoekMetSchoenmaat", "fields": ["naam"]}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(invalid_param_names(&a), ["type"]);

    let a = personen(
        addr,
        json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["12345", 7],
               "fields": ["naam", "geheimhoudingPersoonsgegevens", "schoenmaat"],
               "gebruiker": "emp-042"}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    let names: BTreeSet<String> = invalid_param_names(&a).into_iter().collect();
    let expected: BTreeSet<String> = [
        "fields.1",
        "fields.2",
        "gebruiker",
        "burgerservicenummer.0",
        "burgerservicenummer.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, expected);

    let too_many: Vec<String> = (0..21).map(|_| "999993653".to_string()).collect();
    let a = personen(
        addr,
        json!({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": too_many,
               "fields": ["naam"]}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(a.body["invalidParams"][0]["code"], "maxItems");

    let a = personen(
        addr,
        json!({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1017CB", "huisnummer": "502",
               "fields": ["naam"]}),
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(invalid_param_names(&a), ["huisnummer"]);
    assert_eq!(a.body["invalidParams"][0]["code"], "integer");

    let a = send(
        addr,
        Method::POST,
        "/personen",
        &[("content-type", "application/json")],
        b"{\"type\": ",
    )
    .await;
    assert_problem(&a, 400, "paramsValidation");

    let a = send(
        addr,
        Method::POST,
        "/personen",
        &[("content-type", "text/plain")],
        b"{}",
    )
    .await;
    assert_problem(&a, 415, "unsupported");

    let a = send(addr, Method::GET, "/personen", &[], b"").await;
    assert_problem(&a, 405, "methodNotAllowed");
}

#[tokio::test]
async fn vehicle_facts_carry_no_person_data() {
    let data = load();
    let (addr, _task) = registry::spawn(data.clone()).await.unwrap();
    let a = send(addr, Method::GET, "/voertuigen/XX999X", &[], b"").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["kenteken"], "XX999X");
    assert_eq!(a.body["merk"], "VOLKSWAGEN");
    assert_eq!(a.body["handelsbenaming"], "GOLF");
    assert_eq!(a.body["eersteKleur"], "GRIJS");
    assert_eq!(a.body["datumEersteToelating"], "2019-05-14");
    let text = a.body.to_string();
    assert!(!text.contains("999993653"), "{text}");
    assert!(!text.contains("tenaamstelling"), "{text}");
    assert!(!text.contains("Dijk"), "{text}");
}

#[tokio::test]
async fn tenaamstelling_names_the_holder_with_bsn_and_address() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let a = send(
        addr,
        Method::GET,
        "/voertuigen/XX999X/tenaamstelling",
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["kenteken"], "XX999X");
    assert_eq!(a.body["burgerservicenummer"], "999993653");
    assert_eq!(a.body["naam"]["voorvoegsel"], "van");
    assert_eq!(a.body["naam"]["geslachtsnaam"], "Dijk");
    assert_eq!(
        a.body["adres"],
        json!({"straat": "Herengracht", "huisnummer": 502, "postcode": "1017CB",
               "woonplaats": "Amsterdam"})
    );
}

#[tokio::test]
async fn unknown_or_malformed_vehicle_and_unknown_path_are_problems() {
    let (addr, _task) = registry::spawn(load()).await.unwrap();
    let a = send(addr, Method::GET, "/voertuigen/ZZ000Z", &[], b"").await;
    assert_problem(&a, 404, "notFound");
    let a = send(
        addr,
        Method::GET,
        "/voertuigen/ZZ000Z/tenaamstelling",
        &[],
        b"",
    )
    .await;
    assert_problem(&a, 404, "notFound");
    let a = send(addr, Method::GET, "/voertuigen/xx-999-x", &[], b"").await;
    assert_problem(&a, 400, "paramsValidation");
    assert_eq!(invalid_param_names(&a), ["kenteken"]);
    let a = send(addr, Method::GET, "/voertuigen/XX999X/apk", &[], b"").await;
    assert_problem(&a, 404, "notFound");
    let a = send(addr, Method::GET, "/elders", &[], b"").await;
    assert_problem(&a, 404, "notFound");
    let a = send(
        addr,
        Method::GET,
        "/elders",
        &[("x-request-id", "0190f3a2-7c4e-7d21-9b3a-5e6f70819203")],
        b"",
    )
    .await;
    assert_problem(&a, 404, "notFound");
    assert_eq!(
        a.body["instance"], "urn:uuid:0190f3a2-7c4e-7d21-9b3a-5e6f70819203",
        "the gate's request id names the registry's problem"
    );
    let a = send(addr, Method::DELETE, "/voertuigen/XX999X", &[], b"").await;
    assert_problem(&a, 405, "methodNotAllowed");
}

#[tokio::test]
async fn request_log_records_method_path_headers_and_body() {
    let data = load();
    let (addr, _task) = registry::spawn(data.clone()).await.unwrap();
    assert!(data.seen().is_empty());
    let body = json!({"type": "RaadpleegMetBurgerservicenummer",
                      "burgerservicenummer": ["999993653"], "fields": ["naam"]})
    .to_string();
    let a = send(
        addr,
        Method::POST,
        "/personen",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "req-1"),
            ("x-doelbinding", "BRPACT-Parkeervergunning"),
            ("x-api-key", "upstream-key"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let _ = send(addr, Method::GET, "/voertuigen/AB123C?x=1", &[], b"").await;

    let seen = data.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(data.seen_count(), 2);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/personen");
    assert_eq!(seen[0].header("X-Request-Id"), Some("req-1"));
    assert_eq!(
        seen[0].header("x-doelbinding"),
        Some("BRPACT-Parkeervergunning")
    );
    assert_eq!(seen[0].header("x-api-key"), Some("upstream-key"));
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[0].body.as_ref(), body.as_bytes());
    assert_eq!(seen[0].body_json().unwrap()["fields"], json!(["naam"]));
    assert_eq!(seen[1].method, Method::GET);
    assert_eq!(seen[1].path, "/voertuigen/AB123C");
    assert_eq!(seen[1].query.as_deref(), Some("x=1"));
    assert_eq!(data.last_seen().unwrap().path, "/voertuigen/AB123C");
    data.clear_seen();
    assert!(data.seen().is_empty());
}

#[tokio::test]
async fn log_limit_keeps_only_the_most_recent_requests() {
    let data = load().with_log_limit(1);
    let (addr, _task) = registry::spawn(data.clone()).await.unwrap();
    let _ = send(addr, Method::GET, "/voertuigen/AB123C", &[], b"").await;
    let _ = send(addr, Method::GET, "/voertuigen/XX999X", &[], b"").await;
    let seen = data.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/voertuigen/XX999X");
    assert_eq!(data.seen_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_runs_before_the_request_is_answered() {
    let (arrived_tx, arrived_rx) = mpsc::channel::<(String, usize)>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let release_rx = Mutex::new(release_rx);
    let data = load();
    let log = data.seen_log();
    let data = data.with_on_request(Arc::new(move |r: &registry::SeenRequest| {
        let in_log = log.lock().unwrap().entries().count();
        arrived_tx
            .lock()
            .unwrap()
            .send((r.path.clone(), in_log))
            .unwrap();
        // Hold the answer until the test has looked.
        release_rx.lock().unwrap().recv().unwrap();
    }));
    let (addr, _task) = registry::spawn(data).await.unwrap();
    let request = tokio::spawn(send(addr, Method::GET, "/voertuigen/XX999X", &[], b""));
    let (path, in_log) = tokio::task::spawn_blocking(move || arrived_rx.recv().unwrap())
        .await
        .unwrap();
    assert_eq!(path, "/voertuigen/XX999X");
    assert_eq!(in_log, 1, "the request is in the log when the hook runs");
    assert!(
        !request.is_finished(),
        "the answer must wait for the hook to return"
    );
    release_tx.send(()).unwrap();
    let a = request.await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn aborting_the_serve_task_stops_the_registry() {
    let (addr, task) = registry::spawn(load()).await.unwrap();
    let a = send(addr, Method::GET, "/voertuigen/XX999X", &[], b"").await;
    assert_eq!(a.status, StatusCode::OK);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// The shipped data.

#[test]
fn person_data_has_valid_bsns_in_two_municipalities_with_shared_addresses() {
    let data = load();
    let bsns = data.bsns();
    assert!((18..=25).contains(&bsns.len()), "{}", bsns.len());
    for b in ["999993653", "999990639", "999991802", "999993872"] {
        assert!(bsns.contains(&b), "RvIG test BSN {b} missing");
    }
    assert!(bsns.iter().all(|b| registry::bsn_is_valid(b)));
    let mut gemeenten = BTreeSet::new();
    let mut addresses = std::collections::BTreeMap::<String, usize>::new();
    for b in &bsns {
        let p = data.person(b).unwrap();
        gemeenten.insert(p["gemeenteVanInschrijving"]["code"].as_str().unwrap());
        assert_eq!(p["geboorte"]["datum"]["type"], "Datum", "{b}");
        assert!(p["naam"]["geslachtsnaam"].is_string(), "{b}");
        assert!(
            p["nationaliteiten"]
                .as_array()
                .is_some_and(|n| !n.is_empty())
        );
        let va = &p["verblijfplaats"]["verblijfadres"];
        *addresses
            .entry(format!("{}-{}", va["postcode"], va["huisnummer"]))
            .or_default() += 1;
    }
    assert_eq!(gemeenten, BTreeSet::from(["0363", "0599"]));
    assert!(addresses.values().filter(|n| **n >= 2).count() >= 3);
}

#[test]
fn every_vehicle_holder_is_a_known_person() {
    let data = load();
    let kentekens = data.kentekens();
    assert!(kentekens.len() >= 8);
    assert!(kentekens.contains(&"XX999X") && kentekens.contains(&"AB123C"));
    for k in kentekens {
        let holder = data.vehicle(k).unwrap()["tenaamstelling"]["burgerservicenummer"]
            .as_str()
            .unwrap();
        assert!(data.person(holder).is_some(), "{k}: holder {holder}");
    }
}

#[test]
fn load_data_refuses_a_bad_bsn_and_an_unknown_holder() {
    let err = RegistryData::from_json(
        &json!({"personen": [{"burgerservicenummer": "999993654"}]}),
        &json!({"voertuigen": []}),
    )
    .unwrap_err();
    assert!(err.contains("999993654"), "{err}");
    let err = RegistryData::from_json(
        &json!({"personen": [{"burgerservicenummer": "999993653"}]}),
        &json!({"voertuigen": [{"kenteken": "XX999X",
                                "tenaamstelling": {"burgerservicenummer": "999991802"}}]}),
    )
    .unwrap_err();
    assert!(err.contains("999991802"), "{err}");
    let err = registry::load_data(Path::new("/nonexistent-dir")).unwrap_err();
    assert!(err.contains("personen.json"), "{err}");
}

#[derive(serde::Deserialize)]
struct CaseFile {
    cases: Vec<purpose_gate::model::Case>,
}

#[test]
fn demo_cases_parse_as_cases_and_name_known_persons_and_vehicles() {
    let text = std::fs::read_to_string(demo_dir().join("cases.json")).unwrap();
    let file: CaseFile = serde_json::from_str(&text).unwrap();
    let data = load();
    assert!(file.cases.len() >= 6);
    let mut ids = BTreeSet::new();
    for c in &file.cases {
        assert!(ids.insert(c.id.clone()), "duplicate case {}", c.id);
        assert!(
            ["parkeervergunning", "handhaving", "burgerzaken"].contains(&c.case_type.as_str()),
            "{}",
            c.id
        );
        for s in &c.subjects {
            assert!(data.person(s).is_some(), "{}: subject {s}", c.id);
        }
        for v in &c.vehicles {
            assert!(data.vehicle(v).is_some(), "{}: vehicle {v}", c.id);
        }
    }
    let main = file.cases.iter().find(|c| c.id == "Z-2026-000123").unwrap();
    assert_eq!(main.status, purpose_gate::model::CaseStatus::Open);
    assert_eq!(main.handlers, ["emp-042"]);
    assert_eq!(main.subjects, ["999993653"]);
    assert_eq!(main.vehicles, ["XX999X"]);
    assert!(
        file.cases
            .iter()
            .any(|c| c.status == purpose_gate::model::CaseStatus::Closed)
    );
    assert!(file.cases.iter().any(|c| c.organization == "0599"));
}

#[test]
fn demo_config_loads() {
    let cfg = purpose_gate::config::Config::load(&demo_dir().join("config.toml")).unwrap();
    assert_eq!(cfg.auth.audience, tokens::DEMO_AUDIENCE);
    assert_eq!(cfg.auth.issuer, tokens::DEMO_ISSUER);
    assert_eq!(
        cfg.auth.jwks_file.as_deref(),
        Some(demo_dir().join("keys/jwks.json").as_path())
    );
    // BRP Personen, BRP Bewoning, RDW vehicle and holder.
    assert_eq!(cfg.effective_routes().len(), 4);
}

#[test]
fn minted_demo_token_verifies_with_the_demo_jwks() {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    let pem = std::fs::read(demo_dir().join("keys/demo-signing-key.pem")).unwrap();
    assert!(
        pem.starts_with(b"-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM"
    );
    let jwks: JwkSet =
        serde_json::from_slice(&std::fs::read(demo_dir().join("keys/jwks.json")).unwrap()).unwrap();
    let jwk = jwks.find(tokens::DEMO_KID).unwrap();
    let claims = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0363",
        &["vergunningverlener"],
        300,
    );
    let token = tokens::mint(&pem, tokens::DEMO_KID, &claims).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(tokens::DEMO_KID));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[tokens::DEMO_ISSUER]);
    validation.set_audience(&[tokens::DEMO_AUDIENCE]);
    let decoded =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap();
    assert_eq!(decoded.claims["sub"], "emp-042");
    assert_eq!(decoded.claims["org"], "0363");
    assert_eq!(decoded.claims["roles"], json!(["vergunningverlener"]));
    let exp = decoded.claims["exp"].as_i64().unwrap();
    let iat = decoded.claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 300);

    // An expired token is refused by a standard verifier.
    let old = tokens::employee_claims(
        tokens::DEMO_ISSUER,
        tokens::DEMO_AUDIENCE,
        "emp-042",
        "0363",
        &[],
        -3600,
    );
    let token = tokens::mint(&pem, tokens::DEMO_KID, &old).unwrap();
    assert!(
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .is_err()
    );
    // A key that is not a PEM EC key is refused without echoing it.
    let err = tokens::mint(b"not a key", tokens::DEMO_KID, &claims).unwrap_err();
    assert!(!err.contains("not a key"), "{err}");
}
