//! The sink: records are checked and staged per epoch
//! ([`weir_connector::staging`]); a completed checkpoint sends its staged
//! records in requests whose bodies and idempotency keys depend only on
//! the records, so a replay after a crash repeats the same requests.
//!
//! Sending happens on a publishing thread, so the task stages the next
//! epoch (disk writes and fsyncs) while the last one is sent. An epoch the
//! thread has not finished is carried in every later checkpoint's handle
//! until it is: a restore from any of them sends it again (a file already
//! gone was sent). At most one epoch waits behind the one being sent; a
//! commit beyond that waits (backpressure). A failure on the thread is
//! the sink's next call's error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use weir_connector::staging::{self, Area, Recovery, Sealed, Stage, StagedHandle};
use weir_connector::{BatchWriter, Committable, ConnectorContext, ConnectorError, Frames, RecordRef, Sink};

use crate::client::{Client, Response, parse_url};
use crate::config::{Format, HttpSinkConfig, OnFailure};

/// The failpoint hit once the first request of a publish is answered
/// (crash tests kill the process there, mid-publish).
pub const MID_PUBLISH: &str = "http-mid-publish";

/// A staged block of records to send.
const TAG_DATA: u8 = 0;
/// A staged block of bad records (each value is the dead letter's JSON).
const TAG_BAD: u8 = 1;

/// Bytes buffered before the staging file is written.
const STAGE_BUFFER: usize = 256 * 1024;

/// What a checkpoint stores for one subtask: the epoch to send, and the
/// earlier epochs the publishing thread had not finished sending.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    area: Area,
    /// The subtask that staged it: part of the idempotency keys, so a
    /// replay by another subtask (after a rescale) sends the same keys.
    subtask: u32,
    epoch: Sealed,
    /// Older epochs not yet sent when this one was sealed, oldest first.
    #[serde(default)]
    carried: Vec<Sealed>,
}

impl Handle {
    /// Every epoch to send, oldest first.
    fn epochs(&self) -> impl Iterator<Item = &Sealed> {
        self.carried.iter().chain(std::iter::once(&self.epoch))
    }
}

impl StagedHandle for Handle {
    fn area(&self) -> &Area {
        &self.area
    }

    fn sealed(&self) -> Vec<&Sealed> {
        self.epochs().collect()
    }
}

/// Counters, for tests and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered with 2xx (replays included).
    pub requests: u64,
    /// Records in them.
    pub records: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Requests written to the dead letters.
    pub dead_requests: u64,
    /// Records that were not JSON (or not one line, for NDJSON).
    pub bad_records: u64,
}

/// A request body being filled.
#[derive(Debug, Default)]
struct Body {
    bytes: Vec<u8>,
    records: usize,
}

impl Body {
    fn push(&mut self, format: Format, value: &[u8]) {
        match format {
            Format::Json => self.bytes.push(if self.records == 0 { b'[' } else { b',' }),
            Format::Ndjson => {}
        }
        self.bytes.extend_from_slice(value);
        if format == Format::Ndjson {
            self.bytes.push(b'\n');
        }
        self.records += 1;
    }

