//! Queries over the log: decisions joined with their outcomes (and reviews), filtered.
//!
//! One row per decision record. A decision matches `subject` when it was about that person or
//! when its request's outcome disclosed that person (so a search that returned the person
//! counts for them). Guarantees: every record is read through the one parser
//! ([`super::parse_record`]); lines are pre-filtered on raw bytes (a line that does not contain
//! the subject, kenteken, employee or case searched for cannot match and is not parsed), then
//! the outcomes and decisions of the matching requests are fetched in a second pass by request
//! id. Refuses nothing silently: a line that does not parse is an error naming file and line.
//! Does not check the chain — run `audit verify` for integrity.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use purpose_gate_audit::AuditError;
use purpose_gate_audit::LineReader;
use purpose_gate_audit::record::{
    ReadAccess, ReadCheckpoint, ReadDecision, ReadOutcome, ReadReview, Record, ResourceRef,
    ReviewVerdict, Verdict,
};
use purpose_gate_audit::{display_name, list_segment_files as list_segments, parse_record};

/// What to look for; all given filters must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A person's id as stored (the BSN, or its pseudonym).
    pub subject: Option<String>,
    /// A kenteken, normalised (uppercase, no hyphens).
    pub kenteken: Option<String>,
    pub employee: Option<String>,
    pub org: Option<String>,
    pub case: Option<String>,
    pub action: Option<String>,
    pub decision: Option<Verdict>,
    pub break_glass: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The FSC TransactionID of a forwarded request (outcome `fsc_transaction_id`).
    pub fsc_transaction_id: Option<String>,
}

/// Normalises a kenteken: uppercase, without hyphens and spaces.
pub fn normalise_kenteken(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// The latest review of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewState {
    pub seq: u64,
    pub by: String,
    pub verdict: ReviewVerdict,
    pub note: Option<String>,
    pub time: String,
}

/// One decision with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The gate whose log holds the record: set when answering from the central store
    /// (`--db`), where seqs are per gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    pub seq: u64,
    pub time: String,
    pub request_id: String,
    pub employee: Option<String>,
    pub org: Option<String>,
    pub roles: Vec<String>,
    /// The employee's department, when the token named one (format 1.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    pub action: Option<String>,
    pub resource: Option<ResourceRef>,
    pub case_id: Option<String>,
    /// SHA-256 of the case snapshot (`cases/<hash>.json`) the decision saw (format 1.2
    /// `inputs.case`): the case's type and window as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_snapshot: Option<String>,
    /// The case's URL in the case registry (a ZGW zaak URL); absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_url: Option<String>,
    pub doelbinding: Option<String>,
    pub verwerking: Option<String>,
    pub break_glass: bool,
    pub reason: Option<String>,
    pub fields: Vec<String>,
    pub decision: Verdict,
    pub code: Option<String>,
    pub reasons: Vec<String>,
    /// Seq of the outcome record, when the request was forwarded.
    pub outcome_seq: Option<u64>,
    pub status: Option<u16>,
    pub disclosed: Vec<ResourceRef>,
    /// The persons the registry's answer held but the gate withheld (release decision deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<ResourceRef>,
    /// The FSC TransactionID of the forwarded request, when its upstream is reached through an
    /// FSC Outway (absent in records before format 1.1).
    pub fsc_transaction_id: Option<String>,
    pub review: Option<ReviewState>,
}

