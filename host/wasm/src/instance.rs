//! One live plugin instance: store, limits, host imports, calls.

use crate::engine::EPOCH_TICK;
use crate::output::CapturedOutput;
use crate::plugin::Plugin;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{HasSelf, Instance, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_bindings::{inputs, log, state, timers, types, Operator};
use weir_state::{KeyedState, StateError, TimerBudget, TimerService};

/// Resource limits of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory (bytes) the instance may grow to.
    pub memory: usize,
    /// CPU time one call (a batch, timers, open, close) may take.
    pub call_timeout: Duration,
    /// Timers one operator subtask may hold.
    pub timers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory: 256 << 20, call_timeout: Duration::from_secs(10), timers: 4_000_000 }
    }
}

impl Limits {
    /// What the host holds for an instance, bounded by these limits: the
    /// writes and reads of one call by `memory` (a plugin reusing its
    /// buffer could otherwise make the host hold many times its own
    /// memory), the timers by `timers` and their keys by `memory`. A native
    /// operator's state is bounded the same way.
    pub fn bound_host_memory(&self, keyed: &mut KeyedState, timers: &mut TimerService) {
        keyed.set_call_budget(self.memory);
        timers.set_budget(TimerBudget { count: self.timers, key_bytes: self.memory });
    }
}

/// Identity of an instance, passed to the plugin's `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Pipeline name.
    pub pipeline: String,
    /// Operator name.
    pub operator: String,
    /// Subtask index.
    pub subtask: u32,
    /// Operator parallelism.
    pub parallelism: u32,
    /// Key groups in the job (state partitioning).
    pub max_parallelism: u32,
    /// The operator's config as a JSON object.
    pub config_json: String,
    /// Directories the plugin may read: (host directory, path the guest sees).
    /// Nothing else of the filesystem is visible to it.
    pub read_dirs: Vec<(std::path::PathBuf, String)>,
    /// The operator's inputs (names of the upstream nodes), in the order
    /// of its `inputs` setting; the plugin reads them through `inputs.names`.
    pub inputs: Vec<String>,
}

/// What kind of trap ended a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapKind {
    /// The call ran past its CPU deadline.
    Deadline(Duration),
    /// The instance tried to grow memory past its limit.
    Memory {
        /// The limit in bytes.
        limit: usize,
        /// The size it asked for.
        requested: usize,
    },
    /// The instance asked the host to hold more for it than a limit allows
    /// (state writes of one call, timers): the message says which.
    HostLimit(String),
    /// Any other trap (unreachable, panic, out-of-bounds access...).
    Other,
}

