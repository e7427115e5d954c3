//! Before anything is built: the checkpoint store, the claim on the
//! pipeline (no second process may run it over the same checkpoints), and
//! the checkpoint the run resumes from.

use super::RunError;
use crate::checkpoints::{Coordinator, Restore, StartFrom};
use crate::config::Pipeline;
use crate::control::Control;
use crate::plan::Plan;
use crate::RunHandle;
use std::sync::Arc;
use weir_checkpoint::{CheckpointStore, Pin};

/// What a run starts from.
pub(super) struct Start {
    store: Option<Arc<CheckpointStore>>,
    control: Option<Control>,
    /// The checkpoint to restore, `None` for a fresh start.
    pub restore: Option<Restore>,
    pin: Option<Pin>,
}

impl Start {
    pub fn prepare(p: &Pipeline, plan: &Plan, handle: &RunHandle, start_from: &StartFrom) -> Result<Self, RunError> {
        let checkpointing = p.checkpoint.interval.is_some();
        let store = if checkpointing || matches!(start_from, StartFrom::Checkpoint(_)) {
            let store = crate::checkpoints::open_store(&p.checkpoint, &p.name)
                .map_err(|e| RunError::setup_kind(weir_connector::ErrorKind::External, format!("{}: {e}", p.file.display())))?;
            Some(Arc::new(store))
        } else {
            None
        };
        // Another process running this pipeline would write the same
        // checkpoints: claim it (a lock held for the run's life) and refuse
        // when another holds it, before anything else is opened. Retryable:
        // the other run may end.
        let local = std::path::absolute(p.checkpoint.dir.join(&p.name)).unwrap_or_else(|_| p.checkpoint.dir.join(&p.name));
        let control = match &store {
            Some(_) if checkpointing => Some(
                std::fs::create_dir_all(&local)
                    .map_err(|e| format!("checkpoint.dir: cannot create {}: {e}", local.display()))
                    .and_then(|()| crate::control::serve(&local, &p.name, handle.clone(), true))
                    .map_err(|e| RunError::setup_kind(weir_connector::ErrorKind::External, e))?,
            ),
            // Without checkpoints the socket only serves `weir reload`,
            // `weir status` and `weir plugins`: best effort, and no claim
            // on the pipeline.
            _ => match std::fs::create_dir_all(&local).map_err(|e| e.to_string()).and_then(|()| crate::control::serve(&local, &p.name, handle.clone(), false)) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("{e}; `weir reload` and `weir plugins` will not reach this run");
                    None
                }
            },
        };
        // The local lock does not reach other hosts: in an object store,
        // claim the checkpoints there too.
        if let (Some(store), true) = (&store, checkpointing) {
            let timeout = p.checkpoint.store.as_ref().map_or(crate::config::DEFAULT_CLAIM_TIMEOUT, |o| o.claim_timeout);
            store.claim(timeout).map_err(|e| store_error(&format!("{}: ", p.file.display()), e))?;
        }
        let restore = match (&store, start_from) {
            (_, StartFrom::Fresh) | (None, _) => None,
            (Some(store), StartFrom::Latest) => {
                let (found, warnings) = store.latest_valid().map_err(|e| store_error("", e))?;
                for w in &warnings {
                    weir_events::emit(weir_events::CheckpointUnusable { pipeline: &p.name, warning: w });
                }
                if found.is_none() {
                    refuse_fresh_start(p, store, &warnings)?;
                }
                found
            }
            (Some(store), StartFrom::Checkpoint(spec)) => Some(store.load(spec).map_err(|e| store_error(&format!("--from-checkpoint {spec}: "), e))?),
        }
        .map(Restore::new);
        let mut pin = None;
        if let Some(r) = &restore {
            r.check(p, plan).map_err(RunError::setup)?;
            let m = &r.checkpoint.manifest;
            let savepoint = m.kind == weir_checkpoint::Kind::Savepoint;
            weir_events::emit(weir_events::CheckpointRestored { pipeline: &p.name, id: m.id, savepoint, dir: &r.checkpoint.dir, finished: m.finished });
            pin = Some(r.checkpoint.pin().map_err(|e| store_error("", e))?);
        }
        Ok(Self { store, control, restore, pin })
    }

    /// The checkpoint coordinator, when checkpoints are on; it holds the
    /// pin on the restored checkpoint until its first own one completes.
    pub fn coordinator(&mut self, p: &Pipeline, plan: &Plan) -> Option<Coordinator> {
        let store = self.store.as_ref().filter(|_| p.checkpoint.interval.is_some())?;
        let tasks: usize = plan.chains.iter().map(|c| c.parallelism as usize).sum();
        Some(Coordinator::new(p, plan, store.clone(), tasks, self.pin.take(), self.restore.as_ref().map(|r| r.checkpoint.manifest.id)))
    }

    /// The restored state is loaded: lets it go, keeps the claim.
    pub fn into_control(self) -> Option<Control> {
        self.control
    }
}

/// A store that cannot be read now (a disk, a server) may be read later:
/// such failures are external, so `weir serve` retries them.
fn store_error(context: &str, e: weir_checkpoint::StoreError) -> RunError {
    let kind = if e.is_retryable() { weir_connector::ErrorKind::External } else { weir_connector::ErrorKind::User };
    RunError::setup_kind(kind, format!("{context}{e}"))
}

/// No usable checkpoint, but complete ones that are damaged: the runs
/// before completed checkpoints, and sinks published what they hold.
/// Starting over would replace that output (a file sink truncates its file)
/// or forget it (a database sink's progress), so only `--fresh` may do it.
/// Directories without a manifest alone are what a run killed during its
/// first checkpoint leaves: nothing was published then, and the sinks' own
/// check ([`weir_connector::Sink::earlier_output`]) covers a manifest that
/// was deleted after the fact.
fn refuse_fresh_start(p: &Pipeline, store: &CheckpointStore, warnings: &[String]) -> Result<(), RunError> {
    if warnings.is_empty() {
        return Ok(());
    }
    let found = store.found().map_err(|e| store_error("", e))?;
    let why = format!(":\n  {}", warnings.join("\n  "));
    Err(RunError::setup(format!(
        "pipeline `{}`: {} holds {} but none is usable{why}\n\
         weir will not start over on its own: the earlier runs may have published output that a fresh start \
         replaces. Restore the damaged files from a backup, or resume from a savepoint with `--from-checkpoint PATH`, \
         or start over with `weir run --fresh {}` (if the only run before stopped during its first checkpoint, \
         nothing was published and --fresh loses nothing).",
        p.name,
        store.dir().display(),
        found.join(", "),
        p.file.display()
    )))
}
