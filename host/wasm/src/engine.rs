//! The one engine per host: configuration, epoch ticker, linker, compile cache.

use crate::asyncop::AsyncHostState;
use crate::instance::HostState;
use crate::plugin::{Plugin, PluginError};
use crate::profile::Profiler;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Where compiled components are cached, keyed by content hash. `None`
    /// disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Samples the stacks of every operator instance at each epoch tick
    /// ([`Profiler`]); `None` (the default) costs nothing.
    pub profiler: Option<Arc<Profiler>>,
}

impl EngineConfig {
    /// The default cache location: `$WEIR_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("WEIR_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("weir"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("weir"))
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Inner {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    async_linker: Linker<AsyncHostState>,
    cache_dir: Option<PathBuf>,
    /// The cache directory was refused (and a warning logged).
    cache_refused: AtomicBool,
    /// Distinguishes artifacts of incompatible engine builds/configs.
    compat: String,
    profiler: Option<Arc<Profiler>>,
    _ticker: Ticker,
}

/// The host's Wasm engine. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("cache_dir", &self.inner.cache_dir).finish()
    }
}

impl Engine {
    /// Creates the engine and starts its epoch ticker thread.
    pub fn new(config: EngineConfig) -> Result<Self, PluginError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.concurrency_support(false);
        cfg.cranelift_opt_level(OptLevel::Speed);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1000);
        pool.total_core_instances(1000);
        pool.total_memories(1000);
        pool.total_tables(1000);
        pool.max_memory_size(4 << 30);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&cfg).map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        crate::instance::add_to_linker(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        // Async operators share the engine (same config, pool and epoch
        // ticker: the sync path's per-call cost is unchanged) but link their
        // imports as async host functions.
        let mut async_linker = Linker::<AsyncHostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut async_linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        crate::asyncop::add_to_linker(&mut async_linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weir-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker thread: {e}")))?;
        }

        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}-{}", h.finish(), env!("CARGO_PKG_VERSION"))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                async_linker,
                cache_dir: config.cache_dir,
                cache_refused: AtomicBool::new(false),
                compat,
                profiler: config.profiler,
                _ticker: Ticker { stop },
            }),
        })
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    pub(crate) fn async_linker(&self) -> &Linker<AsyncHostState> {
        &self.inner.async_linker
    }

    /// The profiler the engine was configured with, if any.
    pub fn profiler(&self) -> Option<&Arc<Profiler>> {
        self.inner.profiler.as_ref()
    }

    /// Loads a plugin file: reads it, checks it is a weir operator component,
    /// compiles it (or loads the cached compilation) and prepares instantiation.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read { path: path.to_owned(), source: e })?;
        let name = plugin_name(path);
        self.load_bytes(&name, path, &bytes)
    }

    /// Like [`Engine::load`] for bytes already in memory.
    pub fn load_bytes(&self, name: &str, path: &Path, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let hash = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        crate::plugin::check_is_component(path, bytes)?;
        let (component, from_cache) = self.compile_cached(path, &hash, bytes)?;
        Plugin::new(self, name, path, hash, bytes.len() as u64, component, from_cache, started.elapsed())
    }

    fn compile_cached(&self, path: &Path, hash: &str, bytes: &[u8]) -> Result<(Component, bool), PluginError> {
        let engine = &self.inner.engine;
        let compile = || {
            Component::new(engine, bytes)
                .map_err(|e| PluginError::Compile { path: path.to_owned(), message: format!("{e:#}") })
        };
        let Some(dir) = self.trusted_cache_dir() else {
            return Ok((compile()?, false));
        };
        let file = dir.join(format!("{hash}-{}.cwasm", self.inner.compat));
        if let Some(component) = self.load_artifact(&file) {
            return Ok((component, true));
        }
        let component = compile()?;
        if let Err(e) = self.store_artifact(&file, &component) {
            tracing::warn!(cache = %dir.display(), "could not write the compiled plugin to the cache ({e}); it will be compiled again next time");
        }
        Ok((component, false))
    }

    /// The cache directory, created (mode 0700) when missing, when only
    /// this user can write to it: a cached artifact is loaded as trusted
    /// machine code, so a directory another user can write to is not used
    /// (a warning says so once, and plugins are compiled every time).
    fn trusted_cache_dir(&self) -> Option<&Path> {
        let dir = self.inner.cache_dir.as_deref()?;
        match cache::prepare_dir(dir) {
            Ok(()) => Some(dir),
            Err(why) => {
                if !self.inner.cache_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        cache = %dir.display(),
                        "not using the compile cache: {why}. Plugins are compiled at every load until this is fixed \
                         (or WEIR_CACHE_DIR names a directory of your own)"
                    );
                }
                None
            }
        }
    }

    /// Loads a cached artifact after checking its checksum; any problem
    /// (missing, truncated, corrupt, a symbolic link, writable by another
    /// user) means "compile again".
    fn load_artifact(&self, file: &Path) -> Option<Component> {
        let data = cache::read_own(file)?;
        if data.len() < 32 {
            return None;
        }
        let (sum, artifact) = data.split_at(32);
        if Sha256::digest(artifact).as_slice() != sum {
            tracing::warn!(file = %file.display(), "cached compiled plugin is corrupt; compiling again");
            let _ = std::fs::remove_file(file);
            return None;
        }
        load_verified_artifact(&self.inner.engine, artifact)
    }

    fn store_artifact(&self, file: &Path, component: &Component) -> std::io::Result<()> {
        let artifact = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let mut data = Sha256::digest(&artifact).to_vec();
        data.extend_from_slice(&artifact);
        cache::write_private(file, &data)
    }
}

