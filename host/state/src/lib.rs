//! Keyed state and timers, kept by the host on behalf of an operator subtask.
//!
//! State belongs to the host, not to the plugin: it outlives a plugin
//! instance (a trap, a hot reload), and the host snapshots and restores it
//! without the plugin's help. Every entry is addressed by a state name and a
//! record key; keys map to key groups ([`weir_format::keygroup`]) and a
//! subtask may only touch the key groups it owns, so a restore at another
//! parallelism can move whole key groups between subtasks.
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

mod timers;

pub use timers::TimerService;

use hashbrown::HashMap;
use std::collections::BTreeMap;
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
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::KeyNotOwned => f.write_str("key owned by another subtask"),
            StateError::TooLarge(n) => write!(f, "key or value larger than {n} bytes"),
            StateError::Invalid(s) => write!(f, "invalid request: {s}"),
        }
    }
}

impl std::error::Error for StateError {}

type Map = HashMap<Vec<u8>, Vec<u8>>;
/// Map state of one name: record key -> (map key -> value).
type MapState = HashMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;
/// Entries of one map state, ordered by map key.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug)]
enum Undo {
    Value { name: String, key: Vec<u8>, old: Option<Vec<u8>> },
    Map { name: String, key: Vec<u8>, old: Option<BTreeMap<Vec<u8>, Vec<u8>>> },
}

/// The keyed state of one operator subtask (heap backend).
pub struct KeyedState {
    max_parallelism: u32,
    owned: Range<u32>,
    values: HashMap<String, Map>,
    maps: HashMap<String, MapState>,
    staged: Vec<u8>,
    undo: Vec<Undo>,
    in_call: bool,
}

