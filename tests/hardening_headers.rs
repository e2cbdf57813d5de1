//! Hardening: header spoofing. Every identity, credential, forwarding or tracing header a client
//! sends reaches the registry only as the gate sets it (or not at all), on every route; repeated
//! purpose headers are refused, never "first wins".

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Harness, raadpleeg};

/// Headers a client might send to impersonate someone, smuggle a credential, or steer the
/// registry (name, value as sent).
const SPOOFED: &[(&str, &str)] = &[
    ("x-gebruiker", "emp-999"),
    ("x-user", "emp-999"),
    ("x-remote-user", "emp-999"),
    ("x-employee-id", "emp-999"),
    ("remote-user", "emp-999"),
    ("x-api-key", "client-chosen-key"),
    ("x-request-id", "client-chosen-request-id"),
    ("x-correlation-id", "client-chosen-correlation"),
    ("forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-prefix", "/admin"),
    ("x-real-ip", "6.6.6.6"),
    ("x-client-ip", "6.6.6.6"),
    ("true-client-ip", "6.6.6.6"),
    ("proxy-authorization", "Basic Y2xpZW50OnNlY3JldA=="),
    ("cookie", "session=client-session"),
    ("x-original-url", "/voertuigen/AB123C/tenaamstelling"),
    ("x-rewrite-url", "/voertuigen/AB123C/tenaamstelling"),
    ("x-http-method-override", "DELETE"),
    ("x-case-id-override", "Z-OTHER-ORG"),
    ("x-break-glass-override", "spoofed"),
    ("authorization-upstream", "Bearer spoofed"),
    ("x-amzn-oidc-identity", "emp-999"),
    ("x-ms-client-principal-name", "emp-999"),
    ("traceparent", "garbage-trace-parent"),
];

fn assert_not_passed_as_sent(seen: &common::registry::SeenRequest, what: &str) {
    for (name, sent) in SPOOFED {
        for v in seen.headers.get_all(*name) {
            assert_ne!(
                v.as_bytes(),
                sent.as_bytes(),
                "{what}: `{name}` reached the registry as the client sent it"
            );
        }
    }
    // What the gate sets, exactly once each.
    assert_eq!(
        seen.headers.get_all("x-request-id").iter().count(),
        1,
        "{what}"
    );
    assert_eq!(
        seen.headers.get_all("traceparent").iter().count(),
        1,
        "{what}"
    );
    for name in [
        "authorization",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "proxy-authorization",
        "x-gebruiker",
    ] {
        assert_eq!(seen.header(name), None, "{what}: `{name}` was passed on");
    }
    let host = seen.header("host").unwrap_or("");
    assert!(host.starts_with("127.0.0.1:"), "{what}: host `{host}`");
}

#[tokio::test]
async fn spoofed_identity_and_credential_headers_never_reach_the_registry_as_sent() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.emp042());
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let mut headers: Vec<(&str, &str)> = vec![
        ("authorization", &auth),
        ("content-type", "application/json"),
        ("x-case-id", "Z-OPEN"),
        ("host", "evil.example"),
    ];
    headers.extend_from_slice(SPOOFED);

    // BRP: the upstream has a configured API key.
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &headers,
            Some(&body),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let seen = h.registry.last_seen().unwrap();
    assert_not_passed_as_sent(&seen, "brp");
    let keys: Vec<&[u8]> = seen
        .headers
        .get_all("x-api-key")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(
        keys,
        vec![&b"upstream-secret"[..]],
        "only the configured key"
    );
    let rid = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(seen.header("x-request-id"), Some(rid));
    let d = h
        .records()
        .into_iter()
        .find(|r| r["request_id"] == rid && r["kind"] == "decision")
        .unwrap();
    assert_eq!(
        d["principal"]["id"], "emp-042",
        "identity comes from the token"
    );
    assert_eq!(
        d["request"]["client_ip"], "127.0.0.1",
        "not X-Forwarded-For"
    );

    // RDW: no configured key, so a client key must not appear at all.
    let a = h
        .send("GET", "/rdw/voertuigen/XX999X", &headers, None)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let seen = h.registry.last_seen().unwrap();
    assert_not_passed_as_sent(&seen, "rdw");
    assert_eq!(seen.header("x-api-key"), None, "rdw: the client's key");
    assert_eq!(seen.path, "/voertuigen/XX999X", "no override of the path");
    assert_eq!(seen.method, "GET", "no override of the method");
    assert_eq!(h.registry.seen_count(), 2);
}

