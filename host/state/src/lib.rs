//! Keyed state and timers, kept by the host on behalf of an operator subtask.
//!
//! State belongs to the host, not to the plugin: it outlives a plugin
//! instance (a trap, a hot reload), and the host snapshots and restores it
//! without the plugin's help. Every entry is addressed by a state name and a
//! record key; keys map to key groups ([`weir_format::keygroup`]) and a
//! subtask may only touch the key groups it owns, so a restore at another
//! parallelism can move whole key groups between subtasks.
//!
//! Where entries live is a [`Backend`]: [`HeapBackend`] (hash maps, the
//! default) or [`DiskBackend`] (an embedded on-disk store, redb, in a
//! scratch file per subtask, for state larger than memory). [`KeyedState`]
//! adds what both need on top: key-group ownership checks, per-call
//! transactions, and snapshots in one format ([`snapshot`]) whatever the
//! backend, so a checkpoint taken with one backend restores into the other.
//!
//! ## Transactions per call
//!
//! Every call into a plugin is atomic with respect to state: writes made
//! during the call are *staged* ([`KeyedState::stage`]) and applied by
//! [`KeyedState::commit`] after the call returns successfully, or dropped by
//! [`KeyedState::rollback`] when it rejects a record or traps. Staging
//! keeps the common path cheap: the SDK sends a batch's writes in one buffer
//! at the end of the call, which is validated, kept as bytes and applied
//! once, with no undo log. Only a read that follows a staged write in the
//! same call materializes the staged writes early, with an undo log, so the
//! plugin still reads its own writes.

mod disk;
mod heap;
pub mod snapshot;
mod timers;

pub use disk::DiskBackend;
pub use heap::HeapBackend;
pub use timers::{TimerBudget, TimerError, TimerService};

use hashbrown::HashMap;
use snapshot::{Entry, SnapshotError, SnapshotReader, SnapshotWriter};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use weir_format::{keygroup, lp, state_op};

/// Largest key or value the host accepts (bytes).
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

