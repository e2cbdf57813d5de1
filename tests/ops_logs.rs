//! Operational logs: one span per request with its id; never a token or a BSN.
//! (Its own test binary: it installs the process-wide subscriber.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Harness, Options, raadpleeg};
use purpose_gate::config::{LogConfig, LogFormat};

/// A `MakeWriter` appending every line to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn request_logs_carry_the_request_id_and_never_a_token_or_bsn() {
    let capture = Capture::default();
    purpose_gate::logging::init(
        &LogConfig {
            format: LogFormat::Json,
            level: Some("trace".into()),
        },
        capture.clone(),
    )
    .unwrap();
    let h = Harness::start_with(Options::default()).await;
    let token = h.emp042();
    let bsns = ["999993653", "999991802", "999990639"];
    // Allowed, denied (protected person), case not found, invalid token, bad body.
    let a = h
        .brp(&token, Some("Z-OPEN"), &raadpleeg(&bsns[..2], &["naam"]))
        .await;
    assert_eq!(a.status, 200);
    let denied = h
        .brp(
            &token,
            Some("Z-PROTECTED"),
            &raadpleeg(&bsns[2..], &["naam"]),
        )
        .await;
    assert_eq!(denied.status, 403);
    let a = h
        .brp(&token, Some("Z-NOPE"), &raadpleeg(&bsns[..1], &["naam"]))
        .await;
    assert_eq!(a.status, 403);
    let a = h
        .brp(
            "not.a.token",
            Some("Z-OPEN"),
            &raadpleeg(&bsns[..1], &["naam"]),
        )
        .await;
    assert_eq!(a.status, 401);
    let a = h
        .send(
            "POST",
            "/haalcentraal/api/brp/personen",
            &[("authorization", &format!("Bearer {token}")), ("x-case-id", "Z-OPEN")],
            Some(r#"{"type":"RaadpleegMetBurgerservicenummer","burgerservicenummer":["999993654"],"fields":["naam"]}"#),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = h.send("GET", "/brp/personen/999993653", &[], None).await;
    assert_eq!(a.status, 404);

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The refusal of the protected person was logged inside its request's span.
    let request_id = denied.request_id();
    let line = text
        .lines()
        .find(|l| l.contains(&request_id) && l.contains("refused"))
        .unwrap_or_else(|| panic!("no refused line with the request id in:\n{text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["span"]["request_id"], request_id.as_str());
    assert_eq!(v["fields"]["code"], "protectedPerson");

    for secret in bsns
        .iter()
        .chain(&["999993654", token.as_str(), "upstream-secret"])
    {
        assert!(!text.contains(secret), "`{secret}` in the logs:\n{text}");
    }
    // The token's signature alone neither.
    let sig = token.rsplit('.').next().unwrap();
    assert!(!text.contains(sig));
}
