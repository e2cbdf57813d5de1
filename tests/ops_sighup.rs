//! SIGHUP reloads policies (its own test binary: the signal goes to the whole process).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Harness, Options, raadpleeg, repo};

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_policies_and_the_case_file() {
    let pdir = tempfile::tempdir().unwrap();
    for f in ["gate.cedar", "gate.cedarschema", "entities.json"] {
        std::fs::copy(repo().join("policies").join(f), pdir.path().join(f)).unwrap();
    }
    let h = Harness::start_with(Options {
        policies_dir: Some(pdir.path().to_path_buf()),
        policies_extra: "poll_interval = \"0s\"".into(),
        extra_config: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let q = raadpleeg(&["999993653"], &["naam"]);
    assert_eq!(h.brp(&h.emp042(), Some("Z-OPEN"), &q).await.status, 200);

    let mut text = std::fs::read_to_string(pdir.path().join("gate.cedar")).unwrap();
    text.push_str(
        "\n@id(\"forbid-freeze\")\n@code(\"frozen\")\n@reason(\"frozen\")\nforbid (principal, action, resource);\n",
    );
    std::fs::write(pdir.path().join("gate.cedar"), text).unwrap();
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    // Wait (bounded) for the reload to be recorded.
    let mut swapped = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if h.records().iter().any(|r| r["kind"] == "config") {
            swapped = true;
            break;
        }
    }
    assert!(swapped, "SIGHUP wrote a config record");
    let a = h.brp(&h.emp042(), Some("Z-OPEN"), &q).await;
    assert_eq!(a.code(), "frozen");
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("purpose_gate_reloads_total{what=\"cases\",result=\"ok\"} 1"),
        "{metrics}"
    );
    // The JWKS file did not change: nothing to reload, nothing counted.
    assert!(
        !metrics.contains("purpose_gate_reloads_total{what=\"jwks\""),
        "{metrics}"
    );
}