#[tokio::test]
async fn repeated_and_odd_cased_credential_headers_over_raw_http_are_not_passed_on() {
    let h = Harness::start().await;
    let body = raadpleeg(&["999993653"], &["naam"]).to_string();
    let req = format!(
        "POST /haalcentraal/api/brp/personen HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {tok}\r\n\
         X-Case-Id: Z-OPEN\r\nContent-Type: application/json\r\nX-API-KEY: first-client-key\r\n\
         x-api-key: second-client-key\r\nX-Request-ID: one\r\nx-request-id: two\r\n\
         TRACEPARENT: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         traceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nCookie: a=1\r\nCookie: b=2\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        tok = h.emp042(),
        len = body.len()
    );
    let resp = common::raw_http(h.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = h.registry.last_seen().unwrap();
    let keys: Vec<&[u8]> = seen
        .headers
        .get_all("x-api-key")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(keys, vec![&b"upstream-secret"[..]]);
    let rids: Vec<&str> = seen
        .headers
        .get_all("x-request-id")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(rids.len(), 1);
    assert!(rids[0] != "one" && rids[0] != "two");
    assert_eq!(seen.headers.get_all("traceparent").iter().count(), 1);
    assert_eq!(seen.header("x-forwarded-for"), None);
    assert_eq!(seen.header("cookie"), None);
}

#[tokio::test]
async fn garbage_traceparent_is_replaced_never_passed_on() {
    let h = Harness::start().await;
    let auth = format!("Bearer {}", h.emp042());
    for garbage in [
        "garbage",
        "",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx-api-key: injected",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, 00-1-2-3",
    ] {
        let before = h.registry.seen_count();
        let a = h
            .send(
                "GET",
                "/rdw/voertuigen/XX999X",
                &[
                    ("authorization", &auth),
                    ("x-case-id", "Z-OPEN"),
                    ("traceparent", &garbage.replace("\r\n", " ")),
                ],
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{garbage:?}");
        assert_eq!(h.registry.seen_count(), before + 1);
        let seen = h.registry.last_seen().unwrap();
        let tp = seen.header("traceparent").unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{garbage:?} gave {tp}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert!(
            tp.bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{garbage:?} gave {tp}"
        );
        assert_ne!(parts[1], "00000000000000000000000000000000");
        assert_ne!(tp, garbage);
        assert_eq!(seen.header("x-api-key"), None, "{garbage:?}: injected");
    }
}

#[tokio::test]
async fn repeated_purpose_headers_are_refused_and_recorded() {
    let h = Harness::start().await;
    let q = raadpleeg(&["999993653"], &["naam"]).to_string();
    let tok = h.emp042();
    let reason = "X-Break-Glass: levensbedreigende situatie, melding 112 van vannacht\r\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "two case ids",
            "X-Case-Id: Z-OPEN\r\nX-Case-Id: Z-OTHER-ORG\r\n",
            "invalidPurposeHeader",
        ),
        (
            "two equal case ids",
            "X-Case-Id: Z-OPEN\r\nx-case-id: Z-OPEN\r\n",
            "invalidPurposeHeader",
        ),
        (
            "case ids in one list",
            "X-Case-Id: Z-OPEN, Z-OTHER-ORG\r\n",
            "invalidCaseId",
        ),
        (
            "two break-glass reasons",
            &format!("{reason}{reason}"),
            "invalidPurposeHeader",
        ),
        (
            "two doelbindingen",
            "X-Case-Id: Z-OPEN\r\nX-Doelbinding: PV-parkeren\r\nX-Doelbinding: BRP-alles\r\n",
            "invalidPurposeHeader",
        ),
        (
            "two verwerkingen",
            "X-Case-Id: Z-OPEN\r\nX-Verwerking: a\r\nX-Verwerking: b\r\n",
            "invalidPurposeHeader",
        ),
        (
            "case id with a space",
            "X-Case-Id: Z-OPEN Z-OTHER-ORG\r\n",
            "invalidCaseId",
        ),
        (
            "case id with non-ascii",
            "X-Case-Id: Z-OPEN\u{00e9}\r\n",
            "invalidCaseId",
        ),
    ];
    for (what, purpose, code) in cases {
        let req = format!(
            "POST /haalcentraal/api/brp/personen HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {tok}\r\n\
             Content-Type: application/json\r\n{purpose}Content-Length: {}\r\nConnection: close\r\n\r\n{q}",
            q.len()
        );
        let resp = common::raw_http(h.addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(
            resp.contains(&format!("\"code\":\"{code}\"")),
            "{what}: {resp}"
        );
        assert_eq!(h.registry.seen_count(), 0, "{what}: forwarded");
    }
    let denied: Vec<_> = h
        .records()
        .into_iter()
        .filter(|r| r["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), cases.len(), "every refusal is recorded");
    assert!(denied.iter().all(|r| r["principal"]["id"] == "emp-042"));
}
