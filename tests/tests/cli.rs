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

/// The example pipelines the docs point to stay valid as keys change.
#[test]
fn every_example_pipeline_passes_check() {
    let s = Scratch::new();
    plugin_dir();
    let mut files = Vec::new();
    for dir in ["pipelines", "pipelines/nexmark"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "the examples were found: {files:?}");
    for file in files {
        let run = s.weir(&["check", file.to_str().unwrap()], T);
        assert_eq!(run.code, Some(0), "{}: {}{}", file.display(), run.stdout, run.stderr);
        assert!(run.stdout.contains("is valid"), "{}: {}", file.display(), run.stdout);
    }
}

#[test]
fn plugin_inspect_shows_identity_and_contract() {
    let s = Scratch::new();
    let run = s.weir(&["plugin", "inspect", plugin("json-filter").to_str().unwrap()], T);
    run.expect_code(0);
    assert!(run.stdout.contains("plugin:   json-filter"), "{}", run.stdout);
    assert!(run.stdout.contains("weir:plugin/handler@0.1.0"), "{}", run.stdout);
    assert!(run.stdout.contains("sha256:"), "{}", run.stdout);
    assert!(run.stdout.contains("world:    weir:plugin/operator@0.1.0 (runs as an operator"), "{}", run.stdout);
    // The world is the plugin's own: a sink says where it goes.
    let run = s.weir(&["plugin", "inspect", plugin("webhook-sink").to_str().unwrap()], T);
    run.expect_code(0);
    assert!(run.stdout.contains("world:    weir:plugin/sink@0.1.0 (runs as a sink: [sinks.NAME] type = \"wasm\", plugin = \"webhook-sink\")"), "{}", run.stdout);
    let run = s.weir(&["plugin", "inspect", plugin("fixture-wrong-world").to_str().unwrap()], T);
    run.expect_code(1).expect_stderr(&["not a weir plugin", "wasi:cli/run"]);
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

/// A pipeline of no plugin that runs until killed, with checkpoints in `dir`.
fn endless(dir: &str) -> String {
    format!("name = \"endless\"\n[checkpoint]\ninterval = \"1s\"\ndir = {dir:?}\n[sources.gen]\ntype = \"generator\"\nrate = 100.0\n[sinks.out]\ntype = \"discard\"\n")
}

/// Waits until `path` exists (or panics with the run's stderr).
fn wait_for_file(path: &std::path::Path, child: &mut std::process::Child) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            panic!("weir run ended ({status}) before {} appeared:\n{err}", path.display());
        }
        assert!(std::time::Instant::now() < until, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 16, first section, item 5: when the control socket cannot be
/// bound (its path is over 107 bytes), a second run of the pipeline must
/// still be refused, naming the first one's pid and the lock, instead of
/// resuming the first's checkpoint under it.
#[test]
fn issue16_a_second_run_is_refused_even_without_a_control_socket() {
    let s = Scratch::new();
    let long = format!("data/{}/{}", "d".repeat(60), "e".repeat(60));
    s.write("p.toml", endless(&long));
    let mut first = s.command(&["run", "--quiet", "--metrics-address", "off", "p.toml"]).spawn().unwrap();
    let dir = s.path(&long).join("endless");
    wait_for_file(&dir.join("_run.lock"), &mut first);
    assert!(dir.join("_control.sock").as_os_str().len() > 107, "the socket path is too long to bind");
    std::thread::sleep(Duration::from_millis(500));
    let second = s.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], T);
    let _ = first.kill();
    let _ = first.wait();
    second.expect_code(2).expect_stderr(&["already running", &format!("process {}", first.id()), "_run.lock"]);
    // The lock dies with its process: the next run starts.
    let mut third = s.command(&["run", "--quiet", "--metrics-address", "off", "p.toml"]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(third.try_wait().unwrap().is_none(), "a run after the first was killed starts");
    let _ = third.kill();
    let _ = third.wait();
}

