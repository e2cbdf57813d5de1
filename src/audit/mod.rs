//! The audit log: an append-only directory of JSON Lines segments with a SHA-256 hash chain.
//!
//! INVARIANT: `AuditLog::append` returns `Ok` only after the records' bytes were written and
//! `fdatasync` returned; the gate forwards a request only after that.
//!
//! This module knows nothing of HTTP. Auditor tooling reads the log through it.

pub mod record;

use std::path::{Path, PathBuf};

pub use record::*;

/// Options of the audit writer.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub dir: PathBuf,
    pub segment_max_bytes: u64,
    pub max_batch: usize,
}

/// The audit log could not be opened, written or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
}

/// Handle to the single writer (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {}

impl AuditLog {
    /// Opens the directory (creating it), recovers a torn last line, and starts the writer.
    pub fn open(_opts: &AuditOptions) -> Result<AuditLog, AuditError> {
        Err(AuditError::Unavailable("not implemented".into()))
    }

    /// Appends records as one group; resolves after fdatasync with their `seq`s.
    pub async fn append(&self, _records: Vec<RecordBody>) -> Result<Vec<u64>, AuditError> {
        Err(AuditError::Unavailable("not implemented".into()))
    }

    /// Flushes and stops the writer.
    pub async fn close(&self) {}
}

/// Result of a successful chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    pub segments: usize,
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VerifyFailure {
    pub seq: Option<u64>,
    pub message: String,
}

/// Verifies the whole chain in `dir`.
pub fn verify(_dir: &Path) -> Result<VerifySummary, VerifyFailure> {
    Err(VerifyFailure {
        seq: None,
        message: "not implemented".into(),
    })
}
