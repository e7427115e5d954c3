//! Pipeline files: typed, validated before anything runs.
//!
//! Parsing is two-phase so that *every* problem is reported at once, each
//! with its path in the file: the TOML is read into a table, then each
//! source, operator and sink is deserialized on its own (unknown keys are
//! errors), then cross-references are checked (inputs, names, parallelism,
//! plugin files). [`Pipeline::load`] does no other I/O than reading the file
//! and listing the plugin directory; loading plugins and opening connectors
//! happen in `run`.
//!
//! One module per part of the file: [`sections`] (`[network]`, `[limits]`,
//! `[checkpoint]`, `[state]`, `reload`), [`operators`], [`connectors`]
//! (sources, sinks and connections, through the connector [`Registry`]) and
//! [`graph`] (inputs and names across sections).

mod connectors;
mod graph;
mod operators;
mod sections;

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_connector::registry::Registry;

pub use connectors::{SinkConfig, SourceConfig};
pub use operators::{OnError, OperatorConfig, PartitionKind};
pub use weir_wasm::{find_plugin, list_plugins};
pub use sections::{CheckpointConfig, CheckpointMode, CheckpointObjects, DEFAULT_CLAIM_TIMEOUT, LimitsConfig, NetworkConfig, ReloadConfig, ReloadPolicy, StateBackendKind, StateConfig};

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the file (`operators[1].plugin`), empty for the whole file.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(f, "{} has {n} problem{}:", self.file.display(), if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            // Secrets never reach a message (the log, `last_error`).
            let message = weir_connector::secrets::redact_at(&e.path, &e.message);
            if e.path.is_empty() {
                writeln!(f, "  {}: {message}", self.file.display())?;
            } else {
                writeln!(f, "  {}: {}: {message}", self.file.display(), e.path)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub use weir_connector::config::{ByteSize, DurationStr};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPipeline {
    name: Option<String>,
    plugin_dir: Option<PathBuf>,
    parallelism: Option<u32>,
    max_parallelism: Option<u32>,
    idle_timeout: Option<DurationStr>,
    #[serde(default)]
    network: Option<toml::Value>,
    #[serde(default)]
    limits: Option<toml::Value>,
    #[serde(default)]
    checkpoint: Option<toml::Value>,
    #[serde(default)]
    state: Option<toml::Value>,
    #[serde(default)]
    reload: Option<toml::Value>,
    #[serde(default)]
    cluster: Option<toml::Value>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Table>,
    #[serde(default)]
    operators: Vec<toml::Value>,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Table>,
    #[serde(default)]
    connections: BTreeMap<String, toml::Table>,
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it was read from.
    pub file: PathBuf,
    /// Pipeline name (`name`, default: the file stem).
    pub name: String,
    /// Directory plugins are loaded from.
    pub plugin_dir: PathBuf,
    /// Default operator parallelism.
    pub parallelism: u32,
    /// Number of key groups (upper bound for keyed parallelism).
    pub max_parallelism: u32,
    /// An input that sends no records for this long is left out of its
    /// task's watermark until it sends again (a source's own
    /// `idle-timeout` overrides it); `None`: inputs are never idle.
    pub idle_timeout: Option<std::time::Duration>,
    /// Network settings.
    pub network: NetworkConfig,
    /// Default limits.
    pub limits: weir_wasm::Limits,
    /// Checkpointing.
    pub checkpoint: CheckpointConfig,
    /// Keyed state.
    pub state: StateConfig,
    /// Hot reload of plugins.
    pub reload: ReloadConfig,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Operators in file order.
    pub operators: Vec<OperatorConfig>,
    /// Plugin file of each operator (same order).
    pub plugin_files: Vec<PathBuf>,
    /// Sinks by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[connections.NAME]`: external systems async operators may use.
    pub connections: BTreeMap<String, weir_async::ConnectionConfig>,
    /// `[cluster]`: the pipeline is spread over the members of a group.
    pub cluster: Option<weir_connector::cluster::GroupConfig>,
    /// Set when this is one lane of a pipeline spread over a group (read
    /// with [`LoadOptions::lane`]): its name is `NAME.lane-N`, and it runs
    /// at parallelism 1 over the source's partition N.
    pub lane: Option<weir_connector::cluster::Lane>,
}

/// What a pipeline file is read with: the connectors it may use, and
/// settings that override the file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The sources and sinks a `type` may name (`weir_connectors::builtin()`).
    pub registry: Arc<Registry>,
    /// Plugin directory to use instead of the file's `plugin-dir`.
    pub plugin_dir: Option<PathBuf>,
    /// Read the file as this lane of a pipeline spread over a group.
    pub lane: Option<weir_connector::cluster::Lane>,
}

impl LoadOptions {
    /// Reads pipelines with the connectors of `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry, plugin_dir: None, lane: None }
    }

    /// Reads the file as `lane` of a pipeline with `[cluster]`: named
    /// `NAME.lane-N` (its checkpoints, claim, control socket and sinks'
    /// progress are the lane's own), everything at parallelism 1.
    pub fn lane(mut self, lane: weir_connector::cluster::Lane) -> Self {
        self.lane = Some(lane);
        self
    }

    /// Loads plugins from `dir` instead of the file's `plugin-dir`.
    pub fn plugin_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.plugin_dir = dir;
        self
    }
}

