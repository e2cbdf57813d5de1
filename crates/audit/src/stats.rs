//! Writer statistics for `/metrics`: records per batch and write+fdatasync time.
//!
//! One process-wide set of atomics, updated by the writer thread(s) after every batch; reading
//! them never blocks the writer. Knows nothing of HTTP or of the exposition format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Upper bounds (records) of the audit batch size histogram.
pub const BATCH_BOUNDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1024.0, 4096.0];

/// A fixed-bucket histogram of atomics (usable in a `static`); the gate's `metrics` renders it.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// Non-cumulative count per bucket; the `+Inf` bucket is `count` minus their sum.
    buckets: [AtomicU64; N],
    count: AtomicU64,
    /// Sum of the observations as `f64` bits.
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram with these ascending upper bounds.
    pub const fn new(bounds: [f64; N]) -> Histogram<N> {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b)
            && let Some(b) = self.buckets.get(i)
        {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Each upper bound with the number of observations in its bucket (not cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

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
