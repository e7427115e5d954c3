//! Runs every pipeline of the pipelines directory, each on its own
//! supervising thread, and keeps them running.
//!
//! A pipeline's id is its file name without `.toml`. The directory is
//! scanned every `scan-interval`: a new file starts, a changed file is
//! stopped gracefully and started again with its new contents, a removed
//! file is stopped gracefully. A run that fails is restarted from its last
//! checkpoint (the automatic restore of `weir run`) after the delay of the
//! restart strategy; after `max-attempts` restarts in a row it is reported
//! `failed` and left alone until started again through the API. Stopping
//! (API, file removed, SIGTERM) is graceful: a final checkpoint, sinks
//! commit it, and the next start resumes there.

use crate::config::ServeConfig;
use crate::journal::Journal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};
use weir_pipeline::{
    ConfigError, ConfigErrors, LoadOptions, Pipeline, Progress, RunHandle, RunOptions, StartFrom,
};
use weir_wasm::Engine;

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Loading plugins and opening connectors.
    Starting,
    /// Its tasks run.
    Running,
    /// Failed; waiting for the restart delay.
    Restarting,
    /// Failed more often than the restart strategy allows; not restarted.
    Failed,
    /// Stopped on request; resumes from its last checkpoint when started.
    Stopped,
    /// Its input ended and everything was published.
    Finished,
    /// The pipeline file is invalid; fixed files are picked up.
    Invalid,
}

/// Something that happened to a pipeline, for the API and the UI: what the
/// supervisor did, and every warning, error and notice of its runs (what a
/// foreground `weir run` prints; see [`crate::journal`]).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `info`, `warn` or `error`.
    pub level: &'static str,
    /// What happened, in words.
    pub what: String,
}

/// What the API shows about a pipeline beside its live figures.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Id: the file name without `.toml`.
    pub id: String,
    /// The pipeline's `name`, once its file was read.
    pub name: Option<String>,
    /// The pipeline file.
    pub file: String,
    /// Its state.
    pub state: State,
    /// Failures in a row.
    pub failures: u32,
    /// Restarts after failures since the pipeline was (re)started by hand.
    pub restarts: u32,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// When the current run started, ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// The most recent events, oldest first.
    pub events: Vec<Event>,
    /// Where its checkpoints are (`[checkpoint]`), once read.
    #[serde(skip)]
    pub checkpoint: Option<weir_pipeline::CheckpointConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Run,
    Stop,
    /// Stop and start again (a restart, a changed file, a restore).
    Rerun,
    /// Stop and end the supervising thread (file removed, shutdown).
    Exit,
}

struct Control {
    want: Want,
    start_from: StartFrom,
    /// A manual start clears the failure count.
    reset: bool,
}

