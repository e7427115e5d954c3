//! Durable checkpoint storage, on a local directory or in an object store.
//!
//! A pipeline's checkpoints live under `ROOT/PIPELINE/` (or the keys `PREFIX/PIPELINE/` of a
//! bucket, [`CheckpointStore::open_objects`]): checkpoint `17` in `17/`, savepoint
//! `17` in `savepoint-17/` (ids are shared by both kinds and only grow). A checkpoint directory
//! holds state files with names chosen by the caller and a manifest, `_manifest.json`
//! ([`Manifest`]), which lists every file with its size and CRC-32.
//!
//! ## Design
//!
//! * **The manifest is the completion marker.** Every file is written to `NAME.tmp`, synced and
//!   renamed; the manifest is written the same way, last, and the directories are synced
//!   after its rename. A directory without a manifest is an unfinished checkpoint and is never
//!   restored from, whatever else it holds.
//! * **Verify before restoring.** [`CheckpointStore::latest_valid`] checks the newest complete
//!   checkpoint's files against the manifest and falls back to an older one, with a warning
//!   naming the file at fault, when they do not match; [`CheckpointStore::load`] restores from
//!   an explicit choice and fails instead of falling back. [`LoadedCheckpoint::read_file`]
//!   checks again, so corruption after verification is still caught.
//! * **Retention is conservative.** [`CheckpointStore::retain`] deletes old checkpoints, never
//!   savepoints, never a checkpoint pinned by a live process ([`CheckpointStore::pin`]), and
//!   removes the manifest first, so a deletion cut short leaves an incomplete directory rather
//!   than a corrupt complete one.
//! * **Crash tests** kill the process at exact steps through [`weir_failpoint`].
//! * **One logic, two places.** Ids, verification, fallback and retention are written once
//!   over a small backend interface: a directory (files written to `NAME.tmp`, synced,
//!   renamed) or an object store (an object appears whole with its one `PUT`, so the
//!   manifest, put last, still marks completion).
//!
//! One process writes a pipeline's directory at a time ([`CheckpointStore::claim`]); retention assumes that an incomplete
//! directory older than the newest complete checkpoint is abandoned.
//!
//! ```
//! use weir_checkpoint::{CheckpointStore, Kind, Manifest};
//! # fn main() -> Result<(), weir_checkpoint::StoreError> {
//! # let root = tempfile::tempdir().unwrap();
//! let store = CheckpointStore::open(root.path(), "orders")?;
//! let mut writer = store.begin(store.next_id(), Kind::Checkpoint)?;
//! writer.write_file("op-1-0.state", b"keyed state")?;
//! writer.complete(Manifest::new(128, Vec::new()))?;
//!
//! let (latest, warnings) = store.latest_valid()?;
//! let latest = latest.expect("one checkpoint");
//! assert!(warnings.is_empty());
//! assert_eq!(latest.read_file("op-1-0.state")?, b"keyed state");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod backend;
mod claim;
mod error;
mod manifest;
mod objects;

pub use error::StoreError;
pub use manifest::{Committable, FileEntry, Kind, Manifest, SubtaskState, VERSION, VertexKind, VertexState};

use backend::{Backend, Dir};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use weir_failpoint::{self as failpoint, Failpoints};

/// The manifest's file name; its presence marks a checkpoint complete.
pub const MANIFEST: &str = "_manifest.json";
const IN_USE_PREFIX: &str = "_in-use.";
const TMP_SUFFIX: &str = ".tmp";

/// The checkpoints of one pipeline: the directory `ROOT/PIPELINE`, or the keys `PIPELINE/…` of
/// an object store.
#[derive(Debug)]
pub struct CheckpointStore {
    backend: Arc<dyn Backend>,
    pipeline: String,
    failpoints: Arc<Failpoints>,
}

/// A complete checkpoint or savepoint, as found by [`CheckpointStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its id.
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: Kind,
    /// Its directory (`s3://BUCKET/PREFIX/PIPELINE/ID` in an object store).
    pub dir: PathBuf,
    /// When its manifest was written.
    pub completed_at: SystemTime,
    /// The size of all its files, manifest included, in bytes.
    pub bytes: u64,
    /// The size of its in-flight files (`*.inflight`: records an unaligned
    /// barrier overtook), in bytes.
    pub inflight_bytes: u64,
}

