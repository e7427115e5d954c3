//! Sources and sinks written as plugins (worlds `weir:plugin/source` and
//! `weir:plugin/sink`, `wit/connector.wit`).
//!
//! A connector instance is one store, like an async operator's slot: its
//! calls are awaited (the `async-io` imports are served by an
//! [`IoProvider`] holding the pipeline's grants), its CPU time per call is
//! bounded by `limits.call-timeout` of Wasm execution, and a trap is a
//! [`CallError`] naming what happened. The connector adapter
//! (`weir-connector-wasm`) drives these calls from the source's or sink's
//! task thread, one call per batch.

use crate::asyncop::{arm_async_deadline, async_store, async_trap, AsyncHostState, IoProvider};
use crate::instance::{CallError, Limits};
use crate::output::CapturedOutput;
use crate::plugin::{Plugin, PluginKind};
use std::sync::Arc;
use wasmtime::Store;
use weir_bindings::sink::connector_types;
use weir_bindings::sink::sink_handler;
use weir_bindings::source::source_handler;

/// Who a connector instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// Pipeline name.
    pub pipeline: String,
    /// The source's or sink's name in the pipeline file.
    pub name: String,
    /// Subtask index.
    pub subtask: u32,
    /// Number of subtasks.
    pub parallelism: u32,
    /// The section's `config` table as a JSON object.
    pub config_json: String,
    /// Whether the pipeline takes checkpoints.
    pub checkpointing: bool,
}

/// A failure the plugin reported (as opposed to a trap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorFailure {
    /// Bad configuration or data: restarting will not help.
    User(String),
    /// An external system failed: a restart from the last checkpoint may help.
    External(String),
}

/// What a plugin's `poll` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// Records in frame format (possibly none).
    Ready(Vec<u8>),
    /// Nothing now; poll again after at most this many milliseconds.
    Idle(u32),
    /// A bounded input is exhausted.
    Finished,
}

/// The answer of one call: the outer error is a trap (drop the instance),
/// the inner one what the plugin said.
pub type Answer<T> = Result<Result<T, ConnectorFailure>, CallError>;

/// "a sink", "an operator".
fn a(kind: &str) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

/// The message for a source or sink plugin used as an operator.
pub(crate) fn not_an_operator(plugin: &Plugin) -> CallError {
    let kind = plugin.kind();
    CallError::Failed(format!(
        "plugin {} is {} (world weir:plugin/{kind}), not an operator; use it in a [{kind}s.NAME] section with type = \"wasm\" and plugin = \"{}\"",
        plugin.name,
        a(kind),
        plugin.name
    ))
}

/// Checks that `plugin` is a connector of kind `want` (`"sink"` or
/// `"source"`); the message is the one opening it would fail with.
pub fn check_connector_kind(plugin: &Plugin, want: &str) -> Result<(), String> {
    if plugin.kind() == want {
        return Ok(());
    }
    Err(format!(
        "plugin {} ({}) is {}, not {}: {} plugin exports weir:plugin/{want}-handler@0.1.0 (world weir:plugin/{want})",
        plugin.name,
        plugin.path.display(),
        a(plugin.kind()),
        a(want),
        a(want)
    ))
}

fn wrong_kind(plugin: &Plugin, want: &str) -> CallError {
    CallError::Failed(check_connector_kind(plugin, want).err().unwrap_or_default())
}

/// One live connector instance: its store, the generated bindings, limits.
struct Live<B> {
    store: Store<AsyncHostState>,
    bindings: B,
    limits: Limits,
    stderr: CapturedOutput,
}

impl<B> Live<B> {
    /// Instantiates `plugin` in a fresh store (`instantiate`: the world's
    /// pre-instance) and awaits its `open` export (`open`).
    async fn open(
        plugin: &Plugin,
        info: &ConnectorInfo,
        limits: Limits,
        io: Arc<dyn IoProvider>,
        instantiate: impl AsyncFnOnce(&mut Store<AsyncHostState>) -> wasmtime::Result<B>,
        open: impl AsyncFnOnce(&B, &mut Store<AsyncHostState>, &connector_types::ConnectorInfo) -> wasmtime::Result<Result<(), connector_types::ConnectorError>>,
    ) -> Answer<Self> {
        let (mut store, stderr) = async_store(plugin, tag(plugin, info), limits, io, (info.pipeline.clone(), format!("{} ({})", info.name, plugin.name)));
        let bindings = match instantiate(&mut store).await {
            Ok(b) => b,
            Err(e) => return Err(async_trap(&store, &stderr, limits, e)),
        };
        let mut live = Live { store, bindings, limits, stderr };
        let (b, s) = live.arm();
        let r = open(b, s, &wit_info(info)).await;
        Ok(live.settle(r)?.map(|()| live))
    }

    /// Arms the CPU deadline of the next call; the bindings and the store to make it with.
    fn arm(&mut self) -> (&B, &mut Store<AsyncHostState>) {
        arm_async_deadline(&mut self.store, self.limits);
        (&self.bindings, &mut self.store)
    }

    fn settle<T>(&self, r: wasmtime::Result<Result<T, connector_types::ConnectorError>>) -> Answer<T> {
        match r {
            Ok(Ok(v)) => Ok(Ok(v)),
            Ok(Err(connector_types::ConnectorError::User(m))) => Ok(Err(ConnectorFailure::User(m))),
            Ok(Err(connector_types::ConnectorError::External(m))) => Ok(Err(ConnectorFailure::External(m))),
            Err(e) => Err(async_trap(&self.store, &self.stderr, self.limits, e)),
        }
    }
}

