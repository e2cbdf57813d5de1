//! Replay: `purpose-gate policy replay` decides the recorded decisions of an audit log again
//! under a candidate policy set and reports every flip (allow→deny, deny→allow), grouped by the
//! policy and code that make the difference.
//!
//! A decision record is rebuilt from its own members (principal, action, resource, purpose,
//! fields, time, client ip) and its `inputs` (format 1.2: the case snapshot, the counters, the
//! search). Records are read through the `audit` module, the one parser of the log.
//!
//! Guarantees: a record is only compared when everything its decision depended on is known;
//! the others are listed with the reason (written before format 1.2 with a case, a
//! pseudonymised person, a missing or altered snapshot). Records written before format 1.2
//! without a case replay with counters of 0 and are marked `approximate`. Refusals made before
//! Cedar was asked (bad token, unknown case, …) are no policy decisions and are skipped.
//! Release decisions (outcome records) are not replayed: the registry's answer is not kept.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Decision, DecisionInput, PolicyEngine};
use purpose_gate_audit::snapshots::read_snapshot;
use purpose_gate_audit::{ReadDecision, Record, Verdict};
use purpose_gate_model::{
    Action, Bsn, Case, Counters, Employee, Kenteken, Resource, Search, SearchKind,
};

/// A recorded decision rebuilt into what [`PolicyEngine::decide`] needs.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub employee: Employee,
    pub action: Action,
    pub resource: Resource,
    pub case: Option<Case>,
    pub break_glass: bool,
    pub reason: Option<String>,
    pub fields: Vec<String>,
    pub client_ip: Option<std::net::IpAddr>,
    pub now: DateTime<Utc>,
    pub counters: Counters,
    pub search: Option<Search>,
    /// Written before format 1.2: counters unknown, taken as 0.
    pub approximate: bool,
}

impl Recorded {
    /// The decision input, borrowing from `self`.
    pub fn input(&self) -> DecisionInput<'_> {
        DecisionInput {
            employee: &self.employee,
            action: self.action,
            resource: &self.resource,
            case: self.case.as_ref(),
            break_glass: self.break_glass,
            reason: self.reason.as_deref(),
            fields: &self.fields,
            client_ip: self.client_ip,
            now: self.now,
            counters: self.counters,
            search: self.search.as_ref(),
            release: None,
        }
    }
}

/// Why a record is not compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReplayable {
    /// A refusal before Cedar was asked (no policy decision).
    NotAPolicyDecision,
    /// Something the decision depended on is unknown.
    Missing(String),
}

/// The recorded Cedar verdict of a decision record: a deny with `requestDenied` was the
/// request's verdict; this subject's own decision was an allow.
pub fn recorded_allow(d: &ReadDecision) -> bool {
    d.decision == Verdict::Allow || d.code.as_deref() == Some("requestDenied")
}

/// Where the case snapshots come from: a hash to the case, checked against the hash (the audit
/// directory's `cases/`, or the central store's `pg_case_snapshots`).
pub type SnapshotSource<'a> = &'a dyn Fn(&str) -> Result<Case, String>;

/// The snapshots beside a gate's log in `audit_dir`.
pub fn dir_snapshots(audit_dir: &Path) -> impl Fn(&str) -> Result<Case, String> + '_ {
    move |hash| read_snapshot(audit_dir, hash)
}

