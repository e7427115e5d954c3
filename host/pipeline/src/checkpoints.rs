//! The checkpoint coordinator, and restoring a run from a checkpoint.
//!
//! The coordinator runs on the thread that supervises the tasks
//! ([`crate::run`]): every `checkpoint.interval` (and at least
//! `min-pause` after the previous one ended) it asks the source tasks for a
//! checkpoint, collects one [`Ack`] per task, hands the operators' state to
//! a writer thread that finishes each snapshot and writes it to the store,
//! and once every file is durable writes the manifest. Only then is the
//! checkpoint complete: the tasks are told, and sinks publish. One
//! checkpoint runs at a time; one that times out, that a task could not
//! take, or whose files could not be written (a full disk) fails, is
//! counted and logged, and the next one is tried at the next interval.
//!
//! When the input ends every task takes a *final* checkpoint, so the last
//! records are published exactly once too. A checkpoint still running then
//! is abandoned, and counted as such: completed, failed and abandoned
//! checkpoints account for every id a run used.

use crate::config::Pipeline;
use crate::plan::{Plan, VertexKind};
use crossbeam_channel::{Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use weir_checkpoint::{CheckpointStore, Kind, LoadedCheckpoint, Manifest, Pin, SubtaskState, VertexState};
use weir_connector::Committable;
use weir_network::Partitioning;
use weir_task::{Ack, Checkpointing, StageState, StatePart};

/// What the CLI view and the run summary show about checkpoints.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    /// Checkpoints completed in this run.
    pub completed: u64,
    /// Checkpoints that failed in this run.
    pub failed: u64,
    /// Checkpoints given up because the input ended while they ran (the
    /// final checkpoint covers their data).
    pub abandoned: u64,
    /// The last completed one: id, duration, bytes, longest alignment.
    pub last: Option<LastCheckpoint>,
    /// The checkpoint this run resumed from.
    pub restored_from: Option<u64>,
    /// The checkpoint running now, if any.
    pub pending: Option<PendingCheckpoint>,
    /// The last completed ones, oldest first (at most [`RECENT`]).
    pub recent: VecDeque<LastCheckpoint>,
}

/// How many completed checkpoints [`CheckpointStats::recent`] keeps.
pub const RECENT: usize = 20;

/// A checkpoint that has been triggered and is not complete yet: what
/// [`crate::waiting::explain`] needs to say why it waits.
#[derive(Debug, Clone)]
pub struct PendingCheckpoint {
    /// Its id.
    pub id: u64,
    /// A savepoint (always aligned).
    pub savepoint: bool,
    /// When it was triggered.
    pub started: Instant,
    /// Tasks (indices in the run's task list, which is also the metrics
    /// registry's order) that have not acknowledged it yet.
    pub waiting: Vec<usize>,
    /// The pipeline takes unaligned checkpoints (`checkpoint.mode`).
    pub unaligned_mode: bool,
}

/// The last completed checkpoint.
#[derive(Debug, Clone)]
pub struct LastCheckpoint {
    /// Its id.
    pub id: u64,
    /// From trigger to completion.
    pub duration: Duration,
    /// Bytes on disk.
    pub bytes: u64,
    /// Longest barrier alignment of any task.
    pub alignment: Duration,
    /// Longest time a task stopped its data flow to take its snapshot.
    pub sync: Duration,
    /// Bytes of in-flight records persisted (unaligned).
    pub inflight_bytes: u64,
    /// Taken unaligned.
    pub unaligned: bool,
}

/// A request to write a savepoint; the answer is its directory.
pub type SavepointReply = Sender<Result<PathBuf, String>>;

/// What the writer thread is asked to do.
enum WriteJob {
    File { name: String, job: weir_state::SnapshotJob },
    Complete(Manifest),
}

/// A checkpoint in progress.
struct Pending {
    id: u64,
    kind: Kind,
    finished: bool,
    started: Instant,
    acked: Vec<bool>,
    remaining: usize,
    /// (vertex, subtask) -> state, as the manifest will hold it.
    subtasks: HashMap<(usize, u32), SubtaskState>,
    writer: Option<Sender<WriteJob>>,
    alignment: Duration,
    sync: Duration,
    savepoint: Option<SavepointReply>,
    /// Switched to unaligned (at trigger or after the aligned timeout).
    unaligned: bool,
    inflight_bytes: u64,
}

