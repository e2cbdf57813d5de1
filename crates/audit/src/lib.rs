//! The audit log: an append-only directory of JSON Lines segments with a SHA-256 hash chain
//! (format version 1, `docs/audit-log.md`).
//!
//! INVARIANT: `AuditLog::append` returns `Ok` only after the records' bytes were written and
//! `fdatasync` returned; the gate forwards a request only after that.
//!
//! Guarantees: `seq` is gap-free from 1 across segments, each line's `prev` is the SHA-256 of
//! the previous line's bytes, the records of one `append` are contiguous, a torn last line left
//! by a crash is cut off on open. Refuses: opening a log that is damaged anywhere but in its
//! last line, appending after `close`, reporting a record as written when its sync failed.
//!
//! This module knows nothing of HTTP. Auditor tooling reads the log through it
//! ([`read_records`], [`verify`]): one parser for writer, verifier and tools.

pub mod access;
pub mod checkpoint;
mod format;
pub mod integrity;
pub mod merkle;
pub mod pseudonym;
mod reader;
pub mod record;
pub mod review;
mod scan;
pub mod snapshots;
pub mod spool;
pub mod stats;
pub mod tap;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

pub use format::{Chain, LineFault, display_name, line_hash, parse_record, segment_file_name};

/// The segment files of an audit directory, ordered by number (other files are ignored).
pub fn list_segment_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    format::list_segments(dir)
}
pub use reader::{Line, LineReader, RecordIter, read_records, verify};
pub use record::*;
pub use writer::{FsStore, SegmentFile, SegmentStore};

use checkpoint::{CheckpointOptions, rebuild_frontier};
use writer::{Append, Checkpoints, Command, Writer};

/// Options of the audit writer.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Directory of the segment files; created when absent.
    pub dir: PathBuf,
    /// A new segment is started once the current one has reached this size.
    pub segment_max_bytes: u64,
    /// Most records written with one fdatasync (an append larger than this is one batch).
    pub max_batch: usize,
}

