//! Config parsing: never panics, errors are non-empty one-liners.
#![no_main]
use libfuzzer_sys::fuzz_target;
use purpose_gate::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Config::parse(text, std::path::Path::new(".")) {
            assert!(!e.is_empty());
        }
    }
});
