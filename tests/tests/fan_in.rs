//! Issue 19: pipelines that are graphs. Operators and sinks with several
//! inputs, run as a user would: a real `weir run`, its output compared with
//! sums computed here from the generator's documented formula (user
//! `(N * 7919 + seed) mod users`, amount `N mod 100`), also across SIGKILLs
//! and a restore at another parallelism; and `weir check` refusing a cycle
//! and a missing input.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use weir_tests::{json_lines, kill_after, part_files, succeed, Lcg, Scratch};

const USERS: u64 = 500;
const FAST: (u64, u64) = (1, 200_000);
const SLOW: (u64, u64) = (2, 40_000);

/// Two generators at different rates (`fast` 5 x `slow`), each parsed and
/// keyed by user, united into one keyed running sum -> file sink.
fn union(parallelism: u32, interval: &str, mode: &str, fast_rate: u64) -> String {
    format!(
        r#"
name = "union"
parallelism = {parallelism}
[checkpoint]
interval = "{interval}"
mode = "{mode}"
[sources.fast]
type = "generator"
count = {fast_count}
rate = {fast_rate}
seed = {fast_seed}
users = {USERS}
[sources.slow]
type = "generator"
count = {slow_count}
rate = {slow_rate}
seed = {slow_seed}
users = {USERS}
[[operators]]
name = "parse-fast"
plugin = "json-filter"
input = "fast"
config = {{ project = ["user", "amount"], key = "user" }}
[[operators]]
name = "parse-slow"
plugin = "json-filter"
input = "slow"
config = {{ project = ["user", "amount"], key = "user" }}
[[operators]]
name = "sum"
plugin = "running-sum"
inputs = ["parse-fast", "parse-slow"]
partition = "hash"
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
"#,
        fast_seed = FAST.0,
        fast_count = FAST.1,
        slow_seed = SLOW.0,
        slow_count = SLOW.1,
        slow_rate = fast_rate / 5,
    )
}

/// Per user: how many records both sources produce for it and their total.
fn expected() -> BTreeMap<String, (u64, i64)> {
    let mut sums = BTreeMap::new();
    for (seed, count) in [FAST, SLOW] {
        for n in 0..count {
            let user = ((n % USERS) * 7919 + seed % USERS) % USERS;
            let e = sums.entry(format!("user-{user:04}")).or_insert((0, 0));
            e.0 += 1;
            e.1 += (n % 100) as i64;
        }
    }
    sums
}

/// Per key in the sink's output: how many running sums it got and the
/// largest (the last: sums only grow).
fn actual(s: &Scratch) -> BTreeMap<String, (u64, i64)> {
    let mut sums = BTreeMap::new();
    for file in part_files(&s.path("out")) {
        for v in json_lines(&String::from_utf8_lossy(&file)) {
            let e = sums.entry(v["key"].as_str().expect("key").to_owned()).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(v["sum"].as_i64().expect("sum"));
        }
    }
    sums
}

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

fn run_and_kill(s: &Scratch, after: Duration) {
    let mut child = s.command(&RUN).stderr(Stdio::null()).spawn().expect("start weir");
    kill_after(&mut child, after);
}

fn assert_exact(s: &Scratch, what: &str) {
    let (expected, actual) = (expected(), actual(s));
    let records: u64 = actual.values().map(|(n, _)| n).sum();
    assert_eq!(records, FAST.1 + SLOW.1, "{what}: one running sum per record of either input, none twice");
    assert_eq!(actual.len(), expected.len(), "{what}: every user of both inputs");
    for (user, want) in &expected {
        assert_eq!(actual.get(user), Some(want), "{what}: user {user} (records, sum)");
    }
}

/// Issue 19, test 1: both inputs' records of a key reach the same subtask
/// and add up in the same keyed state, each record once.
#[test]
fn a_union_of_two_generators_into_one_keyed_sum_is_exact() {
    for parallelism in [1, 2] {
        let s = Scratch::new();
        s.pipeline("p.toml", &union(parallelism, "off", "aligned", 500_000));
        let check = s.weir(&["check", "p.toml"], Duration::from_secs(120));
        check.expect_code(0);
        assert!(check.stdout.contains("<- parse-fast [hash] <- parse-slow [hash]"), "the plan shows both inputs:\n{}", check.stdout);
        succeed(&mut s.command(&RUN));
        assert_exact(&s, &format!("parallelism {parallelism}"));
    }
}

