//! Issue 21: sources and sinks written as Wasm components (worlds
//! `weir:plugin/source` and `weir:plugin/sink`), built from the repo's
//! plugins and run by the real `weir` binary: the webhook-sink plugin
//! against a real HTTP receiver passes the built-in HTTP sink's crash test
//! (SIGKILLs of weir and a restart of the receiver leave every record once
//! by idempotency key), a source plugin resumes from the position weir
//! checkpointed for it, a new version of either is hot reloaded at a
//! checkpoint without losing or repeating a record, and mistakes are named.
//! The same holds for the JavaScript and Python SDKs' `Source` and `Sink`:
//! their counter-source and webhook-sink plugins (plugins/js,
//! plugins/python), built from source with componentize-js and
//! componentize-py, pass the same crash tests (the JavaScript sink, which
//! does not retry by itself, without the receiver restart: a receiver that
//! is down stops it, naming the key).

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use weir_test_support::hook_server::HookServer;
use weir_tests::components::{js_component, python_component};
use weir_tests::{Lcg, Scratch, kill_after, kill_rounds_with_a_receiver_outage, part_files};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

/// A generator of `count` records at 5000/s into the sink plugin `plugin`
/// posting to `url`, with `config` added to its config table.
fn webhook_pipeline(plugin: &str, config: &str, url: &str, port: u16, count: u64) -> String {
    format!(
        r#"
name = "hooks"
[checkpoint]
interval = "300ms"
[sources.events]
type = "generator"
count = {count}
rate = 5000
[sinks.hook]
type = "wasm"
plugin = "{plugin}"
allow-http = ["127.0.0.1:{port}"]
config = {{ url = "{url}", batch = 700{config} }}
"#
    )
}

/// Starts `weir run` in `s` and SIGKILLs it three times, each time once
/// `progress()` has grown past its value at the start of that run (the run
/// has published something of its own, so the next one resumes part-way)
/// and a random 0-300 ms more; then lets a fourth run finish. Each killed
/// run must have been killed, not have ended (`what` names the case).
/// Returns the last run's output and `progress()` at each kill.
fn three_kills_then_finish(s: &Scratch, what: &str, rng: &mut Lcg, mut progress: impl FnMut() -> u64) -> (std::process::Output, Vec<u64>) {
    let mut at_kill = Vec::new();
    let mut child = s.command(&RUN).spawn().expect("weir");
    for round in 0..3 {
        let before = progress();
        let deadline = Instant::now() + Duration::from_secs(120);
        while progress() == before && child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}, round {round}: no progress in 120 s (still {before})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_after(&mut child, Duration::from_millis(rng.next_ms(0, 300)));
        if child.try_wait().expect("wait").and_then(|s| s.signal()) != Some(9) {
            let out = child.wait_with_output().expect("weir");
            panic!("{what}, round {round}: weir ended ({}) before it was killed (progress {}):\n{}", out.status, progress(), String::from_utf8_lossy(&out.stderr));
        }
        at_kill.push(progress());
        child = s.command(&RUN).spawn().expect("weir");
    }
    (child.wait_with_output().expect("weir"), at_kill)
}

/// The lines a file sink has published in the `part-*` files of `dir`.
fn committed_lines(dir: &std::path::Path) -> u64 {
    if !dir.is_dir() {
        return 0;
    }
    part_files(dir).iter().map(|p| p.iter().filter(|&&b| b == b'\n').count() as u64).sum()
}

/// A scratch directory whose `plugins/` holds `wasm` as `name` (a
/// component built from another language's sources), and whose `p.toml`
/// is `body` with that plugin directory. The plugin is compiled (and the
/// result cached) by `weir check` before this returns, so a test's first
/// run is not spent compiling it.
fn with_plugin(name: &str, wasm: &std::path::Path, body: &str) -> Scratch {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::copy(wasm, s.path(&format!("plugins/{}.wasm", name.replace('-', "_")))).unwrap_or_else(|e| panic!("copy {}: {e}", wasm.display()));
    s.write("p.toml", format!("plugin-dir = \"plugins\"\n{body}"));
    weir_tests::succeed(&mut s.command(&["check", "p.toml"]));
    s
}

