//! Hot reload of a running pipeline's plugins: the manager that connects
//! the plugin-directory watcher, background validation and the swap in the
//! tasks, and the public view of it ([`ReloadHandle`]).
//!
//! A pipeline's `reload` policy decides what starts a reload:
//!
//! * `auto` (default): the plugin directory is watched; a new complete
//!   `.wasm` file for a plugin an operator uses is validated in the
//!   background and swapped in at each subtask's next batch boundary;
//! * `on-checkpoint`: the same, but swapped in at the next checkpoint
//!   barrier, a consistent cut of the whole stream;
//! * `manual`: nothing is watched; `weir reload PIPELINE` (or
//!   [`ReloadHandle::request_reload`]) reads the plugin files now and swaps
//!   in what changed, at the next batch boundary.
//!
//! Every attempt is one [`ReloadEvent`] in the history: `rejected` with the
//! reason (the old version keeps running), `accepted` (validated and
//! offered to the subtasks; `swapped` counts the subtasks that took it), or
//! `rolled-back` when the new version failed during its probation. Each
//! attempt is also a log line and counts once in `weir_plugin_reloads_total`
//! under the outcome the history ends up showing: a rejection at once, an
//! accepted version only when it can no longer be rolled back (it passed
//! its probation on every subtask, a newer version replaced it, or the run
//! ended), so a version that is rolled back counts as `rolled_back` only.
//! `weir_operator_plugin_version` shows the active version per operator.
//!
//! [`ReloadHandle`] is the public, thread-safe view for other front ends
//! (`weir plugins`, the REST API): every [`crate::RunHandle`] carries one
//! ([`crate::RunHandle::reload`]); pass the run handle in
//! [`crate::RunOptions::handle`] and read [`ReloadHandle::status`] while
//! the pipeline runs.
//!
//! ```
//! let run = weir_pipeline::RunHandle::new();
//! let handle = run.reload().clone();
//! let options = weir_pipeline::RunOptions { handle: Some(run), ..Default::default() };
//! // std::thread::spawn(move || weir_pipeline::run(&pipeline, &engine, &options));
//! let status = handle.status();
//! assert!(status.operators.is_empty(), "nothing runs yet");
//! # let _ = options;
//! ```

use crate::config::{Pipeline, ReloadPolicy};
use crate::vault::PluginVault;
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_task::{Probation, ReloadSlot, SwapAt, SwapReport};
use weir_wasm::reload::{prepare, short, Candidate, ConnectorSwaps, PluginWatcher, Target};
use weir_wasm::{Engine, Limits, Plugin};

/// Reload attempts kept in the history.
pub const HISTORY: usize = 200;

/// What started a reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The plugin directory watcher saw a new file.
    Watcher,
    /// `weir reload` or the API.
    Command,
}

/// How a reload attempt ended (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Validated and offered to the subtasks (see `swapped`).
    Accepted,
    /// Refused by validation; the old version keeps running.
    Rejected,
    /// Swapped in, then failed during its probation: the previous version
    /// runs again.
    RolledBack,
}

impl Outcome {
    /// `accepted`, `rejected`, `rolled-back`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::RolledBack => "rolled-back",
        }
    }
}

/// One reload attempt of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadEvent {
    /// Sequence number in this run, from 1.
    pub id: u64,
    /// When the attempt started, ms since the Unix epoch.
    pub at_ms: u64,
    /// Operator, or `sources.NAME` / `sinks.NAME` for a source or sink written as a plugin.
    pub operator: String,
    /// Plugin name.
    pub plugin: String,
    /// The plugin file.
    pub file: PathBuf,
    /// Version that ran before (SHA-256 hex).
    pub from: String,
    /// Version tried (SHA-256 hex).
    pub to: String,
    /// What started it.
    pub trigger: Trigger,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was rejected or rolled back (empty otherwise).
    pub reason: String,
    /// Compile (or cache load) and link time, ms.
    pub load_ms: u64,
    /// Whether the compiled code came from the on-disk cache.
    pub cached: bool,
    /// Instantiate-and-open time for all subtasks, ms.
    pub open_ms: u64,
    /// Subtasks that swapped to the new version.
    pub swapped: u32,
    /// Subtasks of the operator.
    pub parallelism: u32,
    /// The new version's `migrate` hook was called.
    pub migrated: bool,
    /// From the last write to the file to the last subtask running the new
    /// version, ms (once every subtask swapped).
    pub swap_latency_ms: Option<u64>,
    /// When the last subtask started running the new version, ms since the
    /// Unix epoch (once every subtask swapped).
    pub live_at_ms: Option<u64>,
    /// Longest time a subtask's data flow stopped for the swap (state
    /// hand-over and `migrate`), microseconds.
    pub pause_us: u64,
    /// Failures of the new version during its probation.
    pub failures: u32,
}

