//! How batches move between tasks.
//!
//! Records travel in *network buffers* of weir's frame format, never one by
//! one: a producer appends records to a per-target buffer and sends the
//! buffer when it is full (`buffer-size`, default 32 KiB), when the
//! producer's input goes idle, or when the oldest record in it has waited
//! `buffer-timeout`.
//!
//! Buffers come from a bounded [`BufferPool`] per producing task (its
//! `network.memory`), and go back to it when the consumer has processed
//! them: a returned buffer is a *credit*. Each downstream channel may hold
//! `exclusive` buffers of the pool, and the rest are *floating*, shared by
//! all channels, so a slow channel cannot take every buffer and starve its
//! siblings. A producer that cannot get a buffer waits, and that wait is
//! what the task reports as *backpressured*. Memory in flight is therefore
//! bounded by configuration, never by load; backpressure propagates hop by
//! hop up to the sources. A record larger than a buffer travels alone in a
//! buffer grown for it, which holds as many credits as it takes buffers'
//! worth of bytes, so large records are bounded by the same memory; one
//! larger than a channel may ever hold is refused ([`EmitError`]).
//!
//! Signals travel in-band on the same channels as data ([`Message`]):
//! watermarks, checkpoint barriers and end-of-input, so a receiver sees them
//! in order with the records around them.
//!
//! Every upstream subtask of a receiver writes to one channel (the
//! receiver's *input gate*); each message carries the index of the upstream
//! channel it came from, so a receiver can track per-input watermarks and
//! end-of-input.
//!
//! With buffer debloating on ([`debloated_gate`]), each gate measures what
//! its task consumes and lowers the credits and buffer size of its
//! upstream channels so that what is queued toward it stays near a time
//! target: see [`debloat`].

pub mod debloat;
mod pool;
pub mod throttle;

pub use debloat::Allowance;
pub use pool::{Buffer, BufferPool, PoolConfig, PoolError, ReserveError};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_format::{keygroup, BatchWriter, Frames};

/// What flows on a channel.
#[derive(Debug)]
pub enum Message {
    /// A buffer of `records` records in frame format.
    Data {
        /// The frames, in a buffer of the producer's pool (returned to it when dropped).
        buf: Buffer,
        /// How many records it holds.
        records: u32,
    },
    /// No record with an earlier event time will follow on this channel.
    Watermark(i64),
    /// Checkpoint barrier: every record before it belongs to the checkpoint
    /// with this id, every record after it to the next one.
    Barrier(u64),
    /// The upstream subtask has finished; nothing follows.
    EndOfInput,
}

/// A message tagged with the input channel it arrived on.
#[derive(Debug)]
pub struct Envelope {
    /// Index of the upstream channel within the receiver's input gate.
    pub channel: u32,
    /// The message.
    pub msg: Message,
}

/// The receiving side of a task: all its upstream channels merged.
#[derive(Debug)]
pub struct InputGate {
    rx: Receiver<Envelope>,
    /// Number of upstream channels.
    pub channels: u32,
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Records sent to the gate and not yet received (one atomic add per
    /// buffer, none per record): what a barrier queued now waits behind.
    records: Arc<AtomicU64>,
    /// Buffer debloating: the throughput meter behind the allowance.
    meter: Option<std::sync::Mutex<debloat::Meter>>,
    allowance: Arc<Allowance>,
}

impl Drop for InputGate {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// The receiver went away (its task failed or the pipeline is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

impl std::fmt::Display for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("downstream task is gone")
    }
}

impl std::error::Error for Disconnected {}

/// Creates an input gate for `channels` upstream channels, and the sender
/// each upstream subtask clones. The channel itself is unbounded: what
/// bounds the data in flight is the producers' buffer pools.
pub fn gate(channels: u32) -> (GateSender, InputGate) {
    gate_with(channels, None)
}

/// [`gate`], with buffer debloating toward `target` of queued data.
pub fn debloated_gate(channels: u32, target: Duration) -> (GateSender, InputGate) {
    gate_with(channels, Some(debloat::Meter::new(channels, target)))
}

