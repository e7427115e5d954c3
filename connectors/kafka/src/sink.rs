//! The Kafka sink.
//!
//! ```toml
//! [sinks.out]
//! type = "kafka"
//! brokers = "localhost:9092"
//! topic = "enriched"             # or per record: topic-header = "topic" (topic is then the fallback)
//! delivery = "exactly-once"      # or "at-least-once" (default)
//! linger = "5ms"                 # librdkafka linger.ms
//! batch-size = "1MiB"            # librdkafka batch.size
//! compression = "lz4"            # none | gzip | snappy | lz4 | zstd
//! [sinks.out.properties]         # any librdkafka producer property
//! "message.max.bytes" = 2000000
//! ```
//!
//! Every record's key becomes the Kafka key (so Kafka's partitioner keeps a
//! key on one partition), its timestamp the Kafka timestamp, and its headers
//! Kafka headers (weir's own `weir-*` headers are left out). The producer is
//! always idempotent: a retried send is never written twice. librdkafka
//! retries failed sends until `delivery.timeout.ms` (default 2 minutes
//! here); a record that still fails stops the pipeline with the broker's
//! error, and is never dropped silently.
//!
//! # Exactly-once
//!
//! With `delivery = "exactly-once"` (checkpoints must be on) the records of
//! each checkpoint epoch are written in one Kafka transaction, committed
//! when the checkpoint completes; consumers reading with
//! `isolation.level=read_committed` (librdkafka's default) see them only
//! then, all at once. Each epoch's records are also staged in a local
//! *spill file* ([`weir_connector::staging`], `spill-dir/SUBTASK.*`), sealed
//! and fsynced with its directory at the barrier and removed once its
//! transaction commits, and every transaction commits, with its records, a
//! *marker*: the checkpoint id as the offset of the consumer
//! group `PREFIX-SUBTASK` on partition 0 of `topic`. A transaction open when
//! the process died is aborted by the broker once the restarted sink takes
//! over its transactional id; the restarted sink reads the marker, and if
//! the epoch of the checkpoint it resumes from was not committed it writes
//! the spill file again in a new transaction. That closes the window every
//! librdkafka-based sink otherwise has between "checkpoint complete" and
//! "transaction committed" (Flink's Java client resumes the transaction
//! instead, which librdkafka cannot).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};
use serde::{Deserialize, Serialize};
use weir_connector::config::{ByteSize, DurationStr};
use weir_connector::staging::{self, Area, Recovery, Sealed, Stage, StagedHandle};
use weir_codec::{Codec, Format, Framing, Side, ValueFormat};
use weir_connector::{Committable, ConnectorContext, ConnectorError, Frames, Sink};

use crate::source::{Property, properties};
use crate::{REQUEST_TIMEOUT, client_config, external};

/// What the sink guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Every record arrives at least once; after a restore, records since
    /// the last checkpoint are written again.
    #[default]
    AtLeastOnce,
    /// Kafka transactions tied to checkpoints (see the module docs).
    ExactlyOnce,
}

/// `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// `[sinks.NAME]` with `type = "kafka"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic records go to (the fallback with `topic-header`).
    #[serde(default)]
    pub topic: Option<String>,
    /// Take each record's topic from this header.
    #[serde(default)]
    pub topic_header: Option<String>,
    /// At-least-once (default) or exactly-once.
    #[serde(default)]
    pub delivery: Delivery,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(default = "default_linger")]
    pub linger: DurationStr,
    /// Largest batch per partition (`batch.size`).
    #[serde(default = "default_batch_size")]
    pub batch_size: ByteSize,
    /// `compression.type`.
    #[serde(default)]
    pub compression: Compression,
    /// Exactly-once: prefix of the transactional ids and marker groups;
    /// default `weir-PIPELINE-SINK`. Must be unique per pipeline and sink
    /// across everything writing to the cluster.
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// Exactly-once: `transaction.timeout.ms`. Must exceed the checkpoint
    /// interval plus the time a checkpoint takes.
    #[serde(default = "default_transaction_timeout")]
    pub transaction_timeout: DurationStr,
    /// Exactly-once: where each epoch's spill file is kept until its
    /// transaction commits. Relative paths are resolved against the
    /// pipeline file; default `data/kafka/PIPELINE/SINK`.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// What to write as the Kafka value: `json` (the record, checked; the
    /// default), `avro` or `protobuf` (encoded from the record's JSON), or
    /// `raw` (the record's bytes, unchecked).
    #[serde(default)]
    pub format: Format,
    /// The Avro (`.avsc`) or protobuf (`.proto`) schema.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// Protobuf: the message's full name (default: the file's first).
    #[serde(default)]
    pub message: Option<String>,
    /// `confluent`: each value starts with a zero byte and `schema-id`.
    #[serde(default)]
    pub framing: Framing,
    /// With `framing = "confluent"`: the schema's id in your registry.
    #[serde(default)]
    pub schema_id: Option<u32>,
    /// librdkafka producer properties, passed through as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, Property>,
}

