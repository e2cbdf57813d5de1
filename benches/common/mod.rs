//! Shared bench equipment: a typical decision record, as the gate writes one for an allowed
//! BRP lookup.
// Included with `#[path]` by each bench crate; not every bench uses every item.
#![allow(dead_code)]

use purpose_gate::audit::{
    DecisionKind, DecisionRecord, Principal, PurposeRecord, RecordBody, RequestRecord, ResourceRef,
    Verdict,
};

/// The decision record of request number `i`.
pub fn decision(i: u64) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        time: "2026-03-01T09:15:00.123456Z".into(),
        kind: DecisionKind::Decision,
        gate: "gate-1".into(),
        request_id: format!("0190f3a2-7c4e-7b1a-9d2e-{i:012}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: "e123456".into(),
            org: "gm0363".into(),
            roles: vec!["handhaver".into()],
            department: None,
        }),
        action: Some("brp:lookup".into()),
        resource: Some(ResourceRef {
            kind: "Person".into(),
            id: "999993653".into(),
        }),
        case_id: Some("Z-2026-000123".into()),
        case_url: None,
        purpose: PurposeRecord {
            doelbinding: Some("BRPACT-Toezicht".into()),
            verwerking: Some("Handhaving".into()),
            break_glass: false,
            reason: None,
        },
        fields: vec![
            "naam".into(),
            "verblijfplaats".into(),
            "geboorte.datum".into(),
        ],
        decision: Verdict::Allow,
        code: None,
        policies: vec!["permit-case-handler".into()],
        reasons: vec![],
        errors: vec![],
        request: RequestRecord {
            method: "POST".into(),
            path: "/haalcentraal/api/brp/personen".into(),
            client_ip: Some("10.0.0.7".into()),
        },
        policy_version: Some("sha256:0f1e2d3c".into()),
        inputs: None,
    }))
}