/// Rebuilds a decision record; `snapshots` gives the case snapshots.
/// `actions` are the actions a record may name besides `release` (the registries' actions; the
/// caller, which knows the registries, passes them): a record with another action is not replayed.
pub fn rebuild(
    d: &ReadDecision,
    snapshots: SnapshotSource<'_>,
    actions: &[Action],
) -> Result<Recorded, NotReplayable> {
    let missing = |s: &str| NotReplayable::Missing(s.to_string());
    let (Some(principal), Some(action), Some(resource)) = (&d.principal, &d.action, &d.resource)
    else {
        return Err(NotReplayable::NotAPolicyDecision);
    };
    if d.policy_version.is_none() && d.policies.is_empty() && d.inputs.is_none() {
        // Refusals before Cedar carry neither the policy version nor determining policies.
        if d.code.as_deref().is_some_and(|c| {
            c != super::CODE_NOT_PERMITTED && c != "requestDenied" && c != super::CODE_POLICY_ERROR
        }) {
            return Err(NotReplayable::NotAPolicyDecision);
        }
    }
    let action = if action == Action::RELEASE.as_str() {
        Action::RELEASE
    } else {
        actions
            .iter()
            .copied()
            .find(|a| a.as_str() == action)
            .ok_or_else(|| missing("unknown action"))?
    };
    let resource = match resource.kind.as_str() {
        "Person" => Resource::Person(Bsn::parse(&resource.id).map_err(|_| {
            missing("the person is pseudonymised (subject_key): the gate keeps no BSN to decide on")
        })?),
        "Vehicle" => Resource::Vehicle(
            Kenteken::parse(&resource.id).map_err(|_| missing("the kenteken is not valid"))?,
        ),
        "PersonSearch" => Resource::PersonSearch(resource.id.clone()),
        other => return Err(missing(&format!("unknown resource type `{other}`"))),
    };
    let now = DateTime::parse_from_rfc3339(&d.time)
        .map_err(|_| missing("the record's time is not RFC 3339"))?
        .with_timezone(&Utc);
    let (case, counters, search, approximate) = match &d.inputs {
        Some(inputs) => {
            let case = match &inputs.case {
                None => None,
                Some(hash) => Some(snapshots(hash).map_err(NotReplayable::Missing)?),
            };
            let search = match &inputs.search {
                None => None,
                Some(s) => Some(Search {
                    kind: match s.kind.as_str() {
                        "address" => SearchKind::Address,
                        "name" => SearchKind::Name,
                        _ => return Err(missing("unknown search kind")),
                    },
                    addresses: s.addresses.clone(),
                }),
            };
            let counters = Counters {
                lookups_last_hour: inputs.lookups_last_hour,
                lookups_last_day: inputs.lookups_last_day,
            };
            (case, counters, search, false)
        }
        None => {
            if d.case_id.is_some() {
                return Err(missing(
                    "written before audit format 1.2: the case as it was is not kept",
                ));
            }
            if action == Action::BRP_SEARCH {
                return Err(missing(
                    "written before audit format 1.2: the search is not kept",
                ));
            }
            (None, Counters::default(), None, true)
        }
    };
    Ok(Recorded {
        employee: Employee {
            id: principal.id.clone(),
            org: principal.org.clone(),
            roles: principal.roles.clone(),
            department: principal.department.clone(),
        },
        action,
        resource,
        case,
        break_glass: d.purpose.break_glass,
        reason: d.purpose.reason.clone(),
        fields: d.fields.clone(),
        client_ip: d.request.client_ip.as_deref().and_then(|s| s.parse().ok()),
        now,
        counters,
        search,
        approximate,
    })
}

/// Which way a decision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    #[serde(rename = "allow->deny")]
    AllowToDeny,
    #[serde(rename = "deny->allow")]
    DenyToAllow,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::AllowToDeny => "allow->deny",
            Direction::DenyToAllow => "deny->allow",
        }
    }
}

/// One recorded decision that the candidate decides the other way.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    /// The gate that decided (set when replaying from the central store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    pub seq: u64,
    pub time: String,
    pub direction: Direction,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub case_id: Option<String>,
    /// The recorded code (deny) and determining policies.
    pub old_code: Option<String>,
    pub old_policies: Vec<String>,
    /// The candidate's code (deny) and determining policies.
    pub new_code: Option<String>,
    pub new_policies: Vec<String>,
    /// Group key: the policy that makes the difference (the candidate's first determining
    /// forbid or `no permit` for allow→deny; the candidate's permit for deny→allow).
    pub policy: String,
    /// Group key: the deny code involved (the candidate's for allow→deny, the recorded one for
    /// deny→allow).
    pub code: String,
    pub approximate: bool,
    pub accepted: bool,
}

/// A record that was not compared, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The gate that decided (set when replaying from the central store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    pub seq: u64,
    pub why: String,
}

/// Flips of one direction, policy and code.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub direction: Direction,
    pub policy: String,
    pub code: String,
    pub count: usize,
    pub accepted: usize,
    pub seqs: Vec<u64>,
}

/// The result of a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Policy decisions compared.
    pub replayed: usize,
    pub unchanged: usize,
    /// Compared with counters taken as 0 (before format 1.2).
    pub approximate: usize,
    /// Refusals before Cedar, skipped.
    pub not_policy_decisions: usize,
    pub groups: Vec<Group>,
    pub flips: Vec<Flip>,
    pub not_replayed: Vec<Skipped>,
}

impl ReplayReport {
    /// Flips not matched by the accept file.
    pub fn unaccepted(&self) -> usize {
        self.flips.iter().filter(|f| !f.accepted).count()
    }
}

