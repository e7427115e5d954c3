//! Issue 16, "Host memory a plugin or an input can grow without bound":
//! what the host holds on a plugin's behalf (state writes of one call,
//! timers, SQL rows) is bounded per operator subtask, records in flight are
//! bounded in bytes by `network.memory` however large they are, and
//! crossing a bound fails the run with a message naming the operator and
//! the limit, instead of the host's memory growing until the machine gives
//! out.
//!
//! The hostile plugin is `plugins/fixture-hoard`: its own memory stays
//! small while it asks the host to hold ever more for it. The SQL test
//! starts a throwaway PostgreSQL cluster.

use std::time::Duration;
use weir_test_support::postgres::TempCluster;
use weir_tests::{Run, Scratch};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];
const T: Duration = Duration::from_secs(300);

/// A pipeline of ten generated records through `fixture-hoard` with
/// `config` and the operator's `limits`.
fn hoard(config: &str, limits: &str) -> Run {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "hoard"
[sources.in]
type = "generator"
count = 10
[[operators]]
name = "hoard"
plugin = "fixture-hoard"
config = {config}
limits = {limits}
[sinks.out]
type = "discard"
"#
        ),
    );
    let run = s.weir(&RUN, T);
    assert!(run.code.is_some(), "the run hung (killed after {T:?}):\n{}", run.stderr);
    run
}

/// Issue 16: a plugin capped at 256 MiB staged 1 GiB of `state.apply` in one
/// call by reusing its buffer (2.1 GiB of host memory). One call's staged
/// writes are now bounded by the operator's `limits.memory`: here 64 writes
/// of 1 MiB against a 32 MiB limit fail the batch.
#[test]
fn state_writes_staged_by_one_call_past_limits_memory_fail_naming_the_operator() {
    let run = hoard(r#"{ what = "state-writes", count = 64, block = 1048576 }"#, r#"{ memory = "32MiB" }"#);
    run.expect_code(1).expect_stderr(&[
        "operator `hoard`",
        "staged more than 33554432 bytes of state writes in one call (limits.memory)",
        "while processing batch #1",
    ]);
}

/// The same plugin writing less than the limit in one call runs to the end.
#[test]
fn state_writes_within_limits_memory_succeed() {
    hoard(r#"{ what = "state-writes", count = 16, block = 1048576 }"#, r#"{ memory = "32MiB" }"#).expect_code(0);
}

/// Issue 16: 10 M timers took 1.34 GiB of host memory. The timers of an
/// operator subtask are now bounded by `limits.timers`.
#[test]
fn timers_past_limits_timers_fail_naming_the_operator() {
    let run = hoard(r#"{ what = "timers", count = 2000, block = 16 }"#, "{ timers = 1000 }");
    run.expect_code(1).expect_stderr(&["operator `hoard`", "more than 1000 timers (limits.timers)"]);
}

/// Issue 16: 40 timers with 64 MiB keys took 5.3 GiB. The keys of an
/// operator subtask's timers together are now bounded by its
/// `limits.memory`: here 48 keys of 1 MiB against 32 MiB.
#[test]
fn timer_keys_past_limits_memory_fail_naming_the_operator() {
    let run = hoard(r#"{ what = "timers", count = 48, block = 1048576 }"#, r#"{ memory = "32MiB" }"#);
    run.expect_code(1).expect_stderr(&["operator `hoard`", "timer keys of more than 33554432 bytes together (limits.memory)"]);
}

/// Issue 16: an async operator's SQL query handed the plugin every row it
/// returned, collected in host memory first, with no bound (HTTP bodies
/// had `max-response`). Now the rows of one query count against the same
/// `async.max-response`: 2,000 rows of 1,000 bytes against the default
/// 1 MiB fail the record, naming the operator's setting.
#[test]
fn sql_rows_past_async_max_response_fail_naming_the_operator() {
    let pg = TempCluster::start();
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "rows"
[sources.events]
type = "generator"
count = 3
[connections.pg]
type = "postgres"
url = "{url}"
[[operators]]
name = "enrich"
plugin = "enrich-profile"
config = {{ lookup = "sql", connection = "pg", query = "SELECT repeat('x', 1000) FROM generate_series(1, 2000) WHERE $1::text IS NOT NULL" }}
async = {{ connections = ["pg"], on-timeout = "fail", retry = {{ attempts = 1, backoff = "10ms" }} }}
[sinks.out]
type = "discard"
"#,
            url = pg.url()
        ),
    );
    let run = s.weir(&RUN, T);
    run.expect_code(1).expect_stderr(&["operators[0]", "the SQL result (", "is larger than operators[0].async.max-response (1048576 bytes)"]);
}

/// A generator of `count` records of `value_size` bytes feeding a discard
/// sink at parallelism 2 (so the records cross the network), with
/// `network.memory = "4MiB"`.
fn large_records(count: u64, value_size: u64) -> Run {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "large"
[network]
memory = "4MiB"
[sources.in]
type = "generator"
schema = "sequence"
count = {count}
value-size = {value_size}
[sinks.out]
type = "discard"
parallelism = 2
"#
        ),
    );
    let run = s.weir(&RUN, T);
    assert!(run.code.is_some(), "the run hung (killed after {T:?}):\n{}", run.stderr);
    run
}

/// Issue 16: a network buffer grew to fit a large record and still counted
/// as one buffer, so `network.memory = "4MiB"` held 1.97 GiB of 8 MiB
/// records. A large record now holds a buffer's credit per buffer-size of
/// its bytes, so one larger than an output channel may hold (here 126
/// buffers of 32 KiB) can never fit the memory bound and is refused, naming
/// the producer and the record.
#[test]
fn records_larger_than_network_memory_allows_fail_naming_the_producer() {
    let run = large_records(4, 8 << 20);
    run.expect_code(1).expect_stderr(&["the output of `in`", "a record of 8388", "bytes one output channel may hold", "raise network.memory"]);
}

/// Records larger than a network buffer but within the bound still flow,
/// each in a buffer grown for it.
#[test]
fn records_larger_than_a_network_buffer_within_network_memory_flow() {
    let run = large_records(40, 1 << 20);
    run.expect_code(0);
}