    fn finish(&mut self, format: Format) {
        if format == Format::Json && self.records > 0 {
            self.bytes.push(b']');
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records = 0;
    }
}

/// Sends records: bodies, requests with retries, dead letters. The sink's
/// without checkpoints; its publishing thread's with them.
struct Sender {
    name: String,
    /// `weir-PIPELINE-SINK`: the start of every idempotency key.
    key_prefix: String,
    config: HttpSinkConfig,
    client: Client,
    /// Content type, authorization and the configured headers.
    headers: Vec<(String, String)>,
    dead_dir: PathBuf,
    body: Body,
    stats: Stats,
    /// Set when the sink is dropped: stop between requests.
    stop: Arc<AtomicBool>,
}

/// What the task and the publishing thread share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Epochs sealed and not yet sent, oldest first.
    unsent: Vec<Sealed>,
    /// Commits handed to the thread and not yet done.
    queued: usize,
    /// Why the thread stopped.
    failed: Option<ConnectorError>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The publishing thread, with checkpoints.
struct Publisher {
    jobs: Option<crossbeam_channel::Sender<Handle>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// `type = "http"`: one subtask.
pub struct HttpSink {
    name: String,
    config: HttpSinkConfig,
    subtask: u32,
    staging_dir: PathBuf,
    /// Staging, when the pipeline takes checkpoints; without them records
    /// are sent as they are written.
    stage: Option<Stage>,
    /// Without checkpoints: this run's id and its requests so far.
    live: (String, u64),
    good: BatchWriter,
    bad: BatchWriter,
    bad_records: u64,
    sender: Arc<Mutex<Sender>>,
    stop: Arc<AtomicBool>,
    publisher: Option<Publisher>,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink").field("name", &self.name).field("subtask", &self.subtask).field("url", &self.config.url).finish()
    }
}

impl HttpSink {
    /// Opens one subtask. Nothing is contacted until records are sent.
    pub fn open(config: HttpSinkConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let name = ctx.name.clone();
        let who = format!("sink `{name}` (http)");
        if let Some((field, problem)) = config.validate().into_iter().next() {
            return Err(ConnectorError::user(format!("{who}: {field}: {problem}")));
        }
        let target = parse_url(&config.url).map_err(|e| ConnectorError::user(format!("{who}: url: {e}")))?;
        let tls = if target.tls {
            let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
                .map_err(|e| ConnectorError::user(format!("{who}: cannot set up OpenSSL: {e}")))?;
            if let Some(ca) = &config.tls_ca_file {
                builder.set_ca_file(ca).map_err(|e| ConnectorError::user(format!("{who}: tls-ca-file: cannot read certificates from {}: {e}", ca.display())))?;
            }
            Some(builder.build())
        } else {
            None
        };
        let mut headers = vec![("Content-Type".to_owned(), config.format.content_type().to_owned())];
        if let Some(token) = config.bearer_token().map_err(|e| ConnectorError::user(format!("{who}: {e}")))? {
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
        for (k, v) in &config.headers {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.clone()));
        }
        let staging_dir = config.staging_dir.clone().ok_or_else(|| ConnectorError::internal("staging-dir was not resolved by prepare"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let dead_dir = config.dead_letter_dir.clone().ok_or_else(|| ConnectorError::internal("dead-letter-dir was not resolved by prepare"))?;
        let stage = if config.checkpointing {
            let area = Area::subtask(&staging_dir, ctx.subtask);
            area.create()?;
            Some(Stage::new(area, STAGE_BUFFER))
        } else {
            None
        };
        let run = format!("{:x}", weir_connector::now_micros());
        let sender = Sender {
            key_prefix: format!("weir-{}-{name}", ctx.pipeline),
            client: Client::new(target, tls, config.request_timeout),
            name: name.clone(),
            headers,
            dead_dir,
            body: Body::default(),
            stats: Stats::default(),
            config: config.clone(),
            stop: stop.clone(),
        };
        Ok(Self {
            name,
            subtask: ctx.subtask,
            staging_dir,
            stage,
            live: (run, 0),
            good: BatchWriter::new(),
            bad: BatchWriter::new(),
            bad_records: 0,
            sender: Arc::new(Mutex::new(sender)),
            stop,
            publisher: None,
            config,
        })
    }

    /// Counters so far (waits for a request being sent).
    pub fn stats(&self) -> Stats {
        let mut stats = self.sender().stats;
        stats.bad_records = self.bad_records;
        stats
    }

    fn sender(&self) -> MutexGuard<'_, Sender> {
        self.sender.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The publishing thread's failure, if it stopped.
    fn check_publisher(&self) -> Result<(), ConnectorError> {
        match &self.publisher {
            Some(p) => p.shared.lock().failed.as_ref().map_or(Ok(()), |e| Err(again(e))),
            None => Ok(()),
        }
    }

    /// Starts the publishing thread on first use.
    fn publisher(&mut self) -> Result<&Publisher, ConnectorError> {
        if self.publisher.is_none() {
            // Bounded by `commit`, which waits beyond two queued commits.
            let (tx, rx) = crossbeam_channel::unbounded();
            let shared = Arc::new(Shared::default());
            let job = Publishing { jobs: rx, sender: self.sender.clone(), shared: shared.clone() };
            let thread = weir_connector::background::spawn(format!("weir-http-{}-{}", self.name, self.subtask), job)?;
            self.publisher = Some(Publisher { jobs: Some(tx), thread: Some(thread), shared });
        }
        Ok(self.publisher.as_ref().expect("started above"))
    }

    /// Why a record cannot go into a body, if it cannot.
    fn misfit(&self, value: &[u8]) -> Option<String> {
        // json-scan validates strictly without building anything: about a
        // third of serde_json's time on 100-byte records.
        let start = value.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(value.len());
        match json_scan::scan_value(value, start) {
            Ok((_, end)) if value[end..].iter().all(u8::is_ascii_whitespace) => {}
            Ok((_, end)) => return Some(format!("not JSON (more after the value, at byte {end})")),
            Err(e) => return Some(format!("not JSON ({e})")),
        }
        (self.config.format == Format::Ndjson && value.contains(&b'\n')).then(|| "a line break inside it cannot be one NDJSON line".into())
    }

    /// Sorts a batch into `good` and `bad` (dead letters naming the record).
    fn sort(&mut self, batch: &[u8]) -> Result<(), ConnectorError> {
        self.good.clear();
        self.bad.clear();
        for (index, rec) in Frames::new(batch).enumerate() {
            let rec = rec.map_err(|e| ConnectorError::internal(format!("sink `{}` received a damaged batch: {e:?}", self.name)))?;
            match self.misfit(rec.value) {
                None => self.good.push_record(&rec),
                Some(problem) => {
                    if self.config.on_failure == OnFailure::Fail {
                        return Err(ConnectorError::user(format!(
                            "sink `{}` (http): {} is {problem}; fix the data, or set on-failure = \"dead-letter\"",
                            self.name,
                            describe(&rec, index)
                        )));
                    }
                    let letter = serde_json::json!({
                        "sink": self.name,
                        "error": problem,
                        "key": rec.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                        "value": String::from_utf8_lossy(rec.value),
                        "timestamp": rec.timestamp,
                    });
                    let line = serde_json::to_vec(&letter).expect("a JSON value serializes");
                    self.bad.push(rec.key, &line, rec.timestamp, &[]);
                    self.bad_records += 1;
                }
            }
        }
        Ok(())
    }

    fn stage_block(&mut self, tag: u8) -> Result<(), ConnectorError> {
        let writer = if tag == TAG_BAD { &mut self.bad } else { &mut self.good };
        if writer.records() == 0 {
            return Ok(());
        }
        let records = writer.records();
        self.stage.as_mut().expect("staging when checkpointing").write_tagged_batch(tag, writer.as_bytes(), records)?;
        writer.clear();
        Ok(())
    }
}

impl Sender {
    /// Adds the records of `frames` to the body, sending it as request
    /// `STEM-SEQ` each time it is full. Returns the next sequence number.
    fn send_frames(&mut self, frames: &[u8], stem: &str, mut seq: u64, checkpoint: u64) -> Result<u64, ConnectorError> {
        let format = self.config.format;
        for rec in Frames::new(frames) {
            let rec = rec.map_err(|e| ConnectorError::internal(format!("sink `{}`: a staged batch is damaged: {e:?}", self.name)))?;
            let full = self.body.records >= self.config.batch.records
                || (self.body.bytes.len() + rec.value.len()) as u64 > self.config.batch.bytes;
            if self.body.records > 0 && full {
                seq = self.send_body(stem, seq, checkpoint)?;
            }
            self.body.push(format, rec.value);
        }
        Ok(seq)
    }

