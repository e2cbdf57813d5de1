//! The single writer: the framer (behind one lock) owns `seq` and `prev`, a sync thread owns the
//! segment file.
//!
//! It group-commits in a two-stage pipeline. Appends are framed at once: `seq`, the line bytes
//! and the SHA-256 of each line go into the open batch (at most `max_batch` records, never
//! splitting the records of one append, never spanning two segments), under the framer's lock:
//! on the appender's own thread while the queue has room ([`Shared::try_frame`]), else by the
//! sequencer thread (`audit-writer`), which takes them from the channel and waits for room, and
//! which also takes reviews, checkpoint ticks and the close. The syncer (`audit-sync`) takes the
//! oldest framed batch whenever it is idle, writes it with one `write_all` and one `fdatasync`,
//! and only then answers every waiter of the batch. So the next batch is framed and hashed, and
//! keeps growing, while the previous batch's `fdatasync` runs.
//!
//! INVARIANT: a waiter gets `Ok` only after `sync_data` of the bytes holding its records
//! returned `Ok`. On a failed write or sync, that batch's waiters get an error, the file is cut
//! back to the last durable length and `seq`/`prev` return to the last durable record; every
//! batch framed after the failed one (never written) is framed again from that durable state,
//! so no line chains to bytes that are not on disk. Data whose sync failed is never synced
//! again and reported as durable. If cutting back fails too, the syncer re-opens the segment and
//! checks that it ends exactly at the last durable line before it writes again; until that
//! works, every batch fails. A failure never ends the writer: the next batch tries again, so
//! the gate resumes by itself once the disk has room.
//!
//! A panic while a batch is written (there is no known source) is caught and handled like a
//! failed write. If a writer thread ends anyway, the channel closes: appends fail at once and
//! [`super::AuditLog::is_alive`] (behind `/readyz`) turns false.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use chrono::NaiveDate;
use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use super::checkpoint::{Checkpoint, CheckpointOptions, write_checkpoint_file};
use super::format::{Chain, encode_body, frame_line, line_hash, line_hash_hex, segment_file_name};
use super::merkle::{Frontier, Hash, leaf_hash};
use super::record::{CheckpointKind, CheckpointRecord, RecordBody};
use super::scan::{Tail, read_last_line};
use super::spool::SpoolRequest;
use super::tap::{DurableLines, TapInner};

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
    /// A spooled review request: checked against the log when it is framed (the reviewed seq
    /// must be in it), then appended like any append; refused with [`AuditError::Rejected`].
    Review {
        request: SpoolRequest,
        reply: oneshot::Sender<Result<Vec<u64>, AuditError>>,
    },
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
    /// A checkpoint record the writer made itself (not counted towards the next checkpoint).
    checkpoint: bool,
}

impl Append {
    pub(crate) fn new(
        bodies: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<Vec<u64>, AuditError>>,
    ) -> Append {
        Append {
            bodies,
            reply,
            checkpoint: false,
        }
    }
}

/// Framed lines for one segment, with the waiters they answer.
struct Batch {
    /// The segment the lines go to: the syncer's current one, or the next (rotate first).
    segment: u64,
    /// The framed lines, each ending in `\n`.
    buf: Vec<u8>,
    /// Each append with the `seq` of its first record.
    appends: Vec<(Append, u64)>,
    /// Leaf hashes of the lines (only with checkpoints).
    leaves: Vec<Hash>,
    /// SHA-256 of each line and where it ends in `buf` (only with a tap).
    hashes: Vec<[u8; 32]>,
    ends: Vec<usize>,
    records: usize,
    /// Chain state after the last line.
    chain: Chain,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            segment: 0,
            buf: Vec::new(),
            appends: Vec::new(),
            leaves: Vec::new(),
            hashes: Vec::new(),
            ends: Vec::new(),
            records: 0,
            chain: Chain::genesis(),
        }
    }
}

impl Batch {
    fn clear(&mut self) {
        self.buf.clear();
        self.appends.clear();
        self.leaves.clear();
        self.hashes.clear();
        self.ends.clear();
        self.records = 0;
    }
}

/// Where the last framed line went: the chain, segment and size after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    chain: Chain,
    segment: u64,
    /// Bytes of `segment` including its framed lines.
    len: u64,
    /// UTC day of the segment's first record (`None` while it is empty).
    day: Option<NaiveDate>,
}

/// Batches framed but not yet taken by the syncer; shared by the two threads.
struct Framer {
    queue: VecDeque<Batch>,
    queued_records: usize,
    /// After the last framed line (durable, in flight or queued).
    at: Position,
    segment_max_bytes: u64,
    max_batch: usize,
    with_leaves: bool,
    /// A follower has a tap: keep each line's hash and end for it.
    with_hashes: bool,
    /// Emptied batches, reused for their buffers.
    spare: Vec<Batch>,
    /// A checkpoint tick arrived.
    tick: bool,
    /// No more appends: the syncer drains the queue and ends.
    closing: bool,
    /// The syncer has ended: appends can no longer become durable.
    syncer_gone: bool,
    /// The syncer waits on `work` / the sequencer waits on `room`: only then is the condition
    /// variable signalled (a signal is a system call; the syncer is mostly in `fdatasync` and
    /// finds the next batch when it returns).
    syncer_waiting: bool,
    sequencer_waiting: bool,
}

