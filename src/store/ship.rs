//! The shipper: a follower of the local audit log that copies each durable line into the store,
//! in order, idempotently and losslessly (`docs/scale-out.md`).
//!
//! INVARIANT: a line is shipped only once the writer reported it durable, so the gate's own
//! recovery can never contradict a shipped row; rows and the shipped position commit in one
//! transaction, so a killed gate resumes with no gap and no duplicate.
//!
//! Refuses: a batch that does not start at the store's shipped position + 1 with `prev` equal to
//! the stored hash (re-reads the position instead); a local history that differs from the
//! shipped one (records an equivocation, never overwrites, stops shipping that gate).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, Utc};
use deadpool_postgres::{GenericClient, Pool};
use futures_util::SinkExt;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{IsNull, ToSql, Type};

use super::StoreError;
use super::schema;
use crate::audit::stats::Histogram;
use crate::audit::tap::{DurableLines, Tap};
use crate::audit::{Record, list_segment_files, parse_record};

/// How long the shipper lets a batch that is not full wait for more records (from the oldest
/// record's `time`); at most a quarter of `[store] max_backlog_age` when that is set.
pub const SHIP_LINGER: Duration = Duration::from_millis(100);

/// Most bytes of durable lines the writer holds in memory for the shipper (see
/// [`crate::audit::tap`]); beyond that the shipper reads them from the segments.
pub const TAP_MAX_BYTES: usize = 8 << 20;

/// Upper bounds (seconds) of the shipping lag histogram.
pub const LAG_BOUNDS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What the shipper has done, for `/metrics`, `/readyz` and `max_backlog_age`.
#[derive(Debug)]
pub struct ShipStatus {
    /// Last seq committed to the store.
    pub shipped_seq: AtomicU64,
    /// Last seq the local writer reported durable.
    pub durable_seq: AtomicU64,
    /// Unix milliseconds of the oldest durable record not yet shipped; 0 when none waits.
    pub oldest_unshipped_ms: AtomicI64,
    /// Failed shipping attempts.
    pub errors: AtomicU64,
    /// Equivocations detected.
    pub equivocations: AtomicU64,
    /// Shipping stopped for good (an equivocation).
    pub stopped: AtomicBool,
    /// Records shipped by this process.
    pub shipped_records: AtomicU64,
    /// Lines the shipper took as the writer handed them over in memory.
    pub read_from_memory: AtomicU64,
    /// Lines the shipper read back from the segments (from before the gate started, or let go
    /// by the tap while the store was slow or away).
    pub read_from_segments: AtomicU64,
    /// Per shipped record: seconds from its `time` to the commit that stored it.
    pub lag_seconds: Histogram<12>,
}

impl Default for ShipStatus {
    fn default() -> ShipStatus {
        ShipStatus {
            shipped_seq: AtomicU64::new(0),
            durable_seq: AtomicU64::new(0),
            oldest_unshipped_ms: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            equivocations: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            shipped_records: AtomicU64::new(0),
            read_from_memory: AtomicU64::new(0),
            read_from_segments: AtomicU64::new(0),
            lag_seconds: Histogram::new(LAG_BOUNDS),
        }
    }
}

impl ShipStatus {
    /// Durable records not yet in the store.
    pub fn backlog(&self) -> u64 {
        self.durable_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.shipped_seq.load(Ordering::Relaxed))
    }

    /// Age of the oldest unshipped record (zero when none waits).
    pub fn backlog_age(&self) -> Duration {
        let oldest = self.oldest_unshipped_ms.load(Ordering::Relaxed);
        if oldest == 0 {
            return Duration::ZERO;
        }
        let now = Utc::now().timestamp_millis();
        Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0))
    }
}

/// The seq at the start of a line (`{"seq":N,`), without parsing the rest.
pub fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

pub use crate::audit::line_hash;

/// Reads complete lines of the local log from a given seq on, following new segments.
pub struct LocalTail {
    dir: PathBuf,
    segment: u64,
    reader: Option<BufReader<File>>,
    /// Bytes read but not handed out: an incomplete line, or a line beyond the limit.
    pending: Vec<u8>,
}

impl LocalTail {
    /// Positions the tail so that the next line it yields is `seq` (or the first one written
    /// after the log's current end when `seq` is one past it).
    pub fn open_at(dir: &Path, seq: u64) -> std::io::Result<LocalTail> {
        let segments = list_segment_files(dir)?;
        // The last segment whose first seq is at most `seq`.
        let mut chosen = segments.first().map(|(n, _)| *n).unwrap_or(1);
        for (n, path) in &segments {
            match first_seq(path)? {
                Some(first) if first <= seq => chosen = *n,
                Some(_) => break,
                None => {}
            }
        }
        let mut tail = LocalTail {
            dir: dir.to_path_buf(),
            segment: chosen,
            reader: None,
            pending: Vec::new(),
        };
        // Skip the lines before `seq`.
        while let Some(line) = tail.peek_line()? {
            match line_seq(line) {
                Some(s) if s < seq => tail.pending.clear(),
                _ => break,
            }
        }
        Ok(tail)
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(crate::audit::segment_file_name(segment))
    }

