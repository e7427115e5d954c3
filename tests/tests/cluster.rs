//! Issue 22: one pipeline spread over several `weir` processes through a
//! Kafka consumer group (`[cluster]`), with its checkpoints in a bucket.
//! tansu (the Kafka-protocol broker), PostgreSQL and an S3-compatible
//! server (moto) are real servers started by each test; every member is a
//! `weir run` process of its own, with its own working directory (its own
//! host, as far as weir can tell), sharing only the broker, the bucket and
//! the database.
//!
//! What tansu 0.6 allows here: members that join and members that leave
//! gracefully are rebalanced; a member killed with SIGKILL is never expired
//! by its group coordinator (see the architecture page), so the failover
//! and frozen-member tests need a broker this machine cannot install.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use weir_test_support::kafka::{Tansu, create_topic, produce_with};
use weir_test_support::postgres::TempCluster;
use weir_test_support::s3::Moto;
use weir_test_support::wait_until;
use weir_tests::Scratch;

const PARTITIONS: u32 = 6;
const USERS: u64 = 24;

/// `count` records from `first` on, keyed by user, placed by Kafka's
/// default (murmur2) partitioner as Java producers place them.
fn produce(brokers: &str, first: u64, count: u64) {
    let records = (first..first + count).map(|n| {
        let user = format!("user-{}", n % USERS);
        (Some(user.clone().into_bytes()), format!(r#"{{"id":{n},"user":"{user}","amount":{}}}"#, n % 10 + 1).into_bytes())
    });
    assert_eq!(produce_with(brokers, "events", records, &[("partitioner", "murmur2_random")]), count);
}

/// What every member runs: Kafka -> json-filter (keyed by user) -> a
/// running sum per user in keyed state (Wasm) -> PostgreSQL, exactly once.
fn pipeline(brokers: &str, pg: &TempCluster, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
name = "sums"
[cluster]
group = "sums-v1"
session-timeout = "6s"
{extra}
[checkpoint]
interval = "1s"
store = "s3://checkpoints/weir"
[checkpoint.s3]
endpoint = "{endpoint}"
path-style = true
credentials-file = "aws.ini"
request-timeout = "2s"
claim-timeout = "4s"
[sources.events]
type = "kafka"
brokers = "{brokers}"
topic = "events"
[[operators]]
name = "parse"
plugin = "json-filter"
config = {{ project = ["user", "amount"], key = "user" }}
[[operators]]
name = "sum"
plugin = "running-sum"
partition = "hash"
[sinks.db]
type = "postgres"
url = "{url}"
table = "sums"
columns = {{ user = "key", total = "sum" }}
"#,
        url = pg.url()
    )
}

/// One member: `weir run` in a directory of its own, its stderr kept.
struct Member {
    dir: Scratch,
    child: Child,
}

impl Member {
    fn start(pipeline: &str) -> Member {
        let dir = Scratch::new();
        dir.write("aws.ini", "aws_access_key_id = test\naws_secret_access_key = test\n");
        dir.pipeline("p.toml", pipeline);
        let log = std::fs::File::create(dir.path("stderr.log")).expect("log file");
        let child = dir
            .command(&["run", "--metrics-address", "off", "p.toml"])
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start weir");
        Member { dir, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("stderr.log")).unwrap_or_default()
    }

    /// The lanes this member runs, from its last notice about them.
    fn lanes(&self) -> Option<String> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("gave this member lanes") || l.contains("took lanes"))?;
        Some(line.rsplit_once("now: ").map_or_else(|| line.rsplit_once("(it runs ").map(|(_, r)| r.trim_end_matches(')').to_owned()).unwrap_or_default(), |(_, r)| r.trim_end_matches(')').to_owned()))
    }

    /// SIGTERM: the member stops its lanes with a final checkpoint and
    /// leaves the group; it must exit 0.
    fn leave(mut self) -> String {
        let sent = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success(), "SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let log = self.log();
                assert!(status.success(), "a member that leaves exits 0, got {status}:\n{log}");
                return log;
            }
            assert!(Instant::now() < deadline, "the member did not leave within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the members share: the broker (a topic of [`PARTITIONS`]
/// partitions), the database (an empty `sums` table) and the bucket.
struct Servers {
    _broker: Tansu,
    brokers: String,
    pg: TempCluster,
    moto: Moto,
}

impl Servers {
    fn start() -> Servers {
        let broker = Tansu::memory();
        let brokers = broker.brokers();
        create_topic(&brokers, "events", PARTITIONS as i32);
        let pg = TempCluster::start();
        pg.psql("CREATE TABLE sums (\"user\" text NOT NULL, total bigint NOT NULL)");
        let moto = Moto::start();
        moto.create_bucket("checkpoints");
        Servers { _broker: broker, brokers, pg, moto }
    }
}

fn rows(pg: &TempCluster) -> u64 {
    pg.try_psql("SELECT count(*) FROM sums").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Each user's running totals, as an independent reckoning of the input
/// makes them: the records of a user are in one partition, in order.
fn expected(count: u64) -> BTreeMap<String, Vec<i64>> {
    let mut sums: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for n in 0..count {
        let v = sums.entry(format!("user-{}", n % USERS)).or_default();
        let last = v.last().copied().unwrap_or(0);
        v.push(last + (n % 10 + 1) as i64);
    }
    sums
}

fn actual(pg: &TempCluster) -> BTreeMap<String, Vec<i64>> {
    let mut sums: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in pg.psql("SELECT \"user\" || ' ' || total FROM sums").lines() {
        let Some((user, total)) = line.trim().split_once(' ') else { continue };
        sums.entry(user.to_owned()).or_default().push(total.parse().expect("a total"));
    }
    for v in sums.values_mut() {
        v.sort_unstable();
    }
    sums
}

/// Test 2 of the issue: members join and leave a running pipeline; every
/// move hands a lane over whole (its keyed totals carry on where they
/// were), and the table ends equal to a single reckoning of the input: no
/// record lost, none written twice.
#[test]
fn members_that_join_and_leave_hand_their_lanes_over_whole() {
    let Servers { _broker, brokers, pg, moto } = Servers::start();
    let p = pipeline(&brokers, &pg, &moto.endpoint(), "");

    produce(&brokers, 0, 4000);
    let a = Member::start(&p);
    assert!(wait_until(Duration::from_secs(60), || rows(&pg) >= 500), "the first member wrote nothing:\n{}", a.log());
    assert_eq!(a.lanes().as_deref(), Some("[0, 1, 2, 3, 4, 5]"), "alone, a member runs every lane:\n{}", a.log());

    // A second member joins: some lanes move to it, the others keep going.
    let b = Member::start(&p);
    assert!(
        wait_until(Duration::from_secs(60), || b.lanes().is_some_and(|l| l != "[]") && a.lanes().is_some_and(|l| l != "[0, 1, 2, 3, 4, 5]")),
        "no lane moved to the new member:\n--- a\n{}\n--- b\n{}",
        a.log(),
        b.log()
    );
    produce(&brokers, 4000, 4000);

    // A third joins, then the first leaves gracefully: its lanes go to the
    // other two, from the final checkpoint it took as it stopped them.
    let c = Member::start(&p);
    assert!(wait_until(Duration::from_secs(60), || c.lanes().is_some_and(|l| l != "[]")), "no lane moved to the third member:\n{}", c.log());
    let a_log = a.leave();
    assert!(a_log.contains("took lanes"), "the leaving member says which lanes it gave up:\n{a_log}");
    produce(&brokers, 8000, 4000);

    let total = 12_000;
    let done = wait_until(Duration::from_secs(120), || rows(&pg) >= total);
    std::thread::sleep(Duration::from_secs(2));
    assert!(done && rows(&pg) == total, "{} rows for {total} records:\n--- b\n{}\n--- c\n{}", rows(&pg), b.log(), c.log());
    let (b_lanes, c_lanes) = (b.lanes().unwrap_or_default(), c.lanes().unwrap_or_default());
    assert_eq!(actual(&pg), expected(total), "each user's running totals, once each (lanes: b {b_lanes}, c {c_lanes})");
    b.leave();
    c.leave();
}

/// A key the source partition does not hold (a producer that placed keys
/// with another partitioner) would split a user's total over two lanes:
/// the lane refuses it, naming the key and both partitions, and the member
/// stops (exit 1) instead of publishing partial totals.
#[test]
fn a_key_in_the_wrong_partition_stops_the_member_with_a_message() {
    let Servers { _broker, brokers, pg, moto } = Servers::start();
    // librdkafka's default partitioner (CRC32) places keys elsewhere than
    // Kafka's murmur2 for most keys.
    let records = (0..200u64).map(|n| {
        let user = format!("user-{}", n % USERS);
        (Some(user.clone().into_bytes()), format!(r#"{{"id":{n},"user":"{user}","amount":1}}"#).into_bytes())
    });
    produce_with(&brokers, "events", records, &[("partitioner", "consistent")]);
    let mut a = Member::start(&pipeline(&brokers, &pg, &moto.endpoint(), ""));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = a.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the member did not stop:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = a.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("belongs in partition") && log.contains("but this lane reads partition") && log.contains("murmur2"), "{log}");
}

/// What cannot be spread over a group is refused before anything runs,
/// naming the section.
#[test]
fn a_cluster_pipeline_is_checked_at_start() {
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        r#"
name = "sums"
[cluster]
group = "g"
[sources.events]
type = "generator"
count = 10
[sinks.out]
type = "file"
path = "out.jsonl"
"#,
    );
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(30));
    run.expect_code(2).expect_stderr(&["cluster", "set [checkpoint] store", "sinks.out", "cannot yet run one instance per lane"]);
}
