//! The sink's settings: `[sinks.NAME] type = "object-store"` in a pipeline
//! file. Every key but `type`, `input` and `parallelism` is a field of
//! [`ObjectStoreSinkConfig`]; unknown keys are errors.
//! [`ObjectStoreSinkConfig::validate`] checks what can be checked without
//! I/O and returns each problem with its field.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[sinks.NAME]` with `type = "object-store"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectStoreSinkConfig {
    /// Where objects go: `s3://BUCKET/PREFIX`, `file:///ABSOLUTE/DIR`, or a
    /// directory path (relative to the pipeline file).
    pub url: String,
    /// The key of each object below the destination, before its file name:
    /// a template with `{date}` (`YYYY-MM-DD`), `{year}`, `{month}`,
    /// `{day}`, `{hour}` (UTC). Empty: objects directly under the root.
    #[serde(default)]
    pub path: String,
    /// `json-lines` (default) or `parquet`.
    #[serde(default)]
    pub format: Format,
    /// The Parquet schema (and the check every record must pass), in
    /// column order. Default: inferred from the first record.
    #[serde(default)]
    pub columns: Option<Vec<ColumnConfig>>,
    /// Parquet compression: `snappy` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// An object is closed once it holds this many bytes of records (its
    /// input; the object itself is smaller when compressed).
    #[serde(default = "default_roll_size", deserialize_with = "weir_connector::config::byte_size")]
    pub roll_size: u64,
    /// Objects are published at the first checkpoint this long after the
    /// oldest record they hold (`0`, default: at every checkpoint).
    #[serde(default, deserialize_with = "weir_connector::config::duration")]
    pub roll_interval: Duration,
    /// The time the `path` placeholders are taken from: `record` (the
    /// record's timestamp, default) or `processing` (when its epoch ended).
    #[serde(default)]
    pub partition_time: PartitionTime,
    /// A record that is not JSON or does not fit the columns: `dead-letter`
    /// (default: into objects under `dead-letter-path`) or `fail`.
    #[serde(default)]
    pub bad_records: BadRecords,
    /// Where dead letters go, below the destination.
    #[serde(default = "default_dead_letter_path")]
    pub dead_letter_path: String,
    /// S3: the endpoint URL of an S3-compatible server (default: AWS).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: the region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// S3: path-style requests (`http://host/bucket/key`), which local
    /// servers need; default virtual-hosted style.
    #[serde(default)]
    pub path_style: bool,
    /// S3: environment variable holding the access key id (default
    /// `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// S3: environment variable holding the secret access key (default
    /// `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// S3: a file with `aws_access_key_id = …` and
    /// `aws_secret_access_key = …` lines (and optionally
    /// `aws_session_token`), instead of the environment.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Retrying uploads.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Longest time one upload request may take before it counts as failed
    /// (and is retried).
    #[serde(default = "default_request_timeout", deserialize_with = "weir_connector::config::duration")]
    pub request_timeout: Duration,
    /// Objects uploaded at once while publishing.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Directory (relative to the pipeline file) where each checkpoint's
    /// records wait, durably, until it completes. Default
    /// `data/object-store/PIPELINE/SINK`.
    #[serde(default)]
    pub staging_dir: Option<PathBuf>,
    /// `url` parsed, relative directories resolved (set by `prepare`).
    #[serde(skip)]
    pub destination: Option<Destination>,
}

/// The objects' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The record values, one JSON document per line (`.jsonl`).
    #[default]
    JsonLines,
    /// Parquet (`.parquet`), one column per configured or inferred field.
    Parquet,
}

impl Format {
    /// The objects' file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::JsonLines => "jsonl",
            Self::Parquet => "parquet",
        }
    }
}

/// Parquet compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Snappy (fast, the common choice).
    #[default]
    Snappy,
    /// Uncompressed.
    None,
}

/// Where the partition placeholders take their time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionTime {
    /// The record's timestamp.
    #[default]
    Record,
    /// When the record's epoch was sealed (its checkpoint barrier): the
    /// same on a replay, so replays still overwrite.
    Processing,
}

/// What happens to a record that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadRecords {
    /// Into JSON-lines objects under `dead-letter-path`, published with the
    /// epoch's other objects.
    #[default]
    DeadLetter,
    /// Stop the pipeline with an error naming the record and the field.
    Fail,
}

/// One column of `columns`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ColumnConfig {
    /// The column's name, and the top-level field of the record's JSON
    /// value it is taken from.
    pub name: String,
    /// `string`, `int64`, `float64`, `boolean`, `timestamp-ms` (an integer
    /// of milliseconds since the Unix epoch) or `json` (any JSON, stored
    /// as its text).
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the field may be missing or `null` (default true).
    #[serde(default = "yes")]
    pub nullable: bool,
}

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// A 64-bit integer.
    Int64,
    /// A 64-bit float (integers are accepted).
    Float64,
    /// `true` or `false`.
    Boolean,
    /// Milliseconds since the Unix epoch, as an integer.
    TimestampMs,
    /// Any JSON value, stored as its JSON text.
    Json,
}

impl ColumnType {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int64 => "int64",
            Self::Float64 => "float64",
            Self::Boolean => "boolean",
            Self::TimestampMs => "timestamp-ms",
            Self::Json => "json",
        }
    }
}

/// `retry.*`: shared by the sinks that retry requests.
pub use weir_connector::config::RetryConfig;

fn yes() -> bool {
    true
}

fn default_roll_size() -> u64 {
    64 << 20
}

