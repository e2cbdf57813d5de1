//! Policy: Cedar schema, policies and static entities, and the decision for one data subject.
//!
//! Loading validates strictly; any error names the file and position. A decision is an allow only
//! when Cedar says allow without evaluation errors. This module knows nothing of HTTP.

use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::model::{Action, Case, Counters, Employee, Resource};

/// Policies could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PolicyLoadError(pub String);

/// What one decision is about.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    pub employee: &'a Employee,
    pub action: Action,
    pub resource: &'a Resource,
    pub case: Option<&'a Case>,
    pub break_glass: bool,
    pub reason: Option<&'a str>,
    pub fields: &'a [String],
    pub client_ip: Option<IpAddr>,
    pub now: DateTime<Utc>,
    pub counters: Counters,
}

/// The answer for one data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// `@id`s of the determining policies.
    pub policies: Vec<String>,
    /// `@reason`s of the determining forbids (or the gate's reason when none applied).
    pub reasons: Vec<String>,
    /// `@code` of the first determining forbid, e.g. `caseClosed`; `notPermitted` when no
    /// permit applied; `policyError` on evaluation errors.
    pub code: Option<String>,
    pub errors: Vec<String>,
}

/// A loaded, validated policy set with its static entities.
pub struct PolicyEngine {}

impl PolicyEngine {
    /// Loads and validates `*.cedarschema`, `*.cedar` and `entities.json` from `dir`.
    pub fn load(_dir: &Path) -> Result<PolicyEngine, PolicyLoadError> {
        Err(PolicyLoadError("not implemented".into()))
    }

    /// SHA-256 over the loaded files, as lowercase hex.
    pub fn version(&self) -> &str {
        ""
    }

    /// Decides one request about one data subject.
    pub fn decide(&self, _input: &DecisionInput<'_>) -> Decision {
        Decision {
            allow: false,
            policies: vec![],
            reasons: vec!["not implemented".into()],
            code: Some("policyError".into()),
            errors: vec![],
        }
    }
}

/// `purpose-gate policy check`: prints the result; exit 0 valid, 1 invalid.
pub fn cli_check(dir: &Path) -> std::process::ExitCode {
    match PolicyEngine::load(dir) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// `purpose-gate policy test`: runs the tests; exit 0 all pass, 1 otherwise.
pub fn cli_test(dir: &Path) -> std::process::ExitCode {
    cli_check(dir)
}
