//! Reports for auditors, built on [`super::query`]: the subject access report (GDPR art. 15),
//! the incident report (whom did an employee look up) and snooping signals.
//!
//! Guarantees: every figure comes from decision and outcome records read by the one parser;
//! every entry names the `seq`s it rests on; the subject report names the checkpoint that
//! covers its entries (or says that none does yet). HTML output is one self-contained page
//! (inline CSS, no scripts, no external resources) with every text HTML-escaped.
//! Refuses nothing: an empty result is a report that says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, Timelike, Utc, Weekday};
use serde::Serialize;

use super::query::{QueryResult, Row, covering_checkpoint, review_text};
use purpose_gate_audit::record::{ReadCheckpoint, Verdict};

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#111}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse;width:100%;font-size:.9em}\
th,td{border:1px solid #999;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#eee}.en{color:#555;font-weight:normal}\
@media print{body{margin:0}th{background:#ddd!important}tr{page-break-inside:avoid}}";

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"nl\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        html_escape(title)
    )
}

fn bilingual(nl: &str, en: &str) -> String {
    format!(
        "{} <span class=\"en\">/ {}</span>",
        html_escape(nl),
        html_escape(en)
    )
}

fn html_table(headers: &[(&str, &str)], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for (nl, en) in headers {
        out.push_str(&format!("<th>{}</th>", bilingual(nl, en)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&format!("<td>{}</td>", html_escape(c)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

fn purpose_text(row: &Row) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &row.doelbinding {
        parts.push(format!("doelbinding {d}"));
    }
    if let Some(v) = &row.verwerking {
        parts.push(format!("verwerking {v}"));
    }
    if row.break_glass {
        parts.push(format!(
            "break-glass: {}",
            row.reason.as_deref().unwrap_or("(no reason)")
        ));
    }
    parts.join("; ")
}

// ---------------------------------------------------------------- subject report

/// One lookup of, or disclosure about, the subject.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectEntry {
    pub seq: u64,
    pub time: String,
    pub organisation: Option<String>,
    /// The employee's department, when the token named one (format 1.4).
    pub department: Option<String>,
    /// The employee's roles.
    pub roles: Vec<String>,
    pub employee: Option<String>,
    pub case_id: Option<String>,
    /// The case's type (zaaktype) from the case snapshot the decision saw; filled in by
    /// [`SubjectReport::fill_case_types`] (none when the decision named no case or the snapshot
    /// cannot be read).
    pub case_type: Option<String>,
    /// SHA-256 of that case snapshot.
    #[serde(skip)]
    pub case_snapshot: Option<String>,
    /// The fields asked for; what was disclosed when `disclosed`.
    pub fields: Vec<String>,
    pub purpose: String,
    pub action: Option<String>,
    pub decision: Verdict,
    /// Whether the answer disclosed the subject's data.
    pub disclosed: bool,
    pub status: Option<u16>,
    pub review: String,
    /// Tree size of the smallest checkpoint covering the entry's records, if any.
    pub checkpoint: Option<u64>,
}

/// A citizen's access report (GDPR art. 15).
#[derive(Debug, Clone, Serialize)]
pub struct SubjectReport {
    /// The BSN as the citizen gave it.
    pub subject: String,
    pub generated: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub entries: Vec<SubjectEntry>,
    /// The checkpoint that covers every entry: origin, tree size, root (none if an entry is
    /// newer than the latest checkpoint).
    pub covered_by: Option<CoveringCheckpoint>,
    /// Records in the log when the report was made.
    pub log_records: u64,
}

/// A checkpoint as shown in reports.
#[derive(Debug, Clone, Serialize)]
pub struct CoveringCheckpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: String,
    pub file: String,
    pub seq: u64,
}

impl From<&ReadCheckpoint> for CoveringCheckpoint {
    fn from(c: &ReadCheckpoint) -> Self {
        CoveringCheckpoint {
            origin: c.origin.clone(),
            tree_size: c.tree_size,
            root: c.root.clone(),
            file: c.file.clone(),
            seq: c.seq,
        }
    }
}

/// Builds the subject report from a query by subject (`stored_id` is the id in the log,
/// the BSN or its pseudonym).
pub fn subject_report(
    result: &QueryResult,
    bsn: &str,
    stored_id: &str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> SubjectReport {
    let entries: Vec<SubjectEntry> = result
        .rows
        .iter()
        .map(|r| {
            let last_seq = r.outcome_seq.unwrap_or(r.seq).max(r.seq);
            SubjectEntry {
                seq: r.seq,
                time: r.time.clone(),
                organisation: r.org.clone(),
                department: r.department.clone(),
                roles: r.roles.clone(),
                employee: r.employee.clone(),
                case_id: r.case_id.clone(),
                case_type: None,
                case_snapshot: r.case_snapshot.clone(),
                fields: r.fields.clone(),
                purpose: purpose_text(r),
                action: r.action.clone(),
                decision: r.decision,
                disclosed: r.disclosed_person(stored_id),
                status: r.status,
                review: review_text(r),
                checkpoint: covering_checkpoint(&result.checkpoints, last_seq).map(|c| c.tree_size),
            }
        })
        .collect();
    let needed = result
        .rows
        .iter()
        .map(|r| r.outcome_seq.unwrap_or(r.seq).max(r.seq))
        .max()
        .unwrap_or(0);
    let covered_by = if entries.is_empty() {
        // Completeness of an empty report rests on the latest checkpoint.
        result.checkpoints.iter().max_by_key(|c| c.tree_size)
    } else {
        covering_checkpoint(&result.checkpoints, needed)
    }
    .map(CoveringCheckpoint::from);
    SubjectReport {
        subject: bsn.to_string(),
        generated: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        since: since.map(|t| t.to_rfc3339()),
        until: until.map(|t| t.to_rfc3339()),
        entries,
        covered_by,
        log_records: result.records,
    }
}

const SUBJECT_HEADERS: [(&str, &str); 13] = [
    ("Tijdstip", "Time"),
    ("Organisatie", "Organisation"),
    ("Afdeling", "Department"),
    ("Rol", "Role"),
    ("Medewerker", "Employee"),
    ("Zaaktype", "Case type"),
    ("Zaak", "Case"),
    ("Doel", "Purpose"),
    ("Handeling", "Action"),
    ("Besluit", "Decision"),
    ("Gegevens verstrekt", "Data disclosed"),
    ("Beoordeling", "Review"),
    ("Record (seq)", "Record (seq)"),
];

fn subject_cells(e: &SubjectEntry) -> Vec<String> {
    vec![
        e.time.clone(),
        e.organisation.clone().unwrap_or_default(),
        e.department.clone().unwrap_or_default(),
        e.roles.join(", "),
        e.employee.clone().unwrap_or_default(),
        e.case_type.clone().unwrap_or_default(),
        e.case_id.clone().unwrap_or_default(),
        e.purpose.clone(),
        e.action.clone().unwrap_or_default(),
        verdict_text(e.decision).to_string(),
        if e.disclosed {
            format!("ja / yes: {}", e.fields.join(", "))
        } else {
            "nee / no".to_string()
        },
        e.review.clone(),
        e.seq.to_string(),
    ]
}

fn checkpoint_sentence(report: &SubjectReport) -> String {
    match &report.covered_by {
        Some(c) => format!(
            "Covered by signed checkpoint `{}` of {} records (root {}, file {}); \
             an inclusion proof of each record: `purpose-gate audit prove --seq N`.",
            c.origin, c.tree_size, c.root, c.file
        ),
        None => "Not yet covered by a signed checkpoint: the newest entries are after the latest checkpoint.".into(),
    }
}

impl SubjectReport {
    /// Fills in each entry's case type from its case snapshot: `case_of(hash)` reads the
    /// snapshot (from `cases/` beside the log, or the central store) and checks its hash.
    /// Each snapshot is read once.
    pub fn fill_case_types(
        &mut self,
        mut case_of: impl FnMut(&str) -> Option<purpose_gate_model::Case>,
    ) {
        let mut types: HashMap<String, Option<String>> = HashMap::new();
        for e in &mut self.entries {
            if let Some(hash) = &e.case_snapshot {
                e.case_type = types
                    .entry(hash.clone())
                    .or_insert_with(|| case_of(hash).map(|c| c.case_type))
                    .clone();
            }
        }
    }

    /// Plain text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Inzageverzoek / subject access report (AVG/GDPR art. 15)\nSubject (BSN): {}\nGenerated: {}\nPeriod: {} – {}\n\n",
            self.subject,
            self.generated,
            self.since.as_deref().unwrap_or("start of log"),
            self.until.as_deref().unwrap_or("now")
        );
        let headers: Vec<&str> = SUBJECT_HEADERS.iter().map(|(_, en)| *en).collect();
        let rows: Vec<Vec<String>> = self.entries.iter().map(subject_cells).collect();
        if rows.is_empty() {
            out.push_str("No lookups of or disclosures about this person were recorded.\n");
        } else {
            out.push_str(&super::query::table(&headers, &rows));
        }
        out.push_str(&format!(
            "\n{} entries. {}\n",
            self.entries.len(),
            checkpoint_sentence(self)
        ));
        out
    }

    /// One self-contained, printable HTML page with Dutch and English headings.
    pub fn html(&self) -> String {
        let mut body = format!(
            "<h1>{}</h1>\n<p>{}: <strong>{}</strong><br>{}: {}<br>{}: {} – {}</p>\n",
            bilingual(
                "Overzicht van raadplegingen van uw gegevens",
                "Record of access to your personal data"
            ),
            bilingual("Burgerservicenummer", "Citizen service number"),
            html_escape(&self.subject),
            bilingual("Opgesteld", "Generated"),
            html_escape(&self.generated),
            bilingual("Periode", "Period"),
            html_escape(
                self.since
                    .as_deref()
                    .unwrap_or("begin van het logboek / start of log")
            ),
            html_escape(self.until.as_deref().unwrap_or("nu / now")),
        );
        body.push_str(&format!(
            "<h2>{}</h2>\n",
            bilingual("Raadplegingen en verstrekkingen", "Lookups and disclosures")
        ));
        if self.entries.is_empty() {
            body.push_str(&format!(
                "<p>{}</p>\n",
                bilingual(
                    "Er zijn geen raadplegingen van of verstrekkingen over deze persoon vastgelegd.",
                    "No lookups of or disclosures about this person were recorded."
                )
            ));
        } else {
            let rows: Vec<Vec<String>> = self.entries.iter().map(subject_cells).collect();
            body.push_str(&html_table(&SUBJECT_HEADERS, &rows));
        }
        body.push_str(&format!(
            "<h2>{}</h2>\n<p>{}</p>\n",
            bilingual("Volledigheid en integriteit", "Completeness and integrity"),
            html_escape(&checkpoint_sentence(self))
        ));
        html_page("Inzageverzoek / Subject access report", &body)
    }
}

// ---------------------------------------------------------------- incident report

/// One person or vehicle whose data an employee obtained.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentEntry {
    /// `Person` or `Vehicle`.
    pub kind: String,
    pub id: String,
    pub count: u64,
    pub first: String,
    pub last: String,
    pub cases: Vec<String>,
    pub seqs: Vec<u64>,
}

/// Everything an employee obtained: persons disclosed by answers, vehicles looked up with a
/// successful answer.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentReport {
    pub employee: String,
    pub generated: String,
    pub entries: Vec<IncidentEntry>,
    /// Denied attempts (not obtained, listed for context).
    pub denied: u64,
}

