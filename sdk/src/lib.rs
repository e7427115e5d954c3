//! # weir-sdk: stream operators for weir, in Rust, as WebAssembly components
//!
//! An operator is a plain Rust type that implements [`Operator`]; one line,
//! [`export_operator!`], turns it into a component that the `weir` host
//! loads from its plugins directory.
//!
//! ```
//! use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};
//!
//! /// Upper-cases every value.
//! struct Shout;
//!
//! impl Operator for Shout {
//!     type Config = NoConfig;
//!
//!     fn open(_config: NoConfig, _ctx: &OpenContext) -> Result<Self, Error> {
//!         Ok(Shout)
//!     }
//!
//!     fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
//!         out.emit_with(record.key, record.timestamp, |v| v.extend(record.value.to_ascii_uppercase()));
//!         Ok(())
//!     }
//! }
//!
//! // In the plugin crate: weir_sdk::export_operator!(Shout);
//!
//! // Operator logic is testable natively, without Wasm:
//! let mut h = weir_sdk::testing::Harness::<Shout>::open("{}").unwrap();
//! let out = h.process(&[weir_sdk::testing::record(None, "hi")]).unwrap();
//! assert_eq!(out[0].value, b"HI");
//! ```
//!
//! For the simple cases, one function is enough: [`map!`] and [`filter!`]
//! define the operator type from a function of the record
//! (`weir_sdk::map!(Shout, |r: &Record<'_>| r.value.to_ascii_uppercase());`).
//!
//! ## How a batch crosses the boundary
//!
//! The host hands the guest a whole batch of records as one byte buffer in
//! [`weir_format`]'s frame layout and receives the outputs the same way. The
//! SDK walks the buffer and gives [`Operator::process`] borrowed [`Record`]
//! views (no copy, no allocation per record); [`Output`] appends frames to
//! one output buffer. A batch costs one call into Wasm, not one per record.
//!
//! ## State
//!
//! Keyed state lives in the host ([`Context::get`], [`Context::put`], map
//! state, timers), so it survives a hot reload and is checkpointed by the
//! host. Reads are host calls (batched for the names in
//! [`Operator::PREFETCH`]); writes are buffered and applied in one host
//! call at the end of the batch, so a batch's state updates are applied
//! together, after its last record.
//!
//! ## Native embedding
//!
//! With the `native` feature, [`native`] runs an operator compiled for the
//! host inside a Rust program, behind the same batch calls a component
//! exports and over a [`Host`] the program provides. weir's host uses it to
//! measure what the Wasm boundary costs against the same operator code
//! (`weir-bench events-agg`), and it embeds a Rust operator without Wasm.
//!
//! ## Errors
//!
//! Returning an [`Error`] from [`Operator::process`] rejects that record:
//! the outputs of the records before it are kept, the outputs it emitted
//! itself are dropped, and the host applies the operator's `on-error`
//! policy (fail the pipeline with a message naming the record, or skip it).
//! A panic traps the instance; the host reports it with the plugin, operator
//! and batch, and never crashes.
#![deny(missing_docs)]

pub mod bindings;
mod context;
mod hash;
#[cfg(feature = "native")]
pub mod native;
#[doc(hidden)]
pub mod rt;
pub mod testing;

pub use context::{Context, Entries, Host, LogLevel, StateError};
pub use weir_format::{self as format, Preview, RecordRef as Record};
pub use wit_bindgen;

use serde::de::DeserializeOwned;
use std::fmt;

/// A stream operator.
///
/// The host creates one instance per parallel subtask with
/// [`Operator::open`], then calls [`Operator::process`] for every input
/// record, [`Operator::on_timer`] for fired timers, and [`Operator::close`]
/// at the end of the input.
pub trait Operator: Sized + 'static {
    /// The operator's `config` table from the pipeline file, deserialized
    /// with serde (the host always passes a JSON object, `{}` when the
    /// pipeline gives none). Use [`NoConfig`] for an operator without
    /// settings, or `serde_json::Value` to take it raw. Add
    /// `#[serde(deny_unknown_fields)]` so a misspelt key is an error.
    type Config: DeserializeOwned;

    /// Value-state names this operator reads for each record's key.
    ///
    /// Before a batch is processed the SDK fetches these states for every
    /// key in the batch with one host call, so [`Context::get`] on them is a
    /// local lookup. Leave it empty when state is read rarely.
    const PREFETCH: &'static [&'static str] = &[];

    /// Creates the instance; an error stops the pipeline before data flows.
    fn open(config: Self::Config, ctx: &OpenContext) -> Result<Self, Error>;

    /// Handles one input record, emitting any number of outputs.
    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error>;

    /// Handles a fired timer. The default does nothing.
    fn on_timer(&mut self, timer: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let _ = (timer, out, ctx);
        Ok(())
    }

    /// Called once at the end of the input, to emit what the operator still
    /// holds. The default does nothing.
    fn close(&mut self, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let _ = (out, ctx);
        Ok(())
    }
}

