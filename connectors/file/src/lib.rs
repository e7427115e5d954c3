//! File source, file sink and stdout sink.
//!
//! # Configuration
//!
//! Each connector is a table in a pipeline file. The `type` key (shown here
//! as the pipeline crate spells it) is handled by the pipeline crate; every
//! other key is a field of this crate's config structs, which reject unknown
//! keys.
//!
//! ```toml
//! # One record per non-empty line of a file.
//! [sources.clicks]
//! type = "file"
//! path = "data/clicks.jsonl"
//! format = "json-lines"        # "lines" (default) or "json-lines"
//!
//! # One line per record, one file per subtask.
//! [sinks.archive]
//! type = "file"
//! path = "out/clicks-{subtask}.jsonl"
//! format = "json"              # "value" (default) or "json"
//!
//! # The same line formats on standard output.
//! [sinks.console]
//! type = "stdout"
//! format = "value"
//! ```
//!
//! ## File source ([`FileSourceConfig`], [`FileSource`])
//!
//! | key      | default   | meaning |
//! |----------|-----------|---------|
//! | `path`   | required  | the file to read |
//! | `format` | `"lines"` | `"lines"`: any bytes; `"json-lines"`: every line must be JSON |
//!
//! The file is read once, line by line, from the start; at its end the source
//! is finished (it does not follow a growing file). Lines end with `\n` or
//! `\r\n`, and the last line may have no terminator. Every non-empty line is
//! one record: the value is the line without its terminator, there is no
//! key, and the timestamp is the wall-clock time when the line was read (in
//! ms since the Unix epoch; lines read by one poll share it). With
//! `json-lines`, lines holding only whitespace are skipped too, and a line
//! that is not JSON stops the pipeline with `<path>:<line>: not valid JSON`.
//! A file has one reader, so a file source runs at parallelism 1. Its
//! checkpoint position is the byte offset and the number of lines read, so
//! a restored source continues at exactly the next line.
//!
//! ## File sink ([`FileSinkConfig`], [`FileSink`])
//!
//! | key      | default   | meaning |
//! |----------|-----------|---------|
//! | `path`   | required  | the file to write; `{subtask}` is replaced by the subtask index |
//! | `format` | `"value"` | see [`OutputFormat`] |
//!
//! At parallelism above 1 every subtask writes its own file, so the path must
//! contain `{subtask}`. Missing parent directories are created.
//!
//! ### Exactly-once: output appears per checkpoint
//!
//! The output file only ever holds the records of completed checkpoints, so
//! a reader (`tail -f`, a downstream job) never sees a record that a restart
//! would take back. The sink stages through weir's one exactly-once staging
//! mechanism ([`weir_connector::staging`]), in hidden files next to the
//! output: records of the running checkpoint go to
//! `.{name}.{run}.inprogress` (through a 64 KiB buffer). On a checkpoint
//! barrier the sink fsyncs it, renames it to
//! `.{name}.{checkpoint}.{run}.sealed` and fsyncs the directory; the
//! checkpoint stores a handle naming that file, the output and the offset at
//! which the part belongs (JSON, e.g. `{"area":{"dir":"/data","stem":
//! ".out-0.txt"},"output":"/data/out-0.txt","offset":4096,"epoch":
//! {"checkpoint":7,"file":"/data/.out-0.txt.7.3f9a0c12.sealed","bytes":512,
//! "records":64}}`). Once the checkpoint is complete the part is appended to
//! the output at that offset, fsynced, and the sealed file removed. At the
//! end of the input the runtime takes a final checkpoint, which publishes
//! the rest.
//!
//! A fresh start truncates (or creates) the output. A restart from a
//! checkpoint publishes that checkpoint's parts that were not published yet
//! (again when a crash interrupted publishing: the output is cut back to the
//! part's offset first, so nothing appears twice), truncates the output to
//! the checkpoint's length, and removes the hidden files of a crashed run:
//! what it wrote after the checkpoint, which the restarted pipeline writes
//! again. After a change of parallelism a subtask also publishes the parts
//! of former subtasks' files. An output that is shorter than weir left it,
//! or a sealed file that was deleted or changed, stops the pipeline with an
//! error that names the file. Do not edit the output or the hidden files
//! while the pipeline runs or has a checkpoint to resume from.
//!
//! ### At-least-once: FIFOs, devices, `/dev/stdout`
//!
//! A path that is not a regular file (a FIFO, `/dev/stdout`, `/dev/null`, a
//! character device) cannot be held back or cut back. The sink then writes
//! to it directly, as data arrives (a checkpoint flushes the buffer), and
//! logs a warning that it is at-least-once: records written after the last
//! checkpoint are written again after a restart. Opening a FIFO waits until
//! a reader opens it.
//!
//! ## Stdout sink ([`StdoutSinkConfig`], [`StdoutSink`])
//!
//! | key      | default   | meaning |
//! |----------|-----------|---------|
//! | `format` | `"value"` | see [`OutputFormat`] |
//!
//! Output is buffered and written in whole lines, so subtasks never
//! interleave within a line. When the reader goes away (`weir run … | head`)
//! the sink fails with a user error, "stdout was closed", instead of a
//! panic.
//!
//! The stdout sink is at-least-once: after a restart, records written after
//! the last checkpoint appear again.
//!
//! ## Output formats
//!
//! Both sinks share one formatter, [`format_record`]:
//!
//! * `value`: the record value as is, then `\n`.
//! * `json`: `{"key":…,"value":…,"timestamp":…}` then `\n`. Key and value are
//!   JSON strings when they are UTF-8, otherwise `"0x"` followed by lowercase
//!   hex; an absent key is `null`. A value that is itself JSON text is still
//!   written as a string, so every line has the same shape.
//!
//! ```
//! use weir_connector::BatchWriter;
//! use weir_connector_file::{format_batch, OutputFormat};
//!
//! let mut batch = BatchWriter::new();
//! batch.push(Some(b"user-1"), b"{\"amount\":3}", 17, &[]);
//! batch.push(None, &[0xff, 0x00], 18, &[]);
//! let mut out = Vec::new();
//! format_batch(OutputFormat::Json, batch.as_bytes(), &mut out).unwrap();
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     "{\"key\":\"user-1\",\"value\":\"{\\\"amount\\\":3}\",\"timestamp\":17}\n\
//!      {\"key\":null,\"value\":\"0xff00\",\"timestamp\":18}\n"
//! );
//! ```

