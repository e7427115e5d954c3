//! Checkpoints: taken, failed, abandoned, and restored from.

use crate::{Event, NOTICE, metric, ms};
use std::path::Path;
use std::time::Duration;

/// The `tracing` target of these events (`WEIR_LOG=weir::checkpoint=debug` shows them all).
const TARGET: &str = "weir::checkpoint";

/// A checkpoint (or savepoint) is durable: its manifest is written.
#[derive(Debug)]
pub struct CheckpointCompleted<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Checkpoint id.
    pub id: u64,
    /// A savepoint (kept until deleted by hand) rather than a checkpoint.
    pub savepoint: bool,
    /// The final checkpoint, taken when the input ended.
    pub last: bool,
    /// Bytes on disk.
    pub bytes: u64,
    /// From trigger to completion.
    pub duration: Duration,
    /// Longest barrier alignment of any task.
    pub alignment: Duration,
    /// Longest time a task stopped its data flow for its snapshot.
    pub sync: Duration,
    /// Bytes of records in flight it persisted (unaligned checkpoints).
    pub inflight_bytes: u64,
    /// Taken unaligned: barriers overtook the queued buffers.
    pub unaligned: bool,
    /// Its directory.
    pub dir: &'a Path,
}

impl Event for CheckpointCompleted<'_> {
    fn emit(self) {
        tracing::info!(
            target: TARGET,
            pipeline = self.pipeline,
            checkpoint = self.id,
            bytes = self.bytes,
            duration_ms = ms(self.duration),
            alignment_ms = ms(self.alignment),
            sync_ms = ms(self.sync),
            inflight_bytes = self.inflight_bytes,
            unaligned = self.unaligned,
            dir = %self.dir.display(),
            "{} complete{}",
            if self.savepoint { "savepoint" } else { "checkpoint" },
            if self.last { " (final: the input has ended)" } else { "" }
        );
        let p = [self.pipeline];
        metric::CHECKPOINT_LAST_ID.gauge(&p).set(self.id as f64);
        metric::CHECKPOINT_LAST_DURATION
            .gauge(&p)
            .set(self.duration.as_secs_f64() * 1e3);
        metric::CHECKPOINT_LAST_SIZE
            .gauge(&p)
            .set(self.bytes as f64);
        metric::CHECKPOINT_LAST_ALIGNMENT
            .gauge(&p)
            .set(self.alignment.as_secs_f64() * 1e3);
        metric::CHECKPOINT_LAST_INFLIGHT
            .gauge(&p)
            .set(self.inflight_bytes as f64);
        metric::CHECKPOINTS_COMPLETED.counter(&p).increment(1);
    }
}

/// A checkpoint failed: it timed out, a task could not take it, or its
/// files could not be written. The run goes on.
#[derive(Debug)]
pub struct CheckpointFailed<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Checkpoint id.
    pub id: u64,
    /// Why, in words.
    pub reason: &'a str,
}

impl Event for CheckpointFailed<'_> {
    fn emit(self) {
        tracing::warn!(
            target: TARGET,
            pipeline = self.pipeline,
            checkpoint = self.id,
            "checkpoint failed: {}; the pipeline keeps running and the next checkpoint retries",
            self.reason
        );
        metric::CHECKPOINTS_FAILED
            .counter(&[self.pipeline])
            .increment(1);
    }
}

/// A checkpoint was given up because the input ended before every task
/// took it; the final checkpoint covers its data. Counted, so that
/// completed, failed and abandoned checkpoints account for every id.
#[derive(Debug)]
pub struct CheckpointAbandoned<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Checkpoint id.
    pub id: u64,
}

impl Event for CheckpointAbandoned<'_> {
    fn emit(self) {
        tracing::info!(
            target: TARGET,
            pipeline = self.pipeline,
            checkpoint = self.id,
            "checkpoint abandoned: the input ended before every task took it; the final checkpoint covers its data"
        );
        metric::CHECKPOINTS_ABANDONED
            .counter(&[self.pipeline])
            .increment(1);
    }
}

/// A stored checkpoint cannot be restored (corrupt or incomplete); an
/// older one is tried.
#[derive(Debug)]
pub struct CheckpointUnusable<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// What is wrong and what is tried instead, as the store says it.
    pub warning: &'a str,
}

impl Event for CheckpointUnusable<'_> {
    fn emit(self) {
        tracing::warn!(target: TARGET, pipeline = self.pipeline, "{}", self.warning);
    }
}

/// A run resumes from a checkpoint or savepoint (a notice).
#[derive(Debug)]
pub struct CheckpointRestored<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Checkpoint id.
    pub id: u64,
    /// A savepoint rather than a checkpoint.
    pub savepoint: bool,
    /// Its directory.
    pub dir: &'a Path,
    /// It was the final checkpoint of a run whose input had ended.
    pub finished: bool,
}

impl Event for CheckpointRestored<'_> {
    fn emit(self) {
        let what = if self.savepoint {
            "savepoint"
        } else {
            "checkpoint"
        };
        tracing::info!(target: NOTICE, pipeline = self.pipeline, checkpoint = self.id, "resuming from {what} {} ({})", self.id, self.dir.display());
        if self.finished {
            tracing::info!(
                target: NOTICE,
                pipeline = self.pipeline,
                checkpoint = self.id,
                "{what} {} was taken when the input had ended: the pipeline already finished and its output is complete; run with --fresh to process the input again",
                self.id
            );
        }
    }
}

/// An async operator's subtask re-issues the records that were in flight
/// when the checkpoint it restores was taken (a notice).
#[derive(Debug)]
pub struct InFlightReissued<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// Subtask index.
    pub subtask: u32,
    /// Records re-issued.
    pub records: usize,
}

impl Event for InFlightReissued<'_> {
    fn emit(self) {
        tracing::info!(
            target: NOTICE,
            pipeline = self.pipeline,
            operator = self.operator,
            subtask = self.subtask,
            records = self.records,
            "re-issuing {} records of {}[{}] that were in flight at the checkpoint",
            self.records,
            self.operator,
            self.subtask
        );
    }
}
