//! The sink's settings: `[sinks.NAME] type = "http"`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use weir_connector::config::RetryConfig;

use crate::client::parse_url;

/// `[sinks.NAME]` with `type = "http"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSinkConfig {
    /// Where batches go: `http://` or `https://`.
    pub url: String,
    /// `POST` (default) or `PUT`.
    #[serde(default)]
    pub method: Method,
    /// How records are put in a request body.
    #[serde(default)]
    pub format: Format,
    /// How many records one request carries, at most.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Extra request headers (not `Host`, `Content-Length`, the
    /// idempotency header or `Authorization` with `bearer-token-env`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The environment variable holding a token sent as
    /// `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// The header carrying each batch's idempotency key.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Time for one request (connect, send, answer).
    #[serde(default = "default_request_timeout", deserialize_with = "weir_connector::config::duration")]
    pub request_timeout: Duration,
    /// Retrying requests that failed (no answer, 408, 425, 429, 5xx).
    #[serde(default)]
    pub retry: RetryConfig,
    /// What happens to a batch the server refuses (another 4xx), or that
    /// still fails after `retry.give-up-after`.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Where dead letters go (relative to the pipeline file).
    #[serde(default)]
    pub dead_letter_dir: Option<PathBuf>,
    /// `verify-full` is the default for https://; a PEM file of the
    /// authorities to trust instead of the system's.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Where each checkpoint's records wait until it completes.
    #[serde(default)]
    pub staging_dir: Option<PathBuf>,
    /// Whether the pipeline takes checkpoints (set by `prepare`).
    #[serde(skip)]
    pub checkpointing: bool,
}

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `POST`.
    #[default]
    Post,
    /// `PUT`.
    Put,
}

impl Method {
    /// As sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
        }
    }
}

/// A request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A JSON array of the records' values (`application/json`).
    #[default]
    Json,
    /// One value per line (`application/x-ndjson`).
    Ndjson,
}

impl Format {
    /// The `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

/// `batch.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BatchConfig {
    /// Records per request, at most.
    pub records: usize,
    /// Bytes of records per request, at most (a single larger record goes alone).
    #[serde(deserialize_with = "weir_connector::config::byte_size")]
    pub bytes: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { records: 500, bytes: 1 << 20 }
    }
}

/// After the retries, or on a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Write the batch, the status and the answer to `dead-letter-dir`,
    /// and go on.
    #[default]
    DeadLetter,
    /// Stop the pipeline (its records are sent again on restart).
    Fail,
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Headers weir sets itself.
const RESERVED: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// Whether `s` is an HTTP header name (an RFC 9110 token).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl HttpSinkConfig {
    /// Checks the config without I/O; every problem as `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| problems.push((field.to_owned(), message));
        match parse_url(&self.url) {
            Ok(t) if !t.tls && self.tls_ca_file.is_some() => bad("tls-ca-file", "only used with an https:// url".into()),
            Ok(_) => {}
            Err(e) => bad("url", e),
        }
        if self.batch.records == 0 {
            bad("batch.records", "must be at least 1".into());
        }
        if self.batch.bytes == 0 {
            bad("batch.bytes", "must be above 0".into());
        }
        if !is_token(&self.idempotency_header) {
            bad("idempotency-header", format!("{:?} is not a header name", self.idempotency_header));
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if !is_token(name) {
                bad(&format!("headers.{name}"), "is not a header name".into());
            } else if RESERVED.contains(&lower.as_str()) || lower == self.idempotency_header.to_ascii_lowercase() {
                bad(&format!("headers.{name}"), "is set by weir".into());
            } else if lower == "authorization" && self.bearer_token_env.is_some() {
                bad(&format!("headers.{name}"), "is set from `bearer-token-env`; set one of them".into());
            }
            if value.contains(['\r', '\n']) {
                bad(&format!("headers.{name}"), "holds a line break".into());
            }
        }
        if let Some(ca) = &self.tls_ca_file
            && !ca.is_file()
        {
            bad("tls-ca-file", format!("{} is not a file", ca.display()));
        }
        if self.request_timeout.is_zero() {
            bad("request-timeout", "must be above 0".into());
        }
        if self.retry.initial_backoff.is_zero() {
            bad("retry.initial-backoff", "must be above 0".into());
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            bad("retry.max-backoff", "must not be below retry.initial-backoff".into());
        }
        problems
    }

    /// The bearer token from `bearer-token-env`, if configured.
    pub fn bearer_token(&self) -> Result<Option<String>, String> {
        let Some(var) = &self.bearer_token_env else { return Ok(None) };
        match std::env::var(var) {
            Ok(t) if !t.contains(['\r', '\n']) => Ok(Some(t)),
            Ok(_) => Err(format!("bearer-token-env: the environment variable {var} holds a line break")),
            Err(_) => Err(format!("bearer-token-env: the environment variable {var} is not set (or not UTF-8)")),
        }
    }
}

/// `data/http/PIPELINE/SINK` below the pipeline file's directory.
pub fn default_staging_dir(base: &Path, pipeline: &str, sink: &str) -> PathBuf {
    base.join("data/http").join(pipeline).join(sink)
}

/// `data/http-dead-letters/PIPELINE/SINK` below the pipeline file's directory.
pub fn default_dead_letter_dir(base: &Path, pipeline: &str, sink: &str) -> PathBuf {
    base.join("data/http-dead-letters").join(pipeline).join(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> HttpSinkConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_every_problem_with_its_field() {
        let c = parse("url = \"http://localhost:8080/hook\"");
        assert_eq!((c.method, c.format, c.batch, c.on_failure), (Method::Post, Format::Json, BatchConfig::default(), OnFailure::DeadLetter));
        assert!(c.validate().is_empty());
        let c = parse(
            "url = \"ftp://x\"\nbatch = { records = 0 }\nidempotency-header = \"a b\"\nheaders = { Host = \"x\", \"X-A\" = \"1\\n2\" }",
        );
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["url", "batch.records", "idempotency-header", "headers.Host", "headers.X-A"]);
        assert!(toml::from_str::<HttpSinkConfig>("url = \"http://h\"\nmethod = \"GET\"").is_err());
    }
}
