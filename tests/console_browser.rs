//! The auditor console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) with fantoccini. Logs in through the example IdP, reviews a signal, searches a
//! BSN, opens the citizen report, downloads a proof and checks it with `audit check-proof`;
//! checks the refusals (no session → login, wrong role → 403, no CSRF token → 403) and that
//! hostile text in the log is shown as text. Screenshots go to `target/console-screens/`.
//!
//! Skips (and says why) when `chromedriver` or Chromium is not installed; `.ci/run` installs
//! them, so CI runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/common/idp.rs"]
mod idp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use purpose_gate::audit::record::*;
use purpose_gate::audit::{Record, read_records};

const HOSTILE_REASON: &str =
    "<script>window.__pwned=1</script> \"quoted\" 'reason' for urgent help";
const HOSTILE_CASE: &str = "Z-\"<script>window.__pwned=2</script>";

fn find_tool(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

const DEPARTMENT: &str = "Handhaving en Toezicht";
const CASE_TYPE: &str = "handhaving-woonfraude";

/// The case snapshot of `case` (type [`CASE_TYPE`]) in `audit_dir`, as the gate writes it; its hash.
fn case_snapshot(audit_dir: &Path, case: &str) -> String {
    let case: purpose_gate::model::Case = serde_json::from_value(serde_json::json!({
        "id": case, "type": CASE_TYPE, "status": "open",
        "opened": "2026-01-01T00:00:00Z", "organization": "gm0363",
        "handlers": ["emp-042"], "subjects": ["999993653"]
    }))
    .unwrap();
    purpose_gate::audit::snapshots::CaseSnapshots::new(audit_dir)
        .put(&purpose_gate::audit::snapshots::snapshot_bytes(&case, None))
        .unwrap()
}

fn decision(
    request_id: &str,
    time: &str,
    employee: &str,
    bsn: &str,
    case: &str,
    break_glass: Option<&str>,
    snapshot: Option<String>,
) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        inputs: snapshot.map(|hash| DecisionInputs {
            v: 1,
            case: Some(hash),
            lookups_last_hour: 1,
            lookups_last_day: 1,
            search: None,
        }),
        time: time.into(),
        kind: DecisionKind::Decision,
        gate: "gate-1".into(),
        request_id: request_id.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: employee.into(),
            org: "gm0363".into(),
            roles: vec!["handhaver".into()],
            department: Some(DEPARTMENT.into()),
        }),
        action: Some("brp:lookup".into()),
        resource: Some(ResourceRef {
            kind: "Person".into(),
            id: bsn.into(),
        }),
        case_id: Some(case.into()),
        case_url: None,
        purpose: PurposeRecord {
            doelbinding: Some("BRPACT-Toezicht".into()),
            verwerking: None,
            break_glass: break_glass.is_some(),
            reason: break_glass.map(str::to_string),
        },
        fields: vec!["naam".into(), "verblijfplaats".into()],
        decision: Verdict::Allow,
        code: None,
        policies: vec!["permit-case-handler".into()],
        reasons: vec![],
        errors: vec![],
        request: RequestRecord {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            client_ip: Some("10.0.0.7".into()),
        },
        policy_version: None,
    }))
}

