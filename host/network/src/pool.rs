//! The bounded buffer pool of a producing task, with per-channel credits.
//!
//! A credit is `buffer_size` bytes. A buffer holds one credit, and a
//! buffer that must grow past `buffer_size` for a record larger than that
//! holds one credit per `buffer_size` bytes of it ([`BufferPool::reserve`]),
//! so the bytes in flight stay within the pool (`network.memory`) whatever
//! the record sizes. Credits come from the channel's exclusive ones first,
//! then from the floating ones; a record larger than all the credits one
//! channel can ever hold ([`BufferPool::max_buffer`]) is refused. Normal
//! records never reach `reserve`: the hot path takes one credit per buffer,
//! as before.
//!
//! A pool may keep a few floating credits as *overdraft* (Flink's overdraft
//! buffers, FLIP-227): only a producer that says it is urgent takes them.
//! A task blocked on a full output in the middle of a batch cannot take an
//! unaligned checkpoint until the batch is out; the overdraft lets it
//! finish the batch so that its barrier can overtake the queues. The
//! overdraft is part of the pool, so memory stays within `network.memory`.
//!
//! With buffer debloating ([`crate::debloat`]) a channel also has a
//! *ceiling*: the most credits it may hold at once, from its consumer's
//! throughput. It only lowers what the pool allows (an urgent producer and
//! a record larger than a buffer ignore it), so the pool still bounds memory.

use crate::WaitClock;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Size and split of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Buffers in the pool (`network.memory / buffer-size`).
    pub buffers: usize,
    /// Bytes per buffer (`network.buffer-size`).
    pub buffer_size: usize,
    /// Buffers reserved for each downstream channel; the rest float.
    pub exclusive: usize,
    /// Floating buffers only an urgent producer may take (0: none).
    pub overdraft: usize,
}

/// A buffer could not be given room for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveError {
    /// The consumer went away while the producer waited.
    Gone,
    /// More bytes than the channel can ever hold at once: at most `max`.
    TooLarge {
        /// The bytes asked for.
        bytes: usize,
        /// The most one channel's buffer may hold.
        max: usize,
    },
}

/// A pool too small for its channels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{buffers} network buffers cannot give {channels} downstream channels {exclusive} exclusive buffers each; raise network.memory to at least {needed} bytes or lower network.exclusive-buffers")]
pub struct PoolError {
    /// Buffers available.
    pub buffers: usize,
    /// Channels to serve.
    pub channels: usize,
    /// Exclusive buffers per channel.
    pub exclusive: usize,
    /// Memory needed.
    pub needed: usize,
}

#[derive(Debug)]
struct State {
    free: Vec<Vec<u8>>,
    /// Exclusive credits held per channel (in a writer, in flight or being processed).
    held: Vec<usize>,
    /// Floating credits held, across channels.
    floating_held: usize,
    /// Floating credits held per channel (for the debloating ceiling).
    floating_of: Vec<usize>,
}

impl State {
    /// Credits channel `channel` could take now; the overdraft only when `urgent`.
    /// Below the channel's `ceiling` of credits held, but when `urgent`.
    fn available(&self, inner: &Inner, channel: usize, urgent: bool, ceiling: usize) -> usize {
        let reserve = if urgent { 0 } else { inner.config.overdraft };
        let pool = (inner.config.exclusive - self.held[channel]) + (inner.floating - self.floating_held).saturating_sub(reserve);
        if urgent { pool } else { pool.min(ceiling.saturating_sub(self.held[channel] + self.floating_of[channel])) }
    }

    /// Takes `n` credits for `channel` (exclusive first); returns how many
    /// are floating. The caller checked they are available.
    fn take(&mut self, inner: &Inner, channel: usize, n: usize) -> usize {
        let exclusive = n.min(inner.config.exclusive - self.held[channel]);
        self.held[channel] += exclusive;
        self.floating_held += n - exclusive;
        self.floating_of[channel] += n - exclusive;
        n - exclusive
    }
}

#[derive(Debug)]
struct Inner {
    config: PoolConfig,
    floating: usize,
    state: Mutex<State>,
    returned: Condvar,
    /// Where waits for a buffer are added: the task's backpressure clock,
    /// and the edge's (how long this producer waits on this consumer).
    clocks: Vec<Arc<WaitClock>>,
}