/// The compile cache's files: only this user's, never through a link.
mod cache {
    use std::fs::{self, DirBuilder, File, OpenOptions};
    use std::io::{self, Read, Write};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    use std::path::Path;

    /// Who may own what the cache holds: this user, or root (whom a user
    /// trusts anyway).
    fn trusted_owner(uid: u32) -> bool {
        uid == rustix::process::geteuid().as_raw() || uid == 0
    }

    /// What is wrong with metadata `meta` of a cache directory or file, if
    /// anything: owned by another user, or writable by group or others.
    fn untrusted(meta: &fs::Metadata) -> Option<String> {
        if !trusted_owner(meta.uid()) {
            return Some(format!(
                "it belongs to user {}, not to this user ({})",
                meta.uid(),
                rustix::process::geteuid().as_raw()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "other users can write to it (mode {:o}; `chmod go-w` it)",
                meta.mode() & 0o7777
            ));
        }
        None
    }

    /// Creates `dir` (mode 0700, with missing parents) and checks that only
    /// this user can write to it.
    pub(super) fn prepare_dir(dir: &Path) -> Result<(), String> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("it cannot be created ({e})"))?;
        let meta = fs::metadata(dir).map_err(|e| format!("it cannot be inspected ({e})"))?;
        if !meta.is_dir() {
            return Err("it is not a directory".to_owned());
        }
        untrusted(&meta).map_or(Ok(()), Err)
    }

    /// The contents of `file` when it is a regular file, not a symbolic
    /// link, of this user's that nobody else can write to.
    pub(super) fn read_own(file: &Path) -> Option<Vec<u8>> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(file)
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        if let Some(why) = untrusted(&meta) {
            tracing::warn!(file = %file.display(), "ignoring a cached compiled plugin: {why}");
            return None;
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut data).ok()?;
        Some(data)
    }

    /// Writes `file` (mode 0600) through a new temporary file beside it and
    /// a rename, neither of which follows a symbolic link planted at
    /// either name.
    pub(super) fn write_private(file: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(data)?;
            fs::rename(&tmp, file)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    #[cfg(test)]
    mod tests {
        use std::os::unix::fs::PermissionsExt;

        use super::*;

        #[test]
        fn a_directory_others_can_write_is_refused() {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("new/cache");
            prepare_dir(&dir).unwrap();
            assert_eq!(
                fs::metadata(&dir).unwrap().mode() & 0o777,
                0o700,
                "created private"
            );
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
            let why = prepare_dir(&dir).unwrap_err();
            assert!(
                why.contains("other users can write to it (mode 777"),
                "{why}"
            );
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
            assert!(
                prepare_dir(&dir).is_err(),
                "a sticky directory lets others plant files"
            );
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            prepare_dir(&dir).unwrap();
        }

        #[test]
        fn links_are_neither_read_nor_written_through() {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("elsewhere");
            fs::write(&target, b"not an artifact").unwrap();
            let entry = dir.path().join("abc.cwasm");
            std::os::unix::fs::symlink(&target, &entry).unwrap();
            assert_eq!(
                read_own(&entry),
                None,
                "a link planted as a cache entry is not read"
            );
            // A link planted at the temporary name is not written through.
            let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
            std::os::unix::fs::symlink(&target, &tmp).unwrap();
            fs::remove_file(&entry).unwrap();
            write_private(&entry, b"artifact").unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"not an artifact");
            assert_eq!(read_own(&entry).unwrap(), b"artifact");
            assert_eq!(fs::symlink_metadata(&entry).unwrap().mode() & 0o777, 0o600);
            // A file others can write is not read.
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).unwrap();
            assert_eq!(read_own(&entry), None);
        }
    }
}

/// Deserializes a compiled artifact whose checksum was verified.
#[allow(unsafe_code)]
fn load_verified_artifact(engine: &wasmtime::Engine, artifact: &[u8]) -> Option<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be an artifact
    // produced by `Component::serialize` of a compatible engine. The bytes
    // come from weir's own cache directory, the file name carries this
    // engine's compatibility hash, and the SHA-256 written beside the
    // artifact at creation was verified just before this call, so the bytes
    // are exactly what this engine configuration serialized.
    unsafe { Component::deserialize(engine, artifact) }.ok()
}

/// The plugin name of a file: its stem, with `_` read as `-` (cargo names
/// `json-filter`'s output `json_filter.wasm`).
pub(crate) fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().replace('_', "-")).unwrap_or_default()
}
