//! Glue between the generated exports and an [`Operator`]; used by
//! [`crate::export_operator!`], by the native [`crate::testing`] harness
//! and by native embeddings (`native`, feature `native`), so native tests
//! and native runs take exactly the code path a component takes.

use crate::context::{Context, Host, LogLevel, StateError};
use crate::{Error, OpenContext, Operator, Output, Rejected, TimeDomain, Timer};
use std::any::Any;
use std::cell::RefCell;
use weir_format::Frames;

/// An opened operator with its host context.
pub(crate) struct Runtime<O> {
    pub(crate) op: O,
    pub(crate) ctx: Context,
}

impl<O: Operator> Runtime<O> {
    pub(crate) fn open(info: OpenContext, config_json: &str, host: Box<dyn Host>) -> Result<Self, String> {
        let config: O::Config = serde_json::from_str(config_json)
            .map_err(|e| format!("invalid config for operator {:?}: {e}", info.operator))?;
        let op = O::open(config, &info).map_err(|e| e.message().to_owned())?;
        Ok(Self { op, ctx: Context::new(host) })
    }

    pub(crate) fn process(&mut self, input: &[u8]) -> Result<Vec<u8>, Rejected> {
        let mut out = Output::with_capacity(input.len() + input.len() / 4);
        if !O::PREFETCH.is_empty() {
            let keys: Vec<Option<&[u8]>> = Frames::new(input).map(|r| r.ok().and_then(|r| r.key)).collect();
            if let Err(e) = self.ctx.prefetch(O::PREFETCH, &keys) {
                self.ctx.reset();
                return Err(Rejected { index: count(input), message: format!("prefetching state: {e}") });
            }
        }
        let mut index = 0u32;
        for rec in Frames::new(input) {
            self.ctx.set_current(index as usize);
            let result = match rec {
                Ok(rec) => self.op.process(rec, &mut out, &mut self.ctx),
                Err(e) => Err(Error::msg(e)),
            };
            if let Err(e) = result {
                self.ctx.reset();
                return Err(Rejected { index, message: e.message().to_owned() });
            }
            index += 1;
        }
        self.finish(out, index)
    }

    pub(crate) fn on_timer(&mut self, fired: Vec<Timer>) -> Result<Vec<u8>, Rejected> {
        let mut out = Output::default();
        let n = fired.len() as u32;
        for (index, timer) in fired.into_iter().enumerate() {
            self.ctx.set_current(usize::MAX);
            if let Err(e) = self.op.on_timer(timer, &mut out, &mut self.ctx) {
                self.ctx.reset();
                return Err(Rejected { index: index as u32, message: e.message().to_owned() });
            }
        }
        self.finish(out, n)
    }

    pub(crate) fn close(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Output::default();
        if let Err(e) = self.op.close(&mut out, &mut self.ctx) {
            self.ctx.reset();
            return Err(e.message().to_owned());
        }
        self.finish(out, 0).map_err(|r| r.message)
    }

    fn finish(&mut self, out: Output, inputs: u32) -> Result<Vec<u8>, Rejected> {
        match self.ctx.end_batch() {
            Ok(()) => Ok(out.into_bytes()),
            Err(e) => Err(Rejected { index: inputs, message: format!("the host refused the batch's state writes: {e}") }),
        }
    }
}

fn count(input: &[u8]) -> u32 {
    Frames::new(input).count() as u32
}

// ---- component glue -------------------------------------------------------

use crate::bindings::weir::plugin::{inputs, log, state, timers, types};

thread_local! {
    static RUNTIME: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_runtime<O: Operator, R>(f: impl FnOnce(&mut Runtime<O>) -> R) -> R {
    RUNTIME.with(|slot| {
        let mut slot = slot.borrow_mut();
        let rt = slot
            .as_mut()
            .and_then(|b| b.downcast_mut::<Runtime<O>>())
            .expect("weir host called the operator before a successful open");
        f(rt)
    })
}

fn output(result: Result<Vec<u8>, Rejected>) -> types::BatchOutput {
    match result {
        Ok(records) => types::BatchOutput { records, error: None },
        Err(Rejected { index, message }) => types::BatchOutput { records: Vec::new(), error: Some(types::RecordError { index, message }) },
    }
}

/// `open` export.
pub fn open<O: Operator>(info: types::OperatorInfo) -> Result<(), String> {
    let mut host = WasmHost;
    let open = OpenContext {
        pipeline: info.pipeline,
        operator: info.operator,
        subtask: info.subtask,
        parallelism: info.parallelism,
        inputs: host.input_names(),
    };
    let rt = Runtime::<O>::open(open, &info.config, Box::new(host))?;
    RUNTIME.with(|slot| *slot.borrow_mut() = Some(Box::new(rt)));
    Ok(())
}

/// `process` export.
pub fn process<O: Operator>(input: Vec<u8>) -> types::BatchOutput {
    output(with_runtime::<O, _>(|rt| rt.process(&input)))
}

/// `on-timer` export.
pub fn on_timer<O: Operator>(fired: Vec<types::Timer>) -> types::BatchOutput {
    let fired = fired
        .into_iter()
        .map(|t| Timer { domain: from_wit_domain(t.domain), key: t.key, timestamp: t.timestamp })
        .collect();
    output(with_runtime::<O, _>(|rt| rt.on_timer(fired)))
}

/// `close` export.
pub fn close<O: Operator>() -> Result<Vec<u8>, String> {
    with_runtime::<O, _>(|rt| rt.close())
}

fn from_wit_domain(d: types::TimeDomain) -> TimeDomain {
    match d {
        types::TimeDomain::EventTime => TimeDomain::EventTime,
        types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
    }
}

fn to_wit_domain(d: TimeDomain) -> types::TimeDomain {
    match d {
        TimeDomain::EventTime => types::TimeDomain::EventTime,
        TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
    }
}

fn from_wit_error(e: state::StateError) -> StateError {
    match e {
        state::StateError::KeyNotOwned => StateError::KeyNotOwned,
        state::StateError::TooLarge(n) => StateError::TooLarge(n),
        state::StateError::Invalid(s) => StateError::Invalid(s),
    }
}

/// The host as seen through the WIT imports.
struct WasmHost;

impl Host for WasmHost {
    fn get(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        state::get(name, key).map_err(from_wit_error)
    }
    fn get_many(&mut self, name: &str, keys: &[u8]) -> Result<Vec<u8>, StateError> {
        state::get_many(name, keys).map_err(from_wit_error)
    }
    fn map_get(&mut self, name: &str, key: &[u8], map_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        state::map_get(name, key, map_key).map_err(from_wit_error)
    }
    fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        state::map_entries(name, key).map_err(from_wit_error)
    }
    fn apply(&mut self, ops: &[u8]) -> Result<(), StateError> {
        state::apply(ops).map_err(from_wit_error)
    }
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        timers::register(to_wit_domain(domain), key, timestamp);
    }
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        timers::delete(to_wit_domain(domain), key, timestamp);
    }
    fn watermark(&mut self) -> i64 {
        timers::current_watermark()
    }
    fn processing_time(&mut self) -> i64 {
        timers::current_processing_time()
    }
    fn input(&mut self) -> usize {
        inputs::current() as usize
    }
    fn input_names(&mut self) -> Vec<String> {
        inputs::names()
    }
    fn log(&mut self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => log::Level::Trace,
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Info => log::Level::Info,
            LogLevel::Warn => log::Level::Warn,
            LogLevel::Error => log::Level::Error,
        };
        log::log(level, message);
    }
}
