//! The operator's view of the host: keyed state, timers, logging.

use crate::hash::FxHashMap;
use crate::{StateValue, TimeDomain};
use std::fmt;
use weir_format::{lp, state_op};

/// Entries of a map state, ordered by map key.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A state access the host refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key belongs to another subtask: the operator's input is not
    /// partitioned by this key. Set `partition = "hash"` on the operator in
    /// the pipeline file, with the upstream operator setting the record key.
    KeyNotOwned,
    /// A key or value is larger than the host's limit (in bytes).
    TooLarge(u64),
    /// The request was malformed.
    Invalid(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::KeyNotOwned => f.write_str(
                "state key is owned by another subtask: partition this operator's input by key (partition = \"hash\")",
            ),
            StateError::TooLarge(limit) => write!(f, "state key or value larger than the host's limit of {limit} bytes"),
            StateError::Invalid(why) => write!(f, "invalid state request: {why}"),
        }
    }
}

impl std::error::Error for StateError {}

/// What the SDK needs from the host. Implemented over the WIT imports in a
/// component, and in memory by [`crate::testing::MemoryHost`] for native tests.
/// `Send`, so that an operator with its context can run on a native
/// host's task thread ([`crate::native`]).
pub trait Host: Send {
    /// Value state for one key.
    fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Value state for many keys (length-prefixed in, length-prefixed out).
    fn get_many(&mut self, name: &str, keys: &[u8]) -> Result<Vec<u8>, StateError>;
    /// Map state entry.
    fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// All map state entries of a key, ordered by map key.
    fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Entries, StateError>;
    /// Applies encoded writes (see `weir_format::state_op`), all or nothing.
    fn apply(&mut self, ops: &[u8]) -> Result<(), StateError>;
    /// Registers a timer.
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64);
    /// Deletes a timer.
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64);
    /// Current event-time watermark.
    fn watermark(&mut self) -> i64;
    /// Current processing time.
    fn processing_time(&mut self) -> i64;
    /// The input the batch being processed came from (an index into the
    /// operator's inputs; 0 outside `process`).
    fn input(&mut self) -> usize;
    /// The operator's inputs: the names of its upstream nodes, in order.
    fn input_names(&mut self) -> Vec<String>;
    /// Writes a log line.
    fn log(&mut self, level: LogLevel, message: &str);
}

/// Severity of a log line written with [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the operator handled.
    Warn,
    /// Something failed.
    Error,
}

#[derive(Debug)]
struct Slot {
    value: Option<Vec<u8>>,
    dirty: bool,
}

/// A prefetched value: a range of `Prefetch::values`, or absent.
#[derive(Debug, Clone, Copy)]
struct Val {
    off: u32,
    len: u32,
    present: bool,
    dirty: bool,
}

/// The states in [`crate::Operator::PREFETCH`] for every key of the batch,
/// addressed by *position*: record `i` of the batch uses slot `slot_of[i]`,
/// and records with equal keys share a slot (the host says which keys
/// repeat). Reading or writing the current record's state is then an index,
/// a short key comparison and a copy: no hashing and no allocation.
#[derive(Debug, Default)]
struct Prefetch {
    /// The prefetched state names (`Operator::PREFETCH`).
    names: &'static [&'static str],
    /// Record index -> slot (`u32::MAX`: the record has no key).
    slot_of: Vec<u32>,
    /// Slot -> key range in `keys`.
    slot_keys: Vec<(u32, u32)>,
    keys: Vec<u8>,
    /// Per prefetched name: slot -> value, values stored in `arena[name]`.
    vals: Vec<Vec<Val>>,
    arena: Vec<Vec<u8>>,
    /// Key -> slot, built only if a state is accessed for a key other than
    /// the current record's.
    index: Option<FxHashMap<Vec<u8>, u32>>,
}

impl Prefetch {
    #[inline]
    fn key(&self, slot: u32) -> &[u8] {
        let (off, len) = self.slot_keys[slot as usize];
        &self.keys[off as usize..(off + len) as usize]
    }

