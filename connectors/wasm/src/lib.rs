//! # Sources and sinks written as plugins
//!
//! `type = "wasm"` in a `[sources.NAME]` or `[sinks.NAME]` section runs a
//! connector that is a WebAssembly component, found in the plugin
//! directory like an operator: a component of world `weir:plugin/source`
//! or `weir:plugin/sink` (`wit/connector.wit`; in Rust, `weir-sdk-connector`).
//!
//! ```toml
//! [sinks.hook]
//! type = "wasm"
//! plugin = "webhook-sink"                      # plugins/webhook_sink.wasm
//! allow-http = ["hooks.internal:8080"]         # what it may reach, nothing else
//! config = { url = "http://hooks.internal:8080/in", batch = 500 }
//! ```
//!
//! The plugin implements weir's connector traits through its exports, one
//! call per batch: a sink gets `write` for every batch, `pre-commit` at a
//! checkpoint barrier (its handle is stored in the checkpoint) and
//! `commit` once the checkpoint is complete; a restored run hands it the
//! handles to publish again, so a plugin whose `commit` is idempotent is
//! exactly-once like the built-in sinks. A source's `snapshot` goes into
//! the checkpoint and comes back to `restore`.
//!
//! A plugin connector has no filesystem, network or environment: it
//! reaches out only through the `async-io` imports, to the hosts in
//! `allow-http` and the `[connections.*]` in `connections`, exactly as an
//! async operator does. Each call is bounded by the section's `timeout`
//! (I/O included) and by the pipeline's `limits.call-timeout` of CPU; a
//! trap or a timeout stops the pipeline with a message naming the plugin,
//! the call and the reason, and the instance is never called again.
//!
//! A new version of the plugin dropped into the plugin directory is hot
//! reloaded: the reload manager checks it and offers it
//! ([`weir_wasm::reload::ConnectorSwaps`]); each subtask opens it at its
//! next safe point, where nothing is held only by the running instance. A
//! source takes it right after a `snapshot` and `restore`s it to that
//! position; a sink right after a `pre-commit`, and the new instance
//! `commit`s that epoch's handle. Without checkpoints, a source takes it
//! before a poll (from a `snapshot` of the running one) and a sink before
//! a write (after the running one's `flush`). A new version whose `open`
//! (or `restore`) fails is dropped and the running one goes on.
//!
//! In a checkpointed run the versions that ran well are kept beside the
//! checkpoints ([`weir_wasm::reload::KnownGood`]): the one opened at start,
//! and a swapped-in one once a checkpoint it took part in completed (its
//! probation). A swapped-in version that fails before that, or cannot be
//! opened, is marked bad: the run fails as it would without a reload, and
//! its restart loads the last good version instead of the file.

mod sink;
mod source;

pub use sink::{PluginSink, PluginSinkConfig};
pub use source::{PluginSource, PluginSourceConfig};

use serde::Deserialize;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weir_connector::config::{ByteSize, DurationStr};
use weir_connector::registry::{ConfigContext, FieldErrors};
use weir_connector::services::Services;
use weir_connector::{ConnectorContext, ConnectorError, ErrorKind, WaitObserver};
use weir_wasm::reload::{ConnectorSwaps, KnownGood};
use weir_wasm::{Answer, ConnectorFailure, ConnectorInfo, Engine, HttpResponse, IoFuture, IoProvider, Limits, Plugin, SqlRows, SqlValue};

/// The section of a source or sink that is a plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginConnectorConfig {
    /// The plugin's name in the plugin directory (`webhook-sink` is
    /// `webhook-sink.wasm` or `webhook_sink.wasm`).
    pub plugin: String,
    /// Handed to the plugin's `open` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
    /// `host:port` (or `host`, port 80) the plugin may call over HTTP.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Names of `[connections.*]` the plugin may use (SQL, key-value).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Largest HTTP response or query result handed to the plugin.
    #[serde(default = "weir_async::config::default_max_response")]
    pub max_response: ByteSize,
    /// Longest one call into the plugin may take, its I/O included.
    #[serde(default = "default_timeout")]
    pub timeout: DurationStr,
    /// The plugin's file, found in the plugin directory by `prepare`.
    #[serde(skip)]
    pub file: PathBuf,
    /// Whether the pipeline takes checkpoints, told to the plugin.
    #[serde(skip)]
    pub checkpointing: bool,
}

