//! The object storage sink against a raw S3 client doing the same work on
//! the same server.
//!
//! A `moto_server` (`weir_test_support::s3::Moto`) on a free port, one
//! bucket per run. Records are the 100-byte JSON records of the postgres
//! benchmark, in 32 KiB frame batches (`postgres::batches`).
//!
//! * **raw client**: the `object_store` crate's S3 client directly: the
//!   records cut into objects of `roll-size` record bytes, each encoded
//!   (JSON lines: the values and newlines; Parquet: the same Arrow writer
//!   settings as the sink, through its [`Encoder`]) and `PUT`, `--os-concurrency`
//!   at a time. Nothing staged, nothing checked: the least work that lands
//!   the same objects.
//! * **sink**: the real `ObjectStoreSink` through the `Sink` trait as a
//!   task drives it: `write` per batch (each record checked, staged to a
//!   local file), a checkpoint (`pre_commit`, fsync; `commit`, which encodes
//!   and uploads) every `epoch` records, `close`. Timed from the first write
//!   to the end of the last commit.
//!
//! Each run's objects are counted (and their records, for JSON lines) so a
//! fast but wrong run cannot pass.

use anyhow::Context as _;
use bytes::Bytes;
use object_store::ObjectStoreExt;
use std::time::{Duration, Instant};
use weir_connector::{ConnectorContext, Frames};
use weir_connector_object_store::{ColumnConfig, ColumnType, Compression, Encoder, Format, ObjectStoreSink, ObjectStoreSinkConfig};
use weir_test_support::s3::Moto;

/// One measured configuration.
#[derive(Debug)]
pub struct Row {
    what: String,
    records: u64,
    elapsed: Duration,
}

fn columns() -> Vec<ColumnConfig> {
    let col = |name: &str, ty| ColumnConfig { name: name.into(), ty, nullable: true };
    vec![col("id", ColumnType::Int64), col("name", ColumnType::String), col("amount", ColumnType::Int64), col("payload", ColumnType::String)]
}

fn columns_toml() -> &'static str {
    "columns = [{ name = \"id\", type = \"int64\" }, { name = \"name\", type = \"string\" }, { name = \"amount\", type = \"int64\" }, { name = \"payload\", type = \"string\" }]"
}

/// The raw client: encode into objects of `roll` record bytes and PUT them,
/// `concurrency` at once.
fn raw(moto: &Moto, bucket: &str, data: &[(Vec<u8>, usize)], format: Format, roll: u64, concurrency: usize) -> anyhow::Result<(Duration, u64)> {
    let client = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_access_key_id("bench")
        .with_secret_access_key("bench")
        .with_virtual_hosted_style_request(false)
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cols = columns();
    let started = Instant::now();
    let mut queue: Vec<(String, Bytes)> = Vec::new();
    let mut objects = 0u64;
    let flush = |queue: &mut Vec<(String, Bytes)>| -> anyhow::Result<()> {
        let items: Vec<(object_store::path::Path, Bytes)> =
            std::mem::take(queue).into_iter().map(|(name, data)| (object_store::path::Path::from(name.as_str()), data)).collect();
        let results = rt.block_on(futures_util::future::join_all(items.iter().map(|(path, data)| client.put(path, data.clone().into()))));
        for r in results {
            r?;
        }
        Ok(())
    };
    let mut encoder = Encoder::new(format, &cols, Compression::Snappy).map_err(anyhow::Error::msg)?;
    let mut bytes = 0u64;
    for (frames, _) in data {
        for rec in Frames::new(frames) {
            let rec = rec?;
            encoder.push(rec.value).map_err(anyhow::Error::msg)?;
            bytes += rec.value.len() as u64 + 1;
            if bytes >= roll {
                let done = std::mem::replace(&mut encoder, Encoder::new(format, &cols, Compression::Snappy).map_err(anyhow::Error::msg)?);
                queue.push((format!("raw/part-{objects:06}.{}", format.extension()), Bytes::from(done.finish().map_err(anyhow::Error::msg)?)));
                objects += 1;
                bytes = 0;
                if queue.len() >= concurrency {
                    flush(&mut queue)?;
                }
            }
        }
    }
    if bytes > 0 {
        queue.push((format!("raw/part-{objects:06}.{}", format.extension()), Bytes::from(encoder.finish().map_err(anyhow::Error::msg)?)));
        objects += 1;
    }
    flush(&mut queue)?;
    Ok((started.elapsed(), objects))
}

