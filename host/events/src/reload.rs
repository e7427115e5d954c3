//! Hot reload of plugins. Each attempt is counted once, by its final
//! outcome, as the reload history shows it: [`ReloadRejected`] at once,
//! and a validated version either [`ReloadRolledBack`] or, once it can no
//! longer be rolled back, [`ReloadKept`]. [`ReloadAccepted`] and
//! [`ReloadDone`] only log the steps in between.
//!
//! Versions are the first 12 hex digits of the plugin file's SHA-256.

use crate::{Event, metric};

/// The `tracing` target of these events (`WEIR_LOG=weir::reload=debug` shows them all).
const TARGET: &str = "weir::reload";

fn count(pipeline: &str, operator: &str, outcome: &str) {
    metric::PLUGIN_RELOADS
        .counter(&[pipeline, operator, outcome])
        .increment(1);
}

/// Which version of a plugin an operator runs: `active` for the one it
/// runs now, not for one it ran before.
#[derive(Debug)]
pub struct PluginVersion<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// Plugin name.
    pub plugin: &'a str,
    /// The version.
    pub version: &'a str,
    /// Whether the operator runs it now.
    pub active: bool,
}

impl Event for PluginVersion<'_> {
    fn emit(self) {
        tracing::trace!(target: TARGET, pipeline = self.pipeline, operator = self.operator, plugin = self.plugin, version = self.version, active = self.active, "plugin version");
        metric::PLUGIN_VERSION
            .gauge(&[self.pipeline, self.operator, self.plugin, self.version])
            .set(if self.active { 1.0 } else { 0.0 });
    }
}

/// A new version of a plugin that a source or sink runs passed validation
/// (it compiled, and is a source or a sink as the section needs) and is
/// offered to its subtasks, which take it at their next safe point.
#[derive(Debug)]
pub struct ConnectorPluginChanged<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The source or sink: `sources.NAME` or `sinks.NAME`.
    pub connector: &'a str,
    /// Plugin name.
    pub plugin: &'a str,
    /// The new file's version.
    pub version: &'a str,
    /// When its subtasks take it, e.g. "after their next snapshot".
    pub when: &'a str,
}

impl Event for ConnectorPluginChanged<'_> {
    fn emit(self) {
        tracing::info!(
            target: TARGET,
            pipeline = self.pipeline,
            connector = self.connector,
            plugin = self.plugin,
            version = self.version,
            "plugin {} changed (version {}); [{}] swaps it in {}",
            self.plugin,
            self.version,
            self.connector,
            self.when
        );
    }
}

/// One subtask of a source or sink swapped in a new version of its plugin,
/// or could not (its `open`, or a source's `restore`, failed) and keeps
/// the version it ran.
#[derive(Debug)]
pub struct ConnectorPluginSwapped<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The source or sink: `sources.NAME` or `sinks.NAME`.
    pub connector: &'a str,
    /// The subtask.
    pub subtask: u32,
    /// The version that ran.
    pub from: &'a str,
    /// The version offered.
    pub to: &'a str,
    /// Why the new version could not take over, or `None` when it did.
    pub failure: Option<&'a str>,
}

impl Event for ConnectorPluginSwapped<'_> {
    fn emit(self) {
        match self.failure {
            None => {
                tracing::info!(
                    target: TARGET,
                    pipeline = self.pipeline,
                    connector = self.connector,
                    subtask = self.subtask,
                    "[{}] subtask {} runs plugin version {} (was {}); nothing lost or repeated: its position or epoch carried over",
                    self.connector,
                    self.subtask,
                    self.to,
                    self.from
                );
                count(self.pipeline, self.connector, "accepted");
            }
            Some(reason) => {
                tracing::warn!(
                    target: TARGET,
                    pipeline = self.pipeline,
                    connector = self.connector,
                    subtask = self.subtask,
                    "hot reload of [{}] subtask {} to version {} failed: {reason}. Version {} keeps running; fix the plugin and copy it again",
                    self.connector,
                    self.subtask,
                    self.to,
                    self.from
                );
                count(self.pipeline, self.connector, "rejected");
            }
        }
    }
}

/// A source or sink version swapped in by hot reload failed on probation,
/// before a checkpoint it took part in completed: it is marked bad, so the
/// restart resumes from the last checkpoint with the last good version.
#[derive(Debug)]
pub struct ConnectorPluginRolledBack<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The source or sink: `sources.NAME` or `sinks.NAME`.
    pub connector: &'a str,
    /// The subtask.
    pub subtask: u32,
    /// The version that failed.
    pub version: &'a str,
    /// How it failed.
    pub error: &'a str,
}

impl Event for ConnectorPluginRolledBack<'_> {
    fn emit(self) {
        tracing::warn!(
            target: TARGET,
            pipeline = self.pipeline,
            connector = self.connector,
            subtask = self.subtask,
            version = self.version,
            "[{}] subtask {}: plugin version {} failed on probation (before a checkpoint it took part in completed): {}. \
             It is marked bad: the pipeline stops as it would without a reload, and its restart resumes from the last \
             checkpoint with the last good version",
            self.connector,
            self.subtask,
            self.version,
            self.error
        );
        count(self.pipeline, self.connector, "rolled_back");
    }
}

