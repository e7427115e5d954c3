//! A handle on a running pipeline, for whoever started it: the live
//! metrics and bottleneck analysis, checkpoint statistics, the plugins in
//! use, savepoints and checkpoints on demand, and a graceful stop.
//!
//! [`crate::run()`] takes an optional [`RunHandle`] in its
//! [`crate::RunOptions`] and reports through it while it runs; `weir
//! serve` keeps one per pipeline, and the control socket of `weir run`
//! answers `weir status` from the same handle. The handle is cheap to
//! clone and every method is safe to call from any thread, before, during
//! and after the run.

use crate::checkpoints::{CheckpointStats, Coordinator, SavepointReply};
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use weir_metrics::{Monitor, Snapshot, Timeline};

/// A checkpoint wanted by the user, not by the interval.
#[derive(Debug)]
pub enum Request {
    /// A savepoint (never deleted automatically); answered with its directory.
    Savepoint(SavepointReply),
    /// A checkpoint now, rather than at the next interval; answered with its directory.
    Checkpoint(SavepointReply),
}

/// A plugin a pipeline runs, by operator.
///
/// The `history` lists the versions the operator ran since the pipeline
/// started, oldest first; the last is the active one. Hot reload appends
/// to it; without reloads it holds the version loaded at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginUse {
    /// Operator name in the pipeline file.
    pub operator: String,
    /// Plugin name.
    pub plugin: String,
    /// The `.wasm` file.
    pub path: String,
    /// Versions, oldest first; the last is active.
    pub history: Vec<PluginVersion>,
}

/// One version of a plugin an operator ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// When it was loaded, seconds since the Unix epoch.
    pub loaded_at: u64,
    /// How it came: `start` (loaded when the pipeline started) or a reload.
    pub how: String,
}

/// Checkpoint figures of a running pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// Completed in this run.
    pub completed: u64,
    /// Failed in this run.
    pub failed: u64,
    /// Abandoned in this run because the input ended while they ran.
    #[serde(default)]
    pub abandoned: u64,
    /// Id of the last completed one.
    pub last_id: Option<u64>,
    /// Its duration in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Its size in bytes.
    pub last_bytes: Option<u64>,
    /// How long its barriers waited for alignment, in milliseconds.
    #[serde(default)]
    pub last_alignment_ms: Option<u64>,
    /// The checkpoint this run resumed from.
    pub restored_from: Option<u64>,
    /// A checkpoint that has been running for a while, and why it waits.
    #[serde(default)]
    pub waiting: Option<crate::waiting::CheckpointWait>,
    /// Bytes of in-flight records the last one persisted (unaligned).
    #[serde(default)]
    pub last_inflight_bytes: Option<u64>,
    /// The last completed ones, oldest first: the checkpoints table.
    #[serde(default)]
    pub recent: Vec<RecentCheckpoint>,
}

/// A completed checkpoint in [`CheckpointSummary::recent`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentCheckpoint {
    /// Its id.
    pub id: u64,
    /// From trigger to completion, in milliseconds.
    pub duration_ms: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Longest barrier alignment of any task, in milliseconds.
    pub alignment_ms: u64,
    /// Bytes of in-flight records it persisted.
    pub inflight_bytes: u64,
    /// Taken unaligned.
    pub unaligned: bool,
}

impl From<&CheckpointStats> for CheckpointSummary {
    fn from(s: &CheckpointStats) -> Self {
        Self {
            completed: s.completed,
            failed: s.failed,
            abandoned: s.abandoned,
            last_id: s.last.as_ref().map(|l| l.id),
            last_duration_ms: s.last.as_ref().map(|l| l.duration.as_millis() as u64),
            last_bytes: s.last.as_ref().map(|l| l.bytes),
            last_alignment_ms: s.last.as_ref().map(|l| l.alignment.as_millis() as u64),
            restored_from: s.restored_from,
            waiting: None,
            last_inflight_bytes: s.last.as_ref().map(|l| l.inflight_bytes),
            recent: s
                .recent
                .iter()
                .map(|l| RecentCheckpoint {
                    id: l.id,
                    duration_ms: l.duration.as_millis() as u64,
                    bytes: l.bytes,
                    alignment_ms: l.alignment.as_millis() as u64,
                    inflight_bytes: l.inflight_bytes,
                    unaligned: l.unaligned,
                })
                .collect(),
        }
    }
}

