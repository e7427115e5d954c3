//! Running a pipeline: from a validated [`Pipeline`] to threads, and back
//! to a [`RunSummary`].
//!
//! One file per concern, in the order a run goes through them:
//! - [`start`]: the checkpoint store, the claim that no other process runs
//!   this pipeline, and which checkpoint (if any) the run resumes from;
//! - [`build`]: the tasks of the plan: input gates, output buffer pools
//!   and partitioners, and one stage per vertex through [`nodes`], the one
//!   constructor of every node kind;
//! - [`drive`]: one thread per task, and the loop that coordinates
//!   checkpoints, takes requests from the [`crate::RunHandle`], samples
//!   metrics, shows progress and stops everything at the first failure;
//! - [`summary`]: what the run did.

mod build;
mod drive;
pub(crate) mod nodes;
mod progress;
mod start;
mod summary;

use crate::checkpoints::{CheckpointStats, Coordinator, StartFrom};
use crate::config::Pipeline;
use crate::plan::Plan;
use std::sync::Arc;
use std::time::Duration;
use weir_connector::ErrorKind;
use crate::vault::PluginVault;
use weir_wasm::{Engine, Plugin};

pub use nodes::{check_connectors, check_operators};

/// When a run failed: before data flowed, or while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading plugins, opening operators and connectors, restoring.
    Setup,
    /// A task failed while running.
    Running,
}

/// Why a pipeline could not start or stopped with an error, with what a
/// supervisor should do about it ([`RunError::is_retryable`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    /// Before or after data flowed.
    pub phase: Phase,
    /// Whose fault: the user's (config, plugin), an external system's, or weir's.
    pub kind: ErrorKind,
    /// What happened and what to do, naming the file, section and record.
    pub message: String,
}

impl RunError {
    /// A setup failure the user must fix (a bad plugin or config).
    pub fn setup(message: impl Into<String>) -> Self {
        Self { phase: Phase::Setup, kind: ErrorKind::User, message: message.into() }
    }

    /// A setup failure of the given kind (a connector's error keeps its own).
    pub fn setup_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { phase: Phase::Setup, kind, message: message.into() }
    }

    /// A task failed while running.
    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { phase: Phase::Running, kind, message: message.into() }
    }

    /// Whether starting again later may succeed on its own: a failure while
    /// running (restored from the last checkpoint) or an external system
    /// that was not reachable. A setup error of the user's (a config a
    /// connector or plugin refuses, a plugin that does not compile) fails
    /// the same way every time until it is fixed.
    pub fn is_retryable(&self) -> bool {
        self.phase == Phase::Running || self.kind != ErrorKind::User
    }
}

/// How progress is shown while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A live table per task on a terminal, a plain line every few
    /// seconds otherwise.
    #[default]
    Auto,
    /// Nothing until the summary.
    Quiet,
}

/// How to run a pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Progress display.
    pub progress: Progress,
    /// Serve Prometheus metrics at `/metrics` on this address.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Which checkpoint to resume from.
    pub start_from: StartFrom,
    /// Reports the run (live figures, plugins, hot-reload history via
    /// [`crate::RunHandle::reload`]) and takes requests (stop, savepoint,
    /// reload) while it runs: the one way into a running pipeline, which
    /// the control socket of `weir run` and the API of `weir serve` use.
    pub handle: Option<crate::RunHandle>,
    /// Operators to run natively instead of instantiating their plugin,
    /// by plugin name (see [`crate::NativeOperators`]); empty by default.
    pub native: crate::NativeOperators,
}

/// Counters of one vertex at the end of a run.
#[derive(Debug, Clone)]
pub struct VertexSummary {
    /// Vertex name.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub kind: &'static str,
    /// Parallelism.
    pub parallelism: u32,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Bytes in (frame format).
    pub bytes_in: u64,
    /// Records skipped by `on-error = "skip"`.
    pub skipped: u64,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// Wall time.
    pub elapsed: Duration,
    /// Per vertex, in plan order.
    pub vertices: Vec<VertexSummary>,
    /// Busy, idle and backpressured share (0..=1) of each task over the run.
    pub tasks: Vec<(String, f64, f64, f64)>,
    /// End-to-end latency at the sinks (p50, p99, max bucket) in
    /// microseconds, for records stamped by their source (`mark-latency`).
    pub latency: Option<Latency>,
    /// Checkpoints of this run (`None` when checkpointing is off).
    pub checkpoints: Option<CheckpointStats>,
}

/// End-to-end latency of the records that carried a source timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Records measured.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

impl RunSummary {
    /// Records produced by all sources.
    pub fn source_records(&self) -> u64 {
        self.vertices.iter().filter(|v| v.kind == "source").map(|v| v.records_out).sum()
    }

    /// Records received by all sinks.
    pub fn sink_records(&self) -> u64 {
        self.vertices.iter().filter(|v| v.kind == "sink").map(|v| v.records_in).sum()
    }
}

/// Plugins of a pipeline, loaded and checked (one per operator).
#[derive(Debug)]
pub struct LoadedPlugins {
    /// Same order as `Pipeline::operators`.
    pub plugins: Vec<Arc<Plugin>>,
    /// The engine they were loaded by, which also loads the sources and
    /// sinks that are plugins (`type = "wasm"`).
    pub engine: Engine,
    /// Where hot reload offers those sources and sinks new versions.
    pub swaps: Arc<weir_wasm::reload::ConnectorSwaps>,
    /// Where the versions that ran well are kept, when the run keeps them
    /// (a checkpointed run): those sources and sinks load through it.
    pub known_good: Option<Arc<dyn weir_wasm::reload::KnownGood>>,
}

