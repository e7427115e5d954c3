//! The HTTP source against a bare receiver taking the same requests.
//!
//! The same load both ways: 4 client threads, each on its own kept-alive
//! connection (the HTTP sink's client), POST NDJSON bodies of `batch`
//! 100-byte records (the PostgreSQL benchmark's records), built beforehand.
//!
//! * **bare receiver**: `weir_test_support::hook_server`, a thread per
//!   connection that reads each request, drops the body and answers 202:
//!   no parsing, no disk. The ceiling of HTTP on this machine.
//! * **bare receiver + fsync**: the same, but each body is appended to a
//!   file and fsynced before its 202: the durability the source promises,
//!   done the simple way (one request at a time).
//! * **source**: the real `HttpSource` (hyper, every record checked as
//!   JSON, the spool written and fsynced before each 202, group commit),
//!   read by the bench thread as a task reads it (`poll` into 256 KiB
//!   batches, `snapshot` and `checkpoint_complete` every `epoch` records).
//!   The clock stops when the last record has been *read* from the spool,
//!   not when the last request is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_connector::{BatchWriter, ConnectorContext, Frames, Poll, Source};
use weir_connector_http::client::{Client, parse_url};
use weir_connector_http::{HttpSource, HttpSourceConfig};
use weir_test_support::hook_server::HookServer;

/// Client threads.
const CLIENTS: usize = 4;

use crate::http::Row;

fn bodies(records: u64, batch: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let (mut body, mut n) = (Vec::new(), 0);
    for (frames, _) in crate::postgres::batches(records) {
        for rec in Frames::new(&frames) {
            body.extend_from_slice(rec?.value);
            body.push(b'\n');
            n += 1;
            if n == batch {
                out.push(std::mem::take(&mut body));
                n = 0;
            }
        }
    }
    if n > 0 {
        out.push(body);
    }
    Ok(out)
}

/// Posts every body from [`CLIENTS`] threads; each must be answered 202.
fn post_all(url: &str, bodies: Arc<Vec<Vec<u8>>>, round: u32) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, bodies) = (url.clone(), bodies.clone());
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let mut client = Client::new(parse_url(&url).map_err(anyhow::Error::msg)?, None, Duration::from_secs(30));
                    for i in (c..bodies.len()).step_by(CLIENTS) {
                        let headers = [("Content-Type".to_owned(), "application/x-ndjson".to_owned()), ("Idempotency-Key".to_owned(), format!("r{round}-{i}"))];
                        let r = client.send("POST", &headers, &bodies[i])?;
                        anyhow::ensure!(r.status == 202, "request {i} was answered {}", r.status);
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })
}

fn bare(bodies: &Arc<Vec<Vec<u8>>>, round: u32, fsync: bool) -> anyhow::Result<Duration> {
    let hook = HookServer::start();
    hook.discard_bodies();
    let dir = tempfile::tempdir()?;
    if fsync {
        hook.persist_bodies(&dir.path().join("bodies"));
    }
    let started = Instant::now();
    post_all(&hook.url(), bodies.clone(), round).join().map_err(|_| anyhow::anyhow!("the clients panicked"))??;
    let elapsed = started.elapsed();
    anyhow::ensure!(hook.accepted_count() == bodies.len() as u64, "{} of {} requests arrived", hook.accepted_count(), bodies.len());
    Ok(elapsed)
}

fn source(bodies: &Arc<Vec<Vec<u8>>>, records: u64, epoch: u64, round: u32) -> anyhow::Result<Duration> {
    let spool = tempfile::tempdir()?;
    let text = format!("listen = \"127.0.0.1:0\"\nmax-buffer = \"64GiB\"\nspool-dir = {:?}", spool.path().display().to_string());
    let mut config: HttpSourceConfig = toml::from_str(&text)?;
    config.checkpointing = true;
    let ctx = ConnectorContext::new("bench", "hooks", 0, 1);
    let mut src = HttpSource::open(&config, &ctx)?;
    let url = format!("http://{}/", src.local_addr());
    let started = Instant::now();
    let clients = post_all(&url, bodies.clone(), round);
    let mut out = BatchWriter::with_capacity(512 * 1024);
    let (mut read, mut next_checkpoint, mut checkpoint) = (0u64, epoch, 0u64);
    while read < records {
        out.clear();
        match src.poll(&mut out, 256 * 1024)? {
            Poll::Ready => read += out.records() as u64,
            Poll::Idle(d) => {
                anyhow::ensure!(!clients.is_finished() || started.elapsed() < Duration::from_secs(600), "the clients stopped at {read} of {records} records");
                std::thread::sleep(d);
            }
            Poll::Finished => anyhow::bail!("the http source finished"),
        }
        if read >= next_checkpoint {
            checkpoint += 1;
            let position = src.snapshot()?;
            src.checkpoint_complete(checkpoint, &position)?;
            next_checkpoint += epoch;
        }
    }
    let elapsed = started.elapsed();
    clients.join().map_err(|_| anyhow::anyhow!("the clients panicked"))??;
    src.close()?;
    anyhow::ensure!(read == records, "read {read} records, posted {records}");
    Ok(elapsed)
}

/// `rounds` interleaved rounds of the bare receiver and the source; the
/// fastest of each is kept.
pub fn run(records: u64, batch: usize, epoch: u64, rounds: u32) -> anyhow::Result<Vec<Row>> {
    let bodies = Arc::new(bodies(records, batch)?);
    let mut out: Vec<Row> = Vec::new();
    for round in 0..rounds {
        let sides = [
            format!("bare receiver (no parsing, no disk), {batch} per request"),
            "bare receiver + append and fsync each body before 202".to_owned(),
            format!("source: parse, spool + fsync, read (checkpoint every {epoch})"),
        ];
        for (side, what) in sides.into_iter().enumerate() {
            eprintln!("weir-bench: http-source: {what}");
            let elapsed = match side {
                0 => bare(&bodies, round, false)?,
                1 => bare(&bodies, round, true)?,
                _ => source(&bodies, records, epoch, round)?,
            };
            crate::http::keep_fastest(&mut out, what, records, elapsed);
        }
    }
    Ok(out)
}

/// Prints the table (and JSON lines).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("http-source: {CLIENTS} clients POST NDJSON of 100-byte records over kept-alive connections (202 each)");
    // The source is compared with the receiver that keeps the same promise.
    crate::http::print_rows("http-source", rows, 1, "vs +fsync", json);
}
