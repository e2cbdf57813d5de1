//! The audit record format (see `docs/audit-log.md`, format version 1.2).
//!
//! A line is `{"seq":N,<body fields>,"prev":"<hex>"}`: the writer puts `seq` first and `prev` last
//! around the fields of the record body, which is serialised by the types below.

use serde::{Deserialize, Serialize};

/// Version of the record format documented in `docs/audit-log.md`: the major version (the
/// chain and the fields every record has).
pub const FORMAT_VERSION: u32 = 1;

/// Minor version of the record format: optional members added in a way readers of the same
/// major version can ignore (1.1: the outcome's `code`, `upstream_status`,
/// `fsc_transaction_id`; 1.2: the decision's `inputs`; 1.3: the `access` record kind of the
/// auditor console; 1.4: the decision's `span_id` and `client_span_id`, the principal's
/// `department`, the review's `target_gate`).
pub const FORMAT_MINOR_VERSION: u32 = 4;

/// What a Cedar decision depended on besides the record's own members (principal, action,
/// resource, purpose, fields, time, client ip), so that `policy replay` and `policy explain`
/// can decide it again (format 1.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionInputs {
    /// Version of this member: 1.
    pub v: u32,
    /// SHA-256 (lowercase hex) of the case snapshot `cases/<hash>.json` beside the log: the
    /// case exactly as the decision saw it. Absent when the request named no case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// The employee's lookups in the last hour, as `context.lookups_last_hour` saw them.
    pub lookups_last_hour: i64,
    /// The employee's lookups in the last day (`context.lookups_last_day`).
    pub lookups_last_day: i64,
    /// A BRP search: what it looked for (`context.search`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchInput>,
}

/// `context.search` of a recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchInput {
    /// `address` or `name`.
    pub kind: String,
    /// Address keys of the searched address.
    pub addresses: Vec<String>,
}

/// The employee a decision was made for; absent when the token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub id: String,
    pub org: String,
    pub roles: Vec<String>,
    /// The employee's department from the token's department claim (`[auth.claims]
    /// department`); absent when the token names none, and in records before format 1.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

/// A data subject: `{"type": "Person", "id": "999993653"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// The purpose headers of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeRecord {
    pub doelbinding: Option<String>,
    pub verwerking: Option<String>,
    pub break_glass: bool,
    pub reason: Option<String>,
}

/// What the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub client_ip: Option<String>,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

/// One decision about one data subject (or about a request that never got that far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// RFC 3339 UTC time of the decision.
    pub time: String,
    pub kind: DecisionKind,
    /// `gate_id` from the config.
    pub gate: String,
    pub request_id: String,
    pub trace_id: String,
    /// The gate's span for the request: the parent id of the `traceparent` the registry
    /// received (format 1.4; absent before, and on requests refused before a trace existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// The client's span: the parent id of the `traceparent` the client sent, when it sent one
    /// (format 1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_span_id: Option<String>,
    pub principal: Option<Principal>,
    /// Cedar action id, e.g. `brp:lookup`; absent when no route action was reached.
    pub action: Option<String>,
    pub resource: Option<ResourceRef>,
    pub case_id: Option<String>,
    /// The case's URL in the case registry, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_url: Option<String>,
    pub purpose: PurposeRecord,
    pub fields: Vec<String>,
    pub decision: Verdict,
    /// Stable error code of a deny (`caseClosed`, `invalidToken`, ...); absent on allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `@id` of the policies that determined the decision.
    pub policies: Vec<String>,
    /// `@reason` of the forbids that determined a deny, or the gate's reason.
    pub reasons: Vec<String>,
    /// Errors met while deciding (policy evaluation errors, token errors).
    pub errors: Vec<String>,
    pub request: RequestRecord,
    /// Hash of the policy set that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// What the Cedar decision depended on (format 1.2); absent on refusals before Cedar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<DecisionInputs>,
}

/// The upstream's answer to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub time: String,
    pub kind: OutcomeKind,
    pub request_id: String,
    /// HTTP status returned to the client (502/504 when the upstream failed).
    pub status: u16,
    pub upstream_ms: u64,
    /// The data subjects the answer actually disclosed (what left the gate).
    pub disclosed: Vec<ResourceRef>,
    /// Every person in the registry's answer, with the release decision for each: released
    /// (passed on) or withheld, and the policies that decided. Absent when the answer held no
    /// person, and in records written before release decisions existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<ReleaseRecord>,
    /// The gate's code when the client got the gate's own refusal instead of the upstream's
    /// answer (`upstreamEncoding`, `upstreamTimeout`, …); absent when the answer was passed on
    /// (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The HTTP status the upstream answered, when an answer arrived (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// The FSC TransactionID of the forwarded request, for an upstream reached through an FSC
    /// Outway: joins this record to the FSC TransactionLog (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsc_transaction_id: Option<String>,
}

