//! `weir-bench`: how fast weir is, measured the same way every time.
//!
//! ```text
//! cargo run --release -p weir-bench -- [all|events-agg|checkpoints|latency|reload|async|boundary|analysis|kafka|postgres|postgres-cdc|http|http-source|nexmark|languages|join|object-store] [options]
//! ```
//!
//! It first builds the plugins (`cargo build --target wasm32-wasip2
//! --release` in `plugins/`, output on stderr), then runs one or both
//! benchmarks and prints a table per benchmark on stdout. With `--json` each
//! result line is also printed as one JSON object on a line of its own (for
//! CI and trend tracking: `grep '^{'`). Nothing is asserted about times: the
//! numbers depend on the machine and on what else it is doing, so compare
//! runs on the same machine, and run twice when a number looks odd.
//!
//! # `events-agg`: the end-to-end job
//!
//! Runs `pipelines/events-agg.toml` through `weir_pipeline::run`, exactly as
//! `weir run` would but without progress output: generated JSON events
//! (~90 bytes) -> `json-filter` (parse, keep `amount >= 10`, key by user) ->
//! `running-sum` keyed by user with state in the host -> discard. The file
//! is the single definition of the job; `--count` and `--parallelism`
//! override its generator count and its operators' parallelism (without
//! `--parallelism`, it runs at 1 and at 2). At
//! parallelism 1 the whole job is one chain on one thread; at parallelism
//! P the generator runs as P subtasks (splitting the sequence), each chained with a `parse` subtask, feeding P `sum` subtasks by key.
//!
//! Each parallelism runs twice: with the Wasm components, and with the same
//! two plugin crates compiled into weir-bench (the *native baseline*,
//! [`weir_pipeline::NativeOperators`]), behind the same task loop,
//! chaining, hash exchange, keyed state (staged and committed per batch)
//! and sink. Only the Wasm boundary differs, so every figure reads as "Wasm
//! costs X over native" and "the host costs Y".
//!
//! * **records/s**: records produced by the source / elapsed wall time.
//!   Elapsed starts once the plugins are loaded and the operators opened.
//!   For scale, Flink runs the same job too; compare only figures taken
//!   in the same sitting ([docs/performance.md](../../../docs/performance.md)).
//! * **MB/s**: bytes of the generated frames (what the first operator
//!   received, frame headers included) per second, 1 MB = 10^6 bytes.
//! * **peak RSS**: the process's `VmHWM` from `/proc/self/status`. It is
//!   reset just before the run by writing `5` to `/proc/self/clear_refs`;
//!   where the kernel refuses, the table says "since process start". `all`
//!   runs events-agg before boundary in any case, so the boundary
//!   benchmark's buffers are never counted.
//! * **busy / idle / backpressured**: for each task (thread), the share of
//!   its time spent working, waiting for input, and waiting for room in a
//!   full output channel. A task near 100% busy is the bottleneck.
//! * **in operators** (native rows): per plugin, the time inside its
//!   `process` calls (its code, the SDK runtime, the keyed-state calls it
//!   makes), summed over subtasks. The rest of the native run's busy time
//!   is the host's: generating, the task loop, the exchange, the sink.
//! * **Wasm / native**: the Wasm run's elapsed time over the native run's
//!   at the same parallelism. The issue's target is at most 1.3x. With
//!   `--json`, the rows carry `"operators": "wasm"` or `"native"` (and
//!   `operator_seconds`), and an `events-agg-vs-native` line the ratio
//!   (`wasm_over_native`).
//!
//! # `checkpoints`: what exactly-once costs
//!
//! events-agg at parallelism 1 with 1 million distinct users (so the keyed
//! state holds a million entries), run twice: without checkpoints, and with
//! a checkpoint every 5 s into a temporary directory. Prints both rates,
//! the throughput loss, and the last checkpoint's duration, size and the
//! longest time a task stopped for its snapshot. `all` runs it with 20 M
//! records; alone, `--count` sets the records. Then, issue 17 (see
//! [`backpressure`]): under full backpressure, checkpoint duration p50/p99
//! and size aligned vs aligned with buffer debloating vs unaligned (30 s
//! each), and events-agg's throughput with a checkpoint every second,
//! aligned vs unaligned vs aligned with debloating.
//!
//! # `reload`: hot reload
//!
//! See [`reload`]: swap latency (file renamed into the plugin directory ->
//! every subtask running the new version) p50/p99 for a Rust plugin under
//! full load with a warm compile cache, the throughput lost to swapping
//! every 500 ms, and the swap latency of the ~15 MB JavaScript example with
//! a cold and a warm cache. `--count` sets the events of the Rust runs.
//! # `analysis`: the cost of finding the bottleneck
//!
//! `weir_metrics::analysis::analyze` on a synthetic job graph (8 chained
//! tasks x 4 subtasks, a full 300 s history with one task blocking in
//! bursts, so every rule including the history search runs): microseconds
//! per analysis, which every `weir status`, API call and UI refresh pays.
//! Not part of `all`; needs no plugins.
//!
//! # `postgres`: the PostgreSQL sink against a raw binary COPY
//!
//! See the `postgres` module: a throwaway cluster, 100-byte rows, the raw
//! binary COPY at `--pg-batch` rows per statement, then the real sink
//! (append exactly-once and at-least-once, upsert with new and existing
//! keys) at the same `batch.rows`, with a checkpoint every `--pg-epoch`
//! rows. Not part of `all` (it needs PostgreSQL installed).
//!
//! # `http`: the HTTP sink against a raw client
//!
//! See the `http` module: a local receiver, 100-byte records POSTed as JSON
//! arrays of `--pg-batch` records by a raw client (bodies built beforehand),
//! by the real sink and by the `webhook-sink` plugin (`type = "wasm"`), both
//! with a checkpoint every `--pg-epoch` records. Not part of `all`.
//!
//! # `http-source`: the HTTP source against a bare receiver
//!
//! See the `http_source` module: 4 clients POST NDJSON bodies of
//! `--pg-batch` 100-byte records to a bare receiver (no parsing, no disk)
//! and to the real source (parsed, fsynced in its spool before each 202,
//! read back as a task reads it, a checkpoint every `--pg-epoch` records).
//! Not part of `all`.
//!
//! # `postgres-cdc`: the CDC source against `pg_recvlogical`
//!
//! See the `postgres_cdc` module: a throwaway cluster with `wal_level =
//! logical`, `--pg-rows` inserts in transactions of `--pg-batch` rows,
//! streamed from a slot by PostgreSQL's `pg_recvlogical` (raw, undecoded)
//! and by the real source (decoded to JSON records). Not part of `all`.
//!
//! # `object-store`: the object storage sink against a raw S3 client
//!
//! See the `object_store` module: a local `moto_server`, 100-byte records
//! written as JSON lines and as Parquet by the raw `object_store` client
//! (encode, PUT) and by the real sink (check, stage, checkpoint every
//! `--os-epoch` records, encode, PUT), objects of `--os-roll-size` record
//! bytes, `--os-concurrency` uploads at once. Not part of `all` (it needs
//! moto installed).
//!
//! # `async`: async I/O slots
//!
//! See [`async_io`]: throughput of an HTTP-enriching async operator at
//! capacity 1, 8, 64 and 256 against 1 ms and 10 ms lookups, beside the
//! ceiling capacity / latency, and memory per slot. Part of `all` (the slow
//! service is the test harness's delaying HTTP server; nothing external).
//!
//! # `nexmark`: the benchmark the field publishes
//!
//! See [`nexmark`]: each query of `pipelines/nexmark/` (q0 pass-through, q1
//! currency conversion, q2 selection, q5 hot items, q7 highest bid) on
//! `--count` events of the generator's Nexmark schema (the same events as
//! the Flink comparison job's generator), run like events-agg at parallelism
//! 1 and 2: events/s, events/s per core (divided by min(parallelism,
//! cores)), outputs and peak RSS. Not part of `all`.
//!
//! # `join`: two inputs, keyed state on both sides
//!
//! See [`join`]: an event-time interval join of two generated streams
//! (`events` records, 1 M users) at parallelism 1 and 2 (or
//! `--parallelism`): records/s, pairs emitted, peak RSS and the checkpoint
//! size over time, which shows the state staying bounded as the watermark
//! passes. `--count` records in all, half per side. Not part of `all`.
//!
//! # `languages`: the same job in Rust, JavaScript and Python
//!
//! See [`languages`]: events-agg with json-filter and running-sum written
//! in each language (the components built with each SDK's own command):
//! component size, cold compile time, warm load time, memory per instance
//! and records/s at parallelism 1. Not part of `all` (the Python build
//! alone takes minutes).
//!
//! # `boundary`: the cost of crossing into Wasm
//!
//! The `identity` plugin (every record copied unchanged into the output
//! batch) called through `OperatorInstance::process` with the instance's
//! default limits, against the same work done natively: walk the batch with
//! `weir_format::Frames` and copy each record with `BatchWriter::push_record`
//! into a fresh output buffer, exactly what the guest SDK does. Records
//! have a 100-byte value and no key (120-byte frames). Per batch size, after
//! a warm-up, the fastest of `--rounds` rounds is kept.
//!
//! * **wasm ns/rec**, **native ns/rec**: wall time per record.
//! * **overhead ns/rec**: the difference, i.e. what the boundary adds: the
//!   call, copying the batch into guest memory, the guest allocating its
//!   output, and copying the output back out. The design target is under
//!   30 ns per record at batch sizes of 256 and up.
//! * **empty call**: one `process` call with an empty batch, the fixed cost
//!   every call pays whatever its size; it dominates at batch size 1.

