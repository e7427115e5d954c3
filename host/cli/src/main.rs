//! The `weir` command line.

mod log;
mod new_plugin;
mod plugins;
mod status;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir_pipeline::{checkpoint_line, human, LoadOptions, Phase, Pipeline, Plan, Progress, RunOptions, RunSummary, StartFrom};
use weir_wasm::{Engine, EngineConfig};

/// weir runs stream pipelines whose operators are WebAssembly components.
///
/// A pipeline file (TOML) names sources, a chain of operators (each a
/// `.wasm` plugin from the plugin directory, with its config) and sinks.
/// Start with `weir run pipelines/quickstart.toml`, write your own operator
/// with `weir new-plugin NAME`, and check a pipeline with `weir check FILE`.
///
/// A running pipeline takes a checkpoint every `checkpoint.interval` (10 s by
/// default) into `data/checkpoints/PIPELINE/` next to its file; killed and
/// started again, it resumes from the latest one and its output is exactly
/// that of an uninterrupted run.
///
/// Plugins are hot-reloaded: copy a new `.wasm` over one in the plugin
/// directory while the pipeline runs and it is validated in the background
/// and swapped in with the operator's state kept (a bad file is refused, a
/// version that fails at once is rolled back). `weir plugins FILE` shows
/// the versions and the reload history.
///
/// An operator that calls a database or an HTTP service is an async
/// operator (world weir:plugin/async-operator): give it an `async` table
/// (`capacity` records in flight per subtask, `output = "ordered"` or
/// `"unordered"`, `timeout`, `retry`, `dead-letter = "SINK"`, `allow-http`,
/// `connections`) and declare PostgreSQL access in `[connections.NAME]`. A
/// lookup that times out is retried, then sent to the dead-letter sink; the
/// job goes on.
#[derive(Parser)]
#[command(name = "weir", version, about, long_about, max_term_width = 100)]
struct Cli {
    /// More log output (-v: info, -vv: debug). WEIR_LOG=filter overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one pipeline in the foreground until its input ends, with live progress.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Load plugins from this directory instead of the file's `plugin-dir`.
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// No live progress; print only the summary (and errors).
        #[arg(short, long)]
        quiet: bool,
        /// Serve Prometheus metrics at http://ADDRESS/metrics ("off" to disable).
        #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:9249")]
        metrics_address: String,
        /// Resume from this checkpoint instead of the latest: an id (`17`), a
        /// savepoint (`savepoint-17`) or a checkpoint directory (of any
        /// pipeline, e.g. a copy).
        #[arg(long, value_name = "ID|PATH", conflicts_with = "fresh")]
        from_checkpoint: Option<String>,
        /// Ignore existing checkpoints and start from the beginning of the
        /// input (sinks start over too: a file sink truncates its file).
        #[arg(long)]
        fresh: bool,
        /// Sample where the plugins spend their time (every 10 ms of Wasm
        /// execution of each instance) and write the stacks to FILE when the
        /// run ends: a flame graph when FILE ends in `.svg` (open it in a
        /// browser), `perf script` text when it ends in `.perf` (open it in
        /// the Firefox Profiler, with a timeline per operator), folded
        /// stacks otherwise (speedscope, inferno); the hottest functions of
        /// each operator are printed with the summary.
        #[arg(long, value_name = "FILE")]
        profile: Option<PathBuf>,
    },
    /// Run as a service: every pipeline of a directory, restarted from its
    /// last checkpoint when it fails, with a REST API and a web UI.
    ///
    /// The pipelines directory is watched: added files start, changed files
    /// restart with their new contents, removed files stop. SIGTERM stops
    /// every pipeline gracefully (final checkpoint, sinks commit), then exits.
    /// See the README, "Running as a service", for weir.toml.
    Serve {
        /// The service configuration.
        #[arg(long, value_name = "FILE", default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Take a savepoint of a running pipeline: a checkpoint that is never
    /// deleted automatically, to restore later with `--from-checkpoint`.
    Savepoint {
        /// The pipeline file of the running pipeline.
        pipeline: PathBuf,
    },
    /// Show where a running pipeline spends its time and what holds it back:
    /// every task's busy / backpressured / idle time, buffer usage and rate,
    /// and the bottleneck named in one sentence.
    ///
    /// PIPELINE is the pipeline file of a `weir run` (asked through its
    /// control socket in the checkpoint directory).
    Status {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print the full status as JSON (job graph, figures, bottleneck, checkpoints, plugins).
        #[arg(long)]
        json: bool,
    },
    /// `weir status`, live: redrawn every second until interrupted (Ctrl-C).
    Top {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Stop after this many updates (default: run until interrupted).
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
    },
    /// Validate a pipeline without running it: config, plugins (compiled and
    /// checked against the contract), each operator's `open` with its config,
    /// and the kind of each source and sink that is a plugin.
    Check {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Load plugins from this directory instead of the file's `plugin-dir`.
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
    },
    /// Create a new operator plugin project to build into a `.wasm` component.
    NewPlugin {
        /// Plugin name (lowercase letters, digits and '-').
        name: String,
        /// Directory to create the project in (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Language of the project: rust (Cargo), js (npm, componentize-js), python (pip, componentize-py) or c (make, clang for wasm32-wasi).
        #[arg(long, value_enum, default_value = "rust")]
        lang: new_plugin::Lang,
        /// Path of the SDK: the weir-sdk crate, sdk/js, sdk/python or sdk/c (default: the SDK of the weir source tree this binary was built from).
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Work with plugin files.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// List a pipeline's plugins: the files in its plugin directory with
    /// their versions (content hashes), and, while it runs, the version each
    /// operator runs and the hot-reload history.
    ///
    /// Hot reload: copy a new `.wasm` file over a plugin in the plugin
    /// directory while the pipeline runs. weir waits until the file stops
    /// changing, validates it in the background (compiles it, checks the
    /// contract, opens it with the operator's config) and swaps it in
    /// between two batches, keeping the operator's keyed state. A bad file
    /// is rejected and the old version keeps running; a new version that
    /// fails in its first batches is rolled back. See `reload` in the
    /// pipeline file for the policy (auto, on-checkpoint, manual).
    Plugins {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Use this plugin directory instead of the file's `plugin-dir`.
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// Print the running pipeline's versions and history as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reload a running pipeline's plugins now: re-read each operator's
    /// plugin file, validate it and swap it in if it changed (the way to
    /// deploy with `reload = "manual"`; works with every policy).
    Reload {
        /// The pipeline file of the running pipeline.
        pipeline: PathBuf,
        /// Only this operator's plugin.
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show what a `.wasm` file is: hash, size, world, exports, imports, and
    /// whether weir can run it as an operator.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    raise_open_file_limit();
    let cli = Cli::parse();
    let service = matches!(cli.command, Command::Serve { .. });
    let filter = std::env::var("WEIR_LOG").unwrap_or_else(|_| match cli.verbose {
        // A service logs what it does; a foreground run only what went wrong.
        0 if service => "info".into(),
        0 => "warn".into(),
        1 => "info".into(),
        _ => "debug".into(),
    });
    let journal = service.then(weir_api::Journal::default);
    log::init(&filter, journal.as_ref());
    match cli.command {
        Command::Run { pipeline, plugin_dir, quiet, metrics_address, from_checkpoint, fresh, profile } => {
            let address = match metrics_address.as_str() {
                "off" => None,
                a => match a.parse() {
                    Ok(a) => Some(a),
                    Err(e) => return fail(2, &format!("--metrics-address {a:?}: {e}; give IP:PORT (e.g. 127.0.0.1:9249) or \"off\"")),
                },
            };
            let start_from = match (from_checkpoint, fresh) {
                (Some(spec), _) => StartFrom::Checkpoint(spec),
                (None, true) => StartFrom::Fresh,
                (None, false) => StartFrom::Latest,
            };
            cmd_run(&pipeline, plugin_dir, quiet, address, start_from, profile.as_deref())
        }
        Command::Savepoint { pipeline } => cmd_savepoint(&pipeline),
        Command::Serve { config } => cmd_serve(&config, journal.unwrap_or_default()),
        Command::Status { pipeline, json } => cmd_status(&pipeline, json),
        Command::Top { pipeline, iterations } => cmd_top(&pipeline, iterations),
        Command::Check { pipeline, plugin_dir } => cmd_check(&pipeline, plugin_dir),
        Command::NewPlugin { name, dir, lang, sdk } => match new_plugin::create(&name, lang, dir, sdk) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(2, &format!("{e:#}")),
        },
        Command::Plugin { command: PluginCommand::Inspect { file } } => cmd_inspect(&file),
        Command::Plugins { pipeline, plugin_dir, json } => plugins::list(&pipeline, plugin_dir, json),
        Command::Reload { pipeline, operator } => plugins::reload(&pipeline, operator.as_deref()),
    }
}

/// Raises the soft limit of open files to the hard one. The soft limit is
/// often 1024, which a crowd of connections to `weir serve` (or a pipeline
/// with many files and sockets) reaches long before the hard limit; weir
/// bounds its own connections, so the higher limit is safe to take.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit still stops at the kernel's nr_open (2^20 by default).
    let target = limit.maximum.unwrap_or(1 << 20);
    let Some(current) = limit.current.filter(|&c| c < target) else { return };
    if let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: limit.maximum })
        && current < 4096
    {
        // Logging is not set up yet; the old limit still works.
        eprintln!("weir: cannot raise the open-file limit from {current} to {target} ({e}); a crowd of connections may exhaust it");
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {}", message.trim_end());
    ExitCode::from(code)
}