fn default_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(30))
}

impl PluginConnectorConfig {
    /// Checks the values and finds the plugin's file.
    fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
        let mut errors = Vec::new();
        self.checkpointing = cx.checkpointing;
        match weir_wasm::find_plugin(cx.plugin_dir, &self.plugin) {
            Some(file) => self.file = file,
            None => errors.push(("plugin".to_owned(), weir_wasm::missing_plugin(&self.plugin, cx.plugin_dir, &weir_wasm::list_plugins(cx.plugin_dir)))),
        }
        errors.extend(weir_async::config::check_grants(&self.allow_http, self.max_response));
        if self.timeout.0.is_zero() {
            errors.push(("timeout".to_owned(), "must be more than 0 (the longest one call into the plugin may take)".to_owned()));
        }
        errors
    }

    /// Loads the plugin with the engine of `services`, as the file is.
    fn load(&self, services: &Services) -> Result<Plugin, ConnectorError> {
        engine(services)?.load(&self.file).map_err(|e| ConnectorError::user(format!("plugin: {e}")))
    }

    /// `weir check`: loads the plugin and checks it is a `kind` (`"sink"`
    /// or `"source"`), without opening it (its `open` may reach out).
    fn check(&self, services: &Services, kind: &str) -> Result<Option<String>, ConnectorError> {
        let plugin = self.load(services)?;
        weir_wasm::check_connector_kind(&plugin, kind).map_err(|m| ConnectorError::user(format!("plugin: {m}")))?;
        Ok(Some(format!("plugin {} ({}, {} bytes, version {})", plugin.name, plugin.path.display(), plugin.size, plugin.short_hash())))
    }

    /// Loads the plugin and prepares what its instance runs on: the
    /// runtime its I/O is awaited on and the grants of the section.
    fn prepare_run(&self, ctx: &ConnectorContext, section: &str, waits: Arc<OnceLock<Arc<dyn WaitObserver>>>) -> Result<(Runner, Setup), ConnectorError> {
        // A checkpointed run keeps the versions that ran well: the file,
        // unless it does not load or failed before, else the last good one.
        let known = ctx.services.get::<Arc<dyn KnownGood>>().cloned();
        let plugin = match &known {
            Some(k) => k.load(engine(&ctx.services)?, section, &self.file).map_err(|e| ConnectorError::user(format!("plugin: {e}")))?,
            None => self.load(&ctx.services)?,
        };
        tracing::info!(plugin = %plugin.name, version = plugin.short_hash(), kind = plugin.kind(), cached = plugin.from_cache, "loaded connector plugin");
        let connections = ctx.services.get::<weir_async::Connections>().cloned().unwrap_or_default();
        let grants = weir_async::Grants { allow_http: &self.allow_http, connections: &self.connections, max_response: self.max_response.0 as usize, pool_size: weir_async::pg::PLUGIN_CONNECTOR_POOL_SIZE };
        let application = format!("weir/{}/{}/{}", ctx.pipeline, ctx.name, ctx.subtask);
        let io = weir_async::Io::with_grants(section, &grants, &connections.0, &application).map_err(ConnectorError::user)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("weir-plugin-{}", ctx.name))
            .build()
            .map_err(|e| ConnectorError::external(format!("{section}: cannot start the runtime for the plugin's I/O"), e))?;
        let info = ConnectorInfo {
            pipeline: ctx.pipeline.clone(),
            name: ctx.name.clone(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            config_json: weir_connector::config::config_json(&self.config),
            checkpointing: self.checkpointing,
        };
        let runner = Runner {
            runtime,
            timeout: self.timeout.0,
            plugin: Arc::new(plugin),
            section: section.to_owned(),
            broken: None,
            known,
            probation: Probation::Proven,
            pipeline: ctx.pipeline.clone(),
            subtask: ctx.subtask,
        };
        let swaps = ctx.services.get::<Arc<ConnectorSwaps>>().cloned();
        if let Some(s) = &swaps {
            s.runs(section, &runner.plugin.hash);
        }
        let setup = Setup {
            info,
            limits: ctx.services.get::<Limits>().copied().unwrap_or_default(),
            io: Arc::new(WatchedIo { io, waits }),
            swaps,
            seen: 0,
        };
        Ok((runner, setup))
    }
}

