//! Building the tasks of a plan and running them on threads.

use crate::checkpoints::{CheckpointStats, Coordinator, Restore, StartFrom};
use crate::config::{OnError, Pipeline, SinkKind, SourceKind, StateBackendKind};
use crate::plan::{Plan, VertexKind};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weir_connector::{ConnectorContext, DiscardSink, Sink, Source};
use weir_connector_file::{FileSink, FileSource, StdoutSink};
use weir_connector_generator::GeneratorSource;
use weir_connector_kafka::{KafkaSink, KafkaSource};
use weir_network::{gate, BufferConfig, BufferPool, GateSender, InputGate, Partitioner, Partitioning, PoolConfig, WaitClock};
use weir_metrics::{Monitor, Registry, TaskEntry, VertexEntry};
use weir_task::{ErrorPolicy, ReloadSlot, SinkStage, Stage, StageInfo, StageMetrics, Task, TaskError, TaskInput, TaskMetrics, WasmStage};
use weir_state::{KeyedState, TimerService};
use weir_wasm::{Engine, InstanceInfo, OperatorInstance, Plugin};

/// Why a pipeline could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A plugin could not be loaded or opened, or a connector could not be opened.
    #[error("{0}")]
    Setup(String),
    /// A task failed while running.
    #[error("{0}")]
    Failed(String),
}

/// How progress is shown while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A live table per operator on a terminal, a plain line every few
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
    /// reload) while it runs.
    pub handle: Option<crate::RunHandle>,
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
}

/// Loads (compiles or fetches from the cache) every operator's plugin.
pub fn load_plugins(p: &Pipeline, engine: &Engine) -> Result<LoadedPlugins, RunError> {
    let mut loaded: Vec<(std::path::PathBuf, Arc<Plugin>)> = Vec::new();
    let mut plugins = Vec::new();
    for (i, file) in p.plugin_files.iter().enumerate() {
        if let Some((_, plugin)) = loaded.iter().find(|(f, _)| f == file) {
            plugins.push(plugin.clone());
            continue;
        }
        let plugin = engine.load(file).map_err(|e| {
            RunError::Setup(format!("{}: {} (`{}`): {e}", p.file.display(), p.operators[i].path(), p.operators[i].name))
        })?;
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
    Ok(LoadedPlugins { plugins })
}

fn open_operator(p: &Pipeline, plugins: &LoadedPlugins, op_index: usize, subtask: u32, parallelism: u32) -> Result<OperatorInstance, RunError> {
    let keyed = KeyedState::new(subtask, parallelism, p.max_parallelism);
    open_operator_with(p, plugins, op_index, subtask, parallelism, keyed, TimerService::new())
}

/// The keyed state an operator subtask starts with: empty, or restored
/// from the key groups it owns in a checkpoint, in the configured backend.
fn operator_state(p: &Pipeline, op_index: usize, subtask: u32, parallelism: u32, restore: Option<&Restore>) -> Result<(KeyedState, TimerService), RunError> {
    let op = &p.operators[op_index];
    let mut keyed = match p.state.backend {
        StateBackendKind::Heap => KeyedState::new(subtask, parallelism, p.max_parallelism),
        StateBackendKind::Disk => {
            let path = p.state.dir.join(&p.name).join(format!("{}-{subtask}.redb", op.name));
            let backend = weir_state::DiskBackend::open(&path)
                .map_err(|e| RunError::Setup(format!("{}: state: cannot open the on-disk state of `{}` at {}: {e}", p.file.display(), op.name, path.display())))?;
            KeyedState::with_backend(subtask, parallelism, p.max_parallelism, Box::new(backend))
        }
    };
    let mut timers = TimerService::new();
    if let Some(r) = restore {
        let files = r.operator_files(&op.name, keyed.key_groups()).map_err(RunError::Setup)?;
        let refs: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).collect();
        keyed.restore(&mut timers, &refs).map_err(|e| {
            RunError::Setup(format!("checkpoint {} ({}): state of `{}`: {e}", r.checkpoint.manifest.id, r.checkpoint.dir.display(), op.name))
        })?;
    }
    Ok((keyed, timers))
}

