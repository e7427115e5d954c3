//! The inputs of a task fed by an input gate, and its watermark.
//!
//! A vertex may have several inputs (fan-in: `inputs = ["orders",
//! "payments"]`). Its task still has one input gate: the channels of every
//! input, input after input ([`Inputs::of_channel`] says which input a
//! channel belongs to). So everything that works per channel covers every
//! input at once: barrier alignment and unaligned recording
//! ([`crate::Aligner`]), end-of-input (the task ends when every channel of
//! every input ended), and the watermark ([`Watermarks`]), which is the
//! minimum over the channels that are open and not idle.
//!
//! **Idleness** (Flink's `WatermarkStrategy::withIdleness`): a channel
//! that sent neither records nor a watermark for its input's
//! `idle-timeout` is left out of the minimum until it sends again, so one
//! silent input does not hold event time back forever. When it speaks
//! again it counts again; the task's watermark never goes back, so its
//! records may then be late, as in Flink. When every open channel is idle
//! the watermark stays where it is.
//!
//! The task knows which input each batch came from and hands it to the
//! head stage ([`crate::Stage::process_input`]), which passes it on to its
//! plugin (`inputs.current` in the contract): a join tells its sides apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters of one input of a task.
#[derive(Debug)]
pub struct InputMetrics {
    /// Records received on this input.
    pub records_in: AtomicU64,
    /// The input's watermark: the minimum over its open channels
    /// (`i64::MIN` before any).
    pub watermark: AtomicI64,
    /// True while every open channel of this input is idle.
    pub idle: AtomicBool,
    /// How long the input has been idle in all (a wait per idle spell).
    pub idle_time: weir_network::WaitClock,
}

impl Default for InputMetrics {
    fn default() -> Self {
        Self { records_in: AtomicU64::new(0), watermark: AtomicI64::new(i64::MIN), idle: AtomicBool::new(false), idle_time: Default::default() }
    }
}

/// Which channels of a task's input gate belong to which of its inputs.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The input of each gate channel, by channel.
    pub of_channel: Vec<usize>,
    /// Per input: how long it may send nothing before it is left out of
    /// the watermark (`None`: never).
    pub idle_timeout: Vec<Option<Duration>>,
    /// Per input: its counters.
    pub metrics: Vec<Arc<InputMetrics>>,
}

impl Inputs {
    /// One input of `channels` channels that is never idle.
    pub fn single(channels: usize) -> Self {
        Self::new(&[channels], &[None])
    }

    /// Inputs of `channels[i]` consecutive channels each, with their idle timeouts.
    pub fn new(channels: &[usize], idle_timeout: &[Option<Duration>]) -> Self {
        assert_eq!(channels.len(), idle_timeout.len(), "one idle timeout per input");
        Self {
            of_channel: channels.iter().enumerate().flat_map(|(i, &n)| std::iter::repeat_n(i, n)).collect(),
            idle_timeout: idle_timeout.to_vec(),
            metrics: channels.iter().map(|_| Arc::default()).collect(),
        }
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.idle_timeout.len()
    }

    /// True when there is no input.
    pub fn is_empty(&self) -> bool {
        self.idle_timeout.is_empty()
    }
}

/// The watermark of a gate task: the minimum over its open channels that
/// are not idle, never going back.
#[derive(Debug)]
pub struct Watermarks {
    channel: Vec<i64>,
    finished: Vec<bool>,
    timeout: Vec<Option<Duration>>,
    heard: Vec<Instant>,
    idle: Vec<bool>,
    current: i64,
    /// Some channel may go idle: [`Watermarks::tick`] has work to do.
    idleness: bool,
}

impl Watermarks {
    /// Channels with their idle timeouts, all heard from at `now`.
    pub fn new(timeout: Vec<Option<Duration>>, now: Instant) -> Self {
        let n = timeout.len();
        Self {
            channel: vec![i64::MIN; n],
            finished: vec![false; n],
            idleness: timeout.iter().any(Option::is_some),
            timeout,
            heard: vec![now; n],
            idle: vec![false; n],
            current: i64::MIN,
        }
    }

    /// The watermark sent on so far.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// True when some channel has an idle timeout.
    pub fn has_idleness(&self) -> bool {
        self.idleness
    }

    /// Records arrived on `channel`: it is active (again), which never
    /// advances the watermark. `now` is read only when the channel can go
    /// idle.
    pub fn heard(&mut self, channel: usize, now: impl FnOnce() -> Instant) {
        if self.timeout[channel].is_some() {
            self.heard[channel] = now();
            self.idle[channel] = false;
        }
    }

    /// A watermark arrived on `channel`; returns the task's new watermark
    /// if it advanced.
    pub fn watermark(&mut self, channel: usize, w: i64, now: impl FnOnce() -> Instant) -> Option<i64> {
        self.channel[channel] = self.channel[channel].max(w);
        self.heard(channel, now);
        self.advance()
    }

    /// `channel` ended; returns the new watermark if it advanced (never
    /// once every channel ended: end of input sends the last one).
    pub fn end(&mut self, channel: usize) -> Option<i64> {
        self.finished[channel] = true;
        self.advance()
    }

