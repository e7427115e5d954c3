//! The last good version of every plugin, kept beside the checkpoints, so
//! that a bad file in the plugin directory never blocks a restart.
//!
//! Hot reload refuses a plugin file that does not validate and rolls back
//! one that fails in its first batches, but the file stays where the user
//! put it. Without a copy of the version that ran, the next start (a crash
//! recovery, a `weir serve` restart) would load that file and fail, for as
//! long as nobody fixes it. The vault holds, under
//! `CHECKPOINT_DIR/PIPELINE/plugins/`:
//!
//! - `SHA256.wasm`: the bytes of each version an operator ran successfully,
//!   content-addressed (one copy however many operators use it);
//! - `OPERATOR.good`: the version the operator last ran successfully (it
//!   opened at start, or a hot-reloaded version passed its probation);
//! - `OPERATOR.bad`: the versions hot reload rejected or rolled back, one
//!   per line, the newest [`MAX_BAD`];
//! - the same two for each source and sink written as a plugin, named by
//!   its section (`sources.NAME.good`, `sinks.NAME.bad`): a hot-reloaded
//!   version is good once a checkpoint it took part in completed, and bad
//!   when it was rejected or failed before that.
//!
//! At start, an operator, source or sink whose plugin file does not load,
//! or holds a version listed as bad, runs its last good version instead,
//! and the run says so ([`weir_events::PluginFallback`]). `weir check` always reads the
//! files as they are. The vault exists only for checkpointed pipelines:
//! without checkpoints there is no recovery to keep going.

use crate::config::Pipeline;
use std::io::Write;
use std::path::{Path, PathBuf};
use weir_wasm::reload::{Candidate, KnownGood};
use weir_wasm::{Engine, Plugin};

/// How many rejected versions are remembered per operator.
pub const MAX_BAD: usize = 16;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct PluginVault {
    dir: PathBuf,
    pipeline: String,
}

impl PluginVault {
    /// The vault of a checkpointed pipeline, `None` without checkpoints.
    pub fn of(p: &Pipeline) -> Option<Self> {
        p.checkpoint.interval?;
        let root = std::path::absolute(&p.checkpoint.dir).unwrap_or_else(|_| p.checkpoint.dir.clone());
        Some(Self { dir: root.join(&p.name).join("plugins"), pipeline: p.name.clone() })
    }

    /// Stores the bytes of a version (a no-op when they are there already).
    pub fn store(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        let file = self.dir.join(format!("{hash}.wasm"));
        if file.is_file() {
            return Ok(());
        }
        write_atomic(&self.dir, &file, bytes)
    }

    /// `operator` ran `hash` successfully: it is what a restart falls back
    /// to. The version it replaces is removed when no operator names it.
    pub fn mark_good(&self, operator: &str, hash: &str) -> std::io::Result<()> {
        if !self.dir.join(format!("{hash}.wasm")).is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("version {hash} was never stored")));
        }
        let before = self.last_good(operator).map(|(h, _)| h);
        if before.as_deref() == Some(hash) {
            // The usual restart: nothing changed, nothing to write or sync.
            return Ok(());
        }
        write_atomic(&self.dir, &self.dir.join(format!("{operator}.good")), hash.as_bytes())?;
        if let Some(old) = before.filter(|old| old != hash) {
            self.remove_unless_named(&old);
        }
        Ok(())
    }

    /// Hot reload rejected or rolled back `hash` for `operator`.
    pub fn mark_bad(&self, operator: &str, hash: &str) -> std::io::Result<()> {
        let file = self.dir.join(format!("{operator}.bad"));
        let mut bad = self.bad(operator);
        if bad.iter().any(|b| b == hash) {
            return Ok(());
        }
        bad.push(hash.to_owned());
        let keep = &bad[bad.len().saturating_sub(MAX_BAD)..];
        write_atomic(&self.dir, &file, keep.join("\n").as_bytes())
    }

    /// Whether hot reload rejected or rolled back `hash` for `operator`.
    pub fn is_bad(&self, operator: &str, hash: &str) -> bool {
        self.bad(operator).iter().any(|b| b == hash)
    }

    fn bad(&self, operator: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("{operator}.bad")))
            .map(|t| t.lines().filter(|l| is_hash(l)).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The last good version of `operator`: its hash and the file holding it.
    pub fn last_good(&self, operator: &str) -> Option<(String, PathBuf)> {
        let hash = std::fs::read_to_string(self.dir.join(format!("{operator}.good"))).ok()?;
        let hash = hash.trim();
        let file = self.dir.join(format!("{hash}.wasm"));
        (is_hash(hash) && file.is_file()).then(|| (hash.to_owned(), file))
    }

    /// Removes stored version `hash` unless a `.good` file names it (best
    /// effort: a leftover file only takes space).
    fn remove_unless_named(&self, hash: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let named = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "good"))
            .any(|p| std::fs::read_to_string(p).is_ok_and(|h| h.trim() == hash));
        if !named {
            let _ = std::fs::remove_file(self.dir.join(format!("{hash}.wasm")));
        }
    }
}