impl ReloadEvent {
    /// A new attempt of `operator` (or `sources.NAME`, `sinks.NAME`) to
    /// run candidate `c` instead of version `from`: accepted until it is
    /// known otherwise.
    fn attempt(id: u64, operator: &str, c: &Candidate, from: &str, trigger: Trigger, parallelism: u32) -> Self {
        Self {
            id,
            at_ms: now_ms(),
            operator: operator.to_owned(),
            plugin: c.name.clone(),
            file: c.path.clone(),
            from: from.to_owned(),
            to: c.hash.clone(),
            trigger,
            outcome: Outcome::Accepted,
            reason: String::new(),
            load_ms: 0,
            cached: false,
            open_ms: 0,
            swapped: 0,
            parallelism,
            migrated: false,
            swap_latency_ms: None,
            live_at_ms: None,
            pause_us: 0,
            failures: 0,
        }
    }
}

/// The plugin version an operator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorVersion {
    /// Operator.
    pub operator: String,
    /// Plugin name.
    pub plugin: String,
    /// The plugin file.
    pub file: PathBuf,
    /// The active version (SHA-256 hex): the one loaded at start or the
    /// last one accepted and not rolled back.
    pub version: String,
    /// The version each subtask runs right now.
    pub subtasks: Vec<String>,
    /// When the active version became active, ms since the Unix epoch.
    pub since_ms: u64,
}

/// A pipeline's plugin versions and reload history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Pipeline name (empty before the run starts).
    pub pipeline: String,
    /// `auto`, `on-checkpoint` or `manual`.
    pub policy: String,
    /// The watched directory (`None` with `manual`).
    pub watching: Option<PathBuf>,
    /// Per operator.
    pub operators: Vec<OperatorVersion>,
    /// The last [`HISTORY`] attempts, oldest first.
    pub history: Vec<ReloadEvent>,
}

enum Command {
    Reload { operator: Option<String>, reply: Sender<Result<Vec<ReloadEvent>, String>> },
}

#[derive(Default)]
struct Shared {
    status: ReloadStatus,
    commands: Option<Sender<Command>>,
}

/// The public view of a running pipeline's hot reload: versions, history,
/// and manual reloads. Cheap to clone; usable from any thread.
#[derive(Clone, Default)]
pub struct ReloadHandle {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for ReloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadHandle").finish_non_exhaustive()
    }
}

impl ReloadHandle {
    /// A snapshot of versions and history.
    pub fn status(&self) -> ReloadStatus {
        self.shared.lock().expect("reload status").status.clone()
    }

    /// Reads the plugin files of `operator` (all operators with `None`)
    /// now, validates what changed and swaps it in at the next batch
    /// boundary. Returns the attempts made (none when nothing changed).
    /// Blocks while validating (a cold compile of a large component takes
    /// seconds).
    pub fn request_reload(&self, operator: Option<&str>) -> Result<Vec<ReloadEvent>, String> {
        let commands = self.shared.lock().expect("reload status").commands.clone().ok_or("the pipeline is not running")?;
        let (reply, rx) = crossbeam_channel::bounded(1);
        commands.send(Command::Reload { operator: operator.map(str::to_owned), reply }).map_err(|_| "the pipeline is stopping".to_owned())?;
        rx.recv_timeout(Duration::from_secs(600)).map_err(|_| "the pipeline stopped before the reload was done".to_owned())?
    }