impl Row {
    fn new(d: &ReadDecision, outcome: Option<&ReadOutcome>) -> Row {
        Row {
            gate: None,
            seq: d.seq,
            time: d.time.clone(),
            request_id: d.request_id.clone(),
            employee: d.principal.as_ref().map(|p| p.id.clone()),
            org: d.principal.as_ref().map(|p| p.org.clone()),
            roles: d
                .principal
                .as_ref()
                .map(|p| p.roles.clone())
                .unwrap_or_default(),
            department: d.principal.as_ref().and_then(|p| p.department.clone()),
            action: d.action.clone(),
            resource: d.resource.clone(),
            case_id: d.case_id.clone(),
            case_snapshot: d.inputs.as_ref().and_then(|i| i.case.clone()),
            case_url: d.case_url.clone(),
            doelbinding: d.purpose.doelbinding.clone(),
            verwerking: d.purpose.verwerking.clone(),
            break_glass: d.purpose.break_glass,
            reason: d.purpose.reason.clone(),
            fields: d.fields.clone(),
            decision: d.decision,
            code: d.code.clone(),
            reasons: d.reasons.clone(),
            outcome_seq: outcome.map(|o| o.seq),
            status: outcome.map(|o| o.status),
            disclosed: outcome.map(|o| o.disclosed.clone()).unwrap_or_default(),
            withheld: outcome
                .map(|o| {
                    o.release
                        .iter()
                        .filter(|r| !r.released)
                        .map(|r| ResourceRef {
                            kind: r.kind.clone(),
                            id: r.id.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            fsc_transaction_id: outcome.and_then(|o| o.fsc_transaction_id.clone()),
            review: None,
        }
    }

    /// The persons this row concerns: the one looked up and those disclosed by the answer.
    pub fn persons(&self) -> BTreeSet<&str> {
        let mut persons: BTreeSet<&str> = self
            .disclosed
            .iter()
            .filter(|d| d.kind == "Person")
            .map(|d| d.id.as_str())
            .collect();
        if let Some(res) = &self.resource
            && res.kind == "Person"
        {
            persons.insert(res.id.as_str());
        }
        persons
    }

    /// Whether this row concerns person `id` (looked up, or disclosed by the answer).
    pub fn concerns_person(&self, id: &str) -> bool {
        self.resource
            .as_ref()
            .is_some_and(|r| r.kind == "Person" && r.id == id)
            || self
                .disclosed
                .iter()
                .any(|r| r.kind == "Person" && r.id == id)
    }

    /// Whether the employee obtained data of person `id` through this row (allowed, and
    /// disclosed — or a successful answer that disclosed nothing is not counted).
    pub fn disclosed_person(&self, id: &str) -> bool {
        self.disclosed
            .iter()
            .any(|r| r.kind == "Person" && r.id == id)
    }

    /// A decision time as a date-time (unparsable times sort first).
    pub fn when(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    fn matches(&self, f: &Filter) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        if let Some(s) = &f.subject
            && !self.concerns_person(s)
        {
            return false;
        }
        if let Some(k) = &f.kenteken {
            let hit = self
                .resource
                .as_ref()
                .is_some_and(|r| r.kind == "Vehicle" && r.id == *k)
                || self
                    .disclosed
                    .iter()
                    .any(|r| r.kind == "Vehicle" && r.id == *k);
            if !hit {
                return false;
            }
        }
        if !(eq(&f.employee, &self.employee)
            && eq(&f.org, &self.org)
            && eq(&f.case, &self.case_id)
            && eq(&f.action, &self.action))
        {
            return false;
        }
        if !eq(&f.fsc_transaction_id, &self.fsc_transaction_id) {
            return false;
        }
        if f.decision.is_some_and(|d| d != self.decision) {
            return false;
        }
        if f.break_glass.is_some_and(|b| b != self.break_glass) {
            return false;
        }
        if f.since.is_some() || f.until.is_some() {
            let Some(t) = self.when() else { return false };
            if f.since.is_some_and(|s| t < s) || f.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }
}

/// Everything a query read: matching rows, plus the checkpoints (for reports).
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    pub rows: Vec<Row>,
    pub checkpoints: Vec<ReadCheckpoint>,
    /// All review records of the log.
    pub reviews: Vec<ReadReview>,
    /// All access records of the log (the auditor console's views of personal data).
    pub accesses: Vec<ReadAccess>,
    /// Records in the log (the last seq).
    pub records: u64,
}

/// The record kind of a line, read from the bytes the writer puts right after `time`.
fn line_kind(line: &[u8]) -> Option<&'static str> {
    let head = &line[..line.len().min(160)];
    let head = std::str::from_utf8(head).ok().or_else(|| {
        // The 160-byte cut may split a character; fall back to the valid prefix.
        std::str::from_utf8(&head[..head.len().saturating_sub(3)]).ok()
    })?;
    const KINDS: [(&str, &str); 5] = [
        (",\"kind\":\"access\",", "access"),
        (",\"kind\":\"decision\",", "decision"),
        (",\"kind\":\"outcome\",", "outcome"),
        (",\"kind\":\"checkpoint\",", "checkpoint"),
        (",\"kind\":\"review\",", "review"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| head.contains(needle))
        .map(|(_, kind)| *kind)
}

/// The `request_id` value of a line, without parsing it (`None` if it needs unescaping).
fn raw_request_id(line: &str) -> Option<&str> {
    const KEY: &str = "\"request_id\":\"";
    let start = line.find(KEY)? + KEY.len();
    let rest = &line[start..];
    let end = rest.find('"')?;
    let value = &rest[..end];
    (!value.contains('\\')).then_some(value)
}

/// Calls `f` with every line of every segment, with its file name and line number.
fn for_each_line(
    dir: &Path,
    mut f: impl FnMut(&str, u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let segments = list_segments(dir)
        .map_err(|e| AuditError::Unavailable(format!("cannot list `{}`: {e}", dir.display())))?;
    for (_, path) in segments {
        let name = display_name(&path);
        let mut reader = LineReader::open(&path)
            .map_err(|e| AuditError::Unavailable(format!("cannot open `{name}`: {e}")))?;
        while reader
            .read_next()
            .map_err(|e| AuditError::Unavailable(format!("cannot read `{name}`: {e}")))?
        {
            let line = reader.line();
            if !line.terminated {
                // A torn tail the writer will cut off: not a record.
                continue;
            }
            f(&name, line.number, line.bytes)?;
        }
    }
    Ok(())
}

fn parse_at(file: &str, number: u64, line: &[u8]) -> Result<Record, AuditError> {
    parse_record(line).map_err(|detail| AuditError::Damaged {
        file: file.to_string(),
        line: number,
        detail,
    })
}

/// Runs a query over the log in `dir`.
pub fn query(dir: &Path, filter: &Filter) -> Result<QueryResult, AuditError> {
    query_lines(|f| for_each_line(dir, f), filter)
}

/// A source of log lines for [`query_lines`]: calls the given function with every line of
/// one log (in seq order, with a file name and line number for messages).
pub type LineVisitor<'a> = &'a mut dyn FnMut(&str, u64, &[u8]) -> Result<(), AuditError>;

/// Runs a query over the lines of one log that `source` hands out (it may be called twice: a
/// second pass finds the outcomes of the decisions found). The central store hands out the
/// stored lines of one gate with it (`audit query --db`).
pub fn query_lines(
    mut source: impl FnMut(LineVisitor<'_>) -> Result<(), AuditError>,
    filter: &Filter,
) -> Result<QueryResult, AuditError> {
    // The most selective text that every matching decision (or its outcome) contains.
    let needle: Option<&str> = filter
        .fsc_transaction_id
        .as_deref()
        .or(filter.subject.as_deref())
        .or(filter.kenteken.as_deref())
        .or(filter.employee.as_deref())
        .or(filter.case.as_deref());
    // Outcomes carry the subject/kenteken and the FSC TransactionID; employee and case only
    // appear in decisions.
    let needle_in_outcomes = filter.fsc_transaction_id.is_some()
        || filter.subject.is_some()
        || filter.kenteken.is_some();

    let mut decisions: BTreeMap<u64, ReadDecision> = BTreeMap::new();
    let mut outcomes: HashMap<String, ReadOutcome> = HashMap::new();
    let mut result = QueryResult::default();

    source(&mut |file, number, line| {
        result.records += 1;
        let kind = line_kind(line);
        let wanted = match (kind, needle) {
            (Some("checkpoint" | "review" | "access"), _) => true,
            (Some("config"), _) => false,
            (_, None) => true,
            (Some("outcome"), Some(_)) if !needle_in_outcomes => false,
            (_, Some(n)) => std::str::from_utf8(line).is_ok_and(|s| s.contains(n)),
        };
        if !wanted {
            return Ok(());
        }
        match parse_at(file, number, line)? {
            Record::Decision(d) => {
                decisions.insert(d.seq, *d);
            }
            Record::Outcome(o) => {
                outcomes.insert(o.request_id.clone(), o);
            }
            Record::Checkpoint(c) => result.checkpoints.push(c),
            Record::Review(r) => result.reviews.push(r),
            Record::Config(_) => {}
            Record::Access(a) => result.accesses.push(a),
        }
        Ok(())
    })?;

    if needle.is_some() {
        // Second pass: the outcomes of the decisions found, and the decisions of the outcomes
        // found (a search that disclosed the subject).
        let decided: HashSet<&str> = decisions.values().map(|d| d.request_id.as_str()).collect();
        let mut missing: HashSet<String> = decisions
            .values()
            .filter(|d| !outcomes.contains_key(&d.request_id))
            .map(|d| d.request_id.clone())
            .collect();
        missing.extend(
            outcomes
                .keys()
                .filter(|id| !decided.contains(id.as_str()))
                .cloned(),
        );
        let known: HashSet<u64> = decisions.keys().copied().collect();
        if !missing.is_empty() {
            source(&mut |file, number, line| {
                let Some(kind @ ("decision" | "outcome")) = line_kind(line) else {
                    return Ok(());
                };
                let Ok(text) = std::str::from_utf8(line) else {
                    return Ok(());
                };
                let hit = match raw_request_id(text) {
                    Some(id) => missing.contains(id),
                    None => true,
                };
                if !hit {
                    return Ok(());
                }
                match parse_at(file, number, line)? {
                    Record::Decision(d)
                        if kind == "decision"
                            && missing.contains(&d.request_id)
                            && !known.contains(&d.seq) =>
                    {
                        decisions.insert(d.seq, *d);
                    }
                    Record::Outcome(o) if missing.contains(&o.request_id) => {
                        outcomes.entry(o.request_id.clone()).or_insert(o);
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
    }

    let mut latest_review: HashMap<u64, &ReadReview> = HashMap::new();
    // A review naming another gate's log (`target_gate`, made over the central store) is not
    // about this log's seqs.
    for r in result.reviews.iter().filter(|r| r.target_gate.is_none()) {
        latest_review.insert(r.target_seq, r);
    }
    for d in decisions.values() {
        let mut row = Row::new(d, outcomes.get(&d.request_id));
        if !row.matches(filter) {
            continue;
        }
        row.review = latest_review.get(&d.seq).map(|r| ReviewState {
            seq: r.seq,
            by: r.by.clone(),
            verdict: r.verdict,
            note: r.note.clone(),
            time: r.time.clone(),
        });
        result.rows.push(row);
    }
    Ok(result)
}

/// The smallest checkpoint that covers `seq` (tree size ≥ seq).
pub fn covering_checkpoint(checkpoints: &[ReadCheckpoint], seq: u64) -> Option<&ReadCheckpoint> {
    checkpoints
        .iter()
        .filter(|c| c.tree_size >= seq)
        .min_by_key(|c| c.tree_size)
}

/// Column names of table and csv output.
pub const COLUMNS: [&str; 14] = [
    "seq",
    "time",
    "employee",
    "org",
    "action",
    "subject",
    "case",
    "break_glass",
    "decision",
    "code",
    "status",
    "disclosed",
    "review",
    "fsc_transaction_id",
];

fn resource_text(r: &Option<ResourceRef>) -> String {
    r.as_ref()
        .map(|r| format!("{}:{}", r.kind, r.id))
        .unwrap_or_default()
}

/// The cells of a row in [`COLUMNS`] order.
pub fn cells(row: &Row) -> Vec<String> {
    vec![
        row.seq.to_string(),
        row.time.clone(),
        row.employee.clone().unwrap_or_default(),
        row.org.clone().unwrap_or_default(),
        row.action.clone().unwrap_or_default(),
        resource_text(&row.resource),
        row.case_id.clone().unwrap_or_default(),
        if row.break_glass {
            "yes".into()
        } else {
            String::new()
        },
        match row.decision {
            Verdict::Allow => "allow".into(),
            Verdict::Deny => "deny".into(),
        },
        row.code.clone().unwrap_or_default(),
        row.status.map(|s| s.to_string()).unwrap_or_default(),
        row.disclosed
            .iter()
            .map(|r| format!("{}:{}", r.kind, r.id))
            .collect::<Vec<_>>()
            .join(" "),
        review_text(row),
        row.fsc_transaction_id.clone().unwrap_or_default(),
    ]
}

/// `ok`, `suspicious`, `to review` (break-glass without review) or empty.
pub fn review_text(row: &Row) -> String {
    match (&row.review, row.break_glass) {
        (Some(r), _) => match r.verdict {
            ReviewVerdict::Ok => format!("ok ({})", r.by),
            ReviewVerdict::Suspicious => format!("suspicious ({})", r.by),
        },
        (None, true) => "to review".into(),
        (None, false) => String::new(),
    }
}

/// An aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::new();
        for (i, c) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            parts.push(format!("{c:<w$}"));
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// RFC 4180 CSV with a header line.
pub fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::new();
    out.push_str(
        &header
            .iter()
            .map(|h| field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use purpose_gate_audit::record::{
        DecisionKind, DecisionRecord, OutcomeKind, OutcomeRecord, Principal, PurposeRecord,
        RecordBody, RequestRecord,
    };
    use purpose_gate_audit::{AuditLog, testutil::options};

    fn decision(req: &str, emp: &str, action: &str, kind: &str, id: &str, bg: bool) -> RecordBody {
        RecordBody::Decision(Box::new(DecisionRecord {
            time: "2026-03-02T10:00:00.000Z".into(),
            kind: DecisionKind::Decision,
            gate: "g".into(),
            request_id: req.into(),
            trace_id: "t".into(),
            span_id: None,
            client_span_id: None,
            principal: Some(Principal {
                id: emp.into(),
                org: "0363".into(),
                roles: vec![],
                department: None,
            }),
            action: Some(action.into()),
            resource: Some(ResourceRef {
                kind: kind.into(),
                id: id.into(),
            }),
            case_id: (!bg).then(|| "Z-1".to_string()),
            case_url: None,
            purpose: PurposeRecord {
                break_glass: bg,
                ..PurposeRecord::default()
            },
            fields: vec![],
            decision: Verdict::Allow,
            code: None,
            policies: vec![],
            reasons: vec![],
            errors: vec![],
            request: RequestRecord::default(),
            policy_version: None,
            inputs: None,
        }))
    }

    fn outcome(req: &str, disclosed: &[&str]) -> RecordBody {
        fsc_outcome(req, disclosed, None)
    }

    fn fsc_outcome(req: &str, disclosed: &[&str], fsc: Option<&str>) -> RecordBody {
        RecordBody::Outcome(OutcomeRecord {
            release: Vec::new(),
            time: "2026-03-02T10:00:01.000Z".into(),
            kind: OutcomeKind::Outcome,
            request_id: req.into(),
            status: 200,
            upstream_ms: 1,
            disclosed: disclosed
                .iter()
                .map(|id| ResourceRef {
                    kind: "Person".into(),
                    id: (*id).into(),
                })
                .collect(),
            code: None,
            upstream_status: fsc.map(|_| 200),
            fsc_transaction_id: fsc.map(str::to_string),
        })
    }

    async fn log(dir: &Path) {
        let log = AuditLog::open(&options(dir, 1 << 20)).unwrap();
        for body in [
            decision("r1", "emp-1", "brp:lookup", "Person", "999993653", false),
            outcome("r1", &["999993653"]),
            decision(
                "r2",
                "emp-2",
                "brp:search",
                "PersonSearch",
                "naam=Jansen",
                false,
            ),
            decision("r10", "emp-2", "rdw:holder", "Vehicle", "AB123C", true),
            outcome("r2", &["999990639", "999993653"]),
            outcome("r10", &[]),
            decision("r3", "emp-1", "brp:lookup", "Person", "999991802", false),
        ] {
            log.append(vec![body]).await.unwrap();
        }
        log.close().await;
    }

    #[tokio::test]
    async fn subject_query_counts_a_search_that_disclosed_the_person() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path()).await;
        let filter = Filter {
            subject: Some("999993653".into()),
            ..Filter::default()
        };
        let rows = query(dir.path(), &filter).unwrap().rows;
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(rows[1].action.as_deref(), Some("brp:search"));
        assert_eq!(rows[1].status, Some(200));
        assert_eq!(rows[1].outcome_seq, Some(5));
        // A decision without outcome (not yet answered) still is a row, without status.
        let rows = query(
            dir.path(),
            &Filter {
                subject: Some("999991802".into()),
                ..Filter::default()
            },
        )
        .unwrap()
        .rows;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, None);
    }

    #[tokio::test]
    async fn employee_kenteken_and_break_glass_filters_join_the_outcome() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path()).await;
        let by_emp = query(
            dir.path(),
            &Filter {
                employee: Some("emp-2".into()),
                ..Filter::default()
            },
        )
        .unwrap()
        .rows;
        assert_eq!(by_emp.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
        // `r1` is a prefix of `r10`: the join is on the whole request id.
        assert_eq!(by_emp[1].outcome_seq, Some(6));
        let kenteken = query(
            dir.path(),
            &Filter {
                kenteken: Some(normalise_kenteken("ab-123-c")),
                break_glass: Some(true),
                ..Filter::default()
            },
        )
        .unwrap()
        .rows;
        assert_eq!(kenteken.len(), 1);
        assert_eq!(review_text(&kenteken[0]), "to review");
        let none = query(
            dir.path(),
            &Filter {
                since: Some("2026-03-03T00:00:00Z".parse().unwrap()),
                ..Filter::default()
            },
        )
        .unwrap();
        assert!(none.rows.is_empty());
        assert_eq!(none.records, 7);
    }

    #[tokio::test]
    async fn fsc_transaction_id_finds_the_request_and_is_in_every_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        let fsc = "0190a5b2-7c3d-7def-8123-456789abcdef";
        for body in [
            decision("r1", "emp-1", "brp:lookup", "Person", "999993653", false),
            fsc_outcome("r1", &["999993653"], Some(fsc)),
            decision("r2", "emp-1", "brp:lookup", "Person", "999993653", false),
            fsc_outcome(
                "r2",
                &["999993653"],
                Some("0190a5b2-0000-7000-8000-000000000000"),
            ),
            decision("r3", "emp-1", "brp:lookup", "Person", "999993653", false),
            outcome("r3", &["999993653"]),
        ] {
            log.append(vec![body]).await.unwrap();
        }
        log.close().await;
        let rows = query(
            dir.path(),
            &Filter {
                fsc_transaction_id: Some(fsc.into()),
                ..Filter::default()
            },
        )
        .unwrap()
        .rows;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].request_id, "r1");
        assert_eq!(rows[0].seq, 1);
        assert_eq!(rows[0].fsc_transaction_id.as_deref(), Some(fsc));
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["fsc_transaction_id"], fsc);
        let cells = cells(&rows[0]);
        assert_eq!(cells.len(), COLUMNS.len());
        assert_eq!(cells.last().map(String::as_str), Some(fsc));
        assert!(csv(&COLUMNS, &[cells]).contains(fsc));
        // With another filter beside it, both must hold.
        let none = query(
            dir.path(),
            &Filter {
                fsc_transaction_id: Some(fsc.into()),
                employee: Some("emp-2".into()),
                ..Filter::default()
            },
        )
        .unwrap();
        assert!(none.rows.is_empty());
        // A record without the member (before format 1.1, or no FSC) reads as absent.
        let all = query(dir.path(), &Filter::default()).unwrap().rows;
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].fsc_transaction_id, None);
    }

    #[test]
    fn csv_quotes_fields_with_separators() {
        let out = csv(&["a", "b"], &[vec!["x,y".into(), "say \"hi\"".into()]]);
        assert_eq!(out, "a,b\r\n\"x,y\",\"say \"\"hi\"\"\"\r\n");
    }

    #[test]
    fn raw_request_id_reads_the_whole_value() {
        let line = r#"{"seq":1,"time":"t","kind":"outcome","request_id":"r10","status":200}"#;
        assert_eq!(raw_request_id(line), Some("r10"));
        assert_eq!(line_kind(line.as_bytes()), Some("outcome"));
    }
}
