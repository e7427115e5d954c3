//! A loaded plugin: compiled component, identity, and what it imports and exports.

use crate::engine::Engine;
use crate::instance::HostState;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex};
use weir_bindings::OperatorPre;
use weir_bindings::async_operator::AsyncOperatorPre;
use weir_bindings::sink::SinkPre;
use weir_bindings::source::SourcePre;
use crate::asyncop::AsyncHostState;

/// The optional hot-reload hook's interface (`wit/migrate.wit`).
pub const MIGRATE_INTERFACE: &str = "weir:plugin/migrate@0.1.0";

/// The export that makes a component an async operator (`wit/async-io.wit`).
pub const ASYNC_INTERFACE: &str = "weir:plugin/async-handler@0.1.0";

/// The export that makes a component a sink (`wit/connector.wit`).
pub const SINK_INTERFACE: &str = "weir:plugin/sink-handler@0.1.0";

/// The export that makes a component a source (`wit/connector.wit`).
pub const SOURCE_INTERFACE: &str = "weir:plugin/source-handler@0.1.0";

/// Which world a plugin implements, with its prepared instantiation.
pub(crate) enum PluginKind {
    /// `weir:plugin/operator`: batches in, batches out, synchronous calls.
    Operator(OperatorPre<HostState>),
    /// `weir:plugin/async-operator`: one record per call, async host I/O.
    Async(AsyncOperatorPre<AsyncHostState>),
    /// `weir:plugin/sink`: a sink connector, async host I/O.
    Sink(SinkPre<AsyncHostState>),
    /// `weir:plugin/source`: a source connector, async host I/O.
    Source(SourcePre<AsyncHostState>),
}

/// Why a plugin cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be created.
    #[error("cannot create the Wasm engine: {0}")]
    Engine(String),
    /// The file could not be read.
    #[error("cannot read plugin {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("{} is not a WebAssembly component: {reason}. Build plugins with `cargo build --target wasm32-wasip2 --release` (Rust) or your language's component tool, and copy the resulting .wasm file", path.display())]
    NotAComponent {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// Compilation failed.
    #[error("cannot compile plugin {}: {message}", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
    /// It is a component, but of none of weir's worlds.
    #[error("{} is a WebAssembly component but not a weir plugin: {reason}. It exports [{exports}] and imports [{imports}]; a weir operator exports the interface weir:plugin/handler@0.1.0 (`open`, `process`, `on-timer`, `close`) of world weir:plugin/operator (in Rust: `weir_sdk::export_operator!(YourType)`), or weir:plugin/async-handler@0.1.0 (`open`, `process`) of world weir:plugin/async-operator; a source or sink plugin exports weir:plugin/source-handler@0.1.0 or weir:plugin/sink-handler@0.1.0 (worlds weir:plugin/source and weir:plugin/sink)", path.display())]
    WrongWorld {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
        /// What it exports.
        exports: String,
        /// What it imports.
        imports: String,
    },
}

/// What a component imports and exports, for `weir plugin inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInspection {
    /// Export names with their kind.
    pub exports: Vec<String>,
    /// Import names with their kind.
    pub imports: Vec<String>,
}

/// A compiled plugin ready to be instantiated.
pub struct Plugin {
    /// Name the pipeline refers to it by (file stem, `_` read as `-`).
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex: the plugin's version identity.
    pub hash: String,
    /// File size in bytes.
    pub size: u64,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time to read, compile (or load) and link it.
    pub load_time: Duration,
    /// Imports and exports.
    pub inspection: PluginInspection,
    /// Whether the component exports the optional `migrate` hook
    /// (`weir:plugin/migrate@0.1.0`), called after a hot reload.
    pub has_migrate: bool,
    pub(crate) engine: Engine,
    pub(crate) kind: PluginKind,
    pub(crate) migrate: Option<ComponentExportIndex>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("path", &self.path).field("hash", &self.short_hash()).finish()
    }
}

