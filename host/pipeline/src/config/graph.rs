//! The job graph as the file declares it: inputs, names, parallelism and
//! dead-letter sinks, checked once every section is parsed.

use super::{check_name, ConfigError, PartitionKind, Pipeline, SinkConfig, MAX_PARALLELISM};
use std::collections::{BTreeMap, BTreeSet};

impl Pipeline {
    pub(super) fn check_graph(&self, errors: &mut Vec<ConfigError>, declared: &BTreeSet<String>, declared_sources: usize, declared_sinks: usize) {
        // Something that is declared but invalid was reported already.
        let broken = |name: &str| declared.contains(name) && !self.sources.contains_key(name) && !self.operators.iter().any(|o| o.name == name);
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
        // Inputs must name something defined *before* (sources, or earlier
        // operators), which also rules out cycles.
        let mut defined: BTreeSet<&str> = self.sources.keys().map(String::as_str).collect();
        let mut parallelism: BTreeMap<&str, u32> = self.sources.iter().map(|(n, s)| (n.as_str(), s.parallelism.unwrap_or(1))).collect();
        for (i, op) in self.operators.iter().enumerate() {
            let par = op.parallelism.unwrap_or(self.parallelism);
            if op.partition == Some(PartitionKind::Forward)
                && let Some(&from) = self.operator_input(i).ok().and_then(|n| parallelism.get(n.as_str()))
                && from != par
            {
                errors.push(ConfigError {
                    path: format!("{}.partition", op.path()),
                    message: format!("\"forward\" needs equal parallelism, but the input runs at {from} and this operator at {par}; use \"rebalance\" or \"hash\""),
                });
            }
            parallelism.insert(&op.name, par);
            match self.operator_input(i) {
                Ok(input) if defined.contains(input.as_str()) || broken(&input) => {}
                Ok(input) => errors.push(ConfigError {
                    path: format!("{}.input", op.path()),
                    message: format!("{input:?} is not a source or an operator defined above this one"),
                }),
                Err(_) if declared_sources > self.sources.len() => {}
                Err(m) => errors.push(ConfigError { path: format!("{}.input", op.path()), message: m }),
            }
            defined.insert(&op.name);
            if op.partition == Some(PartitionKind::Hash) && par > self.max_parallelism {
                errors.push(ConfigError { path: format!("{}.parallelism", op.path()), message: format!("{par} is above max-parallelism ({})", self.max_parallelism) });
            }
        }
        for (n, sink) in &self.sinks {
            match self.sink_input(n, sink) {
                Ok(input) if defined.contains(input.as_str()) || broken(&input) => {}
                Ok(input) => errors.push(ConfigError { path: format!("sinks.{n}.input"), message: format!("{input:?} is not a source or operator") }),
                Err(_) if declared_sources > self.sources.len() => {}
                Err(m) => errors.push(ConfigError { path: format!("sinks.{n}.input"), message: m }),
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

    /// The input of operator `i`: explicit, else the previous operator, else the only source.
    pub fn operator_input(&self, i: usize) -> Result<String, String> {
        if let Some(input) = &self.operators[i].input {
            return Ok(input.clone());
        }
        if i > 0 {
            return Ok(self.operators[i - 1].name.clone());
        }
        self.only_source()
    }

    /// The async operator whose dead letters sink `name` receives, if any.
    pub fn dead_letter_of(&self, name: &str) -> Option<usize> {
        self.operators.iter().position(|o| o.async_io.as_ref().and_then(|a| a.dead_letter.as_deref()) == Some(name))
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
            if let Some(input) = &sink.input
                && *input != op.name
            {
                errors.push(ConfigError {
                    path: format!("sinks.{d}.input"),
                    message: format!("this sink receives the dead letters of `{}` (its async.dead-letter), so it takes no other input; remove `input`", op.name),
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

    /// The input of sink `name`: the operator it is the dead-letter sink
    /// of, else explicit, else the last operator, else the only source.
    pub fn sink_input(&self, name: &str, sink: &SinkConfig) -> Result<String, String> {
        if let Some(i) = self.dead_letter_of(name) {
            return Ok(self.operators[i].name.clone());
        }
        if let Some(input) = &sink.input {
            return Ok(input.clone());
        }
        if let Some(op) = self.operators.last() {
            return Ok(op.name.clone());
        }
        self.only_source()
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