/// A failed call into a plugin.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The operator rejected an input (a WIT `record-error`): the instance is fine.
    Rejected {
        /// Position of the input in the call.
        index: u32,
        /// The operator's message.
        message: String,
    },
    /// `open` or `close` returned an error.
    Failed(String),
    /// The instance trapped; it must be discarded.
    Trap {
        /// What kind.
        kind: TrapKind,
        /// Wasmtime's description, with the Wasm backtrace when available.
        detail: String,
        /// What the plugin last wrote to stderr (a panic message, usually).
        stderr: String,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected { index, message } => write!(f, "rejected input #{index}: {message}"),
            CallError::Failed(m) => f.write_str(m),
            CallError::Trap { kind, detail, stderr } => {
                match kind {
                    TrapKind::Deadline(d) => write!(f, "exceeded its CPU deadline of {} per call (limits.call-timeout) and was stopped", humanize(*d))?,
                    TrapKind::Memory { limit, requested } => write!(
                        f,
                        "tried to grow its memory to {} MiB, past its limit of {} MiB (limits.memory), and was stopped",
                        requested >> 20,
                        limit >> 20
                    )?,
                    TrapKind::HostLimit(what) => write!(f, "{what}, and was stopped")?,
                    TrapKind::Other => {
                        // The trap's own words ("wasm trap: wasm `unreachable`
                        // instruction executed") follow the backtrace.
                        let cause = detail.lines().map(str::trim).find(|l| l.starts_with("wasm trap:")).or_else(|| detail.lines().next()).unwrap_or(detail);
                        write!(f, "trapped: {cause}")?
                    }
                }
                if !stderr.is_empty() {
                    write!(f, "; the plugin's last output: {}", stderr.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CallError {}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// A fired timer handed to [`OperatorInstance::on_timer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerFired {
    /// Event time (`true`) or processing time.
    pub event_time: bool,
    /// The key it was registered for.
    pub key: Vec<u8>,
    /// When it was due.
    pub timestamp: i64,
}

/// Caps the linear memory of one instance: all its memories together (a
/// component may declare several), not each on its own.
pub(crate) struct Limiter {
    pub(crate) max: usize,
    pub(crate) denied: Option<usize>,
    /// The sum of the sizes of the instance's memories.
    used: usize,
}

impl Limiter {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, denied: None, used: 0 }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // A growth that fails later for another reason stays counted: the
        // sum errs on the safe side.
        let used = self.used.saturating_sub(current).saturating_add(desired);
        if used > self.max {
            self.denied = Some(used);
            return Err(wasmtime::Error::msg(format!("memory limit of {} bytes exceeded (all the instance's memories together)", self.max)));
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Everything a store holds for one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// The instance's keyed state.
    pub(crate) keyed: KeyedState,
    /// The instance's timers.
    pub(crate) timers: TimerService,
    tag: Arc<str>,
    log_window: (Instant, u32),
    /// A host limit a call of the instance hit (it traps the call).
    over_limit: Option<String>,
    /// Epoch ticks the running call has left when profiling (the profiler
    /// samples at every tick, so the deadline is counted here).
    ticks_left: u64,
    /// The operator's inputs, for `inputs.names`.
    inputs: Arc<[String]>,
    /// The input of the batch being processed, for `inputs.current`
    /// (0 outside `process`).
    current_input: u32,
}

impl HostState {
    /// The answer of a state import: a host limit traps the call (the
    /// guest cannot handle it), other errors go to the guest.
    fn state_result<T>(&mut self, r: Result<T, StateError>) -> wasmtime::Result<Result<T, state::StateError>> {
        match r {
            Err(StateError::Refused(m)) => Err(self.hit_limit(m)),
            r => Ok(r.map_err(to_wit)),
        }
    }

    fn hit_limit(&mut self, what: String) -> wasmtime::Error {
        let e = wasmtime::Error::msg(what.clone());
        self.over_limit = Some(what);
        e
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Operator::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

fn to_wit(e: StateError) -> state::StateError {
    match e {
        StateError::KeyNotOwned => state::StateError::KeyNotOwned,
        StateError::TooLarge(n) => state::StateError::TooLarge(n),
        StateError::Invalid(s) => state::StateError::Invalid(s),
        StateError::Refused(s) => unreachable!("a host limit traps the call: {s}"),
    }
}

impl types::Host for HostState {}

impl state::Host for HostState {
    fn get(&mut self, name: String, key: Vec<u8>) -> wasmtime::Result<Result<Option<Vec<u8>>, state::StateError>> {
        let r = self.keyed.get(&name, &key).map(|v| v.map(std::borrow::Cow::into_owned));
        self.state_result(r)
    }

    fn get_many(&mut self, name: String, keys: Vec<u8>) -> wasmtime::Result<Result<Vec<u8>, state::StateError>> {
        let mut out = Vec::with_capacity(keys.len());
        let r = self.keyed.get_many(&name, &keys, &mut out).map(|()| out);
        self.state_result(r)
    }

    fn map_get(&mut self, name: String, key: Vec<u8>, map_key: Vec<u8>) -> wasmtime::Result<Result<Option<Vec<u8>>, state::StateError>> {
        let r = self.keyed.map_get(&name, &key, &map_key).map(|v| v.map(std::borrow::Cow::into_owned));
        self.state_result(r)
    }

    fn map_entries(&mut self, name: String, key: Vec<u8>) -> wasmtime::Result<Result<Vec<(Vec<u8>, Vec<u8>)>, state::StateError>> {
        let r = self.keyed.map_entries(&name, &key);
        self.state_result(r)
    }

    fn apply(&mut self, ops: Vec<u8>) -> wasmtime::Result<Result<(), state::StateError>> {
        let r = self.keyed.stage(&ops);
        self.state_result(r)
    }
}

impl timers::Host for HostState {
    fn register(&mut self, domain: types::TimeDomain, key: Vec<u8>, timestamp: i64) -> wasmtime::Result<()> {
        // `register` returns nothing to the guest: a refusal is a host limit.
        self.timers.register(matches!(domain, types::TimeDomain::EventTime), &key, timestamp).map_err(|e| self.hit_limit(e.0))
    }

    fn delete(&mut self, domain: types::TimeDomain, key: Vec<u8>, timestamp: i64) -> wasmtime::Result<()> {
        self.timers.delete(matches!(domain, types::TimeDomain::EventTime), &key, timestamp).map_err(|e| self.hit_limit(e.0))
    }

    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self.timers.watermark)
    }

    fn current_processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(now_ms())
    }
}

/// Lines per second a plugin may log before lines are dropped (and counted).
const LOG_LINES_PER_SECOND: u32 = 100;

/// The longest plugin log line written whole; longer ones are cut.
pub(crate) const MAX_LOG_LINE: usize = 16 * 1024;

/// A plugin's `log` level as a tracing level: the one mapping, for the
/// two `log::Level` types the two worlds' bindings generate.
macro_rules! tracing_level {
    ($level:expr, $($ty:ident)::+) => {
        match $level {
            $($ty)::+::Trace => tracing::Level::TRACE,
            $($ty)::+::Debug => tracing::Level::DEBUG,
            $($ty)::+::Info => tracing::Level::INFO,
            $($ty)::+::Warn => tracing::Level::WARN,
            $($ty)::+::Error => tracing::Level::ERROR,
        }
    };
}
pub(crate) use tracing_level;

impl inputs::Host for HostState {
    fn names(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.inputs.to_vec())
    }

    fn current(&mut self) -> wasmtime::Result<u32> {
        Ok(self.current_input)
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = tracing_level!(level, log::Level);
        plugin_log(&self.tag, &mut self.log_window, level, &message);
        Ok(())
    }
}

/// `message`, cut to [`MAX_LOG_LINE`] bytes (at a character boundary) with
/// a note of how much was cut.
fn cut_log_line(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LOG_LINE {
        return message.into();
    }
    let mut end = MAX_LOG_LINE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... ({} more bytes cut: a plugin log line is at most {MAX_LOG_LINE} bytes)",
        &message[..end],
        message.len() - end
    )
    .into()
}

