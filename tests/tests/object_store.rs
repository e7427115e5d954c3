//! Issue 21: the object storage sink, exactly once, shown with the real
//! `weir` binary writing to a local directory and to a real S3-compatible
//! server (`moto_server`, which each test starts on a free port): output
//! read back and compared record by record (Parquet through the parquet
//! crate), SIGKILLs of weir mid-upload, a server that hangs and comes back
//! mid-run, bad records and bad config.

use arrow_array::{Array, Int64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use weir_test_support::s3::Moto;
use weir_tests::{Lcg, Scratch, kill_after, succeed};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

/// 22:59:55 UTC on 2023-11-14: the first 5 000 records fall in hour 22,
/// the rest in hour 23, so partitioning is exercised.
const START: u64 = 1_700_002_795_000;

/// The generator's `events` record `n` (seed 0), as the sink must write it.
fn expected(n: u64) -> String {
    format!(
        r#"{{"id":{n},"user":"user-{:04}","amount":{},"ts":{},"pad":"xxxxxxxxxxxx"}}"#,
        (n * 7919) % 10_000,
        n % 100,
        START + n
    )
}

fn hour_of(n: u64) -> &'static str {
    if n < 5000 { "dt=2023-11-14/hour=22" } else { "dt=2023-11-14/hour=23" }
}

/// generator (events 0..count, at `rate`/s, checkpoints every `interval`) -> the sink.
fn pipeline(count: u64, rate: Option<u64>, interval: &str, sink: &str) -> String {
    let rate = rate.map(|r| format!("rate = {r}")).unwrap_or_default();
    format!(
        r#"
name = "objects"
[checkpoint]
interval = "{interval}"
retain = 1000
[sources.events]
type = "generator"
count = {count}
{rate}
start-timestamp = {START}
[sinks.out]
type = "object-store"
path = "dt={{date}}/hour={{hour}}"
{sink}
"#
    )
}

fn s3_sink(moto: &Moto, bucket: &str, extra: &str) -> String {
    format!(
        "url = \"s3://{bucket}/events\"\nendpoint = \"{}\"\npath-style = true\nretry = {{ initial-backoff = \"50ms\", max-backoff = \"500ms\" }}\n{extra}",
        moto.endpoint()
    )
}

fn weir(s: &Scratch) -> Command {
    let mut cmd = s.command(&RUN);
    cmd.env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test");
    cmd
}

/// The records of JSON-lines objects `(name, bytes)`, with each object's
/// partition checked against its records; by id, failing on a duplicate.
fn records_of_lines(objects: &[(String, Vec<u8>)]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for (name, bytes) in objects {
        for line in String::from_utf8(bytes.clone()).expect("UTF-8").lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {line:?}: {e}"));
            let id = v["id"].as_u64().expect("id");
            assert!(name.starts_with(hour_of(id)) || name.contains(&format!("/{}", hour_of(id))), "record {id} is in {name}");
            assert!(out.insert(id, line.to_owned()).is_none(), "record {id} appears twice (again in {name})");
        }
    }
    out
}

/// The same for Parquet objects, rebuilt as the JSON text of each row.
fn records_of_parquet(objects: &[(String, Vec<u8>)]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for (name, bytes) in objects {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone())).expect("a Parquet file").build().expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["id", "user", "amount", "ts", "pad"], "{name}");
            let int = |i: usize| batch.column(i).as_any().downcast_ref::<Int64Array>().expect("int64").clone();
            let text = |i: usize| batch.column(i).as_any().downcast_ref::<StringArray>().expect("string").clone();
            let (id, user, amount, ts, pad) = (int(0), text(1), int(2), int(3), text(4));
            for r in 0..batch.num_rows() {
                let n = id.value(r) as u64;
                assert!(name.contains(hour_of(n)), "record {n} is in {name}");
                let row = format!(
                    r#"{{"id":{n},"user":"{}","amount":{},"ts":{},"pad":"{}"}}"#,
                    user.value(r),
                    amount.value(r),
                    ts.value(r),
                    pad.value(r)
                );
                assert!(!pad.is_null(r));
                assert!(out.insert(n, row).is_none(), "record {n} appears twice (again in {name})");
            }
        }
    }
    out
}

fn assert_exact(records: &BTreeMap<u64, String>, count: u64) {
    assert_eq!(records.len() as u64, count, "records published");
    for (n, line) in records {
        assert_eq!(line, &expected(*n));
    }
}

