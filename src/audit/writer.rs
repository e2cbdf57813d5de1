//! The single writer: one std thread that owns `seq`, `prev` and the segment file.
//!
//! It group-commits: it takes everything queued (up to `max_batch` records, never splitting
//! the records of one append), frames the lines, writes them with one `write_all` and one
//! `fdatasync`, and only then answers every waiter of the batch.
//!
//! INVARIANT: a waiter gets `Ok` only after `sync_data` of the bytes holding its records
//! returned `Ok`. On a failed write or sync, every waiter not yet answered gets an error, the
//! file is cut back to the last durable length and `seq`/`prev` stay at the last durable
//! record; data whose sync failed is never synced again and reported as durable. If cutting
//! back fails too, the writer stays failed and re-opens and re-scans the segment before the
//! next batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use super::checkpoint::{Checkpoint, CheckpointOptions, write_checkpoint_file};
use super::format::{Chain, encode_body, frame_line, segment_file_name};
use super::merkle::{Frontier, Hash, leaf_hash};
use super::record::{CheckpointKind, CheckpointRecord, RecordBody};
use super::scan::{Tail, scan_segment};
use super::spool;

/// A segment file as the writer uses it; a test double can inject failures.
#[allow(clippy::len_without_is_empty)] // `len` is an I/O query, not a collection size
pub trait SegmentFile: Send {
    /// Appends all of `buf` at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// `fdatasync`: makes the written bytes durable.
    fn sync_data(&mut self) -> std::io::Result<()>;
    /// Cuts the file to `len` bytes and makes that durable (`fsync`).
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    /// The current length of the file.
    fn len(&mut self) -> std::io::Result<u64>;
}

