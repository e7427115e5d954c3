//! The PostgreSQL CDC source against the physical limit: PostgreSQL's own
//! `pg_recvlogical` reading the same changes from a slot of its own.
//!
//! A throwaway cluster with `wal_level = logical` gets a table
//! `bench (id bigint PRIMARY KEY, name text, amount integer, payload text)`
//! and a publication of it. Each round creates two slots (one per reader),
//! then inserts `rows` rows in transactions of `txn_rows` (untimed), so both
//! slots hold exactly the same changes; then each reader streams them all,
//! in alternating order from round to round. The fastest round of each is
//! kept.
//!
//! * **raw `pg_recvlogical`**: `pg_recvlogical --start` with `pgoutput`
//!   (protocol version 1, the same publication) up to the WAL position
//!   after the load, writing the undecoded stream to `/dev/null`. Only the
//!   server's decoding and the wire: nothing a client could beat.
//! * **source**: the real `PostgresCdcSource`, restored at the slot's start
//!   and polled as a task polls it (256 KiB batches), until every insert is
//!   a record. Connecting, the set-up checks and START_REPLICATION are
//!   timed, as the raw client's are; the pgoutput decoding, the JSON
//!   rendering and the batching count.

use anyhow::Context as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_connector::{BatchWriter, ConnectorContext, Poll, Source};
use weir_connector_postgres_cdc::{PostgresCdcConfig, PostgresCdcSource};
use weir_test_support::postgres::{TempCluster, find_bin_dir};

/// One measured configuration.
#[derive(Debug)]
pub struct Row {
    what: String,
    rows: u64,
    bytes: u64,
    elapsed: Duration,
}

const PUBLICATION: &str = "bench";
const RAW_SLOT: &str = "bench_raw";
const SOURCE_SLOT: &str = "bench_source";

fn source(pg: &TempCluster) -> anyhow::Result<PostgresCdcSource> {
    let text = format!("url = {:?}\ntables = [\"bench\"]\npublication = \"{PUBLICATION}\"\nslot = \"{SOURCE_SLOT}\"\nsnapshot = \"never\"", pg.url());
    let mut config: PostgresCdcConfig = toml::from_str(&text)?;
    config.checkpointing = true;
    let ctx = ConnectorContext::new("bench", "cdc", 0, 1);
    Ok(PostgresCdcSource::open(config, &ctx)?)
}

/// Creates the source's slot (a fresh start) and returns the position to
/// restore it at.
fn create_source_slot(pg: &TempCluster) -> anyhow::Result<Vec<u8>> {
    let mut s = source(pg)?;
    let mut out = BatchWriter::with_capacity(1 << 10);
    s.poll(&mut out, 1 << 10)?;
    anyhow::ensure!(out.records() == 0, "the source read changes before any were made");
    let position = s.snapshot()?;
    s.close()?;
    Ok(position)
}

/// Streams `rows` changes with the source, restored at `position`.
fn stream_source(pg: &TempCluster, position: &[u8], rows: u64) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut s = source(pg)?;
    s.restore(&[position])?;
    let mut out = BatchWriter::with_capacity(256 << 10);
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < rows {
        match s.poll(&mut out, 256 << 10)? {
            Poll::Ready => {}
            // As a task does: nothing yet, come back shortly.
            Poll::Idle(wait) => std::thread::sleep(wait),
            Poll::Finished => anyhow::bail!("the source ended after {records} of {rows} changes"),
        }
        records += out.records() as u64;
        bytes += out.len() as u64;
        out.clear();
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the source read {records} of {rows} changes in 10 minutes");
    }
    let elapsed = started.elapsed();
    s.close()?;
    anyhow::ensure!(records == rows, "the source read {records} changes, expected {rows}");
    Ok((elapsed, bytes))
}