impl Framer {
    /// Frames the records of `append` after the last framed line.
    fn frame(&mut self, append: Append, today: NaiveDate) {
        let at = &mut self.at;
        let new_day = at.len > 0 && at.day.is_some_and(|d| d != today);
        if at.len >= self.segment_max_bytes || new_day {
            // INVARIANT: the records of one append are contiguous and in one segment; a
            // segment is closed only between appends.
            at.segment += 1;
            at.len = 0;
            at.day = None;
        }
        let n = append.bodies.len();
        let fits = self
            .queue
            .back()
            .is_some_and(|b| b.segment == at.segment && b.records + n <= self.max_batch);
        if !fits {
            let mut batch = self.spare.pop().unwrap_or_default();
            batch.segment = at.segment;
            self.queue.push_back(batch);
        }
        let Some(batch) = self.queue.back_mut() else {
            return; // unreachable: a batch was just pushed
        };
        let before = batch.buf.len();
        let first_seq = at.chain.next_seq;
        for body in &append.bodies {
            let start = batch.buf.len();
            frame_line(&mut batch.buf, at.chain.next_seq, body, &at.chain.prev_hex);
            let line = batch.buf.get(start..).unwrap_or_default();
            if self.with_hashes {
                let hash = line_hash(line);
                at.chain.advance_hashed(&hash);
                batch.hashes.push(hash);
                batch.ends.push(batch.buf.len());
            } else {
                at.chain.advance(line);
            }
            if self.with_leaves {
                batch.leaves.push(leaf_hash(line));
            }
            batch.buf.push(b'\n');
        }
        batch.records += n;
        batch.chain = at.chain;
        batch.appends.push((append, first_seq));
        at.len += (batch.buf.len() - before) as u64;
        at.day.get_or_insert(today);
        self.queued_records += n;
    }

    /// After a failed batch: everything queued was framed on top of it, so it is framed again
    /// from `durable`, in the same order.
    fn reframe(&mut self, durable: Position, today: NaiveDate) {
        let queued = std::mem::take(&mut self.queue);
        self.at = durable;
        self.queued_records = 0;
        for mut batch in queued {
            for (append, _) in batch.appends.drain(..) {
                self.frame(append, today);
            }
            self.recycle(batch);
        }
    }

    fn take(&mut self) -> Option<Batch> {
        let batch = self.queue.pop_front()?;
        self.queued_records -= batch.records;
        Some(batch)
    }

    fn recycle(&mut self, mut batch: Batch) {
        batch.clear();
        if self.spare.len() < 4 {
            self.spare.push(batch);
        }
    }
}

/// The state both threads share, with its wake-ups.
pub(crate) struct Shared {
    framer: Mutex<Framer>,
    /// To the syncer: a batch was queued, a tick arrived, or closing.
    work: Condvar,
    /// To the sequencer: the queue shrank or the syncer ended.
    room: Condvar,
    /// The last durable seq (0 before the first record): followers (the store shipper) read
    /// only up to it.
    pub(crate) durable_seq: std::sync::atomic::AtomicU64,
    /// Followers that take durable lines in memory ([`crate::AuditLog::tap`]); a tap whose
    /// follower has gone is dropped at the next batch.
    taps: Mutex<Vec<std::sync::Weak<TapInner>>>,
}

impl Shared {
    /// A panic never happens while the lock is held (the code under it is panic-free), and
    /// if it did the queue would still be whole appends: so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Framer> {
        self.framer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands each line made durable from now on to `tap` as well. Lines framed before are not
    /// handed over (the follower reads them from the segments).
    pub(crate) fn add_tap(&self, tap: &Arc<TapInner>) {
        let mut framer = self.lock();
        framer.with_hashes = true;
        self.taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(tap));
        drop(framer);
    }

    /// Hands a durable batch to the taps (before its seq is published as durable).
    fn hand_to_taps(&self, batch: &Batch) {
        if batch.records == 0 || batch.hashes.len() != batch.records {
            return; // framed before a tap was added
        }
        let taps = self.taps.lock().unwrap_or_else(PoisonError::into_inner);
        let live: Vec<Arc<TapInner>> = taps.iter().filter_map(std::sync::Weak::upgrade).collect();
        let gone = live.len() != taps.len();
        drop(taps);
        if gone {
            // Locks in the order `add_tap` takes them.
            let mut framer = self.lock();
            let mut taps = self.taps.lock().unwrap_or_else(PoisonError::into_inner);
            taps.retain(|t| t.strong_count() > 0);
            // No follower left: no more hashes kept for one.
            framer.with_hashes = !taps.is_empty();
        }
        if live.is_empty() {
            return;
        }
        let lines = DurableLines::new(
            batch.chain.next_seq - batch.records as u64,
            bytes::Bytes::copy_from_slice(&batch.buf),
            batch.ends.clone(),
            batch.hashes.clone(),
        );
        for tap in &live {
            tap.push(lines.clone());
        }
    }

    /// Frames `append` on the caller's thread, as the sequencer would, when the writer is open
    /// and the queue has room; otherwise hands it back, and the caller sends it to the
    /// sequencer, which waits for room or answers with the error. Framing here saves waking
    /// the sequencer thread for every append (a context switch each).
    pub(crate) fn try_frame(&self, append: Append) -> Result<(), Append> {
        let mut framer = self.lock();
        // While the sequencer waits for room with appends from the channel, later appends
        // queue behind them in the channel too, so that none is overtaken indefinitely.
        if framer.closing
            || framer.syncer_gone
            || framer.sequencer_waiting
            || framer.queued_records >= framer.max_batch.saturating_mul(2)
        {
            return Err(append);
        }
        framer.frame(append, today());
        self.release_to_syncer(framer);
        Ok(())
    }

    /// Releases the lock after framing and signals the syncer if it waits for work.
    /// INVARIANT: the flag is read under the lock the syncer set it under before waiting, so a
    /// batch framed under `framer` is either seen by the syncer's next look or signalled.
    fn release_to_syncer(&self, framer: MutexGuard<'_, Framer>) {
        let wake = framer.syncer_waiting;
        drop(framer);
        if wake {
            self.work.notify_one();
        }
    }
}

