//! Reading the log back: a streaming line reader per segment, the walk over all segments with
//! the chain check, [`verify`] and [`read_records`] for the auditor tools.
//!
//! Guarantees: records come out in `seq` order across segments, each parsed by the one parser
//! ([`super::format::parse_record`]) and, unless switched off, checked against the chain (seq
//! gap-free from 1, `prev` = SHA-256 of the previous line). Refuses: a line without a newline
//! (a torn write the writer has not repaired yet), a line that is not a record, any break of the
//! chain; the first such place is reported with segment file, line number and seq.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::VerifyFailure;
use super::VerifySummary;
use super::format::{Chain, display_name, line_hash_hex, list_segments, parse_record};
use super::merkle::{Hash, leaf_hash};
use super::record::Record;

const READ_BUFFER: usize = 256 * 1024;

/// One line of a segment.
pub struct Line<'a> {
    /// The bytes without the newline.
    pub bytes: &'a [u8],
    /// Whether the line ended with `\n` (false only for a torn last line).
    pub terminated: bool,
    /// 1-based line number in the segment.
    pub number: u64,
    /// Byte offset of the line's start in the segment.
    pub start: u64,
}

/// Streams the lines of one segment, reusing one buffer.
pub struct LineReader {
    file: BufReader<File>,
    buf: Vec<u8>,
    number: u64,
    offset: u64,
    start: u64,
}

impl LineReader {
    pub fn open(path: &Path) -> std::io::Result<LineReader> {
        Ok(LineReader {
            file: BufReader::with_capacity(READ_BUFFER, File::open(path)?),
            buf: Vec::with_capacity(4096),
            number: 0,
            offset: 0,
            start: 0,
        })
    }

    /// Reads the next line into the buffer; false at the end of the file.
    pub fn read_next(&mut self) -> std::io::Result<bool> {
        self.buf.clear();
        let n = self.file.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        self.start = self.offset;
        self.offset += n as u64;
        self.number += 1;
        Ok(true)
    }

    /// The line last read by [`LineReader::read_next`].
    pub fn line(&self) -> Line<'_> {
        let terminated = self.buf.last() == Some(&b'\n');
        let bytes = match (terminated, self.buf.split_last()) {
            (true, Some((_, rest))) => rest,
            _ => &self.buf[..],
        };
        Line {
            bytes,
            terminated,
            number: self.number,
            start: self.start,
        }
    }
}

/// A place in the log where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadFault {
    pub file: String,
    pub line: u64,
    pub seq: Option<u64>,
    pub message: String,
    /// An I/O failure rather than damage to the log.
    pub io: bool,
}

impl ReadFault {
    /// Where: `` `file` line N`` or just `` `file` `` for a fault of the whole file (line 0).
    fn place(&self) -> String {
        if self.line == 0 {
            format!("`{}`", self.file)
        } else {
            format!("`{}` line {}", self.file, self.line)
        }
    }

    pub(crate) fn to_verify_failure(&self) -> VerifyFailure {
        VerifyFailure {
            seq: self.seq,
            message: format!("{}: {}", self.place(), self.message),
        }
    }

    pub(crate) fn to_audit_error(&self) -> AuditError {
        if self.io {
            AuditError::Unavailable(format!("{}: {}", self.place(), self.message))
        } else {
            AuditError::Damaged {
                file: self.file.clone(),
                line: self.line,
                detail: self.message.clone(),
            }
        }
    }
}

/// Walks all segments in order, parsing (and by default chain-checking) every line.
pub(crate) struct LogWalker {
    segments: std::vec::IntoIter<(u64, PathBuf)>,
    current: Option<(String, LineReader)>,
    chain: Chain,
    check_chain: bool,
}

impl LogWalker {
    pub(crate) fn open(dir: &Path, check_chain: bool) -> Result<LogWalker, ReadFault> {
        let segments = list_segments(dir).map_err(|e| ReadFault {
            file: dir.display().to_string(),
            line: 0,
            seq: None,
            message: format!("cannot list the audit directory: {e}"),
            io: true,
        })?;
        Ok(LogWalker {
            segments: segments.into_iter(),
            current: None,
            chain: Chain::genesis(),
            check_chain,
        })
    }

