//! The async operator as a stage of a task: slots, ordering, timeouts,
//! retries, dead letters and checkpointed in-flight records.
//!
//! The task thread hands records to free slots (one tokio task per slot,
//! each owning one plugin instance) and collects their results from a
//! channel. When `capacity` records are in flight (waiting for a slot's
//! answer, or answered but held back for order), the task thread waits for
//! one to finish: the task's *backpressured* time, like waiting for a
//! network buffer. Results leave in input order (`ordered`) or as they
//! complete (`unordered`), in the latter case never overtaking a
//! checkpoint barrier or a watermark: each starts a new *epoch*, and a
//! record of a later epoch is released only once every record of the
//! earlier ones is. A watermark is held back by the stage (the task stops
//! it here) until every record before it has left, then sent on; the
//! slots keep working meanwhile.

use crate::config::{AsyncConfig, OnTimeout, OutputMode, RetryConfig};
use weir_events::AsyncSlotMetrics;
use crate::queue::Queue;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_format::{BatchWriter, Frames};
use weir_network::WaitClock;
use weir_task::{Stage, StageMetrics, StageState, TaskError};
use weir_wasm::{AsyncInstance, InstanceInfo, IoProvider, Limits, Plugin, ProcessError};

/// Magic of the in-flight snapshot file (version 1).
const SNAPSHOT_MAGIC: &[u8; 8] = b"WEIRASY1";

/// How one record ended.
#[derive(Debug)]
enum Outcome {
    Ok(Vec<u8>),
    Failed { reason: String, attempts: u32 },
}

struct Job {
    seq: u64,
    record: Arc<[u8]>,
}

struct Done {
    slot: usize,
    seq: u64,
    outcome: Outcome,
}

/// What a slot needs to (re)open its instance and run a record.
struct SlotCtx {
    plugin: Arc<Plugin>,
    info: InstanceInfo,
    limits: Limits,
    io: Arc<dyn IoProvider>,
    timeout: Duration,
    retry: RetryConfig,
    metrics: AsyncSlotMetrics,
}

/// Where a dead-letter sink runs: inside the operator's stage.
pub struct DeadLetter {
    /// The sink's vertex in the plan (for its checkpoint state).
    pub vertex: usize,
    /// The sink, as a stage.
    pub stage: Box<dyn Stage>,
}

/// Everything [`AsyncStage::open`] needs.
pub struct AsyncStageSpec {
    /// `operators[i]`, for messages.
    pub config_path: String,
    /// The operator's settings.
    pub config: AsyncConfig,
    /// The plugin (world `weir:plugin/async-operator`).
    pub plugin: Arc<Plugin>,
    /// Identity and plugin config.
    pub info: InstanceInfo,
    /// Per-instance limits.
    pub limits: Limits,
    /// The imports' implementation for this subtask.
    pub io: Arc<dyn IoProvider>,
    /// The dead-letter sink, if configured.
    pub dead_letter: Option<DeadLetter>,
    /// The stage's counters.
    pub metrics: Arc<StageMetrics>,
    /// The task's backpressure clock (a full set of slots is backpressure).
    pub backpressure: Arc<WaitClock>,
}

/// An async operator subtask.
pub struct AsyncStage {
    name: String,
    operator: String,
    subtask: u32,
    config_path: String,
    capacity: usize,
    on_timeout: OnTimeout,
    rt: Option<tokio::runtime::Runtime>,
    jobs: Vec<tokio::sync::mpsc::UnboundedSender<Job>>,
    free: Vec<usize>,
    done: crossbeam_channel::Receiver<Done>,
    pending: Queue<Outcome>,
    out: BatchWriter,
    dead: BatchWriter,
    dead_letter: Option<DeadLetter>,
    metrics: Arc<StageMetrics>,
    backpressure: Arc<WaitClock>,
    key_groups: Range<u32>,
    slot_metrics: AsyncSlotMetrics,
}