/// Builds the incident report from a query by employee.
pub fn incident_report(result: &QueryResult, employee: &str) -> IncidentReport {
    let mut map: BTreeMap<(String, String), IncidentEntry> = BTreeMap::new();
    let mut seen_request: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut denied = 0;
    for r in &result.rows {
        if r.decision == Verdict::Deny {
            denied += 1;
            continue;
        }
        let ok = r.status.is_some_and(|s| (200..300).contains(&s));
        let mut obtained: Vec<(String, String)> = r
            .disclosed
            .iter()
            .map(|d| (d.kind.clone(), d.id.clone()))
            .collect();
        if ok
            && let Some(res) = &r.resource
            && res.kind == "Vehicle"
        {
            obtained.push((res.kind.clone(), res.id.clone()));
        }
        for (kind, id) in obtained {
            // A request with several decisions discloses each subject once.
            if !seen_request.insert((r.request_id.clone(), kind.clone(), id.clone())) {
                continue;
            }
            let e = map
                .entry((kind.clone(), id.clone()))
                .or_insert_with(|| IncidentEntry {
                    kind,
                    id,
                    count: 0,
                    first: r.time.clone(),
                    last: r.time.clone(),
                    cases: vec![],
                    seqs: vec![],
                });
            e.count += 1;
            if r.time < e.first {
                e.first = r.time.clone();
            }
            if r.time > e.last {
                e.last = r.time.clone();
            }
            let case = r.case_id.clone().unwrap_or_else(|| {
                if r.break_glass {
                    "(break-glass)".into()
                } else {
                    String::new()
                }
            });
            if !case.is_empty() && !e.cases.contains(&case) {
                e.cases.push(case);
            }
            e.seqs.push(r.seq);
        }
    }
    IncidentReport {
        employee: employee.to_string(),
        generated: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        entries: map.into_values().collect(),
        denied,
    }
}

