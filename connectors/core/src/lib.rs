//! The small trait crate every weir connector implements.
//!
//! A [`Source`] fills a batch buffer (weir's frame format, see
//! [`weir_format`]) when the task asks for more; a [`Sink`] receives whole
//! batches. Both run on a task thread: they may block, and a connector that
//! talks to an async client drives it with its own runtime handle.
//!
//! Checkpoint hooks are part of the traits from the start: a source reports
//! its position ([`Source::snapshot`]) and is rewound to one
//! ([`Source::restore`]); a sink is two-phase ([`Sink::pre_commit`] on a
//! checkpoint barrier, [`Sink::commit`] once the checkpoint is complete). A
//! sink that keeps the defaults is at-least-once: it flushes on pre-commit.
//! A transactional sink stages each epoch's records in local files until its
//! checkpoint completes, through the one mechanism in [`staging`] (the file,
//! Kafka and PostgreSQL sinks all use it).
//!
//! A connector that works on a thread of its own starts it with
//! [`background::spawn`], so that the thread's death (an error or a panic)
//! reaches the task and fails the pipeline instead of stalling it.
//!
//! Errors carry a domain and a retry hint ([`ErrorKind`]) so the runtime
//! can tell a bad config (stop, tell the user) from a broker that is down
//! (retry with backoff) from a bug.

use std::fmt;
use std::time::Duration;

pub mod background;
pub mod cluster;
pub mod config;
mod keys;
pub mod registry;
pub mod secrets;
pub mod services;
pub mod staging;

pub use weir_format::{BatchWriter, Frames, RecordRef};

/// Header carrying the wall-clock time (microseconds since the Unix epoch,
/// 8 bytes little-endian) at which a source produced a record. Sinks that
/// see it record end-to-end latency.
pub const EMITTED_AT_HEADER: &[u8] = b"weir-emitted-us";

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Where a connector error comes from, which decides what the runtime does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's config or data is wrong: stop and say what to fix.
    User,
    /// An external system failed (broker or database down, disk full):
    /// retrying later may succeed.
    External,
    /// A bug in weir.
    Internal,
}

/// A connector failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    /// Where it comes from.
    pub kind: ErrorKind,
    /// What happened and, where possible, what to do.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConnectorError {
    /// A user error (bad config or input).
    pub fn user(message: impl fmt::Display) -> Self {
        Self { kind: ErrorKind::User, message: message.to_string(), source: None }
    }

    /// An external error (I/O, a remote system).
    pub fn external(message: impl fmt::Display, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { kind: ErrorKind::External, message: message.to_string(), source: Some(Box::new(source)) }
    }

    /// A bug.
    pub fn internal(message: impl fmt::Display) -> Self {
        Self { kind: ErrorKind::Internal, message: message.to_string(), source: None }
    }

    /// True when retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::External
    }
}

/// Where a source or sink instance runs.
#[derive(Debug, Clone)]
pub struct ConnectorContext {
    /// Pipeline name.
    pub pipeline: String,
    /// Source or sink name in the pipeline file.
    pub name: String,
    /// Index of this parallel instance, from 0.
    pub subtask: u32,
    /// Number of parallel instances.
    pub parallelism: u32,
    /// What the runtime offers beyond the section (see [`services`]).
    pub services: services::Services,
    /// The lane this instance belongs to when the pipeline is spread over
    /// a group of hosts ([`cluster`]): a source reads only the lane's
    /// partition; `None` otherwise.
    pub lane: Option<cluster::Lane>,
}

impl ConnectorContext {
    /// A context with no services (tests, benchmarks, embedding programs).
    pub fn new(pipeline: impl Into<String>, name: impl Into<String>, subtask: u32, parallelism: u32) -> Self {
        Self { pipeline: pipeline.into(), name: name.into(), subtask, parallelism, services: services::Services::default(), lane: None }
    }
}

/// What a [`Source::poll`] call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were written (the batch may also be empty when a rate limit
    /// says to come back later; see [`Poll::Idle`] for that).
    Ready,
    /// Nothing is available now; poll again after at most this long.
    Idle(Duration),
    /// The input is exhausted (a bounded source): no more records, ever.
    Finished,
}

/// A source of records.
pub trait Source: Send {
    /// Appends records to `out`, stopping once it holds at least
    /// `target_bytes` bytes (a soft limit: the last record may cross it).
    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError>;

    /// The source's position after the records returned so far, to be stored
    /// in a checkpoint.
    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError>;

    /// The source's event-time watermark: no record with an earlier
    /// timestamp will follow. `None` (the default) when the source cannot
    /// say; event time then advances only at the end of a bounded input.
    fn watermark(&self) -> Option<i64> {
        None
    }

    /// Moves the source to the position stored in a checkpoint, before the
    /// first poll. `positions` holds what [`Source::snapshot`] returned on
    /// *every* subtask of this source when the checkpoint was taken, at the
    /// parallelism it ran at then (Flink's union list state): a source that
    /// divides its input into splits (Kafka partitions, generator sequences)
    /// takes the splits it owns at its current subtask and parallelism, so a
    /// restore may change the parallelism. Empty entries are subtasks that
    /// had nothing to record.
    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError>;