    /// The next record with its line bytes, `None` after the last segment.
    pub(crate) fn next_record(&mut self) -> Result<Option<(&[u8], Record)>, ReadFault> {
        loop {
            if self.current.is_none() {
                let Some((_, path)) = self.segments.next() else {
                    return Ok(None);
                };
                let name = display_name(&path);
                let reader = LineReader::open(&path).map_err(|e| ReadFault {
                    file: name.clone(),
                    line: 0,
                    seq: None,
                    message: format!("cannot open segment: {e}"),
                    io: true,
                })?;
                self.current = Some((name, reader));
            }
            let Some((name, reader)) = self.current.as_mut() else {
                continue;
            };
            let number = reader.number + 1;
            match reader.read_next() {
                Ok(true) => break,
                Ok(false) => self.current = None,
                Err(e) => {
                    return Err(ReadFault {
                        file: name.clone(),
                        line: number,
                        seq: None,
                        message: format!("cannot read: {e}"),
                        io: true,
                    });
                }
            }
        }
        let Some((name, reader)) = self.current.as_ref() else {
            return Ok(None);
        };
        let line = reader.line();
        let fault = |seq: Option<u64>, message: String| ReadFault {
            file: name.clone(),
            line: line.number,
            seq,
            message,
            io: false,
        };
        if !line.terminated {
            return Err(fault(
                None,
                "line has no trailing newline (torn write)".into(),
            ));
        }
        let record = if self.check_chain {
            self.chain
                .check(line.bytes)
                .map_err(|f| fault(f.seq(), f.to_string()))?
        } else {
            parse_record(line.bytes).map_err(|m| fault(None, m))?
        };
        Ok(Some((line.bytes, record)))
    }
}

/// Bytes of lines the read-ahead thread hands over at a time.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the read-ahead thread and the checking thread.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A line read ahead: where it is in its chunk and in the log, and its hashes.
struct AheadLine {
    start: usize,
    end: usize,
    /// Index of its segment in the walk's segment list.
    segment: usize,
    number: u64,
    /// `line_hash_hex` of the line: the `prev` the next line must carry.
    hash_hex: [u8; 64],
    /// RFC 6962 leaf hash (zeros when the walk does not want leaves).
    leaf: Hash,
}

/// Lines read ahead, and the read fault (I/O error, torn line) that ended the reading, if any.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    lines: Vec<AheadLine>,
    fault: Option<ReadFault>,
}

/// A record of a verified walk, in log order.
pub(crate) struct Verified {
    pub record: Record,
    /// `SHA-256(0x00 || line)` when the walk was asked for leaves.
    pub leaf: Hash,
}

/// Walks the whole log in `dir` with the chain checked, on two threads (the verify path):
/// a read-ahead thread reads the segments in order in large blocks and hashes every line (the
/// chain hash, and with `leaves` the RFC 6962 leaf hash); this thread parses every line with
/// the one parser and checks its seq and prev against the hash of the line before
/// ([`Chain::check_hashed`]). `visit` sees every record in order and may end the walk with a
/// failure. The failure reported is the first in log order, the same as
/// [`LogWalker::next_record`] reports. Returns the number of records and segments.
pub(crate) fn walk_verified(
    dir: &Path,
    leaves: bool,
    mut visit: impl FnMut(Verified) -> Result<(), VerifyFailure>,
) -> Result<(u64, usize), VerifyFailure> {
    let segments = list_segments(dir).map_err(|e| {
        ReadFault {
            file: dir.display().to_string(),
            line: 0,
            seq: None,
            message: format!("cannot list the audit directory: {e}"),
            io: true,
        }
        .to_verify_failure()
    })?;
    let names: Vec<String> = segments.iter().map(|(_, p)| display_name(p)).collect();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_ahead(&segments, &names, leaves, tx));
        // `rx` is dropped when `check` returns, which ends a read-ahead blocked on a full
        // channel: the scope can always join it.
        let checked = check_chunks(rx, &names, &mut visit);
        let opened = reader.join().map_err(|_| VerifyFailure {
            seq: None,
            message: "the read-ahead thread failed".into(),
        })?;
        checked.map(|records| (records, opened))
    })
}