fn open_operator_with(
    p: &Pipeline,
    plugins: &LoadedPlugins,
    op_index: usize,
    subtask: u32,
    parallelism: u32,
    keyed: KeyedState,
    timers: TimerService,
) -> Result<OperatorInstance, RunError> {
    let op = &p.operators[op_index];
    let config_json = serde_json::to_string(&op.config).expect("a TOML table is valid JSON");
    let info = InstanceInfo {
        pipeline: p.name.clone(),
        operator: op.name.clone(),
        subtask,
        parallelism,
        max_parallelism: p.max_parallelism,
        config_json,
        read_dirs: op.allow_read.iter().map(|d| (p.file.parent().unwrap_or(std::path::Path::new(".")).join(d), d.clone())).collect(),
    };
    let plugin = &plugins.plugins[op_index];
    OperatorInstance::open_with_state(plugin, &info, op.limits.or(p.limits), keyed, timers).map_err(|e| {
        RunError::Setup(format!(
            "{}: {} (`{}`, plugin `{}`): the plugin refused to start: {e}. Check {}.config",
            p.file.display(),
            op.path(),
            op.name,
            plugin.name,
            op.path()
        ))
    })
}

/// Opens every operator once (subtask 0) to check its config, then closes
/// it. An async operator opens one slot and connects to nothing.
pub fn check_operators(p: &Pipeline, plugins: &LoadedPlugins) -> Result<(), RunError> {
    for i in 0..p.operators.len() {
        if p.operators[i].async_io.is_some() {
            let mut op = p.operators[i].clone();
            if let Some(a) = &mut op.async_io {
                a.capacity = 1;
            }
            let mut p1 = p.clone();
            p1.operators[i] = op;
            let stage = open_async(&p1, plugins, i, 0, 1, None, Arc::new(StageMetrics::default()), Arc::new(WaitClock::default()))?;
            drop(stage);
        } else {
            open_operator(p, plugins, i, 0, 1)?;
        }
    }
    Ok(())
}

fn instance_info(p: &Pipeline, op_index: usize, subtask: u32, parallelism: u32) -> InstanceInfo {
    let op = &p.operators[op_index];
    InstanceInfo {
        pipeline: p.name.clone(),
        operator: op.name.clone(),
        subtask,
        parallelism,
        max_parallelism: p.max_parallelism,
        config_json: serde_json::to_string(&op.config).expect("a TOML table is valid JSON"),
        read_dirs: op.allow_read.iter().map(|d| (p.file.parent().unwrap_or(std::path::Path::new(".")).join(d), d.clone())).collect(),
    }
}

/// Starts the slots of an async operator's subtask.
#[allow(clippy::too_many_arguments)]
fn open_async(
    p: &Pipeline,
    plugins: &LoadedPlugins,
    op_index: usize,
    subtask: u32,
    parallelism: u32,
    dead_letter: Option<weir_async::DeadLetter>,
    metrics: Arc<StageMetrics>,
    backpressure: Arc<WaitClock>,
) -> Result<weir_async::AsyncStage, RunError> {
    let op = &p.operators[op_index];
    let config = op.async_io.clone().expect("an async operator");
    let plugin = &plugins.plugins[op_index];
    let fail = |e: String| RunError::Setup(format!("{}: {} (`{}`, plugin `{}`): {e}", p.file.display(), op.path(), op.name, plugin.name));
    let application = format!("weir/{}/{}/{subtask}", p.name, op.name);
    let io = weir_async::Io::new(&format!("{}.async", op.path()), &config, &p.connections, &application).map_err(fail)?;
    weir_async::AsyncStage::open(weir_async::AsyncStageSpec {
        config_path: op.path(),
        config,
        plugin: plugin.clone(),
        info: instance_info(p, op_index, subtask, parallelism),
        limits: op.limits.or(p.limits),
        io: Arc::new(io),
        dead_letter,
        metrics,
        backpressure,
    })
    .map_err(|e| fail(format!("{e}. Check {}.config", op.path())))
}

fn open_source(p: &Pipeline, kind: &SourceKind, ctx: &ConnectorContext) -> Result<Box<dyn Source>, RunError> {
    Ok(match kind {
        SourceKind::Generator(c) => Box::new(GeneratorSource::new(c.clone(), ctx)),
        SourceKind::File(c) => Box::new(FileSource::open(c.clone(), ctx).map_err(|e| RunError::Setup(format!("{}: sources.{}: {e}", p.file.display(), ctx.name)))?),
        SourceKind::Kafka(c) => Box::new(KafkaSource::open(c.clone(), ctx).map_err(|e| RunError::Setup(format!("{}: sources.{}: {e}", p.file.display(), ctx.name)))?),
    })
}

