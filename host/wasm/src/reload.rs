//! Hot reload, the engine's half: watching the plugin directory for new
//! versions, and validating a new version in the background.
//!
//! # Watching
//!
//! [`PluginWatcher`] watches one directory with `notify` (inotify on Linux)
//! through `notify-debouncer-full`, which pairs the two halves of a rename
//! and drops duplicate events. On top of that it waits for a path to be
//! *quiet*: a candidate is only read once no event arrived for it for the
//! `settle` time, and only reported when its size did not change while it
//! was read. So a file written in several pieces (a slow `cp`, a build
//! writing in place, ten rewrites a second) is considered once, complete,
//! and the last write wins. What is ignored:
//!
//! * names that do not end in `.wasm` (editors' and downloaders' temporary
//!   files: `x.wasm~`, `x.wasm.part`, `x.swp`, `4913`...);
//! * hidden names (`.x.wasm`, `.#x.wasm`): the usual way to install a file
//!   atomically is to write `.x.wasm.tmp` and rename it to `x.wasm`, which
//!   arrives here as one rename event for `x.wasm`;
//! * removals (the running version keeps running).
//!
//! A symlink in the directory is followed: replacing the link (`ln -sfn`)
//! is a new version. A change to the target of a link that lives in
//! another directory produces no event in this one and is not seen.
//!
//! A plugin is identified by its name (the file stem, `_` read as `-`) and
//! versioned by the SHA-256 of its bytes.
//!
//! # Validating
//!
//! [`prepare`] turns a candidate into instances ready to take over, on the
//! calling (background) thread, never on a task thread: compile it (through
//! the on-disk compile cache, so a version seen before loads in about a
//! millisecond), check it is a `weir:plugin/operator` component with the
//! exports weir calls, instantiate it under the operator's limits and call
//! `open` with the operator's config, once per subtask. Only when every
//! step succeeds may the task side swap it in.
//!
//! # Sources and sinks
//!
//! A plugin that runs a source or a sink (`type = "wasm"`) is offered
//! through [`ConnectorSwaps`] once it compiled and is of the right world;
//! each subtask takes it at its next safe point (a source right after a
//! `snapshot`, a sink right after a `pre-commit`) and opens it itself, since
//! its position or its pending epoch belongs to the running instance.

use crate::instance::{InstanceInfo, Limits, OperatorInstance};
use crate::plugin::Plugin;
use crate::Engine;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// New versions of the plugins that run sources and sinks, by section
/// (`sources.NAME`, `sinks.NAME`): offered by the reload manager, taken by
/// each running subtask of that section at its next safe point.
#[derive(Debug, Default)]
pub struct ConnectorSwaps {
    /// Bumped by every offer, so that a subtask looks at the offers only
    /// when one was made since it last looked.
    generation: AtomicU64,
    offers: Mutex<HashMap<String, Arc<Plugin>>>,
    /// The version each section runs (the last one any of its subtasks
    /// opened).
    running: Mutex<HashMap<String, String>>,
}

impl ConnectorSwaps {
    /// Records that `section` runs `version` (a subtask opened it).
    pub fn runs(&self, section: &str, version: &str) {
        self.running.lock().expect("running lock").insert(section.to_owned(), version.to_owned());
    }

    /// The version `section` runs, once one of its subtasks opened.
    pub fn running(&self, section: &str) -> Option<String> {
        self.running.lock().expect("running lock").get(section).cloned()
    }

    /// Offers `plugin` to every subtask of `section`.
    pub fn offer(&self, section: &str, plugin: Arc<Plugin>) {
        self.offers.lock().expect("offers lock").insert(section.to_owned(), plugin);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The version offered to `section` if it is not `running` and was
    /// offered since `seen` (updated); a version a subtask could not open
    /// is not offered to it again until a newer one comes.
    pub fn offered(&self, section: &str, seen: &mut u64, running: &Plugin) -> Option<Arc<Plugin>> {
        let now = self.generation.load(Ordering::Acquire);
        if now == *seen {
            return None;
        }
        *seen = now;
        let offers = self.offers.lock().expect("offers lock");
        offers.get(section).filter(|p| p.hash != running.hash).cloned()
    }
}

/// The versions of each plugin that ran well, kept where a restart finds
/// them (weir-pipeline's vault, beside the checkpoints), so that a bad
/// file in the plugin directory never blocks a restart. Keyed by who runs
/// the plugin: an operator's name, or `sources.NAME` / `sinks.NAME`.
pub trait KnownGood: Send + Sync + std::fmt::Debug {
    /// Loads `file` for `who` and keeps a copy of its version; when the
    /// file does not load, or holds a version marked bad, loads `who`'s
    /// last good version instead and says so. The error when neither loads.
    fn load(&self, engine: &Engine, who: &str, file: &Path) -> Result<Plugin, String>;
    /// `who` runs `plugin` well: a restart falls back to it.
    fn good(&self, who: &str, plugin: &Plugin);
    /// `who` failed with `plugin` before it proved itself: a restart does
    /// not run it again (until a newer file replaces it).
    fn bad(&self, who: &str, plugin: &Plugin);
    /// Keeps a copy of a version (offered by hot reload) for `good`.
    fn keep(&self, hash: &str, bytes: &[u8]);
}

/// A complete plugin file that appeared or changed in the watched directory.
#[derive(Clone)]
pub struct Candidate {
    /// Plugin name (file stem, `_` read as `-`).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its bytes, as read once the file was quiet.
    pub bytes: Arc<[u8]>,
    /// SHA-256 of the bytes, hex: the version.
    pub hash: String,
    /// When the last change to the file was observed (the start of the swap
    /// latency: from here to the new version processing).
    pub changed_at: Instant,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate").field("name", &self.name).field("path", &self.path).field("hash", &short(&self.hash)).field("size", &self.bytes.len()).finish()
    }
}