/// Coordinates the checkpoints of one run.
pub struct Coordinator {
    store: Arc<CheckpointStore>,
    pipeline: String,
    max_parallelism: u32,
    vertices: Vec<(String, weir_checkpoint::VertexKind, u32)>,
    interval: Option<Duration>,
    timeout: Duration,
    min_pause: Duration,
    retain: usize,
    tasks: usize,
    trigger: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
    final_id: Arc<OnceLock<u64>>,
    acks_tx: Sender<Ack>,
    acks: Receiver<Ack>,
    written_tx: Sender<(u64, Result<weir_checkpoint::CheckpointInfo, String>)>,
    written: Receiver<(u64, Result<weir_checkpoint::CheckpointInfo, String>)>,
    pending: Option<Pending>,
    next_due: Instant,
    savepoints: VecDeque<SavepointReply>,
    /// Checkpoints asked for now (API), answered like savepoints.
    wanted: VecDeque<SavepointReply>,
    /// Held until a checkpoint of this run completes: the one restored from.
    pin: Option<Pin>,
    /// The final checkpoint failed: the tasks waiting for it must be stopped.
    final_failed: bool,
    /// A graceful stop was requested: see [`Coordinator::request_stop`].
    stopping: bool,
    stop_at: Arc<AtomicU64>,
    stats: Arc<Mutex<CheckpointStats>>,
    /// The pending checkpoint as last shown in `stats`: (id, acks missing).
    shown: Option<(u64, usize)>,
    /// `checkpoint.mode = "unaligned"`.
    unaligned_mode: bool,
    /// `checkpoint.aligned-checkpoint-timeout`.
    aligned_timeout: Duration,
    /// The highest checkpoint the tasks take unaligned.
    unaligned: Arc<AtomicU64>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("pipeline", &self.pipeline).field("tasks", &self.tasks).finish()
    }
}

/// Opens the checkpoints of pipeline `name` where `c` puts them: an object
/// store (`checkpoint.store`) or `checkpoint.dir`. Errors name the key.
pub fn open_store(c: &crate::CheckpointConfig, name: &str) -> Result<CheckpointStore, String> {
    match &c.store {
        Some(o) => {
            let objects = weir_objects::Store::open(&o.s3, &o.destination).map_err(|e| format!("checkpoint.store {}: {e}", o.url))?;
            CheckpointStore::open_objects(objects, name).map_err(|e| format!("checkpoint.store: {e}"))
        }
        None => {
            let dir = std::path::absolute(&c.dir).unwrap_or_else(|_| c.dir.clone());
            CheckpointStore::open(&dir, name).map_err(|e| format!("checkpoint.dir: {e}"))
        }
    }
}

fn vertex_kind(kind: &VertexKind) -> weir_checkpoint::VertexKind {
    match kind {
        VertexKind::Source(_) => weir_checkpoint::VertexKind::Source,
        VertexKind::Operator(_) => weir_checkpoint::VertexKind::Operator,
        VertexKind::Sink(_) => weir_checkpoint::VertexKind::Sink,
    }
}

