//! Durable checkpoint storage on a local directory.
//!
//! A pipeline's checkpoints live under `ROOT/PIPELINE/`: checkpoint `17` in `17/`, savepoint
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
//!
//! One process writes a pipeline's directory at a time; retention assumes that an incomplete
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

mod error;
mod manifest;

pub use error::StoreError;
pub use manifest::{Committable, FileEntry, Kind, Manifest, SubtaskState, VERSION, VertexKind, VertexState};

use weir_failpoint::{self as failpoint, Failpoints};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The manifest's file name; its presence marks a checkpoint complete.
pub const MANIFEST: &str = "_manifest.json";
const IN_USE_PREFIX: &str = "_in-use.";
const TMP_SUFFIX: &str = ".tmp";

/// The checkpoints of one pipeline: the directory `ROOT/PIPELINE`.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
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
    /// Its directory.
    pub dir: PathBuf,
    /// When its manifest was written (the modification time of `_manifest.json`).
    pub completed_at: SystemTime,
    /// The size of all its files, manifest included, in bytes.
    pub bytes: u64,
    /// The size of its in-flight files (`*.inflight`: records an unaligned
    /// barrier overtook), in bytes.
    pub inflight_bytes: u64,
}

/// A checkpoint directory found on disk.
struct Entry {
    kind: Kind,
    id: u64,
    dir: PathBuf,
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
        if !valid_name(pipeline) {
            return Err(StoreError::invalid(
                dir,
                "invalid pipeline name for a checkpoint directory: use a plain name without '/', not starting with '.' or '_'",
            ));
        }
        fs::create_dir_all(&dir).map_err(StoreError::io("create checkpoint directory", &dir))?;
        Ok(CheckpointStore { dir, pipeline: pipeline.to_string(), failpoints })
    }

    /// The pipeline's directory, `ROOT/PIPELINE`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next free id: 1 + the highest id of any checkpoint or savepoint directory, complete
    /// or not (1 when there is none, or when the directory cannot be read).
    pub fn next_id(&self) -> u64 {
        scan(&self.dir).ok().and_then(|e| e.iter().map(|e| e.id).max()).map_or(1, |id| id + 1)
    }

    /// Starts writing checkpoint `id` (take it from [`CheckpointStore::next_id`]).
    pub fn begin(&self, id: u64, kind: Kind) -> Result<CheckpointWriter, StoreError> {
        let dir = self.dir.join(kind.dir_name(id));
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StoreError::invalid(
                &dir,
                "checkpoint directory already exists; take ids from CheckpointStore::next_id()",
            ),
            _ => StoreError::io("create checkpoint directory", &dir)(e),
        })?;
        Ok(CheckpointWriter {
            dir,
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
        scan(&self.dir)?
            .into_iter()
            .filter(|e| e.complete)
            .map(|e| {
                let manifest = e.dir.join(MANIFEST);
                let completed_at = fs::metadata(&manifest)
                    .and_then(|m| m.modified())
                    .map_err(StoreError::io("read metadata of", &manifest))?;
                let mut bytes = 0;
                let mut inflight_bytes = 0;
                for f in fs::read_dir(&e.dir).map_err(StoreError::io("list directory", &e.dir))? {
                    let f = f.map_err(StoreError::io("list directory", &e.dir))?;
                    let meta = f.metadata().map_err(StoreError::io("list directory", &e.dir))?;
                    let len = if meta.is_file() { meta.len() } else { 0 };
                    bytes += len;
                    if f.file_name().to_string_lossy().ends_with(".inflight") {
                        inflight_bytes += len;
                    }
                }
                Ok(CheckpointInfo { id: e.id, kind: e.kind, dir: e.dir, completed_at, bytes, inflight_bytes })
            })
            .collect()
    }

    /// The newest complete checkpoint or savepoint whose manifest parses and whose files all
    /// have the recorded size and checksum, or `None`. Each broken one on the way is skipped
    /// with a warning, returned for the caller to report (the pipeline logs it once, with the
    /// pipeline's name, as a `weir_events::CheckpointUnusable` event).
    pub fn latest_valid(&self) -> Result<(Option<LoadedCheckpoint>, Vec<String>), StoreError> {
        let candidates: Vec<Entry> = scan(&self.dir)?.into_iter().filter(|e| e.complete).rev().collect();
        let mut warnings = Vec::new();
        for (i, e) in candidates.iter().enumerate() {
            match verify(&e.dir, Some((e.kind, e.id))) {
                Ok(manifest) => return Ok((Some(LoadedCheckpoint { dir: e.dir.clone(), manifest }), warnings)),
                Err(err) => {
                    let next = candidates.get(i + 1).map_or("no older checkpoint to fall back to".to_string(), |n| {
                        format!("falling back to {}", n.label())
                    });
                    let reason = match &err {
                        StoreError::Corrupt { path, detail } => {
                            format!("{} is corrupt: {detail}", path.strip_prefix(&e.dir).unwrap_or(path).display())
                        }
                        other => other.to_string(),
                    };
                    warnings.push(format!("{} ({}) is unusable: {reason}; {next}", e.label(), e.dir.display()));
                }
            }
        }
        Ok((None, warnings))
    }

    /// Every checkpoint and savepoint directory, complete or not, oldest first, as
    /// `checkpoint 3` or `checkpoint 4 (no manifest)`: what a store holds when
    /// [`CheckpointStore::latest_valid`] found nothing usable in it.
    pub fn found(&self) -> Result<Vec<String>, StoreError> {
        Ok(scan(&self.dir)?
            .into_iter()
            .map(|e| if e.complete { e.label() } else { format!("{} (no manifest)", e.label()) })
            .collect())
    }

    /// An explicitly chosen checkpoint: `spec` is an id (`17`), `savepoint-17`, or the path of
    /// a checkpoint directory of any pipeline (`./17` for a relative one). Fails, naming the
    /// file, if it is incomplete or corrupt; it never falls back.
    pub fn load(&self, spec: &str) -> Result<LoadedCheckpoint, StoreError> {
        let (dir, expect) = match Kind::parse_dir_name(spec) {
            Some(expect) => (self.dir.join(spec), Some(expect)),
            None => {
                let dir = PathBuf::from(spec);
                let expect = dir.file_name().and_then(|n| n.to_str()).and_then(Kind::parse_dir_name);
                (dir, expect)
            }
        };
        if !dir.is_dir() {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let available = scan(parent)
                .ok()
                .map(|e| e.iter().filter(|e| e.complete).map(|e| e.kind.dir_name(e.id)).collect::<Vec<_>>().join(", "));
            let spec = dir.file_name().map_or(spec.to_string(), |n| n.to_string_lossy().into_owned());
            let available = available.filter(|a| !a.is_empty()).unwrap_or_else(|| "none".to_string());
            return Err(StoreError::NotFound { spec, dir: parent.to_path_buf(), available });
        }
        let manifest = verify(&dir, expect)?;
        Ok(LoadedCheckpoint { dir, manifest })
    }

    /// Deletes complete checkpoints older than the newest `keep`, and incomplete directories
    /// older than the newest complete checkpoint or savepoint; removes stray temp files from the
    /// others. Never deletes a savepoint or a directory pinned by a live process (removing
    /// markers left by dead ones). Returns the deleted ids, oldest first.
    pub fn retain(&self, keep: usize) -> Result<Vec<u64>, StoreError> {
        let entries = scan(&self.dir)?;
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
            if live_pin(&e.dir)? {
                if doomed {
                    tracing::debug!(checkpoint = e.id, dir = %e.dir.display(), "Checkpoint kept beyond retention because a running process uses it.");
                }
            } else if doomed {
                delete_dir(&e.dir)?;
                tracing::info!(checkpoint = e.id, dir = %e.dir.display(), complete = e.complete, "Deleted checkpoint directory.");
                deleted.push(e.id);
            } else if e.complete {
                for f in fs::read_dir(&e.dir).map_err(StoreError::io("list directory", &e.dir))? {
                    let path = f.map_err(StoreError::io("list directory", &e.dir))?.path();
                    if path.extension().is_some_and(|x| x == &TMP_SUFFIX[1..]) {
                        remove_file(&path)?;
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Marks `checkpoint_dir` (of any pipeline) as in use by this process, e.g. during a
    /// restore: [`CheckpointStore::retain`] does not delete it while the returned [`Pin`] lives
    /// and this process runs. The marker is `_in-use.PID.N`; liveness is checked in `/proc`.
    pub fn pin(&self, checkpoint_dir: &Path) -> Result<Pin, StoreError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!("{IN_USE_PREFIX}{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let marker = checkpoint_dir.join(name);
        File::create(&marker).map_err(StoreError::io("create in-use marker", &marker))?;
        Ok(Pin { marker: Some(marker) })
    }
}

/// Keeps a checkpoint from deletion by [`CheckpointStore::retain`]; removes its marker when
/// dropped.
#[derive(Debug)]
pub struct Pin {
    marker: Option<PathBuf>,
}

impl Pin {
    /// Removes the marker now, reporting a failure (dropping ignores it).
    pub fn unpin(mut self) -> Result<(), StoreError> {
        self.marker.take().map_or(Ok(()), |m| remove_file(&m))
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(m) = self.marker.take()
            && let Err(e) = remove_file(&m)
        {
            tracing::warn!("{e}");
        }
    }
}

/// A checkpoint being written. Dropping it without [`CheckpointWriter::complete`] removes
/// the directory, like [`CheckpointWriter::abort`].
#[derive(Debug)]
pub struct CheckpointWriter {
    dir: PathBuf,
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

    /// The directory being written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` to file `name` (via `name.tmp`, synced, renamed) and records its size
    /// and checksum for the manifest. Failpoints: `disk-full`, `state-file-half`.
    pub fn write_file(&mut self, name: &str, bytes: &[u8]) -> Result<FileEntry, StoreError> {
        let path = self.dir.join(name);
        if !valid_name(name) {
            return Err(StoreError::invalid(
                path,
                "invalid state file name: use a plain file name without '/', not starting with '.' or '_', not ending in .tmp",
            ));
        }
        if self.files.iter().any(|f| f.name == name) {
            return Err(StoreError::invalid(path, "state file written twice in one checkpoint"));
        }
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let write = || -> io::Result<()> {
            if let Some(e) = self.failpoints.error("disk-full", self.id) {
                return Err(e);
            }
            let mut f = File::create(&tmp)?;
            if self.failpoints.fires("state-file-half", self.id) {
                f.write_all(&bytes[..bytes.len() / 2])?;
                f.sync_all()?;
                failpoint::die("state-file-half", self.id);
            }
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("write", tmp)(e));
        }
        fs::rename(&tmp, &path).map_err(StoreError::io("rename into place", &tmp))?;
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
        let path = self.dir.join(MANIFEST);
        if let Some(detail) = manifest.unlisted_state_file() {
            return Err(StoreError::invalid(path, detail));
        }
        let json = manifest.encode();
        let tmp = self.dir.join(format!("{MANIFEST}{TMP_SUFFIX}"));
        let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
        f.write_all(&json).and_then(|()| f.sync_all()).map_err(StoreError::io("write", &tmp))?;
        self.failpoints.hit("before-completion", self.id);
        fs::rename(&tmp, &path).map_err(StoreError::io("rename into place", &tmp))?;
        sync_dir(&self.dir)?;
        sync_dir(self.dir.parent().unwrap_or(Path::new(".")))?;
        self.done = true;
        let bytes = manifest.total_bytes() + json.len() as u64;
        Ok(CheckpointInfo {
            id: self.id,
            kind: self.kind,
            dir: self.dir.clone(),
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
        if !self.done
            && let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), "Could not remove the directory of a failed checkpoint: {e}; retention removes it later.");
        }
    }
}

/// A verified checkpoint, ready to restore from.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl LoadedCheckpoint {
    /// Reads file `name` of the checkpoint, checking its size and checksum again.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(name);
        let Some(entry) = self.manifest.file(name) else {
            return Err(StoreError::invalid(path, "no such file in the checkpoint's manifest"));
        };
        let bytes = fs::read(&path).map_err(|e| missing_or_io(&path, e))?;
        check(&path, entry, bytes.len() as u64, crc32fast::hash(&bytes))?;
        Ok(bytes)
    }
}

