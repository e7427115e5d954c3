//! The one constructor of every node kind: a vertex of the plan and a
//! subtask index in, the task's input (for a source at the head of a chain)
//! or a stage out. The build step calls [`Node::open`] for every vertex of
//! a chain and never looks at what kind it is; a new kind of node (a union,
//! a join) is a new arm here and nowhere else.

use super::{LoadedPlugins, RunError};
use crate::checkpoints::Restore;
use crate::config::{OnError, Pipeline, StateBackendKind};
use crate::native::NativeOperators;
use crate::plan::{Plan, VertexKind};
use std::sync::Arc;
use weir_connector::services::Services;
use weir_connector::{ConnectorContext, ConnectorError, Sink};
use weir_network::WaitClock;
use weir_state::{KeyedState, TimerService};
use weir_task::{ErrorPolicy, NativeStage, ReloadSlot, SinkStage, Stage, StageInfo, StageMetrics, TaskInput, TaskMetrics, WasmStage};
use weir_wasm::{InstanceInfo, OperatorInstance};

/// What a vertex becomes in one subtask's task.
pub(super) enum Node {
    /// A source: the head of its chain, the task's input.
    Input(TaskInput),
    /// An operator or sink: a stage of the chain.
    Stage(Box<dyn Stage>),
}

/// Everything a node of one subtask is built from.
pub(super) struct NodeContext<'a> {
    pub p: &'a Pipeline,
    pub plan: &'a Plan,
    pub plugins: &'a LoadedPlugins,
    /// Operators to run natively, by plugin name.
    pub native: &'a NativeOperators,
    pub restore: Option<&'a Restore>,
    /// The user asked to start over (`--fresh`): sinks may replace what
    /// earlier runs published.
    pub fresh: bool,
    /// Stage metrics, per vertex and subtask.
    pub metrics: &'a [Vec<Arc<StageMetrics>>],
    /// Hot-reload slots of the batch operators.
    pub slots: &'a [Arc<ReloadSlot>],
    /// The task's own metrics (its backpressure clock).
    pub task: &'a Arc<TaskMetrics>,
    pub subtask: u32,
}

impl NodeContext<'_> {
    /// What a source or sink gets: who it is, and the services a connector
    /// that is a plugin needs (the engine, the pipeline's connections and
    /// default limits).
    fn connector(&self, name: &str, parallelism: u32) -> ConnectorContext {
        let mut cx = ConnectorContext::new(self.p.name.clone(), name, self.subtask, parallelism);
        cx.services = connector_services(self.p, self.plugins);
        cx.lane = self.p.lane;
        cx
    }

    fn at_checkpoint(&self, r: &Restore, what: &str, e: impl std::fmt::Display) -> RunError {
        RunError::setup(format!("checkpoint {} ({}): {what}: {e}", r.checkpoint.manifest.id, r.checkpoint.dir.display()))
    }
}

impl Node {
    /// Builds vertex `v` for the context's subtask.
    pub fn open(v: usize, cx: &NodeContext<'_>) -> Result<Node, RunError> {
        let vx = &cx.plan.vertices[v];
        let s = cx.subtask;
        let metrics = cx.metrics[v][s as usize].clone();
        Ok(match &vx.kind {
            VertexKind::Source(sc) => {
                let mut source = sc.spec.open(&cx.connector(&vx.name, vx.parallelism)).map_err(|e| connector_error(cx.p, "sources", &vx.name, None, e))?;
                if let Some(r) = cx.restore {
                    let positions = r.source_positions(&vx.name);
                    if !positions.is_empty() {
                        let refs: Vec<&[u8]> = positions.iter().map(Vec::as_slice).collect();
                        source.restore(&refs).map_err(|e| cx.at_checkpoint(r, &format!("source `{}` subtask {s}", vx.name), e))?;
                    }
                }
                Node::Input(TaskInput::Source { source, metrics, name: vx.name.clone(), vertex: v })
            }
            VertexKind::Operator(i) if cx.p.operators[*i].async_io.is_some() => Node::Stage(Box::new(async_operator(v, *i, metrics, cx)?)),
            VertexKind::Operator(i) if cx.native.get(&cx.p.operators[*i].plugin).is_some() => Node::Stage(Box::new(native_operator(*i, vx.parallelism, metrics, cx)?)),
            VertexKind::Operator(i) => Node::Stage(Box::new(operator(*i, vx.parallelism, metrics, cx)?)),
            VertexKind::Sink(_) => Node::Stage(Box::new(sink(v, vx.parallelism, cx)?)),
        })
    }
}

