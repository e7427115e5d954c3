//! The tasks of a plan: one per chain and subtask, each with its input
//! (a source or an input gate), its stages and its output partitioners.

use super::nodes::{Node, NodeContext};
use super::{LoadedPlugins, RunError};
use crate::checkpoints::{Coordinator, Restore};
use crate::config::Pipeline;
use crate::native::NativeOperators;
use crate::plan::{Plan, VertexKind};
use crate::RunHandle;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use weir_network::{debloated_gate, gate, BufferConfig, BufferPool, GateSender, InputGate, Partitioner, Partitioning, PoolConfig, WaitClock};
use weir_metrics::{Registry, TaskEntry, VertexEntry, VertexInput};
use weir_task::{Inputs, ReloadSlot, Replay, Stage, StageMetrics, Task, TaskInput, TaskMetrics};

/// The tasks of a run, ready to start, and what watches them.
pub(super) struct Built {
    pub tasks: Vec<Task>,
    /// Stage metrics, per vertex and subtask.
    pub metrics: Arc<Vec<Vec<Arc<StageMetrics>>>>,
    /// Every task's metrics, for the monitor.
    pub task_entries: Vec<TaskEntry>,
    /// One hot-reload slot per batch operator, shared by its subtasks.
    pub slots: Vec<Arc<ReloadSlot>>,
    /// Set to stop every task (at the first failure, or on a kill).
    pub cancel: Arc<AtomicBool>,
    /// What the slots report to the reload manager.
    pub reports: crossbeam_channel::Receiver<(String, weir_task::SwapReport)>,
    /// Per vertex, input and producing subtask: its waits for buffers on
    /// that edge (see [`VertexInput::backpressure`]).
    edge_clocks: EdgeClocks,
}

/// Per vertex, per input, per subtask of the producer: a wait clock.
type EdgeClocks = Vec<Vec<Vec<Arc<WaitClock>>>>;

/// The senders and gates of every chain that does not start at a source,
/// and a clock per edge and producing subtask for its waits on that edge.
struct Gates {
    senders: Vec<Vec<Option<GateSender>>>,
    gates: Vec<Vec<Option<InputGate>>>,
    edge_clocks: EdgeClocks,
}

impl Gates {
    /// With `debloat`, every gate debloats toward that target.
    fn new(plan: &Plan, debloat: Option<std::time::Duration>) -> Self {
        let mut senders = Vec::new();
        let mut gates = Vec::new();
        for chain in &plan.chains {
            let head = &plan.vertices[chain.vertices[0]];
            let channels = plan.input_channels(chain.vertices[0]).last().map_or(0, |r| r.end);
            let (cs, cg): (Vec<_>, Vec<_>) = (0..chain.parallelism)
                .map(|_| {
                    if head.inputs.is_empty() {
                        return (None, None);
                    }
                    let (s, g) = match debloat {
                        Some(target) => debloated_gate(channels, target),
                        None => gate(channels),
                    };
                    (Some(s), Some(g))
                })
                .unzip();
            senders.push(cs);
            gates.push(cg);
        }
        let edge_clocks = plan
            .vertices
            .iter()
            .map(|v| v.inputs.iter().map(|&(u, _)| (0..plan.vertices[u].parallelism).map(|_| Arc::default()).collect()).collect())
            .collect();
        Self { senders, gates, edge_clocks }
    }
}

