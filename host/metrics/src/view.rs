//! What the REST API, the web UI, `weir status` and `weir top` show: one
//! serializable picture of a running pipeline ([`Snapshot`]) and its recent
//! per-second history ([`Timeline`]).

use crate::{mean, Analysis, Monitor, Status, TaskSample};
use std::sync::atomic::Ordering;
use serde::{Deserialize, Serialize};

/// The live state of a running pipeline's job graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Pipeline name.
    pub pipeline: String,
    /// Seconds of samples taken so far.
    pub sampled_seconds: usize,
    /// Seconds the figures are averaged over.
    pub window_seconds: usize,
    /// Sources, operators and sinks, in plan order.
    pub vertices: Vec<VertexView>,
    /// Tasks (chains of vertices), in plan order.
    pub tasks: Vec<TaskView>,
    /// Edges between tasks, with their traffic.
    pub edges: Vec<EdgeView>,
    /// Where the bottleneck is.
    pub bottleneck: Analysis,
}

/// One source, operator or sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VertexView {
    /// Name in the pipeline file.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub kind: String,
    /// The task it runs in.
    pub task: String,
    /// Parallelism.
    pub parallelism: usize,
    /// Its input vertices, in the order of its `inputs` (empty for a
    /// source).
    pub inputs: Vec<Link>,
    /// Records in per second, all subtasks.
    pub records_in_per_second: f64,
    /// Records out per second, all subtasks.
    pub records_out_per_second: f64,
    /// Records in, total so far.
    pub records_in: u64,
    /// Records out, total so far.
    pub records_out: u64,
}

/// Where a vertex's input comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    /// The vertex it comes from.
    pub from: String,
    /// Partitioning: `forward`, `rebalance`, `hash`, `broadcast`.
    pub partition: String,
}

/// One input of a task: figures per input, so that a fan-in (a union, a
/// join) shows which input is fast, which waits, which is idle and which
/// holds the watermark back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputView {
    /// The vertex it comes from.
    pub from: String,
    /// The task that vertex runs in.
    pub task: String,
    /// Partitioning.
    pub partition: String,
    /// Records in per second on this input, all subtasks.
    pub records_in_per_second: f64,
    /// Records in on this input so far, all subtasks.
    pub records_in: u64,
    /// Backpressured ms/s of this edge: how long this input's producer
    /// (its most backpressured subtask) waits for a free buffer toward
    /// this task. A producer that feeds several tasks is counted here
    /// only for its waits on this one.
    pub upstream_backpressured: f64,
    /// The input's watermark, epoch ms: the lowest over the subtasks
    /// (absent before the first watermark).
    pub watermark_ms: Option<i64>,
    /// Every subtask has this input idle (silent past `idle-timeout`):
    /// it is left out of the task's watermark.
    pub idle: bool,
    /// Idle ms/s (left out of the watermark), mean over the subtasks.
    #[serde(default)]
    pub idle_time: f64,
    /// This input holds the task's watermark back: of the inputs that are
    /// not idle, its watermark is the lowest and another's is higher.
    pub holds_watermark: bool,
}

/// One task (a chain of vertices run by one thread per subtask).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    /// The chain's name (its head vertex).
    pub name: String,
    /// Its vertices, head first.
    pub vertices: Vec<String>,
    /// The tasks feeding it (several for a fan-in; none for a source).
    pub upstreams: Vec<String>,
    /// Its inputs (its head vertex's), with their figures.
    pub inputs: Vec<InputView>,
    /// Parallelism.
    pub parallelism: usize,
    /// Backpressure status: `OK`, `LOW` or `HIGH` (the worst subtask).
    pub status: String,
    /// Busy ms/s, mean over subtasks.
    pub busy: f64,
    /// Idle ms/s, mean over subtasks.
    pub idle: f64,
    /// Backpressured ms/s, mean over subtasks.
    pub backpressured: f64,
    /// Busiest subtask's busy ms/s.
    pub max_busy: f64,
    /// Most backpressured subtask's ms/s.
    pub max_backpressured: f64,
    /// Its subtasks.
    pub subtasks: Vec<SubtaskView>,
}

/// One subtask of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubtaskView {
    /// Subtask index.
    pub subtask: u32,
    /// Busy ms/s.
    pub busy: f64,
    /// Idle ms/s.
    pub idle: f64,
    /// Backpressured ms/s.
    pub backpressured: f64,
    /// Input buffer usage, 0..=1.
    pub in_pool: f64,
    /// Output buffer usage, 0..=1.
    pub out_pool: f64,
    /// Records into the task's head per second.
    pub records_in_per_second: f64,
    /// This subtask is the one the bottleneck analysis names.
    pub bottleneck: bool,
    /// Bytes its upstream tasks may have in flight toward it under buffer
    /// debloating (`network.debloat`); absent when not debloated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debloat_target_bytes: Option<u64>,
}

