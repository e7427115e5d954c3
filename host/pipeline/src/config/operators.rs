//! `[[operators]]`: Wasm operators (batch or async), their plugin files,
//! partitioning and limits.

use super::{push_validation, typed, ConfigError, LimitsConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weir_wasm::{find_plugin, list_plugins, missing_plugin};

/// How an operator's input is spread over its subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionKind {
    /// Subtask i of the input feeds subtask i (equal parallelism; chained when possible).
    Forward,
    /// Round robin.
    Rebalance,
    /// By record key: each key always reaches the same subtask (needed for keyed state).
    Hash,
    /// Every record to every subtask.
    Broadcast,
}

/// What an operator does with a record its plugin rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Stop the pipeline, naming the record.
    #[default]
    Fail,
    /// Log and count the record, continue without it.
    Skip,
}

/// `[[operators]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OperatorConfig {
    /// Unique name in the pipeline.
    pub name: String,
    /// Plugin name: `NAME.wasm` (or `NAME` with `-` as `_`) in the plugin directory.
    pub plugin: String,
    /// Parallel instances (default: the pipeline's `parallelism`).
    pub parallelism: Option<u32>,
    /// Name of the source or operator feeding this one (default: the previous operator, or the only source).
    pub input: Option<String>,
    /// Several sources or operators feeding this one (fan-in); each edge
    /// is partitioned on its own by `partition`. Exclusive with `input`.
    pub inputs: Option<Vec<String>>,
    /// How each input is partitioned (default: forward at equal parallelism, else rebalance).
    pub partition: Option<PartitionKind>,
    /// Keep this operator in its own task even where it could be chained.
    #[serde(default)]
    pub disable_chaining: bool,
    /// What to do with records the plugin rejects.
    #[serde(default)]
    pub on_error: OnError,
    /// Limits for this operator's instances (default: the pipeline's `[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Directories (relative to the pipeline file) the plugin may read,
    /// seen by it under the same relative path. Plugins get no filesystem
    /// access otherwise.
    #[serde(default)]
    pub allow_read: Vec<String>,
    /// The plugin's own settings, handed to its `open` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
    /// Run the plugin (world `weir:plugin/async-operator`) in async I/O
    /// slots: capacity, ordering, timeout, retries, dead letters, grants.
    #[serde(default, rename = "async")]
    pub async_io: Option<weir_async::AsyncConfig>,
    /// Position in the file's `[[operators]]` list, for messages.
    #[serde(skip)]
    pub index: usize,
}

impl OperatorConfig {
    /// `operators[i]`: where this operator is in the file.
    pub fn path(&self) -> String {
        format!("operators[{}]", self.index)
    }
}

/// Every `[[operators]]` entry, checked, with the plugin file each one loads
/// (an empty path where the plugin is missing, which is reported).
pub(super) fn parse_operators(
    raw: Vec<toml::Value>,
    base: &Path,
    plugin_dir: &Path,
    connections: &BTreeMap<String, weir_async::ConnectionConfig>,
    declared_connections: &[String],
    declared_sinks: &[String],
    errors: &mut Vec<ConfigError>,
) -> (Vec<OperatorConfig>, Vec<PathBuf>) {
    let mut operators = Vec::new();
    let mut plugin_files = Vec::new();
    let available = list_plugins(plugin_dir);
    for (i, mut v) in raw.into_iter().enumerate() {
        let path = format!("operators[{i}]");
        // `async` on its own, so its errors carry its path.
        let async_table = v.as_table_mut().and_then(|t| t.remove("async"));
        let Some(mut op) = typed::<OperatorConfig>(v, &path, errors) else { continue };
        if let Some(a) = async_table {
            op.async_io = typed::<weir_async::AsyncConfig>(a, &format!("{path}.async"), errors);
            if op.async_io.is_none() {
                // Reported; keep the operator out of the run's checks.
                continue;
            }
        }
        op.index = i;
        for (j, dir) in op.allow_read.iter().enumerate() {
            if !base.join(dir).is_dir() {
                errors.push(ConfigError { path: format!("{path}.allow-read[{j}]"), message: format!("{} is not a directory", base.join(dir).display()) });
            }
        }
        if op.parallelism == Some(0) {
            errors.push(ConfigError { path: format!("{path}.parallelism"), message: "must be at least 1".into() });
        }
        if let Some(a) = &op.async_io {
            push_validation(errors, &format!("{path}.async"), a.validate());
            push_validation(errors, &format!("{path}.async"), a.check_refs(connections, declared_connections, declared_sinks));
            if !op.allow_read.is_empty() {
                errors.push(ConfigError { path: format!("{path}.allow-read"), message: "async operators get no filesystem access; remove allow-read".into() });
            }
        }
        // A plugin is a file *in* the plugin directory, named like
        // everything else: `../x` or an absolute path is refused.
        if let Err(m) = super::check_name(&op.plugin) {
            errors.push(ConfigError { path: format!("{path}.plugin"), message: format!("{m}; a plugin is named by its file in plugin-dir, without directory or `.wasm`") });
            plugin_files.push(PathBuf::new());
            operators.push(op);
            continue;
        }
        match find_plugin(plugin_dir, &op.plugin) {
            Some(f) => plugin_files.push(f),
            None => {
                errors.push(ConfigError { path: format!("{path}.plugin"), message: missing_plugin(&op.plugin, plugin_dir, &available) });
                plugin_files.push(PathBuf::new());
            }
        }
        operators.push(op);
    }
    (operators, plugin_files)
}
