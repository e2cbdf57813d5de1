//! Helpers for the audit unit tests: record bodies and a segment store that injects failures.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::AuditOptions;
use super::record::*;
use super::writer::{FsStore, SegmentFile, SegmentStore};

pub fn decision(request_id: &str) -> RecordBody {
    RecordBody::Decision(Box::new(DecisionRecord {
        time: "2026-03-01T09:15:00Z".into(),
        kind: DecisionKind::Decision,
        gate: "gate-1".into(),
        request_id: request_id.into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: None,
        client_span_id: None,
        principal: Some(Principal {
            id: "e123".into(),
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
        purpose: PurposeRecord::default(),
        fields: vec!["naam".into(), "verblijfplaats".into()],
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
        policy_version: None,
        inputs: None,
    }))
}

pub fn outcome(request_id: &str) -> RecordBody {
    RecordBody::Outcome(OutcomeRecord {
        release: Vec::new(),
        time: "2026-03-01T09:15:01Z".into(),
        kind: OutcomeKind::Outcome,
        request_id: request_id.into(),
        status: 200,
        upstream_ms: 7,
        disclosed: vec![ResourceRef {
            kind: "Person".into(),
            id: "999993653".into(),
        }],
        code: None,
        upstream_status: None,
        fsc_transaction_id: None,
    })
}

pub fn options(dir: &Path, segment_max_bytes: u64) -> AuditOptions {
    AuditOptions {
        dir: dir.to_path_buf(),
        segment_max_bytes,
        max_batch: 4096,
    }
}

/// How many of the next calls fail; each failure consumes one.
#[derive(Debug, Default)]
pub struct Faults {
    pub write: AtomicUsize,
    /// Writes half of the buffer, then fails.
    pub partial_write: AtomicUsize,
    pub sync: AtomicUsize,
    pub truncate: AtomicUsize,
    pub open: AtomicUsize,
    pub sync_dir: AtomicUsize,
    /// Panics inside `write_all` (a bug in the write path, as far as the writer can tell).
    pub panic_write: AtomicUsize,
    /// While set, the next `sync_data` waits until a message arrives (or the sender is dropped).
    pub hold_sync: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// `sync_data` calls started so far.
    pub syncs_started: AtomicUsize,
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected {what} failure"))
}

/// Real files, with failures injected on demand.
pub struct FaultStore {
    pub faults: Arc<Faults>,
}

struct FaultFile {
    inner: Box<dyn SegmentFile>,
    faults: Arc<Faults>,
}

impl SegmentFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if take(&self.faults.write) {
            return Err(injected("write"));
        }
        if take(&self.faults.panic_write) {
            panic!("injected panic in write");
        }
        if take(&self.faults.partial_write) {
            self.inner.write_all(&buf[..buf.len() / 2])?;
            return Err(injected("partial write"));
        }
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.faults.syncs_started.fetch_add(1, Ordering::SeqCst);
        let held = self
            .faults
            .hold_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(release) = held {
            let _ = release.recv();
        }
        if take(&self.faults.sync) {
            return Err(injected("fdatasync"));
        }
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if take(&self.faults.truncate) {
            return Err(injected("truncate"));
        }
        self.inner.truncate(len)
    }
    fn len(&mut self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl SegmentStore for FaultStore {
    fn open_segment(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        if take(&self.faults.open) {
            return Err(injected("open"));
        }
        Ok(Box::new(FaultFile {
            inner: FsStore.open_segment(path)?,
            faults: self.faults.clone(),
        }))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if take(&self.faults.sync_dir) {
            return Err(injected("directory sync"));
        }
        FsStore.sync_dir(dir)
    }
}
