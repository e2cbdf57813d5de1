//! The gate with its cases from a ZGW Zaken API: the real gate on 127.0.0.1:0, the example Zaken
//! API (examples/common/zaken.rs) as case registry and the example registry as upstream, all over
//! real HTTP. Every refusal is a problem+json answer with its code, a durable decision record and
//! nothing forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;
#[path = "../examples/common/zaken.rs"]
mod zaken;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{Days, Utc};
use common::{Answer, Harness, Options, raadpleeg};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const CLIENT_ID: &str = "purpose-gate";
const SECRET: &[u8] = b"zgw-gate-test-secret-0123456789abcdef";
const ZAAKTYPE_PV: &str = "https://catalogi.example/catalogi/api/v1/zaaktypen/6a1f-pv";
/// RSIN of the municipality whose employees have organisation code 0363.
const RSIN: &str = "002564440";

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
           "betrokkeneIdentificatie": {"identificatie": emp}})
}

fn persoon(bsn: &str, rol: &str) -> Value {
    json!({"betrokkeneType": "natuurlijk_persoon", "omschrijvingGeneriek": rol,
           "betrokkeneIdentificatie": {"inpBsn": bsn}})
}

fn open_zaak(id: &str, rollen: Vec<Value>) -> Value {
    json!({"identificatie": id, "bronorganisatie": RSIN, "zaaktype": ZAAKTYPE_PV,
           "startdatum": day(-10), "einddatum": null, "einddatumGepland": day(30),
           "rollen": rollen, "zaakobjecten": []})
}

/// The zaken of these tests. With two results per page, the behandelaar of `Z-OPEN` is on the
/// second page of its rollen, so an allow proves that the gate followed `next`.
fn zaken_doc() -> Value {
    let mut z_open = open_zaak(
        "Z-OPEN",
        vec![
            persoon("999991802", "belanghebbende"),
            json!({"betrokkeneType": "medewerker", "omschrijvingGeneriek": "adviseur",
                   "betrokkeneIdentificatie": {"identificatie": "emp-900"}}),
            persoon("999993653", "initiator"),
            behandelaar("emp-042"),
        ],
    );
    z_open["zaakobjecten"] = json!([
        {"objectType": "overige", "objectTypeOverige": "vaartuig",
         "objectIdentificatie": {"overigeData": {"kenteken": "AB123C"}}},
        {"objectType": "overige", "objectTypeOverige": "kenteken",
         "objectIdentificatie": {"overigeData": {"kenteken": "xx-999-x"}}}
    ]);
    let mut z_closed = open_zaak(
        "Z-CLOSED",
        vec![behandelaar("emp-042"), persoon("999993653", "initiator")],
    );
    z_closed["startdatum"] = json!(day(-40));
    z_closed["einddatum"] = json!(day(-2));
    json!({"zaken": [
        z_open,
        z_closed,
        open_zaak("Z-TO-CLOSE", vec![behandelaar("emp-042"), persoon("999993653", "initiator")]),
        open_zaak("Z-SHARED", vec![behandelaar("emp-042"), persoon("999993653", "initiator")]),
    ]})
}

