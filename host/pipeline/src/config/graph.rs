//! The job graph as the file declares it: inputs, names, parallelism and
//! dead-letter sinks, checked once every section is parsed.
//!
//! An operator or a sink takes one input (`input`, or the default: the
//! operator above, the only source) or several (`inputs`, fan-in). Inputs
//! may name a source or operator anywhere in the file, so the graph is
//! checked for cycles here, each reported once with its loop named.

use super::{check_name, ConfigError, PartitionKind, Pipeline, SinkConfig, MAX_PARALLELISM};
use std::collections::{BTreeMap, BTreeSet};

impl Pipeline {
    pub(super) fn check_graph(&self, errors: &mut Vec<ConfigError>, declared: &BTreeSet<String>, declared_sources: usize, declared_sinks: usize) {
        // Something that is declared but invalid was reported already.
        let broken = |name: &str| {
            declared.contains(name) && !self.sources.contains_key(name) && !self.operators.iter().any(|o| o.name == name) && !self.sinks.contains_key(name)
        };
        if declared_sources == 0 {
            errors.push(ConfigError { path: "sources".into(), message: "a pipeline needs at least one source, e.g. [sources.events] type = \"generator\"".into() });
        }
        if declared_sinks == 0 {
            errors.push(ConfigError { path: "sinks".into(), message: "a pipeline needs at least one sink, e.g. [sinks.out] type = \"stdout\"".into() });
        }
        self.check_names_and_parallelism(errors);
        let mut names = BTreeSet::new();
        for n in self.sources.keys() {
            names.insert(n.clone());
        }
        for op in &self.operators {
            if !names.insert(op.name.clone()) {
                errors.push(ConfigError { path: format!("{}.name", op.path()), message: format!("{:?} is already used by another source or operator", op.name) });
            }
        }
        for n in self.sinks.keys() {
            if names.contains(n) {
                errors.push(ConfigError { path: format!("sinks.{n}"), message: format!("{n:?} is already used by a source or operator") });
            }
        }
        // Inputs may name any source or operator, in any order (fan-in
        // needs names defined further down); cycles are found afterwards.
        let parallelism: BTreeMap<&str, u32> = self
            .sources
            .iter()
            .map(|(n, s)| (n.as_str(), s.parallelism.unwrap_or(1)))
            .chain(self.operators.iter().map(|o| (o.name.as_str(), o.parallelism.unwrap_or(self.parallelism))))
            .collect();
        let mut edges: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, op) in self.operators.iter().enumerate() {
            let par = op.parallelism.unwrap_or(self.parallelism);
            let key = format!("{}.{}", op.path(), input_key(op.inputs.is_some()));
            match self.operator_inputs(i) {
                Ok(inputs) => {
                    self.check_inputs(errors, &key, &inputs, &parallelism, broken);
                    for input in &inputs {
                        if op.partition == Some(PartitionKind::Forward)
                            && let Some(&from) = parallelism.get(input.as_str())
                            && from != par
                        {
                            errors.push(ConfigError {
                                path: format!("{}.partition", op.path()),
                                message: format!("\"forward\" needs equal parallelism, but input {input:?} runs at {from} and this operator at {par}; use \"rebalance\" or \"hash\""),
                            });
                        }
                    }
                    // A second operator of the same name was reported
                    // above; its edges would only add a false cycle.
                    edges.entry(&op.name).or_insert(inputs);
                }
                Err(_) if declared_sources > self.sources.len() => {}
                Err(m) => errors.push(ConfigError { path: key, message: m }),
            }
            if op.partition == Some(PartitionKind::Hash) && par > self.max_parallelism {
                errors.push(ConfigError { path: format!("{}.parallelism", op.path()), message: format!("{par} is above max-parallelism ({})", self.max_parallelism) });
            }
        }
        self.check_cycles(errors, &edges);
        for (n, sink) in &self.sinks {
            let key = format!("sinks.{n}.{}", input_key(sink.inputs.is_some()));
            match self.sink_inputs(n, sink) {
                Ok(inputs) => self.check_inputs(errors, &key, &inputs, &parallelism, broken),
                Err(_) if declared_sources > self.sources.len() => {}
                Err(m) => errors.push(ConfigError { path: key, message: m }),
            }
        }
    }

    /// Each input names a source or an operator, and only once.
    fn check_inputs(&self, errors: &mut Vec<ConfigError>, key: &str, inputs: &[String], known: &BTreeMap<&str, u32>, broken: impl Fn(&str) -> bool) {
        let mut seen = BTreeSet::new();
        for input in inputs {
            if !seen.insert(input.as_str()) {
                errors.push(ConfigError { path: key.to_owned(), message: format!("{input:?} is listed twice; each input is named once") });
            } else if !known.contains_key(input.as_str()) && !broken(input) {
                let what = if self.sinks.contains_key(input) { " (it is a sink, which feeds nothing)" } else { "" };
                errors.push(ConfigError { path: key.to_owned(), message: format!("{input:?} is not a source or an operator{what}") });
            }
        }
    }

    /// Reports every cycle among the operators' inputs once, at the
    /// operator whose input closes it, with the whole loop named.
    fn check_cycles(&self, errors: &mut Vec<ConfigError>, edges: &BTreeMap<&str, Vec<String>>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark: BTreeMap<&str, Mark> = edges.keys().map(|n| (*n, Mark::New)).collect();
        let by_name: BTreeMap<&str, &super::OperatorConfig> = self.operators.iter().map(|o| (o.name.as_str(), o)).collect();
        for op in &self.operators {
            if mark.get(op.name.as_str()) != Some(&Mark::New) {
                continue;
            }
            // Depth first without recursion (a file may chain thousands of
            // operators): the path from the root, each with its next input.
            let mut path: Vec<(&str, usize)> = vec![(op.name.as_str(), 0)];
            mark.insert(&op.name, Mark::Open);
            while let Some(top) = path.last_mut() {
                let node = top.0;
                let Some(input) = edges[node].get(top.1) else {
                    mark.insert(node, Mark::Done);
                    path.pop();
                    continue;
                };
                top.1 += 1;
                match mark.get(input.as_str()) {
                    Some(Mark::New) => {
                        let input = *edges.get_key_value(input.as_str()).expect("marked").0;
                        mark.insert(input, Mark::Open);
                        path.push((input, 0));
                    }
                    Some(Mark::Open) => {
                        // `node` reads from `input`, which is upstream on the path: a loop.
                        let from = path.iter().position(|(n, _)| *n == input.as_str()).expect("open nodes are on the path");
                        let mut names: Vec<String> = path[from..].iter().map(|(n, _)| format!("`{n}`")).collect();
                        names.reverse();
                        names.insert(0, format!("`{input}`"));
                        let o = by_name[node];
                        errors.push(ConfigError {
                            path: format!("{}.{}", o.path(), input_key(o.inputs.is_some())),
                            message: format!(
                                "{input:?} is downstream of this operator, which makes a cycle: {}; a pipeline is a graph without cycles (records would loop forever)",
                                names.join(" -> ")
                            ),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every name becomes part of a file name (checkpoint state files, the
    /// checkpoint directory, the control socket) and every parallelism a
    /// number of threads: both are checked here, so that a file `weir check`
    /// accepts never fails later for either.
    fn check_names_and_parallelism(&self, errors: &mut Vec<ConfigError>) {
        let mut check = |path: String, name: &str, parallelism: Option<u32>| {
            if let Err(m) = check_name(name) {
                errors.push(ConfigError { path: path.clone(), message: m });
            }
            if let Some(p) = parallelism.filter(|&p| p > MAX_PARALLELISM) {
                errors.push(ConfigError {
                    path: format!("{path}.parallelism"),
                    message: format!("{p} is above the most weir runs, {MAX_PARALLELISM} subtasks per vertex (each is a thread)"),
                });
            }
        };
        for (n, s) in &self.sources {
            check(format!("sources.{n}"), n, s.parallelism);
        }
        for op in &self.operators {
            check(format!("{}.name", op.path()), &op.name, op.parallelism);
        }
        for (n, s) in &self.sinks {
            check(format!("sinks.{n}"), n, s.parallelism);
        }
        if self.parallelism > MAX_PARALLELISM {
            errors.push(ConfigError {
                path: "parallelism".into(),
                message: format!("{} is above the most weir runs, {MAX_PARALLELISM} subtasks per vertex (each is a thread)", self.parallelism),
            });
        }
    }

    /// The inputs of operator `i`: `inputs`, else `input`, else the
    /// previous operator, else the only source.
    pub fn operator_inputs(&self, i: usize) -> Result<Vec<String>, String> {
        let op = &self.operators[i];
        explicit_inputs(&op.input, &op.inputs).unwrap_or_else(|| if i > 0 { Ok(vec![self.operators[i - 1].name.clone()]) } else { self.only_source().map(|s| vec![s]) })
    }

    /// What is valid but probably not what was meant, for `weir check`:
    /// an operator with several inputs at parallelism above 1 that does not
    /// partition them by key (`partition = "hash"`). Its inputs' records
    /// with the same key then reach different subtasks: right for a union
    /// of stateless records, wrong for a join or any keyed state, whose
    /// first key owned by another subtask stops the run. The host cannot
    /// tell from the component which one it is, so this is a warning.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        for (i, op) in self.operators.iter().enumerate() {
            let par = op.parallelism.unwrap_or(self.parallelism);
            let Ok(inputs) = self.operator_inputs(i) else { continue };
            if inputs.len() < 2 || par < 2 || op.partition == Some(PartitionKind::Hash) || op.async_io.is_some() {
                continue;
            }
            let how = match op.partition {
                Some(PartitionKind::Broadcast) => "\"broadcast\" sends every record to every subtask",
                Some(PartitionKind::Rebalance) => "\"rebalance\" spreads each input round robin",
                _ => "the default partitioning (forward at equal parallelism, else rebalance) ignores keys",
            };
            out.push(ConfigError {
                path: format!("{}.partition", op.path()),
                message: format!(
                    "`{}` takes {} inputs ({}) at parallelism {par}, and {how}: records with the same key from different inputs reach \
                     different subtasks. If the plugin keeps keyed state (a join does), set partition = \"hash\" so every input's key \
                     meets in one subtask; a union of stateless records needs nothing",
                    op.name,
                    inputs.len(),
                    inputs.join(", ")
                ),
            });
        }
        out
    }

    /// The async operator whose dead letters sink `name` receives, if any.
    pub fn dead_letter_of(&self, name: &str) -> Option<usize> {
        self.operators.iter().position(|o| o.async_io.as_ref().and_then(|a| a.dead_letter.as_deref()) == Some(name))
    }

    /// `[cluster]`: one source (its partitions are the lanes), checkpoints
    /// (lanes move between members through them), and sinks that can run
    /// one instance per lane.
    pub(super) fn check_cluster(&self, errors: &mut Vec<ConfigError>) {
        if self.sources.len() != 1 {
            errors.push(ConfigError {
                path: "cluster".into(),
                message: format!(
                    "a pipeline spread over a group reads one source, whose partitions are its lanes; this one has {}",
                    self.sources.len()
                ),
            });
        }
        if self.checkpoint.interval.is_none() {
            errors.push(ConfigError {
                path: "cluster".into(),
                message: "lanes move between the members through their checkpoints: [checkpoint] interval cannot be \"off\"".into(),
            });
        }
        if self.checkpoint.store.is_none() {
            errors.push(ConfigError {
                path: "cluster".into(),
                message: "lanes move between hosts through their checkpoints, which must be where every member reads them: \
                          set [checkpoint] store = \"s3://BUCKET/PREFIX\" (a local checkpoint.dir is one host's)"
                    .into(),
            });
        }
        for (name, sink) in &self.sinks {
            if !sink.spec.per_lane() {
                errors.push(ConfigError {
                    path: format!("sinks.{name}"),
                    message: format!(
                        "a `{}` sink cannot yet run one instance per lane of a pipeline spread over a group (what it publishes \
                         would not be kept apart per lane); in a [cluster] pipeline use a postgres or discard sink",
                        sink.spec.type_name()
                    ),
                });
            }
        }
    }

    pub(super) fn check_dead_letters(&self, errors: &mut Vec<ConfigError>) {
        // Every slot is a plugin instance from the engine's pool (1000
        // instances per host); leave room for the batch operators and for
        // validating hot-reloaded versions.
        let mut slots = 0;
        for op in &self.operators {
            let Some(a) = &op.async_io else { continue };
            slots += a.capacity * op.parallelism.unwrap_or(self.parallelism) as usize;
            if slots > weir_async::config::MAX_SLOTS_PER_PIPELINE {
                errors.push(ConfigError {
                    path: format!("{}.async.capacity", op.path()),
                    message: format!(
                        "async operators need {slots} plugin instances (capacity x parallelism, summed), more than the {} a pipeline may have; lower capacity or parallelism",
                        weir_async::config::MAX_SLOTS_PER_PIPELINE
                    ),
                });
                break;
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for op in &self.operators {
            let Some(d) = op.async_io.as_ref().and_then(|a| a.dead_letter.as_deref()) else { continue };
            if let Some(first) = seen.insert(d, &op.name) {
                errors.push(ConfigError {
                    path: format!("{}.async.dead-letter", op.path()),
                    message: format!("sink {d:?} already receives the dead letters of `{first}`; give each operator its own dead-letter sink"),
                });
            }
            let Some(sink) = self.sinks.get(d) else { continue };
            if sink.inputs.is_some() || sink.input.as_ref().is_some_and(|input| *input != op.name) {
                errors.push(ConfigError {
                    path: format!("sinks.{d}.input"),
                    message: format!("this sink receives the dead letters of `{}` (its async.dead-letter), so it takes no other input; remove `input` and `inputs`", op.name),
                });
            }
            let par = op.parallelism.unwrap_or(self.parallelism);
            if sink.parallelism.is_some_and(|p| p != par) {
                errors.push(ConfigError {
                    path: format!("sinks.{d}.parallelism"),
                    message: format!("a dead-letter sink runs inside its operator's subtasks, at its parallelism ({par}); remove `parallelism`"),
                });
            }
        }
    }

    /// The inputs of sink `name`: the operator it is the dead-letter sink
    /// of, else `inputs` or `input`, else the last operator, else the only
    /// source.
    pub fn sink_inputs(&self, name: &str, sink: &SinkConfig) -> Result<Vec<String>, String> {
        if let Some(i) = self.dead_letter_of(name) {
            return Ok(vec![self.operators[i].name.clone()]);
        }
        explicit_inputs(&sink.input, &sink.inputs).unwrap_or_else(|| match self.operators.last() {
            Some(op) => Ok(vec![op.name.clone()]),
            None => self.only_source().map(|s| vec![s]),
        })
    }

    fn only_source(&self) -> Result<String, String> {
        let mut it = self.sources.keys();
        match (it.next(), it.next()) {
            (Some(s), None) => Ok(s.clone()),
            (None, _) => Err("there is no source to read from".into()),
            (Some(_), Some(_)) => Err("the pipeline has several sources; say which one feeds this with `input = \"NAME\"`".into()),
        }
    }
}


/// `input = "x"` or `inputs = [..]` as written, if either is; both is an error.
fn explicit_inputs(input: &Option<String>, inputs: &Option<Vec<String>>) -> Option<Result<Vec<String>, String>> {
    match (input, inputs) {
        (Some(_), Some(_)) => Some(Err("both `input` and `inputs` are set; write `inputs = [..]` alone to name several inputs".into())),
        (None, Some(list)) if list.is_empty() => Some(Err("`inputs` is empty; name at least one source or operator".into())),
        (None, Some(list)) => Some(Ok(list.clone())),
        (Some(one), None) => Some(Ok(vec![one.clone()])),
        (None, None) => None,
    }
}

/// The key an input error is reported at.
fn input_key(several: bool) -> &'static str {
    if several { "inputs" } else { "input" }
}