impl fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedState")
            .field("key_groups", &self.owned)
            .field("value_states", &self.values.keys().collect::<Vec<_>>())
            .field("map_states", &self.maps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyedState {
    /// Empty state for subtask `subtask` of `parallelism`, with `max_parallelism` key groups.
    pub fn new(subtask: u32, parallelism: u32, max_parallelism: u32) -> Self {
        Self {
            max_parallelism,
            owned: keygroup::range(subtask, max_parallelism, parallelism),
            values: HashMap::default(),
            maps: HashMap::default(),
            staged: Vec::new(),
            undo: Vec::new(),
            in_call: false,
        }
    }

    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> Range<u32> {
        self.owned.clone()
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StateError> {
        if key.len() > MAX_ENTRY_BYTES {
            return Err(StateError::TooLarge(MAX_ENTRY_BYTES as u64));
        }
        if self.owned.len() as u32 != self.max_parallelism && !self.owned.contains(&keygroup::of(key, self.max_parallelism)) {
            return Err(StateError::KeyNotOwned);
        }
        Ok(())
    }

    /// Starts a plugin call: writes are staged until [`Self::commit`].
    pub fn begin(&mut self) {
        debug_assert!(self.staged.is_empty() && self.undo.is_empty());
        self.in_call = true;
    }

    /// The call succeeded: apply its writes.
    pub fn commit(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        self.apply_unchecked(&staged, false);
        self.staged = staged;
        self.staged.clear();
        self.undo.clear();
        self.in_call = false;
    }

    /// The call failed: forget its writes.
    pub fn rollback(&mut self) {
        self.staged.clear();
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Value { name, key, old } => {
                    let m = self.values.entry(name).or_default();
                    match old {
                        Some(v) => m.insert(key, v),
                        None => m.remove(&key),
                    };
                }
                Undo::Map { name, key, old } => {
                    let m = self.maps.entry(name).or_default();
                    match old {
                        Some(v) => m.insert(key, v),
                        None => m.remove(&key),
                    };
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
    pub fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        self.check_key(key)?;
        self.materialize();
        Ok(self.values.get(name).and_then(|m| m.get(key)).map(Vec::as_slice))
    }

    /// Value state `name` for many keys, in the `get-many` encoding: a key
    /// that repeats an earlier one of the request is answered with a
    /// reference to it.
    pub fn get_many(&mut self, name: &str, keys: &[u8], out: &mut Vec<u8>) -> Result<(), StateError> {
        self.materialize();
        let map = self.values.get(name);
        let mut seen: HashMap<&[u8], u32> = HashMap::default();
        let mut r = lp::Reader::new(keys);
        let mut i = 0u32;
        while !r.is_empty() {
            let key = r.bytes().ok_or_else(|| StateError::Invalid("truncated key list in get-many".into()))?;
            match seen.entry(key) {
                hashbrown::hash_map::Entry::Occupied(first) => lp::put_repeat(out, *first.get()),
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    self.check_key(key)?;
                    slot.insert(i);
                    lp::put_opt(out, map.and_then(|m| m.get(key)).map(Vec::as_slice));
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Map state `name` of `key` at `map_key`.
    pub fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        self.check_key(key)?;
        self.materialize();
        Ok(self.maps.get(name).and_then(|m| m.get(key)).and_then(|m| m.get(map_key)).map(Vec::as_slice))
    }

    /// All map state entries of `name` for `key`, ordered by map key.
    pub fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Entries, StateError> {
        self.check_key(key)?;
        self.materialize();
        Ok(self
            .maps
            .get(name)
            .and_then(|m| m.get(key))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    /// Validates a `state.apply` buffer completely (format, key ownership,
    /// sizes) and stages it. A refused buffer stages nothing.
    pub fn stage(&mut self, ops: &[u8]) -> Result<(), StateError> {
        self.validate(ops)?;
        if self.in_call {
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
        while let Some(op) = r.u8() {
            let name = std::str::from_utf8(field(&mut r)).expect("validated");
            let key = field(&mut r);
            match op {
                state_op::PUT | state_op::DELETE => {
                    let map = match self.values.get_mut(name) {
                        Some(m) => m,
                        None => self.values.entry(name.to_owned()).or_default(),
                    };
                    let new = (op == state_op::PUT).then(|| field(&mut r));
                    let old = match (new, map.get_mut(key)) {
                        (Some(v), Some(slot)) if !undo => {
                            // The hot path: overwrite in place, no allocation.
                            slot.clear();
                            slot.extend_from_slice(v);
                            continue;
                        }
                        (Some(v), _) => map.insert(key.to_vec(), v.to_vec()),
                        (None, _) => map.remove(key),
                    };
                    if undo {
                        self.undo.push(Undo::Value { name: name.to_owned(), key: key.to_vec(), old });
                    }
                }
                _ => {
                    let maps = self.maps.entry(name.to_owned()).or_default();
                    if undo {
                        self.undo.push(Undo::Map { name: name.to_owned(), key: key.to_vec(), old: maps.get(key).cloned() });
                    }
                    match op {
                        state_op::MAP_PUT => {
                            let mk = field(&mut r);
                            let v = field(&mut r);
                            maps.entry(key.to_vec()).or_default().insert(mk.to_vec(), v.to_vec());
                        }
                        state_op::MAP_REMOVE => {
                            let mk = field(&mut r);
                            if let Some(m) = maps.get_mut(key) {
                                m.remove(mk);
                                if m.is_empty() {
                                    maps.remove(key);
                                }
                            }
                        }
                        _ => {
                            maps.remove(key);
                        }
                    }
                }
            }
        }
    }

    /// Number of value-state entries (all names).
    pub fn len(&self) -> usize {
        self.values.values().map(HashMap::len).sum::<usize>() + self.maps.values().map(HashMap::len).sum::<usize>()
    }

    /// True when no state is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(s.get("sum", b"a").unwrap(), None);
        s.begin();
        s.stage(&ops).unwrap();
        s.commit();
        assert_eq!(s.get("sum", b"a").unwrap(), Some(&b"1"[..]));
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
        assert_eq!(s.get("sum", b"a").unwrap(), Some(&b"2"[..]));
        assert_eq!(s.map_get("m", b"a", b"x").unwrap(), Some(&b"y"[..]));
        s.rollback();
        assert_eq!(s.get("sum", b"a").unwrap(), Some(&b"1"[..]));
        assert_eq!(s.get("sum", b"b").unwrap(), None);
        assert_eq!(s.map_get("m", b"a", b"x").unwrap(), None);
    }

    #[test]
    fn foreign_keys_and_broken_buffers_are_refused_whole() {
        // Two subtasks split 128 key groups; find a key the second one owns.
        let mut s0 = KeyedState::new(0, 2, 128);
        let foreign = (0..1000u32).map(|i| format!("k{i}")).find(|k| keygroup::of(k.as_bytes(), 128) >= 64).unwrap();
        assert_eq!(s0.get("x", foreign.as_bytes()), Err(StateError::KeyNotOwned));
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
}