impl Built {
    pub fn new(
        p: &Pipeline,
        plan: &Plan,
        plugins: &LoadedPlugins,
        native: &NativeOperators,
        restore: Option<&Restore>,
        fresh: bool,
        coordinator: Option<&Coordinator>,
    ) -> Result<Self, RunError> {
        let buffers = BufferConfig { size: p.network.buffer_size.0 as usize, timeout: p.network.buffer_timeout.0, flush_on_idle: p.network.flush_on_idle };
        let mut gates = Gates::new(plan, p.network.debloat_target());
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
        let metrics: Vec<Vec<Arc<StageMetrics>>> = plan.vertices.iter().map(|v| (0..v.parallelism).map(|_| Arc::new(StageMetrics::default())).collect()).collect();
        let cancel = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut task_entries = Vec::new();
        for (ci, chain) in plan.chains.iter().enumerate() {
            let head = &plan.vertices[chain.vertices[0]];
            for s in 0..chain.parallelism {
                // Output pools first: the task's metrics watch them.
                let clock = Arc::new(WaitClock::default());
                let (outputs, pools) = outputs(p, plan, ci, s, &gates, buffers, &clock)?;
                let channels = plan.input_channels(chain.vertices[0]);
                let in_capacity = channels.last().map_or(0, |r| u64::from(r.end)) * p.network.exclusive_buffers as u64;
                let tm = Arc::new(TaskMetrics::new(in_capacity, pools, clock));
                let cx = NodeContext { p, plan, plugins, native, restore, fresh, metrics: &metrics, slots: &slots, task: &tm, subtask: s };
                let mut input = None;
                let mut stages: Vec<Box<dyn Stage>> = Vec::new();
                for &v in &chain.vertices {
                    match Node::open(v, &cx)? {
                        Node::Input(i) => input = Some(i),
                        Node::Stage(stage) => stages.push(stage),
                    }
                }
                let input = match input {
                    Some(i) => i,
                    None => {
                        let sizes: Vec<usize> = channels.iter().map(|r| r.len()).collect();
                        let idle: Vec<_> = head.inputs.iter().map(|&(u, _)| plan.vertices[u].idle_timeout).collect();
                        TaskInput::Gate { gate: gates.gates[ci][s as usize].take().expect("gate per subtask"), inputs: Inputs::new(&sizes, &idle) }
                    }
                };
                task_entries.push(TaskEntry { chain_name: head.name.clone(), chain: ci, subtask: s, metrics: tm.clone() });
                let vertices: Vec<usize> = chain.vertices.iter().copied().filter(|&v| !matches!(plan.vertices[v].kind, VertexKind::Source(_))).collect();
                let replay = match restore {
                    Some(r) => replay(r, p, plan, &vertices, s)?,
                    None => Vec::new(),
                };
                tasks.push(Task {
                    replay,
                    taken: Arc::default(),
                    name: format!("{}[{s}]", head.name),
                    input,
                    stages,
                    vertices,
                    subtask: s,
                    checkpoints: coordinator.map(|c| c.link(tasks.len())),
                    completed: 0,
                    outputs,
                    metrics: tm,
                    cancel: cancel.clone(),
                    batch_bytes: buffers.size,
                });
            }
        }
        Ok(Self { tasks, metrics: Arc::new(metrics), task_entries, slots, cancel, reports, edge_clocks: gates.edge_clocks })
    }

    /// The monitor's view of the job: vertices, chains and task metrics.
    pub fn registry(&mut self, p: &Pipeline, plan: &Plan) -> Arc<Registry> {
        Arc::new(Registry {
            pipeline: p.name.clone(),
            vertices: plan
                .vertices
                .iter()
                .enumerate()
                .map(|(v, vx)| VertexEntry {
                    name: vx.name.clone(),
                    kind: vx.kind_name(),
                    chain: plan.chain_of(v),
                    inputs: vx
                        .inputs
                        .iter()
                        .zip(&self.edge_clocks[v])
                        .map(|(&(u, part), clocks)| {
                            // Only an edge between tasks has buffers to wait for.
                            let between = plan.chain_of(u) != plan.chain_of(v);
                            VertexInput { vertex: u, partition: crate::plan::part_name(part), backpressure: if between { clocks.clone() } else { Vec::new() } }
                        })
                        .collect(),
                    stages: self.metrics[v].clone(),
                })
                .collect(),
            tasks: std::mem::take(&mut self.task_entries),
        })
    }
}

/// The records restored in flight to the stages `vertices` of subtask `s`,
/// by stage and input (see [`Restore::inflight_records`]).
fn replay(r: &Restore, p: &Pipeline, plan: &Plan, vertices: &[usize], s: u32) -> Result<Vec<Replay>, RunError> {
    let mut out = Vec::new();
    for (stage, &v) in vertices.iter().enumerate() {
        let vx = &plan.vertices[v];
        let inputs: Vec<Partitioning> = vx.inputs.iter().map(|&(_, part)| part).collect();
        let records = r
            .inflight_records(&vx.name, s, vx.parallelism, &inputs, p.max_parallelism)
            .map_err(|e| RunError::setup(format!("{}: in-flight records of `{}`: {e}", r.checkpoint.dir.display(), vx.name)))?;
        out.extend(records.into_iter().map(|(input, records)| Replay { stage, input, records }));
    }
    Ok(out)
}

/// Overdraft buffers per output pool with unaligned checkpoints (Flink's
/// default), at most a quarter of its floating buffers.
const OVERDRAFT: usize = 5;