    /// The next complete line, left in place (see [`LocalTail::take`]); `None` when there is
    /// none yet.
    pub fn peek_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        if !self.pending.ends_with(b"\n") {
            loop {
                if self.reader.is_none() {
                    match File::open(self.path(self.segment)) {
                        Ok(f) => self.reader = Some(BufReader::with_capacity(256 * 1024, f)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                let Some(reader) = self.reader.as_mut() else {
                    return Ok(None);
                };
                let n = reader.read_until(b'\n', &mut self.pending)?;
                if self.pending.ends_with(b"\n") {
                    break;
                }
                if n == 0 && self.pending.is_empty() {
                    // End of this segment. The writer starts the next one only after this one
                    // is complete; read once more after seeing it, for lines written between.
                    let next_exists = self
                        .dir
                        .join(crate::audit::segment_file_name(self.segment + 1))
                        .exists();
                    if !next_exists {
                        return Ok(None);
                    }
                    let more = reader.read_until(b'\n', &mut self.pending)?;
                    if more > 0 {
                        if self.pending.ends_with(b"\n") {
                            break;
                        }
                        return Ok(None);
                    }
                    self.segment += 1;
                    self.reader = None;
                    continue;
                }
                // An incomplete line: the writer is still writing it (or a torn tail).
                return Ok(None);
            }
        }
        Ok(self
            .pending
            .strip_suffix(b"\n")
            .filter(|_| !self.pending.is_empty()))
    }

    /// Consumes the line last returned by [`LocalTail::peek_line`].
    pub fn take(&mut self) -> Vec<u8> {
        // A copy of exactly the line's size; the buffer keeps its capacity for the next line
        // (read into an empty buffer, a line would grow it through a series of reallocations).
        let line = self
            .pending
            .strip_suffix(b"\n")
            .unwrap_or(&self.pending)
            .to_vec();
        if self.pending.capacity() > 1 << 20 {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        line
    }
}

/// The seq of a segment's first line (`None` for an empty segment).
fn first_seq(path: &Path) -> std::io::Result<Option<u64>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok(line_seq(&line))
}

/// One line ready to ship, with what the store extracts from it.
#[derive(Debug, Clone)]
pub struct ShipLine {
    pub seq: u64,
    /// The line's `prev` as hash bytes (`None` when it is not 64 hex digits).
    pub prev: Option<[u8; 32]>,
    pub line: Bytes,
    pub hash: [u8; 32],
    pub columns: Columns,
}

impl ShipLine {
    /// Extracts the store's columns from a line. Decision and outcome records (all but a few
    /// lines of a log) are read in one pass over the line that borrows the few members the
    /// store needs and skips the rest; any other kind, and any line that pass cannot read
    /// (an escaped string among those members, say), goes through the audit parser. Both ways
    /// give the same columns (tested); the full check of every record is `audit verify --db`,
    /// over the stored bytes.
    pub fn new(line: impl Into<Bytes>) -> Result<ShipLine, String> {
        let line = line.into();
        let hash = line_hash(&line);
        ShipLine::hashed(line, hash)
    }

    /// Like [`ShipLine::new`] for a line whose SHA-256 is known (the writer computed it for
    /// the chain and handed it over with the line).
    pub fn hashed(line: Bytes, hash: [u8; 32]) -> Result<ShipLine, String> {
        match serde_json::from_slice::<HotFields<'_>>(&line) {
            Ok(f) => ShipLine::from_hot(&line, hash, f),
            Err(_) => ShipLine::parsed_hashed(line, hash),
        }
    }

    /// Like [`ShipLine::hashed`] for a line this gate's writer framed and handed over in
    /// memory: compact JSON as `serde_json` writes it, so the members the store needs are found
    /// by a scan that skips the others without checking them ([`scan_framed`]); a line the scan
    /// does not expect goes the way of [`ShipLine::hashed`].
    pub fn framed(line: Bytes, hash: [u8; 32]) -> Result<ShipLine, String> {
        match scan_framed(&line) {
            Some(f) => ShipLine::from_hot(&line, hash, f),
            None => ShipLine::hashed(line, hash),
        }
    }

    fn from_hot(line: &Bytes, hash: [u8; 32], f: HotFields<'_>) -> Result<ShipLine, String> {
        let decision = match f.kind {
            "decision" => true,
            "outcome" => false,
            _ => return ShipLine::parsed_hashed(line.clone(), hash),
        };
        let mut subjects = Vec::new();
        let employee = f.principal.map(|p| p.id.to_string());
        let mut lookup = false;
        if decision {
            if let Some(r) = f.resource {
                subjects.push(r.id.to_string());
                lookup = employee.is_some();
            }
        } else {
            // The audit parser requires `disclosed` in an outcome.
            let Some(disclosed) = f.disclosed else {
                return ShipLine::parsed_hashed(line.clone(), hash);
            };
            subjects.extend(disclosed.iter().map(|r| r.id.to_string()));
            subjects.sort_unstable();
            subjects.dedup();
        }
        Ok(ShipLine {
            seq: f.seq,
            prev: prev_bytes(f.prev),
            hash,
            columns: Columns {
                request_id: f.request_id.to_string(),
                time: parse_time(f.seq, f.time)?,
                kind: if decision { "decision" } else { "outcome" },
                // An outcome names no employee (its decision does).
                employee: if decision { employee } else { None },
                subjects,
                lookup,
                checkpoint_file: None,
                case_snapshot: if decision {
                    f.inputs.and_then(|i| i.case).map(str::to_string)
                } else {
                    None
                },
            },
            line: line.clone(),
        })
    }

    /// Extracts the store's columns through the audit parser (every kind).
    pub fn parsed(line: impl Into<Bytes>) -> Result<ShipLine, String> {
        let line = line.into();
        let hash = line_hash(&line);
        ShipLine::parsed_hashed(line, hash)
    }

    fn parsed_hashed(line: Bytes, hash: [u8; 32]) -> Result<ShipLine, String> {
        let record = parse_record(&line)?;
        Ok(ShipLine {
            seq: record.seq(),
            prev: prev_bytes(record.prev()),
            hash,
            columns: Columns::of(&record)?,
            line,
        })
    }
}

/// What the store extracts from a record besides its bytes: the columns of `pg_records` and
/// what the shipper does with the line (a lookup to count, a checkpoint note or a case snapshot
/// to ship). The audit parser's record is the reference ([`Columns::of`]); `audit verify --db`
/// holds every stored row's columns to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub time: DateTime<Utc>,
    pub kind: &'static str,
    pub request_id: String,
    pub employee: Option<String>,
    /// Sorted, each once.
    pub subjects: Vec<String>,
    /// A decision about a data subject: one lookup in the counters.
    pub lookup: bool,
    /// The checkpoint file named by a checkpoint record.
    pub checkpoint_file: Option<(u64, String)>,
    /// The case snapshot (hash) named by a decision record's `inputs.case`.
    pub case_snapshot: Option<String>,
}

impl Columns {
    /// The columns of a record as the audit parser reads it.
    pub fn of(record: &Record) -> Result<Columns, String> {
        let time = parse_time(record.seq(), record.time())?;
        let mut subjects = BTreeSet::new();
        let mut employee = None;
        let mut lookup = false;
        let mut checkpoint_file = None;
        let mut case_snapshot = None;
        let kind = match record {
            Record::Decision(d) => {
                case_snapshot = d.inputs.as_ref().and_then(|i| i.case.clone());
                employee = d.principal.as_ref().map(|p| p.id.clone());
                if let Some(r) = &d.resource {
                    subjects.insert(r.id.clone());
                    lookup = employee.is_some();
                }
                "decision"
            }
            Record::Outcome(o) => {
                subjects.extend(o.disclosed.iter().map(|r| r.id.clone()));
                "outcome"
            }
            Record::Checkpoint(c) => {
                checkpoint_file = Some((c.tree_size, c.file.clone()));
                "checkpoint"
            }
            Record::Review(_) => "review",
            Record::Config(_) => "config",
            Record::Access(a) => {
                // An auditor's view of a person: found by the person's id like the lookups.
                subjects.extend(
                    crate::audit::pseudonym::ACCESS_PERSON_KEYS
                        .iter()
                        .filter_map(|k| a.query.get(*k).cloned()),
                );
                "access"
            }
        };
        Ok(Columns {
            time,
            kind,
            request_id: record.request_id().to_string(),
            employee,
            subjects: subjects.into_iter().collect(),
            lookup,
            checkpoint_file,
            case_snapshot,
        })
    }
}

fn parse_time(seq: u64, time: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("seq {seq}: time `{time}`: {e}"))
}

/// The members of a decision or outcome line the store needs, borrowed from the line (a string
/// with an escape in it fails the borrow, and the line goes through the audit parser instead).
#[derive(serde::Deserialize, Debug)]
struct HotFields<'a> {
    kind: &'a str,
    seq: u64,
    prev: &'a str,
    time: &'a str,
    request_id: &'a str,
    #[serde(borrow, default)]
    principal: Option<IdOnly<'a>>,
    #[serde(borrow, default)]
    resource: Option<IdOnly<'a>>,
    #[serde(borrow, default)]
    inputs: Option<CaseOnly<'a>>,
    #[serde(borrow, default)]
    disclosed: Option<Vec<IdOnly<'a>>>,
}

