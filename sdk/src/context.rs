//! The operator's view of the host: keyed state, timers, logging.

use crate::hash::FxHashMap;
use crate::{StateValue, TimeDomain};
use std::fmt;
use weir_format::{lp, state_op};

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
pub trait Host {
    /// Value state for one key.
    fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Value state for many keys (length-prefixed in, length-prefixed out).
    fn get_many(&mut self, name: &str, keys: &[u8]) -> Result<Vec<u8>, StateError>;
    /// Map state entry.
    fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// All map state entries of a key, ordered by map key.
    fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError>;
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

/// Per-batch view of host state, timers and logging.
///
/// Value-state reads go through a cache that lives for one batch;
/// writes are buffered and sent to the host in one call when the batch ends.
pub struct Context {
    host: Box<dyn Host>,
    names: Vec<String>,
    /// Per state name (indexed like `names`): key -> cached value.
    cache: Vec<FxHashMap<Vec<u8>, Slot>>,
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
        Self { host, names: Vec::new(), cache: Vec::new(), map_ops: Vec::new(), scratch: Vec::new() }
    }

    fn name_index(&mut self, name: &str) -> u16 {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i as u16,
            None => {
                self.names.push(name.to_owned());
                self.cache.push(FxHashMap::default());
                (self.names.len() - 1) as u16
            }
        }
    }

    /// Reads value state `name` for `key` as raw bytes.
    pub fn get_bytes(&mut self, name: &str, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        let idx = self.name_index(name) as usize;
        // Two lookups instead of the entry API so the common hit does not
        // allocate an owned key.
        if !self.cache[idx].contains_key(key) {
            let value = self.host.get(name, key)?;
            self.cache[idx].insert(key.to_vec(), Slot { value, dirty: false });
        }
        Ok(self.cache[idx].get(key).and_then(|s| s.value.as_deref()))
    }

    /// Reads value state `name` for `key`, decoded as `T`.
    ///
    /// Bytes that do not decode as `T` are an [`StateError::Invalid`].
    pub fn get<T: StateValue>(&mut self, name: &str, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.get_bytes(name, key)? {
            None => Ok(None),
            Some(b) => T::decode(b)
                .map(Some)
                .ok_or_else(|| StateError::Invalid(format!("state {name:?} holds {} bytes that do not decode as {}", b.len(), std::any::type_name::<T>()))),
        }
    }

    /// Sets value state `name` for `key`. Applied when the batch ends.
    pub fn put<T: StateValue>(&mut self, name: &str, key: &[u8], value: &T) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        value.encode(&mut buf);
        self.put_bytes(name, key, &buf);
        self.scratch = buf;
    }

    /// Sets value state `name` for `key` to raw bytes. Applied when the batch ends.
    pub fn put_bytes(&mut self, name: &str, key: &[u8], value: &[u8]) {
        let idx = self.name_index(name) as usize;
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
        self.cache[idx].insert(key.to_vec(), Slot { value: None, dirty: true });
    }

    /// Reads map state `name` of `key` at `map_key`.
    pub fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.flush_map_ops()?;
        self.host.map_get(name, key, map_key)
    }

    /// All entries of map state `name` of `key`, ordered by map key.
    pub fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.flush_map_ops()?;
        self.host.map_entries(name, key)
    }

    /// Sets map state `name` of `key` at `map_key`.
    pub fn map_put(&mut self, name: &str, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.map_ops.push(state_op::MAP_PUT);
        for f in [name.as_bytes(), key, map_key, value] {
            lp::put(&mut self.map_ops, f);
        }
    }

    /// Removes map state `name` of `key` at `map_key`.
    pub fn map_remove(&mut self, name: &str, key: &[u8], map_key: &[u8]) {
        self.map_ops.push(state_op::MAP_REMOVE);
        for f in [name.as_bytes(), key, map_key] {
            lp::put(&mut self.map_ops, f);
        }
    }

    /// Removes every entry of map state `name` of `key`.
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

    /// The host's processing time (ms since the Unix epoch).
    pub fn processing_time(&mut self) -> i64 {
        self.host.processing_time()
    }

    /// Writes a line to the host's log, tagged with this operator.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.host.log(level, message);
    }

    /// Fetches value states `names` for every key yielded by `keys`, in one
    /// host call per name, into the batch cache.
    pub(crate) fn prefetch<'k>(&mut self, names: &[&str], keys: impl Iterator<Item = &'k [u8]> + Clone) -> Result<(), StateError> {
        for name in names {
            let idx = self.name_index(name) as usize;
            let mut wanted: Vec<&[u8]> = Vec::new();
            let mut req = Vec::new();
            for key in keys.clone() {
                if !self.cache[idx].contains_key(key) {
                    self.cache[idx].insert(key.to_vec(), Slot { value: None, dirty: false });
                    lp::put(&mut req, key);
                    wanted.push(key);
                }
            }
            if wanted.is_empty() {
                continue;
            }
            let resp = self.host.get_many(name, &req)?;
            let mut r = lp::Reader::new(&resp);
            for key in wanted {
                let value = r.opt().ok_or_else(|| StateError::Invalid("short get-many response".into()))?;
                if let Some(slot) = self.cache[idx].get_mut(key) {
                    slot.value = value.map(<[u8]>::to_vec);
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
        self.map_ops.clear();
    }
}
