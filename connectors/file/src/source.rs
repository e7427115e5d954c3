//! The file source: one record per non-empty line.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Poll, Source};

/// Read buffer size of the file source.
const READ_BUFFER: usize = 64 * 1024;

/// Longest line preview in error messages, in characters.
const PREVIEW_CHARS: usize = 80;

/// How the file source reads lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineFormat {
    /// Any bytes; each non-empty line is a record.
    #[default]
    Lines,
    /// Each non-blank line must be a JSON value (JSON Lines).
    JsonLines,
}

/// Configuration of a file source (every key of its pipeline table but
/// `type`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSourceConfig {
    /// The file to read.
    pub path: PathBuf,
    /// How to read its lines.
    #[serde(default)]
    pub format: LineFormat,
}

impl FileSourceConfig {
    /// Checks the config without I/O and returns every problem as
    /// `(field, message)`; empty when valid. Whether the file exists is
    /// checked by [`FileSource::open`].
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push(("path".to_owned(), "must name the file to read, it is empty".to_owned()));
        }
        problems
    }
}

/// Reads a file line by line, once, as a [`Source`].
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    format: LineFormat,
    reader: BufReader<File>,
    /// Byte offset of the next unread line.
    offset: u64,
    /// Lines read so far (the next line's number is `line + 1`).
    line: u64,
    /// The line being read, reused between lines.
    buf: Vec<u8>,
    /// End of file reached.
    finished: bool,
}

impl FileSource {
    /// Opens the file of `config` for subtask `ctx.subtask`. Fails with a
    /// user error when the file cannot be opened or the source runs at a
    /// parallelism above 1.
    pub fn open(config: FileSourceConfig, ctx: &ConnectorContext) -> Result<FileSource, ConnectorError> {
        if ctx.parallelism > 1 {
            return Err(ConnectorError::user(format!(
                "source `{}`: file sources run at parallelism 1 (one reader per file), but this one has parallelism {}; \
                 set its parallelism to 1",
                ctx.name, ctx.parallelism
            )));
        }
        if let Some((field, problem)) = config.validate().into_iter().next() {
            return Err(ConnectorError::user(format!("source `{}`: {field}: {problem}", ctx.name)));
        }
        let path = config.path;
        let file = File::open(&path).map_err(|e| {
            ConnectorError::user(format!(
                "source `{}`: cannot open {}: {e}; check that the file exists and is readable",
                ctx.name,
                path.display()
            ))
        })?;
        let is_dir = file.metadata().is_ok_and(|m| m.is_dir());
        if is_dir {
            return Err(ConnectorError::user(format!(
                "source `{}`: {} is a directory; set `path` to a file",
                ctx.name,
                path.display()
            )));
        }
        Ok(FileSource {
            path,
            format: config.format,
            reader: BufReader::with_capacity(READ_BUFFER, file),
            offset: 0,
            line: 0,
            buf: Vec::new(),
            finished: false,
        })
    }