fn outcome(request_id: &str, time: &str, bsn: &str, withheld: Option<&str>) -> RecordBody {
    let mut release = vec![ReleaseRecord {
        kind: "Person".into(),
        id: bsn.into(),
        decision: Verdict::Allow,
        released: true,
        code: None,
        policies: vec![],
    }];
    if let Some(w) = withheld {
        release.push(ReleaseRecord {
            kind: "Person".into(),
            id: w.into(),
            decision: Verdict::Deny,
            released: false,
            code: Some("protectedPerson".into()),
            policies: vec![],
        });
    }
    RecordBody::Outcome(OutcomeRecord {
        time: time.into(),
        kind: OutcomeKind::Outcome,
        request_id: request_id.into(),
        status: 200,
        upstream_ms: 3,
        disclosed: vec![ResourceRef {
            kind: "Person".into(),
            id: bsn.into(),
        }],
        release,
        code: None,
        upstream_status: Some(200),
        fsc_transaction_id: None,
    })
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn screenshot(c: &fantoccini::Client, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screens");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &fantoccini::Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (up to 10 s) until the element `css` exists with text `want`, across navigations.
async fn wait_text(c: &fantoccini::Client, css: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if t.contains(want) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never showed `{want}`; last: `{last}`");
}

async fn login(c: &fantoccini::Client, base: &str, user: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    // No session: the console sends the browser to the IdP's login form.
    let form = c
        .wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/authorize")
    );
    form.send_keys(user).await.unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_works_through_the_console_in_chromium() {
    let Some(driver_bin) = find_tool(&["chromedriver"]) else {
        eprintln!(
            "SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver; .ci/run installs it)"
        );
        return;
    };
    let Some(chromium) = find_tool(&["chromium", "chromium-browser", "google-chrome"]) else {
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let audit_dir = tmp.path().join("audit");
    let (private, public) =
        purpose_gate::audit::checkpoint::keygen(&tmp.path().join("keys")).unwrap();

    // A running "gate" writer with signed checkpoints; the console writes through its spool.
    let audit_cfg = purpose_gate::config::AuditConfig {
        dir: audit_dir.clone(),
        signing_key: Some(private.clone()),
        checkpoint_every: 1,
        ..Default::default()
    };
    let log = audit_cfg.open().unwrap();
    let bsn = "999993653";
    log.append(vec![
        decision(
            "r1",
            "2026-03-02T09:15:00Z",
            "emp-042",
            bsn,
            "Z-2026-000123",
            None,
            Some(case_snapshot(&audit_dir, "Z-2026-000123")),
        ),
        outcome("r1", "2026-03-02T09:15:01Z", bsn, Some("999990639")),
    ])
    .await
    .unwrap();
    log.append(vec![
        decision(
            "r2",
            "2026-03-03T02:10:00Z",
            "emp-900",
            bsn,
            HOSTILE_CASE,
            Some(HOSTILE_REASON),
            None,
        ),
        outcome("r2", "2026-03-03T02:10:01Z", bsn, None),
    ])
    .await
    .unwrap();
    // Let a checkpoint cover the records.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The example IdP and the console.
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (issuer, _idp) = idp::spawn(idp_listener, "console", "demo-secret", idp::demo_users())
        .await
        .unwrap();
    let console_port = free_port();
    std::fs::write(tmp.path().join("session.key"), [42u8; 32]).unwrap();
    std::fs::write(tmp.path().join("client.secret"), "demo-secret\n").unwrap();
    let config = format!(
        r#"
[auth]
issuer = "https://idp.example"
audience = "purpose-gate"
jwks_url = "http://127.0.0.1:9/jwks"

[audit]
dir = "audit"
signing_key = "{}"

[console]
listen = "127.0.0.1:{console_port}"
issuer = "{issuer}"
client_id = "console"
client_secret_file = "client.secret"
redirect_url = "http://127.0.0.1:{console_port}/callback"
session_key_file = "session.key"
"#,
        private.display()
    );
    let cfg = purpose_gate::config::Config::parse(&config, tmp.path()).unwrap();
    let console = purpose_gate::console::start(&cfg).await.unwrap();
    let base = format!("http://{}", console.addr);

    // Unauthenticated: straight to the login.
    let plain = reqwest_free_get(&format!("{base}/zoeken"), None).await;
    assert_eq!(plain.0, 303);
    assert_eq!(plain.1.as_deref(), Some("/login"));

    let port = free_port();
    let _driver = Driver(
        Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }),
    );
    let mut client = None;
    for _ in 0..50 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let c = client.expect("chromedriver did not start");

    // Wrong role: logged in, but 403 and nothing shown.
    login(&c, &base, "medewerker").await;
    assert_eq!(wait_text(&c, "h1", "Geen toegang").await, "Geen toegang");
    assert!(!c.source().await.unwrap().contains(bsn));
    screenshot(&c, "00-wrong-role-403").await;
    c.find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Logged out.
    assert_eq!(wait_text(&c, "h1", "Uitgelogd").await, "Uitgelogd");

    // The auditor.
    login(&c, &base, "auditor").await;
    wait_text(&c, "#chain", "Keten").await;
    assert!(text(&c, "#user").await.contains("auditor"));
    let chain = text(&c, "#chain").await;
    assert!(
        chain.starts_with("Keten geverifieerd tot en met record"),
        "{chain}"
    );
    assert!(text(&c, "#checkpoint").await.contains("purpose-gate/audit"));
    screenshot(&c, "01-overzicht").await;

    // Signalen: review the first signal.
    c.goto(&format!("{base}/signalen")).await.unwrap();
    let form = c.find(Locator::Css("form.review")).await.unwrap();
    let seq: u64 = form
        .find(Locator::Css("select[name=seq]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    form.find(Locator::Css("input[value=suspicious]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    form.find(Locator::Css("textarea"))
        .await
        .unwrap()
        .send_keys("nachtelijke noodtoegang nagaan")
        .await
        .unwrap();
    screenshot(&c, "02-signalen").await;
    form.find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let saved = wait_text(&c, "#saved", "record").await;
    assert!(
        saved.starts_with("Beoordeling vastgelegd in het log als record"),
        "{saved}"
    );
    let review_seq: u64 = saved
        .trim_end_matches('.')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let records: Vec<Record> = read_records(&audit_dir)
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    let review = records.iter().find(|r| r.seq() == review_seq).unwrap();
    assert!(
        matches!(review, Record::Review(r) if r.target_seq == seq && r.by == "auditor" && r.verdict == ReviewVerdict::Suspicious && r.note.as_deref() == Some("nachtelijke noodtoegang nagaan")),
        "{review:?}"
    );
    assert!(c.source().await.unwrap().contains("beoordeeld: verdacht"));

    // A form without its CSRF token: 403.
    c.execute(
        "document.querySelector('form.review input[name=csrf]').remove();",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css("form.review button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(wait_text(&c, "h1", "Geen toegang").await, "Geen toegang");
    assert!(text(&c, "#message").await.contains("csrf"));

    // Zoeken op BSN: the timeline, with the hostile reason and case id shown as text.
    c.goto(&format!("{base}/zoeken?by=bsn&q={bsn}"))
        .await
        .unwrap();
    let timeline = text(&c, "#timeline").await;
    assert!(
        timeline.contains("emp-042") && timeline.contains("emp-900"),
        "{timeline}"
    );
    assert!(
        timeline.contains("Person 999990639"),
        "withheld shown: {timeline}"
    );
    assert!(timeline.contains(HOSTILE_REASON), "{timeline}");
    assert!(timeline.contains(HOSTILE_CASE), "{timeline}");
    let pwned = c
        .execute("return typeof window.__pwned;", vec![])
        .await
        .unwrap();
    assert_eq!(
        pwned,
        serde_json::json!("undefined"),
        "an injected script ran"
    );
    // The auditors' views of this person are found by the search too (this one included).
    let views = text(&c, "#person-views").await;
    assert!(
        views.contains("search") && views.contains(&format!("bsn={bsn}")),
        "{views}"
    );
    screenshot(&c, "03-zoeken").await;

    // Inzage burger.
    c.goto(&format!("{base}/inzage?bsn={bsn}")).await.unwrap();
    assert_eq!(text(&c, "#report-bsn").await, bsn);
    let rows = text(&c, "#subject-rows").await;
    assert!(
        rows.contains("gm0363") && rows.contains("Z-2026-000123"),
        "{rows}"
    );
    // Per disclosure: organisation and department, role, case type and reference, the fields.
    let first = c
        .find(Locator::XPath(
            "//table[@id='subject-rows']//tr[td[contains(., 'Z-2026-000123')]]",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "gm0363",
        DEPARTMENT,
        "handhaver",
        CASE_TYPE,
        "Z-2026-000123",
        "ja: naam, verblijfplaats",
    ] {
        assert!(first.contains(want), "`{want}` missing in {first}");
    }
    // The break-glass lookup named no case snapshot: its case type is not recorded, not guessed.
    let second = c
        .find(Locator::XPath(
            "//table[@id='subject-rows']//tr[td[contains(., 'emp-900') or contains(., 'break-glass')]]",
        ))
        .await
        .unwrap()
        .find(Locator::Css("td.case-type"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(second, "niet vastgelegd");
    screenshot(&c, "04-inzage").await;

    // Bewijs: show, then download through the auditor's session and check it.
    c.goto(&format!("{base}/bewijs?seq=1")).await.unwrap();
    assert!(text(&c, "#record-line").await.starts_with("{\"seq\":1,"));
    screenshot(&c, "05-bewijs").await;
    let href = c
        .find(Locator::Css("#download-proof"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let cookie = c.get_named_cookie("pg_session").await.unwrap();
    let session = format!("pg_session={}", cookie.value());
    let (status, _, proof) = reqwest_free_get(&format!("{base}{href}"), Some(&session)).await;
    assert_eq!(status, 200);
    let proof_file = tmp.path().join("proof-1.json");
    std::fs::write(&proof_file, proof).unwrap();
    let (status, _, pem) =
        reqwest_free_get(&format!("{base}/bewijs/audit-pubkey.pem"), Some(&session)).await;
    assert_eq!(status, 200);
    assert_eq!(pem, std::fs::read(&public).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
        .args(["audit", "check-proof"])
        .arg(&proof_file)
        .arg("--pubkey")
        .arg(&public)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok: record seq 1 is included"),
        "{stdout}"
    );

    // The command Bewijs shows for checking without this software: the downloaded script,
    // then OpenSSL on the note and signature it writes, against the downloaded public key.
    let shown = text(&c, "#check-without").await;
    assert!(
        shown.contains("python3 check-proof.py proof-1.json")
            && shown.contains("openssl pkeyutl -verify"),
        "{shown}"
    );
    let (status, _, script) =
        reqwest_free_get(&format!("{base}/bewijs/check-proof.py"), Some(&session)).await;
    assert_eq!(status, 200);
    std::fs::write(tmp.path().join("check-proof.py"), script).unwrap();
    std::fs::write(tmp.path().join("audit-pubkey.pem"), &pem).unwrap();
    let offline = offline_check(tmp.path(), "proof-1.json");
    assert!(offline.is_ok(), "{offline:?}");
    // A record altered in the proof: the Merkle root no longer matches.
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof_file).unwrap()).unwrap();
    let mut altered = good.clone();
    altered["line"] =
        serde_json::Value::String(good["line"].as_str().unwrap().replace("emp-042", "emp-043"));
    std::fs::write(
        tmp.path().join("altered.json"),
        serde_json::to_vec(&altered).unwrap(),
    )
    .unwrap();
    let err = offline_check(tmp.path(), "altered.json").unwrap_err();
    assert!(err.contains("Merkle root does not match"), "{err}");
    // A forged signature on the checkpoint: the script's tree check passes, OpenSSL refuses.
    let note = good["checkpoint"].as_str().unwrap();
    let (body, sig_line) = note.trim_end().rsplit_once('\n').unwrap();
    let (prefix, sig) = sig_line.rsplit_once(' ').unwrap();
    let mut raw = base64_decode(sig);
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let mut forged = good.clone();
    forged["checkpoint"] =
        serde_json::Value::String(format!("{body}\n{prefix} {}\n", base64_encode(&raw)));
    std::fs::write(
        tmp.path().join("forged.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let err = offline_check(tmp.path(), "forged.json").unwrap_err();
    assert!(err.starts_with("openssl"), "{err}");

    // English.
    c.goto(&format!("{base}/lang?to=en")).await.unwrap();
    wait_text(&c, "#chain", "Chain verified up to record").await;

    // The auditor's views are in the log, and Overzicht shows who looked.
    let accesses: Vec<ReadAccess> = read_records(&audit_dir)
        .unwrap()
        .filter_map(|r| match r.unwrap().1 {
            Record::Access(a) => Some(a),
            _ => None,
        })
        .collect();
    for view in [
        "overview",
        "signals",
        "search",
        "subject-report",
        "proof",
        "proof-download",
    ] {
        assert!(
            accesses.iter().any(|a| a.by == "auditor" && a.view == view),
            "no access record for {view}"
        );
    }
    assert!(
        accesses
            .iter()
            .any(|a| a.view == "search" && a.query.get("bsn").map(String::as_str) == Some(bsn))
    );
    assert!(
        !accesses.iter().any(|a| a.by == "medewerker"),
        "the 403 showed nothing, so nothing was recorded"
    );
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(text(&c, "#accesses").await.contains("subject-report"));

    // Logout ends the session on the server.
    c.find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "h1", "Logged out").await;
    let (status, location, _) = reqwest_free_get(&format!("{base}/"), Some(&session)).await;
    assert_eq!((status, location.as_deref()), (303, Some("/login")));

    c.close().await.unwrap();
    console.shutdown().await;
    log.close().await;
    assert!(purpose_gate::audit::verify(&audit_dir).is_ok());
}

/// Runs the offline check that *Bewijs* shows in `dir` (holding `check-proof.py` and
/// `audit-pubkey.pem`): `python3 check-proof.py PROOF`, then `openssl pkeyutl -verify` on the
/// note and signature it wrote. `Err` names the step that failed and its output.
fn offline_check(dir: &Path, proof: &str) -> Result<(), String> {
    let run = |cmd: &mut Command| {
        let out = cmd.current_dir(dir).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(Command::new("python3").args(["check-proof.py", proof]));
    if !ok {
        return Err(format!("python3: {text}"));
    }
    assert!(
        text.starts_with("ok: record seq 1 is in the tree"),
        "{text}"
    );
    let (ok, text) = run(Command::new("openssl").args([
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "audit-pubkey.pem",
        "-rawin",
        "-in",
        &format!("{proof}.note"),
        "-sigfile",
        &format!("{proof}.sig"),
    ]));
    if !ok || !text.contains("Signature Verified Successfully") {
        return Err(format!("openssl: {text}"));
    }
    Ok(())
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A plain GET with an optional cookie: status, `Location`, body.
async fn reqwest_free_get(url: &str, cookie: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut req = hyper::Request::get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = client
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, location, body)
}