/// The example Zaken API on 127.0.0.1:0; stopped when dropped.
struct Api {
    data: zaken::ZakenData,
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Api {
    async fn start() -> Api {
        let data = zaken::ZakenData::from_json(&zaken_doc(), CLIENT_ID, SECRET).unwrap();
        let (addr, task) = zaken::spawn(data.clone()).await.unwrap();
        Api {
            data,
            addr,
            task: Some(task),
        }
    }

    /// Stops serving: the listener and every open connection are closed.
    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// The `url` the API itself gives the zaak (`GET /zaken?identificatie=…` with a ZGW JWT).
    async fn zaak_url(&self, identificatie: &str) -> String {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"iss": CLIENT_ID, "client_id": CLIENT_ID, "iat": Utc::now().timestamp()}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let uri = format!(
            "{}/zaken?identificatie={identificatie}",
            zaken::base_url(self.addr)
        );
        let req = http::Request::get(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("accept-crs", "EPSG:4326")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let page: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(page["count"], 1, "{page}");
        page["results"][0]["url"].as_str().unwrap().to_string()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// The `[cases]` table pointing at the example Zaken API at `url`.
fn cases_table(url: &str, cache_ttl: &str, timeout: &str) -> String {
    format!(
        r#"zgw_url = "{url}"
zgw_client_id = "{CLIENT_ID}"
zgw_secret_file = "zgw.secret"
cache_ttl = "{cache_ttl}"
timeout = "{timeout}"
vehicle_object_type = "kenteken"
[cases.zaaktypen]
"{ZAAKTYPE_PV}" = "parkeervergunning"
[cases.organisaties]
"{RSIN}" = "0363"
"#
    )
}

async fn gate(url: &str, cache_ttl: &str, timeout: &str) -> Harness {
    // The secret file ends in a newline, as an editor writes it; the gate ignores it.
    let mut secret = SECRET.to_vec();
    secret.push(b'\n');
    Harness::start_with(Options {
        cases: Some(cases_table(url, cache_ttl, timeout)),
        files: vec![("zgw.secret".into(), secret)],
        ..Options::default()
    })
    .await
}

fn request_id(a: &Answer) -> String {
    a.headers["x-request-id"].to_str().unwrap().to_string()
}

/// A refusal with `status` and `code`: problem+json, one decision record (deny, the code, the
/// case), nothing forwarded. Returns the record.
fn assert_refused(
    h: &Harness,
    a: &Answer,
    forwarded_before: u64,
    status: u16,
    code: &str,
    case: &str,
) -> Value {
    assert_eq!(a.status, status, "{:?}", a.json());
    assert_eq!(a.code(), code, "{:?}", a.json());
    assert!(a.is_problem());
    assert_eq!(
        h.registry.seen_count(),
        forwarded_before,
        "nothing forwarded for {code}"
    );
    let recs = h.records_of(&request_id(a));
    assert_eq!(
        recs.len(),
        1,
        "one decision record and no outcome: {recs:?}"
    );
    let d = &recs[0];
    assert_eq!(d["kind"], "decision");
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["code"], code);
    assert_eq!(d["case_id"], case);
    d.clone()
}

#[tokio::test]
async fn behandelaar_on_an_open_zaak_naming_the_person_is_allowed_and_the_record_has_the_zaak_url()
{
    let api = Api::start().await;
    let h = gate(&zaken::base_url(api.addr), "30s", "2s").await;
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam", "burgerservicenummer"]),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["personen"][0]["burgerservicenummer"], "999993653");
    assert_eq!(h.registry.seen_count(), 1, "forwarded once");
    assert!(
        api.data.requests("rollen") >= 2,
        "the behandelaar is on the second page of rollen"
    );
    assert_eq!(
        api.data.rejected_tokens(),
        0,
        "the gate's ZGW JWT is accepted"
    );

    let recs = h.records_of(&request_id(&a));
    assert_eq!(recs.len(), 2, "decision + outcome: {recs:?}");
    let d = &recs[0];
    assert_eq!(d["kind"], "decision");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["case_id"], "Z-OPEN");
    let url = api.zaak_url("Z-OPEN").await;
    assert!(url.starts_with(&format!("http://{}/zaken/api/v1/zaken/", api.addr)));
    assert_eq!(d["case_url"], url.as_str(), "the zaak URL of the Zaken API");
    assert_eq!(recs[1]["kind"], "outcome");
    assert_eq!(recs[1]["status"], 200);

    // The record as the auditor tooling reads it carries the URL too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .args([
            "audit", "query", "--format", "json", "--case", "Z-OPEN", "--dir",
        ])
        .arg(&h.audit_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row: Value = serde_json::from_str(text.lines().next().unwrap_or("")).unwrap();
    assert_eq!(row["case_id"], "Z-OPEN");
    assert_eq!(row["case_url"], url.as_str(), "{text}");
}

#[tokio::test]
async fn vehicles_come_from_the_zaakobjecten_of_the_configured_object_type() {
    let api = Api::start().await;
    let h = gate(&zaken::base_url(api.addr), "30s", "2s").await;
    let auth = format!("Bearer {}", h.emp042());
    let hd = [("authorization", auth.as_str()), ("x-case-id", "Z-OPEN")];
    let a = h
        .send("GET", "/rdw/voertuigen/XX-999-X/tenaamstelling", &hd, None)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(
        h.registry.last_seen().unwrap().path,
        "/voertuigen/XX999X/tenaamstelling"
    );
    // AB123C is a zaakobject of type `vaartuig`, not `kenteken`.
    let before = h.registry.seen_count();
    let a = h
        .send("GET", "/rdw/voertuigen/AB123C/tenaamstelling", &hd, None)
        .await;
    assert_refused(&h, &a, before, 403, "vehicleNotInCase", "Z-OPEN");
}

#[tokio::test]
async fn non_handler_closed_zaak_person_not_in_rollen_and_unknown_zaak_are_denied() {
    let api = Api::start().await;
    let h = gate(&zaken::base_url(api.addr), "30s", "2s").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let before = h.registry.seen_count();

    // emp-900 is a medewerker of the zaak, but an adviseur, not a behandelaar.
    let adviseur = h.token("emp-900", "0363", &["vergunningverlener"]);
    let a = h.brp(&adviseur, Some("Z-OPEN"), &q).await;
    let d = assert_refused(&h, &a, before, 403, "notCaseHandler", "Z-OPEN");
    assert_eq!(d["case_url"], api.zaak_url("Z-OPEN").await.as_str());

    let a = h.brp(&h.emp042(), Some("Z-CLOSED"), &q).await;
    let d = assert_refused(&h, &a, before, 403, "caseClosed", "Z-CLOSED");
    assert_eq!(d["case_url"], api.zaak_url("Z-CLOSED").await.as_str());

    // 999993872 exists in the BRP but is not a betrokkene of the zaak.
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993872"], &["naam"]),
        )
        .await;
    assert_refused(&h, &a, before, 403, "subjectNotInCase", "Z-OPEN");

    let a = h.brp(&h.emp042(), Some("Z-2026-999999"), &q).await;
    let d = assert_refused(&h, &a, before, 403, "caseNotFound", "Z-2026-999999");
    assert!(d.get("case_url").is_none(), "an unknown zaak has no URL");

    // The same requests of the one employee who may: allowed (the denials were about the case).
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
}