    fn clear(&mut self) {
        self.names = &[];
        self.slot_of.clear();
        self.slot_keys.clear();
        self.keys.clear();
        self.vals.iter_mut().for_each(Vec::clear);
        self.arena.iter_mut().for_each(Vec::clear);
        self.index = None;
    }

    /// The slot of `key`, preferring the current record's.
    fn slot(&mut self, current: usize, key: &[u8]) -> Option<u32> {
        if let Some(&s) = self.slot_of.get(current)
            && s != u32::MAX
            && weir_format::json::bytes_eq(self.key(s), key)
        {
            return Some(s);
        }
        if self.slot_keys.is_empty() {
            return None;
        }
        if self.index.is_none() {
            let mut index = FxHashMap::default();
            for s in 0..self.slot_keys.len() as u32 {
                index.insert(self.key(s).to_vec(), s);
            }
            self.index = Some(index);
        }
        self.index.as_ref().and_then(|i| i.get(key).copied())
    }

    #[inline]
    fn get(&self, name: usize, slot: u32) -> Option<&[u8]> {
        let v = self.vals[name][slot as usize];
        v.present.then(|| &self.arena[name][v.off as usize..(v.off + v.len) as usize])
    }

    #[inline]
    fn set(&mut self, name: usize, slot: u32, value: Option<&[u8]>) {
        let v = &mut self.vals[name][slot as usize];
        v.dirty = true;
        match value {
            None => v.present = false,
            Some(bytes) => {
                let arena = &mut self.arena[name];
                if bytes.len() > v.len as usize || !v.present {
                    v.off = arena.len() as u32;
                    arena.extend_from_slice(bytes);
                } else {
                    arena[v.off as usize..v.off as usize + bytes.len()].copy_from_slice(bytes);
                }
                v.len = bytes.len() as u32;
                v.present = true;
            }
        }
    }
}

/// Per-batch view of host state, timers and logging.
///
/// Value-state reads go through a cache that lives for one batch;
/// writes are buffered and sent to the host in one call when the batch ends.
pub struct Context {
    host: Box<dyn Host>,
    names: Vec<String>,
    /// Per state name (indexed like `names`): key -> cached value.
    cache: Vec<FxHashMap<Vec<u8>, Slot>>,
    /// `names` index -> index in the prefetched names, if prefetched.
    prefetched: Vec<Option<usize>>,
    prefetch: Prefetch,
    /// Index of the record being processed.
    current: usize,
    /// The batch's input, asked of the host once per batch.
    input: Option<usize>,
    map_ops: Vec<u8>,
    scratch: Vec<u8>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("cached", &self.cache.len()).finish()
    }
}

