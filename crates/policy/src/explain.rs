//! Explain: `purpose-gate policy explain` tells for one decision record what was asked, each
//! policy that applies to its action, whether it was satisfied, and for each condition whether
//! it held or failed — in words for an employee or an auditor.
//!
//! The record is rebuilt as `policy replay` does (its own members plus the case snapshot and
//! counters of format 1.2) and decided again under the given policies; when those are not the
//! version that decided, the explanation says so.

use std::fmt::Write as _;
use std::path::Path;

use cedar_policy::PolicyId;

use super::PolicyEngine;
use super::conditions::{Conditions, Outcome, in_words};
use super::replay::{NotReplayable, SnapshotSource, dir_snapshots, rebuild, recorded_allow};
use purpose_gate_audit::{ReadDecision, Record};
use purpose_gate_model::Action;

/// The explanation of the decision record `seq` in `audit_dir` under the policies in `dir`;
/// `actions` as for [`rebuild`].
pub fn explain(
    dir: &Path,
    audit_dir: &Path,
    seq: u64,
    actions: &[Action],
) -> Result<String, String> {
    let engine = PolicyEngine::load(dir).map_err(|e| e.to_string())?;
    let mut found: Option<Box<ReadDecision>> = None;
    for item in purpose_gate_audit::read_records(audit_dir).map_err(|e| e.to_string())? {
        let (_, record) = item.map_err(|e| e.to_string())?;
        if record.seq() == seq {
            match record {
                Record::Decision(d) => found = Some(d),
                _ => return Err(format!("record {seq} is not a decision record")),
            }
            break;
        }
    }
    let d = found.ok_or_else(|| format!("no record with seq {seq}"))?;
    explain_decision(&engine, &d, &dir_snapshots(audit_dir), actions)
}

/// The explanation of one decision record under `engine`, with the case snapshots of
/// `snapshots` (a gate's directory, or the central store); `actions` as for [`rebuild`].
pub fn explain_decision(
    engine: &PolicyEngine,
    d: &ReadDecision,
    snapshots: SnapshotSource<'_>,
    actions: &[Action],
) -> Result<String, String> {
    let mut s = String::new();

    let who = match &d.principal {
        Some(p) => format!(
            "{} (organisation {}, roles {})",
            p.id,
            p.org,
            if p.roles.is_empty() {
                "none".to_string()
            } else {
                p.roles.join(", ")
            }
        ),
        None => "an unidentified client".to_string(),
    };
    let what = match (&d.action, &d.resource) {
        (Some(a), Some(r)) => format!("`{a}` of {} {}", r.kind, r.id),
        (Some(a), None) => format!("`{a}`"),
        _ => format!("{} {}", d.request.method, d.request.path),
    };
    let purpose = match (&d.case_id, d.purpose.break_glass) {
        (Some(c), _) => format!("for case {c}"),
        (None, true) => format!(
            "with break-glass, reason: {}",
            d.purpose.reason.as_deref().unwrap_or("(none)")
        ),
        (None, false) => "without a case".to_string(),
    };
    let _ = writeln!(s, "record {} at {}", d.seq, d.time);
    let _ = writeln!(s, "request: {who} asked {what} {purpose}");
    if !d.fields.is_empty() {
        let _ = writeln!(s, "fields: {}", d.fields.join(", "));
    }
    let _ = writeln!(
        s,
        "recorded: {}{}{}",
        if recorded_allow(d) { "allow" } else { "deny" },
        d.code
            .as_deref()
            .map(|c| format!(" `{c}`"))
            .unwrap_or_default(),
        if d.policies.is_empty() {
            String::new()
        } else {
            format!(" by {}", d.policies.join(", "))
        }
    );
    for r in &d.reasons {
        let _ = writeln!(s, "  reason: {r}");
    }

    let rec = match rebuild(d, snapshots, actions) {
        Ok(r) => r,
        Err(NotReplayable::NotAPolicyDecision) => {
            let _ = writeln!(
                s,
                "the policies were not asked: the gate refused the request before that ({})",
                d.code.as_deref().unwrap_or("no code")
            );
            return Ok(s);
        }
        Err(NotReplayable::Missing(why)) => {
            let _ = writeln!(s, "cannot evaluate the policies again: {why}");
            return Ok(s);
        }
    };
    if let Some(case) = &rec.case {
        let _ = writeln!(
            s,
            "case as it was: {} of type {}, {}, opened {}, {}, organisation {}, handlers {}",
            case.id,
            case.case_type,
            case.status.as_str(),
            case.opened.to_rfc3339(),
            case.closes
                .map(|c| format!("closes {}", c.to_rfc3339()))
                .unwrap_or_else(|| "open-ended".to_string()),
            case.organization,
            case.handlers.join(", ")
        );
    }
    if rec.approximate {
        let _ = writeln!(
            s,
            "note: written before audit format 1.2; lookup counters are unknown and taken as 0"
        );
    }
    if d.policy_version.as_deref() != Some(engine.version()) {
        let _ = writeln!(
            s,
            "note: these policies ({}) are not the version that decided ({})",
            engine.version(),
            d.policy_version.as_deref().unwrap_or("unknown")
        );
    }
    let input = rec.input();
    let decision = engine.decide(&input);
    let _ = writeln!(
        s,
        "these policies decide: {}{}",
        if decision.allow { "allow" } else { "deny" },
        decision
            .code
            .as_deref()
            .map(|c| format!(" `{c}`"))
            .unwrap_or_default()
    );
    let built = engine.build(&input, Some(&engine.schema))?;
    let _ = writeln!(s, "\npolicies for `{}`:", rec.action.as_str());
    for info in &engine.infos {
        let Some(policy) = engine.policies.policy(&PolicyId::new(&info.id)) else {
            continue;
        };
        let conds = Conditions::of(policy);
        let Some(outcomes) = conds.evaluate(&built.request, &built.entities) else {
            continue;
        };
        let satisfied = outcomes.iter().all(|o| *o == Outcome::Held);
        let deciding = decision.policies.contains(&info.id);
        let kind = if info.permit { "permit" } else { "forbid" };
        let verdict = match (satisfied, deciding) {
            (true, true) => "satisfied, decided",
            (true, false) => "satisfied",
            (false, _) => "not satisfied",
        };
        let _ = writeln!(s, "  {kind} {}: {verdict}", info.id);
        if let (Some(reason), true) = (&info.reason, satisfied) {
            let _ = writeln!(s, "    says: {reason}");
        }
        // For a policy that decided, or a permit that did not apply, every condition; for the
        // others the one that failed.
        let detail = deciding || (info.permit && !decision.allow);
        for (c, o) in conds.conditions.iter().zip(&outcomes) {
            let words = in_words(&c.text).map(str::to_string);
            let said = words.unwrap_or_else(|| format!("`{}`", c.text));
            let line = match o {
                Outcome::Held if detail => format!("held:   {said}"),
                Outcome::Failed => format!("FAILED: {said}"),
                Outcome::Error(e) => format!("ERROR:  {said}: {e}"),
                _ => continue,
            };
            let _ = writeln!(s, "    {line}");
        }
    }
    Ok(s)
}
