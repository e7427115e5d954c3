//! Issue 9, "must be shown" 1: the bottleneck analysis names the right task
//! and cause in five scenarios built from fixture plugins, within 10 s of
//! the pipeline running, as `weir status PIPELINE` shows it for a `weir
//! run`: a slow operator, a slow sink, key skew (one key 80% of the traffic
//! at parallelism 4), a throttled network exchange, and an alternating
//! bottleneck (an operator that blocks in bursts, like a window firing).
//!
//! The scenarios run one at a time (they measure CPU time on a shared
//! machine), each against the real `weir` binary and real Wasm plugins.

use serde_json::Value;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_tests::{cache_dir, weir_bin, Scratch};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Time the analysis has to get it right once the pipeline answers.
const DETECT_WITHIN: Duration = Duration::from_secs(10);

struct Running {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Starts `weir run` on `p.toml`; `slow_stdout` reads its stdout at about
/// 400 KB/s (a slow consumer behind a stdout sink).
fn start(s: &Scratch, env: &[(&str, &str)], slow_stdout: bool) -> Running {
    let mut cmd = Command::new(weir_bin());
    cmd.args(["run", "--quiet", "--metrics-address", "off", "p.toml"])
        .current_dir(s.dir.path())
        .env("WEIR_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(if slow_stdout { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start weir");
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    });
    Running { child, reader }
}

/// Polls `weir status --json` until `check` accepts the bottleneck, at most
/// [`DETECT_WITHIN`] after the first answer. Returns the last status.
fn detect(s: &Scratch, run: &mut Running, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut first: Option<Instant> = None;
    let mut last = Value::Null;
    loop {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("{what}: weir exited early ({status}); last status: {last:#}");
        }
        let r = s.weir(&["status", "--json", "p.toml"], Duration::from_secs(20));
        if r.code == Some(0) {
            let v: Value = serde_json::from_str(&r.stdout).expect("status is JSON");
            let started = *first.get_or_insert_with(Instant::now);
            if check(&v["snapshot"]["bottleneck"]) {
                eprintln!("{what}: after {:.1}s: {}", started.elapsed().as_secs_f64(), v["snapshot"]["bottleneck"]["sentence"]);
                return v;
            }
            last = v;
            if started.elapsed() > DETECT_WITHIN {
                panic!("{what}: not found within {DETECT_WITHIN:?}; last verdict: {:#}", last["snapshot"]["bottleneck"]);
            }
        }
        assert!(Instant::now() < give_up, "{what}: the pipeline never answered `weir status`: {}", r.stderr);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn is(b: &Value, kind: &str, task: &str) -> bool {
    b["kind"] == kind && b["task"] == task
}

#[test]
fn slow_operator_is_named() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
        name = "orders"
        [sources.gen]
        type = "generator"
        schema = "sequence"
        [[operators]]
        name = "parse"
        plugin = "identity"
        [[operators]]
        name = "enrich"
        plugin = "slow"
        disable-chaining = true
        config = { cost-us = 20 }
        [sinks.out]
        type = "discard"
        "#,
    );
    let mut run = start(&s, &[], false);
    let v = detect(&s, &mut run, "slow operator", |b| is(b, "task", "enrich"));
    let b = &v["snapshot"]["bottleneck"];
    assert_eq!(b["upstream"], "gen");
    let sentence = b["sentence"].as_str().unwrap();
    assert!(sentence.starts_with("orders.enrich[0] is the bottleneck: busy "), "{sentence}");
    assert!(sentence.contains("upstream orders.gen backpressured"), "{sentence}");
    // The human-readable form says the same.
    let text = s.weir(&["status", "p.toml"], Duration::from_secs(20));
    assert!(text.stdout.contains("is the bottleneck"), "{}", text.stdout);
}

/// Issue 19: backpressure per input. One producer feeds a slow and a fast
/// consumer; the producer's task is backpressured, and the per-input figure
/// puts that wait on the slow consumer's edge alone.
#[test]
fn a_producers_backpressure_is_put_on_the_edge_that_causes_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
        name = "split"
        [sources.gen]
        type = "generator"
        schema = "sequence"
        [[operators]]
        name = "fast"
        plugin = "identity"
        input = "gen"
        [[operators]]
        name = "slow"
        plugin = "slow"
        input = "gen"
        config = { cost-us = 20 }
        [sinks.a]
        type = "discard"
        input = "fast"
        [sinks.b]
        type = "discard"
        input = "slow"
        "#,
    );
    let mut run = start(&s, &[], false);
    let input_of = |v: &Value, task: &str| v["snapshot"]["tasks"].as_array().unwrap().iter().find(|t| t["name"] == task).unwrap_or_else(|| panic!("task {task}: {v:#}"))["inputs"][0].clone();
    // The first answer, then until the slow edge shows its waits.
    let mut v = detect(&s, &mut run, "backpressure per edge", |_| true);
    let give_up = Instant::now() + Duration::from_secs(60);
    while input_of(&v, "slow")["upstream_backpressured"].as_f64().unwrap() < 500.0 {
        assert!(Instant::now() < give_up, "the slow consumer's edge never showed backpressure: {:#}", v["snapshot"]["tasks"]);
        std::thread::sleep(Duration::from_millis(500));
        let r = s.weir(&["status", "--json", "p.toml"], Duration::from_secs(20));
        if r.code == Some(0) {
            v = serde_json::from_str(&r.stdout).expect("status is JSON");
        }
    }
    let (slow, fast) = (input_of(&v, "slow"), input_of(&v, "fast"));
    assert_eq!((slow["from"].as_str(), fast["from"].as_str()), (Some("gen"), Some("gen")));
    let producer = v["snapshot"]["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "gen").unwrap()["subtasks"][0]["backpressured"].as_f64().unwrap();
    assert!(producer > 500.0, "the producer's task is backpressured: {producer} ms/s");
    assert!(fast["upstream_backpressured"].as_f64().unwrap() < 100.0, "the fast consumer's edge carries none of it: {fast:#} (slow: {slow:#})");
}

