//! The PostgreSQL sink against the physical limit: a raw binary `COPY` of
//! the same rows at the same batch size.
//!
//! A throwaway cluster (`weir_test_support::postgres::TempCluster`:
//! initdb in a temp dir, `fsync = off` like every test cluster here) gets a
//! table `bench (id bigint, name text, amount integer, payload text)`; each
//! row comes from a 100-byte JSON record. Every run starts on a freshly
//! created table.
//!
//! * **raw COPY**: the rows encoded to binary COPY tuples beforehand
//!   (untimed), then sent with tokio-postgres as one `COPY .. (FORMAT
//!   binary)` statement per `batch` rows, each its own transaction. Only the
//!   database's work and the wire are timed: nothing weir could beat.
//! * **sink**: the real `PostgresSink` driven through the `Sink` trait as a
//!   task drives it: 32 KiB frame batches from `write`, a checkpoint
//!   (`pre_commit` + `commit`) every `epoch` rows, `close` at the end (which
//!   waits until everything is published). Timed from the first write to the
//!   end of `close`, so the JSON parsing, the spill file and its fsync, and
//!   the publish transactions all count.

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::SinkExt;
use std::time::{Duration, Instant};
use weir_connector::{BatchWriter, ConnectorContext, Frames, Sink};
use weir_connector_postgres::encode::{Encoder, COPY_HEADER, COPY_TRAILER};
use weir_connector_postgres::schema::{Column, PgType, Source};
use weir_connector_postgres::{PostgresSink, PostgresSinkConfig};
use weir_test_support::postgres::TempCluster;

/// One measured configuration.
#[derive(Debug)]
pub struct Row {
    what: String,
    rows: u64,
    elapsed: Duration,
}

/// 100-byte records in 32 KiB frame batches.
pub(crate) fn batches(rows: u64) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut w = BatchWriter::with_capacity(32 << 10);
    for i in 0..rows {
        let head = format!("{{\"id\":{i},\"name\":\"user-{:04}\",\"amount\":{},\"payload\":\"", i % 10_000, i % 1000);
        let pad = 100usize.saturating_sub(head.len() + 2);
        let value = format!("{head}{}\"}}", "x".repeat(pad));
        w.push(None, value.as_bytes(), i as i64, &[]);
        if w.len() >= 32 << 10 {
            let n = w.records();
            out.push((w.take(), n));
        }
    }
    if w.records() > 0 {
        let n = w.records();
        out.push((w.take(), n));
    }
    out
}

fn columns() -> Vec<Column> {
    let col = |name: &str, ty, type_name: &str| Column { name: name.into(), ty, type_name: type_name.into(), source: Source::Field(name.into()), not_null: false };
    vec![col("id", PgType::Int8, "bigint"), col("name", PgType::Text, "text"), col("amount", PgType::Int4, "integer"), col("payload", PgType::Text, "text")]
}

fn fresh_table(pg: &TempCluster, upsert: bool) {
    let key = if upsert { " PRIMARY KEY" } else { "" };
    pg.psql(&format!("DROP TABLE IF EXISTS bench; CREATE TABLE bench (id bigint{key}, name text, amount integer, payload text); CHECKPOINT"));
}

/// Raw binary COPY, one statement (and transaction) per `batch` rows.
fn raw_copy(pg: &TempCluster, data: &[(Vec<u8>, usize)], batch: usize) -> anyhow::Result<Duration> {
    let mut encoder = Encoder::new(columns(), false);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut current = COPY_HEADER.to_vec();
    let mut n = 0;
    for (frames, _) in data {
        for rec in Frames::new(frames) {
            encoder.encode(&rec?, 0, 0, &mut current).map_err(anyhow::Error::msg)?;
            n += 1;
            if n == batch {
                current.extend_from_slice(COPY_TRAILER);
                chunks.push(std::mem::replace(&mut current, COPY_HEADER.to_vec()));
                n = 0;
            }
        }
    }
    if n > 0 {
        current.extend_from_slice(COPY_TRAILER);
        chunks.push(current);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let started = Instant::now();
        for chunk in chunks {
            let sink = client.copy_in::<_, Bytes>("COPY bench (id, name, amount, payload) FROM STDIN (FORMAT binary)").await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from(chunk)).await?;
            sink.finish().await?;
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    })
}