/// The config of an operator that takes none: accepts only an empty table,
/// so a setting given by mistake is reported instead of ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Who an instance is, given to [`Operator::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenContext {
    /// Name of the pipeline.
    pub pipeline: String,
    /// Name of the operator in the pipeline.
    pub operator: String,
    /// Index of this parallel instance, from 0.
    pub subtask: u32,
    /// Number of parallel instances.
    pub parallelism: u32,
    /// The operator's inputs: the names of its upstream nodes, in the
    /// order of its `inputs` (or `input`) setting. One name for most
    /// operators; a join has two and tells them apart with
    /// [`Context::input`].
    pub inputs: Vec<String>,
}

/// The clock a [`Timer`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark passes the timestamp.
    EventTime,
    /// Fires when the host's wall clock passes the timestamp.
    ProcessingTime,
}

/// A fired timer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer {
    /// Which clock it followed.
    pub domain: TimeDomain,
    /// The key it was registered for.
    pub key: Vec<u8>,
    /// When it was due, in ms since the Unix epoch.
    pub timestamp: i64,
}

/// Why an operator rejected a record or failed to open.
///
/// The message is shown to the person running the pipeline together with
/// the plugin, operator and record, so say what is wrong with the input.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with the given message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self { message: message.to_string() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::msg(e)
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Self::msg(e)
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Self::msg(e)
    }
}

/// A rejected input, as the host sees it: the operator's [`Error`] for one
/// record or fired timer of a call, with its position in the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the input (record or timer) the operator rejected; the
    /// number of inputs when the call as a whole failed (its state writes
    /// were refused).
    pub index: u32,
    /// The operator's message.
    pub message: String,
}

/// Collects an operator's output records into one frame buffer.
#[derive(Debug, Default)]
pub struct Output {
    writer: weir_format::BatchWriter,
}

impl Output {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self { writer: weir_format::BatchWriter::with_capacity(bytes) }
    }

    /// Emits a record.
    #[inline]
    pub fn emit(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        self.writer.push(key, value, timestamp, &[]);
    }

    /// Emits a record with headers.
    #[inline]
    pub fn emit_with_headers(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64, headers: &[(&[u8], &[u8])]) {
        self.writer.push(key, value, timestamp, headers);
    }

    /// Emits a record whose value `write_value` appends to the given buffer,
    /// without building it in a separate allocation first.
    #[inline]
    pub fn emit_with(&mut self, key: Option<&[u8]>, timestamp: i64, write_value: impl FnOnce(&mut Vec<u8>)) {
        self.writer.push_with(key, timestamp, write_value);
    }

    /// Like [`Output::emit_with`], keeping encoded headers, typically the
    /// input record's (`record.raw_headers`), so metadata such as tracing or
    /// latency stamps travels on through the operator.
    #[inline]
    pub fn emit_with_raw_headers(&mut self, key: Option<&[u8]>, timestamp: i64, raw_headers: &[u8], write_value: impl FnOnce(&mut Vec<u8>)) {
        self.writer.push_with_raw_headers(key, timestamp, raw_headers, write_value);
    }

    /// Emits an input record unchanged (key, value, timestamp and headers).
    #[inline]
    pub fn forward(&mut self, record: &Record<'_>) {
        self.writer.push_record(record);
    }

    /// Number of records emitted so far in this call.
    pub fn len(&self) -> usize {
        self.writer.records()
    }

    /// True when nothing was emitted yet in this call.
    pub fn is_empty(&self) -> bool {
        self.writer.records() == 0
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.writer.finish()
    }
}

