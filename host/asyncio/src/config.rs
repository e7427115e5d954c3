//! The pipeline-file settings: an operator's `async` table and the
//! pipeline's `[connections.NAME]` tables. Validation is pure (no I/O);
//! every problem is a `(field, message)` pair the pipeline parser prefixes
//! with the table's path.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use weir_connector::config::{ByteSize, DurationStr};

/// Most slots one subtask may run (each is a plugin instance; the engine's
/// instance pool holds 1000).
pub const MAX_CAPACITY: usize = 512;

/// Most slots (capacity x parallelism, over every async operator) one
/// pipeline may run: the engine's instance pool holds 1000 instances per
/// host, and batch operators and hot-reload validation need some.
pub const MAX_SLOTS_PER_PIPELINE: usize = 768;

/// A pipeline's `[connections.NAME]` tables, as the runtime hands them to
/// connectors that are plugins (through `weir_connector::services`).
#[derive(Debug, Clone, Default)]
pub struct Connections(pub BTreeMap<String, ConnectionConfig>);

/// In which order results leave the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputMode {
    /// In input order: a slow record holds back the ones after it.
    #[default]
    Ordered,
    /// As they complete, but never across a watermark or a checkpoint barrier.
    Unordered,
}

/// What happens to a record that still fails (times out or errs) after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    /// Send it to the operator's `dead-letter` sink with the reason; the job goes on.
    #[default]
    DeadLetter,
    /// Fail the pipeline, naming the record.
    Fail,
}

/// `async.retry`: how often a failed or timed-out record is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RetryConfig {
    /// Retries after the first attempt (0: none).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: DurationStr,
    /// Longest wait between retries.
    pub max_backoff: DurationStr,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { attempts: 3, backoff: DurationStr(Duration::from_millis(50)), max_backoff: DurationStr(Duration::from_secs(2)) }
    }
}

impl RetryConfig {
    /// The wait before retry number `n` (from 0): `backoff * 2^n`, capped.
    pub fn delay(&self, n: u32) -> Duration {
        let d = self.backoff.0.saturating_mul(1u32 << n.min(20));
        d.min(self.max_backoff.0)
    }
}

/// An operator's `async` table: run its plugin (world
/// `weir:plugin/async-operator`) in slots.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AsyncConfig {
    /// Records in flight at once per subtask (= plugin instances per subtask).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// `ordered` or `unordered`.
    #[serde(default)]
    pub output: OutputMode,
    /// Longest time one attempt at one record may take, I/O included.
    #[serde(default = "default_timeout")]
    pub timeout: DurationStr,
    /// Retries of failed and timed-out records.
    #[serde(default)]
    pub retry: RetryConfig,
    /// What to do with a record that fails after its retries.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// The sink that receives records that failed after their retries.
    pub dead_letter: Option<String>,
    /// `host:port` (or `host`, meaning port 80) the plugin may call over HTTP.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Names of `[connections.*]` the plugin may use (`sql`, `kv-get`).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Largest HTTP response body handed to the plugin.
    #[serde(default = "default_max_response")]
    pub max_response: ByteSize,
}

fn default_capacity() -> usize {
    16
}

fn default_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(5))
}

/// The default `max-response` of a table that grants `async-io`.
pub fn default_max_response() -> ByteSize {
    ByteSize(1 << 20)
}

/// Checks the grant keys every table that grants `async-io` has (an async
/// operator's `async` table, a plugin source's or sink's section):
/// `allow-http` and `max-response`. `connections` are checked against the
/// pipeline's `[connections.*]` where the table's references are.
pub fn check_grants(allow_http: &[String], max_response: ByteSize) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (i, h) in allow_http.iter().enumerate() {
        if let Err(m) = parse_host_port(h) {
            problems.push((format!("allow-http[{i}]"), m));
        }
    }
    if max_response.0 == 0 {
        problems.push(("max-response".into(), "must be more than 0 (the largest HTTP response or query result handed to the plugin)".into()));
    }
    problems
}

impl AsyncConfig {
    /// Checks the table on its own (no I/O); see also [`AsyncConfig::check_refs`].
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            problems.push(("capacity".into(), format!("must be between 1 and {MAX_CAPACITY} (records in flight per subtask)")));
        }
        if self.timeout.0.is_zero() {
            problems.push(("timeout".into(), "must be more than 0, e.g. \"1s\"".into()));
        }
        if self.retry.backoff.0.is_zero() && self.retry.attempts > 0 {
            problems.push(("retry.backoff".into(), "must be more than 0 when retry.attempts is set".into()));
        }
        if self.retry.max_backoff.0 < self.retry.backoff.0 {
            problems.push(("retry.max-backoff".into(), "must not be below retry.backoff".into()));
        }
        if self.retry.attempts > 20 {
            problems.push(("retry.attempts".into(), "at most 20 retries".into()));
        }
        if self.on_timeout == OnTimeout::DeadLetter && self.dead_letter.is_none() {
            problems.push((
                "dead-letter".into(),
                "missing: records that still fail after their retries go to a dead-letter sink; name one (dead-letter = \"failed\" with a [sinks.failed] table), or set on-timeout = \"fail\" to stop the pipeline instead".into(),
            ));
        }
        problems.extend(check_grants(&self.allow_http, self.max_response));
        problems
    }

    /// Checks the names this table refers to: connections and the dead-letter sink.
    pub fn check_refs(&self, connections: &BTreeMap<String, ConnectionConfig>, declared_connections: &[String], sinks: &[String]) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (i, c) in self.connections.iter().enumerate() {
            if !connections.contains_key(c) && !declared_connections.contains(c) {
                let known = if declared_connections.is_empty() { "the pipeline has no [connections.*] tables".to_owned() } else { format!("defined: {}", declared_connections.join(", ")) };
                problems.push((format!("connections[{i}]"), format!("no connection {c:?}; {known}")));
            }
        }
        if let Some(d) = &self.dead_letter
            && !sinks.contains(d)
        {
            problems.push(("dead-letter".into(), format!("no sink {d:?}; add a [sinks.{d}] table (a file, kafka or postgres sink, say) to receive the failed records")));
        }
        problems
    }
}

