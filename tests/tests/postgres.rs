//! Issue 6: the PostgreSQL sink, exactly once, shown against a real
//! PostgreSQL server that each test starts for itself (initdb into a temp
//! dir, a free port, trust auth), the real `weir` binary and real Wasm
//! operators: crashes of weir (SIGKILL), crashes of PostgreSQL
//! (`pg_ctl stop -m immediate`), killed connections, upserts with repeated
//! keys and a replayed epoch, constraint violations, and a reader that must
//! never see rows of a checkpoint that is not complete.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weir_test_support::postgres::TempCluster;
use weir_tests::{kill_after, succeed, Lcg, Scratch};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

/// generator (events, ids 0..count) -> json-filter in Wasm -> postgres.
fn pipeline(pg: &TempCluster, count: u64, rate: u64, interval: &str, sink_extra: &str) -> String {
    format!(
        r#"
name = "pgload"
[checkpoint]
interval = "{interval}"
retain = 1000
[sources.events]
type = "generator"
count = {count}
rate = {rate}
seed = 7
[[operators]]
name = "parse"
plugin = "json-filter"
config = {{ project = ["id", "user", "amount", "ts", "pad"] }}
[sinks.db]
type = "postgres"
url = "{url}"
table = "events"
{sink_extra}
"#,
        url = pg.url()
    )
}

const EVENTS: &str = "CREATE TABLE events (id bigint NOT NULL, \"user\" text NOT NULL, amount integer NOT NULL, ts bigint NOT NULL, pad text, ck bigint)";
const MAPPING: &str = "columns = { id = \"id\", user = \"user\", amount = \"amount\", ts = \"ts\", pad = \"pad\", ck = \"@checkpoint\" }";

fn weir(s: &Scratch, args: &[&str]) -> Command {
    s.command(args)
}

fn run_to_end(s: &Scratch, env: &[(&str, &str)]) -> String {
    succeed(s.command(&RUN).envs(env.iter().copied()))
}

fn spawn(s: &Scratch) -> Child {
    weir(s, &RUN).stderr(Stdio::null()).spawn().expect("start weir")
}

/// Every id 0..count exactly once, every value as the generator made it, nothing dead-lettered.
fn assert_exact(pg: &TempCluster, count: u64) {
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events"),
        format!("{count}|{count}|0|{}", count - 1),
        "count(*) = count(distinct id) = {count}"
    );
    let wrong = pg.psql(
        "SELECT count(*) FROM events WHERE \"user\" <> 'user-' || lpad(((id * 7919 + 7) % 10000)::text, 4, '0') \
         OR amount <> id % 100 OR ts <> 1700000000000 + id OR pad IS DISTINCT FROM 'xxxxxxxxxxxx'",
    );
    assert_eq!(wrong, "0", "rows whose values differ from what the generator produced");
    assert_eq!(pg.psql("SELECT count(*) FROM weir_dead_letters"), "0");
}

#[test]
fn twenty_sigkills_of_weir_lose_and_duplicate_nothing() {
    let pg = TempCluster::start();
    pg.psql(EVENTS);
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(&pg, 1_000_000, 40_000, "200ms", MAPPING));
    let mut rng = Lcg(20261121);
    let mut killed = 0;
    for _ in 0..20 {
        let mut child = spawn(&s);
        kill_after(&mut child, Duration::from_millis(rng.next_ms(300, 1500)));
        killed += usize::from(child.try_wait().expect("reaped").is_some_and(|status| status.signal() == Some(9)));
    }
    assert_eq!(killed, 20, "every run was killed mid-way");
    let stderr = run_to_end(&s, &[]);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    assert_exact(&pg, 1_000_000);
}

#[test]
fn postgres_crashes_and_killed_connections_lose_and_duplicate_nothing() {
    let pg = Arc::new(TempCluster::start());
    pg.psql(EVENTS);
    let s = Scratch::new();
    let body = pipeline(&pg, 1_000_000, 40_000, "200ms", &format!("{MAPPING}\nreconnect = {{ initial-backoff = \"50ms\", max-backoff = \"1s\" }}"));
    s.pipeline("p.toml", &body);
    let child = weir(&s, &RUN).spawn().expect("start weir");
    let done = Arc::new(AtomicBool::new(false));
    let faults = {
        let (pg, done) = (pg.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = Lcg(6);
            let (mut stops, mut terminated) = (0, 0);
            // Wait for the sink to be connected.
            weir_test_support::wait_until(Duration::from_secs(60), || {
                pg.try_psql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'weir/%'").is_ok_and(|n| n.trim() != "0")
            });
            while (stops < 5 || terminated < 50) && !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.next_ms(30, 200)));
                if stops < 5 && rng.next_ms(0, 12) == 0 {
                    pg.stop_immediate();
                    std::thread::sleep(Duration::from_millis(rng.next_ms(200, 1200)));
                    pg.restart();
                    stops += 1;
                } else if terminated < 50 {
                    let killed = pg
                        .try_psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'weir/%'")
                        .unwrap_or_default();
                    if killed.trim().parse::<u32>().unwrap_or(0) > 0 {
                        terminated += 1;
                    }
                }
            }
            (stops, terminated)
        })
    };
    let out = child.wait_with_output().expect("weir");
    done.store(true, Ordering::Relaxed);
    let (stops, terminated) = faults.join().expect("fault thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weir failed: {stderr}");
    assert_eq!((stops, terminated), (5, 50), "all faults happened while weir ran");
    assert!(stderr.contains("retries in"), "the sink reported its reconnects: {stderr}");
    assert_exact(&pg, 1_000_000);
}

