//! Hot reload, the task's half: swapping an operator's plugin between two
//! batches, keeping its state, and rolling back a version that fails.
//!
//! One [`ReloadSlot`] per operator is shared by its subtasks and by the
//! reload manager (in the pipeline crate). The manager validates a new
//! version in the background and prepares one opened instance per subtask
//! ([`weir_wasm::reload::prepare`]), then [`ReloadSlot::offer`]s them. The
//! offer only bumps an atomic counter: a subtask reads it once per batch
//! (and when its input is idle), so a pipeline that never reloads pays one
//! relaxed load per batch.
//!
//! **When.** With [`SwapAt::NextBatch`] (`reload = "auto"` or `"manual"`)
//! each subtask swaps at its next batch boundary (or at once when idle):
//! the batch in progress finishes on the old version and the next one is
//! processed by the new one, so every record is processed by exactly one
//! version and none is dropped. Records of one key always reach the same
//! subtask, so per key there is one cut. With [`SwapAt::Checkpoint`]
//! (`reload = "on-checkpoint"`) every subtask swaps right after its
//! snapshot of the first checkpoint whose barrier was not yet injected when
//! the offer was made: that barrier is a consistent cut of the whole
//! stream, so all subtasks change version at the same logical point.
//!
//! **State.** Keyed state and timers live in the host: the swap moves them
//! from the old instance to the new one ([`OperatorInstance::exchange_state`],
//! no copy), then calls the new version's optional `migrate` hook with the
//! old version's hash. The old instance is kept, without state, for the
//! probation period.
//!
//! **Probation and rollback.** For its first `probation_batches` batches
//! in a subtask, any failure of the new version (a trap, a failed call, or
//! a record rejected that the old version accepts) is counted for the
//! operator and the batch is processed again by the old version, so it is
//! neither lost nor emitted twice: a failed call's output and state writes
//! are discarded. When the count exceeds `max_failures`, every subtask
//! reverts to the previous version at its next batch boundary (the
//! failing one at once) and the slot reports why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use weir_wasm::reload::Target;
use weir_wasm::{CallError, OperatorInstance, Plugin};

/// Where subtasks change version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapAt {
    /// At each subtask's next batch boundary.
    NextBatch,
    /// Right after the snapshot of checkpoint `id` or the first later one.
    Checkpoint(u64),
}

/// When a new version is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probation {
    /// Batches per subtask during which failures are counted.
    pub batches: u64,
    /// Failures (over all subtasks) tolerated; one more rolls back.
    pub max_failures: u32,
}

impl Default for Probation {
    fn default() -> Self {
        Self { batches: 100, max_failures: 0 }
    }
}

/// What a subtask reports about a reload (to the manager, for the log,
/// metrics and the reload history).
#[derive(Debug, Clone)]
pub enum SwapReport {
    /// The subtask now runs `to`.
    Swapped {
        /// Subtask.
        subtask: u32,
        /// Previous version (hash).
        from: String,
        /// New version (hash).
        to: String,
        /// The new version's `migrate` hook was called.
        migrated: bool,
        /// When it happened.
        at: Instant,
        /// How long the subtask's data flow stopped for the swap (state
        /// hand-over and `migrate`).
        pause: std::time::Duration,
    },
    /// The new version failed during probation.
    Failed {
        /// Subtask.
        subtask: u32,
        /// The failing version (hash).
        version: String,
        /// What happened.
        error: String,
        /// This failure made the operator roll back.
        rollback: bool,
    },
    /// The subtask went back to `to` after a rollback.
    Reverted {
        /// Subtask.
        subtask: u32,
        /// The version it dropped.
        from: String,
        /// The version it runs again.
        to: String,
    },
    /// The subtask's probation of `version` ended without a rollback.
    Settled {
        /// Subtask.
        subtask: u32,
        /// Version (hash).
        version: String,
    },
}