    /// Time passed: channels silent for their idle timeout become idle,
    /// except those `held` says the task holds back itself (a channel
    /// blocked for barrier alignment is silent because of the task, and
    /// its held records must not become late); returns the new watermark
    /// if that advanced it.
    pub fn tick(&mut self, now: Instant, held: impl Fn(usize) -> bool) -> Option<i64> {
        if !self.idleness {
            return None;
        }
        let mut changed = false;
        for ch in 0..self.channel.len() {
            if let Some(t) = self.timeout[ch]
                && !self.idle[ch]
                && !self.finished[ch]
                && !held(ch)
                && now.saturating_duration_since(self.heard[ch]) >= t
            {
                self.idle[ch] = true;
                changed = true;
            }
        }
        if changed { self.advance() } else { None }
    }

    /// True when `channel` is idle.
    pub fn is_idle(&self, channel: usize) -> bool {
        self.idle[channel]
    }

    /// The watermark of the channels `channels` (one input): the minimum
    /// over the open ones.
    pub fn of(&self, channels: impl Iterator<Item = usize>) -> i64 {
        channels.filter(|&c| !self.finished[c]).map(|c| self.channel[c]).min().unwrap_or(i64::MAX)
    }

    fn advance(&mut self) -> Option<i64> {
        let open = (0..self.channel.len()).filter(|&c| !self.finished[c]);
        let min = open.filter(|&c| !self.idle[c]).map(|c| self.channel[c]).min()?;
        if min > self.current {
            self.current = min;
            Some(min)
        } else {
            None
        }
    }
}

impl InputMetrics {
    /// Counts records received on this input.
    pub fn add_in(&self, records: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn the_watermark_is_the_minimum_over_every_channel_of_every_input() {
        let now = Instant::now();
        let mut w = Watermarks::new(vec![None; 3], now);
        assert_eq!(w.watermark(0, 10, || now), None, "channels 1 and 2 have none yet");
        assert_eq!(w.watermark(1, 5, || now), None);
        assert_eq!(w.watermark(2, 7, || now), Some(5));
        assert_eq!(w.watermark(1, 20, || now), Some(7));
        assert_eq!(w.end(2), Some(10), "an ended channel no longer counts");
        assert_eq!(w.end(0), Some(20));
        assert_eq!(w.end(1), None, "the end of input sends the last one itself");
        assert_eq!(w.current(), 20);
    }

    /// Issue 19: an input with no data for its idle timeout is left out of
    /// the minimum until it speaks again.
    #[test]
    fn an_idle_channel_is_left_out_until_it_speaks_again() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(vec![Some(T), Some(T)], t0);
        assert_eq!(w.watermark(0, 100, || t0), None, "channel 1 holds it back");
        assert_eq!(w.tick(t0 + T / 2, |_| false), None, "not idle yet");
        assert_eq!(w.watermark(0, 200, || t0 + T), None);
        assert_eq!(w.tick(t0 + T, |_| false), Some(200), "channel 1 went idle: channel 0 alone counts");
        assert!(w.is_idle(1) && !w.is_idle(0));
        assert_eq!(w.watermark(0, 300, || t0 + T), Some(300));
        // Channel 1 speaks again behind: it counts again, the watermark does not go back.
        w.heard(1, || t0 + 2 * T);
        assert!(!w.is_idle(1));
        assert_eq!(w.watermark(0, 400, || t0 + 2 * T), None, "channel 1 (at MIN) holds it at 300 again");
        assert_eq!(w.current(), 300);
        assert_eq!(w.watermark(1, 350, || t0 + 2 * T), Some(350));
    }

    #[test]
    fn a_channel_held_back_for_alignment_does_not_go_idle() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(vec![Some(T), Some(T)], t0);
        assert_eq!(w.watermark(0, 50, || t0 + T), None);
        assert_eq!(w.tick(t0 + T, |ch| ch == 1), None, "channel 1 is blocked by the task, not silent");
        assert!(!w.is_idle(1));
        assert_eq!(w.tick(t0 + T, |_| false), Some(50));
    }

    #[test]
    fn every_channel_idle_holds_the_watermark() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(vec![Some(T), Some(T)], t0);
        assert_eq!(w.watermark(0, 5, || t0), None);
        assert_eq!(w.tick(t0 + T, |_| false), None, "all idle: nothing to take a minimum of");
        assert_eq!(w.watermark(0, 6, || t0 + T), Some(6), "channel 0 speaks, channel 1 stays idle");
    }

    #[test]
    fn a_channel_without_an_idle_timeout_is_never_idle() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(vec![None, Some(T)], t0);
        assert!(w.has_idleness());
        assert_eq!(w.watermark(1, 9, || t0), None);
        assert_eq!(w.tick(t0 + 100 * T, |_| false), None, "channel 0 (no timeout) still holds it back");
        assert!(!w.is_idle(0) && w.is_idle(1));
        assert!(!Watermarks::new(vec![None], t0).has_idleness());
    }

    #[test]
    fn inputs_number_their_channels_input_after_input() {
        let i = Inputs::new(&[2, 1, 3], &[None, Some(T), None]);
        assert_eq!(i.of_channel, [0, 0, 1, 2, 2, 2]);
        assert_eq!(i.len(), 3);
    }
}
