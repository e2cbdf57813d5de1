//! `[policies] evaluator`: a gate configured with Cedar's own evaluator and one with the
//! prepared evaluator (the default) answer the same requests with the same status, code and
//! audit decision (policies, reasons, code, errors), and each says which evaluator it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{BG_REASON, Harness, Options, raadpleeg};
use serde_json::{Value, json};

async fn gate(evaluator: Option<&str>) -> Harness {
    Harness::start_with(Options {
        policies_extra: evaluator
            .map(|e| format!("evaluator = \"{e}\""))
            .unwrap_or_default(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await
}

/// The `evaluator` label of `purpose_gate_policy_info`.
async fn evaluator_metric(h: &Harness) -> String {
    let (status, text) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let line = text
        .lines()
        .find(|l| l.starts_with("purpose_gate_policy_info{"))
        .expect("policy info metric");
    line.split("evaluator=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("evaluator label")
        .to_string()
}

/// A token, a case, a body and extra headers.
type Req<'a> = (String, Option<&'a str>, Value, Vec<(&'a str, &'a str)>);

/// What a request's answer and its decision records say, without ids and times.
async fn answers(h: &Harness) -> Vec<Value> {
    let emp042 = h.emp042();
    let emp311 = h.token("emp-311", "0363", &["burgerzaken"]);
    let emp900 = h.token("emp-900", "0363", &["noodtoegang"]);
    let lookup = |bsn: &str, fields: &[&str]| raadpleeg(&[bsn], fields);
    let mut out = Vec::new();
    let requests: Vec<Req> = vec![
        (
            emp042.clone(),
            Some("Z-OPEN"),
            lookup("999993653", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-CLOSED"),
            lookup("999993653", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-ENDED"),
            lookup("999993653", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-OTHER-ORG"),
            lookup("999993653", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-PROTECTED"),
            lookup("999990639", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-UNKNOWN-TYPE"),
            lookup("999993653", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-OPEN"),
            lookup("999993872", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            Some("Z-OPEN"),
            lookup("999993653", &["naam", "verblijfplaats", "nationaliteiten"]),
            vec![],
        ),
        (
            emp311.clone(),
            Some("Z-BURGERZAKEN"),
            lookup("999990639", &["naam"]),
            vec![],
        ),
        (
            emp042.clone(),
            None,
            lookup("999993653", &["naam"]),
            vec![("x-break-glass", BG_REASON)],
        ),
        (
            emp900.clone(),
            None,
            lookup("999993653", &["naam"]),
            vec![("x-break-glass", BG_REASON)],
        ),
        (
            emp311.clone(),
            None,
            lookup("999993653", &["naam"]),
            vec![("x-break-glass", BG_REASON)],
        ),
    ];
    for (token, case, body, extra) in requests {
        let auth = format!("Bearer {token}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(c) = case {
            headers.push(("x-case-id", c));
        }
        headers.extend(extra);
        let a = h
            .send(
                "POST",
                "/haalcentraal/api/brp/personen",
                &headers,
                Some(&body.to_string()),
            )
            .await;
        let rid = a.headers["x-request-id"].to_str().unwrap().to_string();
        let decisions: Vec<Value> = h
            .records_of(&rid)
            .into_iter()
            .filter(|r| r["kind"] == "decision")
            .map(|r| {
                json!({
                    "decision": r["decision"], "policies": r["policies"], "reasons": r["reasons"],
                    "code": r["code"], "errors": r["errors"],
                })
            })
            .collect();
        out.push(json!({
            "case": case, "status": a.status.as_u16(), "code": a.code(), "decisions": decisions,
        }));
    }
    out
}

#[tokio::test]
async fn cedar_and_prepared_evaluators_configured_in_the_gate_answer_alike() {
    let mut prepared = gate(None).await;
    let mut cedar = gate(Some("cedar")).await;
    // The configuration takes effect, and the default is the prepared evaluator.
    assert_eq!(evaluator_metric(&prepared).await, "prepared");
    assert_eq!(evaluator_metric(&cedar).await, "cedar");

    let by_prepared = answers(&prepared).await;
    let by_cedar = answers(&cedar).await;
    assert_eq!(by_prepared, by_cedar);

    // The requests cover an allow, denies by forbids with their codes, a deny because no
    // permit applied or a policy error, and every one of them left a decision record.
    let status = |s: u16| by_cedar.iter().filter(|a| a["status"] == s).count();
    assert!(status(200) >= 2, "{by_cedar:#?}");
    assert!(status(403) >= 5, "{by_cedar:#?}");
    let codes: Vec<&str> = by_cedar
        .iter()
        .filter_map(|a| a["code"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    for code in ["caseClosed", "protectedPerson"] {
        assert!(codes.contains(&code), "{code} not in {codes:?}");
    }
    assert!(
        by_cedar
            .iter()
            .all(|a| !a["decisions"].as_array().unwrap().is_empty()),
        "{by_cedar:#?}"
    );
    prepared.stop().await;
    cedar.stop().await;
}
