//! Operators in other languages: the JavaScript example of the README
//! (sdk/js/errors-only.js), built into a component with componentize-js and
//! run by weir like any plugin, and the bundled operators re-implemented
//! with the Python, JavaScript, C and C++ SDKs (plugins/python, plugins/js,
//! plugins/c, plugins/cpp), including the async operator enrich-profile
//! against real services.

use std::process::Command;
use std::time::Duration;
use weir_tests::components::{c_component, cached_build, js_component, python_component};
use weir_tests::{repo, run_with_timeout, Scratch};

#[test]
fn a_javascript_operator_built_with_componentize_js_runs() {
    let js = repo().join("sdk/js");
    let tool = js.join("node_modules/.bin/componentize-js");
    assert!(tool.exists(), "{} is missing: run `bash tests/run`, which installs it with `npm install` in sdk/js", tool.display());
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    let out = s.path("plugins/errors-only.wasm");
    let build = run_with_timeout(
        Command::new(&tool)
            .args(["errors-only.js", "--wit", "../../wit", "--world-name", "operator", "-d", "stdio", "random", "clocks", "http", "fetch-event", "-o"])
            .arg(&out)
            .current_dir(&js),
        Duration::from_secs(300),
    );
    build.expect_code(0);
    assert_eq!(s.run_log_filter("errors-only", "{}"), "disk error on sda\nnetwork error\n");
}

/// The three operators of each language, copied into `dir` under the names
/// a pipeline finds them by.
fn install(s: &Scratch, dir: &str, files: [std::path::PathBuf; 3]) {
    std::fs::create_dir_all(s.path(dir)).unwrap();
    for (name, file) in ["json_filter", "running_sum", "window_count"].iter().zip(files) {
        std::fs::copy(&file, s.path(&format!("{dir}/{name}.wasm"))).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
}

/// json-filter then a keyed, tagged running-sum: the job the byte-for-byte
/// tests run in every language.
const SUMS: &str = r#"
    [[operators]]
    name = "parse"
    plugin = "json-filter"
    config = { filter = "amount >= 10 and user != \"user-0007\"", project = ["user", "amount", "ts"], key = "user" }
    [[operators]]
    name = "sum"
    plugin = "running-sum"
    partition = "hash"
    config = { tag = "same" }
"#;

/// Runs `operators` between a generator of `count` events over 50 users and
/// a file sink, with the plugins in `plugins`; returns the output bytes.
fn run_with(s: &Scratch, plugins: &str, operators: &str, count: u32) -> Vec<u8> {
    let out = format!("out-{plugins}.jsonl");
    let body = format!(
        "plugin-dir = {plugins:?}\n[sources.events]\ntype = \"generator\"\ncount = {count}\nusers = 50\n{operators}\n\
         [sinks.out]\ntype = \"file\"\npath = {out:?}\n"
    );
    let pipeline = s.write(&format!("{plugins}.toml"), body);
    s.weir(&["run", "--quiet", "--fresh", "--metrics-address", "off", pipeline.to_str().unwrap()], Duration::from_secs(600)).expect_code(0);
    std::fs::read(s.path(&out)).unwrap()
}

/// Issue 18: json-filter, running-sum and window-count re-implemented with
/// the Python and JavaScript SDKs give the Rust plugins' output byte for
/// byte: keyed state (running sums, hash-partitioned) and
/// event-time timers (windows fired by the generator's watermarks and by the
/// final one at the end of input).
#[test]
fn python_and_javascript_plugins_match_the_rust_ones_byte_for_byte() {
    let s = Scratch::new();
    install(&s, "rust", ["json-filter", "running-sum", "window-count"].map(weir_tests::plugin));
    install(&s, "python", ["json-filter", "running-sum", "window-count"].map(|p| python_component(&format!("plugins/python/{p}"))));
    install(&s, "js", ["json-filter", "running-sum", "window-count"].map(|p| js_component(&format!("plugins/js/src/{p}.js"))));

    let windows = r#"
        [[operators]]
        name = "parse"
        plugin = "json-filter"
        config = { filter = "amount < 30", key = "user" }
        [[operators]]
        name = "windows"
        plugin = "window-count"
        partition = "hash"
        config = { size-ms = 250 }
    "#;
    for (what, operators, count) in [("running sums", SUMS, 20_000), ("event-time windows", windows, 20_000)] {
        let rust = run_with(&s, "rust", operators, count);
        let lines = rust.iter().filter(|&&b| b == b'\n').count();
        assert!(lines > 1000, "{what}: the Rust pipeline wrote only {lines} lines");
        for lang in ["python", "js"] {
            let other = run_with(&s, lang, operators, count);
            if other != rust {
                let (r, o) = (String::from_utf8_lossy(&rust), String::from_utf8_lossy(&other));
                let first = r.lines().zip(o.lines()).position(|(a, b)| a != b);
                panic!(
                    "{what}: {lang} wrote {} bytes, Rust {}; first different line #{first:?}: {:?} vs {:?}",
                    other.len(),
                    rust.len(),
                    first.and_then(|i| o.lines().nth(i)),
                    first.and_then(|i| r.lines().nth(i)),
                );
            }
        }
    }
}

/// Runs the Python fixture-misbehave operator named `boom` (`settings` are
/// its extra TOML lines) over generated records; returns the run.
fn misbehaving_python(settings: &str) -> weir_tests::Run {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::copy(python_component("plugins/python/fixture-misbehave"), s.path("plugins/fixture_misbehave.wasm")).unwrap();
    s.write(
        "p.toml",
        format!(
            "plugin-dir = \"plugins\"\n[sources.events]\ntype = \"generator\"\ncount = 1000\n\
             [[operators]]\nname = \"boom\"\nplugin = \"fixture-misbehave\"\n{settings}\n[sinks.out]\ntype = \"discard\"\n"
        ),
    );
    s.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], Duration::from_secs(300))
}