/// The text without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The user of generator record `n` with 1000 users and seed 7.
fn user(n: u64) -> String {
    format!("user-{:04}", (n * 7919 + 7) % 1000)
}

#[test]
fn upsert_is_last_write_wins_with_repeated_keys_and_a_replayed_epoch() {
    let pg = TempCluster::start();
    pg.psql("CREATE TABLE latest (\"user\" text PRIMARY KEY, id bigint NOT NULL, amount integer NOT NULL)");
    let count = 200_000;
    let s = Scratch::new();
    let body = pipeline(&pg, count, 200_000, "150ms", "mode = \"upsert\"\nkey = [\"user\"]\ncolumns = { user = \"user\", id = \"id\", amount = \"amount\" }")
        .replace("table = \"events\"", "table = \"latest\"")
        .replace("seed = 7", "seed = 7\nusers = 1000");
    s.pipeline("p.toml", &body);
    // Crash right after the sink committed checkpoint 3's rows: the restart
    // resumes from a checkpoint whose handle still lists them.
    let out = weir(&s, &RUN).env("WEIR_FAILPOINTS", "after-postgres-commit@3").output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("failpoint after-postgres-commit reached at checkpoint 3"), "{stderr}");
    let stderr = strip_ansi(&run_to_end(&s, &[("WEIR_LOG", "weir_connector_postgres=info")]));
    assert!(stderr.contains("skipping the replay") && stderr.contains("checkpoint=3"), "epoch 3 is replayed and skipped: {stderr}");
    let mut expected = BTreeMap::new();
    for n in 0..count {
        expected.insert(user(n), (n, n % 100));
    }
    let actual: BTreeMap<String, (u64, u64)> = pg
        .psql("SELECT \"user\", id, amount FROM latest")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_owned(), (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect();
    assert_eq!(actual.len(), 1000);
    assert!(actual == expected, "the table differs from last-write-wins");
}

#[test]
fn ten_constraint_violations_go_to_the_dead_letter_table() {
    let pg = TempCluster::start();
    pg.psql(&format!("{EVENTS}; ALTER TABLE events ADD CONSTRAINT no_1234 CHECK (id % 10000 <> 1234)"));
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(&pg, 100_000, 1_000_000, "300ms", MAPPING));
    run_to_end(&s, &[]);
    assert_eq!(pg.psql("SELECT count(*), count(DISTINCT id) FROM events"), "99990|99990");
    assert_eq!(pg.psql("SELECT count(*) FROM events WHERE id % 10000 = 1234"), "0");
    let dead = pg.psql(
        "SELECT convert_from(record_value, 'UTF8'), error, sqlstate, checkpoint > 0, position >= 0, target FROM weir_dead_letters ORDER BY id",
    );
    let lines: Vec<&str> = dead.lines().collect();
    assert_eq!(lines.len(), 10, "{dead}");
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split('|').collect();
        assert!(f[0].contains(&format!("\"id\":{}", i * 10_000 + 1234)), "{l}");
        assert!(f[1].contains("violates check constraint \"no_1234\""), "{l}");
        assert_eq!(&f[2..], ["23514", "t", "t", "public.events"], "{l}");
    }
}

