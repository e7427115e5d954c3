//! `languages`: events-agg with its two operators (`json-filter`,
//! `running-sum`) written in Rust (`plugins/`), JavaScript (`plugins/js`,
//! componentize-js) and Python (`plugins/python`, componentize-py), and
//! running-sum in C (`plugins/c`, after the Rust json-filter), the
//! same job and the same output bytes (tests/tests/languages.rs checks
//! that), so the figures compare the languages' runtimes only.
//!
//! Per language, for the two operators together:
//!
//! * **size**: the two component files.
//! * **cold compile**: `Engine::load` with an empty compile cache
//!   (Cranelift compiles the component; the interpreters' own code
//!   dominates for JS and Python).
//! * **warm load**: `Engine::load` again in a new engine with that cache
//!   (deserializing the compiled code).
//! * **memory/instance**: linear memory of one instance of each operator
//!   after `open` and one batch of 1,024 events, as `limits.memory` counts
//!   it.
//! * **records/s**: the events-agg pipeline at parallelism 1 (one thread),
//!   and the time per record that implies.
//!
//! The JavaScript and Python components are built with the SDKs' own
//! commands (`weir-js build`, `python -m weir_sdk build`); a language whose
//! tool is missing is skipped with a note.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use weir_wasm::{Engine, EngineConfig, InstanceInfo, Limits, OperatorInstance};

/// One language's figures.
#[derive(Debug)]
pub struct Row {
    lang: &'static str,
    size: u64,
    cold_ms: f64,
    warm_ms: f64,
    memory: usize,
    records: u64,
    records_per_sec: f64,
}

const OPERATORS: [(&str, &str); 2] = [
    ("json-filter", r#"{"filter":"amount >= 10","project":["user","amount"],"key":"user"}"#),
    ("running-sum", "{}"),
];

/// Builds (or copies) `lang`'s two components into `dir`; `None` when its tool is missing.
fn build(lang: &str, repo: &Path, rust_plugins: &Path, dir: &Path) -> anyhow::Result<Option<Vec<PathBuf>>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for (name, _) in OPERATORS {
        let out = dir.join(format!("{}.wasm", name.replace('-', "_")));
        let mut cmd = match lang {
            // C has running-sum only (plugins/c): its json-filter is Rust's.
            "rust" | "c" if lang == "rust" || name == "json-filter" => {
                std::fs::copy(rust_plugins.join(format!("{}.wasm", name.replace('-', "_"))), &out)?;
                files.push(out);
                continue;
            }
            "c" => {
                if Command::new("sh").args(["-c", "command -v clang && command -v wit-bindgen"]).output().map_or(true, |o| !o.status.success()) {
                    return Ok(None);
                }
                let mut c = Command::new("sh");
                c.arg(repo.join("sdk/c/build.sh")).arg(repo.join("plugins/c/running-sum/running_sum.c")).arg("-o").arg(&out);
                c
            }
            "javascript" => {
                if !repo.join("sdk/js/node_modules/.bin/componentize-js").exists() {
                    return Ok(None);
                }
                let mut c = Command::new("node");
                c.arg(repo.join("sdk/js/bin/weir-js.js")).arg("build").arg(repo.join(format!("plugins/js/src/{name}.js"))).arg("-o").arg(&out);
                c
            }
            _ => {
                let mut c = Command::new("python3");
                c.args(["-m", "weir_sdk", "build", "app", "-o"]).arg(&out).current_dir(repo.join(format!("plugins/python/{name}"))).env("PYTHONPATH", repo.join("sdk/python"));
                c
            }
        };
        eprintln!("weir-bench: languages: building {lang} {name}");
        let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
        if !status.success() {
            if lang == "python" && files.is_empty() && Command::new("python3").args(["-c", "import componentize_py"]).status().map_or(true, |s| !s.success()) {
                return Ok(None);
            }
            bail!("building {lang} {name} failed ({status})");
        }
        files.push(out);
    }
    Ok(Some(files))
}