/// A checkpoint directory found in a store.
struct Entry {
    kind: Kind,
    id: u64,
    /// Its directory name: `17`, `savepoint-17`.
    name: String,
    complete: bool,
}

impl Entry {
    fn label(&self) -> String {
        format!("{} {}", self.kind, self.id)
    }
}

impl CheckpointStore {
    /// Opens (creating it if needed) the directory of `pipeline` under `root`.
    pub fn open(root: &Path, pipeline: &str) -> Result<CheckpointStore, StoreError> {
        Self::with_failpoints(root, pipeline, failpoint::global().clone())
    }

    pub(crate) fn with_failpoints(
        root: &Path,
        pipeline: &str,
        failpoints: Arc<Failpoints>,
    ) -> Result<Self, StoreError> {
        let dir = root.join(pipeline);
        check_pipeline_name(&dir, pipeline)?;
        fs::create_dir_all(&dir).map_err(StoreError::io("create checkpoint directory", &dir))?;
        Ok(CheckpointStore { backend: Arc::new(Dir { dir }), pipeline: pipeline.to_string(), failpoints })
    }

    /// Opens the checkpoints of `pipeline` in an object store: the keys `PIPELINE/ID/…` below
    /// the store's root. No request is made until the store is used.
    pub fn open_objects(store: weir_objects::Store, pipeline: &str) -> Result<CheckpointStore, StoreError> {
        let backend = objects::Objects::new(store, pipeline)?;
        check_pipeline_name(backend.root(), pipeline)?;
        Ok(CheckpointStore { backend: Arc::new(backend), pipeline: pipeline.to_string(), failpoints: failpoint::global().clone() })
    }

    /// Claims the checkpoints for this run, so that no other run writes them while this store
    /// lives: in an object store, an object renewed every third of `timeout` and taken over
    /// only once it lapsed (its holder stopped renewing it for `timeout`) or its holder is a
    /// process of this host that is gone. A local directory is claimed by the run lock beside
    /// it instead, and this does nothing. [`StoreError::Claimed`] when another run holds it.
    pub fn claim(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.backend.claim(timeout)
    }

    /// Why this run lost its claim ([`CheckpointStore::claim`]) to another, once it has: it
    /// completes no further checkpoint and must stop.
    pub fn claim_lost(&self) -> Option<String> {
        self.backend.claim_lost()
    }

    /// The pipeline's directory, `ROOT/PIPELINE` (`s3://BUCKET/PREFIX/PIPELINE` in an object
    /// store: for messages only).
    pub fn dir(&self) -> &Path {
        self.backend.root()
    }

    /// The next free id: 1 + the highest id of any checkpoint or savepoint directory, complete
    /// or not (1 when there is none, or when the directory cannot be read).
    pub fn next_id(&self) -> u64 {
        self.backend.scan().ok().and_then(|e| e.iter().map(|e| e.id).max()).map_or(1, |id| id + 1)
    }

    /// Starts writing checkpoint `id` (take it from [`CheckpointStore::next_id`]).
    pub fn begin(&self, id: u64, kind: Kind) -> Result<CheckpointWriter, StoreError> {
        let name = kind.dir_name(id);
        self.backend.create(&name)?;
        Ok(CheckpointWriter {
            backend: self.backend.clone(),
            name,
            id,
            kind,
            pipeline: self.pipeline.clone(),
            files: Vec::new(),
            failpoints: self.failpoints.clone(),
            done: false,
        })
    }

