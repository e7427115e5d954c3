//! Issue 21: Avro and protobuf values on Kafka, read and written by weir and
//! checked against the implementations the ecosystem uses (fastavro, and
//! Google's protobuf runtime with grpcio-tools' protoc), which
//! `tests/support/formats.py` drives: they make the records weir reads and
//! decode the records weir writes. The broker is tansu.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weir_test_support::kafka::{Tansu, consume, create_topic, produce};
use weir_tests::{Scratch, json_lines, part_files, repo};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];
const RECORDS: usize = 3000;

/// `python3 tests/support/formats.py ARGS` in `dir`; panics with its output
/// when it fails.
fn reference(dir: &Path, args: &[&str]) {
    let out = Command::new("python3").arg(repo().join("tests/support/formats.py")).args(args).current_dir(dir).output().expect("python3");
    assert!(
        out.status.success(),
        "formats.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values file formats.py reads and writes: a 4-byte big-endian length
/// before each value.
fn read_values(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("values file");
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push(data[at + 4..at + 4 + n].to_vec());
        at += 4 + n;
    }
    out
}

fn write_values(path: &Path, values: &[Vec<u8>]) {
    let mut data = Vec::new();
    for v in values {
        data.extend_from_slice(&(v.len() as u32).to_be_bytes());
        data.extend_from_slice(v);
    }
    std::fs::write(path, data).expect("write values");
}

fn schema(name: &str) -> String {
    repo().join("pipelines/schemas").join(name).display().to_string()
}

fn by_id(mut records: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    records.sort_by_key(|r| r["id"].as_i64().expect("an id"));
    records
}

#[test]
fn avro_and_protobuf_values_read_and_write_as_the_reference_libraries_do() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    for (kind, file, message) in [("avro", "order.avsc", ""), ("protobuf", "order.proto", "message = \"shop.Order\"")] {
        let s = Scratch::new();
        let schema = schema(file);
        let format = format!("format = \"{kind}\"\nschema-file = {schema:?}\n{message}\nframing = \"confluent\"\nschema-id = 42");
        reference(s.dir.path(), &["make", kind, &schema, &RECORDS.to_string(), "values.bin", "expected.jsonl"]);
        let expected = json_lines(&std::fs::read_to_string(s.path("expected.jsonl")).unwrap());
        assert_eq!(expected.len(), RECORDS);

        // Kafka (made by the reference library) -> weir -> JSON lines.
        let (input, output) = (format!("in-{kind}"), format!("out-{kind}"));
        create_topic(&brokers, &input, 4);
        create_topic(&brokers, &output, 1);
        let values = read_values(&s.path("values.bin"));
        produce(&brokers, &input, values.into_iter().map(|v| (None, v)));
        s.pipeline(
            "p.toml",
            &format!(
                r#"
name = "read-{kind}"
[sources.orders]
type = "kafka"
brokers = "{brokers}"
topic = "{input}"
end = "latest"
parallelism = 2
{format}
[sinks.out]
type = "file"
path = "out/part-{{subtask}}.jsonl"
"#
            ),
        );
        s.weir(&RUN, Duration::from_secs(300)).expect_code(0);
        let read: Vec<serde_json::Value> = part_files(&s.path("out")).iter().flat_map(|f| json_lines(&String::from_utf8_lossy(f))).collect();
        assert_eq!(read.len(), RECORDS, "{kind}: every value read once");
        let (read, want) = (by_id(read), by_id(expected.clone()));
        for (got, want) in read.iter().zip(&want) {
            assert_eq!(got, want, "{kind}: weir's JSON for a record differs from the reference library's");
        }

        // JSON lines -> weir -> Kafka, decoded by the reference library.
        s.pipeline(
            "p.toml",
            &format!(
                r#"
name = "write-{kind}"
[sources.lines]
type = "file"
path = "expected.jsonl"
[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "{output}"
{format}
"#
            ),
        );
        s.weir(&RUN, Duration::from_secs(300)).expect_code(0);
        let written = consume(&brokers, &output, RECORDS, Duration::from_secs(2), Duration::from_secs(120));
        assert_eq!(written.len(), RECORDS, "{kind}: every record written once");
        write_values(&s.path("written.bin"), &written.into_iter().map(|c| c.value).collect::<Vec<_>>());
        reference(s.dir.path(), &["check", kind, &schema, "written.bin", "expected.jsonl"]);
    }
}

#[test]
fn values_that_do_not_fit_are_named_and_only_dropped_when_asked() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    let s = Scratch::new();
    let schema = schema("order.avsc");
    reference(s.dir.path(), &["make", "avro", &schema, "3", "values.bin", "expected.jsonl"]);
    let mut values = read_values(&s.path("values.bin"));
    // A value cut short, between two good ones.
    let cut = values[1][..values[1].len() / 2].to_vec();
    values.insert(1, cut);
    create_topic(&brokers, "orders", 1);
    produce(&brokers, "orders", values.into_iter().map(|v| (None, v)));
    let pipeline = |bad_data: &str| {
        format!(
            r#"
name = "bad"
[sources.orders]
type = "kafka"
brokers = "{brokers}"
topic = "orders"
end = "latest"
format = "avro"
schema-file = {schema:?}
framing = "confluent"
{bad_data}
[sinks.out]
type = "file"
path = "out.jsonl"
"#
        )
    };
    s.pipeline("p.toml", &pipeline(""));
    let run = s.weir(&RUN, Duration::from_secs(120));
    assert_ne!(run.code, Some(0), "a value that does not decode stops the run");
    run.expect_stderr(&["cannot read the value at orders[0] offset 1 as avro: field ", "(at byte ", "bad-data = \"drop\""]);

    s.pipeline("p.toml", &pipeline("bad-data = \"drop\""));
    s.weir(&RUN, Duration::from_secs(120)).expect_code(0).expect_stderr(&["skipped the record at orders[0] offset 1"]);
    let read = json_lines(&std::fs::read_to_string(s.path("out.jsonl")).unwrap());
    let ids: Vec<i64> = read.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let want: Vec<i64> = json_lines(&std::fs::read_to_string(s.path("expected.jsonl")).unwrap()).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, want, "the good records around the dropped one, in order");

    // A record the schema cannot hold stops the sink, naming the field.
    s.write("bad.jsonl", "{\"id\":\"seven\",\"user\":\"u\"}\n");
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "bad-out"
[sources.lines]
type = "file"
path = "bad.jsonl"
[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "orders"
format = "avro"
schema-file = {schema:?}
"#
        ),
    );
    let run = s.weir(&RUN, Duration::from_secs(120));
    assert_ne!(run.code, Some(0));
    run.expect_stderr(&["sink \"out\" (kafka, format = \"avro\") cannot write record 0", "field id: expected long, found a string"]);

    // Settings: a missing schema, and a schema that does not compile, named with their keys.
    s.pipeline("p.toml", &format!("name = \"x\"\n[sources.k]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"orders\"\nformat = \"protobuf\"\n[sinks.out]\ntype = \"stdout\"\n"));
    let run = s.weir(&RUN, Duration::from_secs(60));
    assert_ne!(run.code, Some(0));
    run.expect_stderr(&["schema-file", "format = \"protobuf\" needs schema-file"]);
    s.write("broken.avsc", "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"Nope\"}]}");
    s.pipeline(
        "p.toml",
        &format!("name = \"x\"\n[sources.k]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"orders\"\nformat = \"avro\"\nschema-file = \"broken.avsc\"\n[sinks.out]\ntype = \"stdout\"\n"),
    );
    let run = s.weir(&RUN, Duration::from_secs(60));
    assert_ne!(run.code, Some(0));
    run.expect_stderr(&["broken.avsc: not a usable Avro schema: field R.a: unknown type \"Nope\""]);
}