/// A producing task's network buffers: a fixed number, recycled forever.
#[derive(Debug, Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

impl BufferPool {
    /// A pool serving `channels` downstream channels; waits for a buffer are
    /// added to each of `clocks`.
    pub fn new(config: PoolConfig, channels: usize, clocks: Vec<Arc<WaitClock>>) -> Result<Self, PoolError> {
        let reserved = channels * config.exclusive;
        if config.buffers < reserved.max(1) {
            return Err(PoolError { buffers: config.buffers, channels, exclusive: config.exclusive, needed: reserved.max(1) * config.buffer_size });
        }
        let state = State { free: Vec::new(), held: vec![0; channels], floating_held: 0, floating_of: vec![0; channels] };
        Ok(Self {
            inner: Arc::new(Inner { config, floating: config.buffers - reserved, state: Mutex::new(state), returned: Condvar::new(), clocks }),
        })
    }

    /// Takes a buffer for `channel`, waiting while the channel has used its
    /// exclusive buffers and no floating buffer is free. `gone` is polled
    /// while waiting; `None` means the consumer went away.
    pub fn acquire(&self, channel: usize, gone: impl Fn() -> bool) -> Option<Buffer> {
        self.acquire_within(channel, gone, || false, || usize::MAX)
    }

    /// [`BufferPool::acquire`], which may take the overdraft while
    /// `urgent` is true, and otherwise waits while the channel holds
    /// `ceiling` credits or more (buffer debloating). Both are polled while
    /// waiting.
    pub fn acquire_within(&self, channel: usize, gone: impl Fn() -> bool, urgent: impl Fn() -> bool, ceiling: impl Fn() -> usize) -> Option<Buffer> {
        let inner = &self.inner;
        let mut st = self.wait_for(channel, 1, &gone, &urgent, &ceiling)?;
        let floating = st.take(inner, channel, 1);
        let data = st.free.pop().unwrap_or_else(|| Vec::with_capacity(inner.config.buffer_size));
        Some(Buffer { data, pool: Some(self.inner.clone()), channel, exclusive: 1 - floating, floating })
    }

    /// Waits until `channel` can take `n` credits; `None` when `gone`.
    fn wait_for(
        &self,
        channel: usize,
        n: usize,
        gone: &impl Fn() -> bool,
        urgent: &impl Fn() -> bool,
        ceiling: &impl Fn() -> usize,
    ) -> Option<std::sync::MutexGuard<'_, State>> {
        let inner = &self.inner;
        let mut st = inner.state.lock().expect("pool lock");
        let mut waiting = false;
        while st.available(inner, channel, inner.config.overdraft > 0 && urgent(), ceiling()) < n {
            if gone() {
                if waiting {
                    inner.clocks.iter().for_each(|c| c.end_wait());
                }
                return None;
            }
            if !waiting {
                waiting = true;
                inner.clocks.iter().for_each(|c| c.start_wait());
            }
            st = inner.returned.wait_timeout(st, Duration::from_millis(50)).expect("pool lock").0;
        }
        if waiting {
            inner.clocks.iter().for_each(|c| c.end_wait());
        }
        Some(st)
    }

    /// The most bytes one buffer of a channel may hold: every credit the
    /// channel can hold at once (its exclusive ones and all floating ones).
    pub fn max_buffer(&self) -> usize {
        (self.inner.config.exclusive + self.inner.floating) * self.inner.config.buffer_size
    }

    /// Gives `buf` (of this pool) credits for `bytes` bytes, one per
    /// `buffer_size`, waiting for them like [`BufferPool::acquire`] (that
    /// wait is backpressure), and room for them. For a record larger than a
    /// buffer: the caller holds no other buffer of this pool while it
    /// waits, or the credits it needs might never come back.
    pub fn reserve(&self, buf: &mut Buffer, bytes: usize, gone: impl Fn() -> bool) -> Result<(), ReserveError> {
        let max = self.max_buffer();
        if bytes > max {
            return Err(ReserveError::TooLarge { bytes, max });
        }
        let need = bytes.div_ceil(self.inner.config.buffer_size);
        let held = buf.exclusive + buf.floating;
        if need > held {
            let mut st = self.wait_for(buf.channel, need - held, &gone, &|| false, &|| usize::MAX).ok_or(ReserveError::Gone)?;
            let floating = st.take(&self.inner, buf.channel, need - held);
            buf.floating += floating;
            buf.exclusive += need - held - floating;
        }
        buf.data.reserve_exact(bytes.saturating_sub(buf.data.len()));
        Ok(())
    }

    /// Buffers in use (held by writers, in flight, or being processed).
    pub fn in_use(&self) -> usize {
        let st = self.inner.state.lock().expect("pool lock");
        st.held.iter().sum::<usize>() + st.floating_held
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.inner.config.buffers
    }

    /// Fraction of the pool in use.
    pub fn usage(&self) -> f64 {
        self.in_use() as f64 / self.capacity().max(1) as f64
    }
}

