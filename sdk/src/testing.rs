//! Native test harness: run an [`Operator`] with `cargo test`, no Wasm needed.
//!
//! The harness drives the same batch loop as a component (state prefetch,
//! per-batch write buffering, error handling) against an in-memory host.
//!
//! ```
//! # use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};
//! # struct Count;
//! # impl Operator for Count {
//! #     type Config = weir_sdk::NoConfig;
//! #     fn open(_: weir_sdk::NoConfig, _: &OpenContext) -> Result<Self, Error> { Ok(Count) }
//! #     fn process(&mut self, r: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
//! #         let key = r.key.unwrap_or_default();
//! #         let n = ctx.get::<u64>("n", key)?.unwrap_or(0) + 1;
//! #         ctx.put("n", key, &n);
//! #         out.emit(Some(key), n.to_string().as_bytes(), r.timestamp);
//! #         Ok(())
//! #     }
//! # }
//! use weir_sdk::testing::{record, Harness};
//!
//! let mut h = Harness::<Count>::open("{}").unwrap();
//! h.process(&[record(Some("a"), "x"), record(Some("a"), "y")]).unwrap();
//! assert_eq!(h.state::<u64>("n", b"a"), Some(2));
//! ```

use crate::context::{Host, LogLevel, StateError};
use crate::rt::Runtime;
use crate::{OpenContext, Operator, StateValue, TimeDomain, Timer};
pub use crate::Rejected;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use weir_format::{lp, state_op, BatchWriter, Frames};

/// A record owned by the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Vec<u8>,
    /// Event time (ms).
    pub timestamp: i64,
    /// Headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl OwnedRecord {
    /// The value as UTF-8 text (panics if it is not).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.value).expect("record value is not UTF-8")
    }
}

/// A record with a text key and value and timestamp 0.
pub fn record(key: Option<&str>, value: &str) -> OwnedRecord {
    OwnedRecord { key: key.map(|k| k.as_bytes().to_vec()), value: value.as_bytes().to_vec(), timestamp: 0, headers: Vec::new() }
}

/// One key's map state.
pub type MapEntries = BTreeMap<Vec<u8>, Vec<u8>>;

/// The in-memory state of a [`MemoryHost`].
#[derive(Debug, Default)]
pub struct MemoryState {
    /// Value state: (state name, key) -> value.
    pub values: BTreeMap<(String, Vec<u8>), Vec<u8>>,
    /// Map state: (state name, key) -> map.
    pub maps: BTreeMap<(String, Vec<u8>), MapEntries>,
    /// Registered timers.
    pub timers: BTreeSet<Timer>,
    /// Current watermark.
    pub watermark: i64,
    /// Current processing time.
    pub processing_time: i64,
    /// Log lines written by the operator.
    pub logs: Vec<(LogLevel, String)>,
    /// The operator's input names ([`Harness::open_with_inputs`]).
    pub inputs: Vec<String>,
    /// The input of the batch being processed ([`Harness::process_input`]).
    pub input: usize,
}

/// An in-memory [`Host`], for native tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryHost {
    /// Shared with the [`Harness`] so a test can inspect and change it.
    pub state: SharedState,
}

/// A [`MemoryHost`]'s state, shared between the host and the test (a
/// host is `Send`, so this is a mutex, borrowed like a `RefCell`).
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<Mutex<MemoryState>>);

impl SharedState {
    /// Reads the state: `h.host().state.borrow().values`.
    pub fn borrow(&self) -> MutexGuard<'_, MemoryState> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the state: `h.host().state.borrow_mut().watermark = 10`.
    pub fn borrow_mut(&self) -> MutexGuard<'_, MemoryState> {
        self.borrow()
    }
}