/// `host:port` with port 80 by default.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() || s.contains('/') || s.contains("://") {
        return Err(format!("{s:?} is not host or host:port (write \"api.example.com:8080\", without a scheme or path)"));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => p
            .parse::<u16>()
            .map(|p| (h.to_ascii_lowercase(), p))
            .map_err(|_| format!("{s:?}: the port {p:?} is not a number between 0 and 65535")),
        _ => Ok((s.to_ascii_lowercase(), 80)),
    }
}

/// How a connection reaches PostgreSQL (the same keys as the postgres sink).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresConnection {
    /// `postgres://user@host:port/db` (no password: use `password-env` or `password-file`).
    pub url: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (first line), relative to the pipeline file.
    pub password_file: Option<PathBuf>,
    /// Most connections one operator subtask opens (default: its capacity, at most 64).
    pub max_connections: Option<usize>,
    /// Longest time to establish a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: DurationStr,
    /// `disable` (default), `require` or `verify-full`, as for the sink.
    #[serde(default)]
    pub tls: weir_connector_postgres::config::TlsMode,
    /// `verify-full`: PEM file of the authorities to trust, relative to
    /// the pipeline file (default: the system's).
    pub tls_ca_file: Option<PathBuf>,
}

fn default_connect_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(10))
}

/// The table part of `type = "postgres-kv"` (the rest is a
/// [`PostgresConnection`]): a key-value view of one table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvTable {
    /// The table (optionally schema-qualified).
    pub table: String,
    /// The column looked up (an index on it is the user's job).
    pub key_column: String,
    /// The column returned, as text.
    pub value_column: String,
}

impl KvTable {
    /// The keys of a `postgres-kv` table that belong to [`KvTable`].
    pub const KEYS: [&str; 3] = ["table", "key-column", "value-column"];
}

/// `[connections.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionConfig {
    /// `type = "postgres"`: SQL statements through `async-io.sql`.
    Postgres(PostgresConnection),
    /// `type = "postgres-kv"`: lookups through `async-io.kv-get`.
    PostgresKv(PostgresConnection, KvTable),
}

impl ConnectionConfig {
    /// Checks the settings without I/O; problems as `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let (url, env, file, max) = self.endpoint();
        if let Some(m) = weir_connector_postgres::config::validate_url(url) {
            problems.push(("url".into(), m));
        }
        if let Some(m) = weir_connector_postgres::config::validate_password_source(env, file) {
            problems.push(("password-file".into(), m));
        }
        if max == Some(0) {
            problems.push(("max-connections".into(), "must be at least 1".into()));
        }
        let c = self.postgres();
        if let Some(m) = weir_connector_postgres::config::validate_tls(c.tls, c.tls_ca_file.as_deref()) {
            problems.push(("tls-ca-file".into(), m));
        }
        if let ConnectionConfig::PostgresKv(_, kv) = self {
            for (k, v) in [("table", &kv.table), ("key-column", &kv.key_column), ("value-column", &kv.value_column)] {
                if v.trim().is_empty() {
                    problems.push((k.into(), "must not be empty".into()));
                }
            }
        }
        problems
    }

    /// How to reach the server.
    pub fn postgres(&self) -> &PostgresConnection {
        match self {
            ConnectionConfig::Postgres(c) | ConnectionConfig::PostgresKv(c, _) => c,
        }
    }

    /// `(url, password-env, password-file, max-connections)`.
    pub fn endpoint(&self) -> (&str, Option<&str>, Option<&std::path::Path>, Option<usize>) {
        let c = self.postgres();
        (&c.url, c.password_env.as_deref(), c.password_file.as_deref(), c.max_connections)
    }

    /// Resolves `password-file` against the pipeline file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let (ConnectionConfig::Postgres(c) | ConnectionConfig::PostgresKv(c, _)) = self;
        if let Some(f) = &mut c.password_file {
            *f = base.join(&*f);
        }
        if let Some(f) = &mut c.tls_ca_file {
            *f = base.join(&*f);
        }
    }

    /// Longest time to establish a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.postgres().connect_timeout.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryConfig { attempts: 5, backoff: DurationStr(Duration::from_millis(10)), max_backoff: DurationStr(Duration::from_millis(50)) };
        assert_eq!(r.delay(0), Duration::from_millis(10));
        assert_eq!(r.delay(1), Duration::from_millis(20));
        assert_eq!(r.delay(2), Duration::from_millis(40));
        assert_eq!(r.delay(3), Duration::from_millis(50));
    }

    #[test]
    fn hosts_parse_with_a_default_port() {
        assert_eq!(parse_host_port("Example.com").unwrap(), ("example.com".into(), 80));
        assert_eq!(parse_host_port("127.0.0.1:8080").unwrap(), ("127.0.0.1".into(), 8080));
        assert!(parse_host_port("http://x").is_err());
        assert!(parse_host_port("x:99999").is_err());
    }
}
