//! purpose-gate: a purpose-bound, audited reverse proxy for Dutch registry APIs.
//!
//! The modules follow the request path: `listener` → `routes` → `auth` → `purpose` →
//! `resource` → `policy` → `audit` → `forward` → `response`; `gate` composes them, `layer`
//! makes them tower middleware ([`layer::PurposeGateLayer`]) and `listener` composes the
//! binary's stack.
//!
//! The domain types, the audit log with its auditor tools, and the policy engine are crates of
//! their own (`crates/`, see `docs/architecture.md`); they are re-exported here under their module
//! names, so `purpose_gate::audit::…`, `purpose_gate::policy::…` and `purpose_gate::model::…`
//! name the same items as before the split.

pub mod admin;
/// The audit log (`purpose-gate-audit`) and the auditor tools on it (`purpose-gate-audit-tools`:
/// [`query`](audit::query), [`report`](audit::report), [`surname`](audit::surname)).
pub mod audit {
    pub use purpose_gate_audit::*;
    pub use purpose_gate_audit_tools::{query, report, surname};
}
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod counters;
pub mod error;
pub mod forward;
pub mod gate;
pub mod layer;
pub mod listener;
pub mod logboek;
pub mod logging;
pub mod metrics;
pub use purpose_gate_model as model;
pub use purpose_gate_policy as policy;
pub mod purpose;
pub mod registry;
pub mod reload;
pub mod resource;
pub mod response;
pub mod routes;
pub mod store;
pub mod tls;
pub mod zgw;