/// Opens segment files and syncs the directory; [`FsStore`] is the real one.
pub trait SegmentStore: Send + Sync {
    /// Opens `path` for appending, creating it when absent.
    fn open_segment(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>>;
    /// Makes the directory entries of `dir` (a created segment) durable.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// Segment files on the local file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStore;

struct FsSegment(File);

impl SegmentFile for FsSegment {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
    fn len(&mut self) -> std::io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl SegmentStore for FsStore {
    fn open_segment(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        // Append mode: every write goes to the current end, also after a truncate.
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(Box::new(FsSegment(file)))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A request to the writer.
pub(crate) enum Command {
    Append(Append),
    Close(oneshot::Sender<()>),
    /// The checkpoint interval passed: write a checkpoint if records arrived since the last.
    Tick,
    /// Review requests wait in the spool: append them.
    Reviews,
}

/// The writer's checkpoint state (when a signing key is configured).
pub(crate) struct Checkpoints {
    pub opts: CheckpointOptions,
    /// The Merkle tree of every durable line.
    pub frontier: Frontier,
    /// Records (other than checkpoint records) since the last checkpoint record.
    pub since: u64,
}

/// Records of one caller, framed contiguously.
pub(crate) struct Append {
    /// The JSON objects of the record bodies.
    pub bodies: Vec<Vec<u8>>,
    pub reply: oneshot::Sender<Result<Vec<u64>, AuditError>>,
}

/// The writer's state; lives on the writer thread only.
pub(crate) struct Writer {
    dir: PathBuf,
    store: Arc<dyn SegmentStore>,
    segment_max_bytes: u64,
    max_batch: usize,
    segment: u64,
    path: PathBuf,
    /// `None` while failed: recovery must run before the next write.
    file: Option<Box<dyn SegmentFile>>,
    /// Bytes of the segment known durable.
    durable_len: u64,
    /// Chain state at the start of the current segment (for re-scans).
    segment_start: Chain,
    /// Chain state after the last durable record.
    chain: Chain,
    buf: Vec<u8>,
    checkpoints: Option<Checkpoints>,
    /// Leaf hashes of the lines in `buf` (only with checkpoints).
    leaves: Vec<Hash>,
    /// The exclusive lock on `writer.lock`, released before a close is acknowledged.
    lock: Option<File>,
    /// UTC day of the current segment's records (`None` while it is empty): a segment holds
    /// the records of one day, the next day starts a new segment.
    segment_day: Option<chrono::NaiveDate>,
    /// Whether this writer appends the review requests of the spool.
    reviews: bool,
}

impl Writer {
    /// Opens the segment found by the scan (creating it and syncing the directory if absent).
    pub(crate) fn new(
        dir: PathBuf,
        store: Arc<dyn SegmentStore>,
        segment_max_bytes: u64,
        max_batch: usize,
        tail: Tail,
    ) -> Result<Writer, AuditError> {
        let mut writer = Writer {
            dir,
            store,
            segment_max_bytes: segment_max_bytes.max(1),
            max_batch: max_batch.max(1),
            segment: tail.segment,
            path: tail.path,
            file: None,
            durable_len: tail.len,
            segment_start: tail.segment_start,
            chain: tail.chain,
            buf: Vec::with_capacity(1 << 20),
            checkpoints: None,
            leaves: Vec::new(),
            lock: None,
            segment_day: None,
            reviews: false,
        };
        if writer.durable_len > 0 {
            writer.segment_day = std::fs::metadata(&writer.path)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t).date_naive());
        }
        writer.file = Some(writer.open_current()?);
        Ok(writer)
    }

    /// Switches checkpoints on; `checkpoints.frontier` must cover every line already in the log.
    pub(crate) fn with_checkpoints(mut self, checkpoints: Checkpoints) -> Writer {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Appends the review requests of the spool: at start, and on each `Reviews` command.
    pub(crate) fn with_reviews(mut self, reviews: bool) -> Writer {
        self.reviews = reviews;
        self
    }

    /// Holds `lock` (the directory's writer lock) while the writer runs.
    pub(crate) fn with_lock(mut self, lock: File) -> Writer {
        self.lock = Some(lock);
        self
    }

    fn open_current(&self) -> Result<Box<dyn SegmentFile>, AuditError> {
        let existed = self.path.exists();
        let mut file = self
            .store
            .open_segment(&self.path)
            .map_err(|e| self.io_error("open", &e))?;
        if !existed {
            self.store
                .sync_dir(&self.dir)
                .map_err(|e| self.io_error("sync the directory of", &e))?;
        }
        let len = file.len().map_err(|e| self.io_error("read", &e))?;
        if len != self.durable_len {
            return Err(AuditError::Unavailable(format!(
                "segment `{}` is {len} bytes, expected {}",
                segment_file_name(self.segment),
                self.durable_len
            )));
        }
        Ok(file)
    }

    fn io_error(&self, what: &str, e: &std::io::Error) -> AuditError {
        AuditError::Unavailable(format!(
            "cannot {what} segment `{}`: {e}",
            segment_file_name(self.segment)
        ))
    }

    /// The writer loop: batches until the channel closes or a close command arrives.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<Append> = Vec::new();
        let mut carry: Option<Append> = None;
        // Requests spooled while no writer ran.
        self.append_reviews();
        loop {
            let mut close = None;
            let mut tick = false;
            let mut reviews = false;
            let mut records = 0usize;
            if let Some(append) = carry.take() {
                records += append.bodies.len();
                batch.push(append);
            } else {
                match rx.blocking_recv() {
                    Some(Command::Append(append)) => {
                        records += append.bodies.len();
                        batch.push(append);
                    }
                    Some(Command::Close(reply)) => close = Some(reply),
                    Some(Command::Tick) => tick = true,
                    Some(Command::Reviews) => reviews = true,
                    None => break,
                }
            }
            while close.is_none() && records < self.max_batch {
                match rx.try_recv() {
                    Ok(Command::Append(append)) => {
                        if records + append.bodies.len() > self.max_batch {
                            carry = Some(append);
                            break;
                        }
                        records += append.bodies.len();
                        batch.push(append);
                    }
                    Ok(Command::Close(reply)) => close = Some(reply),
                    Ok(Command::Tick) => tick = true,
                    Ok(Command::Reviews) => reviews = true,
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
            if reviews {
                self.append_reviews();
            }
            self.maybe_checkpoint(tick);
            if let Some(reply) = close {
                if let Some(append) = carry.take() {
                    batch.push(append);
                    self.commit(&mut batch);
                }
                self.finish(rx);
                // Release the directory for the next writer before acknowledging the close.
                drop(self.lock.take());
                let _ = reply.send(());
                return;
            }
        }
        if let Some(append) = carry.take() {
            batch.push(append);
            self.commit(&mut batch);
        }
        self.maybe_checkpoint(true);
    }

    /// Writes a signed checkpoint when checkpoints are on and `every` records (or, with
    /// `force`, any record) arrived since the last one: the note file first, then the
    /// `checkpoint` record that names it. A failure is logged and retried on the next batch;
    /// the records themselves are durable regardless.
    fn maybe_checkpoint(&mut self, force: bool) {
        let Some(cp) = self.checkpoints.as_ref() else {
            return;
        };
        if cp.since == 0 || (!force && cp.since < cp.opts.every) {
            return;
        }
        let checkpoint = Checkpoint {
            origin: cp.opts.signer.name().to_string(),
            tree_size: cp.frontier.size(),
            root: cp.frontier.root(),
        };
        let note = cp.opts.signer.sign(&checkpoint);
        let file = match write_checkpoint_file(&self.dir, &checkpoint, &note) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "audit log: cannot write checkpoint");
                return;
            }
        };
        let body = RecordBody::Checkpoint(CheckpointRecord {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind: CheckpointKind::Checkpoint,
            origin: checkpoint.origin.clone(),
            tree_size: checkpoint.tree_size,
            root: checkpoint.root_base64(),
            file,
        });
        let bodies = match encode_body(&body) {
            Ok(b) => vec![b],
            Err(e) => {
                tracing::error!(error = %e, "audit log: cannot encode checkpoint record");
                return;
            }
        };
        let (reply, mut answer) = oneshot::channel();
        self.commit(&mut vec![Append { bodies, reply }]);
        if let Ok(Ok(_)) = answer.try_recv()
            && let Some(cp) = self.checkpoints.as_mut()
        {
            // The checkpoint record is covered by the next checkpoint but does not call for one.
            cp.since = 0;
            tracing::debug!(
                tree_size = checkpoint.tree_size,
                "audit log: checkpoint written"
            );
        }
    }

    /// Appends the review requests waiting in the spool, oldest first, each as a `review`
    /// record through [`Writer::commit`]; answers each (done with its seq, or rejected) only
    /// after its record is durable. A request whose record could not be written stays for the
    /// next attempt. See [`super::spool`].
    fn append_reviews(&mut self) {
        if !self.reviews {
            return;
        }
        let pending = match spool::pending(&self.dir) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "audit log: cannot read the review spool");
                return;
            }
        };
        for p in pending {
            if p.already_done {
                // Appended before a crash that came before its removal: never append twice.
                if let Err(e) = spool::remove_request(&self.dir, &p.id) {
                    tracing::error!(error = %e, id = %p.id, "audit log: cannot remove a review request");
                }
                continue;
            }
            let request = match p
                .request
                .and_then(|r| r.check(self.chain.next_seq).map(|()| r))
            {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(id = %p.id, reason = %why, "audit log: review request rejected");
                    if let Err(e) = spool::finish_rejected(&self.dir, &p.id, &why) {
                        tracing::error!(error = %e, id = %p.id, "audit log: cannot reject a review request");
                    }
                    continue;
                }
            };
            let bodies = match encode_body(&RecordBody::Review(request.record())) {
                Ok(b) => vec![b],
                Err(e) => {
                    tracing::error!(error = %e, "audit log: cannot encode a review record");
                    continue;
                }
            };
            let (reply, mut answer) = oneshot::channel();
            self.commit(&mut vec![Append { bodies, reply }]);
            match answer.try_recv() {
                Ok(Ok(seqs)) => {
                    let seq = seqs.first().copied().unwrap_or_default();
                    tracing::info!(seq, target_seq = request.target_seq, by = %request.by, "audit log: review appended");
                    if let Err(e) = spool::finish_done(&self.dir, &p.id, seq) {
                        tracing::error!(error = %e, id = %p.id, "audit log: cannot answer a review request");
                    }
                }
                _ => {
                    tracing::error!(id = %p.id, "audit log: review not written, will retry");
                    return;
                }
            }
        }
    }

    /// After a close: refuses what was queued later and syncs once more.
    fn finish(&mut self, mut rx: mpsc::Receiver<Command>) {
        rx.close();
        while let Ok(command) = rx.try_recv() {
            match command {
                Command::Append(append) => {
                    let _ = append.reply.send(Err(AuditError::Closed));
                }
                Command::Close(reply) => {
                    let _ = reply.send(());
                }
                Command::Tick | Command::Reviews => {}
            }
        }
        self.maybe_checkpoint(true);
        if let Some(file) = self.file.as_mut()
            && let Err(e) = file.sync_data()
        {
            tracing::error!(error = %e, "audit log: final sync failed");
        }
    }

    /// Writes the batch durably and answers every waiter; empties `batch`.
    pub(crate) fn commit(&mut self, batch: &mut Vec<Append>) {
        if batch.is_empty() {
            return;
        }
        if self.file.is_none()
            && let Err(e) = self.recover()
        {
            tracing::error!(error = %e, "audit log: recovery failed, refusing batch");
            fail_all(batch.drain(..), &e);
            return;
        }
        let mut pending = batch.drain(..).peekable();
        while pending.peek().is_some() {
            let new_day = self.durable_len > 0
                && self
                    .segment_day
                    .is_some_and(|d| d != chrono::Utc::now().date_naive());
            if (self.durable_len >= self.segment_max_bytes || new_day)
                && let Err(e) = self.rotate()
            {
                tracing::error!(error = %e, "audit log: cannot start a new segment");
                fail_all(pending, &e);
                return;
            }
            // Frame the appends that go into this segment; INVARIANT: the records of one
            // append are contiguous and in one segment.
            self.buf.clear();
            self.leaves.clear();
            let with_leaves = self.checkpoints.is_some();
            let mut chain = self.chain;
            let mut chunk: Vec<(Append, u64)> = Vec::new();
            while let Some(append) = pending.next_if(|_| {
                chunk.is_empty()
                    || self.durable_len + (self.buf.len() as u64) < self.segment_max_bytes
            }) {
                let first_seq = chain.next_seq;
                for body in &append.bodies {
                    let start = self.buf.len();
                    frame_line(&mut self.buf, chain.next_seq, body, &chain.prev_hex);
                    chain.advance(&self.buf[start..]);
                    if with_leaves {
                        self.leaves.push(leaf_hash(&self.buf[start..]));
                    }
                    self.buf.push(b'\n');
                }
                chunk.push((append, first_seq));
            }
            let started = std::time::Instant::now();
            let written = self.write_durably();
            super::stats::WRITER_STATS
                .sync_seconds
                .observe_duration(started.elapsed());
            match written {
                Ok(()) => {
                    if self.segment_day.is_none() {
                        self.segment_day = Some(chrono::Utc::now().date_naive());
                    }
                    super::stats::WRITER_STATS
                        .batch_records
                        .observe(chunk.iter().map(|(a, _)| a.bodies.len()).sum::<usize>() as f64);
                    self.durable_len += self.buf.len() as u64;
                    self.chain = chain;
                    if let Some(cp) = self.checkpoints.as_mut() {
                        for leaf in &self.leaves {
                            cp.frontier.push(*leaf);
                        }
                        cp.since += self.leaves.len() as u64;
                    }
                    for (append, first_seq) in chunk {
                        let seqs = (first_seq..first_seq + append.bodies.len() as u64).collect();
                        let _ = append.reply.send(Ok(seqs));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log: write failed, records not durable");
                    self.roll_back();
                    fail_all(chunk.into_iter().map(|(a, _)| a), &e);
                    fail_all(pending, &e);
                    return;
                }
            }
        }
    }

    fn write_durably(&mut self) -> Result<(), AuditError> {
        let Some(file) = self.file.as_mut() else {
            return Err(AuditError::Unavailable(
                "audit writer is in a failed state".into(),
            ));
        };
        let result = file.write_all(&self.buf).and_then(|()| file.sync_data());
        result.map_err(|e| self.io_error("write", &e))
    }

    /// After a failed write or sync: cut the file back to the durable length. The file handle
    /// is dropped either way, so the next batch goes through a fresh open and re-scan.
    fn roll_back(&mut self) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        if let Err(e) = file.truncate(self.durable_len) {
            tracing::error!(error = %e, "audit log: cannot cut back a failed write");
        }
        drop(file);
        if let Err(e) = self.recover() {
            tracing::error!(error = %e, "audit log: recovery failed, will retry before the next batch");
        }
    }

    /// Re-opens the current segment, cuts it to the durable length, and re-scans it: it must
    /// end exactly at the last durable record.
    fn recover(&mut self) -> Result<(), AuditError> {
        self.file = None;
        let mut file = self
            .store
            .open_segment(&self.path)
            .map_err(|e| self.io_error("re-open", &e))?;
        let len = file.len().map_err(|e| self.io_error("read", &e))?;
        if len < self.durable_len {
            return Err(AuditError::Unavailable(format!(
                "segment `{}` is {len} bytes, shorter than the {} durable bytes",
                segment_file_name(self.segment),
                self.durable_len
            )));
        }
        if len != self.durable_len {
            file.truncate(self.durable_len)
                .map_err(|e| self.io_error("truncate", &e))?;
        }
        let (good_len, end, _) = scan_segment(&self.path, self.segment_start, false)?;
        if good_len != self.durable_len || end != self.chain {
            return Err(AuditError::Unavailable(format!(
                "segment `{}` does not end at the last durable record (seq {})",
                segment_file_name(self.segment),
                self.chain.next_seq.saturating_sub(1)
            )));
        }
        self.file = Some(file);
        tracing::info!(seq = self.chain.next_seq - 1, "audit log: writer recovered");
        Ok(())
    }

    /// Starts the next segment; the chain continues.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let segment = self.segment + 1;
        let path = self.dir.join(segment_file_name(segment));
        let mut file = self
            .store
            .open_segment(&path)
            .map_err(|e| self.io_error("create the segment after", &e))?;
        self.store
            .sync_dir(&self.dir)
            .map_err(|e| self.io_error("sync the directory after", &e))?;
        let len = file.len().map_err(|e| self.io_error("read", &e))?;
        if len != 0 {
            return Err(AuditError::Unavailable(format!(
                "new segment `{}` is not empty",
                segment_file_name(segment)
            )));
        }
        self.segment = segment;
        self.path = path;
        self.file = Some(file);
        self.durable_len = 0;
        self.segment_day = None;
        self.segment_start = self.chain;
        Ok(())
    }
}

