//! Hot reload: how long a swap takes and what it costs the data flow.
//!
//! * **Rust plugin, under full load.** events -> json-filter -> a keyed
//!   running sum (fixture-sum-v1/v2, the hot-reload test builds) at
//!   parallelism 2 -> discard, with the generator unthrottled. Run once
//!   without swaps and once while a thread installs the other build every
//!   `interval` (write a hidden temporary file, rename it over the plugin):
//!   the swap latency is from the rename to the last subtask running the new
//!   version (p50/p99 over all swaps of the run; both builds were compiled
//!   once before, so the compile cache is warm), and the throughput dip is
//!   the records/s lost over the whole run, also per swap.
//! * **Large component, cold and warm cache.** The JavaScript example
//!   (sdk/js, componentize-js, ~15 MB) in a throttled pipeline: the first
//!   swap to a build never compiled before (a fresh cache directory) pays
//!   Cranelift's compile, later swaps between the two builds load them from
//!   the on-disk cache. Skipped when componentize-js is not installed
//!   (`npm install` in sdk/js).

use anyhow::{bail, Context as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_pipeline::{LoadOptions, Pipeline, Progress, ReloadHandle, RunOptions};
use weir_wasm::{Engine, EngineConfig};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Installs `bytes` as `target` atomically; returns the time of the rename.
fn install(target: &Path, bytes: &[u8]) -> anyhow::Result<u64> {
    let tmp = target.with_file_name(format!(".{}.tmp", target.file_name().and_then(|n| n.to_str()).unwrap_or("plugin")));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, target)?;
    Ok(now_ms())
}

/// Waits until the attempt for `hash` after id `after` is done; returns
/// (id, live_at_ms).
fn wait_live(handle: &ReloadHandle, after: u64, hash: &str, timeout: Duration) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = handle.status().history.iter().find(|e| e.id > after && e.to == hash) {
            match (e.outcome, e.live_at_ms) {
                (weir_pipeline::reload::Outcome::Accepted, Some(live)) => return Ok((e.id, live)),
                (weir_pipeline::reload::Outcome::Accepted, None) => {}
                (o, _) => bail!("the swap to {} was {}: {}", &hash[..12], o.as_str(), e.reason),
            }
        }
        if Instant::now() > deadline {
            bail!("no swap to {} within {timeout:?}", &hash[..12]);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn rust_pipeline(dir: &Path, count: u64) -> String {
    format!(
        r#"
name = "reload-bench"
plugin-dir = "{}"
parallelism = 2
[checkpoint]
interval = "off"
dir = "{}"
[sources.events]
type = "generator"
count = {count}
parallelism = 1
[[operators]]
name = "parse"
plugin = "json-filter"
parallelism = 1
config = {{ project = ["id", "user", "amount"], key = "user" }}
[[operators]]
name = "sum"
plugin = "tagged-sum"
partition = "hash"
[sinks.out]
type = "discard"
"#,
        dir.join("plugins").display(),
        dir.join("checkpoints").display()
    )
}

/// One Rust run: records/s, and the swap latencies (ms) when swapping.
fn rust_run(engine: &Engine, dir: &Path, builds: &[Vec<u8>; 2], count: u64, interval: Option<Duration>) -> anyhow::Result<(f64, Vec<u64>, u64)> {
    let target = dir.join("plugins/tagged-sum.wasm");
    std::fs::write(&target, &builds[0])?;
    let file = dir.join("p.toml");
    std::fs::write(&file, rust_pipeline(dir, count))?;
    let p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin())).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = weir_pipeline::RunHandle::new();
    let handle = run.reload().clone();
    let options = RunOptions { progress: Progress::Quiet, handle: Some(run), ..Default::default() };
    let done = Arc::new(AtomicBool::new(false));
    let swapper = interval.map(|interval| {
        let (handle, done, target, builds) = (handle.clone(), done.clone(), target.clone(), builds.clone());
        std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            let hashes = [sha(&builds[0]), sha(&builds[1])];
            let mut latencies = Vec::new();
            let mut last_id = 0;
            std::thread::sleep(interval);
            for k in 1.. {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let written = install(&target, &builds[k % 2])?;
                match wait_live(&handle, last_id, &hashes[k % 2], Duration::from_secs(60)) {
                    Ok((id, live)) => {
                        last_id = id;
                        latencies.push(live.saturating_sub(written));
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(e) => return Err(e),
                }
                std::thread::sleep(interval);
            }
            Ok(latencies)
        })
    });
    let summary = weir_pipeline::run(&p, engine, &options);
    done.store(true, Ordering::Relaxed);
    let latencies = match swapper {
        Some(t) => t.join().map_err(|_| anyhow::anyhow!("the swapper thread panicked"))??,
        None => Vec::new(),
    };
    let summary = summary.context("running the reload benchmark pipeline")?;
    let pause = handle.status().history.iter().map(|e| e.pause_us).max().unwrap_or(0);
    Ok((summary.source_records() as f64 / summary.elapsed.as_secs_f64(), latencies, pause))
}

