//! The auditor tools on the audit log: queries ([`query`]), reports and signals ([`report`]),
//! and the surname keys of the shared-surname signal ([`surname`]).
//!
//! They read the log through `purpose-gate-audit`, the crate that writes it: one parser for
//! writer, verifier and tools. Nothing here writes the log, knows HTTP or reads the gate's
//! configuration.

pub mod query;
pub mod report;
pub mod surname;