    /// Byte offset of the next unread line.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of lines read so far, empty ones included.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    fn read_error(&mut self, e: std::io::Error) -> ConnectorError {
        // Put the reader back at the start of the line so a retry rereads it.
        let message = format!("reading {} at byte {}: {e}", self.path.display(), self.offset);
        let _rewound = self.reader.seek(SeekFrom::Start(self.offset));
        ConnectorError::external(message, e)
    }
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError> {
        if self.finished {
            return Ok(Poll::Finished);
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut written = 0usize;
        loop {
            self.buf.clear();
            let read = match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(read) => read,
                Err(e) => return Err(self.read_error(e)),
            };
            if read == 0 {
                self.finished = true;
                break;
            }
            let mut line = &self.buf[..];
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest;
            }
            if let Some(rest) = line.strip_suffix(b"\r") {
                line = rest;
            }
            let skip = match self.format {
                LineFormat::Lines => line.is_empty(),
                LineFormat::JsonLines => {
                    let blank = line.iter().all(u8::is_ascii_whitespace);
                    if !blank && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                        return Err(ConnectorError::user(format!(
                            "{}:{}: not valid JSON: {e}; the line starts with {}; fix the line or read the file with format = \"lines\"",
                            self.path.display(),
                            self.line + 1,
                            preview(line)
                        )));
                    }
                    blank
                }
            };
            self.offset += read as u64;
            self.line += 1;
            if !skip {
                out.try_push(None, line, now_ms, &[]).map_err(|e| {
                    ConnectorError::user(format!("{}:{}: cannot read the line: {e}", self.path.display(), self.line))
                })?;
                written += 1;
                if out.len() >= target_bytes {
                    break;
                }
            }
        }
        Ok(if written > 0 { Poll::Ready } else { Poll::Finished })
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        let mut position = Vec::with_capacity(16);
        position.extend_from_slice(&self.offset.to_le_bytes());
        position.extend_from_slice(&self.line.to_le_bytes());
        Ok(position)
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        // A file is read by one subtask; the others of an earlier run (at a
        // parallelism the file source refuses today) recorded nothing.
        let mut recorded = positions.iter().filter(|p| !p.is_empty());
        let (Some(&position), None) = (recorded.next(), recorded.next()) else {
            return Err(ConnectorError::user(format!(
                "the checkpoint holds {} positions for the file source reading {}, but a file has exactly one reader; \
                 the checkpoint was not taken from this pipeline: restore from one of its checkpoints or start with --fresh",
                positions.iter().filter(|p| !p.is_empty()).count(),
                self.path.display()
            )));
        };
        let Ok(bytes) = <[u8; 16]>::try_from(position) else {
            return Err(ConnectorError::user(format!(
                "a file source position is 16 bytes (byte offset and line number, little-endian), but the checkpoint holds {} bytes; \
                 the checkpoint was not taken from a file source: restore from a checkpoint of this pipeline or start without one",
                position.len()
            )));
        };
        let offset = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let line = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        let len = self
            .reader
            .get_ref()
            .metadata()
            .map_err(|e| ConnectorError::external(format!("reading the size of {}: {e}", self.path.display()), e))?
            .len();
        if offset > len {
            return Err(ConnectorError::user(format!(
                "the checkpoint resumes {} at byte {offset}, but the file has only {len} bytes; \
                 it was truncated or replaced since the checkpoint: restore the original file or start without the checkpoint",
                self.path.display()
            )));
        }
        self.reader.seek(SeekFrom::Start(offset)).map_err(|e| {
            ConnectorError::external(format!("seeking {} to byte {offset}: {e}", self.path.display()), e)
        })?;
        self.offset = offset;
        self.line = line;
        self.finished = false;
        Ok(())
    }
}

