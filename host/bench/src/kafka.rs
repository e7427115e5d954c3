//! Kafka throughput: the broker's ceiling (a bare rdkafka consumer reading
//! the topic alone) beside weir pipelines reading the same topic.
//!
//! Starts tansu (in memory) on a free port, produces `count` 100-byte
//! `events` records to an 8-partition topic, then measures:
//! 1. a bare rdkafka consumer (librdkafka, no weir) reading every record;
//! 2. Kafka -> identity (Wasm) -> Kafka (at-least-once);
//! 3. Kafka -> events-agg (parse + keyed running sum, Wasm) -> discard;
//! 3b. the same events as Avro in Confluent framing: a bare rdkafka
//!    consumer of that topic, then Kafka (Avro) -> identity (Wasm) -> Kafka
//!    (Avro), so each record is decoded to JSON and encoded back;
//! 4. the latency floor: a producer writes 20 k records/s for 10 s, read by
//!    a bare rdkafka consumer (`CreateTime` to arrival);
//! 5. end-to-end latency: the same producer while Kafka -> identity (Wasm)
//!    -> discard runs with `mark-latency`, so each record's latency is from
//!    its producer's `CreateTime` to the sink.
//!
//! Each row also reports the process's peak RSS (`VmHWM`, reset before the
//! row; the bench process holds weir and the verifying client).

use anyhow::Context as _;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_pipeline::{LoadOptions, Pipeline, Progress, RunHandle, RunOptions, StartFrom};
use weir_test_support::kafka::{Tansu, consume, consume_latencies, create_topic, produce, produce_with};
use weir_wasm::Engine;

/// One measured row.
struct Row {
    what: &'static str,
    records: u64,
    seconds: f64,
    bytes: u64,
    peak_rss: Option<u64>,
    /// p50 and p99 end-to-end latency in microseconds.
    latency: Option<(u64, u64)>,
}

/// Records per second and seconds of the latency rows.
const LIVE_RATE: u64 = 20_000;
const LIVE_SECONDS: u64 = 10;
/// `fetch.wait.max.ms` of the latency rows' consumers. tansu 0.6 holds every
/// fetch for the whole wait even when records are there (Kafka answers as
/// soon as `fetch.min.bytes` arrived), so librdkafka's 500 ms default would
/// measure tansu, not weir.
const FETCH_WAIT_MS: u32 = 5;

/// Produces `LIVE_RATE` records/s for `LIVE_SECONDS` to `topic`, after
/// `delay`, with a 1 ms linger.
fn paced_producer(brokers: &str, topic: &'static str, delay: Duration) -> std::thread::JoinHandle<()> {
    let brokers = brokers.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let started = Instant::now();
        let paced = (0..LIVE_RATE * LIVE_SECONDS).map(move |n| {
            let due = started + Duration::from_micros(n * 1_000_000 / LIVE_RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            event(n)
        });
        produce_with(&brokers, topic, paced, &[("linger.ms", "1")]);
    })
}

/// The same paced producer read by a bare rdkafka consumer: the latency
/// floor of the broker and client, without weir.
fn bare_latency(brokers: &str) -> anyhow::Result<Row> {
    let what = "latency floor: producer at 20 k/s -> bare rdkafka consumer";
    create_topic(brokers, "live-bare", 8);
    eprintln!("weir-bench: kafka: {what}");
    let total = LIVE_RATE * LIVE_SECONDS;
    crate::events_agg::reset_peak_rss();
    let producer = paced_producer(brokers, "live-bare", Duration::from_secs(1));
    let fetch_wait = FETCH_WAIT_MS.to_string();
    let mut latencies = consume_latencies(brokers, "live-bare", total as usize, &[("fetch.wait.max.ms", &fetch_wait)], Duration::from_secs(120));
    producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    anyhow::ensure!(latencies.len() as u64 == total, "{what}: read {} of {total} records", latencies.len());
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Row { what, records: total, seconds: LIVE_SECONDS as f64, bytes: total * 100, peak_rss: crate::events_agg::peak_rss(), latency: Some((at(0.5), at(0.99))) })
}

