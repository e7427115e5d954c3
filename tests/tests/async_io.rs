//! Issue 8: async I/O slots for Wasm operators, shown end to end with the
//! real `weir` binary, the `enrich-profile` plugin built from `plugins/`,
//! a throwaway PostgreSQL cluster started by the test, and a slow HTTP
//! service (`weir_test_support::delay_server`): throughput against capacity,
//! ordered and unordered output, timeouts retried and dead-lettered without
//! failing the job, SIGKILL with records in flight, and grants.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;
use weir_test_support::delay_server::DelayServer;
use weir_test_support::postgres::TempCluster;
use weir_tests::{kill_after, succeed, Lcg, Scratch};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

fn weir(s: &Scratch, args: &[&str]) -> Command {
    s.command(args)
}

fn run_to_end(s: &Scratch) -> String {
    succeed(&mut s.command(&RUN))
}

/// generator (`count` events, parallelism 1) -> enrich-profile over HTTP -> file.
fn http_pipeline(port: u16, count: u64, async_table: &str) -> String {
    format!(
        r#"
name = "enrich"
[checkpoint]
interval = "off"
[sources.events]
type = "generator"
count = {count}
[[operators]]
name = "enrich"
plugin = "enrich-profile"
config = {{ lookup = "http", url = "http://127.0.0.1:{port}/profile/{{key}}" }}
async = {{ allow-http = ["127.0.0.1:{port}"], dead-letter = "failed", {async_table} }}
[sinks.out]
type = "file"
path = "out.jsonl"
[sinks.failed]
type = "file"
path = "dead.jsonl"
"#
    )
}

fn lines(s: &Scratch, file: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(s.path(file)).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {l:?}: {e}"))).collect()
}

fn ids(values: &[serde_json::Value]) -> Vec<u64> {
    values.iter().map(|v| v["id"].as_u64().expect("id")).collect()
}

/// The user the generator gives event `n` (seed 0, 10 000 users).
fn user(n: u64) -> String {
    format!("user-{:04}", (n * 7919) % 10_000)
}

#[test]
fn capacity_64_is_over_40_times_capacity_1_at_10ms_per_lookup() {
    let server = DelayServer::start(Duration::from_millis(10), Duration::ZERO);
    // The rate is measured at the service, between its first and last
    // answer: process start-up is not part of it.
    let s = Scratch::new();
    s.pipeline("p.toml", &http_pipeline(server.port, 200, "capacity = 1"));
    let summary = run_to_end(&s);
    let one = server.rate();
    // The source task waits for the one slot: that is backpressure.
    let bp: f64 = summary
        .lines()
        .find(|l| l.contains("task events[0]"))
        .and_then(|l| l.split("backpressured").nth(1))
        .and_then(|r| r.trim().trim_end_matches('%').trim().parse().ok())
        .unwrap_or_else(|| panic!("no task line in the summary:\n{summary}"));
    assert!(bp >= 50.0, "a full set of slots shows as backpressure: {bp}%\n{summary}");
    assert_eq!(lines(&s, "out.jsonl").len(), 200);

    server.reset_rate();
    let s = Scratch::new();
    s.pipeline("p.toml", &http_pipeline(server.port, 6400, "capacity = 64, output = \"unordered\""));
    run_to_end(&s);
    let many = server.rate();
    let out = lines(&s, "out.jsonl");
    assert_eq!(out.len(), 6400);
    assert!(out.iter().all(|v| v["profile"]["name"] == v["user"]), "every event carries its own profile");
    eprintln!("capacity 1: {one:.0} lookups/s; capacity 64: {many:.0} lookups/s ({:.1}x)", many / one);
    assert!(one < 100.5, "capacity 1 cannot beat 1 lookup per 10 ms: {one:.1}/s");
    assert!(many >= 40.0 * one, "capacity 64 made {many:.0}/s, capacity 1 {one:.0}/s: less than 40x");
}