impl AsyncStage {
    /// Starts the slots: a tokio runtime for the subtask and `capacity`
    /// plugin instances, each opened (its `open` called) before this returns.
    pub fn open(spec: AsyncStageSpec) -> Result<Self, String> {
        let AsyncStageSpec { config_path, config, plugin, info, limits, io, dead_letter, metrics, backpressure } = spec;
        let name = format!("{}[{}]", info.operator, info.subtask);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("weir-async-{name}"))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime of {name}: {e}"))?;
        let slot_metrics = AsyncSlotMetrics::register(&info.pipeline, &info.operator, info.subtask, config.capacity);
        let ctx = Arc::new(SlotCtx {
            plugin,
            info: info.clone(),
            limits,
            io,
            timeout: config.timeout.0,
            retry: config.retry,
            metrics: slot_metrics.clone(),
        });
        let instances = rt.block_on(async {
            let mut v = Vec::with_capacity(config.capacity);
            for slot in 0..config.capacity {
                v.push(AsyncInstance::open(&ctx.plugin, &ctx.info, ctx.limits, ctx.io.clone(), slot).await?);
            }
            Ok::<_, weir_wasm::CallError>(v)
        });
        let instances = instances.map_err(|e| format!("the plugin refused to start: {e}"))?;
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut jobs = Vec::with_capacity(config.capacity);
        for (slot, instance) in instances.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            jobs.push(tx);
            rt.spawn(run_slot(slot, instance, rx, done_tx.clone(), ctx.clone()));
        }
        let parallelism = info.parallelism.max(1);
        Ok(Self {
            name,
            operator: info.operator.clone(),
            subtask: info.subtask,
            config_path,
            capacity: config.capacity,
            on_timeout: config.on_timeout,
            rt: Some(rt),
            free: (0..config.capacity).rev().collect(),
            jobs,
            done,
            pending: Queue::new(config.output == OutputMode::Ordered),
            out: BatchWriter::new(),
            dead: BatchWriter::new(),
            dead_letter,
            metrics,
            backpressure,
            key_groups: weir_format::keygroup::range(info.subtask, info.max_parallelism, parallelism),
            slot_metrics,
        })
    }

    /// Re-issues the records that were in flight when the checkpoint being
    /// restored was taken (only those of key groups this subtask owns: the
    /// snapshot files may come from another parallelism). Call before the
    /// task starts.
    pub fn restore(&mut self, files: &[&[u8]]) -> Result<usize, String> {
        let mut n = 0;
        for file in files {
            for (kg, record) in decode_snapshot(file)? {
                if self.key_groups.contains(&kg) {
                    self.dispatch(Arc::from(record)).map_err(|e| e.to_string())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn dispatch(&mut self, record: Arc<[u8]>) -> Result<(), TaskError> {
        while self.pending.len() >= self.capacity {
            self.collect(true)?;
        }
        let slot = self.free.pop().ok_or_else(|| TaskError::Stage(format!("{}: no free slot below capacity (a bug in weir)", self.name)))?;
        let seq = self.pending.push(record.clone());
        self.jobs[slot]
            .send(Job { seq, record })
            .map_err(|_| TaskError::Stage(format!("{}: async slot {slot} stopped (a bug in weir)", self.name)))
    }

    /// Takes finished results; with `block`, first waits for one (time the
    /// task counts as backpressured). Then releases what may leave.
    fn collect(&mut self, block: bool) -> Result<(), TaskError> {
        if block && !self.pending.is_empty() && self.done.is_empty() {
            self.backpressure.start_wait();
            let r = self.done.recv();
            self.backpressure.end_wait();
            match r {
                Ok(d) => self.apply(d),
                Err(_) => return Err(TaskError::Stage(format!("{}: every async slot stopped (a bug in weir)", self.name))),
            }
        }
        while let Ok(d) = self.done.try_recv() {
            self.apply(d);
        }
        self.release()?;
        self.slot_metrics.usage(self.capacity - self.free.len(), self.pending.len());
        Ok(())
    }

    fn apply(&mut self, d: Done) {
        self.free.push(d.slot);
        self.pending.complete(d.seq, d.outcome);
    }

    fn release(&mut self) -> Result<(), TaskError> {
        let mut pending = std::mem::replace(&mut self.pending, Queue::new(true));
        let r = pending.release(|record, outcome| self.emit(&record, outcome));
        self.pending = pending;
        r
    }

    fn emit(&mut self, record: &[u8], outcome: Outcome) -> Result<(), TaskError> {
        match outcome {
            Outcome::Ok(out) => {
                let n = weir_format::count(&out).map_err(|err| TaskError::Stage(format!("{}: the plugin returned a malformed batch: {err}", self.name)))?;
                self.out.extend_raw(&out, n);
                Ok(())
            }
            Outcome::Failed { reason, attempts } => {
                let rec = Frames::new(record).next().and_then(Result::ok);
                let describe = match &rec {
                    Some(r) => format!("record (key {}, timestamp {})", r.key.map_or("none".into(), |k| format!("{:?}", String::from_utf8_lossy(k))), r.timestamp),
                    None => "a record".into(),
                };
                if self.on_timeout == OnTimeout::Fail {
                    return Err(TaskError::Stage(format!(
                        "{} (`{}`): {describe} failed after {attempts} attempt(s): {reason}. The operator has on-timeout = \"fail\"; set on-timeout = \"dead-letter\" with a dead-letter sink to keep the pipeline running",
                        self.config_path, self.name
                    )));
                }
                self.slot_metrics.dead_lettered(&describe, attempts, &reason);
                let (key, timestamp, value) = match &rec {
                    Some(r) => (r.key, r.timestamp, r.value),
                    None => (None, 0, &[][..]),
                };
                let mut envelope = serde_json::json!({
                    "operator": self.operator,
                    "subtask": self.subtask,
                    "reason": reason,
                    "attempts": attempts,
                    "key": key.map(|k| String::from_utf8_lossy(k).into_owned()),
                    "timestamp": timestamp,
                });
                match std::str::from_utf8(value) {
                    Ok(v) => envelope["value"] = serde_json::Value::String(v.to_owned()),
                    Err(_) => envelope["value-hex"] = serde_json::Value::String(value.iter().map(|b| format!("{b:02x}")).collect()),
                }
                let body = serde_json::to_vec(&envelope).map_err(|e| TaskError::Stage(format!("{}: encoding a dead letter: {e}", self.name)))?;
                self.dead
                    .try_push(key, &body, timestamp, &[])
                    .map_err(|e| TaskError::Stage(format!("{} (`{}`): cannot dead-letter {describe}: {e}", self.config_path, self.name)))
            }
        }
    }

    /// Hands dead letters to the dead-letter sink.
    fn flush_dead(&mut self) -> Result<(), TaskError> {
        if self.dead.is_empty() {
            return Ok(());
        }
        let n = self.dead.records();
        let batch = self.dead.take();
        match &mut self.dead_letter {
            Some(d) => {
                d.stage.metrics().add_in(n, batch.len());
                d.stage.process(&batch, n)?;
                Ok(())
            }
            None => Err(TaskError::Stage(format!("{}: records to dead-letter but no dead-letter sink (a bug in weir: validation requires one)", self.name))),
        }
    }

    fn drain(&mut self) -> Result<(), TaskError> {
        while !self.pending.is_empty() {
            self.collect(true)?;
        }
        Ok(())
    }

    fn take_out(&mut self) -> Result<Vec<u8>, TaskError> {
        self.flush_dead()?;
        Ok(self.out.take())
    }
}

impl Stage for AsyncStage {
    fn process(&mut self, batch: &[u8], _records: usize) -> Result<Vec<u8>, TaskError> {
        let mut frames = Frames::new(batch);
        loop {
            let start = frames.offset();
            match frames.next() {
                None => break,
                Some(Ok(_)) => self.dispatch(Arc::from(&batch[start..frames.offset()]))?,
                Some(Err(e)) => return Err(TaskError::Stage(format!("{}: malformed input batch: {e}", self.name))),
            }
        }
        self.collect(false)?;
        self.take_out()
    }

    fn on_watermark(&mut self, watermark: i64) -> Result<Vec<u8>, TaskError> {
        // The watermark waits until every record before it has left
        // (`released_watermark`); records after it never overtake those
        // before it, even unordered.
        self.pending.watermark(watermark);
        self.collect(false)?;
        self.take_out()
    }

    fn holds_watermarks(&self) -> bool {
        true
    }

    fn released_watermark(&mut self) -> Option<i64> {
        if !self.out.is_empty() {
            // Records released but not yet returned to the task go first.
            return None;
        }
        self.pending.released_watermark()
    }

    fn next_processing_timer(&mut self) -> Option<i64> {
        (!self.pending.is_empty() || !self.out.is_empty() || !self.dead.is_empty() || self.pending.holds_watermark()).then(crate::now_ms)
    }

    fn on_processing_time(&mut self, _now_ms: i64) -> Result<Vec<u8>, TaskError> {
        self.collect(false)?;
        self.take_out()
    }

    fn on_idle(&mut self) -> Result<(), TaskError> {
        self.collect(false)
    }

    fn close(&mut self) -> Result<Vec<u8>, TaskError> {
        self.drain()?;
        // End of input: the task sends no watermark after this.
        self.pending.clear_watermarks();
        let out = self.take_out()?;
        if let Some(d) = &mut self.dead_letter {
            let rest = d.stage.close()?;
            debug_assert!(rest.is_empty(), "sinks emit nothing");
        }
        Ok(out)
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Option<StageState>, TaskError> {
        // Records after this barrier belong to a new epoch: in unordered
        // mode they never overtake the ones before it.
        self.pending.barrier();
        let span = (self.key_groups.end - self.key_groups.start).max(1);
        // Spread the records over the key groups this subtask owns, so a
        // restore at another parallelism hands each to exactly one subtask.
        let start = self.key_groups.start;
        let bytes = encode_snapshot(self.pending.records().enumerate().map(|(i, record)| (start + (i as u32 % span), record)));
        Ok(Some(StageState::Operator { key_groups: self.key_groups.clone(), job: Box::new(move || Ok(bytes)) }))
    }

    fn side_snapshot(&mut self, checkpoint: u64) -> Result<Vec<(usize, StageState)>, TaskError> {
        self.flush_dead()?;
        match &mut self.dead_letter {
            Some(d) => Ok(d.stage.snapshot(checkpoint)?.map(|s| vec![(d.vertex, s)]).unwrap_or_default()),
            None => Ok(Vec::new()),
        }
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), TaskError> {
        match &mut self.dead_letter {
            Some(d) => d.stage.checkpoint_complete(checkpoint),
            None => Ok(()),
        }
    }

    fn end_without_checkpoints(&mut self) -> Result<(), TaskError> {
        match &mut self.dead_letter {
            Some(d) => d.stage.end_without_checkpoints(),
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) -> Result<(), TaskError> {
        self.jobs.clear();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        match &mut self.dead_letter {
            Some(d) => d.stage.shutdown(),
            None => Ok(()),
        }
    }

    fn metrics(&self) -> &Arc<StageMetrics> {
        &self.metrics
    }
}

impl Drop for AsyncStage {
    fn drop(&mut self) {
        self.jobs.clear();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes an in-flight snapshot file of `(key group, record frame)` pairs:
/// a magic number, a `u32` count, then per record its key group and
/// length (`u32` each) and its bytes, little-endian.
pub fn encode_snapshot<'a>(records: impl Iterator<Item = (u32, &'a [u8])>) -> Vec<u8> {
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    bytes.extend_from_slice(&[0; 4]);
    let mut count = 0u32;
    for (kg, record) in records {
        bytes.extend_from_slice(&kg.to_le_bytes());
        bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
        bytes.extend_from_slice(record);
        count += 1;
    }
    bytes[8..12].copy_from_slice(&count.to_le_bytes());
    bytes
}

/// Parses an in-flight snapshot file written by [`encode_snapshot`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let bad = || "not an async operator's in-flight snapshot (corrupt, or written by another kind of operator)".to_owned();
    let rest = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()).ok_or_else(bad)?;
    let (count, mut rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let count = u32::from_le_bytes(*count) as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let (kg, r) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let (len, r) = r.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        if r.len() < len {
            return Err(bad());
        }
        out.push((u32::from_le_bytes(*kg), r[..len].to_vec()));
        rest = &r[len..];
    }
    // Bytes after the last record mean the count is damaged: records would be lost.
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// One slot: runs its records one at a time, with timeout and retries; a
/// timed-out or trapped instance is dropped and a fresh one opened. A panic
/// while running a record (a bug in the host's I/O) fails that record, like
/// a permanent error, instead of ending the slot: a slot that stopped would
/// never answer for its record and the stage would wait forever.
async fn run_slot(slot: usize, instance: AsyncInstance, mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>, done: crossbeam_channel::Sender<Done>, ctx: Arc<SlotCtx>) {
    let mut instance = Some(instance);
    while let Some(job) = jobs.recv().await {
        let outcome = match weir_connector::background::CatchUnwind(Box::pin(run_job(slot, &mut instance, &job, &ctx))).await {
            Ok(outcome) => outcome,
            Err(panic) => {
                // The instance may have been left mid-call.
                instance = None;
                Outcome::Failed { reason: format!("the host panicked while running it (a bug in weir): {panic}"), attempts: 1 }
            }
        };
        if done.send(Done { slot, seq: job.seq, outcome }).is_err() {
            return;
        }
    }
}

/// Runs one record on a slot's instance, with timeout and retries.
async fn run_job(slot: usize, instance: &mut Option<AsyncInstance>, job: &Job, ctx: &SlotCtx) -> Outcome {
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let error = match instance {
            None => match AsyncInstance::open(&ctx.plugin, &ctx.info, ctx.limits, ctx.io.clone(), slot).await {
                Ok(i) => {
                    *instance = Some(i);
                    attempt -= 1;
                    continue;
                }
                Err(e) => format!("could not open a fresh instance of the plugin: {e}"),
            },
            Some(inst) => {
                let started = Instant::now();
                let r = tokio::time::timeout(ctx.timeout, inst.process(&job.record)).await;
                ctx.metrics.attempt(started.elapsed());
                match r {
                    Ok(Ok(Ok(out))) => return Outcome::Ok(out),
                    Ok(Ok(Err(ProcessError::Permanent(m)))) => return Outcome::Failed { reason: m, attempts: attempt },
                    Ok(Ok(Err(ProcessError::Transient(m)))) => m,
                    Ok(Err(trap)) => {
                        // The store is unusable after a trap.
                        *instance = None;
                        format!("the plugin {trap}")
                    }
                    Err(_) => {
                        // Abandoned mid-call: the store is in an unknown state.
                        *instance = None;
                        ctx.metrics.timed_out(ctx.timeout);
                        format!("timed out after {}", humantime::format_duration(ctx.timeout))
                    }
                }
            }
        };
        if attempt > ctx.retry.attempts {
            return Outcome::Failed { reason: error, attempts: attempt };
        }
        ctx.metrics.retried(attempt, &error);
        tokio::time::sleep(ctx.retry.delay(attempt - 1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_snapshots_round_trip() {
        let records: [(u32, &[u8]); 3] = [(0, b"first"), (7, b""), (3, b"third")];
        let bytes = encode_snapshot(records.iter().copied());
        let back = decode_snapshot(&bytes).unwrap();
        assert_eq!(back.iter().map(|(kg, r)| (*kg, r.as_slice())).collect::<Vec<_>>(), records);
        assert_eq!(decode_snapshot(&encode_snapshot(std::iter::empty())).unwrap(), Vec::new());
    }

    /// Issue 16, found by the snapshot fuzz target
    /// (`fuzz/corpus/snapshot/in-flight-trailing-bytes`): bytes after the
    /// last record were ignored, so a damaged count silently dropped the
    /// records after it on restore.
    #[test]
    fn bytes_after_the_last_record_are_an_error() {
        let mut bytes = encode_snapshot([(0, &b"a"[..]), (1, &b"b"[..])].into_iter());
        // The count says one record where there are two.
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode_snapshot(&bytes).unwrap_err().contains("corrupt"));
        let mut bytes = encode_snapshot(std::iter::once((0, &b"a"[..])));
        bytes.push(0);
        assert!(decode_snapshot(&bytes).is_err());
        // Truncated, and a length past the end.
        let bytes = encode_snapshot(std::iter::once((0, &b"abc"[..])));
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