#[derive(serde::Deserialize, Debug)]
struct IdOnly<'a> {
    id: &'a str,
}

#[derive(serde::Deserialize, Debug)]
struct CaseOnly<'a> {
    #[serde(default)]
    case: Option<&'a str>,
}

/// The members the store needs from a line the writer framed: compact JSON as `serde_json`
/// writes it (no whitespace, each member once). Walks the top-level members, reads the wanted
/// ones as [`HotFields`] would and skips the others without checking them; `None` for anything
/// else it meets (an escape or a control character in a wanted string, a repeated wanted
/// member, whitespace, a missing member, trailing bytes), and the caller reads the line the
/// slower way. Only for lines this process's writer produced: a skipped member is not checked
/// for well-formedness (`audit verify --db` parses every stored line in full, and holds each
/// row's columns to it).
fn scan_framed(line: &[u8]) -> Option<HotFields<'_>> {
    // Valid UTF-8 as a whole (the word-at-a-time check is cheap): every string cut out of it
    // at its quotes is then valid too.
    let text = std::str::from_utf8(line).ok()?;
    let mut s = Scan {
        text,
        b: line,
        i: 0,
    };
    let mut kind = None;
    let mut seq = None;
    let mut prev = None;
    let mut time = None;
    let mut request_id = None;
    let mut principal = None;
    let mut resource = None;
    let mut inputs = None;
    let mut disclosed = None;
    s.members(|s, key| match key {
        "kind" => once(&mut kind, s.string()?),
        "seq" => once(&mut seq, s.number()?),
        "prev" => once(&mut prev, s.string()?),
        "time" => once(&mut time, s.string()?),
        "request_id" => once(&mut request_id, s.string()?),
        "principal" => once(&mut principal, s.nullable(Scan::id_only)?),
        "resource" => once(&mut resource, s.nullable(Scan::id_only)?),
        "inputs" => once(&mut inputs, s.nullable(Scan::case_only)?),
        "disclosed" => once(&mut disclosed, s.nullable(Scan::ids)?),
        _ => s.skip_value(),
    })?;
    if s.i != line.len() {
        return None;
    }
    Some(HotFields {
        kind: kind?,
        seq: seq?,
        prev: prev?,
        time: time?,
        request_id: request_id?,
        principal: principal.flatten(),
        resource: resource.flatten(),
        inputs: inputs.flatten(),
        disclosed: disclosed.flatten(),
    })
}

/// Sets a member read once; `None` when it was read before.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// A position in a line, for [`scan_framed`].
struct Scan<'a> {
    text: &'a str,
    /// `text`'s bytes.
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// After a member or an element: true at `,` (consumed), false at `close` (consumed).
    fn list_goes_on(&mut self, close: u8) -> Option<bool> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            b',' => Some(true),
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = self.b.get(self.i..)?;
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        if rest.get(len) != Some(&b'"') || rest.get(..len)?.iter().any(|&c| c < 0x20) {
            return None;
        }
        let text = self.text.get(self.i..self.i + len)?;
        self.i += len + 1;
        Some(text)
    }

    /// A non-negative integer as JSON writes it (no leading zero, no fraction or exponent).
    fn number(&mut self) -> Option<u64> {
        let rest = self.b.get(self.i..)?;
        let len = rest
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = rest.get(..len)?;
        if len == 0 || (len > 1 && digits.first() == Some(&b'0')) {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
        self.i += len;
        Some(n)
    }

    /// `null` as `Some(None)`, else what `read` reads.
    fn nullable<T>(&mut self, read: fn(&mut Scan<'a>) -> Option<T>) -> Option<Option<T>> {
        if self.b.get(self.i..)?.starts_with(b"null") {
            self.i += 4;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// An object of which only `id` (a string, required) is read.
    fn id_only(&mut self) -> Option<IdOnly<'a>> {
        let mut id = None;
        self.members(|s, key| match key {
            "id" => once(&mut id, s.string()?),
            _ => s.skip_value(),
        })?;
        Some(IdOnly { id: id? })
    }

    /// An object of which only `case` (a string or null, may be absent) is read.
    fn case_only(&mut self) -> Option<CaseOnly<'a>> {
        let mut case = None;
        self.members(|s, key| match key {
            "case" => once(&mut case, s.nullable(Scan::string)?),
            _ => s.skip_value(),
        })?;
        Some(CaseOnly {
            case: case.flatten(),
        })
    }

    /// An array of objects each read by [`Scan::id_only`].
    fn ids(&mut self) -> Option<Vec<IdOnly<'a>>> {
        self.eat(b'[')?;
        let mut out = Vec::new();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(out);
        }
        loop {
            out.push(self.id_only()?);
            if !self.list_goes_on(b']')? {
                return Some(out);
            }
        }
    }

    /// The members of an object, each handed to `member` after its key and colon.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Scan<'a>, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            if !self.list_goes_on(b'}')? {
                return Some(());
            }
        }
    }

    /// Skips one value (up to the `,`, `}` or `]` after it), strings with their escapes.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    loop {
                        let rest = self.b.get(self.i..)?;
                        let at = memchr::memchr2(b'"', b'\\', rest)?;
                        if rest.get(at) == Some(&b'\\') {
                            self.i += at + 2;
                        } else {
                            self.i += at + 1;
                            break;
                        }
                    }
                    if depth == 0 {
                        return Some(());
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Some(());
                    }
                    depth -= 1;
                    self.i += 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
                b',' if depth == 0 => return Some(()),
                _ => self.i += 1,
            }
        }
    }
}

/// The shipped position of a gate in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Position {
    pub const GENESIS: Position = Position {
        seq: 0,
        hash: [0; 32],
    };
}

/// The genesis `prev` (64 zeros) as the hash bytes it stands for.
fn prev_bytes(prev_hex: &str) -> Option<[u8; 32]> {
    if prev_hex.bytes().all(|b| b == b'0') && prev_hex.len() == 64 {
        return Some([0; 32]);
    }
    let mut hash = [0; 32];
    hex::decode_to_slice(prev_hex, &mut hash).ok()?;
    Some(hash)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads (creating when absent) the gate's row: its shipped position and whether shipping was
/// stopped by an equivocation.
pub async fn position(
    client: &impl GenericClient,
    gate_id: &str,
) -> Result<(Position, bool), StoreError> {
    client
        .execute(
            "INSERT INTO pg_gates (gate_id) VALUES ($1) ON CONFLICT (gate_id) DO NOTHING",
            &[&gate_id],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT shipped_seq, shipped_hash, stopped FROM pg_gates WHERE gate_id = $1",
            &[&gate_id],
        )
        .await?;
    Ok((position_of(&row)?, row.try_get(2)?))
}

fn position_of(row: &tokio_postgres::Row) -> Result<Position, StoreError> {
    let seq: i64 = row.try_get(0)?;
    let hash: Vec<u8> = row.try_get(1)?;
    Ok(Position {
        seq: u64::try_from(seq).unwrap_or(0),
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Schema("`pg_gates.shipped_hash` is not 32 bytes".into()))?,
    })
}

