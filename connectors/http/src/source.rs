//! The HTTP source: webhooks in. Clients POST JSON or NDJSON; each request
//! is answered `202 Accepted` once its records are durable in the
//! [`spool`](crate::spool), and the pipeline reads the spool behind them.
//!
//! ```toml
//! [sources.hooks]
//! type = "http"
//! listen = "0.0.0.0:8090"
//! path = "/events"
//! bearer-token-env = "HOOKS_TOKEN"   # or hmac-secret-env = "HOOKS_SECRET"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use weir_connector::background::{self, Background};
use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Poll, Source};

use crate::config::is_token;
use crate::server::{self, Auth, Failure, Server};
use crate::spool::{Reader, Spool};

/// `[sources.NAME]` with `type = "http"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSourceConfig {
    /// The address to listen on, `HOST:PORT`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The request path records are posted to.
    #[serde(default = "default_path")]
    pub path: String,
    /// How request bodies are read.
    #[serde(default)]
    pub format: BodyFormat,
    /// The environment variable holding the token clients send as
    /// `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// The environment variable holding the secret of the HMAC-SHA256
    /// signature of each body, sent in `hmac-header`.
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// The header carrying the body's signature, as hex, optionally
    /// prefixed `sha256=` (GitHub's `X-Hub-Signature-256` style).
    #[serde(default = "default_hmac_header")]
    pub hmac_header: String,
    /// The header carrying the client's idempotency key.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// How long, at least, an idempotency key is remembered after its
    /// request was accepted (a retry within it is answered "duplicate").
    #[serde(default = "default_window", deserialize_with = "weir_connector::config::duration")]
    pub idempotency_window: Duration,
    /// The largest request body.
    #[serde(default = "default_max_body", deserialize_with = "weir_connector::config::byte_size")]
    pub max_body: u64,
    /// Bytes accepted but not yet covered by a completed checkpoint, at
    /// most; beyond it requests are answered `busy-status`.
    #[serde(default = "default_max_buffer", deserialize_with = "weir_connector::config::byte_size")]
    pub max_buffer: u64,
    /// The answer to a request that finds the buffer full: 503 or 429.
    #[serde(default = "default_busy_status")]
    pub busy_status: u16,
    /// The `Retry-After` sent with `busy-status`.
    #[serde(default = "default_retry_after", deserialize_with = "weir_connector::config::duration")]
    pub retry_after: Duration,
    /// Time to receive one request's body.
    #[serde(default = "default_request_timeout", deserialize_with = "weir_connector::config::duration")]
    pub request_timeout: Duration,
    /// Open connections, at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A PEM certificate chain: with `tls-key-file`, the source serves https.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls-cert-file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Where accepted requests wait for the pipeline (relative to the pipeline file).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Whether the pipeline takes checkpoints (set by `prepare`).
    #[serde(skip)]
    pub checkpointing: bool,
}

/// How a request body holds records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyFormat {
    /// By the request's `Content-Type`: `application/json` or
    /// `application/x-ndjson` (also `application/jsonl`, `application/x-jsonlines`).
    #[default]
    Auto,
    /// One JSON value; an array is one record per element.
    Json,
    /// One JSON value per line.
    Ndjson,
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_hmac_header() -> String {
    "X-Signature-256".into()
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_window() -> Duration {
    Duration::from_secs(600)
}
fn default_max_body() -> u64 {
    10 << 20
}
fn default_max_buffer() -> u64 {
    1 << 30
}
fn default_busy_status() -> u16 {
    503
}
fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}

/// `data/http-source/PIPELINE/SOURCE` below the pipeline file's directory.
pub fn default_spool_dir(base: &Path, pipeline: &str, source: &str) -> PathBuf {
    base.join("data/http-source").join(pipeline).join(source)
}

