//! The policy author's tools on the shipped policies and on a deliberately broken copy:
//! `policy prove` (symbolic proofs with cvc5), `policy replay`, `policy explain` and
//! `policy test --coverage`.
//!
//! `prove` needs an SMT solver: `$CVC5`, else `scripts/cvc5-smt` (the PyPI `cvc5` package;
//! `.ci/run` installs it). Without one these tests fail and say so; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn gate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purpose-gate"))
}

fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn solver() -> PathBuf {
    std::env::var_os("CVC5")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join("scripts/cvc5-smt"))
}

/// A copy of the shipped policy directory (schema, policies, entities, tests, properties).
fn copy_policies(to: &Path) {
    let from = common::repo().join("policies");
    copy_dir(&from, to);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The broken copy: the case permit no longer checks `!resource.protected`, and the forbid
/// that doubled that check is gone too (as when an author "simplifies" the policies).
fn break_protected_person_check(dir: &Path) {
    let path = dir.join("gate.cedar");
    let mut src = std::fs::read_to_string(&path).unwrap();
    let weakened = src.replacen(
        "  context.case.case_type.allowed_fields.containsAll(context.fields) &&\n  !resource.protected &&\n",
        "  context.case.case_type.allowed_fields.containsAll(context.fields) &&\n",
        1,
    );
    assert_ne!(
        weakened, src,
        "the permit to weaken is in the shipped policies"
    );
    src = weakened;
    let start = src.find("@id(\"forbid-protected-person\")").unwrap();
    let end = src.find("@id(\"forbid-volume-limit\")").unwrap();
    src.replace_range(start..end, "");
    std::fs::write(&path, src).unwrap();
}

#[test]
fn prove_holds_for_the_shipped_properties() {
    let o = gate()
        .args(["policy", "prove", "--dir"])
        .arg(common::repo().join("policies"))
        .arg("--solver")
        .arg(solver())
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    for p in [
        "protected-persons",
        "case-or-break-glass",
        "vehicle-holder-needs-case",
        "never-errors",
    ] {
        assert!(
            text.contains(&format!("property {p} (")) && !text.contains("FAILS"),
            "{text}"
        );
    }
    assert!(text.contains("results: 4 passed, 0 failed"), "{text}");
}

#[test]
fn prove_catches_a_weakened_permit_with_a_counterexample_that_runs_as_a_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    copy_policies(&dir);
    break_protected_person_check(&dir);
    let o = gate()
        .args(["policy", "prove", "--dir"])
        .arg(&dir)
        .arg("--solver")
        .arg(solver())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        text.contains("property protected-persons (implies"),
        "{text}"
    );
    assert!(text.contains("... FAILS"), "{text}");
    assert!(
        text.contains("today allowed by `permit-brp-lookup-for-case`"),
        "{text}"
    );

    // The counterexample is a ready-to-run `cedar run-tests` case: cut it out of the report,
    // put it into the tests, and `policy test` runs it (and fails, as the policies are wrong).
    let start = text.find("    [\n").unwrap();
    let block: Vec<&str> = text[start..]
        .lines()
        .take_while(|l| l.starts_with("    "))
        .collect();
    let cases: Value = serde_json::from_str(&block.join("\n")).unwrap();
    assert_eq!(cases[0]["decision"], "deny");
    assert_eq!(
        cases[0]["request"]["action"],
        "Gate::Action::\"brp:lookup\""
    );
    std::fs::write(
        dir.join("tests/counterexample.json"),
        serde_json::to_vec_pretty(&cases).unwrap(),
    )
    .unwrap();
    let o = gate()
        .args(["policy", "test", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("property protected-persons: counterexample ... FAILED: expected deny, got allow by `permit-brp-lookup-for-case`"),
        "{text}"
    );
}

