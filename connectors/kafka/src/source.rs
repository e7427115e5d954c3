//! The Kafka source: weir-assigned partitions, offsets in checkpoints, and a
//! polling thread that pauses partitions under backpressure.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, error::KafkaError, types::RDKafkaErrorCode};
use serde::Deserialize;
use weir_connector::config::{ByteSize, DurationStr};
use weir_codec::{Codec, Format, Framing, Side, ValueFormat};
use weir_connector::cluster::Lane;
use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Poll, Source};

use crate::{REQUEST_TIMEOUT, client_config, external};

/// Where a source without a checkpoint starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// The oldest offset still in each partition.
    #[default]
    Earliest,
    /// Only records produced after the pipeline starts.
    Latest,
    /// The consumer group's committed offsets (earliest where it has none).
    Committed,
    /// The first offset whose timestamp is at least `start-timestamp`.
    Timestamp,
}

/// Where a source stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopAt {
    /// Never: an unbounded stream.
    #[default]
    None,
    /// At each partition's end offset as seen when the run starts: a
    /// bounded run over what the topic holds now.
    Latest,
}

/// A librdkafka property value: TOML strings, numbers and booleans are all
/// passed on as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Property {
    /// `"value"`.
    Text(String),
    /// `123`.
    Int(i64),
    /// `1.5`.
    Float(f64),
    /// `true`.
    Bool(bool),
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Turns a `properties` table into librdkafka's strings.
pub(crate) fn properties(p: &BTreeMap<String, Property>) -> BTreeMap<String, String> {
    p.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

/// `[sources.NAME]` with `type = "kafka"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSourceConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// One topic (or use `topics`, or `topic-pattern`).
    #[serde(default)]
    pub topic: Option<String>,
    /// Several topics.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression over topic names, matched when the run starts
    /// and at every partition discovery.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// The consumer group offsets are committed to (for monitoring and
    /// `start = "committed"`); default `weir-PIPELINE-SOURCE`.
    #[serde(default)]
    pub group: Option<String>,
    /// Where a run without a checkpoint starts.
    #[serde(default)]
    pub start: StartFrom,
    /// With `start = "timestamp"`: ms since the Unix epoch.
    #[serde(default)]
    pub start_timestamp: Option<i64>,
    /// Where the run stops (`none`: never).
    #[serde(default)]
    pub end: StopAt,
    /// Records read ahead of the pipeline, per subtask, before partitions
    /// are paused.
    #[serde(default = "default_max_buffered")]
    pub max_buffered: ByteSize,
    /// How often new partitions (and, with `topic-pattern`, new topics) are
    /// looked for; `"0"` turns discovery off.
    #[serde(default = "default_discovery")]
    pub partition_discovery: DurationStr,
    /// Emit event-time watermarks: the smallest, over the subtask's
    /// partitions, of the largest record timestamp read, minus this delay.
    #[serde(default)]
    pub watermark_delay: Option<DurationStr>,
    /// Stamp each record with its Kafka timestamp as its creation time, so
    /// the sinks measure end-to-end latency (producer -> broker -> weir ->
    /// sink) as for the generator's `mark-latency`. Meaningful only for
    /// `CreateTime` timestamps from producers whose clock is this host's;
    /// Kafka timestamps are whole milliseconds. Adds a 16-byte header to
    /// every record.
    #[serde(default)]
    pub mark_latency: bool,
    /// What the record values hold: `json` (checked, the default), `avro`,
    /// `protobuf` (decoded to JSON) or `raw` (unchecked bytes).
    #[serde(default)]
    pub format: Format,
    /// The Avro (`.avsc`) or protobuf (`.proto`) schema.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// Protobuf: the message's full name (default: the file's first).
    #[serde(default)]
    pub message: Option<String>,
    /// `confluent`: values start with a zero byte and a schema id.
    #[serde(default)]
    pub framing: Framing,
    /// With `framing = "confluent"`: refuse values written with another id.
    #[serde(default)]
    pub schema_id: Option<u32>,
    /// A value that does not decode: `fail` stops the pipeline naming the
    /// record; `drop` skips it, logging each one (nothing else does).
    #[serde(default)]
    pub bad_data: BadData,
    /// librdkafka consumer properties, passed through as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, Property>,
}

/// What the source does with a value its `format` cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadData {
    /// Stop, naming the topic, partition and offset (the default: nothing
    /// is lost).
    #[default]
    Fail,
    /// Skip the record and log it with its position.
    Drop,
}

fn default_max_buffered() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_discovery() -> DurationStr {
    DurationStr(Duration::from_secs(30))
}

