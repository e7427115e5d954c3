//! From a validated pipeline to a job graph of vertices, edges and chains.
//!
//! Chaining rule: a vertex runs in its input's task (no channel, batches
//! passed by value) when the edge is `forward` at equal parallelism, the
//! input feeds nothing else, and the vertex does not set
//! `disable-chaining`. A `hash` edge between two operators of parallelism 1
//! is a forward edge in effect (one key group owner) and is chained too.

use crate::config::{OperatorConfig, PartitionKind, Pipeline, SinkConfig, SourceConfig};
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
    /// Its input vertex and how records are partitioned on the way.
    pub input: Option<(usize, Partitioning)>,
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
                input: None,
                consumers: Vec::new(),
                disable_chaining: false,
                side_of: None,
            });
        }
        for (i, op) in p.operators.iter().enumerate() {
            let input = index(&by_name, &p.operator_input(i).expect("validated"));
            by_name.insert(op.name.clone(), vertices.len());
            let parallelism = op.parallelism.unwrap_or(p.parallelism);
            let part = partitioning(op, vertices[input].parallelism, parallelism, p.max_parallelism);
            vertices.push(Vertex {
                name: op.name.clone(),
                kind: VertexKind::Operator(i),
                parallelism,
                input: Some((input, part)),
                consumers: Vec::new(),
                disable_chaining: op.disable_chaining,
                side_of: None,
            });
        }
        for (name, s) in &p.sinks {
            let input = index(&by_name, &p.sink_input(name, s).expect("validated"));
            let side_of = p.dead_letter_of(name).map(|_| input);
            let parallelism = s.parallelism.unwrap_or(vertices[input].parallelism);
            let part = if parallelism == vertices[input].parallelism { Partitioning::Forward } else { Partitioning::Rebalance };
            vertices.push(Vertex {
                name: name.clone(),
                kind: VertexKind::Sink(s.clone()),
                parallelism,
                input: Some((input, part)),
                consumers: Vec::new(),
                disable_chaining: false,
                side_of,
            });
        }
        for v in 0..vertices.len() {
            if let Some((u, _)) = vertices[v].input
                && vertices[v].side_of.is_none()
            {
                vertices[u].consumers.push(v);
            }
        }
        let chained = |vs: &[Vertex], v: usize| -> bool {
            let Some((u, part)) = vs[v].input else { return false };
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
                let input = match head.input {
                    Some((u, part)) => format!(" <- {} [{}]", self.vertices[u].name, part_name(part)),
                    None => String::new(),
                };
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