fn fail_all(appends: impl Iterator<Item = Append>, error: &AuditError) {
    for append in appends {
        let _ = append.reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::audit::testutil::{FaultStore, Faults, decision, options, outcome};
    use crate::audit::{AuditLog, verify};

    fn segment_len(dir: &Path, n: u64) -> u64 {
        std::fs::metadata(dir.join(segment_file_name(n)))
            .map(|m| m.len())
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_get_gap_free_seqs_and_a_valid_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 30)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..20 {
                    let id = format!("req-{t}-{i}");
                    let bodies = match i % 3 {
                        0 => vec![decision(&id)],
                        1 => vec![decision(&id), decision(&id)],
                        _ => vec![decision(&id), outcome(&id), outcome(&id)],
                    };
                    let n = bodies.len();
                    let seqs = log.append(bodies).await.unwrap();
                    assert_eq!(seqs.len(), n);
                    got.push(seqs);
                }
                got
            }));
        }
        let mut all = BTreeSet::new();
        for task in tasks {
            for seqs in task.await.unwrap() {
                // The records of one append are contiguous.
                for pair in seqs.windows(2) {
                    assert_eq!(pair[1], pair[0] + 1);
                }
                for s in seqs {
                    assert!(all.insert(s), "seq {s} handed out twice");
                }
            }
        }
        log.close().await;
        let total = all.len() as u64;
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        let summary = verify(dir.path()).unwrap();
        assert_eq!(summary.records, total);
        assert_eq!(summary.segments, 1);
    }

    #[tokio::test]
    async fn reopen_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        assert_eq!(
            log.append(vec![decision("a"), outcome("a")]).await.unwrap(),
            vec![1, 2]
        );
        log.close().await;
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        assert_eq!(log.append(vec![decision("b")]).await.unwrap(), vec![3]);
        log.close().await;
        assert_eq!(verify(dir.path()).unwrap().records, 3);
    }

    #[tokio::test]
    async fn segment_rotation_keeps_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let max = 2000;
        let log = AuditLog::open(&options(dir.path(), max)).unwrap();
        for i in 0..20 {
            log.append(vec![decision(&format!("r{i}"))]).await.unwrap();
        }
        log.close().await;
        let summary = verify(dir.path()).unwrap();
        assert_eq!(summary.records, 20);
        assert!(summary.segments >= 3, "{summary:?}");
        for n in 1..summary.segments as u64 {
            assert!(
                segment_len(dir.path(), n) >= max,
                "segment {n} closed early"
            );
        }
        // Reopening continues in the last segment and the chain goes on.
        let log = AuditLog::open(&options(dir.path(), max)).unwrap();
        assert_eq!(log.append(vec![outcome("r19")]).await.unwrap(), vec![21]);
        log.close().await;
        assert_eq!(verify(dir.path()).unwrap().records, 21);
    }

    #[tokio::test]
    async fn one_batch_rotates_between_appends_not_within_one() {
        let dir = tempfile::tempdir().unwrap();
        let tail = crate::audit::scan::recover_dir(dir.path()).unwrap();
        let mut writer = Writer::new(
            dir.path().to_path_buf(),
            Arc::new(FsStore),
            1500,
            4096,
            tail,
        )
        .unwrap();
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for i in 0..4 {
            let (reply, answer) = oneshot::channel();
            let id = format!("r{i}");
            let bodies = vec![
                crate::audit::format::encode_body(&decision(&id)).unwrap(),
                crate::audit::format::encode_body(&outcome(&id)).unwrap(),
            ];
            batch.push(Append { bodies, reply });
            answers.push(answer);
        }
        writer.commit(&mut batch);
        let mut seqs = Vec::new();
        for answer in answers {
            seqs.push(answer.await.unwrap().unwrap());
        }
        assert_eq!(seqs, vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7, 8]]);
        let summary = verify(dir.path()).unwrap();
        assert!(summary.segments >= 2, "{summary:?}");
        // Every segment starts with a decision: the pairs were not split.
        for record in crate::audit::read_records(dir.path()).unwrap() {
            let (_, record) = record.unwrap();
            if record.seq() % 2 == 1 {
                assert!(matches!(record, crate::audit::Record::Decision(_)));
            }
        }
        for n in 1..=summary.segments as u64 {
            let text = std::fs::read_to_string(dir.path().join(segment_file_name(n))).unwrap();
            assert!(text.contains("\"kind\":\"decision\""));
            let first = text.lines().next().unwrap();
            assert!(
                first.contains("\"kind\":\"decision\""),
                "segment {n}: {first}"
            );
        }
    }

    fn fault_log(dir: &Path) -> (AuditLog, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let store = Arc::new(FaultStore {
            faults: faults.clone(),
        });
        let log = AuditLog::open_with_store(&options(dir, 1 << 20), store).unwrap();
        (log, faults)
    }

    #[tokio::test]
    async fn fsync_failure_fails_the_batch_and_the_next_batch_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        assert_eq!(
            log.append(vec![decision("a"), outcome("a")]).await.unwrap(),
            vec![1, 2]
        );
        let durable = segment_len(dir.path(), 1);

        faults.sync.store(1, Ordering::SeqCst);
        let err = log.append(vec![decision("b")]).await.unwrap_err();
        assert!(
            err.to_string().contains("injected fdatasync failure"),
            "{err}"
        );
        // The bytes whose sync failed were cut off before the waiter heard of the failure.
        assert_eq!(segment_len(dir.path(), 1), durable);

        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![3]);
        log.close().await;
        let records: Vec<_> = crate::audit::read_records(dir.path())
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].request_id(), "c");
    }

    #[tokio::test]
    async fn partial_write_failure_is_cut_back_and_retried_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("a")]).await.unwrap();
        let durable = segment_len(dir.path(), 1);
        faults.partial_write.store(1, Ordering::SeqCst);
        assert!(log.append(vec![decision("b"), outcome("b")]).await.is_err());
        assert_eq!(segment_len(dir.path(), 1), durable);
        assert_eq!(
            log.append(vec![decision("b"), outcome("b")]).await.unwrap(),
            vec![2, 3]
        );
        log.close().await;
        assert_eq!(verify(dir.path()).unwrap().records, 3);
    }

    #[tokio::test]
    async fn failed_cut_back_keeps_the_writer_failed_until_recovery_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("a")]).await.unwrap();
        let durable = segment_len(dir.path(), 1);

        // Sync fails, cutting back fails and the re-open fails: the writer is failed and the
        // unsynced bytes are still in the file.
        faults.sync.store(1, Ordering::SeqCst);
        faults.truncate.store(1, Ordering::SeqCst);
        faults.open.store(1, Ordering::SeqCst);
        assert!(log.append(vec![decision("b")]).await.is_err());
        assert!(segment_len(dir.path(), 1) > durable);

        // The next batch first re-attempts recovery; while that fails, appends fail.
        faults.open.store(1, Ordering::SeqCst);
        let err = log.append(vec![decision("c")]).await.unwrap_err();
        assert!(err.to_string().contains("injected open failure"), "{err}");

        // Once recovery works, the unsynced bytes are gone and seq continues without a gap.
        assert_eq!(log.append(vec![decision("d")]).await.unwrap(), vec![2]);
        log.close().await;
        let ids: Vec<String> = crate::audit::read_records(dir.path())
            .unwrap()
            .map(|r| r.unwrap().1.request_id().to_string())
            .collect();
        assert_eq!(ids, vec!["a", "d"]);
    }

    #[tokio::test]
    async fn failed_rotation_fails_the_batch_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let store = Arc::new(FaultStore {
            faults: faults.clone(),
        });
        let log = AuditLog::open_with_store(&options(dir.path(), 100), store).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        faults.open.store(1, Ordering::SeqCst);
        assert!(log.append(vec![decision("b")]).await.is_err());
        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![2]);
        log.close().await;
        let summary = verify(dir.path()).unwrap();
        assert_eq!((summary.records, summary.segments), (2, 2));
    }

    #[tokio::test]
    async fn a_new_day_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        log.close().await;
        // The segment was last written yesterday.
        let yesterday = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(segment_file_name(1)))
            .unwrap();
        file.set_modified(yesterday).unwrap();
        drop(file);
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        log.append(vec![decision("b")]).await.unwrap();
        log.append(vec![decision("c")]).await.unwrap();
        log.close().await;
        let summary = verify(dir.path()).unwrap();
        assert_eq!((summary.records, summary.segments), (3, 2));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(segment_file_name(2)))
                .unwrap()
                .lines()
                .count(),
            2
        );
    }
}
