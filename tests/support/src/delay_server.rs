//! A small HTTP/1.1 server on std threads that answers profile lookups
//! after a configurable delay: the slow service async operators are tested
//! (and benchmarked) against. Keep-alive, one thread per connection.
//!
//! `GET /profile/KEY` answers `200 {"name":"KEY","tier":T}` after the
//! delay (plus up to `jitter` more, pseudo-random per request). A key told
//! to [`Inner::time_out`] N times hangs its first N requests (for
//! `hang`, far beyond any client timeout) before answering.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Shared {
    /// Requests still to hang, per key.
    hang: Mutex<HashMap<String, u32>>,
    /// Requests seen, per key.
    seen: Mutex<HashMap<String, u32>>,
    /// When each answered request was answered (since `start`).
    answered: Mutex<Vec<Duration>>,
    served: AtomicU64,
    stop: AtomicBool,
}

/// The server's state, shared with its threads.
pub struct Inner {
    delay: Duration,
    jitter: Duration,
    hang: Duration,
    start: Instant,
    shared: Shared,
}

/// The server; stops accepting when dropped.
pub struct DelayServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    inner: Arc<Inner>,
}

impl std::ops::Deref for DelayServer {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl DelayServer {
    /// Starts a server answering after `delay` (+ up to `jitter`).
    pub fn start(delay: Duration, jitter: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the delay server");
        let port = listener.local_addr().expect("address").port();
        let inner = Arc::new(Inner { delay, jitter, hang: Duration::from_secs(5), start: Instant::now(), shared: Shared::default() });
        let s = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        Self { port, inner }
    }
}

impl Inner {
    /// The first `n` requests for `key` hang instead of answering.
    pub fn time_out(&self, key: &str, n: u32) {
        self.shared.hang.lock().unwrap().insert(key.to_owned(), n);
    }

    /// Requests seen for `key` so far.
    pub fn requests_for(&self, key: &str) -> u32 {
        self.shared.seen.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Answered requests per second between the first and the last answer.
    pub fn rate(&self) -> f64 {
        let a = self.shared.answered.lock().unwrap();
        match (a.iter().min(), a.iter().max()) {
            (Some(first), Some(last)) if last > first => (a.len() - 1) as f64 / (*last - *first).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Forgets the answer times (between two measured runs).
    pub fn reset_rate(&self) {
        self.shared.answered.lock().unwrap().clear();
    }

    fn serve(&self, conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
        let mut writer = conn;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let mut length = 0usize;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((n, v)) = l.split_once(':')
                    && n.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let key = path.strip_prefix("/profile/").unwrap_or(&path).to_owned();
            let n = {
                let mut seen = self.shared.seen.lock().unwrap();
                let n = seen.entry(key.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let hang = {
                let mut h = self.shared.hang.lock().unwrap();
                match h.get_mut(&key) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        true
                    }
                    _ => false,
                }
            };
            if hang {
                std::thread::sleep(self.hang);
                return;
            }
            let extra = if self.jitter.is_zero() {
                Duration::ZERO
            } else {
                let x = (u64::from(n) ^ key.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))).wrapping_mul(0x9E3779B97F4A7C15);
                Duration::from_nanos(x % self.jitter.as_nanos().max(1) as u64)
            };
            std::thread::sleep(self.delay + extra);
            let tier = key.bytes().map(u32::from).sum::<u32>() % 3;
            let reply = format!("{{\"name\":\"{key}\",\"tier\":{tier}}}");
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
            if writer.write_all(resp.as_bytes()).is_err() {
                return;
            }
            self.shared.served.fetch_add(1, Ordering::Relaxed);
            self.shared.answered.lock().unwrap().push(self.start.elapsed());
        }
    }
}

impl Drop for DelayServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