/// One `log` call of a plugin instance (or a native operator) into the
/// host's log, rate-limited to [`LOG_LINES_PER_SECOND`] per instance
/// (`window`: start of the current second and lines in it).
pub fn plugin_log(
    tag: &str,
    window: &mut (Instant, u32),
    level: tracing::Level,
    message: &str,
) {
    let message = cut_log_line(message);
    let now = Instant::now();
    if now.duration_since(window.0) >= Duration::from_secs(1) {
        if window.1 > LOG_LINES_PER_SECOND {
            tracing::warn!(plugin = %tag, dropped = window.1 - LOG_LINES_PER_SECOND, "plugin logged too fast; lines were dropped");
        }
        *window = (now, 0);
    }
    window.1 += 1;
    if window.1 > LOG_LINES_PER_SECOND {
        return;
    }
    match level {
        tracing::Level::TRACE => tracing::trace!(plugin = tag, "{message}"),
        tracing::Level::DEBUG => tracing::debug!(plugin = tag, "{message}"),
        tracing::Level::INFO => tracing::info!(plugin = tag, "{message}"),
        tracing::Level::WARN => tracing::warn!(plugin = tag, "{message}"),
        _ => tracing::error!(plugin = tag, "{message}"),
    }
}

/// The host's processing time (ms since the Unix epoch), as operators see it.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The optional `migrate` export's typed function.
type MigrateFunc = wasmtime::component::TypedFunc<(String,), (Result<(), String>,)>;