/// Column names of the incident report.
pub const INCIDENT_COLUMNS: [&str; 7] = ["type", "id", "count", "first", "last", "cases", "seqs"];

impl IncidentReport {
    /// The rows in [`INCIDENT_COLUMNS`] order.
    pub fn cells(&self) -> Vec<Vec<String>> {
        self.entries
            .iter()
            .map(|e| {
                vec![
                    e.kind.clone(),
                    e.id.clone(),
                    e.count.to_string(),
                    e.first.clone(),
                    e.last.clone(),
                    e.cases.join(" "),
                    e.seqs
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect()
    }

    /// Plain text.
    pub fn text(&self) -> String {
        let persons = self.entries.iter().filter(|e| e.kind == "Person").count();
        let vehicles = self.entries.iter().filter(|e| e.kind == "Vehicle").count();
        format!(
            "Incident report: data obtained by employee `{}`\nGenerated: {}\n{persons} persons, {vehicles} vehicles; {} denied attempts\n\n{}",
            self.employee,
            self.generated,
            self.denied,
            super::query::table(&INCIDENT_COLUMNS, &self.cells())
        )
    }
}

// ---------------------------------------------------------------- signals

/// Working hours: weekdays and a daily window in a fixed UTC offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingHours {
    /// Indexed by days from Monday.
    pub days: [bool; 7],
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub offset: FixedOffset,
}

impl WorkingHours {
    /// Parses `"Mon-Fri 07:00-19:00"` with an optional offset `" +01:00"` (default UTC).
    pub fn parse(s: &str) -> Result<WorkingHours, String> {
        let bad = || {
            format!(
                "working hours `{s}`: expected e.g. `Mon-Fri 07:00-19:00` or `Mon-Sat 08:00-18:00 +01:00`"
            )
        };
        let mut parts = s.split_whitespace();
        let days = parts.next().ok_or_else(bad)?;
        let hours = parts.next().ok_or_else(bad)?;
        let offset = match parts.next() {
            Some(o) => {
                let t = DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{o}"))
                    .map_err(|_| bad())?;
                *t.offset()
            }
            None => FixedOffset::east_opt(0).ok_or_else(bad)?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        let day = |d: &str| d.parse::<Weekday>().map_err(|_| bad());
        let (first, last) = match days.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(days)?, day(days)?),
        };
        let mut set = [false; 7];
        let mut d = first;
        loop {
            set[d.num_days_from_monday() as usize] = true;
            if d == last {
                break;
            }
            d = d.succ();
        }
        let (a, b) = hours.split_once('-').ok_or_else(bad)?;
        let time = |t: &str| NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| bad());
        Ok(WorkingHours {
            days: set,
            start: time(a)?,
            end: time(b)?,
            offset,
        })
    }

