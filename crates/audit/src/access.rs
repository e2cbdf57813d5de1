//! The auditors are audited: the auditor console appends an `access` record (who saw which
//! personal data, on which page) before it answers the page.
//!
//! Guarantees: the record is appended by the log's single writer through the spool
//! ([`super::spool`]), exactly as a review is: by the running gate when one holds
//! `writer.lock`, else by this process after taking the lock. [`append_access`] returns `Ok`
//! only after the writer reported the record durable (its `done` answer is written after the
//! batch's fdatasync). Refuses: an empty auditor or page. A request no writer answered within
//! the timeout is taken back out of the spool when it still waits there (the page is not
//! shown, so it need not be recorded; a writer that picked it up in the meantime records it
//! anyway, which errs on the side of the record).

use std::path::Path;
use std::time::Duration;

use super::record::AccessRecord;
use super::review::{ReviewError, wait_for_writer};
use super::spool::{self, AccessRequest, Answer};

/// Appends `access` through the log's writer; the seq of the durable record.
pub fn append_access(
    dir: &Path,
    access: AccessRecord,
    timeout: Duration,
) -> Result<u64, ReviewError> {
    if access.by.trim().is_empty() || access.view.trim().is_empty() {
        return Err(ReviewError::Usage(
            "an access record names the auditor and the page".into(),
        ));
    }
    let id = spool::submit(dir, &AccessRequest::new(access)).map_err(ReviewError::Spool)?;
    let (answer, _by_gate) = wait_for_writer(dir, &id, timeout)?;
    match answer {
        Some(Answer::Done(done)) => Ok(done.seq),
        Some(Answer::Rejected(r)) => Err(ReviewError::Rejected(r.error)),
        None => {
            let path = spool::incoming_path(dir, &id);
            let _ = spool::remove_request(dir, &id);
            Err(ReviewError::Pending {
                secs: timeout.as_secs(),
                path,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::record::{AccessKind, Record};
    use crate::testutil::{decision, options};
    use crate::{AuditLog, read_records};

    fn access(by: &str) -> AccessRecord {
        AccessRecord {
            time: String::new(),
            kind: AccessKind::Access,
            console: "console-1".into(),
            by: by.into(),
            name: Some("A. Auditor".into()),
            roles: vec!["auditor".into()],
            view: "search".into(),
            query: [("bsn".to_string(), "999993653".to_string())].into(),
            client_ip: Some("127.0.0.1".into()),
        }
    }

    #[tokio::test]
    async fn access_is_appended_by_the_running_writer_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        // A gate's writer (it appends spooled requests) holds the lock.
        let log = AuditLog::open_for_gate(&crate::AuditOptions::new(dir.path()), None).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        let d = dir.path().to_path_buf();
        let seq = tokio::task::spawn_blocking(move || {
            append_access(&d, access("auditor-1"), Duration::from_secs(10))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(seq, 2);
        log.close().await;
        let records: Vec<Record> = read_records(dir.path())
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        let Record::Access(a) = &records[1] else {
            panic!("{records:?}");
        };
        assert_eq!(a.by, "auditor-1");
        assert_eq!(a.query.get("bsn").map(String::as_str), Some("999993653"));
        assert!(!a.time.is_empty());
    }

    #[tokio::test]
    async fn without_a_gate_the_console_is_the_writer_and_an_empty_auditor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        log.close().await;
        let d = dir.path().to_path_buf();
        let seq = tokio::task::spawn_blocking(move || {
            append_access(&d, access("auditor-2"), Duration::from_secs(1))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(seq, 2);
        assert_eq!(crate::verify(dir.path()).unwrap().records, 2);
        let d = dir.path().to_path_buf();
        let err = tokio::task::spawn_blocking(move || {
            append_access(&d, access(" "), Duration::from_secs(1))
        })
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, ReviewError::Usage(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_writer_that_does_not_answer_means_no_record_and_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A writer that does not take spooled requests holds the lock.
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        let d = dir.path().to_path_buf();
        let err = tokio::task::spawn_blocking(move || {
            append_access(&d, access("auditor-3"), Duration::from_millis(300))
        })
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, ReviewError::Pending { .. }), "{err:?}");
        log.close().await;
        assert!(
            !spool::has_incoming(dir.path()),
            "the request was taken back"
        );
    }
}
