//! The stages a chain is made of: Wasm operators and sinks.

use crate::reload::{Outcome, ReloadSlot, StageReload};
use crate::{Stage, StageMetrics, StageState, TaskError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use weir_failpoint as failpoint;
use weir_connector::{Committable, Sink};
use weir_format::{BatchWriter, Frames, Preview, RecordRef};
use weir_state::TimerService;
use weir_wasm::{CallError, OperatorInstance, TimerFired, TrapKind};

/// Timers handed to one `on-timer` call, at most.
pub const TIMERS_PER_CALL: usize = 1024;
/// `on-timer` calls in one round of timer firing, at most. Between rounds
/// the task moves records, barriers and watermarks on, so timers that keep
/// firing cannot stall a checkpoint.
pub const TIMER_CALLS_PER_ROUND: usize = 64;
/// Output bytes after which a round of timer firing ends early, so the
/// output of timers goes downstream in pieces instead of piling up.
pub const TIMER_OUTPUT_PER_ROUND: usize = 4 << 20;
/// How many times in a row an event-time timer may be re-registered at
/// or before the timer that fired it (at the end of input: at any time,
/// since every timer is due there) before the operator fails: such a chain
/// is due again at once, every time, and would fire forever.
pub const TIMER_REARM_LIMIT: u32 = 1000;

/// What an operator does with a record its plugin rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop the pipeline with a message naming the record (the default).
    #[default]
    Fail,
    /// Log the record and the reason, count it, and continue without it.
    Skip,
}

/// Who a stage is, for messages.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// Operator name.
    pub operator: String,
    /// Where it is in the pipeline file (e.g. `operators[1]`).
    pub config_path: String,
    /// Plugin name.
    pub plugin: String,
    /// Plugin file.
    pub plugin_path: String,
    /// Short content hash of the plugin.
    pub version: String,
    /// Subtask index.
    pub subtask: u32,
}

impl StageInfo {
    pub(crate) fn who(&self) -> String {
        format!(
            "operator `{}` (plugin `{}`, {}, version {}) subtask {}",
            self.operator, self.plugin, self.plugin_path, self.version, self.subtask
        )
    }
}

/// How far a stage has got through its input, for messages: which batch,
/// which record, and when a skipped record was last logged.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub batches: u64,
    pub records: u64,
    pub last_skip_log: Option<Instant>,
}

impl Seen {
    /// A batch of `records` records went through.
    pub fn batch_done(&mut self, records: usize) {
        self.batches += 1;
        self.records += records as u64;
    }
}

/// A call failed with an error that is not a rejected record: the
/// stage's caller explains it ([`call_failed`]) with the batch it failed
/// on (what was left of it after skipped records), or the stage stopped.
pub(crate) enum Unhandled {
    /// The `on-error` policy stopped the stage.
    Stop(TaskError),
    /// Another failure of the call on `batch` (`records` records).
    Call { error: CallError, batch: Vec<u8>, records: usize },
}

/// A batch through `call` under the `on-error` policy: a rejected record
/// stops the stage (`fail`) or is logged, counted and taken out, and the
/// rest of the batch goes through `call` again (`skip`). What a Wasm and a
/// native operator stage share.
pub(crate) fn process_with_policy(
    batch: &[u8],
    records: usize,
    policy: ErrorPolicy,
    info: &StageInfo,
    metrics: &StageMetrics,
    seen: &mut Seen,
    mut call: impl FnMut(&[u8]) -> Result<Vec<u8>, CallError>,
) -> Result<Vec<u8>, Unhandled> {
    let mut owned: Option<(Vec<u8>, usize)> = None;
    loop {
        let (cur, n) = owned.as_ref().map_or((batch, records), |(b, n)| (b.as_slice(), *n));
        match call(cur) {
            Ok(out) => {
                seen.batch_done(records);
                return Ok(out);
            }
            Err(CallError::Rejected { index, message }) if (index as usize) < n => {
                let rec = Frames::new(cur).nth(index as usize).and_then(Result::ok).expect("index checked");
                let position = seen.records + index as u64;
                if policy == ErrorPolicy::Fail {
                    return Err(Unhandled::Stop(TaskError::Stage(format!(
                        "{} rejected record #{position} of its input ({}): {message}. The pipeline stopped (on-error = \"fail\"). Fix the input, or set `on-error = \"skip\"` in {} to set such records aside and continue.",
                        info.who(),
                        describe(&rec),
                        info.config_path
                    ))));
                }
                metrics.records_skipped.fetch_add(1, Ordering::Relaxed);
                if seen.last_skip_log.is_none_or(|t| t.elapsed().as_secs() >= 1) {
                    seen.last_skip_log = Some(Instant::now());
                    tracing::warn!(
                        operator = %info.operator,
                        subtask = info.subtask,
                        skipped_total = metrics.records_skipped.load(Ordering::Relaxed),
                        "skipped record #{position} ({}): {message}",
                        describe(&rec)
                    );
                }
                let mut w = BatchWriter::with_capacity(cur.len());
                for (i, r) in Frames::new(cur).enumerate() {
                    if i != index as usize {
                        w.push_record(&r.expect("well-formed batch"));
                    }
                }
                owned = Some((w.finish(), n - 1));
                if n == 1 {
                    seen.records += records as u64;
                    return Ok(Vec::new());
                }
            }
            Err(error) => return Err(Unhandled::Call { error, batch: cur.to_vec(), records: n }),
        }
    }
}