fn event(n: u64) -> (Option<Vec<u8>>, Vec<u8>) {
    let mut v = format!(r#"{{"id":{n},"user":"user-{:04}","amount":{},"pad":""#, (n * 7919) % 10_000, n % 100).into_bytes();
    v.resize(98, b'x');
    v.extend_from_slice(b"\"}");
    (None, v)
}

/// The Avro schema of [`event`]'s records.
const EVENT_AVSC: &str = r#"{"type":"record","name":"Event","fields":[{"name":"id","type":"long"},{"name":"user","type":"string"},{"name":"amount","type":"long"},{"name":"pad","type":"string"}]}"#;

/// Decodes and encodes up to a million events with the codec alone, on one
/// core, and prints the rates.
fn codec_alone(avro: &weir_codec::Codec, count: u64, avro_bytes: u64, json: bool) -> anyhow::Result<()> {
    let mut scratch = Vec::new();
    let encoded: Vec<Vec<u8>> = (0..count.min(1_000_000)).map(|n| avro.encode(&event(n).1, &mut scratch).map(<[u8]>::to_vec)).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let mut json_bytes = 0;
    for v in &encoded {
        json_bytes += avro.decode(v, &mut scratch).map_err(|e| anyhow::anyhow!("{e}"))?.len();
    }
    let decode_s = started.elapsed().as_secs_f64();
    let jsons: Vec<Vec<u8>> = (0..encoded.len() as u64).map(|n| event(n).1).collect();
    let started = Instant::now();
    for j in &jsons {
        avro.encode(j, &mut scratch).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let encode_s = started.elapsed().as_secs_f64();
    let n = encoded.len() as f64;
    if json {
        println!("{}", serde_json::json!({"benchmark": "kafka", "codec": "avro", "records": encoded.len(), "decode_records_per_s": n / decode_s, "encode_records_per_s": n / encode_s}));
    } else {
        println!(
            "kafka: Avro codec alone, one core ({} records, {} -> {} bytes each): decode to JSON {:.2} M records/s ({:.0} ns each), encode from JSON {:.2} M records/s ({:.0} ns each)",
            encoded.len(),
            avro_bytes,
            json_bytes / encoded.len().max(1),
            n / decode_s / 1e6,
            decode_s / n * 1e9,
            n / encode_s / 1e6,
            encode_s / n * 1e9
        );
    }

    Ok(())
}

/// Runs the Kafka benchmark with `count` records.
pub fn run(engine: &Engine, plugin_dir: &Path, count: u64, json: bool) -> anyhow::Result<()> {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 8);
    create_topic(&brokers, "copy", 8);
    eprintln!("weir-bench: kafka: producing {count} 100-byte records to tansu at {brokers}");
    produce(&brokers, "events", (0..count).map(event));
    let dir = tempfile::tempdir()?;
    let avsc = dir.path().join("event.avsc");
    std::fs::write(&avsc, EVENT_AVSC)?;
    let avro = weir_codec::ValueFormat {
        format: weir_codec::Format::Avro,
        schema_file: Some(avsc.clone()),
        framing: weir_codec::Framing::Confluent,
        schema_id: Some(1),
        ..Default::default()
    }
    .codec()
    .map_err(|e| anyhow::anyhow!(e))?;
    create_topic(&brokers, "events-avro", 8);
    create_topic(&brokers, "copy-avro", 8);
    let mut scratch = Vec::new();
    let avro_events = (0..count).map(|n| {
        let (key, json) = event(n);
        (key, avro.encode(&json, &mut scratch).expect("an event fits its schema").to_vec())
    });
    let avro_bytes = {
        let mut s = Vec::new();
        avro.encode(&event(0).1, &mut s).map_err(|e| anyhow::anyhow!("{e}"))?.len() as u64
    };
    produce(&brokers, "events-avro", avro_events);
    let mut rows = Vec::new();
    crate::events_agg::reset_peak_rss();
    let started = Instant::now();
    let got = consume(&brokers, "events", count as usize, Duration::ZERO, Duration::from_secs(600)).len() as u64;
    rows.push(Row {
        what: "bare rdkafka consumer (the broker's ceiling)",
        records: got,
        seconds: started.elapsed().as_secs_f64(),
        bytes: got * 100,
        peak_rss: crate::events_agg::peak_rss(),
        latency: None,
    });
    crate::events_agg::reset_peak_rss();
    let started = Instant::now();
    let got = consume(&brokers, "events-avro", count as usize, Duration::ZERO, Duration::from_secs(600)).len() as u64;
    let mut avro_ceiling = Some(Row {
        what: "bare rdkafka consumer of the Avro topic",
        records: got,
        seconds: started.elapsed().as_secs_f64(),
        bytes: got * avro_bytes,
        peak_rss: crate::events_agg::peak_rss(),
        latency: None,
    });
    let avro_format = format!("format = \"avro\"\nschema-file = {:?}\nframing = \"confluent\"\nschema-id = 1\n", avsc.display().to_string());
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
        (
            "Kafka (Avro) -> identity (Wasm) -> Kafka (Avro)",
            format!(
                "name = \"kafka-avro\"\nplugin-dir = \"{}\"\n[checkpoint]\ninterval = \"off\"\n\
                 [sources.events]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"events-avro\"\nend = \"latest\"\n{avro_format}\
                 [[operators]]\nname = \"id\"\nplugin = \"identity\"\n\
                 [sinks.out]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"copy-avro\"\n{avro_format}",
                plugin_dir.display()
            ),
        ),
    ] {
        let file = dir.path().join("p.toml");
        std::fs::write(&file, body)?;
        let p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin())).map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!("weir-bench: kafka: {what}");
        crate::events_agg::reset_peak_rss();
        let started = Instant::now();
        let summary = weir_pipeline::run(&p, engine, &RunOptions { progress: Progress::Quiet, start_from: StartFrom::Fresh, ..Default::default() })
            .with_context(|| what.to_owned())?;
        let records = summary.source_records();
        let avro_row = what.contains("Avro");
        if avro_row && let Some(c) = avro_ceiling.take() {
            rows.push(c);
        }
        let bytes = records * if avro_row { avro_bytes } else { 100 };
        rows.push(Row { what, records, seconds: started.elapsed().as_secs_f64(), bytes, peak_rss: crate::events_agg::peak_rss(), latency: None });
    }
    rows.push(bare_latency(&brokers)?);
    rows.push(live_latency(engine, plugin_dir, &brokers, dir.path())?);
    // The codec alone, without a broker: what one core decodes and encodes
    // (last, so its buffers do not count in the rows' peak RSS).
    codec_alone(&avro, count, avro_bytes, json)?;
    // Each row is compared with the bare consumer of its topic: the last
    // "bare" row above it.
    let mut ceiling = rows[0].records as f64 / rows[0].seconds;
    let mib = |b: Option<u64>| b.map_or("-".to_owned(), |b| format!("{:.0} MiB", b as f64 / f64::from(1 << 20)));
    for r in &rows {
        let rate = r.records as f64 / r.seconds;
        if r.what.starts_with("bare rdkafka consumer") && r.latency.is_none() {
            ceiling = rate;
        }
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "benchmark": "kafka", "pipeline": r.what, "records": r.records, "seconds": r.seconds,
                    "records_per_s": rate, "mb_per_s": r.bytes as f64 / r.seconds / 1e6, "of_ceiling": rate / ceiling,
                    "peak_rss_bytes": r.peak_rss, "p50_ms": r.latency.map(|l| l.0 as f64 / 1e3), "p99_ms": r.latency.map(|l| l.1 as f64 / 1e3),
                })
            );
        } else if let Some((p50, p99)) = r.latency {
            println!(
                "kafka: {:<58} {:>9} records at {:>7.0} records/s: latency p50 {:.1} ms, p99 {:.1} ms, peak RSS {}",
                r.what,
                r.records,
                rate,
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
                mib(r.peak_rss)
            );
        } else {
            println!(
                "kafka: {:<58} {:>9} records in {:>6.2} s: {:>7.0} records/s, {:>6.1} MB/s ({:.0}% of the bare consumer), peak RSS {}",
                r.what,
                r.records,
                r.seconds,
                rate,
                r.bytes as f64 / r.seconds / 1e6,
                100.0 * rate / ceiling,
                mib(r.peak_rss)
            );
        }
    }
    Ok(())
}