/// The header of PostgreSQL's binary COPY format: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// One field of a binary COPY row: its length (-1 for NULL), then its binary value.
fn put_field(buf: &mut BytesMut, value: &(dyn ToSql + Sync), ty: &Type) -> Result<(), StoreError> {
    let at = buf.len();
    buf.put_i32(0);
    let len = match value.to_sql_checked(ty, buf) {
        Ok(IsNull::Yes) => -1,
        Ok(IsNull::No) => i32::try_from(buf.len() - at - 4)
            .map_err(|_| StoreError::Unavailable(format!("a {ty} value over 2 GiB")))?,
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "encoding a {ty} value: {e}"
            )));
        }
    };
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// How many stored case snapshots a shipper remembers (about 100 bytes each); past that it
/// forgets them all and offers each again once (the store keeps the first).
const SNAPSHOTS_REMEMBERED: usize = 16_384;

/// What a shipper remembers between its transactions, to spare the store repeated work.
#[derive(Debug, Default)]
pub struct ShipCache {
    /// Months whose partition of `pg_records` exists.
    months: BTreeSet<(i32, u32)>,
    /// Hashes of case snapshots committed to the store.
    snapshots: HashSet<String>,
}

/// What one shipping transaction did.
#[derive(Debug)]
pub enum Shipped {
    /// The batch is committed; the new position.
    Committed(Position),
    /// The store's position is not where the batch starts (another shipper moved it, or a
    /// commit whose answer was lost): re-read it.
    Moved(Position),
    /// The batch does not continue the stored history: an equivocation (recorded).
    Equivocation { seq: u64, detail: String },
}

/// Ships `batch` (consecutive lines, already chain-checked among themselves) in one
/// transaction, provided it continues the stored history exactly.
pub async fn ship_batch(
    client: &mut deadpool_postgres::Client,
    gate_id: &str,
    dir: &Path,
    batch: &[ShipLine],
    cache: &mut ShipCache,
) -> Result<Shipped, StoreError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        let (p, _) = position(&*client, gate_id).await?;
        return Ok(Shipped::Moved(p));
    };
    for line in batch {
        let month = (line.columns.time.year(), line.columns.time.month());
        if !cache.months.contains(&month) {
            schema::ensure_partition(&*client, month.0, month.1).await?;
            cache.months.insert(month);
        }
    }
    let tx = client.transaction().await?;
    // Statements prepared once per connection (a batch is one round trip each, not two).
    let lock = tx
        .prepare_cached(
            "SELECT shipped_seq, shipped_hash, stopped FROM pg_gates WHERE gate_id = $1 FOR UPDATE",
        )
        .await?;
    let row = tx.query_opt(&lock, &[&gate_id]).await?;
    let Some(row) = row else {
        drop(tx);
        let (p, _) = position(&*client, gate_id).await?;
        return Ok(Shipped::Moved(p));
    };
    let stored = position_of(&row)?;
    if stored.seq + 1 != first.seq {
        return Ok(Shipped::Moved(stored));
    }
    if first.prev != Some(stored.hash) {
        let detail = format!(
            "seq {}: prev is not the hash of the shipped seq {}",
            first.seq, stored.seq
        );
        drop(tx);
        record_equivocation(
            &*client,
            gate_id,
            stored.seq,
            Some(&stored.hash),
            None,
            &detail,
        )
        .await?;
        return Ok(Shipped::Equivocation {
            seq: first.seq,
            detail,
        });
    }

    // The rows go in by binary COPY: the store writes them page by page (a multi-row INSERT
    // costs it a good deal more CPU per row), and the line bytes and subjects travel as they
    // are. The whole batch is encoded here and sent as one message: one wake-up of the
    // connection task per batch, not one per few kilobytes.
    let mut counts: HashMap<(&str, i64), i64> = HashMap::new();
    let mut copy = BytesMut::with_capacity(
        COPY_HEADER.len() + 2 + batch.iter().map(|l| l.line.len() + 256).sum::<usize>(),
    );
    copy.put_slice(COPY_HEADER);
    for l in batch {
        copy.put_i16(8);
        put_field(&mut copy, &gate_id, &Type::TEXT)?;
        put_field(&mut copy, &to_i64(l.seq), &Type::INT8)?;
        put_field(&mut copy, &l.columns.time, &Type::TIMESTAMPTZ)?;
        put_field(&mut copy, &l.columns.kind, &Type::TEXT)?;
        put_field(&mut copy, &l.columns.request_id, &Type::TEXT)?;
        put_field(&mut copy, &l.columns.employee, &Type::TEXT)?;
        put_field(&mut copy, &l.columns.subjects, &Type::TEXT_ARRAY)?;
        put_field(&mut copy, &&l.line[..], &Type::BYTEA)?;
        if l.columns.lookup
            && let Some(e) = &l.columns.employee
        {
            *counts
                .entry((e.as_str(), l.columns.time.timestamp().div_euclid(60)))
                .or_default() += 1;
        }
    }
    copy.put_i16(-1);
    let sink = tx
        .copy_in(
            "COPY pg_records (gate_id, seq, rec_time, kind, request_id, employee, subjects, line) \
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(copy.freeze()).await?;
    sink.as_mut().finish().await?;
    if !counts.is_empty() {
        let (emps, minutes, ns): (Vec<&str>, Vec<i64>, Vec<i64>) =
            counts.into_iter().map(|((e, m), n)| (e, m, n)).fold(
                (Vec::new(), Vec::new(), Vec::new()),
                |mut acc, (e, m, n)| {
                    acc.0.push(e);
                    acc.1.push(m);
                    acc.2.push(n);
                    acc
                },
            );
        let upsert = tx
            .prepare_cached(
                "INSERT INTO pg_lookup_counts (gate_id, employee, minute, n)
             SELECT $1, e, m, n FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS u(e, m, n)
             ON CONFLICT (gate_id, employee, minute) DO UPDATE SET n = pg_lookup_counts.n + EXCLUDED.n",
            )
            .await?;
        tx.execute(&upsert, &[&gate_id, &emps, &minutes, &ns])
            .await?;
    }
    for l in batch {
        if let Some((tree_size, file)) = &l.columns.checkpoint_file {
            // The note as written by the gate; a missing file is shipped as empty and fails
            // `audit verify --db` (as it fails `audit verify --dir`).
            let note = checkpoint_note(dir, file);
            tx.execute(
                "INSERT INTO pg_checkpoints (gate_id, seq, tree_size, note) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (gate_id, seq) DO NOTHING",
                &[&gate_id, &to_i64(l.seq), &to_i64(*tree_size), &note],
            )
            .await?;
        }
    }
    // Each case snapshot once per shipper (as long as it remembers it), all of a batch's new
    // ones in one statement: a case looked up all day is read and sent once, not per batch.
    let mut hashes: Vec<&str> = Vec::new();
    let mut snapshots: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for l in batch {
        if let Some(hash) = &l.columns.case_snapshot
            && !cache.snapshots.contains(hash)
            && seen.insert(hash.as_str())
            && let Some(bytes) = case_snapshot(dir, hash)
        {
            // A snapshot missing or altered locally is not shipped: replay reports it missing,
            // as it does over the directory.
            hashes.push(hash);
            snapshots.push(bytes);
        }
    }
    if !hashes.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO pg_case_snapshots (hash, snapshot, first_gate)
                 SELECT h, s, $3 FROM unnest($1::text[], $2::bytea[]) AS u(h, s)
                 ON CONFLICT (hash) DO NOTHING",
            )
            .await?;
        tx.execute(&insert, &[&hashes, &snapshots, &gate_id])
            .await?;
    }
    let advance = tx
        .prepare_cached(
            "UPDATE pg_gates SET shipped_seq = $2, shipped_hash = $3, shipped_at = now() WHERE gate_id = $1",
        )
        .await?;
    tx.execute(
        &advance,
        &[&gate_id, &to_i64(last.seq), &last.hash.as_slice()],
    )
    .await?;
    tx.commit().await?;
    if cache.snapshots.len() + hashes.len() > SNAPSHOTS_REMEMBERED {
        cache.snapshots.clear();
    }
    cache
        .snapshots
        .extend(hashes.into_iter().map(str::to_string));
    Ok(Shipped::Committed(Position {
        seq: last.seq,
        hash: last.hash,
    }))
}

