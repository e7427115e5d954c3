//! A deterministic, fast record generator: the source behind weir's
//! examples, tests and benchmarks.
//!
//! # Configuration
//!
//! In a pipeline file a generator is a source table with
//! `type = "generator"` (the `type` key belongs to the pipeline crate; every
//! other key is a field of [`GeneratorConfig`]):
//!
//! ```toml
//! [sources.clicks]
//! type = "generator"
//! count = 10_000_000        # total records over all subtasks; omit for an endless stream
//! rate = 50_000.0           # records per second over all subtasks; omit for "as fast as possible"
//! schema = "events"         # "events" (default), "sequence", "words" or "nexmark"
//! seed = 0                  # changes the user ids of "events" and the sentences of "words"
//! start-timestamp = 1_700_000_000_000   # event time of record 0, in ms since the Unix epoch
//! # event-rate = 1000.0     # records per second of event time (timestamps 1 ms apart by default)
//! # value-size = 100        # "sequence" only: pad each value with '.' to this many bytes
//! ```
//!
//! | key               | type    | default             | meaning |
//! |-------------------|---------|---------------------|---------|
//! | `count`           | integer | unbounded           | records in total, over all subtasks (`0` produces nothing) |
//! | `rate`            | float   | unlimited           | records per second, over all subtasks |
//! | `schema`          | string  | `"events"`          | what each value looks like, see below |
//! | `seed`            | integer | `0`                 | varies `events` users and `words` sentences |
//! | `start-timestamp` | integer | `1_700_000_000_000` | timestamp of sequence number 0 (`nexmark`: 2015-07-15T00:00:00Z) |
//! | `event-rate`      | float   | `1000` (`nexmark`: `10000`) | records per second of event time |
//! | `value-size`      | integer | none                | `sequence` only: pad values to this many bytes |
//! | `users`           | integer | `10_000`            | `events` only: distinct users (`(N * 7919 + seed) mod users`, at least 4 digits) |
//!
//! # What is generated
//!
//! Every record has a *sequence number* `N` and the timestamp
//! `start-timestamp + N * 1000 / event-rate` (in ms, rounded down: `N` ms
//! by default); no record has a key. Subtask `s` of a source with
//! parallelism `p` produces `N = s, s + p, s + 2p, …` while `N < count`, so
//! the subtasks together produce every `N` in `0..count` exactly once, and the
//! record for a given `N` is the same whatever the parallelism. That is what
//! makes the generator useful for checking a pipeline's output against an
//! uninterrupted run.
//!
//! * `events`: `{"id":N,"user":"user-UUUU","amount":A,"ts":T,"pad":"xxxxxxxxxxxx"}`
//!   where `UUUU` is `(N * 7919 + seed) mod 10000` zero-padded to four
//!   digits, `A = N mod 100` and `T` is the record's timestamp. About 80 to
//!   90 bytes, 10 000 distinct users.
//! * `sequence`: `N` in decimal ASCII, followed by `.` characters up to
//!   `value-size` bytes when that is set.
//! * `words`: a sentence of 3 to 12 words from a fixed 50-word vocabulary,
//!   chosen by a SplitMix64 generator seeded from `(seed, N)`.
//! * `nexmark`: event `N` of the Nexmark benchmark (a person, an auction or
//!   a bid, as JSON), the same events as the reference generator; see
//!   [`nexmark`].
//!
//! # Rate limiting
//!
//! With `rate` set, each subtask aims for `rate / p` records per second,
//! counted from its first poll (and again from the first poll after a
//! restore). When it is ahead of schedule, [`Source::poll`] writes nothing and
//! returns [`Poll::Idle`] with the time until the next record is due (at most
//! 50 ms); otherwise it writes every record that is due, up to the batch size.
//!
//! # Checkpoints
//!
//! A subtask's position is its next sequence number and the parallelism,
//! two little-endian `u64`s. A restored source continues with exactly the
//! records it would have produced. A restore may change the parallelism:
//! each new subtask starts from the smallest position of the old run and
//! skips the numbers some old subtask had already produced (the old
//! positions travel on in its own position until it is past them), so every
//! sequence number is produced exactly once over any number of rescalings.
//!
//! # Performance
//!
//! Values are written straight into the batch buffer
//! ([`BatchWriter::push_with`]) with hand-written integer formatting: no
//! allocation and no `format!` per record. Measured with
//! `cargo test --release -p weir-connector-generator -- --ignored --nocapture throughput`
//! on one core of the development machine (2-core AMD EPYC VM), 10 million
//! records in release mode ran at about 31 to 37 million records per second
//! for `events` (3.2 to 3.9 GB/s of frames), 70 to 100 million for
//! `sequence` and 13 to 14 million for `words`; the dev profile
//! (`opt-level = 1`) still makes about 8 million `events` per second.
//!
//! ```
//! use weir_connector::{ConnectorContext, Frames, BatchWriter, Poll, Source};
//! use weir_connector_generator::{GeneratorConfig, GeneratorSource, Schema};
//!
//! let config = GeneratorConfig { count: Some(3), schema: Schema::Sequence, ..GeneratorConfig::default() };
//! assert!(config.validate().is_empty());
//! let ctx = ConnectorContext::new("p", "numbers", 0, 1);
//! let mut source = GeneratorSource::new(config, &ctx);
//! let mut out = BatchWriter::new();
//! assert_eq!(source.poll(&mut out, 1 << 16).unwrap(), Poll::Ready);
//! assert_eq!(source.poll(&mut out, 1 << 16).unwrap(), Poll::Finished);
//! let bytes = out.finish();
//! let values: Vec<&[u8]> = Frames::new(&bytes).map(|r| r.unwrap().value).collect();
//! assert_eq!(values, [&b"0"[..], b"1", b"2"]);
//! ```