fn wit_info(info: &ConnectorInfo) -> connector_types::ConnectorInfo {
    connector_types::ConnectorInfo {
        pipeline: info.pipeline.clone(),
        name: info.name.clone(),
        subtask: info.subtask,
        parallelism: info.parallelism,
        config: info.config_json.clone(),
        checkpointing: info.checkpointing,
    }
}

fn tag(plugin: &Plugin, info: &ConnectorInfo) -> Arc<str> {
    format!("{}/{}[{}]", plugin.name, info.name, info.subtask).into()
}

/// A sink plugin's instance (world `weir:plugin/sink`).
pub struct SinkInstance {
    live: Live<weir_bindings::sink::Sink>,
}

impl std::fmt::Debug for SinkInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkInstance").finish_non_exhaustive()
    }
}

impl SinkInstance {
    /// Instantiates a sink plugin and awaits its `open`.
    pub async fn open(plugin: &Arc<Plugin>, info: &ConnectorInfo, limits: Limits, io: Arc<dyn IoProvider>) -> Answer<Self> {
        let PluginKind::Sink(pre) = &plugin.kind else { return Err(wrong_kind(plugin, "sink")) };
        let live = Live::open(
            plugin,
            info,
            limits,
            io,
            async |store: &mut Store<AsyncHostState>| pre.instantiate_async(store).await,
            async |b: &weir_bindings::sink::Sink, store: &mut Store<AsyncHostState>, info: &connector_types::ConnectorInfo| {
                b.weir_plugin_sink_handler().call_open(store, info).await
            },
        )
        .await?;
        Ok(live.map(|live| Self { live }))
    }

    /// `start`: the handles of the checkpoint the run resumes from, or `None` on a fresh start.
    pub async fn start(&mut self, recovered: Option<Vec<(u64, Vec<u8>)>>) -> Answer<()> {
        let recovered = recovered.map(|r| r.into_iter().map(|(checkpoint, handle)| sink_handler::Committable { checkpoint, handle }).collect::<Vec<_>>());
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_sink_handler().call_start(store, recovered.as_deref()).await;
        self.live.settle(r)
    }

    /// `write`: one batch of `records` records in frame format.
    pub async fn write(&mut self, batch: &[u8], records: u32) -> Answer<()> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_sink_handler().call_write(store, batch, records).await;
        self.live.settle(r)
    }

    /// `pre-commit`: the handle to store in checkpoint `checkpoint`.
    pub async fn pre_commit(&mut self, checkpoint: u64) -> Answer<Vec<u8>> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_sink_handler().call_pre_commit(store, checkpoint).await;
        self.live.settle(r)
    }

    /// `commit`: publish what `handle` describes.
    pub async fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Answer<()> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_sink_handler().call_commit(store, checkpoint, handle).await;
        self.live.settle(r)
    }

    /// `flush`: end of input.
    pub async fn flush(&mut self) -> Answer<()> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_sink_handler().call_flush(store).await;
        self.live.settle(r)
    }
}

/// A source plugin's instance (world `weir:plugin/source`).
pub struct SourceInstance {
    live: Live<weir_bindings::source::Source>,
}

impl std::fmt::Debug for SourceInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceInstance").finish_non_exhaustive()
    }
}

impl SourceInstance {
    /// Instantiates a source plugin and awaits its `open`.
    pub async fn open(plugin: &Arc<Plugin>, info: &ConnectorInfo, limits: Limits, io: Arc<dyn IoProvider>) -> Answer<Self> {
        let PluginKind::Source(pre) = &plugin.kind else { return Err(wrong_kind(plugin, "source")) };
        let live = Live::open(
            plugin,
            info,
            limits,
            io,
            async |store: &mut Store<AsyncHostState>| pre.instantiate_async(store).await,
            async |b: &weir_bindings::source::Source, store: &mut Store<AsyncHostState>, info: &connector_types::ConnectorInfo| {
                b.weir_plugin_source_handler().call_open(store, info).await
            },
        )
        .await?;
        Ok(live.map(|live| Self { live }))
    }

    /// `restore`: the positions every subtask stored in the checkpoint.
    pub async fn restore(&mut self, positions: &[Vec<u8>]) -> Answer<()> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_source_handler().call_restore(store, positions).await;
        self.live.settle(r)
    }

    /// `poll`: about `max_bytes` of records.
    pub async fn poll(&mut self, max_bytes: u32) -> Answer<Polled> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_source_handler().call_poll(store, max_bytes).await;
        Ok(self.live.settle(r)?.map(|p| match p {
            source_handler::PollResult::Ready(records) => Polled::Ready(records),
            source_handler::PollResult::Idle(ms) => Polled::Idle(ms),
            source_handler::PollResult::Finished => Polled::Finished,
        }))
    }

    /// `snapshot`: the position after the records returned so far.
    pub async fn snapshot(&mut self) -> Answer<Vec<u8>> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_source_handler().call_snapshot(store).await;
        self.live.settle(r)
    }

    /// `checkpoint-complete`.
    pub async fn checkpoint_complete(&mut self, checkpoint: u64, position: &[u8]) -> Answer<()> {
        let (b, store) = self.live.arm();
        let r = b.weir_plugin_source_handler().call_checkpoint_complete(store, checkpoint, position).await;
        self.live.settle(r)
    }
}
