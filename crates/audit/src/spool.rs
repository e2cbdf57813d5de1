//! The review spool: how `audit review` hands a review to the log's single writer, also while
//! a gate is running.
//!
//! The CLI never writes a segment itself. It drops a review request into
//! `DIR/reviews/incoming/<id>.json` (written to a hidden temporary file, fsynced, renamed into
//! place, and the directory fsynced, so the writer sees a whole request or none). The writer
//! that holds `writer.lock` — the running gate, or, when no gate runs, the CLI itself after
//! taking the lock — picks the request up, appends a `review` record through the ordinary
//! group commit (so it gets the next `seq` and `prev`), and only after that record is durable
//! writes `DIR/reviews/done/<id>.json` with the record's seq and removes the request. A request
//! that is not well-formed, or names a seq that is not yet in the log, is moved to
//! `DIR/reviews/rejected/<id>.json` with the reason. The CLI waits for either file.
//!
//! The auditor console hands its `access` records to the writer the same way
//! (`purpose-gate-access-request/1`, [`AccessRequest`]): one spool, one writer.
//!
//! INVARIANT: a request is appended at most once: its done file is written before the request
//! is removed, and a request whose done file exists is removed without appending it again
//! (a crash between the two steps).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use super::record::{AccessRecord, RecordBody, ReviewKind, ReviewRecord, ReviewVerdict};
use super::writer::Command;

/// The spool directory inside the audit directory.
pub const SPOOL_DIR: &str = "reviews";
const INCOMING: &str = "incoming";
const DONE: &str = "done";
const REJECTED: &str = "rejected";
/// The format name of a review request file.
pub const REQUEST_FORMAT: &str = "purpose-gate-review-request/1";
/// The format name of an access request file (the auditor console's).
pub const ACCESS_FORMAT: &str = "purpose-gate-access-request/1";
/// Largest request file the writer reads.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How often a writer that appends reviews looks into the spool.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Longest `by` and `note` accepted.
const MAX_BY: usize = 256;
const MAX_NOTE: usize = 8 * 1024;

/// A review request as written by `audit review`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// [`REQUEST_FORMAT`].
    pub format: String,
    /// The seq of the reviewed decision record.
    pub target_seq: u64,
    /// The gate whose log holds it, when not this log (a review over the central store; the
    /// console checked it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_gate: Option<String>,
    /// The reviewer.
    pub by: String,
    pub verdict: ReviewVerdict,
    #[serde(default)]
    pub note: Option<String>,
    /// When the auditor asked (RFC 3339 UTC); the record's `time` is when it was appended.
    pub requested: String,
}

impl ReviewRequest {
    /// A request for a review made now.
    pub fn new(target_seq: u64, by: &str, verdict: ReviewVerdict, note: Option<String>) -> Self {
        ReviewRequest {
            format: REQUEST_FORMAT.into(),
            target_seq,
            target_gate: None,
            by: by.to_string(),
            verdict,
            note,
            requested: now(),
        }
    }

    /// Checks the request against the log whose next seq is `next_seq`.
    pub(crate) fn check(&self, next_seq: u64) -> Result<(), String> {
        if self.format != REQUEST_FORMAT {
            return Err(format!("unknown request format `{}`", self.format));
        }
        if self.by.trim().is_empty() || self.by.len() > MAX_BY {
            return Err(format!(
                "`by` must name the reviewer in 1 to {MAX_BY} bytes"
            ));
        }
        if self.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
            return Err(format!("`note` is longer than {MAX_NOTE} bytes"));
        }
        if self
            .target_gate
            .as_ref()
            .is_some_and(|g| g.trim().is_empty() || g.len() > MAX_BY)
        {
            return Err(format!(
                "`target_gate` must name a gate in 1 to {MAX_BY} bytes"
            ));
        }
        // A record of another gate's log cannot be checked against this log's seqs.
        if self.target_seq == 0 || (self.target_gate.is_none() && self.target_seq >= next_seq) {
            return Err(format!(
                "seq {} is not in the log (last seq {})",
                self.target_seq,
                next_seq.saturating_sub(1)
            ));
        }
        Ok(())
    }

    /// The record body to append.
    pub(crate) fn record(&self) -> ReviewRecord {
        ReviewRecord {
            time: now(),
            kind: ReviewKind::Review,
            target_seq: self.target_seq,
            target_gate: self.target_gate.clone(),
            by: self.by.clone(),
            verdict: self.verdict,
            note: self.note.clone(),
        }
    }
}

