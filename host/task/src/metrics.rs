//! Counters of stages and tasks, read by the progress display and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_network::BackpressureClock;

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

/// Where one task's time goes.
#[derive(Debug)]
pub struct TaskMetrics {
    started: std::sync::OnceLock<Instant>,
    /// Nanoseconds waiting for input.
    pub idle_ns: AtomicU64,
    /// Blocked on full downstream channels (shared with the partitioners).
    pub backpressure: Arc<BackpressureClock>,
    /// Total run time once finished, in nanoseconds.
    pub finished_ns: AtomicU64,
    /// Set once the task's thread has ended.
    pub done: AtomicBool,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        Self {
            started: std::sync::OnceLock::new(),
            idle_ns: AtomicU64::new(0),
            backpressure: Arc::default(),
            finished_ns: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

impl TaskMetrics {
    pub(crate) fn start(&self) {
        let _ = self.started.set(Instant::now());
    }

    pub(crate) fn finish(&self) {
        if let Some(s) = self.started.get() {
            self.finished_ns.store(s.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.done.store(true, Ordering::Relaxed);
    }

    pub(crate) fn add_idle(&self, d: Duration) {
        self.idle_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Total idle, backpressured and elapsed time so far, in nanoseconds.
    pub fn times(&self) -> (u64, u64, u64) {
        let elapsed = if self.done.load(Ordering::Relaxed) {
            self.finished_ns.load(Ordering::Relaxed)
        } else {
            self.started.get().map_or(0, |s| s.elapsed().as_nanos() as u64)
        };
        (self.idle_ns.load(Ordering::Relaxed), self.backpressure.blocked_ns.load(Ordering::Relaxed), elapsed)
    }
}
