//! Issue 16, "Output destroyed or stalled without a word": a run that can
//! no longer make progress fails with a message naming the operator or the
//! record, instead of hanging while checkpoints keep "completing".
//!
//! Every run has a timeout in the harness: a hang fails the test (exit code
//! `None`) rather than hanging the suite.

use std::time::Duration;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use weir_test_support::kafka::{Tansu, create_topic, produce};
use weir_tests::{Run, Scratch};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];
const T: Duration = Duration::from_secs(180);

/// Issue 16 item 3: a Kafka record whose header name does not fit weir's
/// record format (65,535 bytes at most) panicked the source's polling
/// thread; `poll()` never learnt, and the run read nothing more, forever.
/// Now the source fails the run with the partition and offset of the record.
#[test]
fn kafka_header_key_too_large_for_a_frame_fails_the_run_naming_partition_and_offset() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    create_topic(&brokers, "in", 1);
    // Offsets 0-2 are fine, offset 3 carries the oversized header name.
    assert_eq!(produce(&brokers, "in", (0..3).map(|n| (None, format!("{{\"n\":{n}}}").into_bytes()))), 3);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    let name = "h".repeat(70_000);
    let headers = OwnedHeaders::new().insert(Header { key: &name, value: Some("v") });
    producer.send(BaseRecord::<(), str>::to("in").payload("{\"n\":3}").partition(0).headers(headers)).map_err(|(e, _)| e).expect("send");
    producer.flush(Duration::from_secs(60)).expect("the oversized record is acknowledged");

    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "big-header"
[checkpoint]
interval = "200ms"
[sources.in]
type = "kafka"
brokers = "{brokers}"
topic = "in"
end = "latest"
[sinks.out]
type = "discard"
"#
        ),
    );
    fails_without_hanging(&s).expect_stderr(&["source \"in\"", "in[0] offset 3", "header name is 70000 bytes", "65535"]);
}

/// Runs the pipeline `p.toml`; panics unless it ends (before the harness's
/// timeout) with a failure.
fn fails_without_hanging(s: &Scratch) -> Run {
    let run = s.weir(&RUN, T);
    assert!(run.code.is_some(), "the run hung (killed after {T:?}):\n{}", run.stderr);
    assert_ne!(run.code, Some(0), "the run succeeded:\n{}", run.stderr);
    run
}

fn rearm_pipeline(s: &Scratch, source: &str, times: u64) {
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "rearm"
[checkpoint]
interval = "200ms"
{source}
[[operators]]
name = "rearm"
plugin = "fixture-rearm"
config = {{ times = {times} }}
[sinks.out]
type = "file"
path = "out.jsonl"
"#
        ),
    );
}

/// Issue 16 item 4: an `on-timer` that re-registers its timer at the
/// current watermark fired forever at the end of input (567 M firings,
/// 13.5 GiB). Now timers fire in budgeted rounds, a timer re-armed at or
/// before itself 1000 times in a row is a livelock, and the run ends with
/// an error naming the operator.
#[test]
fn timer_rearmed_at_the_watermark_ends_the_run_with_an_error_at_end_of_input() {
    let s = Scratch::new();
    rearm_pipeline(&s, "[sources.in]\ntype = \"generator\"\ncount = 1000", 0);
    fails_without_hanging(&s).expect_stderr(&["operator `rearm`", "would fire forever", "end of input", "1000 times in a row"]);
}

/// Issue 16 item 4, mid-stream: the same operator silently stalled an
/// unbounded pipeline (no checkpoint completed or failed). Now it fails.
#[test]
fn timer_rearmed_at_the_watermark_mid_stream_fails_instead_of_stalling() {
    let s = Scratch::new();
    rearm_pipeline(&s, "[sources.in]\ntype = \"generator\"\nrate = 1000", 0);
    fails_without_hanging(&s).expect_stderr(&["operator `rearm`", "would fire forever", "at watermark"]);
}

/// The budget does not change what a well-behaved operator computes: a
/// timer re-armed a bounded number of times below the limit (900, many
/// rounds' worth) drains over several rounds at the end of input, and the
/// run succeeds.
#[test]
fn timers_rearmed_a_bounded_number_of_times_drain_over_several_rounds() {
    let s = Scratch::new();
    rearm_pipeline(&s, "[sources.in]\ntype = \"generator\"\ncount = 10", 900);
    let run = s.weir(&RUN, T);
    run.expect_code(0);
    let out = std::fs::read_to_string(s.path("out.jsonl")).expect("output");
    let last = out.lines().last().expect("some output");
    assert!(last.contains("{\\\"fired\\\":901}") || last.contains("{\"fired\":901}"), "last output line: {last}");
}

/// Issue 16, "the HTTP client's chunked-encoding parser": a chunk size of
/// `ffffffffffffffff` overflowed and panicked the async slot, and the stage
/// then waited forever for its record. Now the request fails with the
/// `max-response` bound and the record fails per `on-timeout`.
#[test]
fn http_chunk_size_overflow_fails_the_record_instead_of_hanging_the_stage() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                // Read the request head, then answer with a hostile chunk size.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let _ = (&conn).write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n");
                    }
                    line.clear();
                }
            });
        }
    });
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "hostile-http"
[checkpoint]
interval = "off"
[sources.events]
type = "generator"
count = 5
[[operators]]
name = "enrich"
plugin = "enrich-profile"
config = {{ lookup = "http", url = "http://127.0.0.1:{port}/profile/{{key}}" }}
async = {{ allow-http = ["127.0.0.1:{port}"], timeout = "10s", retry = {{ attempts = 1, backoff = "10ms" }}, on-timeout = "fail" }}
[sinks.out]
type = "discard"
"#
        ),
    );
    fails_without_hanging(&s).expect_stderr(&["operators[0]", "async.max-response"]);
}
