//! The file sink and the stdout sink.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_connector::{ConnectorContext, ConnectorError, Sink};

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

/// Writes records to a file, one line each, as a [`Sink`].
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    format: OutputFormat,
    writer: BufWriter<File>,
    /// The formatted batch, reused between batches.
    scratch: Vec<u8>,
}

impl FileSink {
    /// Creates (or truncates) the file of subtask `ctx.subtask`, creating
    /// missing parent directories. A config that breaks a rule of
    /// [`FileSinkConfig::validate_at_parallelism`] is a user error; failing
    /// to create the file is an external error naming it.
    pub fn open(config: FileSinkConfig, ctx: &ConnectorContext) -> Result<FileSink, ConnectorError> {
        let problems = config.validate_at_parallelism(ctx.parallelism);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(field, problem)| format!("{field}: {problem}")).collect();
            return Err(ConnectorError::user(format!("sink `{}`: {}", ctx.name, list.join("; "))));
        }
        let path = config.path_for_subtask(ctx.subtask);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                ConnectorError::external(
                    format!("sink `{}`: cannot create the directory {}: {e}", ctx.name, dir.display()),
                    e,
                )
            })?;
        }
        let file = File::create(&path).map_err(|e| {
            ConnectorError::external(
                format!(
                    "sink `{}`: cannot create {}: {e}; check that its directory is writable",
                    ctx.name,
                    path.display()
                ),
                e,
            )
        })?;
        Ok(FileSink {
            path,
            format: config.format,
            writer: BufWriter::with_capacity(WRITE_BUFFER, file),
            scratch: Vec::new(),
        })
    }

    /// The file this sink writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &[u8], _records: usize) -> Result<(), ConnectorError> {
        self.scratch.clear();
        format_batch(self.format, batch, &mut self.scratch)?;
        self.writer
            .write_all(&self.scratch)
            .map_err(|e| ConnectorError::external(format!("writing {}: {e}", self.path.display()), e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        let fail = |e: io::Error| ConnectorError::external(format!("flushing {} to disk: {e}", self.path.display()), e);
        self.writer.flush().map_err(fail)?;
        match self.writer.get_ref().sync_all() {
            // A FIFO, a character device or a socket cannot be synced; the
            // data was handed over by the flush above.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            r => r.map_err(fail),
        }
    }
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

    #[test]
    fn file_sink_writes_value_lines_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/out.txt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "old contents that must go\n").unwrap();
        let config = FileSinkConfig { path: path.clone(), format: OutputFormat::Value };
        let mut sink = FileSink::open(config, &test_ctx(0, 1)).unwrap();
        assert_eq!(sink.path(), path);
        let (b, n) = batch(&[(Some(b"k"), b"first", 1), (None, &[0xff, 0xfe], 2)]);
        sink.write(&b, n).unwrap();
        let (b, n) = batch(&[(None, b"third", 3)]);
        sink.write(&b, n).unwrap();
        sink.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n\xff\xfe\nthird\n");
    }

    #[test]
    fn file_sink_json_lines_with_hex_for_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("created/by/the/sink.jsonl");
        let config = FileSinkConfig { path: path.clone(), format: OutputFormat::Json };
        let mut sink = FileSink::open(config, &test_ctx(0, 1)).unwrap();
        let (b, n) = batch(&[(Some(b"user-1"), b"{\"n\":1}", 10), (Some(&[0x01, 0xab]), &[0x80], -1), (None, b"", 0)]);
        sink.write(&b, n).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
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

    #[test]
    fn file_sink_buffers_until_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut sink =
            FileSink::open(FileSinkConfig { path: path.clone(), format: OutputFormat::Value }, &test_ctx(0, 1))
                .unwrap();
        let (b, n) = batch(&[(None, b"buffered", 1)]);
        sink.write(&b, n).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        sink.pre_commit(1).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"buffered\n");
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
            let (b, n) = batch(&[(None, format!("from {subtask}").as_bytes(), 0)]);
            sink.write(&b, n).unwrap();
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
