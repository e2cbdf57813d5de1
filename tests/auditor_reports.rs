//! The auditor commands against a log written by a real gate (real HTTP through the shared
//! harness, signed checkpoints on): verify, query, subject report (text/json/html), incident
//! report, signals, review, and pseudonymised subjects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BG_REASON, Harness, Options, audit_cli, raadpleeg, stdout};
use serde_json::{Value, json};

/// Starts a gate with signed checkpoints (and a subject key when `pseudonymise`), sends
/// traffic of several employees, stops the gate. Returns the harness, the public key path
/// and the BSN disclosed by the search.
async fn traffic(pseudonymise: bool) -> (Harness, std::path::PathBuf, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = purpose_gate::audit::checkpoint::keygen(keys.path()).unwrap();
    let subject_key = keys.path().join("subject.key");
    std::fs::write(&subject_key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut audit_extra = format!(
        "signing_key = \"{}\"\ncheckpoint_every = 3\ncheckpoint_interval = \"0s\"\norigin = \"test.example/audit\"\n",
        private.display()
    );
    if pseudonymise {
        audit_extra.push_str(&format!("subject_key = \"{}\"\n", subject_key.display()));
    }
    let mut h = Harness::start_with(Options {
        audit_extra,
        ..Options::default()
    })
    .await;
    let emp042 = h.emp042();
    for _ in 0..2 {
        let a = h
            .brp(
                &emp042,
                Some("Z-OPEN"),
                &raadpleeg(&["999993653"], &["naam"]),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let a = h
        .brp(
            &emp042,
            Some("Z-CLOSED"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 403);
    let a = h
        .brp(
            &emp042,
            Some("Z-PROTECTED"),
            &raadpleeg(&["999990639"], &["naam"]),
        )
        .await;
    assert_eq!(a.code(), "protectedPerson");
    let nood = h.token("emp-900", "0363", &["noodtoegang"]);
    let auth = format!("Bearer {nood}");
    let body = raadpleeg(&["999990639"], &["naam"]).to_string();
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
    assert_eq!(a.status, 200);
    let handhaver = h.token("emp-107", "0363", &["handhaver"]);
    let search = json!({"type": "ZoekMetGeslachtsnaamEnGeboortedatum", "geslachtsnaam": "Dijk",
                        "geboortedatum": "1980-01-01", "fields": ["burgerservicenummer", "naam"]});
    let a = h.brp(&handhaver, Some("Z-HANDHAVING"), &search).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let auth = format!("Bearer {emp042}");
    let a = h
        .send(
            "GET",
            "/rdw/voertuigen/XX999X/tenaamstelling",
            &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    h.stop().await;
    (h, public, keys)
}

#[tokio::test]
async fn reports_over_a_log_written_by_the_gate() {
    let (h, public, _keys) = traffic(false).await;
    let dir = h.audit_dir.clone();

    // Intact, with signatures, checkpoints written by the gate (also at shutdown).
    let v = audit_cli(&["verify", "--pubkey", public.to_str().unwrap()], &dir);
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    assert!(stdout(&v).contains("signatures valid"), "{}", stdout(&v));

    // The search disclosed 999993653 (van Dijk, 1980-01-01): it counts for that person.
    let q = audit_cli(
        &["query", "--subject", "999993653", "--format", "json"],
        &dir,
    );
    assert_eq!(q.status.code(), Some(0));
    let rows: Vec<Value> = stdout(&q)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["employee"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("emp-042", "brp:lookup", "allow"),
            ("emp-042", "brp:lookup", "allow"),
            ("emp-042", "brp:lookup", "deny"),
            ("emp-107", "brp:search", "allow"),
            // The holder of XX999X is 999993653: the answer disclosed her.
            ("emp-042", "rdw:holder", "allow"),
        ],
        "{}",
        stdout(&q)
    );
    assert_eq!(rows[0]["status"], 200);
    assert_eq!(rows[2]["status"], Value::Null);

    // CSV has a header and one line per row.
    let csv = audit_cli(&["query", "--employee", "emp-042", "--format", "csv"], &dir);
    let text = stdout(&csv);
    assert!(
        text.starts_with("seq,time,employee,org,action,subject"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + 5, "{text}");

    // Subject report: every entry, the covering checkpoint, bilingual headings.
    let html = stdout(&audit_cli(
        &["subject-report", "--bsn", "999993653", "--format", "html"],
        &dir,
    ));
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for needle in [
        "Overzicht van raadplegingen van uw gegevens",
        "Record of access to your personal data",
        "Medewerker",
        "Employee",
        "emp-042",
        "emp-107",
        "Z-OPEN",
        "Z-HANDHAVING",
        "brp:search",
        "Covered by signed checkpoint `test.example/audit`",
        "@media print",
    ] {
        assert!(html.contains(needle), "missing `{needle}`");
    }
    assert!(!html.contains("<script"), "self-contained, no scripts");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    let json: Value = serde_json::from_str(&stdout(&audit_cli(
        &["subject-report", "--bsn", "999993653", "--format", "json"],
        &dir,
    )))
    .unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 5);
    assert_eq!(json["entries"][3]["disclosed"], true);
    assert_eq!(json["entries"][2]["disclosed"], false);
    assert!(json["covered_by"]["tree_size"].as_u64().unwrap() > 0);

    // Incident report: what emp-042 obtained.
    let inc: Value = serde_json::from_str(&stdout(&audit_cli(
        &[
            "incident-report",
            "--employee",
            "emp-042",
            "--format",
            "json",
        ],
        &dir,
    )))
    .unwrap();
    let entries = inc["entries"].as_array().unwrap();
    let person = entries
        .iter()
        .find(|e| e["kind"] == "Person" && e["id"] == "999993653")
        .unwrap();
    assert_eq!(person["count"], 3, "two lookups and the holder lookup");
    assert_eq!(person["cases"], json!(["Z-OPEN"]));
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "Vehicle" && e["id"] == "XX999X")
    );
    assert!(
        !entries.iter().any(|e| e["id"] == "999990639"),
        "denied: not obtained"
    );
    assert_eq!(inc["denied"], 2);

    // Signals: break-glass to review, protected-person attempt, search, holder lookup.
    let sig: Value = serde_json::from_str(&stdout(&audit_cli(
        &[
            "signals",
            "--format",
            "json",
            "--working-hours",
            "Mon-Sun 00:00-23:59",
        ],
        &dir,
    )))
    .unwrap();
    let kinds = |emp: &str| -> Vec<String> {
        sig.as_array()
            .unwrap()
            .iter()
            .find(|e| e["employee"] == emp)
            .map(|e| {
                e["signals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["kind"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(kinds("emp-900").contains(&"break_glass".to_string()));
    assert!(kinds("emp-042").contains(&"protected_person".to_string()));
    assert!(kinds("emp-042").contains(&"holder_lookup".to_string()));
    assert!(kinds("emp-107").contains(&"search".to_string()));
    let sig_html = stdout(&audit_cli(&["signals", "--format", "html"], &dir));
    assert!(sig_html.contains("Snooping signals") && sig_html.contains("emp-900"));

    // Review the break-glass lookup: it leaves "to review".
    let bg = audit_cli(&["query", "--break-glass", "--format", "json"], &dir);
    let bg_row: Value = serde_json::from_str(stdout(&bg).lines().next().unwrap()).unwrap();
    assert_eq!(bg_row["review"], Value::Null);
    let table = stdout(&audit_cli(&["query", "--break-glass"], &dir));
    assert!(table.contains("to review"), "{table}");
    let seq = bg_row["seq"].as_u64().unwrap().to_string();
    let r = audit_cli(
        &[
            "review",
            "--seq",
            &seq,
            "--by",
            "auditor-7",
            "--verdict",
            "ok",
            "--note",
            "checked with police",
        ],
        &dir,
    );
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let table = stdout(&audit_cli(&["query", "--break-glass"], &dir));
    assert!(
        table.contains("ok (auditor-7)") && !table.contains("to review"),
        "{table}"
    );
    // The log is still intact, and a bad review is a usage error.
    assert_eq!(audit_cli(&["verify"], &dir).status.code(), Some(0));
    let bad = audit_cli(
        &["review", "--seq", "99999", "--by", "a", "--verdict", "ok"],
        &dir,
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn pseudonymised_subjects_round_trip() {
    let (h, public, keys) = traffic(true).await;
    let dir = h.audit_dir.clone();
    let raw: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!raw.contains("999993653"), "no clear BSN in the log");
    assert!(raw.contains("hmac-sha256:"));
    // verify needs no subject key.
    let v = audit_cli(&["verify", "--pubkey", public.to_str().unwrap()], &dir);
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    // With the key, the clear BSN finds the records, including the search's disclosure.
    let key = keys.path().join("subject.key");
    let q = audit_cli(
        &[
            "query",
            "--subject",
            "999993653",
            "--subject-key",
            key.to_str().unwrap(),
            "--format",
            "json",
        ],
        &dir,
    );
    assert_eq!(stdout(&q).lines().count(), 5, "{}", stdout(&q));
    let report = stdout(&audit_cli(
        &[
            "subject-report",
            "--bsn",
            "999993653",
            "--subject-key",
            key.to_str().unwrap(),
        ],
        &dir,
    ));
    assert!(report.contains("Subject (BSN): 999993653"), "{report}");
    assert!(report.contains("5 entries"), "{report}");
    // Without the key nothing matches.
    let q = audit_cli(
        &["query", "--subject", "999993653", "--format", "json"],
        &dir,
    );
    assert_eq!(stdout(&q), "");
}