    /// Sends the body being filled as request `seq` of `stem`.
    fn send_body(&mut self, stem: &str, seq: u64, checkpoint: u64) -> Result<u64, ConnectorError> {
        if self.body.records == 0 {
            return Ok(seq);
        }
        self.body.finish(self.config.format);
        let key = format!("{stem}-{seq}");
        let body = std::mem::take(&mut self.body);
        let result = self.deliver(&key, &body, checkpoint);
        self.body = body;
        self.body.clear();
        result?;
        if seq == 0 && checkpoint > 0 {
            weir_failpoint::hit(MID_PUBLISH, checkpoint);
        }
        Ok(seq + 1)
    }

    /// One request, retried with backoff; a refusal or a failure past
    /// `retry.give-up-after` goes to the dead letters (or fails).
    fn deliver(&mut self, key: &str, body: &Body, checkpoint: u64) -> Result<(), ConnectorError> {
        let retry = self.config.retry;
        let started = Instant::now();
        let mut backoff = retry.initial_backoff;
        let mut attempts = 0u32;
        let mut headers = self.headers.clone();
        headers.push((self.config.idempotency_header.clone(), key.to_owned()));
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Err(ConnectorError::internal(format!("sink `{}`: stopped while sending request {key}; it is sent again on restore", self.name)));
            }
            attempts += 1;
            let (problem, wait) = match self.client.send(self.config.method.as_str(), &headers, &body.bytes) {
                Ok(r) if (200..300).contains(&r.status) => {
                    self.stats.requests += 1;
                    self.stats.records += body.records as u64;
                    return Ok(());
                }
                Ok(r) if matches!(r.status, 408 | 425 | 429) || r.status >= 500 => {
                    let wait = r.retry_after.map_or(backoff, |w| w.max(backoff)).min(retry.max_backoff.max(backoff));
                    (answer(&r), wait)
                }
                Ok(r) => return self.failed(key, body, attempts, Some(&r), "the server refused the request", checkpoint),
                Err(e) => (e.to_string(), backoff),
            };
            if started.elapsed() + wait >= retry.give_up_after {
                let why = format!("still failing after {:?} (retry.give-up-after): {problem}", started.elapsed());
                return self.failed(key, body, attempts, None, &why, checkpoint);
            }
            tracing::warn!(sink = %self.name, url = %self.config.url, idempotency_key = %key, error = %problem, retry_in = ?wait,
                "A request failed; retrying with the same idempotency key. The pipeline waits (backpressure) meanwhile.");
            self.stats.retries += 1;
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(retry.max_backoff);
        }
    }