/// What a connector that is a plugin needs from the runtime: the engine,
/// the pipeline's connections, its default limits, where hot reload
/// offers it new versions and, in a checkpointed run, where the versions
/// that ran well are kept.
fn connector_services(p: &Pipeline, plugins: &LoadedPlugins) -> Services {
    let services = Services::default()
        .with(plugins.engine.clone())
        .with(weir_async::Connections(p.connections.clone()))
        .with(p.limits)
        .with(plugins.swaps.clone());
    match &plugins.known_good {
        Some(k) => services.with(k.clone()),
        None => services,
    }
}

/// `weir check` of the sources and sinks: what each connector can check
/// without reaching an external system (a plugin connector loads its
/// component and checks its world). Returns `(section, line)` for the ones
/// with something to report, e.g. `("sinks.hook", "plugin webhook-sink (...)")`.
pub fn check_connectors(p: &Pipeline, plugins: &LoadedPlugins) -> Result<Vec<(String, String)>, RunError> {
    let services = connector_services(p, plugins);
    let mut lines = Vec::new();
    let sources = p.sources.iter().map(|(name, c)| ("sources", name, c.spec.check(&services)));
    let sinks = p.sinks.iter().map(|(name, c)| ("sinks", name, c.spec.check(&services)));
    for (section, name, checked) in sources.chain(sinks) {
        match checked {
            Ok(Some(line)) => lines.push((format!("{section}.{name}"), line)),
            Ok(None) => {}
            Err(e) => return Err(connector_error(p, section, name, None, e)),
        }
    }
    Ok(lines)
}

/// A connector's refusal to open, keeping its retry hint.
fn connector_error(p: &Pipeline, section: &str, name: &str, subtask: Option<u32>, e: ConnectorError) -> RunError {
    let subtask = subtask.map_or(String::new(), |s| format!(" subtask {s}"));
    RunError::setup_kind(e.kind, format!("{}: {section}.{name}{subtask}: {e}", p.file.display()))
}

/// A sink vertex `v` running at `parallelism`, started on what the restored
/// checkpoint says it must publish.
fn sink(v: usize, parallelism: u32, cx: &NodeContext<'_>) -> Result<SinkStage, RunError> {
    let vx = &cx.plan.vertices[v];
    let VertexKind::Sink(sc) = &vx.kind else { unreachable!("a sink vertex") };
    let s = cx.subtask;
    let mut sink: Box<dyn Sink> = sc.spec.open(&cx.connector(&vx.name, parallelism)).map_err(|e| connector_error(cx.p, "sinks", &vx.name, None, e))?;
    sink.observe_waits(Arc::new(BackpressureClock(cx.task.backpressure.clone())));
    let recovered = cx.restore.map(|r| r.sink_committables(&vx.name, s, parallelism));
    if recovered.is_none()
        && !cx.fresh
        && cx.p.checkpoint.interval.is_some()
        && let Some(found) = sink.earlier_output().map_err(|e| connector_error(cx.p, "sinks", &vx.name, Some(s), e))?
    {
        return Err(RunError::setup(format!(
            "{}: sinks.{}: {found}, and no checkpoint of pipeline `{}` says what of it was published (was the pipeline \
             renamed, or its checkpoint directory removed?). weir will not replace it on its own: move it away, point \
             checkpoint.dir back at the checkpoints, or start over with `weir run --fresh {}`, which replaces it.",
            cx.p.file.display(),
            vx.name,
            cx.p.name,
            cx.p.file.display()
        )));
    }
    sink.start(recovered.as_deref()).map_err(|e| connector_error(cx.p, "sinks", &vx.name, Some(s), e))?;
    Ok(SinkStage::new(sink, vx.name.clone(), s, cx.metrics[v][s as usize].clone()))
}

