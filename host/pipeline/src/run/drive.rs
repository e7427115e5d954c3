//! One thread per task, and the loop that watches them: it coordinates
//! checkpoints, serves the run's [`RunHandle`] (stop, savepoints, which
//! the control socket and the service API both send through it), samples
//! the metrics once a second, shows progress, and cancels every task at
//! the first failure.

use super::progress::ProgressPrinter;
use super::{Progress, RunError};
use crate::checkpoints::Coordinator;
use crate::config::Pipeline;
use crate::RunHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_connector::ErrorKind;
use weir_metrics::Monitor;
use weir_task::{Task, TaskError};

/// Runs `tasks` to the end; returns the wall time, or the first failure.
pub(super) fn drive(
    p: &Pipeline,
    tasks: Vec<Task>,
    cancel: Arc<AtomicBool>,
    mut coordinator: Option<&mut Coordinator>,
    handle: &RunHandle,
    monitor: &Monitor,
    progress: Progress,
) -> Result<Duration, RunError> {
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(String, Result<(), TaskError>)>();
    let mut threads = Vec::new();
    for task in tasks {
        let done = done_tx.clone();
        let name = task.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("weir-{name}"))
            .spawn(move || {
                let name = task.name.clone();
                let r = task.run();
                let _ = done.send((name, r));
            })
            .map_err(|e| RunError::setup_kind(ErrorKind::External, format!("cannot start a thread for task {name}: {e}")))?;
        threads.push(thread);
    }
    drop(done_tx);

    let mut printer = ProgressPrinter::new(progress, &p.name);
    let mut first_error: Option<RunError> = None;
    let mut remaining = threads.len();
    let mut next_sample = Instant::now();
    let mut stopping = false;
    let tick = Duration::from_millis(if coordinator.is_some() { 10 } else { 250 });
    while remaining > 0 {
        handle.drive(coordinator.as_deref_mut(), &cancel, &mut stopping);
        if let Some(c) = coordinator.as_deref_mut() {
            c.poll();
            if c.final_failed() && first_error.is_none() {
                first_error = Some(RunError::failed(
                    ErrorKind::External,
                    "the final checkpoint failed (see the warning above), so the output since the last checkpoint is not published; \
                     run the pipeline again to redo it from that checkpoint",
                ));
                cancel.store(true, Ordering::Relaxed);
            }
            if first_error.is_none()
                && let Some(why) = c.claim_lost()
            {
                first_error = Some(RunError::failed(ErrorKind::External, why));
                cancel.store(true, Ordering::Relaxed);
            }
        }
        if Instant::now() >= next_sample {
            monitor.sample();
            next_sample += Duration::from_secs(1);
        }
        match done_rx.recv_timeout(tick) {
            Ok((name, result)) => {
                remaining -= 1;
                match result {
                    Ok(()) => tracing::debug!(task = %name, "task finished"),
                    Err(TaskError::Cancelled) => {}
                    Err(TaskError::Stage(msg)) => {
                        if first_error.is_none() {
                            tracing::debug!(task = %name, "task failed first: {msg}");
                            first_error = Some(RunError::failed(ErrorKind::User, msg));
                        }
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        printer.tick(started.elapsed(), handle);
    }
    for thread in threads {
        if thread.join().is_err() && first_error.is_none() {
            first_error = Some(RunError::failed(ErrorKind::Internal, "a task thread panicked (a bug in weir); see the log above"));
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(started.elapsed()),
    }
}