#[test]
fn ordered_keeps_input_order_and_unordered_emits_everything_once() {
    // Lookups take 0-8 ms at random, so completion order differs from input order.
    let server = DelayServer::start(Duration::ZERO, Duration::from_millis(8));
    let s = Scratch::new();
    s.pipeline("p.toml", &http_pipeline(server.port, 1000, "capacity = 32, output = \"ordered\""));
    run_to_end(&s);
    let ordered = ids(&lines(&s, "out.jsonl"));
    assert_eq!(ordered, (0..1000).collect::<Vec<_>>(), "ordered output is the input order exactly");

    let s = Scratch::new();
    s.pipeline("p.toml", &http_pipeline(server.port, 1000, "capacity = 32, output = \"unordered\""));
    run_to_end(&s);
    let unordered = ids(&lines(&s, "out.jsonl"));
    assert_ne!(unordered, (0..1000).collect::<Vec<_>>(), "with random latencies unordered output is reordered");
    let mut sorted = unordered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "every record exactly once");
    assert!(lines(&s, "dead.jsonl").is_empty());
}

#[test]
fn timeouts_are_retried_then_dead_lettered_and_the_job_goes_on() {
    let server = DelayServer::start(Duration::from_millis(1), Duration::ZERO);
    let (flaky, dead) = (user(1), user(2));
    server.time_out(&flaky, 2);
    server.time_out(&dead, 1000);
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &http_pipeline(server.port, 300, "capacity = 8, timeout = \"200ms\", retry = { attempts = 2, backoff = \"20ms\" }"),
    );
    run_to_end(&s);
    let out = lines(&s, "out.jsonl");
    let got = ids(&out);
    assert_eq!(got, (0..300).filter(|&n| n != 2).collect::<Vec<_>>(), "all but the dead-lettered record, in order");
    assert_eq!(out[1]["profile"]["name"], flaky.as_str(), "the flaky lookup succeeded on its third attempt");
    assert_eq!(server.requests_for(&flaky), 3, "two timeouts, then success");
    assert_eq!(server.requests_for(&dead), 3, "one attempt and two retries");
    let dead_letters = lines(&s, "dead.jsonl");
    assert_eq!(dead_letters.len(), 1, "{dead_letters:?}");
    let d = &dead_letters[0];
    assert_eq!(d["operator"], "enrich");
    assert_eq!(d["attempts"], 3);
    assert!(d["reason"].as_str().unwrap().contains("timed out after 200ms"), "{d}");
    let original: serde_json::Value = serde_json::from_str(d["value"].as_str().unwrap()).unwrap();
    assert_eq!(original["id"], 2, "the dead letter carries the original record");
}

#[test]
fn on_timeout_fail_stops_the_pipeline_naming_the_record() {
    let server = DelayServer::start(Duration::from_millis(1), Duration::ZERO);
    server.time_out(&user(5), 1000);
    let s = Scratch::new();
    s.pipeline("p.toml", &http_pipeline(server.port, 50, "timeout = \"100ms\", retry = { attempts = 1, backoff = \"10ms\" }, on-timeout = \"fail\""));
    let out = weir(&s, &RUN).output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("operators[0]") && stderr.contains("failed after 2 attempt(s)") && stderr.contains("timed out after 100ms"), "{stderr}");
}

#[test]
fn a_host_not_granted_is_refused_with_the_config_key() {
    let server = DelayServer::start(Duration::ZERO, Duration::ZERO);
    let s = Scratch::new();
    // The plugin calls port P, the pipeline grants only P+1: every lookup
    // fails (no retries), so every record is dead-lettered with the reason.
    let body = http_pipeline(server.port, 5, "retry = { attempts = 0 }").replace(
        &format!("allow-http = [\"127.0.0.1:{}\"]", server.port),
        &format!("allow-http = [\"127.0.0.1:{}\"]", server.port + 1),
    );
    s.pipeline("p.toml", &body);
    run_to_end(&s);
    assert_eq!(server.served(), 0, "nothing reached the service");
    let dead = lines(&s, "dead.jsonl");
    assert_eq!(dead.len(), 5);
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("host 127.0.0.1:{} is not allowed", server.port)) && reason.contains("operators[0].async.allow-http"), "{reason}");
}

/// A profile table: user-0000 .. user-9999, each `{"tier": n % 3}`.
fn profiles(pg: &TempCluster) {
    pg.psql(
        "CREATE TABLE profiles (user_id text PRIMARY KEY, profile jsonb NOT NULL); \
         INSERT INTO profiles SELECT 'user-' || lpad(i::text, 4, '0'), jsonb_build_object('tier', i % 3) FROM generate_series(0, 9999) i",
    );
}

