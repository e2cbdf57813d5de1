//! The purpose headers: `name: value` lines become a header map; parsing never panics.
#![no_main]
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use purpose_gate::config::HeadersConfig;
use purpose_gate::purpose::parse_purpose;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(n, v);
        }
    }
    if let Ok(p) = parse_purpose(&headers, &HeadersConfig::default()) {
        if let Some(id) = p.case_id {
            assert!(!id.is_empty() && id.len() <= 64);
        }
    }
});
