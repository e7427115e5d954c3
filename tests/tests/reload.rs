//! Issue 7: hot reload. A running `weir run` whose plugin file is replaced
//! in the plugin directory (real files, the real inotify watcher): new
//! versions are swapped in with the operator's state kept, bad ones are
//! refused or rolled back while the old version keeps producing, and a
//! file rewritten ten times a second is only considered once complete.
//!
//! The operator is fixture-sum-v1 / fixture-sum-v2 installed as
//! `plugins/tagged-sum.wasm`: a running sum per key in the host's keyed
//! state whose outputs say which build produced them. The pipeline takes a
//! checkpoint every 300 ms into an exactly-once file sink; at the end the
//! run is killed, so the output holds every record up to the last complete
//! checkpoint, which must be exactly the ids 0..N, each once, with per-key
//! sums that continue across every swap.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir_test_support::free_port;
use weir_tests::components::{js_component, python_component};
use weir_tests::{cache_dir, metric, plugin, scrape, weir_bin, Scratch};

const PARALLELISM: usize = 2;

fn pipeline(reload: &str) -> String {
    format!(
        r#"
name = "sums"
parallelism = {PARALLELISM}
{reload}
[checkpoint]
interval = "300ms"
[sources.events]
type = "generator"
rate = 4000
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
type = "file"
path = "out/part-{{subtask}}.jsonl"
"#
    )
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A running `weir run` in a scratch directory with its own plugin directory.
struct Running {
    s: Scratch,
    child: Child,
    metrics_port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Installs json-filter and `first` as tagged-sum, and starts the pipeline.
    fn start(first: &[u8], reload: &str) -> Self {
        let s = Scratch::new();
        std::fs::create_dir_all(s.path("plugins")).unwrap();
        std::fs::copy(plugin("json-filter"), s.path("plugins/json_filter.wasm")).unwrap();
        std::fs::write(s.path("plugins/tagged-sum.wasm"), first).unwrap();
        s.write("p.toml", pipeline(reload));
        let metrics_port = free_port();
        let child = Self::spawn(&s, metrics_port);
        let r = Self { s, child, metrics_port };
        r.wait_for("the pipeline to answer `weir plugins`", |st| st["operators"].as_array().is_some_and(|o| !o.is_empty()));
        r
    }

    /// `weir run` in `s`, logging to `weir.log` (appended to).
    fn spawn(s: &Scratch, metrics_port: u16) -> Child {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(s.path("weir.log")).unwrap();
        Command::new(weir_bin())
            .args(["-v", "run", "--quiet", "--metrics-address", &format!("127.0.0.1:{metrics_port}"), "p.toml"])
            .current_dir(s.dir.path())
            .env("WEIR_CACHE_DIR", cache_dir())
            .env("WEIR_LOG", "warn,weir_pipeline::reload=info,weir::reload=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start weir")
    }

    /// Kills the run with SIGKILL, as a crash would, and starts it again
    /// with the plugin directory as it is.
    fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(&self.s, self.metrics_port);
        self.wait_for("the restarted pipeline to answer `weir plugins`", |st| st["operators"].as_array().is_some_and(|o| !o.is_empty()));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.s.path("weir.log")).unwrap_or_default()
    }

    /// `weir plugins p.toml --json`, or `None` while it does not answer.
    fn status(&self) -> Option<Value> {
        let out = Command::new(weir_bin())
            .args(["plugins", "p.toml", "--json"])
            .current_dir(self.s.dir.path())
            .env("WEIR_CACHE_DIR", cache_dir())
            .output()
            .expect("run weir plugins");
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("weir plugins --json prints JSON"))
    }

    /// Polls the status until `ok`; panics with the log after 120 s.
    fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = self.status()
                && ok(&st)
            {
                return st;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {:#?}\nlog:\n{}", self.status(), self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first attempt after attempt `after` (an id, 0 for none) that
    /// tried version `to`, once it reached the `expected` outcome or
    /// another final one: rejected, rolled back, or accepted and swapped on
    /// every subtask. An attempt shows `accepted` (and may have swapped on
    /// every subtask) before a version that fails in its probation is
    /// rolled back, so `accepted` counts as final only when expected.
    fn wait_attempt(&self, after: u64, to: &str, expected: &str) -> Value {
        let find = |st: &Value| st["history"].as_array().unwrap().iter().find(|e| e["id"].as_u64() > Some(after) && e["to"] == to).cloned();
        let st = self.wait_for(&format!("the reload to {} to be {expected}", &to[..12]), |st| {
            find(st).is_some_and(|e| match e["outcome"].as_str().unwrap() {
                "accepted" => expected == "accepted" && e["swapped"] == PARALLELISM,
                _ => true,
            })
        });
        find(&st).unwrap()
    }

    fn sum_operator(st: &Value) -> Value {
        st["operators"].as_array().unwrap().iter().find(|o| o["operator"] == "sum").unwrap().clone()
    }

    fn install(&self, bytes: &[u8], atomic: bool) {
        let target = self.s.path("plugins/tagged-sum.wasm");
        if atomic {
            // The usual deploy: write a hidden temporary file, rename it into place.
            let tmp = self.s.path("plugins/.tagged-sum.wasm.tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &target).unwrap();
        } else {
            std::fs::write(&target, bytes).unwrap();
        }
    }

    /// Complete output lines of every part file, by subtask.
    fn outputs(&self) -> Vec<Vec<Value>> {
        (0..PARALLELISM)
            .map(|i| {
                let text = std::fs::read_to_string(self.s.path(&format!("out/part-{i}.jsonl"))).unwrap_or_default();
                let complete = text.rfind('\n').map_or("", |end| &text[..end]);
                complete.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l:?}: {e}"))).collect()
            })
            .collect()
    }

    /// Waits until `ok` holds for the published output.
    fn wait_output(&self, what: &str, ok: impl Fn(&[Vec<Value>]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ok(&self.outputs()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}\nlog:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the run and checks its output: ids 0..N each exactly once,
    /// each tagged with one version, per-key sums continuing record after
    /// record. Returns the output by subtask.
    fn kill_and_check(mut self) -> Vec<Vec<Value>> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let parts = self.outputs();
        let mut ids: Vec<i64> = parts.iter().flatten().map(|r| r["id"].as_i64().unwrap()).collect();
        assert!(!ids.is_empty(), "no output");
        ids.sort_unstable();
        let n = ids.len() as i64;
        assert!(ids.iter().copied().eq(0..n), "the output must hold ids 0..{n} exactly once (lost or duplicated records)");
        let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for r in parts.iter().flatten() {
            assert!(r["version"] == "v1" || r["version"] == "v2", "one version tag per output: {r}");
            by_key.entry(r["key"].as_str().unwrap().to_owned()).or_default().push(r);
        }
        for (key, mut rs) in by_key {
            rs.sort_by_key(|r| r["id"].as_i64());
            let mut sum = 0;
            for r in rs {
                sum += r["amount"].as_i64().unwrap();
                assert_eq!(r["sum"].as_i64().unwrap(), sum, "key {key}: the sum must continue from the previous record's state: {r}");
            }
        }
        parts
    }
}

/// Runs of equal version tags in one subtask's output, in output order.
fn tag_runs(part: &[Value]) -> Vec<&str> {
    let mut runs: Vec<&str> = Vec::new();
    for r in part {
        let v = r["version"].as_str().unwrap();
        if runs.last() != Some(&v) {
            runs.push(v);
        }
    }
    runs
}

fn builds() -> [Vec<u8>; 2] {
    [std::fs::read(plugin("fixture-sum-v1")).unwrap(), std::fs::read(plugin("fixture-sum-v2")).unwrap()]
}

/// Must-have 1: 50 swaps under continuous load.
#[test]
fn fifty_swaps_under_load_keep_every_record_once_and_the_sums() {
    let [v1, v2] = builds();
    let r = Running::start(&v1, "");
    let versions = [(&v1, hash(&v1), "v1"), (&v2, hash(&v2), "v2")];
    for k in 1..=50 {
        let (bytes, h, _) = &versions[k % 2];
        r.install(bytes, k % 2 == 0);
        let e = r.wait_attempt(k as u64 - 1, h, "accepted");
        assert_eq!(e["outcome"], "accepted", "swap {k}: {e:#}\n{}", r.log());
        // fixture-sum-v2 exports the migrate hook, v1 does not: both swap.
        assert_eq!(e["migrated"], k % 2 == 1, "swap {k}: {e:#}");
        assert_eq!(e["failures"], 0, "{e:#}");
    }
    let st = r.status().unwrap();
    let history = st["history"].as_array().unwrap();
    assert_eq!(history.len(), 50, "one attempt per write: {history:#?}");
    assert!(history.iter().all(|e| e["trigger"] == "watcher" && e["swap_latency_ms"].is_u64()), "{history:#?}");
    let sum = Running::sum_operator(&st);
    assert_eq!(sum["version"], versions[0].1);
    // Wait until the last version's output is published on every subtask.
    r.wait_output("v1 outputs after the last swap", |parts| parts.iter().all(|p| p.last().is_some_and(|x| x["version"] == "v1") && tag_runs(p).len() > 40));
    let log = r.log();
    assert!(log.contains("hot reload done: every subtask runs version"), "{log}");
    // Issue 15: every swap counts once as accepted: 49 replaced by the next
    // one, the last once it passed its probation on every subtask.
    let deadline = Instant::now() + Duration::from_secs(90);
    let accepted = loop {
        let n = scrape(r.metrics_port).and_then(|m| metric(&m, "weir_plugin_reloads_total", &[("operator", "sum"), ("outcome", "accepted")]));
        if n == Some(50.0) || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(accepted, Some(50.0), "{}", r.log());
    let parts = r.kill_and_check();
    for (i, p) in parts.iter().enumerate() {
        let runs = tag_runs(p);
        // Each swap changes a subtask's version once; the tags never flap
        // back (a record processed by the old version after the new one).
        assert!(runs.len() <= 51, "subtask {i}: {} runs of tags for 50 swaps", runs.len());
        eprintln!("subtask {i}: {} records, {} runs of version tags for 50 swaps", p.len(), runs.len());
    }
}

/// Must-have 2: five bad versions, each refused or rolled back.
#[test]
fn bad_versions_are_rejected_or_rolled_back_and_the_old_one_keeps_running() {
    let [v1, v2] = builds();
    let r = Running::start(&v1, "");
    let v1_hash = hash(&v1);
    let bad: [(&str, Vec<u8>, &str, &str); 5] = [
        ("a truncated copy", v2[..v2.len() / 2].to_vec(), "rejected", "cannot compile plugin"),
        ("bytes that are not Wasm", b"#!/bin/sh\necho this is not a plugin\n".to_vec(), "rejected", "does not start with the Wasm magic bytes"),
        ("a component of another world", std::fs::read(plugin("fixture-wrong-world")).unwrap(), "rejected", "not a weir plugin"),
        ("a version whose open fails", std::fs::read(plugin("fixture-open-fails")).unwrap(), "rejected", "refusing to open"),
        ("a version that traps on its first batch", std::fs::read(plugin("fixture-trap")).unwrap(), "rolled-back", "unreachable"),
    ];
    for (i, (what, bytes, outcome, reason)) in bad.iter().enumerate() {
        let before = r.outputs().iter().map(Vec::len).sum::<usize>();
        r.install(bytes, false);
        let e = r.wait_attempt(i as u64, &hash(bytes), outcome);
        assert_eq!(e["outcome"], *outcome, "{what}: {e:#}");
        assert!(e["reason"].as_str().unwrap().contains(reason), "{what}: the reason should say {reason:?}: {e:#}");
        let st = r.status().unwrap();
        let sum = Running::sum_operator(&st);
        assert_eq!(sum["version"], v1_hash, "{what}: v1 stays the active version");
        assert!(sum["subtasks"].as_array().unwrap().iter().all(|v| *v == v1_hash), "{what}: every subtask runs v1: {sum:#}");
        // The old version keeps producing.
        r.wait_output(&format!("more output after {what}"), |parts| parts.iter().map(Vec::len).sum::<usize>() > before + 100);
    }
    let log = r.log();
    assert_eq!(log.matches("hot reload rejected").count(), 4, "{log}");
    assert_eq!(log.matches("hot reload rolled back").count(), 1, "{log}");
    let samples = scrape(r.metrics_port).expect("metrics endpoint");
    let reloads = |outcome| metric(&samples, "weir_plugin_reloads_total", &[("operator", "sum"), ("outcome", outcome)]);
    assert_eq!((reloads("rejected"), reloads("rolled_back")), (Some(4.0), Some(1.0)));
    // Issue 15: each attempt counts once, as the history shows it; the
    // rolled-back version is not also counted as accepted.
    assert_eq!(reloads("accepted"), None, "no attempt ended accepted");
    let version = |h: &str| metric(&samples, "weir_operator_plugin_version", &[("operator", "sum"), ("version", &h[..12])]);
    assert_eq!(version(&v1_hash), Some(1.0), "the active version's gauge");
    assert_eq!(version(&hash(&bad[4].1)), Some(0.0), "the rolled-back version's gauge");
    let parts = r.kill_and_check();
    assert!(parts.iter().flatten().all(|x| x["version"] == "v1"), "the trapping version's failed batch was redone by v1; nothing else ran");
}

/// Issue 16: a file that hot reload refused stays in the plugin directory;
/// a crash and restart runs the last good version instead of failing to
/// start, and says so.
#[test]
fn a_refused_plugin_file_does_not_block_recovery() {
    let [v1, _] = builds();
    let mut r = Running::start(&v1, "");
    let v1_hash = hash(&v1);
    let refused: [(&str, Vec<u8>, &str); 2] = [
        ("a version that traps on its first batch", std::fs::read(plugin("fixture-trap")).unwrap(), "rolled-back"),
        ("bytes that are not Wasm", b"not a plugin".to_vec(), "rejected"),
    ];
    for (i, (what, bytes, outcome)) in refused.iter().enumerate() {
        r.install(bytes, false);
        let e = r.wait_attempt(0, &hash(bytes), outcome);
        assert_eq!(e["outcome"], *outcome, "{what}: {e:#}");
        let before = r.outputs().iter().map(Vec::len).sum::<usize>();
        r.crash_and_restart();
        let st = r.status().unwrap();
        assert_eq!(Running::sum_operator(&st)["version"], v1_hash, "{what}: the restart runs v1: {st:#}");
        let log = r.log();
        assert_eq!(log.matches("runs its last good version").count(), i + 1, "{what}: the restart says so:\n{log}");
        r.wait_output(&format!("output after restarting over {what}"), |parts| parts.iter().map(Vec::len).sum::<usize>() > before + 100);
    }
    let parts = r.kill_and_check();
    assert!(parts.iter().flatten().all(|x| x["version"] == "v1"));
}

/// Must-have 3: ten writes a second for five seconds; the last one wins.
#[test]
fn a_file_rewritten_ten_times_a_second_is_considered_once_complete() {
    let [v1, v2] = builds();
    let r = Running::start(&v1, "");
    let target = r.s.path("plugins/tagged-sum.wasm");
    let started = Instant::now();
    for i in 0..50u32 {
        let bytes = if i % 2 == 0 { &v1 } else { &v2 };
        write_in_two_pieces(&target, bytes);
        let next = started + Duration::from_millis(100 * u64::from(i + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let last = hash(&v2);
    let e = r.wait_attempt(0, &last, "accepted");
    assert_eq!(e["outcome"], "accepted", "{e:#}");
    // Give a late candidate time to show up (two quiet periods), then
    // check nothing but the final, complete file was ever considered.
    std::thread::sleep(Duration::from_millis(600));
    let st = r.status().unwrap();
    let history = st["history"].as_array().unwrap();
    assert!(history.iter().all(|e| e["outcome"] == "accepted"), "a file in the middle of a write was considered: {history:#?}");
    assert_eq!(history.len(), 1, "only the last write is a candidate: {history:#?}");
    assert_eq!(Running::sum_operator(&st)["version"], last);
    r.wait_output("v2 output", |parts| parts.iter().all(|p| p.last().is_some_and(|x| x["version"] == "v2")));
    r.kill_and_check();
}

/// Truncates `path` and writes `bytes` in two pieces, like a slow copy.
fn write_in_two_pieces(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    f.write_all(&bytes[half..]).unwrap();
}

/// `reload = "on-checkpoint"`: every subtask changes version at the same
/// checkpoint barrier, a consistent cut of the stream, so ordered by
/// source sequence number the outputs change version exactly once per swap.
#[test]
fn on_checkpoint_swaps_every_subtask_at_the_same_barrier() {
    let [v1, v2] = builds();
    let r = Running::start(&v1, "reload = \"on-checkpoint\"");
    let versions = [(&v1, hash(&v1)), (&v2, hash(&v2))];
    for k in 1..=4 {
        let (bytes, h) = &versions[k % 2];
        r.install(bytes, true);
        let e = r.wait_attempt(k as u64 - 1, h, "accepted");
        assert_eq!(e["outcome"], "accepted", "swap {k}: {e:#}");
    }
    r.wait_output("v1 outputs after the last swap", |parts| parts.iter().all(|p| p.last().is_some_and(|x| x["version"] == "v1") && tag_runs(p).len() == 5));
    let parts = r.kill_and_check();
    let mut all: Vec<&Value> = parts.iter().flatten().collect();
    all.sort_by_key(|x| x["id"].as_i64());
    let by_id: Vec<Value> = all.into_iter().cloned().collect();
    assert_eq!(tag_runs(&by_id), ["v1", "v2", "v1", "v2", "v1"], "in source order, each swap is one cut across all subtasks");
}

/// `reload = "manual"`: a new file waits for `weir reload`.
#[test]
fn manual_reload_waits_for_the_command() {
    let [v1, v2] = builds();
    let r = Running::start(&v1, "reload = \"manual\"");
    r.install(&v2, true);
    // Four quiet periods: an `auto` pipeline would have swapped by now.
    std::thread::sleep(Duration::from_millis(1000));
    let st = r.status().unwrap();
    assert_eq!(st["watching"], Value::Null);
    assert!(st["history"].as_array().unwrap().is_empty(), "{st:#}");
    let out = Command::new(weir_bin()).args(["reload", "p.toml"]).current_dir(r.s.dir.path()).env("WEIR_CACHE_DIR", cache_dir()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("accepted"), "weir reload: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let e = r.wait_attempt(0, &hash(&v2), "accepted");
    assert_eq!((e["outcome"].as_str(), e["trigger"].as_str()), (Some("accepted"), Some("command")), "{e:#}");
    // Nothing changed since: a second command has nothing to do.
    let again = Command::new(weir_bin()).args(["reload", "p.toml", "--operator", "sum"]).current_dir(r.s.dir.path()).env("WEIR_CACHE_DIR", cache_dir()).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to reload"), "{again:?}");
    r.wait_output("v2 output", |parts| parts.iter().all(|p| p.last().is_some_and(|x| x["version"] == "v2")));
    r.kill_and_check();
}

/// Issue 18: the keyed running sum hot-reloaded under load from Rust (v1) to
/// Python (v2) to JavaScript (v3): each swap is accepted, and the state
/// crosses languages: for every key, the published sums are exactly the
/// running totals of its records in order, none lost or counted twice.
#[test]
fn a_running_sum_reloaded_from_rust_to_python_to_javascript_keeps_its_state() {
    let rust = std::fs::read(plugin("running-sum")).unwrap();
    let python = std::fs::read(python_component("plugins/python/running-sum")).unwrap();
    let js = std::fs::read(js_component("plugins/js/src/running-sum.js")).unwrap();
    let r = Running::start(&rust, "");
    let lines = |parts: &[Vec<Value>]| parts.iter().map(Vec::len).sum::<usize>();
    // 12,000 records per version over the generator's 10,000 users: most
    // keys get records from more than one version.
    r.wait_output("Rust outputs", |parts| lines(parts) > 12_000);
    let mut after = 0;
    for (bytes, lang) in [(&python, "Python"), (&js, "JavaScript")] {
        r.install(bytes, true);
        let e = r.wait_attempt(after, &hash(bytes), "accepted");
        assert_eq!(e["outcome"], "accepted", "the swap to {lang}: {e:#}\n{}", r.log());
        after = e["id"].as_u64().unwrap();
        let published = lines(&r.outputs());
        r.wait_output(&format!("{lang} outputs"), |parts| lines(parts) > published + 12_000);
    }
    assert_eq!(Running::sum_operator(&r.status().unwrap())["version"], hash(&js));
    let parts = r.outputs();
    drop(r);
    // The generator's record N has user (N * 7919) mod 10000 and amount N mod 100.
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for n in 0..lines(&parts) as i64 * 4 {
        let sums = expected.entry(format!("user-{:04}", (n * 7919) % 10000)).or_default();
        sums.push(sums.last().copied().unwrap_or(0) + n % 100);
    }
    let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in parts.iter().flatten() {
        got.entry(r["key"].as_str().unwrap().to_owned()).or_default().push(r["sum"].as_i64().unwrap());
    }
    assert!(got.values().filter(|s| s.len() >= 3).count() > 1000, "too few keys with several records to show the state carried");
    for (key, sums) in &got {
        let want = &expected[key];
        assert!(want.len() >= sums.len() && &want[..sums.len()] == sums, "key {key}: published sums {sums:?}, running totals {:?}", &want[..sums.len().min(want.len())]);
    }
}