/// A record, shortened, for messages.
fn describe(rec: &RecordRef<'_>) -> String {
    let key = rec.key.map_or_else(|| "none".to_owned(), |k| Preview(k).to_string());
    format!("key {key}, timestamp {}, value {}", rec.timestamp, Preview(rec.value))
}

/// The message of a failed call of an operator stage (`what`: the call,
/// `batch`: the batch of a failed `process` and its record count).
pub(crate) fn call_failed(info: &StageInfo, seen: &Seen, what: &str, e: CallError, batch: Option<(&[u8], usize)>) -> TaskError {
    let who = info.who();
    let place = match batch {
        Some((b, n)) => {
            let first = Frames::new(b).next().and_then(Result::ok).map(|r| describe(&r)).unwrap_or_default();
            format!(" while processing batch #{} (records {}..{} of its input; first record: {first})", seen.batches + 1, seen.records, seen.records + n as u64)
        }
        None => format!(" in `{what}`"),
    };
    let msg = match &e {
        CallError::Trap { kind, detail, .. } => {
            let hint = match kind {
                TrapKind::Deadline(_) => "If the plugin is only slow, raise `limits.call-timeout` for this operator; if it loops forever, fix the plugin.".to_owned(),
                TrapKind::Memory { .. } => "Raise `limits.memory` for this operator if it legitimately needs more, or fix the plugin's memory use.".to_owned(),
                TrapKind::HostLimit(_) => {
                    "Raise the limit named above for this operator if it legitimately needs more (see docs/limits.md), or fix the plugin.".to_owned()
                }
                TrapKind::Other => {
                    let bt: Vec<&str> = detail.lines().skip(1).filter(|l| !l.trim().is_empty()).take(8).collect();
                    if bt.is_empty() {
                        "This is a bug in the plugin (a panic or an invalid operation).".to_owned()
                    } else {
                        format!("This is a bug in the plugin (a panic or an invalid operation). Wasm backtrace:\n{}", bt.join("\n"))
                    }
                }
            };
            format!("{who} {e}{place}. The instance was discarded and the pipeline stopped; the host is unaffected. {hint}")
        }
        CallError::Rejected { .. } | CallError::Failed(_) => format!("{who} failed{place}: {e}"),
    };
    TaskError::Stage(msg)
}

/// A Wasm operator in a chain.
pub struct WasmStage {
    instance: OperatorInstance,
    info: StageInfo,
    policy: ErrorPolicy,
    metrics: Arc<StageMetrics>,
    seen: Seen,
    reload: Option<StageReload>,
    timers: TimerRounds,
    /// The input of the batch being processed (the vertex's input index),
    /// passed to the plugin with every `process` call of that batch.
    input: u32,
}

/// Budgeted timer firing (see [`TIMER_CALLS_PER_ROUND`]), for a Wasm or
/// a native stage.
#[derive(Debug, Default)]
pub(crate) struct TimerRounds {
    /// A watermark whose due event-time timers have not all fired yet: it
    /// is held back from downstream until they have.
    held: Option<i64>,
    /// A held watermark whose timers have all fired since, to send on.
    released: Option<i64>,
    /// Event-time timers registered by `on-timer` at or before the timers
    /// it fired, and how many times in a row that has happened to them
    /// (see [`TIMER_REARM_LIMIT`]). Emptied when no timer is left due.
    rearmed: HashMap<(i64, Vec<u8>), u32>,
}