/// The engine a plugin connector is loaded by.
fn engine(services: &Services) -> Result<&Engine, ConnectorError> {
    services.get::<Engine>().ok_or_else(|| {
        ConnectorError::internal("a plugin connector needs weir's Wasm engine, and the program running this pipeline did not provide one")
    })
}

/// What one subtask's instance is opened with (the running one, and a
/// new version swapped in by a hot reload alike), and where new versions
/// of its plugin are offered.
struct Setup {
    info: ConnectorInfo,
    limits: Limits,
    io: Arc<dyn IoProvider>,
    /// None in `weir check` and tests that build a connector by hand.
    swaps: Option<Arc<ConnectorSwaps>>,
    /// The offers' generation this subtask last looked at.
    seen: u64,
}

impl Setup {
    /// A version offered since the last look that `runner` does not run.
    fn offered(&mut self, runner: &Runner) -> Option<Arc<Plugin>> {
        self.swaps.as_ref()?.offered(&runner.section, &mut self.seen, &runner.plugin)
    }

    /// Makes `instance` (opened from `new`, or why it could not be) the
    /// running one, and says so.
    fn settle<I>(&self, runner: &mut Runner, running: &mut I, new: Arc<Plugin>, opened: Result<I, String>) {
        let from = runner.plugin.clone();
        let failure = match opened {
            Ok(instance) => {
                *running = instance;
                if let Some(s) = &self.swaps {
                    s.runs(&runner.section, &new.hash);
                }
                runner.plugin = new.clone();
                runner.broken = None;
                runner.probation = if runner.known.is_some() { Probation::Swapped } else { Probation::Proven };
                None
            }
            Err(why) => {
                // A restart would open the file again: it runs the
                // running (last good) version instead.
                if let Some(k) = &runner.known {
                    k.bad(&runner.section, &new);
                }
                Some(why)
            }
        };
        weir_events::emit(weir_events::ConnectorPluginSwapped {
            pipeline: &self.info.pipeline,
            connector: &runner.section,
            subtask: self.info.subtask,
            from: from.short_hash(),
            to: new.short_hash(),
            failure: failure.as_deref(),
        });
    }
}

/// Runs an instance's calls to completion on the task thread, each within
/// the section's `timeout`, and turns their answers into connector errors.
struct Runner {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    plugin: Arc<Plugin>,
    /// `sinks.NAME` or `sources.NAME`.
    section: String,
    /// Why the instance may not be called again (a trap, a timeout).
    broken: Option<String>,
    /// Where the versions that ran well are kept (a checkpointed run).
    known: Option<Arc<dyn KnownGood>>,
    /// Whether the running version proved itself.
    probation: Probation,
    pipeline: String,
    subtask: u32,
}

/// Where a version swapped in by hot reload stands: on probation until a
/// checkpoint it took part in (a source's `snapshot`, a sink's
/// `pre-commit`) completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probation {
    /// Opened at start, or passed its probation.
    Proven,
    /// Swapped in; no checkpoint of its own yet.
    Swapped,
    /// Took part in a checkpoint, from this id on (0: any).
    TookPart(u64),
}

impl Runner {
    /// The running version took part in `checkpoint` (0 when the call
    /// does not say which).
    fn took_part(&mut self, checkpoint: u64) {
        if self.probation == Probation::Swapped {
            self.probation = Probation::TookPart(checkpoint);
        }
    }

    /// `checkpoint` completed and the running version was told: past its
    /// probation if it took part in this one or an earlier one.
    fn completed(&mut self, checkpoint: u64) {
        if let Probation::TookPart(from) = self.probation
            && checkpoint >= from
        {
            self.probation = Probation::Proven;
            if let Some(k) = &self.known {
                k.good(&self.section, &self.plugin);
            }
            tracing::debug!(connector = %self.section, subtask = self.subtask, version = self.plugin.short_hash(), "the new plugin version passed its probation");
        }
    }

    /// The running version is good: it opened at start.
    fn opened(&self) {
        if let Some(k) = &self.known {
            k.good(&self.section, &self.plugin);
        }
    }