struct Offer {
    plugin: Arc<Plugin>,
    previous: Arc<Plugin>,
    /// Prepared instances by subtask; taken at the swap.
    instances: Vec<Option<OperatorInstance>>,
    /// How to open another instance (by subtask), for a retry or a revert.
    targets: Vec<Target>,
    at: SwapAt,
    probation: Probation,
    failures: u32,
    /// Set when the offer is rolled back: the reason.
    rollback: Option<String>,
}

struct Inner {
    offer: Option<Offer>,
    /// The version each subtask runs (hash).
    running: Vec<String>,
}

/// The meeting point of one operator's subtasks and the reload manager.
pub struct ReloadSlot {
    /// Operator name.
    pub operator: String,
    generation: AtomicU64,
    inner: Mutex<Inner>,
    reports: crossbeam_channel::Sender<(String, SwapReport)>,
}

impl std::fmt::Debug for ReloadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadSlot").field("operator", &self.operator).field("generation", &self.generation.load(Ordering::Relaxed)).finish()
    }
}

impl ReloadSlot {
    /// A slot for `operator`, whose `parallelism` subtasks run `version`.
    pub fn new(operator: &str, parallelism: u32, version: &str, reports: crossbeam_channel::Sender<(String, SwapReport)>) -> Arc<Self> {
        Arc::new(Self {
            operator: operator.to_owned(),
            generation: AtomicU64::new(0),
            inner: Mutex::new(Inner { offer: None, running: vec![version.to_owned(); parallelism as usize] }),
            reports,
        })
    }

