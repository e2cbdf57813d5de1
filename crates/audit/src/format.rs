//! The byte format of the audit log (format version 1): segment names, how the writer frames a
//! record body into a line, the one parser of a line, and the chain rule.
//!
//! A line is `{"seq":N,` + the body's JSON fields + `,"prev":"<hex>"}` where `<hex>` is the
//! lowercase hex SHA-256 of the previous line's exact bytes (without its `\n`), or 64 zeros for
//! `seq` 1. Everything that reads the log (open, verify, the auditor tools) goes through
//! [`parse_record`] and [`Chain::check`]; there is no second parser.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use std::borrow::Cow;

use serde::Deserialize;

use super::record::{
    ReadAccess, ReadCheckpoint, ReadConfig, ReadDecision, ReadOutcome, ReadReview, Record,
    RecordBody,
};

/// `prev` of the first record: 64 zeros.
pub(crate) const GENESIS_PREV: [u8; 64] = [b'0'; 64];

const SEGMENT_PREFIX: &str = "audit-";
const SEGMENT_SUFFIX: &str = ".jsonl";

/// The file name of segment `n` (`audit-000001.jsonl`; more digits after 999999).
pub fn segment_file_name(n: u64) -> String {
    format!("{SEGMENT_PREFIX}{n:06}{SEGMENT_SUFFIX}")
}

/// The number of a segment file name, only for the canonical spelling of [`segment_file_name`].
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n >= 1 && segment_file_name(n) == name).then_some(n)
}

/// The segment files in `dir`, ordered by number; other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(n) = name.to_str().and_then(parse_segment_name) {
            segments.push((n, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(n, _)| *n);
    Ok(segments)
}

/// The display name of a segment path (its file name).
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A decision record with `"enforced": false` after its fields.
#[derive(serde::Serialize)]
struct Shadow<'a> {
    #[serde(flatten)]
    decision: &'a super::record::DecisionRecord,
    enforced: bool,
}

/// Serialises a record body to its JSON object; the writer strips the braces.
pub(crate) fn encode_body(body: &RecordBody) -> Result<Vec<u8>, String> {
    // A decision record is 600–900 bytes: one allocation instead of growing from 128 bytes.
    let mut bytes = Vec::with_capacity(1024);
    match body {
        RecordBody::Decision(d) => serde_json::to_writer(&mut bytes, d),
        RecordBody::Outcome(o) => serde_json::to_writer(&mut bytes, o),
        RecordBody::Checkpoint(c) => serde_json::to_writer(&mut bytes, c),
        RecordBody::Review(r) => serde_json::to_writer(&mut bytes, r),
        RecordBody::Config(c) => serde_json::to_writer(&mut bytes, c),
        RecordBody::Access(a) => serde_json::to_writer(&mut bytes, a),
        RecordBody::ShadowDecision(d) => serde_json::to_writer(
            &mut bytes,
            &Shadow {
                decision: d,
                enforced: false,
            },
        ),
    }
    .map_err(|e| format!("cannot serialise record: {e}"))?;
    // INVARIANT: a body is a non-empty JSON object without `seq`/`prev` (the record types have
    // no such fields), so framing it yields one valid JSON object on one line (serde_json
    // escapes control characters, so the body contains no raw newline).
    if bytes.len() < 3 || bytes.first() != Some(&b'{') || bytes.last() != Some(&b'}') {
        return Err("record body is not a non-empty json object".into());
    }
    Ok(bytes)
}

/// Appends the line of `body` (without the newline) to `out`.
pub(crate) fn frame_line(out: &mut Vec<u8>, seq: u64, body: &[u8], prev_hex: &[u8; 64]) {
    out.extend_from_slice(b"{\"seq\":");
    push_decimal(out, seq);
    out.push(b',');
    // `encode_body` guarantees the braces; `get` keeps this free of panics regardless.
    out.extend_from_slice(
        body.get(1..body.len().saturating_sub(1))
            .unwrap_or_default(),
    );
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev_hex);
    out.extend_from_slice(b"\"}");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Lowercase hex SHA-256 of `line`.
pub(crate) fn line_hash_hex(line: &[u8]) -> [u8; 64] {
    hash_hex(&Sha256::digest(line).into())
}

