//! Issue 17: checkpoints of a pipeline that is 100 % backpressured.
//!
//! The scenario of the issue, against the real `weir` binary and real Wasm
//! plugins: generator (30 k/s) -> json-filter (x2) -> an operator that
//! takes ~1 ms per record (x2, hash) -> running-sum (x2) -> discard. With
//! aligned checkpoints the first one took 53 s (release build) because its
//! barrier waits behind every buffer queued ahead of it; the status must
//! say so, and why, while it waits.

use serde_json::Value;
use std::time::{Duration, Instant};
use weir_tests::Scratch;

/// The issue's pipeline; `checkpoint` is the body of its `[checkpoint]`
/// table (after `dir`).
fn scenario(checkpoint: &str) -> String {
    format!(
        r#"
        name = "scn"
        [sources.gen]
        type = "generator"
        rate = 30000.0
        [[operators]]
        name = "filter"
        plugin = "json-filter"
        parallelism = 2
        config = {{ key = "user" }}
        [[operators]]
        name = "enrich"
        plugin = "slow"
        parallelism = 2
        partition = "hash"
        config = {{ cost-us = 1000, mode = "sleep" }}
        [[operators]]
        name = "sum"
        plugin = "running-sum"
        parallelism = 2
        partition = "hash"
        [sinks.out]
        type = "discard"
        [checkpoint]
        dir = "cp"
        {checkpoint}
        "#
    )
}

/// Kills the `weir run` on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(s: &Scratch) -> Option<Value> {
    let r = s.weir(&["status", "--json", "p.toml"], Duration::from_secs(20));
    (r.code == Some(0)).then(|| serde_json::from_str(&r.stdout).expect("status is JSON"))
}

/// "Must be shown" 1, aligned without debloating: within 10 s of the
/// pipeline answering, the status names the stuck checkpoint, the task
/// its barrier is queued at, the records ahead of it, and what to do;
/// the bottleneck sentence and the text of `weir status` say it too.
#[test]
fn a_stuck_aligned_checkpoint_is_explained_within_10s() {
    let s = Scratch::new();
    s.pipeline("p.toml", &scenario(r#"interval = "1s""#));
    let _run = Running(s.command(&["run", "--quiet", "--metrics-address", "off", "p.toml"]).spawn().expect("start weir"));
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut first = None;
    let mut last;
    let waiting = loop {
        assert!(Instant::now() < give_up, "the pipeline never answered `weir status`");
        if let Some(v) = status(&s) {
            let started = *first.get_or_insert_with(Instant::now);
            let w = v["checkpoints"]["waiting"].clone();
            if w["sentence"].as_str().is_some_and(|t| t.ends_with("enable unaligned checkpoints or fix enrich")) {
                eprintln!("after {:.1}s: {}", started.elapsed().as_secs_f64(), w["sentence"]);
                last = v;
                break w;
            }
            last = v;
            assert!(started.elapsed() < Duration::from_secs(10), "no stuck checkpoint explained within 10 s; last status: {last:#}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let sentence = waiting["sentence"].as_str().unwrap();
    let task = waiting["task"].as_str().unwrap();
    assert!(task.starts_with("filter[") || task.starts_with("enrich["), "{waiting:#}");
    assert_eq!(waiting["kind"], "checkpoint");
    assert!(waiting["waited_ms"].as_u64().unwrap() >= 2000, "{waiting:#}");
    assert!(waiting["queued_records"].as_u64().unwrap() > 0, "{waiting:#}");
    let id = waiting["id"].as_u64().unwrap();
    assert!(
        sentence.starts_with(&format!("checkpoint {id} has waited ")) && sentence.contains(&format!("for alignment at {task}: ")),
        "{sentence}"
    );
    assert!(sentence.contains("queued ahead of its barrier, ~"), "{sentence}");
    let bottleneck = last["snapshot"]["bottleneck"]["sentence"].as_str().unwrap();
    assert!(bottleneck.contains(&format!("; checkpoint {id} has waited ")), "{bottleneck}");
    // `weir status` in words: the first line carries it.
    let text = s.weir(&["status", "p.toml"], Duration::from_secs(20));
    let first_line = text.stdout.lines().next().unwrap_or_default().to_owned();
    assert!(first_line.contains(&format!("checkpoint {id} has waited ")) && first_line.contains("queued ahead of its barrier"), "{}", text.stdout);
}