impl Plugin {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        engine: &Engine,
        name: &str,
        path: &Path,
        hash: String,
        size: u64,
        component: Component,
        from_cache: bool,
        load_time: Duration,
    ) -> Result<Self, PluginError> {
        let inspection = inspect(engine, &component);
        let wrong = |reason: String| PluginError::WrongWorld {
            path: path.to_owned(),
            reason,
            exports: inspection.exports.join(", "),
            imports: inspection.imports.join(", "),
        };
        let needs = |e: wasmtime::Error| {
            wrong(format!("it needs an import weir does not provide (capabilities are denied by default): {}", root_cause(&e)))
        };
        let exports = |interface: &str| component.get_export_index(None, interface).is_some();
        let kind = if exports(ASYNC_INTERFACE) {
            let instance_pre = engine.async_linker().instantiate_pre(&component).map_err(needs)?;
            PluginKind::Async(AsyncOperatorPre::new(instance_pre).map_err(|e| wrong(root_cause(&e)))?)
        } else if exports(SINK_INTERFACE) {
            let instance_pre = engine.async_linker().instantiate_pre(&component).map_err(needs)?;
            PluginKind::Sink(SinkPre::new(instance_pre).map_err(|e| wrong(root_cause(&e)))?)
        } else if exports(SOURCE_INTERFACE) {
            let instance_pre = engine.async_linker().instantiate_pre(&component).map_err(needs)?;
            PluginKind::Source(SourcePre::new(instance_pre).map_err(|e| wrong(root_cause(&e)))?)
        } else {
            let instance_pre = engine.linker().instantiate_pre(&component).map_err(needs)?;
            PluginKind::Operator(OperatorPre::new(instance_pre).map_err(|e| wrong(root_cause(&e)))?)
        };
        // The hook is optional: a component without it is swapped in
        // without a call. One that exports the interface must export the
        // function with the right type, which is checked on first use
        // (validation instantiates every new version before a swap).
        let migrate = component
            .get_export_index(None, MIGRATE_INTERFACE)
            .map(|iface| component.get_export_index(Some(&iface), "migrate").ok_or_else(|| wrong(format!("it exports {MIGRATE_INTERFACE} without its `migrate` function"))))
            .transpose()?;
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            hash,
            size,
            from_cache,
            load_time,
            inspection,
            has_migrate: migrate.is_some(),
            engine: engine.clone(),
            kind,
            migrate,
        })
    }

    /// True for an async operator (world `weir:plugin/async-operator`):
    /// run it with [`crate::AsyncInstance`], not [`crate::OperatorInstance`].
    pub fn is_async(&self) -> bool {
        matches!(self.kind, PluginKind::Async(_))
    }

    /// What the plugin is, for messages: "operator", "async operator",
    /// "sink" or "source".
    pub fn kind(&self) -> &'static str {
        match self.kind {
            PluginKind::Operator(_) => "operator",
            PluginKind::Async(_) => "async operator",
            PluginKind::Sink(_) => "sink",
            PluginKind::Source(_) => "source",
        }
    }

    /// The first 12 hex digits of the content hash.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }
}

/// The file of plugin `name` in `dir`: `NAME.wasm`, or with `-` written
/// `_` (cargo names `json-filter`'s output `json_filter.wasm`).
pub fn find_plugin(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.wasm"), format!("{}.wasm", name.replace('-', "_"))].into_iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// Plugin names available in `dir`.
pub fn list_plugins(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().replace('_', "-")))
        .collect();
    names.sort();
    names
}

/// Why plugin `plugin` is not found in `plugin_dir`, with what is there
/// (`available`, from [`list_plugins`]) and what to do.
pub fn missing_plugin(plugin: &str, plugin_dir: &Path, available: &[String]) -> String {
    let hint = if available.is_empty() {
        format!("the directory has no .wasm files{}", if plugin_dir.is_dir() { "" } else { " (it does not exist)" })
    } else {
        format!("available: {}", available.join(", "))
    };
    format!(
        "no plugin {plugin:?} in {} (looked for {plugin}.wasm and {}.wasm); {hint}. Build it with `cargo build --target wasm32-wasip2 --release` or set `plugin-dir`",
        plugin_dir.display(),
        plugin.replace('-', "_")
    )
}

fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

fn inspect(engine: &Engine, component: &Component) -> PluginInspection {
    let ty = component.component_type();
    let kind = |item: &ComponentItem| match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    };
    let engine = engine.wasmtime();
    PluginInspection {
        exports: ty.exports(engine).map(|(n, i)| format!("{n} ({})", kind(&i.ty))).collect(),
        imports: ty.imports(engine).map(|(n, i)| format!("{n} ({})", kind(&i.ty))).collect(),
    }
}

/// Checks the header: a core module or random bytes get a precise message.
pub(crate) fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let err = |reason: &str| PluginError::NotAComponent { path: path.to_owned(), reason: reason.to_owned() };
    if bytes.is_empty() {
        return Err(err("the file is empty"));
    }
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(err(&format!("it does not start with the Wasm magic bytes (it is {} bytes long; a truncated copy or another file type?)", bytes.len())));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(err("it is a core Wasm module, not a component (wasm32-wasip1/wasm32-unknown-unknown output); build for wasm32-wasip2")),
        _ => Err(err("unknown Wasm binary version")),
    }
}
