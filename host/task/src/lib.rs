//! The task loop.
//!
//! A *task* is one thread running a chain of *stages* for one subtask: an
//! input (a source, or an input gate fed by upstream tasks: the channels
//! of every input of the chain's head, see [`inputs`]), then operators
//! and sinks connected by forward edges, which pass whole batches by value
//! with no channel in between, then outputs (partitioners to downstream
//! tasks). Wasm work runs on these threads, never on an async reactor.
//!
//! The loop is where time is accounted, Flink's way: time blocked waiting
//! for input is *idle*, time waiting for a free output buffer is
//! *backpressured*, the rest is *busy*. Each is a clock read at a state
//! change, not per record.
//!
//! Hot reload happens here too ([`reload`]): a Wasm stage checks its
//! operator's [`ReloadSlot`] between batches (one atomic load) and swaps in
//! a new plugin version prepared in the background, keeping the state.
//!
//! An operator compiled into the host runs as a [`NativeStage`] ([`native`]):
//! the same loop, state and transactions as a Wasm stage, without the Wasm
//! boundary, so that the boundary's cost can be measured.

pub mod checkpoint;
pub mod inputs;
mod metrics;
pub mod native;
pub mod reload;
mod stages;

pub use checkpoint::{Ack, Aligner, Checkpointing, InFlight, StageState, StatePart};
pub use inputs::{InputMetrics, Inputs, Watermarks};
pub use metrics::{LatencyHistogram, StageMetrics, TaskMetrics};
pub use reload::{Probation, ReloadSlot, SwapAt, SwapReport};
pub use native::NativeStage;
pub use stages::{ErrorPolicy, SinkStage, StageInfo, TIMER_CALLS_PER_ROUND, TIMER_OUTPUT_PER_ROUND, TIMER_REARM_LIMIT, TIMERS_PER_CALL, WasmStage};

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weir_failpoint as failpoint;
use weir_connector::{BatchWriter, Poll, Source};
use weir_network::{EmitError, Envelope, InputGate, Message, Partitioner, Received};

/// Why a task stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A stage failed; the message is a full explanation for the user.
    #[error("{0}")]
    Stage(String),
    /// The pipeline is stopping because another task failed.
    #[error("cancelled")]
    Cancelled,
}

/// One step of a chain: an operator or a sink.
pub trait Stage: Send {
    /// Processes a batch of `records` records; returns the output batch.
    fn process(&mut self, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError>;

    /// Processes a batch that arrived on input `input` of this stage's
    /// vertex (its index in the vertex's inputs; 0 behind another stage of
    /// the chain). A Wasm operator passes it on to its plugin (the
    /// `inputs` interface: a join tells its sides apart); a sink and an
    /// async operator treat their inputs alike (a union).
    fn process_input(&mut self, input: usize, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        let _ = input;
        self.process(batch, records)
    }

    /// The watermark advanced; fire event-time timers and return their output.
    fn on_watermark(&mut self, watermark: i64) -> Result<Vec<u8>, TaskError> {
        let _ = watermark;
        Ok(Vec::new())
    }

    /// True when this stage passes watermarks on itself, once the records
    /// before them have left it ([`Stage::released_watermark`]): an async
    /// operator with records in flight. The task then stops a watermark at
    /// this stage.
    fn holds_watermarks(&self) -> bool {
        false
    }

    /// The newest watermark held back by this stage that may now go on
    /// downstream (every record before it has been returned).
    fn released_watermark(&mut self) -> Option<i64> {
        None
    }

    /// True while timers due at the current watermark wait to fire: a
    /// round of timer firing ended at its budget. The stage holds the
    /// watermark back meanwhile ([`Stage::holds_watermarks`]); the task
    /// calls [`Stage::fire_pending_timers`] between its other work (records,
    /// barriers) until this is false, and at the end of input before
    /// [`Stage::close`].
    fn timers_pending(&self) -> bool {
        false
    }

    /// Fires the next round of pending timers; returns their output.
    fn fire_pending_timers(&mut self) -> Result<Vec<u8>, TaskError> {
        Ok(Vec::new())
    }

    /// The earliest processing-time timer, if any.
    fn next_processing_timer(&mut self) -> Option<i64> {
        None
    }

    /// Fires processing-time timers due at `now_ms`.
    fn on_processing_time(&mut self, now_ms: i64) -> Result<Vec<u8>, TaskError> {
        let _ = now_ms;
        Ok(Vec::new())
    }

    /// End of input: return the final output.
    fn close(&mut self) -> Result<Vec<u8>, TaskError>;

    /// A checkpoint barrier passed this stage: return its part of the
    /// checkpoint (`None`: it has no state).
    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<StageState>, TaskError> {
        let _ = checkpoint;
        Ok(None)
    }

    /// State of vertices this stage runs on behalf of others (an async
    /// operator's dead-letter sink), taken right after [`Stage::snapshot`]:
    /// `(vertex, state)` pairs.
    fn side_snapshot(&mut self, checkpoint: u64) -> Result<Vec<(usize, StageState)>, TaskError> {
        let _ = checkpoint;
        Ok(Vec::new())
    }

    /// Every checkpoint up to `checkpoint` is complete (sinks publish).
    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), TaskError> {
        let _ = checkpoint;
        Ok(())
    }

