//! The identity operator through the Wasm boundary vs the same loop native.

use anyhow::{bail, Context as _};
use serde_json::json;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use weir_format::{BatchWriter, FrameError, Frames};
use weir_wasm::{Engine, InstanceInfo, Limits, OperatorInstance};

/// Bytes of each record's value (no key, no headers: 120-byte frames).
const VALUE_LEN: usize = 100;

/// Empty-batch calls timed per round for the fixed call cost.
const EMPTY_CALLS: u64 = 200_000;

/// What to measure.
#[derive(Debug)]
pub struct Options {
    /// Records timed per batch size (a tenth for batch size 1).
    pub records: u64,
    /// Records per call.
    pub batch_sizes: Vec<usize>,
    /// Rounds; the fastest is kept.
    pub rounds: u32,
}

/// One batch size's result.
#[derive(Debug)]
struct Row {
    batch: usize,
    records: u64,
    frame_bytes: usize,
    wasm_ns: f64,
    native_ns: f64,
}

/// The boundary benchmark's results.
#[derive(Debug)]
pub struct Report {
    rounds: u32,
    empty_call_ns: f64,
    rows: Vec<Row>,
    /// Peak RSS of the process during the benchmark (reset before it when
    /// the kernel allows).
    peak_rss: Option<u64>,
}

/// A batch of `n` records with 100-byte values, in frame format.
fn make_batch(n: usize) -> Vec<u8> {
    let mut w = BatchWriter::with_capacity(n * (weir_format::HEADER_LEN + VALUE_LEN));
    for i in 0..n {
        let value: Vec<u8> = (0..VALUE_LEN).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        w.push(None, &value, 1_700_000_000_000 + i as i64, &[]);
    }
    w.finish()
}

/// The identity operator natively: what the guest SDK does for it (an output
/// buffer sized like the SDK's, one `push_record` per input frame).
fn identity_native(input: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = BatchWriter::with_capacity(input.len() + input.len() / 4);
    for rec in Frames::new(input) {
        out.push_record(&rec?);
    }
    Ok(out.finish())
}

/// Nanoseconds per unit of `f()` called `calls` times, each call doing `units` units.
fn time_ns(calls: u64, units: u64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..calls {
        f()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / (calls * units).max(1) as f64)
}

/// Runs the benchmark with the plugin file `identity` (identity.wasm).
pub fn run(engine: &Engine, identity: &Path, options: &Options) -> anyhow::Result<Report> {
    let plugin = Arc::new(engine.load(identity)?);
    let info = InstanceInfo {
        pipeline: "weir-bench".into(),
        operator: "identity".into(),
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        config_json: "{}".into(),
        read_dirs: Vec::new(),
        inputs: vec!["events".into()],
    };
    let mut instance = OperatorInstance::open(&plugin, &info, Limits::default()).context("opening the identity plugin")?;
    let mut process = |batch: &[u8]| -> anyhow::Result<Vec<u8>> { Ok(instance.process(black_box(batch))?) };

    eprintln!("weir-bench: boundary: timing empty calls");
    let mut empty = || -> anyhow::Result<()> {
        black_box(process(&[])?);
        Ok(())
    };
    time_ns(EMPTY_CALLS / 10, 1, &mut empty)?;
    let mut empty_call_ns = f64::INFINITY;
    for _ in 0..options.rounds {
        empty_call_ns = empty_call_ns.min(time_ns(EMPTY_CALLS, 1, &mut empty)?);
    }

    let mut rows = Vec::new();
    for &batch in &options.batch_sizes {
        let records = if batch == 1 { options.records / 10 } else { options.records };
        let calls = records.div_ceil(batch as u64);
        let input = make_batch(batch);
        eprintln!("weir-bench: boundary: batch size {batch}, {calls} calls x {} round(s)", options.rounds);
        if process(&input)? != input || identity_native(&input)? != input {
            bail!("the identity operator changed its input at batch size {batch}; the benchmark would measure the wrong thing");
        }
        let mut wasm = || -> anyhow::Result<()> {
            black_box(process(&input)?);
            Ok(())
        };
        let native = || -> anyhow::Result<()> {
            black_box(identity_native(black_box(&input))?);
            Ok(())
        };
        let units = batch as u64;
        let warm_up = (calls / 10).max(1);
        time_ns(warm_up, units, &mut wasm)?;
        time_ns(warm_up, units, native)?;
        let (mut wasm_ns, mut native_ns) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..options.rounds {
            wasm_ns = wasm_ns.min(time_ns(calls, units, &mut wasm)?);
            native_ns = native_ns.min(time_ns(calls, units, native)?);
        }
        rows.push(Row { batch, records: calls * units, frame_bytes: input.len() / batch, wasm_ns, native_ns });
    }
    Ok(Report { rounds: options.rounds, empty_call_ns, rows, peak_rss: crate::events_agg::peak_rss() })
}

impl Report {
    /// Prints the table (and JSON lines when asked) on stdout.
    pub fn print(&self, json: bool) {
        println!();
        println!("boundary: identity operator, Wasm vs native, {VALUE_LEN}-byte values (fastest of {} rounds)", self.rounds);
        println!(
            "{:>6} {:>10} {:>7} {:>12} {:>14} {:>16} {:>12} {:>10}",
            "batch", "records", "frame B", "wasm ns/rec", "native ns/rec", "overhead ns/rec", "wasm rec/s", "wasm MB/s"
        );
        for r in &self.rows {
            let per_sec = 1e9 / r.wasm_ns;
            let mb_per_sec = per_sec * r.frame_bytes as f64 / 1e6;
            println!(
                "{:>6} {:>10} {:>7} {:>12.1} {:>14.1} {:>16.1} {:>12} {:>10.0}",
                r.batch,
                weir_pipeline::human(r.records),
                r.frame_bytes,
                r.wasm_ns,
                r.native_ns,
                r.wasm_ns - r.native_ns,
                weir_pipeline::human(per_sec as u64),
                mb_per_sec
            );
        }
        println!("empty process() call: {:.0} ns", self.empty_call_ns);
        if let Some(rss) = self.peak_rss {
            println!("peak RSS: {:.1} MiB (one identity instance, batches up to {} records)", rss as f64 / (1 << 20) as f64, self.rows.iter().map(|r| r.batch).max().unwrap_or(0));
        }
        if json {
            for r in &self.rows {
                let per_sec = 1e9 / r.wasm_ns;
                crate::print_json(&json!({
                    "bench": "boundary",
                    "batch_size": r.batch,
                    "records": r.records,
                    "frame_bytes": r.frame_bytes,
                    "wasm_ns_per_record": r.wasm_ns,
                    "native_ns_per_record": r.native_ns,
                    "overhead_ns_per_record": r.wasm_ns - r.native_ns,
                    "wasm_records_per_sec": per_sec,
                    "wasm_mb_per_sec": per_sec * r.frame_bytes as f64 / 1e6,
                }));
            }
            crate::print_json(&json!({ "bench": "boundary-empty-call", "ns_per_call": self.empty_call_ns, "peak_rss_bytes": self.peak_rss }));
        }
    }
}
