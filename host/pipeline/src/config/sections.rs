//! The pipeline-wide sections: `[network]`, `[limits]`, `[checkpoint]`,
//! `[state]` and `reload`, each typed, with its defaults and its checks.

use super::{typed, ConfigError, DurationStr, ByteSize};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Buffer debloating: each channel's credits and buffer size follow
    /// its consumer's measured throughput, so that the data queued toward
    /// a task stays near `debloat-target`.
    pub debloat: bool,
    /// With `debloat`: how much time of its input a task may have queued
    /// (default 1 s).
    pub debloat_target: Option<DurationStr>,
}

impl NetworkConfig {
    /// The debloating target when debloating is on.
    pub fn debloat_target(&self) -> Option<Duration> {
        self.debloat.then(|| self.debloat_target.map_or(DEFAULT_DEBLOAT_TARGET, |t| t.0))
    }
}

/// `network.debloat-target` when not set (Flink's default too).
pub const DEFAULT_DEBLOAT_TARGET: Duration = Duration::from_secs(1);

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            buffer_size: ByteSize(32 << 10),
            buffer_timeout: DurationStr(Duration::from_millis(100)),
            memory: ByteSize(4 << 20),
            exclusive_buffers: 2,
            flush_on_idle: true,
            debloat: false,
            debloat_target: None,
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
    /// Whether barriers wait for the buffers queued ahead of them.
    pub mode: CheckpointMode,
    /// With `mode = "unaligned"`: start each checkpoint aligned and switch
    /// it to unaligned once it has run this long (`ZERO`: unaligned at once).
    pub aligned_timeout: Duration,
    /// `store = "s3://…"`: the checkpoints go to an object store instead of
    /// `dir`, which then only holds the run's claim and control socket.
    pub store: Option<CheckpointObjects>,
}

/// Checkpoints in an object store: `checkpoint.store` and `[checkpoint.s3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointObjects {
    /// `store` as written.
    pub url: String,
    /// The bucket and prefix.
    pub destination: weir_objects::Destination,
    /// How to reach the server (`[checkpoint.s3]`).
    pub s3: weir_objects::S3Settings,
    /// A run's claim on the checkpoints lapses this long after its last
    /// renewal (`checkpoint.s3.claim-timeout`).
    pub claim_timeout: Duration,
}

/// `checkpoint.s3.claim-timeout` when not set.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// `checkpoint.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointMode {
    /// A barrier waits behind the buffers queued ahead of it, and a task
    /// with several inputs holds back the inputs whose barrier arrived
    /// (Flink's aligned checkpoints).
    #[default]
    Aligned,
    /// A barrier overtakes the queued buffers, which are persisted with the
    /// checkpoint and replayed on restore (Flink's unaligned checkpoints).
    Unaligned,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            retain: 3,
            dir: PathBuf::from("data/checkpoints"),
            mode: CheckpointMode::Aligned,
            aligned_timeout: Duration::ZERO,
            store: None,
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
    mode: Option<String>,
    aligned_checkpoint_timeout: Option<DurationStr>,
    store: Option<String>,
    /// `[checkpoint.s3]`, parsed on its own so that errors name it.
    s3: Option<toml::Value>,
}

/// `[checkpoint.s3]`: the object storage sink's S3 keys, for checkpoints.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    #[serde(default)]
    path_style: bool,
    access_key_id_env: Option<String>,
    secret_access_key_env: Option<String>,
    credentials_file: Option<PathBuf>,
    request_timeout: Option<DurationStr>,
    claim_timeout: Option<DurationStr>,
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
    /// Timers one operator subtask may hold.
    pub timers: Option<usize>,
}

impl LimitsConfig {
    /// These limits with unset values taken from `base`.
    pub fn or(self, base: weir_wasm::Limits) -> weir_wasm::Limits {
        weir_wasm::Limits {
            memory: self.memory.map_or(base.memory, |m| m.0 as usize),
            call_timeout: self.call_timeout.map_or(base.call_timeout, |d| d.0),
            timers: self.timers.unwrap_or(base.timers),
        }
    }
}


pub(super) fn checkpoint_keys() -> Vec<&'static str> {
    weir_connector::registry::keys_of::<RawCheckpoint>()
}