/// An operator whose timers [`TimerRounds`] fire: a Wasm or a native stage.
pub(crate) trait TimerOwner: Sized {
    /// The stage's timer rounds.
    fn rounds(&mut self) -> &mut TimerRounds;
    /// Runs `f` on the operator's timers (and watermark).
    fn with_timers<R>(&mut self, f: impl FnOnce(&mut TimerService) -> R) -> R;
    /// Hands `due` to the operator's `on-timer` and appends its output to `out`.
    fn fire(&mut self, due: &[TimerFired], out: &mut Vec<u8>) -> Result<(), TaskError>;
    /// Who the operator is, for messages.
    fn who(&self) -> String;

    /// Runs `f` with the stage's timer rounds taken out of it, so they can
    /// drive the stage's own calls.
    fn with_rounds<R>(&mut self, f: impl FnOnce(&mut TimerRounds, &mut Self) -> R) -> R {
        let mut rounds = std::mem::take(self.rounds());
        let r = f(&mut rounds, self);
        *self.rounds() = rounds;
        r
    }
}

/// The [`Stage`] methods of an operator stage's timers, the same for a
/// Wasm and a native stage: inside `impl Stage for X`, where `X` has a
/// `timers: TimerRounds` field and implements [`TimerOwner`].
macro_rules! timer_stage_methods {
    () => {
        fn on_watermark(&mut self, watermark: i64) -> Result<Vec<u8>, TaskError> {
            self.with_rounds(|r, s| r.on_watermark(s, watermark))
        }

        fn holds_watermarks(&self) -> bool {
            self.timers.holding()
        }

        fn released_watermark(&mut self) -> Option<i64> {
            self.timers.take_released()
        }

        fn timers_pending(&self) -> bool {
            self.timers.holding()
        }

        fn fire_pending_timers(&mut self) -> Result<Vec<u8>, TaskError> {
            self.with_rounds(|r, s| r.fire_pending(s))
        }

        fn next_processing_timer(&mut self) -> Option<i64> {
            self.with_timers(|t| t.next_processing())
        }

        fn on_processing_time(&mut self, now_ms: i64) -> Result<Vec<u8>, TaskError> {
            // Timers left due at the end of the round fire at the next call.
            Ok(self.with_rounds(|r, s| r.round(s, false, now_ms))?.0)
        }
    };
}
pub(crate) use timer_stage_methods;

impl TimerRounds {
    /// Whether a watermark is held back until its timers have fired.
    pub(crate) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// A held watermark whose timers have all fired since, once.
    pub(crate) fn take_released(&mut self) -> Option<i64> {
        self.released.take()
    }

    /// A new watermark: sets it and fires the event-time timers it makes
    /// due, one round; until they have all fired, the watermark is held.
    pub(crate) fn on_watermark(&mut self, op: &mut impl TimerOwner, watermark: i64) -> Result<Vec<u8>, TaskError> {
        let due = op.with_timers(|t| {
            t.watermark = watermark;
            t.event_due(watermark)
        });
        // This watermark supersedes one held before.
        self.released = None;
        if !due {
            // Nothing (left) to fire: a watermark held before goes on with this one.
            self.held = None;
            return Ok(Vec::new());
        }
        let (out, drained) = self.round(op, true, watermark)?;
        // Until the timers due at it have fired, the watermark stays here.
        self.held = (!drained).then_some(watermark);
        Ok(out)
    }

    /// Another round for a held watermark; releases it once its timers have fired.
    pub(crate) fn fire_pending(&mut self, op: &mut impl TimerOwner) -> Result<Vec<u8>, TaskError> {
        let Some(watermark) = self.held else { return Ok(Vec::new()) };
        let (out, drained) = self.round(op, true, watermark)?;
        if drained {
            self.held = None;
            self.released = Some(watermark);
        }
        Ok(out)
    }

