//! The review trail: an auditor's verdict on a decision is appended as a `review` record;
//! nothing is ever edited.
//!
//! Guarantees: the review is appended by the log's single writer, through the review spool
//! ([`super::spool`]): by the running gate when one holds `writer.lock`, else by this process
//! after taking the lock itself. So it gets the next `seq` and a correct `prev`, and the chain is
//! never forked. The reviewed seq must be a decision record of an intact chain up to that seq;
//! the appended record is read back from the log before success is reported. Refuses: an
//! unknown or non-decision seq, an empty reviewer; reports a request that no writer answered
//! within the timeout as still waiting (it is appended when a writer next picks it up).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::{Record, ReviewVerdict};
use super::spool::{self, Answer, ReviewRequest};
use super::{AuditError, AuditLog, read_records};

/// Why a review was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Bad input (unknown seq, not a decision, empty reviewer).
    #[error("{0}")]
    Usage(String),
    /// The log could not be read or written.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The writer refused the request.
    #[error("the writer refused the review: {0}")]
    Rejected(String),
    /// No writer answered in time; the request waits in the spool.
    #[error(
        "no answer from the running gate within {secs}s: the review waits in `{}` and is appended when the gate picks it up",
        path.display()
    )]
    Pending { secs: u64, path: PathBuf },
    /// The spool could not be written or read, or the answer does not match the log.
    #[error("{0}")]
    Spool(String),
}

/// A review that was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The seq of the review record.
    pub seq: u64,
    /// Whether a running gate's writer appended it (else this process did).
    pub by_gate: bool,
}

/// Appends a review of decision `seq` by `by`, waiting up to `timeout` for a running gate.
pub fn append_review(
    dir: &Path,
    seq: u64,
    by: &str,
    verdict: ReviewVerdict,
    note: Option<String>,
    timeout: Duration,
) -> Result<Appended, ReviewError> {
    if by.trim().is_empty() {
        return Err(ReviewError::Usage("`--by` must name the reviewer".into()));
    }
    match record_at(dir, seq)? {
        Some(Record::Decision(_)) => {}
        Some(_) => {
            return Err(ReviewError::Usage(format!(
                "seq {seq} is not a decision record"
            )));
        }
        None => return Err(ReviewError::Usage(format!("seq {seq} is not in the log"))),
    }
    submit_review(dir, ReviewRequest::new(seq, by, verdict, note), timeout)
}

/// Appends, to the log in `dir`, a review of decision `seq` of another gate's log `gate` (the
/// auditor console over the central store). The caller has checked that the store holds
/// that gate's record `seq` and that it is a decision: this log cannot.
pub fn append_review_of_gate(
    dir: &Path,
    gate: &str,
    seq: u64,
    by: &str,
    verdict: ReviewVerdict,
    note: Option<String>,
    timeout: Duration,
) -> Result<Appended, ReviewError> {
    if by.trim().is_empty() {
        return Err(ReviewError::Usage("a review names the reviewer".into()));
    }
    let mut request = ReviewRequest::new(seq, by, verdict, note);
    request.target_gate = Some(gate.to_string());
    submit_review(dir, request, timeout)
}

fn submit_review(
    dir: &Path,
    request: ReviewRequest,
    timeout: Duration,
) -> Result<Appended, ReviewError> {
    let id = spool::submit(dir, &request).map_err(ReviewError::Spool)?;
    let (answer, by_gate) = wait_for_writer(dir, &id, timeout)?;
    match answer {
        Some(Answer::Done(done)) => {
            confirm(dir, done.seq, &request)?;
            Ok(Appended {
                seq: done.seq,
                by_gate,
            })
        }
        Some(Answer::Rejected(r)) => Err(ReviewError::Rejected(r.error)),
        None => Err(ReviewError::Pending {
            secs: timeout.as_secs(),
            path: spool::incoming_path(dir, &id),
        }),
    }
}