/// A network buffer. Dropping it returns it to its pool (a credit for the
/// producer); the allocation is reused.
#[derive(Debug)]
pub struct Buffer {
    data: Vec<u8>,
    pool: Option<Arc<Inner>>,
    channel: usize,
    /// Credits held: the channel's exclusive ones and floating ones.
    exclusive: usize,
    floating: usize,
}

impl Buffer {
    /// A buffer outside any pool (tests, sources that hand over whole batches).
    pub fn unpooled(data: Vec<u8>) -> Self {
        Self { data, pool: None, channel: 0, exclusive: 0, floating: 0 }
    }

    /// The bytes, to append to.
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let Some(inner) = self.pool.take() else { return };
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        // A buffer that grew for an oversized record is not kept at that
        // size: its credits go back, so must its bytes.
        if data.capacity() > inner.config.buffer_size {
            data = Vec::with_capacity(inner.config.buffer_size);
        }
        let mut st = inner.state.lock().expect("pool lock");
        st.floating_held -= self.floating;
        st.floating_of[self.channel] -= self.floating;
        st.held[self.channel] -= self.exclusive;
        st.free.push(data);
        drop(st);
        inner.returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_then_floating_then_wait() {
        let clock = Arc::new(WaitClock::default());
        let pool = BufferPool::new(PoolConfig { buffers: 5, buffer_size: 16, exclusive: 2, overdraft: 0 }, 2, vec![clock]).unwrap();
        let a: Vec<Buffer> = (0..3).map(|_| pool.acquire(0, || false).unwrap()).collect();
        // Channel 0 took its 2 exclusive buffers and the only floating one;
        // channel 1 still has its exclusive ones.
        let b: Vec<Buffer> = (0..2).map(|_| pool.acquire(1, || false).unwrap()).collect();
        assert_eq!(pool.in_use(), 5);
        assert!(pool.acquire(1, || true).is_none(), "no buffer left: a gone consumer ends the wait");
        drop(a);
        assert_eq!(pool.in_use(), 2);
        assert!(pool.acquire(1, || false).is_some());
        drop(b);
    }

    /// Issue 19: a wait counts on every clock: the task's backpressure and
    /// the edge's (which consumer the producer waits on).
    #[test]
    fn a_wait_counts_on_every_clock() {
        let (task, edge) = (Arc::new(WaitClock::default()), Arc::new(WaitClock::default()));
        let pool = BufferPool::new(PoolConfig { buffers: 1, buffer_size: 16, exclusive: 1, overdraft: 0 }, 1, vec![task.clone(), edge.clone()]).unwrap();
        let held = pool.acquire(0, || false).unwrap();
        assert_eq!((task.total_ns(), edge.total_ns()), (0, 0), "no wait yet");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        assert!(pool.acquire(0, || false).is_some());
        release.join().unwrap();
        assert!(task.total_ns() > 0 && edge.total_ns() > 0, "both clocks saw the wait");
        assert_eq!(task.waiting_since_ns.load(std::sync::atomic::Ordering::Relaxed), 0, "the wait ended on the task's clock");
        assert_eq!(edge.waiting_since_ns.load(std::sync::atomic::Ordering::Relaxed), 0, "and on the edge's");
    }