use std::time::{Duration, Instant};

use serde::Deserialize;
use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Poll, Source};

pub mod nexmark;

/// Largest `value-size` accepted (64 MiB): a record value must fit in one frame.
pub const MAX_VALUE_SIZE: usize = 64 << 20;

/// Longest [`Poll::Idle`] the rate limiter asks for, so the task stays
/// responsive to barriers and shutdown.
pub const MAX_IDLE: Duration = Duration::from_millis(50);

/// Default `start-timestamp`: 2023-11-14T22:13:20Z in ms since the Unix epoch.
pub const DEFAULT_START_TIMESTAMP: i64 = 1_700_000_000_000;

/// What the generated values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schema {
    /// Small JSON click events with a user id and an amount.
    #[default]
    Events,
    /// The sequence number in decimal, optionally padded to `value-size`.
    Sequence,
    /// Sentences of 3 to 12 common English words.
    Words,
    /// The Nexmark benchmark's persons, auctions and bids (see [`nexmark`]).
    Nexmark,
}

impl Schema {
    fn name(self) -> &'static str {
        match self {
            Schema::Events => "events",
            Schema::Sequence => "sequence",
            Schema::Words => "words",
            Schema::Nexmark => "nexmark",
        }
    }
}

/// Configuration of a generator source (every key of its pipeline table but
/// `type`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GeneratorConfig {
    /// Records in total over all subtasks; `None` never finishes.
    pub count: Option<u64>,
    /// Records per second over all subtasks; `None` is as fast as possible.
    pub rate: Option<f64>,
    /// What the values look like.
    pub schema: Schema,
    /// Varies the `events` user ids and the `words` sentences.
    pub seed: u64,
    /// Timestamp of sequence number 0, in ms since the Unix epoch;
    /// [`DEFAULT_START_TIMESTAMP`] when unset ([`nexmark::BASE_TIME_MS`]
    /// for `nexmark`).
    pub start_timestamp: Option<i64>,
    /// Records per second of *event time*: how far apart the timestamps of
    /// consecutive sequence numbers are. 1000 when unset (one record per
    /// ms); [`nexmark::DEFAULT_EVENT_RATE`] for `nexmark`. Independent of
    /// `rate`, which paces the wall clock.
    pub event_rate: Option<f64>,
    /// `sequence` only: pad each value with `.` up to this many bytes.
    pub value_size: Option<usize>,
    /// Stamp each record with the wall-clock time it was generated (header
    /// `weir-emitted-us`, microseconds), so sinks measure end-to-end latency.
    pub mark_latency: bool,
    /// `events` only: number of distinct users.
    pub users: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            count: None,
            rate: None,
            schema: Schema::Events,
            seed: 0,
            start_timestamp: None,
            event_rate: None,
            value_size: None,
            mark_latency: false,
            users: DEFAULT_USERS,
        }
    }
}

/// Default number of distinct `events` users.
pub const DEFAULT_USERS: u64 = 10_000;

impl GeneratorConfig {
    /// Checks the config without doing any I/O and returns every problem as
    /// `(field, message)`, with the field spelt as in the pipeline file. An
    /// empty list means the config is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            problems.push((
                "rate".to_owned(),
                format!("must be a positive number of records per second, got {rate}; remove it to generate as fast as possible"),
            ));
        }
        if let Some(rate) = self.event_rate
            && !(rate.is_finite() && (0.001..=1e9).contains(&rate))
        {
            problems.push((
                "event-rate".to_owned(),
                format!("must be between 0.001 and 10^9 records per second of event time, got {rate}"),
            ));
        }
        if self.users == 0 || self.users > 1_000_000_000_000 {
            problems.push(("users".to_owned(), format!("must be between 1 and 10^12, got {}", self.users)));
        } else if self.users != DEFAULT_USERS && self.schema != Schema::Events {
            problems.push((
                "users".to_owned(),
                format!("only applies to schema = \"events\", but the schema is \"{}\"", self.schema.name()),
            ));
        }
        if let Some(size) = self.value_size {
            if self.schema != Schema::Sequence {
                problems.push((
                    "value-size".to_owned(),
                    format!(
                        "only applies to schema = \"sequence\", but the schema is \"{}\"; remove value-size or set schema = \"sequence\"",
                        self.schema.name()
                    ),
                ));
            }
            if size > MAX_VALUE_SIZE {
                problems.push((
                    "value-size".to_owned(),
                    format!("{size} bytes is more than the maximum of {MAX_VALUE_SIZE} (64 MiB)"),
                ));
            }
        }
        problems
    }
}