    /// Whether `t` is inside working hours.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.offset);
        let time = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second());
        self.days[local.weekday().num_days_from_monday() as usize]
            && time.is_some_and(|x| x >= self.start && x < self.end)
    }
}

/// One signal with the records that support it.
#[derive(Debug, Clone, Serialize)]
pub struct Signal {
    /// `after_hours`, `volume`, `break_glass`, `repeated_denials`, `protected_person`,
    /// `search`, `unrelated_cases`, `holder_lookup`, `shared_surname`.
    pub kind: String,
    pub detail: String,
    pub seqs: Vec<u64>,
    pub weight: u64,
}

/// The signals of one employee.
#[derive(Debug, Clone, Serialize)]
pub struct EmployeeSignals {
    pub employee: String,
    pub org: Option<String>,
    pub score: u64,
    pub lookups: u64,
    pub signals: Vec<Signal>,
}

/// Thresholds of the signals.
#[derive(Debug, Clone)]
pub struct SignalOptions {
    pub working_hours: WorkingHours,
    /// A day counts as a spike above `factor` × the employee's median daily volume ...
    pub volume_factor: u64,
    /// ... and at least this many lookups.
    pub volume_min: u64,
    /// Denials on one day that make a signal.
    pub denials_per_day: u64,
    /// Names for the shared-surname signal (off when `None`).
    pub surnames: Option<SurnameInputs>,
}

