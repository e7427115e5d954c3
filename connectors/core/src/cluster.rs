//! A pipeline spread over several hosts (`[cluster] group = "…"`): the
//! source's partitions are *lanes*, and the members of a group share them.
//!
//! weir adds no membership protocol of its own: a source that can spread
//! its partitions over a group (Kafka, through a consumer group) answers
//! [`crate::registry::SourceConfig::join_group`] with a [`Membership`],
//! and the group's coordinator decides which member runs which lane. Each
//! lane is the whole pipeline at parallelism 1 over one partition, with
//! its own checkpoints, so a lane moves between members whole: its keyed
//! state, its source position and its sinks' progress.

use crate::ConnectorError;
use std::time::Duration;

/// One lane: partition `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    /// The source partition the lane reads.
    pub index: u32,
    /// How many partitions (lanes) the source has.
    pub count: u32,
}

/// `[cluster]`: how a member joins its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's name, the same on every member.
    pub group: String,
    /// A member that sends no heartbeat for this long is dead to the group.
    pub session_timeout: Duration,
    /// Static membership: a member that comes back under the same id
    /// within the session timeout gets its lanes back without a rebalance.
    pub instance_id: Option<String>,
}

/// What the group decided for this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These lanes are now this member's to run.
    Assigned(Vec<u32>),
    /// These lanes are taken away: stop them (with a final checkpoint)
    /// before the next [`Membership::poll`].
    Revoked(Vec<u32>),
}

/// This process's membership in a group.
pub trait Membership: Send {
    /// How many lanes the source has (its partition count when it joined).
    fn lanes(&self) -> u32;

    /// Keeps the membership alive and waits up to `timeout` for the
    /// group's next decisions. Call it at least every few seconds: a
    /// member that stops calling it is dead to the group.
    fn poll(&mut self, timeout: Duration) -> Result<Vec<Change>, ConnectorError>;

    /// Leaves the group now, so its lanes go to the others at once.
    fn leave(&mut self);
}
