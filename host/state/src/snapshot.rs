//! The snapshot format of keyed state: one file per operator subtask,
//! indexed by key group, so that a restore at another parallelism reads
//! only the key groups each new subtask owns.
//!
//! ```text
//! magic "WEIRKS01" | max_parallelism u32 | first key group u32 | end key group u32
//! offsets: (end - first + 1) x u64, into the data section, one per key group plus the end
//! data: per key group, entries; each a tag byte then length-prefixed fields (weir_format::lp):
//!   1 value state   name key value
//!   2 map state     name key map-key value
//!   3 event timer   key timestamp(8 bytes LE)
//!   4 proc. timer   key timestamp(8 bytes LE)
//! ```
//!
//! Integers are little-endian. The file as a whole is checksummed by the
//! checkpoint store; the reader still checks every bound, so a damaged file
//! is an error, never a panic.

use std::ops::Range;
use weir_format::{keygroup, lp};

const MAGIC: &[u8; 8] = b"WEIRKS01";
const HEADER: usize = 8 + 12;

const VALUE: u8 = 1;
const MAP: u8 = 2;
const EVENT_TIMER: u8 = 3;
const PROCESSING_TIMER: u8 = 4;

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Value state `name` of `key`.
    Value {
        /// State name.
        name: &'a str,
        /// Record key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// One entry of map state `name` of `key`.
    Map {
        /// State name.
        name: &'a str,
        /// Record key.
        key: &'a [u8],
        /// Key within the map.
        map_key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// A registered timer.
    Timer {
        /// Event time (else processing time).
        event_time: bool,
        /// Record key.
        key: &'a [u8],
        /// When it fires, ms.
        timestamp: i64,
    },
}

/// Collects entries by key group and writes the snapshot file.
#[derive(Debug)]
pub struct SnapshotWriter {
    max_parallelism: u32,
    groups: Range<u32>,
    buckets: Vec<Vec<u8>>,
}

impl SnapshotWriter {
    /// A snapshot of the key groups `groups` of `max_parallelism`.
    pub fn new(max_parallelism: u32, groups: Range<u32>) -> Self {
        let buckets = groups.clone().map(|_| Vec::new()).collect();
        Self { max_parallelism, groups, buckets }
    }

    fn bucket(&mut self, key: &[u8]) -> &mut Vec<u8> {
        let kg = keygroup::of(key, self.max_parallelism);
        debug_assert!(self.groups.contains(&kg), "state of a key group this subtask does not own");
        let i = kg.saturating_sub(self.groups.start) as usize;
        let last = self.buckets.len() - 1;
        &mut self.buckets[i.min(last)]
    }

    /// Adds value state.
    pub fn value(&mut self, name: &str, key: &[u8], value: &[u8]) {
        let b = self.bucket(key);
        b.push(VALUE);
        lp::put(b, name.as_bytes());
        lp::put(b, key);
        lp::put(b, value);
    }

    /// Adds one map-state entry.
    pub fn map_entry(&mut self, name: &str, key: &[u8], map_key: &[u8], value: &[u8]) {
        let b = self.bucket(key);
        b.push(MAP);
        lp::put(b, name.as_bytes());
        lp::put(b, key);
        lp::put(b, map_key);
        lp::put(b, value);
    }

    /// Adds a timer.
    pub fn timer(&mut self, event_time: bool, key: &[u8], timestamp: i64) {
        let b = self.bucket(key);
        b.push(if event_time { EVENT_TIMER } else { PROCESSING_TIMER });
        lp::put(b, key);
        lp::put(b, &timestamp.to_le_bytes());
    }

    /// The file's bytes.
    pub fn finish(self) -> Vec<u8> {
        let data: usize = self.buckets.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(HEADER + 8 * (self.buckets.len() + 1) + data);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.max_parallelism.to_le_bytes());
        out.extend_from_slice(&self.groups.start.to_le_bytes());
        out.extend_from_slice(&self.groups.end.to_le_bytes());
        let mut offset = 0u64;
        out.extend_from_slice(&offset.to_le_bytes());
        for b in &self.buckets {
            offset += b.len() as u64;
            out.extend_from_slice(&offset.to_le_bytes());
        }
        for b in &self.buckets {
            out.extend_from_slice(b);
        }
        out
    }
}

