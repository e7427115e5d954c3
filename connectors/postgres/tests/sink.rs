//! The sink driven directly through the `Sink` trait against a real,
//! throwaway PostgreSQL cluster: the checkpoint protocol step by step.

use weir_connector::{BatchWriter, Committable, ConnectorContext, Sink};
use weir_connector_postgres::{PostgresSink, PostgresSinkConfig};
use weir_test_support::postgres::TempCluster;

fn config(pg: &TempCluster, spill: &std::path::Path, extra: &str) -> PostgresSinkConfig {
    let text = format!("url = {:?}\ntable = \"events\"\nspill-dir = {:?}\n{extra}", pg.url(), spill.display().to_string());
    toml::from_str(&text).unwrap()
}

fn ctx(subtask: u32) -> ConnectorContext {
    ConnectorContext::new("p", "db", subtask, 1)
}

fn batch(ids: std::ops::Range<u64>) -> (Vec<u8>, usize) {
    let mut w = BatchWriter::new();
    for i in ids.clone() {
        w.push(None, format!("{{\"id\":{i},\"name\":\"n{i}\"}}").as_bytes(), i as i64, &[]);
    }
    (w.finish(), ids.count())
}

#[test]
fn epochs_appear_on_commit_and_a_replay_is_skipped() {
    let pg = TempCluster::start();
    let spill = tempfile::tempdir().unwrap();
    pg.psql("CREATE TABLE events (id bigint, name text, ck bigint)");
    let c = config(&pg, spill.path(), "columns = { id = \"id\", name = \"name\", ck = \"@checkpoint\" }");
    let mut sink = PostgresSink::open(c.clone(), &ctx(0)).unwrap();
    sink.start(None).unwrap();
    let (b, n) = batch(0..1000);
    sink.write(&b, n).unwrap();
    let h1 = sink.pre_commit(1).unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM events"), "0", "nothing is visible before the commit");
    sink.commit(1, &h1).unwrap();
    let (b, n) = batch(1000..1500);
    sink.write(&b, n).unwrap();
    let h2 = sink.pre_commit(2).unwrap();
    // Records after the last barrier are dropped by close.
    let (b, n) = batch(1500..1600);
    sink.write(&b, n).unwrap();
    sink.close().unwrap();
    assert_eq!(pg.psql("SELECT count(*), count(DISTINCT id), max(ck) FROM events"), "1000|1000|1");
    let staged = spill.path().join("p/db");
    let names = files(&staged);
    assert!(names.len() == 1 && names[0].starts_with("0.2.") && names[0].ends_with(".sealed"), "only epoch 2 waits: {names:?}");
    // What a crash leaves: a half-written epoch and one sealed after the
    // checkpoint the run resumes from; and another subtask's file.
    for name in ["0.deadbeef.inprogress", "0.3.deadbeef.sealed", "1.3.deadbeef.sealed"] {
        std::fs::write(staged.join(name), [1, 2, 3]).unwrap();
    }
    // A restart from checkpoint 2: epoch 1 is replayed (skipped), epoch 2 published.
    let mut sink = PostgresSink::open(c, &ctx(0)).unwrap();
    sink.start(Some(&[Committable { checkpoint: 1, handle: h1 }, Committable { checkpoint: 2, handle: h2 }])).unwrap();
    assert_eq!(sink.counters().0, 1, "the replay of epoch 1 is skipped");
    assert_eq!(files(&staged), ["1.3.deadbeef.sealed"], "subtask 0's files are published or discarded");
    sink.close().unwrap();
    assert_eq!(pg.psql("SELECT count(*), count(DISTINCT id), max(ck) FROM events"), "1500|1500|2");
    assert_eq!(pg.psql("SELECT checkpoint FROM weir_progress WHERE pipeline = 'p' AND sink = 'db'"), "2");
}

/// The names of the files in `dir`, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn at_least_once_writes_a_partial_batch_after_max_delay_and_sets_bad_records_aside() {
    let pg = TempCluster::start();
    let spill = tempfile::tempdir().unwrap();
    pg.psql("CREATE TABLE events (id integer NOT NULL, name text)");
    let c = config(&pg, spill.path(), "delivery = \"at-least-once\"\nbatch = { rows = 1000, max-delay = \"50ms\" }");
    let mut sink = PostgresSink::open(c, &ctx(0)).unwrap();
    sink.start(None).unwrap();
    let (b, n) = batch(0..10);
    sink.write(&b, n).unwrap();
    // Fewer rows than batch.rows: they still appear, after max-delay, without a checkpoint.
    assert!(weir_test_support::wait_until(std::time::Duration::from_secs(10), || pg.psql("SELECT count(*) FROM events") == "10"));
    let mut w = BatchWriter::new();
    w.push(None, b"not json", 1, &[]);
    w.push(None, b"{\"id\":99999999999,\"name\":\"too big\"}", 2, &[]);
    w.push(None, b"{\"name\":\"no id\"}", 3, &[]);
    w.push(None, b"{\"id\":11,\"name\":\"fine\"}", 4, &[]);
    sink.write(&w.finish(), 4).unwrap();
    sink.pre_commit(1).unwrap();
    sink.close().unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM events"), "11");
    let dead = pg.psql("SELECT record_timestamp, error FROM weir_dead_letters ORDER BY record_timestamp");
    let lines: Vec<&str> = dead.lines().collect();
    assert_eq!(lines.len(), 3, "{dead}");
    assert!(lines[0].starts_with("1|the record's value is not a JSON object"), "{dead}");
    assert!(lines[1].starts_with("2|column \"id\" (integer) from field \"id\": 99999999999 is out of range for integer"), "{dead}");
    assert!(lines[2].starts_with("3|column \"id\": field \"id\" is missing or null, and the column is NOT NULL"), "{dead}");
}
