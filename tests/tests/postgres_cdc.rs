//! Issue 21: the PostgreSQL change data capture source, against a real
//! PostgreSQL 15 (`wal_level = logical`) each test starts for itself and
//! the real `weir` binary: the initial snapshot and every kind of change
//! with its JSON types; exactly-once into the PostgreSQL sink through
//! SIGKILLs of weir and an immediate stop of the database; the slot
//! confirmed only to completed checkpoints; and the errors a user meets.

use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use weir_test_support::postgres::TempCluster;
use weir_test_support::wait_until;
use weir_tests::{Lcg, Scratch, kill_after};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

fn spawn(s: &Scratch) -> Child {
    s.command(&RUN).spawn().expect("start weir")
}

fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("weir");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(s: &Scratch, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path(file))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn snapshot_then_inserts_updates_deletes_and_truncates_with_their_types() {
    let pg = TempCluster::start_logical();
    pg.psql("CREATE TABLE orders (id int PRIMARY KEY, note text, qty numeric, paid boolean, doc jsonb, at timestamptz)");
    pg.psql("INSERT INTO orders VALUES (1, 'first', 1.50, true, '{\"a\": [1]}', '2026-12-05 12:00:00+00'), (2, NULL, 'NaN', false, NULL, NULL)");
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "cdc"
[checkpoint]
interval = "200ms"
[sources.db]
type = "postgres-cdc"
url = "{}"
tables = ["orders"]
[sinks.out]
type = "file"
path = "out.jsonl"
"#,
            pg.url()
        ),
    );
    let child = spawn(&s);
    assert!(wait_until(Duration::from_secs(60), || lines(&s, "out.jsonl").len() >= 2), "the snapshot's two rows arrive: {}", stop(child));
    pg.psql("INSERT INTO orders (id, note) VALUES (3, 'say \"hi\"')");
    pg.psql("UPDATE orders SET qty = 7 WHERE id = 1");
    pg.psql("DELETE FROM orders WHERE id = 2");
    pg.psql("TRUNCATE orders");
    let ok = wait_until(Duration::from_secs(60), || lines(&s, "out.jsonl").len() >= 6);
    let stderr = stop(child);
    assert!(ok, "four changes after the snapshot: {:?}\n{stderr}", lines(&s, "out.jsonl"));
    let got = lines(&s, "out.jsonl");
    let ops: Vec<&str> = got.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["snapshot", "snapshot", "insert", "update", "delete", "truncate"]);
    assert_eq!(got[0]["table"], "public.orders");
    assert_eq!(
        got[0]["after"],
        serde_json::json!({"id": 1, "note": "first", "qty": 1.50, "paid": true, "doc": {"a": [1]}, "at": "2026-12-05 12:00:00+00"})
    );
    assert_eq!(got[1]["after"], serde_json::json!({"id": 2, "note": null, "qty": "NaN", "paid": false, "doc": null, "at": null}));
    assert_eq!(got[2]["after"]["note"], "say \"hi\"");
    assert_eq!((got[3]["after"]["id"].as_i64(), got[3]["after"]["qty"].as_i64()), (Some(1), Some(7)));
    assert_eq!((got[4]["before"].clone(), got[4]["after"].clone()), (serde_json::json!({"id": 2}), serde_json::Value::Null));
    assert_eq!(got[5]["tables"], serde_json::json!(["public.orders"]));
    // The slot is confirmed to a completed checkpoint's position, not beyond what was read.
    let confirmed = pg.psql("SELECT confirmed_flush_lsn > '0/0' FROM pg_replication_slots WHERE slot_name = 'weir_cdc_db'");
    assert_eq!(confirmed, "t", "the slot was confirmed after checkpoints completed");
    // WAL the published tables have no part in is released too: the slot
    // does not hold it once a checkpoint after it completes.
    pg.psql("CREATE TABLE unrelated (v int); INSERT INTO unrelated SELECT generate_series(1, 1000)");
    let written = pg.psql("SELECT pg_current_wal_lsn()");
    let child = spawn(&s);
    let released = wait_until(Duration::from_secs(60), || {
        pg.psql(&format!("SELECT confirmed_flush_lsn >= '{written}' FROM pg_replication_slots WHERE slot_name = 'weir_cdc_db'")) == "t"
    });
    let stderr = stop(child);
    assert!(released, "the slot moved past {written}: {}\n{stderr}", pg.psql("SELECT confirmed_flush_lsn FROM pg_replication_slots"));
    assert_eq!(lines(&s, "out.jsonl").len(), 6, "a restart reads no change twice");
}

/// Keys are what the changes were made with: `op|id|v`, one line per change.
const DST: &str = "CREATE TABLE dst (op text NOT NULL, lsn text NOT NULL, before jsonb, after jsonb)";

