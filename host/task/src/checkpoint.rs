//! A task's side of checkpointing: barrier alignment, and what a task
//! reports to the coordinator.
//!
//! The coordinator (in the pipeline crate) asks the source tasks for a
//! checkpoint by raising [`Checkpointing::trigger`]. A source task, between
//! two polls, records its source's position, snapshots its chained stages,
//! and sends a [`Message::Barrier`] down every output. A task fed by an
//! input gate *aligns*: once a barrier arrived on one channel, that
//! channel's later messages are held back ([`Aligner`]) until the barrier
//! has arrived on every channel still open; then the task snapshots its
//! stages, forwards the barrier, and processes what it held back. Every
//! task then sends an [`Ack`] with its state. When the coordinator has an
//! ack from every task and has written the files, the checkpoint is
//! complete: it raises [`Checkpointing::completed`] and each task tells its
//! stages ([`crate::Stage::checkpoint_complete`]), which is when sinks
//! publish.
//!
//! A graceful stop rides on the same mechanism: the coordinator sets
//! [`Checkpointing::stop_at`] to a checkpoint it triggers; once that one is
//! complete every task commits it, shuts its stages down and ends, without
//! the end-of-input that would fire every window. A later run resumes from
//! that checkpoint.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use weir_connector::Committable;
use weir_network::Envelope;
use weir_state::SnapshotJob;

/// What one stage contributes to a checkpoint.
pub enum StageState {
    /// An operator's keyed state and timers, to be finished by the job.
    Operator {
        /// Key groups the subtask owns.
        key_groups: Range<u32>,
        /// Produces the snapshot file's bytes.
        job: SnapshotJob,
    },
    /// A sink's pre-commit handles not yet published, oldest first.
    Sink {
        /// The handles.
        committables: Vec<Committable>,
    },
}

impl std::fmt::Debug for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageState::Operator { key_groups, .. } => f.debug_struct("Operator").field("key_groups", key_groups).finish(),
            StageState::Sink { committables } => f.debug_struct("Sink").field("committables", committables).finish(),
        }
    }
}

/// One part of a task's checkpoint state, tagged with its vertex.
#[derive(Debug)]
pub enum StatePart {
    /// A source's position.
    Source {
        /// Vertex index in the plan.
        vertex: usize,
        /// What the source's `snapshot` returned.
        position: Vec<u8>,
    },
    /// An operator's or a sink's state.
    Stage {
        /// Vertex index in the plan.
        vertex: usize,
        /// The state.
        state: StageState,
    },
}

/// A task's answer to a checkpoint.
#[derive(Debug)]
pub struct Ack {
    /// Index of the task in the coordinator's list.
    pub task: usize,
    /// The checkpoint.
    pub checkpoint: u64,
    /// The task's subtask index (for every part it reports).
    pub subtask: u32,
    /// True for the final checkpoint a task takes when its input has ended.
    pub finished: bool,
    /// The state, or why the task could not take it.
    pub result: Result<Vec<StatePart>, String>,
    /// Time from the first barrier to the last one (0 for sources and single inputs).
    pub alignment: Duration,
    /// Time the task spent taking its snapshot (the data flow stops meanwhile).
    pub sync: Duration,
}

/// A task's link to the checkpoint coordinator.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// This task's index in the coordinator's list.
    pub task: usize,
    /// Highest checkpoint the coordinator asked the sources to take.
    pub trigger: Arc<AtomicU64>,
    /// Highest checkpoint that is complete.
    pub completed: Arc<AtomicU64>,
    /// Where ids come from (shared with the coordinator).
    pub next_id: Arc<AtomicU64>,
    /// Id of the final checkpoint, chosen by the first task whose input ends.
    pub final_id: Arc<OnceLock<u64>>,
    /// Where acks go.
    pub acks: crossbeam_channel::Sender<Ack>,
    /// A graceful stop: once the checkpoint with this id (or a later one)
    /// is complete, the task tells its stages (sinks commit), shuts them
    /// down and ends. 0: no stop requested.
    pub stop_at: Arc<AtomicU64>,
}

impl Checkpointing {
    /// True once a stop was requested and its checkpoint is complete.
    pub fn stop_reached(&self) -> bool {
        let stop = self.stop_at.load(Ordering::Acquire);
        stop > 0 && self.completed.load(Ordering::Acquire) >= stop
    }
}

impl Checkpointing {
    /// The id of the final checkpoint (allocating it if this task is first).
    pub fn final_checkpoint(&self) -> u64 {
        *self.final_id.get_or_init(|| self.next_id.fetch_add(1, Ordering::SeqCst))
    }
}