mod async_io;
mod backpressure;
mod boundary;
mod events_agg;
mod join;
mod languages;
mod latency;
mod kafka;
mod nexmark;
mod reload;
mod http;
mod http_source;
mod postgres;
mod postgres_cdc;
mod object_store;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use std::process::{Command, Stdio};
use weir_wasm::{Engine, EngineConfig};

/// weir's benchmarks: the events-agg pipeline end to end (with its Wasm
/// operators and with the same operators compiled natively), and the cost of
/// the Wasm boundary (identity operator in Wasm vs the same code native).
///
/// The plugins are built first (cargo output on stderr). Results are printed
/// as tables on stdout; progress and information go to stderr. No time is
/// asserted: compare runs made on the same machine.
#[derive(Debug, Parser)]
#[command(name = "weir-bench", version, after_long_help = AFTER_HELP)]
struct Cli {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Which::All, value_name = "BENCHMARK")]
    which: Which,

    /// events-agg: number of events the generator produces (overrides the
    /// pipeline file's `count`).
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    count: u64,

    /// events-agg, nexmark, join: run at parallelism P only (default: 1 and
    /// 2). 1 runs the whole events-agg job as one chain on one thread; P > 1
    /// gives the generator, `parse` and `sum` P subtasks each.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: Option<u32>,

    /// nexmark: run only this query (q0, q1, q2, q5 or q7).
    #[arg(long, value_name = "QUERY")]
    query: Option<String>,

    /// boundary: records timed per batch size (batch size 1 runs a tenth of it).
    #[arg(long, default_value_t = 4_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(10..))]
    records: u64,

    /// boundary: batch sizes to measure, in records per `process` call.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,4096", value_name = "SIZES")]
    batch_sizes: Vec<usize>,

    /// boundary: timed rounds per batch size; postgres: rounds of raw COPY and
    /// append, interleaved; postgres-cdc, object-store: rounds of raw client
    /// and connector. The fastest round is reported.
    #[arg(long, default_value_t = 3, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,

    /// postgres, http, http-source: records written per configuration
    /// (100-byte records); postgres-cdc: rows inserted, then streamed.
    #[arg(long, default_value_t = 1_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pg_rows: u64,

    /// postgres: rows per COPY statement, for the sink (`batch.rows`) and the
    /// raw COPY alike; postgres-cdc: rows per inserting transaction; http,
    /// http-source: records per request.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pg_batch: u64,

    /// postgres, http, http-source: records between two checkpoints.
    #[arg(long, default_value_t = 250_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pg_epoch: u64,

    /// object-store: records written per configuration (100-byte records).
    #[arg(long, default_value_t = 1_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    os_records: u64,
    /// object-store: record bytes per object (the sink's `roll-size`).
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    os_roll_size: u64,
    /// object-store: objects uploaded at once, by the sink and the raw client.
    #[arg(long, default_value_t = 4, value_name = "N")]
    os_concurrency: usize,
    /// object-store: records between two checkpoints of the sink.
    #[arg(long, default_value_t = 250_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    os_epoch: u64,
    /// Also print each result line as one JSON object on its own line.
    #[arg(long)]
    json: bool,
}

