//! Captures a plugin's stdout/stderr: lines go to the host log (rate
//! limited), and the last few KiB are kept so a trap report can quote the
//! panic message.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

const TAIL: usize = 8 * 1024;
const MAX_LINES_LOGGED: u64 = 1000;

#[derive(Debug, Default)]
struct Inner {
    tail: Vec<u8>,
    line: Vec<u8>,
    lines: u64,
}

/// One captured stream of one instance.
#[derive(Debug, Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Inner>>,
    tag: Arc<str>,
    stream: &'static str,
}

impl CapturedOutput {
    pub(crate) fn new(tag: Arc<str>, stream: &'static str) -> Self {
        Self { inner: Arc::default(), tag, stream }
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().expect("output lock");
        inner.tail.extend_from_slice(bytes);
        if inner.tail.len() > 2 * TAIL {
            let cut = inner.tail.len() - TAIL;
            inner.tail.drain(..cut);
        }
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut inner.line);
                inner.lines += 1;
                if inner.lines <= MAX_LINES_LOGGED {
                    tracing::info!(plugin = %self.tag, stream = self.stream, "{}", String::from_utf8_lossy(&line));
                } else if inner.lines == MAX_LINES_LOGGED + 1 {
                    tracing::warn!(plugin = %self.tag, stream = self.stream, "plugin wrote more than {MAX_LINES_LOGGED} lines; further lines are not logged");
                }
            } else if inner.line.len() < 4096 {
                inner.line.push(b);
            }
        }
    }

    /// The last bytes written, as text.
    pub(crate) fn tail(&self) -> String {
        let inner = self.inner.lock().expect("output lock");
        let start = inner.tail.len().saturating_sub(TAIL);
        String::from_utf8_lossy(&inner.tail[start..]).trim().to_owned()
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