fn default_linger() -> DurationStr {
    DurationStr(Duration::from_millis(5))
}

fn default_batch_size() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_transaction_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(600))
}

impl KafkaSinkConfig {
    /// Problems with the configuration, as `(field, message)` pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.topic.is_none() && self.topic_header.is_none() {
            problems.push(("topic".to_owned(), "set topic = \"NAME\" (or topic-header = \"HEADER\" with topic as the fallback)".to_owned()));
        }
        if self.delivery == Delivery::ExactlyOnce && self.topic.is_none() {
            problems.push(("topic".to_owned(), "exactly-once needs a topic (it also holds the commit markers)".to_owned()));
        }
        if self.brokers.trim().is_empty() {
            problems.push(("brokers".to_owned(), "must list at least one host:port".to_owned()));
        }
        problems.extend(self.value_format().problems(Side::Sink));
        for k in self.properties.keys() {
            if matches!(k.as_str(), "bootstrap.servers" | "transactional.id" | "enable.idempotence") {
                problems.push((format!("properties.{k}"), "is set by weir".to_owned()));
            }
        }
        problems
    }

    /// The value-format keys as one value.
    pub fn value_format(&self) -> ValueFormat {
        ValueFormat {
            format: self.format,
            schema_file: self.schema_file.clone(),
            message: self.message.clone(),
            framing: self.framing,
            schema_id: self.schema_id,
        }
    }
}

/// Delivery callbacks: the first failure is kept and reported by the next
/// call into the sink.
struct SinkContext {
    failed: Arc<Mutex<Option<String>>>,
    at: ConnectorContext,
    log: Arc<crate::ClientLog>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&format!("sink {:?}", self.at.name), &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(&format!("sink {:?}", self.at.name), level, fac, message);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((e, m)) = result else { return };
        // Runs on the producer's polling thread: a panic here would end it
        // unheard, and no delivery would be reported again.
        let reported = weir_connector::background::guard("kafka producer", || {
            weir_events::emit(weir_events::KafkaDeliveryFailed {
                pipeline: &self.at.pipeline,
                sink: &self.at.name,
                subtask: self.at.subtask,
                topic: m.topic(),
                partition: m.partition(),
                error: e,
            });
        });
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            let mut message = format!("a record for {}[{}] could not be delivered after retries: {e}", m.topic(), m.partition());
            if let Err(panic) = reported {
                message.push_str(&format!("; and {panic}"));
            }
            *f = Some(message);
        }
    }
}

type Producer_ = ThreadedProducer<SinkContext>;

/// What the checkpoint stores for a subtask in exactly-once mode: every
/// epoch not yet committed when the barrier passed, oldest first (the
/// checkpoint's own epoch last; earlier ones belong to checkpoints that
/// failed and are committed with it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    /// Where that subtask staged its epochs.
    area: Area,
    /// Subtask that wrote it (its marker group).
    subtask: u32,
    /// Transactional ids that subtask had in use (`PREFIX-SUBTASK-0..slots`).
    slots: u32,
    /// The uncommitted epochs.
    epochs: Vec<Epoch>,
}

impl StagedHandle for Handle {
    fn area(&self) -> &Area {
        &self.area
    }