/// What `weir status` prints: the job graph with its figures, the
/// bottleneck, checkpoints and plugins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveStatus {
    /// Job graph, figures and bottleneck.
    pub snapshot: Snapshot,
    /// Checkpoints of this run (`None`: checkpointing is off).
    pub checkpoints: Option<CheckpointSummary>,
    /// Plugins by operator.
    pub plugins: Vec<PluginUse>,
}

struct Live {
    monitor: Arc<Monitor>,
    checkpoints: Option<Arc<Mutex<CheckpointStats>>>,
}

struct Inner {
    stop: AtomicBool,
    kill: AtomicBool,
    live: Mutex<Option<Live>>,
    plugins: Mutex<Vec<PluginUse>>,
    requests: (Sender<Request>, Receiver<Request>),
    reload: crate::reload::ReloadHandle,
}

/// A handle on one run of a pipeline (see the module docs).
#[derive(Clone)]
pub struct RunHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle").field("stop", &self.inner.stop).field("running", &self.is_running()).finish()
    }
}

impl Default for RunHandle {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                stop: AtomicBool::new(false),
                kill: AtomicBool::new(false),
                live: Mutex::new(None),
                plugins: Mutex::new(Vec::new()),
                requests: crossbeam_channel::unbounded(),
                reload: crate::reload::ReloadHandle::default(),
            }),
        }
    }
}

