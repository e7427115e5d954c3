//! Buffer debloating (Flink's FLIP-183): the data in flight toward a
//! consumer follows what the consumer can take, so that it stays near a
//! *time* (`network.debloat-target`) rather than a fixed count of buffers.
//!
//! Under backpressure the queues in front of a slow task are full, and an
//! aligned checkpoint barrier waits behind all of them: with 32 KiB buffers
//! of ~650 records and a task doing 1,000 records a second, tens of
//! seconds. Debloating measures, at each input gate, the bytes its task
//! consumes per second of *busy* time (time spent waiting for input does
//! not count, so a starved consumer is not mistaken for a slow one),
//! smooths it, and every [`PERIOD`] publishes an *allowance*: throughput x
//! target bytes for the whole gate, split evenly over its upstream
//! channels. A producer reads its channel's share when it takes a buffer
//! from its pool ([`Limit`]): the channel may hold at most that many bytes
//! in credits, as buffers of a smaller size when the share is below two
//! full buffers. It is the same credit mechanism as without debloating,
//! with a lower ceiling: the pool (`network.memory`) and the exclusive and
//! floating split still bound memory, and a channel may always take at
//! least two small buffers, so it never stalls.
//!
//! A gate starts at the floor and rises after its first measurement: a
//! queue built at full size before the first measurement would take as
//! long to drain as debloating is meant to avoid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a gate recomputes its allowance.
pub const PERIOD: Duration = Duration::from_millis(200);

/// Smoothing of the measured throughput (exponential moving average): the
/// weight of the newest period.
const SMOOTHING: f64 = 0.3;

/// Smallest buffer a debloated channel sends (but for a record larger than it).
pub const MIN_BUFFER: usize = 1024;

/// Fewest credits a debloated channel may hold: one buffer being filled
/// while another is consumed.
const MIN_CREDITS: usize = 2;

/// A gate's current allowance, shared by the gate (which sets it) and its
/// producers (which read it). `u64::MAX`: not debloated.
#[derive(Debug)]
pub struct Allowance {
    /// Bytes the whole gate may have in flight.
    bytes: AtomicU64,
    /// Upstream channels sharing it.
    channels: u64,
}

impl Allowance {
    pub(crate) fn unlimited(channels: u32) -> Arc<Self> {
        Arc::new(Self { bytes: AtomicU64::new(u64::MAX), channels: u64::from(channels.max(1)) })
    }

    fn starting(channels: u32) -> Arc<Self> {
        Arc::new(Self { bytes: AtomicU64::new(0), channels: u64::from(channels.max(1)) })
    }

    /// Bytes the gate may have in flight now; `None` when not debloated.
    pub fn gate_bytes(&self) -> Option<u64> {
        Some(self.bytes.load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }

    /// One upstream channel's share; `u64::MAX` when not debloated.
    pub(crate) fn channel_bytes(&self) -> u64 {
        match self.gate_bytes() {
            Some(b) => b / self.channels,
            None => u64::MAX,
        }
    }
}

/// What one channel may hold under an allowance: credits and buffer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Most credits the channel may hold at once (`usize::MAX`: the pool's own limits).
    pub credits: usize,
    /// Bytes at which a buffer is sent.
    pub buffer_size: usize,
}

impl Limit {
    /// A channel allowed `bytes` in flight, whose buffers are `buffer_size` at most.
    pub fn of(bytes: u64, buffer_size: usize) -> Self {
        if bytes == u64::MAX {
            return Self { credits: usize::MAX, buffer_size };
        }
        let credits = usize::try_from(bytes.div_ceil(buffer_size as u64)).unwrap_or(usize::MAX).max(MIN_CREDITS);
        let size = usize::try_from(bytes / credits as u64).unwrap_or(usize::MAX).clamp(MIN_BUFFER.min(buffer_size), buffer_size);
        Self { credits, buffer_size: size }
    }
}