/// SHA-256 of a line's bytes (what the next line's `prev` names, in hex).
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// A hash in lowercase hex.
pub(crate) fn hash_hex(digest: &[u8; 32]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

/// The `kind` of a line, read without allocating.
#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// Parses one line (without its newline) as a record. The only parser of the log.
///
/// Same result as deserialising [`Record`] (tagged by `kind`), but reads the tag first and then
/// the concrete type, which avoids serde's buffering of internally tagged enums (about twice as
/// fast on the verify path).
pub fn parse_record(line: &[u8]) -> Result<Record, String> {
    let not_a_record = |e: serde_json::Error| format!("not a record: {e}");
    let head: KindOnly<'_> = serde_json::from_slice(line).map_err(not_a_record)?;
    match head.kind.as_ref() {
        "decision" => serde_json::from_slice::<ReadDecision>(line)
            .map(|d| Record::Decision(Box::new(d)))
            .map_err(not_a_record),
        "outcome" => serde_json::from_slice::<ReadOutcome>(line)
            .map(Record::Outcome)
            .map_err(not_a_record),
        "checkpoint" => serde_json::from_slice::<ReadCheckpoint>(line)
            .map(Record::Checkpoint)
            .map_err(not_a_record),
        "review" => serde_json::from_slice::<ReadReview>(line)
            .map(Record::Review)
            .map_err(not_a_record),
        "config" => serde_json::from_slice::<ReadConfig>(line)
            .map(Record::Config)
            .map_err(not_a_record),
        "access" => serde_json::from_slice::<ReadAccess>(line)
            .map(Record::Access)
            .map_err(not_a_record),
        other => Err(format!("not a record: unknown kind `{other}`")),
    }
}

/// Why a line does not continue the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFault {
    /// Not valid JSON or not a decision/outcome record.
    Unreadable(String),
    /// The line carries another `seq` than the next one.
    Seq { expected: u64, found: u64 },
    /// `prev` is not the hash of the previous line.
    Prev {
        seq: u64,
        expected: String,
        found: String,
    },
}

impl LineFault {
    /// The seq at which the chain breaks, when the line was readable.
    pub fn seq(&self) -> Option<u64> {
        match self {
            LineFault::Unreadable(_) => None,
            LineFault::Seq { expected, .. } => Some(*expected),
            LineFault::Prev { seq, .. } => Some(*seq),
        }
    }
}

impl std::fmt::Display for LineFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineFault::Unreadable(why) => f.write_str(why),
            LineFault::Seq { expected, found } => {
                write!(f, "expected seq {expected}, found seq {found}")
            }
            LineFault::Prev {
                seq,
                expected,
                found,
            } => write!(
                f,
                "seq {seq}: prev `{found}` is not the sha-256 of the previous line, expected `{expected}`"
            ),
        }
    }
}

/// The state of the chain after the last accepted line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The seq the next line must carry.
    pub next_seq: u64,
    /// The `prev` the next line must carry.
    pub prev_hex: [u8; 64],
}

impl Chain {
    /// The state before the first record.
    pub fn genesis() -> Chain {
        Chain {
            next_seq: 1,
            prev_hex: GENESIS_PREV,
        }
    }

    /// Checks that `line` is the next record of the chain and advances past it.
    pub fn check(&mut self, line: &[u8]) -> Result<Record, LineFault> {
        let record = parse_record(line).map_err(LineFault::Unreadable)?;
        self.follows(&record)?;
        self.advance(line);
        Ok(record)
    }

    /// Like [`Chain::check`] for a line whose hash (`line_hash_hex(line)`) was computed
    /// already (by the read-ahead thread of the verifier).
    pub fn check_hashed(&mut self, line: &[u8], hash_hex: &[u8; 64]) -> Result<Record, LineFault> {
        let record = parse_record(line).map_err(LineFault::Unreadable)?;
        self.follows(&record)?;
        self.prev_hex = *hash_hex;
        self.next_seq += 1;
        Ok(record)
    }

    /// Whether `record` carries the seq and prev that come next.
    fn follows(&self, record: &Record) -> Result<(), LineFault> {
        if record.seq() != self.next_seq {
            return Err(LineFault::Seq {
                expected: self.next_seq,
                found: record.seq(),
            });
        }
        if record.prev().as_bytes() != self.prev_hex {
            return Err(LineFault::Prev {
                seq: self.next_seq,
                expected: String::from_utf8_lossy(&self.prev_hex).into_owned(),
                found: record.prev().to_string(),
            });
        }
        Ok(())
    }

    /// Advances past `line` without checking it (the writer produced it).
    pub fn advance(&mut self, line: &[u8]) {
        self.prev_hex = line_hash_hex(line);
        self.next_seq += 1;
    }

