//! The file sink and the stdout sink.
//!
//! The file sink is two-phase (see the crate docs, "Exactly-once"): records
//! are staged next to the output through [`weir_connector::staging`] (an
//! in-progress file, sealed on pre-commit) and appended to the output on
//! commit, at an offset recorded in the handle. That offset makes a commit
//! idempotent: a repeated commit first cuts the output back to it, and a
//! commit whose sealed file is gone while the output already reaches past
//! the part did its work before. The stdout sink keeps the at-least-once
//! defaults of [`Sink`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_connector::staging::{self, Area, Recovery, Sealed, Stage, StagedHandle};
use weir_connector::{Committable, ConnectorContext, ConnectorError, Sink};

use crate::output::{OutputFormat, format_batch};

/// Replaced by the subtask index in a file sink's `path`.
pub const SUBTASK_PLACEHOLDER: &str = "{subtask}";

/// Write buffer of both sinks.
const WRITE_BUFFER: usize = 64 * 1024;

/// Configuration of a file sink (every key of its pipeline table but
/// `type`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSinkConfig {
    /// The file to write; [`SUBTASK_PLACEHOLDER`] is replaced by the subtask
    /// index, and is required at parallelism above 1.
    pub path: PathBuf,
    /// How each record becomes a line.
    #[serde(default)]
    pub format: OutputFormat,
}

impl FileSinkConfig {
    /// Checks the config without I/O and returns every problem as
    /// `(field, message)`; empty when valid. The `{subtask}` rule depends on
    /// the parallelism: see [`FileSinkConfig::validate_at_parallelism`].
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push(("path".to_owned(), "must name the file to write, it is empty".to_owned()));
        }
        let has_placeholder = self.has_placeholder();
        if has_placeholder && self.path.to_str().is_none() {
            problems.push((
                "path".to_owned(),
                format!(
                    "a path containing {SUBTASK_PLACEHOLDER} must be valid UTF-8; rename the output directory or file"
                ),
            ));
        }
        problems
    }

    /// [`FileSinkConfig::validate`] plus the rule that a sink running at
    /// `parallelism` above 1 has `{subtask}` in its path, so that subtasks do
    /// not overwrite each other's file.
    pub fn validate_at_parallelism(&self, parallelism: u32) -> Vec<(String, String)> {
        let mut problems = self.validate();
        if parallelism > 1 && !self.has_placeholder() {
            problems.push((
                "path".to_owned(),
                format!(
                    "the sink runs at parallelism {parallelism}, so each subtask needs its own file: put {SUBTASK_PLACEHOLDER} in the path \
                     (for example \"out/part-{SUBTASK_PLACEHOLDER}.txt\") or set the sink's parallelism to 1"
                ),
            ));
        }
        problems
    }

    /// The file subtask `subtask` writes: `path` with every `{subtask}`
    /// replaced by the index.
    pub fn path_for_subtask(&self, subtask: u32) -> PathBuf {
        match self.path.to_str() {
            Some(path) if path.contains(SUBTASK_PLACEHOLDER) => {
                PathBuf::from(path.replace(SUBTASK_PLACEHOLDER, &subtask.to_string()))
            }
            _ => self.path.clone(),
        }
    }

    fn has_placeholder(&self) -> bool {
        self.path
            .as_os_str()
            .as_encoded_bytes()
            .windows(SUBTASK_PLACEHOLDER.len())
            .any(|w| w == SUBTASK_PLACEHOLDER.as_bytes())
    }
}

/// Writes records to a file, one line each, as a transactional [`Sink`]:
/// the file only ever holds the records of completed checkpoints.
///
/// Records of the current checkpoint are staged in hidden files next to
/// the output ([`weir_connector::staging`], area [`Area::beside`] the
/// output): [`Sink::pre_commit`] seals the epoch; [`Sink::commit`] appends
/// the sealed part to the output at the offset recorded in the handle, so
/// repeating a commit (after a crash) publishes nothing twice. See the
/// crate docs.
///
/// A path that is not a regular file (a FIFO, `/dev/stdout`, a character
/// device) cannot be held back or rolled back: the sink then writes to it
/// directly and is at-least-once.
#[derive(Debug)]
pub struct FileSink {
    /// The sink's name in the pipeline, for messages.
    name: String,
    /// The output file of this subtask, absolute.
    path: PathBuf,
    /// The configured path, absolute, `{subtask}` not replaced: what the
    /// outputs a restored checkpoint names must be.
    template: PathBuf,
    format: OutputFormat,
    mode: Mode,
    /// Whether [`Sink::start`] ran.
    started: bool,
    /// Set when a write, flush or pre-commit failed half-way: the data of
    /// the current checkpoint is then incomplete and may not be sealed.
    failed: bool,
    /// The formatted batch, reused between batches.
    scratch: Vec<u8>,
}

/// How a [`FileSink`] writes.
#[derive(Debug)]
enum Mode {
    /// A regular file: staged next to it, published on commit.
    Staged {
        stage: Stage,
        /// The length the output has once every part pre-committed so far
        /// is committed: the offset of the next part.
        expected_len: u64,
    },
    /// Not a regular file: written straight through (at-least-once), until
    /// [`Sink::close`].
    Direct(Option<BufWriter<File>>),
}

/// A pre-commit handle of the file sink, stored in the checkpoint as JSON,
/// for example `{"area":{"dir":"/data","stem":".out-0.txt"},"output":
/// "/data/out-0.txt","offset":4096,"epoch":{"checkpoint":7,"file":
/// "/data/.out-0.txt.7.3f9a0c12.sealed","bytes":512,"records":64}}`: the
/// epoch is appended to `output` at `offset`. A sink writing directly (not
/// a regular file) stores an empty handle: it has nothing to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Handle {
    area: Area,
    output: PathBuf,
    offset: u64,
    epoch: Sealed,
}

impl StagedHandle for Handle {
    fn area(&self) -> &Area {
        &self.area
    }

    fn sealed(&self) -> Vec<&Sealed> {
        vec![&self.epoch]
    }
}

