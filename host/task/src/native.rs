//! Operators compiled into the host: a chain stage like [`crate::WasmStage`]
//! without the Wasm boundary.
//!
//! A [`NativeStage`] calls a [`weir_sdk::native::Instance`] (the operator's
//! SDK runtime, compiled for the host) with the same frame-format batches a
//! component gets, and gives it a [`Host`] over the same `weir_state` calls
//! the Wasm instance's state imports make (`KeyedState::get`, `get_many`,
//! `map_get`, `map_entries`, `stage`), in the same per-call transaction
//! (`begin` before the call, `commit` after it, `rollback` on a rejection,
//! a panic or a host limit), bounded by the same [`Limits`]. Rejected
//! records follow the operator's `on-error` policy through the same code as
//! a Wasm stage's. So the task loop, the exchange, the state backend and
//! checkpoints are those of a Wasm run, and the difference in time between
//! the two is what the Wasm boundary costs (`weir-bench events-agg`).
//!
//! Timers are the Wasm stage's too: registered in the same
//! [`TimerService`] (with the same budget), fired in the same budgeted
//! rounds ([`TimerRounds`]), their `on-timer` calls the same transactions.
//!
//! What a native operator does not get: isolation (it runs in the host
//! process with the host's rights: no memory or CPU limit, `allow-read`
//! means nothing; a panic is caught and stops the pipeline like a trap) and
//! hot reload (its code is the host's).

use crate::stages::{call_failed, process_with_policy, Seen, TimerOwner, TimerRounds, Unhandled};
use crate::{ErrorPolicy, Stage, StageInfo, StageMetrics, StageState, TaskError};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use weir_sdk::native::{Factory, Instance};
use weir_sdk::{Entries, Host, LogLevel, OpenContext, Rejected, TimeDomain, Timer};
use weir_state::{KeyedState, TimerService};
use weir_wasm::{CallError, InstanceInfo, Limits, TimerFired, TrapKind};

/// An operator compiled into the host, in a chain.
pub struct NativeStage {
    calls: Calls,
    info: StageInfo,
    policy: ErrorPolicy,
    metrics: Arc<StageMetrics>,
    seen: Seen,
    timers: TimerRounds,
}

/// The instance and the state its host reads and writes during a call.
struct Calls {
    instance: Box<dyn Instance>,
    state: Arc<Mutex<CallState>>,
    /// A panic or a host limit ended a call: the instance is discarded.
    poisoned: bool,
}

/// The state of one operator subtask, shared by the stage (transactions,
/// snapshots) and the instance's host (reads and writes within a call).
struct CallState {
    keyed: KeyedState,
    timers: TimerService,
    /// The input of the batch being processed (0 outside `process`).
    input: usize,
    /// A host limit the running call reached (it fails the call).
    over_limit: Option<String>,
}

impl CallState {
    fn begin(&mut self) {
        self.keyed.begin();
        self.timers.begin();
        self.over_limit = None;
    }

    fn commit(&mut self) -> Result<(), CallError> {
        self.timers.commit();
        self.keyed.commit().map_err(|e| CallError::Failed(format!("the host could not store the operator's keyed state: {e}")))
    }

    fn rollback(&mut self) {
        self.keyed.rollback();
        self.timers.rollback();
    }
}