/// A batch operator: its keyed state (restored), its plugin instance, its
/// hot-reload slot.
fn operator(i: usize, parallelism: u32, metrics: Arc<StageMetrics>, cx: &NodeContext<'_>) -> Result<WasmStage, RunError> {
    let (p, s) = (cx.p, cx.subtask);
    let (keyed, timers) = operator_state(p, i, s, parallelism, cx.restore)?;
    let instance = open_operator(p, cx.plugins, i, s, parallelism, keyed, timers)?;
    let op = &p.operators[i];
    let plugin = &cx.plugins.plugins[i];
    let info = StageInfo {
        operator: op.name.clone(),
        config_path: op.path(),
        plugin: plugin.name.clone(),
        plugin_path: plugin.path.display().to_string(),
        version: plugin.short_hash().to_owned(),
        subtask: s,
    };
    let slot = cx.slots.iter().find(|sl| sl.operator == op.name).expect("a slot per operator").clone();
    Ok(WasmStage::new(instance, info, error_policy(op.on_error), metrics).with_reload(slot))
}

fn error_policy(on_error: OnError) -> ErrorPolicy {
    match on_error {
        OnError::Fail => ErrorPolicy::Fail,
        OnError::Skip => ErrorPolicy::Skip,
    }
}

/// A batch operator whose plugin runs natively ([`NativeOperators`]): the
/// keyed state a Wasm subtask gets, the factory instead of the component,
/// no hot reload.
fn native_operator(i: usize, parallelism: u32, metrics: Arc<StageMetrics>, cx: &NodeContext<'_>) -> Result<NativeStage, RunError> {
    let (p, s) = (cx.p, cx.subtask);
    let op = &p.operators[i];
    let factory = cx.native.get(&op.plugin).expect("checked by Node::open");
    let (keyed, timers) = operator_state(p, i, s, parallelism, cx.restore)?;
    let info = StageInfo {
        operator: op.name.clone(),
        config_path: op.path(),
        plugin: op.plugin.clone(),
        plugin_path: "compiled into the host".into(),
        version: "native".into(),
        subtask: s,
    };
    let instance = instance_info(p, i, s, parallelism);
    NativeStage::open(factory, &instance, op.limits.or(p.limits), keyed, timers, info, error_policy(op.on_error), metrics)
        .map_err(|e| refused_to_start(p, op, &op.plugin, ", compiled into the host", e))
}

/// An async operator: its slots, its dead-letter sink (which runs inside
/// its stage), and the records that were in flight at the checkpoint.
fn async_operator(v: usize, i: usize, metrics: Arc<StageMetrics>, cx: &NodeContext<'_>) -> Result<weir_async::AsyncStage, RunError> {
    let (p, plan, s) = (cx.p, cx.plan, cx.subtask);
    let parallelism = plan.vertices[v].parallelism;
    let dead_letter = match plan.dead_letter_of(v) {
        Some(dv) => Some(weir_async::DeadLetter { vertex: dv, stage: Box::new(sink(dv, parallelism, cx)?) }),
        None => None,
    };
    let mut stage = open_async(p, cx.plugins, i, s, parallelism, dead_letter, metrics, cx.task.backpressure.clone())?;
    if let Some(r) = cx.restore {
        let owned = weir_format::keygroup::range(s, p.max_parallelism, parallelism);
        let op = &p.operators[i];
        let files = r.operator_files(&op.name, owned).map_err(RunError::setup)?;
        let refs: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).collect();
        let n = stage.restore(&refs).map_err(|e| cx.at_checkpoint(r, &format!("in-flight records of `{}`", op.name), e))?;
        if n > 0 {
            weir_events::emit(weir_events::InFlightReissued { pipeline: &p.name, operator: &op.name, subtask: s, records: n });
        }
    }
    Ok(stage)
}

