//! The writer thread: the only place that talks to PostgreSQL.
//!
//! It owns a current-thread tokio runtime and one connection, and works
//! through a queue of [`Job`]s in order: an exactly-once epoch (records
//! spilled to a file, published in one transaction with the progress row),
//! an at-least-once batch (its own transaction), or a progress reset. A
//! connection error retries the job from its start after a reconnect with
//! exponential backoff and jitter; only after `reconnect.give-up-after`
//! without success does the sink fail. A row the database rejects
//! (SQLSTATE class 22 or 23) aborts the fast path; the job is redone with
//! a savepoint per COPY statement, splitting a failing statement at the
//! line PostgreSQL names (or in halves) until the offending rows are alone,
//! and those go to the dead-letter table in the same transaction.

use crate::config::{Delivery, PostgresSinkConfig, WriteMode};
use crate::encode::{COPY_HEADER, COPY_TRAILER, Encoder};
use crate::schema::{Target, quote_ident, quote_qualified};
use bytes::Bytes;
use futures_util::SinkExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use weir_connector::staging::{Batches, Sealed};
use weir_connector::{Frames, RecordRef};

/// Failpoint hit right after an epoch's transaction committed (tests use it
/// to crash between the publish and the next checkpoint, forcing a replay).
pub const FAILPOINT_AFTER_COMMIT: &str = "after-postgres-commit";

/// One epoch of an exactly-once sink: the records one subtask received
/// before a checkpoint barrier, staged in a sealed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    /// The subtask that wrote it: its progress row.
    pub subtask: u32,
    /// Its records and the checkpoint that sealed them.
    pub sealed: Sealed,
}

/// Work for the writer thread.
#[derive(Debug)]
pub enum Job {
    /// Publish an epoch unless the progress table says it was.
    Epoch(Epoch),
    /// At-least-once: write these frames (`records` records, the first at
    /// `position` after checkpoint `checkpoint`) in one transaction.
    Batch { frames: Vec<u8>, records: usize, checkpoint: u64, position: u64 },
    /// A fresh start: forget this subtask's published checkpoints.
    ResetProgress,
    /// Read the highest checkpoint any subtask of this sink published
    /// (into [`State::published`]).
    ReadProgress,
}

/// State shared by the sink (task thread) and its writer thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// The state.
    pub state: Mutex<State>,
    /// Signalled on every change.
    pub changed: Condvar,
    /// Set to stop the writer at once (the sink was dropped).
    pub stop: AtomicBool,
}

/// See [`Shared`].
#[derive(Debug, Default)]
pub struct State {
    /// Jobs not yet done; the front one is in progress while `busy`.
    pub jobs: VecDeque<Job>,
    /// The writer works on the front job.
    pub busy: bool,
    /// Epochs sealed but not yet known to be published, oldest first, with
    /// whether they were queued.
    pub unpublished: Vec<(Epoch, bool)>,
    /// At-least-once: the batch being filled.
    pub open: OpenBatch,
    /// The writer gave up; every later call of the sink fails with this.
    pub fatal: Option<String>,
    /// Set once the connection is up and the table checked (or failed).
    pub ready: Option<Result<(), String>>,
    /// No more jobs will come: the writer exits once the queue is empty.
    pub closing: bool,
    /// Epochs skipped because the progress table showed them published.
    pub skipped: u64,
    /// Rows sent to the dead-letter table.
    pub dead_letters: u64,
    /// The highest checkpoint the progress table says a subtask of this
    /// sink published, as of the last [`Job::ReadProgress`]; `None` when it
    /// has no row (or only rows of fresh starts, checkpoint 0).
    pub published: Option<i64>,
}

/// At-least-once: records collected for the next batch.
#[derive(Debug, Default)]
pub struct OpenBatch {
    /// Frames.
    pub frames: Vec<u8>,
    /// Records in `frames`.
    pub records: usize,
    /// When the first of them arrived.
    pub since: Option<Instant>,
    /// Checkpoint and position of its first record.
    pub checkpoint: u64,
    /// See `checkpoint`.
    pub position: u64,
}

