//! Prometheus metrics of async operators (names and labels are listed in
//! the README, "Metrics"): per operator subtask, labelled `pipeline`,
//! `operator`, `subtask`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `weir_async_slots` | gauge | slots (capacity) |
//! | `weir_async_slots_in_use` | gauge | slots running a record |
//! | `weir_async_in_flight` | gauge | records taken in and not yet released (running, retrying, or done and held back for order) |
//! | `weir_async_call_seconds` | summary | time of each attempt (one call into the plugin, I/O included); p50/p99 as quantiles |
//! | `weir_async_timeouts_total` | counter | attempts that hit `async.timeout` |
//! | `weir_async_retries_total` | counter | attempts repeated after a failure or timeout |
//! | `weir_async_dead_lettered_total` | counter | records sent to the dead-letter sink |

use metrics::{Counter, Gauge, Histogram};

/// The metric handles of one subtask (cheap to clone).
#[derive(Clone)]
pub struct SlotMetrics {
    in_use: Gauge,
    in_flight: Gauge,
    /// Attempt latency in seconds.
    pub latency: Histogram,
    /// Timed-out attempts.
    pub timeouts: Counter,
    /// Retried attempts.
    pub retries: Counter,
    /// Dead-lettered records.
    pub dead_lettered: Counter,
}

impl SlotMetrics {
    /// Registers the subtask's metrics.
    pub fn new(pipeline: &str, operator: &str, subtask: u32, capacity: usize) -> Self {
        let labels = [("pipeline", pipeline.to_owned()), ("operator", operator.to_owned()), ("subtask", subtask.to_string())];
        metrics::gauge!("weir_async_slots", &labels).set(capacity as f64);
        Self {
            in_use: metrics::gauge!("weir_async_slots_in_use", &labels),
            in_flight: metrics::gauge!("weir_async_in_flight", &labels),
            latency: metrics::histogram!("weir_async_call_seconds", &labels),
            timeouts: metrics::counter!("weir_async_timeouts_total", &labels),
            retries: metrics::counter!("weir_async_retries_total", &labels),
            dead_lettered: metrics::counter!("weir_async_dead_lettered_total", &labels),
        }
    }

    /// Updates the slot gauges.
    pub fn set_usage(&self, in_use: usize, in_flight: usize) {
        self.in_use.set(in_use as f64);
        self.in_flight.set(in_flight as f64);
    }
}