mod output;
mod sink;
mod source;

pub use output::{OutputFormat, format_batch, format_record};
pub use sink::{FileSink, FileSinkConfig, SUBTASK_PLACEHOLDER, StdoutSink, StdoutSinkConfig};
pub use source::{FileSource, FileSourceConfig, LineFormat};

#[cfg(test)]
fn test_ctx(subtask: u32, parallelism: u32) -> weir_connector::ConnectorContext {
    weir_connector::ConnectorContext::new("test", "files", subtask, parallelism)
}

mod registration {
    use crate::{FileSink, FileSinkConfig, FileSource, FileSourceConfig, StdoutSink, StdoutSinkConfig};
    use weir_connector::registry::{ConfigContext, FieldErrors, SinkConfig, SourceConfig};
    use weir_connector::{ConnectorContext, ConnectorError, Sink, Source};

    impl SourceConfig for FileSourceConfig {
        const TYPE: &'static str = "file";

        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            let problems = self.validate();
            self.path = cx.resolve(&self.path);
            problems
        }

        fn max_parallelism(&self) -> Option<u32> {
            Some(1)
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> {
            Ok(Box::new(FileSource::open(self.clone(), ctx)?))
        }
    }

    impl SinkConfig for FileSinkConfig {
        const TYPE: &'static str = "file";

        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            let problems = self.validate();
            self.path = cx.resolve(&self.path);
            problems
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
            Ok(Box::new(FileSink::open(self.clone(), ctx)?))
        }
    }

    impl SinkConfig for StdoutSinkConfig {
        const TYPE: &'static str = "stdout";

        fn prepare(&mut self, _: &ConfigContext<'_>) -> FieldErrors {
            self.validate()
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
            Ok(Box::new(StdoutSink::new(self.clone(), ctx)))
        }
    }
}