#[test]
fn a_reader_never_sees_rows_of_an_uncommitted_checkpoint() {
    let pg = Arc::new(TempCluster::start());
    pg.psql(EVENTS);
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(&pg, 300_000, 50_000, "200ms", MAPPING));
    let child = weir(&s, &RUN).spawn().expect("start weir");
    let done = Arc::new(AtomicBool::new(false));
    let checkpoints = s.path("data/checkpoints/pgload");
    let reader = {
        let (pg, done) = (pg.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                // One statement, one snapshot: the rows and the progress row together.
                let Ok(row) = pg.try_psql(
                    "SELECT (SELECT count(*) FROM events), (SELECT coalesce(max(ck), 0) FROM events), \
                     (SELECT coalesce(max(checkpoint), 0) FROM weir_progress)",
                ) else {
                    continue;
                };
                let f: Vec<u64> = row.trim().split('|').map(|x| x.parse().unwrap()).collect();
                let complete = f[1] == 0 || checkpoints.join(f[1].to_string()).join("_manifest.json").is_file();
                seen.push((f[0], f[1], f[2], complete));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    let started = Instant::now();
    let out = child.wait_with_output().expect("weir");
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Rows per checkpoint in the final table, cumulated.
    let mut cumulative = BTreeMap::new();
    let mut total = 0;
    for l in pg.psql("SELECT ck, count(*) FROM events GROUP BY ck ORDER BY ck").lines() {
        let (ck, n) = l.split_once('|').unwrap();
        total += n.parse::<u64>().unwrap();
        cumulative.insert(ck.parse::<u64>().unwrap(), total);
    }
    assert_eq!(total, 300_000);
    let distinct: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.0).collect();
    assert!(distinct.len() >= 5, "the reader saw the table grow in steps over {:?}: {seen:?}", started.elapsed());
    for &(count, max_ck, progress, complete) in &seen {
        if count == 0 {
            continue;
        }
        assert!(complete, "the reader saw rows of checkpoint {max_ck} before it was complete");
        assert_eq!(count, cumulative[&max_ck], "the reader saw part of an epoch: {count} rows up to checkpoint {max_ck}");
        assert_eq!(max_ck, progress, "the rows and the progress row are published together");
    }
}

#[test]
fn a_table_that_does_not_fit_stops_the_start_naming_field_and_column() {
    let pg = TempCluster::start();
    pg.psql("CREATE TABLE events (id bigint, amount money, note text NOT NULL)");
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(&pg, 10, 1000, "1s", "columns = { id = \"id\", amount = \"amount\", colour = \"user\" }"));
    let out = weir(&s, &RUN).output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for needle in [
        "sinks.db",
        "columns.amount: column \"amount\" of public.events has type money",
        "columns.colour: table public.events has no column \"colour\"",
        "columns: column \"note\" of public.events is NOT NULL without a default",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}:\n{stderr}");
    }
    assert_eq!(pg.psql("SELECT count(*) FROM events"), "0");
    s.pipeline("p.toml", &pipeline(&pg, 10, 1000, "1s", "").replace("table = \"events\"", "table = \"evnts\""));
    let out = weir(&s, &RUN).output().expect("run weir");
    assert!(String::from_utf8_lossy(&out.stderr).contains("table: table \"evnts\" does not exist"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A server that accepts TCP connections only over TLS (`hostssl` in
/// pg_hba, a self-signed certificate): `tls = "disable"` is refused by the
/// server before any data flows, naming the sink and the server's reason;
/// `verify-full` against the system's authorities refuses the self-signed
/// certificate; `verify-full` with `tls-ca-file` and `require` deliver
/// every row.
#[test]
fn tls_modes_against_a_server_that_requires_tls() {
    let pg = TempCluster::start_tls();
    pg.psql(EVENTS);
    let s = Scratch::new();
    let run = |extra: &str| {
        s.pipeline("p.toml", &pipeline(&pg, 5_000, 1_000_000, "200ms", &format!("{MAPPING}\n{extra}")));
        weir(&s, &[RUN.as_slice(), &["--fresh"]].concat()).output().expect("run weir")
    };

    let out = run(r#"tls = "disable""#);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a plain connection must be refused:\n{stderr}");
    assert!(stderr.contains("sinks.db") && stderr.contains("no encryption"), "the error names the sink and pg_hba's reason:\n{stderr}");

    let out = run(r#"tls = "verify-full""#);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a self-signed certificate must not pass verify-full without tls-ca-file:\n{stderr}");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert_eq!(pg.psql("SELECT count(*) FROM events"), "0");

    let out = run(&format!("tls = \"verify-full\"\ntls-ca-file = \"{}\"", pg.ca_file().display()));
    assert!(out.status.success(), "verify-full with the server's CA:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pg.psql("SELECT count(*), count(DISTINCT id) FROM events"), "5000|5000");

    pg.psql("TRUNCATE events; DELETE FROM weir_progress");
    let out = run(r#"tls = "require""#);
    assert!(out.status.success(), "require (no certificate check):\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pg.psql("SELECT count(*), count(DISTINCT id) FROM events"), "5000|5000");
}

#[test]
fn lost_checkpoints_never_insert_the_rows_again() {
    let pg = TempCluster::start();
    pg.psql(EVENTS);
    let count = 20_000;
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(&pg, count, 1_000_000, "100ms", MAPPING));
    run_to_end(&s, &[]);
    assert_exact(&pg, count);
    // The checkpoints are gone (deleted, or a new disk): a fresh start
    // would insert every row a second time.
    std::fs::remove_dir_all(s.path("data/checkpoints/pgload")).unwrap();
    let out = weir(&s, &RUN).output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "the progress table weir_progress says this sink published the rows of checkpoint"
        ) && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert_exact(&pg, count);
}
