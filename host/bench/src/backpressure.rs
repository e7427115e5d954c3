//! `checkpoints`, issue 17: checkpoints of a pipeline that is 100 %
//! backpressured, aligned vs aligned with buffer debloating vs unaligned,
//! and what unaligned checkpoints and debloating cost a pipeline that
//! keeps up.
//!
//! The backpressured pipeline is the issue's: generator (30 k/s) ->
//! json-filter (x2) -> slow (~1 ms per record, x2, hash) -> running-sum
//! (x2) -> discard, a checkpoint every 2 s, run for a fixed time and then
//! killed. Each mode reports the checkpoints completed in that time, their
//! trigger-to-complete duration p50/p99 and their size (and the in-flight
//! part of it). The throughput rows run events-agg (no backpressure) with a
//! checkpoint every second: aligned, unaligned, and aligned with buffer
//! debloating (`network.debloat`, target 1 s).

use anyhow::Context as _;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_pipeline::{human, CheckpointMode, LoadOptions, Pipeline, Progress, RunHandle};
use weir_wasm::Engine;

const SCENARIO: &str = r#"
name = "backpressured"
[sources.gen]
type = "generator"
rate = 30000.0
[[operators]]
name = "filter"
plugin = "json-filter"
parallelism = 2
config = { key = "user" }
[[operators]]
name = "enrich"
plugin = "slow"
parallelism = 2
partition = "hash"
config = { cost-us = 1000, mode = "sleep" }
[[operators]]
name = "sum"
plugin = "running-sum"
parallelism = 2
partition = "hash"
[sinks.out]
type = "discard"
[checkpoint]
interval = "2s"
"#;

/// One mode's checkpoints under backpressure.
struct Row {
    mode: &'static str,
    completed: usize,
    p50_ms: Option<u64>,
    p99_ms: Option<u64>,
    bytes: Option<u64>,
    inflight_bytes: Option<u64>,
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

fn backpressured(engine: &Engine, plugin_dir: &Path, mode: CheckpointMode, debloat: bool, seconds: u64) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let file = dir.path().join("p.toml");
    std::fs::write(&file, SCENARIO)?;
    let mut p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin()).plugin_dir(Some(plugin_dir.to_owned())))?;
    p.checkpoint.mode = mode;
    p.checkpoint.dir = dir.path().join("cp");
    p.network.debloat = debloat;
    let handle = RunHandle::new();
    // A watcher reads the checkpoints table while the run goes on, then
    // kills the run (a graceful stop would wait for an aligned checkpoint).
    let watcher = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(seconds);
            let mut recent = Vec::new();
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(500));
                if let Some(c) = handle.status().and_then(|s| s.checkpoints) {
                    recent = c.recent;
                }
            }
            handle.kill();
            recent
        })
    };
    let options = weir_pipeline::RunOptions { progress: Progress::Quiet, metrics_address: None, start_from: weir_pipeline::StartFrom::Fresh, handle: Some(handle), ..Default::default() };
    let _ = weir_pipeline::run(&p, engine, &options);
    let recent = watcher.join().map_err(|_| anyhow::anyhow!("the watcher thread panicked"))?;
    let mut durations: Vec<u64> = recent.iter().map(|c| c.duration_ms).collect();
    durations.sort_unstable();
    let n = recent.len().max(1) as u64;
    Ok(Row {
        mode: match (mode, debloat) {
            (CheckpointMode::Unaligned, _) => "unaligned",
            (_, true) => "aligned+debloat",
            (_, false) => "aligned",
        },
        completed: recent.len(),
        p50_ms: percentile(&durations, 0.5),
        p99_ms: percentile(&durations, 0.99),
        bytes: (!recent.is_empty()).then(|| recent.iter().map(|c| c.bytes).sum::<u64>() / n),
        inflight_bytes: (!recent.is_empty()).then(|| recent.iter().map(|c| c.inflight_bytes).sum::<u64>() / n),
    })
}

/// Runs the rows and prints them.
pub fn run(engine: &Engine, repo: &Path, plugin_dir: &Path, count: u64, seconds: u64, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (mode, debloat) in [(CheckpointMode::Aligned, false), (CheckpointMode::Aligned, true), (CheckpointMode::Unaligned, false)] {
        eprintln!("weir-bench: checkpoints under backpressure, {mode:?}, debloat {debloat}, {seconds} s");
        rows.push(backpressured(engine, plugin_dir, mode, debloat, seconds)?);
    }
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    let mb = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1} MB", v as f64 / 1e6));
    println!();
    println!("checkpoints under full backpressure: generator 30 k/s -> json-filter x2 -> slow 1 ms/record x2 -> running-sum x2, every 2 s, {seconds} s");
    println!("  {:<16} {:>9} {:>9} {:>9} {:>9} {:>11}", "mode", "complete", "p50", "p99", "size", "in-flight");
    for r in &rows {
        println!("  {:<16} {:>9} {:>9} {:>9} {:>9} {:>11}", r.mode, r.completed, ms(r.p50_ms), ms(r.p99_ms), mb(r.bytes), mb(r.inflight_bytes));
    }
    // Throughput of a pipeline that keeps up: aligned, unaligned, debloated.
    let pipeline = repo.join("pipelines/events-agg.toml");
    let mut rates = Vec::new();
    for (mode, debloat) in [(CheckpointMode::Aligned, false), (CheckpointMode::Unaligned, false), (CheckpointMode::Aligned, true)] {
        let cp = tempfile::tempdir().context("a temporary checkpoint directory")?;
        let r = crate::events_agg::run_with(engine, &pipeline, plugin_dir, count, 1, |p| {
            p.checkpoint.interval = Some(Duration::from_secs(1));
            p.checkpoint.mode = mode;
            p.checkpoint.dir = cp.path().to_owned();
            p.network.debloat = debloat;
        })?;
        rates.push(r.records_per_sec());
    }
    let diff = (rates[1] / rates[0] - 1.0) * 100.0;
    let debloat_diff = (rates[2] / rates[0] - 1.0) * 100.0;
    println!("events-agg, {} records, a checkpoint every 1 s: aligned {} records/s, unaligned {} records/s ({diff:+.1}%)", human(count), human(rates[0] as u64), human(rates[1] as u64));
    println!("events-agg, same: aligned with buffer debloating {} records/s ({debloat_diff:+.1}% vs without)", human(rates[2] as u64));
    if json {
        crate::print_json(&json!({
            "bench": "checkpoints-backpressure",
            "seconds": seconds,
            "rows": rows.iter().map(|r| json!({"mode": r.mode, "completed": r.completed, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "bytes": r.bytes, "inflight_bytes": r.inflight_bytes})).collect::<Vec<_>>(),
            "events_agg_aligned_records_per_sec": rates[0],
            "events_agg_unaligned_records_per_sec": rates[1],
            "unaligned_throughput_change_percent": diff,
            "events_agg_debloat_records_per_sec": rates[2],
            "debloat_throughput_change_percent": debloat_diff,
        }));
    }
    Ok(())
}