fn gate_with(channels: u32, meter: Option<debloat::Meter>) -> (GateSender, InputGate) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let allowance = meter.as_ref().map_or_else(|| Allowance::unlimited(channels), |m| m.allowance().clone());
    let meter = meter.map(std::sync::Mutex::new);
    (
        GateSender { tx, closed: closed.clone(), records: records.clone(), allowance: allowance.clone() },
        InputGate { rx, channels, closed, records, meter, allowance },
    )
}

/// Cloneable sending side of an input gate.
#[derive(Debug, Clone)]
pub struct GateSender {
    tx: Sender<Envelope>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    records: Arc<AtomicU64>,
    allowance: Arc<Allowance>,
}

impl GateSender {
    /// The sender for upstream channel `channel`.
    pub fn channel(&self, channel: u32) -> OutputChannel {
        OutputChannel { tx: self.tx.clone(), channel, closed: self.closed.clone(), records: self.records.clone(), allowance: self.allowance.clone() }
    }
}

/// Result of waiting on an input gate.
#[derive(Debug)]
pub enum Received {
    /// A message arrived.
    Message(Envelope),
    /// Nothing arrived within the timeout.
    Timeout,
    /// Every upstream sender is gone without end-of-input (an upstream failure).
    Disconnected,
}

impl InputGate {
    /// Waits for the next message for at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Received {
        // Time spent waiting for input does not count in the consumer's
        // throughput (buffer debloating).
        let waiting = self.meter.as_ref().filter(|_| self.rx.is_empty()).map(|m| (m, Instant::now()));
        let r = self.rx.recv_timeout(timeout);
        if let Some((m, start)) = waiting {
            m.lock().expect("meter lock").idle(start.elapsed());
        }
        match r {
            Ok(e) => Received::Message(self.received(e)),
            Err(RecvTimeoutError::Timeout) => Received::Timeout,
            Err(RecvTimeoutError::Disconnected) => Received::Disconnected,
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<Envelope> {
        self.rx.try_recv().ok().map(|e| self.received(e))
    }

    fn received(&self, e: Envelope) -> Envelope {
        if let Message::Data { records, buf } = &e.msg {
            self.records.fetch_sub(u64::from(*records), Ordering::Relaxed);
            if let Some(m) = &self.meter {
                m.lock().expect("meter lock").received(buf.len() as u64, Instant::now());
            }
        }
        e
    }

    /// The allowance this gate sets for its upstream channels (buffer
    /// debloating), for metrics.
    pub fn allowance(&self) -> Arc<Allowance> {
        self.allowance.clone()
    }

    /// Messages waiting in the gate.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Records waiting in the gate (sent, not yet received).
    pub fn queued_records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// The live counter behind [`InputGate::queued_records`], for metrics.
    pub fn records_counter(&self) -> Arc<AtomicU64> {
        self.records.clone()
    }
}

/// Time a task spent waiting (for input: idle; for output buffers:
/// backpressured), in nanoseconds, including a wait in progress, so a long
/// wait shows while it lasts. Two clock reads per wait, none per record.
#[derive(Debug, Default)]
pub struct WaitClock {
    /// Total time of finished waits.
    pub blocked_ns: AtomicU64,
    /// Start of the current wait (ns since `origin`), 0 when not waiting.
    pub waiting_since_ns: AtomicU64,
    origin: std::sync::OnceLock<Instant>,
}

impl WaitClock {
    fn now_ns(&self) -> u64 {
        self.origin.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
    }

