//! Writer statistics for `/metrics`: records per batch and write+fdatasync time.
//!
//! One process-wide set of atomics, updated by the writer thread(s) after every batch; reading
//! them never blocks the writer. Knows nothing of HTTP or of the exposition format.

use crate::metrics::{BATCH_BOUNDS, Histogram, LATENCY_BOUNDS};

/// Statistics of the audit writers of this process.
#[derive(Debug)]
pub struct WriterStats {
    /// Records written with one fdatasync.
    pub batch_records: Histogram<10>,
    /// Seconds one write plus fdatasync took.
    pub sync_seconds: Histogram<12>,
}

/// The statistics every audit writer of this process updates.
pub static WRITER_STATS: WriterStats = WriterStats {
    batch_records: Histogram::new(BATCH_BOUNDS),
    sync_seconds: Histogram::new(LATENCY_BOUNDS),
};