/// Stores every case snapshot in `dir/cases/` that matches its hash and is not in the store
/// yet (for records shipped before schema version 2); returns how many were new.
pub async fn ship_snapshots(pool: &Pool, gate_id: &str, dir: &Path) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    let entries = match std::fs::read_dir(dir.join(crate::audit::snapshots::CASES_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot list the case snapshots of `{}`: {e}",
                dir.display()
            )));
        }
    };
    let mut stored = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(hash) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if let Some(bytes) = case_snapshot(dir, hash) {
            stored += client
                .execute(
                    "INSERT INTO pg_case_snapshots (hash, snapshot, first_gate) VALUES ($1, $2, $3)
                     ON CONFLICT (hash) DO NOTHING",
                    &[&hash, &bytes, &gate_id],
                )
                .await?;
        }
    }
    Ok(stored)
}

/// The bytes of the snapshot `hash` in the audit directory, when present and matching its hash.
fn case_snapshot(dir: &Path, hash: &str) -> Option<Vec<u8>> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = std::fs::read(
        dir.join(crate::audit::snapshots::CASES_DIR)
            .join(format!("{hash}.json")),
    )
    .ok()?;
    (hex::encode(Sha256::digest(&bytes)) == hash).then_some(bytes)
}

fn checkpoint_note(dir: &Path, file: &str) -> String {
    // Only a plain relative path inside the audit directory.
    let rel = Path::new(file);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return String::new();
    }
    std::fs::read_to_string(dir.join(rel)).unwrap_or_default()
}

/// Records an equivocation and stops shipping for the gate (a row is never overwritten).
pub async fn record_equivocation(
    client: &impl GenericClient,
    gate_id: &str,
    seq: u64,
    stored: Option<&[u8; 32]>,
    offered: Option<&[u8; 32]>,
    detail: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO pg_equivocations (gate_id, seq, stored_hash, offered_hash, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &gate_id,
                &to_i64(seq),
                &stored.map(|h| h.as_slice()),
                &offered.map(|h| h.as_slice()),
                &detail,
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE pg_gates SET stopped = true WHERE gate_id = $1",
            &[&gate_id],
        )
        .await?;
    Ok(())
}

/// Where the local log stands against the shipped position.
pub enum Resume {
    /// The local log holds the shipped history: continue after it.
    At(LocalTail),
    /// The local log differs from the shipped history at `seq`.
    Diverges { seq: u64, local: Option<[u8; 32]> },
}

/// Checks the local line at the shipped position and positions a tail after it.
pub async fn resume(
    client: &impl GenericClient,
    gate_id: &str,
    dir: &Path,
    at: Position,
) -> Result<Resume, StoreError> {
    let io = |e: std::io::Error| {
        StoreError::Unavailable(format!("cannot read the local audit log: {e}"))
    };
    if at.seq == 0 {
        return Ok(Resume::At(LocalTail::open_at(dir, 1).map_err(io)?));
    }
    let mut tail = LocalTail::open_at(dir, at.seq).map_err(io)?;
    let local = match tail.peek_line().map_err(io)? {
        Some(line) if line_seq(line) == Some(at.seq) => Some(line_hash(line)),
        _ => None,
    };
    if local == Some(at.hash) {
        tail.take();
        return Ok(Resume::At(tail));
    }
    // Find the first seq where the histories part (the chain makes "equal" monotone: once two
    // lines differ, every later line differs too).
    let seq = first_divergence(client, gate_id, dir, at.seq).await?;
    let local = local_hash_at(dir, seq).map_err(io)?;
    Ok(Resume::Diverges { seq, local })
}

fn local_hash_at(dir: &Path, seq: u64) -> std::io::Result<Option<[u8; 32]>> {
    let mut tail = LocalTail::open_at(dir, seq)?;
    Ok(match tail.peek_line()? {
        Some(line) if line_seq(line) == Some(seq) => Some(line_hash(line)),
        _ => None,
    })
}