const AFTER_HELP: &str = "\
How to read the results:
  events-agg  records/s is source records over wall time (plugins loaded and
              operators opened before the clock starts); MB/s counts the
              generated frames. Per task, busy + idle + backpressured = 100%:
              the task that is busy while its upstream is backpressured is the
              bottleneck. Peak RSS is the process's VmHWM, reset before the run.
              Each run is made twice: with the Wasm components, then with
              json-filter and running-sum compiled into weir-bench (native),
              behind the same task loop, exchange and keyed state; 'in
              operators' is the time inside their calls. Wasm / native is the
              ratio of the elapsed times: what the Wasm boundary costs.
              Target: <= 1.3x. The native run's time outside the operators is
              the host's (source, task loop, exchange, sink).
  boundary    overhead = Wasm ns/record - native ns/record for the identity
              operator: what crossing the component boundary costs per record.
              The empty-call figure is the fixed cost of one call; it dominates
              at batch size 1. Target: < 30 ns/record at batch >= 256.
  reload      swap latency: from renaming a new .wasm into the plugin directory
              to every subtask running it (includes the 250 ms quiet period
              the watcher waits for). Target: p99 < 1 s for a Rust plugin with
              a warm compile cache. The dip is records/s lost while swapping.
  postgres    rows/s of the sink (append, upsert) beside a raw binary COPY of
              the same 100-byte rows at the same rows per statement, on a
              throwaway cluster; 'vs raw' is the share of the raw rate.
              Target: append >= 80% of raw COPY.
  http        records/s of the HTTP sink (check, stage, checkpoint, POST JSON
              arrays of --pg-batch records) and of the webhook-sink plugin
              (a sink written as a Wasm component: bodies built in the
              plugin, POSTed through the host at commit) beside a raw
              client POSTing the same bodies, built beforehand, to the same
              local receiver. Target: >= 80% of raw.
  http-source records/s of the HTTP source (4 clients POST NDJSON bodies of
              --pg-batch records; parsed, fsynced in the spool before each
              202, read back as a task reads it) beside a bare receiver that
              reads the same requests and drops them (no parsing, no disk).
  postgres-cdc
              changes/s of the CDC source streaming --pg-rows inserts from a
              replication slot, beside pg_recvlogical streaming the same
              changes from its own slot (raw, undecoded); 'vs raw' is the
              share of its rate. Target: >= 80% of raw.
  async       records/s of an async operator doing one HTTP lookup per record
              (1 ms or 10 ms each) at capacity 1..256, beside the ceiling
              capacity / latency; memory per slot from the RSS deltas.
  latency     p50/p99 from a record's creation at the source to the sink, at
              ~10% load; with idle flush a buffer leaves as soon as the
              producer has nothing more to read. Target: p99 < 5 ms.
  kafka       records/s and MB/s of two pipelines beside a bare rdkafka
              consumer of the same topic (tansu in memory; --count records).
              Target: >= 80% of the bare consumer. Then latency under a
              producer paced at 20 k/s: the bare consumer's (the floor) and
              the pipeline's (producer CreateTime -> sink). Peak RSS per row.
  join        records/s of an interval join of two generated streams (half of
              --count each, 1 M keys), pairs emitted, and the checkpoint size
              every 2 s: it should level off as timers clean the state up.
  nexmark     events/s of each Nexmark query of pipelines/nexmark/ over the
              generator's Nexmark events (--count), at parallelism 1 and 2;
              per core = events/s / min(parallelism, cores). Flink runs the
              same queries on the same events: compare only figures taken in
              the same sitting (docs/performance.md).