    /// The checkpoint `checkpoint` is complete; `position` is what
    /// [`Source::snapshot`] returned for it on this subtask. A source that
    /// reports its progress to an external system (a Kafka source commits
    /// its offsets to the consumer group, for lag monitoring) does it here.
    /// Restores never read that external copy: the checkpoint decides where
    /// a restored source starts. The default does nothing.
    fn checkpoint_complete(&mut self, checkpoint: u64, position: &[u8]) -> Result<(), ConnectorError> {
        let _ = (checkpoint, position);
        Ok(())
    }

    /// Releases resources at the end of the run.
    fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A sink's pre-commit handle for one checkpoint, as stored in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committable {
    /// The checkpoint whose data the handle publishes.
    pub checkpoint: u64,
    /// What [`Sink::pre_commit`] returned.
    pub handle: Vec<u8>,
}

/// Told when a connector starts and stops waiting for its external system
/// because that system is slower than the input (a database that cannot keep
/// up, or is reconnecting). The runtime passes the task's backpressure clock,
/// so such waits count as backpressure, like waiting for a full channel.
pub trait WaitObserver: Send + Sync {
    /// A wait begins.
    fn start_wait(&self);
    /// The wait ends.
    fn end_wait(&self);
}

/// A destination of records.
///
/// The runtime calls [`Sink::start`] once before the first write, then
/// [`Sink::write`] for every batch. On each checkpoint barrier it calls
/// [`Sink::pre_commit`] and stores the handle in the checkpoint; once the
/// checkpoint is complete it calls [`Sink::commit`] with that handle. A
/// restarted pipeline hands the handles of the checkpoint it resumes from
/// to [`Sink::start`], which publishes them again (idempotently) and drops
/// whatever was written after that checkpoint: that is exactly-once.
pub trait Sink: Send {
    /// Prepares the sink before the first write. `recovered` is `None` on a
    /// fresh start (the sink may clear earlier output). On a restore it
    /// lists the pre-commit handles of the checkpoint the run resumes from
    /// that this subtask is responsible for, oldest first; they may come
    /// from subtasks of an earlier parallelism, and the list may be empty
    /// (output this subtask finds from earlier runs is then kept). The
    /// default commits each of them.
    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        for c in recovered.unwrap_or_default() {
            self.commit(c.checkpoint, &c.handle)?;
        }
        Ok(())
    }

    /// Output of an earlier run that a fresh [`Sink::start`] would replace
    /// or forget, described for the user (`"out.jsonl holds 2.1 MB"`), or
    /// `None` (the default) when there is none or the sink cannot tell.
    /// The runtime asks before a fresh start that the user did not ask for
    /// (no checkpoint to resume from, no `--fresh`) and refuses to start
    /// when there is some: only `--fresh` may replace published output.
    fn earlier_output(&mut self) -> Result<Option<String>, ConnectorError> {
        Ok(None)
    }

    /// Writes a batch (`records` frames in `batch`).
    fn write(&mut self, batch: &[u8], records: usize) -> Result<(), ConnectorError>;

    /// Makes everything written so far durable or visible, as far as this
    /// sink can (flush buffers, fsync). Called at the end of input.
    fn flush(&mut self) -> Result<(), ConnectorError>;

    /// First phase of a checkpoint: prepare everything written since the
    /// last checkpoint so that [`Sink::commit`] can publish it and nothing
    /// else can. Returns a handle stored in the checkpoint. The default
    /// flushes and returns an empty handle (at-least-once).
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        let _ = checkpoint;
        self.flush()?;
        Ok(Vec::new())
    }

    /// Second phase: the checkpoint is complete, publish its data. Must be
    /// idempotent (it is repeated after a crash between completion and
    /// commit). The default does nothing.
    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), ConnectorError> {
        let _ = (checkpoint, handle);
        Ok(())
    }

    /// End of input: flush and release resources.
    fn close(&mut self) -> Result<(), ConnectorError> {
        self.flush()
    }

    /// Hands the sink the observer of its waits for the external system
    /// (called once, before [`Sink::start`]). The default ignores it: a sink
    /// that never waits on anything slower than itself has nothing to report.
    fn observe_waits(&mut self, observer: std::sync::Arc<dyn WaitObserver>) {
        let _ = observer;
    }
}

/// `type = "discard"`: a sink that takes no settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

impl registry::SinkConfig for DiscardConfig {
    const TYPE: &'static str = "discard";

    fn open(&self, _: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(DiscardSink::default()))
    }

    fn per_lane(&self) -> bool {
        true
    }
}

/// A sink that drops everything: for benchmarks and for measuring a
/// pipeline without its destination.
#[derive(Debug, Default)]
pub struct DiscardSink {
    /// Records dropped so far.
    pub records: u64,
}

impl Sink for DiscardSink {
    fn write(&mut self, _batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        self.records += records as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