/// Issue 18: a Python exception names its type, message, file and line,
/// like a Rust panic names its message.
#[test]
fn a_python_exception_is_reported_with_its_file_and_line() {
    let source = std::fs::read_to_string(repo().join("plugins/python/fixture-misbehave/app.py")).unwrap();
    let line = 1 + source.lines().position(|l| l.contains("raise ValueError")).expect("the fixture raises ValueError");
    let run = misbehaving_python("config = { mode = \"raise\", after = 5 }");
    run.expect_code(1).expect_stderr(&[
        "operator `boom`",
        "fixture-misbehave",
        "rejected record #5",
        "ValueError: fixture-misbehave: deliberate exception on record 5",
        &format!("raised at app.py:{line} in process"),
    ]);
}

/// Issue 18: a Python loop that never returns is stopped by the CPU deadline.
#[test]
fn a_python_infinite_loop_is_stopped_by_the_cpu_deadline() {
    let run = misbehaving_python("config = { mode = \"loop\" }\nlimits = { call-timeout = \"300ms\" }");
    run.expect_code(1).expect_stderr(&["operator `boom`", "CPU deadline of 300ms", "limits.call-timeout"]);
    assert!(run.elapsed < Duration::from_secs(120), "took {:?}", run.elapsed);
}

/// Issue 18: a Python operator allocating without bound is stopped at its
/// memory limit, and the host survives to report it.
#[test]
fn a_python_memory_hog_is_stopped_at_its_limit() {
    let run = misbehaving_python("config = { mode = \"hog\" }\nlimits = { memory = \"96MiB\" }");
    run.expect_code(1).expect_stderr(&["operator `boom`", "limit of 96 MiB", "limits.memory"]);
}

