//! The Nexmark queries of `pipelines/nexmark/`, each run end to end like
//! events-agg: the generator's Nexmark events (persons, auctions, bids) ->
//! the query's operators -> discard.

use std::path::Path;

use serde_json::json;
use weir_pipeline::human;
use weir_wasm::Engine;

/// The queries with a pipeline in `pipelines/nexmark/`.
pub const QUERIES: [&str; 8] = ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"];

/// One query's run.
#[derive(Debug)]
pub struct Row {
    query: &'static str,
    parallelism: u32,
    events: u64,
    outputs: u64,
    secs: f64,
    peak_rss: Option<u64>,
}

/// Runs every query in `queries` on `count` events at each parallelism.
pub fn run(engine: &Engine, repo: &Path, plugin_dir: &Path, count: u64, parallelisms: &[u32], queries: &[&'static str]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &query in queries {
        for &parallelism in parallelisms {
            let pipeline = repo.join(format!("pipelines/nexmark/{query}.toml"));
            let report = crate::events_agg::run(engine, &pipeline, plugin_dir, count, parallelism)?;
            rows.push(Row {
                query,
                parallelism,
                events: count,
                outputs: report.sink_records(),
                secs: report.elapsed().as_secs_f64(),
                peak_rss: report.peak_rss(),
            });
        }
    }
    Ok(rows)
}

/// Prints the table (and a JSON line per row when asked).
pub fn print(rows: &[Row], json: bool) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    println!();
    println!("nexmark: the generator's Nexmark events through each query's pipeline to a discard sink ({cores} cores)");
    println!("  {:<5} {:>3} {:>10} {:>8} {:>12} {:>14} {:>10} {:>9}", "query", "par", "events", "secs", "events/s", "events/s/core", "outputs", "peak RSS");
    for r in rows {
        let rate = r.events as f64 / r.secs;
        let per_core = rate / f64::from(r.parallelism.min(cores));
        let rss = r.peak_rss.map_or_else(|| "?".to_owned(), |b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64));
        println!(
            "  {:<5} {:>3} {:>10} {:>8.2} {:>12} {:>14} {:>10} {:>9}",
            r.query,
            r.parallelism,
            human(r.events),
            r.secs,
            human(rate as u64),
            human(per_core as u64),
            r.outputs,
            rss
        );
        if json {
            crate::print_json(&json!({
                "bench": "nexmark",
                "query": r.query,
                "parallelism": r.parallelism,
                "events": r.events,
                "outputs": r.outputs,
                "elapsed_s": r.secs,
                "events_per_sec": rate,
                "events_per_sec_per_core": per_core,
                "peak_rss_bytes": r.peak_rss,
            }));
        }
    }
}
