//! From a validated pipeline to a job graph of vertices, edges and chains.
//!
//! Chaining rule: a vertex runs in its input's task (no channel, batches
//! passed by value) when the edge is `forward` at equal parallelism, the
//! input feeds nothing else, and the vertex does not set
//! `disable-chaining`. A `hash` edge between two operators of parallelism 1
//! is a forward edge in effect (one key group owner) and is chained too.
//! A vertex with several inputs (fan-in) is never chained: it heads a task
//! whose input gate holds the channels of every input, input after input.
//!
//! Inputs may be declared in any order in the file, so vertices get their
//! index first and their edges after. Every edge of a vertex is
//! partitioned on its own (by the vertex's `partition`); two `hash` edges
//! into the same vertex route a key to the same subtask, since the key
//! group depends only on the key, `max-parallelism` and the vertex's
//! parallelism: that is what lets the inputs of a keyed operator share its
//! keyed state.

use crate::config::{OperatorConfig, PartitionKind, Pipeline, SinkConfig, SourceConfig};
use std::time::Duration;
use weir_network::Partitioning;

/// What a vertex is.
#[derive(Debug, Clone)]
pub enum VertexKind {
    /// A source.
    Source(SourceConfig),
    /// A Wasm operator (index into `Pipeline::operators`).
    Operator(usize),
    /// A sink.
    Sink(SinkConfig),
}

/// A node of the job graph.
#[derive(Debug, Clone)]
pub struct Vertex {
    /// Name from the pipeline file.
    pub name: String,
    /// What it is.
    pub kind: VertexKind,
    /// Parallel instances.
    pub parallelism: u32,
    /// Its input vertices, in the order the file names them, and how
    /// records are partitioned on the way (empty for a source).
    pub inputs: Vec<(usize, Partitioning)>,
    /// How long the records this vertex emits may pause before a consumer
    /// leaves the input out of its watermark: the longest `idle-timeout`
    /// of the sources upstream (`None` if one of them has none).
    pub idle_timeout: Option<Duration>,
    /// Vertices fed by this one.
    pub consumers: Vec<usize>,
    /// Keep out of its input's chain.
    pub disable_chaining: bool,
    /// A dead-letter sink: it runs inside this (async operator) vertex's
    /// stage, not in a chain of its own, and is not one of its consumers.
    pub side_of: Option<usize>,
}

impl Vertex {
    /// `source`, `operator` or `sink`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            VertexKind::Source(_) => "source",
            VertexKind::Operator(_) => "operator",
            VertexKind::Sink(_) => "sink",
        }
    }
}

/// A chain of vertices run by one task per subtask.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Vertex indices, head first.
    pub vertices: Vec<usize>,
    /// Parallelism shared by all of them.
    pub parallelism: u32,
}

/// The job graph.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Vertices: sources, then operators, then sinks.
    pub vertices: Vec<Vertex>,
    /// Chains (tasks).
    pub chains: Vec<Chain>,
    /// The chain of each vertex in a chain (side vertices: `usize::MAX`).
    chain_index: Vec<usize>,
    /// The dead-letter sink of each vertex that has one.
    dead_letters: std::collections::HashMap<usize, usize>,
}

impl Plan {
    /// Builds the graph of a validated pipeline.
    pub fn new(p: &Pipeline) -> Self {
        let mut vertices: Vec<Vertex> = Vec::new();
        // Names to vertices: linear in the number of operators (a file may
        // have tens of thousands).
        let mut by_name: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let index = |by_name: &std::collections::HashMap<String, usize>, name: &str| *by_name.get(name).expect("validated input");
        for (name, s) in &p.sources {
            by_name.insert(name.clone(), vertices.len());
            vertices.push(Vertex {
                name: name.clone(),
                kind: VertexKind::Source(s.clone()),
                parallelism: s.parallelism.unwrap_or(1),
                inputs: Vec::new(),
                idle_timeout: s.idle_timeout.or(p.idle_timeout),
                consumers: Vec::new(),
                disable_chaining: false,
                side_of: None,
            });
        }
        // Operators first without edges: an input may be named above or below.
        let first_op = vertices.len();
        for (i, op) in p.operators.iter().enumerate() {
            by_name.insert(op.name.clone(), vertices.len());
            vertices.push(Vertex {
                name: op.name.clone(),
                kind: VertexKind::Operator(i),
                parallelism: op.parallelism.unwrap_or(p.parallelism),
                inputs: Vec::new(),
                idle_timeout: None,
                consumers: Vec::new(),
                disable_chaining: op.disable_chaining,
                side_of: None,
            });
        }
        for (i, op) in p.operators.iter().enumerate() {
            let v = first_op + i;
            vertices[v].inputs = p
                .operator_inputs(i)
                .expect("validated")
                .iter()
                .map(|name| {
                    let u = index(&by_name, name);
                    (u, partitioning(op, vertices[u].parallelism, vertices[v].parallelism, p.max_parallelism))
                })
                .collect();
        }
        for (name, s) in &p.sinks {
            let inputs: Vec<usize> = p.sink_inputs(name, s).expect("validated").iter().map(|n| index(&by_name, n)).collect();
            let side_of = p.dead_letter_of(name).map(|_| inputs[0]);
            let parallelism = s.parallelism.unwrap_or(vertices[inputs[0]].parallelism);
            let inputs = inputs
                .into_iter()
                .map(|u| (u, if parallelism == vertices[u].parallelism { Partitioning::Forward } else { Partitioning::Rebalance }))
                .collect();
            vertices.push(Vertex {
                name: name.clone(),
                kind: VertexKind::Sink(s.clone()),
                parallelism,
                inputs,
                idle_timeout: None,
                consumers: Vec::new(),
                disable_chaining: false,
                side_of,
            });
        }
        for v in 0..vertices.len() {
            if vertices[v].side_of.is_none() {
                for (u, _) in vertices[v].inputs.clone() {
                    vertices[u].consumers.push(v);
                }
            }
        }
        propagate_idle_timeouts(&mut vertices);
        let chained = |vs: &[Vertex], v: usize| -> bool {
            let [(u, part)] = vs[v].inputs[..] else { return false };
            let same = vs[u].parallelism == vs[v].parallelism;
            let forward = match part {
                Partitioning::Forward => true,
                Partitioning::Hash { .. } => vs[v].parallelism == 1 && vs[u].parallelism == 1,
                _ => false,
            };
            forward && same && vs[u].consumers.len() == 1 && !vs[v].disable_chaining
        };
        let mut chains = Vec::new();
        for head in 0..vertices.len() {
            if chained(&vertices, head) || vertices[head].side_of.is_some() {
                continue;
            }
            let mut chain = vec![head];
            let mut cur = head;
            while let [next] = vertices[cur].consumers[..] {
                if !chained(&vertices, next) {
                    break;
                }
                chain.push(next);
                cur = next;
            }
            chains.push(Chain { vertices: chain, parallelism: vertices[head].parallelism });
        }
        let mut chain_index = vec![usize::MAX; vertices.len()];
        for (c, chain) in chains.iter().enumerate() {
            for &v in &chain.vertices {
                chain_index[v] = c;
            }
        }
        let dead_letters = (0..vertices.len())
            .filter_map(|v| vertices[v].side_of.map(|owner| (owner, v)))
            .collect();
        Plan {
            vertices,
            chains,
            chain_index,
            dead_letters,
        }
    }