/// Runs the JavaScript fixture-misbehave operator named `boom` (`settings`
/// are its extra TOML lines) over generated records; returns the run.
fn misbehaving_javascript(settings: &str) -> weir_tests::Run {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::copy(js_component("plugins/js/fixtures/fixture-misbehave.js"), s.path("plugins/fixture_misbehave.wasm")).unwrap();
    s.write(
        "p.toml",
        format!(
            "plugin-dir = \"plugins\"\n[sources.events]\ntype = \"generator\"\ncount = 1000\n\
             [[operators]]\nname = \"boom\"\nplugin = \"fixture-misbehave\"\n{settings}\n[sinks.out]\ntype = \"discard\"\n"
        ),
    );
    s.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], Duration::from_secs(300))
}

/// Issue 18: a JavaScript loop that never returns is stopped by the CPU
/// deadline, like the Rust and Python fixtures.
#[test]
fn a_javascript_infinite_loop_is_stopped_by_the_cpu_deadline() {
    let run = misbehaving_javascript("config = { mode = \"loop\" }\nlimits = { call-timeout = \"300ms\" }");
    run.expect_code(1).expect_stderr(&["operator `boom`", "CPU deadline of 300ms", "limits.call-timeout"]);
    assert!(run.elapsed < Duration::from_secs(120), "took {:?}", run.elapsed);
}

/// Issue 18: a JavaScript operator allocating without bound is stopped at
/// its memory limit, and the host survives to report it.
#[test]
fn a_javascript_memory_hog_is_stopped_at_its_limit() {
    let run = misbehaving_javascript("config = { mode = \"hog\" }\nlimits = { memory = \"96MiB\" }");
    run.expect_code(1).expect_stderr(&["operator `boom`", "limit of 96 MiB", "limits.memory"]);
}

/// Runs `program args` in `dir` and panics with its output unless it succeeds.
fn step(dir: &std::path::Path, program: &str, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir).env("PYTHONPATH", repo().join("sdk/python"));
    run_with_timeout(&mut cmd, Duration::from_secs(600)).expect_code(0);
}

/// Issue 18: `weir new-plugin --lang js` and `--lang python` scaffold
/// projects whose own tests pass and whose one documented build command
/// makes a component that runs in a pipeline. (The Python SDK is on
/// PYTHONPATH here where a user would `pip install` it; the builds are
/// cached by the content of the scaffold and the SDK.)
#[test]
fn javascript_and_python_scaffolds_pass_their_tests_build_and_run() {
    let s = Scratch::new();
    s.weir(&["new-plugin", "alerts-js", "--lang", "js"], Duration::from_secs(60)).expect_code(0);
    let run = s.weir(&["new-plugin", "alerts-py", "--lang", "python"], Duration::from_secs(60));
    run.expect_code(0);
    assert!(run.stdout.contains("python -m weir_sdk build app -o alerts_py.wasm"), "{}", run.stdout);

    let js = s.path("alerts-js");
    step(&js, "npm", &["install", "--no-audit", "--no-fund", "--prefer-offline"]);
    step(&js, "npm", &["test"]);
    let js_sources: [(&std::path::Path, &[&str]); 4] =
        [(&js, &[".json"]), (&js.join("src"), &[".js"]), (&repo().join("sdk/js/src"), &[".js"]), (&repo().join("sdk/js/bin"), &[".js"])];
    let js_wasm = cached_build("scaffold-js", "npm run build", &js_sources, |out| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("npm run build && cp alerts_js.wasm {out:?}")).current_dir(&js);
        cmd
    });

    let py = s.path("alerts-py");
    step(&py, "python3", &["-m", "unittest", "-v"]);
    let py_sources: [(&std::path::Path, &[&str]); 2] = [(&py, &[".py"]), (&repo().join("sdk/python/weir_sdk"), &[".py"])];
    let py_wasm = cached_build("scaffold-py", "python -m weir_sdk build", &py_sources, |out| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("python3 -m weir_sdk build app -o alerts_py.wasm && cp alerts_py.wasm {out:?}")).current_dir(&py);
        cmd.env("PYTHONPATH", repo().join("sdk/python"));
        cmd
    });

    // One directory per run: a finished pipeline run again does nothing.
    for (plugin, wasm) in [("alerts-js", js_wasm), ("alerts-py", py_wasm)] {
        let run = Scratch::new();
        std::fs::create_dir_all(run.path("plugins")).unwrap();
        std::fs::copy(wasm, run.path(&format!("plugins/{}.wasm", plugin.replace('-', "_")))).unwrap();
        let out = run.run_log_filter(plugin, r#"{ needle = "error", prefix = "ALERT " }"#);
        assert_eq!(out, "ALERT disk error on sda\nALERT network error\n", "{plugin}");
    }
}