/// generator -> enrich-profile with SQL (each lookup sleeps `sleep` s in PostgreSQL) -> file, checkpointed.
fn sql_pipeline(pg: &TempCluster, count: u64, rate: u64, sleep: f64, async_table: &str) -> String {
    format!(
        r#"
name = "enrich"
[checkpoint]
interval = "200ms"
retain = 1000
[sources.events]
type = "generator"
count = {count}
rate = {rate}
[connections.pg]
type = "postgres"
url = "{url}"
max-connections = 24
[[operators]]
name = "enrich"
plugin = "enrich-profile"
config = {{ lookup = "sql", connection = "pg", query = "SELECT profile::text FROM profiles, pg_sleep({sleep}) WHERE user_id = $1" }}
async = {{ connections = ["pg"], dead-letter = "failed", timeout = "10s", {async_table} }}
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
[sinks.failed]
type = "file"
path = "out/dead-{{subtask}}.jsonl"
"#,
        url = pg.url()
    )
}

/// Key-value lookups, over TLS: the cluster accepts TCP only with TLS, and
/// the connection checks its certificate (`verify-full`).
#[test]
fn kv_lookups_enrich_from_postgres() {
    let pg = TempCluster::start_tls();
    profiles(&pg);
    let s = Scratch::new();
    let body = format!(
        r#"
name = "kv"
[checkpoint]
interval = "off"
[sources.events]
type = "generator"
count = 500
[connections.profiles]
type = "postgres-kv"
url = "{url}"
table = "profiles"
key-column = "user_id"
value-column = "profile"
tls = "verify-full"
tls-ca-file = "{ca}"
[[operators]]
name = "enrich"
plugin = "enrich-profile"
config = {{ lookup = "kv", store = "profiles" }}
async = {{ capacity = 16, connections = ["profiles"], on-timeout = "fail" }}
[sinks.out]
type = "file"
path = "out.jsonl"
"#,
        url = pg.url(),
        ca = pg.ca_file().display()
    );
    s.pipeline("p.toml", &body);
    run_to_end(&s);
    let out = lines(&s, "out.jsonl");
    assert_eq!(ids(&out), (0..500).collect::<Vec<_>>());
    for v in &out {
        let n: u64 = v["user"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(v["profile"]["tier"], n % 3, "{v}");
    }
}

#[test]
fn sigkill_with_64_records_in_flight_restores_exactly() {
    let pg = TempCluster::start();
    profiles(&pg);
    // 20 ms per lookup on at most 24 connections: ~1200 lookups/s, while
    // the source offers 1500/s, so all 64 slots stay taken (64 records in
    // flight at every barrier) until the input ends after ~5 s.
    let count = 6000;
    let body = sql_pipeline(&pg, count, 1500, 0.02, "capacity = 64");
    let s = Scratch::new();
    s.pipeline("p.toml", &body);
    let mut rng = Lcg(8);
    let mut logs = Vec::new();
    for i in 0..3 {
        let log = s.path(&format!("run-{i}.log"));
        let mut child = weir(&s, &RUN).stderr(std::fs::File::create(&log).unwrap()).spawn().expect("start weir");
        kill_after(&mut child, Duration::from_millis(rng.next_ms(800, 1300)));
        logs.push(std::fs::read_to_string(&log).unwrap());
    }
    logs.push(run_to_end(&s));
    // Every restart resumed from a checkpoint taken with the 64 slots
    // taken and re-issued those records (a few may have completed and left
    // just before the barrier).
    for log in &logs[1..] {
        assert!(log.contains("resuming from checkpoint"), "{log}");
        let reissued: u32 = log
            .split("re-issuing ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no records re-issued:\n{log}"));
        assert!((40..=64).contains(&reissued), "{reissued} records in flight at the checkpoint, expected nearly 64:\n{log}");
    }
    let text = std::fs::read_to_string(s.path("out/part-0.jsonl")).expect("output");
    let out: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Ordered output, nothing lost, nothing twice: exactly the input order.
    assert_eq!(ids(&out), (0..count).collect::<Vec<_>>(), "output differs from an uninterrupted run's");
    let mut tiers = BTreeMap::new();
    for v in &out {
        *tiers.entry(v["profile"]["tier"].as_u64().expect("enriched")).or_insert(0) += 1;
    }
    assert_eq!(tiers.len(), 3);
    assert!(std::fs::read_to_string(s.path("out/dead-0.jsonl")).unwrap_or_default().is_empty());
}