/// Has the spooled request `id` appended: by this process when it can take the writer lock,
/// else by the running gate (waiting up to `timeout`, and taking over when the gate stops).
/// Returns the writer's answer (none when the timeout passed) and whether the gate wrote it.
pub(crate) fn wait_for_writer(
    dir: &Path,
    id: &str,
    timeout: Duration,
) -> Result<(Option<Answer>, bool), ReviewError> {
    let mut by_gate = false;
    let answer = match write_spool_here(dir) {
        Ok(()) => spool::take_answer(dir, id).map_err(ReviewError::Spool)?,
        Err(AuditError::InUse(_)) => {
            by_gate = true;
            // Every second, check whether the gate stopped: then this process is the writer.
            let mut last_try = Instant::now();
            spool::wait_answer(dir, id, timeout, || {
                if last_try.elapsed() < Duration::from_secs(1) {
                    return Ok(());
                }
                last_try = Instant::now();
                match write_spool_here(dir) {
                    Ok(()) => {
                        by_gate = false;
                        Ok(())
                    }
                    Err(AuditError::InUse(_)) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .map_err(ReviewError::Spool)?
        }
        Err(e) => {
            // Nothing will append it: take the request back.
            let _ = spool::remove_request(dir, id);
            return Err(e.into());
        }
    };
    Ok((answer, by_gate))
}

/// Takes the writer lock, lets the writer append the spooled requests, and closes the log;
/// `InUse` when a gate holds the lock.
fn write_spool_here(dir: &Path) -> Result<(), AuditError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| AuditError::Unavailable(format!("cannot start the runtime: {e}")))?;
    let log = AuditLog::open_for_reviews(dir)?;
    runtime.block_on(log.close());
    Ok(())
}

/// The record with `seq`, reading the chain (checked) up to it.
fn record_at(dir: &Path, seq: u64) -> Result<Option<Record>, ReviewError> {
    let mut records = read_records(dir)?;
    while let Some(item) = records.next_ref() {
        let (_, record) = item?;
        if record.seq() == seq {
            return Ok(Some(record));
        }
        if record.seq() > seq {
            break;
        }
    }
    Ok(None)
}

/// Checks that the record the writer named is this review.
fn confirm(dir: &Path, seq: u64, request: &ReviewRequest) -> Result<(), ReviewError> {
    match record_at(dir, seq)? {
        Some(Record::Review(r))
            if r.target_seq == request.target_seq
                && r.target_gate == request.target_gate
                && r.by == request.by
                && r.verdict == request.verdict
                && r.note == request.note =>
        {
            Ok(())
        }
        _ => Err(ReviewError::Spool(format!(
            "the writer answered seq {seq}, but that record is not this review"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testutil::{decision, options, outcome};

    fn review(dir: &Path, seq: u64, by: &str, timeout_ms: u64) -> Result<Appended, ReviewError> {
        append_review(
            dir,
            seq,
            by,
            ReviewVerdict::Suspicious,
            Some("why".into()),
            Duration::from_millis(timeout_ms),
        )
    }

    #[tokio::test]
    async fn review_waits_for_the_writer_and_is_appended_once() {
        let dir = tempfile::tempdir().unwrap();
        // A writer that does not take reviews holds the lock: the request waits.
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a"), outcome("a")]).await.unwrap();
        let d = dir.path().to_path_buf();
        let waiting = tokio::task::spawn_blocking(move || review(&d, 1, "auditor-1", 300))
            .await
            .unwrap();
        let Err(ReviewError::Pending { path, .. }) = &waiting else {
            panic!("{waiting:?}");
        };
        assert!(path.exists(), "the request stays in the spool");
        log.close().await;

        // Without a gate, this process is the writer: the waiting request is appended first.
        let d = dir.path().to_path_buf();
        let done = tokio::task::spawn_blocking(move || review(&d, 1, "auditor-2", 300))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            done,
            Appended {
                seq: 4,
                by_gate: false
            }
        );
        let records: Vec<Record> = read_records(dir.path())
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(records.len(), 4);
        assert!(
            matches!(&records[2], Record::Review(r) if r.target_seq == 1 && r.by == "auditor-1" && r.verdict == ReviewVerdict::Suspicious)
        );
        assert!(matches!(&records[3], Record::Review(r) if r.by == "auditor-2"));
        assert!(!path.exists());

        // Only decisions can be reviewed.
        let d = dir.path().to_path_buf();
        let err = tokio::task::spawn_blocking(move || review(&d, 2, "auditor-1", 300))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err,
            ReviewError::Usage("seq 2 is not a decision record".into())
        );
    }

    #[tokio::test]
    async fn a_request_answered_before_a_crash_is_not_appended_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        log.close().await;
        // The writer wrote the answer but crashed before removing the request.
        let request = ReviewRequest::new(1, "auditor-1", ReviewVerdict::Ok, None);
        let id = spool::submit(dir.path(), &request).unwrap();
        std::fs::create_dir_all(dir.path().join("reviews/done")).unwrap();
        std::fs::write(
            dir.path().join("reviews/done").join(format!("{id}.json")),
            b"{\"seq\":2}",
        )
        .unwrap();
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || write_spool_here(&d))
            .await
            .unwrap()
            .unwrap();
        assert!(!spool::incoming_path(dir.path(), &id).exists());
        assert_eq!(crate::verify(dir.path()).unwrap().records, 1);
    }

    #[tokio::test]
    async fn a_request_for_a_seq_beyond_the_log_is_rejected_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        log.close().await;
        let request = ReviewRequest::new(5, "auditor-1", ReviewVerdict::Ok, None);
        let id = spool::submit(dir.path(), &request).unwrap();
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || write_spool_here(&d))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            spool::take_answer(dir.path(), &id).unwrap(),
            Some(Answer::Rejected(spool::Rejected {
                error: "seq 5 is not in the log (last seq 1)".into()
            }))
        );
        assert_eq!(crate::verify(dir.path()).unwrap().records, 1);
    }
}