impl KnownGood for PluginVault {
    fn load(&self, engine: &Engine, who: &str, file: &Path) -> Result<Plugin, String> {
        let loaded = Candidate::read(file).map_err(|e| format!("cannot read plugin {}: {e}", file.display())).and_then(|c| {
            let plugin = engine.load_bytes(&c.name, &c.path, &c.bytes).map_err(|e| e.to_string())?;
            self.keep(&plugin.hash, &c.bytes);
            Ok(plugin)
        });
        let reason = match &loaded {
            Ok(plugin) if self.is_bad(who, &plugin.hash) => format!("hot reload refused version {} of this file", plugin.short_hash()),
            Ok(_) => return loaded,
            Err(e) => e.clone(),
        };
        let Some((hash, kept)) = self.last_good(who) else { return loaded };
        let bytes = std::fs::read(&kept).map_err(|e| format!("{reason}; and its last good version {} cannot be read: {e}", kept.display()))?;
        let name = match &loaded {
            Ok(plugin) => plugin.name.clone(),
            Err(_) => file.file_stem().map_or_else(|| who.to_owned(), |s| s.to_string_lossy().replace('_', "-")),
        };
        let plugin = engine.load_bytes(&name, &kept, &bytes).map_err(|e| format!("{reason}; and its last good version does not load either: {e}"))?;
        weir_events::emit(weir_events::PluginFallback { pipeline: &self.pipeline, operator: who, file, reason: &reason, version: weir_wasm::reload::short(&hash), kept: &kept });
        Ok(plugin)
    }

    fn good(&self, who: &str, plugin: &Plugin) {
        if let Err(e) = self.mark_good(who, &plugin.hash) {
            tracing::warn!(pipeline = %self.pipeline, who, "cannot record plugin version {} as the last good one: {e}", plugin.short_hash());
        }
    }

    fn bad(&self, who: &str, plugin: &Plugin) {
        if let Err(e) = self.mark_bad(who, &plugin.hash) {
            tracing::warn!(pipeline = %self.pipeline, who, "cannot record that plugin version {} failed, beside the checkpoints: {e}; a restart may run it again", plugin.short_hash());
        }
    }

    fn keep(&self, hash: &str, bytes: &[u8]) {
        if let Err(e) = self.store(hash, bytes) {
            tracing::warn!(pipeline = %self.pipeline, "cannot keep a copy of plugin version {} beside the checkpoints: {e}", weir_wasm::reload::short(hash));
        }
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes `file` whole or not at all: a temporary file, synced, renamed,
/// and the directory synced.
fn write_atomic(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn keeps_the_last_good_version_and_forgets_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let v = PluginVault { dir: dir.path().join("plugins"), pipeline: "p".into() };
        assert_eq!(v.last_good("sum"), None);
        v.store(A, b"version a").unwrap();
        v.mark_good("sum", A).unwrap();
        assert_eq!(v.last_good("sum").map(|(h, _)| h), Some(A.to_owned()));
        v.store(B, b"version b").unwrap();
        v.mark_good("sum", B).unwrap();
        let (hash, file) = v.last_good("sum").unwrap();
        assert_eq!((hash.as_str(), std::fs::read(file).unwrap()), (B, b"version b".to_vec()));
        assert!(!v.dir.join(format!("{A}.wasm")).exists(), "a version no operator names is removed");
        assert!(v.mark_good("other", A).is_err(), "only stored versions can be good");
        // A version stored for one operator survives another's mark.
        v.store(A, b"version a").unwrap();
        v.mark_good("parse", B).unwrap();
        v.mark_good("sum", A).unwrap();
        assert!(v.last_good("sum").is_some() && v.last_good("parse").is_some());
    }

    #[test]
    fn remembers_bad_versions_per_operator_up_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let v = PluginVault { dir: dir.path().join("plugins"), pipeline: "p".into() };
        v.mark_bad("sum", A).unwrap();
        assert!(v.is_bad("sum", A) && !v.is_bad("sum", B) && !v.is_bad("parse", A));
        for i in 0..MAX_BAD {
            v.mark_bad("sum", &format!("{i:064x}")).unwrap();
        }
        assert!(!v.is_bad("sum", A), "the oldest is forgotten past {MAX_BAD}");
        assert_eq!(v.bad("sum").len(), MAX_BAD);
    }
}