/// Issue 18: `weir new-plugin --lang c` scaffolds a project whose native
/// test passes (`make test`, the C SDK's test harness) and whose one
/// documented build command (`make`) makes a component that runs.
#[test]
fn the_c_scaffold_passes_its_test_builds_and_runs() {
    let s = Scratch::new();
    let run = s.weir(&["new-plugin", "alerts-c", "--lang", "c"], Duration::from_secs(60));
    run.expect_code(0);
    assert!(run.stdout.contains("make test"), "{}", run.stdout);
    let dir = s.path("alerts-c");
    step(&dir, "make", &["test"]);
    let sources: [(&std::path::Path, &[&str]); 2] = [(&dir, &[".c", ".h"]), (&repo().join("sdk/c"), &[".c", ".h", ".sh"])];
    let wasm = cached_build("scaffold-c", "make (sdk/c/build.sh)", &sources, |out| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("make && cp alerts_c.wasm {out:?}")).current_dir(&dir);
        cmd
    });
    let run = Scratch::new();
    std::fs::create_dir_all(run.path("plugins")).unwrap();
    std::fs::copy(wasm, run.path("plugins/alerts_c.wasm")).unwrap();
    let out = run.run_log_filter("alerts-c", r#"{ needle = "error", prefix = "ALERT " }"#);
    assert_eq!(out, "ALERT disk error on sda\nALERT network error\n");
    // A config the operator refuses stops the pipeline at open, with its reason.
    run.write("bad.toml", "plugin-dir = \"plugins\"\n[sources.logs]\ntype = \"file\"\npath = \"in.txt\"\n\
                           [[operators]]\nname = \"filter\"\nplugin = \"alerts-c\"\nconfig = { needle = \"\" }\n[sinks.out]\ntype = \"discard\"\n");
    let refused = run.weir(&["run", "--quiet", "--metrics-address", "off", "bad.toml"], Duration::from_secs(120));
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("`needle` must be a non-empty string"), "{}", refused.stderr);
}

/// Issue 18: a pipeline whose keyed state is kept by a Python operator
/// (running-sum), killed with SIGKILL three times and started again each
/// time, ends with exactly the output of an uninterrupted run.
#[test]
fn sigkills_during_a_python_operator_pipeline_change_nothing_in_the_output() {
    let body = "[checkpoint]\ninterval = \"200ms\"\n[sources.events]\ntype = \"generator\"\ncount = 30000\nrate = 6000\nusers = 200\n\
                [[operators]]\nname = \"parse\"\nplugin = \"json-filter\"\nconfig = { project = [\"user\", \"amount\"], key = \"user\" }\n\
                [[operators]]\nname = \"sum\"\nplugin = \"running-sum\"\npartition = \"hash\"\n\
                [sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n";
    let python = python_component("plugins/python/running-sum");
    let scratch = || {
        let s = Scratch::new();
        std::fs::create_dir_all(s.path("plugins")).unwrap();
        std::fs::copy(weir_tests::plugin("json-filter"), s.path("plugins/json_filter.wasm")).unwrap();
        std::fs::copy(&python, s.path("plugins/running_sum.wasm")).unwrap();
        s.write("p.toml", format!("plugin-dir = \"plugins\"\n{body}"));
        s
    };
    let run = ["run", "--quiet", "--metrics-address", "off", "p.toml"];
    let reference = scratch();
    weir_tests::succeed(&mut reference.command(&run));
    let expected = std::fs::read(reference.path("out.jsonl")).unwrap();
    assert_eq!(expected.iter().filter(|&&b| b == b'\n').count(), 30000, "one running sum per record");

    let s = scratch();
    for after in [1500, 2200, 1800] {
        let mut child = s.command(&run).stderr(std::process::Stdio::null()).spawn().expect("start weir");
        weir_tests::kill_after(&mut child, Duration::from_millis(after));
    }
    let stderr = weir_tests::succeed(&mut s.command(&run));
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let actual = std::fs::read(s.path("out.jsonl")).unwrap();
    assert!(actual == expected, "output differs from the uninterrupted run's ({} bytes vs {})", actual.len(), expected.len());
}

