//! Harnesses for the external servers weir's tests and benchmarks run against.
//!
//! Each one starts a real server on a free port of 127.0.0.1 and stops it on drop, so a test
//! checks weir against the real thing, without Docker:
//!
//! - [`postgres`]: a throwaway PostgreSQL cluster (`initdb` in a temporary directory), plain or
//!   TLS-only.
//! - [`kafka`]: the `tansu` Kafka-compatible broker, and a producer and consumer that use
//!   rdkafka directly rather than weir's connector.
//! - [`delay_server`]: an HTTP service that answers after a delay, for async operators.
//! - [`s3`]: `moto` in server mode, an S3-compatible server, for the object storage sink.
//!
//! Used by the end-to-end tests (`tests/`), the connectors' integration tests and
//! `weir-bench`; no production crate depends on it. Helpers that run weir itself stay in
//! `weir-tests`.

pub mod delay_server;
pub mod hook_server;
pub mod kafka;
pub mod postgres;
pub mod s3;

use std::time::{Duration, Instant};

/// A TCP port that was free a moment ago, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Waits until `f` returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
