//! The auditor console over the central PostgreSQL store (`[console] db`): two gates' logs
//! (pseudonymised, with signed checkpoints) are shipped into a fresh database; the console's
//! *Overzicht* lists both gates with their stored chain and shipping position; a BSN search finds
//! the lookups of both gates, and — once shipped — the console's own access records of that
//! person, which carry the pseudonym, never the BSN; *Signalen* is computed over both gates'
//! stored records with the reviews stored in another gate's log, and a review of another
//! gate's record is recorded with its gate; *Bewijs* builds a proof from the stored records that
//! `audit check-proof` accepts. A second test, without a database, does the pseudonymised part
//! over `[audit] dir`.
//!
//! The store test needs `PURPOSE_GATE_TEST_DATABASE_URL` (as `tests/store_scaleout.rs`): without it the test
//! says why and passes; set but unusable, it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/common/idp.rs"]
mod idp;
#[path = "common/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use purpose_gate::audit::record::*;
use purpose_gate::audit::{Record, read_records};

const URL_VAR: &str = "PURPOSE_GATE_TEST_DATABASE_URL";
const BIN: &str = env!("CARGO_BIN_EXE_purpose-gate");
const BSN: &str = "999993653";

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn decision(
    gate: &str,
    request_id: &str,
    case: &str,
    subject: &str,
    time: &str,
    break_glass: Option<&str>,
) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        inputs: None,
        time: time.into(),
        kind: DecisionKind::Decision,
        gate: gate.into(),
        request_id: request_id.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: if break_glass.is_some() {
                "emp-900"
            } else {
                "emp-042"
            }
            .into(),
            org: "gm0363".into(),
            roles: vec!["handhaver".into()],
            department: Some("Handhaving".into()),
        }),
        action: Some("brp:lookup".into()),
        resource: Some(ResourceRef {
            kind: "Person".into(),
            id: subject.into(),
        }),
        case_id: Some(case.into()),
        case_url: None,
        purpose: PurposeRecord {
            doelbinding: Some("BRPACT-Toezicht".into()),
            verwerking: None,
            break_glass: break_glass.is_some(),
            reason: break_glass.map(str::to_string),
        },
        fields: vec!["naam".into()],
        decision: Verdict::Allow,
        code: None,
        policies: vec!["permit-case-handler".into()],
        reasons: vec![],
        errors: vec![],
        request: RequestRecord {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            client_ip: None,
        },
        policy_version: None,
    }))
}

/// `decision` naming the case snapshot (type `handhaving-woonfraude`) it saw, written into
/// `dir`'s `cases/` as the gate does.
fn with_case_snapshot(dir: &Path, mut body: RecordBody) -> RecordBody {
    let RecordBody::Decision(d) = &mut body else {
        panic!("not a decision")
    };
    let case: purpose_gate::model::Case = serde_json::from_value(serde_json::json!({
        "id": d.case_id, "type": "handhaving-woonfraude", "status": "open",
        "opened": "2026-01-01T00:00:00Z", "organization": "gm0363"
    }))
    .unwrap();
    let hash = purpose_gate::audit::snapshots::CaseSnapshots::new(dir)
        .put(&purpose_gate::audit::snapshots::snapshot_bytes(&case, None))
        .unwrap();
    d.inputs = Some(DecisionInputs {
        v: 1,
        case: Some(hash),
        lookups_last_hour: 1,
        lookups_last_day: 1,
        search: None,
    });
    body
}