/// Checks the manifest of `dir` and every file it lists; `expect` is the kind and id the
/// directory's name promises.
fn verify(dir: &Path, expect: Option<(Kind, u64)>) -> Result<Manifest, StoreError> {
    let path = dir.join(MANIFEST);
    let json = match fs::read(&path) {
        Ok(json) => json,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Incomplete { dir: dir.to_path_buf() }),
        Err(e) => return Err(StoreError::io("read", path)(e)),
    };
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
        let (bytes, crc) = checksum_file(&file).map_err(|e| missing_or_io(&file, e))?;
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

fn missing_or_io(path: &Path, e: io::Error) -> StoreError {
    match e.kind() {
        io::ErrorKind::NotFound => StoreError::corrupt(path, "a file listed in the manifest is missing"),
        _ => StoreError::io("read", path)(e),
    }
}

/// The size and CRC-32 of a file, read in chunks.
fn checksum_file(path: &Path) -> io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0; 64 << 10];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((total, hasher.finalize())),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The checkpoint directories in `dir`, by id.
fn scan(dir: &Path) -> Result<Vec<Entry>, StoreError> {
    let mut entries = Vec::new();
    for f in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
        let f = f.map_err(StoreError::io("list directory", dir))?;
        let Some((kind, id)) = f.file_name().to_str().and_then(Kind::parse_dir_name) else { continue };
        if f.file_type().is_ok_and(|t| t.is_dir()) {
            let complete = f.path().join(MANIFEST).is_file();
            entries.push(Entry { kind, id, dir: f.path(), complete });
        }
    }
    entries.sort_by_key(|e| (e.id, e.kind == Kind::Savepoint));
    Ok(entries)
}

/// True if a live process pinned `dir`; removes markers of dead processes.
fn live_pin(dir: &Path) -> Result<bool, StoreError> {
    let mut live = false;
    for f in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
        let path = f.map_err(StoreError::io("list directory", dir))?.path();
        let Some(rest) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(IN_USE_PREFIX)) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| p == std::process::id() || Path::new("/proc").join(p.to_string()).exists()) {
            live = true;
        } else {
            tracing::info!(marker = %path.display(), "Removing the in-use marker of a process that no longer runs.");
            remove_file(&path)?;
        }
    }
    Ok(live)
}

/// Deletes a checkpoint directory, manifest first.
fn delete_dir(dir: &Path) -> Result<(), StoreError> {
    remove_file(&dir.join(MANIFEST))?;
    fs::remove_dir_all(dir).map_err(StoreError::io("delete directory", dir))
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("delete", path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("sync directory", dir))
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