    fn failed(&mut self, key: &str, body: &Body, attempts: u32, response: Option<&Response>, why: &str, checkpoint: u64) -> Result<(), ConnectorError> {
        let status = response.map(|r| r.status);
        let answer_text = response.map(answer);
        let message = format!(
            "sink `{}` (http): request {key} ({} records) to {}: {why}{}",
            self.name,
            body.records,
            self.config.url,
            answer_text.as_deref().map(|a| format!(": {a}")).unwrap_or_default()
        );
        if self.config.on_failure == OnFailure::Fail {
            let hint = if checkpoint > 0 {
                "; the checkpoint's records stay staged and are sent again, with the same keys, when the pipeline restarts"
            } else {
                ""
            };
            return Err(ConnectorError::external(format!("{message}{hint}"), std::io::Error::other(why.to_owned())));
        }
        let letter = serde_json::json!({
            "sink": self.name,
            "url": self.config.url,
            "idempotency_key": key,
            "status": status,
            "error": why,
            "answer": answer_text,
            "attempts": attempts,
            "records": body.records,
            "body": String::from_utf8_lossy(&body.bytes),
        });
        let path = self.dead_dir.join(format!("{key}.json"));
        write_durably(&path, &serde_json::to_vec_pretty(&letter).expect("a JSON value serializes"))
            .map_err(|e| ConnectorError::external(format!("sink `{}`: cannot write the dead letter {}: {e}", self.name, path.display()), e))?;
        self.stats.dead_requests += 1;
        tracing::error!(sink = %self.name, dead_letter = %path.display(), "{message}; the batch was written to the dead letters and the sink goes on");
        Ok(())
    }

