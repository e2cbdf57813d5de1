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

/// A scanned segment: good length, chain state after the last good line, and what was cut off.
pub(crate) type SegmentScan = (u64, Chain, Option<(u64, String)>);

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
pub(crate) fn read_last_line(path: &Path) -> std::io::Result<(Vec<u8>, bool)> {
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
) -> Result<SegmentScan, AuditError> {
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
            chain.check(line.bytes).err()
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::testutil::{decision, options, outcome};
    use crate::{AuditLog, verify};

    async fn write_log(dir: &Path, max: u64, n: usize) {
        let log = AuditLog::open(&options(dir, max)).unwrap();
        for i in 0..n {
            let id = format!("r{i}");
            let body = if i % 2 == 0 {
                decision(&id)
            } else {
                outcome(&id)
            };
            log.append(vec![body]).await.unwrap();
        }
        log.close().await;
    }

    fn segment(dir: &Path, n: u64) -> PathBuf {
        dir.join(segment_file_name(n))
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    fn rewrite_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        edit(&mut lines);
        let mut out = lines.join("\n");
        out.push('\n');
        std::fs::write(path, out).unwrap();
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 3).await;
        let path = segment(dir.path(), 1);
        let good = std::fs::metadata(&path).unwrap().len();
        append_raw(&path, b"{\"seq\":4,\"time\":\"2026-");

        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        assert_eq!(log.append(vec![decision("x")]).await.unwrap(), vec![4]);
        log.close().await;
        assert_eq!(verify(dir.path()).unwrap().records, 4);
    }

    #[tokio::test]
    async fn complete_last_line_that_is_not_a_record_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 2).await;
        let path = segment(dir.path(), 1);
        let good = std::fs::metadata(&path).unwrap().len();
        append_raw(&path, b"{\"seq\":3,\"kind\":\"outcome\"}\n");

        let tail = recover_dir(dir.path()).unwrap();
        assert_eq!(tail.len, good);
        assert_eq!(tail.chain.next_seq, 3);
        assert!(tail.truncated.is_some());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[tokio::test]
    async fn unterminated_last_line_is_truncated_even_if_it_parses() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 3).await;
        let path = segment(dir.path(), 1);
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        let tail = recover_dir(dir.path()).unwrap();
        assert_eq!(tail.chain.next_seq, 3);
    }

    #[tokio::test]
    async fn bad_line_in_the_middle_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 4).await;
        rewrite_lines(&segment(dir.path(), 1), |lines| lines[1] = "garbage".into());
        let err = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap_err();
        match &err {
            AuditError::Damaged { file, line, .. } => {
                assert_eq!(file, "audit-000001.jsonl");
                assert_eq!(*line, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().contains("`audit-000001.jsonl` line 2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn seq_gap_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 4).await;
        rewrite_lines(&segment(dir.path(), 1), |lines| {
            lines.remove(1);
        });
        let err = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("line 2") && text.contains("expected seq 2, found seq 3"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn prev_mismatch_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 4).await;
        rewrite_lines(&segment(dir.path(), 1), |lines| {
            lines[1] = lines[1].replace("\"r1\"", "\"r9\"");
        });
        let err = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("line 3") && text.contains("seq 3: prev"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn damage_at_a_segment_boundary_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1500, 8).await;
        assert!(segment(dir.path(), 3).exists());
        // The first line of segment 2 no longer chains to the last line of segment 1.
        rewrite_lines(&segment(dir.path(), 1), |lines| {
            let last = lines.len() - 1;
            lines[last] = lines[last].replace("\"gate-1\"", "\"gate-2\"");
        });
        let err = recover_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("`audit-000002.jsonl` line 1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn missing_segment_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1500, 8).await;
        std::fs::remove_file(segment(dir.path(), 2)).unwrap();
        let err = recover_dir(dir.path()).unwrap_err();
        assert_eq!(
            err,
            AuditError::DamagedSegment {
                file: "audit-000002.jsonl".into(),
                detail: "segment is missing (next present segment is 3)".into(),
            }
        );
    }

    #[tokio::test]
    async fn torn_last_line_of_an_earlier_segment_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1500, 8).await;
        append_raw(&segment(dir.path(), 1), b"{\"seq\":");
        let err = recover_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("audit-000001.jsonl"), "{err}");
    }

    #[test]
    fn empty_directory_starts_at_seq_one() {
        let dir = tempfile::tempdir().unwrap();
        let tail = recover_dir(dir.path()).unwrap();
        assert_eq!(tail.segment, 1);
        assert_eq!(tail.chain, Chain::genesis());
        assert_eq!(tail.len, 0);
    }

    #[test]
    fn last_line_is_found_across_read_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "x".repeat(150_000);
        std::fs::write(&path, format!("first\n{long}\n")).unwrap();
        let (line, terminated) = read_last_line(&path).unwrap();
        assert!(terminated);
        assert_eq!(line, long.as_bytes());
        std::fs::write(&path, "only").unwrap();
        assert_eq!(read_last_line(&path).unwrap(), (b"only".to_vec(), false));
    }
}
