//! How batches move between tasks.
//!
//! Records travel in *buffers* of weir's frame format, never one by one: a
//! producer appends records to a per-target buffer and sends the buffer when
//! it is full (`buffer-size`, default 32 KiB), when the producer's input
//! goes idle, or when the oldest record in it has waited `buffer-timeout`.
//! A channel holds a bounded number of buffers; a producer that finds it
//! full blocks, and that blocked time is what the task reports as
//! *backpressured*. Memory in flight is therefore bounded by
//! `channel capacity x buffer size` per channel, whatever the load.
//!
//! Signals travel in-band on the same channels as data ([`Message`]):
//! watermarks and end-of-input, so a receiver sees them in order with the
//! records around them.
//!
//! Every upstream subtask of a receiver writes to one channel (the
//! receiver's *input gate*); each message carries the index of the upstream
//! channel it came from, so a receiver can track per-input watermarks and
//! end-of-input.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_format::{keygroup, BatchWriter, Frames};

/// What flows on a channel.
#[derive(Debug)]
pub enum Message {
    /// A buffer of `records` records in frame format.
    Data {
        /// The frames.
        buf: Vec<u8>,
        /// How many records it holds.
        records: u32,
    },
    /// No record with an earlier event time will follow on this channel.
    Watermark(i64),
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

/// Creates an input gate for `channels` upstream channels holding at most
/// `capacity` buffers, and the sender each upstream subtask clones.
pub fn gate(channels: u32, capacity: usize) -> (GateSender, InputGate) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    (GateSender { tx }, InputGate { rx, channels })
}

/// Cloneable sending side of an input gate.
#[derive(Debug, Clone)]
pub struct GateSender {
    tx: Sender<Envelope>,
}

impl GateSender {
    /// The sender for upstream channel `channel`.
    pub fn channel(&self, channel: u32) -> OutputChannel {
        OutputChannel { tx: self.tx.clone(), channel }
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
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Received::Message(e),
            Err(RecvTimeoutError::Timeout) => Received::Timeout,
            Err(RecvTimeoutError::Disconnected) => Received::Disconnected,
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<Envelope> {
        self.rx.try_recv().ok()
    }

    /// Buffers waiting in the gate.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Capacity of the gate in buffers.
    pub fn capacity(&self) -> usize {
        self.rx.capacity().unwrap_or(0)
    }
}

/// Time a task spent blocked on full downstream channels, in nanoseconds.
#[derive(Debug, Default)]
pub struct BackpressureClock {
    /// Total blocked time.
    pub blocked_ns: AtomicU64,
}

/// The sending side of one upstream channel.
#[derive(Debug, Clone)]
pub struct OutputChannel {
    tx: Sender<Envelope>,
    channel: u32,
}

impl OutputChannel {
    /// Sends a message, blocking while the channel is full; the blocked time
    /// is added to `clock`.
    pub fn send(&self, msg: Message, clock: &BackpressureClock) -> Result<(), Disconnected> {
        let env = Envelope { channel: self.channel, msg };
        match self.tx.try_send(env) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(Disconnected),
            Err(TrySendError::Full(env)) => {
                let start = Instant::now();
                let r = self.tx.send(env).map_err(|_| Disconnected);
                clock.blocked_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                r
            }
        }
    }

    /// Buffers queued in the receiving gate (shared by all its senders).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

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
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { size: 32 * 1024, timeout: Duration::from_millis(100) }
    }
}

/// Splits a task's output batches over the subtasks of one downstream operator.
#[derive(Debug)]
pub struct Partitioner {
    strategy: Partitioning,
    targets: Vec<OutputChannel>,
    writers: Vec<BatchWriter>,
    oldest: Option<Instant>,
    config: BufferConfig,
    next: usize,
    clock: Arc<BackpressureClock>,
    /// Records sent, for metrics.
    pub records_out: u64,
    /// Bytes sent, for metrics.
    pub bytes_out: u64,
}