/// One entry of an accept file: a flip is accepted when every member given matches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    /// Why the change is intended (for the reviewer; not compared).
    #[serde(default)]
    pub note: Option<String>,
}

impl Accept {
    fn matches(&self, f: &Flip) -> bool {
        self.direction.is_none_or(|d| d == f.direction)
            && self.policy.as_ref().is_none_or(|p| *p == f.policy)
            && self.code.as_ref().is_none_or(|c| *c == f.code)
            && self.seq.is_none_or(|s| s == f.seq)
    }
}

/// Reads an accept file: a JSON array of [`Accept`] entries.
pub fn load_accept(path: &Path) -> Result<Vec<Accept>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("accept file `{}`: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "accept file `{}`: expected a JSON array of {{direction?, policy?, code?, seq?, note?}}: {e}",
            path.display()
        )
    })
}

/// Options of a replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub accept: Vec<Accept>,
    /// The actions a record may name besides `release` (the registries' actions).
    pub actions: Vec<Action>,
}

/// Replays the decision records of the log in `audit_dir` under the policies in `candidate`.
pub fn replay(
    candidate: &Path,
    audit_dir: &Path,
    opts: &ReplayOptions,
) -> Result<ReplayReport, String> {
    let mut replayer = Replayer::new(candidate, opts)?;
    let records = purpose_gate_audit::read_records(audit_dir).map_err(|e| e.to_string())?;
    let snapshots = dir_snapshots(audit_dir);
    for item in records {
        let (_, record) = item.map_err(|e| e.to_string())?;
        if let Record::Decision(d) = record {
            replayer.add(&d, None, &snapshots);
        }
    }
    Ok(replayer.finish())
}

/// Replays decision records one by one, from whatever source (a directory, the central store).
pub struct Replayer {
    engine: PolicyEngine,
    opts: ReplayOptions,
    report: ReplayReport,
}

impl Replayer {
    /// Loads the candidate policies.
    pub fn new(candidate: &Path, opts: &ReplayOptions) -> Result<Replayer, String> {
        Ok(Replayer {
            engine: PolicyEngine::load(candidate).map_err(|e| e.to_string())?,
            opts: opts.clone(),
            report: ReplayReport::default(),
        })
    }

    /// Replays one decision record of `gate` (named in the report when given).
    pub fn add(&mut self, d: &ReadDecision, gate: Option<&str>, snapshots: SnapshotSource<'_>) {
        let opts = &self.opts;
        let report = &mut self.report;
        if let Ok(t) = DateTime::parse_from_rfc3339(&d.time) {
            let t = t.with_timezone(&Utc);
            if opts.since.is_some_and(|s| t < s) || opts.until.is_some_and(|u| t >= u) {
                return;
            }
        }
        let rec = match rebuild(d, snapshots, &opts.actions) {
            Ok(r) => r,
            Err(NotReplayable::NotAPolicyDecision) => {
                report.not_policy_decisions += 1;
                return;
            }
            Err(NotReplayable::Missing(why)) => {
                report.not_replayed.push(Skipped {
                    gate: gate.map(str::to_string),
                    seq: d.seq,
                    why,
                });
                return;
            }
        };
        report.replayed += 1;
        if rec.approximate {
            report.approximate += 1;
        }
        let new = self.engine.decide(&rec.input());
        let old_allow = recorded_allow(d);
        if new.allow == old_allow {
            report.unchanged += 1;
            return;
        }
        let mut flip = flip_of(d, &rec, &new, old_allow);
        flip.gate = gate.map(str::to_string);
        flip.accepted = opts.accept.iter().any(|a| a.matches(&flip));
        report.flips.push(flip);
    }

    /// The report, flips grouped by direction, policy and code.
    pub fn finish(self) -> ReplayReport {
        let mut report = self.report;
        let mut groups: BTreeMap<(Direction, String, String), Group> = BTreeMap::new();
        for f in &report.flips {
            let g = groups
                .entry((f.direction, f.policy.clone(), f.code.clone()))
                .or_insert_with(|| Group {
                    direction: f.direction,
                    policy: f.policy.clone(),
                    code: f.code.clone(),
                    count: 0,
                    accepted: 0,
                    seqs: vec![],
                });
            g.count += 1;
            g.accepted += usize::from(f.accepted);
            g.seqs.push(f.seq);
        }
        report.groups = groups.into_values().collect();
        report
    }
}

