//! The events-agg pipeline, end to end, through `weir_pipeline::run`.

use anyhow::{bail, Context as _};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use weir_connector_generator::GeneratorConfig;
use weir_pipeline::{human, LoadOptions, Pipeline, Progress, RunSummary};
use weir_wasm::Engine;

/// The events-agg benchmark's results.
#[derive(Debug)]
pub struct Report {
    parallelism: u32,
    summary: RunSummary,
    /// Frame bytes the first operator received.
    bytes: u64,
    /// `VmHWM` after the run, and whether it was reset before it.
    peak_rss: Option<u64>,
    peak_rss_reset: bool,
}

/// Runs `pipeline` (pipelines/events-agg.toml) with the generator count and
/// the operators' parallelism overridden, without checkpoints.
pub fn run(engine: &Engine, pipeline: &Path, plugin_dir: &Path, count: u64, parallelism: u32) -> anyhow::Result<Report> {
    run_with(engine, pipeline, plugin_dir, count, parallelism, |p| p.checkpoint.interval = None)
}

/// [`run`], after `tweak` has changed the loaded pipeline.
pub fn run_with(engine: &Engine, pipeline: &Path, plugin_dir: &Path, count: u64, parallelism: u32, tweak: impl FnOnce(&mut Pipeline)) -> anyhow::Result<Report> {
    let mut p = Pipeline::load(pipeline, &LoadOptions::new(weir_connectors::builtin()).plugin_dir(Some(plugin_dir.to_owned())))?;
    tweak(&mut p);
    let mut generators = 0;
    for source in p.sources.values_mut() {
        if let Some(g) = source.spec.as_any_mut().downcast_mut::<GeneratorConfig>() {
            g.count = Some(count);
            generators += 1;
            // The generator splits its sequence over its subtasks, so the
            // source scales with the job and parse chains onto it.
            source.parallelism = Some(parallelism);
        }
    }
    if generators == 0 {
        bail!("{} has no generator source for --count to set", pipeline.display());
    }
    if parallelism > p.max_parallelism {
        bail!("--parallelism {parallelism} is above the pipeline's max-parallelism ({})", p.max_parallelism);
    }
    p.parallelism = parallelism;
    for op in &mut p.operators {
        op.parallelism = Some(parallelism);
    }

    eprintln!("weir-bench: events-agg: {} records at parallelism {parallelism} ({})", human(count), pipeline.display());
    let peak_rss_reset = reset_peak_rss();
    let summary = weir_pipeline::run(&p, engine, &weir_pipeline::RunOptions { progress: Progress::Quiet, metrics_address: None, start_from: weir_pipeline::StartFrom::Fresh, ..Default::default() }).with_context(|| format!("running {}", pipeline.display()))?;
    let peak_rss = peak_rss();
    let bytes = summary.vertices.iter().find(|v| v.kind == "operator").map_or(0, |v| v.bytes_in);
    Ok(Report { parallelism, summary, bytes, peak_rss, peak_rss_reset })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS; false when
/// the kernel does not allow it.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak RSS in bytes (`VmHWM` in `/proc/self/status`).
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The checkpoint benchmark: events-agg with `users` distinct keys, once
/// without checkpoints and once with one every `interval`.
pub fn checkpoints(engine: &Engine, pipeline: &Path, plugin_dir: &Path, count: u64, users: u64, interval: Duration, json: bool) -> anyhow::Result<()> {
    let users_tweak = move |p: &mut Pipeline| {
        for source in p.sources.values_mut() {
            if let Some(g) = source.spec.as_any_mut().downcast_mut::<GeneratorConfig>() {
                g.users = users;
            }
        }
    };
    let off = run_with(engine, pipeline, plugin_dir, count, 1, |p| {
        users_tweak(p);
        p.checkpoint.interval = None;
    })?;
    let dir = tempfile::tempdir().context("a temporary checkpoint directory")?;
    let on = run_with(engine, pipeline, plugin_dir, count, 1, |p| {
        users_tweak(p);
        p.checkpoint.interval = Some(interval);
        p.checkpoint.dir = dir.path().to_owned();
    })?;
    let stats = on.summary.checkpoints.clone().unwrap_or_default();
    let (off_rate, on_rate) = (off.records_per_sec(), on.records_per_sec());
    let loss = (1.0 - on_rate / off_rate) * 100.0;
    println!();
    println!("checkpoints: events-agg, {} records, {} distinct keys, parallelism 1, heap state", human(count), human(users));
    println!("  without checkpoints   {:>8} records/s ({:.2} s)", human(off_rate as u64), off.elapsed().as_secs_f64());
    println!("  every {:<15} {:>8} records/s ({:.2} s): {:.1}% {}", format!("{interval:?}"), human(on_rate as u64), on.elapsed().as_secs_f64(), loss.abs(), if loss >= 0.0 { "slower" } else { "faster (noise)" });
    println!("  checkpoints           {} complete, {} failed", stats.completed, stats.failed);
    if let Some(l) = &stats.last {
        println!("  last checkpoint       #{}: {} ms, {:.1} MB, longest task pause for the snapshot {} ms", l.id, l.duration.as_millis(), l.bytes as f64 / 1e6, l.sync.as_millis());
    }
    if json {
        crate::print_json(&json!({
            "bench": "checkpoints",
            "records": count,
            "keys": users,
            "interval_ms": interval.as_millis() as u64,
            "records_per_sec_without": off_rate,
            "records_per_sec_with": on_rate,
            "throughput_loss_percent": loss,
            "checkpoints": stats.completed,
            "failed": stats.failed,
            "last_duration_ms": stats.last.as_ref().map(|l| l.duration.as_millis() as u64),
            "last_bytes": stats.last.as_ref().map(|l| l.bytes),
            "last_sync_ms": stats.last.as_ref().map(|l| l.sync.as_millis() as u64),
        }));
    }
    Ok(())
}

impl Report {
    fn elapsed(&self) -> Duration {
        self.summary.elapsed
    }

    pub(crate) fn records_per_sec(&self) -> f64 {
        self.summary.source_records() as f64 / self.elapsed().as_secs_f64()
    }

    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed().as_secs_f64() / 1e6
    }

    /// Prints the table (and a JSON line when asked) on stdout.
    pub fn print(&self, json: bool) {
        let s = &self.summary;
        println!();
        println!("events-agg: {} source records, parallelism {}", human(s.source_records()), self.parallelism);
        println!("  elapsed      {:.2} s", self.elapsed().as_secs_f64());
        println!("  records/s    {}", human(self.records_per_sec() as u64));
        println!("  MB/s         {:.1} (generated frames, {:.1} MB)", self.mb_per_sec(), self.bytes as f64 / 1e6);
        match self.peak_rss {
            Some(b) => println!(
                "  peak RSS     {:.1} MiB ({})",
                b as f64 / (1 << 20) as f64,
                if self.peak_rss_reset { "reset before the run" } else { "since process start" }
            ),
            None => println!("  peak RSS     unknown (no /proc/self/status)"),
        }
        println!("  {:<10} {:<9} {:>4} {:>12} {:>12}", "vertex", "kind", "par", "records in", "records out");
        for v in &s.vertices {
            println!("  {:<10} {:<9} {:>4} {:>12} {:>12}", v.name, v.kind, v.parallelism, human(v.records_in), human(v.records_out));
        }
        println!("  {:<20} {:>6} {:>6} {:>14}", "task", "busy", "idle", "backpressured");
        for (name, busy, idle, bp) in &s.tasks {
            println!("  {:<20} {:>5.1}% {:>5.1}% {:>13.1}%", name, busy * 100.0, idle * 100.0, bp * 100.0);
        }
        if json {
            let tasks: Vec<_> =
                s.tasks.iter().map(|(n, b, i, p)| json!({ "task": n, "busy": b, "idle": i, "backpressured": p })).collect();
            crate::print_json(&json!({
                "bench": "events-agg",
                "parallelism": self.parallelism,
                "records": s.source_records(),
                "sink_records": s.sink_records(),
                "elapsed_s": self.elapsed().as_secs_f64(),
                "records_per_sec": self.records_per_sec(),
                "bytes": self.bytes,
                "mb_per_sec": self.mb_per_sec(),
                "peak_rss_bytes": self.peak_rss,
                "peak_rss_reset": self.peak_rss_reset,
                "tasks": tasks,
            }));
        }
    }
}
