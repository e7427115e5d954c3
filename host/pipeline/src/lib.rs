//! Pipeline files, and running them.
//!
//! A pipeline is a TOML file: named sources, a list of operators (each a
//! Wasm plugin with its config, parallelism, input and partitioning), named
//! sinks, plus `[network]` and `[limits]`. [`Pipeline::load`] validates it
//! completely (every problem, with its path, at once) before anything runs;
//! [`Plan::new`] turns it into a job graph and chains; [`run()`] loads the
//! plugins, opens every operator and connector (so a bad plugin config fails
//! before data flows), starts one thread per task subtask and reports
//! progress until the input is exhausted. While it runs, [`reload`]
//! watches the plugin directory and hot-swaps new plugin versions.
//!
//! A Rust program that runs pipelines can also run operators written with
//! `weir-sdk` natively, compiled into itself, behind the same task loop, by
//! plugin name: [`NativeOperators`] in [`RunOptions::native`]. weir's
//! benchmarks use it to measure what the Wasm boundary costs.
//!
//! ```toml
//! [sources.events]
//! type = "generator"
//! count = 1_000_000
//!
//! [[operators]]
//! name = "parse"
//! plugin = "json-filter"
//! config = { filter = "amount >= 10", project = ["user", "amount"], key = "user" }
//!
//! [[operators]]
//! name = "sum"
//! plugin = "running-sum"
//! partition = "hash"
//!
//! [sinks.out]
//! type = "stdout"
//! ```

pub mod checkpoints;
pub mod cluster;
mod config;
pub mod control;
pub mod handle;
mod native;
mod plan;
pub mod reload;
pub mod report;
mod run;
mod vault;
pub mod waiting;

pub use config::{
    find_plugin, list_plugins, ByteSize, ConfigError, ConfigErrors, DurationStr, LimitsConfig, LoadOptions, NetworkConfig, OnError,
    OperatorConfig, PartitionKind, Pipeline, SinkConfig, SourceConfig, config_sections, ConfigSection, check_name, MAX_PARALLELISM,
};
pub use weir_connector::registry::Registry;
pub use native::NativeOperators;
pub use plan::{Chain, Plan, Vertex, VertexKind};
pub use checkpoints::StartFrom;
pub use reload::{OperatorVersion, ReloadEvent, ReloadHandle, ReloadStatus};
pub use config::{CheckpointConfig, CheckpointMode, CheckpointObjects, ReloadConfig, ReloadPolicy, StateBackendKind, StateConfig};
pub use handle::{LiveStatus, PluginUse, PluginVersion, RunHandle};
pub use report::{checkpoint_line, human};
pub use run::{check_connectors, check_operators, load_plugins, run, Latency, LoadedPlugins, Phase, Progress, RunError, RunOptions, RunSummary, VertexSummary};
