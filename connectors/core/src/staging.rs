//! Exactly-once staging: one mechanism for every transactional sink.
//!
//! A transactional sink must not let anything written after the checkpoint
//! it will restart from become visible, yet must be able to publish, after
//! a crash, everything a completed checkpoint covers. The file, Kafka and
//! PostgreSQL sinks all do this the same way, through this module: the
//! records of each checkpoint *epoch* are kept in a local file until the
//! checkpoint is complete. Only what "publish" means belongs to a sink
//! (append the file to the output, commit or re-send a Kafka transaction,
//! `COPY` the rows in one PostgreSQL transaction with its progress row).
//!
//! # The life of an epoch
//!
//! 1. **Write.** A [`Stage`] appends the epoch's bytes ([`Stage::write`]) or
//!    whole batches of frames ([`Stage::write_batch`], read back with
//!    [`Sealed::batches`]) to an *in-progress* file, created at the first
//!    write.
//! 2. **Seal** at the checkpoint barrier (`pre_commit`): [`Stage::seal`]
//!    flushes the buffer, fsyncs the file, renames it to the *sealed* name
//!    under the checkpoint's id and fsyncs the directory, in that order, so
//!    a sealed file is complete and durable before the checkpoint can name
//!    it. It returns a [`Sealed`]: what the sink's checkpoint handle stores
//!    (an epoch without data is sealed too, with no file).
//! 3. **Publish** once the checkpoint is complete (`commit`): the sink does
//!    its part, reading [`Sealed::open`] or [`Sealed::batches`], then calls
//!    [`Sealed::remove`], which deletes the file and fsyncs the directory.
//!    A publish must be idempotent: it is repeated after a crash between
//!    completion and commit. A missing sealed file therefore means
//!    "published before", and each sink checks that against its
//!    destination (the output's length, the Kafka commit marker, the
//!    PostgreSQL progress row).
//! 4. **Replay** on restore (`start`): [`Recovery`] decodes the handles of
//!    the checkpoint the run resumes from and checks that every path they
//!    name is the sink's own (a checkpoint can be edited or copied from
//!    another pipeline); the sink publishes each of them again, then
//!    [`Recovery::finish`] applies the cleanup rule below.
//!
//! # The cleanup rule
//!
//! What is deleted, and when, is the same for every sink:
//!
//! - a **published** epoch's file: at once, by [`Sealed::remove`];
//! - on **start** (fresh or restored), once the restored handles are
//!   published: every other staging file of this subtask's own area and of
//!   every area a restored handle names (the subtasks of an earlier
//!   parallelism this one stands in for). These are epochs sealed after the
//!   restored checkpoint (their records are sent again by the sources),
//!   epochs of earlier runs, and in-progress files a crash left half
//!   written. Nothing in these areas is needed any more;
//! - on **close**: the in-progress file ([`Stage::discard`]); records not
//!   sealed are dropped, sealed epochs stay for a later commit or restore.
//!
//! # Layout
//!
//! An [`Area`] is a directory and a name stem; every file this module
//! writes is `STEM.RUN.inprogress` or `STEM.CHECKPOINT.RUN.sealed` in it,
//! where `RUN` is eight hex digits that tell this sink instance's files
//! from those of an earlier run that used the same checkpoint ids. The
//! Kafka and PostgreSQL sinks keep one directory per sink with the subtask
//! index as the stem ([`Area::subtask`]); the file sink keeps hidden files
//! next to its output ([`Area::beside`]). Files of other stems in the same
//! directory are never touched.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use weir_connector::Committable;
//! use weir_connector::staging::{self, Area, Recovery, Sealed, Stage, StagedHandle};
//!
//! /// A sink's handle: its area and the epoch the checkpoint covers.
//! #[derive(Serialize, Deserialize)]
//! struct Handle {
//!     area: Area,
//!     epoch: Sealed,
//! }
//!
//! impl StagedHandle for Handle {
//!     fn area(&self) -> &Area {
//!         &self.area
//!     }
//!
//!     fn sealed(&self) -> Vec<&Sealed> {
//!         vec![&self.epoch]
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let area = Area::subtask(dir.path(), 0);
//! area.create().unwrap();
//! let mut stage = Stage::new(area.clone(), 64 * 1024);
//! stage.write_batch(b"frames of a batch", 3).unwrap();
//! // pre_commit: seal, and store the handle in the checkpoint.
//! let epoch = stage.seal(7).unwrap();
//! let handle = staging::encode_handle(&Handle { area: area.clone(), epoch }).unwrap();
//! // Records after the barrier, then a crash before the commit.
//! stage.write_batch(b"after the checkpoint", 1).unwrap();
//! drop(stage);
//!
//! // The restart publishes checkpoint 7 again and discards the rest. The
//! // handle may only name this sink's own area.
//! let recovered = [Committable { checkpoint: 7, handle }];
//! let recovery = Recovery::<Handle>::new("example", Some(&recovered), |h| h.area.check_subtask_in(dir.path())).unwrap();
//! for (_, handle) in recovery.handles() {
//!     let mut batches = handle.epoch.batches().unwrap();
//!     assert_eq!(batches.next_batch().unwrap(), Some(&b"frames of a batch"[..]));
//!     assert_eq!(batches.next_batch().unwrap(), None);
//!     handle.epoch.remove().unwrap();
//! }
//! recovery.finish(Some(&area)).unwrap();
//! assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Committable, ConnectorError};

