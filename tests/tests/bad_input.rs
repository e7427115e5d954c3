//! Bad input gets a clear error naming the file, field, operator or record,
//! a non-zero exit code, and never a hang (issue 2, "Bad input").

use std::time::Duration;
use weir_tests::{golden, plugin, Scratch};

const T: Duration = Duration::from_secs(120);

fn pipeline_with(s: &Scratch, operator: &str, source: &str) -> std::path::PathBuf {
    s.pipeline(
        "p.toml",
        &format!(
            r#"
            {source}
            [[operators]]
            {operator}
            [sinks.out]
            type = "discard"
            "#
        ),
    )
}

const GENERATOR: &str = "[sources.events]\ntype = \"generator\"\ncount = 1000";

#[test]
fn config_errors_are_all_reported_with_their_paths() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        r#"
        plugin-dir = "plugins"
        colour = "blue"
        [sources.events]
        type = "generator"
        cuont = 10
        [[operators]]
        name = "parse"
        plugin = "json-filter"
        [[operators]]
        name = "sum"
        plugin = "running-sum"
        partition = "sideways"
        [sinks.out]
        type = "s3"
        "#,
    );
    s.write("plugins/json_filter.wasm", b"placeholder");
    let run = s.weir(&["check", "p.toml"], T);
    run.expect_code(2);
    golden("config-errors.txt", &run.stderr);
}

#[test]
fn a_missing_plugin_names_the_directory_and_what_is_there() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"x\"\nplugin = \"enrich\"", GENERATOR);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(2).expect_stderr(&[
        "operators[0].plugin",
        "no plugin \"enrich\"",
        "available:",
        "json-filter",
    ]);
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let s = Scratch::new();
    s.write("plugins/junk.wasm", b"this is not wasm at all");
    let body = format!("{GENERATOR}\n[[operators]]\nname = \"j\"\nplugin = \"junk\"\n[sinks.out]\ntype = \"discard\"\n");
    s.write("p.toml", format!("plugin-dir = \"plugins\"\n{body}"));
    s.weir(&["run", "p.toml"], T).expect_code(2).expect_stderr(&["operators[0] (`j`)", "junk.wasm is not a WebAssembly component", "magic bytes"]);

    // A truncated copy of a real plugin.
    let real = std::fs::read(plugin("identity")).unwrap();
    s.write("plugins/junk.wasm", &real[..real.len() / 2]);
    s.weir(&["run", "p.toml"], T).expect_code(2).expect_stderr(&["operators[0] (`j`)", "junk.wasm"]);
}

#[test]
fn a_component_of_another_world_is_refused_with_what_it_exports() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"w\"\nplugin = \"fixture-wrong-world\"", GENERATOR);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(2).expect_stderr(&["not a weir plugin", "wasi:cli/run", "export_operator!", "weir:plugin/sink-handler@0.1.0"]);
}

#[test]
fn a_malformed_record_is_named_with_its_position_and_content() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"amount\": 50}\n{\"amount\": 5\n{\"amount\": 70}\n");
    let source = "[sources.lines]\ntype = \"file\"\npath = \"in.jsonl\"";
    let p = pipeline_with(&s, "name = \"parse\"\nplugin = \"json-filter\"\nconfig = { filter = \"amount >= 10\" }", source);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(1).expect_stderr(&[
        "operator `parse`",
        "json-filter",
        "rejected record #1",
        "{\\\"amount\\\": 5",
        "set `on-error = \"skip\"` in operators[0]",
        "operators[0]",
    ]);
}

#[test]
fn a_trap_names_the_plugin_operator_and_batch_and_the_host_survives() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"boom\"\nplugin = \"fixture-trap\"", GENERATOR);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(1).expect_stderr(&[
        "operator `boom` (plugin `fixture-trap`",
        "trapped",
        "batch #1",
        "the host is unaffected",
    ]);
}

#[test]
fn a_panic_reports_the_panic_message() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"p\"\nplugin = \"fixture-panic\"\nconfig = { after = 5 }", GENERATOR);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(1).expect_stderr(&["operator `p`", "deliberate panic"]);
}

#[test]
fn an_infinite_loop_is_stopped_by_the_cpu_deadline() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"spin\"\nplugin = \"fixture-loop\"\nlimits = { call-timeout = \"300ms\" }", GENERATOR);
    let run = s.weir(&["run", p.to_str().unwrap()], T);
    run.expect_code(1).expect_stderr(&["operator `spin`", "CPU deadline of 300ms", "limits.call-timeout"]);
    assert!(run.elapsed < Duration::from_secs(60), "took {:?}", run.elapsed);
}

#[test]
fn a_memory_hog_is_stopped_at_its_limit() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"hog\"\nplugin = \"fixture-memory-hog\"\nlimits = { memory = \"32MiB\" }", GENERATOR);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(1).expect_stderr(&["operator `hog`", "limit of 32 MiB", "limits.memory"]);
}

#[test]
fn a_plugin_that_refuses_to_open_stops_before_data_flows() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"o\"\nplugin = \"fixture-open-fails\"", GENERATOR);
    s.weir(&["run", p.to_str().unwrap()], T).expect_code(2).expect_stderr(&["operators[0] (`o`", "refused to start", "fixture-open-fails"]);
}

#[test]
fn a_bad_plugin_config_is_reported_by_check() {
    let s = Scratch::new();
    let p = pipeline_with(&s, "name = \"parse\"\nplugin = \"json-filter\"\nconfig = { filtr = \"amount > 1\" }", GENERATOR);
    s.weir(&["check", p.to_str().unwrap()], T).expect_code(2).expect_stderr(&["operators[0] (`parse`", "filtr"]);
}
