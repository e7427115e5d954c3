//! `[sources.NAME]`, `[sinks.NAME]` and `[connections.NAME]`.
//!
//! The keys every source or sink has (`type`, `parallelism`, a source's
//! `idle-timeout`, a sink's `input` or `inputs`) are read here; the rest of the section belongs to the connector
//! its `type` names, found in the [`Registry`]: this module names no
//! connector.

use super::{push_validation, take_str, take_u32, typed, ConfigError, DurationStr};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use weir_connector::registry::{quoted_choices, ConfigContext, FieldErrors, Registry, SinkSpec, SourceSpec};

/// The keys every source section has, read here; the rest are the connector's.
pub const SOURCE_KEYS: [&str; 3] = ["type", "parallelism", "idle-timeout"];
/// The keys every sink section has, read here; the rest are the connector's.
pub const SINK_KEYS: [&str; 4] = ["type", "input", "inputs", "parallelism"];

/// `[sources.NAME]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Parallel instances.
    pub parallelism: Option<u32>,
    /// A downstream input fed by this source that sends no records for
    /// this long is left out of its task's watermark until it sends again
    /// (Flink's `withIdleness`); default: the pipeline's `idle-timeout`.
    pub idle_timeout: Option<Duration>,
    /// The connector's own settings, parsed and checked by it.
    pub spec: Box<dyn SourceSpec>,
}

/// `[sinks.NAME]`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Name of the operator or source feeding it (default: the last operator).
    pub input: Option<String>,
    /// Several operators or sources feeding it (a union). Exclusive with `input`.
    pub inputs: Option<Vec<String>>,
    /// Parallel instances (default: its (first) input's).
    pub parallelism: Option<u32>,
    /// The connector's own settings, parsed and checked by it.
    pub spec: Box<dyn SinkSpec>,
}

/// What the sections are checked against.
pub(super) struct Scope<'a> {
    pub registry: &'a Registry,
    pub pipeline: &'a str,
    pub base: &'a Path,
    pub checkpointing: bool,
    pub plugin_dir: &'a Path,
}

impl Scope<'_> {
    fn context<'a>(&'a self, name: &'a str) -> ConfigContext<'a> {
        ConfigContext { pipeline: self.pipeline, name, base: self.base, checkpointing: self.checkpointing, plugin_dir: self.plugin_dir }
    }
}

fn push_field_errors(errors: &mut Vec<ConfigError>, path: &str, found: FieldErrors) {
    for (field, message) in found {
        let path = if field.is_empty() { path.to_owned() } else { format!("{path}.{field}") };
        errors.push(ConfigError { path, message });
    }
}

/// The `type` of a section, or an error listing what is available.
fn connector_type(ty: Option<String>, what: &str, path: &str, available: Vec<&str>, errors: &mut Vec<ConfigError>) -> Option<String> {
    let choices = quoted_choices(available.iter().copied(), "or");
    match ty {
        Some(t) if available.contains(&t.as_str()) => Some(t),
        Some(other) => {
            let list: Vec<String> = available.iter().map(|t| format!("\"{t}\"")).collect();
            let list = list.join(", ");
            errors.push(ConfigError { path: format!("{path}.type"), message: format!("unknown {what} type {other:?}; available: {list}") });
            None
        }
        None => {
            errors.push(ConfigError { path: format!("{path}.type"), message: format!("missing; set type = {choices}") });
            None
        }
    }
}

/// Every `[sources.NAME]`.
pub(super) fn parse_sources(raw: BTreeMap<String, toml::Table>, scope: &Scope<'_>, errors: &mut Vec<ConfigError>) -> BTreeMap<String, SourceConfig> {
    let mut sources = BTreeMap::new();
    for (name, mut t) in raw {
        let path = format!("sources.{name}");
        let ty = take_str(&mut t, SOURCE_KEYS[0], &path, errors);
        let parallelism = take_u32(&mut t, SOURCE_KEYS[1], &path, errors);
        let idle_timeout = take_duration(&mut t, SOURCE_KEYS[2], &path, errors);
        let Some(ty) = connector_type(ty, "source", &path, scope.registry.source_types().collect(), errors) else { continue };
        let factory = scope.registry.source(&ty).expect("a registered type");
        match factory.parse(t, &scope.context(&name)) {
            Ok(spec) => {
                if let (Some(max), Some(p)) = (spec.max_parallelism(), parallelism)
                    && p > max
                {
                    errors.push(ConfigError { path: format!("{path}.parallelism"), message: format!("{ty} sources run at parallelism {max}") });
                }
                sources.insert(name, SourceConfig { parallelism, idle_timeout, spec });
            }
            Err(found) => push_field_errors(errors, &path, found),
        }
    }
    sources
}