/// Where a sink subtask stages its epochs: files named `STEM.…` in `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    /// The directory.
    pub dir: PathBuf,
    /// The prefix of every staging file of this area.
    pub stem: String,
}

/// What a file in an [`Area`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An epoch being written (or left half-written by a crash).
    InProgress,
    /// An epoch sealed by the checkpoint with this id.
    Sealed(u64),
}

impl Area {
    /// Subtask `subtask`'s area in a directory shared by a sink's subtasks.
    pub fn subtask(dir: impl Into<PathBuf>, subtask: u32) -> Self {
        Self { dir: dir.into(), stem: subtask.to_string() }
    }

    /// Hidden files next to `path` (`.NAME.…`, `NAME` being its file name);
    /// `None` when `path` has no file name or it is not UTF-8.
    pub fn beside(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(Self { dir: dir.to_path_buf(), stem: format!(".{name}") })
    }

    /// The area's stem is a plain part of a file name (not empty, no path
    /// separator, no NUL), so every file of the area is in [`Area::dir`].
    pub fn check(&self) -> Result<(), String> {
        let stem = self.stem.as_str();
        if stem.is_empty() || stem.contains(['/', '\0']) {
            return Err(format!(
                "the staging area {} has the file-name prefix {stem:?}, which is not a plain name",
                self.describe()
            ));
        }
        Ok(())
    }