#[test]
fn prove_exits_2_without_a_solver_or_without_properties() {
    let o = gate()
        .args(["policy", "prove", "--dir"])
        .arg(common::repo().join("policies"))
        .args(["--solver", "/nonexistent/cvc5"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot start the solver"));

    let tmp = tempfile::tempdir().unwrap();
    copy_policies(tmp.path());
    std::fs::remove_dir_all(tmp.path().join("properties")).unwrap();
    let o = gate()
        .args(["policy", "prove", "--dir"])
        .arg(tmp.path())
        .arg("--solver")
        .arg(solver())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

/// A real gate writes a log: an allowed lookup, a protected person refused, a refusal before
/// the policies (no token). Returns the harness's temporary directory and the audit directory.
async fn recorded_log() -> (common::Harness, PathBuf) {
    let h = common::Harness::start().await;
    let t = h.emp042();
    let ok = h
        .brp(
            &t,
            Some("Z-OPEN"),
            &common::raadpleeg(&["999993653"], &["naam"]),
        )
        .await;
    assert_eq!(ok.status, 200);
    let protected = h
        .brp(
            &t,
            Some("Z-PROTECTED"),
            &common::raadpleeg(&["999990639"], &["naam"]),
        )
        .await;
    assert_eq!(protected.status, 403);
    assert_eq!(protected.json()["code"], "protectedPerson");
    let anonymous = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[("content-type", "application/json")],
            Some(&common::raadpleeg(&["999993653"], &["naam"]).to_string()),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let dir = h.audit_dir.clone();
    (h, dir)
}

fn seq_of(audit: &Path, code: &str) -> u64 {
    common::read_records(audit)
        .iter()
        .find(|r| r["kind"] == "decision" && r["code"] == code)
        .and_then(|r| r["seq"].as_u64())
        .unwrap()
}

#[tokio::test]
async fn decision_records_carry_replay_inputs_with_a_durable_case_snapshot() {
    let (mut h, audit) = recorded_log().await;
    h.stop().await;
    let records = common::read_records(&audit);
    let allowed = records
        .iter()
        .find(|r| r["kind"] == "decision" && r["decision"] == "allow")
        .unwrap();
    let inputs = &allowed["inputs"];
    assert_eq!(inputs["v"], 1);
    // The counters as the decision saw them: the second lookup counts the first.
    let protected = records
        .iter()
        .find(|r| r["kind"] == "decision" && r["code"] == "protectedPerson")
        .unwrap();
    assert_eq!(
        protected["inputs"]["lookups_last_hour"].as_i64().unwrap(),
        inputs["lookups_last_hour"].as_i64().unwrap() + 1
    );
    let hash = inputs["case"].as_str().unwrap();
    let snapshot = std::fs::read(audit.join("cases").join(format!("{hash}.json"))).unwrap();
    let case: Value = serde_json::from_slice(&snapshot).unwrap();
    assert_eq!(case["id"], "Z-OPEN");
    // Refusals before the policies were asked carry no inputs.
    let refused = records
        .iter()
        .find(|r| r["kind"] == "decision" && r["principal"].is_null())
        .unwrap();
    assert!(refused.get("inputs").is_none(), "{refused}");
}

#[tokio::test]
async fn replay_is_quiet_on_the_shipped_policies_and_reports_flips_of_a_weakened_permit() {
    let (mut h, audit) = recorded_log().await;
    h.stop().await;
    let protected_seq = seq_of(&audit, "protectedPerson");

    let o = gate()
        .args(["policy", "replay", "--dir"])
        .arg(common::repo().join("policies"))
        .arg("--audit")
        .arg(&audit)
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("replayed 2 decision(s): 2 unchanged, 0 changed"),
        "{text}"
    );
    assert!(text.contains("skipped 1 refusal(s)"), "{text}");

    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("policies");
    copy_policies(&broken);
    break_protected_person_check(&broken);
    let o = gate()
        .args(["policy", "replay", "--dir"])
        .arg(&broken)
        .arg("--audit")
        .arg(&audit)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["replayed"], 2);
    let flips = report["flips"].as_array().unwrap();
    assert_eq!(flips.len(), 1, "{report}");
    assert_eq!(flips[0]["seq"], protected_seq);
    assert_eq!(flips[0]["direction"], "deny->allow");
    assert_eq!(flips[0]["code"], "protectedPerson");
    assert_eq!(flips[0]["policy"], "permit-brp-lookup-for-case");
    assert_eq!(report["groups"][0]["count"], 1);

    let o = gate()
        .args(["policy", "replay", "--dir"])
        .arg(&broken)
        .arg("--audit")
        .arg(&audit)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("{protected_seq},"))
    );

    // An intended change, listed in an accept file, passes.
    let accept = tmp.path().join("accept.json");
    std::fs::write(
        &accept,
        r#"[{"direction": "deny->allow", "code": "protectedPerson", "note": "intended"}]"#,
    )
    .unwrap();
    let o = gate()
        .args(["policy", "replay", "--dir"])
        .arg(&broken)
        .arg("--audit")
        .arg(&audit)
        .arg("--accept")
        .arg(&accept)
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("(accepted)"), "{text}");

    // A period that holds no decision replays nothing.
    let o = gate()
        .args(["policy", "replay", "--dir"])
        .arg(&broken)
        .arg("--audit")
        .arg(&audit)
        .args(["--until", "2000-01-01"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("replayed 0 decision(s)"));
}

