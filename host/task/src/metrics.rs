//! Counters of stages and tasks, read by the progress display and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use weir_network::{Allowance, BufferPool, WaitClock};

/// Record and byte counters of one stage (operator, source or sink) subtask.
#[derive(Debug, Default)]
pub struct StageMetrics {
    /// Records received.
    pub records_in: AtomicU64,
    /// Records emitted.
    pub records_out: AtomicU64,
    /// Bytes received (frame format).
    pub bytes_in: AtomicU64,
    /// Bytes emitted (frame format).
    pub bytes_out: AtomicU64,
    /// Records set aside by the `skip` error policy.
    pub records_skipped: AtomicU64,
    /// End-to-end latency of records that carry a source timestamp header
    /// (sinks only).
    pub latency: LatencyHistogram,
}

/// Latencies in microseconds, in log-linear buckets (16 per power of two,
/// so a percentile is within ~6% of the true value). Lock-free.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

const SUB: u64 = 16;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { buckets: (0..64 * SUB).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LatencyHistogram {
    fn index(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as u64; // >= 4
        let sub = (us >> (exp - 4)) & (SUB - 1);
        ((exp - 3) * SUB + sub) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let exp = index / SUB + 3;
        let sub = index % SUB;
        (1 << exp) | (sub << (exp - 4))
    }

    /// Records one latency.
    pub fn record(&self, us: u64) {
        self.buckets[Self::index(us).min(self.buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter().zip(&other.buckets) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in microseconds, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                // The middle of the bucket.
                let lo = Self::lower_bound(i);
                let hi = Self::lower_bound(i + 1);
                return Some(lo + (hi - lo) / 2);
            }
        }
        None
    }
}

impl StageMetrics {
    /// Counts an input batch.
    pub fn add_in(&self, records: usize, bytes: usize) {
        self.records_in.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts an output batch.
    pub fn add_out(&self, records: usize, bytes: usize) {
        self.records_out.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        for (q, want) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        }
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        for us in [0u64, 15, 16, 17, 1000, 123_456_789] {
            let i = LatencyHistogram::index(us);
            assert!(LatencyHistogram::lower_bound(i) <= us && us < LatencyHistogram::lower_bound(i + 1), "{us}");
        }
    }
}

/// Where one task's time goes, and how full its buffers are.
#[derive(Debug)]
pub struct TaskMetrics {
    started: std::sync::OnceLock<Instant>,
    /// Waiting for input.
    pub idle: Arc<WaitClock>,
    /// Waiting for an output buffer (shared with the task's buffer pools).
    pub backpressure: Arc<WaitClock>,
    /// Total run time once finished, in nanoseconds.
    pub finished_ns: AtomicU64,
    /// Set once the task's thread has ended.
    pub done: AtomicBool,
    /// Buffers waiting in the task's input gate (updated on every receive).
    pub in_queued: AtomicU64,
    /// Records waiting in the task's input gate, live (the gate's own
    /// counter, set when the task starts): what a barrier arriving now
    /// would wait behind.
    pub in_records: std::sync::OnceLock<Arc<AtomicU64>>,
    /// What the input gate lets its upstream tasks have in flight to this
    /// one under buffer debloating (set when the task starts).
    pub in_allowance: std::sync::OnceLock<Arc<Allowance>>,
    /// Per input of a gate task (fan-in): records received, watermark,
    /// idleness; set when the task starts.
    pub inputs: std::sync::OnceLock<Vec<Arc<crate::InputMetrics>>>,
    /// Buffers the upstream tasks may have in flight to this one.
    pub in_capacity: u64,
    /// The task's output buffer pools.
    pub out_pools: Vec<BufferPool>,
}

impl TaskMetrics {
    /// Metrics of a task whose input gate can receive `in_capacity` buffers
    /// and whose outputs draw from `out_pools` (sharing `backpressure`).
    pub fn new(in_capacity: u64, out_pools: Vec<BufferPool>, backpressure: Arc<WaitClock>) -> Self {
        Self {
            started: std::sync::OnceLock::new(),
            idle: Arc::default(),
            backpressure,
            finished_ns: AtomicU64::new(0),
            done: AtomicBool::new(false),
            in_queued: AtomicU64::new(0),
            in_records: std::sync::OnceLock::new(),
            in_allowance: std::sync::OnceLock::new(),
            inputs: std::sync::OnceLock::new(),
            in_capacity,
            out_pools,
        }
    }

    pub(crate) fn start(&self) {
        let _ = self.started.set(Instant::now());
    }

    pub(crate) fn finish(&self) {
        if let Some(s) = self.started.get() {
            self.finished_ns.store(s.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.done.store(true, Ordering::Relaxed);
    }

    /// Total idle, backpressured and elapsed time so far, in nanoseconds
    /// (waits in progress included).
    pub fn times(&self) -> (u64, u64, u64) {
        let elapsed = if self.done.load(Ordering::Relaxed) {
            self.finished_ns.load(Ordering::Relaxed)
        } else {
            self.started.get().map_or(0, |s| s.elapsed().as_nanos() as u64)
        };
        (self.idle.total_ns(), self.backpressure.total_ns(), elapsed)
    }

    /// Records waiting in the input gate (0 for a source).
    pub fn queued_records(&self) -> u64 {
        self.in_records.get().map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Bytes the input gate lets its upstream tasks have in flight under
    /// buffer debloating; `None` when not debloated (or a source).
    pub fn debloat_target_bytes(&self) -> Option<u64> {
        self.in_allowance.get().and_then(|a| a.gate_bytes())
    }

    /// Fraction of the input buffers in use (0..=1).
    pub fn in_pool_usage(&self) -> f64 {
        if self.in_capacity == 0 {
            return 0.0;
        }
        (self.in_queued.load(Ordering::Relaxed) as f64 / self.in_capacity as f64).min(1.0)
    }

    /// Fraction of the output buffers in use, the fullest pool (0..=1).
    pub fn out_pool_usage(&self) -> f64 {
        self.out_pools.iter().map(BufferPool::usage).fold(0.0, f64::max)
    }
}
