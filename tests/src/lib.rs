//! Test harness for weir's end-to-end tests.
//!
//! Tests run the real `weir` binary (built by `cargo test --workspace` next
//! to this test executable) against real Wasm components that
//! [`plugin_dir`] builds from the repository's `plugins/` workspace, once
//! per test process (cargo's own lock serializes concurrent builds).
//! Every command runs with a timeout, so a hung pipeline fails its test
//! instead of hanging the suite.
//!
//! The external servers tests run against (PostgreSQL, the tansu Kafka
//! broker, a slow HTTP service) are started by `weir-test-support`.

pub mod components;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repo").to_owned()
}

/// Builds `plugins/` for wasm32-wasip2 (once per process) and returns the
/// directory holding the `.wasm` files.
pub fn plugin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = repo().join("plugins/Cargo.toml");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release", "--manifest-path"])
                .arg(&manifest)
                // The plugins' own workspace builds into plugins/target,
                // where this function looks, whatever the host build uses.
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("cannot run cargo to build the plugins");
            assert!(status.success(), "building {} for wasm32-wasip2 failed", manifest.display());
            repo().join("plugins/target/wasm32-wasip2/release")
        })
        .clone()
}

/// The path of a built plugin file, e.g. `plugin("json-filter")`.
pub fn plugin(name: &str) -> PathBuf {
    plugin_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// The `weir` binary, built (once per test process, a no-op when fresh) in
/// the same target directory and profile as the tests: `cargo test` builds
/// the binaries of other packages only when their own tests need them.
pub fn weir_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/weir
        let profile_dir = exe.parent().and_then(Path::parent).expect("target layout");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "-p", "weir"]).current_dir(repo());
        if let Some(target) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo to build weir");
        assert!(status.success(), "building the weir binary failed");
        let bin = profile_dir.join("weir");
        assert!(bin.is_file(), "{} not found after building it", bin.display());
        bin
    })
    .clone()
}

/// What a finished `weir` invocation did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None`: killed by a signal or the timeout).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Run {
    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "expected exit code {code}\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    /// Panics unless stderr contains every one of `needles`.
    pub fn expect_stderr(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}:\n{}", self.stderr);
        }
        self
    }
}

/// A scratch directory with a shared compile cache for the engine.
pub struct Scratch {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// A new empty directory.
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A path inside it.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file inside it and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).expect("write");
        p
    }

    /// Writes a pipeline file whose `plugin-dir` is the built plugins.
    pub fn pipeline(&self, rel: &str, body: &str) -> PathBuf {
        let text = format!("plugin-dir = {:?}\n{body}", plugin_dir().display().to_string());
        self.write(rel, text)
    }

    /// Runs the plugin `plugin` (from `plugins/` in this directory, with the
    /// operator config `config`, a TOML inline table or "{}") over four log
    /// lines, two of which contain "error"; returns what reached stdout.
    pub fn run_log_filter(&self, plugin: &str, config: &str) -> String {
        self.write("in.txt", "all good\ndisk error on sda\nfine\nnetwork error\n");
        let pipeline = format!(
            "plugin-dir = \"plugins\"\n[sources.logs]\ntype = \"file\"\npath = \"in.txt\"\n\
             [[operators]]\nname = \"filter\"\nplugin = {plugin:?}\nconfig = {config}\n[sinks.out]\ntype = \"stdout\"\n"
        );
        self.write("p.toml", pipeline);
        let run = self.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], Duration::from_secs(300));
        run.expect_code(0);
        run.stdout
    }

    /// `weir ARGS` in this directory with the shared compile cache, stdin
    /// and stdout closed and stderr captured, to spawn or run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(weir_bin());
        cmd.args(args).current_dir(self.dir.path()).env("WEIR_CACHE_DIR", cache_dir()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// Runs `weir ARGS` in this directory with a timeout.
    pub fn weir(&self, args: &[&str], timeout: Duration) -> Run {
        run_with_timeout(Command::new(weir_bin()).args(args).current_dir(self.dir.path()), timeout)
    }
}

/// Runs `cmd` (e.g. [`Scratch::command`]) to its end and returns its
/// stderr; panics with the stderr when it fails.
pub fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "weir failed ({:?}):\n{stderr}", out.status);
    stderr
}