/// The writer before it starts: [`Writer::start`] runs it on its two threads.
pub(crate) struct Writer {
    syncer: Syncer,
    max_batch: usize,
    /// The exclusive lock on `writer.lock`, released before a close is acknowledged.
    lock: Option<File>,
}

/// The sync stage's state; lives on the sync thread only.
struct Syncer {
    dir: PathBuf,
    store: Arc<dyn SegmentStore>,
    segment_max_bytes: u64,
    segment: u64,
    path: PathBuf,
    /// `None` while failed: recovery must run before the next write.
    file: Option<Box<dyn SegmentFile>>,
    /// Bytes of the segment known durable.
    durable_len: u64,
    /// Chain state at the start of the current segment.
    segment_start: Chain,
    /// Chain state after the last durable record.
    chain: Chain,
    /// UTC day of the current segment's records (`None` while it is empty): a segment holds
    /// the records of one day, the next day starts a new segment.
    segment_day: Option<NaiveDate>,
    checkpoints: Option<Checkpoints>,
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
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
        let mut syncer = Syncer {
            dir,
            store,
            segment_max_bytes: segment_max_bytes.max(1),
            segment: tail.segment,
            path: tail.path,
            file: None,
            durable_len: tail.len,
            segment_start: tail.segment_start,
            chain: tail.chain,
            segment_day: None,
            checkpoints: None,
        };
        if syncer.durable_len > 0 {
            syncer.segment_day = std::fs::metadata(&syncer.path)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t).date_naive());
        }
        syncer.file = Some(syncer.open_current()?);
        Ok(Writer {
            syncer,
            max_batch: max_batch.max(1),
            lock: None,
        })
    }

    /// Switches checkpoints on; `checkpoints.frontier` must cover every line already in the log.
    pub(crate) fn with_checkpoints(mut self, checkpoints: Checkpoints) -> Writer {
        self.syncer.checkpoints = Some(checkpoints);
        self
    }

    /// Holds `lock` (the directory's writer lock) while the writer runs.
    pub(crate) fn with_lock(mut self, lock: File) -> Writer {
        self.lock = Some(lock);
        self
    }

    /// Starts the sequencer and the sync thread; they run until the channel closes or a close
    /// command arrives.
    /// Starts the two threads; returns the state appenders frame into directly
    /// ([`Shared::try_frame`]).
    pub(crate) fn start(self, rx: mpsc::Receiver<Command>) -> Result<Arc<Shared>, AuditError> {
        let Writer {
            syncer,
            max_batch,
            lock,
        } = self;
        let framer = Framer {
            queue: VecDeque::new(),
            queued_records: 0,
            at: syncer.position(),
            segment_max_bytes: syncer.segment_max_bytes,
            max_batch,
            with_leaves: syncer.checkpoints.is_some(),
            with_hashes: false,
            spare: Vec::new(),
            tick: false,
            closing: false,
            syncer_gone: false,
            syncer_waiting: false,
            sequencer_waiting: false,
        };
        let shared = Arc::new(Shared {
            framer: Mutex::new(framer),
            work: Condvar::new(),
            room: Condvar::new(),
            durable_seq: std::sync::atomic::AtomicU64::new(syncer.chain.next_seq - 1),
            taps: Mutex::new(Vec::new()),
        });
        let for_syncer = Arc::clone(&shared);
        let sync_thread = std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || {
                let _gone = SyncerGone(&for_syncer);
                syncer.run(&for_syncer);
            })
            .map_err(|e| AuditError::Unavailable(format!("cannot start the writer: {e}")))?;
        let for_sequencer = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || sequence(&for_sequencer, rx, max_batch, sync_thread, lock));
        if let Err(e) = started {
            shared.lock().closing = true;
            shared.work.notify_all();
            return Err(AuditError::Unavailable(format!(
                "cannot start the writer: {e}"
            )));
        }
        Ok(shared)
    }
}

/// Marks the syncer as ended when its thread ends, however it ends.
struct SyncerGone<'a>(&'a Shared);