/// The keyed state an operator subtask starts with: empty, or restored
/// from the key groups it owns in a checkpoint, in the configured backend.
fn operator_state(p: &Pipeline, op_index: usize, subtask: u32, parallelism: u32, restore: Option<&Restore>) -> Result<(KeyedState, TimerService), RunError> {
    let op = &p.operators[op_index];
    let mut keyed = match p.state.backend {
        StateBackendKind::Heap => KeyedState::new(subtask, parallelism, p.max_parallelism),
        StateBackendKind::Disk => {
            let path = p.state.dir.join(&p.name).join(format!("{}-{subtask}.redb", op.name));
            let backend = weir_state::DiskBackend::open(&path).map_err(|e| {
                RunError::setup_kind(weir_connector::ErrorKind::External, format!("{}: state: cannot open the on-disk state of `{}` at {}: {e}", p.file.display(), op.name, path.display()))
            })?;
            KeyedState::with_backend(subtask, parallelism, p.max_parallelism, Box::new(backend))
        }
    };
    if let Some(lane) = p.lane {
        keyed = keyed.in_lane(lane.index, lane.count);
    }
    let mut timers = TimerService::new();
    if let Some(r) = restore {
        let files = r.operator_files(&op.name, keyed.key_groups()).map_err(RunError::setup)?;
        let refs: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).collect();
        keyed
            .restore(&mut timers, &refs)
            .map_err(|e| RunError::setup(format!("checkpoint {} ({}): state of `{}`: {e}", r.checkpoint.manifest.id, r.checkpoint.dir.display(), op.name)))?;
    }
    Ok((keyed, timers))
}

/// What a plugin instance of operator `op_index`, subtask `subtask`, is
/// told: at start, on restore and on a hot reload alike.
pub(crate) fn instance_info(p: &Pipeline, op_index: usize, subtask: u32, parallelism: u32) -> InstanceInfo {
    let op = &p.operators[op_index];
    InstanceInfo {
        pipeline: p.name.clone(),
        operator: op.name.clone(),
        subtask,
        parallelism,
        max_parallelism: p.max_parallelism,
        config_json: weir_connector::config::config_json(&op.config),
        read_dirs: op.allow_read.iter().map(|d| (p.file.parent().unwrap_or(std::path::Path::new(".")).join(d), d.clone())).collect(),
        // Validated before anything runs; an operator always has an input.
        inputs: p.operator_inputs(op_index).unwrap_or_default(),
    }
}

fn open_operator(
    p: &Pipeline,
    plugins: &LoadedPlugins,
    op_index: usize,
    subtask: u32,
    parallelism: u32,
    keyed: KeyedState,
    timers: TimerService,
) -> Result<OperatorInstance, RunError> {
    let op = &p.operators[op_index];
    let plugin = &plugins.plugins[op_index];
    OperatorInstance::open_with_state(plugin, &instance_info(p, op_index, subtask, parallelism), op.limits.or(p.limits), keyed, timers)
        .map_err(|e| refused_to_start(p, op, &plugin.name, "", e))
}

/// An operator's `open` failed: the message names the file, the operator,
/// its plugin and how that runs (`how`: empty for a component).
fn refused_to_start(p: &Pipeline, op: &crate::config::OperatorConfig, plugin: &str, how: &str, e: impl std::fmt::Display) -> RunError {
    RunError::setup(format!("{}: {} (`{}`, plugin `{plugin}`{how}): the plugin refused to start: {e}. Check {}.config", p.file.display(), op.path(), op.name, op.path()))
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
    let fail = |e: String| RunError::setup(format!("{}: {} (`{}`, plugin `{}`): {e}", p.file.display(), op.path(), op.name, plugin.name));
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

/// Opens every operator once (subtask 0) to check its config, then closes
/// it. An async operator opens one slot and connects to nothing.
pub fn check_operators(p: &Pipeline, plugins: &LoadedPlugins) -> Result<(), RunError> {
    for i in 0..p.operators.len() {
        if p.operators[i].async_io.is_some() {
            let mut p1 = p.clone();
            if let Some(a) = &mut p1.operators[i].async_io {
                a.capacity = 1;
            }
            let stage = open_async(&p1, plugins, i, 0, 1, None, Arc::new(StageMetrics::default()), Arc::new(WaitClock::default()))?;
            drop(stage);
        } else {
            let keyed = KeyedState::new(0, 1, p.max_parallelism);
            open_operator(p, plugins, i, 0, 1, keyed, TimerService::new())?;
        }
    }
    Ok(())
}

/// Lets a sink report its waits for an external system as the task's
/// backpressure.
struct BackpressureClock(Arc<WaitClock>);

impl weir_connector::WaitObserver for BackpressureClock {
    fn start_wait(&self) {
        self.0.start_wait();
    }

    fn end_wait(&self) {
        self.0.end_wait();
    }
}