/// The state is only held for one `weir_state` call or between calls; a
/// panic while it was held (a host bug) leaves it as a failed call would.
fn lock(state: &Mutex<CallState>) -> MutexGuard<'_, CallState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Calls {
    /// One call of the instance as a state transaction: a panic or a host
    /// limit discards the instance and rolls the state back, as a trap does
    /// to a Wasm instance. The caller commits or rolls back what succeeded.
    fn call<R>(&mut self, f: impl FnOnce(&mut dyn Instance) -> R) -> Result<R, CallError> {
        if self.poisoned {
            return Err(CallError::Failed("the instance was discarded after an earlier failed call".into()));
        }
        lock(&self.state).begin();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut *self.instance)));
        let mut st = lock(&self.state);
        let failed = match result {
            Err(panic) => CallError::Trap { kind: TrapKind::Other, detail: format!("panicked: {}", panic_message(&*panic)), stderr: String::new() },
            Ok(r) => match st.over_limit.take() {
                Some(what) => CallError::Trap { kind: TrapKind::HostLimit(what), detail: String::new(), stderr: String::new() },
                None => return Ok(r),
            },
        };
        st.rollback();
        self.poisoned = true;
        Err(failed)
    }

    /// Commits a call that returned output, rolls back a rejection.
    fn finish(&mut self, result: Result<Vec<u8>, Rejected>) -> Result<Vec<u8>, CallError> {
        let mut st = lock(&self.state);
        match result {
            Ok(out) => st.commit().map(|()| out),
            Err(Rejected { index, message }) => {
                st.rollback();
                Err(CallError::Rejected { index, message })
            }
        }
    }

    fn process(&mut self, input: usize, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        lock(&self.state).input = input;
        let result = self.call(|i| i.process(batch));
        lock(&self.state).input = 0;
        let result = result?;
        self.finish(result)
    }

    fn on_timer(&mut self, due: &[TimerFired]) -> Result<Vec<u8>, CallError> {
        let fired = due
            .iter()
            .map(|t| Timer { domain: if t.event_time { TimeDomain::EventTime } else { TimeDomain::ProcessingTime }, key: t.key.clone(), timestamp: t.timestamp })
            .collect();
        let result = self.call(|i| i.on_timer(fired))?;
        self.finish(result)
    }

    fn close(&mut self) -> Result<Vec<u8>, CallError> {
        let result = self.call(|i| i.close())?;
        let mut st = lock(&self.state);
        match result {
            Ok(out) => st.commit().map(|()| out),
            Err(message) => {
                st.rollback();
                Err(CallError::Failed(message))
            }
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("(a panic without a message)")
}

impl NativeStage {
    /// Opens an instance of `factory` as the Wasm instance `info` would be
    /// opened (its config, subtask, inputs), over `keyed` and `timers`
    /// bounded by `limits` as a Wasm instance's are.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        factory: &dyn Factory,
        info: &InstanceInfo,
        limits: Limits,
        mut keyed: KeyedState,
        mut timers: TimerService,
        stage: StageInfo,
        policy: ErrorPolicy,
        metrics: Arc<StageMetrics>,
    ) -> Result<Self, String> {
        limits.bound_host_memory(&mut keyed, &mut timers);
        let state = Arc::new(Mutex::new(CallState { keyed, timers, input: 0, over_limit: None }));
        let host = StateHost {
            state: state.clone(),
            inputs: info.inputs.clone(),
            tag: format!("{}/{}[{}]", stage.plugin, info.operator, info.subtask),
            log_window: (Instant::now(), 0),
        };
        let open = OpenContext { pipeline: info.pipeline.clone(), operator: info.operator.clone(), subtask: info.subtask, parallelism: info.parallelism, inputs: info.inputs.clone() };
        let instance = factory.open(open, &info.config_json, Box::new(host))?;
        Ok(Self { calls: Calls { instance, state, poisoned: false }, info: stage, policy, metrics, seen: Seen::default(), timers: TimerRounds::default() })
    }
}

impl TimerOwner for NativeStage {
    fn rounds(&mut self) -> &mut TimerRounds {
        &mut self.timers
    }

    fn with_timers<R>(&mut self, f: impl FnOnce(&mut TimerService) -> R) -> R {
        f(&mut lock(&self.calls.state).timers)
    }

    fn fire(&mut self, due: &[TimerFired], out: &mut Vec<u8>) -> Result<(), TaskError> {
        let o = self.calls.on_timer(due).map_err(|e| call_failed(&self.info, &self.seen, "on-timer", e, None))?;
        out.extend_from_slice(&o);
        Ok(())
    }

    fn who(&self) -> String {
        self.info.who()
    }
}

impl Stage for NativeStage {
    fn process(&mut self, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        self.process_input(0, batch, records)
    }

    fn process_input(&mut self, input: usize, batch: &[u8], records: usize) -> Result<Vec<u8>, TaskError> {
        let calls = &mut self.calls;
        process_with_policy(batch, records, self.policy, &self.info, &self.metrics, &mut self.seen, |b| calls.process(input, b)).map_err(|u| match u {
            Unhandled::Stop(e) => e,
            Unhandled::Call { error, batch, records } => call_failed(&self.info, &self.seen, "process", error, Some((&batch, records))),
        })
    }

    crate::stages::timer_stage_methods!();

