//! Async operators: one instance per *slot*, calls awaited on a tokio
//! runtime, host I/O (HTTP, SQL, key-value) served by an [`IoProvider`].
//!
//! The guest sees `async-io` calls as ordinary functions; the host awaits
//! them, so one slot waiting for the network does not hold up the others.
//! A slot whose call is abandoned (timeout) is left mid-call: drop the
//! [`AsyncInstance`] and open a new one from the plugin's `InstancePre`.

use crate::instance::{classify_trap, deadline_ticks, InstanceInfo, Limiter, Limits, CallError};
use crate::output::CapturedOutput;
use crate::plugin::{Plugin, PluginKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_bindings::async_operator::{async_handler, async_io, log, types, AsyncOperator};

pub use async_io::{HttpResponse, SqlRows, SqlValue};

/// The future of one host I/O call; the error is a message for the plugin.
pub type IoFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// Serves the `async-io` imports of one operator subtask. Implemented by
/// `weir-async` (HTTP client, PostgreSQL pools, grants); every slot of the
/// subtask shares one provider.
pub trait IoProvider: Send + Sync {
    /// `async-io.http`.
    fn http(&self, method: String, url: String, headers: Vec<(String, String)>, body: Vec<u8>) -> IoFuture<HttpResponse>;
    /// `async-io.sql`.
    fn sql(&self, connection: String, query: String, params: Vec<SqlValue>) -> IoFuture<SqlRows>;
    /// `async-io.kv-get`.
    fn kv_get(&self, store: String, key: String) -> IoFuture<Option<String>>;
}

/// What the plugin's `process` said about a record it could not handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessError {
    /// Worth retrying.
    Transient(String),
    /// Retrying will not help.
    Permanent(String),
}

/// Everything a slot's store holds.
pub struct AsyncHostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    io: Arc<dyn IoProvider>,
    tag: Arc<str>,
    log_window: (Instant, u32),
    /// Epoch ticks of Wasm execution the current call may still use.
    ticks_left: u64,
}

impl WasiView for AsyncHostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<AsyncHostState>) -> wasmtime::Result<()> {
    AsyncOperator::add_to_linker::<AsyncHostState, HasSelf<AsyncHostState>>(linker, |s| s)?;
    // Source and sink plugins import the same interfaces, plus the
    // connector types.
    weir_bindings::sink::connector_types::add_to_linker::<AsyncHostState, HasSelf<AsyncHostState>>(linker, |s| s)
}

impl weir_bindings::sink::connector_types::Host for AsyncHostState {}

impl types::Host for AsyncHostState {}

impl async_io::Host for AsyncHostState {
    async fn http(
        &mut self,
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> wasmtime::Result<Result<HttpResponse, String>> {
        Ok(self.io.http(method, url, headers, body).await)
    }

    async fn sql(&mut self, connection: String, query: String, params: Vec<SqlValue>) -> wasmtime::Result<Result<SqlRows, String>> {
        Ok(self.io.sql(connection, query, params).await)
    }

    async fn kv_get(&mut self, store: String, key: String) -> wasmtime::Result<Result<Option<String>, String>> {
        Ok(self.io.kv_get(store, key).await)
    }
}

impl log::Host for AsyncHostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = crate::instance::tracing_level!(level, log::Level);
        crate::instance::plugin_log(&self.tag, &mut self.log_window, level, &message);
        Ok(())
    }
}