impl Handle {
    /// `Ok` when the handle's output is a file of this sink (`template`,
    /// its absolute path, with `{subtask}` replaced by a subtask's index)
    /// and its area is the one beside it.
    fn check_ours(&self, template: &Path) -> Result<(), String> {
        if !is_output_of(template, &self.output) {
            return Err(format!(
                "its output {} is not this sink's path {}",
                self.output.display(),
                template.display()
            ));
        }
        if Area::beside(&self.output).as_ref() != Some(&self.area) {
            return Err(format!(
                "its staging files are not the hidden files beside {}",
                self.output.display()
            ));
        }
        Ok(())
    }
}

/// True when `output` is `template` with every `{subtask}` replaced by one
/// subtask index (written as [`FileSinkConfig::path_for_subtask`] does), or
/// `template` itself when it has no placeholder.
fn is_output_of(template: &Path, output: &Path) -> bool {
    let (Some(template), Some(output)) = (template.to_str(), output.to_str()) else {
        return template == output;
    };
    let Some((before, _)) = template.split_once(SUBTASK_PLACEHOLDER) else {
        return template == output;
    };
    let Some(rest) = output.strip_prefix(before) else {
        return false;
    };
    // The index is the digits the first placeholder became; try each
    // length, since the text after it may start with digits too.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    (1..=digits.min(10)).any(|n| {
        rest[..n]
            .parse::<u32>()
            .is_ok_and(|index| template.replace(SUBTASK_PLACEHOLDER, &index.to_string()) == output)
    })
}

impl FileSink {
    /// Prepares the sink of subtask `ctx.subtask`: validates the config,
    /// creates missing parent directories and decides how to write. It does
    /// not touch an existing output file; [`Sink::start`] truncates it to
    /// the length of the checkpoint the run resumes from (empty on a fresh
    /// start).
    ///
    /// When the path names something that is not a regular file (a FIFO,
    /// `/dev/stdout`, a character device) the sink opens it here for
    /// writing, which for a FIFO waits until a reader opens it, and logs a
    /// warning that the sink is at-least-once.
    ///
    /// A config that breaks a rule of
    /// [`FileSinkConfig::validate_at_parallelism`], or a path that names a
    /// directory, is a user error; failing to create the directory or to
    /// open the path is an external error naming it.
    pub fn open(config: FileSinkConfig, ctx: &ConnectorContext) -> Result<FileSink, ConnectorError> {
        let name = &ctx.name;
        let problems = config.validate_at_parallelism(ctx.parallelism);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(field, problem)| format!("{field}: {problem}")).collect();
            return Err(ConnectorError::user(format!("sink `{name}`: {}", list.join("; "))));
        }
        let relative = config.path_for_subtask(ctx.subtask);
        let path = std::path::absolute(&relative).map_err(|e| {
            ConnectorError::external(
                format!("sink `{name}`: cannot resolve {} against the working directory: {e}", relative.display()),
                e,
            )
        })?;
        if path.file_name().is_none() {
            return Err(ConnectorError::user(format!(
                "sink `{name}`: path: {} does not name a file; end it with a file name",
                path.display()
            )));
        }
        let dir = dir_of(&path);
        fs::create_dir_all(dir).map_err(|e| {
            ConnectorError::external(format!("sink `{name}`: cannot create the directory {}: {e}", dir.display()), e)
        })?;
        let direct = match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(ConnectorError::user(format!(
                    "sink `{name}`: path: {} is a directory; name a file to write instead",
                    path.display()
                )));
            }
            Ok(meta) => !meta.is_file() || resolves_into_proc(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(ConnectorError::external(
                    format!(
                        "sink `{name}`: cannot inspect {}: {e}; check the permissions of its directory",
                        path.display()
                    ),
                    e,
                ));
            }
        };
        let mode = if direct {
            // Like `File::create` before this sink was transactional, this
            // waits for a reader of a FIFO; unlike it, it neither creates nor
            // truncates.
            let file = OpenOptions::new().append(true).open(&path).map_err(|e| {
                ConnectorError::external(
                    format!("sink `{name}`: cannot open {} for writing: {e}", path.display()),
                    e,
                )
            })?;
            tracing::warn!(
                sink = %name,
                path = %path.display(),
                "The file sink is at-least-once because its path is not a regular file: \
                 records written after the last checkpoint are written again after a restart."
            );
            Mode::Direct(Some(BufWriter::with_capacity(WRITE_BUFFER, file)))
        } else {
            let area = Area::beside(&path).ok_or_else(|| {
                ConnectorError::user(format!(
                    "sink `{name}`: path: {} is not valid UTF-8, which a checkpoint cannot record; \
                     rename the output directory or file",
                    path.display()
                ))
            })?;
            Mode::Staged { stage: Stage::new(area, WRITE_BUFFER), expected_len: 0 }
        };
        let template = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
        Ok(FileSink {
            name: name.clone(),
            path,
            template,
            format: config.format,
            mode,
            started: false,
            failed: false,
            scratch: Vec::new(),
        })
    }

    /// The file this sink writes (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the sink is exactly-once: its path is a regular file (or
    /// does not exist yet), so output is published per checkpoint.
    pub fn is_transactional(&self) -> bool {
        matches!(self.mode, Mode::Staged { .. })
    }

    /// Fails unless the sink can take data of the current checkpoint.
    fn check_usable(&self, operation: &str) -> Result<(), ConnectorError> {
        if !self.started {
            return Err(ConnectorError::internal(format!(
                "sink `{}`: {operation} was called before start; this is a bug in weir's runtime",
                self.name
            )));
        }
        if self.failed {
            return Err(ConnectorError::external(
                format!(
                    "sink `{}`: an earlier write to {} failed, so the data since the last checkpoint is incomplete; \
                     the pipeline must restart from its last checkpoint",
                    self.name,
                    self.path.display()
                ),
                io::Error::other("earlier write failed"),
            ));
        }
        Ok(())
    }

    /// The body of [`Sink::write`].
    fn append(&mut self, records: usize) -> Result<(), ConnectorError> {
        match &mut self.mode {
            Mode::Staged { stage, .. } => stage.write(&self.scratch, records as u64),
            Mode::Direct(Some(writer)) => writer.write_all(&self.scratch).map_err(|e| {
                ConnectorError::external(format!("sink `{}`: writing {}: {e}", self.name, self.path.display()), e)
            }),
            Mode::Direct(None) => Err(ConnectorError::internal(format!(
                "sink `{}`: write after close; this is a bug in weir's runtime",
                self.name
            ))),
        }
    }

    /// The body of [`Sink::flush`].
    fn flush_to_disk(&mut self) -> Result<(), ConnectorError> {
        let writer = match &mut self.mode {
            Mode::Staged { stage, .. } => return stage.flush(),
            Mode::Direct(None) => return Ok(()),
            Mode::Direct(Some(writer)) => writer,
        };
        let fail = |e: io::Error| {
            ConnectorError::external(format!("sink `{}`: flushing {} to disk: {e}", self.name, self.path.display()), e)
        };
        writer.flush().map_err(fail)?;
        match writer.get_ref().sync_all() {
            // A FIFO, a character device or a socket cannot be synced; the
            // data was handed over by the flush above.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            r => r.map_err(fail),
        }
    }

    /// The body of [`Sink::pre_commit`]: the handle, `None` when writing
    /// directly.
    fn seal(&mut self, checkpoint: u64) -> Result<Option<Handle>, ConnectorError> {
        self.flush_to_disk()?;
        let Mode::Staged { stage, expected_len } = &mut self.mode else { return Ok(None) };
        let epoch = stage.seal(checkpoint)?;
        let offset = *expected_len;
        *expected_len += epoch.bytes;
        Ok(Some(Handle { area: stage.area().clone(), output: self.path.clone(), offset, epoch }))
    }
}