impl Drop for SyncerGone<'_> {
    fn drop(&mut self) {
        let mut framer = self.0.lock();
        framer.syncer_gone = true;
        let unanswered: Vec<Batch> = framer.queue.drain(..).collect();
        drop(framer);
        self.0.room.notify_all();
        if std::thread::panicking() {
            tracing::error!("audit log: the sync thread ended unexpectedly");
        }
        let error = AuditError::Unavailable("the audit writer has stopped".into());
        for batch in unanswered {
            fail_all(batch.appends.into_iter().map(|(a, _)| a), &error);
        }
    }
}

/// The sequencer loop: frames every append as it arrives, so that the syncer finds the next
/// batch ready when its `fdatasync` returns.
fn sequence(
    shared: &Shared,
    mut rx: mpsc::Receiver<Command>,
    max_batch: usize,
    sync_thread: std::thread::JoinHandle<()>,
    lock: Option<File>,
) {
    // Framed but not yet written: at most this many records wait (backpressure on appenders).
    let most_queued = max_batch.saturating_mul(2);
    let mut close = None;
    let mut stopped = false;
    'commands: while let Some(command) = rx.blocking_recv() {
        let mut next = Some(command);
        let mut framer = shared.lock();
        let mut framed = 0usize;
        while let Some(mut command) = next.take() {
            if let Command::Review { request, reply } = command {
                let body = request.check(framer.at.chain.next_seq).and_then(|()| {
                    encode_body(&request.record())
                        .map_err(|e| format!("cannot encode the record: {e}"))
                });
                match body {
                    Ok(body) => command = Command::Append(Append::new(vec![body], reply)),
                    Err(why) => {
                        let _ = reply.send(Err(AuditError::Rejected(why)));
                        if framed < max_batch {
                            next = rx.try_recv().ok();
                        }
                        continue;
                    }
                }
            }
            match command {
                Command::Append(append) => {
                    while framer.queued_records >= most_queued && !framer.syncer_gone {
                        shared.work.notify_one();
                        framer.sequencer_waiting = true;
                        framer = shared
                            .room
                            .wait(framer)
                            .unwrap_or_else(PoisonError::into_inner);
                        framer.sequencer_waiting = false;
                    }
                    if framer.syncer_gone {
                        let _ = append.reply.send(Err(AuditError::Unavailable(
                            "the audit writer has stopped".into(),
                        )));
                        stopped = true;
                        break 'commands;
                    }
                    framed += append.bodies.len();
                    framer.frame(append, today());
                }
                Command::Close(reply) => {
                    close = Some(reply);
                    break;
                }
                Command::Tick => framer.tick = true,
                // Made an append above.
                Command::Review { reply, .. } => {
                    let _ = reply.send(Err(AuditError::Rejected("not framed".into())));
                }
            }
            // Take what else is queued without waiting, a batch's worth per lock.
            if framed < max_batch {
                next = rx.try_recv().ok();
            }
        }
        shared.release_to_syncer(framer);
        if close.is_some() {
            break;
        }
    }
    // Closing (or every handle is gone): refuse what was queued later, let the syncer drain.
    rx.close();
    while let Ok(command) = rx.try_recv() {
        match command {
            Command::Append(append) => {
                let _ = append.reply.send(Err(if stopped {
                    AuditError::Unavailable("the audit writer has stopped".into())
                } else {
                    AuditError::Closed
                }));
            }
            Command::Close(reply) => {
                let _ = reply.send(());
            }
            Command::Review { reply, .. } => {
                let _ = reply.send(Err(AuditError::Closed));
            }
            Command::Tick => {}
        }
    }
    shared.lock().closing = true;
    shared.work.notify_all();
    let _ = sync_thread.join();
    // Release the directory for the next writer before acknowledging the close.
    drop(lock);
    if let Some(reply) = close {
        let _ = reply.send(());
    }
}

impl Syncer {
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

    /// Where the next framed line goes if nothing is framed after the durable ones.
    fn position(&self) -> Position {
        Position {
            chain: self.chain,
            segment: self.segment,
            len: self.durable_len,
            day: self.segment_day,
        }
    }

    /// The sync loop: takes the oldest framed batch, makes it durable, answers its waiters.
    fn run(mut self, shared: &Shared) {
        let mut closing_checkpoint = false;
        loop {
            let (batch, wake_sequencer) = {
                let mut framer = shared.lock();
                loop {
                    if let Some(batch) = framer.take() {
                        break (batch, framer.sequencer_waiting);
                    }
                    if framer.tick {
                        framer.tick = false;
                        drop(framer);
                        self.checkpoint(shared, true);
                        framer = shared.lock();
                        continue;
                    }
                    if framer.closing {
                        if closing_checkpoint {
                            return;
                        }
                        closing_checkpoint = true;
                        drop(framer);
                        self.checkpoint(shared, true);
                        framer = shared.lock();
                        continue;
                    }
                    framer.syncer_waiting = true;
                    framer = shared
                        .work
                        .wait(framer)
                        .unwrap_or_else(PoisonError::into_inner);
                    framer.syncer_waiting = false;
                }
            };
            if wake_sequencer {
                shared.room.notify_one();
            }
            let batch = self.commit(batch, shared);
            shared.lock().recycle(batch);
        }
    }

