//! Issue 3: backpressure, bounded memory and time accounting, observed the
//! way a user would: through `/metrics` of a real `weir run`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_test_support::free_port;
use weir_tests::{cache_dir, metric, scrape, watch_rss, weir_bin, Sample, Scratch};

fn spawn(s: &Scratch, pipeline: &str, port: u16) -> std::process::Child {
    Command::new(weir_bin())
        .args(["run", "--quiet", "--metrics-address", &format!("127.0.0.1:{port}"), pipeline])
        .current_dir(s.dir.path())
        .env("WEIR_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir")
}

fn wait_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

fn task(samples: &[Sample], name: &str, task: &str) -> f64 {
    metric(samples, name, &[("task", task), ("subtask", "0")]).unwrap_or_else(|| panic!("no {name} for task {task}"))
}

/// Every subtask's busy + idle + backpressured is 1000 +- 50 ms/s (test 4).
fn assert_time_adds_up(samples: &[Sample]) {
    let mut checked = 0;
    for s in samples.iter().filter(|s| s.name == "weir_task_busy_time_ms_per_second") {
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let idle = metric(samples, "weir_task_idle_time_ms_per_second", &labels).unwrap();
        let bp = metric(samples, "weir_task_backpressured_time_ms_per_second", &labels).unwrap();
        let sum = s.value + idle + bp;
        assert!((950.0..=1050.0).contains(&sum), "{:?}: busy {} + idle {idle} + backpressured {bp} = {sum}", s.labels, s.value);
        checked += 1;
    }
    assert!(checked >= 2, "no task time metrics in {samples:?}");
}

/// Tests 1 and 4: source -> slow (30% of the source's rate) -> sink. The
/// source slows to the slow operator's rate, is HIGH backpressured while the
/// slow task is busy and OK; without the slowdown, throughput returns.
#[test]
fn backpressure_follows_the_slowest_operator() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("ctl")).unwrap();
    s.write("ctl/cost", "33.3");
    let p = s.pipeline(
        "p.toml",
        r#"
        [network]
        buffer-size = "4KiB"
        memory = "64KiB"
        [sources.gen]
        type = "generator"
        schema = "sequence"
        rate = 100000
        count = 1500000
        [[operators]]
        name = "slow"
        plugin = "slow"
        disable-chaining = true
        allow-read = ["ctl"]
        config = { control-file = "ctl/cost" }
        [sinks.out]
        type = "discard"
        "#,
    );
    let port = free_port();
    let start = Instant::now();
    let mut child = spawn(&s, p.to_str().unwrap(), port);

    // Slow phase: after 2 s the source runs at the slow operator's rate.
    wait_until(start + Duration::from_secs(2));
    let before = scrape(port).expect("metrics endpoint");
    wait_until(start + Duration::from_secs(5));
    let m = scrape(port).expect("metrics endpoint");
    let sent = |m: &[Sample]| metric(m, "weir_operator_records_out_total", &[("operator", "gen")]).unwrap();
    let source_rate = (sent(&m) - sent(&before)) / 3.0;
    let slow_rate = metric(&m, "weir_operator_records_in_per_second", &[("operator", "slow")]).unwrap();
    assert!(source_rate < 50_000.0, "source still at {source_rate} rec/s while the operator takes 30k/s");
    assert!((source_rate - slow_rate).abs() < 0.2 * slow_rate, "source {source_rate} rec/s vs slow operator {slow_rate} rec/s");
    assert!(task(&m, "weir_task_backpressured_time_ms_per_second", "gen") > 500.0, "source not HIGH backpressured: {m:?}");
    assert_eq!(metric(&m, "weir_task_backpressure_status", &[("task", "gen")]), Some(2.0), "source status should be HIGH");
    assert!(task(&m, "weir_task_busy_time_ms_per_second", "slow") > 800.0, "slow task not busy");
    assert_eq!(metric(&m, "weir_task_backpressure_status", &[("task", "slow")]), Some(0.0), "slow task status should be OK");
    assert_time_adds_up(&m);

    // Remove the slowdown: throughput returns to the source's full rate.
    s.write("ctl/cost", "0");
    let fast_from = Instant::now();
    wait_until(fast_from + Duration::from_secs(2));
    let a = scrape(port).expect("metrics endpoint");
    wait_until(fast_from + Duration::from_secs(4));
    let b = scrape(port).expect("metrics endpoint");
    let fast_rate = (sent(&b) - sent(&a)) / 2.0;
    assert!(fast_rate > 70_000.0, "throughput did not return: {fast_rate} rec/s");
    assert!(task(&b, "weir_task_backpressured_time_ms_per_second", "gen") < 500.0);
    assert_time_adds_up(&b);

    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("1500000 records read, 1500000 written"), "{err}");
}

/// Test 2: a sink stalled for 60 s. Memory stays within the configured
/// network memory plus a fixed margin, and every record arrives once the
/// stall ends.
#[test]
fn a_stalled_sink_bounds_memory_and_loses_nothing() {
    let s = Scratch::new();
    let fifo = s.path("out.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // 400k records of 1000 bytes: 400 MB that must wait upstream, not pile up in memory.
    let p = s.pipeline(
        "p.toml",
        r#"
        [network]
        memory = "1MiB"
        [sources.gen]
        type = "generator"
        schema = "sequence"
        value-size = 1000
        count = 400000
        [[operators]]
        name = "id"
        plugin = "identity"
        disable-chaining = true
        [sinks.out]
        type = "file"
        path = "out.fifo"
        "#,
    );
    let port = free_port();
    let mut child = spawn(&s, p.to_str().unwrap(), port);
    // Opening the read end lets the sink open; then nobody reads for 60 s.
    let reader = std::fs::File::open(&fifo).unwrap();
    let (peak, baseline) = watch_rss(child.id(), Duration::from_secs(60), Duration::from_secs(3));
    let m = scrape(port).expect("metrics");
    let read_so_far = metric(&m, "weir_operator_records_out_total", &[("operator", "gen")]).unwrap();
    assert!(read_so_far < 100_000.0, "the source kept reading ({read_so_far} records) while the sink was stalled");
    assert_eq!(metric(&m, "weir_task_backpressure_status", &[("task", "gen")]), Some(2.0), "source should be HIGH backpressured");
    // 3 tasks x 1 MiB of network buffers, the Wasm instance and the sink's
    // buffer: well under 100 MiB; buffering the input would take 400 MB.
    assert!(peak < 100 << 20, "peak RSS {} MiB during the stall", peak >> 20);
    assert!(peak - baseline < 16 << 20, "RSS grew by {} MiB during the stall", (peak - baseline) >> 20);

    let mut lines = 0u64;
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.unwrap();
        assert_eq!(line.trim_end_matches('.'), i.to_string(), "record {i} out of order or lost");
        lines += 1;
    }
    assert_eq!(lines, 400_000);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
}