fn default_dead_letter_path() -> String {
    "_dead_letters".into()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_upload_concurrency() -> usize {
    4
}

/// The largest `roll-size`: an object is built in memory and sent in one
/// PUT.
pub const MAX_ROLL_SIZE: u64 = 1 << 30;

/// The placeholders `path` may hold.
pub const PLACEHOLDERS: &[&str] = &["date", "year", "month", "day", "hour"];

pub use weir_objects::{Destination, check_key_part};

/// The unknown placeholders of a `path` template.
pub fn unknown_placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            out.push(rest[start..].to_owned());
            break;
        };
        let name = &rest[start + 1..start + len];
        if !PLACEHOLDERS.contains(&name) {
            out.push(format!("{{{name}}}"));
        }
        rest = &rest[start + len + 1..];
    }
    out
}

impl ObjectStoreSinkConfig {
    /// Checks the config without I/O; every problem as `(field, message)`.
    pub fn validate(&self, base: &Path) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| problems.push((field.to_owned(), message));
        match Destination::parse(&self.url, base) {
            Err(m) => bad("url", m),
            Ok(destination) => {
                for (key, m) in self.s3().check(&destination) {
                    bad(key, m);
                }
            }
        }
        if let Some(m) = check_key_part(&self.path) {
            bad("path", format!("{:?} {m}", self.path));
        }
        let unknown = unknown_placeholders(&self.path);
        if !unknown.is_empty() {
            bad("path", format!("unknown placeholder {}; available: {}", unknown.join(", "), PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")));
        }
        if self.dead_letter_path.trim_matches('/').is_empty() {
            bad("dead-letter-path", "must not be empty".into());
        } else if let Some(m) = check_key_part(&self.dead_letter_path) {
            bad("dead-letter-path", format!("{:?} {m}", self.dead_letter_path));
        }
        if let Some(columns) = &self.columns {
            if columns.is_empty() {
                bad("columns", "is empty; list at least one column, or leave `columns` out to infer them from the first record".into());
            }
            for (i, c) in columns.iter().enumerate() {
                if c.name.is_empty() {
                    bad(&format!("columns[{i}].name"), "is empty".into());
                } else if columns[..i].iter().any(|o| o.name == c.name) {
                    bad(&format!("columns[{i}].name"), format!("{:?} appears twice", c.name));
                }
            }
        }
        if self.format == Format::JsonLines && self.compression != Compression::Snappy {
            bad("compression", "only used with format = \"parquet\"".into());
        }
        if self.roll_size == 0 || self.roll_size > MAX_ROLL_SIZE {
            bad("roll-size", "must be between 1 byte and 1GiB (an object is built in memory and sent in one request)".into());
        }
        if self.upload_concurrency == 0 || self.upload_concurrency > 64 {
            bad("upload-concurrency", "must be between 1 and 64".into());
        }
        if self.retry.initial_backoff.is_zero() {
            bad("retry.initial-backoff", "must be above 0".into());
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            bad("retry.max-backoff", "must not be below retry.initial-backoff".into());
        }
        problems
    }

    /// The S3 keys, for [`weir_objects::Store::open`].
    pub fn s3(&self) -> weir_objects::S3Settings {
        weir_objects::S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            access_key_id_env: self.access_key_id_env.clone(),
            secret_access_key_env: self.secret_access_key_env.clone(),
            credentials_file: self.credentials_file.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

/// `data/object-store/PIPELINE/SINK` below the pipeline file's directory.
pub fn default_staging_dir(base: &Path, pipeline: &str, sink: &str) -> PathBuf {
    base.join("data/object-store").join(pipeline).join(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ObjectStoreSinkConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    fn fields(c: &ObjectStoreSinkConfig) -> Vec<String> {
        c.validate(Path::new("/p")).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn defaults_and_every_problem_with_its_field() {
        let c = parse("url = \"out/objects\"").unwrap();
        assert_eq!(c.format, Format::JsonLines);
        assert_eq!(c.roll_size, 64 << 20);
        assert!(fields(&c).is_empty());
        assert_eq!(Destination::parse(&c.url, Path::new("/p")), Ok(Destination::Local("/p/out/objects".into())));
        assert_eq!(
            Destination::parse("s3://b-1/events/x/", Path::new("/p")),
            Ok(Destination::S3 { bucket: "b-1".into(), prefix: "events/x".into() })
        );
        let c = parse(
            "url = \"file://relative\"\npath = \"/dt={date}/{minute}\"\nendpoint = \"http://x\"\nroll-size = 0\ncolumns = [{ name = \"a\", type = \"int64\" }, { name = \"a\", type = \"string\" }]\nretry = { initial-backoff = \"0\" }",
        )
        .unwrap();
        assert_eq!(fields(&c), ["url", "path", "path", "columns[1].name", "roll-size", "retry.initial-backoff"]);
        let c = parse("url = \"s3://bucket\"\nendpoint = \"localhost:9000\"\ncompression = \"none\"").unwrap();
        assert_eq!(fields(&c), ["endpoint", "compression"]);
        let c = parse("url = \"file:///tmp/x\"\nregion = \"eu-west-1\"").unwrap();
        assert_eq!(fields(&c), ["region"]);
        assert!(parse("url = \"x\"\nformat = \"csv\"").unwrap_err().contains("unknown variant `csv`"));
        assert!(parse("url = \"x\"\ncolumns = [{ name = \"a\", type = \"int\" }]").unwrap_err().contains("int64"));
        assert!(parse("url = \"x\"\nroll-interval = \"soon\"").unwrap_err().contains("invalid duration"));
        assert!(parse("url = \"x\"\ncolour = 1").unwrap_err().contains("colour"));
        assert!(Destination::parse("gs://b/x", Path::new("/")).unwrap_err().contains("\"gs\" is not supported"));
        assert!(Destination::parse("s3://Bad_Bucket", Path::new("/")).unwrap_err().contains("bucket name"));
    }
}