/// The real sink, a checkpoint every `epoch` records.
fn sink(moto: &Moto, bucket: &str, staging: &std::path::Path, data: &[(Vec<u8>, usize)], format: Format, roll: u64, concurrency: usize, epoch: u64) -> anyhow::Result<(Duration, u64)> {
    let text = format!(
        "url = \"s3://{bucket}/sink\"\nendpoint = \"{}\"\npath-style = true\ncredentials-file = {:?}\nformat = \"{}\"\nroll-size = {roll}\nupload-concurrency = {concurrency}\nstaging-dir = {:?}\n{}",
        moto.endpoint(),
        staging.join("credentials").display().to_string(),
        if format == Format::Parquet { "parquet" } else { "json-lines" },
        staging.display().to_string(),
        if format == Format::Parquet { columns_toml() } else { "" }
    );
    let config: ObjectStoreSinkConfig = toml::from_str(&text)?;
    let ctx = ConnectorContext::new("bench", "objects", 0, 1);
    let mut sink = ObjectStoreSink::open(config, &ctx)?;
    let elapsed = crate::postgres::drive(&mut sink, data, epoch)?;
    Ok((elapsed, sink.stats().objects))
}

/// Runs raw and sink, JSON lines and Parquet, `rounds` times interleaved;
/// the fastest round of each is kept.
pub fn run(records: u64, roll: u64, concurrency: usize, epoch: u64, rounds: u32) -> anyhow::Result<Vec<Row>> {
    eprintln!("weir-bench: object-store: starting moto_server");
    let moto = Moto::start();
    let staging = tempfile::tempdir().context("staging directory")?;
    std::fs::write(staging.path().join("credentials"), "aws_access_key_id = bench\naws_secret_access_key = bench\n")?;
    let data = crate::postgres::batches(records);
    let mut out: Vec<Row> = Vec::new();
    let mut n = 0;
    for _ in 0..rounds {
        for format in [Format::JsonLines, Format::Parquet] {
            let f = format.extension();
            let cases: [(String, bool); 2] = [
                (format!("{f}: raw object_store client, {concurrency} PUTs at once"), true),
                (format!("{f}: sink, exactly-once (checkpoint every {epoch} records)"), false),
            ];
            for (what, is_raw) in cases {
                n += 1;
                let bucket = format!("bench-{n}");
                moto.create_bucket(&bucket);
                eprintln!("weir-bench: object-store: {what}");
                let (elapsed, objects) = if is_raw {
                    raw(&moto, &bucket, &data, format, roll, concurrency)?
                } else {
                    sink(&moto, &bucket, staging.path(), &data, format, roll, concurrency, epoch)?
                };
                let listed = moto.list(&bucket, "").len() as u64;
                anyhow::ensure!(listed == objects && objects > 0, "{what}: the bucket holds {listed} objects, {objects} were written");
                match out.iter_mut().find(|r| r.what == what) {
                    Some(r) => r.elapsed = r.elapsed.min(elapsed),
                    None => out.push(Row { what, records, elapsed }),
                }
            }
        }
    }
    Ok(out)
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], roll: u64, json: bool) {
    println!();
    println!("object-store: 100-byte JSON records -> moto_server, objects of {} record bytes", weir_pipeline::human(roll));
    println!("  {:<62} {:>10} {:>10} {:>8}", "what", "records", "records/s", "vs raw");
    let mut raw = None;
    for r in rows {
        let rate = r.records as f64 / r.elapsed.as_secs_f64();
        if r.what.contains("raw") {
            raw = Some(rate);
        }
        let share = raw.map_or(String::new(), |raw| format!("{:.0}%", rate / raw * 100.0));
        println!("  {:<62} {:>10} {:>10} {:>8}", r.what, r.records, weir_pipeline::human(rate as u64), share);
        if json {
            crate::print_json(&serde_json::json!({
                "benchmark": "object-store", "what": r.what, "records": r.records, "records_per_sec": rate.round(), "seconds": r.elapsed.as_secs_f64(),
            }));
        }
    }
}
