//! The Haal Centraal `Foutbericht` contract as a test oracle: every problem+json answer is checked
//! against the official BRP Personen spec's schema (`Foutbericht`, for a 400
//! `BadRequestFoutbericht`; patterns and `format: uri` included), compiled at test time from
//! `../shared/reference/brp-personen-openapi.yaml` beside the repository (or the file named by
//! `BRP_PERSONEN_SPEC`) with the `jsonschema` crate. Where the spec is absent the schema part is
//! skipped with a message, and the project's own contract is still checked: all six members
//! present, `status` equal to the HTTP status, and `invalidParams` on every 400.
//!
//! Used by the shared harness (every answer it sees, raw HTTP included) and by `error.rs`'s unit
//! tests (every `GateError` variant and every policy `@code`).

#![allow(dead_code)] // each test crate uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test equipment: a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

/// The spec's two error schemas, compiled.
pub struct Spec {
    foutbericht: jsonschema::Validator,
    bad_request: jsonschema::Validator,
}

/// Problem answers checked so far in this test binary.
pub static CHECKED: AtomicUsize = AtomicUsize::new(0);

/// Where the spec is read from.
pub fn spec_path() -> PathBuf {
    std::env::var_os("BRP_PERSONEN_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/reference/brp-personen-openapi.yaml")
        })
}

/// The compiled schemas, or `None` (said once on stderr) when the spec file is absent.
pub fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "skipping the Foutbericht schema check: cannot read {} ({e}); only the \
                     project's own problem contract is checked",
                    path.display()
                );
                return None;
            }
        };
        let doc: Value = serde_norway::from_str(&text).expect("the BRP Personen spec is YAML");
        let components = doc["components"].clone();
        assert!(
            components["schemas"]["Foutbericht"].is_object(),
            "the spec has components.schemas.Foutbericht"
        );
        let compile = |name: &str| {
            let schema = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/components/schemas/{name}"),
                "components": components,
            });
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("the spec's {name} compiles: {e}"))
        };
        Some(Spec {
            foutbericht: compile("Foutbericht"),
            bad_request: compile("BadRequestFoutbericht"),
        })
    })
    .as_ref()
}

/// Checks one problem+json body answered with `status`.
pub fn check(status: u16, body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("not a JSON object".into());
    };
    for key in ["type", "title", "status", "detail", "instance", "code"] {
        if !obj.contains_key(key) {
            return Err(format!("no `{key}` member"));
        }
    }
    if v["status"] != json!(status) {
        return Err(format!(
            "`status` is {} but the HTTP status is {status}",
            v["status"]
        ));
    }
    if status == 400 && v["invalidParams"].as_array().is_none_or(|a| a.is_empty()) {
        return Err("a 400 without `invalidParams`".into());
    }
    if let Some(spec) = spec() {
        let (validator, name) = if status == 400 {
            (&spec.bad_request, "BadRequestFoutbericht")
        } else {
            (&spec.foutbericht, "Foutbericht")
        };
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{e} (at `{}`)", e.instance_path()))
            .collect();
        if !errors.is_empty() {
            return Err(format!("not a {name}: {}", errors.join("; ")));
        }
    }
    CHECKED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Panics (the test fails) unless `body` is a valid problem answer for `status`.
pub fn assert_valid(status: u16, body: &[u8], context: &str) {
    if let Err(e) = check(status, body) {
        panic!(
            "{context}: the {status} problem+json answer breaks the Haal Centraal Foutbericht \
             contract: {e}\nbody: {}",
            String::from_utf8_lossy(body)
        );
    }
}

/// Whether a `Content-Type` value is `application/problem+json` (parameters allowed).
pub fn is_problem_type(content_type: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    ct.split(';').next().map(str::trim) == Some("application/problem+json")
}

/// Checks every problem+json answer in a raw HTTP/1.1 byte stream (several answers on one
/// connection included; bodies framed by `Content-Length`); returns how many were checked.
pub fn assert_valid_raw(raw: &[u8], context: &str) -> usize {
    let mut rest = raw;
    let mut checked = 0;
    while let Some(start) = find(rest, b"HTTP/1.") {
        rest = &rest[start..];
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let body_start = head_end + 4;
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut problem = false;
        let mut length: Option<usize> = None;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-type" {
                    problem = is_problem_type(v.trim().as_bytes());
                } else if k == "content-length" {
                    length = v.trim().parse().ok();
                }
            }
        }
        let len = length.unwrap_or(0);
        let Some(body) = rest.get(body_start..body_start + len) else {
            // A cut-off answer (the test closed early): nothing complete to check.
            break;
        };
        if problem {
            assert_valid(status, body, context);
            checked += 1;
        }
        rest = &rest[body_start + len..];
    }
    checked
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
