//! Pipeline files: typed, validated before anything runs.
//!
//! Parsing is two-phase so that *every* problem is reported at once, each
//! with its path in the file: the TOML is read into a table, then each
//! source, operator and sink is deserialized on its own (unknown keys are
//! errors), then cross-references are checked (inputs, names, parallelism,
//! plugin files). [`Pipeline::load`] does no other I/O than reading the file
//! and listing the plugin directory; loading plugins and opening connectors
//! happen in `run`.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_connector_file::{FileSinkConfig, FileSourceConfig, StdoutSinkConfig};
use weir_connector_generator::GeneratorConfig;
use weir_connector_kafka::{KafkaSinkConfig, KafkaSourceConfig, sink::Delivery};
use weir_connector_postgres::PostgresSinkConfig;

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
            if e.path.is_empty() {
                writeln!(f, "  {}: {}", self.file.display(), e.message)?;
            } else {
                writeln!(f, "  {}: {}: {}", self.file.display(), e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub use weir_connector::config::{ByteSize, DurationStr};

/// `[network]`: how batches move between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NetworkConfig {
    /// Network buffer size: a buffer is sent when it holds this much.
    pub buffer_size: ByteSize,
    /// Longest time a record waits in a partly filled buffer (`0`: no waiting).
    pub buffer_timeout: DurationStr,
    /// Memory for the network buffers of each producing task (split over
    /// its outputs). It never grows with load: a producer without a free
    /// buffer waits (backpressure).
    pub memory: ByteSize,
    /// Buffers of a producer's pool reserved for each downstream channel;
    /// the rest are floating, shared by all its channels.
    pub exclusive_buffers: usize,
    /// Send partly filled buffers as soon as a producer's input goes idle.
    pub flush_on_idle: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            buffer_size: ByteSize(32 << 10),
            buffer_timeout: DurationStr(Duration::from_millis(100)),
            memory: ByteSize(4 << 20),
            exclusive_buffers: 2,
            flush_on_idle: true,
        }
    }
}

/// `[checkpoint]`: periodic consistent snapshots for exactly-once recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Time between checkpoints; `None` (`interval = "off"`) takes none.
    pub interval: Option<Duration>,
    /// A checkpoint not complete after this long fails (and is counted).
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Complete checkpoints kept on disk (savepoints are never deleted).
    pub retain: usize,
    /// Where checkpoints go (relative to the pipeline file):
    /// `DIR/PIPELINE/ID/`.
    pub dir: PathBuf,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            retain: 3,
            dir: PathBuf::from("data/checkpoints"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCheckpoint {
    interval: Option<String>,
    timeout: Option<DurationStr>,
    min_pause: Option<DurationStr>,
    retain: Option<usize>,
    dir: Option<PathBuf>,
}

/// Where operators keep keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackendKind {
    /// In memory: fastest; state must fit in memory.
    #[default]
    Heap,
    /// In an embedded on-disk store (redb), one file per operator subtask:
    /// state larger than memory.
    Disk,
}

/// `[state]`: where keyed state lives while the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The backend.
    pub backend: StateBackendKind,
    /// Working directory of the disk backend (relative to the pipeline
    /// file): `DIR/PIPELINE/OPERATOR-SUBTASK.redb`. Scratch space: it is
    /// rebuilt from the checkpoint on every start.
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { backend: StateBackendKind::Heap, dir: PathBuf::from("data/state") }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawState {
    backend: Option<StateBackendKind>,
    dir: Option<PathBuf>,
}

/// When a new version of a plugin in the plugin directory is swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadPolicy {
    /// As soon as it is validated, at each subtask's next batch boundary.
    #[default]
    Auto,
    /// At the next checkpoint barrier (a consistent cut of the stream).
    OnCheckpoint,
    /// Only when asked: `weir reload PIPELINE` (or the API).
    Manual,
}

impl ReloadPolicy {
    /// `auto`, `on-checkpoint`, `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadPolicy::Auto => "auto",
            ReloadPolicy::OnCheckpoint => "on-checkpoint",
            ReloadPolicy::Manual => "manual",
        }
    }
}

