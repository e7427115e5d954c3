//! Every metric weir exports, in one table: name, type, labels, meaning.
//!
//! Code never writes a metric name: it takes a handle from one of these
//! entries ([`Metric::counter`], [`Metric::gauge`], [`Metric::histogram`])
//! with one value per label, in the order of [`Metric::labels`]. The first
//! label of every metric is `pipeline`. The Metrics table of the user
//! documentation is [`markdown_table`] of [`ALL`]; a test of this crate
//! fails when the two differ (`BLESS=1` rewrites the documentation's copy).
//!
//! Hot paths (per record, per call) take their handles once, when a task
//! or a connector opens, and update them; the per-second task figures are
//! sampled from the tasks' atomic counters by `weir-metrics`, which takes
//! its handles from this table too.

use metrics::{Counter, Gauge, Histogram, Label};

/// How a metric is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (Prometheus `counter`, named `..._total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations; exported as a Prometheus summary
    /// with a `quantile` label (p50 is `quantile="0.5"`).
    Histogram,
}

impl Kind {
    /// `counter`, `gauge`, `summary` (as Prometheus shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "summary",
        }
    }
}

/// One metric.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    /// Prometheus name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Label names, `pipeline` first; handles take their values in this order.
    pub labels: &'static [&'static str],
    /// What it means, for the documentation.
    pub help: &'static str,
}

impl Metric {
    fn labels(&self, values: &[&str]) -> Vec<Label> {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{} takes the labels {:?}",
            self.name,
            self.labels
        );
        self.labels
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect()
    }

    /// The counter with these label values (one per [`Metric::labels`]).
    pub fn counter(&self, values: &[&str]) -> Counter {
        debug_assert_eq!(self.kind, Kind::Counter, "{} is not a counter", self.name);
        metrics::counter!(self.name, self.labels(values))
    }

    /// The gauge with these label values.
    pub fn gauge(&self, values: &[&str]) -> Gauge {
        debug_assert_eq!(self.kind, Kind::Gauge, "{} is not a gauge", self.name);
        metrics::gauge!(self.name, self.labels(values))
    }

    /// The histogram with these label values.
    pub fn histogram(&self, values: &[&str]) -> Histogram {
        debug_assert_eq!(
            self.kind,
            Kind::Histogram,
            "{} is not a histogram",
            self.name
        );
        metrics::histogram!(self.name, self.labels(values))
    }
}