/// The consumer's side: measures throughput and sets the allowance.
#[derive(Debug)]
pub(crate) struct Meter {
    target: Duration,
    allowance: Arc<Allowance>,
    /// Start of the current period.
    since: Instant,
    /// Bytes consumed in it (buffers received before the latest one).
    bytes: u64,
    /// Bytes of the latest buffer, consumed once the next one is asked for.
    pending: u64,
    /// Time spent waiting for input in it.
    idle: Duration,
    /// Smoothed bytes per busy second.
    rate: Option<f64>,
}

impl Meter {
    pub(crate) fn new(channels: u32, target: Duration) -> Self {
        let now = Instant::now();
        Self { target, allowance: Allowance::starting(channels), since: now, bytes: 0, pending: 0, idle: Duration::ZERO, rate: None }
    }

    pub(crate) fn allowance(&self) -> &Arc<Allowance> {
        &self.allowance
    }

    /// The task waited `d` for input.
    pub(crate) fn idle(&mut self, d: Duration) {
        self.idle += d;
    }

    /// A buffer of `bytes` arrived: the one before it has been consumed.
    pub(crate) fn received(&mut self, bytes: u64, now: Instant) {
        self.bytes += std::mem::replace(&mut self.pending, bytes);
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < PERIOD {
            return;
        }
        let busy = elapsed.saturating_sub(self.idle);
        self.since = now;
        self.idle = Duration::ZERO;
        let consumed = std::mem::take(&mut self.bytes);
        // A period spent almost only waiting says nothing about the consumer.
        if busy < PERIOD / 20 {
            return;
        }
        let sample = consumed as f64 / busy.as_secs_f64();
        let rate = match self.rate {
            Some(r) => r + SMOOTHING * (sample - r),
            None => sample,
        };
        self.rate = Some(rate);
        let bytes = (rate * self.target.as_secs_f64()).min((u64::MAX / 2) as f64) as u64;
        self.allowance.bytes.store(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_allowance_between_two_small_buffers_and_the_pool() {
        assert_eq!(Limit::of(u64::MAX, 32 << 10), Limit { credits: usize::MAX, buffer_size: 32 << 10 });
        // Plenty: full buffers, as many as the allowance holds.
        assert_eq!(Limit::of(320 << 10, 32 << 10), Limit { credits: 10, buffer_size: 32 << 10 });
        // Less than two buffers: two smaller ones.
        assert_eq!(Limit::of(24 << 10, 32 << 10), Limit { credits: 2, buffer_size: 12 << 10 });
        // Nothing measured yet, or a very slow consumer: the floor.
        assert_eq!(Limit::of(0, 32 << 10), Limit { credits: 2, buffer_size: MIN_BUFFER });
        assert_eq!(Limit::of(0, 512), Limit { credits: 2, buffer_size: 512 });
    }

    #[test]
    fn the_allowance_is_throughput_times_target_over_busy_time() {
        let mut m = Meter::new(2, Duration::from_secs(1));
        assert_eq!(m.allowance().channel_bytes(), 0, "starts at the floor");
        let t0 = m.since;
        // 100 KB consumed in 500 ms, half of it waiting for input: 400 KB/s busy.
        for i in 1..=10 {
            m.received(10_000, t0 + Duration::from_millis(i * 10));
        }
        m.idle(Duration::from_millis(250));
        m.received(10_000, t0 + Duration::from_millis(500));
        assert_eq!(m.allowance().gate_bytes(), Some(400_000));
        assert_eq!(m.allowance().channel_bytes(), 200_000);
        // The consumer slows to ~33 KB/s: the allowance falls, smoothly.
        m.received(1_000, t0 + Duration::from_millis(800));
        let after = m.allowance().gate_bytes().unwrap();
        assert!(after < 400_000 && after > 34_000, "{after}");
        assert_eq!(Allowance::unlimited(3).gate_bytes(), None);
        assert_eq!(Allowance::unlimited(3).channel_bytes(), u64::MAX);
    }
}