/// Issue 16: the control socket is the user's only whatever the umask,
/// refuses other users, and bounds what a client may send.
#[test]
fn issue16_the_control_socket_is_private_and_bounded() {
    use std::io::{BufRead, Write};
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    s.write("p.toml", endless("data"));
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 000; exec \"$0\" run --quiet --metrics-address off p.toml"]).arg(weir_tests::weir_bin()).current_dir(s.dir.path()).env("WEIR_CACHE_DIR", weir_tests::cache_dir());
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let socket = s.path("data/endless/_control.sock");
    wait_for_file(&socket, &mut child);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket ignores umask 000");
    let ask = |request: &[u8]| {
        let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = c.write_all(request);
        let mut line = String::new();
        let _ = std::io::BufReader::new(c).read_line(&mut line);
        line
    };
    assert!(ask(b"status\n").starts_with("ok "), "the owner is answered");
    let answer = ask(&vec![b'x'; 100_000]);
    assert!(answer.contains("longer than 4096 bytes"), "{answer}");
    let started = std::time::Instant::now();
    let answer = ask(b"stat");
    assert!(answer.contains("no request line within"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Another user, even with the socket opened to everyone, is refused by
    // its uid (`weir status` run as nobody).
    for dir in [s.dir.path().to_owned(), s.path("data"), s.path("data/endless")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let other = weir_tests::run_with_timeout(
        Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(weir_tests::weir_bin()).args(["status", "p.toml"]).current_dir(s.dir.path()),
        T,
    );
    other.expect_code(1).expect_stderr(&["answers only its own user", "uid 65534"]);
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 20: `weir run --profile FILE` samples the plugins' own code and
/// writes folded stacks a flame graph tool reads: one root per operator
/// (`name (plugin)`), the functions named from the component (not
/// `wasm-function[N]`), and the hottest functions printed per operator.
#[test]
fn run_with_profile_names_the_plugin_functions_the_time_goes_to() {
    let s = Scratch::new();
    plugin_dir();
    s.write(
        "p.toml",
        format!(
            "plugin-dir = {:?}\n[sources.events]\ntype = \"generator\"\ncount = 600000\nusers = 1000\n\
             [[operators]]\nname = \"parse\"\nplugin = \"json-filter\"\nconfig = {{ filter = \"amount >= 10\", project = [\"user\", \"amount\"], key = \"user\" }}\n\
             [[operators]]\nname = \"sum\"\nplugin = \"running-sum\"\npartition = \"hash\"\n\
             [sinks.out]\ntype = \"discard\"\n",
            plugin_dir()
        ),
    );
    let run = s.weir(&["run", "--quiet", "--fresh", "--metrics-address", "off", "--profile", "prof.folded", "p.toml"], Duration::from_secs(300));
    run.expect_code(0).expect_stderr(&["samples of plugin code", "prof.folded", "parse (json-filter)"]);
    let folded = std::fs::read_to_string(s.path("prof.folded")).unwrap();
    let mut roots = std::collections::BTreeMap::<String, u64>::new();
    let mut named = 0;
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not `stack count`: {line:?}"));
        let count: u64 = count.parse().unwrap_or_else(|_| panic!("bad count in {line:?}"));
        let mut frames = stack.split(';');
        *roots.entry(frames.next().unwrap().to_owned()).or_default() += count;
        if frames.any(|f| f.contains("json_filter") || f.contains("json_scan") || f.contains("running_sum") || f.contains("weir_sdk")) {
            named += count;
        }
    }
    assert!(roots.contains_key("parse (json-filter)"), "roots: {roots:?}");
    assert!(roots.keys().all(|r| r == "parse (json-filter)" || r == "sum (running-sum)"), "roots: {roots:?}");
    assert!(named > 0, "no sample names a function of the plugins' crates:\n{folded}");
    // A file named .svg gets a flame graph of the same kind of run.
    let run = s.weir(&["run", "--quiet", "--fresh", "--metrics-address", "off", "--profile", "flame.svg", "p.toml"], Duration::from_secs(300));
    run.expect_code(0).expect_stderr(&["flame.svg (a flame graph"]);
    let svg = std::fs::read_to_string(s.path("flame.svg")).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("weir: pipeline ") && svg.contains("<title>parse (json-filter) ("), "{svg}");
    assert!(svg.contains("json_scan") || svg.contains("json_filter") || svg.contains("running_sum"), "a plugin function is named:\n{svg}");
    // A file named .perf gets every sample with its time, as `perf script`
    // text for the Firefox Profiler: a thread per operator, times rising.
    let run = s.weir(&["run", "--quiet", "--fresh", "--metrics-address", "off", "--profile", "run.perf", "p.toml"], Duration::from_secs(300));
    run.expect_code(0).expect_stderr(&["run.perf (perf script text"]);
    let perf = std::fs::read_to_string(s.path("run.perf")).unwrap();
    assert!(perf.starts_with("# ========\n"), "{perf}");
    let heads: Vec<&str> = perf.lines().filter(|l| !l.starts_with('#') && !l.starts_with('\t') && !l.is_empty()).collect();
    assert!(!heads.is_empty(), "no samples:\n{perf}");
    let mut last = 0.0;
    for head in &heads {
        let (before, time) = head.strip_suffix(": 10000 cpu-clock:").and_then(|h| h.rsplit_once(' ')).unwrap_or_else(|| panic!("not a sample line: {head:?}"));
        assert!(before.starts_with("parse (json-filter) ") || before.starts_with("sum (running-sum) "), "{head:?}");
        let time: f64 = time.parse().unwrap_or_else(|_| panic!("no time in {head:?}"));
        assert!(time >= last, "samples in time order: {time} after {last}");
        last = time;
    }
    assert!(perf.contains(" (json-filter)\n") && perf.contains("\t0 parse (json-filter) (weir)\n"), "{perf}");
}