    fn sealed(&self) -> Vec<&Sealed> {
        self.epochs.iter().map(|e| &e.sealed).collect()
    }
}

/// More transactional ids than one subtask ever holds: each is a producer
/// with an uncommitted epoch or an idle one, so a handle with more was not
/// written by this sink. Restoring fences every id of a handle.
const MAX_SLOTS: u32 = 1024;

impl Handle {
    /// `Ok` when this handle is one this sink's subtasks write: its area in
    /// `spill_dir`, its transactional ids `PREFIX-SUBTASK-SLOT`.
    fn check_ours(&self, spill_dir: &Path, prefix: &str) -> Result<(), String> {
        self.area.check_subtask_in(spill_dir)?;
        if self.slots > MAX_SLOTS {
            return Err(format!(
                "it names {} transactional ids, more than a subtask ever uses ({MAX_SLOTS})",
                self.slots
            ));
        }
        let own = format!("{prefix}-{}-", self.subtask);
        for epoch in &self.epochs {
            let slot = epoch
                .transactional_id
                .strip_prefix(&own)
                .and_then(|s| s.parse::<u32>().ok());
            if slot.is_none_or(|s| s >= self.slots) {
                return Err(format!(
                    "the transactional id {:?} is not one of subtask {}'s ({own}0 to {own}{})",
                    epoch.transactional_id,
                    self.subtask,
                    self.slots.saturating_sub(1)
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Epoch {
    /// The epoch's transaction.
    transactional_id: String,
    /// The epoch's records; its checkpoint is the marker value.
    sealed: Sealed,
}

/// One transactional producer.
struct Txn {
    producer: Producer_,
    id: String,
}

/// A Kafka sink subtask. See the module docs.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    ctx: ConnectorContext,
    prefix: String,
    /// Exactly-once: the open epoch's records, in `spill-dir`.
    stage: Stage,
    failed: Arc<Mutex<Option<String>>>,
    /// librdkafka's errors and warnings, shared by the sink's producers.
    client_log: Arc<crate::ClientLog>,
    /// At-least-once: the one producer.
    plain: Option<Producer_>,
    /// Exactly-once: the open epoch's transaction, sealed epochs waiting
    /// for their checkpoint, and idle producers.
    open: Option<Txn>,
    pending: VecDeque<(Txn, Sealed)>,
    idle: Vec<Txn>,
    slots: u32,
    marker_group: Option<rdkafka::consumer::ConsumerGroupMetadata>,
    /// Encodes record values (`format`).
    codec: Codec,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("sink", &self.ctx.name).field("subtask", &self.ctx.subtask).finish()
    }
}

impl KafkaSink {
    /// Creates the sink; nothing is sent to the brokers before
    /// [`Sink::start`].
    pub fn open(config: KafkaSinkConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let codec = config.value_format().codec().map_err(|e| ConnectorError::user(format!("sink {:?} (kafka): {e}", ctx.name)))?;
        let prefix = config.transactional_id_prefix.clone().unwrap_or_else(|| format!("weir-{}-{}", ctx.pipeline, ctx.name));
        let spill_dir = config.spill_dir.clone().unwrap_or_else(|| default_spill_dir(Path::new(""), &ctx.pipeline, &ctx.name));
        let mut sink = Self {
            config,
            ctx: ctx.clone(),
            prefix,
            stage: Stage::new(Area::subtask(spill_dir, ctx.subtask), 1 << 20),
            failed: Arc::new(Mutex::new(None)),
            client_log: Arc::default(),
            plain: None,
            open: None,
            pending: VecDeque::new(),
            idle: Vec::new(),
            slots: 0,
            marker_group: None,
            codec,
        };
        if sink.config.delivery == Delivery::AtLeastOnce {
            sink.plain = Some(sink.producer(None)?);
        }
        Ok(sink)
    }

    fn producer(&self, transactional_id: Option<&str>) -> Result<Producer_, ConnectorError> {
        let mut defaults = vec![
            ("client.id", format!("weir-{}-{}-{}", self.ctx.pipeline, self.ctx.name, self.ctx.subtask)),
            ("enable.idempotence", "true".to_owned()),
            ("linger.ms", self.config.linger.0.as_millis().to_string()),
            ("batch.size", self.config.batch_size.0.min(i32::MAX as u64).to_string()),
            ("compression.type", self.config.compression.as_str().to_owned()),
            ("delivery.timeout.ms", "120000".to_owned()),
            ("queue.buffering.max.kbytes", "65536".to_owned()),
        ];
        if let Some(id) = transactional_id {
            defaults.push(("transactional.id", id.to_owned()));
            defaults.push(("transaction.timeout.ms", self.config.transaction_timeout.0.as_millis().to_string()));
        }
        client_config(&self.config.brokers, &defaults, &properties(&self.config.properties))
            .create_with_context(SinkContext { failed: self.failed.clone(), at: self.ctx.clone(), log: self.client_log.clone() })
            .map_err(|e| ConnectorError::user(format!("invalid Kafka producer settings: {e}")))
    }

    fn check_failed(&self) -> Result<(), ConnectorError> {
        match self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(e) => Err(ConnectorError { kind: weir_connector::ErrorKind::External, message: e, source: None }),
            None => Ok(()),
        }
    }

    /// A transactional producer whose transactional id fenced off any
    /// earlier holder (aborting its open transaction).
    fn transactional(&self, id: &str) -> Result<Producer_, ConnectorError> {
        let p = self.producer(Some(id))?;
        p.init_transactions(REQUEST_TIMEOUT).map_err(|e| external(format!("starting transactions as {id:?} (does the broker support transactions?)"), e))?;
        Ok(p)
    }

    /// The open epoch, starting one (and its transaction) if needed.
    fn open_txn(&mut self) -> Result<&mut Txn, ConnectorError> {
        if self.open.is_none() {
            let txn = match self.idle.pop() {
                Some(t) => t,
                None => {
                    let id = format!("{}-{}-{}", self.prefix, self.ctx.subtask, self.slots);
                    self.slots += 1;
                    Txn { producer: self.transactional(&id)?, id }
                }
            };
            txn.producer.begin_transaction().map_err(|e| external(format!("beginning a transaction as {:?}", txn.id), e))?;
            self.open = Some(txn);
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// A client of the marker group `PREFIX-SUBTASK`, and the group's name.
    fn marker_client(&self, subtask: u32) -> Result<(BaseConsumer, String), ConnectorError> {
        let group = format!("{}-{}", self.prefix, subtask);
        let c = client_config(&self.config.brokers, &[("group.id", group.clone())], &properties(&self.config.properties))
            .create()
            .map_err(|e| ConnectorError::user(format!("invalid Kafka settings: {e}")))?;
        Ok((c, group))
    }

    fn marker_group(&self, subtask: u32) -> Result<rdkafka::consumer::ConsumerGroupMetadata, ConnectorError> {
        let (c, group) = self.marker_client(subtask)?;
        c.group_metadata().ok_or_else(|| ConnectorError::internal(format!("no group metadata for {group:?}")))
    }

    /// The last checkpoint whose epoch `subtask` committed (its marker).
    fn committed_marker(&self, subtask: u32) -> Result<Option<u64>, ConnectorError> {
        let (c, group) = self.marker_client(subtask)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.marker_topic(), 0);
        let got = c.committed_offsets(tpl, REQUEST_TIMEOUT).map_err(|e| external(format!("reading the commit marker of {group:?}"), e))?;
        Ok(got.find_partition(self.marker_topic(), 0).and_then(|e| match e.offset() {
            Offset::Offset(n) if n >= 0 => Some(n as u64),
            _ => None,
        }))
    }

    fn marker_topic(&self) -> &str {
        self.config.topic.as_deref().unwrap_or_default()
    }

    /// Commits `txn` with the marker of `checkpoint`.
    fn commit_txn(&mut self, checkpoint: u64, txn: &Txn) -> Result<(), ConnectorError> {
        if self.marker_group.is_none() {
            self.marker_group = Some(self.marker_group(self.ctx.subtask)?);
        }
        let group = self.marker_group.as_ref().expect("set above");
        self.commit_with_marker(&txn.producer, &txn.id, group, checkpoint)
    }

    /// Adds the marker of `checkpoint` (group `group`) to the open
    /// transaction of `producer` and commits it.
    fn commit_with_marker(
        &self,
        producer: &Producer_,
        transactional_id: &str,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        checkpoint: u64,
    ) -> Result<(), ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.marker_topic(), 0, Offset::Offset(checkpoint as i64)).map_err(|e| external("marker", e))?;
        producer
            .send_offsets_to_transaction(&tpl, group, REQUEST_TIMEOUT)
            .map_err(|e| external(format!("adding the commit marker of checkpoint {checkpoint} to {transactional_id:?}"), e))?;
        producer
            .commit_transaction(REQUEST_TIMEOUT)
            .map_err(|e| external(format!("committing transaction {transactional_id:?} of checkpoint {checkpoint}"), e))
    }

    fn send(&self, producer: &Producer_, batch: &[u8]) -> Result<(), ConnectorError> {
        let mut encoded = Vec::new();
        for (index, rec) in Frames::new(batch).enumerate() {
            let rec = rec.map_err(|e| ConnectorError::internal(format!("corrupt batch: {e}")))?;
            let mut topic = self.config.topic.as_deref();
            let mut headers: Option<OwnedHeaders> = None;
            for h in rec.headers() {
                let (name, value) = h.map_err(|e| ConnectorError::internal(format!("corrupt record headers: {e}")))?;
                if let Some(h) = &self.config.topic_header
                    && name == h.as_bytes()
                {
                    topic = std::str::from_utf8(value).ok();
                    continue;
                }
                if name.starts_with(b"weir-") {
                    continue;
                }
                let key = String::from_utf8_lossy(name);
                headers = Some(headers.unwrap_or_default().insert(Header { key: &key, value: Some(value) }));
            }
            let Some(topic) = topic else {
                return Err(ConnectorError::user(format!(
                    "a record has no {:?} header and the sink has no topic to fall back to (value starts {:?})",
                    self.config.topic_header.as_deref().unwrap_or_default(),
                    String::from_utf8_lossy(&rec.value[..rec.value.len().min(40)])
                )));
            };
            let value = self.codec.encode(rec.value, &mut encoded).map_err(|e| {
                ConnectorError::user(format!(
                    "sink {:?} (kafka, format = \"{}\") cannot write record {index} of a batch ({}): {e}. Fix the operator \
                     that makes it, or the schema",
                    self.ctx.name,
                    self.config.format.as_str(),
                    describe(&rec)
                ))
            })?;
            let mut record = BaseRecord::to(topic).payload(value).timestamp(rec.timestamp);
            if let Some(k) = rec.key {
                record = record.key(k);
            }
            if let Some(h) = headers {
                record = record.headers(h);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: wait for deliveries
                        // (this is the sink's backpressure).
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                        self.check_failed()?;
                    }
                    Err((e, _)) => return Err(external(format!("sending a record to topic {topic:?}"), e)),
                }
            }
        }
        Ok(())
    }