/// A producer writes `LIVE_RATE` records/s for `LIVE_SECONDS` to a fresh
/// topic while Kafka (`mark-latency`) -> identity -> discard runs; the run
/// is stopped once everything produced was read.
fn live_latency(engine: &Engine, plugin_dir: &Path, brokers: &str, dir: &Path) -> anyhow::Result<Row> {
    let what = "latency: producer at 20 k/s -> Kafka -> identity (Wasm) -> discard";
    create_topic(brokers, "live", 8);
    let file = dir.join("live.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"kafka-latency\"\nplugin-dir = \"{}\"\n[checkpoint]\ninterval = \"1s\"\n\
             [sources.events]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"live\"\nstart = \"earliest\"\nmark-latency = true\n\
             [sources.events.properties]\n\"fetch.wait.max.ms\" = \"{FETCH_WAIT_MS}\"\n\
             [[operators]]\nname = \"id\"\nplugin = \"identity\"\n\
             [sinks.out]\ntype = \"discard\"\n",
            plugin_dir.display()
        ),
    )?;
    let p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin())).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("weir-bench: kafka: {what}");
    let handle = RunHandle::new();
    let total = LIVE_RATE * LIVE_SECONDS;
    // Start producing once the pipeline reads; stop it once all arrived.
    let producer = paced_producer(brokers, "live", Duration::from_secs(2));
    let stopper = std::thread::spawn({
        let handle = handle.clone();
        move || {
            let _ = producer.join();
            std::thread::sleep(Duration::from_secs(2));
            handle.stop();
        }
    });
    crate::events_agg::reset_peak_rss();
    let summary = weir_pipeline::run(
        &p,
        engine,
        &RunOptions { progress: Progress::Quiet, start_from: StartFrom::Fresh, handle: Some(handle), ..Default::default() },
    )
    .with_context(|| what.to_owned())?;
    stopper.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    let records = summary.source_records();
    anyhow::ensure!(records == total, "{what}: read {records} of {total} records");
    let latency = summary.latency.map(|l| (l.p50_us, l.p99_us));
    anyhow::ensure!(latency.is_some(), "{what}: no latency samples (mark-latency did not reach the sink)");
    Ok(Row { what, records, seconds: LIVE_SECONDS as f64, bytes: records * 100, peak_rss: crate::events_agg::peak_rss(), latency })
}