/// What the shared-surname signal compares: employees' surnames from the employee directory,
/// subjects' surnames from an export of the registry (the log holds no names).
#[derive(Debug, Clone, Default)]
pub struct SurnameInputs {
    /// Employee id → surname.
    pub employees: super::surname::NameTable,
    /// The subject's id as stored in the log (BSN or pseudonym) → (BSN, surname).
    pub subjects: BTreeMap<String, (String, String)>,
}

impl SignalOptions {
    /// Defaults with these working hours.
    pub fn new(working_hours: WorkingHours) -> SignalOptions {
        SignalOptions {
            working_hours,
            volume_factor: 3,
            volume_min: 20,
            denials_per_day: 3,
            surnames: None,
        }
    }
}

/// Computes the signals per employee, ranked by score (highest first).
pub fn signals(result: &QueryResult, opts: &SignalOptions) -> Vec<EmployeeSignals> {
    let mut by_emp: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &result.rows {
        if let Some(e) = &r.employee {
            by_emp.entry(e.clone()).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (employee, rows) in by_emp {
        let mut signals = Vec::new();
        let mut push = |kind: &str, detail: String, seqs: Vec<u64>, weight: u64| {
            if !seqs.is_empty() {
                signals.push(Signal {
                    kind: kind.into(),
                    detail,
                    seqs,
                    weight,
                });
            }
        };
        let after: Vec<u64> = rows
            .iter()
            .filter(|r| r.when().is_some_and(|t| !opts.working_hours.contains(t)))
            .map(|r| r.seq)
            .collect();
        let n = after.len();
        push(
            "after_hours",
            format!("{n} lookups outside working hours"),
            after,
            2 * n as u64,
        );

        // Volume per day against the employee's own median day.
        let mut per_day: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for r in &rows {
            per_day
                .entry(r.time.get(..10).unwrap_or("").to_string())
                .or_default()
                .push(r.seq);
        }
        let mut counts: Vec<u64> = per_day.values().map(|v| v.len() as u64).collect();
        counts.sort_unstable();
        let median = counts.get(counts.len() / 2).copied().unwrap_or(0).max(1);
        for (day, seqs) in &per_day {
            let c = seqs.len() as u64;
            if c >= opts.volume_min && c > opts.volume_factor * median {
                push(
                    "volume",
                    format!("{c} lookups on {day}, median day {median}"),
                    seqs.clone(),
                    5,
                );
            }
        }

        let bg: Vec<u64> = rows
            .iter()
            .filter(|r| r.break_glass)
            .map(|r| r.seq)
            .collect();
        let unreviewed = rows
            .iter()
            .filter(|r| r.break_glass && r.review.is_none())
            .count();
        let n = bg.len();
        push(
            "break_glass",
            format!("{n} break-glass lookups, {unreviewed} to review"),
            bg,
            3 * n as u64,
        );

        let mut denied_per_day: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.decision == Verdict::Deny) {
            denied_per_day
                .entry(r.time.get(..10).unwrap_or(""))
                .or_default()
                .push(r.seq);
        }
        for (day, seqs) in denied_per_day {
            if seqs.len() as u64 >= opts.denials_per_day {
                push(
                    "repeated_denials",
                    format!("{} denied lookups on {day}", seqs.len()),
                    seqs,
                    4,
                );
            }
        }

        let protected: Vec<u64> = rows
            .iter()
            .filter(|r| {
                r.code.as_deref() == Some("protectedPerson")
                    || r.reasons
                        .iter()
                        .any(|x| x.to_lowercase().contains("protected"))
            })
            .map(|r| r.seq)
            .collect();
        let n = protected.len();
        push(
            "protected_person",
            format!("{n} attempts on protected persons"),
            protected,
            10 * n as u64,
        );

        let searches: Vec<u64> = rows
            .iter()
            .filter(|r| r.action.as_deref() == Some("brp:search"))
            .map(|r| r.seq)
            .collect();
        let n = searches.len();
        push(
            "search",
            format!("{n} searches by name or address"),
            searches,
            n as u64,
        );

        let holders: Vec<u64> = rows
            .iter()
            .filter(|r| r.action.as_deref() == Some("rdw:holder"))
            .map(|r| r.seq)
            .collect();
        let n = holders.len();
        push(
            "holder_lookup",
            format!("{n} vehicle holder lookups"),
            holders,
            n as u64,
        );

        // The same person under different cases.
        let mut cases_of: BTreeMap<&str, (BTreeSet<&str>, Vec<u64>)> = BTreeMap::new();
        for r in &rows {
            let Some(case) = r.case_id.as_deref() else {
                continue;
            };
            for p in r.persons() {
                let e = cases_of.entry(p).or_default();
                e.0.insert(case);
                e.1.push(r.seq);
            }
        }
        for (person, (cases, seqs)) in cases_of {
            if cases.len() > 1 {
                push(
                    "unrelated_cases",
                    format!(
                        "person {person} looked up under {} cases: {}",
                        cases.len(),
                        cases.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                    seqs,
                    4,
                );
            }
        }

        if let Some(names) = &opts.surnames
            && let Some(own) = names.employees.get(&employee)
        {
            // Every person the employee looked up or was shown, also in denied attempts.
            let mut shared: BTreeMap<&str, (String, Vec<u64>)> = BTreeMap::new();
            for r in &rows {
                for p in r.persons() {
                    let Some((bsn, theirs)) = names.subjects.get(p) else {
                        continue;
                    };
                    if let Some(key) = super::surname::shared_surname(own, theirs) {
                        let e = shared.entry(bsn.as_str()).or_insert((key, Vec::new()));
                        e.1.push(r.seq);
                    }
                }
            }
            for (bsn, (key, seqs)) in shared {
                push(
                    "shared_surname",
                    format!("person {bsn} shares the surname `{key}` with the employee"),
                    seqs,
                    6,
                );
            }
        }

        let score = signals.iter().map(|s| s.weight).sum();
        if !signals.is_empty() {
            out.push(EmployeeSignals {
                org: rows.first().and_then(|r| r.org.clone()),
                employee,
                score,
                lookups: rows.len() as u64,
                signals,
            });
        }
    }
    out.sort_by(|a, b| b.score.cmp(&a.score).then(a.employee.cmp(&b.employee)));
    out
}

fn seq_list(seqs: &[u64]) -> String {
    const SHOWN: usize = 20;
    let mut s: Vec<String> = seqs.iter().take(SHOWN).map(u64::to_string).collect();
    if seqs.len() > SHOWN {
        s.push(format!("… ({} more)", seqs.len() - SHOWN));
    }
    s.join(" ")
}

/// Signals as plain text.
pub fn signals_text(list: &[EmployeeSignals]) -> String {
    if list.is_empty() {
        return "No signals.\n".into();
    }
    let mut out = String::new();
    for (i, e) in list.iter().enumerate() {
        out.push_str(&format!(
            "{}. {} (org {}): score {}, {} lookups\n",
            i + 1,
            e.employee,
            e.org.as_deref().unwrap_or("-"),
            e.score,
            e.lookups
        ));
        for s in &e.signals {
            out.push_str(&format!(
                "   - {}: {} [seq {}]\n",
                s.kind,
                s.detail,
                seq_list(&s.seqs)
            ));
        }
    }
    out
}

/// Signals as a self-contained HTML page.
pub fn signals_html(list: &[EmployeeSignals]) -> String {
    let mut body = format!(
        "<h1>{}</h1>\n",
        bilingual(
            "Signalen van onrechtmatige raadplegingen",
            "Snooping signals"
        )
    );
    if list.is_empty() {
        body.push_str(&format!(
            "<p>{}</p>\n",
            bilingual("Geen signalen.", "No signals.")
        ));
    }
    for e in list {
        body.push_str(&format!(
            "<h2>{} ({}) — score {}</h2>\n",
            html_escape(&e.employee),
            html_escape(e.org.as_deref().unwrap_or("-")),
            e.score
        ));
        let rows: Vec<Vec<String>> = e
            .signals
            .iter()
            .map(|s| vec![s.kind.clone(), s.detail.clone(), seq_list(&s.seqs)])
            .collect();
        body.push_str(&html_table(
            &[
                ("Signaal", "Signal"),
                ("Toelichting", "Detail"),
                ("Records (seq)", "Records (seq)"),
            ],
            &rows,
        ));
    }
    html_page("Signalen / Signals", &body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn working_hours_parse_and_contain() {
        let wh = WorkingHours::parse("Mon-Fri 07:00-19:00 +01:00").unwrap();
        // Monday 2026-03-02 06:30 UTC is 07:30 at +01:00.
        assert!(wh.contains("2026-03-02T06:30:00Z".parse().unwrap()));
        assert!(!wh.contains("2026-03-02T18:30:00Z".parse().unwrap()));
        // Saturday.
        assert!(!wh.contains("2026-03-07T10:00:00Z".parse().unwrap()));
        assert!(WorkingHours::parse("Mon-Fri 7-19").is_err());
        assert!(WorkingHours::parse("Fri-Mon 08:00-18:00").unwrap().days[6]);
    }

    fn row(seq: u64, emp: &str, time: &str, decision: Verdict, case: &str, bsn: &str) -> Row {
        Row {
            gate: None,
            seq,
            time: time.into(),
            request_id: format!("r{seq}"),
            employee: Some(emp.into()),
            org: Some("0363".into()),
            roles: vec![],
            department: None,
            action: Some("brp:lookup".into()),
            resource: Some(purpose_gate_audit::ResourceRef {
                kind: "Person".into(),
                id: bsn.into(),
            }),
            case_id: Some(case.into()),
            case_snapshot: None,
            case_url: None,
            doelbinding: None,
            verwerking: None,
            break_glass: false,
            reason: None,
            fields: vec![],
            decision,
            code: (decision == Verdict::Deny).then(|| "caseClosed".to_string()),
            reasons: vec![],
            outcome_seq: None,
            status: None,
            disclosed: vec![],
            withheld: vec![],
            fsc_transaction_id: None,
            review: None,
        }
    }

    #[test]
    fn volume_spike_and_repeated_denials_are_signalled_with_their_seqs() {
        let mut rows = Vec::new();
        let mut seq = 0;
        // emp-1: 2 lookups a day on five days, then 30 on one day.
        for day in 2..=6 {
            for _ in 0..2 {
                seq += 1;
                let t = format!("2026-03-0{day}T10:00:00Z");
                rows.push(row(seq, "emp-1", &t, Verdict::Allow, "Z-1", "999993653"));
            }
        }
        let spike_start = seq + 1;
        for _ in 0..30 {
            seq += 1;
            rows.push(row(
                seq,
                "emp-1",
                "2026-03-09T10:00:00Z",
                Verdict::Allow,
                "Z-1",
                "999993653",
            ));
        }
        // emp-2: three denials on one day, under two cases for the same person.
        for case in ["Z-1", "Z-2", "Z-2"] {
            seq += 1;
            rows.push(row(
                seq,
                "emp-2",
                "2026-03-09T11:00:00Z",
                Verdict::Deny,
                case,
                "999990639",
            ));
        }
        let result = QueryResult {
            rows,
            ..QueryResult::default()
        };
        let wh = WorkingHours::parse("Mon-Fri 07:00-19:00").unwrap();
        let list = signals(&result, &SignalOptions::new(wh));
        let emp1 = list.iter().find(|e| e.employee == "emp-1").unwrap();
        let volume = emp1.signals.iter().find(|s| s.kind == "volume").unwrap();
        assert_eq!(volume.seqs.len(), 30);
        assert_eq!(volume.seqs[0], spike_start);
        assert!(emp1.signals.iter().all(|s| s.kind != "after_hours"));
        let emp2 = list.iter().find(|e| e.employee == "emp-2").unwrap();
        let kinds: Vec<&str> = emp2.signals.iter().map(|s| s.kind.as_str()).collect();
        assert!(kinds.contains(&"repeated_denials"), "{kinds:?}");
        assert!(kinds.contains(&"unrelated_cases"), "{kinds:?}");
        // Ranked by score.
        assert!(list.windows(2).all(|w| w[0].score >= w[1].score));
        let html = signals_html(&list);
        assert!(html.contains("Snooping signals") && html.contains("repeated_denials"));
    }

    #[test]
    fn shared_surname_is_signalled_for_lookups_and_disclosures_of_the_person() {
        let mut rows = vec![
            // A lookup of 999993653, denied.
            row(
                1,
                "emp-1",
                "2026-03-02T10:00:00Z",
                Verdict::Deny,
                "Z-1",
                "999993653",
            ),
            // Someone else's lookup of the same person.
            row(
                2,
                "emp-2",
                "2026-03-02T10:00:00Z",
                Verdict::Allow,
                "Z-1",
                "999993653",
            ),
            // A lookup of another person.
            row(
                3,
                "emp-1",
                "2026-03-02T11:00:00Z",
                Verdict::Allow,
                "Z-1",
                "999990639",
            ),
        ];
        // A search that disclosed 999993653 (stored as a pseudonym in this log).
        let mut search = row(
            4,
            "emp-1",
            "2026-03-02T12:00:00Z",
            Verdict::Allow,
            "Z-1",
            "x",
        );
        search.action = Some("brp:search".into());
        search.resource = Some(purpose_gate_audit::ResourceRef {
            kind: "PersonSearch".into(),
            id: "ZoekMetGeslachtsnaamEnGeboortedatum".into(),
        });
        search.disclosed = vec![purpose_gate_audit::ResourceRef {
            kind: "Person".into(),
            id: "hmac-sha256:ab".into(),
        }];
        rows.push(search);
        let result = QueryResult {
            rows,
            ..QueryResult::default()
        };
        let mut opts = SignalOptions::new(WorkingHours::parse("Mon-Sun 00:00-23:59").unwrap());
        opts.surnames = Some(SurnameInputs {
            employees: crate::surname::NameTable::from_pairs([
                ("emp-1".to_string(), "Van Dijk".to_string()),
                ("emp-2".to_string(), "Dijkstra".to_string()),
            ]),
            subjects: [
                ("999993653", "999993653", "van Dijk"),
                ("hmac-sha256:ab", "999993653", "van Dijk"),
                ("999990639", "999990639", "El Amrani"),
            ]
            .into_iter()
            .map(|(k, b, n)| (k.to_string(), (b.to_string(), n.to_string())))
            .collect(),
        });
        let list = signals(&result, &opts);
        let shared: Vec<&Signal> = list
            .iter()
            .flat_map(|e| e.signals.iter().map(move |s| (e, s)))
            .filter(|(_, s)| s.kind == "shared_surname")
            .map(|(e, s)| {
                assert_eq!(e.employee, "emp-1");
                s
            })
            .collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].seqs, vec![1, 4]);
        assert_eq!(
            shared[0].detail,
            "person 999993653 shares the surname `dijk` with the employee"
        );
        // Without names the signal is off.
        opts.surnames = None;
        assert!(
            signals(&result, &opts)
                .iter()
                .all(|e| e.signals.iter().all(|s| s.kind != "shared_surname"))
        );
    }

    #[test]
    fn subject_report_names_department_role_case_type_and_fields() {
        let mut looked_up = row(
            1,
            "emp-042",
            "2026-03-02T09:15:00Z",
            Verdict::Allow,
            "Z-1",
            "999993653",
        );
        looked_up.department = Some("Handhaving".into());
        looked_up.roles = vec!["handhaver".into()];
        looked_up.case_snapshot = Some("ab".repeat(32));
        looked_up.fields = vec!["naam".into(), "verblijfplaats".into()];
        looked_up.disclosed = vec![purpose_gate_audit::ResourceRef {
            kind: "Person".into(),
            id: "999993653".into(),
        }];
        // A decision before format 1.4 and without a case snapshot.
        let older = row(
            2,
            "emp-043",
            "2026-03-02T10:00:00Z",
            Verdict::Deny,
            "Z-2",
            "999993653",
        );
        let result = QueryResult {
            rows: vec![looked_up, older],
            ..Default::default()
        };
        let mut report = subject_report(&result, "999993653", "999993653", None, None);
        let mut asked = Vec::new();
        report.fill_case_types(|hash| {
            asked.push(hash.to_string());
            serde_json::from_value(serde_json::json!({
                "id": "Z-1", "type": "handhaving-parkeren", "status": "open",
                "opened": "2026-01-01T00:00:00Z", "organization": "0363"
            }))
            .ok()
        });
        assert_eq!(asked, vec!["ab".repeat(32)], "one read per snapshot");
        let e = &report.entries[0];
        assert_eq!(e.department.as_deref(), Some("Handhaving"));
        assert_eq!(e.case_type.as_deref(), Some("handhaving-parkeren"));
        assert!(e.disclosed);
        assert_eq!(report.entries[1].case_type, None);
        assert_eq!(report.entries[1].department, None);
        let text = report.text();
        assert!(
            text.contains("Department") && text.contains("Case type"),
            "{text}"
        );
        assert!(
            text.contains("Handhaving") && text.contains("handhaver"),
            "{text}"
        );
        assert!(text.contains("handhaving-parkeren"), "{text}");
        assert!(text.contains("ja / yes: naam, verblijfplaats"), "{text}");
        let html = report.html();
        assert!(
            html.contains("Afdeling") && html.contains("Zaaktype"),
            "{html}"
        );
    }

    #[test]
    fn html_escape_escapes_markup() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
