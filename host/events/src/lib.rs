//! weir's internal events: one struct per thing that happens, whose
//! [`Event::emit`] both logs it (through `tracing`, as a sentence with
//! structured fields) and counts it (through `metrics`, under a name from
//! the one table in [`metric`]). It follows Vector's `internal_events`: the
//! call site says *what happened* with typed fields; how that is logged and
//! counted is decided here, once, so messages, metric names and labels
//! cannot drift apart between crates.
//!
//! ```
//! weir_events::emit(weir_events::CheckpointFailed { pipeline: "orders", id: 7, reason: "a task could not take it" });
//! ```
//!
//! Rules every event keeps:
//!
//! * an event that happens in a pipeline has a `pipeline` field, and every
//!   metric carries a `pipeline` label (checked by the tests of [`metric`]);
//! * library crates print nothing themselves: what a user must read goes
//!   through an event. Messages a foreground `weir run` shows even at its
//!   default `warn` level (resuming from a checkpoint, records re-issued)
//!   are *notices*: info-level events with the target [`NOTICE`], which
//!   the `weir` binary prints as `weir: PIPELINE: message` and `weir serve`
//!   records, with every warning and error of a pipeline, in that
//!   pipeline's events;
//! * hot paths register their handles once ([`AsyncSlotMetrics`]); an event
//!   that is emitted per record is never logged above `debug`.
//!
//! This crate depends on `tracing` and `metrics` only, so connectors use it
//! without pulling in the runtime. With the `testing` feature,
//! [`testing::capture`] records what a piece of code counts and checks it
//! against the table.

mod asyncio;
mod checkpoint;
mod cluster;
mod kafka;
pub mod metric;
mod reload;
mod settings;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use asyncio::AsyncSlotMetrics;
pub use checkpoint::{
    CheckpointAbandoned, CheckpointCompleted, CheckpointFailed, CheckpointRestored,
    CheckpointUnusable, InFlightReissued,
};
pub use cluster::{LaneWaiting, LanesAssigned, LanesRevoked};
pub use kafka::{
    KafkaConsumerLag, KafkaDeliveryFailed, KafkaPartitionsPaused, KafkaPartitionsResumed,
};
pub use reload::{
    ConnectorPluginChanged, ConnectorPluginRolledBack, ConnectorPluginSwapped, PluginVersion, ReloadAccepted, ReloadDone, ReloadKept, PluginFallback, ReloadRejected, ReloadRolledBack,
};
pub use settings::SettingIgnored;

/// The `tracing` target of notices: info-level messages a user running a
/// pipeline in the foreground is shown even when only warnings are logged.
/// Every notice has a `pipeline` field.
pub const NOTICE: &str = "weir::notice";

/// Something that happened, to be logged and counted.
pub trait Event {
    /// Logs the event and updates its metrics.
    fn emit(self);
}

/// Emits `event` (the same as `event.emit()`, without importing [`Event`]).
pub fn emit(event: impl Event) {
    event.emit();
}

/// Milliseconds of `d`, for log fields.
fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests;