/// A snapshot file that failed its checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keyed state snapshot is damaged: {0}")]
pub struct SnapshotError(pub String);

/// Reads a snapshot file.
#[derive(Debug)]
pub struct SnapshotReader<'a> {
    max_parallelism: u32,
    groups: Range<u32>,
    offsets: &'a [u8],
    data: &'a [u8],
}

impl<'a> SnapshotReader<'a> {
    /// Checks the header and index of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, SnapshotError> {
        let bad = |what: &str| SnapshotError(what.to_owned());
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("not a weir keyed-state snapshot (wrong magic number)"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let (max_parallelism, start, end) = (u32_at(8), u32_at(12), u32_at(16));
        if start > end || end > max_parallelism {
            return Err(bad(&format!("key groups {start}..{end} of {max_parallelism}")));
        }
        // In usize: `end - start + 1` overflows a u32 for 0..u32::MAX.
        let index = 8 * ((end - start) as usize + 1);
        let offsets = bytes.get(HEADER..HEADER + index).ok_or_else(|| bad("truncated index"))?;
        let data = &bytes[HEADER + index..];
        let reader = Self { max_parallelism, groups: start..end, offsets, data };
        // The first group starts the data: bytes before it would be read by no one.
        if reader.offset(0) != 0 {
            return Err(bad("the index does not start at the data section"));
        }
        let mut last = 0;
        for i in 0..=(end - start) as usize {
            let o = reader.offset(i);
            if o < last || o > data.len() as u64 {
                return Err(bad(&format!("index entry {i} points outside the data")));
            }
            last = o;
        }
        if last != data.len() as u64 {
            return Err(bad("data section length does not match its index"));
        }
        Ok(reader)
    }