    /// The chain a vertex belongs to (a side vertex: its owner's).
    pub fn chain_of(&self, v: usize) -> usize {
        if let Some(owner) = self.vertices[v].side_of {
            return self.chain_of(owner);
        }
        self.chain_index[v]
    }

    /// The input gate channels of each input of vertex `v`, input after
    /// input: one for a `forward` input, else one per upstream subtask.
    pub fn input_channels(&self, v: usize) -> Vec<std::ops::Range<u32>> {
        let mut next = 0;
        self.vertices[v]
            .inputs
            .iter()
            .map(|&(u, part)| {
                let n = if part == Partitioning::Forward { 1 } else { self.vertices[u].parallelism };
                next += n;
                next - n..next
            })
            .collect()
    }

    /// The dead-letter sink of vertex `v`, if it has one.
    pub fn dead_letter_of(&self, v: usize) -> Option<usize> {
        self.dead_letters.get(&v).copied()
    }

    /// One line per task, for `weir check` and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut sides: std::collections::HashMap<usize, Vec<&str>> = std::collections::HashMap::new();
        for v in &self.vertices {
            if let Some(owner) = v.side_of {
                sides.entry(owner).or_default().push(&v.name);
            }
        }
        self.chains
            .iter()
            .map(|c| {
                let names: Vec<String> = c.vertices.iter().map(|&v| format!("{} ({})", self.vertices[v].name, self.vertices[v].kind_name())).collect();
                let head = &self.vertices[c.vertices[0]];
                let input: String = head.inputs.iter().map(|&(u, part)| format!(" <- {} [{}]", self.vertices[u].name, part_name(part))).collect();
                let side: Vec<String> = c
                    .vertices
                    .iter()
                    .flat_map(|o| sides.get(o).into_iter().flatten())
                    .map(|name| format!(" (+ dead letters -> {name} (sink))"))
                    .collect();
                format!("task x{}: {}{}{input}", c.parallelism, names.join(" -> "), side.concat())
            })
            .collect()
    }
}

/// Each vertex's idle timeout from its inputs', in an order where inputs
/// come first (the graph is acyclic, validated).
fn propagate_idle_timeouts(vertices: &mut [Vertex]) {
    let mut pending: Vec<usize> = vertices.iter().map(|v| v.inputs.len()).collect();
    let mut ready: Vec<usize> = (0..vertices.len()).filter(|&v| pending[v] == 0).collect();
    while let Some(u) = ready.pop() {
        for c in vertices[u].consumers.clone() {
            pending[c] -= 1;
            if pending[c] == 0 {
                let timeouts: Option<Vec<Duration>> = vertices[c].inputs.iter().map(|&(i, _)| vertices[i].idle_timeout).collect();
                vertices[c].idle_timeout = timeouts.and_then(|t| t.into_iter().max());
                ready.push(c);
            }
        }
    }
}

pub(crate) fn part_name(p: Partitioning) -> &'static str {
    match p {
        Partitioning::Forward => "forward",
        Partitioning::Rebalance => "rebalance",
        Partitioning::Hash { .. } => "hash",
        Partitioning::Broadcast => "broadcast",
    }
}

fn partitioning(op: &OperatorConfig, from: u32, to: u32, max_parallelism: u32) -> Partitioning {
    match op.partition {
        Some(PartitionKind::Hash) => Partitioning::Hash { max_parallelism },
        Some(PartitionKind::Broadcast) => Partitioning::Broadcast,
        Some(PartitionKind::Rebalance) => Partitioning::Rebalance,
        Some(PartitionKind::Forward) => Partitioning::Forward,
        None if from == to => Partitioning::Forward,
        None => Partitioning::Rebalance,
    }
}