#[tokio::test]
async fn explain_names_the_deciding_forbid_and_the_failed_condition_in_words() {
    let (mut h, audit) = recorded_log().await;
    h.stop().await;
    let seq = seq_of(&audit, "protectedPerson");
    let o = gate()
        .args(["policy", "explain", "--audit"])
        .arg(&audit)
        .args(["--seq", &seq.to_string(), "--dir"])
        .arg(common::repo().join("policies"))
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("asked `brp:lookup` of Person 999990639 for case Z-PROTECTED"),
        "{text}"
    );
    assert!(text.contains("recorded: deny `protectedPerson`"), "{text}");
    assert!(
        text.contains("these policies decide: deny `protectedPerson`"),
        "{text}"
    );
    assert!(
        text.contains("permit permit-brp-lookup-for-case: not satisfied"),
        "{text}"
    );
    assert!(
        text.contains("FAILED: the person is not protected"),
        "{text}"
    );
    assert!(
        text.contains("forbid forbid-protected-person: satisfied, decided"),
        "{text}"
    );
    assert!(text.contains("held:   the person is protected"), "{text}");
    assert!(!text.contains("forbid-case-closed: satisfied"), "{text}");

    // A refusal before the policies: says so.
    let refused = common::read_records(&audit)
        .iter()
        .find(|r| r["kind"] == "decision" && r["principal"].is_null())
        .and_then(|r| r["seq"].as_u64())
        .unwrap();
    let o = gate()
        .args(["policy", "explain", "--audit"])
        .arg(&audit)
        .args(["--seq", &refused.to_string(), "--dir"])
        .arg(common::repo().join("policies"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("the policies were not asked"));

    let o = gate()
        .args(["policy", "explain", "--audit"])
        .arg(&audit)
        .args(["--seq", "999999", "--dir"])
        .arg(common::repo().join("policies"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

#[test]
fn coverage_lists_determining_tests_and_conditions_never_false() {
    let o = gate()
        .args(["policy", "test", "--coverage", "--dir"])
        .arg(common::repo().join("policies"))
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(
        text.contains("permit permit-brp-lookup-for-case: reached by")
            && text.contains("every condition falsified"),
        "{text}"
    );
    assert!(text.contains("    determining: "), "{text}");

    // Without the test that refuses a protected person, its condition is never false.
    let tmp = tempfile::tempdir().unwrap();
    copy_policies(tmp.path());
    let file = tmp.path().join("tests/brp-lookup.json");
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let kept: Vec<Value> = cases
        .into_iter()
        .filter(|c| !c["reason"].to_string().contains("forbid-protected-person"))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&kept).unwrap()).unwrap();
    for other in ["break-glass.json", "release.json"] {
        let f = tmp.path().join("tests").join(other);
        let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let kept: Vec<Value> = cases
            .into_iter()
            .filter(|c| !c["request"]["resource"].to_string().contains("999990639"))
            .collect();
        std::fs::write(&f, serde_json::to_vec(&kept).unwrap()).unwrap();
    }
    let o = gate()
        .args(["policy", "test", "--coverage", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let text = out(&o);
    assert!(text.contains("never false: !resource.protected"), "{text}");
}

#[test]
fn replay_and_explain_without_an_answer_from_the_store_exit_2() {
    let policies = common::repo().join("policies");
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let url = "postgres://auditor@127.0.0.1:9/purpose_gate";
    let o = gate()
        .args(["policy", "replay", "--db", url, "--dir"])
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("store unavailable"),
        "{}",
        out(&o)
    );
    let o = gate()
        .args(["policy", "explain", "--db", url, "--seq", "1", "--dir"])
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("store unavailable"),
        "{}",
        out(&o)
    );
    // A directory and a store at once, or neither, is a usage error.
    let o = gate()
        .args(["policy", "replay", "--db", url, "--audit", "/tmp", "--dir"])
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = gate()
        .args(["policy", "explain", "--seq", "1", "--dir"])
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

/// The log of `audit` as a log written before format 1.2: every decision record's `inputs`
/// member removed, and the chain (`prev`) computed again over the new lines.
fn as_written_before_inputs(audit: &Path, to: &Path) {
    use sha2::{Digest, Sha256};
    std::fs::create_dir_all(to).unwrap();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segments.sort();
    let mut prev = "0".repeat(64);
    for seg in segments {
        let mut text = String::new();
        for line in std::fs::read_to_string(&seg).unwrap().lines() {
            let mut line = line.to_string();
            if let Some(start) = line.find(",\"inputs\":{") {
                // The member's object ends at its matching brace (no braces inside strings here).
                let open = start + ",\"inputs\":".len();
                let mut depth = 0;
                let mut end = open;
                for (i, c) in line[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                line.replace_range(start..end, "");
            }
            let at = line.rfind(",\"prev\":\"").unwrap();
            line.replace_range(at.., &format!(",\"prev\":\"{prev}\"}}"));
            prev = hex::encode(Sha256::digest(line.as_bytes()));
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(to.join(seg.file_name().unwrap()), text).unwrap();
    }
}

#[tokio::test]
async fn records_written_before_decision_inputs_replay_as_far_as_they_can() {
    let (mut h, audit) = recorded_log().await;
    // A break-glass lookup: no case, so it can be replayed without its inputs.
    let nood = h.token("emp-900", "0363", &["noodtoegang"]);
    let auth = format!("Bearer {nood}");
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-break-glass", common::BG_REASON),
            ],
            Some(&common::raadpleeg(&["999990639"], &["naam"]).to_string()),
        )
        .await;
    assert_eq!(a.status, 200);
    h.stop().await;
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    as_written_before_inputs(&audit, &old);
    assert!(
        !std::fs::read_to_string(
            old.join(
                std::fs::read_dir(&old)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .file_name()
            )
        )
        .unwrap()
        .contains("\"inputs\""),
        "the old log has no inputs"
    );
    // The rewritten log is a valid chain, as a log of that version was.
    let v = gate()
        .args(["audit", "verify", "--dir"])
        .arg(&old)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0), "{}", out(&v));

    let o = gate()
        .args(["policy", "replay", "--dir"])
        .arg(common::repo().join("policies"))
        .arg("--audit")
        .arg(&old)
        .output()
        .unwrap();
    let text = out(&o);
    // The break-glass decision is replayed (approximately: counters 0), unchanged; the two
    // decisions under a case are named as not replayable, with the reason.
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("replayed 1 decision(s): 1 unchanged, 0 changed"),
        "{text}"
    );
    assert!(
        text.contains("1 approximate (before audit format 1.2)"),
        "{text}"
    );
    assert!(text.contains("could not replay 2 decision(s):"), "{text}");
    assert!(
        text.contains("written before audit format 1.2: the case as it was is not kept"),
        "{text}"
    );
}
