//! The heap backend: hash maps in the task's memory.

use crate::snapshot::SnapshotWriter;
use crate::{Backend, Entries, SnapshotJob};
use hashbrown::HashMap;
use std::borrow::Cow;
use std::collections::BTreeMap;

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

    fn map_entries(&self, name: &str, key: &[u8]) -> Entries {
        self.maps
            .get(name)
            .and_then(|m| m.get(key))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn snapshot(&mut self, mut out: SnapshotWriter) -> SnapshotJob {
        for (name, m) in &self.values {
            for (k, v) in m {
                out.value(name, k, v);
            }
        }
        for (name, maps) in &self.maps {
            for (k, m) in maps {
                for (mk, v) in m {
                    out.map_entry(name, k, mk, v);
                }
            }
        }
        Box::new(move || Ok(out.finish()))
    }

    fn len(&self) -> usize {
        self.values.values().map(HashMap::len).sum::<usize>() + self.maps.values().map(HashMap::len).sum::<usize>()
    }
}