    /// A wait begins.
    pub fn start_wait(&self) {
        self.waiting_since_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    /// The wait ends.
    pub fn end_wait(&self) {
        let since = self.waiting_since_ns.swap(0, Ordering::Relaxed);
        if since != 0 {
            self.blocked_ns.fetch_add(self.now_ns().saturating_sub(since), Ordering::Relaxed);
        }
    }

    /// Total waiting time so far, including a wait in progress.
    pub fn total_ns(&self) -> u64 {
        let since = self.waiting_since_ns.load(Ordering::Relaxed);
        let current = if since == 0 { 0 } else { self.now_ns().saturating_sub(since) };
        self.blocked_ns.load(Ordering::Relaxed) + current
    }
}

/// The sending side of one upstream channel.
#[derive(Debug, Clone)]
pub struct OutputChannel {
    tx: Sender<Envelope>,
    channel: u32,
    closed: Arc<std::sync::atomic::AtomicBool>,
    records: Arc<AtomicU64>,
    allowance: Arc<Allowance>,
}

impl OutputChannel {
    /// Sends a message (never blocks: buffers, not the channel, are bounded).
    pub fn send(&self, msg: Message) -> Result<(), Disconnected> {
        let records = if let Message::Data { records, .. } = &msg { u64::from(*records) } else { 0 };
        self.records.fetch_add(records, Ordering::Relaxed);
        self.tx.send(Envelope { channel: self.channel, msg }).map_err(|_| {
            self.records.fetch_sub(records, Ordering::Relaxed);
            Disconnected
        })
    }

    /// True when the receiving task is gone.
    pub fn is_disconnected(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// What this channel may hold now, with buffers of at most `buffer_size`.
    fn limit(&self, buffer_size: usize) -> debloat::Limit {
        debloat::Limit::of(self.allowance.channel_bytes(), buffer_size)
    }
}

/// Why a batch could not be sent on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitError {
    /// The receiver went away.
    Disconnected,
    /// A record is larger than one output channel may hold at once.
    RecordTooLarge {
        /// Its size in the frame format (bytes).
        bytes: usize,
        /// The most one channel may hold ([`BufferPool::max_buffer`]).
        max: usize,
        /// The record's key and start of its value.
        record: String,
    },
}

impl From<Disconnected> for EmitError {
    fn from(_: Disconnected) -> Self {
        EmitError::Disconnected
    }
}

impl std::fmt::Display for EmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmitError::Disconnected => Disconnected.fmt(f),
            EmitError::RecordTooLarge { bytes, max, record } => write!(
                f,
                "a record of {bytes} bytes ({record}) is larger than the {max} bytes one output channel may hold \
                 (network.memory, less the exclusive buffers of its sibling channels); raise network.memory"
            ),
        }
    }
}

impl std::error::Error for EmitError {}

/// How records are spread over the subtasks of the next operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (equal parallelism).
    Forward,
    /// Whole buffers round-robin over the targets.
    Rebalance,
    /// By record key over key groups: a key always reaches the subtask that
    /// owns its state.
    Hash {
        /// Number of key groups.
        max_parallelism: u32,
    },
    /// Every record to every target.
    Broadcast,
}

/// Buffering and flushing settings of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// Send a buffer once it holds this many bytes.
    pub size: usize,
    /// Send a partly filled buffer once its oldest record waited this long
    /// (`Duration::ZERO`: after every batch).
    pub timeout: Duration,
    /// Also send partly filled buffers as soon as the producer's input goes
    /// idle (low latency at low load without giving up batching at high load).
    pub flush_on_idle: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { size: 32 * 1024, timeout: Duration::from_millis(100), flush_on_idle: true }
    }
}

/// Splits a task's output batches over the subtasks of one downstream operator.
#[derive(Debug)]
pub struct Partitioner {
    strategy: Partitioning,
    targets: Vec<OutputChannel>,
    /// Per target: the buffer being filled and its record count.
    writers: Vec<Option<(Buffer, u32)>>,
    /// Per target: the size at which its current buffer is sent (the
    /// buffer size, or less under buffer debloating).
    sizes: Vec<usize>,
    pool: BufferPool,
    oldest: Option<Instant>,
    config: BufferConfig,
    next: usize,
    /// The vertex whose output this is (for messages).
    producer: String,
    /// `(wanted, taken)`: the producer may take its pool's overdraft while
    /// `wanted > taken` (an unaligned checkpoint it has not taken yet).
    urgent: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>,
}