impl Context {
    pub(crate) fn new(host: Box<dyn Host>) -> Self {
        Self {
            host,
            names: Vec::new(),
            cache: Vec::new(),
            prefetched: Vec::new(),
            prefetch: Prefetch::default(),
            current: 0,
            input: None,
            map_ops: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn name_index(&mut self, name: &str) -> u16 {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i as u16,
            None => {
                self.names.push(name.to_owned());
                self.cache.push(FxHashMap::default());
                self.prefetched.push(None);
                (self.names.len() - 1) as u16
            }
        }
    }

    pub(crate) fn set_current(&mut self, record: usize) {
        self.current = record;
    }

    /// The prefetch slot holding (`name`, `key`), if the batch prefetched it.
    fn prefetched_slot(&mut self, idx: usize, key: &[u8]) -> Option<(usize, u32)> {
        let p = self.prefetched[idx]?;
        let slot = self.prefetch.slot(self.current, key)?;
        Some((p, slot))
    }

    /// The hot path: `name` is a prefetched state and `key` the current
    /// record's key. No hashing, no allocation.
    #[inline]
    fn current_slot(&self, name: &str, key: &[u8]) -> Option<(usize, u32)> {
        let p = self.prefetch.names.iter().position(|n| std::ptr::eq(n.as_ptr(), name.as_ptr()) || *n == name)?;
        let s = *self.prefetch.slot_of.get(self.current)?;
        (s != u32::MAX && weir_format::json::bytes_eq(self.prefetch.key(s), key)).then_some((p, s))
    }

    /// Reads value state `name` for `key` as raw bytes.
    #[inline]
    pub fn get_bytes(&mut self, name: &str, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        if let Some((p, slot)) = self.current_slot(name, key) {
            return Ok(self.prefetch.get(p, slot));
        }
        let idx = self.name_index(name) as usize;
        if let Some((p, slot)) = self.prefetched_slot(idx, key) {
            return Ok(self.prefetch.get(p, slot));
        }
        // Two lookups instead of the entry API so the common hit does not
        // allocate an owned key.
        if !self.cache[idx].contains_key(key) {
            let value = self.host.get(name, key)?;
            self.cache[idx].insert(key.to_vec(), Slot { value, dirty: false });
        }
        Ok(self.cache[idx].get(key).and_then(|s| s.value.as_deref()))
    }

    /// Reads value state `name` for `key`, decoded as `T`: `i64`, `u64`,
    /// `i32`, `u32`, `f64` (little-endian), `bool`, `String`, `Vec<u8>`, or
    /// your own [`StateValue`] (the table of layouts is there). Name the
    /// type at the call, `ctx.get::<u64>("count", key)?`, or let the
    /// binding's type decide it. `Ok(None)` when there is no value.
    ///
    /// Bytes that do not decode as `T` are an [`StateError::Invalid`].
    /// A state named in [`crate::Operator::PREFETCH`] read for the current
    /// record's key costs no host call; others cost one per key and batch.
    pub fn get<T: StateValue>(&mut self, name: &str, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.get_bytes(name, key)? {
            None => Ok(None),
            Some(b) => T::decode(b)
                .map(Some)
                .ok_or_else(|| StateError::Invalid(format!("state {name:?} holds {} bytes that do not decode as {}", b.len(), std::any::type_name::<T>()))),
        }
    }

    /// Sets value state `name` for `key` to `value` encoded as its
    /// [`StateValue`] (`ctx.put("count", key, &n)`). Applied when the batch ends.
    pub fn put<T: StateValue>(&mut self, name: &str, key: &[u8], value: &T) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        value.encode(&mut buf);
        self.put_bytes(name, key, &buf);
        self.scratch = buf;
    }

    /// Sets value state `name` for `key` to raw bytes. Applied when the batch ends.
    #[inline]
    pub fn put_bytes(&mut self, name: &str, key: &[u8], value: &[u8]) {
        if let Some((p, slot)) = self.current_slot(name, key) {
            self.prefetch.set(p, slot, Some(value));
            return;
        }
        let idx = self.name_index(name) as usize;
        if let Some((p, slot)) = self.prefetched_slot(idx, key) {
            self.prefetch.set(p, slot, Some(value));
            return;
        }
        let map = &mut self.cache[idx];
        let slot = match map.get_mut(key) {
            Some(slot) => slot,
            None => map.entry(key.to_vec()).or_insert(Slot { value: None, dirty: true }),
        };
        match &mut slot.value {
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => slot.value = Some(value.to_vec()),
        }
        slot.dirty = true;
    }

    /// Deletes value state `name` for `key`. Applied when the batch ends.
    pub fn delete(&mut self, name: &str, key: &[u8]) {
        let idx = self.name_index(name) as usize;
        if let Some((p, slot)) = self.prefetched_slot(idx, key) {
            self.prefetch.set(p, slot, None);
            return;
        }
        self.cache[idx].insert(key.to_vec(), Slot { value: None, dirty: true });
    }