fn flip_of(d: &ReadDecision, rec: &Recorded, new: &Decision, old_allow: bool) -> Flip {
    let (direction, policy, code) = if old_allow {
        (
            Direction::AllowToDeny,
            new.policies
                .first()
                .cloned()
                .unwrap_or_else(|| "no permit".to_string()),
            new.code.clone().unwrap_or_default(),
        )
    } else {
        (
            Direction::DenyToAllow,
            new.policies.join(" "),
            d.code.clone().unwrap_or_default(),
        )
    };
    let (kind, id) = rec.resource.type_and_id();
    Flip {
        gate: None,
        seq: d.seq,
        time: d.time.clone(),
        direction,
        principal: rec.employee.id.clone(),
        action: rec.action.as_str().to_string(),
        resource: format!("{kind}:{id}"),
        case_id: d.case_id.clone(),
        old_code: if old_allow { None } else { d.code.clone() },
        old_policies: d.policies.clone(),
        new_code: new.code.clone(),
        new_policies: new.policies.clone(),
        policy,
        code,
        approximate: rec.approximate,
        accepted: false,
    }
}

/// The report as a table for people.
pub fn render_table(r: &ReplayReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "replayed {} decision(s): {} unchanged, {} changed ({} not accepted){}",
        r.replayed,
        r.unchanged,
        r.flips.len(),
        r.unaccepted(),
        if r.approximate > 0 {
            format!(", {} approximate (before audit format 1.2)", r.approximate)
        } else {
            String::new()
        }
    );
    if !r.groups.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<12} {:<44} {:<28} {:>6} {:>8}  seqs",
            "change", "policy", "code", "count", "accepted"
        );
        for g in &r.groups {
            let seqs: Vec<String> = g.seqs.iter().take(10).map(u64::to_string).collect();
            let more = if g.seqs.len() > 10 { " …" } else { "" };
            let _ = writeln!(
                s,
                "{:<12} {:<44} {:<28} {:>6} {:>8}  {}{more}",
                g.direction.as_str(),
                g.policy,
                g.code,
                g.count,
                g.accepted,
                seqs.join(",")
            );
        }
        let _ = writeln!(s);
        for f in &r.flips {
            let _ = writeln!(
                s,
                "{}seq {} {} {} {} {} {}{}: {} -> {}{}",
                f.gate
                    .as_deref()
                    .map(|g| format!("gate {g} "))
                    .unwrap_or_default(),
                f.seq,
                f.time,
                f.direction.as_str(),
                f.principal,
                f.action,
                f.resource,
                f.case_id
                    .as_deref()
                    .map(|c| format!(" case {c}"))
                    .unwrap_or_default(),
                describe(f.old_code.as_deref(), &f.old_policies),
                describe(f.new_code.as_deref(), &f.new_policies),
                if f.accepted { " (accepted)" } else { "" }
            );
        }
    }
    if r.not_policy_decisions > 0 {
        let _ = writeln!(
            s,
            "skipped {} refusal(s) made before the policies were asked",
            r.not_policy_decisions
        );
    }
    if !r.not_replayed.is_empty() {
        let _ = writeln!(s, "could not replay {} decision(s):", r.not_replayed.len());
        for k in &r.not_replayed {
            let gate = k
                .gate
                .as_deref()
                .map(|g| format!("gate {g} "))
                .unwrap_or_default();
            let _ = writeln!(s, "  {gate}seq {}: {}", k.seq, k.why);
        }
    }
    s
}

fn describe(code: Option<&str>, policies: &[String]) -> String {
    match code {
        None => format!("allow ({})", policies.join(", ")),
        Some(c) if policies.is_empty() => format!("deny {c}"),
        Some(c) => format!("deny {c} ({})", policies.join(", ")),
    }
}

/// The flips as CSV (RFC 4180), one row per flip.
pub fn render_csv(r: &ReplayReport) -> String {
    let q = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from(
        "seq,time,change,principal,action,resource,case_id,old_code,old_policies,new_code,new_policies,policy,code,approximate,accepted\r\n",
    );
    for f in &r.flips {
        let row = [
            f.seq.to_string(),
            f.time.clone(),
            f.direction.as_str().to_string(),
            f.principal.clone(),
            f.action.clone(),
            f.resource.clone(),
            f.case_id.clone().unwrap_or_default(),
            f.old_code.clone().unwrap_or_default(),
            f.old_policies.join(" "),
            f.new_code.clone().unwrap_or_default(),
            f.new_policies.join(" "),
            f.policy.clone(),
            f.code.clone(),
            f.approximate.to_string(),
            f.accepted.to_string(),
        ];
        let cells: Vec<String> = row.iter().map(|c| q(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}
