//! Kafka source and sink for weir pipelines, on rdkafka (librdkafka 2.12,
//! built from source by the `rdkafka` crate: no system librdkafka needed).
//!
//! # Source
//!
//! ```toml
//! [sources.orders]
//! type = "kafka"
//! brokers = "localhost:9092"
//! topics = ["orders"]            # or topic-pattern = "^orders-.*"
//! group = "orders-enricher"      # default "weir-PIPELINE-SOURCE"
//! start = "earliest"             # earliest | latest | committed | timestamp
//! # start-timestamp = 1_700_000_000_000   # with start = "timestamp"
//! # end = "latest"               # stop at the end offsets seen at start (a bounded run)
//! [sources.orders.properties]    # any librdkafka consumer property
//! "security.protocol" = "SASL_SSL"
//! ```
//!
//! **Partitions are assigned by weir, not by the consumer group** (as
//! Flink's `KafkaSource` does): subtask `s` of `p` reads the partitions `n`
//! of topic `t` with `(hash(t) + n) mod p = s`. The group therefore never
//! rebalances, a stalled pipeline is never evicted from it, and no record
//! of a partition is read by two subtasks. The group is used for two
//! things only: `start = "committed"` reads its committed offsets, and
//! after every completed checkpoint the source commits the offsets of that
//! checkpoint to it, so the usual lag tools (`kafka-consumer-groups`,
//! Burrow, ...) see the pipeline's progress.
//!
//! **Offsets live in the checkpoint.** A restored source starts from the
//! checkpoint's offsets, never from the group's committed offsets, so a
//! restore is exact; a partition the checkpoint does not know (added since)
//! starts at its earliest offset. A restore may change the parallelism.
//!
//! **Backpressure pauses partitions.** A background thread polls the
//! consumer and hands batches of records to the task through a queue of at
//! most `max-buffered` bytes. When the queue is full (the pipeline
//! downstream is slower than Kafka) the thread pauses every partition and
//! keeps polling (so heartbeats and fetch sessions stay alive), and resumes
//! them once the task has drained half of it. Memory stays bounded whatever
//! the lag.
//!
//! # Sink
//!
//! See [`sink`]: fixed topic or one taken from a record header, the record
//! key as the Kafka key, idempotent producer, batching and compression, and
//! exactly-once through Kafka transactions tied to checkpoints.

mod group;
pub mod sink;
mod source;

pub use group::KafkaMembership;
pub use sink::{KafkaSink, KafkaSinkConfig};
pub use source::{BadData, KafkaSource, KafkaSourceConfig, StartFrom, StopAt};

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use weir_connector::ConnectorError;

/// How long a metadata or offset request to the brokers may take before
/// the source reports the brokers unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A librdkafka client config: `bootstrap.servers`, then the user's
/// `properties` (which may override anything, including weir's defaults
/// set by the caller before).
fn client_config(brokers: &str, defaults: &[(&str, String)], properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// A broker or client failure, as a retryable connector error.
fn external(what: impl std::fmt::Display, e: rdkafka::error::KafkaError) -> ConnectorError {
    ConnectorError::external(format!("{what}: {e}"), e)
}

/// How often the same client error is said again.
const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// Says librdkafka's errors and warnings, each kind at most every
/// [`REPEAT_EVERY`]: while a broker is down librdkafka reports the same
/// failure on every connection attempt, from every client of a connector.
#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    last: Mutex<HashMap<String, Instant>>,
}

impl ClientLog {
    fn fresh(&self, kind: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get(kind) {
            Some(at) if now.duration_since(*at) < REPEAT_EVERY => false,
            _ => {
                last.insert(kind.to_owned(), now);
                true
            }
        }
    }

    /// An error callback, or an error a poll returned (`reason` empty):
    /// `connector` names the source or sink.
    pub(crate) fn error(&self, connector: &str, error: &rdkafka::error::KafkaError, reason: &str) {
        let kind = error.to_string();
        if self.fresh(&kind) {
            let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
            tracing::warn!("kafka: {connector}: {kind}{reason} (librdkafka keeps retrying; repeats are not shown for {} s)", REPEAT_EVERY.as_secs());
        }
    }

    /// A log callback: errors and warnings are throttled per facility.
    pub(crate) fn log(&self, connector: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                if self.fresh(fac) {
                    tracing::warn!(target: "librdkafka", "kafka: {connector}: {fac} {message}");
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", "kafka: {connector}: {fac} {message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "kafka: {connector}: {fac} {message}"),
        }
    }
}

mod registration {
    use crate::sink::{Delivery, default_spill_dir};
    use crate::{KafkaMembership, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
    use weir_connector::cluster::{GroupConfig, Membership};
    use weir_connector::registry::{ConfigContext, FieldErrors, SinkConfig, SourceConfig};
    use weir_connector::{ConnectorContext, ConnectorError, Sink, Source};

    impl SourceConfig for KafkaSourceConfig {
        const TYPE: &'static str = "kafka";

        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            self.schema_file = self.schema_file.as_deref().map(|f| cx.resolve(f));
            self.validate()
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> {
            Ok(Box::new(KafkaSource::open(self.clone(), ctx)?))
        }

        fn join_group(&self, group: &GroupConfig, ctx: &ConnectorContext) -> Option<Result<Box<dyn Membership>, ConnectorError>> {
            Some(KafkaMembership::join(self, group, ctx).map(|m| Box::new(m) as Box<dyn Membership>))
        }
    }

    impl SinkConfig for KafkaSinkConfig {
        const TYPE: &'static str = "kafka";

        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            self.schema_file = self.schema_file.as_deref().map(|f| cx.resolve(f));
            let mut problems = self.validate();
            if self.delivery == Delivery::ExactlyOnce && !cx.checkpointing {
                problems.push((
                    "delivery".into(),
                    "exactly-once commits a Kafka transaction per checkpoint; turn checkpoints on ([checkpoint] interval) or use \"at-least-once\"".into(),
                ));
            }
            self.spill_dir = Some(match &self.spill_dir {
                Some(d) => cx.resolve(d),
                None => default_spill_dir(cx.base, cx.pipeline, cx.name),
            });
            problems
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
            Ok(Box::new(KafkaSink::open(self.clone(), ctx)?))
        }
    }
}