    /// One round of timer firing in one domain: at most
    /// [`TIMER_CALLS_PER_ROUND`] calls of at most [`TIMERS_PER_CALL`] timers
    /// each, ending early once the output reaches [`TIMER_OUTPUT_PER_ROUND`].
    /// Returns the output and whether every timer due at `time` has fired.
    pub(crate) fn round(&mut self, op: &mut impl TimerOwner, event_time: bool, time: i64) -> Result<(Vec<u8>, bool), TaskError> {
        let mut out = Vec::new();
        for _ in 0..TIMER_CALLS_PER_ROUND {
            let due: Vec<TimerFired> = op
                .with_timers(|t| t.take_due(event_time, time, TIMERS_PER_CALL))
                .into_iter()
                .map(|(timestamp, key)| TimerFired { event_time, key, timestamp })
                .collect();
            if due.is_empty() {
                break;
            }
            if event_time {
                self.fire_event_timers(op, &due, time, &mut out)?;
            } else {
                op.fire(&due, &mut out)?;
            }
            if out.len() >= TIMER_OUTPUT_PER_ROUND {
                break;
            }
        }
        let drained = op.with_timers(|t| if event_time { !t.event_due(time) } else { t.next_processing().is_none_or(|t| t > time) });
        if event_time && drained {
            self.rearmed.clear();
        }
        Ok((out, drained))
    }

    /// Fires event-time timers due at watermark `watermark`, and follows
    /// the timers the call re-registers at or before the ones it fired:
    /// past [`TIMER_REARM_LIMIT`] times in a row, the operator fails.
    fn fire_event_timers(&mut self, op: &mut impl TimerOwner, due: &[TimerFired], watermark: i64, out: &mut Vec<u8>) -> Result<(), TaskError> {
        let mut chain = 0;
        let mut latest = i64::MIN;
        for t in due {
            // Taken out when fired: the map holds only timers still registered.
            chain = chain.max(self.rearmed.remove(&(t.timestamp, t.key.clone())).unwrap_or(0));
            latest = latest.max(t.timestamp);
        }
        op.with_timers(|t| t.track_rearms(true));
        let fired = op.fire(due, out);
        let rearmed = op.with_timers(|t| {
            let rearmed = t.take_rearmed();
            t.track_rearms(false);
            rearmed
        });
        fired?;
        for (ts, key) in rearmed {
            // At the end of input every timer is due: any re-registration
            // is due again at once. Before it, a later timestamp is progress.
            if watermark != i64::MAX && ts > latest {
                continue;
            }
            if chain + 1 >= TIMER_REARM_LIMIT {
                let at = if watermark == i64::MAX { "the end of input (watermark +inf)".to_owned() } else { format!("watermark {watermark}") };
                return Err(TaskError::Stage(format!(
                    "{}: its on-timer re-registered an event-time timer at or before the one it fired {TIMER_REARM_LIMIT} times in a row \
                     (key {}, timestamp {ts}), so at {at} its timers would fire forever. A timer registered in on-timer must be later \
                     than the one that fired (at the end of input the watermark is i64::MAX: stop re-registering there); see docs/limits.md.",
                    op.who(),
                    Preview(&key)
                )));
            }
            self.rearmed.insert((ts, key), chain + 1);
        }
        Ok(())
    }
}

impl TimerOwner for WasmStage {
    fn rounds(&mut self) -> &mut TimerRounds {
        &mut self.timers
    }

    fn with_timers<R>(&mut self, f: impl FnOnce(&mut TimerService) -> R) -> R {
        f(self.instance.timers())
    }

    fn fire(&mut self, due: &[TimerFired], out: &mut Vec<u8>) -> Result<(), TaskError> {
        self.fire_timers(due, out)
    }

    fn who(&self) -> String {
        self.info.who()
    }
}

impl WasmStage {
    /// Wraps an opened instance.
    pub fn new(instance: OperatorInstance, info: StageInfo, policy: ErrorPolicy, metrics: Arc<StageMetrics>) -> Self {
        Self { instance, info, policy, metrics, seen: Seen::default(), reload: None, timers: TimerRounds::default(), input: 0 }
    }

    /// Lets the operator's plugin be hot-reloaded through `slot` (see
    /// [`crate::reload`]).
    pub fn with_reload(mut self, slot: Arc<ReloadSlot>) -> Self {
        self.reload = Some(StageReload::new(slot, self.info.subtask));
        self
    }

    /// Swaps or reverts the plugin if the reload slot asks for it.
    fn poll_reload(&mut self, barrier: Option<u64>) -> Result<(), TaskError> {
        let Some(r) = &mut self.reload else { return Ok(()) };
        r.poll(&mut self.instance, barrier).map_err(|e| TaskError::Stage(format!("{}: {e}", self.info.who())))?;
        self.info.version = weir_wasm::reload::short(&self.instance.plugin().hash).to_owned();
        Ok(())
    }