    /// Writes one batch durably and answers its waiters; returns the emptied batch.
    fn commit(&mut self, mut batch: Batch, shared: &Shared) -> Batch {
        let started = std::time::Instant::now();
        let written =
            catch_unwind(AssertUnwindSafe(|| self.write_durably(&batch))).unwrap_or_else(|_| {
                Err(AuditError::Unavailable(
                    "internal error while writing the audit log".into(),
                ))
            });
        super::stats::WRITER_STATS
            .sync_seconds
            .observe_duration(started.elapsed());
        match written {
            Ok(()) => {
                super::stats::WRITER_STATS
                    .batch_records
                    .observe(batch.records as f64);
                if self.segment_day.is_none() {
                    self.segment_day = Some(today());
                }
                self.durable_len += batch.buf.len() as u64;
                self.chain = batch.chain;
                // INVARIANT: handed to the taps and published only after `sync_data` returned
                // for these bytes; to the taps first (see `tap`).
                shared.hand_to_taps(&batch);
                shared.durable_seq.store(
                    batch.chain.next_seq - 1,
                    std::sync::atomic::Ordering::Release,
                );
                let own = batch.appends.iter().filter(|(a, _)| a.checkpoint).count();
                if let Some(cp) = self.checkpoints.as_mut() {
                    for leaf in &batch.leaves {
                        cp.frontier.push(*leaf);
                    }
                    // A checkpoint record is covered by the next checkpoint but does not call
                    // for one.
                    cp.since += (batch.leaves.len() - own) as u64;
                }
                // Before the answers: the checkpoint record is framed before anything a waiter
                // of this batch appends next (as with one writer thread).
                self.checkpoint(shared, false);
                for (append, first_seq) in batch.appends.drain(..) {
                    let seqs = (first_seq..first_seq + append.bodies.len() as u64).collect();
                    let _ = append.reply.send(Ok(seqs));
                }
            }
            Err(e) => {
                // Cut the file back first: the log line below must not come before it (a
                // log write can fail too when the disk is full).
                self.roll_back();
                shared.lock().reframe(self.position(), today());
                tracing::error!(error = %e, "audit log: write failed, records not durable");
                if let Some(cp) = self.checkpoints.as_mut()
                    && batch.appends.iter().any(|(a, _)| a.checkpoint)
                {
                    // The checkpoint record was lost: write one again after the next batch.
                    cp.since = cp.since.max(cp.opts.every);
                }
                fail_all(batch.appends.drain(..).map(|(a, _)| a), &e);
            }
        }
        batch
    }

    fn write_durably(&mut self, batch: &Batch) -> Result<(), AuditError> {
        if self.file.is_none() {
            self.recover()?;
        }
        if batch.segment != self.segment {
            if batch.segment != self.segment + 1 {
                return Err(AuditError::Unavailable(format!(
                    "batch for segment `{}` while writing `{}`",
                    segment_file_name(batch.segment),
                    segment_file_name(self.segment)
                )));
            }
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(AuditError::Unavailable(
                "audit writer is in a failed state".into(),
            ));
        };
        let result = file.write_all(&batch.buf).and_then(|()| file.sync_data());
        result.map_err(|e| self.io_error("write", &e))
    }

    /// After a failed write or sync: cut the file back to the durable length. The file handle
    /// is dropped either way, so the next batch goes through a fresh open and tail check.
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

    /// Re-opens the current segment, cuts it to the durable length, and checks that it ends
    /// exactly with the last durable line (its SHA-256 is the chain's `prev`).
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
        let ends_right = if self.durable_len == 0 {
            self.chain == self.segment_start
        } else {
            let (last, terminated) =
                read_last_line(&self.path).map_err(|e| self.io_error("read", &e))?;
            terminated && line_hash_hex(&last) == self.chain.prev_hex
        };
        if !ends_right {
            return Err(AuditError::Unavailable(format!(
                "segment `{}` does not end at the last durable record (seq {})",
                segment_file_name(self.segment),
                self.chain.next_seq.saturating_sub(1)
            )));
        }
        self.file = Some(file);
        tracing::info!(
            seq = self.chain.next_seq.saturating_sub(1),
            "audit log: writer recovered"
        );
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