/// One pipeline file and its supervising thread.
pub struct Slot {
    /// Id: the file name without `.toml`.
    pub id: String,
    /// The pipeline file.
    pub file: PathBuf,
    info: Mutex<Info>,
    handle: Mutex<RunHandle>,
    control: Mutex<Control>,
    wake: Condvar,
    /// A digest of the file contents the run last loaded (`None` before
    /// its first load): a scan restarts the pipeline only when the file
    /// says something else now, not when it was merely touched or seen
    /// half-written before the run read it whole.
    fingerprint: Mutex<Option<u64>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Slot {
    /// The slot of pipeline file `file`, to be started.
    pub(crate) fn new(id: &str, file: &Path) -> Self {
        Slot {
            id: id.to_owned(),
            file: file.to_owned(),
            info: Mutex::new(Info {
                id: id.to_owned(),
                name: None,
                file: file.display().to_string(),
                state: State::Starting,
                failures: 0,
                restarts: 0,
                last_error: None,
                started_at_ms: None,
                events: Vec::new(),
                checkpoint: None,
            }),
            handle: Mutex::new(RunHandle::new()),
            control: Mutex::new(Control { want: Want::Run, start_from: StartFrom::Latest, reset: false }),
            wake: Condvar::new(),
            fingerprint: Mutex::new(None),
            thread: Mutex::new(None),
        }
    }

    /// What the API shows.
    pub fn info(&self) -> Info {
        self.info.lock().expect("slot lock").clone()
    }

    /// The handle of the current (or last) run.
    pub fn handle(&self) -> RunHandle {
        self.handle.lock().expect("slot lock").clone()
    }

    /// Logs what the supervisor did and records it.
    fn event(&self, what: String) {
        tracing::info!(pipeline = %self.id, "{what}");
        self.record("info", what);
    }

    /// Records an event (the last 100 are kept), with the values of
    /// secret-looking keys redacted: the API shows events without
    /// authentication.
    pub(crate) fn record(&self, level: &'static str, what: String) {
        let what = weir_connector::secrets::redact(&what);
        let mut info = self.info.lock().expect("slot lock");
        info.events.push(Event { at_ms: now_ms(), level, what });
        if info.events.len() > 100 {
            info.events.remove(0);
        }
    }

    fn set_state(&self, state: State) {
        self.info.lock().expect("slot lock").state = state;
    }

    fn want(&self, want: Want, start_from: Option<StartFrom>) {
        let mut c = self.control.lock().expect("slot lock");
        if c.want == Want::Exit {
            return;
        }
        if matches!(want, Want::Run | Want::Rerun) {
            c.reset = true;
        }
        c.want = want;
        if let Some(s) = start_from {
            c.start_from = s;
        }
        drop(c);
        self.wake.notify_all();
        self.handle().stop();
    }

    /// Starts a stopped or failed pipeline (from its last checkpoint).
    pub fn start(&self) {
        let mut c = self.control.lock().expect("slot lock");
        if c.want != Want::Exit {
            c.want = Want::Run;
            c.reset = true;
        }
        drop(c);
        self.wake.notify_all();
    }

    /// Stops gracefully: final checkpoint, sinks commit.
    pub fn stop(&self) {
        self.want(Want::Stop, None);
    }

    /// Stops gracefully and starts again from that checkpoint.
    pub fn restart(&self) {
        self.want(Want::Rerun, None);
    }

    /// Stops gracefully and starts again from checkpoint `spec` (an id or
    /// `savepoint-ID`, already validated).
    pub fn restore(&self, spec: String) {
        self.want(Want::Rerun, Some(StartFrom::Checkpoint(spec)));
    }

    /// Waits (interruptibly) up to `d`; true when the wanted state changed.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut c = self.control.lock().expect("slot lock");
        let before = c.want.clone();
        while c.want == before && !c.reset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self.wake.wait_timeout(c, left).expect("slot lock").0;
        }
        true
    }
}

/// Every pipeline of the service.
pub struct Supervisor {
    config: ServeConfig,
    engine: Engine,
    journal: Journal,
    connectors: Arc<weir_pipeline::Registry>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    scan_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("pipelines", &self.config.pipelines).finish()
    }
}

