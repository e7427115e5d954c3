//! The HTTP sink against a raw client doing the same requests.
//!
//! A local receiver (`weir_test_support::hook_server`, std threads, bodies
//! counted and dropped) answers 202. The records are the PostgreSQL
//! benchmark's 100-byte JSON records in 32 KiB frame batches.
//!
//! * **raw client**: the request bodies (JSON arrays of `batch` records)
//!   built beforehand (untimed), then sent one after another over one
//!   kept-alive connection with the sink's own HTTP client, each with an
//!   idempotency key. Only the wire and the receiver are timed.
//! * **sink**: the real `HttpSink` driven through the `Sink` trait as a
//!   task drives it (`write` per batch, a checkpoint every `epoch`
//!   records, `close`): checking each record is JSON, staging the epoch to
//!   disk with its fsync, reading it back, cutting the requests, sending.
//! * **plugin sink**: `[sinks.hook] type = "wasm"` with the repo's
//!   `webhook-sink` plugin, opened through the connector registry's config
//!   and driven the same way: each batch crosses into the component, which
//!   builds the request bodies, keeps an epoch's bodies in its pre-commit
//!   handle and POSTs them through the host's `async-io` at commit. It
//!   keeps the epoch in memory instead of staging it to disk.

use std::path::Path;
use std::time::{Duration, Instant};
use weir_connector::registry::{ConfigContext, SinkConfig};
use weir_connector::{ConnectorContext, Frames};
use weir_connector_http::client::{Client, parse_url};
use weir_connector_http::{HttpSink, HttpSinkConfig};
use weir_connector_wasm::PluginSinkConfig;
use weir_test_support::hook_server::HookServer;
use weir_wasm::Engine;

/// One measured configuration.
#[derive(Debug)]
pub struct Row {
    what: String,
    records: u64,
    elapsed: Duration,
}

fn raw(hook: &HookServer, data: &[(Vec<u8>, usize)], batch: usize) -> anyhow::Result<Duration> {
    let mut bodies = Vec::new();
    let (mut body, mut n) = (Vec::new(), 0);
    for (frames, _) in data {
        for rec in Frames::new(frames) {
            body.push(if n == 0 { b'[' } else { b',' });
            body.extend_from_slice(rec?.value);
            n += 1;
            if n == batch {
                body.push(b']');
                bodies.push(std::mem::take(&mut body));
                n = 0;
            }
        }
    }
    if n > 0 {
        body.push(b']');
        bodies.push(body);
    }
    let mut client = Client::new(parse_url(&hook.url()).map_err(anyhow::Error::msg)?, None, Duration::from_secs(30));
    let started = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let headers = [("Content-Type".to_owned(), "application/json".to_owned()), ("Idempotency-Key".to_owned(), format!("raw-{i}"))];
        let r = client.send("POST", &headers, body)?;
        anyhow::ensure!(r.status == 202, "the receiver answered {}", r.status);
    }
    Ok(started.elapsed())
}

fn sink(hook: &HookServer, staging: &std::path::Path, data: &[(Vec<u8>, usize)], batch: usize, epoch: u64) -> anyhow::Result<Duration> {
    let text = format!("url = {:?}\nbatch = {{ records = {batch}, bytes = \"64MiB\" }}\nstaging-dir = {:?}\ndead-letter-dir = {:?}", hook.url(), staging.display().to_string(), staging.join("dead").display().to_string());
    let mut config: HttpSinkConfig = toml::from_str(&text)?;
    config.checkpointing = true;
    let ctx = ConnectorContext::new("bench", "hook", 0, 1);
    let mut sink = HttpSink::open(config, &ctx)?;
    crate::postgres::drive(&mut sink, data, epoch)
}

