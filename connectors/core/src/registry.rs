//! The connector registry: how the runtime finds a source or sink by its
//! `type` without naming any connector.
//!
//! A connector is a config type that implements [`SourceConfig`] or
//! [`SinkConfig`]: its serde shape *is* the connector's section of a
//! pipeline file (unknown keys refused with `#[serde(deny_unknown_fields)]`),
//! [`SourceConfig::prepare`] checks the values and resolves relative paths
//! without I/O, and [`SourceConfig::open`] makes one subtask's instance. A
//! [`Registry`] maps `type` names to such configs through a blanket,
//! type-erased factory, so the pipeline crate parses, validates and opens
//! every connector through the same three calls:
//!
//! ```
//! # use weir_connector::registry::*;
//! # use weir_connector::*;
//! # use serde::Deserialize;
//! /// `type = "silence"`: a source that is finished at once.
//! #[derive(Debug, Clone, Deserialize)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! struct SilenceConfig {}
//!
//! struct Silence;
//! impl Source for Silence {
//!     fn poll(&mut self, _: &mut BatchWriter, _: usize) -> Result<Poll, ConnectorError> { Ok(Poll::Finished) }
//!     fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> { Ok(Vec::new()) }
//!     fn restore(&mut self, _: &[&[u8]]) -> Result<(), ConnectorError> { Ok(()) }
//! }
//!
//! impl SourceConfig for SilenceConfig {
//!     const TYPE: &'static str = "silence";
//!     fn open(&self, _: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> { Ok(Box::new(Silence)) }
//! }
//!
//! let registry = Registry::default().with_source::<SilenceConfig>();
//! assert_eq!(registry.source_types().collect::<Vec<_>>(), ["silence"]);
//! ```
//!
//! Adding a connector to weir is one crate with such a config and one line
//! in `weir-connectors` (`connectors/builtin`), which registers the built-in
//! ones; an embedding program may register its own on top.

use crate::cluster::{GroupConfig, Membership};
use crate::services::Services;
use crate::{ConnectorContext, ConnectorError, Sink, Source};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Problems found in one connector section, each as `(field, message)`;
/// the field is relative to the section (`"path"`, `"batch.max-rows"`), or
/// empty for the section as a whole.
pub type FieldErrors = Vec<(String, String)>;

/// What a connector's config may know about where it stands while it is
/// checked: nothing here does I/O.
#[derive(Debug, Clone, Copy)]
pub struct ConfigContext<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The source's or sink's name in the pipeline file.
    pub name: &'a str,
    /// The directory of the pipeline file: relative paths resolve against it.
    pub base: &'a Path,
    /// Whether the pipeline takes checkpoints (exactly-once sinks need them).
    pub checkpointing: bool,
    /// The directory plugins are loaded from (connectors that are plugins
    /// are found there).
    pub plugin_dir: &'a Path,
}

impl ConfigContext<'_> {
    /// `path` relative to the pipeline file's directory (absolute paths stay).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }
}

/// A source's section of a pipeline file, typed: `type = TYPE` selects it.
pub trait SourceConfig: DeserializeOwned + fmt::Debug + Clone + Send + Sync + 'static {
    /// The `type` that selects this connector.
    const TYPE: &'static str;

    /// Checks the values (every problem, each with its field) and resolves
    /// relative paths against the pipeline file. No I/O. The default accepts
    /// what deserialized.
    fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
        let _ = cx;
        Vec::new()
    }

    /// Fixed-key tables nested in the section, as `(key, keys of its
    /// table)`, for the configuration reference (use [`keys_of`]).
    fn nested_sections() -> Vec<(&'static str, Vec<&'static str>)> {
        Vec::new()
    }

    /// The most subtasks this source can run at (`None`: no limit). A file
    /// has one reader, for example.
    fn max_parallelism(&self) -> Option<u32> {
        None
    }

    /// Opens one subtask's instance.
    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError>;

    /// What `weir check` verifies beyond the section itself, reaching no
    /// external system (a connector that is a plugin loads its component
    /// and checks its world); a line describing the connector for the
    /// report, if it has something to say.
    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError> {
        let _ = services;
        Ok(None)
    }

    /// The plugin this connector runs, when it is one (`type = "wasm"`),
    /// by its name in the plugin directory. Sources and sinks are not
    /// hot-reloaded; with this, a new file for the plugin is answered with
    /// a warning that says so instead of being ignored.
    fn plugin(&self) -> Option<&str> {
        None
    }

    /// Joins `group` as one member of a pipeline spread over several hosts
    /// ([`crate::cluster`]): the group decides which of the source's
    /// partitions (lanes) this member runs. `None`: this source cannot be
    /// spread (the default).
    fn join_group(&self, group: &GroupConfig, ctx: &ConnectorContext) -> Option<Result<Box<dyn Membership>, ConnectorError>> {
        let _ = (group, ctx);
        None
    }
}

