//! `state.get-many`: the list of keys a plugin asks for in one call
//! (`KeyedState::get_many`), and the answer's encoding.
//!
//! Checks beyond "no panic": a well-formed list of owned keys is
//! answered with exactly one entry per key, in order, each the value
//! `get` returns, a repeated key as a reference to its first occurrence;
//! anything else is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use weir_format::lp::{self, Entry};
use weir_fuzz::seeded_state;

fuzz_target!(|keys: &[u8]| {
    let mut state = seeded_state();
    let mut out = Vec::new();
    let answer = state.get_many("s", keys, &mut out);

    let mut requested = Vec::new();
    let mut r = lp::Reader::new(keys);
    let mut well_formed = true;
    while !r.is_empty() {
        match r.bytes() {
            Some(k) => requested.push(k),
            None => {
                well_formed = false;
                break;
            }
        }
    }
    if answer.is_err() {
        let refusable = !well_formed || requested.iter().any(|k| state.get("s", k).is_err());
        assert!(refusable, "a well-formed list of owned keys was refused: {answer:?}");
        return;
    }
    assert!(well_formed, "a malformed key list was answered");
    let mut first: HashMap<&[u8], u32> = HashMap::new();
    let mut got = lp::Reader::new(&out);
    for (i, key) in requested.iter().enumerate() {
        let entry = got.entry().expect("one entry per key");
        let stored = state.get("s", key).expect("answered, so owned").map(|v| v.into_owned());
        match entry {
            Entry::Repeat(n) => assert_eq!(first.get(key), Some(&n), "key {i} refers to entry {n}"),
            Entry::Value(v) => {
                assert!(first.insert(key, i as u32).is_none(), "a repeated key answered again");
                assert_eq!(Some(v.to_vec()), stored);
            }
            Entry::Absent => {
                assert!(first.insert(key, i as u32).is_none(), "a repeated key answered again");
                assert_eq!(stored, None);
            }
        }
    }
    assert!(got.is_empty(), "more entries than keys");
});