/// A live instance of an operator plugin.
pub struct OperatorInstance {
    store: Store<HostState>,
    instance: Instance,
    bindings: Operator,
    plugin: Arc<Plugin>,
    limits: Limits,
    stderr: CapturedOutput,
    poisoned: bool,
}

impl fmt::Debug for OperatorInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorInstance").field("plugin", &self.plugin).field("poisoned", &self.poisoned).finish()
    }
}

impl OperatorInstance {
    /// Instantiates `plugin` with fresh keyed state and calls its `open`.
    pub fn open(plugin: &Arc<Plugin>, info: &InstanceInfo, limits: Limits) -> Result<Self, CallError> {
        let keyed = KeyedState::new(info.subtask, info.parallelism, info.max_parallelism);
        Self::open_with_state(plugin, info, limits, keyed, TimerService::new())
    }

    /// Instantiates `plugin` with existing state (after a restore or a
    /// reload) and calls its `open`.
    pub fn open_with_state(
        plugin: &Arc<Plugin>,
        info: &InstanceInfo,
        limits: Limits,
        mut keyed: KeyedState,
        mut timers: TimerService,
    ) -> Result<Self, CallError> {
        limits.bound_host_memory(&mut keyed, &mut timers);
        let tag: Arc<str> = format!("{}/{}[{}]", plugin.name, info.operator, info.subtask).into();
        let stderr = CapturedOutput::new(tag.clone(), "stderr");
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stdout(CapturedOutput::new(tag.clone(), "stdout")).stderr(stderr.clone());
        for (host, guest) in &info.read_dirs {
            wasi.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadOnly)
                .map_err(|e| CallError::Failed(format!("cannot grant read access to {} ({e:#})", host.display())))?;
        }
        let wasi = wasi.build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory),
            keyed,
            timers,
            tag,
            log_window: (Instant::now(), 0),
            over_limit: None,
            ticks_left: 0,
            inputs: info.inputs.iter().cloned().collect(),
            current_input: 0,
        };
        let mut store = Store::new(plugin.engine.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        if let Some(profiler) = plugin.engine.profiler() {
            let profiler = profiler.clone();
            let (pipeline, root) = (info.pipeline.clone(), format!("{} ({})", info.operator, plugin.name));
            store.epoch_deadline_callback(move |mut ctx| {
                profiler.tick(&pipeline, &root, &ctx);
                let s = ctx.data_mut();
                if s.ticks_left == 0 {
                    return Ok(wasmtime::UpdateDeadline::Interrupt);
                }
                s.ticks_left -= 1;
                Ok(wasmtime::UpdateDeadline::Continue(1))
            });
        }
        arm_deadline(&mut store, plugin.engine.profiler().is_some(), limits.call_timeout);
        let pre = match &plugin.kind {
            crate::plugin::PluginKind::Operator(pre) => pre,
            crate::plugin::PluginKind::Async(_) => {
                return Err(CallError::Failed(format!(
                    "plugin {} is an async operator (world weir:plugin/async-operator); give its operator an `async` table in the pipeline file",
                    plugin.name
                )));
            }
            _ => return Err(crate::connector::not_an_operator(plugin)),
        };
        let instance = match pre.instance_pre().instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(classify(&store, &stderr, limits, e)),
        };
        let bindings = match Operator::new(&mut store, &instance) {
            Ok(b) => b,
            Err(e) => return Err(classify(&store, &stderr, limits, e)),
        };
        let mut inst = Self { store, instance, bindings, plugin: plugin.clone(), limits, stderr, poisoned: false };
        let wit_info = types::OperatorInfo {
            pipeline: info.pipeline.clone(),
            operator: info.operator.clone(),
            subtask: info.subtask,
            parallelism: info.parallelism,
            config: info.config_json.clone(),
        };
        match inst.call(|b, s| b.weir_plugin_handler().call_open(s, &wit_info))? {
            Ok(()) => inst.commit()?,
            Err(e) => {
                inst.rollback();
                return Err(CallError::Failed(e));
            }
        }
        Ok(inst)
    }

    /// The instance's linear memory now (all its memories together, as the
    /// `limits.memory` limiter counts them), in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.used
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Processes one batch (frame format); returns the output batch.
    pub fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        self.process_input(0, batch)
    }

    /// Processes one batch that arrived on input `input` (an index into
    /// [`InstanceInfo::inputs`]; the plugin reads it with `inputs.current`).
    pub fn process_input(&mut self, input: u32, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        self.store.data_mut().current_input = input;
        let out = self.call(|b, s| b.weir_plugin_handler().call_process(s, batch));
        self.store.data_mut().current_input = 0;
        self.finish(out?)
    }

    /// Delivers fired timers.
    pub fn on_timer(&mut self, fired: &[TimerFired]) -> Result<Vec<u8>, CallError> {
        let fired: Vec<types::Timer> = fired
            .iter()
            .map(|t| types::Timer {
                domain: if t.event_time { types::TimeDomain::EventTime } else { types::TimeDomain::ProcessingTime },
                key: t.key.clone(),
                timestamp: t.timestamp,
            })
            .collect();
        let out = self.call(|b, s| b.weir_plugin_handler().call_on_timer(s, &fired))?;
        self.finish(out)
    }

    /// Signals the end of input; returns the final outputs.
    pub fn close(&mut self) -> Result<Vec<u8>, CallError> {
        match self.call(|b, s| b.weir_plugin_handler().call_close(s))? {
            Ok(out) => {
                self.commit()?;
                Ok(out)
            }
            Err(e) => {
                self.rollback();
                Err(CallError::Failed(e))
            }
        }
    }

    /// The instance's keyed state.
    pub fn keyed_state(&mut self) -> &mut KeyedState {
        &mut self.store.data_mut().keyed
    }

    /// The instance's timers (and watermark).
    pub fn timers(&mut self) -> &mut TimerService {
        &mut self.store.data_mut().timers
    }

    /// Starts a snapshot of the keyed state and timers (between calls).
    pub fn snapshot_state(&mut self) -> weir_state::SnapshotJob {
        let d = self.store.data_mut();
        d.keyed.snapshot(&d.timers)
    }

    /// Takes the state out of the instance (to hand it to a new instance).
    pub fn into_state(mut self) -> (KeyedState, TimerService) {
        let data = self.store.data_mut();
        let keyed = std::mem::replace(&mut data.keyed, KeyedState::new(0, 1, 1));
        let timers = std::mem::take(&mut data.timers);
        (keyed, timers)
    }

    /// Exchanges keyed state and timers with `other`: how a hot reload
    /// hands the running state to the new version's instance (and back on
    /// a rollback) without copying it.
    pub fn exchange_state(&mut self, other: &mut OperatorInstance) {
        let (a, b) = (self.store.data_mut(), other.store.data_mut());
        std::mem::swap(&mut a.keyed, &mut b.keyed);
        std::mem::swap(&mut a.timers, &mut b.timers);
    }

    /// Calls the optional `migrate` hook (`wit/migrate.wit`) with the
    /// previous version's hash, as a state transaction. Returns `Ok(false)`
    /// when the plugin does not export it (nothing to do).
    pub fn migrate(&mut self, previous_version: &str) -> Result<bool, CallError> {
        let Some(func) = self.migrate_func()? else { return Ok(false) };
        match self.call(|_, s| func.call(s, (previous_version.to_owned(),)))? {
            (Ok(()),) => {
                self.commit()?;
                Ok(true)
            }
            (Err(e),) => {
                self.rollback();
                Err(CallError::Failed(format!("its `migrate` hook failed: {e}")))
            }
        }
    }

    /// Checks that an exported `migrate` hook has the contract's type
    /// (part of validating a new version before a swap).
    pub fn check_migrate(&mut self) -> Result<(), CallError> {
        self.migrate_func().map(|_| ())
    }

    fn migrate_func(&mut self) -> Result<Option<MigrateFunc>, CallError> {
        let Some(index) = self.plugin.migrate else { return Ok(None) };
        self.instance
            .get_typed_func::<(String,), (Result<(), String>,)>(&mut self.store, &index)
            .map(Some)
            .map_err(|e| CallError::Failed(format!("its `migrate` export does not have the type of {} ({e:#})", crate::plugin::MIGRATE_INTERFACE)))
    }

    /// True once a trap has made the instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn finish(&mut self, out: types::BatchOutput) -> Result<Vec<u8>, CallError> {
        match out.error {
            None => {
                self.commit()?;
                Ok(out.records)
            }
            Some(e) => {
                self.rollback();
                Err(CallError::Rejected { index: e.index, message: e.message })
            }
        }
    }

    fn commit(&mut self) -> Result<(), CallError> {
        let d = self.store.data_mut();
        d.timers.commit();
        d.keyed.commit().map_err(|e| CallError::Failed(format!("the host could not store the operator's keyed state: {e}")))
    }

    fn rollback(&mut self) {
        let d = self.store.data_mut();
        d.keyed.rollback();
        d.timers.rollback();
    }

    /// One call into the guest under the per-call deadline, as a state
    /// transaction; a trap poisons the instance and rolls state back.
    fn call<R>(&mut self, f: impl FnOnce(&Operator, &mut Store<HostState>) -> wasmtime::Result<R>) -> Result<R, CallError> {
        if self.poisoned {
            return Err(CallError::Failed("the instance was discarded after an earlier trap".into()));
        }
        arm_deadline(&mut self.store, self.plugin.engine.profiler().is_some(), self.limits.call_timeout);
        {
            let d = self.store.data_mut();
            d.keyed.begin();
            d.timers.begin();
        }
        match f(&self.bindings, &mut self.store) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.poisoned = true;
                self.rollback();
                Err(classify(&self.store, &self.stderr, self.limits, e))
            }
        }
    }
}