/// Who the writer is (for the progress and dead-letter rows and messages).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Pipeline name.
    pub pipeline: String,
    /// Sink name.
    pub sink: String,
    /// Subtask index.
    pub subtask: u32,
}

/// Why a job failed.
#[derive(Debug)]
enum Failure {
    /// Connection lost, server shutting down, serialization failure...:
    /// reconnect and redo the job.
    Retry(String),
    /// A row was rejected: redo the job carefully.
    Row(tokio_postgres::Error),
    /// Nothing will fix it without the user.
    Fatal(String),
}

fn classify(e: tokio_postgres::Error, what: &str) -> Failure {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code.starts_with("22") || code.starts_with("23") {
            return Failure::Row(e);
        }
        let retry = code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || *db.code() == SqlState::T_R_SERIALIZATION_FAILURE
            || *db.code() == SqlState::T_R_DEADLOCK_DETECTED
            || *db.code() == SqlState::QUERY_CANCELED
            || *db.code() == SqlState::LOCK_NOT_AVAILABLE;
        let msg = format!("{what}: {} (SQLSTATE {code})", db.message());
        return if retry { Failure::Retry(msg) } else { Failure::Fatal(msg) };
    }
    // Not a server error: I/O, a closed connection, a timeout.
    Failure::Retry(format!("{what}: {}", with_causes(&e)))
}

/// An error and its causes, `: `-separated (tokio-postgres says "error
/// performing TLS handshake" and keeps OpenSSL's reason in the source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // OpenSSL's errors repeat their own causes.
        if !text.contains(more.as_str()) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The writer thread's state.
pub struct Writer {
    config: PostgresSinkConfig,
    pg: tokio_postgres::Config,
    who: Identity,
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
    client: Option<Arc<Client>>,
    /// The COPY of the previous statement, still running while the next
    /// rows are encoded (fast path only).
    inflight: std::cell::RefCell<Option<tokio::task::JoinHandle<Result<(), Failure>>>>,
    target: Option<Target>,
    encoder: Option<Encoder>,
    /// `COPY ... FROM STDIN (FORMAT binary)` into the table or the staging table.
    copy_sql: String,
    /// Upsert: the `INSERT .. SELECT .. ON CONFLICT` from the staging table.
    upsert_sql: String,
    progress: String,
    dead_letter: String,
    rng: u64,
    /// Where the server is, for messages (never the password).
    endpoint: String,
}

/// A rejected record on its way to the dead-letter table.
struct DeadLetter {
    checkpoint: u64,
    position: u64,
    key: Option<Vec<u8>>,
    timestamp: i64,
    value: Vec<u8>,
    error: String,
    sqlstate: Option<String>,
}

impl DeadLetter {
    fn new(rec: &RecordRef<'_>, checkpoint: u64, position: u64, error: String, sqlstate: Option<String>) -> Self {
        Self { checkpoint, position, key: rec.key.map(<[u8]>::to_vec), timestamp: rec.timestamp, value: rec.value.to_vec(), error, sqlstate }
    }
}

/// Reads the records of a job, block by block.
enum Records<'a> {
    Staged(Batches),
    Memory { frames: Option<&'a [u8]> },
}

impl<'a> Records<'a> {
    fn open(job: &'a Job) -> Result<Self, Failure> {
        Ok(match job {
            Job::Epoch(e) => {
                Records::Staged(e.sealed.batches().map_err(|e| Failure::Fatal(e.message))?)
            }
            Job::Batch { frames, .. } => Records::Memory {
                frames: Some(frames),
            },
            Job::ResetProgress | Job::ReadProgress => Records::Memory { frames: None },
        })
    }

    /// The next block of frames, `None` at the end.
    fn next_block(&mut self) -> Result<Option<&[u8]>, Failure> {
        match self {
            Records::Memory { frames } => Ok(frames.take()),
            Records::Staged(batches) => batches.next_batch().map_err(|e| Failure::Fatal(e.message)),
        }
    }
}

/// The writer thread, started with [`weir_connector::background::spawn`]:
/// if it dies (a panic), the sink's next call fails with the reason
/// instead of waiting for a writer that is gone.
impl weir_connector::background::Background for Writer {
    fn run(&mut self) -> Result<(), weir_connector::ConnectorError> {
        self.work();
        Ok(())
    }