/// Traffic from one task to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeView {
    /// Sending task.
    pub from: String,
    /// Receiving task.
    pub to: String,
    /// Partitioning.
    pub partition: String,
    /// Records per second over the edge.
    pub records_per_second: f64,
}

/// The per-second history of every task, for the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    /// Seconds covered (the newest last).
    pub seconds: usize,
    /// One per task.
    pub tasks: Vec<TaskTimeline>,
}

/// One task's history, mean over its subtasks, oldest second first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskTimeline {
    /// Task name.
    pub name: String,
    /// Busy ms/s per second.
    pub busy: Vec<f64>,
    /// Backpressured ms/s per second.
    pub backpressured: Vec<f64>,
    /// Idle ms/s per second.
    pub idle: Vec<f64>,
}

impl Monitor {
    /// The live picture: every vertex, task and edge with its windowed
    /// figures, and the bottleneck analysis.
    pub fn snapshot(&self) -> Snapshot {
        let r = self.registry();
        let bottleneck = self.analyze();
        let graph = self.graph();
        let tasks_now = self.tasks();
        let vertices_now = self.vertices();
        let inputs = self.input_views(&graph);
        let st = self.state.lock().expect("monitor lock");
        let sampled_seconds = st.task_history.iter().map(|h| h.len()).max().unwrap_or(0);
        let total = |v: &crate::VertexEntry, f: fn(&weir_task::StageMetrics) -> u64| v.stages.iter().map(|m| f(m)).sum::<u64>();
        let vertices: Vec<VertexView> = r
            .vertices
            .iter()
            .zip(&vertices_now)
            .map(|(v, now)| VertexView {
                name: v.name.clone(),
                kind: v.kind.to_owned(),
                task: graph.get(v.chain).map(|g| g.name.clone()).unwrap_or_default(),
                parallelism: v.stages.len(),
                inputs: v.inputs.iter().map(|i| Link { from: r.vertices[i.vertex].name.clone(), partition: i.partition.to_owned() }).collect(),
                records_in_per_second: now.records_in,
                records_out_per_second: now.records_out,
                records_in: total(v, |m| m.records_in.load(std::sync::atomic::Ordering::Relaxed)),
                records_out: total(v, |m| m.records_out.load(std::sync::atomic::Ordering::Relaxed)),
            })
            .collect();
        let tasks: Vec<TaskView> = graph
            .iter()
            .enumerate()
            .map(|(c, g)| {
                let head = r.vertices.iter().position(|v| v.chain == c);
                let subs: Vec<SubtaskView> = r
                    .tasks
                    .iter()
                    .zip(&tasks_now)
                    .filter(|(t, _)| t.chain == c)
                    .map(|(t, x)| {
                        let rin = head.and_then(|h| st.stage_history[h].get(t.subtask as usize)).map_or(0.0, |h| {
                            // A source head counts what it emits.
                            if r.vertices[head.unwrap_or(0)].inputs.is_empty() { mean(h, |x| x.records_out) } else { mean(h, |x| x.records_in) }
                        });
                        SubtaskView {
                            subtask: t.subtask,
                            busy: x.busy,
                            idle: x.idle,
                            backpressured: x.backpressured,
                            in_pool: x.in_pool,
                            out_pool: x.out_pool,
                            records_in_per_second: rin,
                            bottleneck: bottleneck.task.as_deref() == Some(&g.name) && bottleneck.subtask == Some(t.subtask),
                            debloat_target_bytes: t.metrics.debloat_target_bytes(),
                        }
                    })
                    .collect();
                let n = subs.len().max(1) as f64;
                TaskView {
                    name: g.name.clone(),
                    vertices: r.vertices.iter().filter(|v| v.chain == c).map(|v| v.name.clone()).collect(),
                    upstreams: g.upstreams.iter().map(|&u| graph[u].name.clone()).collect(),
                    inputs: inputs[c].clone(),
                    parallelism: subs.len(),
                    status: self.chain_status_locked(&st, c).as_str().to_owned(),
                    busy: subs.iter().map(|s| s.busy).sum::<f64>() / n,
                    idle: subs.iter().map(|s| s.idle).sum::<f64>() / n,
                    backpressured: subs.iter().map(|s| s.backpressured).sum::<f64>() / n,
                    max_busy: subs.iter().map(|s| s.busy).fold(0.0, f64::max),
                    max_backpressured: subs.iter().map(|s| s.backpressured).fold(0.0, f64::max),
                    subtasks: subs,
                }
            })
            .collect();
        // One edge per input that crosses tasks; a fan-in's edges carry
        // their own input's rate.
        let (graph_ref, inputs_ref) = (&graph, &inputs);
        let edges = r
            .vertices
            .iter()
            .zip(&vertices_now)
            .flat_map(|(v, now)| {
                let (graph, inputs) = (graph_ref, inputs_ref);
                let several = v.inputs.len() > 1;
                v.inputs.iter().enumerate().filter(|(_, i)| r.vertices[i.vertex].chain != v.chain).map(move |(e, i)| EdgeView {
                    from: graph[r.vertices[i.vertex].chain].name.clone(),
                    to: graph[v.chain].name.clone(),
                    partition: i.partition.to_owned(),
                    records_per_second: if several { inputs[v.chain].get(e).map_or(0.0, |x| x.records_in_per_second) } else { now.records_in },
                })
            })
            .collect();
        Snapshot { pipeline: r.pipeline.clone(), sampled_seconds, window_seconds: crate::WINDOW, vertices, tasks, edges, bottleneck }
    }

