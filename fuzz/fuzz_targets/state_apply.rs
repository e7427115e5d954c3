//! `state.apply`: the buffer of state writes a plugin hands the host at
//! the end of a call (`KeyedState::stage`).
//!
//! The first byte picks how the call goes (a read in the middle, which
//! applies staged writes early with an undo log; the buffer sent twice);
//! the rest is the buffer. Checks beyond "no panic":
//! - a refused buffer changes nothing, and is refused again;
//! - a rolled-back call leaves the state exactly as it was;
//! - a committed call leaves exactly what a plain model of the encoding
//!   (put, delete, map put, map remove, map clear) computes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use weir_format::{lp, state_op};
use weir_fuzz::{contents, owned_keys, seeded_state, Owned};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, ops)) = data.split_first() else { return };
    let (read_between, twice) = (mode & 1 != 0, mode & 2 != 0);
    let mut state = seeded_state();
    let probe = owned_keys(&state).remove(0);
    let before = contents(&mut state);

    let call = |state: &mut weir_state::KeyedState| {
        state.begin();
        let first = state.stage(ops);
        if read_between {
            state.get("s", &probe).expect("an owned key");
        }
        if twice && first.is_ok() {
            state.stage(ops).expect("a buffer accepted once is accepted again");
        }
        first
    };

    let first = call(&mut state);
    state.rollback();
    assert_eq!(contents(&mut state), before, "a rolled-back call left changes behind");

    let second = call(&mut state);
    assert_eq!(first, second, "the same buffer got another answer");
    state.commit().expect("the heap backend does not fail");
    let after = contents(&mut state);
    if second.is_err() {
        assert_eq!(after, before, "a refused buffer changed state");
        return;
    }
    let mut model = Model::from(&before);
    model.apply(ops);
    if twice {
        model.apply(ops);
    }
    assert_eq!(after, model.entries(), "state differs from the model of the apply encoding");
});

/// The apply encoding as plainly as it can be written.
#[derive(Default)]
struct Model {
    values: BTreeMap<(String, Vec<u8>), Vec<u8>>,
    maps: BTreeMap<(String, Vec<u8>), BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Model {
    fn from(entries: &[Owned]) -> Self {
        let mut m = Model::default();
        for (name, key, map_key, value) in entries.iter().cloned() {
            match map_key {
                None => {
                    m.values.insert((name, key), value);
                }
                Some(mk) => {
                    m.maps.entry((name, key)).or_default().insert(mk, value);
                }
            }
        }
        m
    }

    fn apply(&mut self, ops: &[u8]) {
        let mut r = lp::Reader::new(ops);
        let field = |r: &mut lp::Reader<'_>| r.bytes().expect("accepted, so well formed").to_vec();
        while let Some(op) = r.u8() {
            let name = String::from_utf8(field(&mut r)).expect("accepted, so UTF-8");
            let key = field(&mut r);
            let at = (name, key);
            match op {
                state_op::PUT => {
                    let v = field(&mut r);
                    self.values.insert(at, v);
                }
                state_op::DELETE => {
                    self.values.remove(&at);
                }
                state_op::MAP_PUT => {
                    let (mk, v) = (field(&mut r), field(&mut r));
                    self.maps.entry(at).or_default().insert(mk, v);
                }
                state_op::MAP_REMOVE => {
                    let mk = field(&mut r);
                    if let Some(m) = self.maps.get_mut(&at) {
                        m.remove(&mk);
                    }
                }
                state_op::MAP_CLEAR => {
                    self.maps.remove(&at);
                }
                other => panic!("accepted unknown operation {other}"),
            }
        }
    }

    fn entries(&self) -> Vec<Owned> {
        let mut out: Vec<Owned> = self.values.iter().map(|((n, k), v)| (n.clone(), k.clone(), None, v.clone())).collect();
        for ((n, k), m) in &self.maps {
            out.extend(m.iter().map(|(mk, v)| (n.clone(), k.clone(), Some(mk.clone()), v.clone())));
        }
        out.sort();
        out
    }
}