/// A new plugin file failed validation; the running version stays.
#[derive(Debug)]
pub struct ReloadRejected<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// Plugin name.
    pub plugin: &'a str,
    /// The version refused.
    pub version: &'a str,
    /// The version that keeps running.
    pub running: &'a str,
    /// Why it was refused.
    pub reason: &'a str,
}

impl Event for ReloadRejected<'_> {
    fn emit(self) {
        tracing::warn!(
            target: TARGET,
            pipeline = self.pipeline,
            operator = self.operator,
            plugin = self.plugin,
            version = self.version,
            running = self.running,
            "hot reload rejected: {}. Version {} keeps running; fix the plugin and copy it again",
            self.reason,
            self.running
        );
        count(self.pipeline, self.operator, "rejected");
    }
}

/// A new version passed validation and is offered to the subtasks. Not
/// counted yet: it may still be rolled back during its probation.
#[derive(Debug)]
pub struct ReloadAccepted<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// Plugin name.
    pub plugin: &'a str,
    /// The version that ran.
    pub from: &'a str,
    /// The new version.
    pub to: &'a str,
    /// Compile (or cache load) and link time, ms.
    pub load_ms: u64,
    /// The compiled code came from the on-disk cache.
    pub cached: bool,
    /// Instantiate-and-open time of every subtask, ms.
    pub open_ms: u64,
    /// When it is swapped in, in words ("at the next batch boundary").
    pub when: &'a str,
}

impl Event for ReloadAccepted<'_> {
    fn emit(self) {
        tracing::info!(
            target: TARGET,
            pipeline = self.pipeline,
            operator = self.operator,
            plugin = self.plugin,
            from = self.from,
            to = self.to,
            load_ms = self.load_ms,
            cached = self.cached,
            open_ms = self.open_ms,
            "hot reload accepted: version {} validated; swapping it in {}",
            self.to,
            self.when
        );
    }
}

/// Every subtask of the operator runs the new version.
#[derive(Debug)]
pub struct ReloadDone<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// The version.
    pub version: &'a str,
    /// Subtasks.
    pub subtasks: u32,
    /// Its `migrate` hook was called.
    pub migrated: bool,
    /// From the last write to the file to the last subtask swapping, ms.
    pub latency_ms: u64,
}

impl Event for ReloadDone<'_> {
    fn emit(self) {
        tracing::info!(
            target: TARGET,
            pipeline = self.pipeline,
            operator = self.operator,
            version = self.version,
            subtasks = self.subtasks,
            migrated = self.migrated,
            latency_ms = self.latency_ms,
            "hot reload done: every subtask runs version {} with the operator's state",
            self.version
        );
    }
}

/// An accepted version can no longer be rolled back: counted as
/// `accepted`.
#[derive(Debug)]
pub struct ReloadKept<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// The version.
    pub version: &'a str,
    /// Why it is final: it passed its probation on every subtask, a newer
    /// version replaced it, or the run ended.
    pub why: &'a str,
}

impl Event for ReloadKept<'_> {
    fn emit(self) {
        tracing::debug!(target: TARGET, pipeline = self.pipeline, operator = self.operator, version = self.version, "hot reload of version {} is final: {}", self.version, self.why);
        count(self.pipeline, self.operator, "accepted");
    }
}

/// A new version failed during its probation; the previous one runs again
/// with the operator's state.
#[derive(Debug)]
pub struct ReloadRolledBack<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name.
    pub operator: &'a str,
    /// Plugin name.
    pub plugin: &'a str,
    /// The version that failed.
    pub failed: &'a str,
    /// The version running again.
    pub restored: &'a str,
    /// What failed.
    pub reason: &'a str,
}

impl Event for ReloadRolledBack<'_> {
    fn emit(self) {
        tracing::error!(
            target: TARGET,
            pipeline = self.pipeline,
            operator = self.operator,
            plugin = self.plugin,
            failed = self.failed,
            restored = self.restored,
            "hot reload rolled back: version {} failed during its probation ({}); version {} runs again with the operator's state. Fix the plugin and copy it again",
            self.failed,
            self.reason,
            self.restored
        );
        count(self.pipeline, self.operator, "rolled_back");
    }
}

/// At start, an operator's plugin file did not load, or holds a version hot
/// reload had refused: the operator runs the last version that ran well,
/// kept beside the checkpoints.
#[derive(Debug)]
pub struct PluginFallback<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Operator name, or `sources.NAME` / `sinks.NAME` for a source or
    /// sink written as a plugin.
    pub operator: &'a str,
    /// The plugin file in the plugin directory.
    pub file: &'a std::path::Path,
    /// Why it is not used.
    pub reason: &'a str,
    /// The version that runs instead.
    pub version: &'a str,
    /// Where that version is kept.
    pub kept: &'a std::path::Path,
}

impl Event for PluginFallback<'_> {
    fn emit(self) {
        tracing::warn!(
            target: TARGET,
            pipeline = self.pipeline,
            operator = self.operator,
            version = self.version,
            "{} runs its last good version {} (kept at {}) instead of {}: {}. Fix or replace the file; \
             hot reload picks it up",
            who(self.operator),
            self.version,
            self.kept.display(),
            self.file.display(),
            self.reason
        );
    }
}

/// "operator `parse`", or "[sources.numbers]" for a source or sink.
fn who(name: &str) -> String {
    if name.starts_with("sources.") || name.starts_with("sinks.") { format!("[{name}]") } else { format!("operator `{name}`") }
}
