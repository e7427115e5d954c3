//! The task loop.
//!
//! A *task* is one thread running a chain of *stages* for one subtask: an
//! input (a source, or an input gate fed by upstream tasks), then operators
//! and sinks connected by forward edges, which pass whole batches by value
//! with no channel in between, then outputs (partitioners to downstream
//! tasks). Wasm work runs on these threads, never on an async reactor.
//!
//! The loop is where time is accounted, Flink's way: time blocked waiting
//! for input is *idle*, time waiting for a free output buffer is
//! *backpressured*, the rest is *busy*. Each is a clock read at a state
//! change, not per record.

mod metrics;
mod stages;

pub use metrics::{LatencyHistogram, StageMetrics, TaskMetrics};
pub use stages::{ErrorPolicy, SinkStage, StageInfo, WasmStage};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weir_connector::{BatchWriter, Poll, Source};
use weir_network::{InputGate, Message, Partitioner, Received};

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

    /// The watermark advanced; fire event-time timers and return their output.
    fn on_watermark(&mut self, watermark: i64) -> Result<Vec<u8>, TaskError> {
        let _ = watermark;
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
    },
    /// Batches from upstream tasks.
    Gate(InputGate),
}

/// One subtask's thread: input, chained stages, outputs.
pub struct Task {
    /// `operator[subtask]` of the chain head, for logs and errors.
    pub name: String,
    /// Where records come from.
    pub input: TaskInput,
    /// The chained stages, in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// Partitioners to downstream tasks.
    pub outputs: Vec<Partitioner>,
    /// Time accounting of this task.
    pub metrics: Arc<TaskMetrics>,
    /// Set by the runtime to stop every task (another one failed).
    pub cancel: Arc<AtomicBool>,
    /// Bytes a source is asked for per poll (the network buffer size).
    pub batch_bytes: usize,
}

const MAX_WAIT: Duration = Duration::from_millis(100);

/// How often a source task sends its watermark downstream.
const WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

impl Task {
    /// Runs the task to the end of its input.
    pub fn run(mut self) -> Result<(), TaskError> {
        self.metrics.start();
        let result = match std::mem::replace(&mut self.input, TaskInput::Gate(weir_network::gate(0).1)) {
            TaskInput::Source { source, metrics, name } => self.run_source(source, &metrics, &name),
            TaskInput::Gate(gate) => self.run_gate(&gate),
        };
        self.metrics.finish();
        result
    }

    fn cancelled(&self) -> Result<(), TaskError> {
        if self.cancel.load(Ordering::Relaxed) { Err(TaskError::Cancelled) } else { Ok(()) }
    }