pub(super) fn checkpoint_s3_keys() -> Vec<&'static str> {
    weir_connector::registry::keys_of::<RawS3>()
}

pub(super) fn state_keys() -> Vec<&'static str> {
    weir_connector::registry::keys_of::<RawState>()
}

pub(super) fn reload_keys() -> Vec<&'static str> {
    weir_connector::registry::keys_of::<RawReload>()
}

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCluster {
    group: String,
    session_timeout: Option<DurationStr>,
    instance_id: Option<String>,
}

/// The default `[cluster] session-timeout`: how long a member may go
/// without a heartbeat before the group gives its lanes to the others.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn cluster_keys() -> Vec<&'static str> {
    weir_connector::registry::keys_of::<RawCluster>()
}

/// `[cluster]`, checked.
pub(super) fn parse_cluster(value: Option<toml::Value>, errors: &mut Vec<ConfigError>) -> Option<weir_connector::cluster::GroupConfig> {
    let raw: RawCluster = typed(value?, "cluster", errors)?;
    if raw.group.trim().is_empty() {
        errors.push(ConfigError { path: "cluster.group".into(), message: "must name the group every member of the pipeline joins".into() });
    }
    let session_timeout = raw.session_timeout.map_or(DEFAULT_SESSION_TIMEOUT, |d| d.0);
    if session_timeout < Duration::from_secs(1) || session_timeout > Duration::from_secs(3600) {
        errors.push(ConfigError { path: "cluster.session-timeout".into(), message: "must be between 1s and 1h".into() });
    }
    if raw.instance_id.as_deref().is_some_and(|i| i.trim().is_empty()) {
        errors.push(ConfigError { path: "cluster.instance-id".into(), message: "must not be empty; leave it out for dynamic membership".into() });
    }
    Some(weir_connector::cluster::GroupConfig { group: raw.group, session_timeout, instance_id: raw.instance_id })
}

/// `[network]`, checked.
pub(super) fn parse_network(value: Option<toml::Value>, errors: &mut Vec<ConfigError>) -> NetworkConfig {
    let network: NetworkConfig = value.and_then(|v| typed(v, "network", errors)).unwrap_or_default();
    if network.buffer_size.0 < 1024 || network.buffer_size.0 > 64 << 20 {
        errors.push(ConfigError { path: "network.buffer-size".into(), message: "must be between 1KiB and 64MiB".into() });
    }
    if network.exclusive_buffers == 0 {
        errors.push(ConfigError { path: "network.exclusive-buffers".into(), message: "must be at least 1".into() });
    }
    if network.memory.0 < network.buffer_size.0 * 2 {
        errors.push(ConfigError { path: "network.memory".into(), message: "must hold at least two network buffers (2 x buffer-size)".into() });
    }
    match network.debloat_target {
        Some(_) if !network.debloat => {
            errors.push(ConfigError { path: "network.debloat-target".into(), message: "sets the target of buffer debloating, so it needs debloat = true".into() });
        }
        Some(t) if t.0 < Duration::from_millis(10) || t.0 > Duration::from_secs(3600) => {
            errors.push(ConfigError { path: "network.debloat-target".into(), message: "must be between 10ms and 1h".into() });
        }
        _ => {}
    }
    network
}

