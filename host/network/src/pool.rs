//! The bounded buffer pool of a producing task, with per-channel credits.

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
    /// Exclusive buffers held per channel (in a writer, in flight or being processed).
    held: Vec<usize>,
    /// Floating buffers held, across channels.
    floating_held: usize,
}

#[derive(Debug)]
struct Inner {
    config: PoolConfig,
    floating: usize,
    state: Mutex<State>,
    returned: Condvar,
    clock: Arc<WaitClock>,
}

/// A producing task's network buffers: a fixed number, recycled forever.
#[derive(Debug, Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

impl BufferPool {
    /// A pool serving `channels` downstream channels; waits for a buffer are
    /// added to `clock`.
    pub fn new(config: PoolConfig, channels: usize, clock: Arc<WaitClock>) -> Result<Self, PoolError> {
        let reserved = channels * config.exclusive;
        if config.buffers < reserved.max(1) {
            return Err(PoolError { buffers: config.buffers, channels, exclusive: config.exclusive, needed: reserved.max(1) * config.buffer_size });
        }
        let state = State { free: Vec::new(), held: vec![0; channels], floating_held: 0 };
        Ok(Self {
            inner: Arc::new(Inner { config, floating: config.buffers - reserved, state: Mutex::new(state), returned: Condvar::new(), clock }),
        })
    }

    /// Takes a buffer for `channel`, waiting while the channel has used its
    /// exclusive buffers and no floating buffer is free. `gone` is polled
    /// while waiting; `None` means the consumer went away.
    pub fn acquire(&self, channel: usize, gone: impl Fn() -> bool) -> Option<Buffer> {
        let inner = &self.inner;
        let mut st = inner.state.lock().expect("pool lock");
        let mut waiting = false;
        let floating = loop {
            if st.held[channel] < inner.config.exclusive {
                break false;
            }
            if st.floating_held < inner.floating {
                break true;
            }
            if gone() {
                if waiting {
                    inner.clock.end_wait();
                }
                return None;
            }
            if !waiting {
                waiting = true;
                inner.clock.start_wait();
            }
            st = inner.returned.wait_timeout(st, Duration::from_millis(50)).expect("pool lock").0;
        };
        if waiting {
            inner.clock.end_wait();
        }
        if floating {
            st.floating_held += 1;
        } else {
            st.held[channel] += 1;
        }
        let data = st.free.pop().unwrap_or_else(|| Vec::with_capacity(inner.config.buffer_size));
        Some(Buffer { data, pool: Some(self.inner.clone()), channel, floating })
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
    floating: bool,
}

impl Buffer {
    /// A buffer outside any pool (tests, sources that hand over whole batches).
    pub fn unpooled(data: Vec<u8>) -> Self {
        Self { data, pool: None, channel: 0, floating: false }
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
        // A buffer that grew for an oversized record is not kept at that size.
        if data.capacity() > inner.config.buffer_size * 2 {
            data = Vec::with_capacity(inner.config.buffer_size);
        }
        let mut st = inner.state.lock().expect("pool lock");
        if self.floating {
            st.floating_held -= 1;
        } else {
            st.held[self.channel] -= 1;
        }
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
        let pool = BufferPool::new(PoolConfig { buffers: 5, buffer_size: 16, exclusive: 2 }, 2, clock).unwrap();
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

    #[test]
    fn too_small_a_pool_is_refused_with_the_memory_needed() {
        let e = BufferPool::new(PoolConfig { buffers: 3, buffer_size: 1024, exclusive: 2 }, 2, Arc::default()).unwrap_err();
        assert_eq!(e.needed, 4096);
    }
}
