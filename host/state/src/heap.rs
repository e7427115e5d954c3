//! The heap backend: hash maps in the task's memory.

use crate::snapshot::SnapshotWriter;
use crate::{Backend, Entries, SnapshotJob};
use hashbrown::HashMap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use weir_format::lp;

type Values = HashMap<Vec<u8>, Vec<u8>>;
/// Map state of one name: record key -> (map key -> value).
type Maps = HashMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Keyed state in hash maps: the fastest backend, bounded by memory.
///
/// A snapshot copies every entry into the snapshot file's layout on the
/// task thread (about 50 ns per entry); writing the file happens elsewhere.
#[derive(Debug, Default)]
pub struct HeapBackend {
    values: HashMap<String, Values>,
    maps: HashMap<String, Maps>,
}

impl Backend for HeapBackend {
    fn get(&self, name: &str, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.values.get(name).and_then(|m| m.get(key)).map(|v| Cow::Borrowed(v.as_slice()))
    }

    fn put(&mut self, name: &str, key: &[u8], value: &[u8]) {
        let map = match self.values.get_mut(name) {
            Some(m) => m,
            None => self.values.entry(name.to_owned()).or_default(),
        };
        match map.get_mut(key) {
            // The hot path: overwrite in place, no allocation.
            Some(slot) => {
                slot.clear();
                slot.extend_from_slice(value);
            }
            None => {
                map.insert(key.to_vec(), value.to_vec());
            }
        }
    }

    fn delete(&mut self, name: &str, key: &[u8]) {
        if let Some(m) = self.values.get_mut(name) {
            m.remove(key);
        }
    }

    fn map_get(&self, name: &str, key: &[u8], map_key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.maps.get(name).and_then(|m| m.get(key)).and_then(|m| m.get(map_key)).map(|v| Cow::Borrowed(v.as_slice()))
    }

    fn map_put(&mut self, name: &str, key: &[u8], map_key: &[u8], value: &[u8]) {
        let maps = match self.maps.get_mut(name) {
            Some(m) => m,
            None => self.maps.entry(name.to_owned()).or_default(),
        };
        let map = match maps.get_mut(key) {
            Some(m) => m,
            None => maps.entry(key.to_vec()).or_default(),
        };
        map.insert(map_key.to_vec(), value.to_vec());
    }

    fn map_remove(&mut self, name: &str, key: &[u8], map_key: &[u8]) {
        if let Some(maps) = self.maps.get_mut(name)
            && let Some(m) = maps.get_mut(key)
        {
            m.remove(map_key);
            if m.is_empty() {
                maps.remove(key);
            }
        }
    }

    fn map_clear(&mut self, name: &str, key: &[u8]) {
        if let Some(maps) = self.maps.get_mut(name) {
            maps.remove(key);
        }
    }

    fn map_entries(&self, name: &str, key: &[u8], limit: usize) -> Result<Entries, usize> {
        let Some(map) = self.maps.get(name).and_then(|m| m.get(key)) else { return Ok(Entries::new()) };
        let mut bytes = 0usize;
        let mut out = Entries::new();
        for (k, v) in map {
            bytes = bytes.saturating_add(k.len() + v.len());
            if bytes > limit {
                return Err(bytes);
            }
            out.push((k.clone(), v.clone()));
        }
        Ok(out)
    }

    fn snapshot(&mut self, mut out: SnapshotWriter) -> SnapshotJob {
        // The task thread only copies the entries into one flat buffer
        // (sequential writes, no hashing); sorting them into key groups
        // happens in the job, off the task thread.
        let bytes: usize = self.values.values().flat_map(|m| m.iter()).map(|(k, v)| k.len() + v.len() + 16).sum();
        let mut flat = Vec::with_capacity(bytes);
        for (name, m) in &self.values {
            lp::put(&mut flat, name.as_bytes());
            lp::put(&mut flat, &(m.len() as u64).to_le_bytes());
            for (k, v) in m {
                lp::put(&mut flat, k);
                lp::put(&mut flat, v);
            }
        }
        for (name, maps) in &self.maps {
            for (k, m) in maps {
                for (mk, v) in m {
                    out.map_entry(name, k, mk, v);
                }
            }
        }
        Box::new(move || {
            let mut r = lp::Reader::new(&flat);
            let bad = || "snapshot copy is inconsistent (a bug in weir)".to_owned();
            while !r.is_empty() {
                let name = std::str::from_utf8(r.bytes().ok_or_else(bad)?).map_err(|_| bad())?;
                let n = u64::from_le_bytes(r.bytes().and_then(|b| b.try_into().ok()).ok_or_else(bad)?);
                for _ in 0..n {
                    let k = r.bytes().ok_or_else(bad)?;
                    let v = r.bytes().ok_or_else(bad)?;
                    out.value(name, k, v);
                }
            }
            Ok(out.finish())
        })
    }

    fn len(&self) -> usize {
        self.values.values().map(HashMap::len).sum::<usize>() + self.maps.values().map(HashMap::len).sum::<usize>()
    }
}