fn engine() -> Result<Engine, ExitCode> {
    Engine::new(EngineConfig { cache_dir: EngineConfig::default_cache_dir(), profiler: None }).map_err(|e| fail(1, &e.to_string()))
}

fn load(pipeline: &std::path::Path, plugin_dir: Option<PathBuf>) -> Result<Pipeline, ExitCode> {
    Pipeline::load(pipeline, &LoadOptions::new(weir_connectors::builtin()).plugin_dir(plugin_dir)).map_err(|e| fail(2, &e.to_string()))
}

/// A validated pipeline and the engine to run it, or the exit code of the failure.
fn prepare(pipeline: &std::path::Path, plugin_dir: Option<PathBuf>) -> Result<(Pipeline, Engine), ExitCode> {
    Ok((load(pipeline, plugin_dir)?, engine()?))
}

fn cmd_savepoint(pipeline: &std::path::Path) -> ExitCode {
    let p = match load(pipeline, None) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match weir_pipeline::control::request_savepoint(&p.checkpoint.dir.join(&p.name), &p.name) {
        Ok(dir) => {
            println!("{}", dir.display());
            eprintln!("savepoint of `{}` written; resume from it with: weir run {} --from-checkpoint {}", p.name, pipeline.display(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

fn cmd_serve(config: &std::path::Path, journal: weir_api::Journal) -> ExitCode {
    let c = match weir_api::ServeConfig::load(config) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    // On-demand profiles (the API's profile endpoint): sampling only while
    // one is taken, one set lookup per instance and epoch tick otherwise.
    let profiler = std::sync::Arc::new(weir_wasm::Profiler::on_demand());
    let engine = match Engine::new(EngineConfig { cache_dir: EngineConfig::default_cache_dir(), profiler: Some(profiler) }) {
        Ok(e) => e,
        Err(e) => return fail(1, &e.to_string()),
    };
    match weir_api::serve(c, engine, journal, weir_connectors::builtin()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn cmd_status(pipeline: &std::path::Path, json: bool) -> ExitCode {
    let p = match load(pipeline, None) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match weir_pipeline::control::request_status(&p.checkpoint.dir.join(&p.name), &p.name) {
        Ok(s) if json => {
            println!("{}", serde_json::to_string_pretty(&s).expect("status serializes"));
            ExitCode::SUCCESS
        }
        Ok(s) => {
            for line in status::render(&s, true) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

fn cmd_top(pipeline: &std::path::Path, iterations: Option<u64>) -> ExitCode {
    use std::io::Write;
    let p = match load(pipeline, None) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let dir = p.checkpoint.dir.join(&p.name);
    let mut n = 0u64;
    loop {
        let text = match weir_pipeline::control::request_status(&dir, &p.name) {
            Ok(s) => status::render(&s, true).join("\n"),
            Err(e) if n == 0 => return fail(1, &e),
            Err(e) => format!("{e}\n(retrying)"),
        };
        let mut out = std::io::stdout().lock();
        // Clear the screen and draw from the top.
        let _ = write!(out, "\x1b[H\x1b[2J{}  (weir top, every 1 s; Ctrl-C to quit)\n\n{text}\n", p.name);
        let _ = out.flush();
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn cmd_run(
    pipeline: &std::path::Path,
    plugin_dir: Option<PathBuf>,
    quiet: bool,
    metrics_address: Option<std::net::SocketAddr>,
    start_from: StartFrom,
    profile: Option<&std::path::Path>,
) -> ExitCode {
    let options = LoadOptions::new(weir_connectors::builtin()).plugin_dir(plugin_dir);
    let p = match Pipeline::load(pipeline, &options) {
        Ok(p) => p,
        Err(e) => return fail(2, &e.to_string()),
    };
    let profiler = profile.map(|_| std::sync::Arc::new(weir_wasm::Profiler::new()));
    let engine = match Engine::new(EngineConfig { cache_dir: EngineConfig::default_cache_dir(), profiler: profiler.clone() }) {
        Ok(e) => e,
        Err(e) => return fail(1, &e.to_string()),
    };
    if p.cluster.is_some() {
        return run_member(&p, &options, &engine, RunOptions { metrics_address, start_from, ..Default::default() });
    }
    let options = RunOptions { progress: if quiet { Progress::Quiet } else { Progress::Auto }, metrics_address, start_from, ..Default::default() };
    let result = weir_pipeline::run(&p, &engine, &options);
    // A failed run's profile is kept too: it may show why it failed.
    let profiled = match (profile, &profiler) {
        (Some(path), Some(profiler)) => write_profile(path, &profiler.report(), &p.name),
        _ => Ok(()),
    };
    let code = match result {
        Ok(summary) => {
            print_summary(&summary);
            ExitCode::SUCCESS
        }
        Err(e) if e.phase == Phase::Setup => fail(2, &e.message),
        Err(e) => fail(1, &format!("pipeline `{}` failed: {}", p.name, e.message)),
    };
    match profiled {
        Ok(()) => code,
        Err(e) => fail(1, &e),
    }
}

/// `weir run` of a pipeline with `[cluster]`: this process joins the
/// group and runs the lanes it is given until SIGTERM or SIGINT, which
/// stop its lanes with a final checkpoint and leave the group (a second
/// signal exits at once; the lanes then resume from their last checkpoint
/// wherever they go next).
fn run_member(p: &Pipeline, load: &LoadOptions, engine: &Engine, mut options: RunOptions) -> ExitCode {
    let handle = weir_pipeline::RunHandle::new();
    options.handle = Some(handle.clone());
    if let Err(e) = on_signals(move || handle.stop()) {
        return fail(1, &format!("cannot watch for SIGTERM and SIGINT: {e}"));
    }
    match weir_pipeline::cluster::run_member(p, load, engine, &options) {
        Ok(summary) => {
            for (lane, s) in &summary.lanes {
                eprintln!("lane {lane}: {} records read, {} written to sinks in {:.2}s", s.source_records(), s.sink_records(), s.elapsed.as_secs_f64());
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.phase == Phase::Setup => fail(2, &e.message),
        Err(e) => fail(1, &format!("pipeline `{}` failed: {}", p.name, e.message)),
    }
}

/// Calls `stop` at the first SIGTERM or SIGINT, and exits at once (130)
/// at the second.
fn on_signals(stop: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (mut term, mut int) = {
        let _guard = rt.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    std::thread::Builder::new().name("weir-signals".into()).spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("weir: stopping this member's lanes with a final checkpoint and leaving the group (a second signal exits at once)");
            stop();
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            std::process::exit(130);
        });
    })?;
    Ok(())
}

/// Writes the profile to `path`: a flame graph when it ends in `.svg`,
/// `perf script` text for the Firefox Profiler when it ends in `.perf`,
/// folded stacks otherwise; and prints each operator's hottest functions.
fn write_profile(path: &std::path::Path, report: &weir_wasm::ProfileReport, pipeline: &str) -> Result<(), String> {
    let title = format!("weir: pipeline {pipeline}, plugin code");
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    let (written, what) = match extension.as_deref() {
        Some("svg") => (report.write_svg(path, &title), "a flame graph; open it in a browser"),
        Some("perf") => (report.write_perf_script(path, &title), "perf script text; open it in the Firefox Profiler, https://profiler.firefox.com"),
        _ => (report.write_folded(path), "folded stacks; open them in speedscope, or name the file .svg for a flame graph or .perf for the Firefox Profiler"),
    };
    written.map_err(|e| format!("cannot write the profile to {}: {e}", path.display()))?;
    let total = report.samples();
    eprintln!("profile: {total} samples of plugin code (one per 10 ms of Wasm execution per instance) written to {} ({what})", path.display());
    for op in report.operators() {
        eprintln!("  {}: {} samples ({:.0}% of all)", op.operator, op.samples, op.samples as f64 * 100.0 / total.max(1) as f64);
        for (function, n) in op.self_samples.iter().take(8) {
            eprintln!("    {:>5.1}%  {function}", *n as f64 * 100.0 / op.samples.max(1) as f64);
        }
    }
    Ok(())
}

fn print_summary(s: &RunSummary) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let records = s.source_records();
    eprintln!(
        "{} finished in {:.2}s: {} records read, {} written to sinks ({}/s)",
        s.pipeline,
        secs,
        records,
        s.sink_records(),
        human((records as f64 / secs) as u64)
    );
    eprintln!("  {:<16} {:<9} {:>4} {:>12} {:>12} {:>9}", "name", "kind", "par", "records in", "records out", "skipped");
    for v in &s.vertices {
        let rin = if v.kind == "source" { "-".to_owned() } else { v.records_in.to_string() };
        let rout = if v.kind == "sink" { "-".to_owned() } else { v.records_out.to_string() };
        eprintln!("  {:<16} {:<9} {:>4} {:>12} {:>12} {:>9}", v.name, v.kind, v.parallelism, rin, rout, v.skipped);
    }
    if let Some(l) = s.latency {
        eprintln!(
            "  end-to-end latency of {} stamped records: p50 {:.2} ms, p99 {:.2} ms",
            l.count,
            l.p50_us as f64 / 1000.0,
            l.p99_us as f64 / 1000.0
        );
    }
    if let Some(c) = &s.checkpoints {
        eprintln!("  {}", checkpoint_line(c));
    }
    for (name, busy, idle, bp) in &s.tasks {
        eprintln!("  task {name:<20} busy {:>3.0}%  idle {:>3.0}%  backpressured {:>3.0}%", busy * 100.0, idle * 100.0, bp * 100.0);
    }
}

fn cmd_check(pipeline: &std::path::Path, plugin_dir: Option<PathBuf>) -> ExitCode {
    let (p, engine) = match prepare(pipeline, plugin_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let plugins = match weir_pipeline::load_plugins(&p, &engine) {
        Ok(l) => l,
        Err(e) => return fail(2, &e.to_string()),
    };
    if let Err(e) = weir_pipeline::check_operators(&p, &plugins) {
        return fail(2, &e.to_string());
    }
    let connectors = match weir_pipeline::check_connectors(&p, &plugins) {
        Ok(c) => c,
        Err(e) => return fail(2, &e.to_string()),
    };
    println!("{}: pipeline `{}` is valid", p.file.display(), p.name);
    for w in p.warnings() {
        eprintln!("warning: {}: {}: {}", p.file.display(), w.path, w.message);
    }
    for (op, plugin) in p.operators.iter().zip(&plugins.plugins) {
        println!("  operator {:<16} plugin {} ({}, {} bytes, version {})", op.name, plugin.name, plugin.path.display(), plugin.size, plugin.short_hash());
        if let Some(a) = &op.async_io {
            let output = if a.output == weir_async::OutputMode::Ordered { "ordered" } else { "unordered" };
            println!("           async: capacity {}, {output}, timeout {}, retries {}", a.capacity, humantime::format_duration(a.timeout.0), a.retry.attempts);
        }
    }
    for (section, line) in &connectors {
        println!("  {section:<25} {line}");
    }
    for line in Plan::new(&p).describe() {
        println!("  {line}");
    }
    ExitCode::SUCCESS
}

fn cmd_inspect(file: &std::path::Path) -> ExitCode {
    let engine = match engine() {
        Ok(e) => e,
        Err(code) => return code,
    };
    match engine.load(file) {
        Ok(p) => {
            println!("file:     {}", p.path.display());
            println!("plugin:   {}", p.name);
            println!("size:     {} bytes", p.size);
            println!("sha256:   {}", p.hash);
            let (world, runs) = match p.kind() {
                "sink" => ("sink", format!("a sink: [sinks.NAME] type = \"wasm\", plugin = \"{}\"", p.name)),
                "source" => ("source", format!("a source: [sources.NAME] type = \"wasm\", plugin = \"{}\"", p.name)),
                "async operator" => ("async-operator", "an async operator: [[operators]] with an `async` table".to_owned()),
                _ => ("operator", "an operator: [[operators]]".to_owned()),
            };
            println!("world:    weir:plugin/{world}@0.1.0 (runs as {runs})");
            println!("migrate:  {}", if p.has_migrate { "exports the hot-reload hook weir:plugin/migrate@0.1.0" } else { "no hook (swapped in without a migrate call)" });
            println!("loaded:   {} ms ({})", p.load_time.as_millis(), if p.from_cache { "compiled code from cache" } else { "compiled now" });
            println!("exports:");
            for e in &p.inspection.exports {
                println!("  {e}");
            }
            println!("imports:");
            for i in &p.inspection.imports {
                println!("  {i}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}