/// Every file below `dir` (relative names, sorted) with its bytes; hidden
/// files (staging, temporaries) are returned too, so a test sees them.
fn local_objects(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((p.strip_prefix(root).unwrap().to_str().unwrap().to_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn s3_objects(moto: &Moto, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    moto.list(bucket, prefix).into_iter().map(|k| (k.clone(), moto.get(bucket, &k))).collect()
}

#[test]
fn local_directory_json_lines_and_parquet_read_back_exactly() {
    for (format, ext) in [("json-lines", "jsonl"), ("parquet", "parquet")] {
        let s = Scratch::new();
        // Small objects: every partition rolls several times.
        s.write("p.toml", pipeline(20_000, None, "100ms", &format!("url = \"out\"\nformat = \"{format}\"\nroll-size = \"256KiB\"")));
        succeed(&mut weir(&s));
        let objects = local_objects(&s.path("out"));
        assert!(objects.len() >= 4, "{:?}", objects.iter().map(|o| &o.0).collect::<Vec<_>>());
        for (name, _) in &objects {
            assert!(name.ends_with(&format!(".{ext}")) && name.contains("/part-00000-"), "{name}");
        }
        let records = if ext == "jsonl" { records_of_lines(&objects) } else { records_of_parquet(&objects) };
        assert_exact(&records, 20_000);
        // Nothing is left staged.
        let staged = local_objects(&s.path("data/object-store/objects/out"));
        assert!(staged.is_empty(), "{staged:?}");
    }
}

#[test]
fn s3_json_lines_and_parquet_exactly_with_declared_columns() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    for (format, extra) in [
        ("json-lines", String::new()),
        (
            "parquet",
            "columns = [{ name = \"id\", type = \"int64\", nullable = false }, { name = \"user\", type = \"string\" }, \
             { name = \"amount\", type = \"int64\" }, { name = \"ts\", type = \"int64\" }, { name = \"pad\", type = \"string\" }]"
                .to_owned(),
        ),
    ] {
        let s = Scratch::new();
        let prefix = format!("events/{format}");
        let sink = s3_sink(&moto, "lake", &format!("format = \"{format}\"\nroll-size = \"512KiB\"\n{extra}")).replace("s3://lake/events", &format!("s3://lake/{prefix}"));
        s.write("p.toml", pipeline(50_000, None, "200ms", &sink));
        succeed(&mut weir(&s));
        let objects: Vec<_> = s3_objects(&moto, "lake", &prefix).into_iter().map(|(k, v)| (k[prefix.len() + 1..].to_owned(), v)).collect();
        let records = if format == "json-lines" { records_of_lines(&objects) } else { records_of_parquet(&objects) };
        assert_exact(&records, 50_000);
    }
}

#[test]
fn sigkills_of_weir_mid_upload_publish_every_record_exactly_once() {
    let moto = Moto::start();
    moto.create_bucket("crash");
    let s = Scratch::new();
    // 300 k records at 60 k/s: about 5 s of work; small objects, so every
    // checkpoint uploads several and kills land between and during them.
    let sink = s3_sink(&moto, "crash", "format = \"parquet\"\nroll-size = \"64KiB\"\nupload-concurrency = 2");
    s.write("p.toml", pipeline(300_000, Some(60_000), "150ms", &sink));
    // First a crash exactly between two objects of one checkpoint.
    let out = weir(&s).env("WEIR_FAILPOINTS", "object-store-mid-publish@3").output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("failpoint object-store-mid-publish reached at checkpoint 3"), "{stderr}");
    let mut rng = Lcg(2126);
    let mut killed = 0;
    for _ in 0..8 {
        let mut child = weir(&s).stderr(Stdio::null()).spawn().expect("start weir");
        kill_after(&mut child, Duration::from_millis(rng.next_ms(400, 1500)));
        killed += usize::from(child.try_wait().expect("reaped").is_some_and(|status| status.signal() == Some(9)));
    }
    assert!(killed >= 6, "most runs were killed mid-way ({killed} of 8)");
    let stderr = succeed(&mut weir(&s));
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let objects: Vec<_> = s3_objects(&moto, "crash", "events").into_iter().map(|(k, v)| (k["events/".len()..].to_owned(), v)).collect();
    assert_exact(&records_of_parquet(&objects), 300_000);
}

#[test]
fn a_server_that_hangs_and_comes_back_mid_run_loses_and_duplicates_nothing() {
    let moto = Moto::start();
    moto.create_bucket("flaky");
    let s = Scratch::new();
    let sink = s3_sink(&moto, "flaky", "roll-size = \"128KiB\"\nrequest-timeout = \"1s\"");
    s.write("p.toml", pipeline(200_000, Some(40_000), "200ms", &sink));
    let child = weir(&s).stderr(Stdio::piped()).spawn().expect("start weir");
    let mut rng = Lcg(77);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(rng.next_ms(500, 1000)));
        moto.pause();
        std::thread::sleep(Duration::from_millis(rng.next_ms(1500, 3000)));
        moto.resume();
    }
    let out = child.wait_with_output().expect("weir ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Uploading an object failed; retrying"), "the sink retried: {stderr}");
    let objects: Vec<_> = s3_objects(&moto, "flaky", "events").into_iter().map(|(k, v)| (k["events/".len()..].to_owned(), v)).collect();
    assert_exact(&records_of_lines(&objects), 200_000);
}