    fn offset(&self, i: usize) -> u64 {
        u64::from_le_bytes(self.offsets[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    }

    /// Number of key groups of the job the snapshot was taken in.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key groups in this file.
    pub fn groups(&self) -> Range<u32> {
        self.groups.clone()
    }

    /// Calls `f` for every entry of the key groups in `wanted` (the
    /// intersection with this file's groups), checking that each entry's
    /// key belongs to the key group it is filed under: a restore must not
    /// load a key into a subtask that does not own it.
    pub fn for_each(&self, wanted: Range<u32>, mut f: impl FnMut(Entry<'a>)) -> Result<(), SnapshotError> {
        let from = wanted.start.max(self.groups.start);
        let to = wanted.end.min(self.groups.end);
        for group in from..to {
            let i = (group - self.groups.start) as usize;
            let (lo, hi) = (self.offset(i) as usize, self.offset(i + 1) as usize);
            let bad = |what: &str| SnapshotError(format!("{what} in the entries of key group {group}"));
            let mut r = lp::Reader::new(&self.data[lo..hi]);
            while let Some(tag) = r.u8() {
                let mut field = || r.bytes().ok_or_else(|| bad("truncated entry"));
                let entry = match tag {
                    VALUE | MAP => {
                        let name = std::str::from_utf8(field()?).map_err(|_| bad("state name not UTF-8"))?;
                        let key = field()?;
                        if tag == VALUE {
                            Entry::Value { name, key, value: field()? }
                        } else {
                            let map_key = field()?;
                            Entry::Map { name, key, map_key, value: field()? }
                        }
                    }
                    EVENT_TIMER | PROCESSING_TIMER => {
                        let key = field()?;
                        let ts = <[u8; 8]>::try_from(field()?).map_err(|_| bad("timer timestamp not 8 bytes"))?;
                        Entry::Timer { event_time: tag == EVENT_TIMER, key, timestamp: i64::from_le_bytes(ts) }
                    }
                    other => return Err(bad(&format!("unknown entry tag {other}"))),
                };
                let key = match &entry {
                    Entry::Value { key, .. } | Entry::Map { key, .. } | Entry::Timer { key, .. } => key,
                };
                let of = keygroup::of(key, self.max_parallelism);
                if of != group {
                    return Err(bad(&format!("a key of key group {of}")));
                }
                f(entry);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_reads_by_key_group() {
        let max = 16;
        let mut w = SnapshotWriter::new(max, 0..max);
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for k in &keys {
            w.value("sum", k.as_bytes(), k.as_bytes());
            w.map_entry("m", k.as_bytes(), b"a", b"1");
            w.timer(true, k.as_bytes(), 42);
        }
        let bytes = w.finish();
        let r = SnapshotReader::new(&bytes).unwrap();
        let mut all = 0;
        r.for_each(0..max, |_| all += 1).unwrap();
        assert_eq!(all, 600);
        // A reader of key groups 4..9 sees exactly the keys of those groups.
        let mut seen = Vec::new();
        r.for_each(4..9, |e| {
            if let Entry::Value { key, .. } = e {
                seen.push(String::from_utf8(key.to_vec()).unwrap());
            }
        })
        .unwrap();
        let expected: Vec<&String> = keys.iter().filter(|k| (4..9).contains(&keygroup::of(k.as_bytes(), max))).collect();
        assert_eq!(seen.len(), expected.len());
        assert!(expected.iter().all(|k| seen.contains(k)));
    }

    /// Issue 16, found writing the snapshot fuzz target (the input is
    /// `fuzz/corpus/snapshot/all-key-groups`): key groups `0..u32::MAX` made the index length `end - start + 1`
    /// overflow, and the restore panicked instead of reporting a damaged file.
    #[test]
    fn an_index_of_every_key_group_is_an_error_not_an_overflow() {
        let mut bytes = MAGIC.to_vec();
        for n in [u32::MAX, 0, u32::MAX] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(SnapshotReader::new(&bytes).unwrap_err().0, "truncated index");
    }

    /// Issue 16, found by the snapshot fuzz target
    /// (`fuzz/corpus/snapshot/index-skips-data`): an index whose first
    /// offset was not 0 was accepted, and the entries before it were
    /// silently not restored.
    #[test]
    fn an_index_that_skips_data_is_an_error() {
        let mut w = SnapshotWriter::new(2, 0..2);
        w.value("v", b"k1", b"x");
        w.value("v", b"k2", b"y");
        let mut bytes = w.finish();
        let len = (bytes.len() - HEADER - 8 * 3) as u64;
        // Every group starts and ends at the end of the data.
        for i in 0..3 {
            bytes[HEADER + 8 * i..HEADER + 8 * i + 8].copy_from_slice(&len.to_le_bytes());
        }
        assert_eq!(SnapshotReader::new(&bytes).unwrap_err().0, "the index does not start at the data section");
    }

    /// Issue 16, found writing the snapshot fuzz target: an entry filed under a key group its key
    /// does not hash to was restored into a subtask that does not own the
    /// key, and the next snapshot filed it under a group it does not hold.
    #[test]
    fn an_entry_in_another_key_group_is_an_error() {
        let max = 8;
        let mut w = SnapshotWriter::new(max, 0..max);
        w.value("v", b"k1", b"x");
        let mut bytes = w.finish();
        let kg = keygroup::of(b"k1", max) as usize;
        let other = (kg + 1) % max as usize;
        // Move the entry's bytes to the other group by rewriting the index:
        // every offset up to `kg` (or from `other`) points at its start or end.
        let len = bytes.len() - HEADER - 8 * (max as usize + 1);
        for i in 0..=max as usize {
            let o: u64 = if i <= other { 0 } else { len as u64 };
            bytes[HEADER + 8 * i..HEADER + 8 * i + 8].copy_from_slice(&o.to_le_bytes());
        }
        let r = SnapshotReader::new(&bytes).unwrap();
        let e = r.for_each(0..max, |_| ()).unwrap_err();
        assert!(e.0.contains(&format!("key group {other}")) && e.0.contains(&format!("a key of key group {kg}")), "{e}");
        // A reader of the entry's own group alone does not see it.
        let mut n = 0;
        r.for_each(kg as u32..kg as u32 + 1, |_| n += 1).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut w = SnapshotWriter::new(8, 0..8);
        for i in 0..50 {
            w.value("v", format!("{i}").as_bytes(), b"x");
        }
        let bytes = w.finish();
        for cut in [0, 7, 20, 40, bytes.len() - 1] {
            assert!(SnapshotReader::new(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A damaged tag inside the data section.
        let mut damaged = bytes.clone();
        let data_start = HEADER + 8 * 9;
        damaged[data_start] = 99;
        let r = SnapshotReader::new(&damaged).unwrap();
        assert!(r.for_each(0..8, |_| ()).is_err());
    }
}