impl RunHandle {
    /// A new handle, to pass in [`crate::RunOptions::handle`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop gracefully: a checkpoint is taken, sinks
    /// commit it, and the run ends (returns `Ok`). A later run resumes from
    /// that checkpoint. Without checkpoints the run is cancelled.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
    }

    /// Ends the run at once, without a final checkpoint (a later run
    /// resumes from the last completed one).
    pub fn kill(&self) {
        self.inner.kill.store(true, Ordering::Release);
        self.inner.stop.store(true, Ordering::Release);
    }

    /// True once [`RunHandle::stop`] or [`RunHandle::kill`] was called.
    pub fn stop_requested(&self) -> bool {
        self.inner.stop.load(Ordering::Acquire)
    }

    pub(crate) fn kill_requested(&self) -> bool {
        self.inner.kill.load(Ordering::Acquire)
    }

    /// True while the tasks run.
    pub fn is_running(&self) -> bool {
        self.inner.live.lock().expect("handle lock").is_some()
    }

    /// Asks for a savepoint; the answer (its directory, or why not) comes
    /// on the returned channel.
    pub fn savepoint(&self) -> Receiver<Result<PathBuf, String>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = self.inner.requests.0.send(Request::Savepoint(tx));
        rx
    }

    /// Asks for a checkpoint now; the answer comes on the returned channel.
    pub fn checkpoint(&self) -> Receiver<Result<PathBuf, String>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = self.inner.requests.0.send(Request::Checkpoint(tx));
        rx
    }

    pub(crate) fn requests(&self) -> &Receiver<Request> {
        &self.inner.requests.1
    }

    pub(crate) fn attach(&self, monitor: Arc<Monitor>, checkpoints: Option<Arc<Mutex<CheckpointStats>>>, plugins: Vec<PluginUse>) {
        *self.inner.plugins.lock().expect("handle lock") = plugins;
        *self.inner.live.lock().expect("handle lock") = Some(Live { monitor, checkpoints });
    }

    /// Reports a run through this handle until the guard is dropped.
    pub(crate) fn attach_guard(&self, monitor: Arc<Monitor>, checkpoints: Option<Arc<Mutex<CheckpointStats>>>, plugins: Vec<PluginUse>) -> Attached {
        self.attach(monitor, checkpoints, plugins);
        Attached(self.clone())
    }

    /// Called by the run's supervising loop: forwards checkpoint requests
    /// to the coordinator, starts a graceful stop, or cancels the tasks.
    pub(crate) fn drive(&self, coordinator: Option<&mut Coordinator>, cancel: &AtomicBool, stopping: &mut bool) {
        match coordinator {
            Some(c) => {
                while let Ok(r) = self.requests().try_recv() {
                    match r {
                        Request::Savepoint(reply) => c.request_savepoint(reply),
                        Request::Checkpoint(reply) => c.request_checkpoint(reply),
                    }
                }
                if self.stop_requested() && !*stopping {
                    *stopping = true;
                    if !c.request_stop() {
                        tracing::info!("stop requested while the final checkpoint is taken; the run ends with it");
                    }
                }
            }
            None => {
                while let Ok(r) = self.requests().try_recv() {
                    let (Request::Savepoint(reply) | Request::Checkpoint(reply)) = r;
                    let _ = reply.send(Err("this pipeline takes no checkpoints (checkpoint.interval = \"off\")".into()));
                }
                if self.stop_requested() && !*stopping {
                    *stopping = true;
                    tracing::warn!("stopping a pipeline that takes no checkpoints: its tasks are cancelled, and sinks publish nothing more");
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        if self.kill_requested() {
            cancel.store(true, Ordering::Relaxed);
        }
    }

    /// The run ended: no more live figures; pending requests are refused.
    pub(crate) fn detach(&self) {
        *self.inner.live.lock().expect("handle lock") = None;
        while let Ok(r) = self.inner.requests.1.try_recv() {
            let (Request::Savepoint(reply) | Request::Checkpoint(reply)) = r;
            let _ = reply.send(Err("the pipeline is not running".into()));
        }
    }

    /// The live picture, `None` when not running.
    pub fn status(&self) -> Option<LiveStatus> {
        let live = self.inner.live.lock().expect("handle lock");
        let live = live.as_ref()?;
        let mut snapshot = live.monitor.snapshot();
        let checkpoints = live.checkpoints.as_ref().map(|c| {
            let stats = c.lock().expect("stats lock");
            let mut summary = CheckpointSummary::from(&*stats);
            summary.waiting = stats.pending.as_ref().and_then(|p| waiting(p, &live.monitor, snapshot.bottleneck.task.as_deref()));
            summary
        });
        // The bottleneck sentence says it too: the first line users read.
        if let Some(w) = checkpoints.as_ref().and_then(|c| c.waiting.as_ref()) {
            snapshot.bottleneck.sentence = format!("{}; {}", snapshot.bottleneck.sentence, w.sentence);
        }
        Some(LiveStatus { snapshot, checkpoints, plugins: self.plugins() })
    }

    /// The last `seconds` seconds of every task, `None` when not running.
    pub fn timeline(&self, seconds: usize) -> Option<Timeline> {
        let live = self.inner.live.lock().expect("handle lock");
        live.as_ref().map(|l| l.monitor.timeline(seconds))
    }

    /// The plugins of the current (or last) run, by operator.
    pub fn plugins(&self) -> Vec<PluginUse> {
        let mut uses = self.inner.plugins.lock().expect("handle lock").clone();
        // Versions swapped in by hot reload since the start, in order; a
        // rolled-back one is followed by the version that runs again.
        for event in self.inner.reload.status().history {
            let Some(u) = uses.iter_mut().find(|u| u.operator == event.operator) else { continue };
            let (hash, how) = match event.outcome {
                crate::reload::Outcome::Accepted => (event.to, "reload"),
                crate::reload::Outcome::RolledBack => (event.from, "rollback"),
                crate::reload::Outcome::Rejected => continue,
            };
            u.history.push(PluginVersion { hash, loaded_at: event.live_at_ms.unwrap_or(event.at_ms) / 1000, how: how.to_owned() });
        }
        uses
    }

    /// The run's hot-reload view: plugin versions per subtask, the reload
    /// history, manual reloads; the run fills it in.
    pub fn reload(&self) -> &crate::reload::ReloadHandle {
        &self.inner.reload
    }
}

/// Explains a pending checkpoint from the monitor's live figures.
fn waiting(p: &crate::checkpoints::PendingCheckpoint, monitor: &Monitor, bottleneck: Option<&str>) -> Option<crate::waiting::CheckpointWait> {
    if p.started.elapsed() < crate::waiting::REPORTED_AFTER {
        return None;
    }
    let samples = monitor.tasks();
    let figures: Vec<crate::waiting::TaskFigures<'_>> = monitor
        .registry()
        .tasks
        .iter()
        .zip(&samples)
        .map(|(t, s)| crate::waiting::TaskFigures { chain: t.chain, name: &t.chain_name, subtask: t.subtask, queued_records: t.metrics.queued_records(), rate: s.records_in })
        .collect();
    crate::waiting::explain(p, &monitor.graph(), &figures, bottleneck, p.unaligned_mode)
}

/// Detaches its handle from the run when dropped (whatever way the run ends).
pub(crate) struct Attached(RunHandle);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// The plugins of a pipeline as loaded at start.
pub(crate) fn plugins_at_start(p: &crate::Pipeline, plugins: &crate::LoadedPlugins) -> Vec<PluginUse> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    p.operators
        .iter()
        .zip(&plugins.plugins)
        .map(|(op, plugin)| PluginUse {
            operator: op.name.clone(),
            plugin: plugin.name.clone(),
            path: plugin.path.display().to_string(),
            history: vec![PluginVersion { hash: plugin.hash.clone(), loaded_at: now, how: "start".into() }],
        })
        .collect()
}
