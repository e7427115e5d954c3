//! # Async I/O slots for Wasm operators
//!
//! Enrichment that calls a database or an HTTP service must not serialize
//! the pipeline on the latency of each call. An operator whose plugin
//! implements the `weir:plugin/async-operator` world (`wit/async-io.wit`)
//! and whose pipeline entry has an `async` table runs as an
//! [`AsyncStage`]: per subtask, `capacity` *slots*, each a plugin instance
//! with its own store, driven by a small tokio runtime. The plugin's
//! `process` handles one record and may call `async-io.http`, `sql` and
//! `kv-get`; to the plugin they are plain calls, in the host they are
//! awaited, so while one slot waits for PostgreSQL the others run.
//!
//! * **Capacity and backpressure**: at most `capacity` records are in
//!   flight per subtask; with all of them taken the task waits, and that
//!   wait is counted as the task's backpressured time.
//! * **Ordering**: `output = "ordered"` releases results in input order;
//!   `"unordered"` as they complete, never across a watermark (which waits
//!   for every record before it) or a checkpoint barrier (records after it
//!   wait for every record before it).
//! * **Timeouts and retries**: each attempt is bounded by `timeout`; a
//!   timed-out instance is dropped (its store is left mid-call) and a new
//!   one is instantiated. Failed attempts are retried `retry.attempts`
//!   times with exponential backoff; then the record goes to the
//!   `dead-letter` sink as a JSON envelope with the reason (or, with
//!   `on-timeout = "fail"`, the pipeline stops naming the record).
//! * **Checkpoints**: the records in flight at a barrier are written to
//!   the operator's snapshot and re-issued on restore ([`AsyncStage::restore`]),
//!   so a crash neither loses nor duplicates them.
//! * **Grants**: HTTP goes only to `allow-http` hosts and SQL only to the
//!   `[connections.*]` listed in `connections`; anything else is an error
//!   returned to the plugin naming the config key ([`Io`]).
//!
//! Modules: [`config`] (pipeline-file settings), [`http`] (the HTTP/1.1
//! client), [`pg`] (PostgreSQL pools and value conversion). Slot usage,
//! latency, timeouts, retries and dead letters are counted through
//! `weir_events::AsyncSlotMetrics` (metric names: `weir_events::metric`).

pub mod config;
pub mod http;
mod io;
pub mod pg;
mod queue;
mod stage;

pub use config::{AsyncConfig, ConnectionConfig, Connections, OnTimeout, OutputMode, RetryConfig};
pub use io::{Grants, Io};
pub use stage::{decode_snapshot, encode_snapshot, AsyncStage, AsyncStageSpec, DeadLetter};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