    fn died(&mut self, error: weir_connector::ConnectorError) {
        let message = format!("sink {:?} subtask {}: {error}", self.who.sink, self.who.subtask);
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.ready.is_none() {
            s.ready = Some(Err(message.clone()));
        }
        s.fatal.get_or_insert(message);
        self.shared.changed.notify_all();
    }
}

impl Writer {
    /// Prepares a writer (no I/O yet).
    pub fn new(config: PostgresSinkConfig, password: Option<String>, who: Identity, shared: Arc<Shared>) -> Result<Self, String> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| format!("url: {e}"))?;
        if let Some(p) = password {
            pg.password(p);
        }
        pg.connect_timeout(config.connect_timeout);
        if config.tls != crate::config::TlsMode::Disable {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        pg.application_name(format!("weir/{}/{}/{}", who.pipeline, who.sink, who.subtask));
        let endpoint = describe(&pg);
        // One worker drives the connection and the COPY in flight while this
        // thread encodes the next rows.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("weir-pg-io-{}-{}", who.sink, who.subtask))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL client runtime: {e}"))?;
        let seed = weir_connector::now_micros() ^ (u64::from(who.subtask) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        Ok(Self {
            progress: quote_qualified(&config.progress_table),
            dead_letter: quote_qualified(&config.dead_letter.table),
            config,
            pg,
            who,
            shared,
            rt,
            client: None,
            inflight: std::cell::RefCell::new(None),
            target: None,
            encoder: None,
            copy_sql: String::new(),
            upsert_sql: String::new(),
            rng: seed,
            endpoint,
        })
    }

    /// The thread body: connect and check the table, then work through the
    /// queue until the sink closes.
    fn work(&mut self) {
        let ready = self.start_up();
        let failed = ready.is_err();
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = &ready {
                s.fatal = Some(e.clone());
            }
            s.ready = Some(ready);
            self.shared.changed.notify_all();
        }
        if failed {
            return;
        }
        loop {
            let job = {
                let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if s.fatal.is_some() || self.shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if !s.jobs.is_empty() {
                        s.busy = true;
                        break;
                    }
                    let delay = self.config.batch.max_delay;
                    if s.open.since.is_some_and(|t| t.elapsed() >= delay) {
                        let open = std::mem::take(&mut s.open);
                        s.jobs.push_back(Job::Batch { frames: open.frames, records: open.records, checkpoint: open.checkpoint, position: open.position });
                        s.open.checkpoint = open.checkpoint;
                        s.open.position = open.position + open.records as u64;
                        continue;
                    }
                    if s.closing {
                        return;
                    }
                    let wait = s.open.since.map_or(Duration::from_millis(200), |t| delay.saturating_sub(t.elapsed()));
                    s = self.shared.changed.wait_timeout(s, wait.max(Duration::from_millis(1))).unwrap_or_else(|e| e.into_inner()).0;
                }
                s.jobs.pop_front().expect("a job")
            };
            let result = self.run_with_retries(&job).and_then(|skipped| match &job {
                // Published: the staging file goes (outside the lock: it fsyncs).
                Job::Epoch(e) => e.sealed.remove().map(|()| skipped).map_err(|e| e.message),
                _ => Ok(skipped),
            });
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.busy = false;
            match result {
                Ok(skipped) => {
                    if let Job::Epoch(e) = &job {
                        s.unpublished.retain(|(u, _)| u != e);
                        s.skipped += u64::from(skipped);
                    }
                }
                Err(e) => s.fatal = Some(e),
            }
            self.shared.changed.notify_all();
        }
    }

    fn start_up(&mut self) -> Result<(), String> {
        // The first connection gets `connect-timeout` overall: a wrong URL
        // fails the start quickly, a server restarting has a moment.
        let deadline = Instant::now() + self.config.connect_timeout;
        let mut backoff = self.config.reconnect.initial_backoff;
        loop {
            match self.connect() {
                Ok(()) => break,
                Err(Failure::Retry(e)) if Instant::now() + backoff < deadline => {
                    tracing::warn!(sink = %self.who.sink, subtask = self.who.subtask, "{e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.config.reconnect.max_backoff);
                }
                Err(Failure::Retry(e) | Failure::Fatal(e)) => return Err(e),
                Err(Failure::Row(e)) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Connects, checks the table (first time) and prepares the session.
    fn connect(&mut self) -> Result<(), Failure> {
        self.client = None;
        let pg = self.pg.clone();
        let endpoint = self.endpoint.clone();
        let tls = crate::tls::connector(self.config.tls, self.config.tls_ca_file.as_deref()).map_err(Failure::Fatal)?;
        let client = self.rt.block_on(async {
            let failed = |e: tokio_postgres::Error| {
                let msg = format!("cannot connect to PostgreSQL at {endpoint}");
                match e.as_db_error() {
                    // Bad password, unknown database or role, or a server
                    // refusing the connection (pg_hba, e.g. TLS required):
                    // the user must act.
                    Some(db) if db.code().code().starts_with("28") || db.code().code().starts_with("3D") => {
                        Failure::Fatal(format!("url: {msg}: {} (SQLSTATE {})", db.message(), db.code().code()))
                    }
                    // A certificate that fails verification, or a server
                    // without TLS: retrying cannot help.
                    None if ["certificate verify failed", "server does not support TLS"].iter().any(|t| with_causes(&e).contains(t)) => {
                        Failure::Fatal(format!("tls: {msg}: {}", with_causes(&e)))
                    }
                    _ => classify(e, &msg),
                }
            };
            let client = match tls {
                Some(tls) => {
                    let (client, connection) = pg.connect(tls).await.map_err(failed)?;
                    tokio::spawn(connection);
                    client
                }
                None => {
                    let (client, connection) = pg.connect(NoTls).await.map_err(failed)?;
                    tokio::spawn(connection);
                    client
                }
            };
            Ok::<_, Failure>(client)
        })?;
        let timeout = self.config.statement_timeout.as_millis();
        self.block(&client, &format!("SET statement_timeout = {timeout}"), "setting statement_timeout")?;
        if self.target.is_none() {
            let target = self.rt.block_on(crate::schema::resolve(&client, &self.config)).map_err(|e| match e {
                crate::schema::Resolve::Problems(p) => {
                    Failure::Fatal(p.into_iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))
                }
                crate::schema::Resolve::Db(e) => classify(e, "reading the table's columns"),
            })?;
            self.prepare_sql(&target);
            self.create_tables(&client)?;
            tracing::info!(
                sink = %self.who.sink,
                subtask = self.who.subtask,
                table = %target.table,
                server = %self.endpoint,
                columns = target.columns.len(),
                "connected to PostgreSQL and checked the table"
            );
            self.target = Some(target);
        }
        if self.config.mode == WriteMode::Upsert {
            let target = self.target.as_ref().expect("resolved");
            let cols = column_list(target);
            self.block(
                &client,
                &format!(
                    "CREATE TEMP TABLE IF NOT EXISTS weir_stage AS SELECT {cols} FROM {} WITH NO DATA; \
                     ALTER TABLE weir_stage ADD COLUMN IF NOT EXISTS weir_seq bigint",
                    target.table
                ),
                "creating the upsert staging table",
            )?;
        }
        self.client = Some(Arc::new(client));
        Ok(())
    }

    fn block(&self, client: &Client, sql: &str, what: &str) -> Result<(), Failure> {
        self.rt.block_on(client.batch_execute(sql)).map_err(|e| classify(e, what))
    }

    fn prepare_sql(&mut self, target: &Target) {
        let cols = column_list(target);
        match self.config.mode {
            WriteMode::Append => {
                self.copy_sql = format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", target.table);
            }
            WriteMode::Upsert => {
                self.copy_sql = format!("COPY pg_temp.weir_stage ({cols}, weir_seq) FROM STDIN (FORMAT binary)");
                let keys = target.key.iter().map(|&i| quote_ident(&target.columns[i].name)).collect::<Vec<_>>().join(", ");
                let updates: Vec<String> = target
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !target.key.contains(i))
                    .map(|(_, c)| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
                    .collect();
                let action = if updates.is_empty() { "DO NOTHING".to_owned() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
                self.upsert_sql = format!(
                    "INSERT INTO {} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM pg_temp.weir_stage \
                     ORDER BY {keys}, weir_seq DESC ON CONFLICT ({keys}) {action}; TRUNCATE pg_temp.weir_stage",
                    target.table
                );
            }
        }
        self.encoder = Some(Encoder::new(target.columns.clone(), self.config.mode == WriteMode::Upsert));
    }

    fn create_tables(&self, client: &Client) -> Result<(), Failure> {
        // Subtasks start at the same time: one creates, the others wait.
        let mut sql = String::from("BEGIN; SELECT pg_advisory_xact_lock(70120626);");
        if self.config.delivery == Delivery::ExactlyOnce {
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink text NOT NULL, subtask integer NOT NULL, \
                 checkpoint bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink, subtask));",
                self.progress
            ));
        }
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, pipeline text NOT NULL, sink text NOT NULL, \
             target text NOT NULL, subtask integer NOT NULL, checkpoint bigint NOT NULL, position bigint NOT NULL, \
             record_key bytea, record_timestamp bigint, record_value bytea NOT NULL, error text NOT NULL, sqlstate text, \
             failed_at timestamptz NOT NULL DEFAULT now()); COMMIT;",
            self.dead_letter
        ));
        self.block(client, &sql, "creating the progress and dead-letter tables").map_err(|f| match f {
            Failure::Fatal(m) => Failure::Fatal(format!(
                "{m}; the sink needs to create {} and {} (or find them), check the role's privileges or set `progress-table` and `dead-letter.table`",
                self.config.progress_table, self.config.dead_letter.table
            )),
            other => other,
        })
    }

    /// Runs a job until it succeeds, reconnecting with backoff on
    /// connection errors; `Ok(true)` when the epoch had been published
    /// before. `Err` after `give-up-after` or on an error only the user can fix.
    fn run_with_retries(&mut self, job: &Job) -> Result<bool, String> {
        let mut backoff = self.config.reconnect.initial_backoff;
        let mut failing_since: Option<Instant> = None;
        let mut attempts = 0u32;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Err("the sink was stopped".into());
            }
            let result = if self.client.as_ref().is_none_or(|c| c.is_closed()) { self.connect() } else { Ok(()) }.and_then(|()| self.run_job(job));
            match result {
                Ok(skipped) => {
                    if attempts > 0 {
                        tracing::info!(sink = %self.who.sink, subtask = self.who.subtask, attempts, "PostgreSQL is reachable again; the write went through");
                    }
                    return Ok(skipped);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Row(e)) => return Err(format!("a row was rejected outside of a COPY: {e}")),
                Err(Failure::Retry(e)) => {
                    self.client = None;
                    attempts += 1;
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.config.reconnect.give_up_after {
                        return Err(format!(
                            "PostgreSQL at {} has not accepted the sink's writes for {:?} (reconnect.give-up-after); last error: {e}",
                            self.endpoint,
                            since.elapsed()
                        ));
                    }
                    // Full jitter between half and all of the backoff.
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    let wait = backoff.mul_f64(0.5 + (self.rng % 1000) as f64 / 2000.0);
                    tracing::warn!(
                        sink = %self.who.sink,
                        subtask = self.who.subtask,
                        attempt = attempts,
                        "{e}; the pipeline waits (backpressured) and retries in {} ms",
                        wait.as_millis()
                    );
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !self.shared.stop.load(Ordering::Relaxed) {
                        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
                    }
                    backoff = (backoff * 2).min(self.config.reconnect.max_backoff);
                }
            }
        }
    }

    fn run_job(&mut self, job: &Job) -> Result<bool, Failure> {
        match self.publish(job, false) {
            Err(Failure::Row(e)) => {
                tracing::info!(sink = %self.who.sink, subtask = self.who.subtask, "a row was rejected ({e}); writing the batch again row-group by row-group to set the rejected rows aside");
                self.publish(job, true)
            }
            other => other,
        }
    }

    /// One attempt at a job in one transaction. `careful`: a savepoint per
    /// COPY statement, rejected rows isolated and dead-lettered.
    fn publish(&mut self, job: &Job, careful: bool) -> Result<bool, Failure> {
        let client = self.client.take().ok_or_else(|| Failure::Retry("not connected".into()))?;
        let result = self.publish_on(&client, job, careful);
        let settled = self.settle();
        let result = result.and_then(|r| settled.map(|()| r));
        if !client.is_closed() {
            if result.is_err() {
                let _ = self.rt.block_on(client.batch_execute("ROLLBACK"));
            }
            self.client = Some(client);
        }
        result
    }

    /// Waits for the COPY in flight, if any.
    fn settle(&self) -> Result<(), Failure> {
        match self.inflight.borrow_mut().take() {
            None => Ok(()),
            Some(handle) => self.rt.block_on(handle).map_err(|e| Failure::Fatal(format!("the COPY task failed: {e}")))?,
        }
    }

    fn publish_on(&mut self, client: &Arc<Client>, job: &Job, careful: bool) -> Result<bool, Failure> {
        let who = self.who.clone();
        let rt = &self.rt;
        let exec = |sql: &str, what: &str| rt.block_on(client.batch_execute(sql)).map_err(|e| classify(e, what));
        if let Job::ResetProgress = job {
            return rt
                .block_on(client.execute(
                    &format!(
                        "INSERT INTO {} (pipeline, sink, subtask, checkpoint) VALUES ($1, $2, $3, 0) \
                         ON CONFLICT (pipeline, sink, subtask) DO UPDATE SET checkpoint = 0, committed_at = now()",
                        self.progress
                    ),
                    &[&who.pipeline, &who.sink, &(who.subtask as i32)],
                ))
                .map(|_| false)
                .map_err(|e| classify(e, "resetting the progress row"));
        }
        if let Job::ReadProgress = job {
            let published: Option<i64> = rt
                .block_on(client.query_one(
                    &format!(
                        "SELECT max(checkpoint) FROM {} WHERE pipeline = $1 AND sink = $2",
                        self.progress
                    ),
                    &[&who.pipeline, &who.sink],
                ))
                .map_err(|e| classify(e, "reading the progress table"))?
                .get(0);
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.published = published.filter(|&c| c > 0);
            return Ok(false);
        }
        exec("BEGIN", "starting a transaction")?;
        let (checkpoint, mut position) = match job {
            Job::Epoch(e) => {
                let row = rt
                    .block_on(client.query_opt(
                        &format!("SELECT checkpoint FROM {} WHERE pipeline = $1 AND sink = $2 AND subtask = $3 FOR UPDATE", self.progress),
                        &[&who.pipeline, &who.sink, &(e.subtask as i32)],
                    ))
                    .map_err(|e| classify(e, "reading the progress table"))?;
                if let Some(done) = row.map(|r| r.get::<_, i64>(0))
                    && e.sealed.checkpoint > 0
                    && done >= e.sealed.checkpoint as i64
                {
                    exec("ROLLBACK", "ending a transaction")?;
                    tracing::info!(sink = %who.sink, subtask = e.subtask, checkpoint = e.sealed.checkpoint, published = done, "checkpoint already published; skipping the replay");
                    return Ok(true);
                }
                (e.sealed.checkpoint, 0u64)
            }
            Job::Batch {
                checkpoint,
                position,
                ..
            } => (*checkpoint, *position),
            Job::ResetProgress | Job::ReadProgress => unreachable!(),
        };
        let mut records = Records::open(job)?;
        let mut encoder = self.encoder.as_ref().expect("prepared").clone();
        let rows_per = self.config.batch.rows;
        let bytes_per = self.config.batch.bytes as usize;
        let mut dead = Vec::new();
        let mut chunk = Chunk::default();
        while let Some(block) = records.next_block()? {
            for rec in Frames::new(block) {
                let rec = rec.map_err(|e| Failure::Fatal(format!("a spilled batch is corrupt at byte {}: {}", e.offset, e.reason)))?;
                let start = chunk.tuples.len();
                match encoder.encode(&rec, checkpoint, position, &mut chunk.tuples) {
                    Ok(()) => {
                        chunk.rows.push(start..chunk.tuples.len());
                        if careful {
                            chunk.records.push(Some(DeadLetter::new(&rec, checkpoint, position, String::new(), None)));
                        }
                    }
                    Err(error) => dead.push(DeadLetter::new(&rec, checkpoint, position, error, None)),
                }
                position += 1;
                if chunk.rows.len() >= rows_per || chunk.tuples.len() >= bytes_per {
                    self.send_chunk(client, &mut chunk, careful, &mut dead)?;
                }
            }
        }
        self.send_chunk(client, &mut chunk, careful, &mut dead)?;
        self.settle()?;
        if !dead.is_empty() {
            self.write_dead_letters(client, &dead)?;
        }
        if let Job::Epoch(e) = job
            && e.sealed.checkpoint > 0
        {
            rt.block_on(client.execute(
                &format!(
                    "INSERT INTO {} (pipeline, sink, subtask, checkpoint) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (pipeline, sink, subtask) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, committed_at = now()",
                    self.progress
                ),
                &[&who.pipeline, &who.sink, &(e.subtask as i32), &(e.sealed.checkpoint as i64)],
            ))
            .map_err(|e| classify(e, "updating the progress table"))?;
        }
        exec("COMMIT", "committing")?;
        if !dead.is_empty() {
            tracing::warn!(
                sink = %who.sink,
                subtask = who.subtask,
                checkpoint,
                rows = dead.len(),
                table = %self.config.dead_letter.table,
                first_error = %dead[0].error,
                "rows were rejected and written to the dead-letter table"
            );
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.dead_letters += dead.len() as u64;
        }
        if let Job::Epoch(e) = job {
            weir_failpoint::hit(FAILPOINT_AFTER_COMMIT, e.sealed.checkpoint);
        }
        Ok(false)
    }

    /// Sends the rows of `chunk` and empties it.
    fn send_chunk(&self, client: &Arc<Client>, chunk: &mut Chunk, careful: bool, dead: &mut Vec<DeadLetter>) -> Result<(), Failure> {
        if chunk.rows.is_empty() {
            return Ok(());
        }
        let all: Vec<usize> = (0..chunk.rows.len()).collect();
        if !careful {
            // Pipelined: this statement runs while the caller encodes the next.
            let payload = payload(chunk, &all);
            self.settle()?;
            let (client, copy_sql, upsert_sql) = (client.clone(), self.copy_sql.clone(), self.upsert_sql.clone());
            *self.inflight.borrow_mut() = Some(self.rt.spawn(async move { copy_payload(&client, &copy_sql, &upsert_sql, payload).await }));
        } else {
            // Ranges of rows to try, in record order (a stack: last is next).
            let mut todo: Vec<Vec<usize>> = vec![all];
            while let Some(rows) = todo.pop() {
                if rows.is_empty() {
                    continue;
                }
                let exec = |sql: &str| self.rt.block_on(client.batch_execute(sql)).map_err(|e| classify(e, "savepoint"));
                exec("SAVEPOINT weir_rows")?;
                match self.copy_rows(client, chunk, &rows) {
                    Ok(()) => exec("RELEASE SAVEPOINT weir_rows")?,
                    Err(Failure::Row(e)) => {
                        exec("ROLLBACK TO SAVEPOINT weir_rows; RELEASE SAVEPOINT weir_rows")?;
                        if rows.len() == 1 {
                            let r = rows[0];
                            let db = e.as_db_error();
                            let mut text = db.map_or_else(|| e.to_string(), |d| d.message().to_owned());
                            if let Some(detail) = db.and_then(|d| d.detail()) {
                                text.push_str(": ");
                                text.push_str(detail);
                            }
                            let mut letter = chunk.records[r].take().expect("each row is rejected once");
                            letter.error = text;
                            letter.sqlstate = db.map(|d| d.code().code().to_owned());
                            dead.push(letter);
                            continue;
                        }
                        // PostgreSQL names the line of a COPY that failed; split there, else in halves.
                        let line = e.as_db_error().and_then(|d| d.where_()).and_then(copy_line).filter(|&l| l >= 1 && l <= rows.len());
                        let (a, b, c) = match line {
                            Some(l) => (rows[..l - 1].to_vec(), vec![rows[l - 1]], rows[l..].to_vec()),
                            None => {
                                let mid = rows.len() / 2;
                                (rows[..mid].to_vec(), Vec::new(), rows[mid..].to_vec())
                            }
                        };
                        todo.push(c);
                        todo.push(b);
                        todo.push(a);
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        chunk.clear();
        Ok(())
    }

    /// One COPY of the given rows (plus the upsert statement), waited for.
    fn copy_rows(&self, client: &Client, chunk: &Chunk, rows: &[usize]) -> Result<(), Failure> {
        self.rt.block_on(copy_payload(client, &self.copy_sql, &self.upsert_sql, payload(chunk, rows)))
    }

    fn write_dead_letters(&self, client: &Client, dead: &[DeadLetter]) -> Result<(), Failure> {
        let who = &self.who;
        let target = &self.target.as_ref().expect("resolved").table;
        self.rt.block_on(async {
            let stmt = client
                .prepare(&format!(
                    "INSERT INTO {} (pipeline, sink, target, subtask, checkpoint, position, record_key, record_timestamp, record_value, error, sqlstate) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    self.dead_letter
                ))
                .await
                .map_err(|e| classify(e, "preparing the dead-letter insert"))?;
            for d in dead {
                client
                    .execute(
                        &stmt,
                        &[
                            &who.pipeline,
                            &who.sink,
                            target,
                            &(who.subtask as i32),
                            &(d.checkpoint as i64),
                            &(d.position as i64),
                            &d.key,
                            &d.timestamp,
                            &d.value,
                            &d.error,
                            &d.sqlstate,
                        ],
                    )
                    .await
                    .map_err(|e| match classify(e, "writing the dead-letter table") {
                        Failure::Row(e) => Failure::Fatal(format!("the dead-letter table rejected a row: {e}")),
                        other => other,
                    })?;
            }
            Ok(())
        })
    }
}

/// Rows of one COPY statement.
#[derive(Default)]
struct Chunk {
    tuples: Vec<u8>,
    rows: Vec<std::ops::Range<usize>>,
    /// Careful mode: each row's record and position (for the dead-letter table).
    records: Vec<Option<DeadLetter>>,
}

impl Chunk {
    fn clear(&mut self) {
        self.tuples.clear();
        self.rows.clear();
        self.records.clear();
    }
}

/// The binary COPY stream of the given rows of `chunk`.
fn payload(chunk: &Chunk, rows: &[usize]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(COPY_HEADER.len() + COPY_TRAILER.len() + rows.iter().map(|&r| chunk.rows[r].len()).sum::<usize>());
    payload.extend_from_slice(COPY_HEADER);
    for &r in rows {
        payload.extend_from_slice(&chunk.tuples[chunk.rows[r].clone()]);
    }
    payload.extend_from_slice(COPY_TRAILER);
    payload
}

/// Runs one COPY (and, for upsert, the statement that merges the staged rows).
async fn copy_payload(client: &Client, copy_sql: &str, upsert_sql: &str, payload: Vec<u8>) -> Result<(), Failure> {
    let sink = client.copy_in::<_, Bytes>(copy_sql).await.map_err(|e| classify(e, "starting COPY"))?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(payload)).await.map_err(|e| classify(e, "sending rows"))?;
    sink.finish().await.map_err(|e| classify(e, "COPY"))?;
    if !upsert_sql.is_empty() {
        client.batch_execute(upsert_sql).await.map_err(|e| classify(e, "upsert"))?;
    }
    Ok(())
}

/// `COPY t, line 5, column x: ...` -> 5.
fn copy_line(context: &str) -> Option<usize> {
    let rest = &context[context.find("line ")? + 5..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn column_list(target: &Target) -> String {
    target.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
}

/// `host:port/db as user`, never the password (for messages about any PostgreSQL connection).
pub fn describe(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{} as {}", pg.get_dbname().unwrap_or("(default database)"), pg.get_user().unwrap_or("(default user)"))
}

#[cfg(test)]
mod tests {
    use super::copy_line;

    #[test]
    fn copy_context_line() {
        assert_eq!(copy_line("COPY events, line 17, column amount: \"x\""), Some(17));
        assert_eq!(copy_line("COPY events, line 3"), Some(3));
        assert_eq!(copy_line("SQL statement"), None);
    }
}