/// One subtask of a generator source.
///
/// Build it from a config that passed [`GeneratorConfig::validate`]; a
/// `rate` that is not a positive finite number is treated as no limit.
#[derive(Debug)]
pub struct GeneratorSource {
    schema: Schema,
    seed: u64,
    start_timestamp: i64,
    /// Nanoseconds of event time between consecutive sequence numbers.
    ns_per_record: u64,
    value_size: usize,
    /// One past the last sequence number (`u64::MAX` when unbounded).
    limit: u64,
    /// The next sequence number this subtask produces.
    next: u64,
    /// Distance between this subtask's sequence numbers (the parallelism).
    step: u64,
    /// Sequence numbers already produced before a restore that changed the
    /// parallelism (see [`Done`]); empty in a run that never rescaled.
    done: Vec<Done>,
    pacing: Option<Pacing>,
    mark_latency: bool,
    users: u64,
    scratch: Vec<u8>,
}

/// The sequence numbers produced by a run at another parallelism, as its
/// subtasks' positions: at parallelism `p`, the subtask producing the
/// numbers `≡ r (mod p)` had reached `next[r]`, so `n` was produced when
/// `n < next[n mod p]`. Every such record stays true for the rest of the
/// pipeline's life; it can be forgotten once the subtask is past `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Done {
    next: Vec<u64>,
    until: u64,
}

impl Done {
    fn new(next: Vec<u64>) -> Self {
        let until = next.iter().copied().max().unwrap_or(0);
        Self { next, until }
    }
}

/// Rate-limiter state of one subtask.
#[derive(Debug)]
struct Pacing {
    /// Records per second for this subtask.
    per_second: f64,
    /// When pacing started (the first poll), and records produced since.
    started: Option<(Instant, u64)>,
}

impl Pacing {
    /// How many more records may be written at `now`, or how long to wait.
    fn allowance(&mut self, now: Instant) -> Result<u64, Duration> {
        let (start, emitted) = *self.started.get_or_insert((now, 0));
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        // Record k (from 0) is due at k / per_second seconds.
        let due = (elapsed * self.per_second).floor() + 1.0;
        let due = if due >= u64::MAX as f64 { u64::MAX } else { due as u64 };
        if due > emitted {
            Ok(due - emitted)
        } else {
            let next_due = emitted as f64 / self.per_second;
            Err(Duration::from_secs_f64((next_due - elapsed).max(0.0)).min(MAX_IDLE))
        }
    }

    fn produced(&mut self, records: u64) {
        if let Some((_, emitted)) = &mut self.started {
            *emitted += records;
        }
    }
}

impl GeneratorSource {
    /// The subtask `ctx.subtask` of `ctx.parallelism` (a parallelism of 0 is
    /// taken as 1).
    pub fn new(config: GeneratorConfig, ctx: &ConnectorContext) -> GeneratorSource {
        let parallelism = ctx.parallelism.max(1);
        let pacing = config
            .rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|rate| Pacing { per_second: rate / f64::from(parallelism), started: None });
        let (default_start, default_rate) = match config.schema {
            Schema::Nexmark => (nexmark::BASE_TIME_MS, nexmark::DEFAULT_EVENT_RATE),
            _ => (DEFAULT_START_TIMESTAMP, 1000.0),
        };
        let event_rate = config.event_rate.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(default_rate);
        GeneratorSource {
            schema: config.schema,
            seed: config.seed,
            start_timestamp: config.start_timestamp.unwrap_or(default_start),
            ns_per_record: (1e9 / event_rate).round().max(1.0) as u64,
            value_size: if config.schema == Schema::Sequence { config.value_size.unwrap_or(0) } else { 0 },
            limit: config.count.unwrap_or(u64::MAX),
            next: u64::from(ctx.subtask),
            step: u64::from(parallelism),
            done: Vec::new(),
            pacing,
            mark_latency: config.mark_latency,
            users: config.users.max(1),
            scratch: Vec::new(),
        }
    }

    /// The next sequence number this subtask will produce.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The timestamp of sequence number `n`.
    #[inline(always)]
    fn timestamp(&self, n: u64) -> i64 {
        if self.ns_per_record == 1_000_000 {
            self.start_timestamp.saturating_add_unsigned(n)
        } else {
            self.timeline().at(n)
        }
    }

    fn timeline(&self) -> nexmark::Timeline {
        nexmark::Timeline { start: self.start_timestamp, ns_per_event: self.ns_per_record }
    }

    /// True when `n` was produced before a rescaling restore. Drops the
    /// records of [`Done`] that no number from `n` on can match.
    #[cold]
    fn is_done(&mut self, n: u64) -> bool {
        self.done.retain(|d| d.until > n);
        self.done.iter().any(|d| n < d.next[(n % d.next.len() as u64) as usize])
    }

    /// Writes up to `max` records (at least one, if any are left) until `out`
    /// holds `target_bytes`; returns how many were written.
    #[inline(always)]
    fn fill(
        &mut self,
        out: &mut BatchWriter,
        target_bytes: usize,
        max: u64,
        write: impl Fn(&mut Vec<u8>, u64, i64),
    ) -> u64 {
        let mut n = self.next;
        let mut written = 0;
        while n < self.limit && written < max {
            if !self.done.is_empty() && self.is_done(n) {
                n = n.saturating_add(self.step);
                continue;
            }
            let ts = self.timestamp(n);
            if self.mark_latency {
                self.scratch.clear();
                write(&mut self.scratch, n, ts);
                let now = weir_connector::now_micros().to_le_bytes();
                out.push(None, &self.scratch, ts, &[(weir_connector::EMITTED_AT_HEADER, &now)]);
            } else {
                out.push_with(None, ts, |v| write(v, n, ts));
            }
            n = n.saturating_add(self.step);
            written += 1;
            if out.len() >= target_bytes {
                break;
            }
        }
        self.next = n;
        written
    }
}

