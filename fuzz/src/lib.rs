//! What the fuzz targets share: a keyed state with entries in it, and its
//! contents read back through a snapshot (the one view of every entry
//! that does not depend on the backend's hash order).

use weir_format::{keygroup, lp, state_op};
use weir_state::snapshot::{Entry, SnapshotReader};
use weir_state::{KeyedState, TimerService};

/// Key groups of the job in [`seeded_state`].
pub const MAX_PARALLELISM: u32 = 8;

/// One entry of keyed state, owned: `(name, key, map key, value)`, the
/// map key `None` for value state.
pub type Owned = (String, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

/// Subtask 0 of 2 (so some keys belong to the other subtask), holding
/// value state `s` and map state `m` for the keys `k0`..`k15` it owns.
pub fn seeded_state() -> KeyedState {
    let mut state = KeyedState::new(0, 2, MAX_PARALLELISM);
    let mut ops = Vec::new();
    for key in owned_keys(&state) {
        ops.push(state_op::PUT);
        lp::put(&mut ops, b"s");
        lp::put(&mut ops, &key);
        lp::put(&mut ops, &[key.len() as u8; 3]);
        ops.push(state_op::MAP_PUT);
        lp::put(&mut ops, b"m");
        lp::put(&mut ops, &key);
        lp::put(&mut ops, b"a");
        lp::put(&mut ops, &key);
    }
    state.stage(&ops).expect("the seed writes only owned keys");
    state
}

/// The keys among `k0`..`k15` that `state` owns.
pub fn owned_keys(state: &KeyedState) -> Vec<Vec<u8>> {
    (0..16)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|k| state.key_groups().contains(&keygroup::of(k, state.max_parallelism())))
        .collect()
}

/// Every entry of `state`, sorted.
pub fn contents(state: &mut KeyedState) -> Vec<Owned> {
    let bytes = state.snapshot(&TimerService::new())().expect("a snapshot of heap state");
    let mut out = entries(&bytes, 0..u32::MAX).expect("a snapshot weir wrote reads back");
    out.sort();
    out
}

/// The state entries (not timers) of key groups `groups` of snapshot file `bytes`, in file order.
pub fn entries(bytes: &[u8], groups: std::ops::Range<u32>) -> Result<Vec<Owned>, String> {
    let reader = SnapshotReader::new(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    reader
        .for_each(groups, |e| match e {
            Entry::Value { name, key, value } => out.push((name.to_owned(), key.to_vec(), None, value.to_vec())),
            Entry::Map { name, key, map_key, value } => out.push((name.to_owned(), key.to_vec(), Some(map_key.to_vec()), value.to_vec())),
            Entry::Timer { .. } => {}
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}