/// Issue 19: a plain union needs no plugin: a sink with two inputs
/// receives both streams.
#[test]
fn a_sink_with_two_inputs_receives_both_streams() {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
[checkpoint]
interval = "off"
[sources.a]
type = "generator"
schema = "sequence"
count = 5000
[sources.b]
type = "generator"
schema = "sequence"
count = 3000
parallelism = 2
[sinks.out]
type = "file"
inputs = ["a", "b"]
path = "out/part-{subtask}.txt"
"#,
    );
    succeed(&mut s.command(&RUN));
    let mut got: Vec<u64> = part_files(&s.path("out")).iter().flat_map(|f| String::from_utf8_lossy(f).lines().map(|l| l.parse::<u64>().expect("a number")).collect::<Vec<_>>()).collect();
    got.sort_unstable();
    let mut want: Vec<u64> = (0..5000).chain(0..3000).collect();
    want.sort_unstable();
    assert_eq!(got, want, "every record of both sources once");
}

/// Issue 19: SIGKILLed again and again with checkpoints (aligned, then
/// unaligned: in-flight records of both inputs are persisted), the union
/// still counts every record once into the exactly-once file sink.
#[test]
fn sigkills_during_a_union_change_nothing_in_the_sums() {
    for (mode, seed) in [("aligned", 19), ("unaligned", 1919)] {
        let s = Scratch::new();
        s.pipeline("p.toml", &union(2, "200ms", mode, 100_000));
        let mut rng = Lcg(seed);
        for _ in 0..8 {
            run_and_kill(&s, Duration::from_millis(rng.next_ms(400, 1200)));
        }
        let stderr = succeed(&mut s.command(&RUN));
        assert!(stderr.contains("resuming from checkpoint"), "{mode}: {stderr}");
        assert_exact(&s, mode);
    }
}

/// Issue 19: a multi-input task's checkpoint restores at another
/// parallelism (keyed state re-split by key group, both inputs).
#[test]
fn a_union_restores_at_another_parallelism() {
    let s = Scratch::new();
    for (parallelism, after) in [(1, 900), (3, 900)] {
        s.pipeline("p.toml", &union(parallelism, "100ms", "aligned", 100_000));
        run_and_kill(&s, Duration::from_millis(after));
    }
    s.pipeline("p.toml", &union(2, "100ms", "aligned", 1_000_000));
    let stderr = succeed(&mut s.command(&RUN));
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    assert_exact(&s, "restored at 1, then 3, then 2");
}

const TWO_SOURCES: &str = r#"
[sources.a]
type = "generator"
count = 10
[sources.b]
type = "generator"
count = 10
[sinks.out]
type = "stdout"
"#;

/// Issue 19: `weir check` names the file, the operator and the loop.
#[test]
fn check_reports_a_cycle_with_the_operators_in_it() {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"{TWO_SOURCES}
inputs = ["a", "c"]
[[operators]]
name = "b2"
plugin = "identity"
inputs = ["a", "c"]
[[operators]]
name = "c"
plugin = "identity"
input = "b2"
"#
        ),
    );
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(2).expect_stderr(&["p.toml: operators[1].input: \"b2\" is downstream of this operator, which makes a cycle: `b2` -> `c` -> `b2`"]);
    assert_eq!(run.stderr.matches("makes a cycle").count(), 1, "one cycle, reported once:\n{}", run.stderr);
}

/// Issue 19: an input that names nothing, a duplicate input, and both
/// `input` and `inputs`, each reported with its node.
#[test]
fn check_reports_missing_and_duplicate_inputs() {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"{TWO_SOURCES}
inputs = ["u", "nowhere"]
[[operators]]
name = "u"
plugin = "identity"
inputs = ["a", "b", "a"]
[[operators]]
name = "v"
plugin = "identity"
input = "a"
inputs = ["b"]
"#
        ),
    );
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(2).expect_stderr(&[
        "p.toml: sinks.out.inputs: \"nowhere\" is not a source or an operator",
        "p.toml: operators[0].inputs: \"a\" is listed twice",
        "p.toml: operators[1].inputs: both `input` and `inputs` are set",
    ]);
}

