//! # weir-sdk-connector: the core of sources and sinks for weir, in Rust
//!
//! A connector plugin is a source or a sink compiled to a WebAssembly
//! component and dropped into weir's plugin directory like an operator; a
//! pipeline uses it with `type = "wasm"` (see weir's `docs/plugins/connectors.md`).
//! It reaches the outside only through [`io`] (HTTP to the hosts the
//! pipeline grants in `allow-http`, SQL and key-value lookups on the
//! `[connections.*]` it grants), and weir keeps its position (a source's
//! [`Source::snapshot`]) and its pre-commit handles (a sink's
//! [`Sink::pre_commit`]) in checkpoints.
//!
//! A plugin depends on `weir-sdk-sink` or `weir-sdk-source`, which hold
//! the component bindings of one world each (a component carries the
//! worlds of every binding it links, so a sink must not link the source's)
//! and re-export everything here:
//!
//! ```
//! use weir_sdk_connector::{Committable, Error, Info, Records, Sink};
//!
//! /// Counts records, and "publishes" each epoch's count at its checkpoint.
//! struct Count { pending: u64 }
//!
//! impl Sink for Count {
//!     type Config = serde_json::Value;
//!     fn open(_config: serde_json::Value, _info: &Info) -> Result<Self, Error> {
//!         Ok(Count { pending: 0 })
//!     }
//!     fn write(&mut self, records: Records<'_>) -> Result<(), Error> {
//!         self.pending += records.count() as u64;
//!         Ok(())
//!     }
//!     fn pre_commit(&mut self, _checkpoint: u64) -> Result<Vec<u8>, Error> {
//!         Ok(std::mem::take(&mut self.pending).to_le_bytes().to_vec())
//!     }
//!     fn commit(&mut self, _checkpoint: u64, handle: &[u8]) -> Result<(), Error> {
//!         let _published = u64::from_le_bytes(handle.try_into().map_err(Error::user)?);
//!         Ok(())
//!     }
//! }
//!
//! // In the plugin crate: weir_sdk_sink::export_sink!(Count);
//! ```
//!
//! **Exactly-once** is two-phase: [`Sink::pre_commit`] seals what was
//! written since the last checkpoint and returns a handle (stored in the
//! checkpoint); [`Sink::commit`] publishes it once the checkpoint is
//! complete, and must be idempotent, because a restored run hands the
//! handles of its checkpoint to [`Sink::start`] to publish again.
#![deny(missing_docs)]

pub use weir_format::{self as format, BatchWriter, RecordRef as Record};

use serde::de::DeserializeOwned;
use std::cell::RefCell;

/// Defines the `io` module of a crate whose `bindings` import
/// `weir:plugin/async-io` (`weir-sdk-sink`, `weir-sdk-source`).
#[doc(hidden)]
#[macro_export]
// `crate::bindings` is the calling crate's, on purpose.
#[allow(clippy::crate_in_macro_def)]
macro_rules! __io_module {
    () => {
        /// The host's I/O, as plain calls (the host awaits them): only what
        /// the pipeline grants the section; anything else is an error
        /// naming the setting that grants it.
        pub mod io {
            pub use crate::bindings::weir::plugin::async_io::{HttpResponse, SqlRows, SqlValue};

            /// An HTTP/1.1 request to a plain `http://` URL whose
            /// `host:port` is in the section's `allow-http`. Any status is
            /// a response.
            pub fn http(method: &str, url: &str, headers: &[(String, String)], body: &[u8]) -> Result<HttpResponse, String> {
                crate::bindings::weir::plugin::async_io::http(method, url, headers, body)
            }

            /// A statement (`$1`, `$2`, ...) on connection `connection`
            /// (granted by the section's `connections`); every value comes
            /// back as text.
            pub fn sql(connection: &str, query: &str, params: &[SqlValue]) -> Result<SqlRows, String> {
                crate::bindings::weir::plugin::async_io::sql(connection, query, params)
            }

            /// The value under `key` in key-value store `store`.
            pub fn kv_get(store: &str, key: &str) -> Result<Option<String>, String> {
                crate::bindings::weir::plugin::async_io::kv_get(store, key)
            }
        }
    };
}

/// Who an instance is, given to `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Pipeline name.
    pub pipeline: String,
    /// The source's or sink's name in the pipeline file.
    pub name: String,
    /// Subtask index.
    pub subtask: u32,
    /// Number of subtasks.
    pub parallelism: u32,
    /// Whether the pipeline takes checkpoints. Without them a sink's
    /// `pre_commit` and `commit` are never called: it must publish as it
    /// writes (at-least-once).
    pub checkpointing: bool,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The config or the data is wrong: the pipeline stops with the message.
    User(String),
    /// An external system failed: the pipeline stops and may be restarted
    /// from its last checkpoint.
    External(String),
}

impl Error {
    /// A user error.
    pub fn user(message: impl std::fmt::Display) -> Self {
        Error::User(message.to_string())
    }

    /// An external error.
    pub fn external(message: impl std::fmt::Display) -> Self {
        Error::External(message.to_string())
    }
}