#[test]
fn records_that_do_not_fit_are_dead_letters_or_an_error_naming_record_and_field() {
    let s = Scratch::new();
    s.write("in.txt", "{\"id\":1,\"n\":2}\nnot json\n{\"id\":\"x\",\"n\":3}\n{\"id\":4}\n");
    let body = |policy: &str| {
        format!(
            r#"
name = "bad"
[sources.in]
type = "file"
path = "in.txt"
[sinks.out]
type = "object-store"
url = "out"
format = "parquet"
columns = [{{ name = "id", type = "int64", nullable = false }}, {{ name = "n", type = "int64" }}]
bad-records = "{policy}"
"#
        )
    };
    s.write("p.toml", body("dead-letter"));
    succeed(&mut weir(&s));
    let objects = local_objects(&s.path("out"));
    let names: Vec<&str> = objects.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("_dead_letters/part-00000-") && names[0].ends_with("-0000.jsonl"), "{names:?}");
    assert!(names[1].starts_with("part-00000-") && names[1].ends_with("-0000.parquet"), "{names:?}");
    let letters: Vec<serde_json::Value> = weir_tests::json_lines(std::str::from_utf8(&objects[0].1).unwrap());
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["value"], "not json");
    assert!(letters[0]["error"].as_str().unwrap().contains("not JSON"), "{letters:?}");
    assert_eq!((letters[1]["field"].as_str(), letters[1]["error"].as_str()), (Some("id"), Some("expected int64, found a string \"x\"")));
    let rows = records_of_ids(&objects[1].1);
    assert_eq!(rows, [(1, Some(2)), (4, None)]);

    s.write("p.toml", body("fail"));
    let out = weir(&s).arg("--fresh").output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("sink `out` (object-store): record #2 of its batch") && stderr.contains("the value is not JSON"), "{stderr}");
}

fn records_of_ids(parquet: &[u8]) -> Vec<(i64, Option<i64>)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(parquet.to_vec())).unwrap().build().unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let id = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let n = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap().clone();
        for r in 0..batch.num_rows() {
            out.push((id.value(r), (!n.is_null(r)).then(|| n.value(r))));
        }
    }
    out
}

#[test]
fn bad_config_is_answered_with_the_connector_and_the_field() {
    let s = Scratch::new();
    s.write(
        "p.toml",
        r#"
name = "bad"
[sources.events]
type = "generator"
count = 1
[sinks.out]
type = "object-store"
url = "gs://bucket/x"
path = "dt={date}/{minute}"
format = "parquet"
roll-size = 0
columns = [{ name = "id", type = "int64" }, { name = "id", type = "string" }]
"#,
    );
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(2);
    for needle in [
        "sinks.out.url",
        "\"gs\" is not supported",
        "sinks.out.path",
        "unknown placeholder {minute}",
        "sinks.out.roll-size",
        "sinks.out.columns[1].name",
    ] {
        assert!(run.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", run.stderr);
    }
    s.write("p.toml", "name = \"bad\"\n[sources.events]\ntype = \"generator\"\n[sinks.out]\ntype = \"object-store\"\nurl = \"out\"\nformat = \"csv\"\n");
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    run.expect_code(2);
    assert!(run.stderr.contains("sinks.out") && run.stderr.contains("unknown variant `csv`"), "{}", run.stderr);
    // Missing credentials are named when the sink opens.
    s.write("p.toml", "name = \"bad\"\n[sources.events]\ntype = \"generator\"\ncount = 1\n[sinks.out]\ntype = \"object-store\"\nurl = \"s3://b/x\"\nsecret-access-key-env = \"WEIR_TEST_NO_SUCH_VAR\"\n");
    let out = s.command(&RUN).env("AWS_ACCESS_KEY_ID", "x").output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("secret-access-key-env: the environment variable WEIR_TEST_NO_SUCH_VAR is not set"), "{stderr}");
}
