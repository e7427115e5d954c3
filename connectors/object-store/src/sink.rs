//! The sink: records are checked and staged per epoch
//! ([`weir_connector::staging`]); a completed checkpoint turns its staged
//! epochs into objects with deterministic names and uploads them.

use crate::config::{BadRecords, ColumnConfig, Destination, Format, ObjectStoreSinkConfig, PartitionTime};
use crate::encode::{self, Encoder, Misfit};
use weir_objects::Store;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use weir_connector::staging::{self, Area, Recovery, Sealed, Stage, StagedHandle};
use weir_connector::{BatchWriter, Committable, ConnectorContext, ConnectorError, Frames, Sink};

/// The failpoint hit once the first objects of a publish are uploaded
/// (crash tests kill the process there, mid-publish).
pub const MID_PUBLISH: &str = "object-store-mid-publish";

/// A staged block of records that passed the check.
const TAG_DATA: u8 = 0;
/// A staged block of dead letters (each record's value is the JSON line).
const TAG_DEAD: u8 = 1;

/// Bytes buffered before the staging file is written.
const STAGE_BUFFER: usize = 256 * 1024;

/// One epoch in a checkpoint handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Epoch {
    sealed: Sealed,
    /// When it was sealed (ms since the Unix epoch): its processing time.
    sealed_at_ms: i64,
}

/// What a checkpoint stores for one subtask: the staged epochs not yet
/// published, whether this checkpoint's commit publishes them, and the
/// columns in force (inferred ones survive a restore this way).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    area: Area,
    subtask: u32,
    epochs: Vec<Epoch>,
    publish: bool,
    columns: Option<Vec<ColumnConfig>>,
}

impl StagedHandle for Handle {
    fn area(&self) -> &Area {
        &self.area
    }

    fn sealed(&self) -> Vec<&Sealed> {
        self.epochs.iter().map(|e| &e.sealed).collect()
    }
}

/// Counters, for tests and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Objects uploaded (replays included).
    pub objects: u64,
    /// Records in them.
    pub records: u64,
    /// Dead letters staged.
    pub dead_letters: u64,
    /// Failed upload attempts that were retried.
    pub retries: u64,
}

/// `type = "object-store"`: one subtask.
pub struct ObjectStoreSink {
    name: String,
    config: ObjectStoreSinkConfig,
    subtask: u32,
    parallelism: u32,
    store: Store,
    runtime: tokio::runtime::Runtime,
    staging_dir: PathBuf,
    stage: Stage,
    columns: Option<Vec<ColumnConfig>>,
    /// Sealed epochs not yet handed to a publishing checkpoint.
    pending: Vec<Epoch>,
    pending_bytes: u64,
    pending_since: Option<Instant>,
    /// The last handle pre-committed, when it carried epochs without
    /// publishing them, and whether its checkpoint has completed: then
    /// `close` publishes it (the data is covered by a completed checkpoint
    /// and no later handle took it over).
    carried: Option<(u64, Handle, bool)>,
    good: BatchWriter,
    dead: BatchWriter,
    stats: Stats,
}

impl std::fmt::Debug for ObjectStoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreSink").field("name", &self.name).field("subtask", &self.subtask).field("store", &self.store.describe()).finish()
    }
}

fn now_ms() -> i64 {
    (weir_connector::now_micros() / 1000) as i64
}