#[test]
fn bad_async_config_is_reported_by_check_with_paths() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        r#"
        plugin-dir = "plugins"
        [sources.events]
        type = "generator"
        [connections.pg]
        type = "postgres"
        url = "postgres://weir:secret@localhost/app"
        [connections.cache]
        type = "redis"
        [connections.profiles]
        type = "postgres-kv"
        url = "postgres://weir@localhost/app"
        table = "profiles"
        value-column = "profile"
        pool = 4
        [[operators]]
        name = "enrich"
        plugin = "json-filter"
        async = { capacity = 0, timeout = "0s", allow-http = ["http://api.example.com/x"], connections = ["pg", "nope"] }
        [[operators]]
        name = "again"
        plugin = "json-filter"
        async = { dead-letter = "nowhere", retry = { attempts = 2, backoff = "1s", max-backoff = "10ms" } }
        [[operators]]
        name = "typo"
        plugin = "json-filter"
        async = { capacty = 8 }
        [sinks.out]
        type = "stdout"
        "#,
    );
    s.write("plugins/json_filter.wasm", b"placeholder");
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(2);
    weir_tests::golden("async-config-errors.txt", &run.stderr);
}

#[test]
fn metrics_show_slots_latency_timeouts_retries_and_dead_letters() {
    use weir_test_support::free_port;
    use weir_tests::{metric, scrape};
    let server = DelayServer::start(Duration::from_millis(5), Duration::ZERO);
    server.time_out(&user(2), 1000);
    let s = Scratch::new();
    // 300 records/s for 3 s: the run is still going when it is scraped.
    let body = http_pipeline(server.port, 900, "capacity = 8, timeout = \"100ms\", retry = { attempts = 1, backoff = \"10ms\" }")
        .replace("count = 900", "count = 900\nrate = 300");
    s.pipeline("p.toml", &body);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let child = weir(&s, &["run", "--quiet", "--metrics-address", &address, "p.toml"]).spawn().expect("start weir");
    let labels = [("operator", "enrich"), ("subtask", "0")];
    let mut seen = None;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(samples) = scrape(port)
            && metric(&samples, "weir_async_dead_lettered_total", &labels) == Some(1.0)
            && metric(&samples, "weir_async_call_seconds", &[("operator", "enrich"), ("quantile", "0.5")]).is_some()
        {
            seen = Some(samples);
            break;
        }
    }
    let last = scrape(port).unwrap_or_default().into_iter().filter(|s| s.name.starts_with("weir_async")).collect::<Vec<_>>();
    let out = child.wait_with_output().expect("weir");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let samples = seen.unwrap_or_else(|| panic!("the dead letter shows in /metrics while the pipeline runs: {last:?}"));
    assert_eq!(metric(&samples, "weir_async_slots", &labels), Some(8.0));
    assert_eq!(metric(&samples, "weir_async_timeouts_total", &labels), Some(2.0), "two attempts of the hanging lookup");
    assert_eq!(metric(&samples, "weir_async_retries_total", &labels), Some(1.0));
    assert!(metric(&samples, "weir_async_slots_in_use", &labels).is_some());
    assert!(metric(&samples, "weir_async_in_flight", &labels).is_some());
    let p50 = metric(&samples, "weir_async_call_seconds", &[("operator", "enrich"), ("quantile", "0.5")]).unwrap();
    let p99 = metric(&samples, "weir_async_call_seconds", &[("operator", "enrich"), ("quantile", "0.99")]).unwrap();
    assert!(p50 >= 0.005 && p99 >= p50, "p50 {p50} p99 {p99}: every call waits the service's 5 ms");
    assert_eq!(lines(&s, "dead.jsonl").len(), 1);
}