/// The start of a line for an error message: lossy UTF-8, at most
/// [`PREVIEW_CHARS`] characters, quoted.
fn preview(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut cut: String = text.chars().take(PREVIEW_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use weir_connector::{ErrorKind, Frames};

    use super::*;
    use crate::test_ctx;

    fn file_with(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents).unwrap();
        file.flush().unwrap();
        file
    }

    fn open(path: &std::path::Path, format: LineFormat) -> FileSource {
        FileSource::open(FileSourceConfig { path: path.to_owned(), format }, &test_ctx(0, 1)).unwrap()
    }

    /// Polls to the end; returns every value.
    fn drain(source: &mut FileSource, target_bytes: usize) -> Result<Vec<Vec<u8>>, ConnectorError> {
        let mut values = Vec::new();
        loop {
            let mut out = BatchWriter::new();
            let poll = source.poll(&mut out, target_bytes)?;
            let bytes = out.finish();
            for r in Frames::new(&bytes) {
                let r = r.unwrap();
                assert_eq!(r.key, None);
                assert!(r.timestamp > 1_600_000_000_000, "wall-clock timestamp");
                values.push(r.value.to_vec());
            }
            match poll {
                Poll::Ready => assert!(!bytes.is_empty()),
                Poll::Finished => {
                    assert!(bytes.is_empty());
                    return Ok(values);
                }
                Poll::Idle(_) => panic!("a file source never idles"),
            }
        }
    }

    fn strings(values: Vec<Vec<u8>>) -> Vec<String> {
        values.into_iter().map(|v| String::from_utf8(v).unwrap()).collect()
    }

    #[test]
    fn lines_handle_crlf_empty_lines_and_a_missing_final_newline() {
        let file = file_with(b"one\r\ntwo\n\n\r\nthree\nfour \t\nlast");
        for target in [1, 10, 1 << 16] {
            let values = strings(drain(&mut open(file.path(), LineFormat::Lines), target).unwrap());
            assert_eq!(values, ["one", "two", "three", "four \t", "last"], "target {target}");
        }
        let empty = file_with(b"");
        assert!(drain(&mut open(empty.path(), LineFormat::Lines), 10).unwrap().is_empty());
    }

    #[test]
    fn json_lines_are_checked_and_kept_verbatim() {
        let file = file_with(b"{\"a\": 1}\r\n  \n[1,2]\n\"s\"\n42");
        let values = strings(drain(&mut open(file.path(), LineFormat::JsonLines), 1 << 16).unwrap());
        assert_eq!(values, ["{\"a\": 1}", "[1,2]", "\"s\"", "42"]);
    }

    #[test]
    fn bad_json_names_the_path_and_line() {
        let long = format!("{{\"a\": 1, \"b\": {}", "x".repeat(200));
        let file = file_with(format!("{{\"ok\":true}}\n\n{long}\n{{}}\n").as_bytes());
        let mut source = open(file.path(), LineFormat::JsonLines);
        let err = drain(&mut source, 1 << 16).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        let expected = format!("{}:3: not valid JSON: ", file.path().display());
        assert!(err.message.starts_with(&expected), "{}", err.message);
        let preview = format!("{:?}", format!("{}…", &long[..80]));
        assert!(err.message.contains(&preview), "{}", err.message);
        assert!(!err.message.contains(&"x".repeat(100)), "preview is cut: {}", err.message);
        // The position still points at the bad line.
        assert_eq!(source.lines_read(), 2);
    }

    #[test]
    fn snapshot_and_restore_resume_at_the_next_line() {
        let mut contents = Vec::new();
        for i in 0..1000 {
            if i % 7 == 0 {
                contents.extend_from_slice(b"\r\n");
            }
            contents.extend_from_slice(format!("line {i}{}", if i % 3 == 0 { "\r\n" } else { "\n" }).as_bytes());
        }
        let file = file_with(&contents);
        let all = drain(&mut open(file.path(), LineFormat::Lines), 1 << 20).unwrap();
        assert_eq!(all.len(), 1000);

        let mut first = open(file.path(), LineFormat::Lines);
        let mut out = BatchWriter::new();
        assert_eq!(first.poll(&mut out, 500).unwrap(), Poll::Ready);
        let done = out.records();
        assert!(done > 1 && done < 1000);
        let position = first.snapshot().unwrap();
        assert_eq!(position.len(), 16);
        let line = u64::from_le_bytes(position[8..].try_into().unwrap());
        assert!(line >= done as u64);

        let mut second = open(file.path(), LineFormat::Lines);
        second.restore(&[&position]).unwrap();
        assert_eq!(second.lines_read(), line);
        let rest = drain(&mut second, 300).unwrap();
        assert_eq!(all[done..], rest[..]);

        // Restoring a finished source rewinds it.
        first.restore(&[&position]).unwrap();
        assert_eq!(drain(&mut first, 1 << 20).unwrap(), rest);
        first.restore(&[&0u64.to_le_bytes().repeat(2)]).unwrap();
        assert_eq!(drain(&mut first, 1 << 20).unwrap(), all);
    }

    #[test]
    fn restore_rejects_bad_positions() {
        let file = file_with(b"a\nb\n");
        let mut source = open(file.path(), LineFormat::Lines);
        let err = source.restore(&[&[0; 8]]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains("16 bytes"), "{}", err.message);
        let mut past_end = 100u64.to_le_bytes().to_vec();
        past_end.extend_from_slice(&1u64.to_le_bytes());
        let err = source.restore(&[&past_end]).unwrap_err();
        assert!(err.message.contains("only 4 bytes"), "{}", err.message);
    }

    #[test]
    fn open_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.txt");
        let config = FileSourceConfig { path: missing.clone(), format: LineFormat::Lines };
        let err = FileSource::open(config.clone(), &test_ctx(0, 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains(&missing.display().to_string()), "{}", err.message);
        assert!(err.message.contains("No such file"), "{}", err.message);

        let err = FileSource::open(config, &test_ctx(0, 2)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert!(err.message.contains("file sources run at parallelism 1"), "{}", err.message);

        let config = FileSourceConfig { path: dir.path().to_owned(), format: LineFormat::Lines };
        let err = FileSource::open(config, &test_ctx(0, 1)).unwrap_err();
        assert!(err.message.contains("is a directory"), "{}", err.message);
    }

    #[test]
    fn config_parses_and_validates() {
        let config: FileSourceConfig =
            serde_json::from_value(serde_json::json!({"path": "in.jsonl", "format": "json-lines"})).unwrap();
        assert_eq!(config, FileSourceConfig { path: "in.jsonl".into(), format: LineFormat::JsonLines });
        assert!(config.validate().is_empty());
        let config: FileSourceConfig = serde_json::from_value(serde_json::json!({"path": "in.txt"})).unwrap();
        assert_eq!(config.format, LineFormat::Lines);
        assert!(serde_json::from_value::<FileSourceConfig>(serde_json::json!({"path": "a", "type": "file"})).is_err());
        assert!(serde_json::from_value::<FileSourceConfig>(serde_json::json!({})).is_err());
        let empty = FileSourceConfig { path: PathBuf::new(), format: LineFormat::Lines };
        assert_eq!(empty.validate()[0].0, "path");
    }
}
