//! The task-thread side of the sink: staging epochs, handles, waiting.

use crate::config::{Delivery, PostgresSinkConfig};
use crate::writer::{Epoch, Identity, Job, Shared, State, Writer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use weir_connector::staging::{self, Area, Recovery, Stage, StagedHandle};
use weir_connector::{Committable, ConnectorContext, ConnectorError, ErrorKind, Sink, WaitObserver};

/// Committed epochs (or at-least-once batches) waiting for the writer beyond
/// which the sink stops taking records: the pipeline is then backpressured.
const MAX_QUEUED: usize = 2;

/// A pre-commit handle, stored in the checkpoint as JSON: the subtask's
/// staging area and every epoch not yet known to be published, e.g.
/// `{"area":{"dir":"/data/spill/p/db","stem":"0"},"epochs":[{"subtask":0,"sealed":{"checkpoint":7,
/// "file":"/data/spill/p/db/0.7.3f9a0c12.sealed","bytes":1843200,"records":51200}}]}`.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    area: Area,
    epochs: Vec<Epoch>,
}

impl StagedHandle for Handle {
    fn area(&self) -> &Area {
        &self.area
    }

    fn sealed(&self) -> Vec<&staging::Sealed> {
        self.epochs.iter().map(|e| &e.sealed).collect()
    }
}

/// Writes records into a PostgreSQL table; see the crate docs.
pub struct PostgresSink {
    name: String,
    subtask: u32,
    delivery: Delivery,
    rows_per_batch: usize,
    bytes_per_batch: u64,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Exactly-once: the epoch being written, in `SPILL-DIR/PIPELINE/SINK`
    /// under the subtask's index.
    stage: Stage,
    waits: Option<Arc<dyn WaitObserver>>,
    /// The progress table and the table written, for messages.
    tables: (String, String),
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink").field("name", &self.name).field("subtask", &self.subtask).field("stage", self.stage.area()).finish()
    }
}

impl PostgresSink {
    /// Checks the config, connects (retrying for `connect-timeout`), checks
    /// the table's schema against the mapping and creates the progress and
    /// dead-letter tables when missing. Everything that can be wrong with the
    /// config or the table is reported here, before any data flows.
    pub fn open(config: PostgresSinkConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let problems = config.validate();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
            return Err(ConnectorError::user(list.join("; ")));
        }
        let password = config.password().map_err(ConnectorError::user)?;
        let area = Area::subtask(config.spill_dir.join(&ctx.pipeline).join(&ctx.name), ctx.subtask);
        if config.delivery == Delivery::ExactlyOnce {
            area.create().map_err(|e| ConnectorError { message: format!("spill-dir: {}", e.message), ..e })?;
        }
        let shared = Arc::new(Shared::default());
        let who = Identity {
            pipeline: ctx.pipeline.clone(),
            sink: ctx.name.clone(),
            subtask: ctx.subtask,
        };
        let (delivery, rows_per_batch, bytes_per_batch) =
            (config.delivery, config.batch.rows, config.batch.bytes);
        let tables = (config.progress_table.clone(), config.table.clone());
        let writer =
            Writer::new(config, password, who, shared.clone()).map_err(ConnectorError::user)?;
        let thread = weir_connector::background::spawn(
            format!("weir-pg-{}-{}", ctx.name, ctx.subtask),
            writer,
        )?;
        let sink = Self {
            name: ctx.name.clone(),
            subtask: ctx.subtask,
            delivery,
            rows_per_batch,
            bytes_per_batch,
            shared,
            thread: Some(thread),
            // Batches arrive whole (~32 KiB): a small buffer joins a batch
            // and its length into one write.
            stage: Stage::new(area, 64 * 1024),
            waits: None,
            tables,
        };
        let ready = {
            let mut s = sink.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while s.ready.is_none() {
                s = sink.shared.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.ready.clone().expect("set")
        };
        ready.map_err(|e| {
            if e.starts_with("cannot connect") || e.contains("PostgreSQL at") {
                ConnectorError { kind: ErrorKind::External, message: e, source: None }
            } else {
                ConnectorError::user(e)
            }
        })?;
        Ok(sink)
    }

    /// Epochs skipped at start because the progress table showed them
    /// published, and rows sent to the dead-letter table so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.skipped, s.dead_letters)
    }

    /// Waits until `done` holds; fails when the writer gave up.
    /// `backpressure`: the wait is reported as backpressure.
    fn wait_for(&self, done: impl Fn(&State) -> bool, backpressure: bool) -> Result<(), ConnectorError> {
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting = false;
        let result = loop {
            if let Some(e) = &s.fatal {
                break Err(ConnectorError { kind: ErrorKind::External, message: e.clone(), source: None });
            }
            if done(&s) {
                break Ok(());
            }
            if backpressure && !waiting {
                waiting = true;
                if let Some(w) = &self.waits {
                    w.start_wait();
                }
            }
            s = self.shared.changed.wait_timeout(s, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        };
        if waiting && let Some(w) = &self.waits {
            w.end_wait();
        }
        result
    }

    fn push_jobs(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        s.jobs.extend(jobs);
        self.shared.changed.notify_all();
    }

    /// At-least-once: hands the open batch to the writer.
    fn seal_open_batch(&self) {
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.open.records > 0 {
            let open = std::mem::take(&mut s.open);
            s.open.checkpoint = open.checkpoint;
            s.open.position = open.position + open.records as u64;
            s.jobs.push_back(Job::Batch { frames: open.frames, records: open.records, checkpoint: open.checkpoint, position: open.position });
            self.shared.changed.notify_all();
        }
    }
}

