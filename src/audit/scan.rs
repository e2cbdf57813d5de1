//! Recovery on open: find where the chain ends, repair a torn last line, refuse real damage.
//!
//! Guarantees: earlier segments are checked at their boundaries (first line continues the
//! chain of the previous segment, last line is complete and readable); the last segment is
//! checked line by line. A torn last line of the last segment (no trailing newline, or not a
//! record) is cut off and the file synced, so the chain continues from the last good line.
//! Refuses (with the segment file, line and seq): a missing segment, an empty segment that is
//! not the last, an unreadable line before the last one, any seq gap or `prev` mismatch.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::format::{
    Chain, LineFault, display_name, list_segments, parse_record, segment_file_name,
};
use super::reader::LineReader;

/// Where the writer continues after open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Number of the segment to append to.
    pub segment: u64,
    pub path: PathBuf,
    /// Length of the good prefix of that segment (after any truncation).
    pub len: u64,
    /// Chain state at the start of that segment.
    pub segment_start: Chain,
    /// Chain state after its last good line.
    pub chain: Chain,
    /// Bytes cut off a torn last line, with the reason.
    pub truncated: Option<(u64, String)>,
}

/// Scans `dir` (which exists) and returns where the chain ends, repairing a torn tail.
pub(crate) fn recover_dir(dir: &Path) -> Result<Tail, AuditError> {
    let segments = list_segments(dir)
        .map_err(|e| AuditError::Unavailable(format!("cannot list `{}`: {e}", dir.display())))?;
    let Some(((last_no, last_path), earlier)) = segments.split_last() else {
        return Ok(Tail {
            segment: 1,
            path: dir.join(segment_file_name(1)),
            len: 0,
            segment_start: Chain::genesis(),
            chain: Chain::genesis(),
            truncated: None,
        });
    };
    for (i, (n, _)) in segments.iter().enumerate() {
        let expected = i as u64 + 1;
        if *n != expected {
            return Err(AuditError::DamagedSegment {
                file: segment_file_name(expected),
                detail: format!("segment is missing (next present segment is {n})"),
            });
        }
    }
    let mut chain = Chain::genesis();
    for (_, path) in earlier {
        chain = check_boundaries(path, chain)?;
    }
    let (len, end, truncated) = scan_segment(last_path, chain, true)?;
    Ok(Tail {
        segment: *last_no,
        path: last_path.clone(),
        len,
        segment_start: chain,
        chain: end,
        truncated,
    })
}

fn damaged(path: &Path, line: u64, fault: &LineFault) -> AuditError {
    AuditError::Damaged {
        file: display_name(path),
        line,
        detail: fault.to_string(),
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> AuditError {
    AuditError::Unavailable(format!("cannot {what} `{}`: {e}", display_name(path)))
}

/// Checks the first and the last line of a segment that is not the last one and returns the
/// chain state after it.
fn check_boundaries(path: &Path, mut chain: Chain) -> Result<Chain, AuditError> {
    let mut reader = LineReader::open(path).map_err(|e| io_error(path, "open", e))?;
    if !reader.read_next().map_err(|e| io_error(path, "read", e))? {
        return Err(AuditError::DamagedSegment {
            file: display_name(path),
            detail: "segment is empty but is not the last segment".into(),
        });
    }
    let first = reader.line();
    if !first.terminated {
        return Err(damaged(
            path,
            1,
            &LineFault::Unreadable("line has no trailing newline (torn write)".into()),
        ));
    }
    let first_hash_state = {
        let mut c = chain;
        c.check(first.bytes).map_err(|f| damaged(path, 1, &f))?;
        c
    };
    let (last, terminated) = read_last_line(path).map_err(|e| io_error(path, "read", e))?;
    if !terminated {
        return Err(AuditError::DamagedSegment {
            file: display_name(path),
            detail: "last line has no trailing newline but the segment is not the last".into(),
        });
    }
    if last.as_slice() == first.bytes {
        return Ok(first_hash_state);
    }
    let record = parse_record(&last).map_err(|m| AuditError::DamagedSegment {
        file: display_name(path),
        detail: format!("last line: {m}"),
    })?;
    if record.seq() < first_hash_state.next_seq {
        return Err(AuditError::DamagedSegment {
            file: display_name(path),
            detail: format!(
                "last line has seq {} but the segment starts at seq {}",
                record.seq(),
                chain.next_seq
            ),
        });
    }
    chain.next_seq = record.seq();
    chain.advance(&last);
    Ok(chain)
}

/// The last line of a file (without its newline) and whether it was terminated.
fn read_last_line(path: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    const CHUNK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((Vec::new(), false));
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let terminated = last[0] == b'\n';
    let end = if terminated { len - 1 } else { len };
    let mut line: Vec<u8> = Vec::new();
    let mut pos = end;
    let mut chunk = Vec::new();
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK);
        chunk.resize((pos - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let mut out = chunk.split_off(i + 1);
            out.extend_from_slice(&line);
            return Ok((out, terminated));
        }
        chunk.extend_from_slice(&line);
        std::mem::swap(&mut line, &mut chunk);
        pos = start;
    }
    Ok((line, terminated))
}

/// Scans a whole segment from chain state `start`; returns the good length, the chain state
/// after the last good line and what was cut off. With `repair`, a torn last line is truncated
/// (and the file synced); without, it is an error.
pub(crate) fn scan_segment(
    path: &Path,
    start: Chain,
    repair: bool,
) -> Result<(u64, Chain, Option<(u64, String)>), AuditError> {
    let mut chain = start;
    let mut good_len = 0u64;
    let mut reader = LineReader::open(path).map_err(|e| io_error(path, "open", e))?;
    let mut torn: Option<(u64, String)> = None;
    while reader.read_next().map_err(|e| io_error(path, "read", e))? {
        let line = reader.line();
        let number = line.number;
        let line_start = line.start;
        let fault = if !line.terminated {
            Some(LineFault::Unreadable(
                "line has no trailing newline (torn write)".into(),
            ))
        } else {
            match chain.check(line.bytes) {
                Ok(_) => None,
                Err(f) => Some(f),
            }
        };
        match fault {
            None => good_len = line_start + line.bytes.len() as u64 + 1,
            Some(fault) => {
                let is_last = !reader.read_next().map_err(|e| io_error(path, "read", e))?;
                let tearable = matches!(fault, LineFault::Unreadable(_));
                if !(repair && is_last && tearable) {
                    return Err(damaged(path, number, &fault));
                }
                torn = Some((number, fault.to_string()));
                break;
            }
        }
    }
    let file_len = std::fs::metadata(path)
        .map_err(|e| io_error(path, "read", e))?
        .len();
    let truncated = match torn {
        Some((number, why)) => {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io_error(path, "open", e))?;
            file.set_len(good_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(path, "truncate the torn tail of", e))?;
            Some((file_len - good_len, format!("line {number}: {why}")))
        }
        None => None,
    };
    Ok((good_len, chain, truncated))
}