#[test]
fn a_plugin_of_the_wrong_kind_is_refused_by_check() {
    let s = Scratch::new();
    let body = |plugin: &str, extra: &str| {
        format!(
            "[sources.events]\ntype = \"generator\"\ncount = 1\n[[operators]]\nname = \"enrich\"\nplugin = \"{plugin}\"\nconfig = {{ lookup = \"kv\", store = \"x\" }}\n{extra}\n[sinks.out]\ntype = \"discard\"\n"
        )
    };
    // An async plugin without an `async` table.
    s.pipeline("p.toml", &body("enrich-profile", ""));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(120));
    run.expect_code(2).expect_stderr(&["operators[0]", "is an async operator", "give its operator an `async` table"]);
    // A batch operator with one.
    s.pipeline("p.toml", &body("identity", "async = { on-timeout = \"fail\" }").replace("config = { lookup = \"kv\", store = \"x\" }", ""));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(120));
    run.expect_code(2).expect_stderr(&["operators[0]", "is not an async operator", "remove the operator's `async` table"]);
    // Too many slots for the engine's instance pool.
    s.pipeline("p.toml", &body("enrich-profile", "parallelism = 2\nasync = { capacity = 512, on-timeout = \"fail\" }"));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(120));
    run.expect_code(2).expect_stderr(&["operators[0].async.capacity", "1024 plugin instances"]);
    // And a good one passes, showing the slots.
    s.pipeline("p.toml", &body("enrich-profile", "async = { capacity = 8, on-timeout = \"fail\" }"));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(120));
    run.expect_code(0);
    assert!(run.stdout.contains("async: capacity 8, ordered, timeout 5s, retries 3"), "{}", run.stdout);
}

#[test]
fn in_flight_records_restore_into_another_parallelism() {
    let pg = TempCluster::start();
    profiles(&pg);
    // Two subtasks with 32 slots each (12 connections each), killed with
    // their slots full, restored into one subtask: each in-flight record
    // is re-issued by exactly one subtask.
    let count = 4000;
    let body = sql_pipeline(&pg, count, 1500, 0.02, "capacity = 32")
        .replace("max-connections = 24", "max-connections = 12")
        .replace("plugin = \"enrich-profile\"", "plugin = \"enrich-profile\"\nparallelism = 2");
    let s = Scratch::new();
    s.pipeline("p.toml", &body);
    let mut child = weir(&s, &RUN).stderr(Stdio::null()).spawn().expect("start weir");
    kill_after(&mut child, Duration::from_millis(1500));
    s.pipeline("p.toml", &body.replace("parallelism = 2", "parallelism = 1"));
    let stderr = run_to_end(&s);
    assert!(stderr.contains("resuming from checkpoint") && stderr.contains("re-issuing"), "{stderr}");
    let mut got = Vec::new();
    for entry in std::fs::read_dir(s.path("out")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            let text = std::fs::read_to_string(&path).unwrap();
            got.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap()));
        } else if name.starts_with("dead-") {
            assert!(std::fs::read_to_string(&path).unwrap().is_empty(), "{name}");
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..count).collect::<Vec<_>>(), "every record exactly once across the rescale");
}

#[test]
fn a_runaway_slot_is_stopped_at_its_timeout_and_the_others_keep_going() {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
[checkpoint]
interval = "off"
[sources.events]
type = "generator"
count = 1000
[[operators]]
name = "spin"
plugin = "fixture-async-loop"
async = { capacity = 4, timeout = "300ms", retry = { attempts = 0 }, dead-letter = "failed" }
[sinks.out]
type = "file"
path = "out.jsonl"
[sinks.failed]
type = "file"
path = "dead.jsonl"
"#,
    );
    run_to_end(&s);
    // Ten records loop forever: each is stopped after 300 ms (a slot busy in
    // Wasm yields every 10 ms, so its timeout fires) and dead-lettered; the
    // 990 others pass, in order.
    assert_eq!(ids(&lines(&s, "out.jsonl")), (0..1000).filter(|n| n % 100 != 0).collect::<Vec<_>>());
    let dead = lines(&s, "dead.jsonl");
    assert_eq!(dead.len(), 10);
    assert!(dead.iter().all(|d| d["reason"].as_str().unwrap().contains("timed out after 300ms")), "{dead:?}");
}