/// `reload = "auto"` or `[reload]`: hot reload of plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// When a validated version is swapped in.
    pub policy: ReloadPolicy,
    /// How long a changed plugin file must stay unchanged before it is read.
    pub debounce: Duration,
    /// Batches (per subtask) a new version is on probation for.
    pub probation_batches: u64,
    /// Failures of a new version tolerated during its probation; one more
    /// rolls it back.
    pub max_failures: u32,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { policy: ReloadPolicy::Auto, debounce: Duration::from_millis(250), probation_batches: 100, max_failures: 0 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawReload {
    policy: Option<ReloadPolicy>,
    debounce: Option<DurationStr>,
    probation_batches: Option<u64>,
    max_failures: Option<u32>,
}

/// `[limits]` (pipeline-wide) or `operators[i].limits`: per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Largest memory one plugin instance may use.
    pub memory: Option<ByteSize>,
    /// CPU time one call into a plugin may take.
    pub call_timeout: Option<DurationStr>,
}

impl LimitsConfig {
    /// These limits with unset values taken from `base`.
    pub fn or(self, base: weir_wasm::Limits) -> weir_wasm::Limits {
        weir_wasm::Limits {
            memory: self.memory.map_or(base.memory, |m| m.0 as usize),
            call_timeout: self.call_timeout.map_or(base.call_timeout, |d| d.0),
        }
    }
}

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
    /// How the input is partitioned (default: forward at equal parallelism, else rebalance).
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

/// A source's connector settings.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// `type = "generator"`.
    Generator(GeneratorConfig),
    /// `type = "file"`.
    File(FileSourceConfig),
    /// `type = "kafka"`.
    Kafka(KafkaSourceConfig),
}

/// `[sources.NAME]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Parallel instances.
    pub parallelism: Option<u32>,
    /// Connector settings.
    pub kind: SourceKind,
}

/// A sink's connector settings.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// `type = "stdout"`.
    Stdout(StdoutSinkConfig),
    /// `type = "file"`.
    File(FileSinkConfig),
    /// `type = "discard"`.
    Discard,
    /// `type = "kafka"`.
    Kafka(KafkaSinkConfig),
    /// `type = "postgres"`.
    Postgres(Box<PostgresSinkConfig>),
}

/// `[sinks.NAME]`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Name of the operator or source feeding it (default: the last operator).
    pub input: Option<String>,
    /// Parallel instances (default: its input's).
    pub parallelism: Option<u32>,
    /// Connector settings.
    pub kind: SinkKind,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPipeline {
    name: Option<String>,
    plugin_dir: Option<PathBuf>,
    parallelism: Option<u32>,
    max_parallelism: Option<u32>,
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
}

/// Options that override the file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Plugin directory to use instead of the file's `plugin-dir`.
    pub plugin_dir: Option<PathBuf>,
}

fn take_str(table: &mut toml::Table, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    match table.remove(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(ConfigError { path: format!("{path}.{key}"), message: format!("expected a string, found {}", other.type_str()) });
            None
        }
    }
}

