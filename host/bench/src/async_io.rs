//! Async I/O slots: throughput against capacity.
//!
//! generator -> `enrich-profile` (one HTTP GET per event) -> discard, with
//! the delaying HTTP server of the test harness
//! (`weir_test_support::delay_server`) answering after 1 ms or 10 ms, at capacity
//! 1, 8, 64 and 256 (ordered output, parallelism 1). Nothing external is
//! needed. Per run:
//!
//! * **records/s**: source records / elapsed (slots opened before the clock starts);
//! * **ceiling**: capacity / latency, what perfect overlap would give;
//! * **RSS delta**: the process's peak resident memory during the run
//!   minus its resident memory before it. Per slot memory is reported as
//!   (delta at 256 - delta at 1) / 255: an instance's store and linear
//!   memory, its HTTP connection and its share of the runtime.

use anyhow::Context as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir_pipeline::{LoadOptions, Pipeline, Progress, RunOptions};
use weir_test_support::delay_server::DelayServer;
use weir_wasm::Engine;

/// One run.
#[derive(Debug)]
pub struct Row {
    latency_ms: u64,
    capacity: usize,
    records: u64,
    records_per_sec: f64,
    rss_delta: u64,
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs every (latency, capacity) pair.
pub fn run(engine: &Engine, plugin_dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    for latency_ms in [1u64, 10] {
        let server = DelayServer::start(Duration::from_millis(latency_ms), Duration::ZERO);
        for capacity in [1usize, 8, 64, 256] {
            // About a second of work at the ceiling, at least 200 records, at most 40 000.
            let ceiling = capacity as f64 * 1000.0 / latency_ms as f64;
            let records = (ceiling as u64).clamp(200, 40_000);
            let text = format!(
                r#"
name = "async-bench"
[checkpoint]
interval = "off"
[sources.events]
type = "generator"
count = {records}
[[operators]]
name = "enrich"
plugin = "enrich-profile"
config = {{ lookup = "http", url = "http://127.0.0.1:{port}/profile/{{key}}" }}
async = {{ capacity = {capacity}, allow-http = ["127.0.0.1:{port}"], on-timeout = "fail", timeout = "30s" }}
[sinks.out]
type = "discard"
"#,
                port = server.port
            );
            let file = dir.path().join("async.toml");
            std::fs::write(&file, text)?;
            let p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin()).plugin_dir(Some(plugin_dir.to_owned())))?;
            eprintln!("weir-bench: async: {latency_ms} ms lookups, capacity {capacity}, {records} records");
            let before = rss();
            let peak = Arc::new(AtomicU64::new(before));
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = {
                let (peak, stop) = (peak.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(rss(), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            };
            let summary = weir_pipeline::run(&p, engine, &RunOptions { progress: Progress::Quiet, start_from: weir_pipeline::StartFrom::Fresh, ..Default::default() })
                .context("running the async benchmark pipeline")?;
            stop.store(true, Ordering::Relaxed);
            let _ = sampler.join();
            rows.push(Row {
                latency_ms,
                capacity,
                records,
                records_per_sec: summary.source_records() as f64 / summary.elapsed.as_secs_f64(),
                rss_delta: peak.load(Ordering::Relaxed).saturating_sub(before),
            });
        }
    }
    Ok(rows)
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("async: generator -> enrich-profile (HTTP GET per record, ordered) -> discard");
    println!("  {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>10}", "latency", "capacity", "records", "records/s", "ceiling", "of ceil", "RSS delta");
    for r in rows {
        let ceiling = r.capacity as f64 * 1000.0 / r.latency_ms as f64;
        println!(
            "  {:>6}ms {:>8} {:>8} {:>10.0} {:>10.0} {:>7.0}% {:>8.1}MB",
            r.latency_ms,
            r.capacity,
            r.records,
            r.records_per_sec,
            ceiling,
            r.records_per_sec / ceiling * 100.0,
            r.rss_delta as f64 / 1e6
        );
        if json {
            crate::print_json(&serde_json::json!({
                "bench": "async",
                "latency_ms": r.latency_ms,
                "capacity": r.capacity,
                "records": r.records,
                "records_per_sec": r.records_per_sec,
                "ceiling": ceiling,
                "rss_delta_bytes": r.rss_delta,
            }));
        }
    }
    for latency in [1u64, 10] {
        let at = |c: usize| rows.iter().find(|r| r.latency_ms == latency && r.capacity == c).map(|r| r.rss_delta as f64);
        if let (Some(one), Some(many)) = (at(1), at(256)) {
            println!("  memory per slot ({latency} ms run): {:.0} KB ((RSS delta at 256 - at 1) / 255)", (many - one).max(0.0) / 255.0 / 1e3);
        }
    }
}