fn ship(dir: &Path, gate: &str, url: &str) {
    let out = Command::new(BIN)
        .args(["audit", "ship", "--dir"])
        .arg(dir)
        .args(["--db", url, "--gate", gate])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ship {gate}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `records` (then a signed checkpoint over them) to `dir` as `gate`'s log.
async fn gate_log(dir: &Path, signing_key: &Path, records: Vec<Vec<RecordBody>>) {
    let log = purpose_gate::config::AuditConfig {
        dir: dir.to_path_buf(),
        signing_key: Some(signing_key.to_path_buf()),
        checkpoint_every: 1,
        ..Default::default()
    }
    .open()
    .unwrap();
    for batch in records {
        log.append(batch).await.unwrap();
    }
    // Let a checkpoint cover the records.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    log.close().await;
}

struct Answer {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

async fn send(c: &Client, method: &str, url: &str, cookie: &str, form: Option<String>) -> Answer {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = c
        .request(
            req.body(Full::new(Bytes::from(form.unwrap_or_default())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        location,
        cookies,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Logs in as `auditor` through the example IdP, following its redirects; the session cookie.
async fn login(c: &Client, base: &str) -> String {
    let start = send(c, "GET", &format!("{base}/login"), "", None).await;
    assert_eq!(start.status, 303);
    let authorize = start.location.unwrap();
    let (endpoint, query) = authorize.split_once('?').unwrap();
    let mut form: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    form.insert("username".into(), "auditor".into());
    form.insert("password".into(), "auditor".into());
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let issued = send(c, "POST", endpoint, "", Some(form)).await;
    assert_eq!(issued.status, 303, "the IdP refused: {}", issued.body);
    let back = send(
        c,
        "GET",
        &issued.location.unwrap(),
        &start.cookies.join("; "),
        None,
    )
    .await;
    assert_eq!(back.status, 200, "callback: {}", back.body);
    back.cookies.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_every_gate_from_the_store() {
    let Ok(base_url) = std::env::var(URL_VAR) else {
        eprintln!("skipping the console over the store: {URL_VAR} is not set (see .ci/run)");
        return;
    };
    let (admin, conn) = tokio_postgres::connect(&base_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but unusable: {e}"));
    tokio::spawn(conn);
    let (prefix, db) = pg::database_beside(&base_url, "console");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .unwrap();
    let url = format!("{prefix}/{db}");
    let out = Command::new(BIN)
        .args(["store", "migrate", "--db", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "migrate failed");

    let tmp = tempfile::tempdir().unwrap();
    let (private, public) =
        purpose_gate::audit::checkpoint::keygen(&tmp.path().join("keys")).unwrap();
    // A pseudonymised log: every record names the person by pseudonym.
    std::fs::write(tmp.path().join("subject.key"), "ab".repeat(32)).unwrap();
    let key =
        purpose_gate::audit::pseudonym::SubjectKey::load(&tmp.path().join("subject.key")).unwrap();
    let pseudonym = key.pseudonymise(BSN);
    let dir_a = tmp.path().join("gate-a");
    let dir_b = tmp.path().join("gate-b");
    let first = with_case_snapshot(
        &dir_a,
        decision(
            "gate-a",
            "gate-a-r1",
            "Z-GATE-A-1",
            &pseudonym,
            "2026-03-02T09:15:00Z",
            None,
        ),
    );
    gate_log(&dir_a, &private, vec![vec![first]]).await;
    // Gate B: two break-glass lookups at night; the first reviewed in gate B's own log.
    let reason = Some("urgent: threat to life, no case yet");
    gate_log(
        &dir_b,
        &private,
        vec![
            vec![decision(
                "gate-b",
                "gate-b-r1",
                "Z-GATE-B-1",
                &pseudonym,
                "2026-03-02T02:15:00Z",
                reason,
            )],
            vec![decision(
                "gate-b",
                "gate-b-r2",
                "Z-GATE-B-1",
                &pseudonym,
                "2026-03-03T02:15:00Z",
                reason,
            )],
            vec![RecordBody::Review(ReviewRecord {
                time: "2026-03-04T10:00:00Z".into(),
                kind: ReviewKind::Review,
                target_seq: 1,
                target_gate: None,
                by: "fg-gate-b".into(),
                verdict: ReviewVerdict::Ok,
                note: None,
            })],
        ],
    )
    .await;
    ship(&dir_a, "gate-a", &url);
    ship(&dir_b, "gate-b", &url);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (issuer, _idp) = idp::spawn(listener, "console", "secret", idp::demo_users())
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(tmp.path().join("session.key"), [9u8; 32]).unwrap();
    std::fs::write(tmp.path().join("client.secret"), "secret").unwrap();
    // The console writes its access records to gate-a's log (which gate-a ships).
    let config = format!(
        r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_url = "http://127.0.0.1:9/jwks"
[audit]
dir = "gate-a"
signing_key = "{}"
subject_key = "subject.key"
[console]
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
client_id = "console"
client_secret_file = "client.secret"
redirect_url = "http://127.0.0.1:{port}/callback"
session_key_file = "session.key"
db = "{url}"
"#,
        private.display()
    );
    let cfg = purpose_gate::config::Config::parse(&config, tmp.path()).unwrap();
    let console = purpose_gate::console::start(&cfg).await.unwrap();
    let base = format!("http://{}", console.addr);
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let cookie = login(&client, &base).await;

    // Overzicht: both gates, each with its stored chain verified and its shipping position.
    let over = send(&client, "GET", &format!("{base}/"), &cookie, None).await;
    assert_eq!(over.status, 200);
    assert!(!over.body.contains("store-error"), "{}", over.body);
    let gates = over
        .body
        .split("id=\"gates\"")
        .nth(1)
        .expect("no gates table on Overzicht");
    let gates = gates.split("</table>").next().unwrap();
    for g in ["gate-a", "gate-b"] {
        let row = gates
            .split("<tr>")
            .find(|r| r.contains(&format!("<code>{g}</code>")))
            .unwrap_or_else(|| panic!("no row for {g}: {gates}"));
        assert!(row.contains("Keten geverifieerd"), "{g}: {row}");
    }
    // Lookups per day count both gates' records.
    assert!(
        over.body.contains("2026-03-02: 2 / 0"),
        "the chart does not count both gates"
    );

    // Signalen: computed over both gates' stored records. Gate B's break-glass lookups are a
    // signal, named with their gate; seq 1 carries the review stored in gate B's own log.
    let sig = send(&client, "GET", &format!("{base}/signalen"), &cookie, None).await;
    assert_eq!(sig.status, 200);
    assert!(sig.body.contains("break_glass"), "{}", sig.body);
    assert!(
        sig.body
            .contains("<option value=\"1@gate-b\">gate-b 1</option>")
            && sig
                .body
                .contains("<option value=\"3@gate-b\">gate-b 3</option>"),
        "{}",
        sig.body
    );
    let reviewed = |body: &str, label: &str| {
        body.split("</a>")
            .skip_while(|part| !part.ends_with(&format!(">{label}")))
            .nth(1)
            .is_some_and(|after| {
                after
                    .trim_start()
                    .starts_with("<span class=\"tag\">beoordeeld")
            })
    };
    assert!(
        reviewed(&sig.body, "gate-b 1"),
        "the stored review is not shown"
    );
    assert!(!reviewed(&sig.body, "gate-b 3"));

    // A review of gate B's record 3 (its second lookup: a checkpoint record is seq 2), made in
    // the console: it goes into the console's log
    // (gate A's), naming gate B.
    let csrf = sig
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let form = |seq: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &csrf)
            .append_pair("seq", seq)
            .append_pair("verdict", "suspicious")
            .append_pair("note", "nachtelijke noodtoegang")
            .finish()
    };
    let saved = send(
        &client,
        "POST",
        &format!("{base}/signalen/review"),
        &cookie,
        Some(form("3@gate-b")),
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    // A record the store does not hold, a record that is no decision (a checkpoint), and a
    // record without its gate are refused.
    for bad in ["9@gate-b", "2@gate-b", "3"] {
        let refused = send(
            &client,
            "POST",
            &format!("{base}/signalen/review"),
            &cookie,
            Some(form(bad)),
        )
        .await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    let review = read_records(&dir_a)
        .unwrap()
        .filter_map(|r| match r.unwrap().1 {
            Record::Review(r) => Some(r),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(review.len(), 1, "{review:?}");
    assert_eq!(
        (review[0].target_gate.as_deref(), review[0].target_seq),
        (Some("gate-b"), 3)
    );
    let sig = send(&client, "GET", &format!("{base}/signalen"), &cookie, None).await;
    assert!(
        reviewed(&sig.body, "gate-b 3"),
        "the new review is not shown"
    );

    // A BSN search finds the lookups of both gates, from the store.
    let search = format!("{base}/zoeken?by=bsn&q={BSN}");
    let found = send(&client, "GET", &search, &cookie, None).await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains("Z-GATE-A-1"), "gate-a's lookup missing");
    assert!(found.body.contains("Z-GATE-B-1"), "gate-b's lookup missing");

    // The citizen report over the store: department, and the case type from the case
    // snapshot shipped into the store (gate B's break-glass lookups named no case snapshot).
    let report = send(
        &client,
        "GET",
        &format!("{base}/inzage?bsn={BSN}"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(report.status, 200);
    let row_a = report
        .body
        .split("<tr>")
        .find(|r| r.contains("Z-GATE-A-1"))
        .expect("gate A's lookup is not in the report");
    assert!(
        row_a.contains("<td class=\"department\">Handhaving</td>")
            && row_a.contains("<td class=\"case-type\">handhaving-woonfraude</td>"),
        "{row_a}"
    );
    let row_b = report
        .body
        .split("<tr>")
        .find(|r| r.contains("Z-GATE-B-1"))
        .unwrap();
    assert!(
        row_b.contains("<td class=\"case-type\">niet vastgelegd</td>"),
        "{row_b}"
    );

    // The access record of that search is durable in the console's directory, with the
    // pseudonym: no segment of the pseudonymised log holds the BSN in clear.
    let mut records = read_records(&dir_a).unwrap();
    let mut searched = false;
    while let Some(Ok((_, record))) = records.next_ref() {
        if let Record::Access(a) = record {
            searched |= a.view == "search"
                && a.query.get("bsn").map(String::as_str) == Some(pseudonym.as_str());
        }
    }
    assert!(
        searched,
        "no pseudonymised access record for the search in gate-a's log"
    );
    for entry in std::fs::read_dir(&dir_a).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains(BSN),
                "{} holds the BSN in clear",
                path.display()
            );
        }
    }
    // Once gate A has shipped it, a search by the BSN finds that view of the person too.
    ship(&dir_a, "gate-a", &url);
    let found = send(&client, "GET", &search, &cookie, None).await;
    let views = found
        .body
        .split("id=\"person-views\"")
        .nth(1)
        .expect("the auditors' views of the person are not listed");
    assert!(
        views.contains("<td>search</td>") && views.contains(&pseudonym),
        "{views}"
    );

    // Bewijs: a proof of gate B's record 1 from the stored records and checkpoint, which
    // `audit check-proof` accepts; a seq no shipped checkpoint covers is refused on the page.
    let page = send(
        &client,
        "GET",
        &format!("{base}/bewijs?gate=gate-b&seq=1"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"record-line\">{&#34;seq&#34;:1,")
            || page.body.contains("id=\"record-line\">{&quot;seq&quot;:1,"),
        "{}",
        page.body
    );
    let proof = send(
        &client,
        "GET",
        &format!("{base}/bewijs/proof-gate-b-1.json?gate=gate-b&seq=1"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(proof.status, 200, "{}", proof.body);
    let proof_file = tmp.path().join("proof-gate-b-1.json");
    std::fs::write(&proof_file, &proof.body).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "check-proof"])
        .arg(&proof_file)
        .arg("--pubkey")
        .arg(&public)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok: record seq 1 is included"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        proof.body.contains("gate-b-r1"),
        "the proof is of gate B's record"
    );
    let beyond = send(
        &client,
        "GET",
        &format!("{base}/bewijs?gate=gate-b&seq=99"),
        &cookie,
        None,
    )
    .await;
    assert!(
        beyond
            .body
            .contains("not covered by its latest shipped checkpoint"),
        "{}",
        beyond.body
    );

    console.shutdown().await;
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await
        .unwrap();
}

/// Without the store (needs no database): a pseudonymised `[audit] dir`. The console's access
/// records name the person by pseudonym, and a BSN search finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pseudonymised_log_keeps_the_console_views_pseudonymous_and_findable() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, _) = purpose_gate::audit::checkpoint::keygen(&tmp.path().join("keys")).unwrap();
    std::fs::write(tmp.path().join("subject.key"), "cd".repeat(32)).unwrap();
    let key =
        purpose_gate::audit::pseudonym::SubjectKey::load(&tmp.path().join("subject.key")).unwrap();
    let pseudonym = key.pseudonymise(BSN);
    let dir = tmp.path().join("audit");
    gate_log(
        &dir,
        &private,
        vec![vec![decision(
            "gate-1",
            "r1",
            "Z-1",
            &pseudonym,
            "2026-03-02T09:15:00Z",
            None,
        )]],
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (issuer, _idp) = idp::spawn(listener, "console", "secret", idp::demo_users())
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(tmp.path().join("session.key"), [7u8; 32]).unwrap();
    std::fs::write(tmp.path().join("client.secret"), "secret").unwrap();
    let config = format!(
        r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_url = "http://127.0.0.1:9/jwks"
[audit]
dir = "audit"
subject_key = "subject.key"
[console]
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
client_id = "console"
client_secret_file = "client.secret"
redirect_url = "http://127.0.0.1:{port}/callback"
session_key_file = "session.key"
"#
    );
    let cfg = purpose_gate::config::Config::parse(&config, tmp.path()).unwrap();
    let console = purpose_gate::console::start(&cfg).await.unwrap();
    let base = format!("http://{}", console.addr);
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let cookie = login(&client, &base).await;

    // The citizen report and a search, both by the clear BSN.
    let report = send(
        &client,
        "GET",
        &format!("{base}/inzage?bsn={BSN}"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(report.status, 200);
    assert!(
        report.body.contains("Z-1"),
        "the pseudonymised lookup is not found"
    );
    let found = send(
        &client,
        "GET",
        &format!("{base}/zoeken?by=bsn&q={BSN}"),
        &cookie,
        None,
    )
    .await;
    assert_eq!(found.status, 200);
    let views = found
        .body
        .split("id=\"person-views\"")
        .nth(1)
        .expect("the auditors' views of the person are not listed");
    let views = views.split("</table>").next().unwrap();
    assert!(
        views.contains("<td>subject-report</td>") && views.contains("<td>search</td>"),
        "{views}"
    );
    // Another person's views are not listed.
    let other = send(
        &client,
        "GET",
        &format!("{base}/zoeken?by=bsn&q=999990639"),
        &cookie,
        None,
    )
    .await;
    let others = other.body.split("id=\"person-views\"").nth(1).unwrap();
    assert!(!others.contains("subject-report"), "{others}");

    // Both access records carry the pseudonym; no segment holds the BSN in clear.
    let accesses: Vec<ReadAccess> = read_records(&dir)
        .unwrap()
        .filter_map(|r| match r.unwrap().1 {
            Record::Access(a) => Some(a),
            _ => None,
        })
        .collect();
    for view in ["subject-report", "search"] {
        assert!(
            accesses.iter().any(|a| a.view == view
                && a.query.get("bsn").map(String::as_str) == Some(pseudonym.as_str())),
            "{view}: {accesses:?}"
        );
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(BSN),
                "{} holds the BSN in clear",
                path.display()
            );
        }
    }
    console.shutdown().await;
}