/// The first seq (≤ `upto`) whose stored line differs from the local one (or is absent locally).
async fn first_divergence(
    client: &impl GenericClient,
    gate_id: &str,
    dir: &Path,
    upto: u64,
) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (1u64, upto);
    // Binary search: line k equal implies every line before k equal (k's prev commits to them).
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let stored = client
            .query_opt(
                "SELECT line FROM pg_records WHERE gate_id = $1 AND seq = $2",
                &[&gate_id, &to_i64(mid)],
            )
            .await?
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .transpose()?
            .map(|l| line_hash(&l));
        let local = local_hash_at(dir, mid)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the local log: {e}")))?;
        if stored.is_some() && stored == local {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The shipper of a running gate.
pub struct Shipper {
    pub pool: Pool,
    pub gate_id: String,
    pub dir: PathBuf,
    pub batch: usize,
    /// How long a batch that is not full waits for more records ([`SHIP_LINGER`] by default).
    pub linger: Duration,
    pub status: Arc<ShipStatus>,
    /// The writer's lines and hashes handed over in memory ([`crate::audit::AuditLog::tap`]);
    /// what it does not hold (from before the gate started, or let go while the store was
    /// slow) is read from the segments.
    pub tap: Option<Tap>,
}

/// Where the shipper of a running gate stands: the shipped position and its reader of the
/// segments.
struct Follow {
    at: Position,
    tail: LocalTail,
    /// The seq of the line `tail` yields next.
    tail_next: u64,
}

/// Batches taken from the tap, not yet shipped (oldest first).
#[derive(Default)]
struct Handed(VecDeque<DurableLines>);

impl Handed {
    /// The line with seq `next` and its hash, when the tap handed it over.
    fn line(&mut self, tap: Option<&Tap>, next: u64) -> Option<(Bytes, [u8; 32])> {
        let tap = tap?;
        if self.0.back().is_none_or(|b| b.end_seq() <= next) {
            self.0.extend(tap.take());
        }
        while self.0.front().is_some_and(|b| b.end_seq() <= next) {
            self.0.pop_front();
        }
        self.0.front()?.line(next)
    }
}

impl Shipper {
    /// Follows the log until `stop` turns true: ships each durable line (as reported by
    /// `durable`) once. Errors are counted and retried with backoff; an equivocation stops it.
    pub async fn run(
        self,
        durable: Arc<dyn Fn() -> u64 + Send + Sync>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut state: Option<Follow> = None;
        let mut handed = Handed::default();
        let mut pending: Vec<ShipLine> = Vec::new();
        let mut cache = ShipCache::default();
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                return;
            }
            let durable_seq = durable();
            self.status
                .durable_seq
                .store(durable_seq, Ordering::Relaxed);
            match self
                .step(
                    &mut state,
                    &mut handed,
                    &mut pending,
                    &mut cache,
                    durable_seq,
                )
                .await
            {
                Ok(Step::Idle) => {
                    backoff = Duration::from_millis(50);
                    let _ = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
                }
                Ok(Step::Shipped) => backoff = Duration::from_millis(50),
                Ok(Step::Stopped) => {
                    self.status.stopped.store(true, Ordering::Relaxed);
                    // Keep reporting the backlog; ship nothing more.
                    loop {
                        self.status.durable_seq.store(durable(), Ordering::Relaxed);
                        if tokio::time::timeout(Duration::from_millis(500), stop.changed())
                            .await
                            .is_ok()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, backlog = self.status.backlog(), "store: shipping failed, will retry");
                    let _ = tokio::time::timeout(backoff, stop.changed()).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn step(
        &self,
        state: &mut Option<Follow>,
        handed: &mut Handed,
        pending: &mut Vec<ShipLine>,
        cache: &mut ShipCache,
        durable_seq: u64,
    ) -> Result<Step, StoreError> {
        let status = &self.status;
        if state.is_none() {
            pending.clear();
            let client = self.pool.get().await?;
            // A store migrated past this binary's schema (e.g. unreachable at start) is never
            // written to.
            if let Err(e) = schema::check(&client).await {
                tracing::error!(error = %e, "store: not shipping");
                return Err(e);
            }
            let (at, stopped) = position(&client, &self.gate_id).await?;
            status.shipped_seq.store(at.seq, Ordering::Relaxed);
            if stopped {
                tracing::error!(gate = %self.gate_id, "store: shipping is stopped for this gate by a recorded equivocation");
                return Ok(Step::Stopped);
            }
            match resume(&client, &self.gate_id, &self.dir, at).await? {
                Resume::At(tail) => {
                    *state = Some(Follow {
                        at,
                        tail,
                        tail_next: at.seq + 1,
                    })
                }
                Resume::Diverges { seq, local } => {
                    let detail = format!(
                        "the local audit log differs from the shipped history at seq {seq} (shipped up to seq {})",
                        at.seq
                    );
                    let stored = stored_hash(&client, &self.gate_id, seq).await?;
                    record_equivocation(
                        &client,
                        &self.gate_id,
                        seq,
                        stored.as_ref(),
                        local.as_ref(),
                        &detail,
                    )
                    .await?;
                    self.alarm(seq, &detail);
                    return Ok(Step::Stopped);
                }
            }
        }
        let Some(follow) = state.as_mut() else {
            return Ok(Step::Idle);
        };
        // Fill the batch up to the durable seq: from the tap, or else from the segments.
        let mut next = pending.last().map_or(follow.at.seq + 1, |l| l.seq + 1);
        let mut prev = pending.last().map_or(follow.at.hash, |l| l.hash);
        while pending.len() < self.batch && next <= durable_seq {
            let line = match handed.line(self.tap.as_ref(), next) {
                Some((line, hash)) => {
                    status.read_from_memory.fetch_add(1, Ordering::Relaxed);
                    ShipLine::framed(line, hash)
                }
                None => {
                    let io = |e: std::io::Error| {
                        StoreError::Unavailable(format!("cannot read the local audit log: {e}"))
                    };
                    if follow.tail_next != next {
                        follow.tail = LocalTail::open_at(&self.dir, next).map_err(io)?;
                        follow.tail_next = next;
                    }
                    let Some(line) = follow.tail.peek_line().map_err(io)? else {
                        break;
                    };
                    if line_seq(line).is_none_or(|s| s > durable_seq) {
                        break;
                    }
                    follow.tail_next += 1;
                    status.read_from_segments.fetch_add(1, Ordering::Relaxed);
                    ShipLine::new(follow.tail.take())
                }
            };
            let checked = line.and_then(|l| {
                if l.seq != next {
                    Err(format!("expected seq {next}, found seq {}", l.seq))
                } else if l.prev != Some(prev) {
                    Err(format!(
                        "seq {next}: prev is not the hash of the line before"
                    ))
                } else {
                    Ok(l)
                }
            });
            match checked {
                Ok(l) => {
                    prev = l.hash;
                    next += 1;
                    pending.push(l);
                }
                Err(why) => {
                    // The local log changed under the follower: never ship a second history.
                    let detail = format!("the local audit log breaks its chain: {why}");
                    let client = self.pool.get().await?;
                    record_equivocation(&client, &self.gate_id, next, None, None, &detail).await?;
                    self.alarm(next, &detail);
                    return Ok(Step::Stopped);
                }
            }
        }
        status.oldest_unshipped_ms.store(
            pending
                .first()
                .map_or(0, |l| l.columns.time.timestamp_millis().max(1)),
            Ordering::Relaxed,
        );
        if pending.is_empty() {
            return Ok(Step::Idle);
        }
        // A batch that is not full waits until its oldest record has waited `linger`:
        // under load, fewer and larger transactions (each has a fixed cost in the gate and in
        // the store), at the price of at most that much more lag.
        if pending.len() < self.batch
            && pending.first().is_some_and(|l| {
                (Utc::now() - l.columns.time)
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    < self.linger
            })
        {
            return Ok(Step::Idle);
        }
        let mut client = self.pool.get().await?;
        match ship_batch(&mut client, &self.gate_id, &self.dir, pending, cache).await {
            Ok(Shipped::Committed(p)) => {
                follow.at = p;
                status.shipped_seq.store(p.seq, Ordering::Relaxed);
                status
                    .shipped_records
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                let now = Utc::now();
                for l in pending.iter() {
                    let lag = (now - l.columns.time).to_std().unwrap_or(Duration::ZERO);
                    status.lag_seconds.observe_duration(lag);
                }
                pending.clear();
                status.oldest_unshipped_ms.store(0, Ordering::Relaxed);
                Ok(Step::Shipped)
            }
            Ok(Shipped::Moved(p)) => {
                tracing::info!(
                    stored = p.seq,
                    expected = follow.at.seq,
                    "store: shipped position moved, re-reading it"
                );
                *state = None;
                Ok(Step::Shipped)
            }
            Ok(Shipped::Equivocation { seq, detail }) => {
                self.alarm(seq, &detail);
                Ok(Step::Stopped)
            }
            Err(e) => {
                // The commit may or may not have happened: re-read the position next time.
                *state = None;
                Err(e)
            }
        }
    }

    fn alarm(&self, seq: u64, detail: &str) {
        self.status.equivocations.fetch_add(1, Ordering::Relaxed);
        self.status.stopped.store(true, Ordering::Relaxed);
        tracing::error!(gate = %self.gate_id, seq, detail, "store: EQUIVOCATION, shipping stopped; stored rows are left untouched");
    }
}

enum Step {
    Idle,
    Shipped,
    Stopped,
}

async fn stored_hash(
    client: &impl GenericClient,
    gate_id: &str,
    seq: u64,
) -> Result<Option<[u8; 32]>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT line FROM pg_records WHERE gate_id = $1 AND seq = $2",
            &[&gate_id, &to_i64(seq)],
        )
        .await?
        .map(|r| r.try_get::<_, Vec<u8>>(0))
        .transpose()?
        .map(|l| line_hash(&l)))
}