impl Coordinator {
    /// A coordinator for `tasks` tasks of `plan`, storing into `store`.
    pub fn new(p: &Pipeline, plan: &Plan, store: Arc<CheckpointStore>, tasks: usize, pin: Option<Pin>, restored_from: Option<u64>) -> Self {
        let (acks_tx, acks) = crossbeam_channel::unbounded();
        let (written_tx, written) = crossbeam_channel::unbounded();
        let next_id = Arc::new(AtomicU64::new(store.next_id()));
        let interval = p.checkpoint.interval;
        Self {
            pipeline: p.name.clone(),
            max_parallelism: p.max_parallelism,
            vertices: plan.vertices.iter().map(|v| (v.name.clone(), vertex_kind(&v.kind), v.parallelism)).collect(),
            interval,
            timeout: p.checkpoint.timeout,
            min_pause: p.checkpoint.min_pause,
            retain: p.checkpoint.retain,
            tasks,
            trigger: Arc::new(AtomicU64::new(0)),
            completed: Arc::new(AtomicU64::new(0)),
            next_id,
            final_id: Arc::new(OnceLock::new()),
            acks_tx,
            acks,
            written_tx,
            written,
            pending: None,
            next_due: Instant::now() + interval.unwrap_or(Duration::MAX / 4),
            savepoints: VecDeque::new(),
            wanted: VecDeque::new(),
            pin,
            final_failed: false,
            stopping: false,
            stop_at: Arc::new(AtomicU64::new(0)),
            store,
            stats: Arc::new(Mutex::new(CheckpointStats { restored_from, ..Default::default() })),
            shown: None,
            unaligned_mode: p.checkpoint.mode == crate::config::CheckpointMode::Unaligned,
            aligned_timeout: p.checkpoint.aligned_timeout,
            unaligned: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The link task `task` uses.
    pub fn link(&self, task: usize) -> Checkpointing {
        Checkpointing {
            task,
            trigger: self.trigger.clone(),
            completed: self.completed.clone(),
            next_id: self.next_id.clone(),
            final_id: self.final_id.clone(),
            acks: self.acks_tx.clone(),
            stop_at: self.stop_at.clone(),
            unaligned: self.unaligned.clone(),
        }
    }

    /// The id of the latest checkpoint triggered (for `reload =
    /// "on-checkpoint"`: a barrier with a higher id is not injected yet).
    pub fn trigger_counter(&self) -> Arc<AtomicU64> {
        self.trigger.clone()
    }

    /// Shared counters for the progress view.
    pub fn stats(&self) -> Arc<Mutex<CheckpointStats>> {
        self.stats.clone()
    }

    /// Stops the run gracefully: a checkpoint is taken as soon as none is
    /// running (retried at once if it fails), and once it is complete every
    /// task commits it and ends. Returns false when the input has already
    /// ended (the final checkpoint ends the run anyway).
    pub fn request_stop(&mut self) -> bool {
        if self.final_id.get().is_some() {
            return false;
        }
        self.stopping = true;
        true
    }

    /// Id of the checkpoint a graceful stop ends at, once it is triggered.
    pub fn stop_checkpoint(&self) -> Option<u64> {
        Some(self.stop_at.load(Ordering::Acquire)).filter(|&id| id > 0)
    }

    /// Queues a checkpoint, taken as soon as none is running rather than
    /// at the next interval; the answer is its directory.
    pub fn request_checkpoint(&mut self, reply: SavepointReply) {
        if self.final_id.get().is_some() {
            let _ = reply.send(Err("the pipeline's input has ended; it is taking its final checkpoint".into()));
            return;
        }
        self.wanted.push_back(reply);
    }

    /// Queues a savepoint; it is taken as soon as no checkpoint is running.
    pub fn request_savepoint(&mut self, reply: SavepointReply) {
        if self.final_id.get().is_some() {
            let _ = reply.send(Err("the pipeline's input has ended; it is taking its final checkpoint, which holds the same state".into()));
            return;
        }
        self.savepoints.push_back(reply);
    }

    /// Does whatever is due: triggers, collects acks, completes, times out.
    pub fn poll(&mut self) {
        while let Ok(ack) = self.acks.try_recv() {
            self.on_ack(ack);
        }
        while let Ok((id, result)) = self.written.try_recv() {
            self.on_written(id, result);
        }
        let now = Instant::now();
        if let Some(p) = &self.pending
            && !p.finished
            && now.duration_since(p.started) > self.timeout
        {
            let id = p.id;
            self.fail(id, format!("not complete after {:?} (checkpoint.timeout); a task is slow to align or to snapshot", self.timeout));
        }
        // aligned-checkpoint-timeout: a checkpoint that started aligned and
        // still runs goes unaligned (never a savepoint, never the final one).
        if let Some(p) = self.pending.as_mut()
            && self.unaligned_mode
            && !p.unaligned
            && !p.finished
            && p.kind == Kind::Checkpoint
            && now.duration_since(p.started) >= self.aligned_timeout
        {
            p.unaligned = true;
            tracing::debug!(checkpoint = p.id, "switching the checkpoint to unaligned (checkpoint.aligned-checkpoint-timeout)");
            self.unaligned.store(p.id, Ordering::Release);
        }
        if self.pending.is_none() && self.final_id.get().is_none() {
            let savepoint = !self.savepoints.is_empty();
            if savepoint || self.stopping || !self.wanted.is_empty() || (self.interval.is_some() && now >= self.next_due) {
                self.start(if savepoint { Kind::Savepoint } else { Kind::Checkpoint });
            }
        }
        self.show_pending();
    }

    /// Copies the pending checkpoint, and the tasks it still waits for,
    /// into the statistics when that changed (not on every poll).
    fn show_pending(&mut self) {
        let now = self.pending.as_ref().map(|p| (p.id, p.remaining));
        if now == self.shown {
            return;
        }
        self.shown = now;
        self.stats.lock().expect("stats lock").pending = self.pending.as_ref().map(|p| PendingCheckpoint {
            id: p.id,
            savepoint: p.kind == Kind::Savepoint,
            started: p.started,
            waiting: p.acked.iter().enumerate().filter(|(_, a)| !**a).map(|(t, _)| t).collect(),
            unaligned_mode: self.unaligned_mode,
        });
    }

    fn start(&mut self, kind: Kind) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let savepoint = if kind == Kind::Savepoint { self.savepoints.pop_front() } else { self.wanted.pop_front() };
        match self.begin(id, kind, false) {
            Ok(mut p) => {
                p.savepoint = savepoint;
                if self.stopping && self.stop_at.load(Ordering::Acquire) == 0 {
                    tracing::info!(pipeline = %self.pipeline, checkpoint = id, "stopping: the pipeline ends once this checkpoint is complete");
                    self.stop_at.store(id, Ordering::Release);
                }
                // Unaligned from the start: the tasks know before the barrier comes.
                if kind == Kind::Checkpoint && self.unaligned_mode && self.aligned_timeout.is_zero() {
                    p.unaligned = true;
                    self.unaligned.store(id, Ordering::Release);
                }
                self.pending = Some(p);
                tracing::debug!(checkpoint = id, "triggering checkpoint");
                self.trigger.store(id, Ordering::Release);
            }
            Err(e) => {
                if let Some(reply) = savepoint {
                    let _ = reply.send(Err(e.clone()));
                }
                self.count_failure(id, &e);
            }
        }
    }

    fn begin(&self, id: u64, kind: Kind, finished: bool) -> Result<Pending, String> {
        let writer = self.store.begin(id, kind).map_err(|e| e.to_string())?;
        let (tx, rx) = crossbeam_channel::unbounded::<WriteJob>();
        let done = self.written_tx.clone();
        std::thread::Builder::new()
            .name(format!("weir-checkpoint-{id}"))
            .spawn(move || {
                let result = write_checkpoint(writer, &rx);
                let _ = done.send((id, result));
            })
            .map_err(|e| format!("cannot start the checkpoint writer thread: {e}"))?;
        Ok(Pending {
            id,
            kind,
            finished,
            started: Instant::now(),
            acked: vec![false; self.tasks],
            remaining: self.tasks,
            subtasks: HashMap::new(),
            writer: Some(tx),
            alignment: Duration::ZERO,
            sync: Duration::ZERO,
            savepoint: None,
            unaligned: false,
            inflight_bytes: 0,
        })
    }

    fn on_ack(&mut self, ack: Ack) {
        if ack.finished && self.pending.as_ref().is_none_or(|p| p.id != ack.checkpoint) {
            // The first task whose input ended: the final checkpoint begins,
            // and one still running can no longer get every ack.
            if let Some(p) = &self.pending {
                weir_events::emit(weir_events::CheckpointAbandoned { pipeline: &self.pipeline, id: p.id });
                self.stats.lock().expect("stats lock").abandoned += 1;
                if let Some(p) = self.pending.take()
                    && let Some(reply) = p.savepoint
                {
                    let _ = reply.send(Err("the input ended while the savepoint was taken; the final checkpoint holds the same state".into()));
                }
            }
            match self.begin(ack.checkpoint, Kind::Checkpoint, true) {
                Ok(p) => self.pending = Some(p),
                Err(e) => {
                    self.final_failed = true;
                    self.count_failure(ack.checkpoint, &e);
                    return;
                }
            }
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.id == ack.checkpoint) else {
            tracing::debug!(checkpoint = ack.checkpoint, "late acknowledgement of a checkpoint that already failed");
            return;
        };
        if p.acked[ack.task] {
            return;
        }
        p.acked[ack.task] = true;
        p.remaining -= 1;
        p.alignment = p.alignment.max(ack.alignment);
        p.sync = p.sync.max(ack.sync);
        let parts = match ack.result {
            Ok(parts) => parts,
            Err(e) => {
                let id = p.id;
                self.fail(id, e);
                return;
            }
        };
        for part in parts {
            let job = match part {
                StatePart::Source { vertex, position } => {
                    let s = p.subtasks.entry((vertex, ack.subtask)).or_insert_with(|| empty(ack.subtask));
                    s.position = Some(position);
                    None
                }
                StatePart::Stage { vertex, state: StageState::Sink { committables } } => {
                    let s = p.subtasks.entry((vertex, ack.subtask)).or_insert_with(|| empty(ack.subtask));
                    s.committables = committables
                        .into_iter()
                        .map(|c| weir_checkpoint::Committable { checkpoint: c.checkpoint, handle: c.handle })
                        .collect();
                    None
                }
                StatePart::InFlight { vertex, channels, inputs } => {
                    let name = format!("{}-{}.inflight", self.vertices[vertex].0, ack.subtask);
                    let s = p.subtasks.entry((vertex, ack.subtask)).or_insert_with(|| empty(ack.subtask));
                    s.inflight_file = Some(name.clone());
                    p.inflight_bytes += channels.iter().map(|c| c.len() as u64).sum::<u64>();
                    let max_parallelism = self.max_parallelism;
                    Some(WriteJob::File { name, job: Box::new(move || inflight_file(&channels, &inputs, max_parallelism)) })
                }
                StatePart::Stage { vertex, state: StageState::Operator { key_groups, job } } => {
                    let name = format!("{}-{}.state", self.vertices[vertex].0, ack.subtask);
                    let s = p.subtasks.entry((vertex, ack.subtask)).or_insert_with(|| empty(ack.subtask));
                    s.state_file = Some(name.clone());
                    s.key_groups = Some((key_groups.start, key_groups.end));
                    Some(WriteJob::File { name, job })
                }
            };
            if let (Some(job), Some(w)) = (job, &p.writer) {
                let _ = w.send(job);
            }
        }
        if p.remaining == 0 {
            let manifest = Self::manifest(&self.vertices, self.max_parallelism, p);
            if let Some(w) = p.writer.take() {
                let _ = w.send(WriteJob::Complete(manifest));
            }
        }
    }

    fn manifest(vertices: &[(String, weir_checkpoint::VertexKind, u32)], max_parallelism: u32, p: &Pending) -> Manifest {
        let vertices = vertices
            .iter()
            .enumerate()
            .map(|(v, (name, kind, parallelism))| VertexState {
                name: name.clone(),
                kind: *kind,
                parallelism: *parallelism,
                subtasks: (0..*parallelism).map(|s| p.subtasks.get(&(v, s)).cloned().unwrap_or_else(|| empty(s))).collect(),
            })
            .collect();
        let mut m = Manifest::new(max_parallelism, vertices);
        m.finished = p.finished;
        m
    }

    fn on_written(&mut self, id: u64, result: Result<weir_checkpoint::CheckpointInfo, String>) {
        let Some(p) = self.pending.take_if(|p| p.id == id) else { return };
        match result {
            Ok(info) => {
                let duration = p.started.elapsed();
                self.completed.store(id, Ordering::Release);
                weir_events::emit(weir_events::CheckpointCompleted {
                    pipeline: &self.pipeline,
                    id,
                    savepoint: p.kind == Kind::Savepoint,
                    last: p.finished,
                    bytes: info.bytes,
                    duration,
                    alignment: p.alignment,
                    sync: p.sync,
                    inflight_bytes: p.inflight_bytes,
                    unaligned: p.unaligned,
                    dir: &info.dir,
                });
                {
                    let mut s = self.stats.lock().expect("stats lock");
                    s.completed += 1;
                    let last = LastCheckpoint { id, duration, bytes: info.bytes, alignment: p.alignment, sync: p.sync, inflight_bytes: p.inflight_bytes, unaligned: p.unaligned };
                    s.recent.push_back(last.clone());
                    if s.recent.len() > RECENT {
                        s.recent.pop_front();
                    }
                    s.last = Some(last);
                }
                if let Some(reply) = p.savepoint {
                    let _ = reply.send(Ok(info.dir.clone()));
                }
                // The checkpoint restored from may go now that a newer one exists.
                if p.kind == Kind::Checkpoint {
                    self.pin = None;
                }
                match self.store.retain(self.retain) {
                    Ok(deleted) if !deleted.is_empty() => tracing::debug!(?deleted, "deleted old checkpoints"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(pipeline = %self.pipeline, "could not delete old checkpoints: {e}"),
                }
                self.schedule();
            }
            Err(e) => {
                self.pending = Some(p);
                self.fail(id, e);
            }
        }
    }

    /// The next periodic checkpoint is due an interval after the last
    /// started, and at least `min-pause` after the last ended.
    fn schedule(&mut self) {
        if let Some(interval) = self.interval {
            self.next_due = (self.next_due + interval).max(Instant::now() + self.min_pause);
        }
    }

    fn fail(&mut self, id: u64, reason: String) {
        if let Some(p) = self.pending.take_if(|p| p.id == id) {
            // Dropping the writer's channel ends the thread, which removes
            // the partial directory.
            drop(p.writer);
            if let Some(reply) = p.savepoint {
                let _ = reply.send(Err(reason.clone()));
            }
            if p.finished {
                self.final_failed = true;
            }
        }
        self.count_failure(id, &reason);
        self.schedule();
    }

    fn count_failure(&self, id: u64, reason: &str) {
        weir_events::emit(weir_events::CheckpointFailed { pipeline: &self.pipeline, id, reason });
        self.stats.lock().expect("stats lock").failed += 1;
    }

    /// Why this run lost its claim on the checkpoints to another run
    /// ([`CheckpointStore::claim`]), once it has: the run must stop.
    pub fn claim_lost(&self) -> Option<String> {
        self.store.claim_lost()
    }

    /// True once the final checkpoint failed (it is not retried: the
    /// state it needed is gone with the tasks' last snapshot).
    pub fn final_failed(&self) -> bool {
        self.final_failed
    }
}

/// The in-flight file of a subtask: its channels' records, channel after
/// channel, each tagged with its key group so a restore at another
/// parallelism re-partitions them by key (the format of an async
/// operator's in-flight records, [`weir_async::encode_snapshot`]) and with
/// the input it was on ([`inflight_tag`]). A record without a key goes
/// with key group 0, where the hash partitioner sends it.
fn inflight_file(channels: &[Vec<u8>], inputs: &[usize], max_parallelism: u32) -> Result<Vec<u8>, String> {
    let mut records = Vec::new();
    for (c, &input) in channels.iter().zip(inputs) {
        let mut frames = weir_format::Frames::new(c);
        loop {
            let start = frames.offset();
            let Some(r) = frames.next() else { break };
            let r = r.map_err(|e| format!("an in-flight buffer is malformed: {e}"))?;
            let kg = r.key.map_or(0, |k| weir_format::keygroup::of(k, max_parallelism));
            records.push((inflight_tag(input, kg), &c[start..frames.offset()]));
        }
    }
    Ok(weir_async::encode_snapshot(records.into_iter()))
}

/// An in-flight record's tag: its key group in the low 16 bits
/// (`max-parallelism` is at most 32768), above them the input of its
/// vertex it was on (fan-in). Files written before fan-in, with one input,
/// read as input 0.
fn inflight_tag(input: usize, key_group: u32) -> u32 {
    debug_assert!(key_group < 1 << 16 && input < 1 << 16);
    (input as u32) << 16 | key_group
}

/// The input and the key group of an in-flight record's tag.
fn split_inflight_tag(tag: u32) -> (usize, u32) {
    ((tag >> 16) as usize, tag & 0xffff)
}

fn empty(subtask: u32) -> SubtaskState {
    SubtaskState { subtask, ..SubtaskState::default() }
}

/// The writer thread: finishes and writes state files as they come, then
/// the manifest. A failure discards the checkpoint (the writer's drop
/// removes its directory).
fn write_checkpoint(mut writer: weir_checkpoint::CheckpointWriter, jobs: &Receiver<WriteJob>) -> Result<weir_checkpoint::CheckpointInfo, String> {
    let id = writer.id();
    let mut error = None;
    for job in jobs {
        match job {
            WriteJob::File { name, job } => {
                if error.is_some() {
                    continue;
                }
                match job().and_then(|bytes| writer.write_file(&name, &bytes).map_err(|e| e.to_string())) {
                    Ok(_) => weir_failpoint::hit("after-state-write", id),
                    Err(e) => error = Some(format!("writing state file {name}: {e}")),
                }
            }
            WriteJob::Complete(manifest) => {
                return match error {
                    Some(e) => Err(e),
                    None => writer.complete(manifest).map_err(|e| e.to_string()),
                };
            }
        }
    }
    Err(error.unwrap_or_else(|| "abandoned".into()))
}

/// What a run restores, per vertex name.
#[derive(Debug)]
pub struct Restore {
    /// The checkpoint.
    pub checkpoint: LoadedCheckpoint,
    files: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl Restore {
    /// Wraps a verified checkpoint.
    pub fn new(checkpoint: LoadedCheckpoint) -> Self {
        Self { checkpoint, files: Mutex::new(HashMap::new()) }
    }

    fn vertex(&self, name: &str) -> Option<&VertexState> {
        self.checkpoint.manifest.vertex(name)
    }

    /// Checks that the checkpoint fits the pipeline before anything is opened.
    pub fn check(&self, p: &Pipeline, plan: &Plan) -> Result<(), String> {
        let m = &self.checkpoint.manifest;
        let dir = self.checkpoint.dir.display();
        let has_state = m.vertices.iter().any(|v| v.subtasks.iter().any(|s| s.state_file.is_some()));
        if has_state && m.max_parallelism != p.max_parallelism {
            return Err(format!(
                "checkpoint {} ({dir}) was taken with max-parallelism = {} but {} sets {}; keyed state is split into that many key groups, so set max-parallelism = {} (or start over with --fresh)",
                m.id,
                m.max_parallelism,
                p.file.display(),
                p.max_parallelism,
                m.max_parallelism
            ));
        }
        for v in &m.vertices {
            let Some(now) = plan.vertices.iter().find(|x| x.name == v.name) else {
                return Err(format!(
                    "checkpoint {} ({dir}) holds state of `{}`, which {} no longer has; put it back, or start over with --fresh",
                    m.id,
                    v.name,
                    p.file.display()
                ));
            };
            if vertex_kind(&now.kind) != v.kind {
                return Err(format!(
                    "checkpoint {} ({dir}): `{}` was a {:?} and is now a {}; start over with --fresh",
                    m.id,
                    v.name,
                    v.kind,
                    now.kind_name()
                ));
            }
        }
        for v in &plan.vertices {
            if self.vertex(&v.name).is_none() {
                tracing::warn!(pipeline = %p.name, vertex = %v.name, checkpoint = m.id, "not in the checkpoint: it starts with no state");
            }
        }
        Ok(())
    }

    /// The positions of every subtask of source `name` (empty when none).
    pub fn source_positions(&self, name: &str) -> Vec<Vec<u8>> {
        self.vertex(name).map(|v| v.subtasks.iter().map(|s| s.position.clone().unwrap_or_default()).collect()).unwrap_or_default()
    }

    /// The state files of operator `name` that hold key groups of `owned`.
    pub fn operator_files(&self, name: &str, owned: std::ops::Range<u32>) -> Result<Vec<Arc<Vec<u8>>>, String> {
        let Some(v) = self.vertex(name) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for s in &v.subtasks {
            let (Some(file), Some((start, end))) = (&s.state_file, s.key_groups) else { continue };
            if start >= owned.end || end <= owned.start {
                continue;
            }
            let mut cache = self.files.lock().expect("file cache");
            let bytes = match cache.get(file) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(self.checkpoint.read_file(file).map_err(|e| e.to_string())?);
                    cache.insert(file.clone(), b.clone());
                    b
                }
            };
            out.push(bytes);
        }
        Ok(out)
    }

    /// The records in flight to subtask `subtask` of vertex `name` (now at
    /// `parallelism`, its inputs partitioned by `inputs`) when the
    /// checkpoint was taken, per input (those with records), in frame
    /// format: of an input partitioned by key, all the old subtasks'
    /// records of the key groups it owns now (re-partitioned by key like
    /// any record); of another input, those of the old subtasks `j` with
    /// `j % parallelism == subtask`. Each channel's records keep their order.
    pub fn inflight_records(&self, name: &str, subtask: u32, parallelism: u32, inputs: &[Partitioning], max_parallelism: u32) -> Result<Vec<(usize, Vec<u8>)>, String> {
        let Some(v) = self.vertex(name) else { return Ok(Vec::new()) };
        let owned = weir_format::keygroup::range(subtask, max_parallelism, parallelism);
        let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
        for s in &v.subtasks {
            let Some(file) = &s.inflight_file else { continue };
            let bytes = self.checkpoint.read_file(file).map_err(|e| e.to_string())?;
            for (tag, record) in weir_async::decode_snapshot(&bytes).map_err(|e| format!("{file}: {e}"))? {
                let (input, kg) = split_inflight_tag(tag);
                let Some(&part) = inputs.get(input) else {
                    return Err(format!(
                        "the checkpoint holds in-flight records of input {} of `{name}`, which now has {} input(s); \
                         restore with its inputs as they were (then take an aligned savepoint to change them from), or start with --fresh",
                        input + 1,
                        inputs.len()
                    ));
                };
                // Every subtask of a broadcast input holds its own copy of
                // what was in flight, each consumed to a different point:
                // at another parallelism no split of them is right, so say
                // so rather than replay records twice or not at all.
                if part == Partitioning::Broadcast && v.subtasks.len() as u32 != parallelism {
                    return Err(format!(
                        "the checkpoint holds in-flight records of a broadcast input taken at parallelism {}, which cannot be split over parallelism {parallelism}; \
                         restore at parallelism {} (then take an aligned savepoint to rescale from), or start with --fresh",
                        v.subtasks.len(),
                        v.subtasks.len()
                    ));
                }
                let keep = if matches!(part, Partitioning::Hash { .. }) { owned.contains(&kg) } else { s.subtask % parallelism == subtask };
                if !keep {
                    continue;
                }
                match out.iter_mut().find(|(i, _)| *i == input) {
                    Some((_, records)) => records.extend_from_slice(&record),
                    None => out.push((input, record)),
                }
            }
        }
        Ok(out)
    }

    /// The handles sink `name`'s subtask `subtask` of `parallelism` must
    /// publish: those of the old subtasks `j` with `j % parallelism == subtask`.
    pub fn sink_committables(&self, name: &str, subtask: u32, parallelism: u32) -> Vec<Committable> {
        let Some(v) = self.vertex(name) else { return Vec::new() };
        let mut out: Vec<Committable> = v
            .subtasks
            .iter()
            .filter(|s| s.subtask % parallelism == subtask)
            .flat_map(|s| s.committables.iter().map(|c| Committable { checkpoint: c.checkpoint, handle: c.handle.clone() }))
            .collect();
        out.sort_by_key(|c| c.checkpoint);
        out
    }
}

/// Which checkpoint a run starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// The latest valid checkpoint or savepoint, if any (the default).
    #[default]
    Latest,
    /// A given one: an id, `savepoint-ID`, or a directory.
    Checkpoint(String),
    /// Nothing: ignore existing checkpoints.
    Fresh,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;