    /// `Ok` when this is the area of some subtask in `dir`, the directory
    /// a sink's subtasks share ([`Area::subtask`]); otherwise what is wrong,
    /// for [`Recovery::new`].
    pub fn check_subtask_in(&self, dir: &Path) -> Result<(), String> {
        if self.dir != dir {
            return Err(format!(
                "its staging directory is {}, not this sink's {}",
                self.dir.display(),
                dir.display()
            ));
        }
        if self.stem.parse::<u32>().map(|n| n.to_string()) != Ok(self.stem.clone()) {
            return Err(format!(
                "the staging area {} is not a subtask's",
                self.describe()
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} (files {}.*)", self.dir.display(), self.stem)
    }

    /// Creates the directory (and its parents) when missing.
    pub fn create(&self) -> Result<(), ConnectorError> {
        fs::create_dir_all(&self.dir).map_err(|e| {
            external(format!("cannot create the staging directory {}: {e}; check that its parent is writable", self.dir.display()), e)
        })
    }

    fn in_progress(&self, run: &str) -> PathBuf {
        self.dir.join(format!("{}.{run}.inprogress", self.stem))
    }

    fn sealed(&self, checkpoint: u64, run: &str) -> PathBuf {
        self.dir.join(format!("{}.{checkpoint}.{run}.sealed", self.stem))
    }

    /// What the file called `name` in [`Area::dir`] is to this area; `None`
    /// when it is not one of its staging files (another area's, or the
    /// sink's output).
    pub fn classify(&self, name: &str) -> Option<FileKind> {
        let rest = name.strip_prefix(self.stem.as_str())?.strip_prefix('.')?;
        let is_run = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(run) = rest.strip_suffix(".inprogress") {
            return is_run(run).then_some(FileKind::InProgress);
        }
        let (checkpoint, run) = rest.strip_suffix(".sealed")?.split_once('.')?;
        if checkpoint.is_empty() || !checkpoint.bytes().all(|b| b.is_ascii_digit()) || !is_run(run) {
            return None;
        }
        checkpoint.parse().ok().map(FileKind::Sealed)
    }

    /// Removes every staging file of this area and returns their names; the
    /// directory is fsynced when anything was removed. A missing directory
    /// holds nothing.
    pub fn clear(&self) -> Result<Vec<String>, ConnectorError> {
        let fail = |e: io::Error| {
            external(format!("cannot remove the staging files in {}: {e}; check the directory's permissions", self.dir.display()), e)
        };
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fail(e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(fail)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if self.classify(&name).is_some() {
                remove_file(&entry.path()).map_err(fail)?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            removed.sort();
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// The writing side of one subtask's staging: the open epoch.
#[derive(Debug)]
pub struct Stage {
    area: Area,
    /// Tells this instance's files from an earlier run's.
    run: String,
    /// Write buffer size.
    buffer: usize,
    /// The in-progress file, from the first write of an epoch to its seal.
    file: Option<BufWriter<File>>,
    bytes: u64,
    records: u64,
    /// A write failed: the epoch is incomplete and may not be sealed.
    failed: bool,
}

impl Stage {
    /// A stage writing into `area` through a `buffer`-byte buffer. The
    /// directory must exist by the first write ([`Area::create`]).
    pub fn new(area: Area, buffer: usize) -> Self {
        Self { area, run: run_id(), buffer, file: None, bytes: 0, records: 0, failed: false }
    }

    /// Where this stage writes.
    pub fn area(&self) -> &Area {
        &self.area
    }

    /// Bytes in the open epoch.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `bytes` (holding `records` records) to the open epoch as
    /// they are: what [`Sealed::open`] reads back.
    pub fn write(&mut self, bytes: &[u8], records: u64) -> Result<(), ConnectorError> {
        self.append(&[bytes], records)
    }

    /// Appends a batch of frames (`records` records) as one block (a
    /// 4-byte little-endian length, then the batch): what
    /// [`Sealed::batches`] reads back. An empty batch is not staged.
    pub fn write_batch(&mut self, batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        if batch.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(batch.len()).map_err(|_| ConnectorError::internal(format!("a batch of {} bytes cannot be staged", batch.len())))?;
        self.append(&[&len.to_le_bytes(), batch], records as u64)
    }

    /// Like [`Stage::write_batch`], with a one-byte `tag` before the batch
    /// inside the block (a sink that stages records and dead letters side by
    /// side tells them apart by it), without copying the batch.
    pub fn write_tagged_batch(&mut self, tag: u8, batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        let len = u32::try_from(batch.len() + 1).map_err(|_| ConnectorError::internal(format!("a batch of {} bytes cannot be staged", batch.len())))?;
        self.append(&[&len.to_le_bytes(), &[tag], batch], records as u64)
    }

    fn append(&mut self, parts: &[&[u8]], records: u64) -> Result<(), ConnectorError> {
        if parts.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        let path = self.area.in_progress(&self.run);
        if self.file.is_none() {
            let file = File::create(&path).map_err(|e| {
                self.failed = true;
                external(format!("cannot create the staging file {}: {e}; check that the directory is writable", path.display()), e)
            })?;
            self.file = Some(BufWriter::with_capacity(self.buffer, file));
        }
        let writer = self.file.as_mut().expect("created above");
        for part in parts {
            writer.write_all(part).map_err(|e| {
                self.failed = true;
                external(format!("writing the staging file {}: {e}", path.display()), e)
            })?;
            self.bytes += part.len() as u64;
        }
        self.records += records;
        Ok(())
    }

    /// Writes the buffer out and fsyncs the in-progress file: the records so
    /// far are durable, not yet sealed.
    pub fn flush(&mut self) -> Result<(), ConnectorError> {
        let Some(writer) = &mut self.file else { return Ok(()) };
        let path = self.area.in_progress(&self.run);
        let result = writer.flush().and_then(|()| sync_file(writer.get_ref(), &path));
        result.map_err(|e| {
            self.failed = true;
            external(format!("flushing the staging file {} to disk: {e}", path.display()), e)
        })
    }

    /// Ends the open epoch at the barrier of checkpoint `checkpoint`:
    /// flushes and fsyncs the in-progress file, renames it to the sealed
    /// name and fsyncs the directory. An epoch without data has no file.
    /// Fails, and keeps failing until [`Stage::discard`], when a write of
    /// this epoch failed.
    pub fn seal(&mut self, checkpoint: u64) -> Result<Sealed, ConnectorError> {
        if self.failed {
            return Err(ConnectorError::external(
                format!(
                    "an earlier write to the staging directory {} failed, so the records since the last checkpoint are \
                     incomplete; the pipeline must restart from its last checkpoint",
                    self.area.dir.display()
                ),
                io::Error::other("earlier write failed"),
            ));
        }
        let (bytes, records) = (std::mem::take(&mut self.bytes), std::mem::take(&mut self.records));
        if self.file.is_none() {
            return Ok(Sealed { checkpoint, file: None, bytes: 0, records: 0 });
        }
        self.flush()?;
        self.file = None;
        let (from, to) = (self.area.in_progress(&self.run), self.area.sealed(checkpoint, &self.run));
        let result = rename(&from, &to)
            .map_err(|e| external(format!("sealing the records of checkpoint {checkpoint} in {}: {e}", to.display()), e))
            .and_then(|()| sync_dir(&self.area.dir));
        self.failed = result.is_err();
        result.map(|()| Sealed { checkpoint, file: Some(to), bytes, records })
    }

    /// Drops the open epoch: the buffer unwritten, the in-progress file
    /// removed. Sealed epochs are left alone.
    pub fn discard(&mut self) -> Result<(), ConnectorError> {
        self.bytes = 0;
        self.records = 0;
        self.failed = false;
        let Some(writer) = self.file.take() else { return Ok(()) };
        // `into_parts` leaves the buffer unwritten (a dropped `BufWriter`
        // would write it).
        drop(writer.into_parts());
        let path = self.area.in_progress(&self.run);
        remove_file(&path).map_err(|e| external(format!("cannot remove the staging file {}: {e}", path.display()), e))
    }
}

/// A sealed epoch: what a checkpoint handle stores to publish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The checkpoint whose barrier ended the epoch.
    pub checkpoint: u64,
    /// The sealed file; `None` when the epoch had no data.
    pub file: Option<PathBuf>,
    /// Its length.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
}

impl Sealed {
    /// Opens the sealed file to publish it: `None` when the epoch had no
    /// data or the file is gone, which an idempotent publish reads as
    /// "published before" and checks against its destination. A file whose
    /// length is not the sealed length was changed outside weir: a user
    /// error.
    pub fn open(&self) -> Result<Option<File>, ConnectorError> {
        let Some(path) = &self.file else { return Ok(None) };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(external(format!("cannot open {} to publish checkpoint {}: {e}", path.display(), self.checkpoint), e)),
        };
        let len = file.metadata().map_err(|e| external(format!("cannot inspect {}: {e}", path.display()), e))?.len();
        if len != self.bytes {
            return Err(ConnectorError::user(format!(
                "{} holds {len} bytes but checkpoint {} sealed {}: the staging file was changed outside weir; put it \
                 back, or start the pipeline without restoring from this checkpoint",
                path.display(),
                self.checkpoint,
                self.bytes
            )));
        }
        Ok(Some(file))
    }

    /// The batches [`Stage::write_batch`] staged, to publish them. The file
    /// must exist: call this once the destination says the epoch was not
    /// published yet.
    pub fn batches(&self) -> Result<Batches, ConnectorError> {
        let file = self.open()?;
        if let (None, Some(path)) = (&file, &self.file) {
            return Err(ConnectorError::user(format!(
                "the records of checkpoint {} are in {}, which does not exist, so they cannot be published; was the \
                 staging directory deleted or moved? Put it back, or start the pipeline without restoring",
                self.checkpoint,
                path.display()
            )));
        }
        Ok(Batches { file, path: self.file.clone().unwrap_or_default(), block: Vec::new() })
    }

    /// The epoch is published: deletes its file (gone already is fine) and
    /// fsyncs the directory, so that a crash cannot bring back a file whose
    /// data is in the destination.
    pub fn remove(&self) -> Result<(), ConnectorError> {
        let Some(path) = &self.file else { return Ok(()) };
        remove_file(path).map_err(|e| external(format!("cannot remove the published staging file {}: {e}", path.display()), e))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

/// Reads back the blocks of a sealed epoch, one batch at a time.
#[derive(Debug)]
pub struct Batches {
    /// `None` for an epoch without data. Unbuffered: blocks are whole
    /// batches (~32 KiB) read straight into `block`.
    file: Option<File>,
    path: PathBuf,
    block: Vec<u8>,
}

impl Batches {
    /// The next batch of frames; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<&[u8]>, ConnectorError> {
        let Some(file) = &mut self.file else { return Ok(None) };
        let mut len = [0u8; 4];
        match file.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(external(format!("reading {}: {e}", self.path.display()), e)),
        }
        self.block.resize(u32::from_le_bytes(len) as usize, 0);
        file.read_exact(&mut self.block).map_err(|e| {
            external(format!("{} ends inside a batch ({e}); it was sealed by a checkpoint, so the disk lost data", self.path.display()), e)
        })?;
        Ok(Some(&self.block))
    }
}

/// A sink's checkpoint handle, as far as staging is concerned.
pub trait StagedHandle: DeserializeOwned {
    /// The area the epochs of this handle were staged in.
    fn area(&self) -> &Area;

    /// Every sealed epoch the handle names.
    fn sealed(&self) -> Vec<&Sealed>;
}

/// The restore of a staging sink, in the order [`Sink::start`] does it:
/// decode the handles of the checkpoint the run resumes from ([`Recovery::new`]),
/// publish each of them again (the sink's part, idempotent), then clean up
/// ([`Recovery::finish`]).
///
/// [`Sink::start`]: crate::Sink::start
#[derive(Debug)]
pub struct Recovery<H> {
    handles: Vec<(u64, H)>,
}

impl<H: StagedHandle> Recovery<H> {
    /// Decodes what [`Sink::start`](crate::Sink::start) received, oldest
    /// first: nothing on a fresh start (`None`). Empty handles (those of an
    /// at-least-once sink) are skipped. `kind` names the sink type in the
    /// error about a handle it cannot read.
    ///
    /// A checkpoint is a file on disk that can be edited, or copied from
    /// another pipeline, so the paths its handles name are checked before
    /// anything is read, written or removed there: each sealed file must be
    /// one of its area's own files, and `ours` must accept the handle (the
    /// sink's rule for where its areas are, [`Area::check_subtask_in`] for
    /// most sinks); it returns what is wrong otherwise. A handle that names
    /// a path outside the sink's own areas is a user error.
    pub fn new(
        kind: &str,
        recovered: Option<&[Committable]>,
        ours: impl Fn(&H) -> Result<(), String>,
    ) -> Result<Self, ConnectorError> {
        let mut handles = Vec::new();
        for c in recovered.unwrap_or_default() {
            if let Some(handle) = decode_handle::<H>(kind, c.checkpoint, &c.handle)? {
                if let Err(problem) = handle
                    .area()
                    .check()
                    .and_then(|()| confined(&handle))
                    .and_then(|()| ours(&handle))
                {
                    return Err(ConnectorError::user(format!(
                        "checkpoint {} names a path this {kind} sink does not own: {problem}. A checkpoint only ever \
                         names the sink's own files, so it was taken with a different configuration, copied from another \
                         pipeline, or edited. Restore the configuration it was taken with, restore from another \
                         checkpoint, or start the pipeline with --fresh",
                        c.checkpoint
                    )));
                }
                handles.push((c.checkpoint, handle));
            }
        }
        Ok(Self { handles })
    }

    /// The handles to publish again, with their checkpoints, oldest first.
    pub fn handles(&self) -> &[(u64, H)] {
        &self.handles
    }

    /// The cleanup once every handle is published: removes every staging
    /// file left in `own` (this subtask's area, `None` for a sink that
    /// stages nothing now) and in every area a handle names. See the
    /// module docs for why nothing there is needed any more.
    pub fn finish(self, own: Option<&Area>) -> Result<(), ConnectorError> {
        let mut areas: Vec<&Area> = own.into_iter().collect();
        for (_, handle) in &self.handles {
            if !areas.contains(&handle.area()) {
                areas.push(handle.area());
            }
        }
        for area in areas {
            let removed = area.clear()?;
            if !removed.is_empty() {
                tracing::info!(
                    dir = %area.dir.display(),
                    files = ?removed,
                    "Removed staging files that no checkpoint needs: epochs written after the checkpoint the pipeline \
                     resumes from (the sources send those records again) or left half-written by a crash."
                );
            }
        }
        Ok(())
    }
}

/// Each sealed file of `handle` is a sealed file of its area, sealed by its
/// own checkpoint.
fn confined<H: StagedHandle>(handle: &H) -> Result<(), String> {
    let area = handle.area();
    for sealed in handle.sealed() {
        let Some(file) = &sealed.file else { continue };
        let name = file.file_name().and_then(|n| n.to_str());
        let kind = name
            .filter(|_| file.parent() == Some(area.dir.as_path()))
            .and_then(|n| area.classify(n));
        if kind != Some(FileKind::Sealed(sealed.checkpoint)) {
            return Err(format!(
                "{} is not a file sealed by checkpoint {} in the staging area {}",
                file.display(),
                sealed.checkpoint,
                area.describe()
            ));
        }
    }
    Ok(())
}

/// Decodes a handle from a checkpoint; `None` for an empty handle (what a
/// sink with the default, at-least-once pre-commit stores). `kind` names
/// the sink type in the error.
pub fn decode_handle<H: DeserializeOwned>(kind: &str, checkpoint: u64, handle: &[u8]) -> Result<Option<H>, ConnectorError> {
    if handle.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(handle).map(Some).map_err(|e| {
        ConnectorError::user(format!(
            "checkpoint {checkpoint} holds a handle this {kind} sink cannot read ({e}); was the sink's type changed since \
             the checkpoint was taken? Restore from a checkpoint taken with this sink, or start the pipeline without restoring"
        ))
    })
}

/// Encodes a handle for a checkpoint (JSON).
pub fn encode_handle<H: Serialize>(handle: &H) -> Result<Vec<u8>, ConnectorError> {
    serde_json::to_vec(handle).map_err(|e| ConnectorError::internal(format!("cannot encode the pre-commit handle: {e}")))
}

fn external(message: String, e: io::Error) -> ConnectorError {
    ConnectorError::external(message, e)
}

/// A short id, different for every stage, that keeps a run's files apart
/// from another run's that reused checkpoint ids.
fn run_id() -> String {
    static INSTANCES: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mixed = (now.subsec_nanos() ^ (now.as_secs() as u32).rotate_left(7))
        .wrapping_add(std::process::id().rotate_left(16))
        .wrapping_add(INSTANCES.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9));
    format!("{mixed:08x}")
}

// The file-system steps whose order the guarantees rest on. Tests read them
// back from `journal` (the real calls run all the same).

fn sync_file(file: &File, path: &Path) -> io::Result<()> {
    journal::record(|| journal::Step::SyncFile(path.to_path_buf()));
    file.sync_data()
}

fn rename(from: &Path, to: &Path) -> io::Result<()> {
    journal::record(|| journal::Step::Rename(from.to_path_buf(), to.to_path_buf()));
    fs::rename(from, to)
}

/// Removes a file; one that is gone already is fine.
fn remove_file(path: &Path) -> io::Result<()> {
    journal::record(|| journal::Step::Remove(path.to_path_buf()));
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Fsyncs a directory so that a creation, rename or removal in it is
/// durable.
pub fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    journal::record(|| journal::Step::SyncDir(dir.to_path_buf()));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| external(format!("cannot fsync the directory {}: {e}", dir.display()), e))
}

mod journal {
    use std::path::PathBuf;

    /// A durability step, in the order it ran on this thread.
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[cfg_attr(not(test), allow(dead_code, reason = "read only by the tests"))]
    pub(super) enum Step {
        SyncFile(PathBuf),
        Rename(PathBuf, PathBuf),
        SyncDir(PathBuf),
        Remove(PathBuf),
    }

    #[cfg(test)]
    thread_local! {
        static STEPS: std::cell::RefCell<Vec<Step>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Records a step in tests; builds nothing otherwise.
    #[cfg_attr(not(test), inline(always))]
    pub(super) fn record(step: impl FnOnce() -> Step) {
        #[cfg(test)]
        STEPS.with(|s| s.borrow_mut().push(step()));
        #[cfg(not(test))]
        let _ = step;
    }

    /// The steps since the last call.
    #[cfg(test)]
    pub(super) fn take() -> Vec<Step> {
        STEPS.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

#[cfg(test)]
mod tests;
