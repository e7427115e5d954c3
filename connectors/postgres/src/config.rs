//! The sink's settings: `[sinks.NAME] type = "postgres"` in a pipeline file.
//!
//! Every key but `type`, `input` and `parallelism` (which belong to the
//! pipeline crate) is a field of [`PostgresSinkConfig`]; unknown keys are
//! errors. [`PostgresSinkConfig::validate`] checks what can be checked
//! without a database and returns each problem with its field;
//! the schema check against the real table happens when the sink opens
//! (see [`crate::schema`]).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[sinks.NAME]` with `type = "postgres"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresSinkConfig {
    /// Connection: a URL (`postgres://user@host:5432/db`) or a libpq
    /// key-value string (`host=/run/postgresql user=weir dbname=app`).
    /// Put the password in `password-env` or `password-file`, not here.
    pub url: String,
    /// The target table, optionally schema-qualified (`public.orders`).
    pub table: String,
    /// Column -> where its value comes from: a top-level field of the
    /// record's JSON value, or `@key`, `@value`, `@timestamp`,
    /// `@checkpoint`. Default: every column of the table from the field of
    /// the same name.
    #[serde(default)]
    pub columns: Option<BTreeMap<String, String>>,
    /// `append` (binary COPY) or `upsert` (`ON CONFLICT (key) DO UPDATE`).
    #[serde(default)]
    pub mode: WriteMode,
    /// Conflict key columns for `upsert`: a unique index or primary key of
    /// the table must cover exactly these columns.
    #[serde(default)]
    pub key: Vec<String>,
    /// `exactly-once` (default) or `at-least-once`.
    #[serde(default)]
    pub delivery: Delivery,
    /// How rows are grouped into COPY statements and transactions.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable` (default), `require` or `verify-full`.
    #[serde(default)]
    pub tls: TlsMode,
    /// `verify-full`: PEM file of the certificate authorities to trust
    /// (default: the system's).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `statement_timeout` of the sink's sessions (`0`: none).
    #[serde(default = "default_statement_timeout", deserialize_with = "weir_connector::config::duration")]
    pub statement_timeout: Duration,
    /// Timeout of one connection attempt.
    #[serde(default = "default_connect_timeout", deserialize_with = "weir_connector::config::duration")]
    pub connect_timeout: Duration,
    /// Reconnecting after a connection loss.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Where rows that violate a constraint go.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// The table recording each subtask's last published checkpoint.
    #[serde(default = "default_progress_table")]
    pub progress_table: String,
    /// Directory (relative to the pipeline file) where the records of
    /// checkpoints not yet published wait, durably (exactly-once only).
    #[serde(default = "default_spill_dir")]
    pub spill_dir: PathBuf,
}

/// How rows reach the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// Binary `COPY` into the table.
    #[default]
    Append,
    /// Binary `COPY` into a session-local staging table, then
    /// `INSERT .. SELECT DISTINCT ON (key) .. ON CONFLICT (key) DO UPDATE`.
    Upsert,
}

/// What a reader of the table is promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Rows appear once per completed checkpoint, each exactly once.
    #[default]
    ExactlyOnce,
    /// Rows appear per batch (lower latency); after a crash the rows since
    /// the last checkpoint are written again.
    AtLeastOnce,
}

/// TLS to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP or a Unix socket.
    #[default]
    Disable,
    /// Encrypt, and refuse a server without TLS; the server's certificate
    /// is not checked (libpq's `sslmode=require`).
    Require,
    /// Encrypt, and check the server's certificate chain and that it names
    /// the host connected to (libpq's `sslmode=verify-full`).
    VerifyFull,
}

/// `batch.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BatchConfig {
    /// Rows per COPY statement (and per transaction, at-least-once).
    pub rows: usize,
    /// Bytes of records per COPY statement.
    #[serde(deserialize_with = "weir_connector::config::byte_size")]
    pub bytes: u64,
    /// At-least-once: longest time a row waits before its batch is written.
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { rows: 10_000, bytes: 8 << 20, max_delay: Duration::from_millis(500) }
    }
}

/// `reconnect.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ReconnectConfig {
    /// First wait after a failure.
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub max_backoff: Duration,
    /// Fail the pipeline after this long without a successful write.
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub give_up_after: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// `dead-letter.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DeadLetterConfig {
    /// Table receiving rejected rows (created when missing), written in the
    /// same transaction as the rows that were accepted.
    pub table: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self { table: "weir_dead_letters".into() }
    }
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_progress_table() -> String {
    "weir_progress".into()
}

fn default_spill_dir() -> PathBuf {
    PathBuf::from("data/postgres-spill")
}

/// Metadata sources a column can take instead of a JSON field.
pub const METADATA: &[&str] = &["@key", "@value", "@timestamp", "@checkpoint"];