enum Op<'a> {
    Put(&'a str, &'a [u8], &'a [u8]),
    Delete(&'a str, &'a [u8]),
    MapPut(&'a str, &'a [u8], &'a [u8], &'a [u8]),
    MapRemove(&'a str, &'a [u8], &'a [u8]),
    MapClear(&'a str, &'a [u8]),
}

/// Decodes a `state.apply` buffer completely, so a broken one changes nothing.
fn decode_ops(ops: &[u8]) -> Result<Vec<Op<'_>>, StateError> {
    let bad = || StateError::Invalid("truncated or unknown state operation".into());
    let mut r = lp::Reader::new(ops);
    let mut out = Vec::new();
    while !r.is_empty() {
        let op = r.u8().ok_or_else(bad)?;
        let name = std::str::from_utf8(r.bytes().ok_or_else(bad)?).map_err(|_| bad())?;
        let key = r.bytes().ok_or_else(bad)?;
        out.push(match op {
            state_op::PUT => Op::Put(name, key, r.bytes().ok_or_else(bad)?),
            state_op::DELETE => Op::Delete(name, key),
            state_op::MAP_PUT => {
                let mk = r.bytes().ok_or_else(bad)?;
                Op::MapPut(name, key, mk, r.bytes().ok_or_else(bad)?)
            }
            state_op::MAP_REMOVE => Op::MapRemove(name, key, r.bytes().ok_or_else(bad)?),
            state_op::MAP_CLEAR => Op::MapClear(name, key),
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

impl Host for MemoryHost {
    fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.state.borrow().values.get(&(name.to_owned(), key.to_vec())).cloned())
    }
    fn get_many(&mut self, name: &str, keys: &[u8]) -> Result<Vec<u8>, StateError> {
        let mut r = lp::Reader::new(keys);
        let mut out = Vec::new();
        let mut seen: BTreeMap<&[u8], u32> = BTreeMap::new();
        let mut i = 0u32;
        while !r.is_empty() {
            let key = r.bytes().ok_or_else(|| StateError::Invalid("truncated key list".into()))?;
            if let Some(first) = seen.get(key) {
                lp::put_repeat(&mut out, *first);
            } else {
                let v = self.get(name, key)?;
                lp::put_opt(&mut out, v.as_deref());
                seen.insert(key, i);
            }
            i += 1;
        }
        Ok(out)
    }
    fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.state.borrow().maps.get(&(name.to_owned(), key.to_vec())).and_then(|m| m.get(map_key).cloned()))
    }
    fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<crate::context::Entries, StateError> {
        Ok(self
            .state
            .borrow()
            .maps
            .get(&(name.to_owned(), key.to_vec()))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
    fn apply(&mut self, ops: &[u8]) -> Result<(), StateError> {
        let ops = decode_ops(ops)?;
        let mut st = self.state.borrow_mut();
        for op in ops {
            match op {
                Op::Put(n, k, v) => {
                    st.values.insert((n.to_owned(), k.to_vec()), v.to_vec());
                }
                Op::Delete(n, k) => {
                    st.values.remove(&(n.to_owned(), k.to_vec()));
                }
                Op::MapPut(n, k, mk, v) => {
                    st.maps.entry((n.to_owned(), k.to_vec())).or_default().insert(mk.to_vec(), v.to_vec());
                }
                Op::MapRemove(n, k, mk) => {
                    if let Some(m) = st.maps.get_mut(&(n.to_owned(), k.to_vec())) {
                        m.remove(mk);
                    }
                }
                Op::MapClear(n, k) => {
                    st.maps.remove(&(n.to_owned(), k.to_vec()));
                }
            }
        }
        Ok(())
    }
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.state.borrow_mut().timers.insert(Timer { domain, key: key.to_vec(), timestamp });
    }
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.state.borrow_mut().timers.remove(&Timer { domain, key: key.to_vec(), timestamp });
    }
    fn watermark(&mut self) -> i64 {
        self.state.borrow().watermark
    }
    fn processing_time(&mut self) -> i64 {
        self.state.borrow().processing_time
    }
    fn input(&mut self) -> usize {
        self.state.borrow().input
    }
    fn input_names(&mut self) -> Vec<String> {
        self.state.borrow().inputs.clone()
    }
    fn log(&mut self, level: LogLevel, message: &str) {
        self.state.borrow_mut().logs.push((level, message.to_owned()));
    }
}

/// Runs one operator instance natively.
pub struct Harness<O: Operator> {
    rt: Runtime<O>,
    host: MemoryHost,
}

impl<O: Operator> std::fmt::Debug for Harness<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("host", &self.host).finish()
    }
}

impl<O: Operator> Harness<O> {
    /// Opens the operator with a JSON config, as subtask 0 of 1.
    pub fn open(config_json: &str) -> Result<Self, String> {
        Self::open_as(config_json, 0, 1)
    }

