//! Where each subtask's time goes, sampled once a second.
//!
//! Tasks keep cumulative counters (records and bytes per stage; idle and
//! backpressured nanoseconds per task, read from clocks at state changes,
//! never per record). The [`Monitor`] samples them every second and turns
//! them into Flink's per-second figures:
//!
//! * `busyTimeMsPerSecond`, `idleTimeMsPerSecond`,
//!   `backPressuredTimeMsPerSecond`: idle is time waiting for input,
//!   backpressured is time waiting for an output buffer, busy is the rest
//!   (as in Flink), so the three sum to ~1000;
//! * `inPoolUsage` / `outPoolUsage`: how full the input gate and the output
//!   buffer pools are;
//! * records and bytes in and out per second, per operator subtask;
//! * per input of a task with several (fan-in): records per second, the
//!   input's watermark, and whether it is idle (left out of the task's
//!   watermark), so the views can say which input holds event time back.
//!
//! Figures are shown averaged over a sliding window ([`WINDOW`] seconds),
//! and the per-second samples of the last [`HISTORY`] seconds are kept in
//! memory for the UI and for spotting alternating bottlenecks.
//!
//! A task's *backpressure status* follows Flink: OK when its subtasks are
//! backpressured at most 10% of the time, LOW up to 50%, HIGH above; the
//! worst subtask decides.
//!
//! Every figure is also exported to Prometheus, under the names and labels
//! of `weir_events::metric` (the one table of metric names): the sampled
//! per-second figures are how hot-path counters leave the tasks, which never
//! call into the metrics recorder per record.

pub mod analysis;
pub mod exporter;
mod view;

pub use analysis::{Analysis, GraphTask, Kind};
pub use view::{EdgeView, InputView, Link, Snapshot, SubtaskView, TaskTimeline, TaskView, Timeline, VertexView};

use metrics::{Counter, Gauge};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use weir_events::metric;
use weir_task::{InputMetrics, StageMetrics, TaskMetrics};

/// Seconds the displayed figures are averaged over.
pub const WINDOW: usize = 5;
/// Seconds of per-second history kept.
pub const HISTORY: usize = 300;

/// Flink's backpressure levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Backpressured at most 10% of the time.
    Ok,
    /// At most 50%.
    Low,
    /// More than 50%.
    High,
}

impl Status {
    /// The level of a backpressured share (0..=1).
    pub fn of(backpressured_share: f64) -> Self {
        if backpressured_share <= 0.10 {
            Status::Ok
        } else if backpressured_share <= 0.50 {
            Status::Low
        } else {
            Status::High
        }
    }

    /// `OK`, `LOW`, `HIGH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Low => "LOW",
            Status::High => "HIGH",
        }
    }
}

/// One stage (source, operator or sink) of the job graph.
#[derive(Debug)]
pub struct VertexEntry {
    /// Name in the pipeline file.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub kind: &'static str,
    /// Index of the chain (task) it runs in.
    pub chain: usize,
    /// The vertices feeding it, in the order of its `inputs` (empty for
    /// sources).
    pub inputs: Vec<VertexInput>,
    /// Counters, one per subtask.
    pub stages: Vec<Arc<StageMetrics>>,
}

/// One input of a vertex.
#[derive(Debug, Clone)]
pub struct VertexInput {
    /// The vertex it comes from (index into [`Registry::vertices`]).
    pub vertex: usize,
    /// How records reach it: `forward`, `rebalance`, `hash`, `broadcast`.
    pub partition: &'static str,
    /// Per subtask of the producing task, how long it waited for output
    /// buffers toward this input: the backpressure of this edge alone
    /// (a producer feeding several consumers waits on one of them). Empty
    /// inside a chain, where records pass by call, not by buffer.
    pub backpressure: Vec<Arc<weir_network::WaitClock>>,
}

/// One subtask of a chain.
#[derive(Debug)]
pub struct TaskEntry {
    /// The chain's name (its head vertex).
    pub chain_name: String,
    /// Index of the chain.
    pub chain: usize,
    /// Subtask index.
    pub subtask: u32,
    /// Its counters.
    pub metrics: Arc<TaskMetrics>,
}

