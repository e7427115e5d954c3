//! Keyed-state snapshot files of a checkpoint (`SnapshotReader`, and
//! `KeyedState::restore`, which a restore runs on every file naming key
//! groups the subtask owns), and async operators' in-flight snapshot files
//! (`weir_async::decode_snapshot`).
//!
//! Checks beyond "no panic": a file that reads back is re-encoded by
//! `SnapshotWriter` to the same bytes; restoring it into a subtask loads
//! only entries that were in the file; an in-flight file that decodes is
//! re-encoded to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_state::snapshot::{Entry, SnapshotReader, SnapshotWriter};
use weir_state::{KeyedState, TimerService};

fuzz_target!(|data: &[u8]| {
    in_flight(data);
    let Ok(reader) = SnapshotReader::new(data) else { return };
    let mut writer = SnapshotWriter::new(reader.max_parallelism(), reader.groups());
    let read = reader.for_each(0..u32::MAX, |e| match e {
        Entry::Value { name, key, value } => writer.value(name, key, value),
        Entry::Map { name, key, map_key, value } => writer.map_entry(name, key, map_key, value),
        Entry::Timer { event_time, key, timestamp } => writer.timer(event_time, key, timestamp),
    });
    if read.is_err() {
        return;
    }
    assert_eq!(writer.finish(), data, "a snapshot that reads back re-encodes to other bytes");

    // Restored by subtask 0 of 2, as a restore at parallelism 2 would.
    let max = reader.max_parallelism();
    if max == 0 || max > 32768 {
        return;
    }
    let mut state = KeyedState::new(0, 2, max);
    let mut timers = TimerService::new();
    state.restore(&mut timers, &[data]).expect("a file that reads back restores");
    let all = weir_fuzz::entries(data, 0..u32::MAX).expect("read above");
    for e in weir_fuzz::contents(&mut state) {
        assert!(all.contains(&e), "restored an entry that is not in the file: {e:?}");
    }
});

fn in_flight(data: &[u8]) {
    let Ok(records) = weir_async::decode_snapshot(data) else { return };
    let again = weir_async::encode_snapshot(records.iter().map(|(kg, r)| (*kg, r.as_slice())));
    assert_eq!(again, data, "an in-flight snapshot re-encodes to other bytes");
}