    /// Per chain, its inputs' figures summed (rates, counts) or combined
    /// (lowest watermark, idle only when idle everywhere) over its subtasks.
    fn input_views(&self, graph: &[crate::GraphTask]) -> Vec<Vec<InputView>> {
        let r = self.registry();
        (0..graph.len())
            .map(|c| {
                let subtasks: Vec<usize> = r.tasks.iter().enumerate().filter(|(_, t)| t.chain == c).map(|(i, _)| i).collect();
                let live: Vec<_> = subtasks.iter().map(|&i| self.inputs(i)).collect();
                let head = r.vertices.iter().position(|v| v.chain == c);
                let mut views: Vec<InputView> = r
                    .head_inputs(c)
                    .iter()
                    .enumerate()
                    .map(|(e, i)| {
                        let up = r.vertices[i.vertex].chain;
                        let per = || live.iter().filter_map(move |ins| ins.get(e));
                        let watermarks = per().map(|(m, _)| m.watermark.load(Ordering::Relaxed)).filter(|&w| w != i64::MIN);
                        let started = per().count() > 0;
                        InputView {
                            from: r.vertices[i.vertex].name.clone(),
                            task: graph[up].name.clone(),
                            partition: i.partition.to_owned(),
                            records_in_per_second: per().map(|(_, w)| w.records_in).sum(),
                            records_in: per().map(|(m, _)| m.records_in.load(Ordering::Relaxed)).sum(),
                            upstream_backpressured: head.map_or(0.0, |v| self.edge_backpressure(v, e)),
                            watermark_ms: watermarks.min(),
                            idle: started && per().all(|(m, _)| m.idle.load(Ordering::Relaxed)),
                            idle_time: per().map(|(_, w)| w.idle).sum::<f64>() / per().count().max(1) as f64,
                            holds_watermark: false,
                        }
                    })
                    .collect();
                // Which input holds the watermark back: the lowest of the
                // active ones, when another active one is ahead of it.
                let active = || views.iter().filter(|v| !v.idle).filter_map(|v| v.watermark_ms);
                if let (Some(low), Some(high)) = (active().min(), active().max())
                    && low < high
                    && let Some(v) = views.iter_mut().find(|v| !v.idle && v.watermark_ms == Some(low))
                {
                    v.holds_watermark = true;
                }
                views
            })
            .collect()
    }

    /// The last `seconds` seconds of every task, mean over its subtasks.
    pub fn timeline(&self, seconds: usize) -> Timeline {
        let histories = self.histories();
        let graph = self.graph();
        let len = histories.iter().flatten().map(Vec::len).max().unwrap_or(0).min(seconds);
        let tasks = graph
            .iter()
            .zip(&histories)
            .map(|(g, subs)| {
                let series = |f: fn(&TaskSample) -> f64| -> Vec<f64> {
                    (0..len)
                        .map(|i| {
                            let vals: Vec<f64> = subs.iter().filter_map(|h| h.len().checked_sub(len - i).map(|j| f(&h[j]))).collect();
                            if vals.is_empty() { 0.0 } else { vals.iter().sum::<f64>() / vals.len() as f64 }
                        })
                        .collect()
                };
                TaskTimeline { name: g.name.clone(), busy: series(|x| x.busy), backpressured: series(|x| x.backpressured), idle: series(|x| x.idle) }
            })
            .collect();
        Timeline { seconds: len, tasks }
    }
}

impl Status {
    /// Parses `OK`, `LOW`, `HIGH`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(Status::Ok),
            "LOW" => Some(Status::Low),
            "HIGH" => Some(Status::High),
            _ => None,
        }
    }
}