    /// Offers a validated version: one prepared instance per subtask (in
    /// subtask order) and how to open more. Replaces an earlier offer that
    /// some subtask has not taken yet. `previous` is what the operator
    /// returns to on a rollback.
    pub fn offer(&self, plugin: Arc<Plugin>, previous: Arc<Plugin>, instances: Vec<OperatorInstance>, targets: Vec<Target>, at: SwapAt, probation: Probation) {
        let mut inner = self.inner.lock().expect("reload slot");
        inner.offer = Some(Offer { plugin, previous, instances: instances.into_iter().map(Some).collect(), targets, at, probation, failures: 0, rollback: None });
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Rolls the current offer back (e.g. asked for by the manager).
    pub fn roll_back(&self, reason: &str) {
        let mut inner = self.inner.lock().expect("reload slot");
        if let Some(o) = &mut inner.offer
            && o.rollback.is_none()
        {
            o.rollback = Some(reason.to_owned());
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The version each subtask runs, by subtask.
    pub fn running(&self) -> Vec<String> {
        self.inner.lock().expect("reload slot").running.clone()
    }

    /// The reason the current offer was rolled back, if it was.
    pub fn rollback_reason(&self) -> Option<String> {
        self.inner.lock().expect("reload slot").offer.as_ref().and_then(|o| o.rollback.clone())
    }

    fn report(&self, r: SwapReport) {
        let _ = self.reports.send((self.operator.clone(), r));
    }

    /// Counts a failure of `version`; true when the operator must roll back.
    fn failed(&self, subtask: u32, version: &str, error: &str, force: bool) -> bool {
        let mut inner = self.inner.lock().expect("reload slot");
        let Some(o) = inner.offer.as_mut().filter(|o| o.plugin.hash == version) else { return false };
        o.failures += 1;
        let rollback = o.rollback.is_none() && (force || o.failures > o.probation.max_failures);
        if rollback {
            o.rollback = Some(format!("subtask {subtask}: {error}"));
            self.generation.fetch_add(1, Ordering::Release);
        }
        let rolling_back = o.rollback.is_some();
        drop(inner);
        self.report(SwapReport::Failed { subtask, version: version.to_owned(), error: error.to_owned(), rollback });
        rolling_back
    }

    fn set_running(&self, subtask: u32, version: &str) {
        if let Some(v) = self.inner.lock().expect("reload slot").running.get_mut(subtask as usize) {
            *v = version.to_owned();
        }
    }

    /// The offer of `version`: (its plugin, the previous one, how to open subtask `subtask`).
    fn target_for(&self, subtask: u32, version: &str) -> Option<(Arc<Plugin>, Arc<Plugin>, Target)> {
        let inner = self.inner.lock().expect("reload slot");
        let o = inner.offer.as_ref().filter(|o| o.plugin.hash == version)?;
        Some((o.plugin.clone(), o.previous.clone(), o.targets.get(subtask as usize)?.clone()))
    }
}

/// What a subtask must do now.
enum Action {
    Nothing,
    Swap { instance: OperatorInstance, probation: Probation },
    Revert { previous: Arc<Plugin>, target: Target },
}

/// A subtask's side of a slot.
pub(crate) struct StageReload {
    slot: Arc<ReloadSlot>,
    subtask: u32,
    seen: u64,
    /// The previous version's instance (without state) while the current
    /// one is on probation, and the batches left.
    probation: Option<(Option<OperatorInstance>, u64)>,
}

impl StageReload {
    pub(crate) fn new(slot: Arc<ReloadSlot>, subtask: u32) -> Self {
        Self { slot, subtask, seen: 0, probation: None }
    }

    pub(crate) fn in_probation(&self) -> bool {
        self.probation.is_some()
    }

    /// Does what the slot asks of this subtask at this point: `barrier` is
    /// the checkpoint whose snapshot was just taken, if any. Returns an
    /// error message when a revert could not open the previous version.
    pub(crate) fn poll(&mut self, current: &mut OperatorInstance, barrier: Option<u64>) -> Result<(), String> {
        let g = self.slot.generation.load(Ordering::Acquire);
        if g == self.seen {
            return Ok(());
        }
        let action = {
            let mut inner = self.slot.inner.lock().expect("reload slot");
            let running = current.plugin().hash.clone();
            match inner.offer.as_mut() {
                None => {
                    self.seen = g;
                    Action::Nothing
                }
                Some(o) if o.rollback.is_some() => {
                    self.seen = g;
                    if running == o.plugin.hash {
                        Action::Revert { previous: o.previous.clone(), target: o.targets[self.subtask as usize].clone() }
                    } else {
                        Action::Nothing
                    }
                }
                Some(o) if running == o.plugin.hash => {
                    self.seen = g;
                    Action::Nothing
                }
                Some(o) => match (o.at, barrier) {
                    (SwapAt::Checkpoint(at), Some(b)) if b < at => Action::Nothing,
                    (SwapAt::Checkpoint(_), None) => Action::Nothing,
                    _ => {
                        self.seen = g;
                        match o.instances.get_mut(self.subtask as usize).and_then(Option::take) {
                            Some(instance) => Action::Swap { instance, probation: o.probation },
                            None => Action::Nothing,
                        }
                    }
                },
            }
        };
        match action {
            Action::Nothing => Ok(()),
            Action::Swap { instance, probation } => {
                self.swap_in(current, instance, probation);
                Ok(())
            }
            Action::Revert { previous, target } => self.revert(current, &previous, &target),
        }
    }

    fn swap_in(&mut self, current: &mut OperatorInstance, mut instance: OperatorInstance, probation: Probation) {
        let started = Instant::now();
        instance.exchange_state(current);
        let mut old = std::mem::replace(current, instance);
        let from = old.plugin().hash.clone();
        let to = current.plugin().hash.clone();
        // The old instance is kept (without state) for the probation; a
        // previous one still on probation is not needed any more.
        self.probation = Some((None, probation.batches.max(1)));
        match current.migrate(&from) {
            Ok(migrated) => {
                self.slot.set_running(self.subtask, &to);
                self.slot.report(SwapReport::Swapped { subtask: self.subtask, from, to, migrated, at: Instant::now(), pause: started.elapsed() });
                self.probation = Some((Some(old), probation.batches.max(1)));
            }
            Err(e) => {
                // The migration's state writes were discarded: hand the
                // state back and stay on the old version.
                current.exchange_state(&mut old);
                std::mem::swap(current, &mut old);
                self.probation = None;
                self.slot.failed(self.subtask, &to, &e.to_string(), true);
                self.slot.report(SwapReport::Reverted { subtask: self.subtask, from: to, to: from });
            }
        }
    }

    /// Goes back to `previous`: the instance kept for the probation when
    /// it is that version, a new one otherwise.
    fn revert(&mut self, current: &mut OperatorInstance, previous: &Arc<Plugin>, target: &Target) -> Result<(), String> {
        let kept = self.probation.take().and_then(|(old, _)| old).filter(|old| old.plugin().hash == previous.hash);
        let mut old = match kept {
            Some(old) => old,
            None => OperatorInstance::open(previous, &target.info, target.limits)
                .map_err(|e| format!("rolling back to version {} failed: its `open` failed: {e}", weir_wasm::reload::short(&previous.hash)))?,
        };
        old.exchange_state(current);
        let dropped = std::mem::replace(current, old);
        let (from, to) = (dropped.plugin().hash.clone(), previous.hash.clone());
        self.slot.set_running(self.subtask, &to);
        self.slot.report(SwapReport::Reverted { subtask: self.subtask, from, to });
        Ok(())
    }

    /// One batch of the new version succeeded.
    pub(crate) fn batch_ok(&mut self, current: &OperatorInstance) {
        if let Some((_, left)) = &mut self.probation {
            *left -= 1;
            if *left == 0 {
                self.probation = None;
                self.slot.report(SwapReport::Settled { subtask: self.subtask, version: current.plugin().hash.clone() });
            }
        }
    }

    /// Counts a failure of the version `current` runs (during its
    /// probation). On a rollback `current` becomes the previous version at
    /// once, with the state. When tolerated, a trapped instance is replaced
    /// by a fresh one of the same version.
    pub(crate) fn count_failure(&mut self, current: &mut OperatorInstance, error: &CallError, force: bool) -> Result<Outcome, String> {
        let version = current.plugin().hash.clone();
        let Some((plugin, previous, target)) = self.slot.target_for(self.subtask, &version) else { return Ok(Outcome::NotMine) };
        if self.slot.failed(self.subtask, &version, &error.to_string(), force) {
            self.seen = self.slot.generation.load(Ordering::Acquire);
            self.revert(current, &previous, &target)?;
            return Ok(Outcome::Reverted);
        }
        if current.is_poisoned() {
            let mut fresh = OperatorInstance::open(&plugin, &target.info, target.limits)
                .map_err(|e| format!("reopening version {} after a failure: {e}", weir_wasm::reload::short(&plugin.hash)))?;
            fresh.exchange_state(current);
            *current = fresh;
        }
        Ok(Outcome::Tolerated)
    }

    /// The previous version's instance with the state moved into it, to
    /// process one batch with; give it back with [`StageReload::give_back`].
    pub(crate) fn borrow_previous(&mut self, current: &mut OperatorInstance) -> Result<Option<OperatorInstance>, String> {
        let Some((_, previous, target)) = self.slot.target_for(self.subtask, &current.plugin().hash) else { return Ok(None) };
        let kept = self.probation.as_mut().and_then(|(old, _)| old.take()).filter(|old| old.plugin().hash == previous.hash);
        let mut old = match kept {
            Some(old) => old,
            None => OperatorInstance::open(&previous, &target.info, target.limits)
                .map_err(|e| format!("opening version {}: {e}", weir_wasm::reload::short(&previous.hash)))?,
        };
        old.exchange_state(current);
        Ok(Some(old))
    }

    /// Moves the state back from a borrowed previous instance, and keeps
    /// that instance for the rest of the probation.
    pub(crate) fn give_back(&mut self, current: &mut OperatorInstance, mut old: OperatorInstance) {
        current.exchange_state(&mut old);
        if let Some((kept, _)) = &mut self.probation {
            *kept = Some(old);
        }
    }
}

/// What came of a failure during probation.
pub(crate) enum Outcome {
    /// The failing version is not the one on offer (the error is an
    /// ordinary error).
    NotMine,
    /// The operator rolls back; this subtask already runs the previous version.
    Reverted,
    /// Counted and tolerated.
    Tolerated,
}
