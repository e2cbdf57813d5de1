//! The review trail: an auditor's verdict on a decision is appended as a `review` record;
//! nothing is ever edited.
//!
//! Guarantees: the review goes through the one writer format ([`super::AuditLog`]), so it gets
//! the next `seq` and a correct `prev`; the reviewed seq must be a decision record of an intact
//! chain up to that seq. Refuses: appending while another writer (a running gate) holds the
//! directory's `writer.lock` — two writers would fork the chain; stop the gate, or review
//! later (`docs/auditing.md`).

use std::path::Path;

use super::record::{Record, RecordBody, ReviewKind, ReviewRecord, ReviewVerdict};
use super::{AuditError, AuditLog, AuditOptions, read_records};

/// Why a review was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Bad input (unknown seq, not a decision, empty reviewer).
    #[error("{0}")]
    Usage(String),
    /// The log could not be read or written (also: in use by a running gate).
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Appends a review of decision `seq` by `by`; returns the review record's seq.
pub fn append_review(
    dir: &Path,
    seq: u64,
    by: &str,
    verdict: ReviewVerdict,
    note: Option<String>,
) -> Result<u64, ReviewError> {
    if by.trim().is_empty() {
        return Err(ReviewError::Usage("`--by` must name the reviewer".into()));
    }
    let mut found = None;
    let mut records = read_records(dir)?;
    while let Some(item) = records.next_ref() {
        let (_, record) = item?;
        if record.seq() == seq {
            found = Some(record);
            break;
        }
    }
    match found {
        Some(Record::Decision(_)) => {}
        Some(_) => {
            return Err(ReviewError::Usage(format!(
                "seq {seq} is not a decision record"
            )));
        }
        None => return Err(ReviewError::Usage(format!("seq {seq} is not in the log"))),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| AuditError::Unavailable(format!("cannot start the runtime: {e}")))?;
    let opts = AuditOptions::from_config(&crate::config::AuditConfig {
        dir: dir.to_path_buf(),
        ..crate::config::AuditConfig::default()
    });
    runtime.block_on(async {
        let log = AuditLog::open(&opts)?;
        let body = RecordBody::Review(ReviewRecord {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind: ReviewKind::Review,
            target_seq: seq,
            by: by.to_string(),
            verdict,
            note,
        });
        let result = log.append(vec![body]).await;
        log.close().await;
        let seqs = result?;
        seqs.first()
            .copied()
            .ok_or_else(|| ReviewError::Usage("the review was not written".into()))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::testutil::{decision, options, outcome};

    #[tokio::test]
    async fn review_is_appended_and_refused_while_a_writer_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a"), outcome("a")]).await.unwrap();
        // The gate is running: a second writer is refused.
        let d = dir.path().to_path_buf();
        let busy = tokio::task::spawn_blocking(move || {
            append_review(&d, 1, "auditor-1", ReviewVerdict::Ok, None)
        })
        .await
        .unwrap();
        assert!(
            matches!(&busy, Err(ReviewError::Audit(AuditError::Unavailable(m))) if m.contains("in use")),
            "{busy:?}"
        );
        log.close().await;
        let d = dir.path().to_path_buf();
        let seq = tokio::task::spawn_blocking(move || {
            append_review(
                &d,
                1,
                "auditor-1",
                ReviewVerdict::Suspicious,
                Some("why".into()),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(seq, 3);
        let records: Vec<Record> = read_records(dir.path())
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert!(
            matches!(&records[2], Record::Review(r) if r.target_seq == 1 && r.verdict == ReviewVerdict::Suspicious)
        );
        // Only decisions can be reviewed.
        let d = dir.path().to_path_buf();
        let err = tokio::task::spawn_blocking(move || {
            append_review(&d, 2, "auditor-1", ReviewVerdict::Ok, None)
        })
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(
            err,
            ReviewError::Usage("seq 2 is not a decision record".into())
        );
    }
}