/// Issue 19: key compatibility, where `weir check` can see it. Two inputs
/// at parallelism 2 without `partition = "hash"` send one key to two
/// subtasks, which a join cannot take: `weir check` warns, naming the
/// operator and its inputs, and accepts the file (a union of stateless
/// records is fine). With "hash" every input routes a key alike: no warning.
#[test]
fn check_warns_when_several_inputs_are_not_partitioned_by_key() {
    let s = Scratch::new();
    let pipeline = |partition: &str| {
        format!(
            r#"parallelism = 2
[sources.a]
type = "generator"
count = 10
[sources.b]
type = "generator"
count = 10
[[operators]]
name = "joined"
plugin = "join"
inputs = ["a", "b"]
{partition}
config = {{ kind = "interval", lower-ms = 0, upper-ms = 0 }}
[sinks.out]
type = "stdout"
"#
        )
    };
    s.pipeline("p.toml", &pipeline(""));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(0).expect_stderr(&[
        "warning: ",
        "p.toml: operators[0].partition: `joined` takes 2 inputs (a, b) at parallelism 2",
        "set partition = \"hash\"",
    ]);
    s.pipeline("p.toml", &pipeline("partition = \"hash\""));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(0);
    assert!(!run.stderr.contains("warning"), "no warning with partition = \"hash\":\n{}", run.stderr);
}

/// Issue 19, test 5 (the runtime part): one input goes silent and stays
/// open; after `idle-timeout` it no longer holds the watermark back, so the
/// event-time windows of the other input fire while the pipeline runs.
/// Without idleness the silent input's first timestamp would hold every
/// window back until the end of input, which never comes.
#[test]
fn an_idle_input_stops_holding_the_watermark_back() {
    use std::io::BufRead;
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
idle-timeout = "1s"
[checkpoint]
interval = "200ms"
[sources.busy]
type = "generator"
rate = 2000
[sources.quiet]
type = "generator"
rate = 0.001
seed = 3
[[operators]]
name = "parse-busy"
plugin = "json-filter"
input = "busy"
config = { project = ["user"], key = "user" }
[[operators]]
name = "parse-quiet"
plugin = "json-filter"
input = "quiet"
config = { project = ["user"], key = "user" }
[[operators]]
name = "windows"
plugin = "window-count"
inputs = ["parse-busy", "parse-quiet"]
partition = "hash"
config = { size-ms = 500 }
[sinks.out]
type = "stdout"
"#,
    );
    let mut child = s.command(&RUN).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start weir");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // A generous bound for a slow machine: the windows fire about a second
    // after the start; none ever fire if the idle input holds them back.
    let first = rx.recv_timeout(Duration::from_secs(120));
    // The status says which input is idle, per input of the fan-in.
    let status = first.is_ok().then(|| idle_inputs_status(&s));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let first = first.expect("no window fired while one input was idle");
    let v: serde_json::Value = serde_json::from_str(&first).expect("a JSON window result");
    assert!(v["window_end"].as_i64().is_some() && v["count"].as_i64().is_some_and(|c| c > 0), "{first}");
    let (json, text) = status.expect("status");
    let inputs = &json["snapshot"]["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "windows").expect("task windows")["inputs"];
    assert_eq!(inputs[0]["from"], "parse-busy", "{inputs:#}");
    assert_eq!((inputs[0]["idle"].clone(), inputs[1]["idle"].clone()), (false.into(), true.into()), "{inputs:#}");
    assert!(inputs[0]["records_in"].as_u64().unwrap() > 0 && inputs[0]["watermark_ms"].as_i64().is_some(), "{inputs:#}");
    // Idle time per input: the quiet one's, none for the busy one.
    assert!(inputs[1]["idle_time"].as_f64().unwrap() > 0.0 && inputs[0]["idle_time"].as_f64() == Some(0.0), "{inputs:#}");
    assert!(
        text.lines().any(|l| l.contains("<- parse-quiet") && l.contains("idle: left out of the watermark")),
        "`weir status` names the idle input:\n{text}"
    );
}

/// Polls `weir status` until the `windows` task shows its quiet input
/// idle, with idle time (at most a minute); returns the JSON and the text
/// form.
fn idle_inputs_status(s: &Scratch) -> (serde_json::Value, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.weir(&["status", "--json", "p.toml"], Duration::from_secs(20));
        if r.code == Some(0) {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("status is JSON");
            // Idle now, and idle time sampled since.
            let idle = v["snapshot"]["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["name"] == "windows" && t["inputs"][1]["idle"] == true && t["inputs"][1]["idle_time"].as_f64().is_some_and(|ms| ms > 0.0));
            if idle || std::time::Instant::now() > deadline {
                let text = s.weir(&["status", "p.toml"], Duration::from_secs(20)).stdout;
                return (v, text);
            }
        }
        assert!(std::time::Instant::now() < deadline, "`weir status` never answered: {}", r.stderr);
        std::thread::sleep(Duration::from_millis(300));
    }
}