/// Ships a whole directory by hand (`audit ship`): returns the records shipped now and the
/// final position. `progress` is called after each batch with (shipped seq, last local seq).
pub async fn ship_dir(
    pool: &Pool,
    gate_id: &str,
    dir: &Path,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<(u64, Position), ShipDirError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let (at, stopped) = position(&client, gate_id).await?;
    if stopped {
        return Err(ShipDirError::Stopped);
    }
    let tail = match resume(&client, gate_id, dir, at).await? {
        Resume::At(t) => t,
        Resume::Diverges { seq, local } => {
            let detail = format!(
                "the audit directory differs from the shipped history at seq {seq} (shipped up to seq {})",
                at.seq
            );
            let stored = stored_hash(&client, gate_id, seq).await?;
            record_equivocation(
                &client,
                gate_id,
                seq,
                stored.as_ref(),
                local.as_ref(),
                &detail,
            )
            .await?;
            return Err(ShipDirError::Equivocation { seq, detail });
        }
    };
    // Reading, parsing and chain-checking the next batch (a thread of its own) overlaps with
    // the store committing the current one; at most two batches wait in between.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<ShipLine>, ShipDirError>>(2);
    let dir_owned = dir.to_path_buf();
    let reader = std::thread::Builder::new()
        .name("audit-ship-reader".into())
        .spawn(move || read_batches(tail, &dir_owned, at, batch.max(1), &tx))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the reader thread: {e}")))?;
    let mut cache = ShipCache::default();
    let mut pos = at;
    let mut shipped = 0u64;
    let result = loop {
        let lines = match rx.recv().await {
            None => break Ok((shipped, pos)),
            Some(Err(e)) => break Err(e),
            Some(Ok(lines)) => lines,
        };
        match ship_batch(&mut client, gate_id, dir, &lines, &mut cache).await {
            Ok(Shipped::Committed(p)) => {
                shipped += lines.len() as u64;
                pos = p;
                progress(p.seq);
            }
            Ok(Shipped::Moved(p)) => {
                break Err(ShipDirError::Damaged(format!(
                    "another shipper moved gate `{gate_id}` to seq {} meanwhile",
                    p.seq
                )));
            }
            Ok(Shipped::Equivocation { seq, detail }) => {
                break Err(ShipDirError::Equivocation { seq, detail });
            }
            Err(e) => break Err(e.into()),
        }
    };
    // Dropping the receiver ends the reader at its next send.
    drop(rx);
    let _ = reader.join();
    result
}

/// The reader of [`ship_dir`]: sends consecutive, chain-checked batches until the end of the
/// directory (or the first damage, sent as the last item).
fn read_batches(
    mut tail: LocalTail,
    dir: &Path,
    at: Position,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<ShipLine>, ShipDirError>>,
) {
    let mut prev = at.hash;
    let mut next = at.seq + 1;
    loop {
        let mut lines = Vec::with_capacity(batch);
        while lines.len() < batch {
            match tail.peek_line() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.blocking_send(Err(StoreError::Unavailable(format!(
                        "cannot read `{}`: {e}",
                        dir.display()
                    ))
                    .into()));
                    return;
                }
            }
            let l = match ShipLine::new(tail.take()) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.blocking_send(Err(ShipDirError::Damaged(e)));
                    return;
                }
            };
            if l.seq != next || l.prev != Some(prev) {
                let _ = tx.blocking_send(Err(ShipDirError::Damaged(format!(
                    "seq {next}: the directory's chain breaks"
                ))));
                return;
            }
            prev = l.hash;
            next += 1;
            lines.push(l);
        }
        if lines.is_empty() || tx.blocking_send(Ok(lines)).is_err() {
            return;
        }
    }
}