/// A duration key (`"30s"`), checked to be more than zero.
fn take_duration(table: &mut toml::Table, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<Duration> {
    let d = typed::<DurationStr>(table.remove(key)?, &format!("{path}.{key}"), errors)?.0;
    if d.is_zero() {
        errors.push(ConfigError { path: format!("{path}.{key}"), message: "must be more than 0; leave it out to never treat an input as idle".into() });
        return None;
    }
    Some(d)
}

/// A list of names (`inputs = ["a", "b"]`).
fn take_names(table: &mut toml::Table, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<Vec<String>> {
    typed::<Vec<String>>(table.remove(key)?, &format!("{path}.{key}"), errors)
}

/// Every `[sinks.NAME]`.
pub(super) fn parse_sinks(raw: BTreeMap<String, toml::Table>, scope: &Scope<'_>, errors: &mut Vec<ConfigError>) -> BTreeMap<String, SinkConfig> {
    let mut sinks = BTreeMap::new();
    for (name, mut t) in raw {
        let path = format!("sinks.{name}");
        let ty = take_str(&mut t, SINK_KEYS[0], &path, errors);
        let input = take_str(&mut t, SINK_KEYS[1], &path, errors);
        let inputs = take_names(&mut t, SINK_KEYS[2], &path, errors);
        let parallelism = take_u32(&mut t, SINK_KEYS[3], &path, errors);
        let Some(ty) = connector_type(ty, "sink", &path, scope.registry.sink_types().collect(), errors) else { continue };
        let factory = scope.registry.sink(&ty).expect("a registered type");
        match factory.parse(t, &scope.context(&name)) {
            Ok(spec) => {
                sinks.insert(name, SinkConfig { input, inputs, parallelism, spec });
            }
            Err(found) => push_field_errors(errors, &path, found),
        }
    }
    sinks
}

/// Every `[connections.NAME]`: external systems async operators may use.
pub(super) fn parse_connections(raw: BTreeMap<String, toml::Table>, base: &Path, errors: &mut Vec<ConfigError>) -> BTreeMap<String, weir_async::ConnectionConfig> {
    let mut connections = BTreeMap::new();
    for (name, mut t) in raw {
        let path = format!("connections.{name}");
        let ty = take_str(&mut t, "type", &path, errors);
        let parsed = match ty.as_deref() {
            Some("postgres") => typed::<weir_async::config::PostgresConnection>(toml::Value::Table(t), &path, errors).map(weir_async::ConnectionConfig::Postgres),
            Some("postgres-kv") => {
                let mut kv = toml::Table::new();
                for k in weir_async::config::KvTable::KEYS {
                    if let Some(v) = t.remove(k) {
                        kv.insert(k.to_owned(), v);
                    }
                }
                let table = typed::<weir_async::config::KvTable>(toml::Value::Table(kv), &path, errors);
                let mut server_errors = Vec::new();
                let server = typed::<weir_async::config::PostgresConnection>(toml::Value::Table(t), &path, &mut server_errors);
                for mut e in server_errors {
                    if e.message.starts_with("unknown field") {
                        e.message.push_str(", `table`, `key-column`, `value-column`");
                    }
                    errors.push(e);
                }
                server.zip(table).map(|(c, kv)| weir_async::ConnectionConfig::PostgresKv(c, kv))
            }
            Some(other) => {
                errors.push(ConfigError {
                    path: format!("{path}.type"),
                    message: format!("unknown connection type {other:?}; available: \"postgres\" (SQL), \"postgres-kv\" (key-value lookups on a table)"),
                });
                None
            }
            None => {
                errors.push(ConfigError { path: format!("{path}.type"), message: "missing; set type = \"postgres\" or \"postgres-kv\"".into() });
                None
            }
        };
        if let Some(mut c) = parsed {
            push_validation(errors, &path, c.validate());
            c.resolve_paths(base);
            connections.insert(name, c);
        }
    }
    connections
}