/// A digest of a pipeline file's contents (not cryptographic: it tells a
/// changed file from an unchanged one).
fn fingerprint(text: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl Supervisor {
    /// A supervisor for `config`, running plugins on `engine` and the
    /// sources and sinks of `connectors`; what its pipelines log goes to
    /// their events through `journal` (when its layer is installed).
    pub fn new(config: ServeConfig, engine: Engine, journal: Journal, connectors: Arc<weir_pipeline::Registry>) -> Arc<Self> {
        Arc::new(Self { config, engine, journal, connectors, slots: Mutex::new(BTreeMap::new()), scan_error: Mutex::new(None) })
    }

    /// The service configuration.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// The engine's profiler, for on-demand profiles of plugin code.
    pub fn profiler(&self) -> Option<&Arc<weir_wasm::Profiler>> {
        self.engine.profiler()
    }

    /// The pipelines, by id.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots.lock().expect("slots lock").values().cloned().collect()
    }

    /// The pipeline with id `id`.
    pub fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.lock().expect("slots lock").get(id).cloned()
    }

    /// Why the last scan of the pipelines directory failed, while it fails.
    pub fn scan_error(&self) -> Option<String> {
        self.scan_error.lock().expect("scan lock").clone()
    }

    /// The pipeline files of the directory, by id; an error when it cannot
    /// be listed completely (a missing directory, no file descriptor left).
    fn list(&self) -> Result<BTreeMap<String, PathBuf>, String> {
        let dir = &self.config.pipelines;
        let why = |e: std::io::Error| format!("cannot list the pipelines directory {}: {e}", dir.display());
        let mut found = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(why)? {
            let path = e.map_err(why)?.path();
            if path.extension().is_some_and(|x| x == "toml")
                && path.is_file()
                && let Some(id) = path.file_stem().and_then(|s| s.to_str())
                && crate::http::valid_id(id)
            {
                found.insert(id.to_owned(), path);
            }
        }
        Ok(found)
    }

    /// Picks up added, changed and removed pipeline files. A scan that
    /// fails changes nothing: a directory that cannot be read is not an
    /// empty one, and stopping every pipeline because the process ran out
    /// of file descriptors would turn a crowd of connections into an outage.
    pub fn scan(self: &Arc<Self>) {
        let found = match self.list() {
            Ok(found) => {
                if self.scan_error.lock().expect("scan lock").take().is_some() {
                    tracing::info!(dir = %self.config.pipelines.display(), "the pipelines directory can be read again; picking up its changes");
                }
                found
            }
            Err(e) => {
                let mut last = self.scan_error.lock().expect("scan lock");
                if last.is_none() {
                    tracing::error!(dir = %self.config.pipelines.display(), "{e}; every pipeline keeps running as it is until the directory can be read again");
                }
                *last = Some(e);
                return;
            }
        };
        let mut slots = self.slots.lock().expect("slots lock");
        for (id, slot) in slots.iter() {
            match found.get(id) {
                None => {
                    slot.event("pipeline file removed; stopping".into());
                    slot.want(Want::Exit, None);
                }
                Some(file) => {
                    let Some(loaded) = *slot.fingerprint.lock().expect("slot lock") else {
                        continue;
                    };
                    // Unreadable now (removed between the listing and
                    // here, permissions): the next scan decides.
                    let Ok(text) = std::fs::read(file) else {
                        continue;
                    };
                    if fingerprint(&text) != loaded {
                        slot.event("pipeline file changed; restarting with the new version".into());
                        slot.want(Want::Rerun, None);
                    }
                }
            }
        }
        slots.retain(|id, slot| found.contains_key(id) || !slot.thread.lock().expect("slot lock").as_ref().is_some_and(|t| t.is_finished()));
        for (id, file) in found {
            if slots.contains_key(&id) {
                continue;
            }
            let slot = Arc::new(Slot::new(&id, &file));
            slot.event(format!("found {}", file.display()));
            let me = self.clone();
            let s = slot.clone();
            match std::thread::Builder::new().name(format!("weir-pipeline-{id}")).spawn(move || me.supervise(&s)) {
                Ok(t) => *slot.thread.lock().expect("slot lock") = Some(t),
                Err(e) => tracing::error!(pipeline = %id, "cannot start a thread: {e}"),
            }
            slots.insert(id, slot);
        }
    }

    /// Stops every pipeline gracefully; after `shutdown-timeout` the rest
    /// are killed (they resume from their last completed checkpoint).
    pub fn shutdown(&self) {
        let slots = self.slots();
        for s in &slots {
            s.want(Want::Exit, None);
        }
        let deadline = Instant::now() + self.config.shutdown_timeout;
        let mut killed = false;
        for s in &slots {
            let t = s.thread.lock().expect("slot lock").take();
            if let Some(t) = t {
                while !t.is_finished() {
                    if !killed && Instant::now() > deadline {
                        tracing::warn!("pipelines did not stop within {:?} (shutdown-timeout); ending them without a final checkpoint", self.config.shutdown_timeout);
                        for s in &slots {
                            s.handle().kill();
                        }
                        killed = true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = t.join();
            }
        }
    }

    fn supervise(&self, slot: &Arc<Slot>) {
        let restart = &self.config.restart;
        loop {
            // Wait until wanted.
            let start_from = {
                let mut c = slot.control.lock().expect("slot lock");
                loop {
                    match c.want {
                        Want::Exit => return,
                        Want::Stop => c = slot.wake.wait(c).expect("slot lock"),
                        Want::Run | Want::Rerun => break,
                    }
                }
                c.want = Want::Run;
                if std::mem::take(&mut c.reset) {
                    let mut info = slot.info.lock().expect("slot lock");
                    info.failures = 0;
                    info.restarts = 0;
                }
                std::mem::replace(&mut c.start_from, StartFrom::Latest)
            };
            slot.set_state(State::Starting);
            let loaded = std::fs::read(&slot.file)
                .map_err(|e| format!("cannot read the pipeline file: {e}"))
                .and_then(|text| {
                    *slot.fingerprint.lock().expect("slot lock") = Some(fingerprint(&text));
                    String::from_utf8(text)
                        .map_err(|_| "the pipeline file is not UTF-8 text".to_owned())
                });
            let options = LoadOptions::new(self.connectors.clone())
                .plugin_dir(self.config.plugin_dir.clone());
            let parsed = loaded
                .map_err(|message| {
                    vec![ConfigError {
                        path: String::new(),
                        message,
                    }]
                })
                .and_then(|text| Pipeline::parse(&slot.file, &text, &options));
            let p = match parsed.map_err(|errors| ConfigErrors {
                file: slot.file.clone(),
                errors,
            }) {
                Ok(p) => p,
                Err(e) => {
                    // ConfigErrors never quote the file and redact secrets.
                    let msg = e.to_string();
                    slot.info.lock().expect("slot lock").last_error = Some(msg.clone());
                    slot.set_state(State::Invalid);
                    slot.event(format!("invalid pipeline file; fix it and it is picked up: {}", msg.trim()));
                    let mut c = slot.control.lock().expect("slot lock");
                    if c.want == Want::Run {
                        c.want = Want::Stop;
                    }
                    continue;
                }
            };
            {
                let mut info = slot.info.lock().expect("slot lock");
                info.name = Some(p.name.clone());
                info.checkpoint = Some(p.checkpoint.clone());
            }
            let handle = RunHandle::new();
            *slot.handle.lock().expect("slot lock") = handle.clone();
            {
                // A stop asked for while loading applies to this run.
                let c = slot.control.lock().expect("slot lock");
                if c.want != Want::Run {
                    handle.stop();
                }
            }
            let from = match &start_from {
                StartFrom::Checkpoint(s) => format!(" from checkpoint {s}"),
                _ => String::new(),
            };
            slot.event(format!("starting{from}"));
            {
                let mut info = slot.info.lock().expect("slot lock");
                info.state = State::Running;
                info.started_at_ms = Some(now_ms());
            }
            let started = Instant::now();
            let options = RunOptions {
                progress: Progress::Quiet,
                metrics_address: None,
                start_from,
                handle: Some(handle.clone()),
                ..Default::default()
            };
            // What the run logs goes to this slot's events, also from this
            // thread's messages that do not name the pipeline.
            self.journal.attach(&p.name, slot);
            let result = tracing::info_span!("run", pipeline = %p.name).in_scope(|| weir_pipeline::run(&p, &self.engine, &options));
            self.journal.detach(&p.name, slot);
            let want = slot.control.lock().expect("slot lock").want.clone();
            match result {
                Ok(summary) if handle.stop_requested() => {
                    let cp = summary.checkpoints.as_ref().and_then(|c| c.last.as_ref()).map_or(String::new(), |l| format!(" at checkpoint {}", l.id));
                    slot.event(format!("stopped gracefully{cp}; {} records read in this run", summary.source_records()));
                    slot.set_state(State::Stopped);
                }
                Ok(summary) => {
                    slot.event(format!("finished: the input ended; {} records read, {} written", summary.source_records(), summary.sink_records()));
                    slot.set_state(State::Finished);
                    let mut c = slot.control.lock().expect("slot lock");
                    if c.want == Want::Run {
                        c.want = Want::Stop;
                    }
                }
                Err(e) if handle.stop_requested() && want != Want::Run => {
                    slot.event(format!("stopped with an error: {}", weir_connector::secrets::redact(&e.to_string())));
                    slot.set_state(State::Stopped);
                }
                Err(e) => {
                    // Shown without authentication: no secret may pass.
                    let msg = weir_connector::secrets::redact(&e.message);
                    let failures = {
                        let mut info = slot.info.lock().expect("slot lock");
                        if started.elapsed() >= restart.reset_after {
                            info.failures = 0;
                        }
                        info.failures += 1;
                        info.last_error = Some(msg.clone());
                        info.failures
                    };
                    tracing::error!(pipeline = %slot.id, failures, retryable = e.is_retryable(), "pipeline failed: {msg}");
                    if !e.is_retryable() {
                        // A bad plugin or connector setting fails the same
                        // way on every start: restarting would only hide it.
                        slot.set_state(State::Failed);
                        slot.event(format!(
                            "failed to start: {msg}; not restarting, since a restart would fail the same way. \
                             Fix it, then restart the pipeline (or change its file, which restarts it)"
                        ));
                        let mut c = slot.control.lock().expect("slot lock");
                        if c.want == Want::Run {
                            c.want = Want::Stop;
                        }
                        continue;
                    }
                    if restart.max_attempts > 0 && failures > restart.max_attempts {
                        slot.set_state(State::Failed);
                        slot.event(format!(
                            "failed {failures} times in a row; not restarting (restart.max-attempts = {}). Fix the cause and start it again: {msg}",
                            restart.max_attempts
                        ));
                        let mut c = slot.control.lock().expect("slot lock");
                        if c.want == Want::Run {
                            c.want = Want::Stop;
                        }
                        continue;
                    }
                    let delay = restart.delay(failures);
                    slot.set_state(State::Restarting);
                    let of = if restart.max_attempts > 0 { format!(" of {}", restart.max_attempts) } else { String::new() };
                    slot.event(format!("failed: {msg}; restarting from the last checkpoint in {delay:?} (restart {failures}{of})"));
                    if slot.sleep(delay) {
                        // Asked to stop, exit or restart meanwhile.
                        continue;
                    }
                    slot.info.lock().expect("slot lock").restarts += 1;
                }
            }
        }
    }
}
