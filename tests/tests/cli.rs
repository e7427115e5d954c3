//! The CLI as a user meets it: help, check, plugin inspect, new-plugin.

use std::process::Command;
use std::time::Duration;
use weir_tests::{plugin, plugin_dir, repo, run_with_timeout, Scratch};

const T: Duration = Duration::from_secs(120);

#[test]
fn help_lists_the_commands() {
    let s = Scratch::new();
    let run = s.weir(&["--help"], T);
    run.expect_code(0);
    for cmd in ["run", "check", "new-plugin", "plugin"] {
        assert!(run.stdout.contains(cmd), "{cmd} missing from --help:\n{}", run.stdout);
    }
}

#[test]
fn check_validates_and_describes_the_plan() {
    let s = Scratch::new();
    plugin_dir();
    let quickstart = repo().join("pipelines/quickstart.toml");
    let run = s.weir(&["check", quickstart.to_str().unwrap()], T);
    run.expect_code(0);
    assert!(run.stdout.contains("pipeline `quickstart` is valid"), "{}", run.stdout);
    assert!(run.stdout.contains("task x1: events (source) -> parse (operator) -> sum (operator) -> out (sink)"), "{}", run.stdout);
}

#[test]
fn plugin_inspect_shows_identity_and_contract() {
    let s = Scratch::new();
    let run = s.weir(&["plugin", "inspect", plugin("json-filter").to_str().unwrap()], T);
    run.expect_code(0);
    assert!(run.stdout.contains("plugin:   json-filter"), "{}", run.stdout);
    assert!(run.stdout.contains("weir:plugin/handler@0.1.0"), "{}", run.stdout);
    assert!(run.stdout.contains("sha256:"), "{}", run.stdout);
    let run = s.weir(&["plugin", "inspect", plugin("fixture-wrong-world").to_str().unwrap()], T);
    run.expect_code(1).expect_stderr(&["not a weir operator", "wasi:cli/run"]);
}

/// Issue 2, user story 3: scaffold a plugin, test it natively, build it to a
/// component, run it in a pipeline.
#[test]
fn new_plugin_scaffold_builds_and_runs() {
    let s = Scratch::new();
    s.weir(&["new-plugin", "alerts"], T).expect_code(0);
    let project = s.path("alerts");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Share the plugins' target dir so the SDK's dependencies are built once.
    let target = repo().join("plugins/target");
    for args in [&["test", "--quiet"][..], &["build", "--quiet", "--target", "wasm32-wasip2", "--release"][..]] {
        let run = run_with_timeout(Command::new(&cargo).args(args).current_dir(&project).env("CARGO_TARGET_DIR", &target), Duration::from_secs(600));
        run.expect_code(0);
    }
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::copy(target.join("wasm32-wasip2/release/alerts.wasm"), s.path("plugins/alerts.wasm")).unwrap();
    let out = s.run_log_filter("alerts", r#"{ needle = "error", prefix = "ALERT " }"#);
    assert_eq!(out, "ALERT disk error on sda\nALERT network error\n");
    // A second scaffold into the same place is refused, not overwritten.
    s.weir(&["new-plugin", "alerts"], T).expect_code(2).expect_stderr(&["already exists"]);
}