impl KafkaSourceConfig {
    /// Problems with the configuration, as `(field, message)` pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let given = usize::from(self.topic.is_some()) + usize::from(!self.topics.is_empty()) + usize::from(self.topic_pattern.is_some());
        if given != 1 {
            problems.push((
                "topics".to_owned(),
                "set exactly one of topic = \"NAME\", topics = [\"A\", \"B\"] or topic-pattern = \"REGEX\"".to_owned(),
            ));
        }
        if let Some(p) = &self.topic_pattern
            && let Err(e) = regex::Regex::new(p)
        {
            problems.push(("topic-pattern".to_owned(), format!("invalid regular expression: {e}")));
        }
        if self.brokers.trim().is_empty() {
            problems.push(("brokers".to_owned(), "must list at least one host:port".to_owned()));
        }
        match (self.start, self.start_timestamp) {
            (StartFrom::Timestamp, None) => {
                problems.push(("start-timestamp".to_owned(), "required with start = \"timestamp\" (ms since the Unix epoch)".to_owned()))
            }
            (s, Some(_)) if s != StartFrom::Timestamp => {
                problems.push(("start-timestamp".to_owned(), "only used with start = \"timestamp\"".to_owned()))
            }
            _ => {}
        }
        if self.max_buffered.0 < 64 << 10 {
            problems.push(("max-buffered".to_owned(), "must be at least 64KiB".to_owned()));
        }
        problems.extend(self.value_format().problems(Side::Source));
        for k in self.properties.keys() {
            if matches!(k.as_str(), "bootstrap.servers" | "group.id" | "enable.auto.commit") {
                problems.push((format!("properties.{k}"), "is set by weir; use brokers / group instead".to_owned()));
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

    fn group(&self, ctx: &ConnectorContext) -> String {
        self.group.clone().unwrap_or_else(|| format!("weir-{}-{}", ctx.pipeline, ctx.name))
    }
}

/// A partition and the offset of the next record to emit.
type Tp = (Arc<str>, i32);

/// Records read by the polling thread, handed to the task as one piece.
#[derive(Debug, Default)]
struct Chunk {
    frames: BatchWriter,
    /// Next offset per partition after the records in `frames` (also sent
    /// without records, when the consumer skipped offsets: transaction
    /// markers, compacted records).
    progress: Vec<(Tp, i64, i64)>,
    /// Bounded runs: end offsets learnt since the last chunk.
    ends: Vec<(Tp, i64)>,
}

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// A failure the polling thread cannot recover from.
    error: Option<ConnectorError>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    stop: AtomicBool,
    /// Next offset emitted per partition, for the lag metric.
    emitted: Mutex<HashMap<Tp, i64>>,
    /// End of each partition (last stable offset) as the brokers' fetch
    /// responses report it, from librdkafka's statistics.
    ends: Mutex<HashMap<Tp, i64>>,
}

/// librdkafka callbacks: statistics (lag per partition) and commit results.
struct SourceContext {
    shared: Arc<Shared>,
    at: ConnectorContext,
    log: crate::ClientLog,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let emitted = self.shared.emitted.lock().unwrap_or_else(|e| e.into_inner());
        let mut ends = self.shared.ends.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                if end >= 0 && *partition >= 0 && p.fetch_state == "active" {
                    ends.insert((Arc::from(topic.as_str()), *partition), end);
                }
                let Some(next) = emitted.get(&(Arc::<str>::from(topic.as_str()), *partition)) else { continue };
                if end < 0 {
                    continue;
                }
                weir_events::emit(weir_events::KafkaConsumerLag {
                    pipeline: &self.at.pipeline,
                    source: &self.at.name,
                    subtask: self.at.subtask,
                    topic,
                    partition: *partition,
                    lag: end - next,
                });
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&format!("source {:?}", self.at.name), &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(&format!("source {:?}", self.at.name), level, fac, message);
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(pipeline = %self.at.pipeline, source = %self.at.name, "could not commit offsets to the consumer group (monitoring only; checkpoints are unaffected): {e}");
        }
    }
}

type Consumer_ = BaseConsumer<SourceContext>;

/// Per-partition position on the task thread.
#[derive(Debug, Clone, Copy)]
struct Position {
    next: i64,
    /// Bounded runs: the partition is done when `next >= end`.
    end: Option<i64>,
    /// Largest record timestamp emitted (for watermarks).
    max_ts: Option<i64>,
}

