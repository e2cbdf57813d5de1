//! BSN and kenteken parsing: never panics; accepted values are canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use purpose_gate::model::{Bsn, Kenteken};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(b) = Bsn::parse(&s) {
        assert!(b.as_str().len() == 9 && b.as_str().bytes().all(|c| c.is_ascii_digit()));
    }
    if let Ok(k) = Kenteken::parse(&s) {
        assert!(k.as_str().len() == 6);
        assert!(k.as_str().bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    }
});