fn plugin_sink(engine: &Engine, plugin_dir: &Path, hook: &HookServer, data: &[(Vec<u8>, usize)], batch: usize, epoch: u64) -> anyhow::Result<Duration> {
    let text = format!("plugin = \"webhook-sink\"\nallow-http = [\"127.0.0.1:{}\"]\nconfig = {{ url = {:?}, batch = {batch} }}", hook.port, hook.url());
    let mut config: PluginSinkConfig = toml::from_str(&text)?;
    let cx = ConfigContext { pipeline: "bench", name: "hook", base: plugin_dir, checkpointing: true, plugin_dir };
    let errors = config.prepare(&cx);
    anyhow::ensure!(errors.is_empty(), "sinks.hook: {errors:?}");
    let mut ctx = ConnectorContext::new("bench", "hook", 0, 1);
    ctx.services = ctx.services.with(engine.clone());
    let mut sink = config.open(&ctx)?;
    crate::postgres::drive(sink.as_mut(), data, epoch)
}

/// `rounds` interleaved rounds of the raw client, the sink and the plugin
/// sink; the fastest of each is kept.
pub fn run(engine: &Engine, plugin_dir: &Path, records: u64, batch: usize, epoch: u64, rounds: u32) -> anyhow::Result<Vec<Row>> {
    let hook = HookServer::start();
    hook.discard_bodies();
    let staging = tempfile::tempdir()?;
    let data = crate::postgres::batches(records);
    let mut out: Vec<Row> = Vec::new();
    let requests = records.div_ceil(batch as u64);
    for _ in 0..rounds {
        let sides = [
            (format!("raw client, {batch} records per request"), Side::Raw),
            (format!("sink, exactly-once (checkpoint every {epoch} records)"), Side::Sink),
            ("webhook-sink plugin (Wasm), exactly-once, same".to_owned(), Side::Plugin),
        ];
        for (what, side) in sides {
            eprintln!("weir-bench: http: {what}");
            let before = hook.accepted_count();
            let elapsed = match side {
                Side::Raw => raw(&hook, &data, batch)?,
                Side::Sink => sink(&hook, staging.path(), &data, batch, epoch)?,
                Side::Plugin => plugin_sink(engine, plugin_dir, &hook, &data, batch, epoch)?,
            };
            let sent = hook.accepted_count() - before;
            anyhow::ensure!(sent >= requests, "{what}: {sent} requests arrived, expected {requests}");
            keep_fastest(&mut out, what, records, elapsed);
        }
    }
    Ok(out)
}

/// Who sends the records.
#[derive(Debug, Clone, Copy)]
enum Side {
    Raw,
    Sink,
    Plugin,
}

/// Records a round of `what`, keeping the fastest round of each.
pub(crate) fn keep_fastest(rows: &mut Vec<Row>, what: String, records: u64, elapsed: Duration) {
    match rows.iter_mut().find(|r| r.what == what) {
        Some(r) => r.elapsed = r.elapsed.min(elapsed),
        None => rows.push(Row { what, records, elapsed }),
    }
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("http: 100-byte JSON records -> POST of JSON arrays to a local receiver (202)");
    print_rows("http", rows, 0, "vs raw", json);
}

/// Prints `rows` with each rate as a share of row `reference`'s.
pub(crate) fn print_rows(benchmark: &str, rows: &[Row], reference: usize, versus: &str, json: bool) {
    let base = rows.get(reference).map(|r| r.records as f64 / r.elapsed.as_secs_f64());
    println!("  {:<64} {:>10} {:>10} {:>10}", "what", "records", "records/s", versus);
    for r in rows {
        let rate = r.records as f64 / r.elapsed.as_secs_f64();
        let share = base.map_or(String::new(), |b| format!("{:.0}%", rate / b * 100.0));
        println!("  {:<64} {:>10} {:>10} {:>10}", r.what, r.records, weir_pipeline::human(rate as u64), share);
        if json {
            crate::print_json(&serde_json::json!({
                "benchmark": benchmark, "what": r.what, "records": r.records, "records_per_sec": rate.round(), "seconds": r.elapsed.as_secs_f64(),
            }));
        }
    }
}
