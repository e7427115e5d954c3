//! Async operators: the slots of each subtask, and what happens to the
//! records they run. The handles are registered once per subtask
//! ([`AsyncSlotMetrics::register`]); the methods are called per call or per
//! record, so they log at `debug` at most.

use crate::metric;
use metrics::{Counter, Gauge, Histogram};
use std::sync::Arc;
use std::time::Duration;

/// The `tracing` target of these events (`WEIR_LOG=weir::async=debug` shows them all).
const TARGET: &str = "weir::async";

/// The metric handles of one async operator subtask (cheap to clone).
#[derive(Clone)]
pub struct AsyncSlotMetrics {
    at: Arc<(String, String, u32)>,
    in_use: Gauge,
    in_flight: Gauge,
    latency: Histogram,
    timeouts: Counter,
    retries: Counter,
    dead_lettered: Counter,
}

impl std::fmt::Debug for AsyncSlotMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSlotMetrics")
            .field("pipeline", &self.at.0)
            .field("operator", &self.at.1)
            .field("subtask", &self.at.2)
            .finish()
    }
}

impl AsyncSlotMetrics {
    /// Registers the subtask's metrics; `capacity` is its number of slots.
    pub fn register(pipeline: &str, operator: &str, subtask: u32, capacity: usize) -> Self {
        let sub = subtask.to_string();
        let labels = [pipeline, operator, sub.as_str()];
        metric::ASYNC_SLOTS.gauge(&labels).set(capacity as f64);
        Self {
            at: Arc::new((pipeline.to_owned(), operator.to_owned(), subtask)),
            in_use: metric::ASYNC_SLOTS_IN_USE.gauge(&labels),
            in_flight: metric::ASYNC_IN_FLIGHT.gauge(&labels),
            latency: metric::ASYNC_CALL_SECONDS.histogram(&labels),
            timeouts: metric::ASYNC_TIMEOUTS.counter(&labels),
            retries: metric::ASYNC_RETRIES.counter(&labels),
            dead_lettered: metric::ASYNC_DEAD_LETTERED.counter(&labels),
        }
    }

    /// Slots running a record, and records taken in and not yet released.
    pub fn usage(&self, in_use: usize, in_flight: usize) {
        self.in_use.set(in_use as f64);
        self.in_flight.set(in_flight as f64);
    }

    /// One attempt (one call into the plugin) took `elapsed`.
    pub fn attempt(&self, elapsed: Duration) {
        self.latency.record(elapsed.as_secs_f64());
    }

    /// An attempt hit `async.timeout`; its instance is dropped.
    pub fn timed_out(&self, timeout: Duration) {
        let (pipeline, operator, subtask) = &*self.at;
        tracing::debug!(target: TARGET, pipeline, operator, subtask, "an async call did not finish within {timeout:?} (async.timeout); its instance is dropped");
        self.timeouts.increment(1);
    }

    /// A failed attempt is repeated (`attempt` is the one that failed, from 1).
    pub fn retried(&self, attempt: u32, error: &str) {
        let (pipeline, operator, subtask) = &*self.at;
        tracing::debug!(target: TARGET, pipeline, operator, subtask, attempt, "retrying a record after attempt {attempt} failed: {error}");
        self.retries.increment(1);
    }

    /// A record that failed every attempt goes to the dead-letter sink.
    pub fn dead_lettered(&self, record: &str, attempts: u32, reason: &str) {
        let (pipeline, operator, subtask) = &*self.at;
        tracing::debug!(target: TARGET, pipeline, operator, subtask, "dead-lettered {record} after {attempts} attempt(s): {reason}");
        self.dead_lettered.increment(1);
    }
}
