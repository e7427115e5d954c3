//! A sampling profiler of plugin code (`weir run --profile FILE`).
//!
//! The engine's epoch ticker already interrupts every running instance each
//! [`EPOCH_TICK`](crate::EPOCH_TICK) to enforce its CPU deadline; with a
//! profiler, each of those interruptions also captures the guest's stack
//! (wasmtime's `WasmBacktrace`, function names from the component's name
//! section) and counts it under the operator it belongs to. The result is
//! a folded-stack file (`operator (plugin);outer;...;inner COUNT` per
//! line), the input of every flame graph tool, and a per-operator table of
//! the functions the samples were in.
//!
//! Like any epoch-based sampler it sees only Wasm code: a sample falls on
//! the next function entry or loop header after the tick, and time spent
//! in host calls (state, timers) is counted at the guest code that runs
//! next. It costs one stack walk per instance and tick (100 per second).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use wasmtime::WasmBacktrace;

/// Collects samples from every instance of an engine.
#[derive(Debug, Default)]
pub struct Profiler {
    stacks: Mutex<HashMap<String, u64>>,
}

impl Profiler {
    /// An empty profile.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one sample of `bt` under `root` (the operator and its plugin).
    pub(crate) fn sample(&self, root: &str, bt: &WasmBacktrace) {
        let mut stack = String::with_capacity(256);
        stack.push_str(root);
        // Frames come innermost first; a folded stack starts at the root.
        for frame in bt.frames().iter().rev() {
            stack.push(';');
            match frame.func_name() {
                Some(name) => {
                    let start = stack.len();
                    let _ = write!(stack, "{:#}", rustc_demangle::demangle(name));
                    // `;` separates frames in the folded format.
                    if stack[start..].contains(';') {
                        let cleaned = stack[start..].replace(';', ",");
                        stack.truncate(start);
                        stack.push_str(&cleaned);
                    }
                }
                None => {
                    let _ = write!(stack, "wasm-function[{}]", frame.func_index());
                }
            }
        }
        let mut stacks = self.stacks.lock().unwrap_or_else(|p| p.into_inner());
        *stacks.entry(stack).or_default() += 1;
    }

    /// What was collected so far.
    pub fn report(&self) -> ProfileReport {
        let stacks = self.stacks.lock().unwrap_or_else(|p| p.into_inner());
        let mut folded: Vec<(String, u64)> = stacks.iter().map(|(s, n)| (s.clone(), *n)).collect();
        folded.sort();
        ProfileReport { folded }
    }
}

/// A profile: folded stacks and their sample counts.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    folded: Vec<(String, u64)>,
}

/// One operator's share of a profile.
#[derive(Debug, Clone)]
pub struct OperatorProfile {
    /// `operator (plugin)`.
    pub operator: String,
    /// Samples taken in its instances.
    pub samples: u64,
    /// Functions by the samples taken in their own code (not in their
    /// callees), most first.
    pub self_samples: Vec<(String, u64)>,
}

impl ProfileReport {
    /// Every sample.
    pub fn samples(&self) -> u64 {
        self.folded.iter().map(|(_, n)| n).sum()
    }

    /// Writes the folded stacks, one `stack count` line each (the format
    /// of inferno's and Brendan Gregg's flamegraph tools and speedscope).
    pub fn write_folded(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (stack, n) in &self.folded {
            writeln!(out, "{stack} {n}")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Per operator, most samples first.
    pub fn operators(&self) -> Vec<OperatorProfile> {
        let mut ops: HashMap<&str, (u64, HashMap<&str, u64>)> = HashMap::new();
        for (stack, n) in &self.folded {
            let mut frames = stack.split(';');
            let root = frames.next().unwrap_or_default();
            let leaf = frames.last().unwrap_or("(between calls)");
            let op = ops.entry(root).or_default();
            op.0 += n;
            *op.1.entry(leaf).or_default() += n;
        }
        let mut out: Vec<OperatorProfile> = ops
            .into_iter()
            .map(|(root, (samples, leaves))| {
                let mut self_samples: Vec<(String, u64)> = leaves.into_iter().map(|(f, n)| (f.to_owned(), n)).collect();
                self_samples.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                OperatorProfile { operator: root.to_owned(), samples, self_samples }
            })
            .collect();
        out.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.operator.cmp(&b.operator)));
        out
    }
}