impl Partitioner {
    /// A partitioner of `producer`'s output over `targets` (index =
    /// downstream subtask), drawing buffers from `pool` (channel i of the
    /// pool is target i).
    pub fn new(producer: &str, strategy: Partitioning, targets: Vec<OutputChannel>, config: BufferConfig, pool: BufferPool) -> Self {
        let writers = targets.iter().map(|_| None).collect();
        let sizes = vec![config.size; targets.len()];
        Self { strategy, targets, writers, sizes, pool, oldest: None, config, next: 0, producer: producer.to_owned(), urgent: None }
    }

    /// Lets this output take its pool's overdraft while `wanted > taken`.
    pub fn set_urgent(&mut self, wanted: Arc<AtomicU64>, taken: Arc<AtomicU64>) {
        self.urgent = Some((wanted, taken));
    }

    /// The vertex whose output this is.
    pub fn producer(&self) -> &str {
        &self.producer
    }

    /// Routes one batch of `records` records.
    pub fn emit(&mut self, batch: &[u8], records: usize) -> Result<(), EmitError> {
        if records == 0 {
            return Ok(());
        }
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        match self.strategy {
            Partitioning::Forward if self.targets.len() == 1 => self.append(0, batch, records)?,
            Partitioning::Forward | Partitioning::Rebalance => {
                let t = self.next % self.targets.len();
                self.next = self.next.wrapping_add(1);
                self.append(t, batch, records)?;
            }
            Partitioning::Broadcast => {
                for t in 0..self.targets.len() {
                    self.append(t, batch, records)?;
                }
            }
            Partitioning::Hash { max_parallelism } => {
                let n = self.targets.len() as u32;
                for rec in Frames::new(batch) {
                    let rec = rec.expect("operators produce well-formed batches");
                    let t = match rec.key {
                        Some(k) if n > 1 => keygroup::subtask(keygroup::of(k, max_parallelism), max_parallelism, n),
                        _ => 0,
                    } as usize;
                    self.writable(t)?;
                    let len = rec.encoded_len();
                    if self.writers[t].as_ref().is_some_and(|(b, _)| b.len() + len > self.sizes[t]) {
                        self.overflow(t, len, &rec)?;
                    }
                    let (buf, count) = self.writers[t].as_mut().expect("writable");
                    let mut w = BatchWriter::from_vec(std::mem::take(buf.data_mut()), 0);
                    w.push_record(&rec);
                    *buf.data_mut() = w.finish();
                    *count += 1;
                    if buf.len() >= self.sizes[t] {
                        self.send_writer(t)?;
                    }
                }
            }
        }
        if self.config.timeout.is_zero() || self.flush_due() {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes sure target `t` has a buffer to write into, waiting for one
    /// from the pool if none is free (backpressure), or while the target's
    /// debloating allowance is used up. The buffer's size is fixed here.
    fn writable(&mut self, t: usize) -> Result<(), Disconnected> {
        if self.writers[t].is_none() {
            let target = &self.targets[t];
            let size = self.config.size;
            let urgent = || self.urgent.as_ref().is_some_and(|(wanted, taken)| wanted.load(Ordering::Acquire) > taken.load(Ordering::Acquire));
            let buf = self.pool.acquire_within(t, || target.is_disconnected(), urgent, || target.limit(size).credits).ok_or(Disconnected)?;
            self.sizes[t] = target.limit(size).buffer_size;
            self.writers[t] = Some((buf, 0));
        }
        Ok(())
    }

    /// A record of `len` bytes does not fit target `t`'s buffer: it starts
    /// a buffer of its own, so buffers never grow past the buffer size but
    /// for a single record larger than it (which gets the room for it).
    #[cold]
    fn overflow(&mut self, t: usize, len: usize, rec: &weir_format::RecordRef<'_>) -> Result<(), EmitError> {
        if self.writers[t].as_ref().is_some_and(|(b, _)| !b.is_empty()) {
            self.send_writer(t)?;
            self.writable(t)?;
        }
        if len > self.config.size {
            self.reserve(t, len, rec)?;
        }
        Ok(())
    }

    /// Gives target `t`'s (empty) buffer room for a record of `len` bytes,
    /// larger than a buffer, with the credits for it. Every other partly
    /// filled buffer is sent first: credits held by unsent buffers would
    /// never come back to this wait.
    #[cold]
    fn reserve(&mut self, t: usize, len: usize, rec: &weir_format::RecordRef<'_>) -> Result<(), EmitError> {
        for other in (0..self.writers.len()).filter(|&o| o != t) {
            self.send_writer(other)?;
        }
        let (buf, _) = self.writers[t].as_mut().expect("writable");
        let target = &self.targets[t];
        self.pool.reserve(buf, len, || target.is_disconnected()).map_err(|e| match e {
            ReserveError::Gone => EmitError::Disconnected,
            ReserveError::TooLarge { bytes, max } => EmitError::RecordTooLarge {
                bytes,
                max,
                record: format!("key {}, value {}", rec.key.map_or_else(|| "none".to_owned(), |k| weir_format::Preview(k).to_string()), weir_format::Preview(rec.value)),
            },
        })
    }

    /// Appends whole frames to target `t`'s buffer, splitting at record
    /// boundaries so that no buffer grows past the buffer size, but for a
    /// single record larger than it.
    fn append(&mut self, t: usize, batch: &[u8], records: usize) -> Result<(), EmitError> {
        let mut rest = batch;
        let mut rest_records = records;
        while !rest.is_empty() {
            self.writable(t)?;
            let (used, empty) = self.writers[t].as_ref().map(|(b, _)| (b.len(), b.is_empty())).expect("writable");
            let room = self.sizes[t].saturating_sub(used);
            let (cut, n) = if rest.len() <= room || (empty && room == 0) {
                (rest.len(), rest_records)
            } else {
                // Take as many whole frames as fit; a frame larger than a
                // whole buffer goes alone into an empty one, grown for it.
                let mut cut = 0;
                let mut n = 0;
                for r in Frames::new(rest) {
                    let r = r.expect("operators produce well-formed batches");
                    let len = r.encoded_len();
                    if cut + len > room {
                        if cut == 0 && empty {
                            self.reserve(t, len, &r)?;
                            cut = len;
                            n = 1;
                        }
                        break;
                    }
                    cut += len;
                    n += 1;
                }
                (cut, n)
            };
            let (buf, count) = self.writers[t].as_mut().expect("writable");
            buf.data_mut().extend_from_slice(&rest[..cut]);
            *count += n as u32;
            rest = &rest[cut..];
            rest_records -= n;
            if buf.len() >= self.sizes[t] || !rest.is_empty() {
                self.send_writer(t)?;
            }
        }
        Ok(())
    }

    fn send_writer(&mut self, t: usize) -> Result<(), Disconnected> {
        let Some((buf, records)) = self.writers[t].take() else { return Ok(()) };
        if records == 0 {
            return Ok(());
        }
        self.targets[t].send(Message::Data { buf, records })
    }

    /// Sends every partly filled buffer.
    pub fn flush(&mut self) -> Result<(), Disconnected> {
        for t in 0..self.writers.len() {
            self.send_writer(t)?;
        }
        self.oldest = None;
        Ok(())
    }

    /// True when a partly filled buffer has waited past the buffer timeout.
    pub fn flush_due(&self) -> bool {
        self.oldest.is_some_and(|t| t.elapsed() >= self.config.timeout)
    }

    /// When the oldest buffered record must be sent at the latest.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.config.timeout)
    }

    /// Flushes, then sends a signal to every target.
    pub fn signal(&mut self, make: impl Fn() -> Message) -> Result<(), Disconnected> {
        self.flush()?;
        for t in &self.targets {
            t.send(make())?;
        }
        Ok(())
    }

    /// Sends partly filled buffers because the producer's input went idle,
    /// if configured to (`flush-on-idle`).
    pub fn flush_idle(&mut self) -> Result<(), Disconnected> {
        if self.config.flush_on_idle { self.flush() } else { Ok(()) }
    }

    /// The pool this partitioner draws from.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(keys: &[&str]) -> (Vec<u8>, usize) {
        let mut w = BatchWriter::new();
        for k in keys {
            w.push(Some(k.as_bytes()), k.as_bytes(), 0, &[]);
        }
        let n = w.records();
        (w.finish(), n)
    }