    /// The input ended and the pipeline takes no checkpoints: publish
    /// everything now.
    fn end_without_checkpoints(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// The very end, after the final checkpoint: release resources.
    fn shutdown(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// The task's input is idle: a chance for housekeeping that must not
    /// wait for the next batch (a hot-reload swap).
    fn on_idle(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// Counters of this stage.
    fn metrics(&self) -> &Arc<StageMetrics>;
}

/// Where a task's records come from.
pub enum TaskInput {
    /// A source connector, polled by the task.
    Source {
        /// The connector.
        source: Box<dyn Source>,
        /// Its counters.
        metrics: Arc<StageMetrics>,
        /// The source's name, for errors.
        name: String,
        /// Its vertex in the plan (for checkpoints).
        vertex: usize,
    },
    /// Batches from upstream tasks: the channels of every input of the
    /// chain's head, input after input.
    Gate {
        /// The gate.
        gate: InputGate,
        /// Which channels belong to which input.
        inputs: Inputs,
    },
}

/// Records restored in flight to a stage of a task, to process before any
/// new input.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The stage, by index in the chain.
    pub stage: usize,
    /// The input of the stage's vertex they were on their way to.
    pub input: usize,
    /// The records, in frame format.
    pub records: Vec<u8>,
}

/// One subtask's thread: input, chained stages, outputs.
pub struct Task {
    /// `operator[subtask]` of the chain head, for logs and errors.
    pub name: String,
    /// Where records come from.
    pub input: TaskInput,
    /// The chained stages, in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// The plan vertex of each stage (for checkpoints).
    pub vertices: Vec<usize>,
    /// The subtask index this task runs.
    pub subtask: u32,
    /// The link to the checkpoint coordinator; `None` when the pipeline
    /// takes no checkpoints.
    pub checkpoints: Option<Checkpointing>,
    /// Highest completed checkpoint the stages were told about.
    pub completed: u64,
    /// Partitioners to downstream tasks.
    pub outputs: Vec<Partitioner>,
    /// Time accounting of this task.
    pub metrics: Arc<TaskMetrics>,
    /// Set by the runtime to stop every task (another one failed).
    pub cancel: Arc<AtomicBool>,
    /// Bytes a source is asked for per poll (the network buffer size).
    pub batch_bytes: usize,
    /// Records an unaligned checkpoint restored from had in flight to a
    /// stage of this task: processed before any new input. A stage that
    /// was a chain's head when the checkpoint was taken may be chained
    /// behind another one now.
    pub replay: Vec<Replay>,
    /// The latest checkpoint this task has taken (for its outputs'
    /// overdraft, see [`Task::run`]).
    pub taken: Arc<std::sync::atomic::AtomicU64>,
}

const MAX_WAIT: Duration = Duration::from_millis(100);

/// How often a source task sends its watermark downstream.
const WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

impl Task {
    /// Runs the task to the end of its input.
    pub fn run(mut self) -> Result<(), TaskError> {
        self.metrics.start();
        if let Some(c) = &self.checkpoints {
            // While an unaligned checkpoint waits for this task, a blocked
            // output may take its pool's overdraft to finish the batch.
            for p in &mut self.outputs {
                p.set_urgent(c.unaligned.clone(), self.taken.clone());
            }
        }
        let result = match std::mem::replace(&mut self.input, TaskInput::Gate { gate: weir_network::gate(0).1, inputs: Inputs::default() }) {
            TaskInput::Source { source, metrics, name, vertex } => {
                self.run_source(source, &metrics, &name, vertex).and_then(|end| self.finish(end))
            }
            TaskInput::Gate { gate, inputs } => self.run_gate(&gate, inputs).and_then(|()| self.finish(None)),
        };
        // A graceful stop ends the loops as a cancellation; once its
        // checkpoint is complete that is a clean end.
        let result = match result {
            Err(TaskError::Cancelled) if self.checkpoints.as_ref().is_some_and(Checkpointing::stop_reached) => self.stop(),
            r => r,
        };
        self.metrics.finish();
        result
    }

    /// After the end of input: the final checkpoint (or, without
    /// checkpoints, publishing at once), then shutting the stages down.
    fn finish(&mut self, source_end: Option<(usize, Vec<u8>)>) -> Result<(), TaskError> {
        let Some(c) = self.checkpoints.clone() else {
            for stage in &mut self.stages {
                stage.end_without_checkpoints()?;
                stage.shutdown()?;
            }
            return Ok(());
        };
        let id = c.final_checkpoint();
        let started = Instant::now();
        let mut parts = Vec::new();
        if let Some((vertex, position)) = source_end {
            parts.push(StatePart::Source { vertex, position });
        }
        let result = self.snapshot_stages(id).map(|mut p| {
            parts.append(&mut p);
            parts
        });
        self.ack(id, true, result, Duration::ZERO, started.elapsed());
        // The final checkpoint completes once every task got here.
        while c.completed.load(Ordering::Acquire) < id {
            self.cancelled()?;
            self.metrics.idle.start_wait();
            std::thread::sleep(Duration::from_millis(5));
            self.metrics.idle.end_wait();
        }
        self.notify_completed()?;
        for stage in &mut self.stages {
            stage.shutdown()?;
        }
        Ok(())
    }

    fn snapshot_stages(&mut self, id: u64) -> Result<Vec<StatePart>, String> {
        let mut parts = Vec::new();
        for (stage, &vertex) in self.stages.iter_mut().zip(&self.vertices) {
            match stage.snapshot(id) {
                Ok(Some(state)) => parts.push(StatePart::Stage { vertex, state }),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match stage.side_snapshot(id) {
                Ok(side) => parts.extend(side.into_iter().map(|(vertex, state)| StatePart::Stage { vertex, state })),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(parts)
    }

    fn ack(&self, checkpoint: u64, finished: bool, result: Result<Vec<StatePart>, String>, alignment: Duration, sync: Duration) {
        if let Some(c) = &self.checkpoints {
            // The coordinator being gone means the run is ending.
            let _ = c.acks.send(Ack { task: c.task, checkpoint, subtask: self.subtask, finished, result, alignment, sync });
        }
    }

    /// Takes checkpoint `id` at this point of the stream: snapshots the
    /// stages, forwards the barrier, acknowledges.
    fn checkpoint(&mut self, id: u64, source: Option<(usize, Result<Vec<u8>, String>)>, alignment: Duration) -> Result<(), TaskError> {
        let (result, sync) = self.snapshot_and_forward(id, source)?;
        self.ack(id, false, result, alignment, sync);
        Ok(())
    }

    /// Snapshots the stages and forwards the barrier of checkpoint `id`;
    /// returns the state (or why there is none) and the time it took.
    fn snapshot_and_forward(&mut self, id: u64, source: Option<(usize, Result<Vec<u8>, String>)>) -> Result<(Result<Vec<StatePart>, String>, Duration), TaskError> {
        let started = Instant::now();
        self.taken.store(id, Ordering::Release);
        let mut parts = Vec::new();
        let mut failed = None;
        if let Some((vertex, position)) = source {
            match position {
                Ok(position) => parts.push(StatePart::Source { vertex, position }),
                Err(e) => failed = Some(e),
            }
        }
        let stages = self.snapshot_stages(id);
        for p in &mut self.outputs {
            p.signal(|| Message::Barrier(id)).map_err(|_| TaskError::Cancelled)?;
        }
        failpoint::hit("after-barrier-injection", id);
        let result = match (failed, stages) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(mut s)) => {
                parts.append(&mut s);
                Ok(parts)
            }
        };
        if let Err(e) = &result {
            tracing::warn!(task = %self.name, checkpoint = id, "could not take its part of the checkpoint: {e}");
        }
        Ok((result, started.elapsed()))
    }

    /// Takes unaligned checkpoint `id` now, ahead of the messages in
    /// `input.released` (see [`checkpoint`]): snapshot, barrier forwarded,
    /// then the overtaken records are recorded until every channel's
    /// barrier has arrived, and only then acknowledged.
    fn start_unaligned(&mut self, id: u64, input: &mut GateInput) -> Result<(), TaskError> {
        input.last_id = id;
        let flight = input.aligner.start_unaligned(id, &mut input.released, &input.finished);
        let (state, sync) = self.snapshot_and_forward(id, None)?;
        input.inflight = Some(Unaligned { flight, state, sync });
        self.finish_unaligned(input);
        Ok(())
    }

    /// Acknowledges the unaligned checkpoint in progress once its
    /// recording is complete.
    fn finish_unaligned(&mut self, input: &mut GateInput) {
        if !input.inflight.as_ref().is_some_and(|u| u.flight.complete()) {
            return;
        }
        let Unaligned { flight, state, sync } = input.inflight.take().expect("checked");
        let vertex = self.vertices.first().copied().unwrap_or_default();
        let bytes = flight.bytes();
        let state = state.map(|mut parts| {
            if bytes > 0 {
                parts.push(StatePart::InFlight { vertex, channels: flight.channels, inputs: input.inputs.of_channel.clone() });
            }
            parts
        });
        tracing::debug!(task = %self.name, checkpoint = flight.id, records = flight.records, bytes, "unaligned checkpoint: in-flight records recorded");
        self.ack(flight.id, false, state, flight.started.elapsed(), sync);
    }

    /// An unaligned checkpoint this task has not taken yet, if any: its
    /// barrier may overtake what is queued.
    fn unaligned_due(&self, input: &GateInput) -> Option<u64> {
        let c = self.checkpoints.as_ref()?;
        let id = c.unaligned.load(Ordering::Acquire);
        let taken = input.last_id >= id && input.aligner.aligning() != Some(id);
        (id > 0 && !taken && input.inflight.is_none()).then_some(id)
    }

    /// Processes the records restored in flight, before any new input,
    /// in batches of about a network buffer.
    fn replay(&mut self) -> Result<(), TaskError> {
        for r in std::mem::take(&mut self.replay) {
            self.replay_into(r.stage, r.input, &r.records)?;
        }
        Ok(())
    }

    fn replay_into(&mut self, from: usize, edge: usize, replay: &[u8]) -> Result<(), TaskError> {
        let mut start = 0;
        let mut frames = weir_format::Frames::new(replay);
        let mut n = 0;
        loop {
            let at = frames.offset();
            let next = frames.next();
            if next.is_none() || at - start >= self.batch_bytes {
                if n > 0 {
                    self.push(from, edge, &replay[start..at], n)?;
                }
                start = at;
                n = 0;
            }
            match next {
                None => break,
                Some(r) => {
                    r.map_err(|e| TaskError::Stage(format!("{}: restored in-flight records are malformed: {e}", self.name)))?;
                    n += 1;
                }
            }
        }
        Ok(())
    }

    /// Tells the stages about checkpoints completed since the last call;
    /// ends the task (as cancelled) once a requested stop is reached.
    fn notify_completed(&mut self) -> Result<(), TaskError> {
        self.commit_completed()?;
        if self.checkpoints.as_ref().is_some_and(Checkpointing::stop_reached) {
            return Err(TaskError::Cancelled);
        }
        Ok(())
    }

    /// The end of a graceful stop: the stop checkpoint is complete, so the
    /// stages publish it and shut down.
    fn stop(&mut self) -> Result<(), TaskError> {
        self.commit_completed()?;
        for stage in &mut self.stages {
            stage.shutdown()?;
        }
        tracing::debug!(task = %self.name, checkpoint = self.completed, "stopped gracefully");
        Ok(())
    }

    fn commit_completed(&mut self) -> Result<(), TaskError> {
        let Some(c) = &self.checkpoints else { return Ok(()) };
        let done = c.completed.load(Ordering::Acquire);
        if done > self.completed {
            self.completed = done;
            for stage in &mut self.stages {
                stage.checkpoint_complete(done)?;
            }
        }
        Ok(())
    }

    fn cancelled(&self) -> Result<(), TaskError> {
        if self.cancel.load(Ordering::Relaxed) { Err(TaskError::Cancelled) } else { Ok(()) }
    }

    fn run_source(&mut self, mut source: Box<dyn Source>, metrics: &Arc<StageMetrics>, name: &str, vertex: usize) -> Result<Option<(usize, Vec<u8>)>, TaskError> {
        let mut w = BatchWriter::with_capacity(self.batch_bytes + self.batch_bytes / 4);
        let mut watermark = i64::MIN;
        let mut watermark_sent = Instant::now();
        // The checkpoints this source has taken part in: none yet. Starting
        // from the highest complete one (0 in a new run), not from the
        // current trigger, so a checkpoint the coordinator triggered before
        // this loop first ran is snapshotted at its first turn. Starting
        // from the trigger skipped such a checkpoint, and it stayed pending
        // until the end of the input: no checkpoint completed in the whole
        // run. JavaScript and Python source plugins hit it in most runs
        // (issue 21; plugin_connectors.rs, the counter-source crash test).
        let mut triggered = self.checkpoints.as_ref().map_or(0, |c| c.completed.load(Ordering::Acquire));
        // Positions of checkpoints not yet complete, oldest first: once one
        // completes, the source hears about it with its position.
        let mut positions: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        self.replay()?;
        loop {
            self.cancelled()?;
            if let Some(c) = &self.checkpoints {
                let wanted = c.trigger.load(Ordering::Acquire);
                if wanted > triggered {
                    triggered = wanted;
                    let position = source.snapshot().map_err(|e| format!("source `{name}` could not record its position: {e}"));
                    if let Ok(p) = &position {
                        positions.push_back((wanted, p.clone()));
                    }
                    self.checkpoint(wanted, Some((vertex, position)), Duration::ZERO)?;
                }
                self.notify_completed()?;
                let done = self.completed;
                let mut newest = None;
                while positions.front().is_some_and(|(id, _)| *id <= done) {
                    newest = positions.pop_front();
                }
                if let Some((id, position)) = newest {
                    source
                        .checkpoint_complete(id, &position)
                        .map_err(|e| TaskError::Stage(format!("source `{name}` ({}) failed after checkpoint {id}: {e}", self.name)))?;
                }
            }
            let poll = source
                .poll(&mut w, self.batch_bytes)
                .map_err(|e| TaskError::Stage(format!("source `{name}` ({}) failed: {e}", self.name)))?;
            if !w.is_empty() {
                let records = w.records();
                metrics.add_out(records, w.len());
                self.push(0, 0, w.as_bytes(), records)?;
                w.clear();
                // Timers due while the source is busy fire between batches.
                self.fire_processing_timers()?;
                self.flush_due()?;
            }
            // Like Flink's auto-watermark interval: a watermark flushes the
            // buffers ahead of it, so it is sent at most every 200 ms.
            if watermark_sent.elapsed() >= WATERMARK_INTERVAL
                && let Some(wm) = source.watermark()
                && wm > watermark
            {
                watermark = wm;
                watermark_sent = Instant::now();
                self.advance_watermark(wm)?;
            }
            match poll {
                Poll::Ready => {}
                Poll::Idle(d) => {
                    self.flush_idle()?;
                    self.stages_idle()?;
                    self.fire_processing_timers()?;
                    let wait = d.min(MAX_WAIT).min(self.stage_timer_wait());
                    self.metrics.idle.start_wait();
                    std::thread::sleep(wait);
                    self.metrics.idle.end_wait();
                }
                Poll::Finished => break,
            }
        }
        let end = match &self.checkpoints {
            Some(_) => Some((
                vertex,
                source.snapshot().map_err(|e| TaskError::Stage(format!("source `{name}` could not record its final position: {e}")))?,
            )),
            None => None,
        };
        source.close().map_err(|e| TaskError::Stage(format!("source `{name}` failed to close: {e}")))?;
        self.end_of_input()?;
        Ok(end)
    }

    fn run_gate(&mut self, gate: &InputGate, inputs: Inputs) -> Result<(), TaskError> {
        let _ = self.metrics.in_records.set(gate.records_counter());
        let _ = self.metrics.in_allowance.set(gate.allowance());
        let channels = gate.channels as usize;
        assert_eq!(inputs.of_channel.len(), channels, "every gate channel belongs to an input");
        let _ = self.metrics.inputs.set(inputs.metrics.clone());
        let timeouts = inputs.of_channel.iter().map(|&i| inputs.idle_timeout[i]).collect();
        let mut input = GateInput {
            finished: vec![false; channels],
            open: channels,
            watermarks: Watermarks::new(timeouts, Instant::now()),
            inputs,
            aligner: Aligner::new(channels),
            released: VecDeque::new(),
            last_id: 0,
            inflight: None,
        };
        self.replay()?;
        while input.open > 0 {
            self.cancelled()?;
            self.notify_completed()?;
            if let Some(u) = input.inflight.as_mut() {
                // Recording: the remaining barriers overtake the queue too.
                while let Some(env) = gate.try_recv() {
                    input.released.push_back(env);
                }
                u.flight.overtake(&mut input.released);
                self.finish_unaligned(&mut input);
            } else if let Some(id) = self.unaligned_due(&input) {
                // Look ahead: the barrier may be queued behind buffers.
                while let Some(env) = gate.try_recv() {
                    input.released.push_back(env);
                }
                if input.aligner.aligning() == Some(id) || input.released.iter().any(|e| matches!(e.msg, Message::Barrier(b) if b == id)) {
                    self.start_unaligned(id, &mut input)?;
                }
            }
            let received = match input.released.pop_front().or_else(|| gate.try_recv()) {
                Some(env) => Received::Message(env),
                None => {
                    let wait = self.next_wakeup();
                    self.metrics.idle.start_wait();
                    let r = gate.recv_timeout(wait);
                    self.metrics.idle.end_wait();
                    r
                }
            };
            self.metrics.in_queued.store(gate.queued() as u64, Ordering::Relaxed);
            match received {
                Received::Message(env) => self.on_message(env, &mut input)?,
                Received::Timeout => self.stages_idle()?,
                // Every upstream sender is gone without end-of-input: an
                // upstream task failed and reports the cause itself.
                Received::Disconnected => return Err(TaskError::Cancelled),
            }
            if input.watermarks.has_idleness() {
                let advanced = input.watermarks.tick(Instant::now(), |ch| input.aligner.is_blocked(ch));
                input.show_idle();
                if let Some(w) = advanced {
                    self.advance_watermark(w)?;
                }
            }
            self.fire_processing_timers()?;
            if gate.queued() == 0 && input.released.is_empty() {
                // Input went idle: send what we have rather than wait for a
                // full buffer, so latency is low at low load.
                self.flush_idle()?;
            } else {
                self.flush_due()?;
            }
        }
        self.end_of_input()
    }

    fn on_message(&mut self, env: Envelope, input: &mut GateInput) -> Result<(), TaskError> {
        let ch = env.channel as usize;
        if let Some(u) = input.inflight.as_mut() {
            let barrier = u.flight.observe(&env);
            self.finish_unaligned(input);
            if barrier {
                return Ok(());
            }
        } else if let Message::Barrier(id) = env.msg
            && self.unaligned_due(input) == Some(id)
        {
            // An unaligned barrier at the front of the queue.
            input.released.push_front(env);
            return self.start_unaligned(id, input);
        }
        if input.aligner.is_blocked(ch) {
            input.aligner.hold(env);
            return Ok(());
        }
        let edge = input.inputs.of_channel[ch];
        let aligned = match env.msg {
            Message::Data { buf, records } => {
                input.watermarks.heard(ch, Instant::now);
                input.inputs.metrics[edge].add_in(u64::from(records));
                self.push(0, edge, &buf, records as usize)?;
                None
            }
            Message::Watermark(w) => {
                let advanced = input.watermarks.watermark(ch, w, Instant::now);
                input.show_watermark(edge);
                if let Some(min) = advanced {
                    self.advance_watermark(min)?;
                }
                None
            }
            Message::Barrier(id) => {
                input.last_id = input.last_id.max(id);
                input.aligner.barrier(ch, id)
            }
            Message::EndOfInput => {
                if input.finished[ch] {
                    return Ok(());
                }
                input.finished[ch] = true;
                input.open -= 1;
                if let Some(min) = input.watermarks.end(ch) {
                    self.advance_watermark(min)?;
                }
                input.show_watermark(edge);
                input.aligner.end_of_input(ch)
            }
        };
        if let Some((id, alignment)) = aligned {
            self.checkpoint(id, None, alignment)?;
            let held: Vec<Envelope> = input.aligner.release().collect();
            for (i, env) in held.into_iter().enumerate() {
                input.released.insert(i, env);
            }
        }
        Ok(())
    }

    fn next_wakeup(&mut self) -> Duration {
        let now = Instant::now();
        let wait = self
            .outputs
            .iter()
            .filter_map(Partitioner::flush_deadline)
            .map(|d| d.saturating_duration_since(now))
            .fold(MAX_WAIT, Duration::min);
        wait.min(self.stage_timer_wait())
    }

    /// How long until the earliest processing-time timer of a stage (at
    /// least 1 ms: an async operator with records in flight asks to be
    /// polled this way).
    fn stage_timer_wait(&mut self) -> Duration {
        if self.stages.iter().any(|s| s.timers_pending()) {
            return Duration::ZERO;
        }
        let now = now_ms();
        self.stages
            .iter_mut()
            .filter_map(|s| s.next_processing_timer())
            .map(|t| Duration::from_millis(t.saturating_sub(now).max(1) as u64))
            .fold(MAX_WAIT, Duration::min)
    }

    /// Runs a batch that arrived on input `edge` of stage `from` through
    /// stages `from..` and the outputs.
    fn push(&mut self, from: usize, edge: usize, batch: &[u8], records: usize) -> Result<(), TaskError> {
        let mut owned: Option<Vec<u8>> = None;
        let mut records = records;
        for i in from..self.stages.len() {
            if records == 0 {
                return Ok(());
            }
            let input = owned.as_deref().unwrap_or(batch);
            let stage = &mut self.stages[i];
            stage.metrics().add_in(records, input.len());
            let out = if i == from { stage.process_input(edge, input, records)? } else { stage.process(input, records)? };
            records = weir_format::count(&out).map_err(|e| TaskError::Stage(format!("{}: a stage produced a malformed batch: {e}", self.name)))?;
            stage.metrics().add_out(records, out.len());
            owned = Some(out);
        }
        let out = owned.as_deref().unwrap_or(batch);
        self.emit(out, records)
    }

    fn emit(&mut self, batch: &[u8], records: usize) -> Result<(), TaskError> {
        if records == 0 {
            return Ok(());
        }
        for p in &mut self.outputs {
            p.emit(batch, records).map_err(|e| match e {
                EmitError::Disconnected => TaskError::Cancelled,
                e => TaskError::Stage(format!("the output of `{}` (task {}): {e}", p.producer(), self.name)),
            })?;
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
        self.advance_watermark_from(0, watermark)
    }

    /// Passes a watermark through stages `from..` and the outputs, unless a
    /// stage holds it back (it is released by [`Task::release_watermarks`]).
    fn advance_watermark_from(&mut self, from: usize, watermark: i64) -> Result<(), TaskError> {
        for i in from..self.stages.len() {
            let out = self.stages[i].on_watermark(watermark)?;
            self.push_stage_output(i, out)?;
            if self.stages[i].holds_watermarks() {
                return Ok(());
            }
        }
        for p in &mut self.outputs {
            p.signal(|| Message::Watermark(watermark)).map_err(|_| TaskError::Cancelled)?;
        }
        Ok(())
    }

    /// Sends on the watermarks stages held back and now release.
    fn release_watermarks(&mut self) -> Result<(), TaskError> {
        for i in 0..self.stages.len() {
            if let Some(w) = self.stages[i].released_watermark() {
                self.advance_watermark_from(i + 1, w)?;
            }
        }
        Ok(())
    }

    /// Fires due processing-time timers and the next round of pending
    /// event-time timers, then sends on the watermarks that releases.
    fn fire_processing_timers(&mut self) -> Result<(), TaskError> {
        let now = now_ms();
        for i in 0..self.stages.len() {
            if self.stages[i].timers_pending() {
                let out = self.stages[i].fire_pending_timers()?;
                self.push_stage_output(i, out)?;
            }
            if self.stages[i].next_processing_timer().is_some_and(|t| t <= now) {
                let out = self.stages[i].on_processing_time(now)?;
                self.push_stage_output(i, out)?;
            }
        }
        self.release_watermarks()
    }

    /// Sends output produced by stage `i` outside `process` (timers, close) downstream.
    fn push_stage_output(&mut self, i: usize, out: Vec<u8>) -> Result<(), TaskError> {
        if out.is_empty() {
            return Ok(());
        }
        let records = weir_format::count(&out).map_err(|e| TaskError::Stage(format!("{}: malformed timer output: {e}", self.name)))?;
        self.stages[i].metrics().add_out(records, out.len());
        self.push(i + 1, 0, &out, records)
    }

    fn end_of_input(&mut self) -> Result<(), TaskError> {
        // Bounded input is over: event time jumps to the end (Flink's MAX_WATERMARK).
        for i in 0..self.stages.len() {
            let out = self.stages[i].on_watermark(i64::MAX)?;
            self.push_stage_output(i, out)?;
            // Every event-time timer is due now; a stage that fires them in
            // rounds ends (or fails, if they re-arm forever) before closing.
            while self.stages[i].timers_pending() {
                self.cancelled()?;
                let out = self.stages[i].fire_pending_timers()?;
                self.push_stage_output(i, out)?;
            }
            let out = self.stages[i].close()?;
            self.push_stage_output(i, out)?;
        }
        for p in &mut self.outputs {
            p.signal(|| Message::EndOfInput).map_err(|_| TaskError::Cancelled)?;
        }
        Ok(())
    }

    fn stages_idle(&mut self) -> Result<(), TaskError> {
        for stage in &mut self.stages {
            stage.on_idle()?;
        }
        Ok(())
    }

    fn flush_idle(&mut self) -> Result<(), TaskError> {
        for p in &mut self.outputs {
            p.flush_idle().map_err(|_| TaskError::Cancelled)?;
        }
        Ok(())
    }

    fn flush_due(&mut self) -> Result<(), TaskError> {
        for p in &mut self.outputs {
            if p.flush_due() {
                p.flush().map_err(|_| TaskError::Cancelled)?;
            }
        }
        Ok(())
    }
}

/// What a gate task tracks about its input channels.
struct GateInput {
    finished: Vec<bool>,
    open: usize,
    watermarks: Watermarks,
    inputs: Inputs,
    aligner: Aligner,
    /// Messages held back during an alignment, or moved out of the gate
    /// to find an unaligned barrier, to process before new ones.
    released: VecDeque<Envelope>,
    /// The latest checkpoint whose barrier this task has seen.
    last_id: u64,
    /// The unaligned checkpoint whose in-flight records are being recorded.
    inflight: Option<Unaligned>,
}

/// An unaligned checkpoint taken, not yet acknowledged.
struct Unaligned {
    flight: InFlight,
    state: Result<Vec<StatePart>, String>,
    sync: Duration,
}

impl GateInput {
    /// The channels of input `edge`.
    fn channels_of(&self, edge: usize) -> impl Iterator<Item = usize> + '_ {
        self.inputs.of_channel.iter().enumerate().filter(move |(_, i)| **i == edge).map(|(c, _)| c)
    }

    /// Updates input `edge`'s watermark in its metrics.
    fn show_watermark(&self, edge: usize) {
        let w = self.watermarks.of(self.channels_of(edge));
        self.inputs.metrics[edge].watermark.store(w, Ordering::Relaxed);
    }

    /// Updates which inputs are idle in their metrics.
    fn show_idle(&self) {
        for (edge, m) in self.inputs.metrics.iter().enumerate() {
            let idle = self.channels_of(edge).filter(|&c| !self.finished[c]).all(|c| self.watermarks.is_idle(c));
            if idle != m.idle.swap(idle, Ordering::Relaxed) {
                if idle {
                    m.idle_time.start_wait();
                } else {
                    m.idle_time.end_wait();
                }
                tracing::debug!(input = edge, idle, "input idleness changed");
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
