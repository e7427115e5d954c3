//! A pipeline spread over a group ([`weir_connector::cluster`]): the
//! members are the members of one Kafka consumer group, subscribed to the
//! source topic, and the group's coordinator hands out its partitions.
//!
//! The group consumer only holds the membership: it pauses every partition
//! it is given (it reads no record), and each lane reads its partition with
//! its own consumer at the offset of the lane's checkpoint, as any weir
//! Kafka source does. Rebalancing is cooperative (`cooperative-sticky`): a
//! member that joins or leaves moves only the partitions that must move,
//! and the others keep running.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientContext, error::KafkaError};
use weir_connector::cluster::{Change, GroupConfig, Membership};
use weir_connector::{ConnectorContext, ConnectorError};

use crate::source::properties;
use crate::{KafkaSourceConfig, REQUEST_TIMEOUT, client_config, external};

/// The group's decisions, as the rebalance callbacks saw them.
struct GroupContext {
    source: String,
    changes: Mutex<Vec<Change>>,
    log: crate::ClientLog,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<u32> {
    let mut v: Vec<u32> = tpl.elements().iter().map(|e| e.partition().max(0) as u32).collect();
    v.sort_unstable();
    v
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&format!("source {:?} (group membership)", self.source), &error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(&format!("source {:?} (group membership)", self.source), level, fac, message);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && tpl.count() > 0
        {
            self.changes.lock().unwrap_or_else(|e| e.into_inner()).push(Change::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
        {
            // The membership reads nothing: each lane has its own consumer.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(source = %self.source, "could not pause the group consumer's partitions (it may read records it drops): {e}");
            }
            self.changes.lock().unwrap_or_else(|e| e.into_inner()).push(Change::Assigned(partitions(tpl)));
        }
    }
}

/// One member's place in the group.
pub struct KafkaMembership {
    consumer: Option<BaseConsumer<GroupContext>>,
    lanes: u32,
}

impl KafkaMembership {
    /// Joins `group.group` on the source's one topic.
    pub fn join(config: &KafkaSourceConfig, group: &GroupConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let topic = match (&config.topic, config.topics.as_slice(), &config.topic_pattern) {
            (Some(t), [], None) => t.clone(),
            (None, [t], None) => t.clone(),
            _ => {
                return Err(ConnectorError::user(format!(
                    "source {:?}: a pipeline spread over a group ([cluster]) reads one topic, whose partitions are its lanes: \
                     set `topic`, not several `topics` or a `topic-pattern`",
                    ctx.name
                )));
            }
        };
        let mut defaults = vec![
            ("group.id", group.group.clone()),
            ("client.id", format!("weir-{}-{}-member", ctx.pipeline, ctx.name)),
            ("partition.assignment.strategy", "cooperative-sticky".to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("session.timeout.ms", group.session_timeout.as_millis().to_string()),
            ("heartbeat.interval.ms", (group.session_timeout.as_millis() / 3).max(100).to_string()),
        ];
        if let Some(id) = &group.instance_id {
            defaults.push(("group.instance.id", id.clone()));
        }
        // The source's own properties (security, for example) apply to the
        // membership too; weir's group settings come after them.
        let mut props = properties(&config.properties);
        for (k, _) in &defaults {
            props.remove(*k);
        }
        let consumer: BaseConsumer<GroupContext> = client_config(&config.brokers, &defaults, &props)
            .create_with_context(GroupContext { source: ctx.name.clone(), changes: Mutex::new(Vec::new()), log: crate::ClientLog::default() })
            .map_err(|e| ConnectorError::user(format!("source {:?}: invalid Kafka consumer settings for the group: {e}", ctx.name)))?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)
            .map_err(|e| external(format!("source {:?}: could not reach the Kafka brokers {:?}", ctx.name, config.brokers), e))?;
        let lanes = match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().len() as u32,
            _ => {
                return Err(ConnectorError::user(format!(
                    "source {:?}: topic {topic:?} does not exist on {} (create it first; its partitions are the pipeline's lanes)",
                    ctx.name, config.brokers
                )));
            }
        };
        consumer.subscribe(&[&topic]).map_err(|e| external(format!("source {:?}: joining group {:?}", ctx.name, group.group), e))?;
        Ok(Self { consumer: Some(consumer), lanes })
    }
}

impl Membership for KafkaMembership {
    fn lanes(&self) -> u32 {
        self.lanes
    }

    fn poll(&mut self, timeout: Duration) -> Result<Vec<Change>, ConnectorError> {
        let Some(consumer) = &self.consumer else { return Ok(Vec::new()) };
        match consumer.poll(timeout) {
            // A record fetched before its partition was paused: the lane reads it.
            Some(Ok(_)) | None => {}
            Some(Err(e)) => consumer.context().log.error("group membership", &e, ""),
        }
        Ok(std::mem::take(&mut *consumer.context().changes.lock().unwrap_or_else(|e| e.into_inner())))
    }

    fn leave(&mut self) {
        // Dropping the consumer closes it: it leaves the group (the
        // coordinator rebalances at once, without waiting out the session).
        drop(self.consumer.take());
    }
}
