//! Kafka throughput: the broker's ceiling (a bare rdkafka consumer reading
//! the topic alone) beside weir pipelines reading the same topic.
//!
//! Starts tansu (in memory) on a free port, produces `count` 100-byte
//! `events` records to an 8-partition topic, then measures:
//! 1. a bare rdkafka consumer (librdkafka, no weir) reading every record;
//! 2. Kafka -> identity (Wasm) -> Kafka (at-least-once);
//! 3. Kafka -> events-agg (parse + keyed running sum, Wasm) -> discard.

use anyhow::Context as _;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_pipeline::{LoadOptions, Pipeline, Progress, RunOptions, StartFrom};
use weir_tests::kafka::{Tansu, consume, create_topic, produce};
use weir_wasm::Engine;

/// One measured row.
struct Row {
    what: &'static str,
    records: u64,
    seconds: f64,
    bytes: u64,
}

/// Runs the Kafka benchmark with `count` records.
pub fn run(engine: &Engine, plugin_dir: &Path, count: u64, json: bool) -> anyhow::Result<()> {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 8);
    create_topic(&brokers, "copy", 8);
    eprintln!("weir-bench: kafka: producing {count} 100-byte records to tansu at {brokers}");
    let records = (0..count).map(|n| {
        let mut v = format!(r#"{{"id":{n},"user":"user-{:04}","amount":{},"pad":""#, (n * 7919) % 10_000, n % 100).into_bytes();
        v.resize(98, b'x');
        v.extend_from_slice(b"\"}");
        (None, v)
    });
    produce(&brokers, "events", records);

    let mut rows = Vec::new();
    let started = Instant::now();
    let got = consume(&brokers, "events", count as usize, Duration::ZERO, Duration::from_secs(600)).len() as u64;
    rows.push(Row { what: "bare rdkafka consumer (the broker's ceiling)", records: got, seconds: started.elapsed().as_secs_f64(), bytes: got * 100 });

    let dir = tempfile::tempdir()?;
    for (what, body) in [
        (
            "Kafka -> identity (Wasm) -> Kafka",
            format!(
                "name = \"kafka-identity\"\nplugin-dir = \"{}\"\n[checkpoint]\ninterval = \"off\"\n\
                 [sources.events]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"events\"\nend = \"latest\"\n\
                 [[operators]]\nname = \"id\"\nplugin = \"identity\"\n\
                 [sinks.out]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"copy\"\n",
                plugin_dir.display()
            ),
        ),
        (
            "Kafka -> events-agg (Wasm parse + keyed sum) -> discard",
            format!(
                "name = \"kafka-agg\"\nplugin-dir = \"{}\"\n[checkpoint]\ninterval = \"off\"\n\
                 [sources.events]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"events\"\nend = \"latest\"\n\
                 [[operators]]\nname = \"parse\"\nplugin = \"json-filter\"\nconfig = {{ project = [\"user\", \"amount\"], key = \"user\" }}\n\
                 [[operators]]\nname = \"sum\"\nplugin = \"running-sum\"\npartition = \"hash\"\n\
                 [sinks.out]\ntype = \"discard\"\n",
                plugin_dir.display()
            ),
        ),
    ] {
        let file = dir.path().join("p.toml");
        std::fs::write(&file, body)?;
        let p = Pipeline::load(&file, &LoadOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!("weir-bench: kafka: {what}");
        let started = Instant::now();
        let summary = weir_pipeline::run(&p, engine, &RunOptions { progress: Progress::Quiet, start_from: StartFrom::Fresh, ..Default::default() })
            .with_context(|| what.to_owned())?;
        let records = summary.source_records();
        rows.push(Row { what, records, seconds: started.elapsed().as_secs_f64(), bytes: records * 100 });
    }
    let ceiling = rows[0].records as f64 / rows[0].seconds;
    for r in &rows {
        let rate = r.records as f64 / r.seconds;
        if json {
            println!(
                "{}",
                serde_json::json!({"benchmark": "kafka", "pipeline": r.what, "records": r.records, "seconds": r.seconds, "records_per_s": rate, "mb_per_s": r.bytes as f64 / r.seconds / 1e6, "of_ceiling": rate / ceiling})
            );
        } else {
            println!(
                "kafka: {:<58} {:>9} records in {:>6.2} s: {:>7.0} records/s, {:>6.1} MB/s ({:.0}% of the bare consumer)",
                r.what,
                r.records,
                r.seconds,
                rate,
                r.bytes as f64 / r.seconds / 1e6,
                100.0 * rate / ceiling
            );
        }
    }
    Ok(())
}