/// Issue 18: a JavaScript throw names its error, file and line, like a Rust
/// panic names its message.
#[test]
fn a_javascript_throw_is_reported_with_its_file_and_line() {
    let source = std::fs::read_to_string(repo().join("plugins/js/fixtures/fixture-throw.js")).unwrap();
    let line = 1 + source.lines().position(|l| l.contains("value.missing.field")).expect("the fixture reads value.missing.field");
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::copy(js_component("plugins/js/fixtures/fixture-throw.js"), s.path("plugins/fixture_throw.wasm")).unwrap();
    s.write(
        "p.toml",
        "plugin-dir = \"plugins\"\n[sources.events]\ntype = \"generator\"\ncount = 100\n\
         [[operators]]\nname = \"buggy\"\nplugin = \"fixture-throw\"\nconfig = { after = 3 }\n[sinks.out]\ntype = \"discard\"\n",
    );
    let run = s.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], Duration::from_secs(300));
    run.expect_code(1).expect_stderr(&[
        "operator `buggy`",
        "rejected record #3",
        "TypeError: ",
        "value.missing is undefined",
        &format!("(thrown at fixture-throw.js:{line} in process)"),
    ]);
}

/// Runs enrich-profile (`wasm`, any language) with `config` and `async`
/// between a generator of 300 events and a file sink (dead letters to
/// another); returns the output and dead-letter bytes.
fn run_enrich(wasm: &std::path::Path, connections: &str, config: &str, async_table: &str) -> (Vec<u8>, Vec<u8>) {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::copy(wasm, s.path("plugins/enrich_profile.wasm")).unwrap();
    s.write(
        "p.toml",
        format!(
            "plugin-dir = \"plugins\"\n[checkpoint]\ninterval = \"off\"\n[sources.events]\ntype = \"generator\"\ncount = 300\n{connections}\n\
             [[operators]]\nname = \"enrich\"\nplugin = \"enrich-profile\"\nconfig = {config}\n\
             async = {{ capacity = 4, dead-letter = \"failed\", {async_table} }}\n\
             [sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n[sinks.failed]\ntype = \"file\"\npath = \"dead.jsonl\"\n"
        ),
    );
    s.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], Duration::from_secs(600)).expect_code(0);
    let read = |f: &str| std::fs::read(s.path(f)).unwrap_or_default();
    (read("out.jsonl"), read("dead.jsonl"))
}