/// An `access` record to append, as written by the auditor console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// [`ACCESS_FORMAT`].
    pub format: String,
    /// The record body; its `time` is replaced by the time it is appended.
    pub access: AccessRecord,
}

impl AccessRequest {
    /// A request for `access`.
    pub fn new(access: AccessRecord) -> Self {
        AccessRequest {
            format: ACCESS_FORMAT.into(),
            access,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.format != ACCESS_FORMAT {
            return Err(format!("unknown request format `{}`", self.format));
        }
        let a = &self.access;
        if a.by.trim().is_empty() || a.by.len() > MAX_BY {
            return Err(format!("`by` must name the auditor in 1 to {MAX_BY} bytes"));
        }
        if a.view.trim().is_empty() || a.view.len() > MAX_BY {
            return Err(format!("`view` must name the page in 1 to {MAX_BY} bytes"));
        }
        let size: usize = a.query.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_NOTE {
            return Err(format!("`query` is longer than {MAX_NOTE} bytes"));
        }
        Ok(())
    }
}

/// A request in the spool: a review (`audit review`, the console's review form) or an access
/// record (the console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpoolRequest {
    Review(ReviewRequest),
    Access(AccessRequest),
}

impl SpoolRequest {
    /// Checks the request against the log whose next seq is `next_seq`.
    pub(crate) fn check(&self, next_seq: u64) -> Result<(), String> {
        match self {
            SpoolRequest::Review(r) => r.check(next_seq),
            SpoolRequest::Access(a) => a.check(),
        }
    }

    /// The record body to append.
    pub(crate) fn record(&self) -> RecordBody {
        match self {
            SpoolRequest::Review(r) => RecordBody::Review(r.record()),
            SpoolRequest::Access(a) => {
                let mut access = a.access.clone();
                access.time = now();
                RecordBody::Access(access)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            SpoolRequest::Review(r) => format!("review of seq {} by `{}`", r.target_seq, r.by),
            SpoolRequest::Access(a) => {
                format!("access to `{}` by `{}`", a.access.view, a.access.by)
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What the writer wrote into `done/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The seq of the appended review record.
    pub seq: u64,
}

/// What the writer wrote into `rejected/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub error: String,
}

fn sub(dir: &Path, which: &str) -> PathBuf {
    dir.join(SPOOL_DIR).join(which)
}

fn file_name(id: &str) -> String {
    format!("{id}.json")
}

/// Writes `bytes` to `dir/name` atomically: a hidden temporary file, fsync, rename, fsync of
/// the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Drops a request (a [`ReviewRequest`], [`AccessRequest`] or [`SpoolRequest`]) into the
/// spool; returns its id.
pub fn submit<T: Serialize>(dir: &Path, request: &T) -> Result<String, String> {
    let id = uuid::Uuid::now_v7().to_string();
    let bytes = serde_json::to_vec_pretty(request)
        .map_err(|e| format!("cannot encode the review request: {e}"))?;
    let incoming = sub(dir, INCOMING);
    write_atomically(&incoming, &file_name(&id), &bytes)
        .map_err(|e| format!("cannot write into `{}`: {e}", incoming.display()))?;
    Ok(id)
}

/// The answer to a spooled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done(Done),
    Rejected(Rejected),
}

/// The writer's answer to request `id`, if there is one yet (the answer file is removed once
/// read).
pub fn take_answer(dir: &Path, id: &str) -> Result<Option<Answer>, String> {
    let read = |which: &str| -> Result<Option<Vec<u8>>, String> {
        let path = sub(dir, which).join(file_name(id));
        match std::fs::read(&path) {
            Ok(b) => {
                // The answer is read; a leftover file would only be clutter.
                let _ = std::fs::remove_file(&path);
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        }
    };
    if let Some(b) = read(DONE)? {
        return serde_json::from_slice(&b)
            .map(|d| Some(Answer::Done(d)))
            .map_err(|e| format!("review `{id}`: unreadable answer: {e}"));
    }
    if let Some(b) = read(REJECTED)? {
        return serde_json::from_slice(&b)
            .map(|r| Some(Answer::Rejected(r)))
            .map_err(|e| format!("review `{id}`: unreadable answer: {e}"));
    }
    Ok(None)
}

/// Waits up to `timeout` for the answer to `id`, calling `between` after each empty poll
/// (the CLI takes over the writer there when the gate has stopped).
pub fn wait_answer(
    dir: &Path,
    id: &str,
    timeout: Duration,
    mut between: impl FnMut() -> Result<(), String>,
) -> Result<Option<Answer>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(a) = take_answer(dir, id)? {
            return Ok(Some(a));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        between()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of request `id` while it waits.
pub fn incoming_path(dir: &Path, id: &str) -> PathBuf {
    sub(dir, INCOMING).join(file_name(id))
}

/// Whether any request waits (cheap: one directory read; for the poller).
pub(crate) fn has_incoming(dir: &Path) -> bool {
    std::fs::read_dir(sub(dir, INCOMING)).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| is_request_name(&e.file_name().to_string_lossy())))
    })
}

fn is_request_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json")
}

