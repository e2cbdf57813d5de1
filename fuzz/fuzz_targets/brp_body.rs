//! The BRP body parser: never panics; an accepted body is UTF-8 JSON within the documented limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use purpose_gate::resource::{MAX_BSNS, MAX_FIELDS, parse_brp_body};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = parse_brp_body(data) {
        assert!(std::str::from_utf8(data).is_ok());
        assert!(!s.fields.is_empty() && s.fields.len() <= MAX_FIELDS);
        assert!(!s.resources.is_empty() && s.resources.len() <= MAX_BSNS);
    }
});