/// A Kafka source subtask. See the crate docs.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    name: String,
    subtask: u32,
    /// In a pipeline spread over a group: the one partition this reads.
    lane: Option<Lane>,
    parallelism: u32,
    group: String,
    consumer: Arc<Consumer_>,
    shared: Arc<Shared>,
    topics: Vec<String>,
    positions: BTreeMap<Tp, Position>,
    restored: Option<HashMap<(String, i32), i64>>,
    thread: Option<JoinHandle<()>>,
    started: bool,
    codec: Codec,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("name", &self.name).field("subtask", &self.subtask).field("topics", &self.topics).finish()
    }
}

/// Subtask that reads `partition` of `topic` (Flink's rule: consecutive
/// partitions of a topic go to consecutive subtasks, from a start that
/// depends on the topic so small topics do not all land on subtask 0).
pub fn owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let start = (weir_format::keygroup::hash(topic.as_bytes()) % u64::from(parallelism)) as u32;
    ((u64::from(start) + partition as u64) % u64::from(parallelism)) as u32
}

impl KafkaSource {
    /// Connects to the brokers and finds this subtask's partitions. Fails
    /// (naming the topic) when a listed topic does not exist.
    pub fn open(config: KafkaSourceConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let codec = config.value_format().codec().map_err(|e| ConnectorError::user(format!("source {:?} (kafka): {e}", ctx.name)))?;
        let shared = Arc::new(Shared::default());
        let group = config.group(ctx);
        let buffered_kib = (config.max_buffered.0 / 1024 / 2).max(1024);
        let defaults = [
            ("group.id", group.clone()),
            ("client.id", format!("weir-{}-{}-{}", ctx.pipeline, ctx.name, ctx.subtask)),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("auto.offset.reset", "earliest".to_owned()),
            ("statistics.interval.ms", "1000".to_owned()),
            // librdkafka's own read-ahead, on top of weir's queue.
            ("queued.max.messages.kbytes", buffered_kib.to_string()),
        ];
        let consumer: Consumer_ = client_config(&config.brokers, &defaults, &properties(&config.properties))
            .create_with_context(SourceContext {
                shared: shared.clone(),
                at: ctx.clone(),
                log: crate::ClientLog::default(),
            })
            .map_err(|e| ConnectorError::user(format!("invalid Kafka consumer settings: {e}")))?;
        let mut source = Self {
            config,
            name: ctx.name.clone(),
            subtask: ctx.subtask,
            lane: ctx.lane,
            parallelism: ctx.parallelism.max(1),
            group,
            consumer: Arc::new(consumer),
            shared,
            topics: Vec::new(),
            positions: BTreeMap::new(),
            restored: None,
            thread: None,
            started: false,
            codec,
        };
        let partitions = source.discover()?;
        source.topics = partitions.iter().map(|(t, _)| t.to_string()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        for tp in partitions {
            source.positions.insert(tp, Position { next: -1, end: None, max_ts: None });
        }
        Ok(source)
    }

    /// This subtask's partitions of the configured topics, as the brokers
    /// see them now.
    fn discover(&self) -> Result<Vec<Tp>, ConnectorError> {
        discover(&self.consumer, &self.config, self.subtask, self.parallelism, self.lane)
    }

    /// Resolves every partition's start (and end) offset and starts the
    /// polling thread.
    fn start(&mut self) -> Result<(), ConnectorError> {
        self.started = true;
        let restored = self.restored.take();
        let timestamps = match (restored.is_none(), self.config.start, self.config.start_timestamp) {
            (true, StartFrom::Timestamp, Some(ts)) => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in self.positions.keys() {
                    tpl.add_partition_offset(t, *p, Offset::Offset(ts)).map_err(|e| external("offsets for timestamp", e))?;
                }
                Some(self.consumer.offsets_for_times(tpl, REQUEST_TIMEOUT).map_err(|e| external("looking up offsets by timestamp", e))?)
            }
            _ => None,
        };
        let committed = match (restored.is_none(), self.config.start) {
            (true, StartFrom::Committed) => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in self.positions.keys() {
                    tpl.add_partition(t, *p);
                }
                Some(self.consumer.committed_offsets(tpl, REQUEST_TIMEOUT).map_err(|e| external(format!("reading group {:?}'s offsets", self.group), e))?)
            }
            _ => None,
        };
        let mut assignment = TopicPartitionList::new();
        let keys: Vec<Tp> = self.positions.keys().cloned().collect();
        let mut hints = HashMap::new();
        for tp in keys {
            let (t, p) = (&*tp.0, tp.1);
            let (low, high) = self
                .consumer
                .fetch_watermarks(t, p, REQUEST_TIMEOUT)
                .map_err(|e| external(format!("reading the offsets of {t}[{p}]"), e))?;
            let lookup = |tpl: &TopicPartitionList| tpl.find_partition(t, p).map(|e| e.offset());
            let next = match &restored {
                Some(r) => r.get(&(t.to_owned(), p)).copied().unwrap_or(low),
                None => match self.config.start {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                    StartFrom::Committed => match committed.as_ref().and_then(lookup) {
                        Some(Offset::Offset(n)) => n,
                        _ => low,
                    },
                    StartFrom::Timestamp => match timestamps.as_ref().and_then(lookup) {
                        Some(Offset::Offset(n)) => n,
                        _ => high,
                    },
                },
            };
            if next < low {
                tracing::warn!(source = %self.name, "{t}[{p}]: offset {next} is no longer in the topic (retention); starting at {low}, records in between are lost to the pipeline");
            }
            let next = next.max(low);
            self.positions.insert(tp.clone(), Position { next, end: None, max_ts: None });
            hints.insert(tp.clone(), high);
            assignment.add_partition_offset(t, p, Offset::Offset(next)).map_err(|e| external("assigning partitions", e))?;
        }
        self.consumer.assign(&assignment).map_err(|e| external("assigning partitions", e))?;
        self.publish_emitted();
        let poller = Poller {
            consumer: self.consumer.clone(),
            shared: self.shared.clone(),
            config: self.config.clone(),
            subtask: self.subtask,
            lane: self.lane,
            parallelism: self.parallelism,
            name: self.name.clone(),
            assigned: self.positions.iter().map(|(tp, pos)| (tp.clone(), (pos.next, pos.end))).collect(),
            end_hints: hints,
            reading: None,
            codec: self.codec.clone(),
            decoded: Vec::new(),
            dropped: Dropped::default(),
        };
        self.thread = Some(weir_connector::background::spawn(format!("kafka-{}-{}", self.name, self.subtask), poller)?);
        Ok(())
    }

    fn done(&self) -> bool {
        self.config.end == StopAt::Latest && self.positions.values().all(|p| p.end.is_some_and(|end| p.next >= end))
    }

    fn publish_emitted(&self) {
        let mut e = self.shared.emitted.lock().unwrap_or_else(|e| e.into_inner());
        for (tp, pos) in &self.positions {
            e.insert(tp.clone(), pos.next);
        }
    }

    fn stop_thread(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// This subtask's partitions; in a lane ([`weir_connector::cluster`]),
/// the lane's one partition, after checking the topic still has the
/// partition count the group's lanes were counted from.
fn discover(consumer: &Consumer_, config: &KafkaSourceConfig, subtask: u32, parallelism: u32, lane: Option<Lane>) -> Result<Vec<Tp>, ConnectorError> {
    let listed: Vec<String> = config.topic.iter().cloned().chain(config.topics.iter().cloned()).collect();
    let metadata = if listed.len() == 1 {
        consumer.fetch_metadata(Some(&listed[0]), REQUEST_TIMEOUT)
    } else {
        consumer.fetch_metadata(None, REQUEST_TIMEOUT)
    }
    .map_err(|e| external(format!("could not reach the Kafka brokers {:?}", config.brokers), e))?;
    let pattern = config.topic_pattern.as_deref().map(regex::Regex::new).transpose().map_err(|e| ConnectorError::user(format!("topic-pattern: {e}")))?;
    let mut found = Vec::new();
    for name in &listed {
        match metadata.topics().iter().find(|t| t.name() == name) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
            _ => {
                return Err(ConnectorError::user(format!(
                    "topic {name:?} does not exist on {} (create it first, e.g. with 8 partitions)",
                    config.brokers
                )));
            }
        }
    }
    for t in metadata.topics() {
        let wanted = listed.iter().any(|n| n == t.name()) || pattern.as_ref().is_some_and(|r| r.is_match(t.name()) && !t.name().starts_with("__"));
        if !wanted || t.error().is_some() {
            continue;
        }
        let topic: Arc<str> = Arc::from(t.name());
        if let Some(lane) = lane
            && t.partitions().len() != lane.count as usize
        {
            return Err(ConnectorError::user(format!(
                "topic {:?} has {} partitions, but the group's lanes were counted when it had {}: a pipeline spread over a group \
                 keeps state per partition, and a partition added later would change where keys belong. Stop every member, \
                 then start them again (they count the partitions anew; state kept for the old count does not carry over)",
                t.name(),
                t.partitions().len(),
                lane.count
            )));
        }
        for p in t.partitions() {
            let mine = match lane {
                Some(lane) => p.id() as u32 == lane.index,
                None => owner(t.name(), p.id(), parallelism) == subtask,
            };
            if mine {
                found.push((topic.clone(), p.id()));
            }
        }
    }
    found.sort();
    Ok(found)
}