/// Issue 18: the async-operator world from JavaScript and Python.
/// enrich-profile re-implemented with each SDK's AsyncOperator runs through
/// weir against a real HTTP service (one lookup timing out: retried, then
/// dead-lettered) and a real PostgreSQL cluster (key-value and SQL lookups,
/// some without a profile), and writes the Rust plugin's output and dead
/// letters byte for byte.
#[test]
fn async_operators_in_javascript_and_python_match_the_rust_one_against_real_services() {
    use weir_test_support::delay_server::DelayServer;
    use weir_test_support::postgres::TempCluster;
    let components = [
        ("rust", weir_tests::plugin("enrich-profile")),
        ("python", python_component("plugins/python/enrich-profile")),
        ("js", js_component("plugins/js/src/enrich-profile.js")),
    ];
    let server = DelayServer::start(Duration::from_millis(1), Duration::ZERO);
    // The generator's event 3 is user-3757 (n * 7919 % 10000): its lookups hang.
    server.time_out("user-3757", 1000);
    let pg = TempCluster::start();
    pg.psql(
        "CREATE TABLE profiles (user_id text PRIMARY KEY, profile jsonb NOT NULL); \
         INSERT INTO profiles SELECT 'user-' || lpad(i::text, 4, '0'), jsonb_build_object('tier', i % 3, 'since', 2000 + i % 20) FROM generate_series(0, 9999) i; \
         DELETE FROM profiles WHERE user_id = 'user-7919'",
    );
    let http = (
        String::new(),
        format!("{{ lookup = \"http\", url = \"http://127.0.0.1:{}/profile/{{key}}\" }}", server.port),
        format!("allow-http = [\"127.0.0.1:{}\"], timeout = \"300ms\", retry = {{ attempts = 1, backoff = \"10ms\" }}", server.port),
    );
    let kv = (
        format!("[connections.profiles]\ntype = \"postgres-kv\"\nurl = \"{}\"\ntable = \"profiles\"\nkey-column = \"user_id\"\nvalue-column = \"profile\"", pg.url()),
        "{ lookup = \"kv\", store = \"profiles\" }".to_owned(),
        "connections = [\"profiles\"]".to_owned(),
    );
    let sql = (
        format!("[connections.pg]\ntype = \"postgres\"\nurl = \"{}\"", pg.url()),
        "{ lookup = \"sql\", connection = \"pg\", query = \"SELECT profile::text, user_id FROM profiles WHERE user_id = $1\" }".to_owned(),
        "connections = [\"pg\"]".to_owned(),
    );
    for (what, (connections, config, async_table)) in [("http", http), ("kv", kv), ("sql", sql)] {
        let mut reference = None;
        for (lang, wasm) in &components {
            let (out, dead) = run_enrich(wasm, &connections, &config, &async_table);
            let text = String::from_utf8_lossy(&out).into_owned();
            let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if what == "http" {
                assert_eq!(lines.len(), 299, "{lang}: every event but the one timing out");
                assert!(lines.iter().all(|v| v["profile"]["name"] == v["user"]), "{lang}: {text}");
                let dead: Vec<serde_json::Value> = String::from_utf8_lossy(&dead).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                assert_eq!(dead.len(), 1, "{lang}: {dead:?}");
                assert_eq!(dead[0]["attempts"], 2, "{lang}: {dead:?}");
                assert!(dead[0]["reason"].as_str().unwrap().contains("timed out after 300ms"), "{lang}: {dead:?}");
            } else {
                assert_eq!(lines.len(), 300, "{lang} {what}: {}", String::from_utf8_lossy(&dead));
                assert_eq!(lines[1]["profile"], serde_json::Value::Null, "{lang} {what}: user-7919 has no profile");
                let n: u64 = lines[2]["user"].as_str().unwrap()[5..].parse().unwrap();
                assert_eq!(lines[2]["profile"]["tier"], n % 3, "{lang} {what}");
                assert!(dead.is_empty(), "{lang} {what}: {}", String::from_utf8_lossy(&dead));
            }
            match &reference {
                None => reference = Some((out, dead)),
                Some((r_out, r_dead)) => {
                    if &out != r_out {
                        let r = String::from_utf8_lossy(r_out);
                        let first = r.lines().zip(text.lines()).find(|(a, b)| a != b);
                        panic!("{what}: {lang} wrote {} bytes, Rust {}; first difference: {first:?}", out.len(), r_out.len());
                    }
                    assert_eq!(String::from_utf8_lossy(&dead), String::from_utf8_lossy(r_dead), "{what}: {lang}'s dead letters");
                }
            }
        }
    }
}