impl HttpSourceConfig {
    /// Checks the config without I/O; every problem as `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| problems.push((field.to_owned(), message));
        if let Err(e) = self.listen.parse::<std::net::SocketAddr>() {
            bad("listen", format!("{:?} is not HOST:PORT with an IP address ({e}); write e.g. \"0.0.0.0:8090\"", self.listen));
        }
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            bad("path", format!("{:?} is not a request path; write e.g. \"/events\"", self.path));
        }
        if self.bearer_token_env.is_some() && self.hmac_secret_env.is_some() {
            bad("hmac-secret-env", "set one of bearer-token-env and hmac-secret-env".into());
        }
        for (field, value) in [("hmac-header", &self.hmac_header), ("idempotency-header", &self.idempotency_header)] {
            if !is_token(value) {
                bad(field, format!("{value:?} is not a header name"));
            }
        }
        if self.max_body == 0 {
            bad("max-body", "must be above 0".into());
        }
        if self.max_buffer < self.max_body {
            bad("max-buffer", "must be at least max-body (one request must fit)".into());
        }
        if ![429, 503].contains(&self.busy_status) {
            bad("busy-status", format!("{} is neither 429 nor 503", self.busy_status));
        }
        if self.request_timeout.is_zero() {
            bad("request-timeout", "must be above 0".into());
        }
        if self.max_connections == 0 {
            bad("max-connections", "must be at least 1".into());
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => bad("tls-key-file", "is needed with tls-cert-file".into()),
            (None, Some(_)) => bad("tls-cert-file", "is needed with tls-key-file".into()),
            _ => {}
        }
        for (field, file) in [("tls-cert-file", &self.tls_cert_file), ("tls-key-file", &self.tls_key_file)] {
            if let Some(f) = file
                && !f.is_file()
            {
                bad(field, format!("{} is not a file", f.display()));
            }
        }
        problems
    }

    /// The authentication the config asks for, with its secret read from the environment.
    fn auth(&self, source: &str) -> Result<Auth, ConnectorError> {
        let read = |field: &str, var: &str| match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(ConnectorError::user(format!("source `{source}`: {field}: the environment variable {var} is not set (or empty, or not UTF-8)"))),
        };
        Ok(match (&self.bearer_token_env, &self.hmac_secret_env) {
            (Some(var), _) => Auth::Bearer(read("bearer-token-env", var)?),
            (None, Some(var)) => Auth::Hmac { secret: read("hmac-secret-env", var)?.into_bytes(), header: self.hmac_header.clone() },
            (None, None) => Auth::None,
        })
    }
}

/// The server thread.
struct ServerJob {
    server: Option<Server>,
    failure: Failure,
}

impl Background for ServerJob {
    fn run(&mut self) -> Result<(), ConnectorError> {
        self.server.take().map_or(Ok(()), Server::run)
    }

    fn died(&mut self, error: ConnectorError) {
        self.failure.set(error);
    }
}

/// The HTTP source of one pipeline.
#[derive(Debug)]
pub struct HttpSource {
    name: String,
    spool: Arc<Spool>,
    reader: Reader,
    checkpointing: bool,
    /// When the read offset was last committed (without checkpoints).
    last_commit: Instant,
    failure: Failure,
    shutdown: Option<server::Shutdown>,
    thread: Option<JoinHandle<()>>,
    /// The address the server listens on.
    local_addr: std::net::SocketAddr,
}

/// Version byte of a checkpointed position.
const POSITION_V1: u8 = 1;

fn now_ms() -> u64 {
    weir_connector::now_micros() / 1000
}