/// Everything a running pipeline measures.
#[derive(Debug)]
pub struct Registry {
    /// Pipeline name.
    pub pipeline: String,
    /// Vertices in plan order.
    pub vertices: Vec<VertexEntry>,
    /// Task subtasks.
    pub tasks: Vec<TaskEntry>,
}

impl Registry {
    /// The inputs of chain `chain`'s head vertex: the task's inputs (empty
    /// for a source task).
    pub fn head_inputs(&self, chain: usize) -> &[VertexInput] {
        // Vertices are in plan order, so a chain's head comes first.
        self.vertices.iter().find(|v| v.chain == chain).map_or(&[], |v| &v.inputs)
    }
}

/// One second of one task subtask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSample {
    /// Busy milliseconds per second.
    pub busy: f64,
    /// Idle milliseconds per second.
    pub idle: f64,
    /// Backpressured milliseconds per second.
    pub backpressured: f64,
    /// Input gate usage, 0..=1.
    pub in_pool: f64,
    /// Output pool usage, 0..=1.
    pub out_pool: f64,
    /// Records per second into the task's head (out of it, for a source).
    #[serde(default)]
    pub records_in: f64,
}

/// One second of one stage subtask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSample {
    /// Records in per second.
    pub records_in: f64,
    /// Records out per second.
    pub records_out: f64,
    /// Bytes in per second.
    pub bytes_in: f64,
    /// Bytes out per second.
    pub bytes_out: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct TaskRaw {
    idle: u64,
    bp: u64,
    elapsed: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct StageRaw {
    rin: u64,
    rout: u64,
    bin: u64,
    bout: u64,
}

#[derive(Debug)]
struct Series {
    busy: Gauge,
    idle: Gauge,
    bp: Gauge,
    in_pool: Gauge,
    out_pool: Gauge,
    debloat: Gauge,
}

#[derive(Debug)]
struct StageSeries {
    rin: Gauge,
    rout: Gauge,
    bin: Gauge,
    bout: Gauge,
    rin_total: Counter,
    rout_total: Counter,
}

/// The Prometheus series of one input of a task subtask.
#[derive(Debug)]
struct InputSeries {
    records: Counter,
    watermark: Gauge,
    idle: Gauge,
    idle_time: Gauge,
}

/// One second of one input of a task subtask.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InputSample {
    /// Records in per second.
    pub records_in: f64,
    /// Milliseconds per second the input was idle (left out of the watermark).
    pub idle: f64,
}

/// Cumulative counters of one input of a task subtask.
#[derive(Debug, Clone, Copy, Default)]
struct InputRaw {
    records: u64,
    idle_ns: u64,
}

#[derive(Debug, Default)]
struct State {
    last_tasks: Vec<TaskRaw>,
    last_stages: Vec<Vec<StageRaw>>,
    /// Per task subtask, each input's counters so far.
    last_inputs: Vec<Vec<InputRaw>>,
    /// Per vertex, input and producing subtask: its waits on that edge so far, ns.
    last_edges: Vec<Vec<Vec<u64>>>,
    last_at: Option<Instant>,
    task_history: Vec<VecDeque<TaskSample>>,
    stage_history: Vec<Vec<VecDeque<StageSample>>>,
    /// Per task subtask and input: one sample a second.
    input_history: Vec<Vec<VecDeque<InputSample>>>,
    /// Per vertex, input and producing subtask: backpressured ms/s.
    edge_history: Vec<Vec<Vec<VecDeque<f64>>>>,
}

/// Samples a [`Registry`] once a second and keeps the history.
#[derive(Debug)]
pub struct Monitor {
    registry: Arc<Registry>,
    state: Mutex<State>,
    task_series: Vec<Series>,
    stage_series: Vec<Vec<StageSeries>>,
    status_series: Vec<Gauge>,
    /// Per task subtask, one per input of its head vertex.
    input_series: Vec<Vec<InputSeries>>,
    /// Per vertex, input and producing subtask: the edge's backpressure.
    edge_series: Vec<Vec<Vec<Gauge>>>,
}

fn mean<T: Copy>(h: &VecDeque<T>, f: impl Fn(T) -> f64) -> f64 {
    let n = h.len().min(WINDOW);
    if n == 0 {
        return 0.0;
    }
    h.iter().rev().take(n).map(|s| f(*s)).sum::<f64>() / n as f64
}