/// `audit ship` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ShipDirError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("equivocation at seq {seq}: {detail}")]
    Equivocation { seq: u64, detail: String },
    #[error("shipping is stopped for this gate by a recorded equivocation")]
    Stopped,
    #[error("audit log damaged: {0}")]
    Damaged(String),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn line_seq_reads_the_leading_seq_only() {
        assert_eq!(line_seq(b"{\"seq\":42,\"time\":\"x\"}"), Some(42));
        assert_eq!(line_seq(b"{\"time\":\"x\",\"seq\":42}"), None);
        assert_eq!(line_seq(b"{\"seq\":}"), None);
    }

    /// Lines of every shape the one-pass read meets, as the writer frames them, then changed
    /// member by member (the chain does not matter to `ShipLine::new`).
    async fn sample_lines() -> Vec<Vec<u8>> {
        use crate::audit::testutil::{decision, options, outcome};
        let dir = tempfile::tempdir().unwrap();
        let log = crate::audit::AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("r-1"), outcome("r-1")])
            .await
            .unwrap();
        log.close().await;
        let text =
            std::fs::read_to_string(dir.path().join(crate::audit::segment_file_name(1))).unwrap();
        let written: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (d, o) = (&written[0], &written[1]);
        let variant = |base: &serde_json::Value, edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            edit(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let case = "ab".repeat(32);
        vec![
            text.lines().next().unwrap().as_bytes().to_vec(),
            text.lines().nth(1).unwrap().as_bytes().to_vec(),
            // A case snapshot, and a shadow decision.
            variant(d, &|v| {
                v["inputs"] = serde_json::json!({"v": 1, "case": case, "lookups_last_hour": 3, "lookups_last_day": 9});
                v["enforced"] = false.into();
            }),
            // A refusal before identity: no principal, no resource.
            variant(d, &|v| {
                v["principal"] = serde_json::Value::Null;
                v["resource"] = serde_json::Value::Null;
            }),
            // A resource without an employee: not a lookup.
            variant(d, &|v| v["principal"] = serde_json::Value::Null),
            // Escaped strings in the members read: the audit parser's way.
            variant(d, &|v| v["principal"]["id"] = "e\"12\\3".into()),
            variant(d, &|v| v["resource"]["id"] = "p\u{1f}q\n".into()),
            // An escaped string elsewhere does not matter.
            variant(d, &|v| v["request"]["path"] = "/a\"b".into()),
            // An outcome naming several persons, one twice, and none.
            variant(o, &|v| {
                v["disclosed"] = serde_json::json!([
                    {"type": "Person", "id": "999993653"},
                    {"type": "Person", "id": "111222333"},
                    {"type": "Person", "id": "999993653"}
                ]);
            }),
            variant(o, &|v| v["disclosed"] = serde_json::json!([])),
            // Not a record the parser accepts: both ways refuse it.
            variant(o, &|v| {
                v.as_object_mut().unwrap().remove("disclosed");
            }),
            variant(d, &|v| {
                v.as_object_mut().unwrap().remove("request_id");
            }),
            variant(d, &|v| v["time"] = "yesterday".into()),
            variant(d, &|v| v["kind"] = "decisive".into()),
            b"{\"seq\":1,\"kind\":\"decision\"".to_vec(),
        ]
    }

    #[tokio::test]
    async fn the_one_pass_read_gives_the_columns_of_the_audit_parser() {
        let lines = sample_lines().await;
        let mut read_in_one_pass = 0;
        for line in lines {
            let fast = ShipLine::new(line.clone());
            let full = ShipLine::parsed(line.clone());
            let shown = String::from_utf8_lossy(&line).into_owned();
            match (&fast, &full) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(format!("{a:?}"), format!("{b:?}"), "{shown}");
                    if serde_json::from_slice::<HotFields<'_>>(&line).is_ok() {
                        read_in_one_pass += 1;
                    }
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{shown}: one pass {fast:?}, audit parser {full:?}"),
            }
        }
        // The plain lines did take the one-pass read (the escaped ones did not).
        assert_eq!(read_in_one_pass, 8);
    }

    /// The scan against `serde_json` and the audit parser: what the scan reads, `serde_json`
    /// reads the same; a record the parser accepts, `ShipLine::framed` reads with the same
    /// columns. (Like the borrowing pass, the scan does not check members it does not read:
    /// a line the parser refuses may still be read.) Whether the scan read the line.
    fn framed_agrees(line: &[u8]) -> bool {
        let shown = String::from_utf8_lossy(line).into_owned();
        let scanned = scan_framed(line);
        if scanned.is_some() {
            let serde = serde_json::from_slice::<HotFields<'_>>(line).ok();
            assert_eq!(format!("{scanned:?}"), format!("{serde:?}"), "{shown}");
        }
        if let Ok(full) = ShipLine::parsed(line.to_vec()) {
            let framed = ShipLine::framed(Bytes::copy_from_slice(line), line_hash(line));
            assert_eq!(
                format!("{framed:?}"),
                format!("{:?}", Ok::<_, String>(full)),
                "{shown}"
            );
        }
        scanned.is_some()
    }

    #[tokio::test]
    async fn the_scan_of_framed_lines_gives_the_columns_of_the_audit_parser() {
        let mut scanned = 0;
        for line in sample_lines().await {
            if framed_agrees(&line) && ShipLine::parsed(line.clone()).is_ok() {
                scanned += 1;
            }
        }
        // The plain lines were scanned (the ones with escapes in a member read were not).
        assert_eq!(scanned, 8);
    }

    /// A small deterministic generator (xorshift64) for the randomized comparison below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn text(&mut self) -> String {
            const PIECES: [&str; 12] = [
                "a", "Z9", "\"", "\\", "{", "}", "[", "]", ",", ":", "é€", "\u{1}",
            ];
            (0..self.below(6))
                .map(|_| PIECES[self.below(PIECES.len())])
                .collect()
        }

        fn value(&mut self, depth: usize) -> serde_json::Value {
            use serde_json::Value;
            match self.below(if depth == 0 { 4 } else { 6 }) {
                0 => Value::Null,
                1 => Value::from(self.below(2) == 0),
                2 => Value::from(self.next() as i64 / 7),
                3 => Value::from(self.text()),
                4 => Value::from(
                    (0..self.below(4))
                        .map(|_| self.value(depth - 1))
                        .collect::<Vec<_>>(),
                ),
                _ => Value::Object(
                    (0..self.below(4))
                        .map(|_| (self.text(), self.value(depth - 1)))
                        .collect(),
                ),
            }
        }
    }

    #[tokio::test]
    async fn the_scan_agrees_with_the_audit_parser_on_random_variants_of_real_lines() {
        let samples = sample_lines().await;
        let bases: Vec<serde_json::Value> = samples[..3]
            .iter()
            .chain(&samples[8..10])
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut scanned, mut accepted) = (0, 0);
        for _ in 0..3000 {
            let mut v = bases[rng.below(bases.len())].clone();
            for _ in 0..=rng.below(4) {
                // Junk beside the members read, and inside the objects they are read from.
                let target = match rng.below(5) {
                    0 => Some(&mut v),
                    1 => v.get_mut("principal"),
                    2 => v.get_mut("resource"),
                    3 => v.get_mut("inputs"),
                    _ => v.get_mut("disclosed").and_then(|d| d.get_mut(0)),
                };
                if let Some(serde_json::Value::Object(m)) = target {
                    let key = rng.text();
                    let value = rng.value(3);
                    m.insert(key, value);
                }
                // And now and then a member read, changed.
                let (member, value) = match rng.below(8) {
                    0 => ("request_id", serde_json::Value::from(rng.text())),
                    1 => (
                        "principal",
                        serde_json::json!({"id": rng.text(), "org": "0363", "roles": []}),
                    ),
                    2 => (
                        "resource",
                        serde_json::json!({"type": "Person", "id": rng.text()}),
                    ),
                    3 => ("resource", serde_json::Value::Null),
                    4 => ("inputs", serde_json::json!({"v": 1, "case": rng.text()})),
                    5 => (
                        "disclosed",
                        serde_json::json!([{"type": "Person", "id": rng.text()}, {"type": "Person", "id": "1"}]),
                    ),
                    _ => continue,
                };
                if let Some(m) = v.as_object_mut()
                    && m.contains_key(member)
                {
                    m.insert(member.to_string(), value);
                }
            }
            let line = serde_json::to_vec(&v).unwrap();
            if framed_agrees(&line) {
                scanned += 1;
            }
            if ShipLine::parsed(line).is_ok() {
                accepted += 1;
            }
        }
        eprintln!("{accepted} of 3000 variants accepted by the audit parser, {scanned} scanned");
        // Most variants are records the parser accepts, and most of those were scanned.
        assert!(
            accepted > 2000 && scanned > 1000,
            "{accepted} accepted, {scanned} scanned"
        );
    }

    #[test]
    fn genesis_prev_is_the_zero_hash() {
        assert_eq!(prev_bytes(&"0".repeat(64)), Some([0; 32]));
        assert_eq!(prev_bytes("zz"), None);
    }

    #[tokio::test]
    async fn tail_follows_growing_segments_and_holds_back_incomplete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let seg1 = dir.path().join(crate::audit::segment_file_name(1));
        std::fs::write(
            &seg1,
            b"{\"seq\":1,\"a\":1}\n{\"seq\":2,\"a\":2}\n{\"seq\":3",
        )
        .unwrap();
        let mut tail = LocalTail::open_at(dir.path(), 2).unwrap();
        assert_eq!(tail.peek_line().unwrap().map(line_seq), Some(Some(2)));
        tail.take();
        // The third line is not complete yet.
        assert!(tail.peek_line().unwrap().is_none());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg1)
            .unwrap();
        f.write_all(b",\"a\":3}\n").unwrap();
        assert_eq!(tail.peek_line().unwrap().map(line_seq), Some(Some(3)));
        tail.take();
        std::fs::write(
            dir.path().join(crate::audit::segment_file_name(2)),
            b"{\"seq\":4,\"a\":4}\n",
        )
        .unwrap();
        assert_eq!(tail.peek_line().unwrap().map(line_seq), Some(Some(4)));
        tail.take();
        assert!(tail.peek_line().unwrap().is_none());
        // Opening at a seq in the second segment skips the first.
        let mut again = LocalTail::open_at(dir.path(), 4).unwrap();
        assert_eq!(again.peek_line().unwrap().map(line_seq), Some(Some(4)));
    }
}
