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
use super::format::{Chain, frame_line, segment_file_name};
use super::scan::{Tail, scan_segment};

/// A segment file as the writer uses it; a test double can inject failures.
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
        };
        writer.file = Some(writer.open_current()?);
        Ok(writer)
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
        loop {
            let mut close = None;
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
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
            if let Some(reply) = close {
                if let Some(append) = carry.take() {
                    batch.push(append);
                    self.commit(&mut batch);
                }
                self.finish(rx);
                let _ = reply.send(());
                return;
            }
        }
        if let Some(append) = carry.take() {
            batch.push(append);
            self.commit(&mut batch);
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
            }
        }
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
            if self.durable_len >= self.segment_max_bytes
                && let Err(e) = self.rotate()
            {
                tracing::error!(error = %e, "audit log: cannot start a new segment");
                fail_all(pending, &e);
                return;
            }
            // Frame the appends that go into this segment; INVARIANT: the records of one
            // append are contiguous and in one segment.
            self.buf.clear();
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
                    self.buf.push(b'\n');
                }
                chunk.push((append, first_seq));
            }
            match self.write_durably() {
                Ok(()) => {
                    self.durable_len += self.buf.len() as u64;
                    self.chain = chain;
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
        self.segment_start = self.chain;
        Ok(())
    }
}

fn fail_all(appends: impl Iterator<Item = Append>, error: &AuditError) {
    for append in appends {
        let _ = append.reply.send(Err(error.clone()));
    }
}