/// Builds the JavaScript example twice (two versions); `None` without componentize-js.
fn js_builds(repo: &Path, out: &Path) -> anyhow::Result<Option<[Vec<u8>; 2]>> {
    let js = repo.join("sdk/js");
    let tool = js.join("node_modules/.bin/componentize-js");
    if !tool.exists() {
        return Ok(None);
    }
    let source = std::fs::read_to_string(js.join("errors-only.js"))?;
    let mut builds = Vec::new();
    for (i, variant) in ["", "\n// build b\n"].iter().enumerate() {
        let src = out.join(format!("op{i}.js"));
        std::fs::write(&src, format!("{source}{variant}"))?;
        let wasm = out.join(format!("op{i}.wasm"));
        eprintln!("weir-bench: reload: building the JavaScript example ({}) with componentize-js", wasm.display());
        let status = std::process::Command::new(&tool)
            .arg(&src)
            .args(["--wit"])
            .arg(repo.join("wit"))
            .args(["--world-name", "operator", "-d", "stdio", "random", "clocks", "http", "fetch-event", "-o"])
            .arg(&wasm)
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()?;
        if !status.success() {
            bail!("componentize-js failed ({status})");
        }
        builds.push(std::fs::read(&wasm)?);
    }
    Ok(Some([builds.remove(0), builds.remove(0)]))
}

/// The large component: cold then warm swap latencies (ms).
fn js_run(dir: &Path, builds: &[Vec<u8>; 2]) -> anyhow::Result<(u64, Vec<u64>)> {
    // A fresh cache: build 1 was never compiled here.
    let engine = Engine::new(EngineConfig { cache_dir: Some(dir.join("cache")), profiler: None })?;
    std::fs::create_dir_all(dir.join("plugins"))?;
    let target = dir.join("plugins/js-op.wasm");
    std::fs::write(&target, &builds[0])?;
    let file = dir.join("js.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"reload-bench-js\"\nplugin-dir = \"{}\"\n[checkpoint]\ninterval = \"off\"\ndir = \"{}\"\n\
             [sources.words]\ntype = \"generator\"\nschema = \"words\"\nrate = 2000\n\
             [[operators]]\nname = \"errors\"\nplugin = \"js-op\"\n[sinks.out]\ntype = \"discard\"\n",
            dir.join("plugins").display(),
            dir.join("checkpoints").display()
        ),
    )?;
    let p = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin())).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = weir_pipeline::RunHandle::new();
    let handle = run.reload().clone();
    let options = RunOptions { progress: Progress::Quiet, handle: Some(run.clone()), ..Default::default() };
    let runner = std::thread::spawn(move || weir_pipeline::run(&p, &engine, &options).map(|_| ()).map_err(|e| anyhow::anyhow!("{e}")));
    let hashes = [sha(&builds[0]), sha(&builds[1])];
    let result = (|| -> anyhow::Result<(u64, Vec<u64>)> {
        // Running (the first build compiled cold at start) once it answers.
        while handle.status().operators.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(1));
        let written = install(&target, &builds[1])?;
        let (mut last, live) = wait_live(&handle, 0, &hashes[1], Duration::from_secs(600))?;
        let cold = live.saturating_sub(written);
        let mut warm = Vec::new();
        for k in 0..4 {
            std::thread::sleep(Duration::from_millis(500));
            let written = install(&target, &builds[k % 2])?;
            let (id, live) = wait_live(&handle, last, &hashes[k % 2], Duration::from_secs(600))?;
            last = id;
            warm.push(live.saturating_sub(written));
        }
        Ok((cold, warm))
    })();
    run.kill();
    runner.join().map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
    result
}