/// The checking side of [`walk_verified`]: the records in the chunks, in order.
fn check_chunks(
    rx: std::sync::mpsc::Receiver<Chunk>,
    names: &[String],
    visit: &mut impl FnMut(Verified) -> Result<(), VerifyFailure>,
) -> Result<u64, VerifyFailure> {
    let mut chain = Chain::genesis();
    let mut records = 0u64;
    for chunk in rx {
        for l in &chunk.lines {
            let line = chunk.bytes.get(l.start..l.end).unwrap_or_default();
            let record = chain.check_hashed(line, &l.hash_hex).map_err(|f| {
                ReadFault {
                    file: names.get(l.segment).cloned().unwrap_or_default(),
                    line: l.number,
                    seq: f.seq(),
                    message: f.to_string(),
                    io: false,
                }
                .to_verify_failure()
            })?;
            records += 1;
            visit(Verified {
                record,
                leaf: l.leaf,
            })?;
        }
        if let Some(fault) = chunk.fault {
            return Err(fault.to_verify_failure());
        }
    }
    Ok(records)
}

/// The read-ahead side of [`walk_verified`]: reads and hashes the lines of every segment and
/// sends them in chunks; stops at the first read fault (sent after the lines before it) or when
/// the checking side hung up. Returns the number of segments opened.
fn read_ahead(
    segments: &[(u64, PathBuf)],
    names: &[String],
    leaves: bool,
    tx: std::sync::mpsc::SyncSender<Chunk>,
) -> usize {
    let mut chunk = Chunk::default();
    let mut opened = 0;
    let fault = |segment: usize, line: u64, message: String, io: bool| ReadFault {
        file: names.get(segment).cloned().unwrap_or_default(),
        line,
        seq: None,
        message,
        io,
    };
    for (segment, (_, path)) in segments.iter().enumerate() {
        let mut file = match File::open(path) {
            Ok(f) => BufReader::with_capacity(READ_BUFFER, f),
            Err(e) => {
                chunk.fault = Some(fault(segment, 0, format!("cannot open segment: {e}"), true));
                let _ = tx.send(chunk);
                return opened;
            }
        };
        opened += 1;
        let mut number = 0u64;
        loop {
            let start = chunk.bytes.len();
            let read = file.read_until(b'\n', &mut chunk.bytes);
            number += 1;
            match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    chunk.bytes.truncate(start);
                    chunk.fault = Some(fault(segment, number, format!("cannot read: {e}"), true));
                    let _ = tx.send(chunk);
                    return opened;
                }
            }
            if chunk.bytes.last() != Some(&b'\n') {
                chunk.bytes.truncate(start);
                chunk.fault = Some(fault(
                    segment,
                    number,
                    "line has no trailing newline (torn write)".into(),
                    false,
                ));
                let _ = tx.send(chunk);
                return opened;
            }
            let end = chunk.bytes.len() - 1;
            let line = chunk.bytes.get(start..end).unwrap_or_default();
            chunk.lines.push(AheadLine {
                start,
                end,
                segment,
                number,
                hash_hex: line_hash_hex(line),
                leaf: if leaves { leaf_hash(line) } else { [0; 32] },
            });
            if chunk.bytes.len() >= CHUNK_BYTES && tx.send(std::mem::take(&mut chunk)).is_err() {
                return opened;
            }
        }
    }
    if !chunk.lines.is_empty() {
        let _ = tx.send(chunk);
    }
    opened
}