impl Sink for PostgresSink {
    fn observe_waits(&mut self, observer: Arc<dyn WaitObserver>) {
        self.waits = Some(observer);
    }

    /// Exactly-once: the progress table has a row of a checkpoint this
    /// sink (pipeline and sink name) published, so the table holds its
    /// output.
    fn earlier_output(&mut self) -> Result<Option<String>, ConnectorError> {
        if self.delivery == Delivery::AtLeastOnce {
            return Ok(None);
        }
        self.push_jobs([Job::ReadProgress]);
        self.wait_for(|s| s.jobs.is_empty() && !s.busy, false)?;
        let published = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .published;
        Ok(published.map(|checkpoint| {
            format!(
                "the progress table {} says this sink published the rows of checkpoint {checkpoint} of this pipeline to {}",
                self.tables.0, self.tables.1
            )
        }))
    }

    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        if self.delivery == Delivery::AtLeastOnce {
            return Ok(());
        }
        let spill_dir = &self.stage.area().dir;
        let recovery = Recovery::<Handle>::new("postgres", recovered, |h| {
            h.area.check_subtask_in(spill_dir)
        })?;
        if recovered.is_none() {
            // A fresh start: nothing earlier is to be published, and
            // checkpoint ids may start again from 1.
            recovery.finish(Some(self.stage.area()))?;
            self.push_jobs([Job::ResetProgress]);
            return self.wait_for(|s| s.jobs.is_empty() && !s.busy, true);
        }
        let mut epochs: Vec<Epoch> = Vec::new();
        for e in recovery.handles().iter().flat_map(|(_, handle)| &handle.epochs) {
            if !epochs.contains(e) {
                epochs.push(e.clone());
            }
        }
        epochs.sort_by_key(|e| (e.sealed.checkpoint, e.subtask));
        if !epochs.is_empty() {
            tracing::info!(sink = %self.name, subtask = self.subtask, epochs = epochs.len(), "publishing the epochs of the restored checkpoint (those already published are skipped)");
        }
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            for e in &epochs {
                s.unpublished.push((e.clone(), true));
            }
        }
        self.push_jobs(epochs.into_iter().map(Job::Epoch));
        self.wait_for(|s| s.jobs.is_empty() && !s.busy, true)?;
        recovery.finish(Some(self.stage.area()))
    }

    fn write(&mut self, batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        if records == 0 {
            return Ok(());
        }
        // Postgres is behind: stop taking records (backpressure).
        self.wait_for(|s| s.jobs.len() < MAX_QUEUED, true)?;
        match self.delivery {
            Delivery::ExactlyOnce => self.stage.write_batch(batch, records)?,
            Delivery::AtLeastOnce => {
                let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.open.since.is_none() {
                    s.open.since = Some(std::time::Instant::now());
                }
                s.open.frames.extend_from_slice(batch);
                s.open.records += records;
                let full = s.open.records >= self.rows_per_batch || s.open.frames.len() as u64 >= self.bytes_per_batch;
                drop(s);
                if full {
                    self.seal_open_batch();
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        match self.delivery {
            Delivery::ExactlyOnce => self.stage.flush(),
            Delivery::AtLeastOnce => {
                self.seal_open_batch();
                self.wait_for(|s| s.jobs.is_empty() && !s.busy, true)
            }
        }
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        if self.delivery == Delivery::AtLeastOnce {
            self.flush()?;
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.open.checkpoint = checkpoint + 1;
            s.open.position = 0;
            return Ok(Vec::new());
        }
        let sealed = self.stage.seal(checkpoint)?;
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        // An epoch without records has nothing to publish.
        if sealed.file.is_some() {
            s.unpublished.push((Epoch { subtask: self.subtask, sealed }, false));
        }
        let handle = Handle { area: self.stage.area().clone(), epochs: s.unpublished.iter().map(|(e, _)| e.clone()).collect() };
        staging::encode_handle(&handle)
    }

    fn commit(&mut self, checkpoint: u64, _handle: &[u8]) -> Result<(), ConnectorError> {
        if self.delivery == Delivery::AtLeastOnce {
            return Ok(());
        }
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.fatal {
            return Err(ConnectorError { kind: ErrorKind::External, message: e.clone(), source: None });
        }
        let mut due = Vec::new();
        for (epoch, queued) in s.unpublished.iter_mut() {
            if epoch.sealed.checkpoint <= checkpoint && !*queued {
                *queued = true;
                due.push(Job::Epoch(epoch.clone()));
            }
        }
        s.jobs.extend(due);
        self.shared.changed.notify_all();
        Ok(())
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        match self.delivery {
            // Records not sealed by a checkpoint are dropped.
            Delivery::ExactlyOnce => self.stage.discard()?,
            Delivery::AtLeastOnce => self.flush()?,
        }
        // Every committed epoch is published before the run ends.
        let result = self.wait_for(|s| s.jobs.is_empty() && !s.busy, true);
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.closing = true;
            self.shared.changed.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let (skipped, dead) = self.counters();
        if dead > 0 {
            tracing::warn!(sink = %self.name, subtask = self.subtask, rows = dead, "rows were set aside in the dead-letter table during this run");
        }
        tracing::debug!(sink = %self.name, subtask = self.subtask, skipped, "closed");
        result
    }
}

impl Drop for PostgresSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(mut s) = self.shared.state.lock() {
            s.closing = true;
        }
        self.shared.changed.notify_all();
    }
}