/// A sink's section of a pipeline file, typed: `type = TYPE` selects it.
pub trait SinkConfig: DeserializeOwned + fmt::Debug + Clone + Send + Sync + 'static {
    /// The `type` that selects this connector.
    const TYPE: &'static str;

    /// Checks the values (every problem, each with its field) and resolves
    /// relative paths against the pipeline file. No I/O.
    fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
        let _ = cx;
        Vec::new()
    }

    /// Fixed-key tables nested in the section, as `(key, keys of its
    /// table)`, for the configuration reference (use [`keys_of`]).
    fn nested_sections() -> Vec<(&'static str, Vec<&'static str>)> {
        Vec::new()
    }

    /// Problems that depend on the parallelism the sink will run at, once
    /// the graph is known (for example one output file shared by subtasks).
    fn check_parallelism(&self, parallelism: u32) -> FieldErrors {
        let _ = parallelism;
        Vec::new()
    }

    /// Opens one subtask's instance.
    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError>;

    /// What `weir check` verifies beyond the section itself, reaching no
    /// external system (a connector that is a plugin loads its component
    /// and checks its world); a line describing the connector for the
    /// report, if it has something to say.
    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError> {
        let _ = services;
        Ok(None)
    }

    /// See [`SourceConfig::plugin`].
    fn plugin(&self) -> Option<&str> {
        None
    }

    /// Whether each lane of a pipeline spread over a group
    /// ([`crate::cluster`]) can run its own instance of this sink: what it
    /// publishes and how it remembers what it published must be keyed by
    /// the pipeline name (a lane's is `NAME.lane-N`), not by a location
    /// in the section that every lane would share. `false` by default.
    fn per_lane(&self) -> bool {
        false
    }
}

/// A parsed and checked source section, type-erased.
pub trait SourceSpec: fmt::Debug + Send + Sync {
    /// Its `type`.
    fn type_name(&self) -> &'static str;
    /// See [`SourceConfig::max_parallelism`].
    fn max_parallelism(&self) -> Option<u32>;
    /// See [`SourceConfig::open`].
    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError>;
    /// See [`SourceConfig::check`].
    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError>;
    /// See [`SourceConfig::plugin`].
    fn plugin(&self) -> Option<&str>;
    /// See [`SourceConfig::join_group`].
    fn join_group(&self, group: &GroupConfig, ctx: &ConnectorContext) -> Option<Result<Box<dyn Membership>, ConnectorError>>;
    /// The typed config, for programs that adjust a loaded pipeline.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// A copy, to adjust without touching the original.
    fn clone_spec(&self) -> Box<dyn SourceSpec>;
}

/// A parsed and checked sink section, type-erased.
pub trait SinkSpec: fmt::Debug + Send + Sync {
    /// Its `type`.
    fn type_name(&self) -> &'static str;
    /// See [`SinkConfig::check_parallelism`].
    fn check_parallelism(&self, parallelism: u32) -> FieldErrors;
    /// See [`SinkConfig::open`].
    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError>;
    /// See [`SinkConfig::check`].
    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError>;
    /// See [`SourceConfig::plugin`].
    fn plugin(&self) -> Option<&str>;
    /// See [`SinkConfig::per_lane`].
    fn per_lane(&self) -> bool;
    /// The typed config, for programs that adjust a loaded pipeline.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// A copy, to adjust without touching the original.
    fn clone_spec(&self) -> Box<dyn SinkSpec>;
}

impl<C: SourceConfig> SourceSpec for C {
    fn type_name(&self) -> &'static str {
        C::TYPE
    }
    fn max_parallelism(&self) -> Option<u32> {
        SourceConfig::max_parallelism(self)
    }
    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> {
        SourceConfig::open(self, ctx)
    }
    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError> {
        SourceConfig::check(self, services)
    }
    fn plugin(&self) -> Option<&str> {
        SourceConfig::plugin(self)
    }
    fn join_group(&self, group: &GroupConfig, ctx: &ConnectorContext) -> Option<Result<Box<dyn Membership>, ConnectorError>> {
        SourceConfig::join_group(self, group, ctx)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_spec(&self) -> Box<dyn SourceSpec> {
        Box::new(self.clone())
    }
}

