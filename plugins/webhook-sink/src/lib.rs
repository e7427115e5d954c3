//! # webhook-sink: a sink written as a plugin
//!
//! POSTs records (JSON values) to one URL as JSON arrays of up to `batch`
//! records. With checkpoints, each epoch's requests are built when it is
//! sealed (`pre-commit`), kept in weir's checkpoint as the handle, and sent
//! when the checkpoint completes (`commit`), each with the header
//! `Idempotency-Key: weir-PIPELINE-SINK-SUBTASK-CHECKPOINT-N`. A restarted
//! pipeline sends the handles of its checkpoint again with the same keys
//! and bodies, so a receiver that deduplicates by key sees every record
//! exactly once. Without checkpoints it sends as batches fill up
//! (at-least-once).
//!
//! ```toml
//! [sinks.hook]
//! type = "wasm"
//! plugin = "webhook-sink"
//! allow-http = ["127.0.0.1:8080"]
//! config = { url = "http://127.0.0.1:8080/in", batch = 500 }
//! ```
//!
//! Failed requests (no answer, 5xx, 429) are retried `attempts` times with
//! a doubling backoff from `backoff-ms`; then the pipeline stops and is
//! restarted from its last checkpoint. A 4xx answer stops it naming the
//! request's key: the receiver refused the data, and sending it again will
//! not help.

use serde::Deserialize;
use weir_sdk_sink::{io, Error, Info, Records, Sink};

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where to POST (plain `http://`; its `host:port` must be in the
    /// section's `allow-http`).
    pub url: String,
    /// Most records in one request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Tries of one request before the pipeline stops.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the first retry, doubled for each further one (at most 5 s).
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// The header that carries the idempotency key.
    #[serde(default = "default_header")]
    pub idempotency_header: String,
}

fn default_batch() -> usize {
    500
}
fn default_attempts() -> u32 {
    8
}
fn default_backoff() -> u64 {
    100
}
fn default_header() -> String {
    "Idempotency-Key".to_owned()
}

/// Request bodies being built: JSON arrays of at most `batch` records.
#[derive(Debug, Default)]
struct Bodies {
    sealed: Vec<Vec<u8>>,
    open: Vec<u8>,
    in_open: usize,
}

impl Bodies {
    fn push(&mut self, value: &[u8], batch: usize) {
        self.open.push(if self.in_open == 0 { b'[' } else { b',' });
        self.open.extend_from_slice(value);
        self.in_open += 1;
        if self.in_open == batch {
            self.seal_open();
        }
    }

    fn seal_open(&mut self) {
        if self.in_open > 0 {
            self.open.push(b']');
            self.sealed.push(std::mem::take(&mut self.open));
            self.in_open = 0;
        }
    }

    /// Every body, the open one sealed: `[len u32 LE][body]...`.
    fn take_all(&mut self) -> Vec<u8> {
        self.seal_open();
        let mut handle = Vec::with_capacity(self.sealed.iter().map(|b| b.len() + 4).sum());
        for body in self.sealed.drain(..) {
            handle.extend_from_slice(&(body.len() as u32).to_le_bytes());
            handle.extend_from_slice(&body);
        }
        handle
    }
}

/// The bodies of a handle.
fn bodies(handle: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    let mut rest = handle;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| Error::user("a pre-commit handle is truncated"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(Error::user("a pre-commit handle is truncated"));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}

/// The sink.
#[derive(Debug)]
pub struct WebhookSink {
    config: Config,
    /// `weir-PIPELINE-SINK-SUBTASK`.
    key_prefix: String,
    checkpointing: bool,
    bodies: Bodies,
    /// Requests sent without checkpoints (part of their keys).
    sent: u64,
}

impl WebhookSink {
    /// Sends one body, retrying what may pass later.
    fn send(&self, key: &str, body: &[u8]) -> Result<(), Error> {
        let headers = [("Content-Type".to_owned(), "application/json".to_owned()), (self.config.idempotency_header.clone(), key.to_owned())];
        let mut wait = self.config.backoff_ms;
        let mut last = String::new();
        for attempt in 1..=self.config.attempts {
            match io::http("POST", &self.config.url, &headers, body) {
                Ok(r) if (200..300).contains(&r.status) => return Ok(()),
                Ok(r) if r.status == 429 || r.status >= 500 => last = format!("the receiver answered {}", r.status),
                Ok(r) => {
                    return Err(Error::user(format!(
                        "{} refused the request with key {key} ({} bytes) with status {}: {}",
                        self.config.url,
                        body.len(),
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    )));
                }
                Err(e) => last = e,
            }
            if attempt < self.config.attempts {
                std::thread::sleep(std::time::Duration::from_millis(wait));
                wait = (wait * 2).min(5_000);
            }
        }
        Err(Error::external(format!("POST {} with key {key} failed {} times; last: {last}", self.config.url, self.config.attempts)))
    }
}

impl Sink for WebhookSink {
    type Config = Config;

    fn open(config: Config, info: &Info) -> Result<Self, Error> {
        if !config.url.starts_with("http://") {
            return Err(Error::user(format!("config.url: {:?} must be a plain http:// URL", config.url)));
        }
        if config.batch == 0 || config.attempts == 0 {
            return Err(Error::user("config.batch and config.attempts must be at least 1"));
        }
        Ok(Self {
            key_prefix: format!("weir-{}-{}-{}", info.pipeline, info.name, info.subtask),
            checkpointing: info.checkpointing,
            config,
            bodies: Bodies::default(),
            sent: 0,
        })
    }

    fn write(&mut self, records: Records<'_>) -> Result<(), Error> {
        for r in records {
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(r.value) {
                return Err(Error::user(format!(
                    "a record is not JSON ({e}): {:?}; this sink sends JSON arrays",
                    String::from_utf8_lossy(&r.value[..r.value.len().min(80)])
                )));
            }
            self.bodies.push(r.value, self.config.batch);
        }
        if !self.checkpointing {
            for body in std::mem::take(&mut self.bodies.sealed) {
                self.sent += 1;
                self.send(&format!("{}-run-{}", self.key_prefix, self.sent), &body)?;
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Vec<u8>, Error> {
        Ok(self.bodies.take_all())
    }

    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), Error> {
        for (i, body) in bodies(handle)?.into_iter().enumerate() {
            self.send(&format!("{}-{checkpoint}-{i}", self.key_prefix), body)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        // With checkpoints the final one publishes the rest.
        if !self.checkpointing {
            let handle = self.bodies.take_all();
            for body in bodies(&handle)? {
                self.sent += 1;
                self.send(&format!("{}-run-{}", self.key_prefix, self.sent), body)?;
            }
        }
        Ok(())
    }
}

weir_sdk_sink::export_sink!(WebhookSink);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_arrays_of_at_most_batch_records_and_survive_the_handle() {
        let mut b = Bodies::default();
        for v in [&b"1"[..], b"{\"a\":2}", b"3"] {
            b.push(v, 2);
        }
        let handle = b.take_all();
        assert_eq!(bodies(&handle).unwrap(), [&b"[1,{\"a\":2}]"[..], b"[3]"]);
        assert!(bodies(&handle[..handle.len() - 1]).is_err(), "a truncated handle is an error");
        assert!(bodies(&b.take_all()).unwrap().is_empty(), "nothing left");
    }
}