macro_rules! table {
    ($($(#[$doc:meta])* $id:ident: $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $($(#[$doc])* pub static $id: Metric = Metric { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help };)*
        /// Every metric, in the documentation's order.
        pub static ALL: &[&Metric] = &[$(&$id),*];
    };
}

table! {
    /// Sampled from the task's clocks (see `weir-metrics`).
    TASK_BUSY: "weir_task_busy_time_ms_per_second", Gauge, ["pipeline", "task", "subtask"],
        "time working (1000 minus idle minus backpressured)";
    /// Sampled.
    TASK_IDLE: "weir_task_idle_time_ms_per_second", Gauge, ["pipeline", "task", "subtask"],
        "time waiting for input";
    /// Sampled.
    TASK_BACKPRESSURED: "weir_task_backpressured_time_ms_per_second", Gauge, ["pipeline", "task", "subtask"],
        "time waiting for a free output buffer";
    /// Sampled.
    TASK_IN_POOL: "weir_task_in_pool_usage", Gauge, ["pipeline", "task", "subtask"],
        "share of the input buffers in use (0-1)";
    /// Sampled.
    TASK_OUT_POOL: "weir_task_out_pool_usage", Gauge, ["pipeline", "task", "subtask"],
        "share of the output buffer pool in use (0-1)";
    /// Sampled from the task's input gate (see `weir_network::debloat`).
    NETWORK_DEBLOAT_TARGET: "weir_network_debloat_target_bytes", Gauge, ["pipeline", "task", "subtask"],
        "bytes the upstream tasks may have in flight toward this task under buffer debloating (0: off)";
    /// Sampled.
    TASK_BACKPRESSURE_STATUS: "weir_task_backpressure_status", Gauge, ["pipeline", "task"],
        "0 OK, 1 LOW, 2 HIGH (worst subtask)";
    /// Sampled from the task's input gate, per input (`input`: the vertex it comes from).
    TASK_INPUT_RECORDS: "weir_task_input_records_total", Counter, ["pipeline", "task", "subtask", "input"],
        "records received on this input of the task (a fan-in task has one series per input)";
    /// Sampled.
    TASK_INPUT_WATERMARK: "weir_task_input_watermark_ms", Gauge, ["pipeline", "task", "subtask", "input"],
        "the input's watermark, epoch milliseconds (absent until its first watermark)";
    /// Sampled.
    TASK_INPUT_IDLE: "weir_task_input_idle", Gauge, ["pipeline", "task", "subtask", "input"],
        "1 while the input is idle (silent past `idle-timeout`) and left out of the task's watermark";
    /// Sampled.
    TASK_INPUT_IDLE_TIME: "weir_task_input_idle_time_ms_per_second", Gauge, ["pipeline", "task", "subtask", "input"],
        "time the input was idle (left out of the task's watermark), milliseconds per second";
    /// Sampled.
    TASK_INPUT_BACKPRESSURED: "weir_task_input_backpressured_time_ms_per_second", Gauge, ["pipeline", "task", "input", "producer_subtask"],
        "time the producing subtask waited for a free output buffer toward this input of the task: the backpressure of this edge alone, milliseconds per second";
    /// Sampled.
    OPERATOR_RECORDS_IN_RATE: "weir_operator_records_in_per_second", Gauge, ["pipeline", "operator", "subtask"],
        "records in per second";
    /// Sampled.
    OPERATOR_RECORDS_OUT_RATE: "weir_operator_records_out_per_second", Gauge, ["pipeline", "operator", "subtask"],
        "records out per second";
    /// Sampled.
    OPERATOR_BYTES_IN_RATE: "weir_operator_bytes_in_per_second", Gauge, ["pipeline", "operator", "subtask"],
        "bytes in per second (frame format)";
    /// Sampled.
    OPERATOR_BYTES_OUT_RATE: "weir_operator_bytes_out_per_second", Gauge, ["pipeline", "operator", "subtask"],
        "bytes out per second (frame format)";
    /// Sampled.
    OPERATOR_RECORDS_IN: "weir_operator_records_in_total", Counter, ["pipeline", "operator", "subtask"],
        "records in since the run started";
    /// Sampled.
    OPERATOR_RECORDS_OUT: "weir_operator_records_out_total", Counter, ["pipeline", "operator", "subtask"],
        "records out since the run started";
    /// [`crate::CheckpointCompleted`].
    CHECKPOINT_LAST_ID: "weir_checkpoint_last_id", Gauge, ["pipeline"],
        "id of the last completed checkpoint";
    /// [`crate::CheckpointCompleted`].
    CHECKPOINT_LAST_DURATION: "weir_checkpoint_last_duration_ms", Gauge, ["pipeline"],
        "its time from trigger to completion";
    /// [`crate::CheckpointCompleted`].
    CHECKPOINT_LAST_SIZE: "weir_checkpoint_last_size_bytes", Gauge, ["pipeline"],
        "its size on disk";
    /// [`crate::CheckpointCompleted`].
    CHECKPOINT_LAST_ALIGNMENT: "weir_checkpoint_last_alignment_ms", Gauge, ["pipeline"],
        "its longest barrier alignment in any task";
    /// [`crate::CheckpointCompleted`].
    CHECKPOINT_LAST_INFLIGHT: "weir_checkpoint_last_inflight_bytes", Gauge, ["pipeline"],
        "bytes of in-flight records it persisted (unaligned checkpoints; 0 when aligned)";
    /// [`crate::CheckpointCompleted`].
    CHECKPOINTS_COMPLETED: "weir_checkpoints_completed_total", Counter, ["pipeline"],
        "checkpoints completed in this run";
    /// [`crate::CheckpointFailed`].
    CHECKPOINTS_FAILED: "weir_checkpoints_failed_total", Counter, ["pipeline"],
        "checkpoints that failed in this run (timed out, a task could not take it, its files could not be written)";
    /// [`crate::CheckpointAbandoned`].
    CHECKPOINTS_ABANDONED: "weir_checkpoints_abandoned_total", Counter, ["pipeline"],
        "checkpoints given up because the input ended while they ran (the final checkpoint covers their data); completed, failed and abandoned account for every id";
    /// [`crate::PluginVersion`].
    PLUGIN_VERSION: "weir_operator_plugin_version", Gauge, ["pipeline", "operator", "plugin", "version"],
        "1 for the version (first 12 hex digits of its SHA-256) the operator runs, 0 for versions it ran before";
    /// [`crate::ReloadRejected`], [`crate::ReloadKept`], [`crate::ReloadRolledBack`].
    PLUGIN_RELOADS: "weir_plugin_reloads_total", Counter, ["pipeline", "operator", "outcome"],
        "hot-reload attempts by final outcome, each counted once as in the reload history: `rejected`, `rolled_back`, or `accepted` once the version passed its probation on every subtask, was replaced by a newer one, or the run ended";
    /// [`crate::AsyncSlotMetrics`].
    ASYNC_SLOTS: "weir_async_slots", Gauge, ["pipeline", "operator", "subtask"],
        "an async operator's slots (its `capacity`)";
    /// [`crate::AsyncSlotMetrics`].
    ASYNC_SLOTS_IN_USE: "weir_async_slots_in_use", Gauge, ["pipeline", "operator", "subtask"],
        "slots running a record";
    /// [`crate::AsyncSlotMetrics`].
    ASYNC_IN_FLIGHT: "weir_async_in_flight", Gauge, ["pipeline", "operator", "subtask"],
        "records taken in and not yet released (running, waiting to retry, or done and held back for order)";
    /// [`crate::AsyncSlotMetrics`].
    ASYNC_CALL_SECONDS: "weir_async_call_seconds", Histogram, ["pipeline", "operator", "subtask"],
        "time of each attempt (one call into the plugin, I/O included); p50 is `quantile=\"0.5\"`, p99 `quantile=\"0.99\"`";
    /// [`crate::AsyncSlotMetrics::timed_out`].
    ASYNC_TIMEOUTS: "weir_async_timeouts_total", Counter, ["pipeline", "operator", "subtask"],
        "attempts that hit `async.timeout`";
    /// [`crate::AsyncSlotMetrics::retried`].
    ASYNC_RETRIES: "weir_async_retries_total", Counter, ["pipeline", "operator", "subtask"],
        "attempts repeated after a failure or timeout";
    /// [`crate::AsyncSlotMetrics::dead_lettered`].
    ASYNC_DEAD_LETTERED: "weir_async_dead_lettered_total", Counter, ["pipeline", "operator", "subtask"],
        "records sent to the dead-letter sink";
    /// [`crate::KafkaConsumerLag`].
    KAFKA_CONSUMER_LAG: "weir_kafka_consumer_lag", Gauge, ["pipeline", "source", "subtask", "topic", "partition"],
        "end offset minus the next offset weir will emit, per partition";
    /// [`crate::KafkaPartitionsPaused`].
    KAFKA_SOURCE_PAUSES: "weir_kafka_source_pauses_total", Counter, ["pipeline", "source", "subtask"],
        "times a Kafka source paused its partitions under backpressure";
    /// [`crate::KafkaDeliveryFailed`].
    KAFKA_DELIVERY_FAILURES: "weir_kafka_sink_delivery_failures_total", Counter, ["pipeline", "sink", "subtask"],
        "records a Kafka sink could not deliver after the producer's retries (the sink then fails)";
}

/// The metric named `name`, if weir exports one.
pub fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// The documentation's table of every metric, one row each.
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for m in ALL {
        let mut labels = m.labels.join(", ");
        if m.kind == Kind::Histogram {
            labels.push_str(", quantile");
        }
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {} |\n",
            m.name,
            m.kind.as_str(),
            m.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_labelled_with_its_pipeline_first() {
        for m in ALL {
            assert_eq!(m.labels.first(), Some(&"pipeline"), "{}", m.name);
        }
    }

    #[test]
    fn names_are_unique_prometheus_names_with_the_conventional_suffix() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                m.name.starts_with("weir_")
                    && m.name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
        }
    }
}