impl Partitioner {
    /// A partitioner over `targets` (index = downstream subtask).
    pub fn new(strategy: Partitioning, targets: Vec<OutputChannel>, config: BufferConfig, clock: Arc<BackpressureClock>) -> Self {
        let writers = targets.iter().map(|_| BatchWriter::with_capacity(config.size + config.size / 4)).collect();
        Self { strategy, targets, writers, oldest: None, config, next: 0, clock, records_out: 0, bytes_out: 0 }
    }

    /// Routes one batch of `records` records.
    pub fn emit(&mut self, batch: &[u8], records: usize) -> Result<(), Disconnected> {
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
                    self.writers[t].push_record(&rec);
                    if self.writers[t].len() >= self.config.size {
                        self.send_writer(t)?;
                    }
                }
            }
        }
        if !self.config.timeout.is_zero() {
            if self.oldest.is_some_and(|t| t.elapsed() >= self.config.timeout) {
                self.flush()?;
            }
        } else {
            self.flush()?;
        }
        Ok(())
    }

    fn append(&mut self, t: usize, batch: &[u8], records: usize) -> Result<(), Disconnected> {
        self.writers[t].extend_raw(batch, records);
        if self.writers[t].len() >= self.config.size {
            self.send_writer(t)?;
        }
        Ok(())
    }

    fn send_writer(&mut self, t: usize) -> Result<(), Disconnected> {
        let records = self.writers[t].records() as u32;
        if records == 0 {
            return Ok(());
        }
        let cap = self.config.size + self.config.size / 4;
        let buf = std::mem::replace(&mut self.writers[t], BatchWriter::with_capacity(cap)).finish();
        self.records_out += u64::from(records);
        self.bytes_out += buf.len() as u64;
        self.targets[t].send(Message::Data { buf, records }, &self.clock)
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
            t.send(make(), &self.clock)?;
        }
        Ok(())
    }

    /// Fraction of the downstream gates' capacity in use (0..=1), averaged.
    pub fn queued(&self) -> usize {
        self.targets.iter().map(OutputChannel::queued).sum()
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

    #[test]
    fn hash_sends_each_key_to_one_owner() {
        let gates: Vec<_> = (0..3).map(|_| gate(1, 64)).collect();
        let targets = gates.iter().map(|(s, _)| s.channel(0)).collect();
        let clock = Arc::new(BackpressureClock::default());
        let mut p = Partitioner::new(Partitioning::Hash { max_parallelism: 128 }, targets, BufferConfig::default(), clock);
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
    fn buffers_are_sent_when_full_and_on_flush() {
        let (s, g) = gate(1, 1024);
        let clock = Arc::new(BackpressureClock::default());
        let cfg = BufferConfig { size: 1024, timeout: Duration::from_secs(3600) };
        let mut p = Partitioner::new(Partitioning::Forward, vec![s.channel(0)], cfg, clock);
        let (b, n) = batch(&["a"; 10]);
        p.emit(&b, n).unwrap();
        assert_eq!(g.queued(), 0, "a small batch waits for more");
        for _ in 0..100 {
            p.emit(&b, n).unwrap();
        }
        assert!(g.queued() > 0, "full buffers are sent");
        p.flush().unwrap();
        assert_eq!(drain(&g).len(), 1010);
    }

    #[test]
    fn a_full_channel_blocks_and_counts_backpressure() {
        let (s, g) = gate(1, 1);
        let clock = Arc::new(BackpressureClock::default());
        let ch = s.channel(0);
        ch.send(Message::Watermark(1), &clock).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            g.try_recv();
            g
        });
        ch.send(Message::Watermark(2), &clock).unwrap();
        assert!(clock.blocked_ns.load(Ordering::Relaxed) >= 30_000_000);
        drop(t.join());
        assert_eq!(ch.send(Message::EndOfInput, &clock), Err(Disconnected));
    }
}