#[test]
fn a_sink_plugin_survives_sigkills_and_a_receiver_restart_leaving_each_record_once_by_key() {
    let hook = HookServer::start();
    let s = Scratch::new();
    const N: u64 = 40_000;
    s.pipeline("p.toml", &webhook_pipeline("webhook-sink", ", backoff-ms = 50", &hook.url(), hook.port, N));
    // SIGKILLs, and the receiver going away under a running weir: the
    // plugin's requests fail and are retried with the same keys.
    let out = kill_rounds_with_a_receiver_outage(&s, &RUN, &mut Lcg(11), (1200, 2200), Duration::from_millis(600), || hook.stop(), || hook.restart());
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let got = hook.records_once_by_key("weir-hooks-hook-0-", 700);
    assert!(got.requests > got.keys, "some requests were replayed after a crash ({} requests, {} keys)", got.requests, got.keys);
    assert_eq!(got.ids.len() as u64, N, "every record arrived: {} of {N} ({} requests, {} distinct keys)", got.ids.len(), got.requests, got.keys);
    assert_eq!(got.ids.last(), Some(&(N - 1)));
}

/// The Python SDK's `Sink` (plugins/python/webhook-sink): the same crash
/// test as the Rust plugin's, the same receiver, the same exactly-once by
/// key.
#[test]
fn a_python_sink_plugin_survives_sigkills_and_a_receiver_restart_leaving_each_record_once_by_key() {
    let hook = HookServer::start();
    const N: u64 = 40_000;
    let wasm = python_component("plugins/python/webhook-sink");
    let s = with_plugin("webhook-sink-py", &wasm, &webhook_pipeline("webhook-sink-py", ", backoff-ms = 50", &hook.url(), hook.port, N));
    let out = kill_rounds_with_a_receiver_outage(&s, &RUN, &mut Lcg(12), (1200, 2200), Duration::from_millis(600), || hook.stop(), || hook.restart());
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let got = hook.records_once_by_key("weir-hooks-hook-0-", 700);
    assert!(got.requests > got.keys, "some requests were replayed after a crash ({} requests, {} keys)", got.requests, got.keys);
    let expected: Vec<u64> = (0..N).collect();
    assert!(got.ids.iter().copied().eq(expected), "every record arrived once: {} of {N} ({} requests, {} distinct keys)", got.ids.len(), got.requests, got.keys);
}

/// The JavaScript SDK's `Sink` (plugins/js/src/webhook-sink.js): SIGKILLs
/// leave each record once by key. It does not wait and retry itself, so a
/// receiver that is down stops the pipeline with the plugin's external
/// error, naming the request's key (`weir serve` would restart it).
#[test]
fn a_javascript_sink_plugin_survives_sigkills_leaving_each_record_once_by_key() {
    let hook = HookServer::start();
    const N: u64 = 30_000;
    let wasm = js_component("plugins/js/src/webhook-sink.js");
    let s = with_plugin("webhook-sink-js", &wasm, &webhook_pipeline("webhook-sink-js", "", &hook.url(), hook.port, N));
    let (out, _) = three_kills_then_finish(&s, "js", &mut Lcg(13), || hook.accepted_count());
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let got = hook.records_once_by_key("weir-hooks-hook-0-", 700);
    assert!(got.requests > got.keys, "restarts sent their checkpoint's handles again ({} requests, {} keys)", got.requests, got.keys);
    let expected: Vec<u64> = (0..N).collect();
    assert!(got.ids.iter().copied().eq(expected), "every record arrived once: {} of {N} ({} requests, {} distinct keys)", got.ids.len(), got.requests, got.keys);

    hook.stop();
    let s = with_plugin("webhook-sink-js", &wasm, &webhook_pipeline("webhook-sink-js", "", &hook.url(), hook.port, 100));
    let out = s.command(&RUN).output().expect("weir");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "weir should fail with the receiver down:\n{e}");
    assert!(e.contains(&format!("plugin webhook-sink-js (commit): POST {} with key weir-hooks-hook-0-", hook.url())) && e.contains("failed: "), "{e}");
}