/// The release decision for one person in a registry's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// `Person`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The BSN (pseudonymised like every subject id), or `unidentified` for a person the
    /// answer gives no valid BSN for.
    pub id: String,
    /// The Cedar decision (or the gate's, for an unidentified person: deny).
    pub decision: Verdict,
    /// Whether the person was passed on: `decision` allow, or shadow mode.
    pub released: bool,
    /// Deny code, e.g. `protectedPerson`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `@id`s of the determining policies.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// Marker for `"kind": "decision"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionKind {
    #[serde(rename = "decision")]
    Decision,
}

/// Marker for `"kind": "outcome"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeKind {
    #[serde(rename = "outcome")]
    Outcome,
}

/// A signed checkpoint was written: the log's first `tree_size` records have Merkle root `root`.
///
/// The checkpoint record itself is not covered by the checkpoint it names (its seq is larger
/// than `tree_size`); the next checkpoint covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub time: String,
    pub kind: CheckpointKind,
    /// The origin line of the signed note (the log's name).
    pub origin: String,
    /// Number of records covered: seq 1 to `tree_size`.
    pub tree_size: u64,
    /// Standard base64 of the RFC 6962 Merkle tree hash over those records' line bytes.
    pub root: String,
    /// The checkpoint file, relative to the audit directory (`checkpoints/000000001234.ckpt`).
    pub file: String,
}

/// An auditor's verdict on an earlier record; nothing is ever edited, reviews are appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    pub time: String,
    pub kind: ReviewKind,
    /// The seq of the reviewed record (a decision).
    pub target_seq: u64,
    /// The gate whose log holds the reviewed record, when that is not the log this review is
    /// in: a review made in the console over the central store, where seqs are per gate
    /// (format 1.4). Absent: `target_seq` is a seq of this log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_gate: Option<String>,
    /// Who reviewed (the auditor's id).
    pub by: String,
    pub verdict: ReviewVerdict,
    #[serde(default)]
    pub note: Option<String>,
}

/// The verdict of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewVerdict {
    Ok,
    Suspicious,
}

/// Marker for `"kind": "checkpoint"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointKind {
    #[serde(rename = "checkpoint")]
    Checkpoint,
}

/// Marker for `"kind": "review"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReviewKind {
    #[serde(rename = "review")]
    Review,
}

/// The gate's configuration changed: e.g. a reload swapped the policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub time: String,
    pub kind: ConfigKind,
    /// `gate_id` from the config.
    pub gate: String,
    /// What changed: `policies`.
    pub changed: String,
    /// `policy_version` before the change.
    pub old_version: String,
    /// `policy_version` after the change; decisions from now on carry it.
    pub new_version: String,
}

/// An auditor saw personal data in the auditor console (format 1.2): written, durably, before
/// the page that shows it is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub time: String,
    pub kind: AccessKind,
    /// The console instance (`[console] name`).
    pub console: String,
    /// The auditor: the `sub` of the ID token.
    pub by: String,
    /// The auditor's display name from the ID token, when it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// The auditor's roles from the role claim.
    pub roles: Vec<String>,
    /// The page: `overview`, `signals`, `search`, `subject-report`, `incident`, `proof`, `review`.
    pub view: String,
    /// What was asked for on that page (e.g. `{"bsn": "999993653"}`), as given.
    pub query: std::collections::BTreeMap<String, String>,
    /// The auditor's address as the console saw it.
    #[serde(default)]
    pub client_ip: Option<String>,
}

/// Marker for `"kind": "access"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessKind {
    #[serde(rename = "access")]
    Access,
}

/// An access record with its `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadAccess {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub console: String,
    pub by: String,
    #[serde(default)]
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub view: String,
    pub query: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub client_ip: Option<String>,
}

/// Marker for `"kind": "config"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigKind {
    #[serde(rename = "config")]
    Config,
}