/// `[checkpoint]`, checked, its directory resolved against `base`.
pub(super) fn parse_checkpoint(value: Option<toml::Value>, base: &Path, errors: &mut Vec<ConfigError>) -> CheckpointConfig {
    let mut checkpoint = CheckpointConfig::default();
    if let Some(raw) = value.and_then(|v| typed::<RawCheckpoint>(v, "checkpoint", errors)) {
        match raw.interval.as_deref().map(str::trim) {
            None => {}
            Some("off" | "none" | "disabled") => checkpoint.interval = None,
            Some(text) => match DurationStr::parse(text) {
                Ok(d) if d >= Duration::from_millis(10) => checkpoint.interval = Some(d),
                Ok(_) => errors.push(ConfigError {
                    path: "checkpoint.interval".into(),
                    message: "must be at least 10ms; write \"off\" to take no checkpoints".into(),
                }),
                Err(e) => errors.push(ConfigError { path: "checkpoint.interval".into(), message: format!("{e}, or \"off\"") }),
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
                errors.push(ConfigError { path: "checkpoint.retain".into(), message: "must be at least 1: a restart needs the latest checkpoint".into() });
            }
            checkpoint.retain = n.max(1);
        }
        if let Some(d) = raw.dir {
            checkpoint.dir = d;
        }
        match raw.mode.as_deref() {
            None | Some("aligned") => {}
            Some("unaligned") => checkpoint.mode = CheckpointMode::Unaligned,
            Some(other) => errors.push(ConfigError { path: "checkpoint.mode".into(), message: format!("must be \"aligned\" or \"unaligned\", got {other:?}") }),
        }
        if let Some(t) = raw.aligned_checkpoint_timeout {
            if checkpoint.mode != CheckpointMode::Unaligned {
                errors.push(ConfigError {
                    path: "checkpoint.aligned-checkpoint-timeout".into(),
                    message: "switches a checkpoint from aligned to unaligned, so it needs mode = \"unaligned\"".into(),
                });
            }
            checkpoint.aligned_timeout = t.0;
        }
        checkpoint.store = parse_checkpoint_store(raw.store, raw.s3, base, errors);
    }
    checkpoint.dir = base.join(&checkpoint.dir);
    checkpoint
}

/// `checkpoint.store` and `[checkpoint.s3]`, checked.
fn parse_checkpoint_store(url: Option<String>, s3: Option<toml::Value>, base: &Path, errors: &mut Vec<ConfigError>) -> Option<CheckpointObjects> {
    let Some(url) = url else {
        if s3.is_some() {
            errors.push(ConfigError {
                path: "checkpoint.s3".into(),
                message: "sets how to reach the object store of `checkpoint.store`, which is not set; add store = \"s3://BUCKET/PREFIX\" or remove [checkpoint.s3]".into(),
            });
        }
        return None;
    };
    let destination = match weir_objects::Destination::parse(&url, base) {
        Ok(d @ weir_objects::Destination::S3 { .. }) => d,
        Ok(weir_objects::Destination::Local(_)) => {
            errors.push(ConfigError {
                path: "checkpoint.store".into(),
                message: format!("{url:?} is not an object store; write \"s3://BUCKET/PREFIX\", or set `dir` for checkpoints in a local directory"),
            });
            return None;
        }
        Err(m) => {
            errors.push(ConfigError { path: "checkpoint.store".into(), message: m });
            return None;
        }
    };
    let mut settings = weir_objects::S3Settings::default();
    let mut claim_timeout = DEFAULT_CLAIM_TIMEOUT;
    if let Some(raw) = s3.and_then(|v| typed::<RawS3>(v, "checkpoint.s3", errors)) {
        settings.endpoint = raw.endpoint;
        settings.region = raw.region;
        settings.path_style = raw.path_style;
        settings.access_key_id_env = raw.access_key_id_env;
        settings.secret_access_key_env = raw.secret_access_key_env;
        settings.credentials_file = raw.credentials_file.map(|f| base.join(f));
        if let Some(t) = raw.request_timeout {
            settings.request_timeout = t.0;
        }
        if let Some(t) = raw.claim_timeout {
            if t.0 < Duration::from_secs(1) {
                errors.push(ConfigError {
                    path: "checkpoint.s3.claim-timeout".into(),
                    message: format!("must be at least 1s (the claim is renewed every third of it), got {:?}", t.0),
                });
            }
            claim_timeout = t.0;
        }
    }
    for (key, message) in settings.check(&destination) {
        errors.push(ConfigError { path: format!("checkpoint.s3.{key}"), message });
    }
    Some(CheckpointObjects { url, destination, s3: settings, claim_timeout })
}

/// `[state]`, its directory resolved against `base`.
pub(super) fn parse_state(value: Option<toml::Value>, base: &Path, errors: &mut Vec<ConfigError>) -> StateConfig {
    let mut state = StateConfig::default();
    if let Some(raw) = value.and_then(|v| typed::<RawState>(v, "state", errors)) {
        state.backend = raw.backend.unwrap_or_default();
        if let Some(d) = raw.dir {
            state.dir = d;
        }
    }
    state.dir = base.join(&state.dir);
    state
}

/// `reload = "POLICY"` or a `[reload]` table.
pub(super) fn parse_reload(value: Option<toml::Value>, checkpointing: bool, errors: &mut Vec<ConfigError>) -> ReloadConfig {
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