/// 1,024 events like the generator's, in frame format.
fn events() -> Vec<u8> {
    let mut w = weir_format::BatchWriter::new();
    for i in 0..1024u64 {
        let v = format!("{{\"id\":{i},\"user\":\"user-{:04}\",\"amount\":{},\"ts\":{},\"pad\":\"xxxxxxxxxxxx\"}}", (i * 7919) % 10_000, i % 100, 1_700_000_000_000u64 + i);
        w.push(None, v.as_bytes(), i as i64, &[]);
    }
    w.finish()
}

fn measure(lang: &'static str, files: &[PathBuf], pipeline: &Path, count: u64) -> anyhow::Result<Row> {
    let size = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let cache = tempfile::tempdir()?;
    let config = || EngineConfig { cache_dir: Some(cache.path().to_owned()), profiler: None };
    let cold_engine = Engine::new(config())?;
    let started = Instant::now();
    for f in files {
        cold_engine.load(f)?;
    }
    let cold_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(cold_engine);
    let engine = Engine::new(config())?;
    let started = Instant::now();
    let mut plugins = Vec::new();
    for f in files {
        plugins.push(Arc::new(engine.load(f)?));
    }
    let warm_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut batch = events();
    let mut memory = 0;
    for (plugin, (name, config_json)) in plugins.iter().zip(OPERATORS) {
        let info = InstanceInfo {
            pipeline: "languages".into(),
            operator: name.into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            config_json: config_json.into(),
            read_dirs: Vec::new(),
            inputs: vec!["events".into()],
        };
        let mut inst = OperatorInstance::open(plugin, &info, Limits::default()).map_err(|e| anyhow::anyhow!("{lang} {name}: {e}"))?;
        batch = inst.process(&batch).map_err(|e| anyhow::anyhow!("{lang} {name}: {e}"))?;
        memory += inst.memory_bytes();
    }

    let dir = files[0].parent().expect("plugin dir");
    let report = crate::events_agg::run(&engine, pipeline, dir, count, 1)?;
    Ok(Row { lang, size, cold_ms, warm_ms, memory, records: count, records_per_sec: report.records_per_sec() })
}

/// Runs the benchmark: `count` events for Rust, `slow_count` for the interpreted languages.
pub fn run(repo: &Path, rust_plugins: &Path, count: u64, slow_count: u64) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let pipeline = repo.join("pipelines/events-agg.toml");
    let mut rows = Vec::new();
    for lang in ["rust", "c", "javascript", "python"] {
        match build(lang, repo, rust_plugins, &tmp.path().join(lang))? {
            None => eprintln!("weir-bench: languages: {lang} skipped: its build tool is not installed (bash tests/run installs them)"),
            Some(files) => rows.push(measure(lang, &files, &pipeline, if lang == "rust" || lang == "c" { count } else { slow_count })?),
        }
    }
    Ok(rows)
}

/// Prints the table (and JSON lines when asked).
pub fn print(rows: &[Row], json: bool) {
    println!();
    println!("languages: events-agg (json-filter -> running-sum), parallelism 1, both operators in each language");
    println!("  {:<11} {:>10} {:>13} {:>10} {:>16} {:>10} {:>12} {:>10}", "language", "size", "cold compile", "warm load", "memory/instance", "records", "records/s", "us/record");
    for r in rows {
        println!(
            "  {:<11} {:>7.2} MB {:>10.0} ms {:>7.1} ms {:>12.1} MiB {:>10} {:>12} {:>10.2}",
            r.lang,
            r.size as f64 / 1e6,
            r.cold_ms,
            r.warm_ms,
            r.memory as f64 / (1 << 20) as f64 / 2.0,
            weir_pipeline::human(r.records),
            weir_pipeline::human(r.records_per_sec as u64),
            1e6 / r.records_per_sec,
        );
        if json {
            crate::print_json(&serde_json::json!({
                "bench": "languages", "language": r.lang, "size_bytes": r.size, "cold_compile_ms": r.cold_ms, "warm_load_ms": r.warm_ms,
                "memory_per_instance_bytes": r.memory / 2, "records": r.records, "records_per_sec": r.records_per_sec,
            }));
        }
    }
    println!("  (size, compile and load for the two components together; memory the mean of the two instances;");
    println!("   c: running-sum in C after the Rust json-filter)");
}