    fn in_probation(&self) -> bool {
        self.reload.as_ref().is_some_and(StageReload::in_probation)
    }

    fn reload_error(&self, e: String) -> TaskError {
        TaskError::Stage(format!("{}: hot reload: {e}", self.info.who()))
    }

    /// A batch while a new version is on probation: a failure of the new
    /// version is counted, and the batch goes to the previous version (so
    /// it is neither lost nor processed twice).
    fn process_on_probation(&mut self, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        let error = match self.instance.process_input(self.input, batch) {
            Ok(out) => {
                self.seen.batch_done(records);
                if let Some(r) = &mut self.reload {
                    r.batch_ok(&self.instance);
                }
                return Ok(out);
            }
            Err(e) => e,
        };
        let r = self.reload.as_mut().expect("on probation");
        if let CallError::Rejected { .. } = error {
            // A rejection is the new version's fault only if the previous
            // version accepts the same batch.
            let Some(mut old) = r.borrow_previous(&mut self.instance).map_err(|e| self.reload_error(e))? else {
                return self.process_with_policy(batch, records);
            };
            let previous = old.process_input(self.input, batch);
            let r = self.reload.as_mut().expect("on probation");
            r.give_back(&mut self.instance, old);
            let Ok(out) = previous else { return self.process_with_policy(batch, records) };
            r.count_failure(&mut self.instance, &error, false).map_err(|e| self.reload_error(e))?;
            self.seen.batch_done(records);
            self.info.version = weir_wasm::reload::short(&self.instance.plugin().hash).to_owned();
            return Ok(out);
        }
        match r.count_failure(&mut self.instance, &error, false).map_err(|e| self.reload_error(e))? {
            Outcome::NotMine => Err(self.call_failed("process", error, Some((batch, records)))),
            Outcome::Reverted => {
                self.info.version = weir_wasm::reload::short(&self.instance.plugin().hash).to_owned();
                self.process_with_policy(batch, records)
            }
            Outcome::Tolerated => {
                let r = self.reload.as_mut().expect("on probation");
                let Some(mut old) = r.borrow_previous(&mut self.instance).map_err(|e| self.reload_error(e))? else {
                    return self.process_with_policy(batch, records);
                };
                std::mem::swap(&mut self.instance, &mut old);
                let out = self.process_with_policy(batch, records);
                std::mem::swap(&mut self.instance, &mut old);
                self.reload.as_mut().expect("on probation").give_back(&mut self.instance, old);
                out
            }
        }
    }

    fn call_failed(&self, what: &str, e: CallError, batch: Option<(&[u8], usize)>) -> TaskError {
        call_failed(&self.info, &self.seen, what, e, batch)
    }

    /// Hands `due` to `on-timer` and appends the output to `out`.
    fn fire_timers(&mut self, due: &[TimerFired], out: &mut Vec<u8>) -> Result<(), TaskError> {
        match self.instance.on_timer(due) {
            Ok(o) => out.extend_from_slice(&o),
            Err(e) if self.in_probation() => {
                // A new version failing on timers rolls back at once;
                // the previous version gets the same timers.
                let r = self.reload.as_mut().expect("on probation");
                match r.count_failure(&mut self.instance, &e, true).map_err(|e| self.reload_error(e))? {
                    Outcome::Reverted => match self.instance.on_timer(due) {
                        Ok(o) => out.extend_from_slice(&o),
                        Err(e) => return Err(self.call_failed("on-timer", e, None)),
                    },
                    Outcome::NotMine | Outcome::Tolerated => return Err(self.call_failed("on-timer", e, None)),
                }
            }
            Err(e) => return Err(self.call_failed("on-timer", e, None)),
        }
        Ok(())
    }
}

impl WasmStage {
    /// Processes a batch; rejected records follow the `on-error` policy.
    fn process_with_policy(&mut self, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        let (instance, input) = (&mut self.instance, self.input);
        process_with_policy(batch, records, self.policy, &self.info, &self.metrics, &mut self.seen, |b| instance.process_input(input, b)).map_err(|u| match u {
            Unhandled::Stop(e) => e,
            Unhandled::Call { error, batch, records } => self.call_failed("process", error, Some((&batch, records))),
        })
    }
}

impl Stage for WasmStage {
    fn process(&mut self, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        self.process_input(0, batch, records)
    }