    /// Reads map state `name` of `key` at `map_key`: `Ok(None)` when there
    /// is no such entry.
    ///
    /// Map state is a sorted map of byte strings per (`name`, `key`); keys,
    /// map keys and values are raw bytes (encode numbers with
    /// [`StateValue::encode`] / decode with [`StateValue::decode`], or keep
    /// text). Reads see this batch's own writes. Each read is one host call
    /// (not prefetched), so prefer value state for per-record reads.
    pub fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.flush_map_ops()?;
        self.host.map_get(name, key, map_key)
    }

    /// All entries of map state `name` of `key` as `(map_key, value)`
    /// pairs, ordered by map key (byte order); empty when there are none.
    /// The answer is bounded by the host's `limits.memory`: keep maps that
    /// are listed whole small.
    pub fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Entries, StateError> {
        self.flush_map_ops()?;
        self.host.map_entries(name, key)
    }

    /// Sets map state `name` of `key` at `map_key` to `value`. Buffered and
    /// applied with the batch's other writes.
    pub fn map_put(&mut self, name: &str, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.map_ops.push(state_op::MAP_PUT);
        for f in [name.as_bytes(), key, map_key, value] {
            lp::put(&mut self.map_ops, f);
        }
    }

    /// Removes the entry `map_key` of map state `name` of `key` (nothing
    /// when absent). Buffered like [`Context::map_put`].
    pub fn map_remove(&mut self, name: &str, key: &[u8], map_key: &[u8]) {
        self.map_ops.push(state_op::MAP_REMOVE);
        for f in [name.as_bytes(), key, map_key] {
            lp::put(&mut self.map_ops, f);
        }
    }

    /// Removes every entry of map state `name` of `key`. Buffered like
    /// [`Context::map_put`].
    pub fn map_clear(&mut self, name: &str, key: &[u8]) {
        self.map_ops.push(state_op::MAP_CLEAR);
        for f in [name.as_bytes(), key] {
            lp::put(&mut self.map_ops, f);
        }
    }

    /// Asks for [`crate::Operator::on_timer`] when `domain`'s clock reaches `timestamp`.
    pub fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.host.register_timer(domain, key, timestamp);
    }

    /// Deletes a timer registered earlier.
    pub fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.host.delete_timer(domain, key, timestamp);
    }

    /// The current event-time watermark (ms), `i64::MIN` before the first.
    pub fn watermark(&mut self) -> i64 {
        self.host.watermark()
    }

    /// Which input the record being processed came from: an index into
    /// [`OpenContext::inputs`](crate::OpenContext::inputs), the names of
    /// the operator's upstream nodes in the order of its `inputs` setting.
    /// Always 0 for an operator with one input, and in `on_timer` and
    /// `close`. A batch comes from one input, so the host is asked once
    /// per batch.
    ///
    /// ```
    /// # use weir_sdk::{Context, Error, Output, Record};
    /// # fn process(r: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
    /// let side = if ctx.input() == 0 { "orders" } else { "payments" };
    /// ctx.map_put(side, r.key.unwrap_or_default(), &r.timestamp.to_be_bytes(), r.value);
    /// # Ok(()) }
    /// ```
    pub fn input(&mut self) -> usize {
        *self.input.get_or_insert_with(|| self.host.input())
    }

    /// The host's processing time (ms since the Unix epoch).
    pub fn processing_time(&mut self) -> i64 {
        self.host.processing_time()
    }

    /// Writes a line to the host's log, tagged with this operator.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.host.log(level, message);
    }

    /// Fetches value states `names` for the keys of a batch (`keys[i]` is
    /// record `i`'s key), one host call per name, into positional slots.
    pub(crate) fn prefetch(&mut self, names: &'static [&'static str], keys: &[Option<&[u8]>]) -> Result<(), StateError> {
        let bad = || StateError::Invalid("malformed get-many response".into());
        let pf = &mut self.prefetch;
        pf.clear();
        pf.names = names;
        let mut req = Vec::new();
        let mut req_records = Vec::new();
        pf.slot_of.resize(keys.len(), u32::MAX);
        for (i, key) in keys.iter().enumerate() {
            if let Some(k) = key {
                lp::put(&mut req, k);
                req_records.push(i);
            }
        }
        for (p, name) in names.iter().enumerate() {
            let idx = self.name_index(name) as usize;
            self.prefetched[idx] = Some(p);
            let pf = &mut self.prefetch;
            if pf.vals.len() <= p {
                pf.vals.push(Vec::new());
                pf.arena.push(Vec::new());
            }
            if req_records.is_empty() {
                continue;
            }
            let resp = self.host.get_many(name, &req)?;
            let mut r = lp::Reader::new(&resp);
            for (j, &record) in req_records.iter().enumerate() {
                match r.entry().ok_or_else(bad)? {
                    lp::Entry::Repeat(k) => {
                        let first = *req_records.get(k as usize).filter(|_| (k as usize) < j).ok_or_else(bad)?;
                        pf.slot_of[record] = pf.slot_of[first];
                    }
                    entry => {
                        let slot = if p == 0 {
                            let key = keys[record].expect("requested keys exist");
                            let s = pf.slot_keys.len() as u32;
                            pf.slot_keys.push((pf.keys.len() as u32, key.len() as u32));
                            pf.keys.extend_from_slice(key);
                            pf.slot_of[record] = s;
                            s
                        } else {
                            pf.slot_of[record]
                        };
                        let mut val = Val { off: 0, len: 0, present: false, dirty: false };
                        if let lp::Entry::Value(v) = entry {
                            val = Val { off: pf.arena[p].len() as u32, len: v.len() as u32, present: true, dirty: false };
                            pf.arena[p].extend_from_slice(v);
                        }
                        if pf.vals[p].len() <= slot as usize {
                            pf.vals[p].resize(slot as usize + 1, Val { off: 0, len: 0, present: false, dirty: false });
                        }
                        pf.vals[p][slot as usize] = val;
                    }
                }
            }
        }
        Ok(())
    }

    fn flush_map_ops(&mut self) -> Result<(), StateError> {
        if self.map_ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.map_ops);
        self.host.apply(&ops)
    }

    /// Sends every buffered write to the host in one call.
    pub(crate) fn flush(&mut self) -> Result<(), StateError> {
        let mut ops = std::mem::take(&mut self.map_ops);
        for (idx, p) in self.prefetched.iter().enumerate() {
            let Some(p) = *p else { continue };
            let name = self.names[idx].as_bytes();
            let pf = &self.prefetch;
            for (slot, v) in pf.vals.get(p).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
                if !v.dirty {
                    continue;
                }
                let key = pf.key(slot as u32);
                if v.present {
                    ops.push(state_op::PUT);
                    lp::put(&mut ops, name);
                    lp::put(&mut ops, key);
                    lp::put(&mut ops, &pf.arena[p][v.off as usize..(v.off + v.len) as usize]);
                } else {
                    ops.push(state_op::DELETE);
                    lp::put(&mut ops, name);
                    lp::put(&mut ops, key);
                }
            }
        }
        for (key, slot, name) in self
            .cache
            .iter_mut()
            .zip(&self.names)
            .flat_map(|(map, name)| map.iter_mut().map(move |(k, s)| (k, s, name.as_bytes())))
            .filter(|(_, s, _)| s.dirty)
        {
            match &slot.value {
                Some(v) => {
                    ops.push(state_op::PUT);
                    lp::put(&mut ops, name);
                    lp::put(&mut ops, key);
                    lp::put(&mut ops, v);
                }
                None => {
                    ops.push(state_op::DELETE);
                    lp::put(&mut ops, name);
                    lp::put(&mut ops, key);
                }
            }
            slot.dirty = false;
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.host.apply(&ops)
    }

    /// Ends a batch: applies buffered writes and empties the read cache, which
    /// must not outlive the batch (state is the host's, not the plugin's).
    pub(crate) fn end_batch(&mut self) -> Result<(), StateError> {
        let flushed = self.flush();
        self.reset();
        flushed
    }

    /// Forgets cached reads and unflushed writes (after a failed batch).
    pub(crate) fn reset(&mut self) {
        self.cache.iter_mut().for_each(FxHashMap::clear);
        self.prefetch.clear();
        self.prefetched.iter_mut().for_each(|p| *p = None);
        self.map_ops.clear();
        self.input = None;
    }
}
