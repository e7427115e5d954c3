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
//! An *unaligned* checkpoint (`checkpoint.mode = "unaligned"`, Flink's
//! FLIP-76) does not wait for the barrier to reach the front of the
//! queues. The coordinator marks the checkpoint unaligned
//! ([`Checkpointing::unaligned`]), at once or after
//! `aligned-checkpoint-timeout`; a task that has not taken it yet moves
//! the messages waiting in its input gate into its own queue, and as soon
//! as a barrier of that checkpoint is among them (or arrives), it takes the
//! checkpoint there: the barrier overtakes every queued buffer. The
//! buffers it overtook are *in flight*: the task snapshots its stages,
//! forwards the barrier at once, and records ([`InFlight`]) the records
//! still ahead of the barrier on every channel, those queued now and those
//! that arrive on a channel before its own barrier does, while it goes on
//! processing them. Once every open channel delivered its barrier the
//! recording is complete and goes into the ack with the state. The
//! alignment code is the same type: a checkpoint that started aligned and
//! is switched to unaligned takes its held-back messages back in order.
//! A restore feeds the recorded records to the task before any new input,
//! re-partitioned by key when the parallelism changed. A task with several
//! inputs (fan-in) has the channels of all of them in its one gate, so
//! alignment and recording span every input; each recorded record keeps
//! which input it was on, restored through that input's partitioning. Savepoints are
//! always aligned, as in Flink.
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
use weir_network::{Envelope, Message};
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
    /// Records an unaligned barrier overtook, to replay before new input
    /// on restore: per input channel, its records in frame format.
    InFlight {
        /// The task's head vertex (the one its input gate feeds).
        vertex: usize,
        /// Frames per input channel, in arrival order.
        channels: Vec<Vec<u8>>,
        /// The input (of the head vertex's inputs) of each channel.
        inputs: Vec<usize>,
    },
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
    /// Highest checkpoint to take unaligned: its barrier overtakes the
    /// queued buffers (set at trigger, or once the checkpoint ran longer
    /// than `aligned-checkpoint-timeout`). Never a savepoint.
    pub unaligned: Arc<AtomicU64>,
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

    /// The checkpoint being aligned, if a barrier of it has arrived.
    pub fn aligning(&self) -> Option<u64> {
        self.current.map(|(id, _)| id)
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

impl Aligner {
    /// Starts unaligned checkpoint `id` at once. `queue` holds the
    /// messages received and not yet processed, in arrival order, and
    /// `ended` the channels whose input ended. Held-back messages of an
    /// alignment of `id` in progress go back to the front of `queue` (they
    /// follow their channel's barrier); the barriers of `id` in `queue`
    /// are taken out, and the records ahead of each are recorded. The
    /// returned [`InFlight`] records, as they are processed, the messages
    /// of the channels whose barrier is still to come.
    pub fn start_unaligned(&mut self, id: u64, queue: &mut VecDeque<Envelope>, ended: &[bool]) -> InFlight {
        let channels = self.blocked.len();
        let seen = self.blocked.clone();
        let started = match self.current.take() {
            Some((current, since)) if current == id => since,
            _ => Instant::now(),
        };
        self.blocked.iter_mut().for_each(|b| *b = false);
        for (i, env) in self.held.iter_mut().flat_map(|q| q.drain(..)).collect::<Vec<_>>().into_iter().enumerate() {
            queue.insert(i, env);
        }
        let recording = (0..channels).map(|ch| !seen[ch] && !ended[ch]).collect();
        let mut f = InFlight { id, recording, channels: vec![Vec::new(); channels], records: 0, started };
        f.overtake(queue);
        f
    }
}

/// The in-flight records of an unaligned checkpoint, recorded channel by
/// channel until each channel's barrier arrives (a channel that ends
/// counts as arrived).
#[derive(Debug)]
pub struct InFlight {
    /// The checkpoint.
    pub id: u64,
    /// Channels whose barrier is still to come.
    pub recording: Vec<bool>,
    /// Frames recorded per channel.
    pub channels: Vec<Vec<u8>>,
    /// Records recorded.
    pub records: u64,
    /// When the first barrier arrived.
    pub started: Instant,
}

impl InFlight {
    /// The barriers of this checkpoint in `queue` (received, not yet
    /// processed) overtake what is ahead of them on their channel: that is
    /// recorded, the barrier taken out, and the channel's recording ends.
    /// Called whenever messages were moved out of the gate, so that the
    /// checkpoint completes when the last barrier *arrives*, not when the
    /// records queued ahead of it have been processed.
    pub fn overtake(&mut self, queue: &mut VecDeque<Envelope>) {
        let mut barrier = vec![false; self.recording.len()];
        for env in queue.iter() {
            if matches!(env.msg, Message::Barrier(b) if b == self.id) {
                barrier[env.channel as usize] = true;
            }
        }
        if !barrier.iter().zip(&self.recording).any(|(b, r)| *b && *r) {
            return;
        }
        queue.retain(|env| {
            let ch = env.channel as usize;
            if !(barrier[ch] && self.recording[ch]) {
                return true;
            }
            match &env.msg {
                Message::Barrier(b) if *b == self.id => {
                    self.recording[ch] = false;
                    false
                }
                Message::Data { buf, records } => {
                    self.channels[ch].extend_from_slice(buf);
                    self.records += u64::from(*records);
                    true
                }
                _ => true,
            }
        });
    }

    /// Looks at a message about to be processed: records its data if its
    /// channel's barrier is still to come. Returns true when the message
    /// is this checkpoint's barrier (consumed: not to be processed).
    pub fn observe(&mut self, env: &Envelope) -> bool {
        let ch = env.channel as usize;
        match &env.msg {
            Message::Barrier(b) if *b == self.id => {
                self.recording[ch] = false;
                true
            }
            Message::Data { buf, records } if self.recording[ch] => {
                self.channels[ch].extend_from_slice(buf);
                self.records += u64::from(*records);
                false
            }
            Message::EndOfInput => {
                self.recording[ch] = false;
                false
            }
            _ => false,
        }
    }

    /// True once every channel delivered its barrier or ended.
    pub fn complete(&self) -> bool {
        !self.recording.iter().any(|r| *r)
    }

    /// Bytes recorded.
    pub fn bytes(&self) -> u64 {
        self.channels.iter().map(|c| c.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_network::{Buffer, Message};

    fn data(channel: u32, bytes: &[u8]) -> Envelope {
        Envelope { channel, msg: Message::Data { buf: Buffer::unpooled(bytes.to_vec()), records: 1 } }
    }

    fn names(queue: &VecDeque<Envelope>) -> Vec<String> {
        queue
            .iter()
            .map(|e| match &e.msg {
                Message::Data { buf, .. } => format!("{}:{}", e.channel, String::from_utf8_lossy(buf)),
                Message::Barrier(b) => format!("{}:B{b}", e.channel),
                Message::Watermark(w) => format!("{}:W{w}", e.channel),
                Message::EndOfInput => format!("{}:end", e.channel),
            })
            .collect()
    }

    /// Issue 17: the barrier overtakes what is queued; the records ahead of
    /// it on its channel are recorded, the other channels record until
    /// their own barrier arrives, and nothing is recorded twice.
    #[test]
    fn an_unaligned_barrier_records_what_it_overtakes_once_per_channel() {
        let mut a = Aligner::new(3);
        let mut queue: VecDeque<Envelope> = VecDeque::from(vec![
            data(0, b"a"),
            data(1, b"x"),
            data(0, b"b"),
            env(0, Message::Barrier(5)),
            data(0, b"c"),
            data(1, b"y"),
        ]);
        let mut f = a.start_unaligned(5, &mut queue, &[false, false, true]);
        assert_eq!(names(&queue), ["0:a", "1:x", "0:b", "0:c", "1:y"], "the barrier left the queue, the data stays to be processed");
        assert_eq!(f.channels[0], b"ab", "ahead of channel 0's barrier");
        assert_eq!(f.recording, [false, true, false], "channel 1's barrier is to come; channel 2 ended");
        assert!(!f.complete());
        // Processing the queue and what arrives records channel 1 only.
        for _ in 0..2 {
            let next = queue.pop_front().unwrap();
            assert!(!f.observe(&next));
        }
        assert!(!f.observe(&data(1, b"x2")));
        assert!(f.observe(&env(1, Message::Barrier(5))), "the barrier is consumed");
        assert!(f.complete());
        assert!(!f.observe(&data(1, b"after")));
        assert_eq!(f.channels[1], b"xx2");
        assert_eq!((f.records, f.bytes()), (4, 5));
    }

    /// Issue 17: a channel's barrier that arrives behind queued records
    /// overtakes them too, so the checkpoint does not wait for them.
    #[test]
    fn a_later_barrier_overtakes_the_records_queued_ahead_of_it() {
        let mut a = Aligner::new(2);
        let mut queue = VecDeque::from(vec![data(1, b"x"), env(0, Message::Barrier(2))]);
        let mut f = a.start_unaligned(2, &mut queue, &[false, false]);
        assert_eq!(f.recording, [false, true]);
        queue.extend([data(0, b"a"), data(1, b"y"), env(1, Message::Barrier(2)), data(1, b"z")]);
        f.overtake(&mut queue);
        assert!(f.complete());
        assert_eq!(names(&queue), ["1:x", "0:a", "1:y", "1:z"]);
        assert_eq!(f.channels[1], b"xy", "recorded once, in order, without being processed");
        for e in queue.iter() {
            assert!(!f.observe(e));
        }
        assert_eq!(f.channels[1], b"xy");
    }

    #[test]
    fn an_alignment_switched_to_unaligned_gives_back_what_it_held() {
        let mut a = Aligner::new(2);
        assert_eq!(a.barrier(0, 3), None);
        a.hold(data(0, b"after"));
        let mut queue = VecDeque::from(vec![data(1, b"ahead"), data(0, b"later")]);
        let f = a.start_unaligned(3, &mut queue, &[false, false]);
        assert_eq!(names(&queue), ["0:after", "1:ahead", "0:later"]);
        assert_eq!(f.recording, [false, true]);
        assert!(f.channels.iter().all(Vec::is_empty));
        assert!(!a.is_blocked(0), "nothing is held back any more");
    }

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