impl Candidate {
    /// Reads `path` now (for a reload asked for by command rather than by
    /// the watcher).
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes: Arc<[u8]> = std::fs::read(path)?.into();
        Ok(Self { name: crate::engine::plugin_name(path), path: path.to_owned(), hash: hex::encode(Sha256::digest(&bytes)), bytes, changed_at: Instant::now() })
    }
}

/// The first 12 hex digits of a hash (how versions are shown).
pub fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}

/// True for a name the watcher considers: `*.wasm`, not hidden.
pub fn is_plugin_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && name.len() > ".wasm".len() && name.ends_with(".wasm")
}

/// Watches a plugin directory; stops when dropped.
pub struct PluginWatcher {
    dir: PathBuf,
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").field("dir", &self.dir).finish()
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PluginWatcher {
    /// Starts watching `dir`; complete new files are handed to `out` once
    /// no change was seen for `settle` (`out` returns false to stop).
    pub fn start(dir: &Path, settle: Duration, out: impl FnMut(Candidate) -> bool + Send + 'static) -> Result<Self, String> {
        let (raw_tx, raw_rx) = mpsc::channel::<Vec<PathBuf>>();
        // The debouncer's own window only pairs renames and merges
        // duplicates; the quiet period is `settle`, below.
        let window = (settle / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
        let mut debouncer = new_debouncer(window, None, move |result: DebounceEventResult| match result {
            Ok(events) => {
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter(|e| !matches!(e.event.kind, EventKind::Remove(_) | EventKind::Access(_)))
                    .flat_map(|e| e.event.paths.clone())
                    .filter(|p| is_plugin_file(p))
                    .collect();
                if !paths.is_empty() {
                    let _ = raw_tx.send(paths);
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("watching the plugin directory: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot watch the plugin directory {}: {e}", dir.display()))?;
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch the plugin directory {}: {e}", dir.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weir-plugin-watch".into())
                .spawn(move || settle_loop(&raw_rx, settle, out, &stop))
                .map_err(|e| format!("cannot start the plugin watcher thread: {e}"))?;
        }
        Ok(Self { dir: dir.to_owned(), _debouncer: debouncer, stop })
    }
}

/// A changed path waiting to be quiet.
struct Pending {
    /// When its size or modification time last changed.
    last_change: Instant,
    /// Size and modification time when last looked at.
    meta: Option<(u64, Option<std::time::SystemTime>)>,
}

fn file_meta(path: &Path) -> Option<(u64, Option<std::time::SystemTime>)> {
    std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().ok()))
}

/// Waits for each changed path to be quiet for `settle`, then reads it.
///
/// The debouncer reports that a path changed, but merges the writes that
/// follow a creation into it, so events alone do not say when a writer is
/// done: while a path is pending its size and modification time are looked
/// at every tick, and any change restarts its quiet period.
fn settle_loop(raw: &mpsc::Receiver<Vec<PathBuf>>, settle: Duration, mut out: impl FnMut(Candidate) -> bool, stop: &AtomicBool) {
    let tick = (settle / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    let mut next_check = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match raw.recv_timeout(next_check.saturating_duration_since(Instant::now())) {
            Ok(paths) => {
                let now = Instant::now();
                for p in paths {
                    let meta = file_meta(&p);
                    pending.insert(p, Pending { last_change: now, meta });
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        next_check = now + tick;
        let mut quiet = Vec::new();
        for (path, p) in &mut pending {
            let meta = file_meta(path);
            if meta != p.meta {
                p.meta = meta;
                p.last_change = now;
            } else if now.duration_since(p.last_change) >= settle {
                quiet.push(path.clone());
            }
        }
        for path in quiet {
            let p = pending.remove(&path).expect("listed");
            match read_stable(&path) {
                Ok(Some(bytes)) => {
                    let hash = hex::encode(Sha256::digest(&bytes));
                    let c = Candidate { name: crate::engine::plugin_name(&path), path, bytes: bytes.into(), hash, changed_at: p.last_change };
                    tracing::debug!(plugin = %c.name, version = short(&c.hash), size = c.bytes.len(), "a plugin file changed");
                    if !out(c) {
                        return;
                    }
                }
                // Still being written: wait for it to be quiet again.
                Ok(None) => {
                    let meta = file_meta(&path);
                    pending.insert(path, Pending { last_change: Instant::now(), meta });
                }
                // Removed again (or unreadable) before it settled: nothing to load.
                Err(e) => tracing::debug!(file = %path.display(), "a changed plugin file could not be read ({e}); ignored"),
            }
        }
    }
}

/// Reads a file whose size did not change while it was read; `None` when
/// it did (a write in progress).
fn read_stable(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let before = std::fs::metadata(path)?;
    if !before.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let bytes = std::fs::read(path)?;
    let after = std::fs::metadata(path)?;
    let same = before.len() == after.len() && after.len() == bytes.len() as u64 && before.modified().ok() == after.modified().ok();
    Ok(same.then_some(bytes))
}

/// Which step of validation a new version failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading, checking the header, compiling, checking world and exports.
    Load,
    /// Instantiating under the limits and calling `open` with the config.
    Open,
}

/// Why a new version was refused; the old one keeps running.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The step that failed.
    pub stage: Stage,
    /// The full explanation, naming the file.
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// One instance to prepare: who it is and its limits.
#[derive(Debug, Clone)]
pub struct Target {
    /// Identity and config given to `open`.
    pub info: InstanceInfo,
    /// Memory and CPU limits.
    pub limits: Limits,
}

/// A validated new version with one opened instance per target, each with
/// empty state: the task side attaches the running state at the swap.
pub struct Prepared {
    /// The compiled plugin.
    pub plugin: Arc<Plugin>,
    /// One instance per target, same order.
    pub instances: Vec<OperatorInstance>,
    /// Time spent compiling (or loading from the cache) and linking.
    pub load_time: Duration,
    /// Time spent instantiating and opening.
    pub open_time: Duration,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("plugin", &self.plugin).field("instances", &self.instances.len()).finish()
    }
}

/// Validates `candidate` and opens an instance per target (see the module
/// docs). Runs on the caller's thread: call it from a background thread.
pub fn prepare(engine: &Engine, candidate: &Candidate, targets: &[Target]) -> Result<Prepared, Rejection> {
    let reject = |stage, reason: String| Rejection { stage, reason };
    let plugin = engine.load_bytes(&candidate.name, &candidate.path, &candidate.bytes).map_err(|e| reject(Stage::Load, e.to_string()))?;
    let load_time = plugin.load_time;
    let plugin = Arc::new(plugin);
    let started = Instant::now();
    let mut instances = Vec::with_capacity(targets.len());
    for t in targets {
        let mut inst = OperatorInstance::open(&plugin, &t.info, t.limits).map_err(|e| {
            reject(
                Stage::Open,
                format!("{}: `open` of operator `{}` subtask {} failed: {e}", candidate.path.display(), t.info.operator, t.info.subtask),
            )
        })?;
        inst.check_migrate().map_err(|e| reject(Stage::Load, format!("{}: {e}", candidate.path.display())))?;
        instances.push(inst);
    }
    Ok(Prepared { plugin, instances, load_time, open_time: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_are_candidates() {
        for yes in ["a.wasm", "json_filter.wasm", "dir/x-y.wasm"] {
            assert!(is_plugin_file(Path::new(yes)), "{yes}");
        }
        for no in [".a.wasm", ".a.wasm.tmp", "a.wasm~", "a.wasm.part", "a.swp", "4913", ".wasm", "#a.wasm#", "a.wat"] {
            assert!(!is_plugin_file(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn a_file_written_in_pieces_is_reported_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let _w = PluginWatcher::start(dir.path(), Duration::from_millis(150), move |c| tx.send(c).is_ok()).unwrap();
        let path = dir.path().join("p.wasm");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&path).unwrap();
            for i in 0..10u8 {
                f.write_all(&[i; 100]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        // An editor's temporary file and a hidden file are never candidates.
        std::fs::write(dir.path().join("p.wasm~"), b"junk").unwrap();
        std::fs::write(dir.path().join(".p.wasm"), b"junk").unwrap();
        let c = rx.recv_timeout(Duration::from_secs(10)).expect("a candidate");
        assert_eq!((c.name.as_str(), c.bytes.len()), ("p", 1000));
        assert!(rx.recv_timeout(Duration::from_millis(600)).is_err(), "one candidate per burst of writes");
        // A rename into place is one new version.
        std::fs::write(dir.path().join(".p.wasm.tmp"), b"v2").unwrap();
        std::fs::rename(dir.path().join(".p.wasm.tmp"), &path).unwrap();
        let c = rx.recv_timeout(Duration::from_secs(10)).expect("a candidate after the rename");
        assert_eq!(&*c.bytes, b"v2");
    }
}
