//! Auditor commands against a log of real traffic through the gate: a review appended through
//! the review spool while the gate runs, and the shared-surname signal from an employee
//! directory and an export of the subjects' surnames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{BG_REASON, Harness, Options, audit_cli, raadpleeg, stderr, stdout};
use serde_json::{Value, json};

/// Runs the CLI on a blocking thread (the gate under test runs on this runtime).
async fn cli_async(args: &[&str], dir: &Path) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        audit_cli(&refs, &dir)
    })
    .await
    .unwrap()
}

/// A break-glass lookup by emp-900; returns its request id.
async fn break_glass(h: &Harness) -> String {
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
    a.headers["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn review_while_the_gate_runs_goes_through_the_gates_writer() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = purpose_gate::audit::checkpoint::keygen(keys.path()).unwrap();
    let mut h = Harness::start_with(Options {
        audit_extra: format!(
            "signing_key = \"{}\"\ncheckpoint_every = 4\ncheckpoint_interval = \"0s\"\n",
            private.display()
        ),
        ..Options::default()
    })
    .await;
    let dir = h.audit_dir.clone();
    let request_id = break_glass(&h).await;
    let target = h.record_of(&request_id, "decision")["seq"]
        .as_u64()
        .unwrap();
    let table = stdout(&cli_async(&["query", "--break-glass"], &dir).await);
    assert!(table.contains("to review"), "{table}");

    // The gate holds the writer lock; the review goes through its writer.
    let r = cli_async(
        &[
            "review",
            "--seq",
            &target.to_string(),
            "--by",
            "auditor-7",
            "--verdict",
            "suspicious",
            "--note",
            "no police report found",
        ],
        &dir,
    )
    .await;
    assert_eq!(r.status.code(), Some(0), "{}{}", stdout(&r), stderr(&r));
    let out = stdout(&r);
    let review_seq: u64 = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in `{out}`"));
    assert!(
        out.contains(&format!("review of seq {target} appended as seq")),
        "{out}"
    );
    assert!(stderr(&r).contains("running gate"), "{}", stderr(&r));
    let records = h.records();
    let review = records.iter().find(|r| r["seq"] == review_seq).unwrap();
    assert_eq!(review["kind"], "review");
    assert_eq!(review["target_seq"], target);
    assert_eq!(review["by"], "auditor-7");
    assert_eq!(review["verdict"], "suspicious");
    assert_eq!(review["note"], "no police report found");
    // Nothing is left in the spool (the writer removes the request just after it answers,
    // so give it a moment).
    for sub in ["incoming", "done", "rejected"] {
        let d = dir.join("reviews").join(sub);
        let count = || std::fs::read_dir(&d).map(|e| e.count()).unwrap_or(0);
        for _ in 0..200 {
            if count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(count(), 0, "{}", d.display());
    }

    // The gate keeps writing after the review; the chain holds and the reports show it.
    let a = h
        .brp(
            &h.emp042(),
            Some("Z-OPEN"),
            &raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 200);
    let v = cli_async(&["verify"], &dir).await;
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let table = stdout(&cli_async(&["query", "--break-glass"], &dir).await);
    assert!(
        table.contains("suspicious (auditor-7)") && !table.contains("to review"),
        "{table}"
    );
    let sig = stdout(&cli_async(&["signals", "--format", "json"], &dir).await);
    assert!(sig.contains("0 to review"), "{sig}");

    // A seq that is not a decision is refused before anything is spooled.
    let bad = cli_async(
        &[
            "review",
            "--seq",
            &review_seq.to_string(),
            "--by",
            "a",
            "--verdict",
            "ok",
        ],
        &dir,
    )
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // After the gate stopped, the CLI is the writer itself; signatures of the gate's
    // checkpoints still verify and the chain continues.
    h.stop().await;
    let r = audit_cli(
        &[
            "review",
            "--seq",
            &target.to_string(),
            "--by",
            "auditor-8",
            "--verdict",
            "ok",
        ],
        &dir,
    );
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert!(!stderr(&r).contains("running gate"), "{}", stderr(&r));
    let v = audit_cli(&["verify", "--pubkey", public.to_str().unwrap()], &dir);
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let table = stdout(&audit_cli(&["query", "--break-glass"], &dir));
    assert!(table.contains("ok (auditor-8)"), "{table}");
}

#[tokio::test]
async fn spooled_review_waits_for_a_gate_and_is_appended_when_it_opens_the_log() {
    // A request left in the spool (e.g. the CLI timed out) is appended by the next writer.
    let mut h = Harness::start().await;
    let dir = h.audit_dir.clone();
    let request_id = break_glass(&h).await;
    let target = h.record_of(&request_id, "decision")["seq"]
        .as_u64()
        .unwrap();
    h.stop().await;
    let request = purpose_gate::audit::spool::ReviewRequest::new(
        target,
        "auditor-9",
        purpose_gate::audit::ReviewVerdict::Ok,
        None,
    );
    let id = purpose_gate::audit::spool::submit(&dir, &request).unwrap();
    assert!(purpose_gate::audit::spool::incoming_path(&dir, &id).exists());
    let h2 = Harness::start_with(Options {
        audit_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    let mut found = None;
    for _ in 0..100 {
        found = h2
            .records()
            .into_iter()
            .find(|r| r["kind"] == "review" && r["by"] == "auditor-9");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let found = found.expect("the spooled review was appended");
    assert_eq!(found["target_seq"], target);
    // The record is durable (and readable) before the writer answers and removes the
    // request: wait for the request to go, then read the answer.
    let incoming = purpose_gate::audit::spool::incoming_path(&dir, &id);
    for _ in 0..200 {
        if !incoming.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        !incoming.exists(),
        "the request was not removed after its record was appended"
    );
    match purpose_gate::audit::spool::take_answer(&dir, &id).unwrap() {
        Some(purpose_gate::audit::spool::Answer::Done(d)) => assert_eq!(json!(d.seq), found["seq"]),
        other => panic!("{other:?}"),
    }
}

/// Traffic for the surname signal: emp-042 looks up 999993653 (van Dijk) and the holder of
/// XX999X (also her); emp-107 finds her by a name search; emp-900 uses break-glass.
async fn surname_traffic(h: &Harness) {
    let emp042 = h.emp042();
    for case in ["Z-OPEN", "Z-CLOSED"] {
        h.brp(&emp042, Some(case), &raadpleeg(&["999993653"], &["naam"]))
            .await;
    }
    let handhaver = h.token("emp-107", "0363", &["handhaver"]);
    let search = json!({"type": "ZoekMetGeslachtsnaamEnGeboortedatum", "geslachtsnaam": "Dijk",
                        "geboortedatum": "1980-01-01", "fields": ["burgerservicenummer", "naam"]});
    let a = h.brp(&handhaver, Some("Z-HANDHAVING"), &search).await;
    assert_eq!(a.status, 200);
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
    break_glass(h).await;
}

fn signals_of(json_text: &str, employee: &str, kind: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(json_text).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["employee"] == employee)
        .flat_map(|e| e["signals"].as_array().unwrap().clone())
        .filter(|s| s["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn shared_surname_signal_from_directory_and_subject_names() {
    let keys = tempfile::tempdir().unwrap();
    let subject_key = keys.path().join("subject.key");
    std::fs::write(&subject_key, "0123456789abcdef0123456789abcdef\n").unwrap();
    for pseudonymise in [false, true] {
        let audit_extra = if pseudonymise {
            format!("subject_key = \"{}\"\n", subject_key.display())
        } else {
            String::new()
        };
        let mut h = Harness::start_with(Options {
            audit_extra,
            ..Options::default()
        })
        .await;
        surname_traffic(&h).await;
        h.stop().await;
        let dir = h.audit_dir.clone();

        // The directory: emp-042 is "Van Dijk" (CSV with more columns), emp-107 "Jansen",
        // emp-900 "El Amrani" as "Amrani, El".
        let directory = h.tmp.path().join("employees.csv");
        std::fs::write(
            &directory,
            "employee,department,surname\nemp-042,Burgerzaken,Van Dijk\nemp-107,Handhaving,Jansen\nemp-900,Noodteam,\"Amrani, El\"\n",
        )
        .unwrap();
        // The subjects' surnames as exported from the BRP (JSON, with voorvoegsels).
        let names = h.tmp.path().join("subjects.json");
        std::fs::write(
            &names,
            r#"{"999993653": "van Dijk", "999990639": "El Amrani"}"#,
        )
        .unwrap();

        let mut args = vec![
            "signals".to_string(),
            "--format".into(),
            "json".into(),
            "--employee-directory".into(),
            directory.display().to_string(),
            "--subject-names".into(),
            names.display().to_string(),
        ];
        if pseudonymise {
            args.push("--subject-key".into());
            args.push(subject_key.display().to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = audit_cli(&refs, &dir);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);

        let s042 = signals_of(&text, "emp-042", "shared_surname");
        assert_eq!(s042.len(), 1, "{text}");
        // Both lookups (also the denied one) and the holder lookup that disclosed her.
        let seqs: Vec<u64> = s042[0]["seqs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        let records = common::read_records(&dir);
        let seq_of = |action: &str| -> Vec<u64> {
            records
                .iter()
                .filter(|r| {
                    r["kind"] == "decision"
                        && r["principal"]["id"] == "emp-042"
                        && r["action"] == action
                })
                .map(|r| r["seq"].as_u64().unwrap())
                .collect()
        };
        let mut expected = seq_of("brp:lookup");
        expected.extend(seq_of("rdw:holder"));
        expected.sort_unstable();
        assert_eq!(seqs, expected, "{text}");
        assert_eq!(expected.len(), 3);
        let detail = s042[0]["detail"].as_str().unwrap();
        assert!(
            detail.contains("999993653") && detail.contains("`dijk`"),
            "clear BSN in the detail, also for a pseudonymised log: {detail}"
        );
        // The break-glass lookup of El Amrani by an employee named "Amrani, El".
        assert_eq!(signals_of(&text, "emp-900", "shared_surname").len(), 1);
        // emp-107's search found van Dijk, but Jansen shares nothing.
        assert!(signals_of(&text, "emp-107", "shared_surname").is_empty());

        // The directory can come from the gate's config; text output names the signal.
        let cfg = std::fs::read_to_string(&h.config_path).unwrap().replace(
            "[audit]\n",
            &format!(
                "[audit]\nemployee_directory = \"{}\"\n",
                directory.display()
            ),
        );
        std::fs::write(&h.config_path, cfg).unwrap();
        let mut args = vec![
            "signals".to_string(),
            "--config".into(),
            h.config_path.display().to_string(),
            "--subject-names".into(),
            names.display().to_string(),
        ];
        if pseudonymise {
            args.push("--subject-key".into());
            args.push(subject_key.display().to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = stdout(&audit_cli(&refs, &dir));
        assert!(text.contains("shared_surname"), "{text}");

        // Without the subjects' names there is no surname signal (the log holds no names);
        // one of the two files alone is a usage error.
        let alone = audit_cli(
            &[
                "signals",
                "--employee-directory",
                directory.to_str().unwrap(),
            ],
            &dir,
        );
        assert_eq!(alone.status.code(), Some(2), "{}", stderr(&alone));
        let plain = stdout(&audit_cli(&["signals", "--format", "json"], &dir));
        assert!(signals_of(&plain, "emp-042", "shared_surname").is_empty());
    }
}