/// The output partitioners of subtask `s` of chain `ci`, one per consumer
/// of the chain's last vertex, each with its own bounded buffer pool.
fn outputs(
    p: &Pipeline,
    plan: &Plan,
    ci: usize,
    s: u32,
    gates: &Gates,
    buffers: BufferConfig,
    clock: &Arc<WaitClock>,
) -> Result<(Vec<Partitioner>, Vec<BufferPool>), RunError> {
    let chain = &plan.chains[ci];
    let head = &plan.vertices[chain.vertices[0]];
    let last = &plan.vertices[*chain.vertices.last().expect("non-empty chain")];
    let mut outputs = Vec::new();
    let mut pools = Vec::new();
    let from = *chain.vertices.last().expect("non-empty chain");
    for &c in &last.consumers {
        let cc = plan.chain_of(c);
        // Which of the consumer's inputs this is, and its gate channels.
        let k = plan.vertices[c].inputs.iter().position(|&(u, _)| u == from).expect("a consumer has its producer as an input");
        let (_, part) = plan.vertices[c].inputs[k];
        let channels = plan.input_channels(c)[k].clone();
        let targets: Vec<_> = if part == Partitioning::Forward {
            vec![gates.senders[cc][s as usize].as_ref().expect("gate").channel(channels.start)]
        } else {
            gates.senders[cc].iter().map(|g| g.as_ref().expect("gate").channel(channels.start + s)).collect()
        };
        let targets = targets.into_iter().map(|t| weir_network::throttle::arm(&plan.vertices[c].name, t)).collect::<Vec<_>>();
        let memory = p.network.memory.0 as usize / last.consumers.len();
        let count = memory / buffers.size;
        // Unaligned checkpoints: a few floating buffers are kept for a task
        // that must finish its batch to take one (see weir_network's pool).
        let overdraft = if p.checkpoint.mode == crate::config::CheckpointMode::Unaligned {
            OVERDRAFT.min(count.saturating_sub(targets.len() * p.network.exclusive_buffers) / 4)
        } else {
            0
        };
        let config = PoolConfig { buffers: count, buffer_size: buffers.size, exclusive: p.network.exclusive_buffers, overdraft };
        let pool = BufferPool::new(config, targets.len(), vec![clock.clone(), gates.edge_clocks[c][k][s as usize].clone()])
            .map_err(|e| RunError::setup(format!("{}: network: task `{}` cannot feed `{}`: {e}", p.file.display(), head.name, plan.vertices[c].name)))?;
        pools.push(pool.clone());
        outputs.push(Partitioner::new(&last.name, part, targets, buffers, pool));
    }
    Ok((outputs, pools))
}

/// Starts the hot-reload manager for the batch operators. Async operators
/// are not hot-reloaded (yet): their slots are swapped by a restart.
pub(super) fn start_reload(
    p: &Pipeline,
    plan: &Plan,
    engine: &weir_wasm::Engine,
    handle: &RunHandle,
    plugins: &LoadedPlugins,
    built: &Built,
    coordinator: Option<&Coordinator>,
) -> Result<crate::reload::Manager, RunError> {
    let managed = plan
        .vertices
        .iter()
        .filter_map(|v| match v.kind {
            VertexKind::Operator(i) if p.operators[i].async_io.is_none() => Some((i, v.parallelism)),
            _ => None,
        })
        .map(|(i, par)| {
            let slot = built.slots.iter().find(|sl| sl.operator == p.operators[i].name).expect("a slot per operator").clone();
            crate::reload::ManagedOperator::new(i, slot, crate::reload::targets(p, i, par), plugins.plugins[i].clone())
        })
        .collect();
    let connectors = plan
        .vertices
        .iter()
        .filter_map(|v| {
            let (section, kind, plugin) = match &v.kind {
                VertexKind::Source(s) => (format!("sources.{}", v.name), "source", s.spec.plugin()?),
                VertexKind::Sink(s) => (format!("sinks.{}", v.name), "sink", s.spec.plugin()?),
                VertexKind::Operator(_) => return None,
            };
            Some(crate::reload::ManagedConnector { section, kind, plugin: plugin.to_owned(), parallelism: v.parallelism })
        })
        .collect();
    let connectors = (connectors, plugins.swaps.clone());
    crate::reload::start(p, engine, handle.reload(), managed, connectors, built.reports.clone(), coordinator.map(Coordinator::trigger_counter)).map_err(RunError::setup)
}