impl Monitor {
    /// A monitor over `registry`; creates its Prometheus series.
    pub fn new(registry: Arc<Registry>) -> Self {
        let p = registry.pipeline.clone();
        let task_series = registry
            .tasks
            .iter()
            .map(|t| {
                let subtask = t.subtask.to_string();
                let labels = [p.as_str(), &t.chain_name, &subtask];
                Series {
                    busy: metric::TASK_BUSY.gauge(&labels),
                    idle: metric::TASK_IDLE.gauge(&labels),
                    bp: metric::TASK_BACKPRESSURED.gauge(&labels),
                    in_pool: metric::TASK_IN_POOL.gauge(&labels),
                    out_pool: metric::TASK_OUT_POOL.gauge(&labels),
                    debloat: metric::NETWORK_DEBLOAT_TARGET.gauge(&labels),
                }
            })
            .collect();
        let stage_series = registry
            .vertices
            .iter()
            .map(|v| {
                (0..v.stages.len())
                    .map(|s| {
                        let subtask = s.to_string();
                        let labels = [p.as_str(), &v.name, &subtask];
                        StageSeries {
                            rin: metric::OPERATOR_RECORDS_IN_RATE.gauge(&labels),
                            rout: metric::OPERATOR_RECORDS_OUT_RATE.gauge(&labels),
                            bin: metric::OPERATOR_BYTES_IN_RATE.gauge(&labels),
                            bout: metric::OPERATOR_BYTES_OUT_RATE.gauge(&labels),
                            rin_total: metric::OPERATOR_RECORDS_IN.counter(&labels),
                            rout_total: metric::OPERATOR_RECORDS_OUT.counter(&labels),
                        }
                    })
                    .collect()
            })
            .collect();
        let chains = registry.tasks.iter().map(|t| t.chain).max().map_or(0, |m| m + 1);
        let status_series = (0..chains)
            .map(|c| {
                let name = registry.tasks.iter().find(|t| t.chain == c).map(|t| t.chain_name.clone()).unwrap_or_default();
                metric::TASK_BACKPRESSURE_STATUS.gauge(&[&p, &name])
            })
            .collect();
        let input_series: Vec<Vec<InputSeries>> = registry
            .tasks
            .iter()
            .map(|t| {
                let subtask = t.subtask.to_string();
                registry
                    .head_inputs(t.chain)
                    .iter()
                    .map(|i| {
                        let labels = [p.as_str(), &t.chain_name, &subtask, &registry.vertices[i.vertex].name];
                        InputSeries {
                            records: metric::TASK_INPUT_RECORDS.counter(&labels),
                            watermark: metric::TASK_INPUT_WATERMARK.gauge(&labels),
                            idle: metric::TASK_INPUT_IDLE.gauge(&labels),
                            idle_time: metric::TASK_INPUT_IDLE_TIME.gauge(&labels),
                        }
                    })
                    .collect()
            })
            .collect();
        let edge_series: Vec<Vec<Vec<Gauge>>> = registry
            .vertices
            .iter()
            .map(|v| {
                let task = registry.tasks.iter().find(|t| t.chain == v.chain).map(|t| t.chain_name.as_str()).unwrap_or_default();
                v.inputs
                    .iter()
                    .map(|i| {
                        let input = &registry.vertices[i.vertex].name;
                        (0..i.backpressure.len()).map(|s| metric::TASK_INPUT_BACKPRESSURED.gauge(&[p.as_str(), task, input, &s.to_string()])).collect()
                    })
                    .collect()
            })
            .collect();
        let state = State {
            task_history: registry.tasks.iter().map(|_| VecDeque::new()).collect(),
            stage_history: registry.vertices.iter().map(|v| v.stages.iter().map(|_| VecDeque::new()).collect()).collect(),
            input_history: input_series.iter().map(|ins| ins.iter().map(|_| VecDeque::new()).collect()).collect(),
            edge_history: edge_series.iter().map(|v| v.iter().map(|i| i.iter().map(|_| VecDeque::new()).collect()).collect()).collect(),
            ..State::default()
        };
        Self { registry, state: Mutex::new(state), task_series, stage_series, status_series, input_series, edge_series }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Takes one sample (call about once a second).
    pub fn sample(&self) {
        let now = Instant::now();
        let tasks: Vec<TaskRaw> = self
            .registry
            .tasks
            .iter()
            .map(|t| {
                let (idle, bp, elapsed) = t.metrics.times();
                TaskRaw { idle, bp, elapsed }
            })
            .collect();
        let stages: Vec<Vec<StageRaw>> = self
            .registry
            .vertices
            .iter()
            .map(|v| {
                v.stages
                    .iter()
                    .map(|m| StageRaw {
                        rin: m.records_in.load(Ordering::Relaxed),
                        rout: m.records_out.load(Ordering::Relaxed),
                        bin: m.bytes_in.load(Ordering::Relaxed),
                        bout: m.bytes_out.load(Ordering::Relaxed),
                    })
                    .collect()
            })
            .collect();
        let inputs: Vec<Vec<InputRaw>> = self
            .registry
            .tasks
            .iter()
            .map(|t| {
                t.metrics.inputs.get().map_or_else(Vec::new, |ins| {
                    ins.iter().map(|m| InputRaw { records: m.records_in.load(Ordering::Relaxed), idle_ns: m.idle_time.total_ns() }).collect()
                })
            })
            .collect();
        let edges: Vec<Vec<Vec<u64>>> =
            self.registry.vertices.iter().map(|v| v.inputs.iter().map(|i| i.backpressure.iter().map(|c| c.total_ns()).collect()).collect()).collect();
        let mut st = self.state.lock().expect("monitor lock");
        if let Some(last_at) = st.last_at {
            let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
            for (i, (t, last)) in tasks.iter().zip(&st.last_tasks.clone()).enumerate() {
                let dt = t.elapsed.saturating_sub(last.elapsed) as f64;
                let sample = if dt <= 0.0 {
                    TaskSample::default()
                } else {
                    let idle = t.idle.saturating_sub(last.idle) as f64 / dt * 1000.0;
                    let bp = t.bp.saturating_sub(last.bp) as f64 / dt * 1000.0;
                    let m = &self.registry.tasks[i].metrics;
                    TaskSample { busy: (1000.0 - idle - bp).max(0.0), idle, backpressured: bp, in_pool: m.in_pool_usage(), out_pool: m.out_pool_usage(), records_in: 0.0 }
                };
                let h = &mut st.task_history[i];
                h.push_back(sample);
                if h.len() > HISTORY {
                    h.pop_front();
                }
                let s = &self.task_series[i];
                let w = |f: fn(TaskSample) -> f64| mean(h, f);
                s.busy.set(w(|x| x.busy));
                s.idle.set(w(|x| x.idle));
                s.bp.set(w(|x| x.backpressured));
                s.in_pool.set(w(|x| x.in_pool));
                s.out_pool.set(w(|x| x.out_pool));
                // The current allowance, not an average: it is already smoothed.
                s.debloat.set(self.registry.tasks[i].metrics.debloat_target_bytes().unwrap_or(0) as f64);
            }
            for (v, (cur, last)) in stages.iter().zip(&st.last_stages.clone()).enumerate() {
                for (s, (c, l)) in cur.iter().zip(last).enumerate() {
                    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                    let sample = StageSample {
                        records_in: per(c.rin, l.rin),
                        records_out: per(c.rout, l.rout),
                        bytes_in: per(c.bin, l.bin),
                        bytes_out: per(c.bout, l.bout),
                    };
                    let h = &mut st.stage_history[v][s];
                    h.push_back(sample);
                    if h.len() > HISTORY {
                        h.pop_front();
                    }
                    let g = &self.stage_series[v][s];
                    g.rin.set(mean(h, |x| x.records_in));
                    g.rout.set(mean(h, |x| x.records_out));
                    g.bin.set(mean(h, |x| x.bytes_in));
                    g.bout.set(mean(h, |x| x.bytes_out));
                    g.rin_total.absolute(c.rin);
                    g.rout_total.absolute(c.rout);
                }
            }
            // Each input's rate and idle time; its watermark and idleness
            // are read live.
            let ms_per_second = |ns: u64| (ns as f64 / 1e6 / secs).min(1000.0);
            for (i, (cur, last)) in inputs.iter().zip(&st.last_inputs.clone()).enumerate() {
                for (e, h) in st.input_history[i].iter_mut().enumerate() {
                    let (c, l) = (cur.get(e).copied().unwrap_or_default(), last.get(e).copied().unwrap_or_default());
                    h.push_back(InputSample { records_in: c.records.saturating_sub(l.records) as f64 / secs, idle: ms_per_second(c.idle_ns.saturating_sub(l.idle_ns)) });
                    if h.len() > HISTORY {
                        h.pop_front();
                    }
                }
            }
            // Each edge's backpressure, per producing subtask.
            for (v, (cur, last)) in edges.iter().zip(&st.last_edges.clone()).enumerate() {
                for (e, (c, l)) in cur.iter().zip(last).enumerate() {
                    for (s, (c, l)) in c.iter().zip(l).enumerate() {
                        let h = &mut st.edge_history[v][e][s];
                        h.push_back(ms_per_second(c.saturating_sub(*l)));
                        if h.len() > HISTORY {
                            h.pop_front();
                        }
                        self.edge_series[v][e][s].set(mean(h, |x| x));
                    }
                }
            }
            for (i, series) in self.input_series.iter().enumerate() {
                let live = self.registry.tasks[i].metrics.inputs.get();
                for (e, g) in series.iter().enumerate() {
                    let Some(m) = live.and_then(|ins| ins.get(e)) else { continue };
                    g.records.absolute(m.records_in.load(Ordering::Relaxed));
                    let w = m.watermark.load(Ordering::Relaxed);
                    if w != i64::MIN {
                        g.watermark.set(w as f64);
                    }
                    g.idle.set(if m.idle.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
                    g.idle_time.set(st.input_history[i].get(e).map_or(0.0, |h| mean(h, |x| x.idle)));
                }
            }
            // Each task's own rate: its head stage's records.
            for (i, t) in self.registry.tasks.iter().enumerate() {
                let Some(v) = self.registry.vertices.iter().position(|v| v.chain == t.chain) else { continue };
                let source = self.registry.vertices[v].inputs.is_empty();
                let rate = st.stage_history[v].get(t.subtask as usize).and_then(|h| h.back()).map_or(0.0, |x| if source { x.records_out } else { x.records_in });
                if let Some(last) = st.task_history[i].back_mut() {
                    last.records_in = rate;
                }
            }
            for (c, g) in self.status_series.iter().enumerate() {
                g.set(match self.chain_status_locked(&st, c) {
                    Status::Ok => 0.0,
                    Status::Low => 1.0,
                    Status::High => 2.0,
                });
            }
        }
        st.last_tasks = tasks;
        st.last_stages = stages;
        st.last_inputs = inputs;
        st.last_edges = edges;
        st.last_at = Some(now);
    }

    fn chain_status_locked(&self, st: &State, chain: usize) -> Status {
        self.registry
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.chain == chain)
            .map(|(i, _)| Status::of(mean(&st.task_history[i], |x| x.backpressured) / 1000.0))
            .max()
            .unwrap_or(Status::Ok)
    }

    /// The windowed figures of every task subtask, in registry order.
    pub fn tasks(&self) -> Vec<TaskSample> {
        let st = self.state.lock().expect("monitor lock");
        st.task_history
            .iter()
            .map(|h| TaskSample {
                busy: mean(h, |x| x.busy),
                idle: mean(h, |x| x.idle),
                backpressured: mean(h, |x| x.backpressured),
                in_pool: mean(h, |x| x.in_pool),
                out_pool: mean(h, |x| x.out_pool),
                records_in: mean(h, |x| x.records_in),
            })
            .collect()
    }

    /// Windowed figures of each vertex, summed over its subtasks.
    pub fn vertices(&self) -> Vec<StageSample> {
        let st = self.state.lock().expect("monitor lock");
        st.stage_history
            .iter()
            .map(|subs| {
                subs.iter().fold(StageSample::default(), |acc, h| StageSample {
                    records_in: acc.records_in + mean(h, |x| x.records_in),
                    records_out: acc.records_out + mean(h, |x| x.records_out),
                    bytes_in: acc.bytes_in + mean(h, |x| x.bytes_in),
                    bytes_out: acc.bytes_out + mean(h, |x| x.bytes_out),
                })
            })
            .collect()
    }

    /// Backpressure status of a chain (the worst of its subtasks).
    pub fn chain_status(&self, chain: usize) -> Status {
        let st = self.state.lock().expect("monitor lock");
        self.chain_status_locked(&st, chain)
    }

    /// The job graph at task level, for [`analysis::analyze`]: one entry
    /// per chain, with the chains its head's inputs come from.
    pub fn graph(&self) -> Vec<GraphTask> {
        let r = &self.registry;
        let chains = r.tasks.iter().map(|t| t.chain).max().map_or(0, |m| m + 1);
        (0..chains)
            .map(|c| {
                // Vertices are in plan order, so a chain's head comes first.
                let head = r.vertices.iter().find(|v| v.chain == c);
                GraphTask {
                    name: r.tasks.iter().find(|t| t.chain == c).map(|t| t.chain_name.clone()).unwrap_or_default(),
                    upstreams: head.map_or_else(Vec::new, |h| h.inputs.iter().map(|i| r.vertices[i.vertex].chain).collect()),
                    hash_input: head.is_some_and(|h| h.inputs.iter().any(|i| i.partition == "hash")),
                }
            })
            .collect()
    }

    /// Per-second history of every subtask, `[chain][subtask][second]`.
    pub fn histories(&self) -> Vec<Vec<Vec<TaskSample>>> {
        let st = self.state.lock().expect("monitor lock");
        let chains = self.registry.tasks.iter().map(|t| t.chain).max().map_or(0, |m| m + 1);
        let mut out: Vec<Vec<Vec<TaskSample>>> = vec![Vec::new(); chains];
        for (i, t) in self.registry.tasks.iter().enumerate() {
            out[t.chain].push(st.task_history[i].iter().copied().collect());
        }
        out
    }

    /// Where the bottleneck is, in words (see [`analysis`]).
    pub fn analyze(&self) -> Analysis {
        analysis::analyze(&self.registry.pipeline, &self.graph(), &self.histories(), WINDOW)
    }

    /// The live counters of each input of task subtask `task` (in the order
    /// of its head vertex's inputs), with their windowed figures; empty for
    /// a source task or before the task started.
    pub fn inputs(&self, task: usize) -> Vec<(Arc<InputMetrics>, InputSample)> {
        let st = self.state.lock().expect("monitor lock");
        let live = self.registry.tasks.get(task).and_then(|t| t.metrics.inputs.get());
        live.into_iter()
            .flatten()
            .enumerate()
            .map(|(e, m)| {
                let w = st.input_history[task].get(e).map_or_else(InputSample::default, |h| InputSample { records_in: mean(h, |x| x.records_in), idle: mean(h, |x| x.idle) });
                (m.clone(), w)
            })
            .collect()
    }

    /// Backpressured ms/s of input `input` of vertex `vertex`: the windowed
    /// waits for buffers on that edge of its most backpressured producing
    /// subtask (0 inside a chain).
    pub fn edge_backpressure(&self, vertex: usize, input: usize) -> f64 {
        let st = self.state.lock().expect("monitor lock");
        st.edge_history.get(vertex).and_then(|v| v.get(input)).map_or(0.0, |subs| subs.iter().map(|h| mean(h, |x| x)).fold(0.0, f64::max))
    }

    /// Per-second history of a task subtask (oldest first, up to [`HISTORY`]).
    pub fn history(&self, task: usize) -> Vec<TaskSample> {
        let st = self.state.lock().expect("monitor lock");
        st.task_history.get(task).map(|h| h.iter().copied().collect()).unwrap_or_default()
    }
}

/// Serves `/metrics` in the Prometheus text format on `address`, for the
/// whole process. Call once; later calls fail.
pub fn serve_prometheus(address: std::net::SocketAddr) -> Result<(), String> {
    exporter::serve_prometheus(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_thresholds_follow_flink() {
        assert_eq!(Status::of(0.0), Status::Ok);
        assert_eq!(Status::of(0.10), Status::Ok);
        assert_eq!(Status::of(0.11), Status::Low);
        assert_eq!(Status::of(0.50), Status::Low);
        assert_eq!(Status::of(0.51), Status::High);
    }
}