    fn run_source(&mut self, mut source: Box<dyn Source>, metrics: &Arc<StageMetrics>, name: &str) -> Result<(), TaskError> {
        let mut w = BatchWriter::with_capacity(self.batch_bytes + self.batch_bytes / 4);
        let mut watermark = i64::MIN;
        let mut watermark_sent = Instant::now();
        loop {
            self.cancelled()?;
            let poll = source
                .poll(&mut w, self.batch_bytes)
                .map_err(|e| TaskError::Stage(format!("source `{name}` ({}) failed: {e}", self.name)))?;
            if !w.is_empty() {
                let records = w.records();
                metrics.add_out(records, w.len());
                self.push(0, w.as_bytes(), records)?;
                w.clear();
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
                    self.fire_processing_timers()?;
                    self.metrics.idle.start_wait();
                    std::thread::sleep(d.min(MAX_WAIT));
                    self.metrics.idle.end_wait();
                }
                Poll::Finished => break,
            }
        }
        source.close().map_err(|e| TaskError::Stage(format!("source `{name}` failed to close: {e}")))?;
        self.end_of_input()
    }

    fn run_gate(&mut self, gate: &InputGate) -> Result<(), TaskError> {
        let channels = gate.channels as usize;
        let mut finished = vec![false; channels];
        let mut open_channels = channels;
        let mut watermarks = vec![i64::MIN; channels];
        let mut watermark = i64::MIN;
        while open_channels > 0 {
            self.cancelled()?;
            let wait = self.next_wakeup();
            let received = match gate.try_recv() {
                Some(env) => Received::Message(env),
                None => {
                    self.metrics.idle.start_wait();
                    let r = gate.recv_timeout(wait);
                    self.metrics.idle.end_wait();
                    r
                }
            };
            self.metrics.in_queued.store(gate.queued() as u64, std::sync::atomic::Ordering::Relaxed);
            match received {
                Received::Message(env) => match env.msg {
                    Message::Data { buf, records } => self.push(0, &buf, records as usize)?,
                    Message::Watermark(w) => {
                        let ch = env.channel as usize;
                        watermarks[ch] = watermarks[ch].max(w);
                        let min = min_open(&watermarks, &finished);
                        if min > watermark {
                            watermark = min;
                            self.advance_watermark(watermark)?;
                        }
                    }
                    Message::EndOfInput => {
                        let ch = env.channel as usize;
                        if !finished[ch] {
                            finished[ch] = true;
                            open_channels -= 1;
                            let min = min_open(&watermarks, &finished);
                            if open_channels > 0 && min > watermark {
                                watermark = min;
                                self.advance_watermark(watermark)?;
                            }
                        }
                    }
                },
                Received::Timeout => {}
                // Every upstream sender is gone without end-of-input: an
                // upstream task failed and reports the cause itself.
                Received::Disconnected => return Err(TaskError::Cancelled),
            }
            self.fire_processing_timers()?;
            if gate.queued() == 0 {
                // Input went idle: send what we have rather than wait for a
                // full buffer, so latency is low at low load.
                self.flush_idle()?;
            } else {
                self.flush_due()?;
            }
        }
        self.end_of_input()
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        self.outputs
            .iter()
            .filter_map(Partitioner::flush_deadline)
            .map(|d| d.saturating_duration_since(now))
            .fold(MAX_WAIT, Duration::min)
    }

    /// Runs a batch through stages `from..` and the outputs.
    fn push(&mut self, from: usize, batch: &[u8], records: usize) -> Result<(), TaskError> {
        let mut owned: Option<Vec<u8>> = None;
        let mut records = records;
        for i in from..self.stages.len() {
            if records == 0 {
                return Ok(());
            }
            let input = owned.as_deref().unwrap_or(batch);
            let stage = &mut self.stages[i];
            stage.metrics().add_in(records, input.len());
            let out = stage.process(input, records)?;
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
            p.emit(batch, records).map_err(|_| TaskError::Cancelled)?;
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64) -> Result<(), TaskError> {
        for i in 0..self.stages.len() {
            let out = self.stages[i].on_watermark(watermark)?;
            self.push_stage_output(i, out)?;
        }
        for p in &mut self.outputs {
            p.signal(|| Message::Watermark(watermark)).map_err(|_| TaskError::Cancelled)?;
        }
        Ok(())
    }

    fn fire_processing_timers(&mut self) -> Result<(), TaskError> {
        let now = now_ms();
        for i in 0..self.stages.len() {
            if self.stages[i].next_processing_timer().is_some_and(|t| t <= now) {
                let out = self.stages[i].on_processing_time(now)?;
                self.push_stage_output(i, out)?;
            }
        }
        Ok(())
    }

    /// Sends output produced by stage `i` outside `process` (timers, close) downstream.
    fn push_stage_output(&mut self, i: usize, out: Vec<u8>) -> Result<(), TaskError> {
        if out.is_empty() {
            return Ok(());
        }
        let records = weir_format::count(&out).map_err(|e| TaskError::Stage(format!("{}: malformed timer output: {e}", self.name)))?;
        self.stages[i].metrics().add_out(records, out.len());
        self.push(i + 1, &out, records)
    }

    fn end_of_input(&mut self) -> Result<(), TaskError> {
        // Bounded input is over: event time jumps to the end (Flink's MAX_WATERMARK).
        for i in 0..self.stages.len() {
            let out = self.stages[i].on_watermark(i64::MAX)?;
            self.push_stage_output(i, out)?;
            let out = self.stages[i].close()?;
            self.push_stage_output(i, out)?;
        }
        for p in &mut self.outputs {
            p.signal(|| Message::EndOfInput).map_err(|_| TaskError::Cancelled)?;
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

fn min_open(watermarks: &[i64], finished: &[bool]) -> i64 {
    watermarks.iter().zip(finished).filter(|(_, f)| !**f).map(|(w, _)| *w).min().unwrap_or(i64::MAX)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