    /// Complete checkpoints and savepoints, oldest first, without reading their files.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>, StoreError> {
        self.backend
            .scan()?
            .into_iter()
            .filter(|e| e.complete)
            .map(|e| {
                let files = self.backend.files(&e.name)?;
                let completed_at = files.iter().find(|f| f.name == MANIFEST).map_or(SystemTime::UNIX_EPOCH, |f| f.modified);
                let bytes = files.iter().map(|f| f.size).sum();
                let inflight_bytes = files.iter().filter(|f| f.name.ends_with(".inflight")).map(|f| f.size).sum();
                Ok(CheckpointInfo { id: e.id, kind: e.kind, dir: self.backend.root().join(&e.name), completed_at, bytes, inflight_bytes })
            })
            .collect()
    }

    /// The newest complete checkpoint or savepoint whose manifest parses and whose files all
    /// have the recorded size and checksum, or `None`. Each broken one on the way is skipped
    /// with a warning, returned for the caller to report (the pipeline logs it once, with the
    /// pipeline's name, as a `weir_events::CheckpointUnusable` event).
    pub fn latest_valid(&self) -> Result<(Option<LoadedCheckpoint>, Vec<String>), StoreError> {
        let candidates: Vec<Entry> = self.backend.scan()?.into_iter().filter(|e| e.complete).rev().collect();
        let mut warnings = Vec::new();
        for (i, e) in candidates.iter().enumerate() {
            match verify(&*self.backend, &e.name, Some((e.kind, e.id))) {
                Ok(manifest) => return Ok((Some(self.loaded(self.backend.clone(), &e.name, manifest)), warnings)),
                Err(err) => {
                    let next = candidates.get(i + 1).map_or("no older checkpoint to fall back to".to_string(), |n| {
                        format!("falling back to {}", n.label())
                    });
                    let dir = self.backend.root().join(&e.name);
                    let reason = match &err {
                        StoreError::Corrupt { path, detail } => {
                            format!("{} is corrupt: {detail}", path.strip_prefix(&dir).unwrap_or(path).display())
                        }
                        other => other.to_string(),
                    };
                    warnings.push(format!("{} ({}) is unusable: {reason}; {next}", e.label(), dir.display()));
                }
            }
        }
        Ok((None, warnings))
    }

    /// Every checkpoint and savepoint directory, complete or not, oldest first, as
    /// `checkpoint 3` or `checkpoint 4 (no manifest)`: what a store holds when
    /// [`CheckpointStore::latest_valid`] found nothing usable in it.
    pub fn found(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .backend
            .scan()?
            .into_iter()
            .map(|e| if e.complete { e.label() } else { format!("{} (no manifest)", e.label()) })
            .collect())
    }

    /// An explicitly chosen checkpoint: `spec` is an id (`17`), `savepoint-17`, or the path of
    /// a local checkpoint directory of any pipeline (`./17` for a relative one). Fails, naming
    /// the file, if it is incomplete or corrupt; it never falls back.
    pub fn load(&self, spec: &str) -> Result<LoadedCheckpoint, StoreError> {
        // A path names a local directory of any name; an id one of this store's.
        let (backend, name, expect, exists): (Arc<dyn Backend>, String, _, _) = match Kind::parse_dir_name(spec) {
            Some(expect) => (self.backend.clone(), spec.to_string(), Some(expect), None),
            None => {
                let dir = PathBuf::from(spec);
                let name = dir.file_name().map_or(spec.to_string(), |n| n.to_string_lossy().into_owned());
                let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
                (Arc::new(Dir { dir: parent }), name.clone(), Kind::parse_dir_name(&name), Some(dir.is_dir()))
            }
        };
        let entries = backend.scan().unwrap_or_default();
        if !exists.unwrap_or_else(|| entries.iter().any(|e| e.name == name)) {
            let available = entries.iter().filter(|e| e.complete).map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
            let available = if available.is_empty() { "none".to_string() } else { available };
            return Err(StoreError::NotFound { spec: name, dir: backend.root().to_path_buf(), available });
        }
        let manifest = verify(&*backend, &name, expect)?;
        Ok(self.loaded(backend, &name, manifest))
    }

    fn loaded(&self, backend: Arc<dyn Backend>, name: &str, manifest: Manifest) -> LoadedCheckpoint {
        LoadedCheckpoint { dir: backend.root().join(name), name: name.to_string(), manifest, backend }
    }

    /// Deletes complete checkpoints older than the newest `keep`, and incomplete directories
    /// older than the newest complete checkpoint or savepoint; removes stray temp files from the
    /// others. Never deletes a savepoint or a directory pinned by a live process (removing
    /// markers left by dead ones). Returns the deleted ids, oldest first.
    pub fn retain(&self, keep: usize) -> Result<Vec<u64>, StoreError> {
        let entries = self.backend.scan()?;
        let newest_complete = entries.iter().filter(|e| e.complete).map(|e| e.id).max();
        let checkpoints = entries.iter().filter(|e| e.complete && e.kind == Kind::Checkpoint).count();
        let mut surplus = checkpoints.saturating_sub(keep);
        let mut deleted = Vec::new();
        for e in &entries {
            let doomed = if e.complete {
                let old = e.kind == Kind::Checkpoint && surplus > 0;
                surplus -= usize::from(old);
                old
            } else {
                newest_complete.is_some_and(|n| e.id < n)
            };
            let dir = self.backend.root().join(&e.name);
            if self.backend.pinned(&e.name)? {
                if doomed {
                    tracing::debug!(checkpoint = e.id, dir = %dir.display(), "Checkpoint kept beyond retention because a running process uses it.");
                }
            } else if doomed {
                self.backend.delete(&e.name)?;
                tracing::info!(checkpoint = e.id, dir = %dir.display(), complete = e.complete, "Deleted checkpoint directory.");
                deleted.push(e.id);
            } else if e.complete {
                self.backend.remove_temporaries(&e.name)?;
            }
        }
        Ok(deleted)
    }
}

