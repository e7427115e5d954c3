//! The source's settings: `[sources.NAME] type = "postgres-cdc"`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use weir_connector_postgres::config::{ReconnectConfig, TlsMode, read_password, validate_password_source, validate_tls, validate_url};

/// `[sources.NAME]` with `type = "postgres-cdc"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresCdcConfig {
    /// Connection: a URL (`postgres://weir@host:5432/app`) or a libpq
    /// key-value string. The role needs the `REPLICATION` attribute (or to
    /// be a superuser) and, to create the publication, to own the tables.
    pub url: String,
    /// The tables whose changes to read, optionally schema-qualified.
    pub tables: Vec<String>,
    /// The publication naming the tables (created when missing); default
    /// `weir_PIPELINE_SOURCE`.
    #[serde(default)]
    pub publication: Option<String>,
    /// The replication slot (weir's: a fresh start drops and recreates it);
    /// default `weir_PIPELINE_SOURCE`.
    #[serde(default)]
    pub slot: Option<String>,
    /// `initial` (default): the tables' rows as of the slot's creation
    /// first, then the changes after it; `never`: only the changes.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows fetched per round trip during the initial snapshot.
    #[serde(default = "default_snapshot_fetch")]
    pub snapshot_fetch: u32,
    /// How often weir tells PostgreSQL where it stands (the slot's
    /// confirmed position, as of the last completed checkpoint), at most.
    #[serde(default = "default_status_interval", deserialize_with = "weir_connector::config::duration")]
    pub status_interval: Duration,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable` (default), `require` or `verify-full`, as for the
    /// PostgreSQL sink.
    #[serde(default)]
    pub tls: TlsMode,
    /// `verify-full`: PEM file of the certificate authorities to trust.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Timeout of one connection attempt.
    #[serde(default = "default_connect_timeout", deserialize_with = "weir_connector::config::duration")]
    pub connect_timeout: Duration,
    /// Reconnecting after the connection is lost while streaming.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Whether the pipeline takes checkpoints (set by `prepare`): without
    /// them the slot is confirmed as records are read.
    #[serde(skip)]
    pub checkpointing: bool,
    /// `weir_PIPELINE_SOURCE`, for the default slot and publication names
    /// (set by `prepare`).
    #[serde(skip)]
    pub default_name: String,
}

/// Whether the source starts with the tables' current rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// Every row of the tables, consistent with the slot's start, then the changes.
    #[default]
    Initial,
    /// Only the changes after the slot's creation.
    Never,
}

fn default_snapshot_fetch() -> u32 {
    10_000
}

fn default_status_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// PostgreSQL's longest identifier, in bytes.
const MAX_IDENT: usize = 63;

/// A slot or publication name made from `weir`, the pipeline and the
/// source: lower-case letters, digits and `_` (what slot names allow).
pub fn default_name(pipeline: &str, source: &str) -> String {
    let raw = format!("weir_{pipeline}_{source}").to_lowercase();
    let mut name: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    name.truncate(MAX_IDENT);
    name
}

impl PostgresCdcConfig {
    /// Checks the config without I/O; every problem as `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| problems.push((field.to_owned(), message));
        if let Some(m) = validate_url(&self.url) {
            bad("url", m);
        }
        if self.tables.is_empty() {
            bad("tables", "names no table; list the tables to read, e.g. tables = [\"public.orders\"]".into());
        }
        for (i, t) in self.tables.iter().enumerate() {
            if t.trim().is_empty() {
                bad(&format!("tables[{i}]"), "is empty".into());
            }
        }
        if let Some(slot) = &self.slot
            && (slot.is_empty() || slot.len() > MAX_IDENT || !slot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        {
            bad("slot", format!("{slot:?} is not a slot name: use 1 to {MAX_IDENT} lower-case letters, digits and underscores"));
        }
        if let Some(p) = &self.publication
            && (p.is_empty() || p.len() > MAX_IDENT)
        {
            bad("publication", format!("{p:?} must be 1 to {MAX_IDENT} bytes long"));
        }
        if self.snapshot_fetch == 0 {
            bad("snapshot-fetch", "must be at least 1".into());
        }
        if self.status_interval.is_zero() {
            bad("status-interval", "must be above 0".into());
        }
        if let Some(m) = validate_password_source(self.password_env.as_deref(), self.password_file.as_deref()) {
            bad("password-file", m);
        }
        if let Some(m) = validate_tls(self.tls, self.tls_ca_file.as_deref()) {
            bad("tls-ca-file", m);
        }
        if self.reconnect.initial_backoff.is_zero() {
            bad("reconnect.initial-backoff", "must be above 0".into());
        }
        if self.reconnect.max_backoff < self.reconnect.initial_backoff {
            bad("reconnect.max-backoff", "must not be below reconnect.initial-backoff".into());
        }
        problems
    }

    /// The password from `password-env` or `password-file`, if configured.
    pub fn password(&self) -> Result<Option<String>, String> {
        read_password(self.password_env.as_deref(), self.password_file.as_deref())
    }

    /// The slot's name.
    pub fn slot_name(&self) -> &str {
        self.slot.as_deref().unwrap_or(&self.default_name)
    }

    /// The publication's name.
    pub fn publication_name(&self) -> &str {
        self.publication.as_deref().unwrap_or(&self.default_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PostgresCdcConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn defaults_and_every_problem_with_its_field() {
        let c = parse("url = \"postgres://weir@localhost/app\"\ntables = [\"public.orders\"]").unwrap();
        assert_eq!(c.snapshot, SnapshotMode::Initial);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let c = parse("url = \"postgres://weir:pw@localhost/app\"\ntables = []\nslot = \"Bad-Name\"\nsnapshot-fetch = 0").unwrap();
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["url", "tables", "slot", "snapshot-fetch"]);
        assert!(parse("url = \"x\"\ntables = [\"t\"]\nsnapshot = \"sometimes\"").unwrap_err().contains("unknown variant"));
        assert!(parse("url = \"x\"\ntables = [\"t\"]\ncolour = 1").unwrap_err().contains("colour"));
    }

    #[test]
    fn default_names_are_slot_names() {
        assert_eq!(default_name("Orders-CDC", "db.src"), "weir_orders_cdc_db_src");
        assert_eq!(default_name(&"x".repeat(100), "s").len(), MAX_IDENT);
    }
}
