//! Where a store's checkpoints physically are: a local directory ([`Dir`])
//! or a bucket ([`crate::objects::Objects`]). Both hold, per checkpoint, a
//! "directory" named by [`Kind::dir_name`] with the state files and the
//! manifest; the store's logic (ids, verification, fallback, retention)
//! is written once over this trait.

use crate::{Entry, IN_USE_PREFIX, MANIFEST, StoreError, TMP_SUFFIX};
use crate::manifest::Kind;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use weir_failpoint::{self as failpoint, Failpoints};

/// A stored file of a checkpoint.
pub(crate) struct FileMeta {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// The operations the store needs, per checkpoint directory `name`
/// (`17`, `savepoint-17`).
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// The pipeline's root, for messages and [`crate::CheckpointInfo::dir`]:
    /// a directory, or `s3://BUCKET/PREFIX/PIPELINE`.
    fn root(&self) -> &Path;
    /// Every checkpoint directory, complete or not, by id.
    fn scan(&self) -> Result<Vec<Entry>, StoreError>;
    /// Creates the directory of a new checkpoint; fails if it exists.
    fn create(&self, name: &str) -> Result<(), StoreError>;
    /// Writes a state file whole. Failpoints `disk-full`, `state-file-half`.
    fn write(&self, name: &str, file: &str, bytes: &[u8], failpoints: &Failpoints, id: u64) -> Result<(), StoreError>;
    /// Writes the manifest, which makes the checkpoint complete. Failpoint
    /// `before-completion`.
    fn write_manifest(&self, name: &str, json: &[u8], failpoints: &Failpoints, id: u64) -> Result<(), StoreError>;
    /// Reads a file whole; `Ok(None)` if it does not exist.
    fn read(&self, name: &str, file: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The size and CRC-32 of a file; `Ok(None)` if it does not exist.
    fn checksum(&self, name: &str, file: &str) -> Result<Option<(u64, u32)>, StoreError>;
    /// The files of a checkpoint directory.
    fn files(&self, name: &str) -> Result<Vec<FileMeta>, StoreError>;
    /// Deletes a checkpoint directory, manifest first.
    fn delete(&self, name: &str) -> Result<(), StoreError>;
    /// Removes leftovers of interrupted writes from a complete checkpoint.
    fn remove_temporaries(&self, name: &str) -> Result<(), StoreError>;
    /// Removes the directory of a checkpoint that failed; best effort.
    fn discard(&self, name: &str);
    /// Claims the checkpoints for this process until the backend is
    /// dropped, so no other run writes them ([`crate::claim`]). A directory
    /// needs none: the run lock beside it (`checkpoint.dir`) is its claim.
    fn claim(&self, _timeout: Duration) -> Result<(), StoreError> {
        Ok(())
    }
    /// Why this process lost its claim, once it has.
    fn claim_lost(&self) -> Option<String> {
        None
    }
    /// Marks a checkpoint in use by this process; returns the marker's name.
    fn pin(&self, name: &str) -> Result<String, StoreError>;
    /// Removes a marker.
    fn unpin(&self, name: &str, marker: &str) -> Result<(), StoreError>;
    /// True if a live process pinned the checkpoint; removes markers of
    /// processes known to be gone.
    fn pinned(&self, name: &str) -> Result<bool, StoreError>;
}

/// A marker name unique to this process: `_in-use.PID.N`, and with a host
/// (object stores, shared by hosts) `_in-use.HOST.PID.N`.
pub(crate) fn marker_name(host: Option<&str>) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    match host {
        Some(h) => format!("{IN_USE_PREFIX}{h}.{}.{seq}", std::process::id()),
        None => format!("{IN_USE_PREFIX}{}.{seq}", std::process::id()),
    }
}