impl<C: SinkConfig> SinkSpec for C {
    fn type_name(&self) -> &'static str {
        C::TYPE
    }
    fn check_parallelism(&self, parallelism: u32) -> FieldErrors {
        SinkConfig::check_parallelism(self, parallelism)
    }
    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
        SinkConfig::open(self, ctx)
    }
    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError> {
        SinkConfig::check(self, services)
    }
    fn plugin(&self) -> Option<&str> {
        SinkConfig::plugin(self)
    }
    fn per_lane(&self) -> bool {
        SinkConfig::per_lane(self)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_spec(&self) -> Box<dyn SinkSpec> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn SourceSpec> {
    fn clone(&self) -> Self {
        self.clone_spec()
    }
}

impl Clone for Box<dyn SinkSpec> {
    fn clone(&self) -> Self {
        self.clone_spec()
    }
}

/// Deserializes `table` into `C` and prepares it. A table that does not
/// deserialize is one error for the whole section (serde names the key).
fn parse_typed<C: DeserializeOwned>(table: toml::Table) -> Result<C, FieldErrors> {
    toml::Value::Table(table).try_into::<C>().map_err(|e| vec![(String::new(), e.message().trim().to_owned())])
}

/// The keys a config type accepts, read from its serde shape: the field
/// list serde's derive hands to `deserialize_struct`. Empty for a type
/// that is not a struct.
pub fn keys_of<C: DeserializeOwned>() -> Vec<&'static str> {
    crate::keys::struct_fields::<C>()
}

/// Makes one kind of source from its section.
pub trait SourceFactory: Send + Sync {
    /// Its `type`.
    fn type_name(&self) -> &'static str;
    /// The keys its section accepts (besides `type` and `parallelism`).
    fn keys(&self) -> Vec<&'static str>;
    /// Its nested fixed-key tables (see [`SourceConfig::nested_sections`]).
    fn nested_sections(&self) -> Vec<(&'static str, Vec<&'static str>)>;
    /// Parses and checks a section (with `type` and `parallelism` taken out).
    fn parse(&self, table: toml::Table, cx: &ConfigContext<'_>) -> Result<Box<dyn SourceSpec>, FieldErrors>;
}

/// Makes one kind of sink from its section.
pub trait SinkFactory: Send + Sync {
    /// Its `type`.
    fn type_name(&self) -> &'static str;
    /// The keys its section accepts (besides `type`, `input` and `parallelism`).
    fn keys(&self) -> Vec<&'static str>;
    /// Its nested fixed-key tables (see [`SinkConfig::nested_sections`]).
    fn nested_sections(&self) -> Vec<(&'static str, Vec<&'static str>)>;
    /// Parses and checks a section (with `type`, `input` and `parallelism` taken out).
    fn parse(&self, table: toml::Table, cx: &ConfigContext<'_>) -> Result<Box<dyn SinkSpec>, FieldErrors>;
}

struct Typed<C>(std::marker::PhantomData<fn() -> C>);

impl<C: SourceConfig> SourceFactory for Typed<C> {
    fn type_name(&self) -> &'static str {
        C::TYPE
    }
    fn keys(&self) -> Vec<&'static str> {
        keys_of::<C>()
    }
    fn nested_sections(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        C::nested_sections()
    }
    fn parse(&self, table: toml::Table, cx: &ConfigContext<'_>) -> Result<Box<dyn SourceSpec>, FieldErrors> {
        let mut c = parse_typed::<C>(table)?;
        let errors = c.prepare(cx);
        if errors.is_empty() { Ok(Box::new(c)) } else { Err(errors) }
    }
}

struct TypedSink<C>(std::marker::PhantomData<fn() -> C>);

impl<C: SinkConfig> SinkFactory for TypedSink<C> {
    fn type_name(&self) -> &'static str {
        C::TYPE
    }
    fn keys(&self) -> Vec<&'static str> {
        keys_of::<C>()
    }
    fn nested_sections(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        C::nested_sections()
    }
    fn parse(&self, table: toml::Table, cx: &ConfigContext<'_>) -> Result<Box<dyn SinkSpec>, FieldErrors> {
        let mut c = parse_typed::<C>(table)?;
        let errors = c.prepare(cx);
        if errors.is_empty() { Ok(Box::new(c)) } else { Err(errors) }
    }
}

