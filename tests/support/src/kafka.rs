//! A real Kafka-protocol broker for tests, and an independent client.
//!
//! [`Tansu`] starts the `tansu` broker (an Apache-Kafka-compatible broker
//! written in Rust; `tests/run` installs it) on a free port and stops it on
//! drop. [`produce`] and [`consume`] talk to it with rdkafka's own API, not
//! through weir's connector, so a test checks the connector against a
//! second client instead of against itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message};

/// The `tansu` executable: `$TANSU`, else `tansu` on `PATH`, else
/// `~/.cargo/bin/tansu`.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("tansu")).find(|p| p.is_file())) {
        return p;
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
}

/// A running tansu broker.
pub struct Tansu {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    storage: String,
    /// The broker's log.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Tansu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tansu").field("port", &self.port).field("storage", &self.storage).finish()
    }
}

impl Tansu {
    /// A broker keeping everything in memory.
    pub fn memory() -> Self {
        Self::with_storage("memory://tansu/")
    }

    /// A broker on durable storage: tansu's SQLite engine (`libsql`
    /// feature), on a file in the broker's temp dir, so a killed and
    /// restarted broker keeps its topics, records and group offsets.
    pub fn durable() -> Self {
        // tansu opens `sqlite://NAME` relative to its working directory,
        // which is the broker's temp dir.
        Self::with_storage("sqlite://tansu.db")
    }

    /// A broker on the given storage engine URL, run in its own temp dir.
    pub fn with_storage(storage: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut t = Self { child: None, port: crate::free_port(), storage: storage.to_owned(), log: dir.path().join("tansu.log"), _dir: dir };
        t.start();
        t
    }

    /// `bootstrap.servers` for clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the broker on the same port and storage, and
    /// waits until it answers metadata requests.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("broker log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &self.storage])
            .env("RUST_LOG", "warn")
            .current_dir(self._dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); `bash tests/run` installs it", tansu_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("tansu exited at start ({status}):\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let c: BaseConsumer = config(&self.brokers()).create().expect("client");
                if c.fetch_metadata(None, Duration::from_secs(2)).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "tansu did not start within 30 s:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("log_level", "3");
    c
}

/// Creates a topic.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create().expect("admin client");
    let rt = std::thread::spawn({
        let topic = topic.to_owned();
        move || {
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
            futures_lite_block_on(admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
        }
    });
    let results = rt.join().expect("admin thread").expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Polls a future to completion on this thread (rdkafka's admin futures
/// are driven by librdkafka's own threads; they only need waking).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// Produces `(key, value)` records (round robin over partitions when the key
/// is `None`) and waits for every acknowledgement.
pub fn produce(brokers: &str, topic: &str, records: impl IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>) -> u64 {
    produce_with(brokers, topic, records, &[])
}

/// [`produce`] with extra producer properties.
pub fn produce_with(brokers: &str, topic: &str, records: impl IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>, properties: &[(&str, &str)]) -> u64 {
    let mut c = config(brokers);
    c.set("linger.ms", "20").set("batch.size", "1000000").set("enable.idempotence", "true").set("sticky.partitioning.linger.ms", "0");
    for (k, v) in properties {
        c.set(*k, *v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = c.create().expect("producer");
    let mut n = 0;
    for (key, value) in records {
        let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).payload(&value);
        if let Some(k) = &key {
            rec = rec.key(k);
        }
        send(&producer, rec);
        n += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("all records acknowledged");
    n
}

/// Sends `rec`, waiting while the producer's queue is full.
fn send(producer: &ThreadedProducer<DefaultProducerContext>, mut rec: BaseRecord<'_, Vec<u8>, Vec<u8>>) {
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Produces keyed records with explicit timestamps (epoch ms), in order;
/// a `None` value is a tombstone (a null payload, as log compaction and
/// changelogs use it). Waits for every acknowledgement.
pub fn produce_timed(brokers: &str, topic: &str, records: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>, i64)>) -> u64 {
    let mut c = config(brokers);
    c.set("linger.ms", "20").set("batch.size", "1000000").set("enable.idempotence", "true");
    let producer: ThreadedProducer<DefaultProducerContext> = c.create().expect("producer");
    let mut n = 0;
    for (key, value, ts) in records {
        let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).key(&key).timestamp(ts);
        if let Some(v) = &value {
            rec = rec.payload(v);
        }
        send(&producer, rec);
        n += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("all records acknowledged");
    n
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: BTreeMap<String, Vec<u8>>,
}

/// Reads every partition of `topic` from the beginning with
/// `isolation.level=read_committed`, until `expected` records arrived and
/// nothing more came for `quiet`, or `timeout` passed.
pub fn consume(brokers: &str, topic: &str, expected: usize, quiet: Duration, timeout: Duration) -> Vec<Consumed> {
    use rdkafka::message::Headers;
    let c: BaseConsumer = config(brokers)
        .set("group.id", "weir-test-verifier")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let started = Instant::now();
    let mut last = Instant::now();
    while started.elapsed() < timeout && !(out.len() >= expected && last.elapsed() >= quiet) {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                out.push(Consumed { partition: m.partition(), offset: m.offset(), key: m.key().map(<[u8]>::to_vec), value: m.payload().unwrap_or_default().to_vec(), headers });
            }
            Some(Err(e)) => eprintln!("verifier: {e}"),
            None => {}
        }
    }
    out
}

/// Reads `expected` records of `topic` (every partition, from the
/// beginning) and returns, for each, the time from its `CreateTime`
/// timestamp to its arrival here, in microseconds: the latency a bare
/// consumer sees, the floor for a pipeline's. Gives up after `timeout`.
pub fn consume_latencies(brokers: &str, topic: &str, expected: usize, properties: &[(&str, &str)], timeout: Duration) -> Vec<u64> {
    let mut cfg = config(brokers);
    cfg.set("group.id", "weir-test-latency").set("enable.auto.commit", "false");
    for (k, v) in properties {
        cfg.set(*k, *v);
    }
    let c: BaseConsumer = cfg.create().expect("consumer");
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::with_capacity(expected);
    let started = Instant::now();
    while out.len() < expected && started.elapsed() < timeout {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
            let created_us = m.timestamp().to_millis().unwrap_or(0).max(0) as u64 * 1000;
            out.push(now_us.saturating_sub(created_us));
        }
    }
    out
}