impl Source for GeneratorSource {
    /// Timestamps grow with the sequence number, so everything before the
    /// next record's timestamp is complete.
    fn watermark(&self) -> Option<i64> {
        // The last record this subtask emitted is the one before `next`.
        (self.next >= self.step).then(|| self.timestamp(self.next - self.step))
    }

    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError> {
        if self.next >= self.limit {
            return Ok(Poll::Finished);
        }
        let max = match &mut self.pacing {
            None => u64::MAX,
            Some(pacing) => match pacing.allowance(Instant::now()) {
                Ok(n) => n,
                Err(wait) => return Ok(Poll::Idle(wait)),
            },
        };
        let seed = self.seed;
        let written = match self.schema {
            Schema::Events if self.users == DEFAULT_USERS => self.fill(out, target_bytes, max, |v, n, ts| write_event(v, n, ts, seed)),
            Schema::Events => {
                let users = self.users;
                let width = (users - 1).max(1).ilog10() as usize + 1;
                self.fill(out, target_bytes, max, |v, n, ts| write_event_with_users(v, n, ts, seed, users, width.max(4)))
            }
            Schema::Sequence => {
                let size = self.value_size;
                self.fill(out, target_bytes, max, |v, n, _| write_sequence(v, n, size))
            }
            Schema::Words => self.fill(out, target_bytes, max, |v, n, _| write_words(v, n, seed)),
            Schema::Nexmark => {
                let timeline = self.timeline();
                self.fill(out, target_bytes, max, |v, n, _| {
                    nexmark::write_json(v, n, &timeline);
                })
            }
        };
        if let Some(pacing) = &mut self.pacing {
            pacing.produced(written);
        }
        Ok(Poll::Ready)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        let mut position = Vec::with_capacity(16);
        position.extend_from_slice(&self.next.to_le_bytes());
        position.extend_from_slice(&self.step.to_le_bytes());
        for d in self.done.iter().filter(|d| d.until > self.next) {
            position.extend_from_slice(&(d.next.len() as u64).to_le_bytes());
            for n in &d.next {
                position.extend_from_slice(&n.to_le_bytes());
            }
        }
        Ok(position)
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        let mut words = Vec::new();
        let mut next_by_residue = vec![None; positions.len()];
        for (i, position) in positions.iter().enumerate() {
            let bad = |why: &str| {
                ConnectorError::user(format!(
                    "generator position {i} of {} in the checkpoint is malformed ({why}; {} bytes); \
                     the checkpoint was not taken from a generator source: restore from a checkpoint of this pipeline or start with --fresh",
                    positions.len(),
                    position.len()
                ))
            };
            if position.len() < 16 || position.len() % 8 != 0 {
                return Err(bad("not a whole number of 8-byte words, at least 2"));
            }
            words.clear();
            words.extend(position.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))));
            let (next, step) = (words[0], words[1]);
            if step != positions.len() as u64 {
                return Err(bad(&format!("written at parallelism {step}, but the checkpoint has {} positions", positions.len())));
            }
            let slot = &mut next_by_residue[(next % step) as usize];
            if slot.is_some() {
                return Err(bad("two positions for the same sequence"));
            }
            *slot = Some(next);
            let mut rest = &words[2..];
            while let Some((&len, tail)) = rest.split_first() {
                let len = usize::try_from(len).ok().filter(|l| *l > 0 && *l <= tail.len()).ok_or_else(|| bad("truncated"))?;
                let d = Done::new(tail[..len].to_vec());
                if !self.done.contains(&d) {
                    self.done.push(d);
                }
                rest = &tail[len..];
            }
        }
        let next: Vec<u64> = next_by_residue.into_iter().map(|n| n.unwrap_or(0)).collect();
        // Everything below the smallest position was produced; this subtask
        // resumes at its first sequence number from there and skips what
        // another subtask of the earlier run already produced.
        let floor = next.iter().copied().min().unwrap_or(0);
        let residue = self.next % self.step;
        self.next = floor + (residue + self.step - floor % self.step) % self.step;
        if next.len() as u64 != self.step || next.iter().any(|n| n % self.step != residue || *n != self.next) {
            let d = Done::new(next);
            if !self.done.contains(&d) {
                self.done.push(d);
            }
        }
        self.done.retain(|d| d.until > self.next);
        if let Some(pacing) = &mut self.pacing {
            pacing.started = None;
        }
        Ok(())
    }

}

use weir_format::decimal::{push_i64, push_u64, DIGIT_PAIRS};

/// The `events` value for sequence number `n` with timestamp `ts`.
#[inline]
fn write_event(v: &mut Vec<u8>, n: u64, ts: i64, seed: u64) {
    // (n * 7919 + seed) mod 10000 without overflow.
    let user = ((n % 10_000) * 7919 + seed % 10_000) % 10_000;
    let hi = (user / 100) as usize * 2;
    let lo = (user % 100) as usize * 2;
    v.extend_from_slice(b"{\"id\":");
    push_u64(v, n);
    v.extend_from_slice(b",\"user\":\"user-");
    v.extend_from_slice(&[DIGIT_PAIRS[hi], DIGIT_PAIRS[hi + 1], DIGIT_PAIRS[lo], DIGIT_PAIRS[lo + 1]]);
    v.extend_from_slice(b"\",\"amount\":");
    push_u64(v, n % 100);
    v.extend_from_slice(b",\"ts\":");
    push_i64(v, ts);
    v.extend_from_slice(b",\"pad\":\"xxxxxxxxxxxx\"}");
}