impl Source for KafkaSource {
    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError> {
        if !self.started {
            self.start()?;
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.chunks.is_empty() && q.error.is_none() {
            if self.done() {
                return Ok(Poll::Finished);
            }
            // Wait briefly for records rather than spin; short enough that
            // barriers and shutdown are not held up.
            q = self.shared.ready.wait_timeout(q, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
        }
        // Records read before the polling thread stopped go out first.
        if q.chunks.is_empty()
            && let Some(e) = q.error.take()
        {
            return Err(e);
        }
        let mut progressed = false;
        while let Some(chunk) = q.chunks.pop_front() {
            q.bytes -= chunk.frames.len();
            for (tp, end) in chunk.ends {
                if let Some(pos) = self.positions.get_mut(&tp) {
                    pos.end = Some(end);
                }
            }
            out.extend_raw(chunk.frames.as_bytes(), chunk.frames.records());
            for (tp, next, max_ts) in chunk.progress {
                if let Some(pos) = self.positions.get_mut(&tp) {
                    pos.next = pos.next.max(next);
                    if max_ts != i64::MIN {
                        pos.max_ts = Some(pos.max_ts.map_or(max_ts, |m| m.max(max_ts)));
                    }
                } else {
                    // Discovered by the polling thread.
                    self.positions.insert(tp, Position { next, end: None, max_ts: (max_ts != i64::MIN).then_some(max_ts) });
                }
                progressed = true;
            }
            if out.len() >= target_bytes {
                break;
            }
        }
        drop(q);
        if progressed {
            self.publish_emitted();
        }
        if !out.is_empty() {
            Ok(Poll::Ready)
        } else if self.done() {
            Ok(Poll::Finished)
        } else {
            Ok(Poll::Idle(Duration::ZERO))
        }
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        // Before the first poll the offsets are still the restored ones: a
        // checkpoint taken then must keep them, not record nothing.
        let offsets: Vec<(&str, i32, i64)> = match (&self.restored, self.started) {
            (Some(r), false) => r.iter().map(|((t, p), next)| (t.as_str(), *p, *next)).collect(),
            _ => self.positions.iter().filter(|(_, p)| p.next >= 0).map(|((t, p), pos)| (&**t, *p, pos.next)).collect(),
        };
        serde_json::to_vec(&offsets).map_err(|e| ConnectorError::internal(format!("encoding offsets: {e}")))
    }

    fn watermark(&self) -> Option<i64> {
        let delay = self.config.watermark_delay?.0.as_millis() as i64;
        let mut min: Option<i64> = None;
        for p in self.positions.values() {
            if p.end.is_some_and(|end| p.next >= end) {
                continue;
            }
            let ts = p.max_ts?;
            min = Some(min.map_or(ts, |m| m.min(ts)));
        }
        min.map(|m| m - delay)
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        let mut restored = HashMap::new();
        for raw in positions.iter().filter(|p| !p.is_empty()) {
            let offsets: Vec<(String, i32, i64)> = serde_json::from_slice(raw)
                .map_err(|e| ConnectorError::user(format!("the checkpoint's Kafka offsets are not readable ({e}); was it written by another source type?")))?;
            for (t, p, next) in offsets {
                let e = restored.entry((t, p)).or_insert(next);
                *e = (*e).max(next);
            }
        }
        self.restored = Some(restored);
        Ok(())
    }

    fn checkpoint_complete(&mut self, checkpoint: u64, position: &[u8]) -> Result<(), ConnectorError> {
        let offsets: Vec<(String, i32, i64)> = serde_json::from_slice(position).unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (t, p, next) in offsets {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(next));
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(source = %self.name, checkpoint, "offset commit not sent: {e}");
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        self.stop_thread();
        if let Ok(position) = self.snapshot() {
            let _ = self.checkpoint_complete(0, &position);
        }
        Ok(())
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Below this many bytes a chunk keeps filling while records arrive.
const CHUNK_BYTES: usize = 64 << 10;
/// Longest block in `consumer.poll`: how fast the thread notices a stop, a
/// drained queue or a discovery deadline.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// The polling thread: reads records into chunks, pauses the partitions
/// while the queue is full, discovers new partitions.
struct Poller {
    consumer: Arc<Consumer_>,
    shared: Arc<Shared>,
    config: KafkaSourceConfig,
    subtask: u32,
    lane: Option<Lane>,
    parallelism: u32,
    name: String,
    /// Next offset to read and end, per assigned partition.
    assigned: BTreeMap<Tp, (i64, Option<i64>)>,
    /// Bounded runs: each partition's end offset as ListOffsets reported it
    /// at start.
    end_hints: HashMap<Tp, i64>,
    /// The record being read, for the report if the thread dies on it.
    reading: Option<(Tp, i64)>,
    /// Turns values into JSON (`format`).
    codec: Codec,
    /// A decoded value.
    decoded: Vec<u8>,
    dropped: Dropped,
}

/// Records skipped with `bad-data = "drop"`: each is logged (at most one
/// line every 10 s per subtask, with the count since the last line).
#[derive(Debug, Default)]
struct Dropped {
    total: u64,
    unsaid: u64,
    said: Option<Instant>,
}

impl Dropped {
    /// `bad-data = "drop"`: says which record was skipped and why.
    fn record(&mut self, source: &str, at: &str, e: &weir_codec::CodecError) {
        self.total += 1;
        if self.said.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            self.unsaid += 1;
            return;
        }
        let also = if self.unsaid > 0 { format!(" ({} more dropped since the last report)", self.unsaid) } else { String::new() };
        tracing::warn!(source = %source, "bad-data = \"drop\": skipped the record at {at}: {e}{also}; {} dropped by this subtask so far", self.total);
        self.unsaid = 0;
        self.said = Some(Instant::now());
    }
}

impl weir_connector::background::Background for Poller {
    fn run(&mut self) -> Result<(), ConnectorError> {
        self.poll_loop()
    }

    fn died(&mut self, mut error: ConnectorError) {
        if error.kind == weir_connector::ErrorKind::Internal
            && let Some(((topic, partition), offset)) = &self.reading
        {
            error.message = format!("source {:?} stopped at {topic}[{partition}] offset {offset}: {}", self.name, error.message);
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.error.get_or_insert(error);
        self.shared.ready.notify_all();
    }
}

impl Poller {
    fn poll_loop(&mut self) -> Result<(), ConnectorError> {
        let max = self.config.max_buffered.0 as usize;
        let mut chunk = Chunk::default();
        let mut last: HashMap<Tp, (i64, i64)> = HashMap::new();
        let mut paused = false;
        let discovery = self.config.partition_discovery.0;
        let mut next_discovery = Instant::now() + discovery;
        let mut next_gap_check = Instant::now();
        let mut ends_unknown = self.config.end == StopAt::Latest;
        while !self.shared.stop.load(Ordering::Acquire) {
            if ends_unknown {
                ends_unknown = self.learn_ends(&mut chunk);
            }
            let queued = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).bytes;
            if !paused && queued >= max {
                paused = self.set_paused(true);
            } else if paused && queued <= max / 2 {
                paused = !self.set_paused(false);
            }
            let wait = if chunk.frames.is_empty() { POLL_WAIT } else { Duration::ZERO };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    let tp: Tp = (Arc::from(m.topic()), m.partition());
                    let Some(&(next, end)) = self.assigned.get(&tp) else { continue };
                    // Records before `next` were delivered already (fetched
                    // again after a resume), those past a bounded end are
                    // not ours.
                    if m.offset() < next || end.is_some_and(|end| m.offset() >= end) {
                        continue;
                    }
                    self.reading = Some((tp.clone(), m.offset()));
                    let ts = m.timestamp().to_millis().unwrap_or_else(|| weir_connector::now_micros() as i64 / 1000);
                    let created = (ts.max(0) as u64 * 1000).to_le_bytes();
                    let mark: &[(&[u8], &[u8])] = if self.config.mark_latency { &[(weir_connector::EMITTED_AT_HEADER, &created)] } else { &[] };
                    // A tombstone (no value) passes as an empty value, whatever the format.
                    let value = match m.payload() {
                        None => &[][..],
                        Some(p) => match self.codec.decode(p, &mut self.decoded) {
                            Ok(v) => v,
                            Err(e) => {
                                let at = format!("{}[{}] offset {}", tp.0, tp.1, m.offset());
                                if self.config.bad_data == BadData::Fail {
                                    self.push(&mut chunk, &mut last);
                                    return Err(ConnectorError::user(format!(
                                        "source {:?} cannot read the value at {at} as {}: {e}. Fix the producer or the \
                                         schema, or set bad-data = \"drop\" to skip such records (each is logged)",
                                        self.name,
                                        self.config.format.as_str()
                                    )));
                                }
                                self.dropped.record(&self.name, &at, &e);
                                if let Some((next, _)) = self.assigned.get_mut(&tp) {
                                    *next = m.offset() + 1;
                                }
                                let e = last.entry(tp).or_insert((0, i64::MIN));
                                e.0 = m.offset() + 1;
                                continue;
                            }
                        },
                    };
                    let pushed = match m.headers() {
                        Some(h) if h.count() > 0 => {
                            let mut hs: Vec<(&[u8], &[u8])> = h.iter().map(|h| (h.key.as_bytes(), h.value.unwrap_or_default())).collect();
                            hs.extend_from_slice(mark);
                            chunk.frames.try_push(m.key(), value, ts, &hs)
                        }
                        _ => chunk.frames.try_push(m.key(), value, ts, mark),
                    };
                    if let Err(e) = pushed {
                        // The records before it still reach the pipeline.
                        self.push(&mut chunk, &mut last);
                        return Err(ConnectorError::user(format!(
                            "source {:?} cannot read the record at {}[{}] offset {}: {e}. A source cannot skip a record \
                             (on-error applies to operators): shorten the field where the record is produced, or delete \
                             the topic's records up to offset {} and run again",
                            self.name,
                            tp.0,
                            tp.1,
                            m.offset(),
                            m.offset() + 1
                        )));
                    }
                    if let Some((next, _)) = self.assigned.get_mut(&tp) {
                        *next = m.offset() + 1;
                    }
                    let e = last.entry(tp).or_insert((0, i64::MIN));
                    *e = (m.offset() + 1, e.1.max(ts));
                    if chunk.frames.len() >= CHUNK_BYTES {
                        self.push(&mut chunk, &mut last);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    if is_fatal(&e) {
                        return Err(external(format!("source {:?} cannot read from Kafka", self.name), e));
                    }
                    // Transient (a broker restarting, a network blip):
                    // librdkafka reconnects by itself; the client's log says
                    // so once per kind of error every 10 s.
                    self.consumer.context().log.error(&format!("source {:?}", self.name), &e, "");
                }
                None => {
                    if !chunk.frames.is_empty() || !chunk.ends.is_empty() {
                        self.push(&mut chunk, &mut last);
                    } else if next_gap_check <= Instant::now() {
                        self.skip_gaps(&mut chunk);
                        if !chunk.progress.is_empty() {
                            self.push(&mut chunk, &mut last);
                        }
                        next_gap_check = Instant::now() + Duration::from_millis(500);
                    }
                }
            }
            if !discovery.is_zero() && self.config.end == StopAt::None && Instant::now() >= next_discovery {
                next_discovery = Instant::now() + discovery;
                self.discover_new(&mut chunk, &mut last);
            }
        }
        Ok(())
    }


    /// Bounded runs: a partition's end is the larger of what ListOffsets
    /// said at start and the first high watermark a fetch response reports
    /// (tansu answers ListOffsets(latest) with the base offset of the last
    /// batch, so ListOffsets alone can stop a run early). True while some
    /// end is still unknown.
    fn learn_ends(&mut self, chunk: &mut Chunk) -> bool {
        let ends = self.shared.ends.lock().unwrap_or_else(|e| e.into_inner());
        let mut unknown = false;
        for (tp, (_, end)) in self.assigned.iter_mut() {
            if end.is_none() {
                match ends.get(tp) {
                    Some(&e) => {
                        let e = e.max(self.end_hints.get(tp).copied().unwrap_or(0));
                        *end = Some(e);
                        chunk.ends.push((tp.clone(), e));
                    }
                    None => unknown = true,
                }
            }
        }
        unknown
    }

    fn push(&self, chunk: &mut Chunk, last: &mut HashMap<Tp, (i64, i64)>) {
        chunk.progress.extend(last.drain().map(|(tp, (next, ts))| (tp, next, ts)));
        let c = std::mem::take(chunk);
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.bytes += c.frames.len();
        q.chunks.push_back(c);
        self.shared.ready.notify_all();
    }

    fn tpl(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in self.assigned.keys() {
            tpl.add_partition(t, *p);
        }
        tpl
    }

    /// Pauses or resumes every assigned partition; false if it failed.
    fn set_paused(&self, pause: bool) -> bool {
        let tpl = self.tpl();
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            // librdkafka drops what it had fetched ahead when a partition
            // is paused, and may resume fetching after it: assign again at
            // the next offset each partition owes the pipeline.
            self.consumer.resume(&tpl).and_then(|()| {
                let mut at = TopicPartitionList::new();
                for (tp, (next, _)) in &self.assigned {
                    at.add_partition_offset(&tp.0, tp.1, Offset::Offset(*next))?;
                }
                self.consumer.assign(&at)
            })
        };
        match r {
            Ok(()) => {
                let at = &self.consumer.context().at;
                let (pipeline, source, subtask) = (at.pipeline.as_str(), at.name.as_str(), at.subtask);
                if pause {
                    weir_events::emit(weir_events::KafkaPartitionsPaused { pipeline, source, subtask });
                } else {
                    weir_events::emit(weir_events::KafkaPartitionsResumed { pipeline, source, subtask });
                }
                true
            }
            Err(e) => {
                tracing::warn!(source = %self.name, "could not {} partitions: {e}", if pause { "pause" } else { "resume" });
                false
            }
        }
    }

    /// When caught up on a bounded run, moves a partition's position past
    /// offsets that hold no records for us (transaction markers, compacted
    /// or aborted records), so the run can finish.
    fn skip_gaps(&mut self, chunk: &mut Chunk) {
        if self.config.end != StopAt::Latest {
            return;
        }
        let Ok(position) = self.consumer.position() else { return };
        for e in position.elements() {
            let tp: Tp = (Arc::from(e.topic()), e.partition());
            if let (Some((next, Some(end))), Offset::Offset(at)) = (self.assigned.get_mut(&tp), e.offset())
                && *next < *end
                && at > *next
            {
                *next = at.min(*end);
                chunk.progress.push((tp, *next, i64::MIN));
            }
        }
    }

    fn discover_new(&mut self, chunk: &mut Chunk, last: &mut HashMap<Tp, (i64, i64)>) {
        let found = match discover(&self.consumer, &self.config, self.subtask, self.parallelism, self.lane) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(source = %self.name, "partition discovery failed: {e}");
                return;
            }
        };
        let new: Vec<Tp> = found.into_iter().filter(|tp| !self.assigned.contains_key(tp)).collect();
        if new.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &new {
            let low = self.consumer.fetch_watermarks(&tp.0, tp.1, REQUEST_TIMEOUT).map(|(l, _)| l).unwrap_or(0);
            tracing::info!(source = %self.name, subtask = self.subtask, "new partition {}[{}], reading from offset {low}", tp.0, tp.1);
            self.assigned.insert(tp.clone(), (low, None));
            chunk.progress.push((tp.clone(), low, i64::MIN));
        }
        for (tp, (next, _)) in &self.assigned {
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*next));
        }
        if let Err(e) = self.consumer.assign(&tpl) {
            tracing::warn!(source = %self.name, "could not assign new partitions: {e}");
        }
        self.push(chunk, last);
    }
}