pub(crate) fn take_str(table: &mut toml::Table, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    match table.remove(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(ConfigError { path: format!("{path}.{key}"), message: format!("expected a string, found {}", other.type_str()) });
            None
        }
    }
}

/// The most subtasks of one vertex (`parallelism`): each is a thread.
pub const MAX_PARALLELISM: u32 = 1024;

/// The longest name of a pipeline, source, operator, sink or plugin.
pub const MAX_NAME_LEN: usize = 100;

/// The one rule for the names in a pipeline file (the pipeline's, every
/// source's, operator's and sink's, and a plugin's): they become parts of
/// file names, so 1 to 100 of letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit (no `/`, no `..`, no hidden files).
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{name:?} is not a valid name: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit (names become parts of file names)"
        ));
    }
    Ok(())
}

pub(crate) fn take_u32(table: &mut toml::Table, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<u32> {
    match table.remove(key) {
        None => None,
        Some(toml::Value::Integer(n)) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        Some(other) => {
            errors.push(ConfigError { path: format!("{path}.{key}"), message: format!("expected a positive integer, found {other}") });
            None
        }
    }
}

pub(crate) fn typed<T: serde::de::DeserializeOwned>(value: toml::Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    match value.try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(ConfigError { path: path.to_owned(), message: e.message().trim().to_owned() });
            None
        }
    }
}