/// The default of [`AuditOptions::segment_max_bytes`] (64 MiB).
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The default of [`AuditOptions::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 4096;

impl AuditOptions {
    /// The options for `dir` with the default segment size and batch limit.
    pub fn new(dir: &Path) -> AuditOptions {
        AuditOptions {
            dir: dir.to_path_buf(),
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// The audit log could not be opened, written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// An I/O failure, or the writer is failed or gone.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A line of a segment breaks the format or the chain.
    #[error("audit log damaged: `{file}` line {line}: {detail}")]
    Damaged {
        file: String,
        line: u64,
        detail: String,
    },
    /// A segment as a whole is wrong (missing, empty in the middle, bad last line).
    #[error("audit log damaged: `{file}`: {detail}")]
    DamagedSegment { file: String, detail: String },
    /// `close` was called.
    #[error("audit log is closed")]
    Closed,
    /// Another writer (a running gate) holds the directory's `writer.lock`.
    #[error("audit log unavailable: {0}")]
    InUse(String),
    /// A spooled review request does not fit the log (e.g. it names a seq beyond it).
    #[error("review request rejected: {0}")]
    Rejected(String),
}

/// Handle to the single writer (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Command>,
    /// The writer's framer: appends are framed on the caller's thread when there is room.
    shared: Option<Arc<writer::Shared>>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl AuditLog {
    /// Opens the directory (creating it), recovers a torn last line, and starts the writer.
    pub fn open(opts: &AuditOptions) -> Result<AuditLog, AuditError> {
        AuditLog::open_with_store(opts, Arc::new(FsStore))
    }

    /// Like [`AuditLog::open`], writing through `store` (tests inject failing files with it).
    pub fn open_with_store(
        opts: &AuditOptions,
        store: Arc<dyn SegmentStore>,
    ) -> Result<AuditLog, AuditError> {
        AuditLog::open_full(opts, store, None, false)
    }

    /// Opens the log and appends the waiting review requests of the spool ([`spool`]), each
    /// answered once its record is durable: `audit review` when no gate runs. Blocks; call it
    /// outside the async runtime. Close the log to finish.
    pub fn open_for_reviews(dir: &Path) -> Result<AuditLog, AuditError> {
        let opts = AuditOptions::new(dir);
        let log = AuditLog::open_full(&opts, Arc::new(FsStore), None, false)?;
        spool::append_pending(&log.tx, dir);
        Ok(log)
    }

    /// Opens the log as a gate does: with signed checkpoints when given, and appending the
    /// review requests that `audit review` spools (the gate's `[audit]` section opens it so).
    pub fn open_for_gate(
        opts: &AuditOptions,
        checkpoints: Option<CheckpointOptions>,
    ) -> Result<AuditLog, AuditError> {
        // The gate's writer also appends the reviews that `audit review` spools.
        AuditLog::open_full(opts, Arc::new(FsStore), checkpoints, true)
    }

    /// Opens the log, writing signed checkpoints with `checkpoints` (see [`checkpoint`]).
    ///
    /// With checkpoints, opening reads every line of the log once to rebuild the Merkle tree.
    pub fn open_with_checkpoints(
        opts: &AuditOptions,
        checkpoints: CheckpointOptions,
    ) -> Result<AuditLog, AuditError> {
        AuditLog::open_full(opts, Arc::new(FsStore), Some(checkpoints), false)
    }

    /// Opens the log; with `reviews`, the writer appends the review requests of the spool
    /// (at start and whenever the spool poller finds one).
    fn open_full(
        opts: &AuditOptions,
        store: Arc<dyn SegmentStore>,
        checkpoints: Option<CheckpointOptions>,
        reviews: bool,
    ) -> Result<AuditLog, AuditError> {
        let dir = opts.dir.clone();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| {
                AuditError::Unavailable(format!("cannot create `{}`: {e}", dir.display()))
            })?;
            // Make the new directory's entry durable in its parent.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            store.sync_dir(parent).map_err(|e| {
                AuditError::Unavailable(format!("cannot sync `{}`: {e}", parent.display()))
            })?;
        }
        // One writer per directory: a second gate, or `audit review` while the gate runs,
        // would fork the chain. The lock is held by the writer thread until close.
        let lock = lock_dir(&dir)?;
        let tail = scan::recover_dir(&dir)?;
        if let Some((bytes, why)) = &tail.truncated {
            tracing::warn!(
                segment = %segment_file_name(tail.segment),
                bytes,
                reason = %why,
                "audit log: cut off a torn last line"
            );
        }
        let mut writer = Writer::new(
            dir.clone(),
            store,
            opts.segment_max_bytes,
            opts.max_batch,
            tail,
        )?
        .with_lock(lock);
        let interval = checkpoints.as_ref().map(|c| c.interval);
        if let Some(opts) = checkpoints {
            let (frontier, since) = rebuild_frontier(&dir)?;
            writer = writer.with_checkpoints(Checkpoints {
                opts,
                frontier,
                since,
            });
        }
        let (tx, rx) = mpsc::channel(opts.max_batch.clamp(1024, 65_536));
        if let Some(interval) = interval.filter(|i| !i.is_zero()) {
            // The ticker holds only a weak sender: it never keeps the writer alive.
            let weak = tx.downgrade();
            std::thread::Builder::new()
                .name("audit-checkpoint-tick".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(interval);
                        let Some(tx) = weak.upgrade() else { break };
                        if let Err(mpsc::error::TrySendError::Closed(_)) =
                            tx.try_send(Command::Tick)
                        {
                            break;
                        }
                    }
                })
                .map_err(|e| AuditError::Unavailable(format!("cannot start the ticker: {e}")))?;
        }
        let shared = writer.start(rx)?;
        if reviews {
            // A thread appends the spooled review requests (those that waited for a writer
            // first), then looks into `reviews/incoming/` every `POLL_INTERVAL`. It holds a weak
            // sender, so it never keeps the writer alive.
            let weak = tx.downgrade();
            let spool_dir = dir.clone();
            std::thread::Builder::new()
                .name("audit-review-spool".into())
                .spawn(move || {
                    loop {
                        let Some(tx) = weak.upgrade() else { break };
                        if tx.is_closed() {
                            break;
                        }
                        if spool::has_incoming(&spool_dir) {
                            spool::append_pending(&tx, &spool_dir);
                        }
                        drop(tx);
                        std::thread::sleep(spool::POLL_INTERVAL);
                    }
                })
                .map_err(|e| {
                    AuditError::Unavailable(format!("cannot start the review poller: {e}"))
                })?;
        }
        Ok(AuditLog {
            tx,
            shared: Some(shared),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Appends records as one group; resolves after fdatasync with their `seq`s.
    ///
    /// The records get consecutive `seq`s in the given order. If the future is dropped after
    /// the records were queued, they are still written (the caller just does not learn it).
    pub async fn append(&self, records: Vec<RecordBody>) -> Result<Vec<u64>, AuditError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let bodies = records
            .iter()
            .map(format::encode_body)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AuditError::Unavailable)?;
        let (reply, answer) = oneshot::channel();
        let mut append = Append::new(bodies, reply);
        if let Some(shared) = &self.shared {
            match shared.try_frame(append) {
                Ok(()) => return answer.await.map_err(|_| self.gone())?,
                Err(back) => append = back,
            }
        }
        self.tx
            .send(Command::Append(append))
            .await
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }

    /// The last seq made durable (0 for an empty log): what followers may read up to.
    pub fn durable_seq(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.durable_seq.load(Ordering::Acquire))
    }

    /// A follower's tap: each line made durable from now on, with its SHA-256, handed over in
    /// memory, up to `max_bytes` of lines not yet taken (the oldest are let go beyond that).
    /// `None` when the log has no writer.
    pub fn tap(&self, max_bytes: usize) -> Option<tap::Tap> {
        let shared = self.shared.as_ref()?;
        let tap = tap::Tap::new(max_bytes);
        shared.add_tap(tap.inner());
        Some(tap)
    }

    /// Whether appends can still succeed: not closed and the writer thread is running.
    pub fn is_alive(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    fn gone(&self) -> AuditError {
        if self.closed.load(Ordering::Acquire) {
            AuditError::Closed
        } else {
            AuditError::Unavailable("the audit writer has stopped".into())
        }
    }

    /// Flushes and stops the writer: queued records are written, later appends get an error.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The file whose exclusive lock marks the directory's single writer.
pub const WRITER_LOCK_FILE: &str = "writer.lock";

/// Takes the directory's writer lock without waiting.
fn lock_dir(dir: &Path) -> Result<std::fs::File, AuditError> {
    let path = dir.join(WRITER_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::Unavailable(format!("cannot open `{}`: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::InUse(format!(
            "`{}` is in use by another writer (a running gate holds `{WRITER_LOCK_FILE}`)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::Unavailable(format!(
            "cannot lock `{}`: {e}",
            path.display()
        ))),
    }
}

/// Result of a successful chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Records checked (the last seq).
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
}

/// The first place where the chain does not hold.
///
/// `seq` is the seq at which the chain breaks (the seq that line should carry), `None` when the
/// line is unreadable; `message` names the segment file and line and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VerifyFailure {
    pub seq: Option<u64>,
    pub message: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::testutil::{decision, options, outcome};
    use super::*;

    #[tokio::test]
    async fn open_creates_the_directory_and_the_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let audit_dir = dir.path().join("nested").join("audit");
        let log = AuditLog::open(&options(&audit_dir, 1 << 20)).unwrap();
        assert!(audit_dir.join("audit-000001.jsonl").is_file());
        assert_eq!(log.append(vec![decision("a")]).await.unwrap(), vec![1]);
        log.close().await;
        let text = std::fs::read_to_string(audit_dir.join("audit-000001.jsonl")).unwrap();
        assert!(text.starts_with("{\"seq\":1,\"time\":"), "{text}");
        assert!(
            text.ends_with(&format!(",\"prev\":\"{}\"}}\n", "0".repeat(64))),
            "{text}"
        );
    }

    #[tokio::test]
    async fn close_drains_queued_records_and_later_appends_fail() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(vec![outcome(&format!("r{i}"))]).await
            }));
        }
        log.close().await;
        let mut ok = 0u64;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e, AuditError::Closed),
            }
        }
        // Exactly the records that were acknowledged are in the log.
        assert_eq!(verify(dir.path()).unwrap().records, ok);
        assert_eq!(
            log.append(vec![decision("late")]).await.unwrap_err(),
            AuditError::Closed
        );
        // Closing twice does not hang.
        log.close().await;
    }

    #[tokio::test]
    async fn append_fails_instead_of_hanging_when_the_writer_is_gone() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let log = AuditLog {
            tx,
            shared: None,
            closed: Arc::new(AtomicBool::new(false)),
        };
        let err = log.append(vec![decision("a")]).await.unwrap_err();
        assert_eq!(
            err,
            AuditError::Unavailable("the audit writer has stopped".into())
        );
    }

    #[tokio::test]
    async fn empty_append_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        assert_eq!(log.append(Vec::new()).await.unwrap(), Vec::<u64>::new());
        log.close().await;
        assert_eq!(verify(dir.path()).unwrap().records, 0);
    }
}