    /// The running version failed (a trap, an error of its own, output
    /// that is not records): a version on probation is marked bad, so that
    /// the restart runs the last good one.
    fn failed(&mut self, error: &str) {
        if self.probation == Probation::Proven {
            return;
        }
        self.probation = Probation::Proven;
        if let Some(k) = &self.known {
            k.bad(&self.section, &self.plugin);
        }
        weir_events::emit(weir_events::ConnectorPluginRolledBack {
            pipeline: &self.pipeline,
            connector: &self.section,
            subtask: self.subtask,
            version: self.plugin.short_hash(),
            error,
        });
    }

    /// Runs `call`, the export `what` of a new version `plugin` on trial:
    /// a failure is returned as its message and leaves the running
    /// instance as it was.
    fn trial<T>(&self, plugin: &Plugin, what: &str, call: impl Future<Output = Answer<T>>) -> Result<T, String> {
        match self.runtime.block_on(async { tokio::time::timeout(self.timeout, call).await }) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(ConnectorFailure::User(m) | ConnectorFailure::External(m)))) => Err(format!("its `{what}` failed: {m}")),
            Ok(Err(e)) => Err(format!("plugin {} ({}): {e} in `{what}`", plugin.name, plugin.path.display())),
            Err(_) => Err(format!("its `{what}` took longer than {}.timeout = {:?}", self.section, self.timeout)),
        }
    }

    /// Runs `call` (the plugin's export `what`).
    fn call<T>(&mut self, what: &str, call: impl Future<Output = Answer<T>>) -> Result<T, ConnectorError> {
        if let Some(why) = &self.broken {
            return Err(ConnectorError::user(format!("plugin {} is not called again after it failed: {why}", self.plugin.name)));
        }
        let answer = self.runtime.block_on(async { tokio::time::timeout(self.timeout, call).await });
        let result = self.answer(what, answer);
        // The version's own fault (a trap, an error it calls the user's),
        // not an external system's (a receiver down, a slow answer).
        if let Err(e) = &result
            && e.kind == ErrorKind::User
        {
            self.failed(&e.message);
        }
        result
    }

    fn answer<T>(&mut self, what: &str, answer: Result<Answer<T>, tokio::time::error::Elapsed>) -> Result<T, ConnectorError> {
        let name = &self.plugin.name;
        match answer {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(ConnectorFailure::User(m)))) => Err(ConnectorError::user(format!("plugin {name} ({what}): {m}"))),
            Ok(Ok(Err(ConnectorFailure::External(m)))) => Err(ConnectorError {
                kind: ErrorKind::External,
                message: format!("plugin {name} ({what}): {m}"),
                source: None,
            }),
            Ok(Err(weir_wasm::CallError::Failed(m))) => Err(ConnectorError::user(m)),
            Ok(Err(trap)) => {
                let why = format!("plugin {name} ({}) {trap} in `{what}`", self.plugin.path.display());
                self.broken = Some(why.clone());
                Err(ConnectorError::user(why))
            }
            Err(_) => {
                let why = format!(
                    "plugin {name}'s `{what}` took longer than {}.timeout = {:?} (its I/O included) and was abandoned",
                    self.section, self.timeout
                );
                self.broken = Some(why.clone());
                Err(ConnectorError { kind: ErrorKind::External, message: why, source: None })
            }
        }
    }
}

/// The section's grants, with the time spent waiting for I/O reported to
/// the task's backpressure clock once the runtime hands the sink its
/// observer.
struct WatchedIo {
    io: weir_async::Io,
    waits: Arc<OnceLock<Arc<dyn WaitObserver>>>,
}

impl WatchedIo {
    fn watch<T: Send + 'static>(&self, call: IoFuture<T>) -> IoFuture<T> {
        let Some(observer) = self.waits.get().cloned() else { return call };
        Box::pin(async move {
            observer.start_wait();
            let r = call.await;
            observer.end_wait();
            r
        })
    }
}

impl IoProvider for WatchedIo {
    fn http(&self, method: String, url: String, headers: Vec<(String, String)>, body: Vec<u8>) -> IoFuture<HttpResponse> {
        self.watch(self.io.http(method, url, headers, body))
    }

    fn sql(&self, connection: String, query: String, params: Vec<SqlValue>) -> IoFuture<SqlRows> {
        self.watch(self.io.sql(connection, query, params))
    }

    fn kv_get(&self, store: String, key: String) -> IoFuture<Option<String>> {
        self.watch(self.io.kv_get(store, key))
    }
}