/// A pipeline name usable as a directory name or key part.
fn check_pipeline_name(dir: &Path, pipeline: &str) -> Result<(), StoreError> {
    if valid_name(pipeline) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            dir,
            "invalid pipeline name for a checkpoint directory: use a plain name without '/', not starting with '.' or '_'",
        ))
    }
}

/// Keeps a checkpoint from deletion by [`CheckpointStore::retain`]; removes its marker when
/// dropped.
#[derive(Debug)]
pub struct Pin {
    marker: Option<(Arc<dyn Backend>, String, String)>,
}

impl Pin {
    /// Removes the marker now, reporting a failure (dropping ignores it).
    pub fn unpin(mut self) -> Result<(), StoreError> {
        self.marker.take().map_or(Ok(()), |(b, name, marker)| b.unpin(&name, &marker))
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some((b, name, marker)) = self.marker.take()
            && let Err(e) = b.unpin(&name, &marker)
        {
            tracing::warn!("{e}");
        }
    }
}

/// A checkpoint being written. Dropping it without [`CheckpointWriter::complete`] removes
/// the directory, like [`CheckpointWriter::abort`].
#[derive(Debug)]
pub struct CheckpointWriter {
    backend: Arc<dyn Backend>,
    name: String,
    id: u64,
    kind: Kind,
    pipeline: String,
    files: Vec<FileEntry>,
    failpoints: Arc<Failpoints>,
    done: bool,
}

impl CheckpointWriter {
    /// The checkpoint's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The directory being written (for messages).
    pub fn dir(&self) -> PathBuf {
        self.backend.root().join(&self.name)
    }

    /// Writes `bytes` to file `name` (a local file via `name.tmp`, synced, renamed; an object
    /// with one `PUT`) and records its size and checksum for the manifest. Failpoints:
    /// `disk-full`, `state-file-half`.
    pub fn write_file(&mut self, name: &str, bytes: &[u8]) -> Result<FileEntry, StoreError> {
        let path = self.dir().join(name);
        if !valid_name(name) {
            return Err(StoreError::invalid(
                path,
                "invalid state file name: use a plain file name without '/', not starting with '.' or '_', not ending in .tmp",
            ));
        }
        if self.files.iter().any(|f| f.name == name) {
            return Err(StoreError::invalid(path, "state file written twice in one checkpoint"));
        }
        self.backend.write(&self.name, name, bytes, &self.failpoints, self.id)?;
        let entry = FileEntry { name: name.to_string(), bytes: bytes.len() as u64, crc32: crc32fast::hash(bytes) };
        self.files.push(entry.clone());
        Ok(entry)
    }

