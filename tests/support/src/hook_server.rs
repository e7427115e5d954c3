//! A webhook receiver on std threads, for the HTTP sink's tests and
//! benchmark: it keeps every request it answered 2xx (its idempotency key
//! and body), can refuse bodies holding a marker (400), answer the next N
//! requests with 503 and `Retry-After: 0`, and be stopped and started again
//! on the same port (a receiver restart). As a benchmark's bare receiver
//! it may instead append each body to a file and fsync it before answering
//! (the durability the HTTP source promises, without anything else).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The `Idempotency-Key` header (empty when absent).
    pub key: String,
    /// Other headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Delivery>>,
    /// Requests answered, any status.
    requests: AtomicU64,
    /// Requests answered 2xx.
    accepted_count: AtomicU64,
    /// Keep no bodies (a benchmark's receiver).
    discard: AtomicBool,
    /// Requests still to answer with 503.
    fail_next: AtomicU32,
    /// Bodies holding this are refused with 400.
    refuse: Mutex<Option<String>>,
    /// The current listener generation: threads of an older one stop.
    generation: AtomicU64,
    stopped: AtomicBool,
    /// Each accepted body is appended here and fsynced before the answer.
    durable: Mutex<Option<std::fs::File>>,
}

/// The receiver; stops when dropped.
pub struct HookServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
}

impl HookServer {
    /// Starts on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = Self { port, shared: Arc::new(Shared::default()) };
        server.serve(listener);
        server
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let generation = shared.generation.load(Ordering::SeqCst);
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while shared.generation.load(Ordering::SeqCst) == generation {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || connection(stream, &shared, generation));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    /// Stops listening and drops open connections (a crash of the receiver).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.shared.stopped.store(false, Ordering::SeqCst);
        self.serve(listener);
    }

    /// Answers the next `n` requests with 503 and `Retry-After: 0`.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// Refuses (400) every body holding `marker`.
    pub fn refuse_containing(&self, marker: &str) {
        *self.shared.refuse.lock().unwrap() = Some(marker.to_owned());
    }

    /// Keeps no bodies from now on, only counts (for benchmarks).
    pub fn discard_bodies(&self) {
        self.shared.discard.store(true, Ordering::SeqCst);
    }

    /// Appends each accepted body to `path` and fsyncs it before answering
    /// (one request at a time, as a simple durable receiver does).
    pub fn persist_bodies(&self, path: &std::path::Path) {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the bodies file");
        *self.shared.durable.lock().unwrap() = Some(file);
    }

    /// Requests answered 2xx so far.
    pub fn accepted_count(&self) -> u64 {
        self.shared.accepted_count.load(Ordering::SeqCst)
    }

    /// The requests answered 2xx so far, in order (replays included).
    pub fn accepted(&self) -> Vec<Delivery> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Requests answered so far, any status.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Checks what an exactly-once sink delivered as JSON arrays of records
    /// with an `"id"` each: every request carries an idempotency key
    /// starting with `key_prefix` and `content-type: application/json`, a
    /// replay under a key sends the same body, no request holds more than
    /// `max_records` records, and no record arrived under two keys. Returns
    /// the ids (each once, by key) for the caller to count.
    pub fn records_once_by_key(&self, key_prefix: &str, max_records: usize) -> ByKey {
        let accepted = self.accepted();
        let mut by_key: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for d in &accepted {
            assert!(d.key.starts_with(key_prefix), "idempotency key {:?} does not start with {key_prefix:?}", d.key);
            assert_eq!(d.headers.iter().find(|(n, _)| n == "content-type").map(|(_, v)| v.as_str()), Some("application/json"));
            let first = by_key.entry(d.key.clone()).or_insert_with(|| d.body.clone());
            assert_eq!(first, &d.body, "a replay under key {} sends the same body", d.key);
        }
        let mut ids = BTreeSet::new();
        for body in by_key.values() {
            let batch = json_array_ids(body);
            assert!(batch.len() <= max_records, "a request holds {} records, more than the {max_records} a batch may", batch.len());
            for id in batch {
                assert!(ids.insert(id), "record {id} arrived under two keys");
            }
        }
        ByKey { ids, keys: by_key.len(), requests: accepted.len() }
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connection(stream: TcpStream, shared: &Shared, generation: u64) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if shared.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let (mut length, mut key, mut headers) = (0usize, String::new(), Vec::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else { return };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            match name.as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "idempotency-key" => key = value.clone(),
                _ => {}
            }
            headers.push((name, value));
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if shared.generation.load(Ordering::SeqCst) != generation {
            return; // stopped: drop the connection without an answer
        }
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let refused = shared.refuse.lock().unwrap().as_ref().is_some_and(|m| body.windows(m.len()).any(|w| w == m.as_bytes()));
        let failing = shared.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let answer: &[u8] = if failing {
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 4\r\n\r\nbusy"
        } else if refused {
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 15\r\n\r\npoison refused\n"
        } else {
            if let Some(f) = shared.durable.lock().unwrap().as_mut() {
                f.write_all(&body).and_then(|()| f.sync_data()).expect("the bodies file");
            }
            shared.accepted_count.fetch_add(1, Ordering::SeqCst);
            if !shared.discard.load(Ordering::SeqCst) {
                shared.accepted.lock().unwrap().push(Delivery { key, headers, body });
            }
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
        };
        if out.write_all(answer).is_err() {
            return;
        }
    }
}

/// What [`HookServer::records_once_by_key`] found.
#[derive(Debug)]
pub struct ByKey {
    /// Every record id, once.
    pub ids: BTreeSet<u64>,
    /// Distinct idempotency keys.
    pub keys: usize,
    /// Requests accepted, replays included.
    pub requests: usize,
}

/// The ids in a JSON-array body.
pub fn json_array_ids(body: &[u8]) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("a body is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v.as_array().expect("a JSON array").iter().map(|r| r["id"].as_u64().expect("an id")).collect()
}