pub(crate) fn push_validation(errors: &mut Vec<ConfigError>, path: &str, found: Vec<(String, String)>) {
    for (field, message) in found {
        errors.push(ConfigError { path: format!("{path}.{field}"), message });
    }
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(file: &Path, options: &LoadOptions) -> Result<Self, ConfigErrors> {
        let fail = |errors| ConfigErrors { file: file.to_owned(), errors };
        let text = std::fs::read_to_string(file).map_err(|e| {
            fail(vec![ConfigError { path: String::new(), message: format!("cannot read the pipeline file: {e}") }])
        })?;
        Self::parse(file, &text, options).map_err(fail)
    }

    /// Validates pipeline text as if read from `file` (relative paths resolve against its directory).
    pub fn parse(file: &Path, text: &str, options: &LoadOptions) -> Result<Self, Vec<ConfigError>> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            // By position and key: the toml crate's own message quotes the
            // source line, which may hold a secret.
            vec![ConfigError { path: String::new(), message: format!("not valid TOML at {}", weir_connector::secrets::toml_error(&e, text)) }]
        })?;
        let mut errors = Vec::new();
        let Some(raw) = raw_pipeline(table, &mut errors) else {
            return Err(errors);
        };
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = raw.name.clone().unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into()));
        if let Err(m) = check_name(&name) {
            errors.push(ConfigError { path: "name".into(), message: m });
        }
        let cluster = sections::parse_cluster(raw.cluster.clone(), &mut errors);
        let name = match options.lane {
            Some(lane) => format!("{name}.lane-{}", lane.index),
            None => name,
        };
        let plugin_dir = options.plugin_dir.clone().unwrap_or_else(|| base.join(raw.plugin_dir.clone().unwrap_or_else(|| "plugins".into())));
        let parallelism = raw.parallelism.unwrap_or(1);
        let max_parallelism = raw.max_parallelism.unwrap_or(128);
        if parallelism == 0 {
            errors.push(ConfigError { path: "parallelism".into(), message: "must be at least 1".into() });
        }
        if max_parallelism == 0 || max_parallelism > 32768 {
            errors.push(ConfigError { path: "max-parallelism".into(), message: "must be between 1 and 32768".into() });
        }
        let idle_timeout = raw.idle_timeout.map(|d| d.0);
        if idle_timeout.is_some_and(|d| d.is_zero()) {
            errors.push(ConfigError { path: "idle-timeout".into(), message: "must be more than 0; leave it out to never treat an input as idle".into() });
        }
        let network = sections::parse_network(raw.network, &mut errors);
        let limits_cfg: LimitsConfig = raw.limits.and_then(|v| typed(v, "limits", &mut errors)).unwrap_or_default();
        let limits = limits_cfg.or(weir_wasm::Limits::default());
        let checkpoint = sections::parse_checkpoint(raw.checkpoint, &base, &mut errors);
        let state = sections::parse_state(raw.state, &base, &mut errors);
        let reload = sections::parse_reload(raw.reload, checkpoint.interval.is_some(), &mut errors);

        // Names declared in the file, valid or not: a section with its own
        // error must not also be reported as missing by the graph checks.
        let mut declared: BTreeSet<String> = raw.sources.keys().chain(raw.sinks.keys()).cloned().collect();
        for v in &raw.operators {
            if let Some(n) = v.get("name").and_then(toml::Value::as_str) {
                declared.insert(n.to_owned());
            }
        }
        let (declared_sources, declared_sinks) = (raw.sources.len(), raw.sinks.len());
        let scope = connectors::Scope { registry: &options.registry, pipeline: &name, base: &base, checkpointing: checkpoint.interval.is_some(), plugin_dir: &plugin_dir };
        let sources = connectors::parse_sources(raw.sources, &scope, &mut errors);
        let declared_connections: Vec<String> = raw.connections.keys().cloned().collect();
        let connections = connectors::parse_connections(raw.connections, &base, &mut errors);
        let declared_sink_names: Vec<String> = raw.sinks.keys().cloned().collect();
        let (operators, plugin_files) =
            operators::parse_operators(raw.operators, &base, &plugin_dir, &connections, &declared_connections, &declared_sink_names, &mut errors);
        let sinks = connectors::parse_sinks(raw.sinks, &scope, &mut errors);

        let mut p = Pipeline {
            file: file.to_owned(),
            name,
            plugin_dir,
            parallelism,
            max_parallelism,
            idle_timeout,
            network,
            limits,
            checkpoint,
            state,
            reload,
            sources,
            operators,
            plugin_files,
            sinks,
            connections,
            cluster,
            lane: options.lane,
        };
        if p.cluster.is_some() {
            p.check_cluster(&mut errors);
        }
        if p.lane.is_some() {
            // A lane is the whole graph over one partition, on one thread.
            p.parallelism = 1;
            for s in p.sources.values_mut() {
                s.parallelism = None;
            }
            for o in &mut p.operators {
                o.parallelism = None;
            }
            for s in p.sinks.values_mut() {
                s.parallelism = None;
            }
        }
        p.check_dead_letters(&mut errors);
        p.check_graph(&mut errors, &declared, declared_sources, declared_sinks);
        if errors.is_empty() { Ok(p) } else { Err(errors) }
    }
}