/// True if process `pid` of this host runs.
pub(crate) fn process_runs(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Checkpoints in `ROOT/PIPELINE/`: files written to `NAME.tmp`, synced and
/// renamed; directories synced after the manifest's rename.
#[derive(Debug)]
pub(crate) struct Dir {
    pub dir: PathBuf,
}

impl Dir {
    fn path(&self, name: &str, file: &str) -> PathBuf {
        self.dir.join(name).join(file)
    }
}

impl Backend for Dir {
    fn root(&self) -> &Path {
        &self.dir
    }

    fn scan(&self) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        for f in fs::read_dir(&self.dir).map_err(StoreError::io("list directory", &self.dir))? {
            let f = f.map_err(StoreError::io("list directory", &self.dir))?;
            let Some(name) = f.file_name().to_str().map(str::to_owned) else { continue };
            let Some((kind, id)) = Kind::parse_dir_name(&name) else { continue };
            if f.file_type().is_ok_and(|t| t.is_dir()) {
                let complete = f.path().join(MANIFEST).is_file();
                entries.push(Entry { kind, id, name, complete });
            }
        }
        entries.sort_by_key(|e| (e.id, e.kind == Kind::Savepoint));
        Ok(entries)
    }

    fn create(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StoreError::invalid(
                &dir,
                "checkpoint directory already exists; take ids from CheckpointStore::next_id()",
            ),
            _ => StoreError::io("create checkpoint directory", &dir)(e),
        })
    }

    fn write(&self, name: &str, file: &str, bytes: &[u8], failpoints: &Failpoints, id: u64) -> Result<(), StoreError> {
        let path = self.path(name, file);
        let tmp = self.path(name, &format!("{file}{TMP_SUFFIX}"));
        let write = || -> io::Result<()> {
            if let Some(e) = failpoints.error("disk-full", id) {
                return Err(e);
            }
            let mut f = File::create(&tmp)?;
            if failpoints.fires("state-file-half", id) {
                f.write_all(&bytes[..bytes.len() / 2])?;
                f.sync_all()?;
                failpoint::die("state-file-half", id);
            }
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("write", tmp)(e));
        }
        fs::rename(&tmp, &path).map_err(StoreError::io("rename into place", &tmp))
    }

    fn write_manifest(&self, name: &str, json: &[u8], failpoints: &Failpoints, id: u64) -> Result<(), StoreError> {
        let dir = self.dir.join(name);
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!("{MANIFEST}{TMP_SUFFIX}"));
        let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
        f.write_all(json).and_then(|()| f.sync_all()).map_err(StoreError::io("write", &tmp))?;
        failpoints.hit("before-completion", id);
        fs::rename(&tmp, &path).map_err(StoreError::io("rename into place", &tmp))?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)
    }

    fn read(&self, name: &str, file: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(name, file);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }

    fn checksum(&self, name: &str, file: &str) -> Result<Option<(u64, u32)>, StoreError> {
        let path = self.path(name, file);
        match checksum_file(&path) {
            Ok(sum) => Ok(Some(sum)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }

    fn files(&self, name: &str) -> Result<Vec<FileMeta>, StoreError> {
        let dir = self.dir.join(name);
        let mut out = Vec::new();
        for f in fs::read_dir(&dir).map_err(StoreError::io("list directory", &dir))? {
            let f = f.map_err(StoreError::io("list directory", &dir))?;
            let meta = f.metadata().map_err(StoreError::io("list directory", &dir))?;
            if meta.is_file() {
                let modified = meta.modified().map_err(StoreError::io("read metadata of", f.path()))?;
                out.push(FileMeta { name: f.file_name().to_string_lossy().into_owned(), size: meta.len(), modified });
            }
        }
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.dir.join(name);
        remove_file(&dir.join(MANIFEST))?;
        fs::remove_dir_all(&dir).map_err(StoreError::io("delete directory", &dir))
    }

    fn remove_temporaries(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.dir.join(name);
        for f in fs::read_dir(&dir).map_err(StoreError::io("list directory", &dir))? {
            let path = f.map_err(StoreError::io("list directory", &dir))?.path();
            if path.extension().is_some_and(|x| x == &TMP_SUFFIX[1..]) {
                remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn discard(&self, name: &str) {
        let dir = self.dir.join(name);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), "Could not remove the directory of a failed checkpoint: {e}; retention removes it later.");
        }
    }

    fn pin(&self, name: &str) -> Result<String, StoreError> {
        let marker = marker_name(None);
        let path = self.path(name, &marker);
        File::create(&path).map_err(StoreError::io("create in-use marker", &path))?;
        Ok(marker)
    }

    fn unpin(&self, name: &str, marker: &str) -> Result<(), StoreError> {
        remove_file(&self.path(name, marker))
    }

    fn pinned(&self, name: &str) -> Result<bool, StoreError> {
        let dir = self.dir.join(name);
        let mut live = false;
        for f in fs::read_dir(&dir).map_err(StoreError::io("list directory", &dir))? {
            let path = f.map_err(StoreError::io("list directory", &dir))?.path();
            let Some(rest) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(IN_USE_PREFIX)) else {
                continue;
            };
            if rest.split('.').next().and_then(|p| p.parse::<u32>().ok()).is_some_and(process_runs) {
                live = true;
            } else {
                tracing::info!(marker = %path.display(), "Removing the in-use marker of a process that no longer runs.");
                remove_file(&path)?;
            }
        }
        Ok(live)
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

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("delete", path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("sync directory", dir))
}