    fn flush(producer: &Producer_) -> Result<(), ConnectorError> {
        producer.flush(Duration::from_secs(150)).map_err(|e| external("waiting for Kafka to acknowledge records", e))
    }

    /// Writes an epoch's spill file again in a new transaction with its
    /// marker, then removes the file.
    fn replay(&mut self, subtask: u32, epoch: &Epoch) -> Result<(), ConnectorError> {
        let checkpoint = epoch.sealed.checkpoint;
        let mut batches = epoch.sealed.batches()?;
        let producer = self.transactional(&epoch.transactional_id)?;
        producer.begin_transaction().map_err(|e| external("beginning the replay transaction", e))?;
        while let Some(batch) = batches.next_batch()? {
            self.send(&producer, batch)?;
        }
        Self::flush(&producer)?;
        self.check_failed()?;
        let group = self.marker_group(subtask)?;
        self.commit_with_marker(&producer, &epoch.transactional_id, &group, checkpoint)?;
        epoch.sealed.remove()?;
        tracing::info!(
            sink = %self.ctx.name,
            subtask = self.ctx.subtask,
            "re-sent the uncommitted epoch of checkpoint {checkpoint} ({} records) from {}",
            epoch.sealed.records,
            epoch.sealed.file.as_deref().unwrap_or(Path::new("(no records)")).display()
        );
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        if self.config.delivery == Delivery::AtLeastOnce {
            return Ok(());
        }
        self.stage.area().create()?;
        let (spill_dir, prefix) = (self.stage.area().dir.clone(), self.prefix.clone());
        let recovery =
            Recovery::<Handle>::new("Kafka", recovered, |h| h.check_ours(&spill_dir, &prefix))?;
        for (_, handle) in recovery.handles() {
            // Fence every transactional id of the old subtask: its open
            // transactions (epochs after the checkpoint) are aborted.
            for slot in 0..handle.slots {
                drop(self.transactional(&format!("{}-{}-{}", self.prefix, handle.subtask, slot))?);
            }
            let done = self.committed_marker(handle.subtask)?;
            for epoch in &handle.epochs {
                if done.is_none_or(|d| d < epoch.sealed.checkpoint) {
                    self.replay(handle.subtask, epoch)?;
                }
            }
        }
        // Every epoch the checkpoint names is committed now; other spill
        // files hold records after it, which the sources send again.
        recovery.finish(Some(self.stage.area()))?;
        // Fence our own ids from an earlier run without a checkpoint.
        self.open_txn()?;
        Ok(())
    }