    /// Writes bad records (dead-letter lines) to `STEM-bad-records.jsonl`.
    fn write_bad(&self, stem: &str, lines: &[u8]) -> Result<(), ConnectorError> {
        if lines.is_empty() {
            return Ok(());
        }
        let path = self.dead_dir.join(format!("{stem}-bad-records.jsonl"));
        write_durably(&path, lines)
            .map_err(|e| ConnectorError::external(format!("sink `{}`: cannot write the dead letters {}: {e}", self.name, path.display()), e))?;
        tracing::warn!(sink = %self.name, dead_letters = %path.display(), "records that cannot be sent were written to the dead letters");
        Ok(())
    }

    /// Sends `epoch`, staged by `subtask`, and removes its staging file.
    /// Idempotent: the same records give the same requests with the same
    /// keys (`PREFIX-SUBTASK-CHECKPOINT-SEQ`, the checkpoint that sealed
    /// the epoch); a file already gone was sent before (it is removed only
    /// after every request is answered).
    fn publish(&mut self, subtask: u32, epoch: &Sealed) -> Result<(), ConnectorError> {
        if epoch.file.as_ref().is_none_or(|f| !f.exists()) {
            return Ok(());
        }
        let checkpoint = epoch.checkpoint;
        let stem = format!("{}-{subtask}-{checkpoint}", self.key_prefix);
        let mut batches = epoch.batches()?;
        let (mut seq, mut bad) = (0, Vec::new());
        self.body.clear();
        while let Some(block) = batches.next_batch()? {
            let Some((&tag, frames)) = block.split_first() else { continue };
            if tag == TAG_BAD {
                for rec in Frames::new(frames) {
                    let rec = rec.map_err(|e| ConnectorError::internal(format!("sink `{}`: a staged batch is damaged: {e:?}", self.name)))?;
                    bad.extend_from_slice(rec.value);
                    bad.push(b'\n');
                }
                continue;
            }
            seq = self.send_frames(frames, &stem, seq, checkpoint)?;
        }
        self.send_body(&stem, seq, checkpoint)?;
        self.write_bad(&stem, &bad)?;
        epoch.remove()
    }
}

/// The publishing thread: sends the epochs of each completed checkpoint,
/// in order.
struct Publishing {
    jobs: crossbeam_channel::Receiver<Handle>,
    sender: Arc<Mutex<Sender>>,
    shared: Arc<Shared>,
}

impl weir_connector::background::Background for Publishing {
    fn run(&mut self) -> Result<(), ConnectorError> {
        // Ends when the sink closes (or is dropped): the channel closes once
        // the queued commits are taken.
        while let Ok(handle) = self.jobs.recv() {
            for epoch in handle.epochs() {
                self.sender.lock().unwrap_or_else(|e| e.into_inner()).publish(handle.subtask, epoch)?;
                self.shared.lock().unsent.retain(|e| e.checkpoint != epoch.checkpoint);
                self.shared.changed.notify_all();
            }
            self.shared.lock().queued -= 1;
            self.shared.changed.notify_all();
        }
        Ok(())
    }

    fn died(&mut self, error: ConnectorError) {
        self.shared.lock().failed.get_or_insert(error);
        self.shared.changed.notify_all();
    }
}

fn describe(rec: &RecordRef<'_>, index: usize) -> String {
    let key = match rec.key {
        Some(k) => format!("key {:?}", String::from_utf8_lossy(k)),
        None => "no key".into(),
    };
    format!("record #{} of its batch ({key}, timestamp {})", index + 1, rec.timestamp)
}

/// `STATUS: the start of the answer`.
fn answer(r: &Response) -> String {
    let text = String::from_utf8_lossy(&r.body);
    let text = text.trim();
    if text.is_empty() { format!("HTTP {}", r.status) } else { format!("HTTP {}: {}", r.status, text.chars().take(300).collect::<String>()) }
}

/// Writes a whole file and fsyncs it and its directory (created if missing).
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