/// A pre-commit handle stored in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committable {
    /// The checkpoint whose data it publishes.
    pub checkpoint: u64,
    /// What [`Sink::pre_commit`] returned.
    pub handle: Vec<u8>,
}

/// The records of one batch, in order.
#[derive(Clone)]
pub struct Records<'a> {
    frames: weir_format::Frames<'a>,
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        // The host hands over only batches it checked.
        self.frames.next().and_then(Result::ok)
    }
}

/// A sink: weir calls `open`, `start`, then `write` per batch, and
/// `pre_commit`/`commit` around each checkpoint.
pub trait Sink: Sized + 'static {
    /// The section's `config` table, deserialized with serde.
    type Config: DeserializeOwned;

    /// Creates the instance; an error stops the pipeline before data flows.
    fn open(config: Self::Config, info: &Info) -> Result<Self, Error>;

    /// Before the first write: on a restore, the handles of the checkpoint
    /// the run resumes from, to publish again. The default commits each.
    fn start(&mut self, recovered: Option<Vec<Committable>>) -> Result<(), Error> {
        for c in recovered.unwrap_or_default() {
            self.commit(c.checkpoint, &c.handle)?;
        }
        Ok(())
    }

    /// One batch of records.
    fn write(&mut self, records: Records<'_>) -> Result<(), Error>;

    /// Seals what was written since the last checkpoint; the handle is
    /// stored in checkpoint `checkpoint` and given to [`Sink::commit`].
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, Error>;

    /// Publishes what `handle` describes; idempotent.
    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), Error>;

    /// End of input. With checkpoints a final checkpoint follows, whose
    /// commit publishes the rest; the default does nothing.
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// What [`Source::poll`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were written to the output (maybe none).
    Ready,
    /// Nothing now: poll again after at most this many milliseconds.
    Idle(u32),
    /// A bounded input is exhausted.
    Finished,
}

