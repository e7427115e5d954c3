//! Running an operator natively inside a Rust host (feature `native`).
//!
//! A component exports `open`, `process`, `on-timer` and `close` over
//! frame-format batches; an [`Instance`] is the same four calls on an
//! operator compiled for the host, over the same SDK runtime (state
//! prefetch, per-batch write buffering, rejections), with a [`Host`] the
//! embedding program provides instead of the WIT imports. Only the Wasm
//! boundary is gone, which is what weir's native baseline measures: the
//! host registers [`factory`]`::<JsonFilter>()` under the plugin's name
//! and runs the pipeline as it would with the component.
//!
//! ```
//! use weir_sdk::native::{factory, Instance};
//! # use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};
//! # struct Shout;
//! # impl Operator for Shout {
//! #     type Config = NoConfig;
//! #     fn open(_: NoConfig, _: &OpenContext) -> Result<Self, Error> { Ok(Shout) }
//! #     fn process(&mut self, r: Record<'_>, out: &mut Output, _: &mut Context) -> Result<(), Error> {
//! #         out.emit(r.key, &r.value.to_ascii_uppercase(), r.timestamp);
//! #         Ok(())
//! #     }
//! # }
//! # struct NoState;
//! # impl weir_sdk::Host for NoState {
//! #     fn get(&mut self, _: &str, _: &[u8]) -> Result<Option<Vec<u8>>, weir_sdk::StateError> { Ok(None) }
//! #     fn get_many(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, weir_sdk::StateError> { Ok(Vec::new()) }
//! #     fn map_get(&mut self, _: &str, _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>, weir_sdk::StateError> { Ok(None) }
//! #     fn map_entries(&mut self, _: &str, _: &[u8]) -> Result<weir_sdk::Entries, weir_sdk::StateError> { Ok(Vec::new()) }
//! #     fn apply(&mut self, _: &[u8]) -> Result<(), weir_sdk::StateError> { Ok(()) }
//! #     fn register_timer(&mut self, _: weir_sdk::TimeDomain, _: &[u8], _: i64) {}
//! #     fn delete_timer(&mut self, _: weir_sdk::TimeDomain, _: &[u8], _: i64) {}
//! #     fn watermark(&mut self) -> i64 { i64::MIN }
//! #     fn processing_time(&mut self) -> i64 { 0 }
//! #     fn input(&mut self) -> usize { 0 }
//! #     fn input_names(&mut self) -> Vec<String> { vec!["input".into()] }
//! #     fn log(&mut self, _: weir_sdk::LogLevel, _: &str) {}
//! # }
//! let info = weir_sdk::OpenContext { pipeline: "p".into(), operator: "shout".into(), subtask: 0, parallelism: 1, inputs: vec!["input".into()] };
//! // The host must be `Send`: the instance runs on the host's task thread.
//! let mut op: Box<dyn Instance> = factory::<Shout>().open(info, "{}", Box::new(NoState)).unwrap();
//! let mut batch = weir_sdk::format::BatchWriter::new();
//! batch.push(None, b"hi", 0, &[]);
//! let out = weir_sdk::testing::decode(&op.process(&batch.finish()).unwrap());
//! assert_eq!(out[0].value, b"HI");
//! ```

use crate::context::Host;
use crate::rt::Runtime;
use crate::{OpenContext, Operator, Rejected, Timer};
use std::marker::PhantomData;
use std::sync::Arc;

/// One opened operator instance, called like a component: each call takes
/// and returns a batch in [`crate::format`]'s frame layout. The state
/// writes of a call reach the host through [`Host::apply`] before it
/// returns; the host commits or rolls them back after it, as it does for a
/// component.
pub trait Instance: Send {
    /// Processes one batch (the `process` export).
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, Rejected>;
    /// Delivers fired timers (the `on-timer` export).
    fn on_timer(&mut self, fired: Vec<Timer>) -> Result<Vec<u8>, Rejected>;
    /// Signals the end of input (the `close` export).
    fn close(&mut self) -> Result<Vec<u8>, String>;
}

/// Opens instances of one operator type: what a host keeps per plugin name
/// in place of the component file.
pub trait Factory: Send + Sync {
    /// Opens an instance with its JSON config (the `open` export), over
    /// `host`, its keyed state, timers and log.
    fn open(&self, info: OpenContext, config_json: &str, host: Box<dyn Host + Send>) -> Result<Box<dyn Instance>, String>;
}

/// The factory of operator `O`, e.g. `factory::<JsonFilter>()`.
pub fn factory<O: Operator + Send>() -> Arc<dyn Factory> {
    Arc::new(OperatorFactory::<O>(PhantomData))
}

struct OperatorFactory<O>(PhantomData<fn() -> O>);

impl<O: Operator + Send> Factory for OperatorFactory<O> {
    fn open(&self, info: OpenContext, config_json: &str, host: Box<dyn Host + Send>) -> Result<Box<dyn Instance>, String> {
        Ok(Box::new(Native { rt: Runtime::<O>::open(info, config_json, host)? }))
    }
}

/// An operator with its runtime (`Send`: so are its operator and, as every
/// [`Host`] is, its host).
struct Native<O> {
    rt: Runtime<O>,
}

impl<O: Operator + Send> Instance for Native<O> {
    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, Rejected> {
        self.rt.process(batch)
    }

    fn on_timer(&mut self, fired: Vec<Timer>) -> Result<Vec<u8>, Rejected> {
        self.rt.on_timer(fired)
    }

    fn close(&mut self) -> Result<Vec<u8>, String> {
        self.rt.close()
    }
}