fn take_u32(table: &mut toml::Table, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<u32> {
    match table.remove(key) {
        None => None,
        Some(toml::Value::Integer(n)) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        Some(other) => {
            errors.push(ConfigError { path: format!("{path}.{key}"), message: format!("expected a positive integer, found {other}") });
            None
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: toml::Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    match value.try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(ConfigError { path: path.to_owned(), message: e.message().trim().to_owned() });
            None
        }
    }
}

fn push_validation(errors: &mut Vec<ConfigError>, path: &str, found: Vec<(String, String)>) {
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
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            vec![ConfigError { path: String::new(), message: format!("not valid TOML: {}", e.to_string().trim()) }]
        })?;
        let mut errors = Vec::new();
        const KNOWN: [&str; 13] = [
            "name",
            "plugin-dir",
            "parallelism",
            "max-parallelism",
            "network",
            "limits",
            "checkpoint",
            "state",
            "reload",
            "sources",
            "operators",
            "sinks",
            "connections",
        ];
        let unknown: Vec<String> = table.keys().filter(|k| !KNOWN.contains(&k.as_str())).cloned().collect();
        for k in unknown {
            table.remove(&k);
            errors.push(ConfigError { path: k, message: format!("unknown key; expected one of: {}", KNOWN.join(", ")) });
        }
        let Some(raw) = typed::<RawPipeline>(toml::Value::Table(table), "", &mut errors) else {
            return Err(errors);
        };
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = raw.name.clone().unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into()));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            errors.push(ConfigError { path: "name".into(), message: format!("{name:?} is not a valid pipeline name (letters, digits, '-', '_', '.')") });
        }
        let plugin_dir = options.plugin_dir.clone().unwrap_or_else(|| base.join(raw.plugin_dir.clone().unwrap_or_else(|| "plugins".into())));
        let parallelism = raw.parallelism.unwrap_or(1);
        let max_parallelism = raw.max_parallelism.unwrap_or(128);
        if parallelism == 0 {
            errors.push(ConfigError { path: "parallelism".into(), message: "must be at least 1".into() });
        }
        if max_parallelism == 0 || max_parallelism > 32768 {
            errors.push(ConfigError { path: "max-parallelism".into(), message: "must be between 1 and 32768".into() });
        }
        let network: NetworkConfig = raw.network.and_then(|v| typed(v, "network", &mut errors)).unwrap_or_default();
        if network.buffer_size.0 < 1024 || network.buffer_size.0 > 64 << 20 {
            errors.push(ConfigError { path: "network.buffer-size".into(), message: "must be between 1KiB and 64MiB".into() });
        }
        if network.exclusive_buffers == 0 {
            errors.push(ConfigError { path: "network.exclusive-buffers".into(), message: "must be at least 1".into() });
        }
        if network.memory.0 < network.buffer_size.0 * 2 {
            errors.push(ConfigError { path: "network.memory".into(), message: "must hold at least two network buffers (2 x buffer-size)".into() });
        }
        let limits_cfg: LimitsConfig = raw.limits.and_then(|v| typed(v, "limits", &mut errors)).unwrap_or_default();
        let limits = limits_cfg.or(weir_wasm::Limits::default());
        let mut checkpoint = CheckpointConfig::default();
        if let Some(raw) = raw.checkpoint.and_then(|v| typed::<RawCheckpoint>(v, "checkpoint", &mut errors)) {
            match raw.interval.as_deref().map(str::trim) {
                None => {}
                Some("off" | "none" | "disabled") => checkpoint.interval = None,
                Some(text) => match humantime::parse_duration(text) {
                    Ok(d) if d >= Duration::from_millis(10) => checkpoint.interval = Some(d),
                    Ok(_) => errors.push(ConfigError {
                        path: "checkpoint.interval".into(),
                        message: "must be at least 10ms; write \"off\" to take no checkpoints".into(),
                    }),
                    Err(e) => errors.push(ConfigError {
                        path: "checkpoint.interval".into(),
                        message: format!("invalid duration {text:?} ({e}); write e.g. \"10s\", \"1m\", or \"off\""),
                    }),
                },
            }
            if let Some(t) = raw.timeout {
                if t.0.is_zero() {
                    errors.push(ConfigError { path: "checkpoint.timeout".into(), message: "must be more than 0".into() });
                }
                checkpoint.timeout = t.0;
            }
            if let Some(p) = raw.min_pause {
                checkpoint.min_pause = p.0;
            }
            if let Some(n) = raw.retain {
                if n == 0 {
                    errors.push(ConfigError {
                        path: "checkpoint.retain".into(),
                        message: "must be at least 1: a restart needs the latest checkpoint".into(),
                    });
                }
                checkpoint.retain = n.max(1);
            }
            if let Some(d) = raw.dir {
                checkpoint.dir = d;
            }
        }
        checkpoint.dir = base.join(&checkpoint.dir);
        let mut state = StateConfig::default();
        if let Some(raw) = raw.state.and_then(|v| typed::<RawState>(v, "state", &mut errors)) {
            state.backend = raw.backend.unwrap_or_default();
            if let Some(d) = raw.dir {
                state.dir = d;
            }
        }
        state.dir = base.join(&state.dir);
        let reload = parse_reload(raw.reload, checkpoint.interval.is_some(), &mut errors);

        // Names declared in the file, valid or not: a section with its own
        // error must not also be reported as missing by the graph checks.
        let mut declared: BTreeSet<String> = raw.sources.keys().chain(raw.sinks.keys()).cloned().collect();
        for v in &raw.operators {
            if let Some(n) = v.get("name").and_then(toml::Value::as_str) {
                declared.insert(n.to_owned());
            }
        }
        let (declared_sources, declared_sinks) = (raw.sources.len(), raw.sinks.len());
        let mut sources = BTreeMap::new();
        for (sname, mut t) in raw.sources {
            let path = format!("sources.{sname}");
            let ty = take_str(&mut t, "type", &path, &mut errors);
            let par = take_u32(&mut t, "parallelism", &path, &mut errors);
            let kind = match ty.as_deref() {
                Some("generator") => typed::<GeneratorConfig>(toml::Value::Table(t), &path, &mut errors).map(|c| {
                    push_validation(&mut errors, &path, c.validate());
                    SourceKind::Generator(c)
                }),
                Some("file") => typed::<FileSourceConfig>(toml::Value::Table(t), &path, &mut errors).map(|mut c| {
                    push_validation(&mut errors, &path, c.validate());
                    if par.is_some_and(|p| p > 1) {
                        errors.push(ConfigError { path: format!("{path}.parallelism"), message: "file sources run at parallelism 1".into() });
                    }
                    c.path = base.join(&c.path);
                    SourceKind::File(c)
                }),
                Some("kafka") => typed::<KafkaSourceConfig>(toml::Value::Table(t), &path, &mut errors).map(|c| {
                    push_validation(&mut errors, &path, c.validate());
                    SourceKind::Kafka(c)
                }),
                Some(other) => {
                    errors.push(ConfigError {
                        path: format!("{path}.type"),
                        message: format!("unknown source type {other:?}; available: \"generator\", \"file\", \"kafka\""),
                    });
                    None
                }
                None => {
                    errors.push(ConfigError { path: format!("{path}.type"), message: "missing; set type = \"generator\", \"file\" or \"kafka\"".into() });
                    None
                }
            };
            if let Some(kind) = kind {
                sources.insert(sname, SourceConfig { parallelism: par, kind });
            }
        }

        let declared_connections: Vec<String> = raw.connections.keys().cloned().collect();
        let mut connections = BTreeMap::new();
        for (cname, mut t) in raw.connections {
            let path = format!("connections.{cname}");
            let ty = take_str(&mut t, "type", &path, &mut errors);
            let parsed = match ty.as_deref() {
                Some("postgres") => typed::<weir_async::config::PostgresConnection>(toml::Value::Table(t), &path, &mut errors).map(weir_async::ConnectionConfig::Postgres),
                Some("postgres-kv") => {
                    let mut kv = toml::Table::new();
                    for k in weir_async::config::KvTable::KEYS {
                        if let Some(v) = t.remove(k) {
                            kv.insert(k.to_owned(), v);
                        }
                    }
                    let table = typed::<weir_async::config::KvTable>(toml::Value::Table(kv), &path, &mut errors);
                    let mut server_errors = Vec::new();
                    let server = typed::<weir_async::config::PostgresConnection>(toml::Value::Table(t), &path, &mut server_errors);
                    for mut e in server_errors {
                        if e.message.starts_with("unknown field") {
                            e.message.push_str(", `table`, `key-column`, `value-column`");
                        }
                        errors.push(e);
                    }
                    server.zip(table).map(|(c, kv)| weir_async::ConnectionConfig::PostgresKv(c, kv))
                }
                Some(other) => {
                    errors.push(ConfigError {
                        path: format!("{path}.type"),
                        message: format!("unknown connection type {other:?}; available: \"postgres\" (SQL), \"postgres-kv\" (key-value lookups on a table)"),
                    });
                    None
                }
                None => {
                    errors.push(ConfigError { path: format!("{path}.type"), message: "missing; set type = \"postgres\" or \"postgres-kv\"".into() });
                    None
                }
            };
            if let Some(mut c) = parsed {
                push_validation(&mut errors, &path, c.validate());
                c.resolve_paths(&base);
                connections.insert(cname, c);
            }
        }
        let declared_sink_names: Vec<String> = raw.sinks.keys().cloned().collect();
        let mut operators = Vec::new();
        let mut plugin_files = Vec::new();
        let available = list_plugins(&plugin_dir);
        for (i, v) in raw.operators.into_iter().enumerate() {
            let path = format!("operators[{i}]");
            // `async` on its own, so its errors carry its path.
            let mut v = v;
            let async_table = v.as_table_mut().and_then(|t| t.remove("async"));
            let Some(mut op) = typed::<OperatorConfig>(v, &path, &mut errors) else { continue };
            if let Some(a) = async_table {
                op.async_io = typed::<weir_async::AsyncConfig>(a, &format!("{path}.async"), &mut errors);
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
                push_validation(&mut errors, &format!("{path}.async"), a.validate());
                push_validation(&mut errors, &format!("{path}.async"), a.check_refs(&connections, &declared_connections, &declared_sink_names));
                if !op.allow_read.is_empty() {
                    errors.push(ConfigError { path: format!("{path}.allow-read"), message: "async operators get no filesystem access; remove allow-read".into() });
                }
            }
            match find_plugin(&plugin_dir, &op.plugin) {
                Some(f) => plugin_files.push(f),
                None => {
                    let hint = if available.is_empty() {
                        format!("the directory has no .wasm files{}", if plugin_dir.is_dir() { "" } else { " (it does not exist)" })
                    } else {
                        format!("available: {}", available.join(", "))
                    };
                    errors.push(ConfigError {
                        path: format!("{path}.plugin"),
                        message: format!(
                            "no plugin {:?} in {} (looked for {}.wasm and {}.wasm); {hint}. Build it with `cargo build --target wasm32-wasip2 --release` or set `plugin-dir`",
                            op.plugin,
                            plugin_dir.display(),
                            op.plugin,
                            op.plugin.replace('-', "_")
                        ),
                    });
                    plugin_files.push(PathBuf::new());
                }
            }
            operators.push(op);
        }

        let mut sinks = BTreeMap::new();
        for (sname, mut t) in raw.sinks {
            let path = format!("sinks.{sname}");
            let ty = take_str(&mut t, "type", &path, &mut errors);
            let input = take_str(&mut t, "input", &path, &mut errors);
            let par = take_u32(&mut t, "parallelism", &path, &mut errors);
            let kind = match ty.as_deref() {
                Some("stdout") => typed::<StdoutSinkConfig>(toml::Value::Table(t), &path, &mut errors).map(|c| {
                    push_validation(&mut errors, &path, c.validate());
                    SinkKind::Stdout(c)
                }),
                Some("file") => typed::<FileSinkConfig>(toml::Value::Table(t), &path, &mut errors).map(|mut c| {
                    push_validation(&mut errors, &path, c.validate());
                    c.path = base.join(&c.path);
                    SinkKind::File(c)
                }),
                Some("postgres") => typed::<PostgresSinkConfig>(toml::Value::Table(t), &path, &mut errors).map(|mut c| {
                    c.spill_dir = base.join(&c.spill_dir);
                    c.password_file = c.password_file.map(|f| base.join(f));
                    c.tls_ca_file = c.tls_ca_file.map(|f| base.join(f));
                    push_validation(&mut errors, &path, c.validate());
                    SinkKind::Postgres(Box::new(c))
                }),
                Some("discard") => {
                    if let Some(k) = t.keys().next() {
                        errors.push(ConfigError { path: format!("{path}.{k}"), message: "unknown key; a discard sink takes no settings".into() });
                    }
                    Some(SinkKind::Discard)
                }
                Some("kafka") => typed::<KafkaSinkConfig>(toml::Value::Table(t), &path, &mut errors).map(|mut c| {
                    push_validation(&mut errors, &path, c.validate());
                    if c.delivery == Delivery::ExactlyOnce && checkpoint.interval.is_none() {
                        errors.push(ConfigError {
                            path: format!("{path}.delivery"),
                            message: "exactly-once commits a Kafka transaction per checkpoint; turn checkpoints on ([checkpoint] interval) or use \"at-least-once\"".into(),
                        });
                    }
                    c.spill_dir = Some(match &c.spill_dir {
                        Some(d) => base.join(d),
                        None => weir_connector_kafka::sink::default_spill_dir(&base, &name, &sname),
                    });
                    SinkKind::Kafka(c)
                }),
                Some(other) => {
                    errors.push(ConfigError {
                        path: format!("{path}.type"),
                        message: format!("unknown sink type {other:?}; available: \"stdout\", \"file\", \"discard\", \"kafka\", \"postgres\""),
                    });
                    None
                }
                None => {
                    errors.push(ConfigError {
                        path: format!("{path}.type"),
                        message: "missing; set type = \"stdout\", \"file\", \"discard\", \"kafka\" or \"postgres\"".into(),
                    });
                    None
                }
            };
            if let Some(kind) = kind {
                sinks.insert(sname, SinkConfig { input, parallelism: par, kind });
            }
        }

        let p = Pipeline { file: file.to_owned(), name, plugin_dir, parallelism, max_parallelism, network, limits, checkpoint, state, reload, sources, operators, plugin_files, sinks, connections };
        p.check_dead_letters(&mut errors);
        p.check_graph(&mut errors, &declared, declared_sources, declared_sinks);
        if errors.is_empty() { Ok(p) } else { Err(errors) }
    }

    fn check_graph(&self, errors: &mut Vec<ConfigError>, declared: &BTreeSet<String>, declared_sources: usize, declared_sinks: usize) {
        // Something that is declared but invalid was reported already.
        let broken = |name: &str| declared.contains(name) && !self.sources.contains_key(name) && !self.operators.iter().any(|o| o.name == name);
        if declared_sources == 0 {
            errors.push(ConfigError { path: "sources".into(), message: "a pipeline needs at least one source, e.g. [sources.events] type = \"generator\"".into() });
        }
        if declared_sinks == 0 {
            errors.push(ConfigError { path: "sinks".into(), message: "a pipeline needs at least one sink, e.g. [sinks.out] type = \"stdout\"".into() });
        }
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

    fn check_dead_letters(&self, errors: &mut Vec<ConfigError>) {
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

/// `reload = "POLICY"` or a `[reload]` table.
fn parse_reload(value: Option<toml::Value>, checkpointing: bool, errors: &mut Vec<ConfigError>) -> ReloadConfig {
    let mut reload = ReloadConfig::default();
    let err = |path: &str, message: String| ConfigError { path: path.to_owned(), message };
    match value {
        None => {}
        Some(v @ toml::Value::String(_)) => {
            if let Some(policy) = typed::<ReloadPolicy>(v, "reload", errors) {
                reload.policy = policy;
            }
        }
        Some(v @ toml::Value::Table(_)) => {
            if let Some(raw) = typed::<RawReload>(v, "reload", errors) {
                reload.policy = raw.policy.unwrap_or_default();
                if let Some(d) = raw.debounce {
                    if d.0 < Duration::from_millis(10) || d.0 > Duration::from_secs(60) {
                        errors.push(err("reload.debounce", "must be between 10ms and 60s".into()));
                    }
                    reload.debounce = d.0;
                }
                if let Some(n) = raw.probation_batches {
                    if n == 0 {
                        errors.push(err("reload.probation-batches", "must be at least 1".into()));
                    }
                    reload.probation_batches = n.max(1);
                }
                if let Some(n) = raw.max_failures {
                    reload.max_failures = n;
                }
            }
        }
        Some(other) => errors.push(err(
            "reload",
            format!("expected \"auto\", \"on-checkpoint\", \"manual\" or a [reload] table, found {}", other.type_str()),
        )),
    }
    if reload.policy == ReloadPolicy::OnCheckpoint && !checkpointing {
        let path = "reload";
        errors.push(err(path, "\"on-checkpoint\" swaps plugins at checkpoint barriers, but checkpoints are off (checkpoint.interval = \"off\"); use \"auto\" or turn checkpoints on".into()));
    }
    reload
}

/// `name.wasm` or `name_with_underscores.wasm` in `dir`.
pub fn find_plugin(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.wasm"), format!("{}.wasm", name.replace('-', "_"))].into_iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// Plugin names available in `dir`.
pub fn list_plugins(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().replace('_', "-")))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, Vec<ConfigError>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("json_filter.wasm"), b"x").unwrap();
        Pipeline::parse(&dir.path().join("p.toml"), text, &LoadOptions { plugin_dir: Some(dir.path().to_owned()) })
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
        assert_eq!(p.operator_input(0).unwrap(), "gen");
        assert_eq!(p.sink_input("out", &p.sinks["out"]).unwrap(), "parse");
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
}