    /// Writes the manifest, completing the checkpoint. Sets its `version`, `pipeline`, `id`,
    /// `kind` and `files`; the caller gives the rest. Failpoint: `before-completion`. On error
    /// the directory is removed.
    pub fn complete(mut self, mut manifest: Manifest) -> Result<CheckpointInfo, StoreError> {
        manifest.version = VERSION;
        manifest.pipeline = self.pipeline.clone();
        manifest.id = self.id;
        manifest.kind = self.kind;
        manifest.files = std::mem::take(&mut self.files);
        if let Some(detail) = manifest.unlisted_state_file() {
            return Err(StoreError::invalid(self.dir().join(MANIFEST), detail));
        }
        let json = manifest.encode();
        self.backend.write_manifest(&self.name, &json, &self.failpoints, self.id)?;
        self.done = true;
        let bytes = manifest.total_bytes() + json.len() as u64;
        Ok(CheckpointInfo {
            id: self.id,
            kind: self.kind,
            dir: self.dir(),
            completed_at: SystemTime::now(),
            bytes,
            inflight_bytes: manifest.files.iter().filter(|f| f.name.ends_with(".inflight")).map(|f| f.bytes).sum(),
        })
    }

    /// Removes the partly written directory (a failed checkpoint).
    pub fn abort(self) {}
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if !self.done {
            self.backend.discard(&self.name);
        }
    }
}

/// A verified checkpoint, ready to restore from.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// Its directory (`s3://BUCKET/PREFIX/PIPELINE/ID` in an object store), for messages.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    name: String,
    backend: Arc<dyn Backend>,
}

impl LoadedCheckpoint {
    /// Reads file `name` of the checkpoint, checking its size and checksum again.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(name);
        let Some(entry) = self.manifest.file(name) else {
            return Err(StoreError::invalid(path, "no such file in the checkpoint's manifest"));
        };
        let Some(bytes) = self.backend.read(&self.name, name)? else { return Err(missing(&path)) };
        check(&path, entry, bytes.len() as u64, crc32fast::hash(&bytes))?;
        Ok(bytes)
    }

    /// Marks this checkpoint as in use by this process, e.g. during a restore:
    /// [`CheckpointStore::retain`] does not delete it while the returned [`Pin`] lives and this
    /// process runs. The marker is a file `_in-use.PID.N` (liveness is checked in `/proc`), or
    /// in an object store `_in-use.HOST.PID.N` (one of another host is always honoured).
    pub fn pin(&self) -> Result<Pin, StoreError> {
        let marker = self.backend.pin(&self.name)?;
        Ok(Pin { marker: Some((self.backend.clone(), self.name.clone(), marker)) })
    }
}

/// Checks the manifest of checkpoint directory `name` and every file it lists; `expect` is
/// the kind and id the directory's name promises.
fn verify(backend: &dyn Backend, name: &str, expect: Option<(Kind, u64)>) -> Result<Manifest, StoreError> {
    let dir = backend.root().join(name);
    let path = dir.join(MANIFEST);
    let Some(json) = backend.read(name, MANIFEST)? else { return Err(StoreError::Incomplete { dir }) };
    let manifest = Manifest::decode(&json).map_err(|e| StoreError::corrupt(&path, e))?;
    if let Some((kind, id)) = expect
        && (kind, id) != (manifest.kind, manifest.id)
    {
        return Err(StoreError::corrupt(
            path,
            format!("the manifest describes {} {} but the directory is {kind} {id}", manifest.kind, manifest.id),
        ));
    }
    for entry in &manifest.files {
        let file = dir.join(&entry.name);
        let Some((bytes, crc)) = backend.checksum(name, &entry.name)? else { return Err(missing(&file)) };
        check(&file, entry, bytes, crc)?;
    }
    Ok(manifest)
}

/// Compares a file's size and checksum with its manifest entry.
fn check(path: &Path, entry: &FileEntry, bytes: u64, crc: u32) -> Result<(), StoreError> {
    if bytes != entry.bytes {
        let what = if bytes < entry.bytes { "truncated" } else { "size mismatch" };
        return Err(StoreError::corrupt(path, format!("{what} (recorded {} bytes, found {bytes})", entry.bytes)));
    }
    if crc != entry.crc32 {
        return Err(StoreError::corrupt(
            path,
            format!("checksum mismatch (recorded {:#010x}, found {crc:#010x})", entry.crc32),
        ));
    }
    Ok(())
}

fn missing(path: &Path) -> StoreError {
    StoreError::corrupt(path, "a file listed in the manifest is missing")
}

/// A plain file name the store may create: no separators, not hidden, not reserved.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with(['.', '_'])
        && !name.ends_with(TMP_SUFFIX)
}

#[cfg(test)]
mod tests;