impl Sink for FileSink {
    /// Publishes every recovered handle (again: a handle that was already
    /// committed is skipped), then, for a regular file, truncates this
    /// subtask's output to the length it has after the last recovered
    /// handle naming it (0 when none does: a fresh start), creating it when
    /// missing, and applies the staging cleanup rule: the hidden files that
    /// a crashed run left next to this output and next to every output the
    /// handles name hold data written after the checkpoint, and are removed.
    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        if self.started {
            return Err(ConnectorError::internal(format!(
                "sink `{}`: start was called twice; this is a bug in weir's runtime",
                self.name
            )));
        }
        // A fresh start replaces the output. A restore that has no handle
        // for this file (the run before had fewer subtasks) keeps what is
        // there: only commits ever write to it, so it holds published data.
        let mut committed_len = match std::fs::metadata(&self.path) {
            Ok(m) if recovered.is_some() => m.len(),
            _ => 0,
        };
        let recovery =
            Recovery::<Handle>::new("file", recovered, |h| h.check_ours(&self.template))?;
        for (checkpoint, handle) in recovery.handles() {
            publish_part(&self.name, *checkpoint, handle)?;
            if handle.output == self.path {
                committed_len = handle.offset + handle.epoch.bytes;
            }
        }
        let own = match &mut self.mode {
            Mode::Direct(_) => None,
            Mode::Staged { stage, expected_len } => {
                let (name, path) = (&self.name, &self.path);
                let fail = |e: io::Error| {
                    ConnectorError::external(
                        format!(
                            "sink `{name}`: cannot truncate {} to the {committed_len} bytes of the checkpoint \
                             the pipeline resumes from: {e}; check that the file and its directory are writable",
                            path.display()
                        ),
                        e,
                    )
                };
                let file = OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(fail)?;
                file.set_len(committed_len).map_err(fail)?;
                file.sync_all().map_err(fail)?;
                staging::sync_dir(dir_of(path))?;
                *expected_len = committed_len;
                Some(stage.area())
            }
        };
        recovery.finish(own)?;
        self.started = true;
        Ok(())
    }

    /// A regular output file that is not empty: only commits write to it,
    /// so what it holds was published.
    fn earlier_output(&mut self) -> Result<Option<String>, ConnectorError> {
        if !matches!(self.mode, Mode::Staged { .. }) {
            return Ok(None);
        }
        Ok(match std::fs::metadata(&self.path) {
            Ok(m) if m.len() > 0 => Some(format!("{} already holds {} bytes", self.path.display(), m.len())),
            _ => None,
        })
    }

    fn write(&mut self, batch: &[u8], _records: usize) -> Result<(), ConnectorError> {
        self.check_usable("write")?;
        self.scratch.clear();
        let records = format_batch(self.format, batch, &mut self.scratch)?;
        if self.scratch.is_empty() {
            return Ok(());
        }
        let result = self.append(records);
        self.failed |= result.is_err();
        result
    }

    /// Writes the buffer out and fsyncs: to the in-progress file (durable,
    /// not yet visible), or to the path itself when it is not a regular
    /// file.
    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.check_usable("flush")?;
        let result = self.flush_to_disk();
        self.failed |= result.is_err();
        result
    }

    /// Seals the epoch ([`Stage::seal`]); the handle records it with the
    /// offset at which it is to be appended. Without data since the last
    /// pre-commit there is no sealed file and the epoch's `bytes` is 0.
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        self.check_usable("pre_commit")?;
        let result = self.seal(checkpoint);
        self.failed |= result.is_err();
        match result? {
            Some(handle) => staging::encode_handle(&handle),
            None => Ok(Vec::new()),
        }
    }

    /// Appends the sealed part to the output the handle names (any
    /// subtask's): truncates the output to the handle's offset first, which
    /// undoes a half-done earlier attempt, then copies, fsyncs and removes
    /// the sealed file. A handle whose sealed file is gone while the output
    /// already holds its bytes was committed before and is skipped.
    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), ConnectorError> {
        match staging::decode_handle::<Handle>("file", checkpoint, handle)? {
            Some(handle) => publish_part(&self.name, checkpoint, &handle),
            None => Ok(()),
        }
    }

    /// Releases the files. Publishes nothing: records not pre-committed are
    /// dropped (with the in-progress file), sealed files stay for a later
    /// commit, and buffered records for a non-regular path are discarded.
    fn close(&mut self) -> Result<(), ConnectorError> {
        match &mut self.mode {
            Mode::Staged { stage, .. } => stage.discard(),
            Mode::Direct(writer) => {
                // Drop the buffer unwritten (a `BufWriter` would flush it).
                drop(writer.take().map(BufWriter::into_parts));
                Ok(())
            }
        }
    }
}

