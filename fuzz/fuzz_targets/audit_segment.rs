//! The audit segment reader: every line through `parse_record`, then the bytes as the only
//! segment of a directory for `verify` and `AuditLog::open` (recovery). Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use purpose_gate::audit::{AuditLog, AuditOptions, parse_record, segment_file_name, verify};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        let _ = parse_record(line);
    }
    let Ok(dir) = tempfile_dir() else { return };
    if std::fs::write(dir.join(segment_file_name(1)), data).is_err() {
        return;
    }
    let _ = verify(&dir);
    if let Ok(log) = AuditLog::open(&AuditOptions { dir: dir.clone(), segment_max_bytes: 1 << 20, max_batch: 64 }) {
        drop(log);
    }
    let _ = std::fs::remove_dir_all(&dir);
});

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pg-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