/// A waiting request as the writer reads it.
pub(crate) struct Pending {
    pub id: String,
    /// The request, or why it cannot be used.
    pub request: Result<SpoolRequest, String>,
    /// Appended before (its done file exists): only remove it.
    pub already_done: bool,
}

/// The waiting requests, oldest id first.
pub(crate) fn pending(dir: &Path) -> std::io::Result<Vec<Pending>> {
    let incoming = sub(dir, INCOMING);
    let entries = match std::fs::read_dir(&incoming) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if is_request_name(&name) {
            names.push(name);
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let id = name.trim_end_matches(".json").to_string();
        let path = incoming.join(&name);
        let request = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_REQUEST_BYTES => {
                Err(format!("request is larger than {MAX_REQUEST_BYTES} bytes"))
            }
            _ => std::fs::read(&path)
                .map_err(|e| format!("cannot read the request: {e}"))
                .and_then(|b| {
                    serde_json::from_slice::<SpoolRequest>(&b)
                        .map_err(|e| format!("not a review request: {e}"))
                }),
        };
        let already_done = sub(dir, DONE).join(&name).exists();
        out.push(Pending {
            id,
            request,
            already_done,
        });
    }
    Ok(out)
}

/// After the record of request `id` is durable: its answer, then the request removed.
pub(crate) fn finish_done(dir: &Path, id: &str, seq: u64) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(&Done { seq }).map_err(std::io::Error::other)?;
    write_atomically(&sub(dir, DONE), &file_name(id), &bytes)?;
    remove_request(dir, id)
}

/// Moves request `id` aside with the reason.
pub(crate) fn finish_rejected(dir: &Path, id: &str, error: &str) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(&Rejected {
        error: error.to_string(),
    })
    .map_err(std::io::Error::other)?;
    write_atomically(&sub(dir, REJECTED), &file_name(id), &bytes)?;
    remove_request(dir, id)
}

/// Appends the waiting requests, oldest first, through the writer behind `tx`, each as a
/// `review` record checked against the log when it is framed ([`ReviewRequest::check`] with
/// the next seq); answers each (done with its seq, or rejected) only after its record is
/// durable. A request whose record could not be written stays for the next attempt. Blocks
/// (one request at a time, so none is ever appended twice); call it outside the runtime.
pub(crate) fn append_pending(tx: &mpsc::Sender<Command>, dir: &Path) {
    let pending = match pending(dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "audit log: cannot read the review spool");
            return;
        }
    };
    for p in pending {
        if p.already_done {
            // Appended before a crash that came before its removal: never append twice.
            if let Err(e) = remove_request(dir, &p.id) {
                tracing::error!(error = %e, id = %p.id, "audit log: cannot remove a review request");
            }
            continue;
        }
        let request = match p.request {
            Ok(r) => r,
            Err(why) => {
                reject(dir, &p.id, &why);
                continue;
            }
        };
        let (reply, answer) = oneshot::channel();
        let command = Command::Review {
            request: request.clone(),
            reply,
        };
        if tx.blocking_send(command).is_err() {
            return;
        }
        match answer.blocking_recv() {
            Ok(Ok(seqs)) => {
                let seq = seqs.first().copied().unwrap_or_default();
                tracing::info!(seq, request = %request.describe(), "audit log: spooled record appended");
                if let Err(e) = finish_done(dir, &p.id, seq) {
                    tracing::error!(error = %e, id = %p.id, "audit log: cannot answer a review request");
                }
            }
            Ok(Err(AuditError::Rejected(why))) => reject(dir, &p.id, &why),
            _ => {
                tracing::error!(id = %p.id, "audit log: review not written, will retry");
                return;
            }
        }
    }
}

