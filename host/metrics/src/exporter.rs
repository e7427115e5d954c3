//! The Prometheus exporter's HTTP listener, bounded.
//!
//! `/metrics` is served by weir itself rather than by
//! `metrics-exporter-prometheus`'s listener, whose accept loop has no
//! connection cap and no timeouts and logs every failed accept: a crowd of
//! idle connections at the file-descriptor limit made it log millions of
//! lines a second. Here:
//!
//! * at most [`MAX_CONNECTIONS`] connections are served at once; more are
//!   closed as soon as they are accepted;
//! * a client has [`TIMEOUT`] to send its request headers (at most
//!   [`MAX_REQUEST`] bytes) and to take the answer; one request per
//!   connection;
//! * a failed accept (no file descriptor left) pauses the loop for
//!   [`AcceptErrors::PAUSE`] and is logged at most once per
//!   [`AcceptErrors::LOG_EVERY`], with the count of those not logged.
//!
//! [`AcceptErrors`] is shared with `weir serve`'s API server, so both
//! listeners report a crowd the same way.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections the exporter serves at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a client may take to send its request, and to read the answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request (line and headers) the exporter reads.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Rate-limited reports of a listener's failed accepts and refused
/// connections: the first at once, then at most one line per
/// [`Self::LOG_EVERY`] saying how many happened meanwhile.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// Shortest time between two log lines.
    pub const LOG_EVERY: Duration = Duration::from_secs(10);
    /// Pause after an accept failed for want of a resource.
    pub const PAUSE: Duration = Duration::from_millis(100);

    /// Reports for the listener named `listener` (`"the API"`).
    pub fn new(listener: &'static str) -> Self {
        Self { listener, logged_at: None, unlogged: 0 }
    }

    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.logged_at.is_some_and(|at| now.duration_since(at) < Self::LOG_EVERY) {
            self.unlogged += 1;
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Reports a failed accept; returns how long to pause before the next
    /// (zero for an error of the one connection, such as a reset).
    pub fn failed(&mut self, e: &std::io::Error) -> Duration {
        if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted | ErrorKind::WouldBlock) {
            return Duration::ZERO;
        }
        if let Some(more) = self.due() {
            tracing::error!(
                listener = self.listener,
                unlogged = more,
                "{} cannot accept connections: {e} ({more} more such errors since the last report); \
                 raise the open-file limit (ulimit -n) or find who holds the connections",
                self.listener
            );
        }
        Self::PAUSE
    }

    /// Reports a connection from `peer` closed at once because `cap`
    /// connections are open.
    pub fn refused(&mut self, peer: SocketAddr, cap: usize) {
        if let Some(more) = self.due() {
            tracing::warn!(
                listener = self.listener,
                %peer,
                unlogged = more,
                "{} refused a connection from {peer}: {cap} connections are open, the most it serves \
                 ({more} more refused since the last report)",
                self.listener
            );
        }
    }
}

/// Installs the Prometheus recorder and serves `/metrics` at `address`
/// from a thread of its own, with the bounds of this module.
pub fn serve_prometheus(address: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(address).map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("weir-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    let render = Arc::new(move || handle.render());
    std::thread::Builder::new()
        .name("weir-metrics".into())
        .spawn(move || accept_loop(listener, render))
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

fn accept_loop(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut errors = AcceptErrors::new("the metrics exporter");
    loop {
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                std::thread::sleep(errors.failed(&e));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            errors.refused(peer, MAX_CONNECTIONS);
            continue;
        }
        let (open2, render) = (open.clone(), render.clone());
        let spawned = std::thread::Builder::new().name("weir-metrics-conn".into()).spawn(move || {
            answer(conn, &*render);
            open2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads one request (headers within [`TIMEOUT`], at most [`MAX_REQUEST`]
/// bytes) and answers it; the connection is closed after.
fn answer(mut conn: TcpStream, render: &dyn Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    let _ = conn.set_write_timeout(Some(TIMEOUT));
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && !request.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || request.len() >= MAX_REQUEST || conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, kind, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics" | b"/") => ("200 OK", "text/plain; version=0.0.4", render()),
        (b"GET" | b"HEAD", _) => ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET /metrics\n".to_owned()),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = conn.write_all(head.as_bytes());
    if method != b"HEAD" {
        let _ = conn.write_all(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_reported_at_most_once_per_interval() {
        let mut r = AcceptErrors::new("test");
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        assert_eq!(r.failed(&e), AcceptErrors::PAUSE);
        assert!(r.logged_at.is_some());
        for _ in 0..1000 {
            r.failed(&e);
        }
        assert_eq!(r.unlogged, 1000, "the rest wait for the next report");
        assert_eq!(r.failed(&std::io::Error::from(ErrorKind::ConnectionAborted)), Duration::ZERO);
        assert_eq!(r.unlogged, 1000, "an aborted connection is no listener error");
    }

    /// Issue 16: connections beyond the cap are closed at once instead of
    /// holding a file descriptor each, and the exporter serves again as soon
    /// as the crowd is gone.
    #[test]
    fn a_crowd_cannot_hold_the_exporter() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || accept_loop(listener, Arc::new(|| "weir_up 1\n".to_owned())));
        let crowd: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| TcpStream::connect(address).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = TcpStream::connect(address).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        assert!(extra.read_to_end(&mut out).is_ok_and(|n| n == 0), "a connection over the cap is closed at once");
        drop(crowd);
        std::thread::sleep(Duration::from_millis(300));
        let mut c = TcpStream::connect(address).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("weir_up 1\n"), "{answer}");
    }
}