impl ObjectStoreSink {
    /// Opens subtask `ctx.subtask` of a prepared config (`staging-dir`
    /// resolved). Makes no request to the destination.
    pub fn open(config: ObjectStoreSinkConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let name = ctx.name.clone();
        let user = |m: String| ConnectorError::user(format!("sink `{name}` (object-store): {m}"));
        let destination = match &config.destination {
            Some(d) => d.clone(),
            None => Destination::parse(&config.url, std::path::Path::new(".")).map_err(|m| user(format!("url: {m}")))?,
        };
        let store = Store::open(&config.s3(), &destination).map_err(|m| user(format!("url: {m}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("weir-objstore-{name}"))
            .build()
            .map_err(|e| ConnectorError::external(format!("sink `{name}`: cannot start the upload runtime: {e}"), e))?;
        let staging_dir = config.staging_dir.clone().ok_or_else(|| ConnectorError::internal("staging-dir was not resolved by prepare"))?;
        let area = Area::subtask(&staging_dir, ctx.subtask);
        area.create()?;
        Ok(Self {
            columns: config.columns.clone(),
            name,
            subtask: ctx.subtask,
            parallelism: ctx.parallelism.max(1),
            store,
            runtime,
            staging_dir,
            stage: Stage::new(area, STAGE_BUFFER),
            pending: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            carried: None,
            good: BatchWriter::new(),
            dead: BatchWriter::new(),
            stats: Stats::default(),
            config,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn describe_record(rec: &weir_connector::RecordRef<'_>, index: usize) -> String {
        let key = match rec.key {
            Some(k) => format!("key {:?}", String::from_utf8_lossy(k)),
            None => "no key".into(),
        };
        format!("record #{} of its batch ({key}, timestamp {})", index + 1, rec.timestamp)
    }

    /// Checks one record; `Err` with the misfit when it does not fit.
    fn check(&mut self, value: &[u8]) -> Result<(), Misfit> {
        if encode::check(value, self.columns.as_deref(), self.config.format)? {
            let columns = encode::infer(value)?;
            tracing::info!(
                sink = %self.name,
                subtask = self.subtask,
                columns = %columns.iter().map(|c| format!("{} {}", c.name, c.ty.name())).collect::<Vec<_>>().join(", "),
                "Inferred the Parquet columns from the first record; set `columns` to fix them instead."
            );
            self.columns = Some(columns);
        }
        Ok(())
    }

    fn stage_block(&mut self, tag: u8, dead: bool) -> Result<(), ConnectorError> {
        let writer = if dead { &mut self.dead } else { &mut self.good };
        if writer.records() == 0 {
            return Ok(());
        }
        let records = writer.records();
        self.stage.write_tagged_batch(tag, writer.as_bytes(), records)?;
        writer.clear();
        Ok(())
    }

    /// Name of object `seq` of checkpoint `checkpoint` in `dir`.
    fn object_name(dir: &str, subtask: u32, checkpoint: u64, seq: u32, ext: &str) -> String {
        let file = format!("part-{subtask:05}-{checkpoint:012}-{seq:04}.{ext}");
        if dir.is_empty() { file } else { format!("{dir}/{file}") }
    }

    /// Publishes the epochs of `handle` (those not listed in `skip`) as
    /// objects named after `checkpoint`, then removes their staging files.
    /// Idempotent: the same epochs give the same objects under the same
    /// names; epochs whose files are gone were published (files are removed
    /// only after every object is uploaded).
    fn publish(&mut self, checkpoint: u64, handle: &Handle, skip: &[PathBuf]) -> Result<(), ConnectorError> {
        let epochs: Vec<&Epoch> =
            handle.epochs.iter().filter(|e| e.sealed.file.as_ref().is_some_and(|f| !skip.contains(f))).collect();
        if epochs.is_empty() {
            return Ok(());
        }
        if epochs.iter().any(|e| e.sealed.file.as_ref().is_some_and(|f| !f.exists())) {
            tracing::debug!(sink = %self.name, checkpoint, "The objects of this checkpoint were published before.");
            for e in &epochs {
                e.sealed.remove()?;
            }
            return Ok(());
        }
        let name = self.name.clone();
        let internal = |m: String| ConnectorError::internal(format!("sink `{name}` publishing checkpoint {checkpoint}: {m}"));
        let format = self.config.format;
        let columns = handle.columns.clone().unwrap_or_default();
        let roll_size = self.config.roll_size;
        let dead_dir = self.config.dead_letter_path.trim_matches('/').to_owned();
        struct Open {
            encoder: Option<Encoder>,
            bytes: u64,
            records: u64,
            seq: u32,
            dead: bool,
        }
        let mut open: BTreeMap<(bool, String), Open> = BTreeMap::new();
        let mut queue: Vec<(String, Bytes, u64)> = Vec::new();
        let finish = |dir: &str, o: &mut Open, queue: &mut Vec<(String, Bytes, u64)>| -> Result<(), ConnectorError> {
            let Some(encoder) = o.encoder.take() else { return Ok(()) };
            let ext = if o.dead { "jsonl" } else { format.extension() };
            let data = encoder.finish().map_err(&internal)?;
            queue.push((Self::object_name(dir, handle.subtask, checkpoint, o.seq, ext), Bytes::from(data), o.records));
            o.seq += 1;
            o.bytes = 0;
            o.records = 0;
            Ok(())
        };
        let mut uploaded_any = false;
        for epoch in &epochs {
            let mut batches = epoch.sealed.batches()?;
            while let Some(block) = batches.next_batch()? {
                let Some((&tag, frames)) = block.split_first() else { continue };
                let dead = tag == TAG_DEAD;
                for rec in Frames::new(frames) {
                    let rec = rec.map_err(|e| internal(format!("a staged batch is damaged: {e:?}")))?;
                    let dir = if dead {
                        dead_dir.clone()
                    } else {
                        let ms = match self.config.partition_time {
                            PartitionTime::Record => rec.timestamp,
                            PartitionTime::Processing => epoch.sealed_at_ms,
                        };
                        render(&self.config.path, ms)
                    };
                    let key = (dead, dir);
                    let o = open.entry(key.clone()).or_insert(Open { encoder: None, bytes: 0, records: 0, seq: 0, dead });
                    if o.encoder.is_none() {
                        let f = if dead { Format::JsonLines } else { format };
                        o.encoder = Some(Encoder::new(f, &columns, self.config.compression).map_err(&internal)?);
                    }
                    o.encoder.as_mut().expect("set above").push(rec.value).map_err(&internal)?;
                    o.bytes += rec.value.len() as u64 + 1;
                    o.records += 1;
                    if o.bytes >= roll_size {
                        finish(&key.1, o, &mut queue)?;
                    }
                    if queue.len() >= self.config.upload_concurrency {
                        self.upload(checkpoint, &mut queue)?;
                        if !uploaded_any {
                            uploaded_any = true;
                            weir_failpoint::hit(MID_PUBLISH, checkpoint);
                        }
                    }
                }
            }
        }
        for ((_, dir), o) in &mut open {
            finish(dir, o, &mut queue)?;
        }
        if !queue.is_empty() {
            let first = !uploaded_any && queue.len() > 1;
            if first {
                // Upload one object alone so that a crash test can stop
                // the process between objects of one publish.
                let rest = queue.split_off(1);
                self.upload(checkpoint, &mut queue)?;
                weir_failpoint::hit(MID_PUBLISH, checkpoint);
                queue = rest;
            }
            self.upload(checkpoint, &mut queue)?;
        }
        for e in &epochs {
            e.sealed.remove()?;
        }
        Ok(())
    }

    /// Uploads the queued objects concurrently, each retried with backoff
    /// until `retry.give-up-after`.
    fn upload(&mut self, checkpoint: u64, queue: &mut Vec<(String, Bytes, u64)>) -> Result<(), ConnectorError> {
        let items = std::mem::take(queue);
        let store = &self.store;
        let retry = self.config.retry;
        let name = &self.name;
        let results = self.runtime.block_on(futures_util::future::join_all(items.iter().map(|(object, data, _)| async move {
            let started = Instant::now();
            let mut backoff = retry.initial_backoff;
            let mut retries = 0u64;
            loop {
                match store.put(object, data.clone()).await {
                    Ok(()) => return Ok(retries),
                    Err(e) if started.elapsed() + backoff < retry.give_up_after => {
                        tracing::warn!(
                            sink = %name,
                            checkpoint,
                            object = %object,
                            error = %e,
                            retry_in = ?backoff,
                            "Uploading an object failed; retrying. The pipeline waits (backpressure) meanwhile."
                        );
                        retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(retry.max_backoff);
                    }
                    Err(e) => return Err(e),
                }
            }
        })));
        for ((object, _, records), result) in items.iter().zip(results) {
            match result {
                Ok(retries) => {
                    self.stats.objects += 1;
                    self.stats.records += records;
                    self.stats.retries += retries;
                }
                Err(e) => {
                    return Err(ConnectorError::external(
                        format!(
                            "sink `{}` could not upload {object} to {} for checkpoint {checkpoint} within {:?} ({e}); \
                             check that the server is up and the credentials may write there. The checkpoint's records \
                             stay staged and are published again when the pipeline restarts",
                            self.name,
                            self.store.describe(),
                            self.config.retry.give_up_after
                        ),
                        std::io::Error::other(e),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Object names of this sink's parts that belong to this subtask's
    /// share (subtask index modulo the parallelism), temporary files of
    /// local directories included.
    fn own_objects(&self) -> Result<Vec<String>, ConnectorError> {
        let all = self.runtime.block_on(self.store.list("")).map_err(|e| self.listing_failed(e))?;
        Ok(all.into_iter().filter(|n| part_subtask(n).is_some_and(|s| s % self.parallelism == self.subtask)).collect())
    }

    fn listing_failed(&self, e: String) -> ConnectorError {
        ConnectorError::external(
            format!("sink `{}` cannot list {} ({e}); check that the server is up and the bucket exists", self.name, self.store.describe()),
            std::io::Error::other(e),
        )
    }
}

/// The subtask index in an object name this sink writes
/// (`…/part-SSSSS-CCCCCCCCCCCC-NNNN.EXT`, or its local temporary name).
pub fn part_subtask(name: &str) -> Option<u32> {
    let file = name.rsplit('/').next()?;
    let file = file.strip_prefix('.').and_then(|f| f.strip_suffix(".weir-tmp")).unwrap_or(file);
    let rest = file.strip_prefix("part-")?;
    let (stem, ext) = rest.split_once('.')?;
    if !matches!(ext, "jsonl" | "parquet") {
        return None;
    }
    let parts: Vec<&str> = stem.split('-').collect();
    let [s, c, n] = parts.as_slice() else { return None };
    let digits = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_digit());
    (digits(s, 5) && digits(c, 12) && digits(n, 4)).then(|| s.parse().ok()).flatten()
}

/// `template` with its placeholders filled from `ms` (UTC).
pub fn render(template: &str, ms: i64) -> String {
    if !template.contains('{') {
        return template.trim_matches('/').to_owned();
    }
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3600;
    let (y, m, d) = civil_from_days(days);
    template
        .replace("{date}", &format!("{y:04}-{m:02}-{d:02}"))
        .replace("{year}", &format!("{y:04}"))
        .replace("{month}", &format!("{m:02}"))
        .replace("{day}", &format!("{d:02}"))
        .replace("{hour}", &format!("{hour:02}"))
        .trim_matches('/')
        .to_owned()
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Sink for ObjectStoreSink {
    /// A fresh start deletes this subtask's share of earlier parts (only
    /// `--fresh`, or a destination without any, gets here). A restore
    /// publishes the restored handles again, oldest first, each epoch under
    /// the newest handle that lists it, then clears the staging area.
    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        let dir = self.staging_dir.clone();
        let recovery = Recovery::<Handle>::new("object-store", recovered, |h| h.area.check_subtask_in(&dir))?;
        if recovered.is_none() {
            let own = self.own_objects()?;
            if !own.is_empty() {
                tracing::info!(sink = %self.name, subtask = self.subtask, objects = own.len(), destination = %self.store.describe(),
                    "A fresh start: removing the parts an earlier run of this sink wrote.");
            }
            for name in own {
                self.runtime.block_on(self.store.delete(&name)).map_err(|e| self.listing_failed(e))?;
            }
        } else if let Store::Local(_) = self.store {
            for name in self.own_objects()?.into_iter().filter(|n| n.ends_with(".weir-tmp")) {
                self.runtime.block_on(self.store.delete(&name)).map_err(|e| self.listing_failed(e))?;
            }
        }
        let handles = recovery.handles().to_vec();
        if self.config.columns.is_none()
            && let Some(columns) = handles.iter().rev().find_map(|(_, h)| h.columns.clone())
        {
            self.columns = Some(columns);
        }
        for (i, (checkpoint, handle)) in handles.iter().enumerate() {
            let later: Vec<PathBuf> =
                handles[i + 1..].iter().flat_map(|(_, h)| h.epochs.iter().filter_map(|e| e.sealed.file.clone())).collect();
            self.publish(*checkpoint, handle, &later)?;
        }
        recovery.finish(Some(self.stage.area()))
    }

    fn earlier_output(&mut self) -> Result<Option<String>, ConnectorError> {
        let all = self.runtime.block_on(self.store.list("")).map_err(|e| self.listing_failed(e))?;
        let parts = all.iter().filter(|n| part_subtask(n).is_some() && !n.ends_with(".weir-tmp")).count();
        Ok((parts > 0).then(|| format!("{} holds {parts} objects of this sink", self.store.describe())))
    }

    fn write(&mut self, batch: &[u8], _records: usize) -> Result<(), ConnectorError> {
        self.good.clear();
        self.dead.clear();
        for (index, rec) in Frames::new(batch).enumerate() {
            let rec = rec.map_err(|e| ConnectorError::internal(format!("sink `{}` received a damaged batch: {e:?}", self.name)))?;
            match self.check(rec.value) {
                Ok(()) => self.good.push_record(&rec),
                Err(misfit) => {
                    let what = Self::describe_record(&rec, index);
                    let field = if misfit.field.is_empty() { String::new() } else { format!("field `{}`: ", misfit.field) };
                    if self.config.bad_records == BadRecords::Fail {
                        return Err(ConnectorError::user(format!(
                            "sink `{}` (object-store): {what} does not fit: {field}{}; fix the data or the `columns`, \
                             or set bad-records = \"dead-letter\"",
                            self.name, misfit.message
                        )));
                    }
                    let letter = serde_json::json!({
                        "sink": self.name,
                        "error": misfit.message,
                        "field": misfit.field,
                        "key": rec.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                        "value": String::from_utf8_lossy(rec.value),
                        "timestamp": rec.timestamp,
                    });
                    let line = serde_json::to_vec(&letter).expect("a JSON value serializes");
                    self.dead.push(rec.key, &line, rec.timestamp, &[]);
                    self.stats.dead_letters += 1;
                }
            }
        }
        self.stage_block(TAG_DATA, false)?;
        self.stage_block(TAG_DEAD, true)
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.stage.flush()
    }

    /// Seals the epoch; the handle lists every epoch not yet published and
    /// says whether this checkpoint's commit publishes them (always, unless
    /// `roll-interval` asks to gather more: then when the pending records
    /// reach `roll-size` or the oldest is `roll-interval` old).
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        let sealed = self.stage.seal(checkpoint)?;
        if sealed.file.is_some() {
            self.pending_bytes += sealed.bytes;
            self.pending_since.get_or_insert_with(Instant::now);
            self.pending.push(Epoch { sealed, sealed_at_ms: now_ms() });
        }
        let interval = self.config.roll_interval;
        let publish = checkpoint == 0
            || interval.is_zero()
            || self.pending_bytes >= self.config.roll_size
            || self.pending_since.is_some_and(|t| t.elapsed() >= interval);
        let handle = Handle {
            area: self.stage.area().clone(),
            subtask: self.subtask,
            epochs: self.pending.clone(),
            publish,
            columns: self.columns.clone(),
        };
        self.carried = None;
        if publish {
            self.pending.clear();
            self.pending_bytes = 0;
            self.pending_since = None;
        } else if !handle.epochs.is_empty() {
            self.carried = Some((checkpoint, handle.clone(), false));
        }
        staging::encode_handle(&handle)
    }

    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), ConnectorError> {
        let Some(handle) = staging::decode_handle::<Handle>("object-store", checkpoint, handle)? else { return Ok(()) };
        if handle.publish {
            return self.publish(checkpoint, &handle, &[]);
        }
        if let Some((c, _, done)) = &mut self.carried
            && *c == checkpoint
        {
            *done = true;
        }
        Ok(())
    }

    /// Publishes the epochs of the last completed checkpoint when it
    /// carried them without publishing (the end of input with a
    /// `roll-interval`); drops the open epoch.
    fn close(&mut self) -> Result<(), ConnectorError> {
        if let Some((checkpoint, handle, true)) = self.carried.take() {
            self.publish(checkpoint, &handle, &[])?;
        }
        self.stage.discard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn open(dir: &Path, extra: &str) -> ObjectStoreSink {
        let path = if extra.contains("path =") { "" } else { "path = \"{date}\"" };
        let text = format!("url = \"out\"\n{path}\n{extra}");
        let mut config: ObjectStoreSinkConfig = toml::from_str(&text).unwrap();
        config.destination = Some(Destination::Local(dir.join("out")));
        config.staging_dir = Some(dir.join("staging"));
        let ctx = ConnectorContext::new("p", "out", 0, 1);
        ObjectStoreSink::open(config, &ctx).unwrap()
    }

    fn write(sink: &mut ObjectStoreSink, ids: std::ops::Range<u64>) {
        let mut w = BatchWriter::new();
        for i in ids {
            w.push(None, format!("{{\"id\":{i}}}").as_bytes(), 86_400_000 * (i as i64 % 2), &[]);
        }
        sink.write(w.as_bytes(), w.records()).unwrap();
    }

    /// Every published object (name -> lines), temporaries included.
    fn objects(dir: &Path) -> BTreeMap<String, Vec<String>> {
        let store = Store::Local(dir.join("out"));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.list(""))
            .unwrap()
            .into_iter()
            .map(|n| {
                let text = std::fs::read_to_string(dir.join("out").join(&n)).unwrap();
                (n, text.lines().map(str::to_owned).collect())
            })
            .collect()
    }

    fn ids(objects: &BTreeMap<String, Vec<String>>) -> Vec<u64> {
        let mut ids: Vec<u64> = objects.values().flatten().map(|l| l[6..l.len() - 1].parse().unwrap()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn nothing_is_visible_before_the_commit_and_a_restore_publishes_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), "");
        sink.start(None).unwrap();
        write(&mut sink, 0..10);
        let h1 = sink.pre_commit(1).unwrap();
        write(&mut sink, 10..20);
        let h2 = sink.pre_commit(2).unwrap();
        assert!(objects(dir.path()).is_empty(), "nothing before the commit");
        sink.commit(1, &h1).unwrap();
        assert_eq!(ids(&objects(dir.path())), (0..10).collect::<Vec<_>>());
        assert_eq!(objects(dir.path()).keys().collect::<Vec<_>>(), ["1970-01-01/part-00000-000000000001-0000.jsonl", "1970-01-02/part-00000-000000000001-0000.jsonl"]);
        // Crash: checkpoint 2 completed but was not committed, and records
        // after it were staged. The restart publishes 2 once and drops the rest.
        write(&mut sink, 20..30);
        sink.flush().unwrap();
        drop(sink);
        let mut sink = open(dir.path(), "");
        let recovered = [Committable { checkpoint: 1, handle: h1.clone() }, Committable { checkpoint: 2, handle: h2.clone() }];
        sink.start(Some(&recovered)).unwrap();
        assert_eq!(ids(&objects(dir.path())), (0..20).collect::<Vec<_>>());
        // Again (a crash during the restart's publish): the same objects.
        let before = objects(dir.path());
        let mut sink = open(dir.path(), "");
        sink.start(Some(&recovered)).unwrap();
        assert_eq!(objects(dir.path()), before);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0, "staging is empty");
    }

    #[test]
    fn a_roll_interval_gathers_checkpoints_and_a_restore_publishes_each_epoch_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), "roll-interval = \"1h\"\npath = \"\"");
        sink.start(None).unwrap();
        write(&mut sink, 0..10);
        let h1 = sink.pre_commit(1).unwrap();
        sink.commit(1, &h1).unwrap();
        write(&mut sink, 10..20);
        let h2 = sink.pre_commit(2).unwrap();
        assert!(objects(dir.path()).is_empty(), "gathered, not published");
        // Restored with both pending handles: epoch 1 is listed by both and
        // published once, under checkpoint 2.
        drop(sink);
        let mut sink = open(dir.path(), "roll-interval = \"1h\"\npath = \"\"");
        sink.start(Some(&[Committable { checkpoint: 1, handle: h1 }, Committable { checkpoint: 2, handle: h2.clone() }])).unwrap();
        let objs = objects(dir.path());
        assert_eq!(objs.keys().collect::<Vec<_>>(), ["part-00000-000000000002-0000.jsonl"]);
        assert_eq!(ids(&objs), (0..20).collect::<Vec<_>>());
        // The end of input: the last completed checkpoint's epochs are
        // published by close.
        write(&mut sink, 20..25);
        let h3 = sink.pre_commit(3).unwrap();
        sink.commit(3, &h3).unwrap();
        assert_eq!(objects(dir.path()).len(), 1);
        sink.close().unwrap();
        assert_eq!(ids(&objects(dir.path())), (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn a_fresh_start_removes_earlier_parts_and_temporaries_of_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out/x");
        std::fs::create_dir_all(&out).unwrap();
        for name in ["part-00000-000000000007-0000.jsonl", ".part-00000-000000000008-0000.jsonl.weir-tmp", "notes.txt"] {
            std::fs::write(out.join(name), "{}").unwrap();
        }
        let mut sink = open(dir.path(), "");
        assert!(sink.earlier_output().unwrap().unwrap().contains("holds 1 objects"));
        sink.start(None).unwrap();
        assert_eq!(objects(dir.path()).keys().collect::<Vec<_>>(), ["x/notes.txt"]);
    }

    #[test]
    fn partitions_and_names() {
        // 2024-02-29T13:05:00Z
        let ms = 1_709_211_900_000;
        assert_eq!(render("events/dt={date}/hour={hour}", ms), "events/dt=2024-02-29/hour=13");
        assert_eq!(render("{year}/{month}/{day}/", ms), "2024/02/29");
        assert_eq!(render("", ms), "");
        assert_eq!(render("x", -1), "x");
        assert_eq!(render("{date}", -1), "1969-12-31");
        let name = ObjectStoreSink::object_name("a/b", 3, 17, 2, "parquet");
        assert_eq!(name, "a/b/part-00003-000000000017-0002.parquet");
        assert_eq!(part_subtask(&name), Some(3));
        assert_eq!(part_subtask("a/.part-00003-000000000017-0002.jsonl.weir-tmp"), Some(3));
        assert_eq!(part_subtask("a/part-3-17-2.jsonl"), None);
        assert_eq!(part_subtask("a/part-00003-000000000017-0002.csv"), None);
    }
}