impl PostgresSinkConfig {
    /// Checks the config without I/O; every problem as `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| problems.push((field.to_owned(), message));
        if let Some(m) = validate_url(&self.url) {
            bad("url", m);
        }
        if self.table.trim().is_empty() {
            bad("table", "must name the target table, e.g. \"public.orders\"".into());
        }
        if let Some(columns) = &self.columns {
            if columns.is_empty() {
                bad("columns", "is empty; map at least one column, or leave `columns` out to map every column by name".into());
            }
            for (column, source) in columns {
                if source.starts_with('@') && !METADATA.contains(&source.as_str()) {
                    bad(&format!("columns.{column}"), format!("unknown metadata {source:?}; available: {}", METADATA.join(", ")));
                }
                if source.is_empty() {
                    bad(&format!("columns.{column}"), "is empty; name a field of the record's JSON value".into());
                }
            }
        }
        match self.mode {
            WriteMode::Upsert if self.key.is_empty() => {
                bad("key", "upsert needs the conflict key columns, e.g. key = [\"id\"]".into())
            }
            WriteMode::Append if !self.key.is_empty() => {
                bad("key", "only used with mode = \"upsert\"; remove it or set the mode".into())
            }
            _ => {}
        }
        if let Some(m) = validate_password_source(self.password_env.as_deref(), self.password_file.as_deref()) {
            bad("password-file", m);
        }
        if self.batch.rows == 0 {
            bad("batch.rows", "must be at least 1".into());
        }
        if self.batch.bytes == 0 {
            bad("batch.bytes", "must be at least 1".into());
        }
        if self.reconnect.initial_backoff.is_zero() {
            bad("reconnect.initial-backoff", "must be above 0".into());
        }
        if self.reconnect.max_backoff < self.reconnect.initial_backoff {
            bad("reconnect.max-backoff", "must not be below reconnect.initial-backoff".into());
        }
        if let Some(m) = validate_tls(self.tls, self.tls_ca_file.as_deref()) {
            bad("tls-ca-file", m);
        }
        problems
    }

    /// The password from `password-env` or `password-file`, if configured.
    pub fn password(&self) -> Result<Option<String>, String> {
        read_password(self.password_env.as_deref(), self.password_file.as_deref())
    }
}

/// Checks a PostgreSQL connection URL without I/O (shared by every
/// PostgreSQL connection weir makes: this sink, async operators'
/// `[connections.*]`). `None` when it is fine.
pub fn validate_url(url: &str) -> Option<String> {
    if url.trim().is_empty() {
        Some("must name the database, e.g. \"postgres://weir@localhost:5432/app\"".into())
    } else if let Err(e) = url.parse::<tokio_postgres::Config>() {
        Some(format!("not a PostgreSQL connection string ({e}); write e.g. \"postgres://weir@localhost:5432/app\""))
    } else if url.parse::<tokio_postgres::Config>().is_ok_and(|c| c.get_password().is_some()) {
        Some("contains a password; move it to `password-env` (an environment variable) or `password-file`".into())
    } else {
        None
    }
}

/// Checks that at most one password source is set (reported on `password-file`).
pub fn validate_password_source(env: Option<&str>, file: Option<&std::path::Path>) -> Option<String> {
    (env.is_some() && file.is_some()).then(|| "set either `password-env` or `password-file`, not both".into())
}

/// The password from an environment variable or a file's first line, if
/// either is configured; errors name the config key.
pub fn read_password(env: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("password-env: the environment variable {var} is not set (or not UTF-8)"));
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("password-file: cannot read {}: {e}", file.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
    }
    Ok(None)
}

/// Checks `tls-ca-file` against `tls` (resolved paths).
pub fn validate_tls(tls: TlsMode, ca_file: Option<&Path>) -> Option<String> {
    match (tls, ca_file) {
        (TlsMode::VerifyFull, Some(ca)) if !ca.is_file() => Some(format!("{} is not a file", ca.display())),
        (TlsMode::Disable | TlsMode::Require, Some(_)) => Some("only used with tls = \"verify-full\"".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PostgresSinkConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn defaults_and_every_problem_with_its_field() {
        let c = parse("url = \"postgres://weir@localhost/app\"\ntable = \"t\"").unwrap();
        assert_eq!(c.delivery, Delivery::ExactlyOnce);
        assert_eq!(c.batch.rows, 10_000);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let c = parse(
            "url = \"postgres://weir:secret@localhost/app\"\ntable = \"\"\nmode = \"upsert\"\nbatch = { rows = 0, bytes = \"1MiB\" }\ncolumns = { a = \"@nope\" }",
        )
        .unwrap();
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["url", "table", "columns.a", "key", "batch.rows"]);
        assert!(parse("url = \"x\"\ntable = \"t\"\nbatch = { max-delay = \"soon\" }").unwrap_err().contains("invalid duration"));
        assert!(parse("url = \"x\"\ntable = \"t\"\ncolour = 1").unwrap_err().contains("colour"));
    }
}