fn open_sink(p: &Pipeline, kind: &SinkKind, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, RunError> {
    Ok(match kind {
        SinkKind::Stdout(c) => Box::new(StdoutSink::new(c.clone(), ctx)),
        SinkKind::File(c) => Box::new(FileSink::open(c.clone(), ctx).map_err(|e| RunError::Setup(format!("{}: sinks.{}: {e}", p.file.display(), ctx.name)))?),
        SinkKind::Discard => Box::new(DiscardSink::default()),
        SinkKind::Kafka(c) => Box::new(KafkaSink::open(c.clone(), ctx).map_err(|e| RunError::Setup(format!("{}: sinks.{}: {e}", p.file.display(), ctx.name)))?),
        SinkKind::Postgres(c) => Box::new(
            weir_connector_postgres::PostgresSink::open((**c).clone(), ctx)
                .map_err(|e| RunError::Setup(format!("{}: sinks.{}: {e}", p.file.display(), ctx.name)))?,
        ),
    })
}

/// Lets a sink report its waits for an external system as the task's
/// backpressure.
struct BackpressureClock(Arc<weir_network::WaitClock>);

impl weir_connector::WaitObserver for BackpressureClock {
    fn start_wait(&self) {
        self.0.start_wait();
    }

    fn end_wait(&self) {
        self.0.end_wait();
    }
}

/// Runs a pipeline to the end of its input.
pub fn run(p: &Pipeline, engine: &Engine, options: &RunOptions) -> Result<RunSummary, RunError> {
    let handle = options.handle.clone().unwrap_or_default();
    let plugins = load_plugins(p, engine)?;
    let plan = Plan::new(p);
    for line in plan.describe() {
        tracing::debug!(pipeline = %p.name, "{line}");
    }
    let checkpointing = p.checkpoint.interval.is_some();
    let store = if checkpointing || matches!(options.start_from, StartFrom::Checkpoint(_)) {
        let dir = std::path::absolute(&p.checkpoint.dir).unwrap_or_else(|_| p.checkpoint.dir.clone());
        Some(Arc::new(weir_checkpoint::CheckpointStore::open(&dir, &p.name).map_err(|e| {
            RunError::Setup(format!("{}: checkpoint.dir: {e}", p.file.display()))
        })?))
    } else {
        None
    };
    // Another process running this pipeline would write the same
    // checkpoints: refuse, before anything else is opened.
    let control = match &store {
        Some(store) if checkpointing => Some(crate::control::serve(store.dir(), &p.name, handle.reload(), handle.clone()).map_err(RunError::Setup)?),
        // Without checkpoints the socket only serves `weir reload` and
        // `weir plugins`: best effort, and no claim on the pipeline.
        _ => {
            let dir = p.checkpoint.dir.join(&p.name);
            match std::fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|()| crate::control::serve(&dir, &p.name, handle.reload(), handle.clone())) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("{e}; `weir reload` and `weir plugins` will not reach this run");
                    None
                }
            }
        }
    };
    let restore = match (&store, &options.start_from) {
        (_, StartFrom::Fresh) | (None, _) => None,
        (Some(store), StartFrom::Latest) => {
            let (found, warnings) = store.latest_valid().map_err(|e| RunError::Setup(e.to_string()))?;
            for w in warnings {
                weir_events::emit(weir_events::CheckpointUnusable { pipeline: &p.name, warning: &w });
            }
            found
        }
        (Some(store), StartFrom::Checkpoint(spec)) => Some(store.load(spec).map_err(|e| RunError::Setup(format!("--from-checkpoint {spec}: {e}")))?),
    }
    .map(Restore::new);
    let mut pin = None;
    if let (Some(r), Some(store)) = (&restore, &store) {
        r.check(p, &plan).map_err(RunError::Setup)?;
        let m = &r.checkpoint.manifest;
        let savepoint = m.kind == weir_checkpoint::Kind::Savepoint;
        weir_events::emit(weir_events::CheckpointRestored { pipeline: &p.name, id: m.id, savepoint, dir: &r.checkpoint.dir, finished: m.finished });
        pin = Some(store.pin(&r.checkpoint.dir).map_err(|e| RunError::Setup(e.to_string()))?);
    }
    // Before the tasks are built: stages register their metric handles
    // (async operators' slot metrics) with the recorder installed here.
    if let Some(address) = options.metrics_address {
        match weir_metrics::serve_prometheus(address) {
            Ok(()) => tracing::info!(%address, "serving Prometheus metrics at /metrics"),
            Err(e) => tracing::warn!("{e}; continuing without the metrics endpoint (use --metrics-address to choose another)"),
        }
    }
    let task_count: usize = plan.chains.iter().map(|c| c.parallelism as usize).sum();
    let mut coordinator = match (&store, checkpointing) {
        (Some(store), true) => Some(Coordinator::new(p, &plan, store.clone(), task_count, pin.take(), restore.as_ref().map(|r| r.checkpoint.manifest.id))),
        _ => None,
    };
    let buffers = BufferConfig {
        size: p.network.buffer_size.0 as usize,
        timeout: p.network.buffer_timeout.0,
        flush_on_idle: p.network.flush_on_idle,
    };

    // Input gates of every chain that does not start at a source.
    let mut senders: Vec<Vec<Option<GateSender>>> = Vec::new();
    let mut gates: Vec<Vec<Option<InputGate>>> = Vec::new();
    for chain in &plan.chains {
        let head = &plan.vertices[chain.vertices[0]];
        let mut cs = Vec::new();
        let mut cg = Vec::new();
        for _ in 0..chain.parallelism {
            match head.input {
                Some((u, part)) => {
                    let channels = if part == Partitioning::Forward { 1 } else { plan.vertices[u].parallelism };
                    let (s, g) = gate(channels);
                    cs.push(Some(s));
                    cg.push(Some(g));
                }
                None => {
                    cs.push(None);
                    cg.push(None);
                }
            }
        }
        senders.push(cs);
        gates.push(cg);
    }

    // One hot-reload slot per operator, shared by its subtasks and the manager.
    let (reports_tx, reports) = crossbeam_channel::unbounded();
    let slots: Vec<Arc<ReloadSlot>> = plan
        .vertices
        .iter()
        .filter_map(|v| match v.kind {
            VertexKind::Operator(i) => Some((i, v.parallelism)),
            _ => None,
        })
        .map(|(i, par)| ReloadSlot::new(&p.operators[i].name, par, &plugins.plugins[i].hash, reports_tx.clone()))
        .collect();
    drop(reports_tx);
    let metrics: Vec<Vec<Arc<StageMetrics>>> =
        plan.vertices.iter().map(|v| (0..v.parallelism).map(|_| Arc::new(StageMetrics::default())).collect()).collect();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut task_entries = Vec::new();
    for (ci, chain) in plan.chains.iter().enumerate() {
        for s in 0..chain.parallelism {
            let head = &plan.vertices[chain.vertices[0]];
            // Output pools first: the task's metrics watch them.
            let last = &plan.vertices[*chain.vertices.last().expect("non-empty chain")];
            let clock = Arc::new(WaitClock::default());
            let mut outputs = Vec::new();
            let mut pools = Vec::new();
            for &c in &last.consumers {
                let cc = plan.chain_of(c);
                let (_, part) = plan.vertices[c].input.expect("consumer has an input");
                let targets: Vec<_> = if part == Partitioning::Forward {
                    vec![senders[cc][s as usize].as_ref().expect("gate").channel(0)]
                } else {
                    senders[cc].iter().map(|g| g.as_ref().expect("gate").channel(s)).collect()
                };
                let targets = targets.into_iter().map(|t| weir_network::throttle::arm(&plan.vertices[c].name, t)).collect::<Vec<_>>();
                let memory = p.network.memory.0 as usize / last.consumers.len();
                let config = PoolConfig { buffers: memory / buffers.size, buffer_size: buffers.size, exclusive: p.network.exclusive_buffers };
                let pool = BufferPool::new(config, targets.len(), clock.clone()).map_err(|e| {
                    RunError::Setup(format!("{}: network: task `{}` cannot feed `{}`: {e}", p.file.display(), head.name, plan.vertices[c].name))
                })?;
                pools.push(pool.clone());
                outputs.push(Partitioner::new(part, targets, buffers, pool));
            }
            let in_capacity = match head.input {
                Some((_, Partitioning::Forward)) => p.network.exclusive_buffers as u64,
                Some((u, _)) => u64::from(plan.vertices[u].parallelism) * p.network.exclusive_buffers as u64,
                None => 0,
            };
            let tm = Arc::new(TaskMetrics::new(in_capacity, pools, clock));
            let ctx = |name: &str, par: u32| ConnectorContext { pipeline: p.name.clone(), name: name.to_owned(), subtask: s, parallelism: par };
            let input = match &head.kind {
                VertexKind::Source(sc) => {
                    let mut source = open_source(p, &sc.kind, &ctx(&head.name, head.parallelism))?;
                    if let Some(r) = &restore {
                        let positions = r.source_positions(&head.name);
                        if !positions.is_empty() {
                            let refs: Vec<&[u8]> = positions.iter().map(Vec::as_slice).collect();
                            source.restore(&refs).map_err(|e| {
                                RunError::Setup(format!(
                                    "checkpoint {} ({}): source `{}` subtask {s}: {e}",
                                    r.checkpoint.manifest.id,
                                    r.checkpoint.dir.display(),
                                    head.name
                                ))
                            })?;
                        }
                    }
                    TaskInput::Source { source, metrics: metrics[chain.vertices[0]][s as usize].clone(), name: head.name.clone(), vertex: chain.vertices[0] }
                }
                _ => TaskInput::Gate(gates[ci][s as usize].take().expect("gate per subtask")),
            };
            let mut stages: Vec<Box<dyn Stage>> = Vec::new();
            for &v in &chain.vertices {
                let vx = &plan.vertices[v];
                let m = metrics[v][s as usize].clone();
                match &vx.kind {
                    VertexKind::Source(_) => {}
                    VertexKind::Operator(i) if p.operators[*i].async_io.is_some() => {
                        let dead_letter = match plan.vertices.iter().position(|d| d.side_of == Some(v)) {
                            Some(dv) => {
                                let dx = &plan.vertices[dv];
                                let VertexKind::Sink(sc) = &dx.kind else { unreachable!("only sinks are side outputs") };
                                let mut sink = open_sink(p, &sc.kind, &ctx(&dx.name, vx.parallelism))?;
                                sink.observe_waits(Arc::new(BackpressureClock(tm.backpressure.clone())));
                                let recovered = restore.as_ref().map(|r| r.sink_committables(&dx.name, s, vx.parallelism));
                                sink.start(recovered.as_deref())
                                    .map_err(|e| RunError::Setup(format!("{}: sinks.{} subtask {s}: {e}", p.file.display(), dx.name)))?;
                                let stage = SinkStage::new(sink, dx.name.clone(), s, metrics[dv][s as usize].clone());
                                Some(weir_async::DeadLetter { vertex: dv, stage: Box::new(stage) })
                            }
                            None => None,
                        };
                        let mut stage = open_async(p, &plugins, *i, s, vx.parallelism, dead_letter, m, tm.backpressure.clone())?;
                        if let Some(r) = &restore {
                            let owned = weir_format::keygroup::range(s, p.max_parallelism, vx.parallelism);
                            let op = &p.operators[*i];
                            let files = r.operator_files(&op.name, owned).map_err(RunError::Setup)?;
                            let refs: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).collect();
                            let n = stage.restore(&refs).map_err(|e| {
                                RunError::Setup(format!("checkpoint {} ({}): in-flight records of `{}`: {e}", r.checkpoint.manifest.id, r.checkpoint.dir.display(), op.name))
                            })?;
                            if n > 0 {
                                weir_events::emit(weir_events::InFlightReissued { pipeline: &p.name, operator: &op.name, subtask: s, records: n });
                            }
                        }
                        stages.push(Box::new(stage));
                    }
                    VertexKind::Operator(i) => {
                        let (keyed, timers) = operator_state(p, *i, s, vx.parallelism, restore.as_ref())?;
                        let instance = open_operator_with(p, &plugins, *i, s, vx.parallelism, keyed, timers)?;
                        let op = &p.operators[*i];
                        let plugin = &plugins.plugins[*i];
                        let info = StageInfo {
                            operator: op.name.clone(),
                            config_path: op.path(),
                            plugin: plugin.name.clone(),
                            plugin_path: plugin.path.display().to_string(),
                            version: plugin.short_hash().to_owned(),
                            subtask: s,
                        };
                        let policy = match op.on_error {
                            OnError::Fail => ErrorPolicy::Fail,
                            OnError::Skip => ErrorPolicy::Skip,
                        };
                        let slot = slots.iter().find(|sl| sl.operator == op.name).expect("a slot per operator").clone();
                        stages.push(Box::new(WasmStage::new(instance, info, policy, m).with_reload(slot)));
                    }
                    VertexKind::Sink(sc) => {
                        let mut sink = open_sink(p, &sc.kind, &ctx(&vx.name, vx.parallelism))?;
                        sink.observe_waits(Arc::new(BackpressureClock(tm.backpressure.clone())));
                        let recovered = restore.as_ref().map(|r| r.sink_committables(&vx.name, s, vx.parallelism));
                        sink.start(recovered.as_deref()).map_err(|e| {
                            RunError::Setup(format!("{}: sinks.{} subtask {s}: {e}", p.file.display(), vx.name))
                        })?;
                        stages.push(Box::new(SinkStage::new(sink, vx.name.clone(), s, m)));
                    }
                }
            }
            let name = format!("{}[{s}]", head.name);
            task_entries.push(TaskEntry { chain_name: head.name.clone(), chain: ci, subtask: s, metrics: tm.clone() });
            let vertices = chain.vertices.iter().copied().filter(|&v| !matches!(plan.vertices[v].kind, VertexKind::Source(_))).collect();
            let checkpoints = coordinator.as_ref().map(|c| c.link(tasks.len()));
            tasks.push(Task {
                name,
                input,
                stages,
                vertices,
                subtask: s,
                checkpoints,
                completed: 0,
                outputs,
                metrics: tm,
                cancel: cancel.clone(),
                batch_bytes: buffers.size,
            });
        }
    }
    drop(senders);
    // Every state file is read: without a coordinator to hold it, the pin
    // on the restored checkpoint can go.
    drop(pin);

    let registry = Arc::new(Registry {
        pipeline: p.name.clone(),
        vertices: plan
            .vertices
            .iter()
            .enumerate()
            .map(|(v, vx)| VertexEntry {
                name: vx.name.clone(),
                kind: vx.kind_name(),
                chain: plan.chain_of(v),
                input: vx.input.map(|(u, _)| u),
                partition: vx.input.map_or("", |(_, part)| crate::plan::part_name(part)),
                stages: metrics[v].clone(),
            })
            .collect(),
        tasks: task_entries,
    });
    let monitor = Arc::new(Monitor::new(registry));
    let _attached = handle.attach_guard(monitor.clone(), coordinator.as_ref().map(Coordinator::stats), crate::handle::plugins_at_start(p, &plugins));
    // Async operators are not hot-reloaded (yet): their slots are swapped
    // by a restart.
    let managed = plan
        .vertices
        .iter()
        .filter_map(|v| match v.kind {
            VertexKind::Operator(i) if p.operators[i].async_io.is_none() => Some((i, v.parallelism)),
            _ => None,
        })
        .map(|(i, par)| {
            let slot = slots.iter().find(|sl| sl.operator == p.operators[i].name).expect("a slot per operator").clone();
            crate::reload::ManagedOperator::new(i, slot, crate::reload::targets(p, i, par), plugins.plugins[i].clone())
        })
        .collect();
    let _reload = crate::reload::start(p, engine, handle.reload(), managed, reports, coordinator.as_ref().map(Coordinator::trigger_counter))
        .map_err(RunError::Setup)?;

    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(String, Result<(), TaskError>)>();
    let mut handles = Vec::new();
    for task in tasks {
        let done = done_tx.clone();
        let name = task.name.clone();
        let h = std::thread::Builder::new()
            .name(format!("weir-{name}"))
            .spawn(move || {
                let name = task.name.clone();
                let r = task.run();
                let _ = done.send((name, r));
            })
            .map_err(|e| RunError::Setup(format!("cannot start a thread for task {name}: {e}")))?;
        handles.push(h);
    }
    drop(done_tx);

    let mut printer = ProgressPrinter::new(options.progress, &p.name);
    let mut first_error: Option<String> = None;
    let mut remaining = handles.len();
    let mut next_sample = Instant::now();
    let stats = coordinator.as_ref().map(Coordinator::stats);
    let mut stopping = false;
    while remaining > 0 {
        if coordinator.is_none()
            && let Some(control) = &control
        {
            while let Ok(reply) = control.requests.try_recv() {
                let _ = reply.send(Err("this run takes no checkpoints (checkpoint.interval = \"off\"), so it cannot take a savepoint".into()));
            }
        }
        handle.drive(coordinator.as_mut(), &cancel, &mut stopping);
        if let Some(c) = &mut coordinator {
            if let Some(control) = &control {
                while let Ok(reply) = control.requests.try_recv() {
                    c.request_savepoint(reply);
                }
            }
            c.poll();
            if c.final_failed() && first_error.is_none() {
                first_error = Some(
                    "the final checkpoint failed (see the warning above), so the output since the last checkpoint is not published; \
                     run the pipeline again to redo it from that checkpoint"
                        .into(),
                );
                cancel.store(true, Ordering::Relaxed);
            }
        }
        if Instant::now() >= next_sample {
            monitor.sample();
            next_sample += Duration::from_secs(1);
        }
        match done_rx.recv_timeout(Duration::from_millis(if coordinator.is_some() { 10 } else { 250 })) {
            Ok((name, result)) => {
                remaining -= 1;
                match result {
                    Ok(()) => tracing::debug!(task = %name, "task finished"),
                    Err(TaskError::Cancelled) => {}
                    Err(TaskError::Stage(msg)) => {
                        if first_error.is_none() {
                            tracing::debug!(task = %name, "task failed first: {msg}");
                            first_error = Some(msg);
                        }
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        printer.tick(started.elapsed(), &plan, &monitor, stats.as_deref());
    }
    for h in handles {
        if h.join().is_err() && first_error.is_none() {
            first_error = Some("a task thread panicked (a bug in weir); see the log above".into());
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(RunError::Failed(e));
    }
    let vertices = plan
        .vertices
        .iter()
        .zip(&metrics)
        .map(|(v, ms)| {
            let sum = |f: fn(&StageMetrics) -> u64| ms.iter().map(|m| f(m)).sum::<u64>();
            VertexSummary {
                name: v.name.clone(),
                kind: v.kind_name(),
                parallelism: v.parallelism,
                records_in: sum(|m| m.records_in.load(Ordering::Relaxed)),
                records_out: sum(|m| m.records_out.load(Ordering::Relaxed)),
                bytes_in: sum(|m| m.bytes_in.load(Ordering::Relaxed)),
                skipped: sum(|m| m.records_skipped.load(Ordering::Relaxed)),
            }
        })
        .collect();
    let tasks = monitor
        .registry()
        .tasks
        .iter()
        .map(|t| {
            let (idle, bp, total) = t.metrics.times();
            let total = total.max(1) as f64;
            let busy = (total - idle as f64 - bp as f64).max(0.0);
            (format!("{}[{}]", t.chain_name, t.subtask), busy / total, idle as f64 / total, bp as f64 / total)
        })
        .collect();
    let merged = weir_task::LatencyHistogram::default();
    for (v, ms) in plan.vertices.iter().zip(&metrics) {
        if matches!(v.kind, VertexKind::Sink(_)) {
            for m in ms {
                merged.merge(&m.latency);
            }
        }
    }
    let latency = merged.quantile(0.5).zip(merged.quantile(0.99)).map(|(p50_us, p99_us)| Latency { count: merged.count(), p50_us, p99_us });
    let checkpoints = stats.map(|s| s.lock().expect("stats lock").clone());
    Ok(RunSummary { pipeline: p.name.clone(), elapsed, vertices, tasks, latency, checkpoints })
}

struct ProgressPrinter {
    mode: Progress,
    tty: bool,
    name: String,
    last: Instant,
    lines: usize,
}

impl ProgressPrinter {
    fn new(mode: Progress, name: &str) -> Self {
        Self { mode, tty: std::io::stderr().is_terminal(), name: name.to_owned(), last: Instant::now(), lines: 0 }
    }

    fn tick(&mut self, elapsed: Duration, plan: &Plan, monitor: &Monitor, checkpoints: Option<&std::sync::Mutex<CheckpointStats>>) {
        if self.mode == Progress::Quiet {
            return;
        }
        let every = if self.tty { Duration::from_secs(1) } else { Duration::from_secs(2) };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let vertices = monitor.vertices();
        let registry = monitor.registry();
        let totals: Vec<(u64, u64)> = registry
            .vertices
            .iter()
            .map(|v| {
                let sum = |f: fn(&StageMetrics) -> u64| v.stages.iter().map(|m| f(m)).sum::<u64>();
                (sum(|m| m.records_in.load(Ordering::Relaxed)), sum(|m| m.records_out.load(Ordering::Relaxed)))
            })
            .collect();
        let read: u64 = plan.vertices.iter().zip(&totals).filter(|(v, _)| v.input.is_none()).map(|(_, t)| t.1).sum();
        let mut err = std::io::stderr().lock();
        if !self.tty {
            let rate: f64 = plan.vertices.iter().zip(&vertices).filter(|(v, _)| v.input.is_none()).map(|(_, s)| s.records_out).sum();
            let mut line = format!("{}  {:>6.1}s  {} read ({}/s)", self.name, elapsed.as_secs_f64(), human(read), human(rate as u64));
            for (v, t) in plan.vertices.iter().zip(&totals) {
                if v.input.is_some() {
                    line.push_str(&format!("  {} {}", v.name, human(t.0)));
                }
            }
            if let Some(c) = checkpoints {
                line.push_str(&format!("  {}", checkpoint_line(&c.lock().expect("stats lock"))));
            }
            let _ = writeln!(err, "{line}");
            return;
        }
        // A live table, redrawn in place.
        let tasks = monitor.tasks();
        let mut out = String::new();
        if self.lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.lines));
        }
        let mut lines = vec![
            format!("{}  {:.0}s  {} records read", self.name, elapsed.as_secs_f64(), human(read)),
            format!(
                "{:<16} {:>3} {:>9} {:>9} {:>5} {:>6} {:>5} {:>5} {:>5}  {}",
                "operator", "par", "in/s", "out/s", "busy", "backpr", "idle", "inbuf", "outbuf", "status"
            ),
        ];
        for (i, (v, s)) in plan.vertices.iter().zip(&vertices).enumerate() {
            let chain = registry.vertices[i].chain;
            let subs: Vec<_> = registry.tasks.iter().zip(&tasks).filter(|(t, _)| t.chain == chain).map(|(_, s)| *s).collect();
            let n = subs.len().max(1) as f64;
            let avg = |f: fn(&weir_metrics::TaskSample) -> f64| subs.iter().map(f).sum::<f64>() / n;
            let pct = |ms: f64| format!("{:.0}%", ms / 10.0);
            lines.push(format!(
                "{:<16} {:>3} {:>9} {:>9} {:>5} {:>6} {:>5} {:>5} {:>5}  {}",
                v.name,
                v.parallelism,
                if v.input.is_none() { "-".into() } else { human(s.records_in as u64) },
                if matches!(v.kind, VertexKind::Sink(_)) { "-".into() } else { human(s.records_out as u64) },
                pct(avg(|t| t.busy)),
                pct(avg(|t| t.backpressured)),
                pct(avg(|t| t.idle)),
                format!("{:.0}%", avg(|t| t.in_pool) * 100.0),
                format!("{:.0}%", avg(|t| t.out_pool) * 100.0),
                monitor.chain_status(chain).as_str()
            ));
        }
        if let Some(c) = checkpoints {
            lines.push(checkpoint_line(&c.lock().expect("stats lock")));
        }
        for l in &lines {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        self.lines = lines.len();
        let _ = write!(err, "{out}");
        let _ = err.flush();
    }
}

/// One line about checkpoints for the progress view.
pub fn checkpoint_line(s: &CheckpointStats) -> String {
    let mut line = format!("checkpoints: {} complete, {} failed", s.completed, s.failed);
    if let Some(l) = &s.last {
        line.push_str(&format!(
            "; last #{} took {} ms, {}B, alignment {} ms",
            l.id,
            l.duration.as_millis(),
            human(l.bytes),
            l.alignment.as_millis()
        ));
    }
    if let Some(id) = s.restored_from {
        line.push_str(&format!("; resumed from #{id}"));
    }
    line
}

/// 1234567 -> "1.23M".
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}