/// Runs the reload benchmark and prints its table.
pub fn run(engine: &Engine, repo: &Path, plugin_dir: &Path, count: u64, json: bool) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("plugins"))?;
    std::fs::copy(plugin_dir.join("json_filter.wasm"), dir.join("plugins/json_filter.wasm"))?;
    let builds = [std::fs::read(plugin_dir.join("fixture_sum_v1.wasm"))?, std::fs::read(plugin_dir.join("fixture_sum_v2.wasm"))?];
    // Compile both builds once: the Rust figures are with a warm cache.
    for (i, b) in builds.iter().enumerate() {
        engine.load_bytes("tagged-sum", Path::new(&format!("build-{i}.wasm")), b)?;
    }
    eprintln!("weir-bench: reload: {count} events without swaps");
    let (base, _, _) = rust_run(engine, dir, &builds, count, None)?;
    eprintln!("weir-bench: reload: {count} events, swapping the plugin every 500 ms");
    let (with_swaps, mut lat, pause_us) = rust_run(engine, dir, &builds, count, Some(Duration::from_millis(500)))?;
    if lat.is_empty() {
        bail!("the run ended before the first swap; raise --count");
    }
    lat.sort_unstable();
    let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));
    let dip = 1.0 - with_swaps / base;
    let run_secs = count as f64 / with_swaps;
    let per_swap_ms = dip.max(0.0) * run_secs * 1000.0 / lat.len() as f64;
    println!("reload: Rust plugin (fixture-sum, parallelism 2), warm compile cache, under full load");
    println!("  swaps                     {}", lat.len());
    println!("  swap latency p50 / p99    {p50} ms / {p99} ms   (rename -> every subtask on the new version; includes the 250 ms quiet period)");
    println!("  data flow stopped per swap  max {pause_us} us   (state hand-over + migrate, on the task thread)");
    println!("  throughput without swaps  {:.0} records/s", base);
    println!(
        "  throughput with swaps     {:.0} records/s  ({:+.1}%; {per_swap_ms:.0} ms of processing lost per swap, within this machine's run-to-run noise)",
        with_swaps,
        -dip * 100.0
    );
    if json {
        crate::print_json(&serde_json::json!({
            "benchmark": "reload", "plugin": "rust", "swaps": lat.len(), "p50_ms": p50, "p99_ms": p99,
            "max_pause_us": pause_us, "records_per_sec_without": base, "records_per_sec_with": with_swaps, "dip": dip, "ms_per_swap": per_swap_ms,
        }));
    }
    let js_dir = dir.join("js");
    std::fs::create_dir_all(&js_dir)?;
    match js_builds(repo, &js_dir)? {
        None => println!("reload: large component skipped: componentize-js is not installed (run `npm install` in sdk/js)"),
        Some(js) => {
            let (cold, mut warm) = js_run(&js_dir, &js)?;
            warm.sort_unstable();
            println!("reload: JavaScript component ({:.1} MB, componentize-js)", js[0].len() as f64 / 1e6);
            println!("  swap latency, cold cache  {cold} ms   (compile with Cranelift)");
            println!("  swap latency, warm cache  p50 {} ms, max {} ms over {} swaps", quantile(&warm, 0.5), warm[warm.len() - 1], warm.len());
            if json {
                crate::print_json(&serde_json::json!({
                    "benchmark": "reload", "plugin": "javascript", "size": js[0].len(), "cold_ms": cold, "warm_ms": warm,
                }));
            }
        }
    }
    Ok(())
}