/// Gives the next call `timeout` of Wasm execution: as one epoch deadline,
/// or, when profiling, as ticks the sampling callback counts down.
fn arm_deadline(store: &mut Store<HostState>, profiling: bool, timeout: Duration) {
    if profiling {
        store.data_mut().ticks_left = deadline_ticks(timeout);
        store.set_epoch_deadline(1);
    } else {
        store.set_epoch_deadline(deadline_ticks(timeout));
    }
}

pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

fn classify(store: &Store<HostState>, stderr: &CapturedOutput, limits: Limits, e: wasmtime::Error) -> CallError {
    if let Some(what) = &store.data().over_limit {
        return CallError::Trap { kind: TrapKind::HostLimit(what.clone()), detail: format!("{e:?}"), stderr: stderr.tail() };
    }
    classify_trap(store.data().limiter.denied, stderr, limits, e)
}

pub(crate) fn classify_trap(denied: Option<usize>, stderr: &CapturedOutput, limits: Limits, e: wasmtime::Error) -> CallError {
    let kind = if let Some(requested) = denied {
        TrapKind::Memory { limit: limits.memory, requested }
    } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        TrapKind::Deadline(limits.call_timeout)
    } else {
        TrapKind::Other
    };
    CallError::Trap { kind, detail: format!("{e:?}"), stderr: stderr.tail() }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;

    #[test]
    fn a_long_log_line_is_cut_at_a_character_boundary() {
        assert_eq!(cut_log_line("short"), "short");
        let exact = "x".repeat(MAX_LOG_LINE);
        assert_eq!(cut_log_line(&exact), exact);
        // A 3-byte character straddles the limit: the cut goes before it.
        let long = format!("{}€{}", "x".repeat(MAX_LOG_LINE - 1), "y".repeat(100 << 20));
        let cut = cut_log_line(&long);
        let expected = format!(
            "{}... ({} more bytes cut: a plugin log line is at most 16384 bytes)",
            "x".repeat(MAX_LOG_LINE - 1),
            3 + (100 << 20)
        );
        assert_eq!(cut, expected);
    }

    #[test]
    fn the_memory_limit_covers_all_memories_of_an_instance() {
        let mut l = Limiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap(), "first memory");
        assert!(l.memory_growing(0, 60, None).is_err(), "a second memory may not take the total past the limit");
        assert_eq!(l.denied, Some(120));
        assert!(l.memory_growing(60, 90, None).unwrap(), "growing the first within the limit");
        assert!(l.memory_growing(90, 101, None).is_err());
    }
}