    fn write(&mut self, batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        self.check_failed()?;
        if let Some(p) = &self.plain {
            return self.send(p, batch);
        }
        self.open_txn()?;
        let txn = self.open.take().expect("opened above");
        let r = self.send(&txn.producer, batch);
        self.open = Some(txn);
        r?;
        self.stage.write_batch(batch, records)
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        if let Some(p) = &self.plain {
            Self::flush(p)?;
        }
        if let Some(t) = &self.open {
            Self::flush(&t.producer)?;
        }
        self.check_failed()
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        if self.config.delivery == Delivery::AtLeastOnce {
            self.flush()?;
            return Ok(Vec::new());
        }
        self.open_txn()?;
        let txn = self.open.take().expect("opened above");
        Self::flush(&txn.producer)?;
        self.check_failed()?;
        let sealed = self.stage.seal(checkpoint)?;
        self.pending.push_back((txn, sealed));
        let epochs = self.pending.iter().map(|(t, sealed)| Epoch { transactional_id: t.id.clone(), sealed: sealed.clone() }).collect();
        let handle = Handle { area: self.stage.area().clone(), subtask: self.ctx.subtask, slots: self.slots, epochs };
        staging::encode_handle(&handle)
    }

    fn commit(&mut self, checkpoint: u64, _handle: &[u8]) -> Result<(), ConnectorError> {
        while self.pending.front().is_some_and(|(_, sealed)| sealed.checkpoint <= checkpoint) {
            let (txn, sealed) = self.pending.pop_front().expect("checked");
            self.commit_txn(sealed.checkpoint, &txn)?;
            sealed.remove()?;
            self.idle.push(txn);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        self.flush()?;
        if let Some(txn) = self.open.take() {
            // Records after the last checkpoint: abort; a restore re-sends them.
            let _ = txn.producer.abort_transaction(REQUEST_TIMEOUT);
            self.stage.discard()?;
        }
        Ok(())
    }
}

/// The spill directory for a sink whose config left it unset, under `base`.
/// A record for a message: its key and the start of its value.
fn describe(rec: &weir_format::RecordRef<'_>) -> String {
    let start = String::from_utf8_lossy(&rec.value[..rec.value.len().min(60)]);
    let more = if rec.value.len() > 60 { "..." } else { "" };
    match rec.key {
        Some(k) => format!("key {:?}, value {start}{more}", String::from_utf8_lossy(k)),
        None => format!("value {start}{more}"),
    }
}

pub fn default_spill_dir(base: &Path, pipeline: &str, sink: &str) -> PathBuf {
    base.join("data/kafka").join(pipeline).join(sink)
}