#[test]
fn a_source_plugin_resumes_from_its_checkpointed_position_after_sigkills() {
    let s = Scratch::new();
    const N: u64 = 30_000;
    s.pipeline("p.toml", &sequence_pipeline(N));
    let (out, _) = three_kills_then_finish(&s, "rust", &mut Lcg(5), || committed_lines(&s.path("out")));
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    assert_each_number_once(&s, N);
}

/// The fixture sequence source (`0..count` at 4000 records/s per subtask,
/// parallelism 2) into a file sink, checkpointed every 200 ms.
fn sequence_pipeline(count: u64) -> String {
    format!(
        r#"
name = "sequence"
[checkpoint]
interval = "200ms"
[sources.numbers]
type = "wasm"
plugin = "fixture-sequence-source"
parallelism = 2
config = {{ count = {count}, rate = 4000 }}
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
input = "numbers"
"#
    )
}

/// The sequence pipeline's output holds `0..count`, each number once, in
/// the file of the subtask whose split it is.
fn assert_each_number_once(s: &Scratch, count: u64) {
    let mut ids = Vec::new();
    for (subtask, part) in part_files(&s.path("out")).iter().enumerate() {
        for line in String::from_utf8_lossy(part).lines() {
            let id = serde_json::from_str::<serde_json::Value>(line).expect("JSON")["id"].as_u64().expect("an id");
            assert_eq!(id % 2, subtask as u64, "subtask {subtask} emits its own split");
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let expected: Vec<u64> = (0..count).collect();
    assert!(ids == expected, "each record exactly once: {} lines, {} distinct, want {count}", ids.len(), ids.iter().collect::<BTreeSet<_>>().len());
}

/// Writes `bytes` as plugin `file` in `s`'s `plugins/`, the way to install
/// a plugin atomically (a hidden temporary name, then a rename).
fn install(s: &Scratch, file: &str, bytes: &[u8]) {
    let tmp = s.path(&format!("plugins/.{file}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, s.path(&format!("plugins/{file}"))).unwrap();
}

/// `original` with one more (empty) custom section: the same code, a new
/// version.
fn new_version(original: &[u8]) -> Vec<u8> {
    let mut changed = original.to_vec();
    changed.extend_from_slice(&[0x00, 0x05, 0x04, b'w', b'e', b'i', b'r']);
    changed
}

/// Waits until the log of `child` (in `s`'s `weir.log`) holds every one
/// of `needles`, the run ends, or a minute passes; returns the log.
fn wait_for_log(s: &Scratch, child: &mut std::process::Child, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(s.path("weir.log")).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) || Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JavaScript and Python SDKs' `Source` (counter-source in each
/// language): killed three times mid-run, a pipeline of it at parallelism
/// 2 into an exactly-once file sink still writes every number once, in
/// order, in its subtask's file. Each run is killed only after it has
/// published records of its own, so every restart resumes part-way from
/// the position the plugin snapshotted: restarting from 0 would write
/// numbers twice, and skipping ahead would lose some.
#[test]
fn javascript_and_python_source_plugins_resume_from_their_checkpointed_position_after_sigkills() {
    const N: u64 = 20_000;
    let pipeline = format!(
        r#"
name = "counting"
[checkpoint]
interval = "200ms"
[sources.numbers]
type = "wasm"
plugin = "counter-source"
parallelism = 2
config = {{ count = {N}, per-poll = 20, pause-ms = 10 }}
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
input = "numbers"
"#
    );
    // Each subtask's file: its numbers, one JSON value a line, in order.
    let expected: Vec<String> = (0..2).map(|subtask| (subtask..N).step_by(2).map(|n| format!("{{\"id\":{n}}}\n")).collect()).collect();
    for (lang, wasm) in [("js", js_component("plugins/js/src/counter-source.js")), ("python", python_component("plugins/python/counter-source"))] {
        let s = with_plugin("counter-source", &wasm, &pipeline);
        let (out, at_kill) = three_kills_then_finish(&s, lang, &mut Lcg(7), || committed_lines(&s.path("out")));
        assert!(out.status.success(), "{lang}: the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
        assert!(at_kill.windows(2).all(|w| w[0] < w[1]) && at_kill[2] < N, "{lang}: each run was killed part-way, after publishing some (records published at each kill: {at_kill:?})");
        let parts: Vec<String> = part_files(&s.path("out")).into_iter().map(|p| String::from_utf8(p).expect("UTF-8")).collect();
        assert_eq!(parts.len(), 2, "{lang}: one file per subtask");
        for (subtask, (got, want)) in parts.iter().zip(&expected).enumerate() {
            if got != want {
                let first = got.lines().zip(want.lines()).position(|(a, b)| a != b);
                panic!(
                    "{lang}: subtask {subtask} wrote {} lines, want {}; first difference at line {first:?}: {:?} vs {:?} (published at each kill: {at_kill:?})",
                    got.lines().count(),
                    want.lines().count(),
                    first.and_then(|i| got.lines().nth(i)),
                    first.and_then(|i| want.lines().nth(i)),
                );
            }
        }
    }
}

/// Hot reload of a source plugin: a file of the wrong world is refused
/// and the running version goes on; a new version takes over on every
/// subtask at the next checkpoint, restored to the position the running
/// one reached. The output holds every record exactly once.
#[test]
fn a_source_plugin_is_hot_reloaded_at_a_checkpoint_losing_and_repeating_nothing() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    let original = std::fs::read(weir_tests::plugin("fixture-sequence-source")).unwrap();
    install(&s, "fixture_sequence_source.wasm", &original);
    // 8 s at 4000 records/s per subtask: time for two reloads.
    const N: u64 = 64_000;
    s.write("p.toml", format!("plugin-dir = \"plugins\"\n{}", sequence_pipeline(N)));
    let log = std::fs::File::create(s.path("weir.log")).unwrap();
    let mut child = s.command(&["run", "--metrics-address", "off", "p.toml"]).env("WEIR_LOG", "warn,weir::reload=info").stderr(log).spawn().expect("weir");
    std::thread::sleep(Duration::from_millis(1000));
    // An operator is not a source: refused, the running version goes on.
    install(&s, "fixture_sequence_source.wasm", &std::fs::read(weir_tests::plugin("running-sum")).unwrap());
    let text = wait_for_log(&s, &mut child, &["hot reload rejected"]);
    assert!(text.contains("is an operator, not a source"), "{text}");
    install(&s, "fixture_sequence_source.wasm", &new_version(&original));
    let text = wait_for_log(&s, &mut child, &["[sources.numbers] subtask 0 runs plugin version", "[sources.numbers] subtask 1 runs plugin version"]);
    assert!(text.contains("plugin fixture-sequence-source changed") && text.contains("[sources.numbers] swaps it in after each subtask's next snapshot"), "{text}");
    let status = child.wait().expect("weir");
    let text = std::fs::read_to_string(s.path("weir.log")).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("[sources.numbers] subtask 0 runs plugin version") && text.contains("[sources.numbers] subtask 1 runs plugin version"), "both subtasks swapped before the end: {text}");
    assert_each_number_once(&s, N);
}

/// A new version of a source plugin that fails after it was swapped in,
/// before a checkpoint it took part in completed (its probation), is
/// marked bad: the run fails as it would without a reload, and the next
/// start runs the last good version instead of the file still in the
/// plugin directory, resuming from the last checkpoint. Every record is
/// written once.
#[test]
fn a_source_plugin_version_that_fails_on_probation_is_not_run_again() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    install(&s, "fixture_sequence_source.wasm", &std::fs::read(weir_tests::plugin("fixture-sequence-source")).unwrap());
    const N: u64 = 40_000;
    s.write("p.toml", format!("plugin-dir = \"plugins\"\n{}", sequence_pipeline(N)));
    let log = std::fs::File::create(s.path("weir.log")).unwrap();
    let mut child = s.command(&["run", "--metrics-address", "off", "p.toml"]).env("WEIR_LOG", "warn,weir::reload=info").stderr(log).spawn().expect("weir");
    // Some output published before the bad version comes.
    let published = weir_test_support::wait_until(Duration::from_secs(30), || committed_lines(&s.path("out")) > 2000);
    assert!(published, "{}", std::fs::read_to_string(s.path("weir.log")).unwrap_or_default());
    install(&s, "fixture_sequence_source.wasm", &std::fs::read(weir_tests::plugin("fixture-broken-source")).unwrap());
    let status = child.wait().expect("weir");
    let text = std::fs::read_to_string(s.path("weir.log")).unwrap();
    assert_eq!(status.code(), Some(1), "the run fails with the bad version: {text}");
    assert!(text.contains("failed on probation") && text.contains("fixture: this version is broken"), "{text}");
    assert!(committed_lines(&s.path("out")) < N, "the first run did not finish: {text}");

    // The file is still the bad version: the restart runs the last good one.
    let out = s.command(&RUN).env("WEIR_LOG", "warn,weir::reload=info").output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("[sources.numbers] runs its last good version") && stderr.contains("hot reload refused version"), "{stderr}");
    assert_each_number_once(&s, N);
}

/// Hot reload of a sink plugin at a checkpoint: the new version commits
/// the epoch the running one prepared, and every record reaches the
/// receiver once by idempotency key.
#[test]
fn a_sink_plugin_is_hot_reloaded_at_a_checkpoint_delivering_every_record_once() {
    let hook = HookServer::start();
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    let original = std::fs::read(weir_tests::plugin("webhook-sink")).unwrap();
    install(&s, "webhook_sink.wasm", &original);
    // 6 s at 5000 records/s: time for the reload.
    const N: u64 = 30_000;
    s.write("p.toml", &format!("plugin-dir = \"plugins\"\n{}", webhook_pipeline("webhook-sink", ", backoff-ms = 50", &hook.url(), hook.port, N)));
    let log = std::fs::File::create(s.path("weir.log")).unwrap();
    let mut child = s.command(&["run", "--metrics-address", "off", "p.toml"]).env("WEIR_LOG", "warn,weir::reload=info").stderr(log).spawn().expect("weir");
    std::thread::sleep(Duration::from_millis(1500));
    install(&s, "webhook_sink.wasm", &new_version(&original));
    let text = wait_for_log(&s, &mut child, &["[sinks.hook] subtask 0 runs plugin version"]);
    assert!(text.contains("[sinks.hook] swaps it in after each subtask's next pre-commit"), "{text}");
    let status = child.wait().expect("weir");
    let text = std::fs::read_to_string(s.path("weir.log")).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("[sinks.hook] subtask 0 runs plugin version"), "swapped before the end: {text}");
    let got = hook.records_once_by_key("weir-hooks-hook-0-", 700);
    assert_eq!(got.ids.len() as u64, N, "every record arrived: {} of {N} ({} requests, {} distinct keys)", got.ids.len(), got.requests, got.keys);
    assert_eq!(got.ids.last(), Some(&(N - 1)));
}