impl Sink for HttpSink {
    /// A restore sends the restored epochs again (same requests, same
    /// keys), then clears the staging area. A fresh start has nothing to
    /// take back: what was sent is the receiver's.
    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        let Some(stage) = &self.stage else { return Ok(()) };
        let area = stage.area().clone();
        let dir = self.staging_dir.clone();
        let recovery = Recovery::<Handle>::new("http", recovered, |h| h.area.check_subtask_in(&dir))?;
        for (_, handle) in recovery.handles().to_vec() {
            for epoch in handle.epochs() {
                self.sender().publish(handle.subtask, epoch)?;
            }
        }
        recovery.finish(Some(&area))
    }

    fn write(&mut self, batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        self.check_publisher()?;
        // The common case: every record fits, and the batch is staged as it came.
        let fits = self.stage.is_some() && Frames::new(batch).all(|rec| rec.is_ok_and(|rec| self.misfit(rec.value).is_none()));
        if let Some(stage) = self.stage.as_mut().filter(|_| fits) {
            return stage.write_tagged_batch(TAG_DATA, batch, records);
        }
        self.sort(batch)?;
        if self.stage.is_some() {
            self.stage_block(TAG_DATA)?;
            return self.stage_block(TAG_BAD);
        }
        // No checkpoints: send now (at-least-once across restarts).
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let stem = format!("{}-{}-live-{}-{}", sender.key_prefix, self.subtask, self.live.0, self.live.1);
        self.live.1 += 1;
        sender.body.clear();
        let seq = sender.send_frames(self.good.as_bytes(), &stem, 0, 0)?;
        sender.send_body(&stem, seq, 0)?;
        let mut lines = Vec::new();
        for rec in Frames::new(self.bad.as_bytes()).flatten() {
            lines.extend_from_slice(rec.value);
            lines.push(b'\n');
        }
        sender.write_bad(&stem, &lines)
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.check_publisher()?;
        self.stage.as_mut().map_or(Ok(()), Stage::flush)
    }

    /// Seals the epoch; the handle also carries the epochs the publishing
    /// thread has not finished sending.
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        self.check_publisher()?;
        if self.stage.is_none() {
            return Ok(Vec::new());
        }
        let shared = self.publisher()?.shared.clone();
        let stage = self.stage.as_mut().expect("checked above");
        let epoch = stage.seal(checkpoint)?;
        let carried = {
            let mut state = shared.lock();
            let carried = state.unsent.clone();
            if epoch.file.is_some() {
                state.unsent.push(epoch.clone());
            }
            carried
        };
        staging::encode_handle(&Handle { area: stage.area().clone(), subtask: self.subtask, epoch, carried })
    }

    /// Hands the checkpoint's epochs to the publishing thread; waits while
    /// another commit is already waiting there.
    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), ConnectorError> {
        let Some(handle) = staging::decode_handle::<Handle>("http", checkpoint, handle)? else { return Ok(()) };
        let publisher = self.publisher()?;
        let mut state = publisher.shared.lock();
        while state.queued >= 2 && state.failed.is_none() {
            state = publisher.shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = &state.failed {
            return Err(again(e));
        }
        state.queued += 1;
        drop(state);
        let sent = publisher.jobs.as_ref().is_some_and(|jobs| jobs.send(handle).is_ok());
        if sent { Ok(()) } else { self.check_publisher().and(Err(ConnectorError::internal(format!("sink `{}`: the publishing thread is gone", self.name)))) }
    }

    /// Waits until every completed checkpoint's epochs are sent; drops the
    /// open epoch.
    fn close(&mut self) -> Result<(), ConnectorError> {
        if let Some(mut p) = self.publisher.take() {
            drop(p.jobs.take());
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
            if let Some(e) = p.shared.lock().failed.take() {
                return Err(e);
            }
        }
        self.stage.as_mut().map_or(Ok(()), Stage::discard)
    }
}

impl Drop for HttpSink {
    /// Without `close` (the pipeline failed): the thread stops before its
    /// next request, and is waited for, so a restart in this process does
    /// not send alongside it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(mut p) = self.publisher.take() {
            drop(p.jobs.take());
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The same failure again, for every call after it.
fn again(e: &ConnectorError) -> ConnectorError {
    ConnectorError { kind: e.kind, message: e.message.clone(), source: None }
}