    /// Writes a signed checkpoint when checkpoints are on and `every` records (or, with
    /// `force`, any record) became durable since the last one: the note file (over the durable
    /// lines) first, then the `checkpoint` record that names it, framed after whatever is
    /// queued. A failure is logged and retried later; the records themselves are durable
    /// regardless.
    fn checkpoint(&mut self, shared: &Shared, force: bool) {
        let Some(cp) = self.checkpoints.as_mut() else {
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
        cp.since = 0;
        let (reply, _) = oneshot::channel();
        shared.lock().frame(
            Append {
                bodies,
                reply,
                checkpoint: true,
            },
            today(),
        );
        tracing::debug!(
            tree_size = checkpoint.tree_size,
            "audit log: checkpoint framed"
        );
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
    use crate::testutil::{FaultStore, Faults, decision, options, outcome};
    use crate::{AuditLog, verify};

    fn segment_len(dir: &Path, n: u64) -> u64 {
        std::fs::metadata(dir.join(segment_file_name(n)))
            .map(|m| m.len())
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_queue_holds_appenders_back_and_loses_no_append() {
        // max_batch 1: at most two records wait framed, so the sequencer keeps waiting for
        // room and the syncer keeps signalling it; a lost signal would stall (the timeout
        // turns that into a failure).
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), 1 << 30);
        opts.max_batch = 1;
        let log = AuditLog::open(&opts).unwrap();
        let run = async {
            let mut tasks = Vec::new();
            for t in 0..32 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..25 {
                        let id = format!("req-{t}-{i}");
                        log.append(vec![decision(&id)]).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(120), run)
            .await
            .expect("appenders stalled");
        log.close().await;
        assert_eq!(verify(dir.path()).unwrap().records, 32 * 25);
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

    fn framer(segment_max_bytes: u64, max_batch: usize) -> Framer {
        Framer {
            queue: VecDeque::new(),
            queued_records: 0,
            at: Position {
                chain: Chain::genesis(),
                segment: 1,
                len: 0,
                day: None,
            },
            segment_max_bytes,
            max_batch,
            with_leaves: false,
            with_hashes: false,
            spare: Vec::new(),
            tick: false,
            closing: false,
            syncer_gone: false,
            syncer_waiting: false,
            sequencer_waiting: false,
        }
    }

    /// An append of a decision and an outcome of `id`, with the receiver of its answer.
    fn pair(id: &str) -> (Append, oneshot::Receiver<Result<Vec<u64>, AuditError>>) {
        let (reply, answer) = oneshot::channel();
        let bodies = vec![
            encode_body(&decision(id)).unwrap(),
            encode_body(&outcome(id)).unwrap(),
        ];
        (Append::new(bodies, reply), answer)
    }

    /// The lines of a batch, each checked against the chain from `chain`.
    fn check_lines(batch: &Batch, chain: &mut Chain) -> Vec<u64> {
        let mut seqs = Vec::new();
        for line in batch.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            seqs.push(chain.check(line).unwrap().seq());
        }
        seqs
    }

    #[test]
    fn a_segment_is_closed_between_appends_never_within_one() {
        let today = today();
        let mut f = framer(1500, 4096);
        for i in 0..4 {
            f.frame(pair(&format!("r{i}")).0, today);
        }
        let mut chain = Chain::genesis();
        let mut segments = Vec::new();
        while let Some(batch) = f.take() {
            // Each batch is one segment and starts with a decision: the pairs were not split.
            let seqs = check_lines(&batch, &mut chain);
            assert_eq!(seqs.first().map(|s| s % 2), Some(1), "{seqs:?}");
            assert_eq!(seqs.len() % 2, 0);
            segments.push(batch.segment);
        }
        assert!(segments.len() >= 2, "{segments:?}");
        assert!(
            segments.windows(2).all(|w| w[1] == w[0] + 1),
            "{segments:?}"
        );
        assert_eq!(chain.next_seq, 9);
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_records_but_an_append_is_never_split() {
        let today = today();
        let mut f = framer(1 << 30, 3);
        for i in 0..3 {
            f.frame(pair(&format!("r{i}")).0, today);
        }
        let sizes: Vec<usize> = f.queue.iter().map(|b| b.records).collect();
        assert_eq!(sizes, vec![2, 2, 2]);
        let mut f = framer(1 << 30, 4);
        for i in 0..3 {
            f.frame(pair(&format!("r{i}")).0, today);
        }
        let sizes: Vec<usize> = f.queue.iter().map(|b| b.records).collect();
        assert_eq!(sizes, vec![4, 2]);
        assert_eq!(f.queued_records, 6);
    }

    #[test]
    fn batches_framed_after_a_failed_one_are_framed_again_from_the_durable_state() {
        let today = today();
        let mut f = framer(1 << 30, 2);
        let durable = f.at;
        let (a, _) = pair("a");
        let (b, answer_b) = pair("b");
        let (c, _) = pair("c");
        f.frame(a, today);
        f.frame(b, today);
        f.frame(c, today);
        // The syncer takes "a"; "b" and "c" were framed on top of it (seqs 3..=6).
        let failed = f.take().unwrap();
        assert_eq!(failed.appends[0].1, 1);
        assert_eq!(f.queue.front().unwrap().appends[0].1, 3);
        // Its write fails: the queue is framed again from the durable state.
        f.reframe(durable, today);
        assert_eq!(f.queued_records, 4);
        let mut chain = Chain::genesis();
        let first = f.take().unwrap();
        assert_eq!(first.appends[0].1, 1);
        assert_eq!(check_lines(&first, &mut chain), vec![1, 2]);
        let second = f.take().unwrap();
        assert_eq!(check_lines(&second, &mut chain), vec![3, 4]);
        assert_eq!(chain, f.at.chain);
        assert_eq!(
            String::from_utf8_lossy(&first.buf).matches("\"b\"").count(),
            2
        );
        // The waiter of "b" is still waiting, for the new framing.
        drop(answer_b);
    }

    #[tokio::test]
    async fn a_segment_of_exactly_max_bytes_is_closed_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        // The length of one line of this record (seq 1 and seq 2 frame to the same length).
        let body = encode_body(&decision("same-size")).unwrap();
        let mut line = Vec::new();
        frame_line(&mut line, 1, &body, &Chain::genesis().prev_hex);
        let line_len = line.len() as u64 + 1;
        for (max, segments) in [(2 * line_len, 2), (2 * line_len + 1, 1)] {
            let sub = dir.path().join(max.to_string());
            let log = AuditLog::open(&options(&sub, max)).unwrap();
            log.append(vec![decision("same-size")]).await.unwrap();
            log.append(vec![decision("same-size")]).await.unwrap();
            assert_eq!(segment_len(&sub, 1), 2 * line_len);
            log.append(vec![decision("same-size")]).await.unwrap();
            log.close().await;
            let summary = verify(&sub).unwrap();
            assert_eq!(
                (summary.records, summary.segments),
                (3, segments),
                "max {max}"
            );
            let first = if segments == 2 { 2 } else { 3 };
            assert_eq!(segment_len(&sub, 1), first * line_len, "max {max}");
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
        let records: Vec<_> = crate::read_records(dir.path())
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].request_id(), "c");
    }

    #[tokio::test]
    async fn a_tap_gets_exactly_the_durable_lines_with_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("before")]).await.unwrap();
        let tap = log.tap(1 << 20).unwrap();
        log.append(vec![decision("a"), outcome("a")]).await.unwrap();
        faults.sync.store(1, Ordering::SeqCst);
        assert!(log.append(vec![decision("lost")]).await.is_err());
        log.append(vec![decision("b")]).await.unwrap();
        log.close().await;

        let handed = tap.take();
        let lines: Vec<(u64, bytes::Bytes, [u8; 32])> = handed
            .iter()
            .flat_map(|l| {
                (l.first_seq()..l.end_seq()).map(|seq| {
                    let (line, hash) = l.line(seq).unwrap();
                    (seq, line, hash)
                })
            })
            .collect();
        let on_disk = std::fs::read(dir.path().join(segment_file_name(1))).unwrap();
        let on_disk: Vec<&[u8]> = on_disk.split(|b| *b == b'\n').collect();
        // Seq 1 was framed before the tap; the failed batch never became durable.
        assert_eq!(
            lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            [2, 3, 4],
            "{lines:?}"
        );
        for (seq, line, hash) in &lines {
            let idx = usize::try_from(*seq - 1).unwrap();
            assert_eq!(&line[..], on_disk[idx], "seq {seq}");
            assert_eq!(*hash, line_hash(on_disk[idx]), "seq {seq}");
        }
        assert!(String::from_utf8_lossy(&lines[2].1).contains("\"b\""));
        assert_eq!(tap.let_go(), 0);
    }

    #[tokio::test]
    async fn a_tap_whose_follower_has_gone_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&options(dir.path(), 1 << 20)).unwrap();
        let tap = log.tap(1 << 20).unwrap();
        log.append(vec![decision("a")]).await.unwrap();
        assert_eq!(tap.take().len(), 1);
        drop(tap);
        // The next batch finds the follower gone, and the framer stops keeping hashes.
        log.append(vec![decision("b")]).await.unwrap();
        log.append(vec![decision("c")]).await.unwrap();
        assert!(!log.shared.as_ref().unwrap().lock().with_hashes);
        // A new follower gets what is made durable after it came.
        let again = log.tap(1 << 20).unwrap();
        log.append(vec![decision("d")]).await.unwrap();
        let got = again.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].first_seq(), 4);
        log.close().await;
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
        let ids: Vec<String> = crate::read_records(dir.path())
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

    fn fault_log_with(dir: &Path, segment_max_bytes: u64) -> (AuditLog, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let store = Arc::new(FaultStore {
            faults: faults.clone(),
        });
        let log = AuditLog::open_with_store(&options(dir, segment_max_bytes), store).unwrap();
        (log, faults)
    }

    fn request_ids(dir: &Path) -> Vec<String> {
        crate::read_records(dir)
            .unwrap()
            .map(|r| r.unwrap().1.request_id().to_string())
            .collect()
    }

    #[tokio::test]
    async fn failed_write_fails_the_batch_and_the_next_batch_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("a")]).await.unwrap();
        faults.write.store(1, Ordering::SeqCst);
        let err = log.append(vec![decision("b")]).await.unwrap_err();
        assert!(err.to_string().contains("injected write failure"), "{err}");
        assert!(log.is_alive());
        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![2]);
        log.close().await;
        assert_eq!(request_ids(dir.path()), vec!["a", "c"]);
    }

    #[tokio::test]
    async fn failed_directory_sync_on_rotation_fails_the_batch_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log_with(dir.path(), 100);
        log.append(vec![decision("a")]).await.unwrap();
        faults.sync_dir.store(1, Ordering::SeqCst);
        let err = log.append(vec![decision("b")]).await.unwrap_err();
        assert!(err.to_string().contains("injected directory sync"), "{err}");
        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![2]);
        log.close().await;
        let summary = verify(dir.path()).unwrap();
        assert_eq!((summary.records, summary.segments), (2, 2));
        assert_eq!(request_ids(dir.path()), vec!["a", "c"]);
    }

    #[tokio::test]
    async fn failed_sync_in_a_new_segment_cuts_it_back_to_empty_and_continues_there() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log_with(dir.path(), 100);
        log.append(vec![decision("a")]).await.unwrap();
        faults.sync.store(1, Ordering::SeqCst);
        assert!(log.append(vec![decision("b")]).await.is_err());
        assert_eq!(segment_len(dir.path(), 2), 0);
        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![2]);
        log.close().await;
        let summary = verify(dir.path()).unwrap();
        assert_eq!((summary.records, summary.segments), (2, 2));
    }

    #[tokio::test]
    async fn failed_truncate_after_a_failed_sync_is_repaired_by_the_re_open() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("a")]).await.unwrap();
        let durable = segment_len(dir.path(), 1);
        faults.sync.store(1, Ordering::SeqCst);
        faults.truncate.store(1, Ordering::SeqCst);
        assert!(log.append(vec![decision("b")]).await.is_err());
        // The re-open cut the unsynced bytes off.
        assert_eq!(segment_len(dir.path(), 1), durable);
        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![2]);
        log.close().await;
        assert_eq!(request_ids(dir.path()), vec!["a", "c"]);
    }

    #[tokio::test]
    async fn panic_while_writing_fails_only_that_batch_and_the_writer_keeps_running() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("a")]).await.unwrap();
        faults.panic_write.store(1, Ordering::SeqCst);
        let err = log.append(vec![decision("b")]).await.unwrap_err();
        assert!(err.to_string().contains("internal error"), "{err}");
        assert!(log.is_alive(), "the writer thread ended");
        assert_eq!(log.append(vec![decision("c")]).await.unwrap(), vec![2]);
        log.close().await;
        assert_eq!(request_ids(dir.path()), vec!["a", "c"]);
    }

    #[tokio::test]
    async fn many_failures_in_a_row_never_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log_with(dir.path(), 4000);
        let mut ok = Vec::new();
        for i in 0..60 {
            // Every step fails in turn: write, partial write, sync, truncate + re-open,
            // rotation (open, directory sync) and a panic.
            match i % 8 {
                0 => faults.write.store(1, Ordering::SeqCst),
                1 => faults.partial_write.store(1, Ordering::SeqCst),
                2 => faults.sync.store(1, Ordering::SeqCst),
                3 => {
                    faults.sync.store(1, Ordering::SeqCst);
                    faults.truncate.store(1, Ordering::SeqCst);
                    faults.open.store(1, Ordering::SeqCst);
                }
                4 => faults.sync_dir.store(1, Ordering::SeqCst),
                5 => faults.panic_write.store(1, Ordering::SeqCst),
                _ => {}
            }
            let id = format!("r{i}");
            if log.append(vec![decision(&id), outcome(&id)]).await.is_ok() {
                ok.push(id);
            }
            assert!(log.is_alive(), "append {i}: the writer stopped");
        }
        // Whatever is left over is used up; then the writer writes again.
        for counter in [&faults.open, &faults.sync_dir] {
            counter.store(0, Ordering::SeqCst);
        }
        log.append(vec![decision("last")]).await.unwrap();
        ok.push("last".into());
        log.close().await;
        let summary = verify(dir.path()).unwrap();
        assert!(summary.segments > 3, "{summary:?}");
        let mut expected = Vec::new();
        for id in &ok {
            expected.push(id.clone());
            if id != "last" {
                expected.push(id.clone());
            }
        }
        assert_eq!(request_ids(dir.path()), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_failure_while_later_batches_are_framed_reframes_them_from_the_durable_state() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = fault_log(dir.path());
        log.append(vec![decision("a")]).await.unwrap();
        let durable = segment_len(dir.path(), 1);
        let started = faults.syncs_started.load(Ordering::SeqCst);

        // "b" is written and its fdatasync held; "c" and "d" are framed behind it meanwhile.
        let (release, held) = std::sync::mpsc::channel();
        *faults.hold_sync.lock().unwrap() = Some(held);
        faults.sync.store(1, Ordering::SeqCst);
        let b = tokio::spawn({
            let log = log.clone();
            async move { log.append(vec![decision("b"), outcome("b")]).await }
        });
        while faults.syncs_started.load(Ordering::SeqCst) == started {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let later: Vec<_> = ["c", "d"]
            .into_iter()
            .map(|id| {
                let log = log.clone();
                tokio::spawn(async move { log.append(vec![decision(id), outcome(id)]).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        release.send(()).unwrap();

        let err = b.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("injected fdatasync"), "{err}");
        let mut seqs = Vec::new();
        for task in later {
            seqs.extend(task.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        // They continue right after "a": nothing chains to the failed batch.
        assert_eq!(seqs, vec![2, 3, 4, 5]);
        log.close().await;
        assert!(segment_len(dir.path(), 1) > durable);
        assert_eq!(verify(dir.path()).unwrap().records, 5);
        let ids = request_ids(dir.path());
        assert_eq!(ids[0], "a");
        assert!(!ids.contains(&"b".to_string()), "{ids:?}");
    }
}