/// Appends the sealed part of checkpoint `checkpoint` to its output at its
/// offset, idempotently; see [`Sink::commit`] of [`FileSink`].
fn publish_part(sink: &str, checkpoint: u64, handle: &Handle) -> Result<(), ConnectorError> {
    let Handle { output: path, offset, epoch, .. } = handle;
    let (offset, len) = (*offset, epoch.bytes);
    let truncated = |have: u64| {
        ConnectorError::user(format!(
            "sink `{sink}`: {} holds {have} bytes but weir had published {offset} bytes to it before \
             checkpoint {checkpoint}: the file was truncated or replaced outside weir. Put the file back, \
             or start the pipeline without restoring from a checkpoint (which writes it anew)",
            path.display()
        ))
    };
    let Some(mut source) = epoch.open()? else {
        // Nothing sealed, or committed before (the sealed file is removed
        // once its bytes are durable in the output).
        let have = match fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(ConnectorError::external(
                    format!("sink `{sink}`: cannot inspect {}: {e}", path.display()),
                    e,
                ));
            }
        };
        if have >= offset + len {
            return Ok(());
        }
        if have < offset {
            return Err(truncated(have));
        }
        // Here `len` > 0, so the handle names a sealed file.
        return Err(ConnectorError::user(format!(
            "sink `{sink}`: the pending data of checkpoint {checkpoint} for {} is gone: {} does not exist \
             and the file holds {have} bytes, not the {} it has once the checkpoint is published. A hidden \
             file next to the output was deleted outside weir; put it back, or start the pipeline without \
             restoring from this checkpoint",
            path.display(),
            epoch.file.as_deref().unwrap_or(path).display(),
            offset + len
        )));
    };
    let fail = |what: &str, e: io::Error| {
        ConnectorError::external(
            format!("sink `{sink}`: publishing checkpoint {checkpoint}: {what} {}: {e}", path.display()),
            e,
        )
    };
    let mut output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| fail("cannot open", e))?;
    let have = output.metadata().map_err(|e| fail("cannot inspect", e))?.len();
    if have < offset {
        return Err(truncated(have));
    }
    // Bytes past the offset are a half-done earlier attempt of this commit.
    if have != offset {
        output.set_len(offset).map_err(|e| fail("cannot truncate", e))?;
    }
    output.seek(SeekFrom::Start(offset)).map_err(|e| fail("cannot seek in", e))?;
    // `io::copy` between two files uses `copy_file_range` on Linux.
    let copied = io::copy(&mut source, &mut output).map_err(|e| fail("cannot append to", e))?;
    if copied != len {
        return Err(ConnectorError::user(format!(
            "sink `{sink}`: {} changed while checkpoint {checkpoint} was being published ({copied} bytes \
             copied, {len} expected); do not touch the hidden files next to the output",
            epoch.file.as_deref().unwrap_or(path).display()
        )));
    }
    output.sync_all().map_err(|e| fail("cannot fsync", e))?;
    drop(source);
    // The output is in the sealed file's directory: this also makes a
    // newly created output durable.
    epoch.remove()
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// True when `path` is, or is a symbolic link that leads into, `/proc`
/// (`/dev/stdout` → `/proc/self/fd/1`): such a "file" is one of the
/// process's open streams even when it points at a regular file, and
/// cannot be staged next to.
fn resolves_into_proc(path: &Path) -> bool {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        // Resolve the directories, so that `/dev/fd/1` is seen as
        // `/proc/<pid>/fd/1`.
        if let (Some(dir), Some(name)) = (current.parent(), current.file_name())
            && let Ok(dir) = fs::canonicalize(dir)
        {
            current = dir.join(name);
        }
        if current.starts_with("/proc") {
            return true;
        }
        match fs::read_link(&current) {
            Ok(target) => current = dir_of(&current).join(target),
            Err(_) => return false,
        }
    }
    false
}

/// Configuration of a stdout sink (every key of its pipeline table but
/// `type`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StdoutSinkConfig {
    /// How each record becomes a line.
    #[serde(default)]
    pub format: OutputFormat,
}

impl StdoutSinkConfig {
    /// Checks the config; every combination of keys is valid, so this is
    /// always empty. It exists so that every connector config validates the
    /// same way.
    pub fn validate(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Writes records to standard output, one line each, as a [`Sink`].
///
/// Lines are collected in a 64 KiB buffer and written with stdout locked,
/// so parallel subtasks never interleave within a line.
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
    format: OutputFormat,
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A stdout sink for `ctx.name`.
    pub fn new(config: StdoutSinkConfig, ctx: &ConnectorContext) -> StdoutSink {
        StdoutSink { name: ctx.name.clone(), format: config.format, buf: Vec::with_capacity(WRITE_BUFFER) }
    }

    /// Writes the buffered lines to `out`.
    fn emit(&mut self, out: &mut impl Write, flush: bool) -> Result<(), ConnectorError> {
        let result = out.write_all(&self.buf).and_then(|()| if flush { out.flush() } else { Ok(()) });
        self.buf.clear();
        result.map_err(|e| stdout_error(&self.name, e))
    }
}

/// Maps a failed write to stdout: a closed pipe is the user's doing
/// (`weir run … | head`), anything else is external.
fn stdout_error(sink: &str, e: io::Error) -> ConnectorError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        ConnectorError::user(format!(
            "sink `{sink}`: stdout was closed (the program reading weir's output exited); \
             the remaining records were not written"
        ))
    } else {
        ConnectorError::external(format!("sink `{sink}`: writing to stdout: {e}"), e)
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, batch: &[u8], _records: usize) -> Result<(), ConnectorError> {
        format_batch(self.format, batch, &mut self.buf)?;
        if self.buf.len() >= WRITE_BUFFER {
            self.emit(&mut io::stdout().lock(), false)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.emit(&mut io::stdout().lock(), true)
    }
}

#[cfg(test)]
mod tests {
    use weir_connector::{BatchWriter, ErrorKind};

    use super::*;
    use crate::test_ctx;

    /// Key, value and timestamp of a test record.
    type TestRecord<'a> = (Option<&'a [u8]>, &'a [u8], i64);