/// The real sink, a checkpoint every `epoch` rows.
fn sink(pg: &TempCluster, spill: &std::path::Path, data: &[(Vec<u8>, usize)], extra: &str, epoch: u64) -> anyhow::Result<Duration> {
    let text = format!("url = {:?}\ntable = \"bench\"\nspill-dir = {:?}\n{extra}", pg.url(), spill.display().to_string());
    let config: PostgresSinkConfig = toml::from_str(&text)?;
    let ctx = ConnectorContext::new("bench", "pg", 0, 1);
    let mut sink = PostgresSink::open(config, &ctx)?;
    drive(&mut sink, data, epoch)
}

/// Drives a sink as a task does: `start`, `write` per batch, a checkpoint
/// (`pre_commit` + `commit`) every `epoch` records and at the end, `close`.
/// Timed from the first write to the end of `close`.
pub(crate) fn drive(sink: &mut dyn Sink, data: &[(Vec<u8>, usize)], epoch: u64) -> anyhow::Result<Duration> {
    sink.start(None)?;
    let started = Instant::now();
    let (mut since, mut checkpoint) = (0u64, 0u64);
    for (frames, n) in data {
        sink.write(frames, *n)?;
        since += *n as u64;
        if since >= epoch {
            checkpoint += 1;
            let handle = sink.pre_commit(checkpoint)?;
            sink.commit(checkpoint, &handle)?;
            since = 0;
        }
    }
    checkpoint += 1;
    let handle = sink.pre_commit(checkpoint)?;
    sink.commit(checkpoint, &handle)?;
    sink.close()?;
    Ok(started.elapsed())
}

/// Runs every configuration on one cluster. Append and raw COPY run
/// `rounds` times, interleaved, and the fastest round of each is kept (the
/// machine is shared: interleaving and best-of keep a noisy neighbour from
/// favouring one side).
pub fn run(rows: u64, batch: usize, epoch: u64, rounds: u32) -> anyhow::Result<Vec<Row>> {
    eprintln!("weir-bench: postgres: starting a throwaway PostgreSQL cluster");
    let pg = TempCluster::start();
    let spill = tempfile::tempdir().context("spill directory")?;
    let data = batches(rows);
    let mut out: Vec<Row> = Vec::new();
    let mut measure = |what: String, fresh: Option<bool>, f: &mut dyn FnMut() -> anyhow::Result<Duration>| -> anyhow::Result<()> {
        if let Some(upsert) = fresh {
            fresh_table(&pg, upsert);
        }
        eprintln!("weir-bench: postgres: {what}");
        let elapsed = f()?;
        let count: u64 = pg.psql("SELECT count(*) FROM bench").parse()?;
        anyhow::ensure!(count == rows, "{what}: the table holds {count} rows, expected {rows}");
        match out.iter_mut().find(|r| r.what == what) {
            Some(r) => r.elapsed = r.elapsed.min(elapsed),
            None => out.push(Row { what, rows, elapsed }),
        }
        Ok(())
    };
    let b = format!("batch = {{ rows = {batch} }}");
    for _ in 0..rounds {
        measure(format!("raw binary COPY, {batch} rows per statement"), Some(false), &mut || raw_copy(&pg, &data, batch))?;
        measure(format!("sink append, exactly-once (checkpoint every {epoch} rows)"), Some(false), &mut || sink(&pg, spill.path(), &data, &b, epoch))?;
        measure("sink append, at-least-once".into(), Some(false), &mut || sink(&pg, spill.path(), &data, &format!("{b}\ndelivery = \"at-least-once\""), epoch))?;
    }
    let upsert = format!("{b}\nmode = \"upsert\"\nkey = [\"id\"]");
    measure("sink upsert, exactly-once, new keys".into(), Some(true), &mut || sink(&pg, spill.path(), &data, &upsert, epoch))?;
    // The same keys again: every row updates one.
    measure("sink upsert, exactly-once, existing keys".into(), None, &mut || sink(&pg, spill.path(), &data, &upsert, epoch))?;
    Ok(out)
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("postgres: 100-byte JSON records -> table (id bigint, name text, amount integer, payload text)");
    let raw = rows.first().map(|r| r.rows as f64 / r.elapsed.as_secs_f64());
    println!("  {:<58} {:>10} {:>10} {:>8}", "what", "rows", "rows/s", "vs raw");
    for r in rows {
        let rate = r.rows as f64 / r.elapsed.as_secs_f64();
        let share = raw.map_or(String::new(), |raw| format!("{:.0}%", rate / raw * 100.0));
        println!("  {:<58} {:>10} {:>10} {:>8}", r.what, r.rows, weir_pipeline::human(rate as u64), share);
        if json {
            crate::print_json(&serde_json::json!({
                "benchmark": "postgres", "what": r.what, "rows": r.rows, "rows_per_sec": rate.round(), "seconds": r.elapsed.as_secs_f64(),
            }));
        }
    }
}