#[tokio::test]
async fn zaken_api_failing_or_down_means_503_audited_and_nothing_forwarded() {
    let mut api = Api::start().await;
    // No caching, so that every request asks the Zaken API.
    let h = gate(&zaken::base_url(api.addr), "0s", "2s").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let before = h.registry.seen_count();

    // The Zaken API answers 500.
    api.data
        .set_failure(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_refused(&h, &a, before, 503, "caseRegistryUnavailable", "Z-OPEN");
    assert!(a.headers.contains_key("retry-after"));

    // Errors are not cached: the API recovers, the gate serves again.
    api.data.set_failure(None);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let before = h.registry.seen_count();

    // The Zaken API is gone (connection refused).
    api.stop().await;
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_refused(&h, &a, before, 503, "caseRegistryUnavailable", "Z-OPEN");
    let a = h.brp(&h.emp042(), Some("Z-CLOSED"), &q).await;
    assert_refused(&h, &a, before, 503, "caseRegistryUnavailable", "Z-CLOSED");
}

#[tokio::test]
async fn a_slow_zaken_api_means_503_within_the_timeout() {
    let api = Api::start().await;
    let h = gate(&zaken::base_url(api.addr), "30s", "300ms").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    api.data.set_delay(Duration::from_secs(10));
    let started = Instant::now();
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    let took = started.elapsed();
    assert_refused(&h, &a, 0, 503, "caseRegistryUnavailable", "Z-OPEN");
    assert!(
        took < Duration::from_millis(2300),
        "answered after {took:?}, the Zaken API would take 10s and the timeout is 300ms"
    );
    assert!(api.data.requests("zaken") >= 1, "the gate did ask");

    // A timeout is not cached either.
    api.data.set_delay(Duration::ZERO);
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
}

#[tokio::test]
async fn a_zaak_closed_in_the_zaken_api_is_denied_within_one_ttl() {
    const TTL: Duration = Duration::from_secs(1);
    let api = Api::start().await;
    let h = gate(&zaken::base_url(api.addr), "1s", "2s").await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    let started = Instant::now();
    let a = h.brp(&h.emp042(), Some("Z-TO-CLOSE"), &q).await;
    // The cache entry was made before this answer: its TTL ends before `answered + TTL`.
    let answered = Instant::now();
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(api.data.requests("zaken"), 1);

    assert!(api.data.close_zaak("Z-TO-CLOSE", &day(0)));
    let a = h.brp(&h.emp042(), Some("Z-TO-CLOSE"), &q).await;
    if started.elapsed() < TTL {
        // Answered within the TTL of the first fetch: from the cache, without asking again.
        assert_eq!(a.status, 200, "{:?}", a.json());
        assert_eq!(api.data.requests("zaken"), 1, "served from the cache");
    }

    // One TTL after the first fetch the closure is seen (measured from the first answer, not
    // from the first send: on a loaded machine the fetch itself can take a while).
    tokio::time::sleep(TTL.saturating_sub(answered.elapsed()) + Duration::from_millis(50)).await;
    let before = h.registry.seen_count();
    let a = h.brp(&h.emp042(), Some("Z-TO-CLOSE"), &q).await;
    let d = assert_refused(&h, &a, before, 403, "caseClosed", "Z-TO-CLOSE");
    assert_eq!(api.data.requests("zaken"), 2, "fetched again after the TTL");
    assert_eq!(d["case_url"], api.zaak_url("Z-TO-CLOSE").await.as_str());
}

#[tokio::test]
async fn concurrent_requests_for_one_zaak_share_one_fetch() {
    let api = Api::start().await;
    let h = Arc::new(gate(&zaken::base_url(api.addr), "30s", "2s").await);
    // Slow enough that all requests arrive while the first fetch is under way.
    api.data.set_delay(Duration::from_millis(300));
    let token = h.emp042();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (h, token) = (Arc::clone(&h), token.clone());
        tasks.spawn(async move {
            h.brp(
                &token,
                Some("Z-SHARED"),
                &raadpleeg(&["999993653"], &["naam"]),
            )
            .await
            .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(
        api.data.requests("zaken"),
        1,
        "one GET /zaken for 8 requests"
    );
    assert_eq!(h.registry.seen_count(), 8);
}
