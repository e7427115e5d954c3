//! The events-agg pipeline, end to end, through `weir_pipeline::run`: with
//! its operators as the Wasm components, and natively, the same plugin
//! crates compiled into weir-bench and run behind the same task loop
//! ([`weir_pipeline::NativeOperators`]), so the difference between the two
//! runs is what the Wasm boundary costs.

use anyhow::{bail, Context as _};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_connector_generator::GeneratorConfig;
use weir_pipeline::{human, LoadOptions, NativeOperators, Pipeline, Progress, RunSummary};
use weir_sdk::native::{Factory, Instance};
use weir_wasm::Engine;

/// The events-agg benchmark's results.
#[derive(Debug)]
pub struct Report {
    parallelism: u32,
    /// With native operators: per plugin, the time spent in its calls.
    native: Option<Vec<(&'static str, Duration)>>,
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

/// [`run`] with json-filter and running-sum compiled into weir-bench
/// instead of their components; everything else (the pipeline file, the
/// task loop, the exchange, the keyed state) is the same.
pub fn run_native(engine: &Engine, pipeline: &Path, plugin_dir: &Path, count: u64, parallelism: u32) -> anyhow::Result<Report> {
    run_as(engine, pipeline, plugin_dir, count, parallelism, Some(&NATIVE_PLUGINS[..]), |p| p.checkpoint.interval = None)
}

/// The operators of events-agg that [`run_native`] runs natively.
const NATIVE_PLUGINS: [&str; 2] = ["json-filter", "running-sum"];

/// [`run`], after `tweak` has changed the loaded pipeline.
pub fn run_with(engine: &Engine, pipeline: &Path, plugin_dir: &Path, count: u64, parallelism: u32, tweak: impl FnOnce(&mut Pipeline)) -> anyhow::Result<Report> {
    run_as(engine, pipeline, plugin_dir, count, parallelism, None, tweak)
}

/// [`run_with`], with the plugins named in `native` run natively (each
/// one's calls timed).
fn run_as(
    engine: &Engine,
    pipeline: &Path,
    plugin_dir: &Path,
    count: u64,
    parallelism: u32,
    native: Option<&[&'static str]>,
    tweak: impl FnOnce(&mut Pipeline),
) -> anyhow::Result<Report> {
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

    let timers: Vec<(&'static str, Arc<AtomicU64>)> = native.unwrap_or_default().iter().map(|&plugin| (plugin, Arc::default())).collect();
    let mut operators = NativeOperators::default();
    for (plugin, nanos) in &timers {
        operators = operators.with_factory(plugin, Arc::new(Timed { inner: native_factory(plugin)?, nanos: nanos.clone() }));
    }
    let how = if native.is_some() { "native operators" } else { "Wasm operators" };
    eprintln!("weir-bench: {}: {} records at parallelism {parallelism}, {how} ({})", p.name, human(count), pipeline.display());
    let peak_rss_reset = reset_peak_rss();
    let options = weir_pipeline::RunOptions { progress: Progress::Quiet, start_from: weir_pipeline::StartFrom::Fresh, native: operators, ..Default::default() };
    let summary = weir_pipeline::run(&p, engine, &options).with_context(|| format!("running {} with {how}", pipeline.display()))?;
    let peak_rss = peak_rss();
    let bytes = summary.vertices.iter().find(|v| v.kind == "operator").map_or(0, |v| v.bytes_in);
    let native = native.map(|_| timers.iter().map(|(plugin, nanos)| (*plugin, Duration::from_nanos(nanos.load(Ordering::Relaxed)))).collect());
    Ok(Report { parallelism, native, summary, bytes, peak_rss, peak_rss_reset })
}

/// The native build of a plugin weir-bench links (its crate in `plugins/`).
fn native_factory(plugin: &str) -> anyhow::Result<Arc<dyn Factory>> {
    Ok(match plugin {
        "json-filter" => weir_sdk::native::factory::<json_filter::JsonFilter>(),
        "running-sum" => weir_sdk::native::factory::<running_sum::RunningSum>(),
        other => bail!("weir-bench has no native build of plugin `{other}`"),
    })
}

/// Opens instances whose `process` calls are timed: the time inside the
/// operator (its code, the SDK runtime and the keyed-state calls it makes),
/// summed over its subtasks. Two clock reads per batch.
struct Timed {
    inner: Arc<dyn Factory>,
    nanos: Arc<AtomicU64>,
}

impl Factory for Timed {
    fn open(&self, info: weir_sdk::OpenContext, config_json: &str, host: Box<dyn weir_sdk::Host + Send>) -> Result<Box<dyn Instance>, String> {
        Ok(Box::new(TimedInstance { inner: self.inner.open(info, config_json, host)?, nanos: self.nanos.clone() }))
    }
}

struct TimedInstance {
    inner: Box<dyn Instance>,
    nanos: Arc<AtomicU64>,
}

impl Instance for TimedInstance {
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, weir_sdk::Rejected> {
        let started = Instant::now();
        let out = self.inner.process(batch);
        self.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    fn on_timer(&mut self, fired: Vec<weir_sdk::Timer>) -> Result<Vec<u8>, weir_sdk::Rejected> {
        self.inner.on_timer(fired)
    }

    fn close(&mut self) -> Result<Vec<u8>, String> {
        self.inner.close()
    }
}

/// Prints how the Wasm run of events-agg compares with the native run at
/// the same parallelism (and a JSON line when asked).
pub fn compare(wasm: &Report, native: &Report, json: bool) {
    let ratio = wasm.elapsed().as_secs_f64() / native.elapsed().as_secs_f64();
    println!();
    println!("events-agg: Wasm vs native operators, parallelism {}", wasm.parallelism);
    println!("  Wasm         {:>8} records/s ({:.2} s)", human(wasm.records_per_sec() as u64), wasm.elapsed().as_secs_f64());
    println!("  native       {:>8} records/s ({:.2} s)", human(native.records_per_sec() as u64), native.elapsed().as_secs_f64());
    println!("  Wasm / native  {ratio:.2}x the time (target <= 1.3x)");
    if json {
        crate::print_json(&json!({
            "bench": "events-agg-vs-native",
            "parallelism": wasm.parallelism,
            "records": wasm.summary.source_records(),
            "wasm_records_per_sec": wasm.records_per_sec(),
            "native_records_per_sec": native.records_per_sec(),
            "wasm_over_native": ratio,
        }));
    }
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
    pub(crate) fn elapsed(&self) -> Duration {
        self.summary.elapsed
    }

    /// Records the sinks received.
    pub(crate) fn sink_records(&self) -> u64 {
        self.summary.sink_records()
    }

    pub(crate) fn peak_rss(&self) -> Option<u64> {
        self.peak_rss
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
        let how = if self.native.is_some() { "native operators (compiled into weir-bench)" } else { "Wasm operators" };
        println!("events-agg: {} source records, parallelism {}, {how}", human(s.source_records()), self.parallelism);
        println!("  elapsed      {:.2} s", self.elapsed().as_secs_f64());
        if let Some(calls) = &self.native {
            let parts: Vec<String> = calls.iter().map(|(plugin, d)| format!("{plugin} {:.2} s", d.as_secs_f64())).collect();
            println!("  in operators {} (time inside their process calls, summed over subtasks)", parts.join(", "));
        }
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
                "operators": if self.native.is_some() { "native" } else { "wasm" },
                "parallelism": self.parallelism,
                "operator_seconds": self.native.as_ref().map(|calls| calls.iter().map(|(plugin, d)| (plugin.to_string(), json!(d.as_secs_f64()))).collect::<serde_json::Map<_, _>>()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use weir_wasm::EngineConfig;

    /// The sink's lines of one events-agg run (every subtask's file), sorted:
    /// at parallelism 2 the subtasks interleave, but each user's sums are
    /// the same records.
    fn output(engine: &Engine, plugin_dir: &Path, parallelism: u32, native: bool) -> (Vec<String>, RunSummary) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events-agg.toml");
        // pipelines/events-agg.toml with a file sink instead of discard.
        let text = std::fs::read_to_string(crate::repo_root().unwrap().join("pipelines/events-agg.toml")).unwrap();
        let text = text.replace("[sinks.discard]\ntype = \"discard\"", "[sinks.out]\ntype = \"file\"\npath = \"out/{subtask}.jsonl\"\nformat = \"json\"");
        std::fs::write(&file, text).unwrap();
        let plugins = if native { Some(&NATIVE_PLUGINS[..]) } else { None };
        let report = run_as(engine, &file, plugin_dir, 20_000, parallelism, plugins, |p| p.checkpoint.interval = None).unwrap();
        if native {
            // Else both runs would be the components' and agree trivially.
            let calls = report.native.as_deref().unwrap_or_default();
            assert!(calls.len() == 2 && calls.iter().all(|(_, d)| !d.is_zero()), "the operators did not run natively: {calls:?}");
        }
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("out")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                lines.extend(std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned));
            }
        }
        lines.sort();
        (lines, report.summary)
    }

    /// Issue 20: the native baseline must run the same job as the Wasm run,
    /// or its figures compare nothing. Same records at every vertex, same
    /// sink output, at parallelism 1 and across the hash exchange at 2.
    #[test]
    fn native_operators_produce_what_the_components_produce() {
        let repo = crate::repo_root().unwrap();
        crate::build_plugins(&repo).unwrap();
        let plugin_dir = repo.join("plugins/target/wasm32-wasip2/release");
        let cache = tempfile::tempdir().unwrap();
        let engine = Engine::new(EngineConfig { cache_dir: Some(cache.path().to_owned()), profiler: None }).unwrap();
        for parallelism in [1, 2] {
            let (wasm, wasm_summary) = output(&engine, &plugin_dir, parallelism, false);
            let (native, native_summary) = output(&engine, &plugin_dir, parallelism, true);
            assert!(!wasm.is_empty(), "the Wasm run wrote nothing at parallelism {parallelism}");
            assert_eq!(wasm.len() as u64, wasm_summary.sink_records());
            assert_eq!(native, wasm, "native and Wasm sink output differ at parallelism {parallelism}");
            let counts = |s: &RunSummary| s.vertices.iter().map(|v| (v.name.clone(), v.records_in, v.records_out)).collect::<Vec<_>>();
            assert_eq!(counts(&native_summary), counts(&wasm_summary), "records per vertex at parallelism {parallelism}");
        }
    }
}