/// One table of a configuration file and the keys it accepts, as the
/// configuration reference in `docs/` names it (`network`,
/// `sources.kafka`, `sinks.postgres.batch`, `operators.async.retry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSection {
    /// The section's name in the reference.
    pub name: String,
    /// The keys it accepts, read from the config types.
    pub keys: Vec<&'static str>,
}

/// Every section of a pipeline file and the keys it accepts, read from the
/// config types (and, for sources and sinks, from the connectors of
/// `registry`): what the configuration reference must document, no more
/// and no less.
pub fn config_sections(registry: &Registry) -> Vec<ConfigSection> {
    use weir_connector::registry::keys_of;
    let section = |name: &str, keys: Vec<&'static str>| ConfigSection { name: name.to_owned(), keys };
    let mut all = vec![
        section("pipeline", keys_of::<RawPipeline>()),
        section("network", keys_of::<NetworkConfig>()),
        section("limits", keys_of::<LimitsConfig>()),
        section("checkpoint", sections::checkpoint_keys()),
        section("checkpoint.s3", sections::checkpoint_s3_keys()),
        section("state", sections::state_keys()),
        section("reload", sections::reload_keys()),
        section("cluster", sections::cluster_keys()),
        section("operators", keys_of::<OperatorConfig>()),
        section("operators.async", keys_of::<weir_async::AsyncConfig>()),
        section("operators.async.retry", keys_of::<weir_async::config::RetryConfig>()),
        section("sources", connectors::SOURCE_KEYS.to_vec()),
        section("sinks", connectors::SINK_KEYS.to_vec()),
        section("connections", vec!["type"]),
        section("connections.postgres", keys_of::<weir_async::config::PostgresConnection>()),
        section("connections.postgres-kv", weir_async::config::KvTable::KEYS.to_vec()),
    ];
    for ty in registry.source_types() {
        let f = registry.source(ty).expect("a registered type");
        all.push(section(&format!("sources.{ty}"), f.keys()));
        for (key, keys) in f.nested_sections() {
            all.push(section(&format!("sources.{ty}.{key}"), keys));
        }
    }
    for ty in registry.sink_types() {
        let f = registry.sink(ty).expect("a registered type");
        all.push(section(&format!("sinks.{ty}"), f.keys()));
        for (key, keys) in f.nested_sections() {
            all.push(section(&format!("sinks.{ty}.{key}"), keys));
        }
    }
    all
}