fn reject(dir: &Path, id: &str, why: &str) {
    tracing::warn!(id = %id, reason = %why, "audit log: review request rejected");
    if let Err(e) = finish_rejected(dir, id, why) {
        tracing::error!(error = %e, id = %id, "audit log: cannot reject a review request");
    }
}

/// Removes request `id` (and makes the removal durable).
pub(crate) fn remove_request(dir: &Path, id: &str) -> std::io::Result<()> {
    let incoming = sub(dir, INCOMING);
    match std::fs::remove_file(incoming.join(file_name(id))) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::open(&incoming)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn submitted_request_is_pending_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_incoming(dir.path()));
        let req = ReviewRequest::new(3, "auditor-1", ReviewVerdict::Suspicious, Some("n".into()));
        let id = submit(dir.path(), &req).unwrap();
        assert!(has_incoming(dir.path()));
        let p = pending(dir.path()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].id, id);
        assert_eq!(
            p[0].request.as_ref().unwrap(),
            &SpoolRequest::Review(req.clone())
        );
        assert!(!p[0].already_done);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("reviews/incoming"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);

        assert_eq!(take_answer(dir.path(), &id).unwrap(), None);
        finish_done(dir.path(), &id, 17).unwrap();
        assert!(!has_incoming(dir.path()));
        assert_eq!(
            take_answer(dir.path(), &id).unwrap(),
            Some(Answer::Done(Done { seq: 17 }))
        );
        // The answer is consumed.
        assert_eq!(take_answer(dir.path(), &id).unwrap(), None);
    }

    #[test]
    fn a_review_of_another_gates_record_is_not_bound_by_this_logs_seqs() {
        let mut req = ReviewRequest::new(500, "a", ReviewVerdict::Suspicious, None);
        req.target_gate = Some("gate-b".into());
        assert!(req.check(20).is_ok(), "seq 500 of gate-b, in a log of 19");
        let record = req.record();
        assert_eq!(record.target_gate.as_deref(), Some("gate-b"));
        assert_eq!(record.target_seq, 500);
        req.target_gate = Some(" ".into());
        assert!(req.check(20).unwrap_err().contains("`target_gate`"));
        req.target_gate = Some("gate-b".into());
        req.target_seq = 0;
        assert!(req.check(20).is_err());
        // A request file without the member (older `audit review`) still reads.
        let old: ReviewRequest = serde_json::from_str(
            r#"{"format":"purpose-gate-review-request/1","target_seq":3,"by":"a","verdict":"ok","requested":"2026-03-02T09:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(old.target_gate, None);
    }

    #[test]
    fn bad_requests_are_rejected_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let req = ReviewRequest::new(9, " ", ReviewVerdict::Ok, None);
        assert!(req.check(20).unwrap_err().contains("`by`"));
        let req = ReviewRequest::new(20, "a", ReviewVerdict::Ok, None);
        assert_eq!(
            req.check(20).unwrap_err(),
            "seq 20 is not in the log (last seq 19)"
        );
        assert!(
            ReviewRequest::new(19, "a", ReviewVerdict::Ok, None)
                .check(20)
                .is_ok()
        );

        let incoming = dir.path().join("reviews/incoming");
        std::fs::create_dir_all(&incoming).unwrap();
        std::fs::write(incoming.join("x.json"), b"{\"format\":1}").unwrap();
        let p = pending(dir.path()).unwrap();
        assert!(
            p[0].request
                .as_ref()
                .unwrap_err()
                .contains("not a review request")
        );
        finish_rejected(dir.path(), "x", "not a review request").unwrap();
        assert_eq!(
            take_answer(dir.path(), "x").unwrap(),
            Some(Answer::Rejected(Rejected {
                error: "not a review request".into()
            }))
        );
        assert!(pending(dir.path()).unwrap().is_empty());
    }
}