    fn close(&mut self) -> Result<Vec<u8>, TaskError> {
        self.calls.close().map_err(|e| call_failed(&self.info, &self.seen, "close", e, None))
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Option<StageState>, TaskError> {
        let mut st = lock(&self.calls.state);
        let CallState { keyed, timers, .. } = &mut *st;
        Ok(Some(StageState::Operator { key_groups: keyed.key_groups(), job: keyed.snapshot(timers) }))
    }

    fn metrics(&self) -> &Arc<StageMetrics> {
        &self.metrics
    }
}

/// The [`Host`] of a native instance: the state imports of a Wasm
/// instance (`weir_wasm`'s `HostState`), made as direct calls.
struct StateHost {
    state: Arc<Mutex<CallState>>,
    inputs: Vec<String>,
    /// `plugin/operator[subtask]`, as a Wasm instance's log lines are tagged.
    tag: String,
    log_window: (Instant, u32),
}

impl StateHost {
    /// A state refusal as the operator sees it. A host limit fails the call
    /// once it returns (a Wasm instance traps at once; native code cannot be
    /// stopped midway), so the operator gets an error it is not meant to
    /// handle in the meantime.
    fn answer<T>(st: &mut CallState, r: Result<T, weir_state::StateError>) -> Result<T, weir_sdk::StateError> {
        r.map_err(|e| match e {
            weir_state::StateError::KeyNotOwned => weir_sdk::StateError::KeyNotOwned,
            weir_state::StateError::TooLarge(n) => weir_sdk::StateError::TooLarge(n),
            weir_state::StateError::Invalid(s) => weir_sdk::StateError::Invalid(s),
            weir_state::StateError::Refused(what) => {
                st.over_limit = Some(what.clone());
                weir_sdk::StateError::Invalid(what)
            }
        })
    }
}

impl Host for StateHost {
    fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, weir_sdk::StateError> {
        let mut st = lock(&self.state);
        let r = st.keyed.get(name, key).map(|v| v.map(std::borrow::Cow::into_owned));
        Self::answer(&mut st, r)
    }

    fn get_many(&mut self, name: &str, keys: &[u8]) -> Result<Vec<u8>, weir_sdk::StateError> {
        let mut st = lock(&self.state);
        let mut out = Vec::with_capacity(keys.len());
        let r = st.keyed.get_many(name, keys, &mut out).map(|()| out);
        Self::answer(&mut st, r)
    }

    fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, weir_sdk::StateError> {
        let mut st = lock(&self.state);
        let r = st.keyed.map_get(name, key, map_key).map(|v| v.map(std::borrow::Cow::into_owned));
        Self::answer(&mut st, r)
    }

    fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Entries, weir_sdk::StateError> {
        let mut st = lock(&self.state);
        let r = st.keyed.map_entries(name, key);
        Self::answer(&mut st, r)
    }

