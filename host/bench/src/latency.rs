//! End-to-end latency at low load: `pipelines/latency.toml` (events at
//! 100k records/s, about 10% of what one core processes, through two Wasm
//! operators and a network exchange), with buffers flushed as soon as a
//! producer's input goes idle, and without (only full buffers or the 100 ms
//! buffer timeout).

use anyhow::{bail, Context as _};
use std::path::Path;
use weir_pipeline::{LoadOptions, Pipeline, Progress, RunOptions};
use weir_wasm::Engine;

/// One run of the latency pipeline.
#[derive(Debug)]
pub struct Row {
    flush_on_idle: bool,
    records_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    measured: u64,
}

/// Runs the pipeline with idle flush on, then off.
pub fn run(engine: &Engine, pipeline: &Path, plugin_dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for flush_on_idle in [true, false] {
        let mut p = Pipeline::load(pipeline, &LoadOptions::new(weir_connectors::builtin()).plugin_dir(Some(plugin_dir.to_owned())))?;
        p.network.flush_on_idle = flush_on_idle;
        eprintln!("weir-bench: latency: {} with flush-on-idle = {flush_on_idle}", pipeline.display());
        let summary = weir_pipeline::run(&p, engine, &RunOptions { progress: Progress::Quiet, metrics_address: None, start_from: weir_pipeline::StartFrom::Fresh, ..Default::default() })
            .with_context(|| format!("running {}", pipeline.display()))?;
        let Some(l) = summary.latency else {
            bail!("{} produced no latency samples: its generator needs `mark-latency = true`", pipeline.display());
        };
        rows.push(Row {
            flush_on_idle,
            records_per_sec: summary.source_records() as f64 / summary.elapsed.as_secs_f64(),
            p50_us: l.p50_us,
            p99_us: l.p99_us,
            measured: l.count,
        });
    }
    Ok(rows)
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("latency: events at ~10% load -> parse -> exchange -> sum -> discard (buffer-timeout 100 ms)");
    println!("  {:<22} {:>10} {:>10} {:>10} {:>10}", "flush", "records/s", "p50 ms", "p99 ms", "measured");
    for r in rows {
        let mode = if r.flush_on_idle { "on idle input + full" } else { "full or 100 ms timeout" };
        println!(
            "  {:<22} {:>10} {:>10.2} {:>10.2} {:>10}",
            mode,
            weir_pipeline::human(r.records_per_sec as u64),
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.measured
        );
        if json {
            crate::print_json(&serde_json::json!({
                "bench": "latency",
                "flush_on_idle": r.flush_on_idle,
                "records_per_sec": r.records_per_sec,
                "p50_ms": r.p50_us as f64 / 1000.0,
                "p99_ms": r.p99_us as f64 / 1000.0,
                "measured": r.measured,
            }));
        }
    }
}