    /// Like [`Chain::advance`] for a line whose SHA-256 the caller computed.
    pub(crate) fn advance_hashed(&mut self, hash: &[u8; 32]) {
        self.prev_hex = hash_hex(hash);
        self.next_seq += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::record::{OutcomeKind, OutcomeRecord, ResourceRef};

    fn outcome() -> RecordBody {
        RecordBody::Outcome(OutcomeRecord {
            release: Vec::new(),
            time: "2026-01-02T03:04:05Z".into(),
            kind: OutcomeKind::Outcome,
            request_id: "req-1".into(),
            status: 200,
            upstream_ms: 12,
            disclosed: vec![ResourceRef {
                kind: "Person".into(),
                id: "999993653".into(),
            }],
            code: None,
            upstream_status: None,
            fsc_transaction_id: None,
        })
    }

    #[test]
    fn framed_line_has_seq_first_and_prev_last() {
        let body = encode_body(&outcome()).unwrap();
        let mut line = Vec::new();
        frame_line(&mut line, 42, &body, &GENESIS_PREV);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.starts_with("{\"seq\":42,\"time\":"), "{text}");
        assert!(
            text.ends_with(&format!(",\"prev\":\"{}\"}}", "0".repeat(64))),
            "{text}"
        );
        let record = parse_record(&line).unwrap();
        assert_eq!(record.seq(), 42);
        assert_eq!(record.request_id(), "req-1");
    }

    #[test]
    fn parse_record_agrees_with_the_tagged_record_type() {
        let bodies = [outcome(), crate::testutil::decision("req-9")];
        for body in &bodies {
            let mut line = Vec::new();
            frame_line(&mut line, 7, &encode_body(body).unwrap(), &GENESIS_PREV);
            let direct: Record = serde_json::from_slice(&line).unwrap();
            assert_eq!(parse_record(&line).unwrap(), direct);
        }
        for bad in [
            &b"{\"seq\":1,\"kind\":\"other\",\"prev\":\"0\"}"[..],
            b"{\"seq\":1,\"prev\":\"0\"}",
            b"[1,2]",
            b"{\"kind\":\"outcome\",\"kind\":\"outcome\"}",
        ] {
            assert!(serde_json::from_slice::<Record>(bad).is_err());
            assert!(
                parse_record(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn decimal_encoding_matches_display() {
        for n in [0u64, 1, 9, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn line_hash_is_lowercase_hex_sha256() {
        // sha256("abc") from FIPS 180-2.
        let hex = line_hash_hex(b"abc");
        assert_eq!(
            &hex[..],
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn segment_names_round_trip_and_reject_other_spellings() {
        assert_eq!(segment_file_name(1), "audit-000001.jsonl");
        assert_eq!(segment_file_name(1_234_567), "audit-1234567.jsonl");
        assert_eq!(parse_segment_name("audit-000001.jsonl"), Some(1));
        assert_eq!(parse_segment_name("audit-1234567.jsonl"), Some(1_234_567));
        assert_eq!(parse_segment_name("audit-0000001.jsonl"), None);
        assert_eq!(parse_segment_name("audit-000000.jsonl"), None);
        assert_eq!(parse_segment_name("audit-00000a.jsonl"), None);
        assert_eq!(parse_segment_name("audit-000001.jsonl.bak"), None);
    }

    #[test]
    fn chain_rejects_wrong_seq_and_wrong_prev() {
        let body = encode_body(&outcome()).unwrap();
        let mut first = Vec::new();
        frame_line(&mut first, 1, &body, &GENESIS_PREV);
        let mut chain = Chain::genesis();
        assert!(chain.check(&first).is_ok());

        let mut wrong_seq = Vec::new();
        frame_line(&mut wrong_seq, 3, &body, &chain.prev_hex);
        assert_eq!(
            chain.clone().check(&wrong_seq).unwrap_err(),
            LineFault::Seq {
                expected: 2,
                found: 3
            }
        );

        let mut wrong_prev = Vec::new();
        frame_line(&mut wrong_prev, 2, &body, &GENESIS_PREV);
        let fault = chain.clone().check(&wrong_prev).unwrap_err();
        assert_eq!(fault.seq(), Some(2));
        assert!(matches!(fault, LineFault::Prev { .. }));
        // The same with the hash computed beforehand.
        let hash = line_hash_hex(&wrong_prev);
        assert_eq!(
            chain.clone().check_hashed(&wrong_prev, &hash).unwrap_err(),
            fault
        );
        let mut good = Vec::new();
        frame_line(&mut good, 2, &body, &chain.prev_hex);
        let (mut a, mut b) = (chain, chain);
        a.check(&good).unwrap();
        b.check_hashed(&good, &line_hash_hex(&good)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn unreadable_line_has_no_seq() {
        let fault = Chain::genesis().check(b"{\"seq\":1,").unwrap_err();
        assert_eq!(fault.seq(), None);
        assert!(fault.to_string().starts_with("not a record"));
    }
}