    fn apply(&mut self, ops: &[u8]) -> Result<(), weir_sdk::StateError> {
        let mut st = lock(&self.state);
        let r = st.keyed.stage(ops);
        Self::answer(&mut st, r)
    }

    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        // Returns nothing to the operator: a refusal is a host limit, which
        // fails the call once it returns (as a Wasm instance traps).
        let mut st = lock(&self.state);
        if let Err(e) = st.timers.register(domain == TimeDomain::EventTime, key, timestamp) {
            st.over_limit = Some(e.0);
        }
    }

    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        let mut st = lock(&self.state);
        if let Err(e) = st.timers.delete(domain == TimeDomain::EventTime, key, timestamp) {
            st.over_limit = Some(e.0);
        }
    }

    fn watermark(&mut self) -> i64 {
        lock(&self.state).timers.watermark
    }

    fn processing_time(&mut self) -> i64 {
        weir_wasm::now_ms()
    }

    fn input(&mut self) -> usize {
        lock(&self.state).input
    }

    fn input_names(&mut self) -> Vec<String> {
        self.inputs.clone()
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        };
        weir_wasm::plugin_log(&self.tag, &mut self.log_window, level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_format::{BatchWriter, Frames};
    use weir_sdk::{Context, Error, NoConfig, Operator, Output, Record};

    /// Counts records per key in keyed state; rejects a value "bad", and
    /// registers an event-time timer for key "k" at 1 for a value "timer",
    /// which emits "fired KEY" and marks the key in state "t".
    struct Count;

    impl Operator for Count {
        type Config = NoConfig;
        const PREFETCH: &'static [&'static str] = &["n"];

        fn open(_: NoConfig, _: &OpenContext) -> Result<Self, Error> {
            Ok(Count)
        }

        fn process(&mut self, r: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
            match r.value {
                b"bad" => return Err(Error::msg("bad record")),
                b"timer" => ctx.register_timer(TimeDomain::EventTime, b"k", 1),
                _ => {}
            }
            let key = r.key.unwrap_or_default();
            let n = ctx.get::<u64>("n", key)?.unwrap_or(0) + 1;
            ctx.put("n", key, &n);
            out.emit(Some(key), n.to_string().as_bytes(), r.timestamp);
            Ok(())
        }

        fn on_timer(&mut self, t: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
            ctx.put("t", &t.key, &1u64);
            out.emit(Some(&t.key), format!("fired {}", String::from_utf8_lossy(&t.key)).as_bytes(), t.timestamp);
            Ok(())
        }
    }

    fn stage(policy: ErrorPolicy) -> NativeStage {
        let info = InstanceInfo {
            pipeline: "p".into(),
            operator: "count".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            config_json: "{}".into(),
            read_dirs: Vec::new(),
            inputs: vec!["in".into()],
        };
        let who = StageInfo { operator: "count".into(), config_path: "operators[0]".into(), plugin: "count".into(), plugin_path: "compiled into the host".into(), version: "native".into(), subtask: 0 };
        let factory = weir_sdk::native::factory::<Count>();
        NativeStage::open(&*factory, &info, Limits::default(), KeyedState::new(0, 1, 128), TimerService::new(), who, policy, Arc::default()).unwrap()
    }

    fn batch(values: &[&str]) -> Vec<u8> {
        let mut w = BatchWriter::new();
        for v in values {
            w.push(Some(b"a"), v.as_bytes(), 0, &[]);
        }
        w.finish()
    }

    fn count(stage: &NativeStage) -> Option<Vec<u8>> {
        lock(&stage.calls.state).keyed.get("n", b"a").unwrap().map(|v| v.into_owned())
    }

    #[test]
    fn state_is_committed_per_batch_and_a_skipped_record_leaves_none_of_its_writes() {
        let mut s = stage(ErrorPolicy::Skip);
        let out = s.process(&batch(&["x", "bad", "y"]), 3).unwrap();
        let values: Vec<Vec<u8>> = Frames::new(&out).map(|r| r.unwrap().value.to_vec()).collect();
        assert_eq!(values, [b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(count(&s), Some(2u64.to_le_bytes().to_vec()));
        assert_eq!(s.metrics().records_skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
        s.process(&batch(&["z"]), 1).unwrap();
        assert_eq!(count(&s), Some(3u64.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_rejection_under_fail_names_the_record_and_rolls_back() {
        let mut s = stage(ErrorPolicy::Fail);
        let e = s.process(&batch(&["x", "bad"]), 2).unwrap_err().to_string();
        assert!(e.contains("rejected record #1") && e.contains("bad record") && e.contains("compiled into the host"), "{e}");
        assert_eq!(count(&s), None);
    }

    #[test]
    fn timers_fire_when_the_watermark_passes_them_and_their_writes_commit() {
        let mut s = stage(ErrorPolicy::Fail);
        assert!(s.process(&batch(&["timer"]), 1).is_ok());
        assert_eq!(s.next_processing_timer(), None, "an event-time timer only");
        assert!(s.on_watermark(0).unwrap().is_empty(), "not due before its time");
        let out = s.on_watermark(1).unwrap();
        let fired: Vec<(Vec<u8>, i64)> = Frames::new(&out).map(|r| r.map(|r| (r.value.to_vec(), r.timestamp)).unwrap()).collect();
        assert_eq!(fired, [(b"fired k".to_vec(), 1)]);
        assert_eq!(lock(&s.calls.state).keyed.get("t", b"k").unwrap().map(|v| v.into_owned()), Some(1u64.to_le_bytes().to_vec()));
        assert!(!s.holds_watermarks() && s.on_watermark(2).unwrap().is_empty(), "fired once, nothing held");
    }
}