    /// Opens the operator with a JSON config as subtask `subtask` of `parallelism`.
    pub fn open_as(config_json: &str, subtask: u32, parallelism: u32) -> Result<Self, String> {
        Self::open_with_inputs(config_json, subtask, parallelism, &["input"])
    }

    /// Opens an operator with several inputs (a join: `&["orders",
    /// "payments"]`), named as the pipeline file's `inputs` would name
    /// them; feed each with [`Harness::process_input`].
    pub fn open_with_inputs(config_json: &str, subtask: u32, parallelism: u32, inputs: &[&str]) -> Result<Self, String> {
        let host = MemoryHost::default();
        let inputs: Vec<String> = inputs.iter().map(|&s| s.to_owned()).collect();
        host.state.borrow_mut().inputs = inputs.clone();
        let info = OpenContext { pipeline: "test".into(), operator: "op".into(), subtask, parallelism, inputs };
        let rt = Runtime::open(info, config_json, Box::new(host.clone()))?;
        Ok(Self { rt, host })
    }

    /// Processes one batch; returns its outputs, or the rejected record.
    pub fn process(&mut self, records: &[OwnedRecord]) -> Result<Vec<OwnedRecord>, Rejected> {
        self.process_input(0, records)
    }

    /// Processes one batch that arrived on input `input` (an index into
    /// the names given to [`Harness::open_with_inputs`]).
    pub fn process_input(&mut self, input: usize, records: &[OwnedRecord]) -> Result<Vec<OwnedRecord>, Rejected> {
        let n = self.host.state.borrow().inputs.len();
        assert!(input < n, "input {input} of an operator with {n} input(s) (see Harness::open_with_inputs)");
        let mut w = BatchWriter::new();
        for r in records {
            let headers: Vec<(&[u8], &[u8])> = r.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            w.push(r.key.as_deref(), &r.value, r.timestamp, &headers);
        }
        self.host.state.borrow_mut().input = input;
        let out = self.process_raw(&w.finish());
        self.host.state.borrow_mut().input = 0;
        out
    }

    /// Processes one batch given in frame format.
    pub fn process_raw(&mut self, batch: &[u8]) -> Result<Vec<OwnedRecord>, Rejected> {
        let out = self.rt.process(batch)?;
        Ok(decode(&out))
    }

    /// Advances `domain`'s clock to `time` and fires every timer due, in order.
    pub fn advance(&mut self, domain: TimeDomain, time: i64) -> Result<Vec<OwnedRecord>, Rejected> {
        let due: Vec<Timer> = {
            let mut st = self.host.state.borrow_mut();
            match domain {
                TimeDomain::EventTime => st.watermark = time,
                TimeDomain::ProcessingTime => st.processing_time = time,
            }
            let due: Vec<Timer> = st.timers.iter().filter(|t| t.domain == domain && t.timestamp <= time).cloned().collect();
            for t in &due {
                st.timers.remove(t);
            }
            due
        };
        let out = self.rt.on_timer(due)?;
        Ok(decode(&out))
    }

    /// Signals the end of input.
    pub fn close(&mut self) -> Result<Vec<OwnedRecord>, String> {
        self.rt.close().map(|b| decode(&b))
    }

    /// Reads value state `name` for `key` as `T`.
    pub fn state<T: StateValue>(&self, name: &str, key: &[u8]) -> Option<T> {
        let st = self.host.state.borrow();
        st.values.get(&(name.to_owned(), key.to_vec())).and_then(|b| T::decode(b))
    }

    /// The in-memory host, to inspect or change state, timers and logs.
    pub fn host(&self) -> &MemoryHost {
        &self.host
    }

    /// The operator instance.
    pub fn operator(&mut self) -> &mut O {
        &mut self.rt.op
    }
}

/// Decodes a frame buffer into owned records (panics on a malformed buffer,
/// which would be an SDK bug).
pub fn decode(batch: &[u8]) -> Vec<OwnedRecord> {
    Frames::new(batch)
        .map(|r| {
            let r = r.expect("operator produced a malformed batch");
            OwnedRecord {
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.to_vec(),
                timestamp: r.timestamp,
                headers: r.headers().map(|h| h.expect("malformed headers")).map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
            }
        })
        .collect()
}