/// Streams the raw slot up to `end` with `pg_recvlogical`.
fn stream_raw(pg: &TempCluster, end: &str) -> anyhow::Result<Duration> {
    let bin = find_bin_dir().context("PostgreSQL binaries")?.join("pg_recvlogical");
    let port = pg.port().to_string();
    let started = Instant::now();
    let out = Command::new(&bin)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "weir", "-d", "postgres", "-S", RAW_SLOT, "--start", "--no-loop"])
        .args(["-o", "proto_version=1", "-o", &format!("publication_names={PUBLICATION}"), "-E", end, "-f", "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let elapsed = started.elapsed();
    anyhow::ensure!(out.status.success(), "pg_recvlogical failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(elapsed)
}

/// Runs `rounds` rounds of `rows` inserts in transactions of `txn_rows`.
pub fn run(rows: u64, txn_rows: u64, rounds: u32) -> anyhow::Result<Vec<Row>> {
    eprintln!("weir-bench: postgres-cdc: starting a throwaway PostgreSQL cluster (wal_level = logical)");
    let pg = TempCluster::start_logical();
    pg.psql("CREATE TABLE bench (id bigint PRIMARY KEY, name text, amount integer, payload text)");
    pg.psql(&format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE bench"));
    let mut out: Vec<Row> = Vec::new();
    let mut keep = |what: &str, elapsed: Duration, bytes: u64| match out.iter_mut().find(|r| r.what == what) {
        Some(r) => r.elapsed = r.elapsed.min(elapsed),
        None => out.push(Row { what: what.into(), rows, bytes, elapsed }),
    };
    let raw = "raw pg_recvlogical (pgoutput, undecoded to /dev/null)";
    let src = "postgres-cdc source (decoded to JSON records)";
    for round in 0..rounds {
        pg.psql("TRUNCATE bench");
        pg.psql(&format!("SELECT pg_create_logical_replication_slot('{RAW_SLOT}', 'pgoutput')"));
        let position = create_source_slot(&pg)?;
        eprintln!("weir-bench: postgres-cdc: round {}: inserting {rows} rows in transactions of {txn_rows}", round + 1);
        let txns = rows.div_ceil(txn_rows);
        pg.psql(&format!(
            "DO $$ BEGIN FOR b IN 0..{last} LOOP \
               INSERT INTO bench SELECT g, 'user-' || lpad((g % 10000)::text, 4, '0'), (g % 1000)::int, repeat('x', 40) \
               FROM generate_series(b::bigint * {txn_rows}, least((b::bigint + 1) * {txn_rows}, {rows}) - 1) g; \
               COMMIT; END LOOP; END $$",
            last = txns - 1
        ));
        let end = pg.psql("SELECT pg_current_wal_insert_lsn()");
        for first_raw in [round % 2 == 0, round % 2 == 1] {
            if first_raw {
                eprintln!("weir-bench: postgres-cdc: {raw}");
                keep(raw, stream_raw(&pg, &end)?, 0);
            } else {
                eprintln!("weir-bench: postgres-cdc: {src}");
                let (elapsed, bytes) = stream_source(&pg, &position, rows)?;
                keep(src, elapsed, bytes);
            }
        }
        pg.psql(&format!("SELECT pg_drop_replication_slot('{RAW_SLOT}'); SELECT pg_drop_replication_slot('{SOURCE_SLOT}')"));
    }
    Ok(out)
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], txn_rows: u64, json: bool) {
    println!();
    println!("postgres-cdc: inserts into (id bigint, name text, amount integer, payload text), {txn_rows} rows per transaction, streamed from a slot");
    let raw = rows.first().map(|r| r.rows as f64 / r.elapsed.as_secs_f64());
    println!("  {:<58} {:>10} {:>10} {:>8} {:>8}", "what", "changes", "changes/s", "MB/s", "vs raw");
    for r in rows {
        let rate = r.rows as f64 / r.elapsed.as_secs_f64();
        let share = raw.map_or(String::new(), |raw| format!("{:.0}%", rate / raw * 100.0));
        let mbs = if r.bytes > 0 { format!("{:.1}", r.bytes as f64 / r.elapsed.as_secs_f64() / 1e6) } else { "-".into() };
        println!("  {:<58} {:>10} {:>10} {:>8} {:>8}", r.what, r.rows, weir_pipeline::human(rate as u64), mbs, share);
        if json {
            crate::print_json(&serde_json::json!({
                "benchmark": "postgres-cdc", "what": r.what, "changes": r.rows, "changes_per_sec": rate.round(),
                "record_bytes": r.bytes, "seconds": r.elapsed.as_secs_f64(),
            }));
        }
    }
}