/// Errors no retry fixes.
fn is_fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::InvalidConfig
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_over_subtasks() {
        for p in 1..=5u32 {
            let mut counts = vec![0; p as usize];
            for n in 0..8 {
                counts[owner("orders", n, p) as usize] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "parallelism {p}: {counts:?}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let c: KafkaSourceConfig = toml_like(r#"{"brokers":"localhost:9092","topic":"a","topics":["b"],"start":"timestamp"}"#);
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["topics", "start-timestamp"]);
    }

    /// Issue 16: a header name over 65,535 bytes panicked the polling
    /// thread and `poll()` never heard of it. Now the records before it
    /// arrive, then `poll()` fails naming the partition and offset.
    #[test]
    fn a_record_too_large_for_a_frame_fails_poll_with_its_partition_and_offset() {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("in", 1, 1).unwrap();
        let producer: ThreadedProducer<DefaultProducerContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).create().unwrap();
        let name = "h".repeat(70_000);
        for n in 0..3 {
            let mut rec = BaseRecord::<(), str>::to("in").payload(r#"{"ok":true}"#).partition(0);
            if n == 2 {
                rec = rec.headers(OwnedHeaders::new().insert(Header { key: &name, value: Some("v") }));
            }
            producer.send(rec).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let config = toml_like(&format!(r#"{{"brokers":"{}","topic":"in","end":"latest"}}"#, mock.bootstrap_servers()));
        let ctx = ConnectorContext::new("p", "in", 0, 1);
        let mut source = KafkaSource::open(config, &ctx).unwrap();
        let mut out = BatchWriter::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let error = loop {
            assert!(Instant::now() < deadline, "poll never failed; records so far: {}", out.records());
            match source.poll(&mut out, 1 << 20) {
                Ok(Poll::Finished) => panic!("the source finished without the record at offset 2"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(out.records(), 2, "the records before it were delivered");
        assert_eq!(error.kind, weir_connector::ErrorKind::User);
        assert!(error.message.contains("in[0] offset 2") && error.message.contains("header name is 70000 bytes"), "{}", error.message);
    }

    fn toml_like(json: &str) -> KafkaSourceConfig {
        serde_json::from_str(json).unwrap()
    }
}
