//! Issue 21: sources and sinks written as Wasm components (worlds
//! `weir:plugin/source` and `weir:plugin/sink`), built from the repo's
//! plugins and run by the real `weir` binary: the webhook-sink plugin
//! against a real HTTP receiver passes the built-in HTTP sink's crash test
//! (SIGKILLs of weir and a restart of the receiver leave every record once
//! by idempotency key), a source plugin resumes from the position weir
//! checkpointed for it, and mistakes are named.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use weir_test_support::hook_server::HookServer;
use weir_tests::{Lcg, Scratch, kill_after, kill_rounds_with_a_receiver_outage, part_files};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

fn webhook_pipeline(url: &str, port: u16, count: u64) -> String {
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
plugin = "webhook-sink"
allow-http = ["127.0.0.1:{port}"]
config = {{ url = "{url}", batch = 700, backoff-ms = 50 }}
"#
    )
}

#[test]
fn a_sink_plugin_survives_sigkills_and_a_receiver_restart_leaving_each_record_once_by_key() {
    let hook = HookServer::start();
    let s = Scratch::new();
    const N: u64 = 40_000;
    s.pipeline("p.toml", &webhook_pipeline(&hook.url(), hook.port, N));
    // SIGKILLs, and the receiver going away under a running weir: the
    // plugin's requests fail and are retried with the same keys.
    let out = kill_rounds_with_a_receiver_outage(&s, &RUN, &mut Lcg(11), (1200, 2200), Duration::from_millis(600), || hook.stop(), || hook.restart());
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let got = hook.records_once_by_key("weir-hooks-hook-0-", 700);
    assert!(got.requests > got.keys, "some requests were replayed after a crash ({} requests, {} keys)", got.requests, got.keys);
    assert_eq!(got.ids.len() as u64, N, "every record arrived: {} of {N} ({} requests, {} distinct keys)", got.ids.len(), got.requests, got.keys);
    assert_eq!(got.ids.last(), Some(&(N - 1)));
}

#[test]
fn a_source_plugin_resumes_from_its_checkpointed_position_after_sigkills() {
    let s = Scratch::new();
    const N: u64 = 30_000;
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "sequence"
[checkpoint]
interval = "200ms"
[sources.numbers]
type = "wasm"
plugin = "fixture-sequence-source"
parallelism = 2
config = {{ count = {N}, rate = 4000 }}
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
input = "numbers"
"#
        ),
    );
    let mut rng = Lcg(5);
    let mut child = s.command(&RUN).spawn().expect("weir");
    for round in 0..3 {
        kill_after(&mut child, Duration::from_millis(rng.next_ms(900, 1500)));
        assert_eq!(child.try_wait().expect("wait").and_then(|s| s.signal()), Some(9), "round {round}: weir was killed mid-run");
        child = s.command(&RUN).spawn().expect("weir");
    }
    let out = child.wait_with_output().expect("weir");
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let mut ids = Vec::new();
    for (subtask, part) in part_files(&s.path("out")).iter().enumerate() {
        for line in String::from_utf8_lossy(part).lines() {
            let id = serde_json::from_str::<serde_json::Value>(line).expect("JSON")["id"].as_u64().expect("an id");
            assert_eq!(id % 2, subtask as u64, "subtask {subtask} emits its own split");
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let expected: Vec<u64> = (0..N).collect();
    assert!(ids == expected, "each record exactly once: {} lines, {} distinct, want {N}", ids.len(), ids.iter().collect::<BTreeSet<_>>().len());
}

/// Sources and sinks written as plugins are not hot-reloaded (their open
/// position or pending epoch belongs to the running instance); a new file
/// for such a plugin is answered with a warning that names the connector
/// and says how to pick it up, instead of being ignored.
#[test]
fn a_new_file_for_a_source_plugin_is_answered_with_a_restart_hint() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    let original = std::fs::read(weir_tests::plugin("fixture-sequence-source")).unwrap();
    std::fs::write(s.path("plugins/fixture_sequence_source.wasm"), &original).unwrap();
    s.write(
        "p.toml",
        r#"
plugin-dir = "plugins"
name = "sequence"
[sources.numbers]
type = "wasm"
plugin = "fixture-sequence-source"
config = { count = 10000000, rate = 1000 }
[sinks.out]
type = "discard"
input = "numbers"
"#,
    );
    let log = std::fs::File::create(s.path("weir.log")).unwrap();
    let mut child = s.command(&RUN).stderr(log).spawn().expect("weir");
    std::thread::sleep(Duration::from_millis(1500));
    // The same component with one more (empty) custom section: a new version.
    let mut changed = original.clone();
    changed.extend_from_slice(&[0x00, 0x05, 0x04, b'w', b'e', b'i', b'r']);
    std::fs::write(s.path("plugins/.fixture_sequence_source.wasm.tmp"), &changed).unwrap();
    std::fs::rename(s.path("plugins/.fixture_sequence_source.wasm.tmp"), s.path("plugins/fixture_sequence_source.wasm")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(s.path("weir.log")).unwrap_or_default();
        if text.contains("not hot-reloaded") || std::time::Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("plugin fixture-sequence-source changed"), "{text}");
    assert!(text.contains("[sources.numbers] runs it") && text.contains("Restart the pipeline to run the new version"), "{text}");
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