/// The top level of the file: unknown keys reported (with the list of
/// known ones), the sections kept for their own parsers.
fn raw_pipeline(mut table: toml::Table, errors: &mut Vec<ConfigError>) -> Option<RawPipeline> {
    let known = weir_connector::registry::keys_of::<RawPipeline>();
    let unknown: Vec<String> = table.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect();
    for k in unknown {
        table.remove(&k);
        errors.push(ConfigError { path: k, message: format!("unknown key; expected one of: {}", known.join(", ")) });
    }
    typed::<RawPipeline>(toml::Value::Table(table), "", errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn test_registry() -> Arc<Registry> {
        weir_connectors::builtin()
    }

    fn parse(text: &str) -> Result<Pipeline, Vec<ConfigError>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("json_filter.wasm"), b"x").unwrap();
        Pipeline::parse(&dir.path().join("p.toml"), text, &LoadOptions::new(test_registry()).plugin_dir(Some(dir.path().to_owned())))
    }

    #[test]
    fn a_minimal_pipeline_gets_defaults() {
        let p = parse(
            r#"
            [sources.gen]
            type = "generator"
            count = 10
            [[operators]]
            name = "parse"
            plugin = "json-filter"
            [sinks.out]
            type = "stdout"
            "#,
        )
        .unwrap();
        assert_eq!(p.name, "p");
        assert_eq!(p.operator_inputs(0).unwrap(), ["gen"]);
        assert_eq!(p.sink_inputs("out", &p.sinks["out"]).unwrap(), ["parse"]);
        assert_eq!(p.network.buffer_size, ByteSize(32768));
        assert!(p.plugin_files[0].ends_with("json_filter.wasm"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let errors = parse(
            r#"
            colour = "blue"
            [sources.gen]
            type = "generator"
            rate = -1.0
            [[operators]]
            name = "parse"
            plugin = "nope"
            [[operators]]
            name = "parse"
            plugin = "json-filter"
            paralelism = 2
            [[operators]]
            name = "sum"
            plugin = "json-filter"
            input = "later"
            [sinks.out]
            type = "s3"
            "#,
        )
        .unwrap_err();
        assert!(errors.iter().any(|e| e.path == "colour"), "{errors:#?}");
        assert!(errors.iter().any(|e| e.path == "operators[1]" && e.message.contains("paralelism")), "{errors:#?}");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"sources.gen.rate"), "{errors:#?}");
        assert!(paths.contains(&"operators[0].plugin"), "{errors:#?}");
        assert!(paths.contains(&"operators[1]"), "{errors:#?}");
        assert!(paths.contains(&"operators[2].input"), "{errors:#?}");
        assert!(paths.contains(&"sinks.out.type"), "{errors:#?}");
        let plugin = errors.iter().find(|e| e.path == "operators[0].plugin").unwrap();
        assert!(plugin.message.contains("available: json-filter"), "{}", plugin.message);
    }

    #[test]
    fn forward_needs_equal_parallelism_and_names_must_be_unique() {
        let errors = parse(
            r#"
            [sources.gen]
            type = "generator"
            [[operators]]
            name = "a"
            plugin = "json-filter"
            parallelism = 2
            partition = "forward"
            [[operators]]
            name = "a"
            plugin = "json-filter"
            [sinks.out]
            type = "discard"
            "#,
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["operators[1].name", "operators[0].partition"], "{errors:#?}");
    }

    #[test]
    fn reload_policy_as_a_string_or_a_table() {
        let base = "[sources.gen]\ntype = \"generator\"\n[sinks.out]\ntype = \"discard\"\n";
        let p = parse(base).unwrap();
        assert_eq!(p.reload, ReloadConfig::default());
        let p = parse(&format!("reload = \"manual\"\n{base}")).unwrap();
        assert_eq!(p.reload.policy, ReloadPolicy::Manual);
        let p = parse(&format!("[reload]\npolicy = \"on-checkpoint\"\nmax-failures = 2\nprobation-batches = 10\ndebounce = \"1s\"\n{base}")).unwrap();
        assert_eq!(p.reload, ReloadConfig { policy: ReloadPolicy::OnCheckpoint, debounce: Duration::from_secs(1), probation_batches: 10, max_failures: 2 });
        let errors = parse(&format!("reload = \"sometimes\"\n[checkpoint]\ninterval = \"off\"\n{base}")).unwrap_err();
        assert_eq!(errors[0].path, "reload", "{errors:#?}");
        let errors = parse(&format!("reload = \"on-checkpoint\"\n[checkpoint]\ninterval = \"off\"\n{base}")).unwrap_err();
        assert!(errors[0].message.contains("checkpoints are off"), "{errors:#?}");
        let errors = parse(&format!("[reload]\npolicy = \"auto\"\nprobation = 3\n{base}")).unwrap_err();
        assert!(errors[0].path == "reload" && errors[0].message.contains("probation"), "{errors:#?}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(ByteSize::parse("32KiB"), Some(ByteSize(32768)));
        assert_eq!(ByteSize::parse("1 MiB"), Some(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("12"), Some(ByteSize(12)));
        assert_eq!(ByteSize::parse("12 parsecs"), None);
        let p = parse(
            r#"
            [network]
            buffer-timeout = "0"
            buffer-size = "64KiB"
            [limits]
            call-timeout = "500ms"
            [sources.gen]
            type = "generator"
            [sinks.out]
            type = "discard"
            "#,
        )
        .unwrap();
        assert_eq!(p.network.buffer_timeout.0, Duration::ZERO);
        assert_eq!(p.limits.call_timeout, Duration::from_millis(500));
    }

    /// Issue 19: fan-in. Inputs may be named below; each edge is
    /// partitioned on its own; two hash edges route a key alike.
    #[test]
    fn an_operator_with_two_inputs_gets_an_edge_from_each() {
        let p = parse(
            r#"
            parallelism = 2
            idle-timeout = "5s"
            [sources.a]
            type = "generator"
            [sources.b]
            type = "generator"
            parallelism = 3
            idle-timeout = "1m"
            [[operators]]
            name = "sum"
            plugin = "json-filter"
            inputs = ["b", "parse"]
            partition = "hash"
            [[operators]]
            name = "parse"
            plugin = "json-filter"
            input = "a"
            [sinks.out]
            type = "stdout"
            inputs = ["sum", "a"]
            "#,
        )
        .unwrap();
        assert_eq!(p.operator_inputs(0).unwrap(), ["b", "parse"]);
        assert_eq!(p.idle_timeout, Some(Duration::from_secs(5)));
        let plan = crate::plan::Plan::new(&p);
        let v = |name: &str| plan.vertices.iter().position(|x| x.name == name).unwrap();
        let sum = &plan.vertices[v("sum")];
        let hash = weir_network::Partitioning::Hash { max_parallelism: 128 };
        assert_eq!(sum.inputs, [(v("b"), hash), (v("parse"), hash)], "the same key-group routing on both edges");
        assert_eq!(plan.input_channels(v("sum")), [0..3, 3..5], "b's 3 subtasks, then parse's 2");
        assert_eq!(sum.idle_timeout, Some(Duration::from_secs(60)), "the longest of the sources upstream");
        let out = &plan.vertices[v("out")];
        assert_eq!(out.parallelism, 2, "its first input's");
        assert_eq!(out.inputs, [(v("sum"), weir_network::Partitioning::Forward), (v("a"), weir_network::Partitioning::Rebalance)]);
        assert!(plan.chains.iter().all(|c| c.vertices[0] != v("out") || c.vertices.len() == 1), "a vertex with two inputs heads its own task");
        assert!(plan.chains.iter().any(|c| c.vertices == [v("out")]));
    }

    #[test]
    fn fan_in_mistakes_are_reported_with_their_node() {
        let errors = parse(
            r#"
            [sources.a]
            type = "generator"
            [[operators]]
            name = "x"
            plugin = "json-filter"
            inputs = ["a", "z"]
            [[operators]]
            name = "y"
            plugin = "json-filter"
            input = "x"
            [[operators]]
            name = "z"
            plugin = "json-filter"
            inputs = ["y", "y"]
            [[operators]]
            name = "w"
            plugin = "json-filter"
            inputs = []
            [sinks.out]
            type = "stdout"
            input = "w"
            inputs = ["out"]
            "#,
        )
        .unwrap_err();
        let found = |path: &str, text: &str| errors.iter().any(|e| e.path == path && e.message.contains(text));
        assert!(found("operators[2].inputs", "\"y\" is listed twice"), "{errors:#?}");
        assert!(found("operators[3].inputs", "`inputs` is empty"), "{errors:#?}");
        assert!(found("sinks.out.inputs", "both `input` and `inputs`"), "{errors:#?}");
        let cycles: Vec<_> = errors.iter().filter(|e| e.message.contains("cycle")).collect();
        assert_eq!(cycles.len(), 1, "{errors:#?}");
        assert_eq!(cycles[0].path, "operators[1].input", "reported at the operator that closes the loop");
        assert!(cycles[0].message.contains("`x` -> `y` -> `z` -> `x`"), "{errors:#?}");
        let errors = parse("[sources.a]\ntype = \"generator\"\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"a\", \"out\"]\n").unwrap_err();
        assert!(errors.iter().any(|e| e.path == "sinks.out.inputs" && e.message.contains("a sink, which feeds nothing")), "{errors:#?}");
    }
}