    /// Issue 16: a buffer grew to fit a large record and still counted as
    /// one buffer, so `network.memory = "4MiB"` held 1.97 GiB of 8 MiB
    /// records. Now a large buffer holds a credit per `buffer_size` bytes.
    #[test]
    fn a_buffer_grown_for_a_large_record_holds_credits_for_its_bytes() {
        let pool = BufferPool::new(PoolConfig { buffers: 6, buffer_size: 16, exclusive: 2, overdraft: 0 }, 2, Vec::new()).unwrap();
        // Channel 0 may use its 2 exclusive and the 2 floating credits: 64 bytes.
        assert_eq!(pool.max_buffer(), 64);
        let mut big = pool.acquire(0, || false).unwrap();
        pool.reserve(&mut big, 40, || false).unwrap();
        assert_eq!(pool.in_use(), 3, "40 bytes take 3 credits of 16");
        assert!(big.data_mut().capacity() >= 40);
        let mut b2 = pool.acquire(0, || false).unwrap();
        assert_eq!(pool.reserve(&mut b2, 32, || true), Err(ReserveError::Gone), "one credit left for channel 0: it waits");
        assert_eq!(pool.reserve(&mut b2, 65, || false), Err(ReserveError::TooLarge { bytes: 65, max: 64 }));
        // Channel 1 still has its exclusive credits.
        let c = pool.acquire(1, || false).unwrap();
        drop(big);
        assert_eq!(pool.in_use(), 2, "all the large buffer's credits came back");
        pool.reserve(&mut b2, 48, || false).unwrap();
        assert_eq!(pool.in_use(), 4);
        drop((b2, c));
        assert_eq!(pool.in_use(), 0);
        let again = pool.acquire(0, || false).unwrap();
        assert!(again.data.capacity() <= 16, "a grown buffer is not kept grown");
    }

    /// Issue 17: the overdraft is kept for an urgent producer (one that
    /// must finish its batch to take an unaligned checkpoint).
    #[test]
    fn only_an_urgent_producer_takes_the_overdraft() {
        let pool = BufferPool::new(PoolConfig { buffers: 4, buffer_size: 16, exclusive: 1, overdraft: 2 }, 1, Vec::new()).unwrap();
        let a: Vec<Buffer> = (0..2).map(|_| pool.acquire(0, || false).unwrap()).collect();
        assert!(pool.acquire(0, || true).is_none(), "the overdraft is not for a normal wait");
        let b: Vec<Buffer> = (0..2).map(|_| pool.acquire_within(0, || false, || true, || 1).unwrap()).collect();
        assert_eq!(pool.in_use(), 4);
        assert!(pool.acquire_within(0, || true, || true, || usize::MAX).is_none(), "the pool is still bounded");
        drop((a, b));
    }

    /// Issue 17, debloating: a channel stops at its ceiling of credits,
    /// exclusive and floating ones together, while its sibling is not
    /// held back; a higher ceiling lets it go on.
    #[test]
    fn a_debloated_channel_waits_at_its_ceiling() {
        let pool = BufferPool::new(PoolConfig { buffers: 8, buffer_size: 16, exclusive: 1, overdraft: 0 }, 2, Vec::new()).unwrap();
        let a: Vec<Buffer> = (0..3).map(|_| pool.acquire_within(0, || false, || false, || 3).unwrap()).collect();
        assert!(pool.acquire_within(0, || true, || false, || 3).is_none(), "3 credits held: channel 0 waits");
        let b: Vec<Buffer> = (0..3).map(|_| pool.acquire_within(1, || false, || false, || 3).unwrap()).collect();
        let more = pool.acquire_within(0, || false, || false, || 4).unwrap();
        drop(a);
        assert_eq!(pool.in_use(), 4);
        let again: Vec<Buffer> = (0..3).map(|_| pool.acquire_within(0, || false, || false, || 4).unwrap()).collect();
        assert!(pool.acquire_within(0, || true, || false, || 4).is_none());
        drop((b, more, again));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn too_small_a_pool_is_refused_with_the_memory_needed() {
        let e = BufferPool::new(PoolConfig { buffers: 3, buffer_size: 1024, exclusive: 2, overdraft: 0 }, 2, Vec::new()).unwrap_err();
        assert_eq!(e.needed, 4096);
    }
}