/// Loads (compiles or fetches from the cache) every operator's plugin, as
/// the files in the plugin directory are.
pub fn load_plugins(p: &Pipeline, engine: &Engine) -> Result<LoadedPlugins, RunError> {
    load_plugins_from(p, engine, None)
}

/// Like [`load_plugins`]; with a vault, an operator whose file does not
/// load or holds a version hot reload refused runs its last good version.
fn load_plugins_from(p: &Pipeline, engine: &Engine, vault: Option<&PluginVault>) -> Result<LoadedPlugins, RunError> {
    let mut loaded: Vec<(std::path::PathBuf, Arc<Plugin>)> = Vec::new();
    let mut plugins = Vec::new();
    for (i, file) in p.plugin_files.iter().enumerate() {
        if let Some((_, plugin)) = loaded.iter().find(|(f, _)| f == file) {
            plugins.push(plugin.clone());
            continue;
        }
        let plugin = load_plugin(p, engine, i, file, vault)?;
        tracing::info!(
            plugin = %plugin.name,
            version = plugin.short_hash(),
            size = plugin.size,
            cached = plugin.from_cache,
            load_ms = plugin.load_time.as_millis() as u64,
            "loaded plugin"
        );
        let plugin = Arc::new(plugin);
        loaded.push((file.clone(), plugin.clone()));
        plugins.push(plugin);
    }
    let known_good = vault.map(|v| Arc::new(v.clone()) as Arc<dyn weir_wasm::reload::KnownGood>);
    Ok(LoadedPlugins { plugins, engine: engine.clone(), swaps: Arc::default(), known_good })
}

fn load_plugin(p: &Pipeline, engine: &Engine, i: usize, file: &std::path::Path, vault: Option<&PluginVault>) -> Result<Plugin, RunError> {
    let op = &p.operators[i];
    let loaded = match vault {
        Some(v) => weir_wasm::reload::KnownGood::load(v, engine, &op.name, file),
        None => engine.load(file).map_err(|e| e.to_string()),
    };
    loaded.map_err(|e| RunError::setup(format!("{}: {} (`{}`): {e}", p.file.display(), op.path(), op.name)))
}

/// Runs a pipeline to the end of its input (or until its handle stops it).
pub fn run(p: &Pipeline, engine: &Engine, options: &RunOptions) -> Result<RunSummary, RunError> {
    let handle = options.handle.clone().unwrap_or_default();
    let vault = PluginVault::of(p);
    let plugins = load_plugins_from(p, engine, vault.as_ref())?;
    let plan = Plan::new(p);
    for line in plan.describe() {
        tracing::debug!(pipeline = %p.name, "{line}");
    }
    let mut start = start::Start::prepare(p, &plan, &handle, &options.start_from)?;
    // Before the tasks are built: stages register their metric handles
    // (async operators' slot metrics) with the recorder installed here.
    if let Some(address) = options.metrics_address {
        match weir_metrics::serve_prometheus(address) {
            Ok(()) => tracing::info!(%address, "serving Prometheus metrics at /metrics"),
            Err(e) => tracing::warn!("{e}; continuing without the metrics endpoint (use --metrics-address to choose another)"),
        }
    }
    // Restored from the checkpoint taken when the input had ended: every
    // record was processed. Building the tasks has the sinks publish what
    // that checkpoint holds (again, idempotently, in case the run before
    // stopped between completing it and committing); nothing else runs, and
    // no checkpoint is written that would push older ones out.
    let finished = start.restore.as_ref().is_some_and(|r| r.checkpoint.manifest.finished);
    let mut coordinator = if finished { None } else { start.coordinator(p, &plan) };
    let fresh = options.start_from == StartFrom::Fresh;
    let started = std::time::Instant::now();
    let mut built = build::Built::new(p, &plan, &plugins, &options.native, start.restore.as_ref(), fresh, coordinator.as_ref())?;
    if finished {
        let monitor = weir_metrics::Monitor::new(built.registry(p, &plan));
        return Ok(summary::summarize(p, &plan, &built.metrics, &monitor, None, started.elapsed()));
    }
    // Every state file is read: without a coordinator to hold it, the pin
    // on the restored checkpoint can go. The claim on the pipeline stays.
    let _control = start.into_control();
    // Every operator opened: the versions running are good ones.
    if let Some(v) = &vault {
        for (op, plugin) in p.operators.iter().zip(&plugins.plugins) {
            weir_wasm::reload::KnownGood::good(v, &op.name, plugin);
        }
    }
    let monitor = Arc::new(weir_metrics::Monitor::new(built.registry(p, &plan)));
    let _attached = handle.attach_guard(monitor.clone(), coordinator.as_ref().map(Coordinator::stats), crate::handle::plugins_at_start(p, &plugins));
    let _reload = build::start_reload(p, &plan, engine, &handle, &plugins, &built, coordinator.as_ref())?;
    let metrics = built.metrics.clone();
    let elapsed = drive::drive(p, built.tasks, built.cancel, coordinator.as_mut(), &handle, &monitor, options.progress)?;
    Ok(summary::summarize(p, &plan, &metrics, &monitor, coordinator.as_ref(), elapsed))
}