/// The crash tests' job, pipeline `sums`: generator (`count` records at
/// `rate`/s, seed 7) -> json-filter (key by user) -> running-sum (keyed
/// state) -> file sink `out/part-{subtask}.jsonl`, at `parallelism`;
/// `checkpoint` holds the lines of its `[checkpoint]` table (sub-tables
/// may follow them).
pub fn sums_pipeline(count: u64, rate: u64, parallelism: u32, checkpoint: &str) -> String {
    format!(
        r#"
name = "sums"
parallelism = {parallelism}
[checkpoint]
{checkpoint}
[sources.events]
type = "generator"
count = {count}
rate = {rate}
seed = 7
parallelism = 1
[[operators]]
name = "parse"
plugin = "json-filter"
config = {{ project = ["user", "amount"], key = "user" }}
[[operators]]
name = "sum"
plugin = "running-sum"
partition = "hash"
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
"#
    )
}

/// Everything a `sums_pipeline` run wrote, in subtask order.
pub fn sums_output(s: &Scratch) -> Vec<u8> {
    part_files(&s.path("out")).concat()
}

/// The contents of the `part-*` files of a file sink's directory, in
/// file name (subtask) order.
pub fn part_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-")))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).expect("read output")).collect()
}

/// The compile cache shared by all tests (compiling is the slow part).
pub fn cache_dir() -> PathBuf {
    repo().join("target/weir-test-cache")
}

/// Runs a command with a timeout; kills it when the time is up.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .env("WEIR_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start weir");
    let out_reader = read_in_background(child.stdout.take().expect("stdout"));
    let err_reader = read_in_background(child.stderr.take().expect("stderr"));
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().expect("reader");
    let stderr = err_reader.join().expect("reader");
    Run { code, stdout, stderr, elapsed: started.elapsed() }
}

fn read_in_background(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Compares `actual` with the golden file `tests/golden/NAME`; with
/// `BLESS=1` in the environment, rewrites the file instead.
pub fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing: run with BLESS=1 to create it", path.display()));
    assert_eq!(expected, actual, "output differs from {} (run with BLESS=1 to accept)", path.display());
}

/// Output of the `output()` of a finished process, as text.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// One Prometheus sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels as `key=value` pairs.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Fetches and parses `http://127.0.0.1:PORT/metrics`; `None` while nothing listens.
pub fn scrape(port: u16) -> Option<Vec<Sample>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let body = body.split_once("\r\n\r\n")?.1;
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ')?;
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .collect();
                (n.to_owned(), labels)
            }
            None => (head.to_owned(), Vec::new()),
        };
        out.push(Sample { name, labels, value: value.parse().ok()? });
    }
    Some(out)
}

/// The value of `name` with the given labels (each `key=value` must match).
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v))).map(|s| s.value)
}

/// Resident memory of a process in bytes (from /proc).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples a running process's RSS every 500 ms for `duration`; returns
/// `(peak, baseline)`, the baseline being the first sample after `settle`
/// (so start-up allocations are not counted as growth). Panics if the
/// process exits meanwhile.
pub fn watch_rss(pid: u32, duration: Duration, settle: Duration) -> (u64, u64) {
    let start = Instant::now();
    let (mut peak, mut baseline) = (0u64, None);
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(500));
        let r = rss(pid).expect("the process is running");
        peak = peak.max(r);
        if start.elapsed() > settle && baseline.is_none() {
            baseline = Some(r);
        }
    }
    (peak, baseline.expect("sampled after settling"))
}

/// A small seeded generator for random kill moments and fault schedules.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `lo..hi`.
    pub fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

/// Kills `child` with SIGKILL once `after` has passed, unless it exits
/// first (then the next start resumes from its final checkpoint).
pub fn kill_after(child: &mut std::process::Child, after: Duration) {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

/// The crash test of the HTTP sinks: starts `weir run` in `s` three times
/// over, SIGKILLs each run after `kill_ms` (a range, drawn from `rng`),
/// and in the second run takes the receiver away for `down` (`stop`, then
/// `restart`) while weir runs; then lets a fourth run finish and returns
/// its output. Each killed run must have been killed (not have ended).
pub fn kill_rounds_with_a_receiver_outage(
    s: &Scratch,
    run: &[&str],
    rng: &mut Lcg,
    kill_ms: (u64, u64),
    down: Duration,
    stop: impl Fn(),
    restart: impl Fn(),
) -> std::process::Output {
    use std::os::unix::process::ExitStatusExt;
    let mut child = s.command(run).spawn().expect("weir");
    for round in 0..3 {
        if round == 1 {
            std::thread::sleep(Duration::from_millis(rng.next_ms(300, 800)));
            stop();
            std::thread::sleep(down);
            restart();
        }
        kill_after(&mut child, Duration::from_millis(rng.next_ms(kill_ms.0, kill_ms.1)));
        assert_eq!(child.try_wait().expect("wait").and_then(|s| s.signal()), Some(9), "round {round}: weir was killed mid-run");
        child = s.command(run).spawn().expect("weir");
    }
    child.wait_with_output().expect("weir")
}