    fn process_input(&mut self, input: usize, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        self.poll_reload(None)?;
        self.input = u32::try_from(input).expect("a vertex has fewer than 2^32 inputs");
        if self.in_probation() {
            return self.process_on_probation(batch, records);
        }
        self.process_with_policy(batch, records)
    }

    fn on_idle(&mut self) -> Result<(), TaskError> {
        self.poll_reload(None)
    }

    crate::stages::timer_stage_methods!();

    fn close(&mut self) -> Result<Vec<u8>, TaskError> {
        self.instance.close().map_err(|e| self.call_failed("close", e, None))
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<StageState>, TaskError> {
        let key_groups = self.instance.keyed_state().key_groups();
        let state = StageState::Operator { key_groups, job: self.instance.snapshot_state() };
        // `reload = "on-checkpoint"` swaps here: after the snapshot, before
        // the first record behind the barrier.
        self.poll_reload(Some(checkpoint))?;
        Ok(Some(state))
    }

    fn metrics(&self) -> &Arc<StageMetrics> {
        &self.metrics
    }
}

/// A sink at the end of a chain.
pub struct SinkStage {
    sink: Box<dyn Sink>,
    name: String,
    subtask: u32,
    metrics: Arc<StageMetrics>,
    /// Pre-commit handles of checkpoints not yet known to be complete,
    /// oldest first. A failed checkpoint's handle stays here and is
    /// published with the next complete one, and every checkpoint stores
    /// all of them, so no epoch's data depends on a checkpoint that failed.
    pending: Vec<Committable>,
}

impl SinkStage {
    /// Wraps a sink on which [`Sink::start`] was called.
    pub fn new(sink: Box<dyn Sink>, name: String, subtask: u32, metrics: Arc<StageMetrics>) -> Self {
        Self { sink, name, subtask, metrics, pending: Vec::new() }
    }

    fn failed(&self, e: weir_connector::ConnectorError) -> TaskError {
        TaskError::Stage(format!("sink `{}` subtask {} failed: {e}", self.name, self.subtask))
    }
}

impl SinkStage {
    /// Records the latency of records stamped by their source.
    fn measure_latency(&self, batch: &[u8]) {
        let mut now = None;
        for rec in Frames::new(batch).flatten() {
            if rec.raw_headers.is_empty() {
                continue;
            }
            for (name, value) in rec.headers().flatten() {
                if name == weir_connector::EMITTED_AT_HEADER
                    && let Ok(bytes) = <[u8; 8]>::try_from(value)
                {
                    let now = *now.get_or_insert_with(weir_connector::now_micros);
                    self.metrics.latency.record(now.saturating_sub(u64::from_le_bytes(bytes)));
                }
            }
        }
    }
}

impl Stage for SinkStage {
    fn process(&mut self, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        self.sink.write(batch, records).map_err(|e| self.failed(e))?;
        self.measure_latency(batch);
        Ok(Vec::new())
    }

    fn close(&mut self) -> Result<Vec<u8>, TaskError> {
        // The sink stays open for the final checkpoint; see `shutdown`.
        Ok(Vec::new())
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<Option<StageState>, TaskError> {
        let handle = self.sink.pre_commit(checkpoint).map_err(|e| self.failed(e))?;
        failpoint::hit("after-sink-pre-commit", checkpoint);
        self.pending.push(Committable { checkpoint, handle });
        Ok(Some(StageState::Sink { committables: self.pending.clone() }))
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), TaskError> {
        let due = self.pending.iter().take_while(|c| c.checkpoint <= checkpoint).count();
        for c in self.pending.drain(..due).collect::<Vec<_>>() {
            self.sink.commit(c.checkpoint, &c.handle).map_err(|e| {
                TaskError::Stage(format!("sink `{}` subtask {} could not publish checkpoint {}: {e}", self.name, self.subtask, c.checkpoint))
            })?;
        }
        Ok(())
    }

    fn end_without_checkpoints(&mut self) -> Result<(), TaskError> {
        let handle = self.sink.pre_commit(0).map_err(|e| self.failed(e))?;
        self.sink.commit(0, &handle).map_err(|e| self.failed(e))
    }

    fn shutdown(&mut self) -> Result<(), TaskError> {
        self.sink.close().map_err(|e| self.failed(e))
    }

    fn metrics(&self) -> &Arc<StageMetrics> {
        &self.metrics
    }
}