Examples:
  cargo run --release -p weir-bench                         # everything, events-agg first
  cargo run --release -p weir-bench -- latency
  cargo run --release -p weir-bench -- async
  cargo run --release -p weir-bench -- languages --count 2000000
  cargo run --release -p weir-bench -- reload --count 5000000
  cargo run --release -p weir-bench -- postgres --pg-rows 1000000 --pg-batch 10000
  cargo run --release -p weir-bench -- http --pg-rows 5000000 --pg-batch 500
  cargo run --release -p weir-bench -- http-source --pg-rows 1000000 --pg-batch 500
  cargo run --release -p weir-bench -- postgres-cdc --pg-rows 1000000 --pg-batch 10000
  cargo run --release -p weir-bench -- object-store --os-records 1000000
  cargo run --release -p weir-bench -- kafka --count 1000000
  cargo run --release -p weir-bench -- nexmark --count 10000000 --query q5
  cargo run --release -p weir-bench -- join --count 10000000
  cargo run --release -p weir-bench -- events-agg --count 2000000 --parallelism 2
  cargo run --release -p weir-bench -- boundary --batch-sizes 256,4096 --json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    /// events-agg at parallelism 1 and 2, Wasm and native (first, so peak
    /// RSS is not inflated), then latency, then boundary.
    All,
    /// The events-agg pipeline (pipelines/events-agg.toml) end to end, at
    /// parallelism 1 and 2 (or --parallelism), with the Wasm operators and
    /// with the same operators compiled natively.
    EventsAgg,
    /// The identity operator in Wasm vs native, per batch size.
    Boundary,
    /// p50/p99 end-to-end latency at ~10% load (pipelines/latency.toml),
    /// with and without flushing buffers when the input goes idle.
    Latency,
    /// events-agg with 1 million distinct keys, without checkpoints and
    /// with one every 5 s: throughput loss, checkpoint duration and size.
    Checkpoints,
    /// Hot reload: swap latency p50/p99 of a Rust plugin under full load,
    /// the throughput dip, and a ~15 MB JavaScript component's swap with a
    /// cold and a warm compile cache.
    Reload,
    /// Kafka (tansu, in memory): a bare consumer vs Kafka -> identity ->
    /// Kafka and Kafka -> events-agg -> discard, then latency under a
    /// paced producer. Not part of `all`.
    Kafka,
    /// The bottleneck analysis over a full 300 s history (what every API
    /// and UI poll costs): 8 tasks x 4 subtasks.
    Analysis,
    /// The PostgreSQL sink (append and upsert) against a raw binary COPY of
    /// the same rows, on a throwaway cluster. Not part of `all`.
    Postgres,
    /// The HTTP sink against a raw client sending the same requests to a
    /// local receiver. Not part of `all`.
    Http,
    /// The HTTP source (webhooks in) against a bare receiver taking the
    /// same requests. Not part of `all`.
    HttpSource,
    /// The PostgreSQL CDC source against pg_recvlogical streaming the same
    /// inserts from a slot, on a throwaway cluster. Not part of `all`.
    PostgresCdc,
    /// Async I/O slots: an HTTP-enriching async operator at capacity 1, 8,
    /// 64, 256 against 1 ms and 10 ms lookups, vs capacity / latency.
    Async,
    /// The Nexmark queries of pipelines/nexmark/ (q0, q1, q2, q5, q7) on the
    /// generator's Nexmark events at parallelism 1 and 2 (or --parallelism):
    /// events/s, events/s per core, outputs, peak RSS. Not part of `all`.
    Nexmark,
    /// events-agg with its two operators in Rust, JavaScript and Python:
    /// component size, cold compile, warm load, memory per instance,
    /// records/s. `--count` sets Rust's events, a twentieth of it the
    /// interpreted languages'. Not part of `all`.
    Languages,
    /// An event-time interval join of two generated streams (1 M keys) at
    /// parallelism 1 and 2 (or --parallelism): records/s, pairs, peak RSS,
    /// checkpoint size over time. Not part of `all`.
    Join,
    /// The object storage sink (JSON lines and Parquet) against the raw
    /// object_store S3 client doing the same work, on a local moto_server.
    /// Not part of `all`.
    ObjectStore,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    if cli.batch_sizes.contains(&0) {
        bail!("--batch-sizes: a batch holds at least 1 record");
    }

    if cli.which == Which::Analysis {
        analysis(cli.json);
        return Ok(());
    }
    if cli.which == Which::ObjectStore {
        let rows = object_store::run(cli.os_records, cli.os_roll_size, cli.os_concurrency, cli.os_epoch, cli.rounds)?;
        object_store::print(&rows, cli.os_roll_size, cli.json);
        return Ok(());
    }
    if cli.which == Which::Postgres {
        let rows = postgres::run(cli.pg_rows, cli.pg_batch as usize, cli.pg_epoch, cli.rounds)?;
        postgres::print(&rows, cli.json);
        return Ok(());
    }
    if cli.which == Which::HttpSource {
        let rows = http_source::run(cli.pg_rows, cli.pg_batch as usize, cli.pg_epoch, cli.rounds)?;
        http_source::print(&rows, cli.json);
        return Ok(());
    }
    if cli.which == Which::PostgresCdc {
        let rows = postgres_cdc::run(cli.pg_rows, cli.pg_batch, cli.rounds)?;
        postgres_cdc::print(&rows, cli.pg_batch, cli.json);
        return Ok(());
    }
    let repo = repo_root()?;
    build_plugins(&repo)?;
    let plugin_dir = repo.join("plugins/target/wasm32-wasip2/release");
    let engine = Engine::new(EngineConfig { cache_dir: EngineConfig::default_cache_dir(), profiler: None })?;
    if cli.which == Which::Http {
        let rows = http::run(&engine, &plugin_dir, cli.pg_rows, cli.pg_batch as usize, cli.pg_epoch, cli.rounds)?;
        http::print(&rows, cli.json);
        return Ok(());
    }

    if matches!(cli.which, Which::All | Which::EventsAgg) {
        let pipeline = repo.join("pipelines/events-agg.toml");
        let runs = match cli.parallelism {
            Some(p) if cli.which == Which::EventsAgg => vec![p],
            _ => vec![1, 2],
        };
        for parallelism in runs {
            let wasm = events_agg::run(&engine, &pipeline, &plugin_dir, cli.count, parallelism)?;
            wasm.print(cli.json);
            let native = events_agg::run_native(&engine, &pipeline, &plugin_dir, cli.count, parallelism)?;
            native.print(cli.json);
            events_agg::compare(&wasm, &native, cli.json);
        }
    }
    if matches!(cli.which, Which::All | Which::Checkpoints) {
        let count = if cli.which == Which::All { 20_000_000 } else { cli.count.max(1) };
        events_agg::checkpoints(&engine, &repo.join("pipelines/events-agg.toml"), &plugin_dir, count, 1_000_000, Duration::from_secs(5), cli.json)?;
        backpressure::run(&engine, &repo, &plugin_dir, count.min(5_000_000), 30, cli.json)?;
    }
    if matches!(cli.which, Which::All | Which::Latency) {
        let rows = latency::run(&engine, &repo.join("pipelines/latency.toml"), &plugin_dir)?;
        latency::print(&rows, cli.json);
    }
    if matches!(cli.which, Which::All | Which::Reload) {
        let count = if cli.which == Which::All { 5_000_000 } else { cli.count };
        reload::run(&engine, &repo, &plugin_dir, count, cli.json)?;
    }
    if cli.which == Which::Nexmark {
        let parallelisms = cli.parallelism.map_or_else(|| vec![1, 2], |p| vec![p]);
        let queries: Vec<&'static str> = match &cli.query {
            None => nexmark::QUERIES.to_vec(),
            Some(q) => vec![nexmark::QUERIES.into_iter().find(|n| n == q).with_context(|| format!("--query {q}: not one of {}", nexmark::QUERIES.join(", ")))?],
        };
        let rows = nexmark::run(&engine, &repo, &plugin_dir, cli.count, &parallelisms, &queries)?;
        nexmark::print(&rows, cli.json);
    }
    if cli.which == Which::Join {
        let parallelisms = cli.parallelism.map_or_else(|| vec![1, 2], |p| vec![p]);
        let rows = join::run(&engine, &plugin_dir, cli.count.max(2), &parallelisms)?;
        join::print(&rows, cli.json);
    }
    if cli.which == Which::Kafka {
        kafka::run(&engine, &plugin_dir, cli.count.max(1), cli.json)?;
    }
    if cli.which == Which::Languages {
        let count = cli.count.max(1);
        let rows = languages::run(&repo, &plugin_dir, count, (count / 20).max(1))?;
        languages::print(&rows, cli.json);
    }
    if matches!(cli.which, Which::All | Which::Async) {
        let rows = async_io::run(&engine, &plugin_dir)?;
        async_io::print(&rows, cli.json);
    }
    if matches!(cli.which, Which::All | Which::Boundary) {
        let options = boundary::Options { records: cli.records, batch_sizes: cli.batch_sizes.clone(), rounds: cli.rounds };
        events_agg::reset_peak_rss();
        let report = boundary::run(&engine, &plugin_dir.join("identity.wasm"), &options)?;
        report.print(cli.json);
    }
    Ok(())
}