#[test]
fn sigkills_of_weir_and_a_database_crash_lose_and_duplicate_no_change() {
    let pg = Arc::new(TempCluster::start_logical());
    pg.psql("CREATE TABLE src (id int PRIMARY KEY, v int NOT NULL)");
    pg.psql(DST);
    pg.psql("INSERT INTO src SELECT -g, 0 FROM generate_series(1, 100) g");
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "cdcx"
[checkpoint]
interval = "300ms"
retain = 1000
[sources.db]
type = "postgres-cdc"
url = "{url}"
tables = ["public.src"]
reconnect = {{ initial-backoff = "50ms", max-backoff = "500ms" }}
[sinks.copy]
type = "postgres"
url = "{url}"
table = "dst"
columns = {{ op = "op", lsn = "lsn", before = "before", after = "after" }}
reconnect = {{ initial-backoff = "50ms", max-backoff = "500ms" }}
"#,
            url = pg.url()
        ),
    );
    // The writer starts once the snapshot is in: changes made before the
    // slot exists are part of the snapshot, not of the stream.
    let mut child = spawn(&s);
    let snapshot = wait_until(Duration::from_secs(60), || pg.try_psql("SELECT count(*) FROM dst").is_ok_and(|n| n.trim() == "100"));
    assert!(snapshot, "the snapshot's 100 rows arrive: {}", stop(child));
    // A writer: each transaction inserts three rows, updates one and deletes one (5 changes).
    const TXNS: u64 = 400;
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (pg, written) = (pg.clone(), written.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while i < TXNS {
                let sql = format!(
                    "BEGIN; INSERT INTO src VALUES ({a}, 0), ({b}, 0), ({c}, 0); UPDATE src SET v = 1 WHERE id = {a}; DELETE FROM src WHERE id = {b}; COMMIT",
                    a = 3 * i,
                    b = 3 * i + 1,
                    c = 3 * i + 2
                );
                // The database is down for a moment during the crash below:
                // try again, unless the commit made it before the crash.
                let done = pg.try_psql(&sql).is_ok()
                    || pg.try_psql(&format!("SELECT count(*) FROM src WHERE id = {}", 3 * i + 2)).is_ok_and(|n| n.trim() == "1");
                if done {
                    i += 1;
                    written.store(i, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let mut rng = Lcg(21);
    for round in 0..4 {
        if round == 1 {
            // The database crashes under a running weir, which reconnects.
            std::thread::sleep(Duration::from_millis(rng.next_ms(300, 1000)));
            pg.stop_immediate();
            std::thread::sleep(Duration::from_millis(500));
            pg.restart();
        }
        kill_after(&mut child, Duration::from_millis(rng.next_ms(1500, 3000)));
        assert_eq!(child.try_wait().expect("wait").and_then(|s| s.signal()), Some(9), "round {round}: weir was killed mid-run");
        child = spawn(&s);
    }
    writer.join().expect("writer");
    let expected = 100 + 5 * written.load(Ordering::Relaxed);
    let complete = wait_until(Duration::from_secs(90), || pg.try_psql("SELECT count(*) FROM dst").is_ok_and(|n| n.trim() == expected.to_string()));
    // Two more checkpoints: nothing may follow the last change.
    std::thread::sleep(Duration::from_secs(1));
    let stderr = stop(child);
    assert!(complete, "every change arrived: {} of {expected}\n{stderr}", pg.psql("SELECT count(*) FROM dst"));
    let distinct = pg.psql(
        "SELECT count(*), count(DISTINCT (op, coalesce(after->>'id', before->>'id'), after->>'v')) FROM dst",
    );
    assert_eq!(distinct, format!("{expected}|{expected}"), "each change exactly once");
    assert_eq!(pg.psql("SELECT count(*) FROM dst WHERE op = 'snapshot'"), "100");
    assert_eq!(pg.psql("SELECT count(*) FROM dst WHERE op = 'delete'"), TXNS.to_string());
}

#[test]
fn clear_errors_for_a_server_without_logical_wal_and_a_table_without_a_key() {
    let plain = TempCluster::start();
    plain.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let s = Scratch::new();
    let body = |url: String, table: &str| {
        format!("name = \"cdce\"\n[sources.db]\ntype = \"postgres-cdc\"\nurl = \"{url}\"\ntables = [\"{table}\"]\n[sinks.out]\ntype = \"stdout\"\n")
    };
    s.pipeline("p.toml", &body(plain.url(), "t"));
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("wal_level = logical"), "{stderr}");
    drop(plain);

    let pg = TempCluster::start_logical();
    pg.psql("CREATE TABLE keyless (v int)");
    s.pipeline("p.toml", &body(pg.url(), "keyless"));
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("tables[0]") && stderr.contains("REPLICA IDENTITY FULL"), "{stderr}");
    s.pipeline("p.toml", &body(pg.url(), "missing"));
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("table missing does not exist"), "{stderr}");
}

/// The replication connection over TLS: `verify-full` against the test
/// server's self-signed certificate reads the snapshot and the changes; a
/// plain connection is refused by the server and said so.
#[test]
fn tls_verify_full_streams_and_a_plain_connection_is_refused() {
    let pg = TempCluster::start_logical_tls();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)");
    pg.psql("INSERT INTO t VALUES (1)");
    let s = Scratch::new();
    let body = |tls: &str| {
        format!(
            "name = \"cdct\"\n[checkpoint]\ninterval = \"200ms\"\n[sources.db]\ntype = \"postgres-cdc\"\nurl = \"{}\"\ntables = [\"t\"]\n{tls}\n\
             [sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n",
            pg.url()
        )
    };
    s.pipeline("p.toml", &body("tls = \"disable\""));
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("source `db`") && stderr.contains("no encryption"), "{stderr}");
    s.pipeline("p.toml", &body(&format!("tls = \"verify-full\"\ntls-ca-file = \"{}\"", pg.ca_file().display())));
    let child = spawn(&s);
    assert!(wait_until(Duration::from_secs(60), || lines(&s, "out.jsonl").len() == 1), "the snapshot arrives: {}", stop(child));
    pg.psql("INSERT INTO t VALUES (2)");
    let ok = wait_until(Duration::from_secs(60), || lines(&s, "out.jsonl").len() == 2);
    let stderr = stop(child);
    assert!(ok, "the insert arrives over TLS: {:?}\n{stderr}", lines(&s, "out.jsonl"));
    assert_eq!(lines(&s, "out.jsonl")[1]["after"], serde_json::json!({"id": 2}));
}