#[test]
fn slow_sink_is_named() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    // The stdout sink writes into a pipe its reader empties slowly.
    s.pipeline(
        "p.toml",
        r#"
        name = "events"
        parallelism = 2
        [sources.gen]
        type = "generator"
        [[operators]]
        name = "work"
        plugin = "identity"
        [sinks.out]
        type = "stdout"
        parallelism = 1
        "#,
    );
    let mut run = start(&s, &[], true);
    let v = detect(&s, &mut run, "slow sink", |b| is(b, "task", "out"));
    assert_eq!(v["snapshot"]["bottleneck"]["upstream"], "work");
}

#[test]
fn key_skew_is_named_with_the_hot_subtask() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
        name = "orders"
        [sources.gen]
        type = "generator"
        schema = "sequence"
        [[operators]]
        name = "keyed"
        plugin = "skew-key"
        config = { hot-percent = 80, keys = 64 }
        [[operators]]
        name = "enrich"
        plugin = "slow"
        parallelism = 4
        partition = "hash"
        config = { cost-us = 20 }
        [sinks.out]
        type = "discard"
        "#,
    );
    let mut run = start(&s, &[], false);
    let v = detect(&s, &mut run, "key skew", |b| is(b, "skew", "enrich"));
    let b = &v["snapshot"]["bottleneck"];
    let hot = b["subtask"].as_u64().unwrap() as usize;
    // The subtask named is the one that receives the most records.
    let enrich = v["snapshot"]["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "enrich").unwrap();
    let rates: Vec<f64> = enrich["subtasks"].as_array().unwrap().iter().map(|x| x["records_in_per_second"].as_f64().unwrap()).collect();
    let max = rates.iter().copied().fold(0.0, f64::max);
    assert_eq!(rates[hot], max, "named subtask {hot}, rates {rates:?}");
    let sentence = b["sentence"].as_str().unwrap();
    // A checkpoint waiting behind the backpressure is appended to the
    // sentence (issue 17): the verdict is what comes before it.
    let verdict = sentence.split("; checkpoint ").next().unwrap_or_default();
    assert!(verdict.contains(&format!("orders.enrich[{hot}] is the bottleneck")) && verdict.ends_with("(key skew)"), "{sentence}");
    assert!(b["skew"].as_f64().unwrap() >= 4.0, "{b:#}");
}

#[test]
fn throttled_exchange_is_named() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
        name = "net"
        [sources.gen]
        type = "generator"
        [[operators]]
        name = "work"
        plugin = "identity"
        disable-chaining = true
        [sinks.out]
        type = "discard"
        "#,
    );
    let mut run = start(&s, &[("WEIR_THROTTLE_EXCHANGE", "work=512KiB")], false);
    let v = detect(&s, &mut run, "network exchange", |b| is(b, "exchange", "work"));
    let b = &v["snapshot"]["bottleneck"];
    assert_eq!(b["upstream"], "gen");
    assert!(b["sentence"].as_str().unwrap().starts_with("the exchange from net.gen to net.work is the bottleneck"));
}

#[test]
fn alternating_bottleneck_is_found_in_the_history() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    // Every 4 s the operator is slow for 2 s, like a window firing.
    s.pipeline(
        "p.toml",
        r#"
        name = "win"
        [sources.gen]
        type = "generator"
        schema = "sequence"
        rate = 20000
        [[operators]]
        name = "window"
        plugin = "slow"
        disable-chaining = true
        config = { cost-us = 1000, burst-every-ms = 4000, burst-ms = 2000 }
        [sinks.out]
        type = "discard"
        "#,
    );
    let mut run = start(&s, &[], false);
    let v = detect(&s, &mut run, "alternating", |b| is(b, "alternating", "window"));
    let sentence = v["snapshot"]["bottleneck"]["sentence"].as_str().unwrap();
    assert!(sentence.starts_with("win.window[0] is an alternating bottleneck: every ~"), "{sentence}");
}