    fn batch(records: &[TestRecord<'_>]) -> (Vec<u8>, usize) {
        let mut w = BatchWriter::new();
        for (key, value, ts) in records {
            w.push(*key, value, *ts, &[]);
        }
        (w.finish(), records.len())
    }

    /// A value-format file sink of subtask 0 of 1 writing `path`.
    fn sink_at(path: &Path) -> FileSink {
        FileSink::open(FileSinkConfig { path: path.to_path_buf(), format: OutputFormat::Value }, &test_ctx(0, 1))
            .unwrap()
    }

    /// Writes one record per value.
    fn write_values(sink: &mut FileSink, values: &[&str]) {
        let records: Vec<TestRecord<'_>> = values.iter().map(|v| (None, v.as_bytes(), 0)).collect();
        let (b, n) = batch(&records);
        sink.write(&b, n).unwrap();
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// Names of the hidden files in `dir`, sorted.
    fn hidden_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    fn handle(bytes: &[u8]) -> Handle {
        serde_json::from_slice(bytes).unwrap()
    }

    fn committable(checkpoint: u64, handle: &[u8]) -> Committable {
        Committable { checkpoint, handle: handle.to_vec() }
    }

    #[test]
    fn file_sink_publishes_only_committed_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("created/by/the/sink.txt");
        let mut sink = sink_at(&path);
        assert!(sink.is_transactional());
        assert!(!path.exists(), "open does not create the output, start does");
        sink.start(None).unwrap();
        assert_eq!(read(&path), "");

        write_values(&mut sink, &["a", "b"]);
        sink.flush().unwrap();
        assert_eq!(read(&path), "", "a flush makes data durable, not visible");
        let h1 = sink.pre_commit(1).unwrap();
        assert_eq!(read(&path), "", "pre-committed data is not visible yet");
        let Handle { output, offset: 0, epoch: Sealed { file: Some(sealed), bytes: 4, records: 2, .. }, .. } = handle(&h1) else {
            panic!("unexpected handle {}", String::from_utf8_lossy(&h1))
        };
        assert_eq!(output, path);
        assert_eq!(std::fs::read(&sealed).unwrap(), b"a\nb\n");
        let sealed_name = sealed.file_name().unwrap().to_str().unwrap();
        assert!(sealed_name.starts_with(".sink.txt.1.") && sealed_name.ends_with(".sealed"), "{sealed_name}");
        sink.commit(1, &h1).unwrap();
        assert_eq!(read(&path), "a\nb\n");
        assert_eq!(hidden_files(path.parent().unwrap()), Vec::<String>::new());

        write_values(&mut sink, &["c"]);
        let hidden = hidden_files(path.parent().unwrap());
        assert!(hidden.len() == 1 && hidden[0].starts_with(".sink.txt.") && hidden[0].ends_with(".inprogress"), "{hidden:?}");
        let h2 = sink.pre_commit(2).unwrap();
        assert_eq!((handle(&h2).offset, handle(&h2).epoch.bytes), (4, 2), "{}", String::from_utf8_lossy(&h2));
        sink.commit(2, &h2).unwrap();
        assert_eq!(read(&path), "a\nb\nc\n");

        // A checkpoint without data: no sealed file, nothing to publish.
        let h3 = sink.pre_commit(3).unwrap();
        assert_eq!((handle(&h3).offset, handle(&h3).epoch.clone()), (6, Sealed { checkpoint: 3, file: None, bytes: 0, records: 0 }));
        sink.commit(3, &h3).unwrap();
        assert_eq!(read(&path), "a\nb\nc\n");

        // Close publishes nothing that was not pre-committed, and leaves no
        // hidden file.
        write_values(&mut sink, &["never published"]);
        sink.flush().unwrap();
        sink.close().unwrap();
        drop(sink);
        assert_eq!(read(&path), "a\nb\nc\n");
        assert_eq!(hidden_files(path.parent().unwrap()), Vec::<String>::new());
    }

    #[test]
    fn a_checkpoint_naming_another_file_is_refused_and_that_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        write_values(&mut sink, &["a"]);
        let genuine = handle(&sink.pre_commit(1).unwrap());
        drop(sink);
        // The handle edited to point at a file the sink does not write: a
        // restore would truncate it to the recorded offset.
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious\n").unwrap();
        let nothing = Sealed {
            checkpoint: 1,
            file: None,
            bytes: 0,
            records: 0,
        };
        let forged = Handle {
            output: victim.clone(),
            area: Area::beside(&victim).unwrap(),
            offset: 0,
            epoch: nothing,
        };
        let mut sink = sink_at(&path);
        let c = committable(1, &serde_json::to_vec(&forged).unwrap());
        let err = sink.start(Some(&[c])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(
            err.message.contains(&format!(
                "its output {} is not this sink's path {}",
                victim.display(),
                path.display()
            )),
            "{}",
            err.message
        );
        assert_eq!(read(&victim), "precious\n");
        // The genuine one restores.
        let mut sink = sink_at(&path);
        sink.start(Some(&[committable(
            1,
            &serde_json::to_vec(&genuine).unwrap(),
        )]))
        .unwrap();
        assert_eq!(read(&path), "a\n");
    }

    #[test]
    fn outputs_of_a_template_are_its_subtasks_files() {
        let t = Path::new("/d/part-{subtask}/x{subtask}1.txt");
        assert!(is_output_of(t, Path::new("/d/part-0/x01.txt")));
        assert!(is_output_of(t, Path::new("/d/part-12/x121.txt")));
        assert!(
            !is_output_of(t, Path::new("/d/part-1/x21.txt")),
            "one index for every placeholder"
        );
        assert!(
            !is_output_of(t, Path::new("/d/part-01/x011.txt")),
            "written without leading zeros"
        );
        assert!(!is_output_of(t, Path::new("/d/part-/x1.txt")));
        assert!(!is_output_of(t, Path::new("/d/part-0/../../etc/x01.txt")));
        assert!(is_output_of(
            Path::new("/d/out.txt"),
            Path::new("/d/out.txt")
        ));
        assert!(!is_output_of(
            Path::new("/d/out.txt"),
            Path::new("/d/other.txt")
        ));
    }

    #[test]
    fn a_fresh_start_truncates_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/out.txt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "old contents that must go\n").unwrap();
        let mut sink = sink_at(&path);
        assert_eq!(sink.path(), path);
        assert_eq!(read(&path), "old contents that must go\n", "open leaves the file alone");
        sink.start(None).unwrap();
        assert_eq!(read(&path), "");
        let (b, n) = batch(&[(Some(b"k"), b"first", 1), (None, &[0xff, 0xfe], 2)]);
        sink.write(&b, n).unwrap();
        let (b, n) = batch(&[(None, b"third", 3)]);
        sink.write(&b, n).unwrap();
        let h = sink.pre_commit(1).unwrap();
        sink.commit(1, &h).unwrap();
        sink.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n\xff\xfe\nthird\n");
    }

    #[test]
    fn file_sink_json_lines_with_hex_for_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sink.jsonl");
        let config = FileSinkConfig { path: path.clone(), format: OutputFormat::Json };
        let mut sink = FileSink::open(config, &test_ctx(0, 1)).unwrap();
        sink.start(None).unwrap();
        let (b, n) = batch(&[(Some(b"user-1"), b"{\"n\":1}", 10), (Some(&[0x01, 0xab]), &[0x80], -1), (None, b"", 0)]);
        sink.write(&b, n).unwrap();
        let h = sink.pre_commit(1).unwrap();
        sink.commit(1, &h).unwrap();
        let text = read(&path);
        assert_eq!(
            text,
            "{\"key\":\"user-1\",\"value\":\"{\\\"n\\\":1}\",\"timestamp\":10}\n\
             {\"key\":\"0x01ab\",\"value\":\"0x80\",\"timestamp\":-1}\n\
             {\"key\":null,\"value\":\"\",\"timestamp\":0}\n"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    /// A run that commits checkpoint 1 ("one"), pre-commits checkpoint 2
    /// ("two") without committing it, writes "three" and crashes. Returns
    /// the output path and the handles of checkpoints 1 and 2.
    fn crashed_run(dir: &Path) -> (PathBuf, Committable, Committable) {
        let path = dir.join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        write_values(&mut sink, &["one"]);
        let h1 = sink.pre_commit(1).unwrap();
        sink.commit(1, &h1).unwrap();
        write_values(&mut sink, &["two"]);
        let h2 = sink.pre_commit(2).unwrap();
        write_values(&mut sink, &["three"]);
        sink.flush().unwrap();
        drop(sink);
        assert_eq!(read(&path), "one\n");
        assert_eq!(hidden_files(dir).len(), 2, "a pending and an in-progress file: {:?}", hidden_files(dir));
        (path, committable(1, &h1), committable(2, &h2))
    }

    #[test]
    fn a_restart_drops_what_was_written_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c1, _) = crashed_run(dir.path());
        let mut sink = sink_at(&path);
        sink.start(Some(std::slice::from_ref(&c1))).unwrap();
        assert_eq!(read(&path), "one\n");
        assert_eq!(hidden_files(dir.path()), Vec::<String>::new());
        // The restored sink appends after the checkpoint's data.
        write_values(&mut sink, &["four"]);
        let h = sink.pre_commit(2).unwrap();
        assert_eq!((handle(&h).offset, handle(&h).epoch.bytes), (4, 5), "{}", String::from_utf8_lossy(&h));
        sink.commit(2, &h).unwrap();
        assert_eq!(read(&path), "one\nfour\n");
    }

    #[test]
    fn a_restart_publishes_a_completed_checkpoint_whose_commit_never_ran() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c1, c2) = crashed_run(dir.path());
        let mut sink = sink_at(&path);
        sink.start(Some(&[c1, c2])).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        assert_eq!(hidden_files(dir.path()), Vec::<String>::new());
        write_values(&mut sink, &["four"]);
        let h = sink.pre_commit(3).unwrap();
        sink.commit(3, &h).unwrap();
        assert_eq!(read(&path), "one\ntwo\nfour\n");
    }

    #[test]
    fn a_half_done_commit_is_redone_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c1, c2) = crashed_run(dir.path());
        // A crash in the middle of appending checkpoint 2: part of its data
        // reached the output, its pending file is still there.
        std::fs::write(&path, "one\ntw").unwrap();
        let mut sink = sink_at(&path);
        sink.start(Some(&[c1.clone(), c2.clone()])).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        // Committing again (a repeated restart) changes nothing.
        sink.commit(1, &c1.handle).unwrap();
        sink.commit(2, &c2.handle).unwrap();
        sink.commit(2, &c2.handle).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        drop(sink);
        let mut again = sink_at(&path);
        again.start(Some(&[c1, c2])).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
    }

    #[test]
    fn a_commit_cuts_whatever_follows_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c1, c2) = crashed_run(dir.path());
        // The output runs past the end of checkpoint 2's part (a crash can
        // leave a file longer than its data, padded with zeros).
        std::fs::write(&path, "one\ntw\0\0\0\0\0\0\0\0").unwrap();
        let mut sink = sink_at(&path);
        sink.commit(2, &c2.handle).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        drop(sink);
        assert!(sink_at(&path).start(Some(&[c1, c2])).is_ok());
        assert_eq!(read(&path), "one\ntwo\n");
    }

    #[test]
    fn a_failed_checkpoint_is_published_with_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        write_values(&mut sink, &["one"]);
        let h1 = sink.pre_commit(1).unwrap(); // checkpoint 1 fails
        write_values(&mut sink, &["two"]);
        let h2 = sink.pre_commit(2).unwrap();
        assert_eq!((handle(&h2).offset, handle(&h2).epoch.bytes), (4, 4), "{}", String::from_utf8_lossy(&h2));
        assert_eq!(read(&path), "");
        sink.commit(1, &h1).unwrap();
        sink.commit(2, &h2).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        assert_eq!(hidden_files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_restart_from_a_checkpoint_that_carries_a_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        write_values(&mut sink, &["one"]);
        let h1 = sink.pre_commit(1).unwrap(); // checkpoint 1 fails
        write_values(&mut sink, &["two"]);
        let h2 = sink.pre_commit(2).unwrap(); // checkpoint 2 completes, then a crash
        write_values(&mut sink, &["three"]);
        let _h3 = sink.pre_commit(3).unwrap(); // never completes
        write_values(&mut sink, &["four"]);
        drop(sink);
        assert_eq!(read(&path), "");
        let mut sink = sink_at(&path);
        sink.start(Some(&[committable(1, &h1), committable(2, &h2)])).unwrap();
        assert_eq!(read(&path), "one\ntwo\n");
        assert_eq!(hidden_files(dir.path()), Vec::<String>::new(), "the pending file of checkpoint 3 is removed");
    }

    #[test]
    fn a_rescaled_sink_publishes_the_files_of_former_subtasks() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig { path: dir.path().join("out-{subtask}.txt"), format: OutputFormat::Value };
        // At parallelism 2: checkpoint 1 committed, checkpoint 2 complete
        // but not committed, checkpoint 3 pre-committed, more in progress.
        let mut recovered = Vec::new();
        for subtask in 0..2 {
            let mut sink = FileSink::open(config.clone(), &test_ctx(subtask, 2)).unwrap();
            sink.start(None).unwrap();
            write_values(&mut sink, &[&format!("{subtask}: one")]);
            let h1 = sink.pre_commit(1).unwrap();
            sink.commit(1, &h1).unwrap();
            write_values(&mut sink, &[&format!("{subtask}: two")]);
            recovered.push(committable(2, &sink.pre_commit(2).unwrap()));
            write_values(&mut sink, &[&format!("{subtask}: three")]);
            sink.pre_commit(3).unwrap();
            write_values(&mut sink, &[&format!("{subtask}: four")]);
            sink.flush().unwrap();
        }
        assert_eq!(hidden_files(dir.path()).len(), 6, "{:?}", hidden_files(dir.path()));
        // Restored at parallelism 1: subtask 0 gets both handles.
        let mut sink = FileSink::open(config, &test_ctx(0, 1)).unwrap();
        assert_eq!(sink.path(), dir.path().join("out-0.txt"));
        sink.start(Some(&recovered)).unwrap();
        assert_eq!(read(&dir.path().join("out-0.txt")), "0: one\n0: two\n");
        assert_eq!(read(&dir.path().join("out-1.txt")), "1: one\n1: two\n");
        assert_eq!(hidden_files(dir.path()), Vec::<String>::new());
        write_values(&mut sink, &["0: five"]);
        let h = sink.pre_commit(3).unwrap();
        sink.commit(3, &h).unwrap();
        assert_eq!(read(&dir.path().join("out-0.txt")), "0: one\n0: two\n0: five\n");
        assert_eq!(read(&dir.path().join("out-1.txt")), "1: one\n1: two\n");
    }

    #[test]
    fn dev_null_is_written_directly() {
        let mut sink = sink_at(Path::new("/dev/null"));
        assert!(!sink.is_transactional());
        sink.start(None).unwrap();
        write_values(&mut sink, &["gone"]);
        let h = sink.pre_commit(1).unwrap();
        assert!(h.is_empty(), "a direct sink has nothing to publish");
        sink.commit(1, &h).unwrap();
        sink.close().unwrap();
        // A restart with a direct handle has nothing to publish.
        let mut sink = sink_at(Path::new("/dev/null"));
        sink.start(Some(&[committable(1, &h)])).unwrap();
    }

    #[test]
    fn a_fifo_gets_records_as_they_are_flushed() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                for line in io::BufReader::new(File::open(fifo).unwrap()).lines() {
                    lines_tx.send(line.unwrap()).unwrap();
                }
            })
        };
        // Opening waits for the reader, as it always did.
        let mut sink = sink_at(&fifo);
        assert!(!sink.is_transactional());
        sink.start(None).unwrap();
        write_values(&mut sink, &["x", "y"]);
        let h = sink.pre_commit(1).unwrap();
        let timeout = std::time::Duration::from_secs(10);
        assert_eq!(lines_rx.recv_timeout(timeout).unwrap(), "x", "records reach the reader before the commit");
        assert_eq!(lines_rx.recv_timeout(timeout).unwrap(), "y");
        sink.commit(1, &h).unwrap();
        write_values(&mut sink, &["z"]);
        sink.flush().unwrap();
        assert_eq!(lines_rx.recv_timeout(timeout).unwrap(), "z");
        sink.close().unwrap();
        drop(sink);
        reader.join().unwrap();
        assert!(lines_rx.try_recv().is_err());
        assert_eq!(hidden_files(dir.path()), Vec::<String>::new(), "nothing is staged next to a FIFO");
    }

    #[test]
    fn links_into_proc_are_streams() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.txt");
        std::fs::write(&file, "").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(!resolves_into_proc(&file));
        assert!(!resolves_into_proc(&link));
        assert!(!resolves_into_proc(&dir.path().join("missing.txt")));
        assert!(resolves_into_proc(Path::new("/proc/self/fd/0")));
        if Path::new("/dev/stdout").exists() {
            assert!(resolves_into_proc(Path::new("/dev/stdout")));
        }
        if Path::new("/dev/fd").exists() {
            assert!(resolves_into_proc(Path::new("/dev/fd/0")));
        }
    }

    #[test]
    fn a_file_truncated_outside_weir_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        write_values(&mut sink, &["one"]);
        let h1 = sink.pre_commit(1).unwrap();
        sink.commit(1, &h1).unwrap();
        std::fs::write(&path, "").unwrap();
        write_values(&mut sink, &["two"]);
        let h2 = sink.pre_commit(2).unwrap();
        let err = sink.commit(2, &h2).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.starts_with("sink `files`: "), "{}", err.message);
        assert!(err.message.contains(&path.display().to_string()), "{}", err.message);
        assert!(err.message.contains("holds 0 bytes") && err.message.contains("published 4 bytes"), "{}", err.message);
        assert!(err.message.contains("the file was truncated or replaced outside weir"), "{}", err.message);
        assert_eq!(read(&path), "", "nothing was appended");
        drop(sink);
        // The same on a restart.
        let err = sink_at(&path).start(Some(&[committable(2, &h2)])).unwrap_err();
        assert!(err.message.contains("the file was truncated or replaced outside weir"), "{}", err.message);
    }

    #[test]
    fn a_deleted_pending_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        write_values(&mut sink, &["one"]);
        let h1 = sink.pre_commit(1).unwrap();
        let Some(sealed) = handle(&h1).epoch.file else { panic!("no sealed file") };
        std::fs::remove_file(&sealed).unwrap();
        let err = sink.commit(1, &h1).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains("the pending data of checkpoint 1 for"), "{}", err.message);
        assert!(err.message.contains(&sealed.display().to_string()), "{}", err.message);
    }

    #[test]
    fn misuse_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        let (b, n) = batch(&[(None, b"early", 0)]);
        let err = sink.write(&b, n).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(err.message.contains("before start"), "{}", err.message);
        assert!(sink.pre_commit(1).is_err());
        sink.start(None).unwrap();
        assert_eq!(sink.start(None).unwrap_err().kind, ErrorKind::Internal);

        let err = sink.commit(1, b"not json").unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains("checkpoint 1 holds a handle this file sink cannot read"), "{}", err.message);
        // An empty handle (an at-least-once sink's) publishes nothing.
        sink.commit(1, b"").unwrap();

        let err = FileSink::open(
            FileSinkConfig { path: dir.path().to_path_buf(), format: OutputFormat::Value },
            &test_ctx(0, 1),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains("is a directory"), "{}", err.message);
    }

    #[test]
    fn a_failed_write_stops_the_sink_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink = sink_at(&path);
        sink.start(None).unwrap();
        // The directory disappears: the in-progress file cannot be created.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let (b, n) = batch(&[(None, b"lost", 0)]);
        assert_eq!(sink.write(&b, n).unwrap_err().kind, ErrorKind::External);
        std::fs::create_dir_all(dir.path()).unwrap();
        let err = sink.pre_commit(1).unwrap_err();
        assert!(err.message.contains("must restart from its last checkpoint"), "{}", err.message);
    }

    #[test]
    fn subtask_placeholder_rule() {
        let dir = tempfile::tempdir().unwrap();
        let shared = FileSinkConfig { path: dir.path().join("out.txt"), format: OutputFormat::Value };
        assert!(shared.validate().is_empty());
        assert!(shared.validate_at_parallelism(1).is_empty());
        let problems = shared.validate_at_parallelism(3);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "path");
        assert!(problems[0].1.contains("{subtask}") && problems[0].1.contains("parallelism 3"), "{problems:?}");
        let err = FileSink::open(shared.clone(), &test_ctx(1, 3)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.starts_with("sink `files`: path: "), "{}", err.message);
        assert!(FileSink::open(shared, &test_ctx(0, 1)).is_ok());

        let per_subtask =
            FileSinkConfig { path: dir.path().join("part-{subtask}/{subtask}.txt"), format: OutputFormat::Value };
        assert!(per_subtask.validate_at_parallelism(3).is_empty());
        assert_eq!(per_subtask.path_for_subtask(2), dir.path().join("part-2/2.txt"));
        for subtask in 0..3 {
            let mut sink = FileSink::open(per_subtask.clone(), &test_ctx(subtask, 3)).unwrap();
            sink.start(None).unwrap();
            let (b, n) = batch(&[(None, format!("from {subtask}").as_bytes(), 0)]);
            sink.write(&b, n).unwrap();
            let h = sink.pre_commit(1).unwrap();
            sink.commit(1, &h).unwrap();
            sink.close().unwrap();
        }
        for subtask in 0..3 {
            let written = std::fs::read_to_string(dir.path().join(format!("part-{subtask}/{subtask}.txt"))).unwrap();
            assert_eq!(written, format!("from {subtask}\n"));
        }
        // At parallelism 1 the placeholder is still replaced.
        assert_eq!(per_subtask.path_for_subtask(0), dir.path().join("part-0/0.txt"));
    }

    #[test]
    fn file_sink_open_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("out.txt");
        let err = FileSink::open(FileSinkConfig { path, format: OutputFormat::Value }, &test_ctx(0, 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::External);
        assert!(err.message.contains(&blocker.display().to_string()), "{}", err.message);

        let empty = FileSinkConfig { path: PathBuf::new(), format: OutputFormat::Value };
        assert_eq!(empty.validate()[0].0, "path");
        assert_eq!(FileSink::open(empty, &test_ctx(0, 1)).unwrap_err().kind, ErrorKind::User);
    }

    /// A writer that fails like a closed pipe or a full disk.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stdout_sink_formats_and_reports_a_closed_pipe_as_a_user_error() {
        let mut sink = StdoutSink::new(StdoutSinkConfig { format: OutputFormat::Json }, &test_ctx(0, 1));
        let (b, n) = batch(&[(None, b"v", 5)]);
        sink.write(&b, n).unwrap();
        assert_eq!(sink.buf, b"{\"key\":null,\"value\":\"v\",\"timestamp\":5}\n", "buffered, not yet written");
        let mut captured = Vec::new();
        sink.emit(&mut captured, true).unwrap();
        assert_eq!(captured, b"{\"key\":null,\"value\":\"v\",\"timestamp\":5}\n");
        assert!(sink.buf.is_empty());

        sink.write(&b, n).unwrap();
        let err = sink.emit(&mut Failing(io::ErrorKind::BrokenPipe), true).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains("stdout was closed"), "{}", err.message);
        assert!(sink.buf.is_empty(), "a failed write does not keep growing the buffer");

        sink.write(&b, n).unwrap();
        let err = sink.emit(&mut Failing(io::ErrorKind::Other), false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::External);
    }

    #[test]
    fn sink_configs_parse() {
        let config: FileSinkConfig =
            serde_json::from_value(serde_json::json!({"path": "out/{subtask}.jsonl", "format": "json"})).unwrap();
        assert_eq!(config.format, OutputFormat::Json);
        let config: FileSinkConfig = serde_json::from_value(serde_json::json!({"path": "out.txt"})).unwrap();
        assert_eq!(config.format, OutputFormat::Value);
        assert!(serde_json::from_value::<FileSinkConfig>(serde_json::json!({"path": "a", "type": "file"})).is_err());
        let config: StdoutSinkConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(config, StdoutSinkConfig::default());
        assert!(config.validate().is_empty());
        assert!(serde_json::from_value::<StdoutSinkConfig>(serde_json::json!({"format": "yaml"})).is_err());
    }
}