    fn ack(task: usize, checkpoint: u64, finished: bool) -> Ack {
        Ack { task, checkpoint, subtask: 0, finished, result: Ok(Vec::new()), alignment: Duration::ZERO, sync: Duration::ZERO }
    }

    /// Issue 15: a checkpoint abandoned because the input ended is counted,
    /// so completed, failed and abandoned checkpoints account for every id.
    #[test]
    fn an_abandoned_checkpoint_is_counted_so_no_id_goes_missing() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[sources.gen]\ntype = \"generator\"\ncount = 10\n[sinks.out]\ntype = \"file\"\npath = \"out.txt\"\nparallelism = 2\n";
        let p = Pipeline::parse(&dir.path().join("p.toml"), text, &LoadOptions::new(weir_connectors::builtin())).unwrap();
        let plan = Plan::new(&p);
        let store = Arc::new(CheckpointStore::open(dir.path(), &p.name).unwrap());
        let mut c = Coordinator::new(&p, &plan, store, 2, None, None);
        let stats = c.stats();
        let ((), counted) = weir_events::testing::capture(|| {
            let (reply, answer) = crossbeam_channel::bounded(1);
            c.request_checkpoint(reply);
            c.poll();
            // Task 0 takes checkpoint 1; task 1's input ends first, so it
            // takes the final checkpoint 2 instead.
            c.link(0).acks.send(ack(0, 1, false)).unwrap();
            c.link(1).acks.send(ack(1, 2, true)).unwrap();
            c.poll();
            assert!(answer.try_recv().unwrap().is_err(), "the checkpoint asked for is abandoned");
            c.link(0).acks.send(ack(0, 2, true)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while stats.lock().unwrap().completed == 0 && Instant::now() < deadline {
                c.poll();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        counted.assert_compliant();
        let s = stats.lock().unwrap().clone();
        assert_eq!((s.completed, s.failed, s.abandoned), (1, 0, 1));
        assert_eq!(s.last.map(|l| l.id), Some(2));
        let count = |name| counted.value(name, &[("pipeline", "p")]).unwrap_or(0.0);
        assert_eq!(count("weir_checkpoints_completed_total"), 1.0);
        assert_eq!(count("weir_checkpoints_abandoned_total"), 1.0, "checkpoint 1 is counted, not skipped");
        assert_eq!(count("weir_checkpoints_failed_total"), 0.0);
        assert_eq!(count("weir_checkpoint_last_id"), 2.0);
    }
}
