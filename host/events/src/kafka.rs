//! The Kafka connectors.

use crate::{Event, metric};

/// The `tracing` target of these events (`WEIR_LOG=weir::kafka=debug` shows them all).
const TARGET: &str = "weir::kafka";

/// A Kafka source's lag on one partition, from librdkafka's statistics.
#[derive(Debug)]
pub struct KafkaConsumerLag<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Source name.
    pub source: &'a str,
    /// Subtask index.
    pub subtask: u32,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// End offset minus the next offset the source will emit.
    pub lag: i64,
}

impl Event for KafkaConsumerLag<'_> {
    fn emit(self) {
        tracing::trace!(target: TARGET, pipeline = self.pipeline, source = self.source, subtask = self.subtask, topic = self.topic, partition = self.partition, lag = self.lag, "consumer lag");
        let (subtask, partition) = (self.subtask.to_string(), self.partition.to_string());
        metric::KAFKA_CONSUMER_LAG
            .gauge(&[self.pipeline, self.source, &subtask, self.topic, &partition])
            .set(self.lag.max(0) as f64);
    }
}

/// A Kafka source paused its partitions: the pipeline is backpressured, and
/// pausing keeps the consumer in its group without reading ahead.
#[derive(Debug)]
pub struct KafkaPartitionsPaused<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Source name.
    pub source: &'a str,
    /// Subtask index.
    pub subtask: u32,
}

impl Event for KafkaPartitionsPaused<'_> {
    fn emit(self) {
        tracing::debug!(target: TARGET, pipeline = self.pipeline, source = self.source, subtask = self.subtask, "partitions paused");
        metric::KAFKA_SOURCE_PAUSES
            .counter(&[self.pipeline, self.source, &self.subtask.to_string()])
            .increment(1);
    }
}

/// A Kafka source resumed its partitions.
#[derive(Debug)]
pub struct KafkaPartitionsResumed<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Source name.
    pub source: &'a str,
    /// Subtask index.
    pub subtask: u32,
}

impl Event for KafkaPartitionsResumed<'_> {
    fn emit(self) {
        tracing::debug!(target: TARGET, pipeline = self.pipeline, source = self.source, subtask = self.subtask, "partitions resumed");
    }
}

/// A record could not be delivered after the producer's retries. The
/// sink fails at its next call with the first such error.
#[derive(Debug)]
pub struct KafkaDeliveryFailed<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Sink name.
    pub sink: &'a str,
    /// Subtask index.
    pub subtask: u32,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// The producer's error.
    pub error: &'a dyn std::error::Error,
}

impl Event for KafkaDeliveryFailed<'_> {
    fn emit(self) {
        tracing::debug!(
            target: TARGET,
            pipeline = self.pipeline,
            sink = self.sink,
            subtask = self.subtask,
            "a record for {}[{}] could not be delivered after retries: {}",
            self.topic,
            self.partition,
            self.error
        );
        metric::KAFKA_DELIVERY_FAILURES
            .counter(&[self.pipeline, self.sink, &self.subtask.to_string()])
            .increment(1);
    }
}