/// Verifies the whole chain in `dir`: every line of every segment, in order, each parsed as a
/// record (see [`walk_verified`]).
pub fn verify(dir: &Path) -> Result<VerifySummary, VerifyFailure> {
    let (records, segments) = walk_verified(dir, false, |_| Ok(()))?;
    Ok(VerifySummary { records, segments })
}

/// Reads all records of the log in `dir` in order, for the auditor tools.
///
/// The iterator checks the chain as it goes (like [`verify`]) and yields an error item at the
/// first damage, after which it ends; [`RecordIter::without_chain_check`] only parses.
pub fn read_records(dir: &Path) -> Result<RecordIter, AuditError> {
    let walker = LogWalker::open(dir, true).map_err(|f| f.to_audit_error())?;
    Ok(RecordIter {
        walker,
        done: false,
    })
}

/// Iterator over `(line bytes, record)` of a log, see [`read_records`].
pub struct RecordIter {
    walker: LogWalker,
    done: bool,
}

impl RecordIter {
    /// Only parses the lines, without checking `seq` and `prev` (for looking into a damaged log).
    pub fn without_chain_check(mut self) -> RecordIter {
        self.walker.check_chain = false;
        self
    }

    /// The next record borrowing the line bytes (no allocation for the line).
    pub fn next_ref(&mut self) -> Option<Result<(&[u8], Record), AuditError>> {
        if self.done {
            return None;
        }
        match self.walker.next_record() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(fault) => {
                self.done = true;
                Some(Err(fault.to_audit_error()))
            }
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<(Vec<u8>, Record), AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref()
            .map(|item| item.map(|(bytes, record)| (bytes.to_vec(), record)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::AuditLog;
    use crate::testutil::{decision, options, outcome};

    async fn write_log(dir: &Path, max: u64, n: usize) {
        let log = AuditLog::open(&options(dir, max)).unwrap();
        for i in 0..n {
            let id = format!("r{i}");
            log.append(vec![decision(&id), outcome(&id)]).await.unwrap();
        }
        log.close().await;
    }

    #[tokio::test]
    async fn read_records_yields_lines_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2000, 10).await;
        let mut expected_seq = 1;
        let mut iter = read_records(dir.path()).unwrap();
        while let Some(item) = iter.next_ref() {
            let (bytes, record) = item.unwrap();
            assert_eq!(record.seq(), expected_seq);
            assert_eq!(parse_record(bytes).unwrap(), record);
            expected_seq += 1;
        }
        assert_eq!(expected_seq, 21);
        assert!(verify(dir.path()).unwrap().segments > 1);
    }

    #[tokio::test]
    async fn read_records_stops_at_damage_unless_the_chain_check_is_off() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 3).await;
        let path = dir.path().join("audit-000001.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"r1\"", "\"rX\"", 1)).unwrap();

        let items: Vec<_> = read_records(dir.path()).unwrap().collect();
        assert_eq!(items.len(), 4);
        assert!(items[..3].iter().all(Result::is_ok));
        let err = items[3].as_ref().unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");

        let unchecked = read_records(dir.path()).unwrap().without_chain_check();
        assert_eq!(unchecked.filter(Result::is_ok).count(), 6);
    }

    #[tokio::test]
    async fn verify_reports_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1 << 20, 1).await;
        let path = dir.path().join("audit-000001.jsonl");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq\":3");
        std::fs::write(&path, bytes).unwrap();
        let failure = verify(dir.path()).unwrap_err();
        assert_eq!(failure.seq, None);
        assert!(
            failure.message.contains("`audit-000001.jsonl` line 3")
                && failure.message.contains("torn"),
            "{failure}"
        );
    }

    #[test]
    fn verify_of_an_empty_directory_is_an_empty_chain() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            verify(dir.path()).unwrap(),
            VerifySummary {
                records: 0,
                segments: 0
            }
        );
    }

    #[test]
    fn verify_of_a_missing_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let failure = verify(&dir.path().join("nope")).unwrap_err();
        assert!(failure.message.contains("cannot list"), "{failure}");
    }
}