/// A store for an instance whose calls are awaited (an async operator's
/// slot, a source or sink plugin): captured output, the memory cap, and a
/// CPU deadline counted in epoch ticks of Wasm execution only (each tick
/// yields to the runtime, so waiting for I/O uses none of it).
pub(crate) fn async_store(plugin: &Plugin, tag: Arc<str>, limits: Limits, io: Arc<dyn IoProvider>, profile_as: (String, String)) -> (Store<AsyncHostState>, CapturedOutput) {
    let stderr = CapturedOutput::new(tag.clone(), "stderr");
    let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
    wasi.stdout(CapturedOutput::new(tag.clone(), "stdout")).stderr(stderr.clone());
    let state = AsyncHostState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter: Limiter::new(limits.memory),
        io,
        tag,
        log_window: (Instant::now(), 0),
        ticks_left: deadline_ticks(limits.call_timeout),
    };
    let mut store = Store::new(plugin.engine.wasmtime(), state);
    store.limiter(|s| &mut s.limiter);
    // Every epoch tick (10 ms) of Wasm execution yields to the runtime, so
    // a busy instance neither holds up the others nor escapes its call's
    // timeout; the ticks a call gets are its CPU deadline.
    let profiler = plugin.engine.profiler().map(|p| (p.clone(), profile_as));
    store.epoch_deadline_callback(move |mut ctx| {
        if let Some((profiler, (pipeline, root))) = &profiler {
            profiler.tick(pipeline, root, &ctx);
        }
        let s = ctx.data_mut();
        if s.ticks_left == 0 {
            return Ok(wasmtime::UpdateDeadline::Interrupt);
        }
        s.ticks_left -= 1;
        Ok(wasmtime::UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    (store, stderr)
}

/// Gives the store's next call its full CPU deadline.
pub(crate) fn arm_async_deadline(store: &mut Store<AsyncHostState>, limits: Limits) {
    store.data_mut().ticks_left = deadline_ticks(limits.call_timeout);
    store.set_epoch_deadline(1);
}

/// The classified trap of a failed call on an async store.
pub(crate) fn async_trap(store: &Store<AsyncHostState>, stderr: &CapturedOutput, limits: Limits, e: wasmtime::Error) -> CallError {
    classify_trap(store.data().limiter.denied, stderr, limits, e)
}

/// One slot: a live instance of an async operator with its own store.
pub struct AsyncInstance {
    store: Store<AsyncHostState>,
    bindings: AsyncOperator,
    limits: Limits,
    stderr: CapturedOutput,
}

impl std::fmt::Debug for AsyncInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncInstance").field("tag", &self.store.data().tag).finish()
    }
}

impl AsyncInstance {
    /// Instantiates an async plugin (no filesystem: `read_dirs` of `info`
    /// are not granted to async operators) and awaits its `open`.
    pub async fn open(plugin: &Arc<Plugin>, info: &InstanceInfo, limits: Limits, io: Arc<dyn IoProvider>, slot: usize) -> Result<Self, CallError> {
        let pre = match &plugin.kind {
            PluginKind::Async(pre) => pre,
            PluginKind::Sink(_) | PluginKind::Source(_) => return Err(crate::connector::not_an_operator(plugin)),
            PluginKind::Operator(_) => return Err(CallError::Failed(format!(
                "plugin {} is not an async operator (it does not export {}); remove the operator's `async` table",
                plugin.name,
                crate::plugin::ASYNC_INTERFACE
            ))),
        };
        let tag: Arc<str> = format!("{}/{}[{}]#{slot}", plugin.name, info.operator, info.subtask).into();
        let (mut store, stderr) = async_store(plugin, tag, limits, io, (info.pipeline.clone(), format!("{} ({})", info.operator, plugin.name)));
        let bindings = match pre.instantiate_async(&mut store).await {
            Ok(b) => b,
            Err(e) => return Err(classify_trap(store.data().limiter.denied, &stderr, limits, e)),
        };
        let mut inst = Self { store, bindings, limits, stderr };
        let wit_info = types::OperatorInfo {
            pipeline: info.pipeline.clone(),
            operator: info.operator.clone(),
            subtask: info.subtask,
            parallelism: info.parallelism,
            config: info.config_json.clone(),
        };
        inst.arm_deadline();
        let handler = inst.bindings.weir_plugin_async_handler();
        match handler.call_open(&mut inst.store, &wit_info).await {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(e)) => Err(CallError::Failed(e)),
            Err(e) => Err(classify_trap(inst.store.data().limiter.denied, &inst.stderr, inst.limits, e)),
        }
    }

    fn arm_deadline(&mut self) {
        arm_async_deadline(&mut self.store, self.limits);
    }

    /// Processes one record (frame format). The outer error is a trap (the
    /// instance must be dropped); the inner one is the plugin's answer.
    /// The call's CPU deadline is `limits.call-timeout` of Wasm execution
    /// (I/O waits do not count); the record's timeout is the caller's.
    pub async fn process(&mut self, record: &[u8]) -> Result<Result<Vec<u8>, ProcessError>, CallError> {
        self.arm_deadline();
        let handler = self.bindings.weir_plugin_async_handler();
        match handler.call_process(&mut self.store, record).await {
            Ok(Ok(out)) => Ok(Ok(out)),
            Ok(Err(async_handler::ProcessError::Transient(m))) => Ok(Err(ProcessError::Transient(m))),
            Ok(Err(async_handler::ProcessError::Permanent(m))) => Ok(Err(ProcessError::Permanent(m))),
            Err(e) => Err(classify_trap(self.store.data().limiter.denied, &self.stderr, self.limits, e)),
        }
    }
}