/// A source: weir calls `open`, `restore` (when resuming from a
/// checkpoint), then `poll` whenever it wants records and `snapshot` at
/// each checkpoint.
pub trait Source: Sized + 'static {
    /// The section's `config` table, deserialized with serde.
    type Config: DeserializeOwned;

    /// Creates the instance; an error stops the pipeline before data flows.
    fn open(config: Self::Config, info: &Info) -> Result<Self, Error>;

    /// Moves to a checkpoint's position: what [`Source::snapshot`] returned
    /// on every subtask when it was taken.
    fn restore(&mut self, positions: Vec<Vec<u8>>) -> Result<(), Error>;

    /// Writes records to `out`, about `max_bytes` of them.
    fn poll(&mut self, out: &mut BatchWriter, max_bytes: usize) -> Result<Poll, Error>;

    /// The position after the records written so far.
    fn snapshot(&mut self) -> Result<Vec<u8>, Error>;

    /// Checkpoint `checkpoint` is complete (acknowledge input upstream
    /// here, never earlier). The default does nothing.
    fn checkpoint_complete(&mut self, checkpoint: u64, position: &[u8]) -> Result<(), Error> {
        let _ = (checkpoint, position);
        Ok(())
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Glue between the generated exports and a [`Sink`] or [`Source`] (used
/// by the export macros and by native tests).
#[doc(hidden)]
pub mod rt {
    use super::*;

    fn with<T: 'static, R>(f: impl FnOnce(&mut T) -> Result<R, Error>) -> Result<R, Error> {
        INSTANCE.with(|i| {
            let mut i = i.borrow_mut();
            let t = i.as_mut().and_then(|b| b.downcast_mut::<T>()).ok_or_else(|| Error::user("called before open"))?;
            f(t)
        })
    }

    fn config<C: DeserializeOwned>(info: &Info, json: &str) -> Result<C, Error> {
        serde_json::from_str(json).map_err(|e| Error::user(format!("invalid config for {:?}: {e}", info.name)))
    }

    /// `open` of a sink.
    pub fn open_sink<S: Sink>(info: Info, config_json: &str) -> Result<(), Error> {
        let s = S::open(config(&info, config_json)?, &info)?;
        INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(s)));
        Ok(())
    }

    /// `start`.
    pub fn start<S: Sink>(recovered: Option<Vec<Committable>>) -> Result<(), Error> {
        with::<S, _>(|s| s.start(recovered))
    }

    /// `write`.
    pub fn write<S: Sink>(batch: &[u8]) -> Result<(), Error> {
        with::<S, _>(|s| s.write(Records { frames: weir_format::Frames::new(batch) }))
    }

    /// `pre-commit`.
    pub fn pre_commit<S: Sink>(checkpoint: u64) -> Result<Vec<u8>, Error> {
        with::<S, _>(|s| s.pre_commit(checkpoint))
    }

    /// `commit`.
    pub fn commit<S: Sink>(checkpoint: u64, handle: &[u8]) -> Result<(), Error> {
        with::<S, _>(|s| s.commit(checkpoint, handle))
    }

    /// `flush`.
    pub fn flush<S: Sink>() -> Result<(), Error> {
        with::<S, _>(|s| s.flush())
    }

    /// `open` of a source.
    pub fn open_source<S: Source>(info: Info, config_json: &str) -> Result<(), Error> {
        let s = S::open(config(&info, config_json)?, &info)?;
        INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(s)));
        Ok(())
    }

    /// `restore`.
    pub fn restore<S: Source>(positions: Vec<Vec<u8>>) -> Result<(), Error> {
        with::<S, _>(|s| s.restore(positions))
    }

    /// `poll`: the records written and what the source said.
    pub fn poll<S: Source>(max_bytes: u32) -> Result<(Vec<u8>, Poll), Error> {
        with::<S, _>(|s| {
            let mut out = BatchWriter::new();
            let poll = s.poll(&mut out, max_bytes as usize)?;
            Ok((out.finish(), poll))
        })
    }

    /// `snapshot`.
    pub fn snapshot<S: Source>() -> Result<Vec<u8>, Error> {
        with::<S, _>(|s| s.snapshot())
    }

    /// `checkpoint-complete`.
    pub fn checkpoint_complete<S: Source>(checkpoint: u64, position: &[u8]) -> Result<(), Error> {
        with::<S, _>(|s| s.checkpoint_complete(checkpoint, position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keep {
        pending: Vec<u8>,
        published: Vec<(u64, Vec<u8>)>,
    }

    impl Sink for Keep {
        type Config = serde_json::Value;
        fn open(_c: serde_json::Value, _i: &Info) -> Result<Self, Error> {
            Ok(Keep { pending: Vec::new(), published: Vec::new() })
        }
        fn write(&mut self, records: Records<'_>) -> Result<(), Error> {
            for r in records {
                self.pending.extend_from_slice(r.value);
            }
            Ok(())
        }
        fn pre_commit(&mut self, _c: u64) -> Result<Vec<u8>, Error> {
            Ok(std::mem::take(&mut self.pending))
        }
        fn commit(&mut self, c: u64, handle: &[u8]) -> Result<(), Error> {
            self.published.push((c, handle.to_vec()));
            Ok(())
        }
    }

    fn info() -> Info {
        Info { pipeline: "p".into(), name: "s".into(), subtask: 0, parallelism: 1, checkpointing: true }
    }

    #[test]
    fn a_sink_runs_through_the_glue_and_replays_recovered_handles() {
        rt::open_sink::<Keep>(info(), "{}").unwrap();
        rt::start::<Keep>(Some(vec![Committable { checkpoint: 3, handle: b"old".to_vec() }])).unwrap();
        let mut w = BatchWriter::new();
        w.push(None, b"a", 1, &[]);
        w.push(None, b"b", 2, &[]);
        rt::write::<Keep>(&w.finish()).unwrap();
        let handle = rt::pre_commit::<Keep>(4).unwrap();
        assert_eq!(handle, b"ab");
        rt::commit::<Keep>(4, &handle).unwrap();
        let published = INSTANCE.with(|i| i.borrow().as_ref().unwrap().downcast_ref::<Keep>().unwrap().published.clone());
        assert_eq!(published, [(3, b"old".to_vec()), (4, b"ab".to_vec())]);
        assert_eq!(rt::open_sink::<Keep>(info(), "not json"), Err(Error::User("invalid config for \"s\": expected ident at line 1 column 2".into())));
    }

    struct Numbers {
        next: u64,
        end: u64,
    }

    impl Source for Numbers {
        type Config = serde_json::Value;
        fn open(c: serde_json::Value, _i: &Info) -> Result<Self, Error> {
            Ok(Numbers { next: 0, end: c["end"].as_u64().ok_or_else(|| Error::user("end"))? })
        }
        fn restore(&mut self, positions: Vec<Vec<u8>>) -> Result<(), Error> {
            self.next = u64::from_le_bytes(positions[0].as_slice().try_into().map_err(Error::user)?);
            Ok(())
        }
        fn poll(&mut self, out: &mut BatchWriter, _max: usize) -> Result<Poll, Error> {
            if self.next == self.end {
                return Ok(Poll::Finished);
            }
            out.push(None, self.next.to_string().as_bytes(), 0, &[]);
            self.next += 1;
            Ok(Poll::Ready)
        }
        fn snapshot(&mut self) -> Result<Vec<u8>, Error> {
            Ok(self.next.to_le_bytes().to_vec())
        }
    }

    #[test]
    fn a_source_polls_snapshots_and_restores_through_the_glue() {
        rt::open_source::<Numbers>(info(), r#"{"end": 3}"#).unwrap();
        rt::restore::<Numbers>(vec![1u64.to_le_bytes().to_vec()]).unwrap();
        let (records, poll) = rt::poll::<Numbers>(1024).unwrap();
        assert_eq!(poll, Poll::Ready);
        assert_eq!(weir_format::Frames::new(&records).next().unwrap().unwrap().value, b"1");
        assert_eq!(rt::snapshot::<Numbers>().unwrap(), 2u64.to_le_bytes());
        rt::poll::<Numbers>(1024).unwrap();
        assert_eq!(rt::poll::<Numbers>(1024).unwrap(), (Vec::new(), Poll::Finished));
    }
}