    fn drain(gate: &InputGate) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = gate.try_recv() {
            if let Message::Data { buf, .. } = e.msg {
                out.extend(Frames::new(&buf).map(|r| String::from_utf8(r.unwrap().value.to_vec()).unwrap()));
            }
        }
        out
    }

    fn pool(targets: usize, buffers: usize, size: usize) -> BufferPool {
        BufferPool::new(PoolConfig { buffers, buffer_size: size, exclusive: 1, overdraft: 0 }, targets, Vec::new()).unwrap()
    }

    #[test]
    fn hash_sends_each_key_to_one_owner() {
        let gates: Vec<_> = (0..3).map(|_| gate(1)).collect();
        let targets = gates.iter().map(|(s, _)| s.channel(0)).collect();
        let mut p = Partitioner::new("op", Partitioning::Hash { max_parallelism: 128 }, targets, BufferConfig::default(), pool(3, 64, 32 << 10));
        let keys: Vec<String> = (0..300).map(|i| format!("k{}", i % 50)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (b, n) = batch(&refs);
        p.emit(&b, n).unwrap();
        p.flush().unwrap();
        let mut seen = std::collections::HashMap::new();
        let mut total = 0;
        for (i, (_, g)) in gates.iter().enumerate() {
            for k in drain(g) {
                total += 1;
                assert_eq!(*seen.entry(k.clone()).or_insert(i), i, "key {k} reached two subtasks");
                let kg = keygroup::of(k.as_bytes(), 128);
                assert_eq!(keygroup::subtask(kg, 128, 3) as usize, i);
            }
        }
        assert_eq!(total, 300);
    }

    #[test]
    fn buffers_are_sent_when_full_and_on_flush_and_split_at_records() {
        let (s, g) = gate(1);
        let cfg = BufferConfig { size: 1024, timeout: Duration::from_secs(3600), flush_on_idle: true };
        let mut p = Partitioner::new("op", Partitioning::Forward, vec![s.channel(0)], cfg, pool(1, 64, 1024));
        let (b, n) = batch(&["a"; 10]);
        p.emit(&b, n).unwrap();
        assert_eq!(g.queued(), 0, "a small batch waits for more");
        let (big, bn) = batch(&["a"; 1000]);
        p.emit(&big, bn).unwrap();
        assert!(g.queued() > 0, "full buffers are sent");
        p.flush().unwrap();
        let mut total = 0;
        while let Some(e) = g.try_recv() {
            if let Message::Data { buf, records } = e.msg {
                assert!(buf.len() <= 1024, "buffer of {} bytes", buf.len());
                assert_eq!(weir_format::count(&buf).unwrap(), records as usize);
                total += records;
            }
        }
        assert_eq!(total, 1010);
    }

    #[test]
    fn an_exhausted_pool_blocks_the_producer_and_counts_backpressure() {
        let (s, g) = gate(1);
        let clock = Arc::new(WaitClock::default());
        let pool = BufferPool::new(PoolConfig { buffers: 2, buffer_size: 64, exclusive: 1, overdraft: 0 }, 1, vec![clock.clone()]).unwrap();
        let cfg = BufferConfig { size: 64, timeout: Duration::ZERO, flush_on_idle: true };
        let mut p = Partitioner::new("op", Partitioning::Forward, vec![s.channel(0)], cfg, pool);
        let (b, n) = batch(&["x"]);
        p.emit(&b, n).unwrap();
        p.emit(&b, n).unwrap();
        // Both buffers are in the gate, unprocessed: the next emit waits until one is consumed.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let first = g.try_recv().unwrap();
            drop(first);
            g
        });
        p.emit(&b, n).unwrap();
        assert!(clock.total_ns() >= 50_000_000, "waited {} ns", clock.total_ns());
        let g = t.join().unwrap();
        drop(g);
        assert_eq!(p.emit(&b, n).and_then(|()| Ok(p.flush()?)), Err(EmitError::Disconnected));
    }

    /// Issue 17, debloating: before its first measurement a debloated gate
    /// lets each channel hold two small buffers, not the pool's share.
    #[test]
    fn a_debloated_gate_starts_with_two_small_buffers_per_channel() {
        let (s, g) = debloated_gate(1, Duration::from_secs(1));
        let cfg = BufferConfig { size: 32 << 10, timeout: Duration::from_secs(3600), flush_on_idle: true };
        let pool = pool(1, 64, 32 << 10);
        let mut p = Partitioner::new("op", Partitioning::Forward, vec![s.channel(0)], cfg, pool.clone());
        let (b, n) = batch(&["0123456789012345678901234567890123456789"; 16]);
        assert!(b.len() > debloat::MIN_BUFFER && b.len() < 2 * debloat::MIN_BUFFER, "{} bytes", b.len());
        p.emit(&b, n).unwrap();
        assert_eq!(g.queued(), 1, "a small buffer was sent once full");
        assert_eq!(pool.in_use(), 2, "and the rest waits in a second one");
        let Message::Data { buf, .. } = g.try_recv().unwrap().msg else { panic!("data") };
        assert!(buf.len() <= debloat::MIN_BUFFER, "{} bytes", buf.len());
        assert_eq!(g.allowance().gate_bytes(), Some(0));
    }

    /// Issue 16: records larger than a buffer travel alone in a buffer that
    /// holds credits for their bytes, by every partitioning; one larger than
    /// a channel may hold is refused, naming the record.
    #[test]
    fn a_record_larger_than_a_buffer_travels_alone_with_credits_for_its_bytes() {
        for strategy in [Partitioning::Forward, Partitioning::Hash { max_parallelism: 128 }] {
            let (s, g) = gate(1);
            let cfg = BufferConfig { size: 64, timeout: Duration::from_secs(3600), flush_on_idle: true };
            let pool = BufferPool::new(PoolConfig { buffers: 8, buffer_size: 64, exclusive: 1, overdraft: 0 }, 1, Vec::new()).unwrap();
            let mut p = Partitioner::new("op", strategy, vec![s.channel(0)], cfg, pool.clone());
            let mut w = BatchWriter::new();
            w.push(Some(b"a"), b"small", 0, &[]);
            w.push(Some(b"a"), &[b'x'; 200], 0, &[]);
            w.push(Some(b"a"), b"small", 0, &[]);
            p.emit(&w.finish(), 3).unwrap();
            // The first small record was sent ahead; the large one is alone.
            let first = g.try_recv().unwrap();
            let Message::Data { buf, records } = first.msg else { panic!("data") };
            assert_eq!(records, 1);
            drop(buf);
            let Message::Data { buf, records } = g.try_recv().unwrap().msg else { panic!("data") };
            assert_eq!(records, 1);
            assert!(buf.len() > 200);
            // 4 credits of 64 bytes for the large buffer, 1 for the small one being filled.
            assert_eq!(pool.in_use(), 5, "{strategy:?}");
            drop(buf);
            assert_eq!(pool.in_use(), 1);
            let mut w = BatchWriter::new();
            w.push(Some(b"k"), &[b'y'; 600], 0, &[]);
            let err = p.emit(&w.finish(), 1).unwrap_err();
            assert!(
                matches!(&err, EmitError::RecordTooLarge { max: 512, record, .. } if record.contains("key \"k\"")),
                "{strategy:?}: {err}"
            );
            assert!(err.to_string().contains("raise network.memory"), "{err}");
        }
    }
}