    fn update(&self, f: impl FnOnce(&mut ReloadStatus)) {
        f(&mut self.shared.lock().expect("reload status").status);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the manager knows of one operator.
pub(crate) struct ManagedOperator {
    pub index: usize,
    pub slot: Arc<ReloadSlot>,
    pub targets: Vec<Target>,
    pub current: Arc<Plugin>,
    pub previous: Option<Arc<Plugin>>,
    /// History id and file-change time of the attempt being swapped in.
    pending: Option<(u64, Instant)>,
    /// The accepted version that may still be rolled back, and the subtasks
    /// where it passed its probation: counted once it is final.
    unsettled: Option<(String, BTreeSet<u32>)>,
}

impl ManagedOperator {
    pub(crate) fn new(index: usize, slot: Arc<ReloadSlot>, targets: Vec<Target>, current: Arc<Plugin>) -> Self {
        Self { index, slot, targets, current, previous: None, pending: None, unsettled: None }
    }
}

/// The running manager; stops when dropped.
pub(crate) struct Manager {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _watcher: Option<PluginWatcher>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How instances of operator `op` are opened, per subtask.
pub(crate) fn targets(p: &Pipeline, op_index: usize, parallelism: u32) -> Vec<Target> {
    let limits: Limits = p.operators[op_index].limits.or(p.limits);
    (0..parallelism)
        .map(|subtask| Target { info: crate::run::nodes::instance_info(p, op_index, subtask, parallelism), limits })
        .collect()
}

/// A source or sink whose connector is a plugin: `sources.NAME` or
/// `sinks.NAME`, `"source"` or `"sink"`, its plugin and parallelism.
#[derive(Debug, Clone)]
pub(crate) struct ManagedConnector {
    pub section: String,
    pub kind: &'static str,
    pub plugin: String,
    pub parallelism: u32,
}

struct Worker {
    pipeline: Pipeline,
    engine: Engine,
    handle: ReloadHandle,
    operators: Vec<ManagedOperator>,
    connectors: Vec<ManagedConnector>,
    /// Where new versions of the connectors' plugins are offered.
    swaps: Arc<ConnectorSwaps>,
    trigger: Option<Arc<AtomicU64>>,
    next_id: u64,
    history: VecDeque<ReloadEvent>,
    /// The last good version of each operator, source and sink plugin,
    /// for the next start.
    vault: Option<PluginVault>,
}

/// Starts the manager for `operators` (whose slots the stages poll).
/// `trigger` is the checkpoint coordinator's trigger counter (for
/// `on-checkpoint`). `reports` is the receiving end of the slots' channel.
pub(crate) fn start(
    p: &Pipeline,
    engine: &Engine,
    handle: &ReloadHandle,
    operators: Vec<ManagedOperator>,
    connectors: (Vec<ManagedConnector>, Arc<ConnectorSwaps>),
    reports: Receiver<(String, SwapReport)>,
    trigger: Option<Arc<AtomicU64>>,
) -> Result<Manager, String> {
    let (cand_tx, candidates) = crossbeam_channel::unbounded::<Candidate>();
    let watcher = match p.reload.policy {
        ReloadPolicy::Manual => None,
        ReloadPolicy::Auto | ReloadPolicy::OnCheckpoint if !p.plugin_dir.is_dir() => {
            tracing::warn!(pipeline = %p.name, dir = %p.plugin_dir.display(), "the plugin directory does not exist; hot reload is off for this run");
            None
        }
        ReloadPolicy::Auto | ReloadPolicy::OnCheckpoint => {
            Some(PluginWatcher::start(&p.plugin_dir, p.reload.debounce, move |c| cand_tx.send(c).is_ok())?)
        }
    };
    let (cmd_tx, commands) = crossbeam_channel::unbounded();
    {
        let mut shared = handle.shared.lock().expect("reload status");
        shared.commands = Some(cmd_tx);
        shared.status = ReloadStatus {
            pipeline: p.name.clone(),
            policy: p.reload.policy.as_str().to_owned(),
            watching: watcher.as_ref().map(|_| p.plugin_dir.clone()),
            operators: operators
                .iter()
                .map(|m| OperatorVersion {
                    operator: p.operators[m.index].name.clone(),
                    plugin: m.current.name.clone(),
                    file: m.current.path.clone(),
                    version: m.current.hash.clone(),
                    subtasks: m.slot.running(),
                    since_ms: now_ms(),
                })
                .collect(),
            history: Vec::new(),
        };
    }
    for m in &operators {
        version_metric(&p.name, &p.operators[m.index].name, &m.current, true);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (connectors, swaps) = connectors;
    let mut worker = Worker {
        pipeline: p.clone(),
        engine: engine.clone(),
        handle: handle.clone(),
        operators,
        connectors,
        swaps,
        trigger,
        next_id: 1,
        history: VecDeque::new(),
        vault: PluginVault::of(p),
    };
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("weir-reload".into())
            .spawn(move || {
                // A channel whose senders are gone (no watcher under
                // `manual`, no operator sending reports) is replaced by one
                // that never fires: a closed channel is always ready, and
                // selecting on it would spin a core.
                let (mut candidates, mut commands, mut reports) = (candidates, commands, reports);
                while !stop.load(Ordering::Relaxed) {
                    crossbeam_channel::select! {
                        recv(candidates) -> c => match c {
                            Ok(c) => worker.candidate(&c, Trigger::Watcher),
                            Err(_) => candidates = crossbeam_channel::never(),
                        },
                        recv(commands) -> c => match c {
                            Ok(Command::Reload { operator, reply }) => { let _ = reply.send(worker.command(operator.as_deref())); }
                            Err(_) => commands = crossbeam_channel::never(),
                        },
                        recv(reports) -> r => match r {
                            Ok((op, r)) => worker.report(&op, r),
                            Err(_) => reports = crossbeam_channel::never(),
                        },
                        default(Duration::from_millis(100)) => {}
                    }
                }
                worker.handle.shared.lock().expect("reload status").commands = None;
                worker.finish();
            })
            .map_err(|e| format!("cannot start the reload thread: {e}"))?
    };
    Ok(Manager { stop, thread: Some(thread), _watcher: watcher })
}

fn version_metric(pipeline: &str, operator: &str, plugin: &Plugin, active: bool) {
    weir_events::emit(weir_events::PluginVersion { pipeline, operator, plugin: &plugin.name, version: short(&plugin.hash), active });
}

impl Worker {
    fn operator_name(&self, i: usize) -> &str {
        &self.pipeline.operators[self.operators[i].index].name
    }

    /// A manual reload: re-reads the plugin file of each (or one) operator.
    fn command(&mut self, operator: Option<&str>) -> Result<Vec<ReloadEvent>, String> {
        if let Some(name) = operator
            && !self.pipeline.operators.iter().any(|o| o.name == name)
        {
            let names: Vec<&str> = self.pipeline.operators.iter().map(|o| o.name.as_str()).collect();
            return Err(format!("pipeline `{}` has no operator `{name}`; its operators: {}", self.pipeline.name, names.join(", ")));
        }
        let mut events = Vec::new();
        for i in 0..self.operators.len() {
            if operator.is_some_and(|o| o != self.operator_name(i)) {
                continue;
            }
            let index = self.operators[i].index;
            let file = match crate::config::find_plugin(&self.pipeline.plugin_dir, &self.pipeline.operators[index].plugin) {
                Some(f) => f,
                None => return Err(format!("no plugin `{}` in {} any more", self.pipeline.operators[index].plugin, self.pipeline.plugin_dir.display())),
            };
            let c = Candidate::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            if let Some(e) = self.attempt(i, &c, Trigger::Command) {
                events.push(e);
            }
        }
        Ok(events)
    }

    /// A new file from the watcher: every operator, source and sink using
    /// that plugin.
    fn candidate(&mut self, c: &Candidate, trigger: Trigger) {
        // A plugin is named with `-` or `_` alike; `c.name` reads `_` as `-`.
        let runs = |plugin: &str| plugin.replace('_', "-") == c.name;
        let p = &self.pipeline;
        let users: Vec<usize> = (0..self.operators.len()).filter(|&i| runs(&p.operators[self.operators[i].index].plugin)).collect();
        let connectors: Vec<ManagedConnector> = self.connectors.iter().filter(|m| runs(&m.plugin)).cloned().collect();
        if users.is_empty() && connectors.is_empty() {
            tracing::debug!(plugin = %c.name, pipeline = %p.name, "a plugin file changed that this pipeline does not use");
        }
        for i in users {
            self.attempt(i, c, trigger);
        }
        for m in &connectors {
            self.attempt_connector(m, c, trigger);
        }
    }

    /// Validates `c` for a source or sink (it compiles, and is of the
    /// section's world) and offers it to its subtasks, which open it
    /// themselves at their next safe point (their position or pending
    /// epoch belongs to the running instance).
    fn attempt_connector(&mut self, m: &ManagedConnector, c: &Candidate, trigger: Trigger) {
        let pipeline = self.pipeline.name.clone();
        let running = self.swaps.running(&m.section).unwrap_or_default();
        if c.hash == running {
            tracing::debug!(pipeline = %pipeline, connector = %m.section, version = short(&c.hash), "the plugin file holds the version already running; nothing to do");
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut event = ReloadEvent::attempt(id, &m.section, c, &running, trigger, m.parallelism);
        let loaded = self.engine.load_bytes(&c.name, &c.path, &c.bytes).map_err(|e| e.to_string());
        match loaded.and_then(|plugin| weir_wasm::check_connector_kind(&plugin, m.kind).map(|()| plugin)) {
            Err(reason) => {
                event.outcome = Outcome::Rejected;
                event.reason = reason;
                // A restart runs the last good version, not this file.
                self.keep(&m.section, |v| v.mark_bad(&m.section, &c.hash));
                weir_events::emit(weir_events::ReloadRejected {
                    pipeline: &pipeline,
                    operator: &m.section,
                    plugin: &c.name,
                    version: short(&c.hash),
                    running: short(&running),
                    reason: &event.reason,
                });
            }
            Ok(plugin) => {
                event.load_ms = plugin.load_time.as_millis() as u64;
                event.cached = plugin.from_cache;
                // Kept for the subtasks to mark good once it proved itself.
                self.keep(&m.section, |v| v.store(&c.hash, &c.bytes));
                self.swaps.offer(&m.section, Arc::new(plugin));
                let when = match (m.kind, self.pipeline.checkpoint.interval.is_some()) {
                    ("source", true) => "after each subtask's next snapshot (at the next checkpoint), restored to the position it took",
                    ("source", false) => "at each subtask's next poll, restored to the position the running version reports",
                    (_, true) => "after each subtask's next pre-commit (at the next checkpoint); the new version commits that epoch",
                    (_, false) => "at each subtask's next write, after the running version flushed what it holds",
                };
                weir_events::emit(weir_events::ConnectorPluginChanged { pipeline: &pipeline, connector: &m.section, plugin: &c.name, version: short(&c.hash), when });
            }
        }
        self.push(event);
    }

    fn push(&mut self, e: ReloadEvent) {
        self.history.push_back(e);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let history: Vec<ReloadEvent> = self.history.iter().cloned().collect();
        self.handle.update(|s| s.history = history);
    }

    fn edit(&mut self, id: u64, f: impl FnOnce(&mut ReloadEvent)) -> Option<ReloadEvent> {
        let e = self.history.iter_mut().find(|e| e.id == id)?;
        f(e);
        let copy = e.clone();
        let history: Vec<ReloadEvent> = self.history.iter().cloned().collect();
        self.handle.update(|s| s.history = history);
        Some(copy)
    }

    /// Validates `c` for operator `i` and offers it; `None` when it is the
    /// version already running.
    fn attempt(&mut self, i: usize, c: &Candidate, trigger: Trigger) -> Option<ReloadEvent> {
        let pipeline = self.pipeline.name.clone();
        let operator = self.operator_name(i).to_owned();
        let m = &self.operators[i];
        if c.hash == m.current.hash {
            tracing::debug!(pipeline = %pipeline, operator = %operator, version = short(&c.hash), "the plugin file holds the version already running; nothing to do");
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut event = ReloadEvent::attempt(id, &operator, c, &m.current.hash, trigger, m.targets.len() as u32);
        match prepare(&self.engine, c, &m.targets) {
            Err(rejection) => {
                event.outcome = Outcome::Rejected;
                event.reason = rejection.reason.clone();
                self.keep(&operator, |v| v.mark_bad(&operator, &c.hash));
                weir_events::emit(weir_events::ReloadRejected {
                    pipeline: &pipeline,
                    operator: &operator,
                    plugin: &c.name,
                    version: short(&c.hash),
                    running: short(&m.current.hash),
                    reason: &rejection.reason,
                });
            }
            Ok(prepared) => {
                self.keep(&operator, |v| v.store(&c.hash, &c.bytes));
                event.load_ms = prepared.load_time.as_millis() as u64;
                event.cached = prepared.plugin.from_cache;
                event.open_ms = prepared.open_time.as_millis() as u64;
                let at = match (self.pipeline.reload.policy, &self.trigger) {
                    (ReloadPolicy::OnCheckpoint, Some(t)) => SwapAt::Checkpoint(t.load(Ordering::Acquire) + 1),
                    _ => SwapAt::NextBatch,
                };
                let probation = Probation { batches: self.pipeline.reload.probation_batches, max_failures: self.pipeline.reload.max_failures };
                let m = &mut self.operators[i];
                m.slot.offer(prepared.plugin.clone(), m.current.clone(), prepared.instances, m.targets.clone(), at, probation);
                version_metric(&pipeline, &operator, &m.current, false);
                version_metric(&pipeline, &operator, &prepared.plugin, true);
                m.previous = Some(std::mem::replace(&mut m.current, prepared.plugin.clone()));
                m.pending = Some((id, c.changed_at));
                // The version this one replaces can no longer be rolled back.
                let replaced = m.unsettled.replace((prepared.plugin.hash.clone(), BTreeSet::new()));
                if let Some((version, _)) = replaced {
                    weir_events::emit(weir_events::ReloadKept { pipeline: &pipeline, operator: &operator, version: short(&version), why: "a newer version replaced it" });
                }
                weir_events::emit(weir_events::ReloadAccepted {
                    pipeline: &pipeline,
                    operator: &operator,
                    plugin: &c.name,
                    from: short(&event.from),
                    to: short(&event.to),
                    load_ms: event.load_ms,
                    cached: event.cached,
                    open_ms: event.open_ms,
                    when: &match at {
                        SwapAt::NextBatch => "at the next batch boundary".to_owned(),
                        SwapAt::Checkpoint(id) => format!("at checkpoint {id}"),
                    },
                });
                let (file, version, since) = (prepared.plugin.path.clone(), prepared.plugin.hash.clone(), now_ms());
                self.handle.update(|s| {
                    if let Some(o) = s.operators.iter_mut().find(|o| o.operator == operator) {
                        o.file = file;
                        o.version = version;
                        o.since_ms = since;
                    }
                });
            }
        }
        self.push(event.clone());
        Some(event)
    }

    fn report(&mut self, operator: &str, r: SwapReport) {
        let Some(i) = (0..self.operators.len()).find(|&i| self.operator_name(i) == operator) else { return };
        let pipeline = self.pipeline.name.clone();
        let running = self.operators[i].slot.running();
        self.handle.update(|s| {
            if let Some(o) = s.operators.iter_mut().find(|o| o.operator == operator) {
                o.subtasks = running.clone();
            }
        });
        let pending = self.operators[i].pending;
        match r {
            SwapReport::Swapped { subtask, to, migrated, at, pause, .. } => {
                let Some((id, changed_at)) = pending else { return };
                let parallelism = running.len() as u32;
                let all = running.iter().all(|v| *v == to);
                let e = self.edit(id, |e| {
                    if e.to == to {
                        e.swapped += 1;
                        e.migrated |= migrated;
                        e.pause_us = e.pause_us.max(pause.as_micros() as u64);
                        if all {
                            e.swap_latency_ms = Some(at.saturating_duration_since(changed_at).as_millis() as u64);
                            e.live_at_ms = Some(now_ms().saturating_sub(at.elapsed().as_millis() as u64));
                        }
                    }
                });
                tracing::debug!(pipeline = %pipeline, operator, subtask, version = short(&to), migrated, "subtask swapped to the new version");
                if all && let Some(e) = e {
                    weir_events::emit(weir_events::ReloadDone {
                        pipeline: &pipeline,
                        operator,
                        version: short(&to),
                        subtasks: parallelism,
                        migrated: e.migrated,
                        latency_ms: e.swap_latency_ms.unwrap_or(0),
                    });
                }
            }
            SwapReport::Failed { subtask, version, error, rollback } => {
                if let Some((id, _)) = pending {
                    self.edit(id, |e| {
                        if e.to == version {
                            e.failures += 1;
                        }
                    });
                }
                tracing::warn!(pipeline = %pipeline, operator, subtask, version = short(&version), "the new plugin version failed during its probation: {error}");
                if rollback {
                    self.rolled_back(i, &version, &format!("subtask {subtask}: {error}"));
                }
            }
            SwapReport::Reverted { subtask, from, to } => {
                tracing::debug!(pipeline = %pipeline, operator, subtask, from = short(&from), to = short(&to), "subtask went back to the previous version");
            }
            SwapReport::Settled { subtask, version } => {
                tracing::debug!(pipeline = %pipeline, operator, subtask, version = short(&version), "the new version passed its probation on this subtask");
                let m = &mut self.operators[i];
                let subtasks = m.targets.len();
                if let Some((v, settled)) = &mut m.unsettled
                    && *v == version
                    && settled.insert(subtask)
                    && settled.len() >= subtasks
                {
                    m.unsettled = None;
                    weir_events::emit(weir_events::ReloadKept {
                        pipeline: &pipeline,
                        operator,
                        version: short(&version),
                        why: "it passed its probation on every subtask",
                    });
                    self.keep(operator, |v| v.mark_good(operator, &version));
                }
            }
        }
    }

    fn rolled_back(&mut self, i: usize, version: &str, reason: &str) {
        let pipeline = self.pipeline.name.clone();
        let operator = self.operator_name(i).to_owned();
        let m = &mut self.operators[i];
        if m.current.hash != version {
            return;
        }
        let Some(previous) = m.previous.take() else { return };
        version_metric(&pipeline, &operator, &m.current, false);
        version_metric(&pipeline, &operator, &previous, true);
        let failed = std::mem::replace(&mut m.current, previous.clone());
        m.unsettled = None;
        let pending = m.pending.take();
        self.keep(&operator, |v| v.mark_bad(&operator, &failed.hash));
        if let Some((id, _)) = pending {
            self.edit(id, |e| {
                e.outcome = Outcome::RolledBack;
                e.reason = reason.to_owned();
            });
        }
        weir_events::emit(weir_events::ReloadRolledBack {
            pipeline: &pipeline,
            operator: &operator,
            plugin: &failed.name,
            failed: short(&failed.hash),
            restored: short(&previous.hash),
            reason,
        });
        let (file, version, since) = (previous.path.clone(), previous.hash.clone(), now_ms());
        self.handle.update(|s| {
            if let Some(o) = s.operators.iter_mut().find(|o| o.operator == operator) {
                o.file = file;
                o.version = version;
                o.since_ms = since;
            }
        });
    }

    /// Records in the vault what a restart should run (best effort: the
    /// run goes on without it, with a warning).
    fn keep(&self, operator: &str, f: impl FnOnce(&PluginVault) -> std::io::Result<()>) {
        if let Some(v) = &self.vault
            && let Err(e) = f(v)
        {
            tracing::warn!(pipeline = %self.pipeline.name, operator, "cannot record the plugin versions to restart on beside the checkpoints: {e}");
        }
    }

    /// The run ends: accepted versions still on probation are final now.
    fn finish(&mut self) {
        for i in 0..self.operators.len() {
            if let Some((version, _)) = self.operators[i].unsettled.take() {
                weir_events::emit(weir_events::ReloadKept { pipeline: &self.pipeline.name, operator: self.operator_name(i), version: short(&version), why: "the run ended" });
            }
        }
    }
}