/// A record body handed to the writer (without `seq` and `prev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordBody {
    Decision(Box<DecisionRecord>),
    Outcome(OutcomeRecord),
    Checkpoint(CheckpointRecord),
    Review(ReviewRecord),
    Config(ConfigRecord),
    Access(AccessRecord),
    /// A decision on a route in shadow mode (`enforce = false`): written as the decision
    /// record plus `"enforced": false`; the request was forwarded whatever the verdict.
    ShadowDecision(Box<DecisionRecord>),
}

/// A record as read back from the log, with its chain fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Decision(Box<ReadDecision>),
    Outcome(ReadOutcome),
    Checkpoint(ReadCheckpoint),
    Review(ReadReview),
    Config(ReadConfig),
    Access(ReadAccess),
}

/// A checkpoint record with its `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadCheckpoint {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub origin: String,
    pub tree_size: u64,
    pub root: String,
    pub file: String,
}

/// A review record with its `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadReview {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub target_seq: u64,
    /// Absent: the reviewed record is in the same log (always before format 1.4).
    #[serde(default)]
    pub target_gate: Option<String>,
    pub by: String,
    pub verdict: ReviewVerdict,
    #[serde(default)]
    pub note: Option<String>,
}

/// A config record with its `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadConfig {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub gate: String,
    pub changed: String,
    pub old_version: String,
    pub new_version: String,
}

/// A decision record with its `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadDecision {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub gate: String,
    pub request_id: String,
    pub trace_id: String,
    /// The gate's span for the request (format 1.4).
    #[serde(default)]
    pub span_id: Option<String>,
    /// The client's span, when it sent a `traceparent` (format 1.4).
    #[serde(default)]
    pub client_span_id: Option<String>,
    pub principal: Option<Principal>,
    pub action: Option<String>,
    pub resource: Option<ResourceRef>,
    pub case_id: Option<String>,
    #[serde(default)]
    pub case_url: Option<String>,
    pub purpose: PurposeRecord,
    pub fields: Vec<String>,
    pub decision: Verdict,
    #[serde(default)]
    pub code: Option<String>,
    pub policies: Vec<String>,
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
    pub request: RequestRecord,
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Absent in records before format 1.2 and on refusals before Cedar.
    #[serde(default)]
    pub inputs: Option<DecisionInputs>,
    /// `false` when the route was in shadow mode (the verdict was not enforced).
    #[serde(default = "enforced_default")]
    pub enforced: bool,
}

fn enforced_default() -> bool {
    true
}

/// An outcome record with its `seq` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadOutcome {
    pub seq: u64,
    pub prev: String,
    pub time: String,
    pub request_id: String,
    pub status: u16,
    pub upstream_ms: u64,
    pub disclosed: Vec<ResourceRef>,
    /// Absent in records before format 1.1.
    #[serde(default)]
    pub code: Option<String>,
    /// Absent in records before format 1.1.
    #[serde(default)]
    pub upstream_status: Option<u16>,
    /// Absent in records before format 1.1, and for upstreams not reached through FSC.
    #[serde(default)]
    pub fsc_transaction_id: Option<String>,
    /// The release decision per person of the answer; empty when absent.
    #[serde(default)]
    pub release: Vec<ReleaseRecord>,
}

impl Record {
    pub fn seq(&self) -> u64 {
        match self {
            Record::Decision(d) => d.seq,
            Record::Outcome(o) => o.seq,
            Record::Checkpoint(c) => c.seq,
            Record::Review(r) => r.seq,
            Record::Config(c) => c.seq,
            Record::Access(a) => a.seq,
        }
    }

    pub fn prev(&self) -> &str {
        match self {
            Record::Decision(d) => &d.prev,
            Record::Outcome(o) => &o.prev,
            Record::Checkpoint(c) => &c.prev,
            Record::Review(r) => &r.prev,
            Record::Config(c) => &c.prev,
            Record::Access(a) => &a.prev,
        }
    }

    /// The request id; empty for checkpoint, review and config records (they belong to no
    /// request).
    pub fn request_id(&self) -> &str {
        match self {
            Record::Decision(d) => &d.request_id,
            Record::Outcome(o) => &o.request_id,
            Record::Checkpoint(_) | Record::Review(_) | Record::Config(_) | Record::Access(_) => "",
        }
    }

    /// The record's time (RFC 3339 UTC).
    pub fn time(&self) -> &str {
        match self {
            Record::Decision(d) => &d.time,
            Record::Outcome(o) => &o.time,
            Record::Checkpoint(c) => &c.time,
            Record::Review(r) => &r.time,
            Record::Config(c) => &c.time,
            Record::Access(a) => &a.time,
        }
    }
}