/// A value that can be kept in host state: encoded to and decoded from bytes.
/// [`Context::get`], [`Context::put`] and [`testing::Harness::state`] take
/// any `T: StateValue`:
///
/// | type | bytes in state | same layout in JS / Python |
/// |---|---|---|
/// | `i64`, `u64`, `f64` | 8, little-endian | `codecs.i64` / `weir.I64`, `u64`, `f64` |
/// | `i32`, `u32` | 4, little-endian | - |
/// | `bool` | 1 (`0` or `1`) | - |
/// | `String` | UTF-8 | `codecs.string` / `weir.STR` |
/// | `Vec<u8>` | as is | `codecs.bytes` / `weir.BYTES` (the default) |
///
/// Bytes that do not decode as the type asked for (an `i64` read of 4
/// bytes, a `String` read of invalid UTF-8) make `get` return
/// [`StateError::Invalid`]. Map state ([`Context::map_get`] and friends)
/// takes and returns raw bytes: encode with [`StateValue::encode`] or keep
/// text. For your own types, store JSON (`serde_json::to_vec`, then
/// `put::<Vec<u8>>`) or implement this trait:
///
/// ```
/// use weir_sdk::StateValue;
///
/// struct Point { x: i32, y: i32 }
///
/// impl StateValue for Point {
///     fn encode(&self, buf: &mut Vec<u8>) {
///         buf.extend_from_slice(&self.x.to_le_bytes());
///         buf.extend_from_slice(&self.y.to_le_bytes());
///     }
///     fn decode(bytes: &[u8]) -> Option<Self> {
///         let (x, y) = bytes.split_at_checked(4)?;
///         Some(Point { x: i32::from_le_bytes(x.try_into().ok()?), y: i32::from_le_bytes(y.try_into().ok()?) })
///     }
/// }
/// ```
pub trait StateValue: Sized {
    /// Encodes the value.
    fn encode(&self, buf: &mut Vec<u8>);
    /// Decodes a value; `None` when the bytes are not a valid encoding.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

macro_rules! state_value_le {
    ($($t:ty),*) => {$(
        impl StateValue for $t {
            fn encode(&self, buf: &mut Vec<u8>) {
                buf.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
state_value_le!(i64, u64, i32, u32, f64);

impl StateValue for bool {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(u8::from(*self));
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

impl StateValue for Vec<u8> {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl StateValue for String {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// What a [`map!`] function may return: the new value (`Vec<u8>`, `String`,
/// `&str`, `&[u8]`), `Option` of one (`None` drops the record), or a
/// `Result` of either (`Err` rejects the record).
pub trait MapResult {
    /// The new value, `None` to drop the record.
    fn into_value(self) -> Result<Option<Vec<u8>>, Error>;
}

impl MapResult for Vec<u8> {
    fn into_value(self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self))
    }
}

impl MapResult for String {
    fn into_value(self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self.into_bytes()))
    }
}

impl MapResult for &str {
    fn into_value(self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self.as_bytes().to_vec()))
    }
}

impl MapResult for &[u8] {
    fn into_value(self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(self.to_vec()))
    }
}

impl<T: MapResult> MapResult for Option<T> {
    fn into_value(self) -> Result<Option<Vec<u8>>, Error> {
        self.map_or(Ok(None), MapResult::into_value)
    }
}

impl<T: MapResult, E: Into<Error>> MapResult for Result<T, E> {
    fn into_value(self) -> Result<Option<Vec<u8>>, Error> {
        self.map_err(Into::into)?.into_value()
    }
}

/// What a [`filter!`] predicate may return: `bool`, or `Result<bool, E>`
/// (`Err` rejects the record).
pub trait FilterResult {
    /// Whether to keep the record.
    fn keep(self) -> Result<bool, Error>;
}

impl FilterResult for bool {
    fn keep(self) -> Result<bool, Error> {
        Ok(self)
    }
}

impl<E: Into<Error>> FilterResult for Result<bool, E> {
    fn keep(self) -> Result<bool, Error> {
        self.map_err(Into::into)
    }
}

/// Defines an operator type `$name` from one function of the record that
/// returns its new value ([`MapResult`]): key, timestamp and headers are
/// kept; `None` drops the record, `Err` rejects it. The operator takes no
/// config ([`NoConfig`]) and no state; anything more is an [`Operator`].
///
/// ```
/// use weir_sdk::Record;
///
/// fn shout(record: &Record<'_>) -> Result<String, weir_sdk::Error> {
///     Ok(std::str::from_utf8(record.value)?.to_uppercase())
/// }
/// weir_sdk::map!(Shout, shout);
/// // In the plugin crate: weir_sdk::export_operator!(Shout);
///
/// // A closure works too:
/// weir_sdk::map!(Trim, |r: &Record<'_>| r.value.trim_ascii().to_vec());
///
/// let mut h = weir_sdk::testing::Harness::<Shout>::open("{}").unwrap();
/// let out = h.process(&[weir_sdk::testing::record(Some("k"), "hi")]).unwrap();
/// assert_eq!((out[0].key.as_deref(), &out[0].value[..]), (Some(&b"k"[..]), &b"HI"[..]));
/// ```
#[macro_export]
macro_rules! map {
    ($name:ident, $f:expr) => {
        $crate::__one_function_operator!($name, "An operator defined by one function (`weir_sdk::map!`).", |record, out| {
            let f = $f;
            if let Some(value) = $crate::MapResult::into_value(f(&record))? {
                out.emit_with_raw_headers(record.key, record.timestamp, record.raw_headers, |v| v.extend_from_slice(&value));
            }
        });
    };
}

/// The operator type of [`map!`] and [`filter!`]: no config, no state,
/// `process` given as a body over `record` and `out`.
#[doc(hidden)]
#[macro_export]
macro_rules! __one_function_operator {
    ($name:ident, $doc:literal, |$record:ident, $out:ident| $body:block) => {
        #[doc = $doc]
        pub struct $name;

        impl $crate::Operator for $name {
            type Config = $crate::NoConfig;

            fn open(_config: $crate::NoConfig, _ctx: &$crate::OpenContext) -> ::core::result::Result<Self, $crate::Error> {
                Ok($name)
            }

            fn process(&mut self, $record: $crate::Record<'_>, $out: &mut $crate::Output, _ctx: &mut $crate::Context) -> ::core::result::Result<(), $crate::Error> {
                $body
                Ok(())
            }
        }
    };
}

/// Defines an operator type `$name` from one predicate of the record
/// ([`FilterResult`]): records for which it is true pass unchanged, `Err`
/// rejects the record. No config, no state.
///
/// ```
/// weir_sdk::filter!(OnlyErrors, |r: &weir_sdk::Record<'_>| r.value.windows(5).any(|w| w == b"error"));
/// // In the plugin crate: weir_sdk::export_operator!(OnlyErrors);
///
/// let mut h = weir_sdk::testing::Harness::<OnlyErrors>::open("{}").unwrap();
/// let out = h.process(&[weir_sdk::testing::record(None, "ok"), weir_sdk::testing::record(None, "an error")]).unwrap();
/// assert_eq!(out.len(), 1);
/// ```
#[macro_export]
macro_rules! filter {
    ($name:ident, $f:expr) => {
        $crate::__one_function_operator!($name, "An operator defined by one predicate (`weir_sdk::filter!`).", |record, out| {
            let f = $f;
            if $crate::FilterResult::keep(f(&record))? {
                out.forward(&record);
            }
        });
    };
}

/// Turns an [`Operator`] into the component's exports.
///
/// Put it once in the plugin crate (a `cdylib` built for `wasm32-wasip2`):
///
/// ```ignore
/// weir_sdk::export_operator!(MyOperator);
/// ```
#[macro_export]
macro_rules! export_operator {
    ($op:ty) => {
        // Natively the exports would be plain C symbols (and `cargo test`
        // does not need them): only a Wasm build exports the operator.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __WeirGuest;
            impl $crate::bindings::exports::weir::plugin::handler::Guest for __WeirGuest {
                fn open(info: $crate::bindings::weir::plugin::types::OperatorInfo) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::rt::open::<$op>(info)
                }
                fn process(input: ::std::vec::Vec<u8>) -> $crate::bindings::weir::plugin::types::BatchOutput {
                    $crate::rt::process::<$op>(input)
                }
                fn on_timer(fired: ::std::vec::Vec<$crate::bindings::weir::plugin::types::Timer>) -> $crate::bindings::weir::plugin::types::BatchOutput {
                    $crate::rt::on_timer::<$op>(fired)
                }
                fn close() -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::rt::close::<$op>()
                }
            }
            $crate::bindings::__export_operator_world!(__WeirGuest with_types_in $crate::bindings);
        };
    };
}