/// Runs `p.toml` (written from `body`) to its end, expecting failure, and
/// returns stderr.
fn fails(s: &Scratch, body: &str) -> String {
    s.pipeline("p.toml", body);
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "weir should fail:\n{stderr}");
    stderr
}

#[test]
fn mistakes_with_plugin_connectors_are_named() {
    let s = Scratch::new();
    let generator = "[sources.events]\ntype = \"generator\"\ncount = 10\n";
    // A missing plugin, at load, with the section's field.
    let e = fails(&s, &format!("{generator}[sinks.hook]\ntype = \"wasm\"\nplugin = \"no-such-sink\"\nallow-http = [\"localhost:80/x\"]\n"));
    assert!(e.contains("sinks.hook.plugin: no plugin \"no-such-sink\""), "{e}");
    assert!(e.contains("sinks.hook.allow-http[0]"), "{e}");
    // An operator where a sink belongs, and a sink where an operator belongs.
    let e = fails(&s, &format!("{generator}[sinks.hook]\ntype = \"wasm\"\nplugin = \"identity\"\n"));
    assert!(e.contains("plugin identity") && e.contains("is an operator, not a sink"), "{e}");
    // `weir check` loads connector plugins too: the same mistake, before any run.
    let out = s.command(&["check", "p.toml"]).output().expect("weir check");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("sinks.hook: plugin: plugin identity") && e.contains("is an operator, not a sink"), "{e}");
    s.pipeline("p.toml", &format!("{generator}[sinks.hook]\ntype = \"wasm\"\nplugin = \"webhook-sink\"\nallow-http = [\"127.0.0.1:9\"]\nconfig = {{ url = \"http://127.0.0.1:9/in\" }}\n"));
    let out = s.command(&["check", "p.toml"]).stdout(std::process::Stdio::piped()).output().expect("weir check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("sinks.hook") && report.contains("plugin webhook-sink ("), "{report}");
    let e = fails(&s, &format!("{generator}[[operators]]\nname = \"x\"\nplugin = \"webhook-sink\"\n[sinks.out]\ntype = \"discard\"\n"));
    assert!(e.contains("plugin webhook-sink is a sink") && e.contains("[sinks.NAME] section with type = \"wasm\""), "{e}");
    // A host the section does not grant: the plugin's request is refused,
    // naming the setting.
    let e = fails(&s, &format!("{generator}[sinks.hook]\ntype = \"wasm\"\nplugin = \"webhook-sink\"\nconfig = {{ url = \"http://127.0.0.1:9/in\", attempts = 1 }}\n"));
    assert!(e.contains("plugin webhook-sink (commit): POST http://127.0.0.1:9/in with key weir-p-hook-0-"), "{e}");
    assert!(e.contains("add \"127.0.0.1:9\" to sinks.hook.allow-http"), "{e}");
    // The plugin's own config check.
    let e = fails(&s, &format!("{generator}[sinks.hook]\ntype = \"wasm\"\nplugin = \"webhook-sink\"\nconfig = {{ url = \"https://x\" }}\n"));
    assert!(e.contains("sinks.hook") && e.contains("plugin webhook-sink (open): config.url: \"https://x\" must be a plain http:// URL"), "{e}");
    // A record that is not JSON (a new directory: no checkpoint of the
    // runs above).
    let s = Scratch::new();
    s.write("in.txt", "{\"ok\":1}\nnot json\n");
    let hook = HookServer::start();
    let e = fails(
        &s,
        &format!(
            "[sources.lines]\ntype = \"file\"\npath = \"in.txt\"\n[sinks.hook]\ntype = \"wasm\"\nplugin = \"webhook-sink\"\nallow-http = [\"127.0.0.1:{}\"]\nconfig = {{ url = \"{}\" }}\n",
            hook.port,
            hook.url()
        ),
    );
    assert!(e.contains("plugin webhook-sink (write): a record is not JSON") && e.contains("not json"), "{e}");
    // A source plugin's failure names the plugin and the call.
    let s = Scratch::new();
    let e = fails(&s, "[sources.numbers]\ntype = \"wasm\"\nplugin = \"fixture-sequence-source\"\nconfig = { count = 100, fail-at = 42 }\n[sinks.out]\ntype = \"discard\"\n");
    assert!(e.contains("plugin fixture-sequence-source (poll): fixture: failing at record 42"), "{e}");
}
