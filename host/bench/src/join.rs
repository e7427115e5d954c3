//! `join`, issue 19: an event-time interval join of two generated streams.
//!
//! Two generators of `events` records (about 100 bytes each, 1 million
//! distinct users, timestamps 1 ms apart on each side), each chained with
//! a `json-filter` that keys it by user, feed the bundled `join` plugin
//! (`kind = "interval"`, right within 1 s either side of left) behind a hash
//! exchange; the joined pairs go to a discard sink. Both sides have the
//! same seed, so left record `N` meets right record `N` (same user, same
//! time) and no other within the second: one pair per left record, like
//! orders joined with their payments. Each side produces half
//! of `--count`. A checkpoint every 2 s measures the state: its size over
//! the run says whether the timers clean up as the watermark passes (it
//! should level off, not grow with the input).
//!
//! Reported per parallelism: records/s (both sources' records over wall
//! time), pairs emitted, the checkpoint sizes over time, and peak RSS.

use anyhow::Context as _;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_connector_generator::GeneratorConfig;
use weir_pipeline::{human, LoadOptions, Pipeline, Progress, RunHandle, RunSummary};
use weir_wasm::Engine;

const PIPELINE: &str = r#"
name = "join-bench"
[checkpoint]
interval = "2s"
[sources.left]
type = "generator"
users = 1000000
seed = 1
[sources.right]
type = "generator"
users = 1000000
seed = 1
[[operators]]
name = "orders"
plugin = "json-filter"
input = "left"
config = { key = "user" }
[[operators]]
name = "payments"
plugin = "json-filter"
input = "right"
config = { key = "user" }
[[operators]]
name = "join"
plugin = "join"
inputs = ["orders", "payments"]
partition = "hash"
config = { kind = "interval", lower-ms = -1000, upper-ms = 1000 }
[sinks.out]
type = "discard"
"#;

/// One parallelism's results.
pub struct Row {
    parallelism: u32,
    summary: RunSummary,
    /// (seconds since the start, checkpoint bytes) of each checkpoint seen.
    state: Vec<(f64, u64)>,
    peak_rss: Option<u64>,
}

impl Row {
    fn records_per_sec(&self) -> f64 {
        self.summary.source_records() as f64 / self.summary.elapsed.as_secs_f64()
    }

    fn pairs(&self) -> u64 {
        self.summary.vertices.iter().find(|v| v.name == "join").map_or(0, |v| v.records_out)
    }
}

fn run_one(engine: &Engine, plugin_dir: &Path, count: u64, parallelism: u32) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let file = dir.path().join("join-bench.toml");
    std::fs::write(&file, PIPELINE)?;
    let mut p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin()).plugin_dir(Some(plugin_dir.to_owned())))?;
    p.checkpoint.dir = dir.path().join("cp");
    p.parallelism = parallelism;
    for source in p.sources.values_mut() {
        if let Some(g) = source.spec.as_any_mut().downcast_mut::<GeneratorConfig>() {
            g.count = Some(count / 2);
        }
        source.parallelism = Some(parallelism);
    }
    for op in &mut p.operators {
        op.parallelism = Some(parallelism);
    }
    eprintln!("weir-bench: interval join, {} records (half per side) at parallelism {parallelism}", human(count));
    let handle = RunHandle::new();
    // A watcher notes each completed checkpoint's size as the run goes on.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watcher = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut seen: Vec<(f64, u64)> = Vec::new();
            let mut last_id = None;
            while finished.recv_timeout(Duration::from_millis(250)).is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Timeout) {
                if let Some(c) = handle.status().and_then(|s| s.checkpoints)
                    && c.last_id != last_id
                {
                    last_id = c.last_id;
                    seen.push((started.elapsed().as_secs_f64(), c.last_bytes.unwrap_or(0)));
                }
            }
            seen
        })
    };
    crate::events_agg::reset_peak_rss();
    let options = weir_pipeline::RunOptions { progress: Progress::Quiet, metrics_address: None, start_from: weir_pipeline::StartFrom::Fresh, handle: Some(handle.clone()), ..Default::default() };
    let result = weir_pipeline::run(&p, engine, &options);
    drop(done);
    let state = watcher.join().map_err(|_| anyhow::anyhow!("the watcher thread panicked"))?;
    let summary = result.context("running the join benchmark")?;
    Ok(Row { parallelism, summary, state, peak_rss: crate::events_agg::peak_rss() })
}

/// Runs the join at each parallelism.
pub fn run(engine: &Engine, plugin_dir: &Path, count: u64, parallelisms: &[u32]) -> anyhow::Result<Vec<Row>> {
    parallelisms.iter().map(|&p| run_one(engine, plugin_dir, count, p)).collect()
}

/// Prints the table (and a JSON line per row when asked).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("interval join (events, 1 M users, right within +-1 s of left, keyed by user, hash exchange -> discard; checkpoint every 2 s)");
    println!("  {:>3} {:>12} {:>10} {:>10}  state (checkpoint size) over time", "par", "records/s", "pairs", "peak RSS");
    for r in rows {
        let state: Vec<String> = r.state.iter().map(|(t, b)| format!("{t:.0}s {:.1}MB", *b as f64 / 1e6)).collect();
        let rss = r.peak_rss.map_or_else(|| "-".to_owned(), |b| format!("{} MiB", b >> 20));
        println!("  {:>3} {:>12} {:>10} {:>10}  {}", r.parallelism, human(r.records_per_sec() as u64), human(r.pairs()), rss, state.join(", "));
        if json {
            crate::print_json(&json!({
                "bench": "join",
                "parallelism": r.parallelism,
                "records": r.summary.source_records(),
                "records_per_sec": r.records_per_sec(),
                "pairs": r.pairs(),
                "peak_rss_bytes": r.peak_rss,
                "state_bytes_over_time": r.state.iter().map(|(t, b)| json!({"seconds": t, "bytes": b})).collect::<Vec<_>>(),
            }));
        }
    }
}