/// Times `weir_metrics::analysis::analyze` on a synthetic job graph of 8
/// chained tasks x 4 subtasks with 300 s of history where one task blocks
/// in bursts (the slowest rule, the history search, runs in full).
fn analysis(json: bool) {
    use weir_metrics::{analysis, GraphTask, TaskSample};
    let (tasks, subtasks, seconds) = (8usize, 4usize, weir_metrics::HISTORY);
    let graph: Vec<GraphTask> = (0..tasks).map(|t| GraphTask { name: format!("t{t}"), upstreams: t.checked_sub(1).into_iter().collect(), hash_input: t > 0 }).collect();
    let sample = |busy: f64, bp: f64| TaskSample { busy, idle: 1000.0 - busy - bp, backpressured: bp, in_pool: 0.5, out_pool: 0.5, records_in: 1000.0 };
    let history: Vec<Vec<Vec<TaskSample>>> = (0..tasks)
        .map(|t| {
            (0..subtasks)
                .map(|_| (0..seconds).map(|i| if t == 5 && i % 10 < 2 { sample(990.0, 0.0) } else if t == 4 && i % 10 < 2 { sample(10.0, 900.0) } else { sample(200.0, 0.0) }).collect())
                .collect()
        })
        .collect();
    let rounds = 2000;
    let started = Instant::now();
    let mut kind = None;
    for _ in 0..rounds {
        kind = Some(analysis::analyze("bench", &graph, &history, weir_metrics::WINDOW).kind);
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!("bottleneck analysis: {tasks} tasks x {subtasks} subtasks, {seconds} s of history: {us:.1} us per analysis (verdict {kind:?})");
    if json {
        print_json(&serde_json::json!({ "bench": "analysis", "tasks": tasks, "subtasks": subtasks, "seconds": seconds, "us_per_analysis": us }));
    }
}

/// The repository root: this crate lives in `host/bench`.
fn repo_root() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().with_context(|| format!("cannot find the weir repository at {}", dir.display()))
}

/// Builds the plugins with cargo, its output streamed to stderr.
fn build_plugins(repo: &Path) -> anyhow::Result<()> {
    let manifest = repo.join("plugins/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("weir-bench: building the plugins: cargo build --target wasm32-wasip2 --release --manifest-path {}", manifest.display());
    let status = Command::new(&cargo)
        .args(["build", "--target", "wasm32-wasip2", "--release", "--manifest-path"])
        .arg(&manifest)
        // The plugins must land in plugins/target, where the benchmarks look.
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {} to build the plugins; is cargo on PATH?", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "building the plugins failed ({status}); see cargo's output above. If the target is missing, run `rustup target add wasm32-wasip2`"
        );
    }
    Ok(())
}

/// Prints one JSON result line.
fn print_json(value: &serde_json::Value) {
    println!("{value}");
}