/// An `events` value with `users` distinct users, written `width` digits wide.
fn write_event_with_users(v: &mut Vec<u8>, n: u64, ts: i64, seed: u64, users: u64, width: usize) {
    let user = ((u128::from(n % users) * 7919 + u128::from(seed % users)) % u128::from(users)) as u64;
    v.extend_from_slice(b"{\"id\":");
    push_u64(v, n);
    v.extend_from_slice(b",\"user\":\"user-");
    let start = v.len();
    push_u64(v, user);
    let digits = v.len() - start;
    if digits < width {
        v.splice(start..start, std::iter::repeat_n(b'0', width - digits));
    }
    v.extend_from_slice(b"\",\"amount\":");
    push_u64(v, n % 100);
    v.extend_from_slice(b",\"ts\":");
    push_i64(v, ts);
    v.extend_from_slice(b",\"pad\":\"xxxxxxxxxxxx\"}");
}

/// The `sequence` value for `n`, padded with `.` to `size` bytes.
#[inline]
fn write_sequence(v: &mut Vec<u8>, n: u64, size: usize) {
    let start = v.len();
    push_u64(v, n);
    let len = v.len() - start;
    if len < size {
        v.resize(start + size, b'.');
    }
}

/// The fixed vocabulary of the `words` schema (50 common English words).
pub const VOCABULARY: [&str; 50] = [
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with", "his",
    "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were",
    "we", "when", "your", "can", "said", "there", "use", "each", "which", "she", "do", "how", "their", "if", "will",
    "up", "other",
];

