//! Durable lines handed to a follower in memory (the store shipper): the exact bytes the writer
//! made durable and the SHA-256 of each line it computed for the chain, so that a follower
//! need not read back from the segments and hash again what was just written.
//!
//! A tap is bounded: when the follower falls behind by more than its byte limit, the oldest
//! lines are let go and the follower reads them from the segments instead (it sees the gap in
//! `seq`). A tap only ever holds lines the writer's `fdatasync` returned for, in order.
//!
//! INVARIANT: the writer hands a batch to its taps before it publishes the batch's last seq as
//! durable ([`crate::AuditLog::durable_seq`]); a follower that reads the durable seq first and
//! the tap second finds every tapped line up to that seq (unless let go).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Consecutive durable lines: one committed batch of the writer.
#[derive(Debug, Clone)]
pub struct DurableLines {
    first_seq: u64,
    /// The lines as written, each ending in `\n`.
    bytes: Bytes,
    /// Where each line ends in `bytes` (at its `\n`).
    ends: Vec<usize>,
    /// SHA-256 of each line's bytes (without the `\n`): the next line's `prev`.
    hashes: Vec<[u8; 32]>,
}

impl DurableLines {
    /// `bytes` holds one line per hash, each ending in `\n`; `ends` where each line ends.
    pub(crate) fn new(
        first_seq: u64,
        bytes: Bytes,
        ends: Vec<usize>,
        hashes: Vec<[u8; 32]>,
    ) -> DurableLines {
        DurableLines {
            first_seq,
            bytes,
            ends,
            hashes,
        }
    }

    /// The seq of the first line.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// One past the seq of the last line.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.hashes.len() as u64
    }

    /// The line with this seq (without its `\n`) and its SHA-256, when it is one of these.
    pub fn line(&self, seq: u64) -> Option<(Bytes, [u8; 32])> {
        let i = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        let end = *self.ends.get(i)?;
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1)? + 1,
        };
        let hash = *self.hashes.get(i)?;
        (start <= end && end <= self.bytes.len()).then(|| (self.bytes.slice(start..end), hash))
    }

    fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The follower's end of a tap ([`crate::AuditLog::tap`]).
#[derive(Debug, Clone)]
pub struct Tap {
    inner: Arc<TapInner>,
}

#[derive(Debug)]
pub(crate) struct TapInner {
    queue: Mutex<TapQueue>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct TapQueue {
    batches: VecDeque<DurableLines>,
    bytes: usize,
    /// Lines let go because the follower fell behind.
    let_go: u64,
}

impl Tap {
    pub(crate) fn new(max_bytes: usize) -> Tap {
        Tap {
            inner: Arc::new(TapInner {
                queue: Mutex::new(TapQueue::default()),
                max_bytes,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<TapInner> {
        &self.inner
    }

    /// Takes every batch handed over since the last call, oldest first.
    pub fn take(&self) -> VecDeque<DurableLines> {
        let mut q = self.inner.lock();
        q.bytes = 0;
        std::mem::take(&mut q.batches)
    }

    /// How many lines were let go so far because the follower fell behind the byte limit.
    pub fn let_go(&self) -> u64 {
        self.inner.lock().let_go
    }
}

impl TapInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, TapQueue> {
        // The code under this lock cannot panic; a poisoned queue is still whole batches.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands over one durable batch; lets the oldest go while over the byte limit.
    pub(crate) fn push(&self, lines: DurableLines) {
        let mut q = self.lock();
        q.bytes += lines.byte_len();
        q.batches.push_back(lines);
        while q.bytes > self.max_bytes {
            let Some(old) = q.batches.pop_front() else {
                break;
            };
            q.bytes -= old.byte_len();
            q.let_go += old.end_seq() - old.first_seq();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn lines(first_seq: u64, texts: &[&str]) -> DurableLines {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        let mut hashes = Vec::new();
        for t in texts {
            buf.extend_from_slice(t.as_bytes());
            ends.push(buf.len());
            buf.push(b'\n');
            hashes.push([t.len() as u8; 32]);
        }
        DurableLines::new(first_seq, Bytes::from(buf), ends, hashes)
    }

    #[test]
    fn lines_are_found_by_seq() {
        let l = lines(7, &["a", "", "ccc"]);
        assert_eq!(l.end_seq(), 10);
        assert_eq!(l.line(7).unwrap(), (Bytes::from("a"), [1; 32]));
        assert_eq!(l.line(8).unwrap(), (Bytes::new(), [0; 32]));
        assert_eq!(l.line(9).unwrap(), (Bytes::from("ccc"), [3; 32]));
        assert!(l.line(6).is_none());
        assert!(l.line(10).is_none());
    }

    #[test]
    fn a_tap_over_its_limit_lets_the_oldest_go() {
        let tap = Tap::new(12);
        let inner = Arc::clone(tap.inner());
        inner.push(lines(1, &["aaaa"])); // 5 bytes
        inner.push(lines(2, &["bbbb"])); // 10
        assert_eq!(tap.let_go(), 0);
        inner.push(lines(3, &["cc", "dd"])); // 16: the first goes, 11 stay
        assert_eq!(tap.let_go(), 1);
        let got = tap.take();
        assert_eq!(
            got.iter().map(DurableLines::first_seq).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(tap.take().is_empty());
        inner.push(lines(5, &["e"]));
        assert_eq!(tap.take().len(), 1);
    }
}
