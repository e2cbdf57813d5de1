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