/// Barrier alignment over the channels of one input gate.
///
/// Messages of a channel whose barrier has arrived are held back until the
/// barrier has arrived on every open channel; a channel that ends counts as
/// aligned. Held-back messages keep their network buffers, so a producer
/// ahead of the others is backpressured rather than buffered without bound.
#[derive(Debug)]
pub struct Aligner {
    blocked: Vec<bool>,
    finished: Vec<bool>,
    held: Vec<VecDeque<Envelope>>,
    current: Option<(u64, Instant)>,
}

impl Aligner {
    /// An aligner for `channels` channels.
    pub fn new(channels: usize) -> Self {
        Self {
            blocked: vec![false; channels],
            finished: vec![false; channels],
            held: (0..channels).map(|_| VecDeque::new()).collect(),
            current: None,
        }
    }

    /// True when messages of `channel` must be held back.
    pub fn is_blocked(&self, channel: usize) -> bool {
        self.blocked[channel]
    }

    /// Holds back a message of a blocked channel.
    pub fn hold(&mut self, env: Envelope) {
        self.held[env.channel as usize].push_back(env);
    }

    /// A barrier arrived on `channel`. Returns the checkpoint and the
    /// alignment time once every open channel has delivered it.
    pub fn barrier(&mut self, channel: usize, checkpoint: u64) -> Option<(u64, Duration)> {
        match self.current {
            Some((id, _)) if id == checkpoint => {}
            Some((id, _)) => {
                // Barriers are in order on every channel and one checkpoint
                // runs at a time, so a different id here is a bug upstream.
                tracing::error!(checkpoint, aligning = id, "barrier of another checkpoint during alignment; ignored");
                return None;
            }
            None => self.current = Some((checkpoint, Instant::now())),
        }
        self.blocked[channel] = true;
        self.aligned()
    }

    /// `channel` ended. Returns a completed alignment if this was the last
    /// channel it waited for.
    pub fn end_of_input(&mut self, channel: usize) -> Option<(u64, Duration)> {
        self.finished[channel] = true;
        self.current?;
        self.aligned()
    }

    fn aligned(&mut self) -> Option<(u64, Duration)> {
        if self.blocked.iter().zip(&self.finished).all(|(b, f)| *b || *f) {
            let (id, started) = self.current.take().expect("aligning");
            self.blocked.iter_mut().for_each(|b| *b = false);
            Some((id, started.elapsed()))
        } else {
            None
        }
    }

    /// The held-back messages, channel by channel in arrival order, after
    /// an alignment completed.
    pub fn release(&mut self) -> impl Iterator<Item = Envelope> + '_ {
        self.held.iter_mut().flat_map(|q| q.drain(..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_network::Message;

    fn env(channel: u32, msg: Message) -> Envelope {
        Envelope { channel, msg }
    }

    #[test]
    fn aligns_when_every_open_channel_delivered_the_barrier() {
        let mut a = Aligner::new(3);
        assert_eq!(a.barrier(0, 7), None);
        assert!(a.is_blocked(0) && !a.is_blocked(1));
        a.hold(env(0, Message::Watermark(1)));
        a.hold(env(0, Message::Watermark(2)));
        assert_eq!(a.barrier(2, 7), None);
        a.hold(env(2, Message::Watermark(3)));
        let (id, _) = a.barrier(1, 7).expect("aligned");
        assert_eq!(id, 7);
        assert!(!a.is_blocked(0) && !a.is_blocked(2));
        let released: Vec<(u32, i64)> = a
            .release()
            .map(|e| match e.msg {
                Message::Watermark(w) => (e.channel, w),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(released, [(0, 1), (0, 2), (2, 3)]);
        assert_eq!(a.release().count(), 0);
    }

    #[test]
    fn a_finished_channel_counts_as_aligned() {
        let mut a = Aligner::new(2);
        assert_eq!(a.end_of_input(1), None, "no alignment in progress");
        assert_eq!(a.barrier(0, 1).map(|(id, _)| id), Some(1), "the other channel is finished");
        let mut b = Aligner::new(2);
        assert_eq!(b.barrier(0, 4), None);
        assert_eq!(b.end_of_input(1).map(|(id, _)| id), Some(4));
    }

    #[test]
    fn a_single_channel_aligns_at_once() {
        let mut a = Aligner::new(1);
        assert_eq!(a.barrier(0, 9).map(|(id, _)| id), Some(9));
        assert_eq!(a.barrier(0, 10).map(|(id, _)| id), Some(10));
    }
}