/// Issue 18: an operator written as one function in each SDK
/// (`weir_sdk::filter!`, `filter(fn)` in JavaScript, `@weir.filter` in
/// Python): the bundled only-errors examples, built with each language's
/// tooling, keep the same records in a pipeline.
#[test]
fn one_function_operators_in_rust_javascript_and_python_run_alike() {
    for (lang, wasm) in [
        ("rust", weir_tests::plugin("only-errors")),
        ("js", js_component("plugins/js/src/only-errors.js")),
        ("python", python_component("plugins/python/only-errors")),
    ] {
        let s = Scratch::new();
        std::fs::create_dir_all(s.path("plugins")).unwrap();
        std::fs::copy(&wasm, s.path("plugins/only_errors.wasm")).unwrap();
        assert_eq!(s.run_log_filter("only-errors", "{}"), "disk error on sda\nnetwork error\n", "{lang}");
    }
}

/// Issue 18: C through Debian's clang (wasm32-wasi), `wit-bindgen c` and
/// `wasm-tools component new` with the WASI preview-1 adapter: running-sum
/// written with sdk/c/weir.h (keyed state prefetched with get-many and
/// written with one apply per batch) gives the Rust
/// plugin's output byte for byte after the Rust json-filter, and so does
/// window-count in C++ (map state, event-time timers).
#[test]
fn c_and_cpp_operators_match_the_rust_ones_byte_for_byte() {
    let c = c_component("plugins/c/running-sum/running_sum.c");
    let s = Scratch::new();
    for dir in ["rust", "c"] {
        std::fs::create_dir_all(s.path(dir)).unwrap();
        std::fs::copy(weir_tests::plugin("json-filter"), s.path(&format!("{dir}/json_filter.wasm"))).unwrap();
    }
    std::fs::copy(weir_tests::plugin("running-sum"), s.path("rust/running_sum.wasm")).unwrap();
    std::fs::copy(&c, s.path("c/running_sum.wasm")).unwrap();
    let rust = run_with(&s, "rust", SUMS, 20_000);
    assert!(rust.iter().filter(|&&b| b == b'\n').count() > 1000);
    let c_out = run_with(&s, "c", SUMS, 20_000);
    if c_out != rust {
        let (r, o) = (String::from_utf8_lossy(&rust), String::from_utf8_lossy(&c_out));
        let first = r.lines().zip(o.lines()).find(|(a, b)| a != b);
        panic!("C wrote {} bytes, Rust {}; first difference: {first:?}", c_out.len(), rust.len());
    }
    // C++ (libc++ for wasm32-wasi) through the same SDK: window-count's
    // event-time windows (map state, timers) give the Rust plugin's bytes.
    let cpp = c_component("plugins/cpp/window-count/window_count.cpp");
    std::fs::copy(weir_tests::plugin("window-count"), s.path("rust/window_count.wasm")).unwrap();
    std::fs::copy(&cpp, s.path("c/window_count.wasm")).unwrap();
    let windows = "[[operators]]\nname = \"parse\"\nplugin = \"json-filter\"\nconfig = { filter = \"amount < 30\", key = \"user\" }\n\
                   [[operators]]\nname = \"windows\"\nplugin = \"window-count\"\npartition = \"hash\"\nconfig = { size-ms = 250 }\n";
    let rust = run_with(&s, "rust", windows, 20_000);
    assert!(rust.iter().filter(|&&b| b == b'\n').count() > 1000);
    let cpp_out = run_with(&s, "c", windows, 20_000);
    if cpp_out != rust {
        let (r, o) = (String::from_utf8_lossy(&rust), String::from_utf8_lossy(&cpp_out));
        let first = r.lines().zip(o.lines()).find(|(a, b)| a != b);
        panic!("C++ wrote {} bytes, Rust {}; first difference: {first:?}", cpp_out.len(), rust.len());
    }
    // A misspelt config key is refused when the pipeline opens, naming it.
    s.write("bad.toml", "plugin-dir = \"c\"\n[sources.events]\ntype = \"generator\"\ncount = 10\n[[operators]]\nname = \"sum\"\nplugin = \"running-sum\"\nconfig = { feild = \"amount\" }\n[sinks.out]\ntype = \"discard\"\n");
    let run = s.weir(&["run", "--quiet", "--metrics-address", "off", "bad.toml"], Duration::from_secs(120));
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("unknown field `feild`"), "{}", run.stderr);
}