/// A state access refused by the host; the guest sees it as a WIT `state-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key belongs to a key group this subtask does not own.
    KeyNotOwned,
    /// A key or value is larger than [`MAX_ENTRY_BYTES`].
    TooLarge(u64),
    /// A malformed request.
    Invalid(String),
    /// A rule of the host the guest cannot handle was broken: a bound of
    /// the host's own memory was reached (see
    /// [`KeyedState::set_call_budget`]), or a key does not belong to the
    /// partition of a pipeline spread over a group ([`KeyedState::in_lane`]).
    /// The host traps the call with this message.
    Refused(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::KeyNotOwned => f.write_str("key owned by another subtask"),
            StateError::TooLarge(n) => write!(f, "key or value larger than {n} bytes"),
            StateError::Invalid(s) => write!(f, "invalid request: {s}"),
            StateError::Refused(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for StateError {}

/// Entries of one map state, ordered by map key.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Work that finishes a snapshot off the task thread: it returns the
/// snapshot file's bytes. The task thread only does what must happen
/// before it may go on changing state (copying the heap, or opening a
/// read transaction of the on-disk store).
pub type SnapshotJob = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

/// Where the entries of one operator subtask's keyed state live.
///
/// A backend stores; it does not check: keys and sizes were validated by
/// [`KeyedState`] before they reach it. Reads return borrowed bytes when
/// the backend can (the heap) and owned bytes otherwise (disk).
pub trait Backend: Send {
    /// Value state `name` of `key`.
    fn get(&self, name: &str, key: &[u8]) -> Option<Cow<'_, [u8]>>;
    /// Sets value state `name` of `key`.
    fn put(&mut self, name: &str, key: &[u8], value: &[u8]);
    /// Clears value state `name` of `key`.
    fn delete(&mut self, name: &str, key: &[u8]);
    /// Map state `name` of `key` at `map_key`.
    fn map_get(&self, name: &str, key: &[u8], map_key: &[u8]) -> Option<Cow<'_, [u8]>>;
    /// Sets one map entry.
    fn map_put(&mut self, name: &str, key: &[u8], map_key: &[u8], value: &[u8]);
    /// Removes one map entry.
    fn map_remove(&mut self, name: &str, key: &[u8], map_key: &[u8]);
    /// Removes every entry of map state `name` of `key`.
    fn map_clear(&mut self, name: &str, key: &[u8]);
    /// Every entry of map state `name` of `key`, ordered by map key; when
    /// their keys and values pass `limit` bytes together, stops reading and
    /// returns how many bytes it had read by then.
    fn map_entries(&self, name: &str, key: &[u8], limit: usize) -> Result<Entries, usize>;
    /// The writes of one plugin call are applied: a backend with its own
    /// transactions makes them one unit here. Failing to do so (disk full)
    /// is a host failure, reported as a string naming the store.
    fn end_writes(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Starts a snapshot of every entry, written into `out`. Whatever must
    /// happen before state changes again happens now; the returned job
    /// finishes it (on another thread).
    fn snapshot(&mut self, out: SnapshotWriter) -> SnapshotJob;
    /// Number of (name, key) entries held, value and map state together
    /// (a map state counts once per key).
    fn len(&self) -> usize;
    /// True when no state is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
enum Undo {
    Value { name: String, key: Vec<u8>, old: Option<Vec<u8>> },
    MapEntry { name: String, key: Vec<u8>, map_key: Vec<u8>, old: Option<Vec<u8>> },
    Map { name: String, key: Vec<u8>, old: Entries },
}

/// The keyed state of one operator subtask.
pub struct KeyedState {
    max_parallelism: u32,
    owned: Range<u32>,
    backend: Box<dyn Backend>,
    staged: Vec<u8>,
    undo: Vec<Undo>,
    in_call: bool,
    /// Bytes of `state.apply` buffers staged in the current call, whether
    /// still staged or already materialized.
    call_written: usize,
    call_budget: usize,
    /// `(partition, partitions)` of a lane: every key must be one Kafka's
    /// partitioner places in `partition`.
    lane: Option<(u32, u32)>,
}

impl fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedState").field("key_groups", &self.owned).field("entries", &self.backend.len()).finish()
    }
}

impl KeyedState {
    /// Empty heap state for subtask `subtask` of `parallelism`, with `max_parallelism` key groups.
    pub fn new(subtask: u32, parallelism: u32, max_parallelism: u32) -> Self {
        Self::with_backend(subtask, parallelism, max_parallelism, Box::new(HeapBackend::default()))
    }

    /// State for subtask `subtask` of `parallelism` kept in `backend`.
    pub fn with_backend(subtask: u32, parallelism: u32, max_parallelism: u32, backend: Box<dyn Backend>) -> Self {
        Self {
            max_parallelism,
            owned: keygroup::range(subtask, max_parallelism, parallelism),
            backend,
            staged: Vec::new(),
            undo: Vec::new(),
            in_call: false,
            call_written: 0,
            call_budget: usize::MAX,
            lane: None,
        }
    }

    /// The state of a lane of a pipeline spread over a group: the state
    /// of the keys of source partition `partition` of `partitions`, and of
    /// no other. A key Kafka's default partitioner
    /// ([`keygroup::kafka_partition`]) places in another partition is
    /// refused: its records are read by another lane, possibly on another
    /// host, so a total kept here would be a part of the truth.
    pub fn in_lane(mut self, partition: u32, partitions: u32) -> Self {
        self.lane = Some((partition, partitions));
        self
    }

    /// Bounds what one plugin call may make the host hold for it: the bytes
    /// of the `state.apply` buffers it sends (its writes are held until the
    /// call ends), and the size of one `get-many` answer. Without it a
    /// plugin capped at 256 MiB could stage 1 GiB of writes in one call by
    /// reusing its buffer (2.1 GiB of host memory). The host sets it to the
    /// instance's memory limit: a `get-many` answer larger than that could
    /// not be received anyway.
    pub fn set_call_budget(&mut self, bytes: usize) {
        self.call_budget = bytes;
    }

    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> Range<u32> {
        self.owned.clone()
    }

    /// Number of key groups of the job.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StateError> {
        if key.len() > MAX_ENTRY_BYTES {
            return Err(StateError::TooLarge(MAX_ENTRY_BYTES as u64));
        }
        if self.owned.len() as u32 != self.max_parallelism && !self.owned.contains(&keygroup::of(key, self.max_parallelism)) {
            return Err(StateError::KeyNotOwned);
        }
        if let Some((lane, partitions)) = self.lane {
            let partition = keygroup::kafka_partition(key, partitions);
            if partition != lane {
                return Err(StateError::Refused(format!(
                    "the key {} belongs in partition {partition} of the source (Kafka's default partitioner, murmur2, over {partitions} partitions), \
                     but this lane reads partition {lane}: a pipeline spread over a group ([cluster]) keeps keyed state per source partition, \
                     so keyed operators must key records by the Kafka record key, and producers must place keys with the murmur2 \
                     partitioner (the Java client's default; librdkafka's partitioner = \"murmur2_random\")",
                    weir_format::Preview(key)
                )));
            }
        }
        Ok(())
    }

    /// Starts a plugin call: writes are staged until [`Self::commit`].
    pub fn begin(&mut self) {
        debug_assert!(self.staged.is_empty() && self.undo.is_empty());
        self.in_call = true;
        self.call_written = 0;
    }

    /// The call succeeded: apply its writes. An error means the backend
    /// could not store them (an on-disk store failing): the host stops the
    /// operator.
    pub fn commit(&mut self) -> Result<(), String> {
        let staged = std::mem::take(&mut self.staged);
        self.apply_unchecked(&staged, false);
        self.staged = staged;
        self.staged.clear();
        self.undo.clear();
        self.in_call = false;
        self.call_written = 0;
        self.backend.end_writes()
    }

    /// The call failed: forget its writes.
    pub fn rollback(&mut self) {
        self.staged.clear();
        self.call_written = 0;
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Value { name, key, old } => match old {
                    Some(v) => self.backend.put(&name, &key, &v),
                    None => self.backend.delete(&name, &key),
                },
                Undo::MapEntry { name, key, map_key, old } => match old {
                    Some(v) => self.backend.map_put(&name, &key, &map_key, &v),
                    None => self.backend.map_remove(&name, &key, &map_key),
                },
                Undo::Map { name, key, old } => {
                    self.backend.map_clear(&name, &key);
                    for (mk, v) in old {
                        self.backend.map_put(&name, &key, &mk, &v);
                    }
                }
            }
        }
        self.in_call = false;
    }

    /// Applies staged writes now, with an undo log, so a read in the same
    /// call sees them.
    fn materialize(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        self.apply_unchecked(&staged, self.in_call);
        self.staged = staged;
        self.staged.clear();
    }

    /// Value state `name` for `key`.
    pub fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        self.check_key(key)?;
        self.materialize();
        Ok(self.backend.get(name, key))
    }

    /// Value state `name` for many keys, in the `get-many` encoding: a key
    /// that repeats an earlier one of the request is answered with a
    /// reference to it.
    pub fn get_many(&mut self, name: &str, keys: &[u8], out: &mut Vec<u8>) -> Result<(), StateError> {
        self.materialize();
        // Sized up front: growing it cost a rehash or two per batch.
        let mut r = lp::Reader::new(keys);
        let mut seen: HashMap<&[u8], u32> = HashMap::with_capacity(r.remaining());
        let mut i = 0u32;
        while !r.is_empty() {
            let key = r.bytes().ok_or_else(|| StateError::Invalid("truncated key list in get-many".into()))?;
            match seen.entry(key) {
                hashbrown::hash_map::Entry::Occupied(first) => lp::put_repeat(out, *first.get()),
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    self.check_key(key)?;
                    slot.insert(i);
                    let value = self.backend.get(name, key);
                    let len = out.len() + value.as_ref().map_or(0, |v| v.len());
                    if len > self.call_budget {
                        return Err(StateError::Refused(format!(
                            "asked for state {name:?} of many keys at once (get-many): the answer passed {} bytes (limits.memory; it could not fit in the plugin's memory) at key #{i}",
                            self.call_budget
                        )));
                    }
                    lp::put_opt(out, value.as_deref());
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Map state `name` of `key` at `map_key`.
    pub fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        self.check_key(key)?;
        self.materialize();
        Ok(self.backend.map_get(name, key, map_key))
    }

    /// All map state entries of `name` for `key`, ordered by map key.
    pub fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Entries, StateError> {
        self.check_key(key)?;
        self.materialize();
        self.backend.map_entries(name, key, self.call_budget).map_err(|_| {
            StateError::Refused(format!(
                "asked for every entry of map state {name:?} of one key (map-entries): they pass {} bytes (limits.memory; they could not fit in the plugin's memory)",
                self.call_budget
            ))
        })
    }

    /// Validates a `state.apply` buffer completely (format, key ownership,
    /// sizes) and stages it. A refused buffer stages nothing.
    pub fn stage(&mut self, ops: &[u8]) -> Result<(), StateError> {
        if self.in_call && self.call_written.saturating_add(ops.len()) > self.call_budget {
            return Err(StateError::Refused(format!(
                "staged more than {} bytes of state writes in one call (limits.memory): {} bytes before this state.apply of {} bytes",
                self.call_budget,
                self.call_written,
                ops.len()
            )));
        }
        self.validate(ops)?;
        if self.in_call {
            self.call_written += ops.len();
            self.staged.extend_from_slice(ops);
        } else {
            self.apply_unchecked(ops, false);
        }
        Ok(())
    }

    fn validate(&self, ops: &[u8]) -> Result<(), StateError> {
        let bad = |what: &str| StateError::Invalid(format!("malformed state.apply buffer: {what}"));
        let mut r = lp::Reader::new(ops);
        while !r.is_empty() {
            let op = r.u8().ok_or_else(|| bad("missing operation"))?;
            let fields = match op {
                state_op::PUT | state_op::MAP_REMOVE => 1,
                state_op::DELETE | state_op::MAP_CLEAR => 0,
                state_op::MAP_PUT => 2,
                other => return Err(bad(&format!("unknown operation {other}"))),
            };
            let name = r.bytes().ok_or_else(|| bad("truncated state name"))?;
            std::str::from_utf8(name).map_err(|_| bad("state name is not UTF-8"))?;
            let key = r.bytes().ok_or_else(|| bad("truncated key"))?;
            self.check_key(key)?;
            for _ in 0..fields {
                let f = r.bytes().ok_or_else(|| bad("truncated field"))?;
                if f.len() > MAX_ENTRY_BYTES {
                    return Err(StateError::TooLarge(MAX_ENTRY_BYTES as u64));
                }
            }
        }
        Ok(())
    }

    /// Applies a validated buffer; records undo entries when `undo` is set.
    fn apply_unchecked(&mut self, ops: &[u8], undo: bool) {
        let mut r = lp::Reader::new(ops);
        fn field<'a>(r: &mut lp::Reader<'a>) -> &'a [u8] {
            r.bytes().expect("validated")
        }
        let b = &mut self.backend;
        while let Some(op) = r.u8() {
            let name = std::str::from_utf8(field(&mut r)).expect("validated");
            let key = field(&mut r);
            match op {
                state_op::PUT | state_op::DELETE => {
                    if undo {
                        let old = b.get(name, key).map(Cow::into_owned);
                        self.undo.push(Undo::Value { name: name.to_owned(), key: key.to_vec(), old });
                    }
                    if op == state_op::PUT {
                        b.put(name, key, field(&mut r));
                    } else {
                        b.delete(name, key);
                    }
                }
                state_op::MAP_PUT | state_op::MAP_REMOVE => {
                    let map_key = field(&mut r);
                    if undo {
                        let old = b.map_get(name, key, map_key).map(Cow::into_owned);
                        self.undo.push(Undo::MapEntry { name: name.to_owned(), key: key.to_vec(), map_key: map_key.to_vec(), old });
                    }
                    if op == state_op::MAP_PUT {
                        b.map_put(name, key, map_key, field(&mut r));
                    } else {
                        b.map_remove(name, key, map_key);
                    }
                }
                _ => {
                    if undo {
                        self.undo.push(Undo::Map { name: name.to_owned(), key: key.to_vec(), old: b.map_entries(name, key, usize::MAX).unwrap_or_default() });
                    }
                    b.map_clear(name, key);
                }
            }
        }
    }

    /// Starts a snapshot of this state and of `timers` (between plugin
    /// calls). Timers are copied now; the backend decides how much of its
    /// own copy happens now and how much in the returned job.
    pub fn snapshot(&mut self, timers: &TimerService) -> SnapshotJob {
        debug_assert!(!self.in_call, "snapshot during a plugin call");
        let mut w = SnapshotWriter::new(self.max_parallelism, self.owned.clone());
        timers.snapshot(&mut w);
        self.backend.snapshot(w)
    }

    /// Loads the entries of the key groups this subtask owns from snapshot
    /// files of an earlier run (at any parallelism), into this state and
    /// `timers`. Files whose key groups do not overlap are skipped unread.
    pub fn restore(&mut self, timers: &mut TimerService, files: &[&[u8]]) -> Result<(), SnapshotError> {
        for bytes in files {
            let r = SnapshotReader::new(bytes)?;
            if r.max_parallelism() != self.max_parallelism {
                return Err(SnapshotError(format!(
                    "it was taken with max-parallelism {} but the pipeline now has {}; key groups cannot be split or merged, so restore with max-parallelism = {}",
                    r.max_parallelism(),
                    self.max_parallelism,
                    r.max_parallelism()
                )));
            }
            let b = &mut self.backend;
            r.for_each(self.owned.clone(), |e| match e {
                Entry::Value { name, key, value } => b.put(name, key, value),
                Entry::Map { name, key, map_key, value } => b.map_put(name, key, map_key, value),
                Entry::Timer { event_time, key, timestamp } => timers.restore(event_time, key, timestamp),
            })?;
        }
        self.backend.end_writes().map_err(SnapshotError)
    }

    /// Number of (name, key) entries held.
    pub fn len(&self) -> usize {
        self.backend.len()
    }

    /// True when no state is held.
    pub fn is_empty(&self) -> bool {
        self.backend.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(ops: &mut Vec<u8>, name: &str, key: &[u8], value: &[u8]) {
        ops.push(state_op::PUT);
        lp::put(ops, name.as_bytes());
        lp::put(ops, key);
        lp::put(ops, value);
    }

    #[test]
    fn staged_writes_apply_on_commit_only() {
        let mut s = KeyedState::new(0, 1, 128);
        s.begin();
        let mut ops = Vec::new();
        put(&mut ops, "sum", b"a", b"1");
        s.stage(&ops).unwrap();
        s.rollback();
        assert_eq!(s.get("sum", b"a").unwrap().as_deref(), None);
        s.begin();
        s.stage(&ops).unwrap();
        s.commit().unwrap();
        assert_eq!(s.get("sum", b"a").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn reads_see_own_staged_writes_and_rollback_undoes_them() {
        let mut s = KeyedState::new(0, 1, 128);
        let mut ops = Vec::new();
        put(&mut ops, "sum", b"a", b"1");
        s.stage(&ops).unwrap();
        s.begin();
        let mut ops = Vec::new();
        put(&mut ops, "sum", b"a", b"2");
        put(&mut ops, "sum", b"b", b"3");
        ops.push(state_op::MAP_PUT);
        for f in [&b"m"[..], b"a", b"x", b"y"] {
            lp::put(&mut ops, f);
        }
        s.stage(&ops).unwrap();
        assert_eq!(s.get("sum", b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(s.map_get("m", b"a", b"x").unwrap().as_deref(), Some(&b"y"[..]));
        s.rollback();
        assert_eq!(s.get("sum", b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get("sum", b"b").unwrap().as_deref(), None);
        assert_eq!(s.map_get("m", b"a", b"x").unwrap().as_deref(), None);
    }

    #[test]
    fn one_call_stages_at_most_its_budget_even_when_reads_materialize_writes() {
        let mut s = KeyedState::new(0, 1, 128);
        s.set_call_budget(100);
        let mut ops = Vec::new();
        put(&mut ops, "v", b"a", &[7; 30]);
        assert!(ops.len() < 50);
        s.begin();
        s.stage(&ops).unwrap();
        // A read applies the staged writes early; they still count.
        assert!(s.get("v", b"a").unwrap().is_some());
        s.stage(&ops).unwrap();
        let e = s.stage(&ops).unwrap_err();
        assert!(matches!(&e, StateError::Refused(m) if m.contains("more than 100 bytes of state writes in one call")), "{e}");
        s.rollback();
        assert_eq!(s.get("v", b"a").unwrap(), None, "the refused call's writes are undone");
        // The next call starts with the whole budget.
        s.begin();
        s.stage(&ops).unwrap();
        s.stage(&ops).unwrap();
        s.commit().unwrap();
        // A get-many answer is bounded the same way.
        let mut keys = Vec::new();
        for _ in 0..2 {
            lp::put(&mut keys, b"a");
        }
        let mut out = Vec::new();
        s.get_many("v", &keys, &mut out).unwrap();
        s.set_call_budget(20);
        let e = s.get_many("v", &keys, &mut Vec::new()).unwrap_err();
        assert!(matches!(&e, StateError::Refused(m) if m.contains("get-many")), "{e}");
        // And so is a map-entries answer, on either backend.
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::disk::DiskBackend::open(&dir.path().join("m.redb")).unwrap();
        for mut s in [KeyedState::new(0, 1, 128), KeyedState::with_backend(0, 1, 128, Box::new(disk))] {
            let mut ops = Vec::new();
            for k in [&b"x"[..], b"y"] {
                ops.push(state_op::MAP_PUT);
                for f in [&b"m"[..], b"a", k, &[7; 10]] {
                    lp::put(&mut ops, f);
                }
            }
            s.stage(&ops).unwrap();
            s.set_call_budget(22);
            assert_eq!(s.map_entries("m", b"a").unwrap().len(), 2);
            s.set_call_budget(21);
            let e = s.map_entries("m", b"a").unwrap_err();
            assert!(matches!(&e, StateError::Refused(m) if m.contains("map-entries") && m.contains("21 bytes")), "{e}");
        }
    }

    #[test]
    fn a_lane_holds_the_keys_of_its_partition_only() {
        let key = b"user-7";
        let home = keygroup::kafka_partition(key, 6);
        let mut s = KeyedState::new(0, 1, 128).in_lane(home, 6);
        s.begin();
        assert_eq!(s.get("v", key).map(|v| v.is_none()), Ok(true));
        s.commit().unwrap();
        let mut s = KeyedState::new(0, 1, 128).in_lane((home + 1) % 6, 6);
        s.begin();
        let e = s.get("v", key).map(|_| ()).unwrap_err();
        assert!(matches!(&e, StateError::Refused(m) if m.contains(&format!("partition {home} of the source")) && m.contains("user-7")), "{e}");
    }

    #[test]
    fn foreign_keys_and_broken_buffers_are_refused_whole() {
        // Two subtasks split 128 key groups; find a key the second one owns.
        let mut s0 = KeyedState::new(0, 2, 128);
        let foreign = (0..1000u32).map(|i| format!("k{i}")).find(|k| keygroup::of(k.as_bytes(), 128) >= 64).unwrap();
        assert_eq!(s0.get("x", foreign.as_bytes()).map(|v| v.map(|c| c.into_owned())), Err(StateError::KeyNotOwned));
        let mine = (0..1000u32).map(|i| format!("k{i}")).find(|k| keygroup::of(k.as_bytes(), 128) < 64).unwrap();
        let mut ops = Vec::new();
        put(&mut ops, "x", mine.as_bytes(), b"1");
        put(&mut ops, "x", foreign.as_bytes(), b"1");
        assert_eq!(s0.stage(&ops), Err(StateError::KeyNotOwned));
        assert!(s0.is_empty());
        assert!(matches!(s0.stage(&ops[..5]), Err(StateError::Invalid(_))));
        assert!(matches!(s0.stage(&[9]), Err(StateError::Invalid(_))));
    }

    #[test]
    fn get_many_in_order_with_absent_values() {
        let mut s = KeyedState::new(0, 1, 128);
        let mut ops = Vec::new();
        put(&mut ops, "v", b"b", b"B");
        s.stage(&ops).unwrap();
        let mut keys = Vec::new();
        lp::put(&mut keys, b"a");
        lp::put(&mut keys, b"b");
        let mut out = Vec::new();
        s.get_many("v", &keys, &mut out).unwrap();
        let mut r = lp::Reader::new(&out);
        assert_eq!(r.entry(), Some(lp::Entry::Absent));
        assert_eq!(r.entry(), Some(lp::Entry::Value(&b"B"[..])));
        // A repeated key refers back to its first occurrence.
        let mut keys2 = keys.clone();
        lp::put(&mut keys2, b"a");
        let mut out = Vec::new();
        s.get_many("v", &keys2, &mut out).unwrap();
        let mut r = lp::Reader::new(&out);
        assert_eq!(r.entry(), Some(lp::Entry::Absent));
        assert_eq!(r.entry(), Some(lp::Entry::Value(&b"B"[..])));
        assert_eq!(r.entry(), Some(lp::Entry::Repeat(0)));
        assert!(r.is_empty());
    }

    /// Runs `job` and returns the snapshot bytes.
    fn take(s: &mut KeyedState, t: &TimerService) -> Vec<u8> {
        s.snapshot(t)().unwrap()
    }

    #[test]
    fn snapshot_restores_at_another_parallelism() {
        let max = 32;
        let mut one = KeyedState::new(0, 1, max);
        let mut timers = TimerService::new();
        let mut ops = Vec::new();
        for i in 0..300 {
            let k = format!("key-{i}");
            put(&mut ops, "sum", k.as_bytes(), format!("{i}").as_bytes());
            ops.push(state_op::MAP_PUT);
            for f in [&b"win"[..], k.as_bytes(), b"10", b"x"] {
                lp::put(&mut ops, f);
            }
            timers.register(i % 2 == 0, k.as_bytes(), i).unwrap();
        }
        one.stage(&ops).unwrap();
        let file = take(&mut one, &timers);

        // 1 -> 3: each new subtask gets exactly its keys.
        let mut files3 = Vec::new();
        let mut total = 0;
        for sub in 0..3 {
            let mut s = KeyedState::new(sub, 3, max);
            let mut t = TimerService::new();
            s.restore(&mut t, &[&file]).unwrap();
            for i in 0..300 {
                let k = format!("key-{i}");
                let owned = s.key_groups().contains(&keygroup::of(k.as_bytes(), max));
                let v = s.get("sum", k.as_bytes());
                if owned {
                    assert_eq!(v.unwrap().as_deref(), Some(format!("{i}").as_bytes()));
                    assert_eq!(s.map_get("win", k.as_bytes(), b"10").unwrap().as_deref(), Some(&b"x"[..]));
                } else {
                    assert_eq!(v.map(|_| ()), Err(StateError::KeyNotOwned));
                }
            }
            total += s.len();
            files3.push(take(&mut s, &t));
            assert!(!t.is_empty());
        }
        assert_eq!(total, 600);

        // 3 -> 2, reading all three files: the same entries and timers as at the start.
        let refs: Vec<&[u8]> = files3.iter().map(Vec::as_slice).collect();
        let mut timers_back = 0;
        let mut entries = 0;
        for sub in 0..2 {
            let mut s = KeyedState::new(sub, 2, max);
            let mut t = TimerService::new();
            s.restore(&mut t, &refs).unwrap();
            entries += s.len();
            timers_back += t.len();
        }
        assert_eq!(entries, 600);
        assert_eq!(timers_back, 300);

        // Another max-parallelism cannot reuse the key groups.
        let mut other = KeyedState::new(0, 1, 64);
        let err = other.restore(&mut TimerService::new(), &[&file]).unwrap_err();
        assert!(err.0.contains("max-parallelism 32"), "{err}");
    }
}