impl HttpSource {
    /// Opens the spool (recovering it), binds the listening socket and
    /// starts serving. Requests are accepted from here on; the pipeline
    /// reads them from the committed offset, or from where
    /// [`Source::restore`] says.
    pub fn open(config: &HttpSourceConfig, ctx: &ConnectorContext) -> Result<HttpSource, ConnectorError> {
        if ctx.parallelism > 1 {
            return Err(ConnectorError::user(format!(
                "source `{}`: an http source listens on one address, so it runs at parallelism 1, not {}; set its parallelism to 1",
                ctx.name, ctx.parallelism
            )));
        }
        let dir = config.spool_dir.clone().unwrap_or_else(|| default_spool_dir(Path::new("."), &ctx.pipeline, &ctx.name));
        let auth = config.auth(&ctx.name)?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(server::acceptor(cert, key).map_err(|e| ConnectorError::user(format!("source `{}`: {e}", ctx.name)))?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let spool = Arc::new(Spool::open(&dir, config.max_buffer, config.idempotency_window).map_err(|e| ConnectorError {
            message: format!("source `{}`: {}", ctx.name, e.message),
            ..e
        })?);
        let listener = std::net::TcpListener::bind(&config.listen).map_err(|e| {
            ConnectorError::external(format!("source `{}`: cannot listen on {} ({e}); is another program using the port?", ctx.name, config.listen), e)
        })?;
        let local_addr = listener.local_addr().map_err(|e| ConnectorError::external("cannot read the listening address", e))?;
        let failure = Failure::default();
        let (server, shutdown) = Server::new(listener, config, auth, tls, spool.clone(), &ctx.name, failure.clone())?;
        let thread = background::spawn(format!("http-{}", ctx.name), ServerJob { server: Some(server), failure: failure.clone() })?;
        tracing::info!(source = %ctx.name, "http source listening on {scheme}://{local_addr}{} (spool {})", config.path, dir.display());
        let committed = spool.bounds().2;
        Ok(HttpSource {
            name: ctx.name.clone(),
            reader: spool.reader(committed),
            spool,
            checkpointing: config.checkpointing,
            last_commit: Instant::now(),
            failure,
            shutdown: Some(shutdown),
            thread: Some(thread),
            local_addr,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    fn stop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn named(&self, e: ConnectorError) -> ConnectorError {
        ConnectorError { message: format!("source `{}`: {}", self.name, e.message), ..e }
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Source for HttpSource {
    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError> {
        if let Some(e) = self.failure.take() {
            return Err(self.named(e));
        }
        let before = self.reader.offset();
        self.reader
            .read(&self.spool, |entry| {
                out.extend_raw(entry.frames, entry.records as usize);
                out.len() < target_bytes
            })
            .map_err(|e| self.named(e))?;
        if !self.checkpointing && self.reader.offset() > before && self.last_commit.elapsed() >= Duration::from_millis(200) {
            // Without checkpoints what the pipeline has read is done with.
            self.spool.commit(self.reader.offset(), now_ms()).map_err(|e| self.named(e))?;
            self.last_commit = Instant::now();
        }
        Ok(if self.reader.offset() > before { Poll::Ready } else { Poll::Idle(Duration::from_millis(2)) })
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        let mut p = vec![POSITION_V1];
        p.extend_from_slice(&self.reader.offset().to_le_bytes());
        Ok(p)
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        let mut found = positions.iter().filter(|p| !p.is_empty());
        let Some(p) = found.next() else { return Ok(()) };
        if found.next().is_some() {
            return Err(ConnectorError::user(format!("source `{}`: the checkpoint holds positions of several http sources; it was taken with another pipeline", self.name)));
        }
        let offset = decode_position(p).ok_or_else(|| {
            ConnectorError::user(format!("source `{}`: the checkpoint's position is not an http source's; it was taken with another pipeline", self.name))
        })?;
        let (first, end, _) = self.spool.bounds();
        if offset < first || offset > end {
            return Err(ConnectorError::user(format!(
                "source `{}`: the checkpoint resumes at spool offset {offset}, but the spool {} holds {first}..{end}. \
                 Its files were removed or replaced since the checkpoint: restore them, or start the pipeline without restoring (--fresh)",
                self.name,
                self.spool.dir().display()
            )));
        }
        self.reader = self.spool.reader(offset);
        Ok(())
    }

    fn checkpoint_complete(&mut self, _checkpoint: u64, position: &[u8]) -> Result<(), ConnectorError> {
        let Some(offset) = decode_position(position) else { return Ok(()) };
        self.spool.commit(offset, now_ms()).map_err(|e| self.named(e))
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        self.stop();
        Ok(())
    }
}

fn decode_position(p: &[u8]) -> Option<u64> {
    match p {
        [POSITION_V1, rest @ ..] => Some(u64::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_problem_with_its_field() {
        let c: HttpSourceConfig = toml::from_str("").unwrap();
        assert_eq!((c.listen.as_str(), c.path.as_str(), c.format, c.busy_status), ("127.0.0.1:8090", "/", BodyFormat::Auto, 503));
        assert!(c.validate().is_empty());
        let c: HttpSourceConfig = toml::from_str(
            "listen = \"localhost\"\npath = \"events\"\nbearer-token-env = \"A\"\nhmac-secret-env = \"B\"\nhmac-header = \"a b\"\nmax-body = \"2MiB\"\nmax-buffer = \"1MiB\"\nbusy-status = 500\n\
             tls-cert-file = \"/no/such/cert.pem\"",
        )
        .unwrap();
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["listen", "path", "hmac-secret-env", "hmac-header", "max-buffer", "busy-status", "tls-key-file", "tls-cert-file"]);
    }
}