/// The connectors a pipeline may use, by `type`, in registration order
/// (the order error messages list them in).
#[derive(Clone, Default)]
pub struct Registry {
    sources: Vec<Arc<dyn SourceFactory>>,
    sinks: Vec<Arc<dyn SinkFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("sources", &self.source_types().collect::<Vec<_>>()).field("sinks", &self.sink_types().collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// Registers the source whose config is `C` (replacing one of the same `type`).
    pub fn with_source<C: SourceConfig>(mut self) -> Self {
        self.sources.retain(|f| f.type_name() != C::TYPE);
        self.sources.push(Arc::new(Typed::<C>(std::marker::PhantomData)));
        self
    }

    /// Registers the sink whose config is `C` (replacing one of the same `type`).
    pub fn with_sink<C: SinkConfig>(mut self) -> Self {
        self.sinks.retain(|f| f.type_name() != C::TYPE);
        self.sinks.push(Arc::new(TypedSink::<C>(std::marker::PhantomData)));
        self
    }

    /// The source registered as `type_name`.
    pub fn source(&self, type_name: &str) -> Option<&dyn SourceFactory> {
        self.sources.iter().find(|f| f.type_name() == type_name).map(|f| &**f)
    }

    /// The sink registered as `type_name`.
    pub fn sink(&self, type_name: &str) -> Option<&dyn SinkFactory> {
        self.sinks.iter().find(|f| f.type_name() == type_name).map(|f| &**f)
    }

    /// Source types, in registration order.
    pub fn source_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sources.iter().map(|f| f.type_name())
    }

    /// Sink types, in registration order.
    pub fn sink_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sinks.iter().map(|f| f.type_name())
    }
}

/// `"a", "b" or "c"`, for messages that list the choices.
pub fn quoted_choices<'a>(names: impl Iterator<Item = &'a str>, last: &str) -> String {
    let names: Vec<String> = names.map(|n| format!("\"{n}\"")).collect();
    match names.as_slice() {
        [] => "none".to_owned(),
        [one] => one.clone(),
        [init @ .., tail] => format!("{} {last} {tail}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Echo {
        path: PathBuf,
        #[serde(default)]
        max_rows: u32,
    }

    impl SinkConfig for Echo {
        const TYPE: &'static str = "echo";
        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            self.path = cx.resolve(&self.path);
            if self.max_rows > 10 { vec![("max-rows".into(), "must be at most 10".into())] } else { Vec::new() }
        }
        fn open(&self, _: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
            Ok(Box::new(crate::DiscardSink::default()))
        }
    }

    fn cx() -> ConfigContext<'static> {
        ConfigContext { pipeline: "p", name: "out", base: Path::new("/pipelines"), checkpointing: true, plugin_dir: Path::new("/pipelines/plugins") }
    }

    #[test]
    fn a_registered_sink_is_parsed_checked_and_resolved() {
        let r = Registry::default().with_sink::<Echo>();
        let f = r.sink("echo").unwrap();
        assert_eq!(f.keys(), ["path", "max-rows"]);
        let mut spec = f.parse(toml::toml! { path = "out.txt" }, &cx()).unwrap();
        assert_eq!(spec.type_name(), "echo");
        let echo = spec.as_any_mut().downcast_mut::<Echo>().unwrap();
        assert_eq!(echo.path, Path::new("/pipelines/out.txt"));
        let errors = f.parse(toml::toml! { path = "x"
        max-rows = 11 }, &cx()).unwrap_err();
        assert_eq!(errors, [("max-rows".to_owned(), "must be at most 10".to_owned())]);
        let errors = f.parse(toml::toml! { paht = "x" }, &cx()).unwrap_err();
        assert!(errors[0].1.contains("unknown field `paht`"), "{errors:?}");
        assert!(r.sink("nope").is_none() && r.source("echo").is_none());
    }

    #[test]
    fn choices_read_like_a_sentence() {
        assert_eq!(quoted_choices(["a"].into_iter(), "or"), "\"a\"");
        assert_eq!(quoted_choices(["a", "b", "c"].into_iter(), "or"), "\"a\", \"b\" or \"c\"");
    }
}