/// One SplitMix64 step.
#[inline]
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `words` value for `n`: depends only on `(seed, n)`.
#[inline]
fn write_words(v: &mut Vec<u8>, n: u64, seed: u64) {
    let mut state = seed;
    let mixed = splitmix64(&mut state) ^ n;
    let mut state = mixed;
    let words = 3 + splitmix64(&mut state) % 10;
    for i in 0..words {
        if i > 0 {
            v.push(b' ');
        }
        let word = VOCABULARY[(splitmix64(&mut state) % VOCABULARY.len() as u64) as usize];
        v.extend_from_slice(word.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mark_latency_stamps_every_record_with_its_creation_time() {
        let ctx = weir_connector::ConnectorContext::new("p", "g", 0, 1);
        let config = GeneratorConfig { count: Some(3), mark_latency: true, ..GeneratorConfig::default() };
        let mut g = GeneratorSource::new(config, &ctx);
        let mut out = BatchWriter::new();
        let before = weir_connector::now_micros();
        g.poll(&mut out, 1 << 20).unwrap();
        let bytes = out.finish();
        let recs: Vec<_> = weir_format::Frames::new(&bytes).map(Result::unwrap).collect();
        assert_eq!(recs.len(), 3);
        for r in recs {
            assert!(r.value.starts_with(b"{\"id\":"));
            let (name, value) = r.headers().next().unwrap().unwrap();
            assert_eq!(name, weir_connector::EMITTED_AT_HEADER);
            let at = u64::from_le_bytes(value.try_into().unwrap());
            assert!(at >= before && at <= weir_connector::now_micros());
        }
    }

    use std::collections::BTreeSet;

    use weir_connector::{Frames, RecordRef};

    use super::*;

    fn ctx(subtask: u32, parallelism: u32) -> ConnectorContext {
        ConnectorContext::new("test", "gen", subtask, parallelism)
    }

    /// Polls until finished; returns (timestamp, value) of every record.
    fn drain(source: &mut GeneratorSource, target_bytes: usize) -> Vec<(i64, Vec<u8>)> {
        let mut records = Vec::new();
        loop {
            let mut out = BatchWriter::new();
            let poll = source.poll(&mut out, target_bytes).unwrap();
            let bytes = out.finish();
            for r in Frames::new(&bytes) {
                let r: RecordRef<'_> = r.unwrap();
                assert_eq!(r.key, None);
                records.push((r.timestamp, r.value.to_vec()));
            }
            match poll {
                Poll::Finished => {
                    assert!(bytes.is_empty(), "Finished must not come with records");
                    return records;
                }
                Poll::Ready => assert!(!bytes.is_empty(), "Ready without records"),
                Poll::Idle(_) => panic!("unexpected Idle without a rate"),
            }
        }
    }

    fn event(n: u64, seed: u64) -> String {
        let mut v = Vec::new();
        write_event(&mut v, n, DEFAULT_START_TIMESTAMP + n as i64, seed);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn events_values_are_exact() {
        assert_eq!(event(0, 0), r#"{"id":0,"user":"user-0000","amount":0,"ts":1700000000000,"pad":"xxxxxxxxxxxx"}"#);
        assert_eq!(event(1, 0), r#"{"id":1,"user":"user-7919","amount":1,"ts":1700000000001,"pad":"xxxxxxxxxxxx"}"#);
        // 17 * 7919 = 134623
        assert_eq!(event(17, 0), r#"{"id":17,"user":"user-4623","amount":17,"ts":1700000000017,"pad":"xxxxxxxxxxxx"}"#);
        assert_eq!(
            event(10000, 0),
            r#"{"id":10000,"user":"user-0000","amount":0,"ts":1700000010000,"pad":"xxxxxxxxxxxx"}"#
        );
        // A seed shifts the user: (1 * 7919 + 2090) mod 10000 = 9
        assert!(event(1, 2090).contains(r#""user":"user-0009""#));
        // Large numbers do not overflow.
        let big = u64::MAX - 1;
        let expected_user = ((big as u128 * 7919 + 5) % 10_000) as u64;
        let mut v = Vec::new();
        write_event(&mut v, big, -12, 5);
        let v = String::from_utf8(v).unwrap();
        assert!(v.contains(&format!("\"user\":\"user-{expected_user:04}\"")), "{v}");
        assert!(v.contains(&format!("\"id\":{big},")), "{v}");
        assert!(v.contains("\"ts\":-12,"), "{v}");
    }

    #[test]
    fn events_through_the_source_are_valid_json_with_timestamps() {
        let config = GeneratorConfig { count: Some(1000), ..GeneratorConfig::default() };
        let records = drain(&mut GeneratorSource::new(config, &ctx(0, 1)), 4096);
        assert_eq!(records.len(), 1000);
        for (n, (ts, value)) in records.iter().enumerate() {
            assert_eq!(*ts, DEFAULT_START_TIMESTAMP + n as i64);
            assert_eq!(value, event(n as u64, 0).as_bytes());
            let parsed: serde_json::Value = serde_json::from_slice(value).unwrap();
            assert_eq!(parsed["id"], n);
        }
    }

    #[test]
    fn integer_formatting_matches_std() {
        let mut samples = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, u64::MAX, u64::MAX - 1];
        samples.extend((0..64).map(|b| 1u64 << b));
        samples.extend((0..64).map(|b| (1u64 << b) - 1));
        samples.extend((1..20).map(|e| 10u64.pow(e) - 1));
        for n in samples {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
        for n in [i64::MIN, -1, 0, 1, i64::MAX, -1_700_000_000_000] {
            let mut v = Vec::new();
            push_i64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }

    #[test]
    fn parallel_subtasks_partition_the_sequence() {
        for parallelism in [1u32, 2, 3, 7] {
            for count in [0u64, 1, 2, 10, 1001] {
                let mut seen = BTreeSet::new();
                for subtask in 0..parallelism {
                    let config = GeneratorConfig { count: Some(count), schema: Schema::Sequence, ..Default::default() };
                    let mut source = GeneratorSource::new(config, &ctx(subtask, parallelism));
                    for (ts, value) in drain(&mut source, 256) {
                        let n: u64 = std::str::from_utf8(&value).unwrap().parse().unwrap();
                        assert_eq!(n % u64::from(parallelism), u64::from(subtask));
                        assert_eq!(ts, DEFAULT_START_TIMESTAMP + n as i64);
                        assert!(seen.insert(n), "{n} produced twice");
                    }
                }
                assert_eq!(seen, (0..count).collect(), "parallelism {parallelism} count {count}");
            }
        }
    }

    #[test]
    fn count_is_exact_and_finished_follows_the_last_records() {
        let config = GeneratorConfig { count: Some(5), ..Default::default() };
        let mut source = GeneratorSource::new(config, &ctx(0, 1));
        let mut out = BatchWriter::new();
        assert_eq!(source.poll(&mut out, 1 << 20).unwrap(), Poll::Ready);
        assert_eq!(out.records(), 5);
        assert_eq!(source.poll(&mut out, 1 << 20).unwrap(), Poll::Finished);
        assert_eq!(out.records(), 5);
        assert_eq!(source.poll(&mut out, 1 << 20).unwrap(), Poll::Finished);

        let config = GeneratorConfig { count: Some(0), ..Default::default() };
        assert_eq!(GeneratorSource::new(config, &ctx(0, 1)).poll(&mut out, 100).unwrap(), Poll::Finished);
    }

    #[test]
    fn target_bytes_is_a_soft_limit() {
        let mut source = GeneratorSource::new(GeneratorConfig::default(), &ctx(0, 1));
        let mut out = BatchWriter::new();
        assert_eq!(source.poll(&mut out, 1).unwrap(), Poll::Ready);
        assert_eq!(out.records(), 1);
        assert_eq!(source.poll(&mut out, 10_000).unwrap(), Poll::Ready);
        assert!(out.len() >= 10_000);
        let one = out.len() / out.records();
        assert!(out.len() < 10_000 + 2 * one);
    }

    #[test]
    fn snapshot_and_restore_continue_identically() {
        for schema in [Schema::Events, Schema::Sequence, Schema::Words, Schema::Nexmark] {
            let config = GeneratorConfig { count: Some(500), schema, seed: 3, ..Default::default() };
            let full: Vec<Vec<(i64, Vec<u8>)>> = (0..3).map(|s| drain(&mut GeneratorSource::new(config.clone(), &ctx(s, 3)), 1 << 20)).collect();

            // Every subtask of a parallelism-3 source stops somewhere, the
            // checkpoint holds all three positions, and each restored
            // subtask continues exactly where it was.
            let mut positions = Vec::new();
            let mut before = Vec::new();
            for s in 0..3 {
                let mut first = GeneratorSource::new(config.clone(), &ctx(s, 3));
                let mut out = BatchWriter::new();
                first.poll(&mut out, 300 * (s as usize + 1)).unwrap();
                before.push(out.records());
                positions.push(first.snapshot().unwrap());
                assert_eq!(u64::from_le_bytes(positions[s as usize][..8].try_into().unwrap()), first.next_sequence());
            }
            let refs: Vec<&[u8]> = positions.iter().map(Vec::as_slice).collect();
            for s in 0..3 {
                let mut second = GeneratorSource::new(config.clone(), &ctx(s, 3));
                second.restore(&refs).unwrap();
                let rest = drain(&mut second, 1 << 20);
                assert_eq!(full[s as usize][before[s as usize]..], rest[..], "schema {schema:?} subtask {s}");
            }
        }
    }

    /// Sequence numbers of a drained batch (schema `sequence`).
    fn numbers(bytes: &[u8]) -> Vec<u64> {
        weir_connector::Frames::new(bytes).map(|r| std::str::from_utf8(r.unwrap().value).unwrap().parse().unwrap()).collect()
    }

    /// Runs every subtask of `parallelism` from `positions` (or fresh) for
    /// `polls` polls of `bytes` bytes; returns what they produced and their positions.
    fn run_some(config: &GeneratorConfig, parallelism: u32, positions: &[Vec<u8>], polls: usize, bytes: usize) -> (Vec<u64>, Vec<Vec<u8>>) {
        let refs: Vec<&[u8]> = positions.iter().map(Vec::as_slice).collect();
        let mut produced = Vec::new();
        let mut next = Vec::new();
        for s in 0..parallelism {
            let mut source = GeneratorSource::new(config.clone(), &ctx(s, parallelism));
            if !refs.is_empty() {
                source.restore(&refs).unwrap();
            }
            // Subtasks progress unevenly, as they do in a real run.
            for _ in 0..polls * (s as usize + 1) {
                let mut out = BatchWriter::new();
                source.poll(&mut out, bytes).unwrap();
                produced.extend(numbers(&out.finish()));
            }
            next.push(source.snapshot().unwrap());
        }
        (produced, next)
    }

    #[test]
    fn restore_at_another_parallelism_produces_each_number_once() {
        let config = GeneratorConfig { count: Some(5_000), schema: Schema::Sequence, ..Default::default() };
        let mut seen = Vec::new();
        let mut positions = Vec::new();
        // 1 -> 3 -> 2 -> 4 -> 1, stopping at uneven points each time.
        for (parallelism, polls) in [(1, 3), (3, 2), (2, 3), (4, 1), (1, usize::MAX / 8)] {
            let (produced, next) = run_some(&config, parallelism, &positions, polls.min(10_000), 64);
            seen.extend(produced);
            positions = next;
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "a number was produced twice");
        assert_eq!(sorted, (0..5_000).collect::<Vec<_>>());
    }

    #[test]
    fn restore_rejects_malformed_positions() {
        let mut source = GeneratorSource::new(GeneratorConfig::default(), &ctx(0, 1));
        for bad in [&[1u8, 2, 3][..], &[0; 9], &[0; 8], &[0; 24]] {
            let err = source.restore(&[bad]).unwrap_err();
            assert_eq!(err.kind, weir_connector::ErrorKind::User);
            assert!(err.message.contains(&format!("{} bytes", bad.len())), "{}", err.message);
        }
        // Written at parallelism 2 but only one position: not this pipeline's.
        let mut two = 0u64.to_le_bytes().to_vec();
        two.extend_from_slice(&2u64.to_le_bytes());
        let err = source.restore(&[&two]).unwrap_err();
        assert!(err.message.contains("parallelism 2"), "{}", err.message);
    }

    #[test]
    fn words_are_deterministic_across_parallelism() {
        let words = |parallelism: u32| {
            let mut all = Vec::new();
            for subtask in 0..parallelism {
                let config =
                    GeneratorConfig { count: Some(300), schema: Schema::Words, seed: 42, ..Default::default() };
                all.extend(drain(&mut GeneratorSource::new(config, &ctx(subtask, parallelism)), 512));
            }
            all.sort();
            all
        };
        let single = words(1);
        assert_eq!(single, words(4));
        for (_, value) in &single {
            let sentence = std::str::from_utf8(value).unwrap();
            let n = sentence.split(' ').count();
            assert!((3..=12).contains(&n), "{sentence}");
            assert!(sentence.split(' ').all(|w| VOCABULARY.contains(&w)), "{sentence}");
        }
        // Sentences vary between records and with the seed.
        let distinct: BTreeSet<_> = single.iter().map(|(_, v)| v).collect();
        assert!(distinct.len() > 250);
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_words(&mut a, 7, 1);
        write_words(&mut b, 7, 2);
        assert_ne!(a, b);
    }

    #[test]
    fn sequence_padding() {
        let config =
            GeneratorConfig { count: Some(12), schema: Schema::Sequence, value_size: Some(4), ..Default::default() };
        let records = drain(&mut GeneratorSource::new(config, &ctx(0, 1)), 1 << 10);
        assert_eq!(records[0].1, b"0...");
        assert_eq!(records[11].1, b"11..");
        let mut v = Vec::new();
        write_sequence(&mut v, 123_456, 4);
        assert_eq!(v, b"123456", "never truncated");
    }

    #[test]
    fn rate_limit_is_idle_when_ahead() {
        let config = GeneratorConfig { rate: Some(2.0), ..Default::default() };
        // Two subtasks: one record per second each.
        let mut source = GeneratorSource::new(config, &ctx(1, 2));
        let mut out = BatchWriter::new();
        assert_eq!(source.poll(&mut out, 1 << 20).unwrap(), Poll::Ready);
        assert_eq!(out.records(), 1, "only the first record is due at once");
        match source.poll(&mut out, 1 << 20).unwrap() {
            Poll::Idle(wait) => assert!(wait > Duration::ZERO && wait <= MAX_IDLE, "{wait:?}"),
            other => panic!("expected Idle, got {other:?}"),
        }
        assert_eq!(out.records(), 1);
    }

    #[test]
    fn rate_limit_catches_up_with_due_records() {
        let mut pacing = Pacing { per_second: 1000.0, started: None };
        let start = Instant::now();
        assert_eq!(pacing.allowance(start), Ok(1));
        pacing.produced(1);
        assert_eq!(pacing.allowance(start), Err(Duration::from_millis(1)));
        // 10.5 ms later records 1..=10 are due.
        assert_eq!(pacing.allowance(start + Duration::from_micros(10_500)), Ok(10));
        pacing.produced(4);
        assert_eq!(pacing.allowance(start + Duration::from_micros(10_500)), Ok(6));
        // A long wait is cut to MAX_IDLE so the task stays responsive.
        let mut slow = Pacing { per_second: 0.5, started: None };
        assert_eq!(slow.allowance(start), Ok(1));
        slow.produced(1);
        assert_eq!(slow.allowance(start), Err(MAX_IDLE));
    }

    #[test]
    fn config_parses_kebab_case_and_validates() {
        let config: GeneratorConfig = serde_json::from_value(serde_json::json!({
            "count": 10, "rate": 5.5, "schema": "sequence", "seed": 9, "start-timestamp": -3, "value-size": 16,
            "mark-latency": true
        }))
        .unwrap();
        assert_eq!(
            config,
            GeneratorConfig {
                count: Some(10),
                rate: Some(5.5),
                schema: Schema::Sequence,
                seed: 9,
                start_timestamp: Some(-3),
                event_rate: None,
                value_size: Some(16),
                mark_latency: true,
                users: DEFAULT_USERS
            }
        );
        assert!(config.validate().is_empty());
        let defaults: GeneratorConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(defaults, GeneratorConfig::default());
        assert!(serde_json::from_value::<GeneratorConfig>(serde_json::json!({"type": "generator"})).is_err());
        assert!(serde_json::from_value::<GeneratorConfig>(serde_json::json!({"schema": "nope"})).is_err());

        let bad = GeneratorConfig { rate: Some(f64::NAN), value_size: Some(MAX_VALUE_SIZE + 1), ..Default::default() };
        let problems = bad.validate();
        let fields: Vec<_> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["rate", "value-size", "value-size"], "{problems:?}");
        for rate in [0.0, -1.0, f64::INFINITY] {
            let config = GeneratorConfig { rate: Some(rate), ..Default::default() };
            assert_eq!(config.validate().len(), 1, "rate {rate}");
        }
        let zero = GeneratorConfig { count: Some(0), ..Default::default() };
        assert!(zero.validate().is_empty());
    }

    /// Not a pass/fail test: prints the single-core throughput of `events`.
    /// Run with `cargo test --release -p weir-connector-generator -- --ignored --nocapture throughput`.
    #[test]
    #[ignore = "benchmark; run in release mode"]
    fn throughput() {
        for schema in [Schema::Events, Schema::Sequence, Schema::Words, Schema::Nexmark] {
            let total = 10_000_000u64;
            let config = GeneratorConfig { count: Some(total), schema, ..Default::default() };
            let mut source = GeneratorSource::new(config, &ctx(0, 1));
            let mut out = BatchWriter::with_capacity(1 << 17);
            let mut bytes = 0usize;
            let started = Instant::now();
            while source.poll(&mut out, 1 << 16).unwrap() == Poll::Ready {
                bytes += out.len();
                out.clear();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{schema:?}: {total} records in {secs:.3} s = {:.1} M records/s, {:.2} GB/s of frames",
                total as f64 / secs / 1e6,
                bytes as f64 / secs / 1e9
            );
        }
    }

    #[test]
    fn users_sets_the_number_of_distinct_keys() {
        let config = GeneratorConfig { count: Some(3000), users: 1_000_000, ..Default::default() };
        assert!(config.validate().is_empty());
        let records = drain(&mut GeneratorSource::new(config, &ctx(0, 1)), 1 << 20);
        let users: std::collections::BTreeSet<String> = records
            .iter()
            .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(v).unwrap()["user"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(users.len(), 3000, "distinct users up to the count");
        assert!(users.iter().all(|u| u.len() == "user-".len() + 6), "{:?}", users.iter().next());
        let bad = GeneratorConfig { users: 5, schema: Schema::Words, ..Default::default() };
        assert_eq!(bad.validate()[0].0, "users");
    }
}

impl weir_connector::registry::SourceConfig for GeneratorConfig {
    const TYPE: &'static str = "generator";

    fn prepare(&mut self, _: &weir_connector::registry::ConfigContext<'_>) -> weir_connector::registry::FieldErrors {
        self.validate()
    }

    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn weir_connector::Source>, ConnectorError> {
        Ok(Box::new(GeneratorSource::new(self.clone(), ctx)))
    }
}
