//! Path ambiguity: non-canonical request targets are refused before any stage runs, and never
//! reach a registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Harness;

#[tokio::test]
async fn ambiguous_paths_get_400_and_never_reach_the_registry() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.emp042());
    let variants = [
        "/rdw/voertuigen/%2e%2e/voertuigen/XX999X",
        "/rdw/voertuigen/XX999X/%2e%2e/tenaamstelling",
        "/rdw/voertuigen/XX999X%2ftenaamstelling",
        "/rdw/voertuigen/XX999X%2Ftenaamstelling",
        "/rdw/voertuigen/XX999X%5ctenaamstelling",
        "/rdw//voertuigen/XX999X",
        "/rdw/./voertuigen/XX999X",
        "/rdw/voertuigen/../voertuigen/XX999X",
        "/rdw/voertuigen/XX999X/",
        "/rdw/voertuigen/XX999X/tenaamstelling/",
        "/rdw/voertuigen/XX999X.",
        "/rdw/voertuigen/XX999X;jsessionid=1",
        "/rdw/voertuigen;x=1/XX999X",
        "/rdw/voertuigen/%58X999X",
        "/rdw/voertuigen/XX999X%00",
        "/rdw/voertuigen/%c0%aeXX999X",
        "/rdw/voertuigen/%EF%BC%B8X999X",
        "/haalcentraal/api/brp//personen",
        "/haalcentraal/api/brp/./personen",
        "/haalcentraal/api/brp/personen/",
        "/haalcentraal/api/brp/personen%2f",
        "/haalcentraal/api/brp/x/../personen",
        "/rdw/voertuigen/XX999X?x=1",
    ];
    for v in variants {
        let a = h
            .send(
                "GET",
                v,
                &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
                None,
            )
            .await;
        assert_eq!(a.status, 400, "{v}: {}", a.status);
        assert!(a.is_problem(), "{v}");
        assert_eq!(a.code(), "invalidPath", "{v}");
    }
    for (method, v, status) in [
        ("GET", "/RDW/voertuigen/XX999X", 404),
        ("GET", "/rdw/Voertuigen/XX999X", 404),
        ("GET", "/rdw/voertuigen", 404),
        ("GET", "/haalcentraal/api/brp/personen", 405),
        ("DELETE", "/rdw/voertuigen/XX999X", 405),
        ("GET", "/nope", 404),
    ] {
        let a = h.send(method, v, &[("authorization", &auth)], None).await;
        assert_eq!(a.status, status, "{method} {v}");
        assert!(a.is_problem(), "{v}");
        if status == 405 {
            assert!(
                a.headers.contains_key("allow"),
                "{v}: 405 names the allowed methods"
            );
        }
    }
    // The canonical form of the same request passes.
    let a = h
        .send_raw_target(
            "GET",
            &format!("http://{}/rdw/voertuigen/XX999X", h.addr),
            &[("authorization", &auth), ("x-case-id", "Z-OPEN")],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "a plain origin-form request passes");
    assert_eq!(
        h.registry.seen_count(),
        1,
        "only the canonical request reached the registry"
    );
}

#[tokio::test]
async fn absolute_form_and_asterisk_targets_are_refused() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.emp042());
    for target in [
        "http://registry.internal/rdw/voertuigen/XX999X",
        "//rdw/voertuigen/XX999X",
        "*",
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Case-Id: Z-OPEN\r\nConnection: close\r\n\r\n"
        );
        let resp = common::raw_http(h.addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
    }
    assert_eq!(h.registry.seen_count(), 0);
}
