//! A pipeline spread over the members of a group (`[cluster]`).

use crate::{Event, NOTICE};

/// Lanes as a list for messages: `[0, 3, 5]`.
fn list(lanes: &[u32]) -> String {
    format!("{lanes:?}")
}

/// The group gave this member lanes (a notice): it starts them, each from
/// its newest complete checkpoint, whoever wrote it.
#[derive(Debug)]
pub struct LanesAssigned<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The group.
    pub group: &'a str,
    /// This member's id in the group.
    pub member: &'a str,
    /// The lanes given.
    pub lanes: &'a [u32],
    /// Every lane this member runs now.
    pub running: &'a [u32],
    /// How many lanes the pipeline has.
    pub count: u32,
}

impl Event for LanesAssigned<'_> {
    fn emit(self) {
        tracing::info!(
            target: NOTICE,
            pipeline = self.pipeline,
            group = self.group,
            member = self.member,
            "group {:?} gave this member lanes {} (it runs {} of {} now: {})",
            self.group,
            list(self.lanes),
            self.running.len(),
            self.count,
            list(self.running)
        );
    }
}

/// The group took lanes away from this member (a notice): each was
/// stopped with a final checkpoint before the member answered, so the
/// member that gets it next resumes exactly there.
#[derive(Debug)]
pub struct LanesRevoked<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The group.
    pub group: &'a str,
    /// This member's id in the group.
    pub member: &'a str,
    /// The lanes taken away.
    pub lanes: &'a [u32],
    /// Every lane this member still runs.
    pub running: &'a [u32],
    /// How long stopping them took, in milliseconds.
    pub took_ms: u64,
}

impl Event for LanesRevoked<'_> {
    fn emit(self) {
        tracing::info!(
            target: NOTICE,
            pipeline = self.pipeline,
            group = self.group,
            member = self.member,
            took_ms = self.took_ms,
            "group {:?} took lanes {} from this member; they were stopped with a final checkpoint in {} ms (it runs {} now)",
            self.group,
            list(self.lanes),
            self.took_ms,
            list(self.running)
        );
    }
}

/// A lane given to this member could not start yet (its checkpoints are
/// still claimed by the member that had it, or the store is unreachable):
/// it is tried again while the lane stays assigned.
#[derive(Debug)]
pub struct LaneWaiting<'a> {
    /// Pipeline name (the pipeline's, not the lane's).
    pub pipeline: &'a str,
    /// The lane.
    pub lane: u32,
    /// Why it could not start.
    pub reason: &'a str,
}

impl Event for LaneWaiting<'_> {
    fn emit(self) {
        tracing::warn!(pipeline = self.pipeline, lane = self.lane, "lane {} cannot start yet, trying again in 1 s: {}", self.lane, self.reason);
    }
}
