//! weir's WebAssembly engine.
//!
//! * One [`Engine`] per host: Cranelift, the pooling instance allocator,
//!   epoch interruption driven by one ticker thread, and component-model
//!   concurrency support *off* (it adds ~0.5 us to every call and is only
//!   needed for component-model async).
//! * [`Engine::load`] turns a `.wasm` file into a [`Plugin`]: it checks the
//!   file is a component of the `weir:plugin/operator` world, compiles it
//!   once and caches the compiled artifact on disk keyed by the content hash,
//!   and keeps an `InstancePre` so instances are cheap to create.
//! * [`OperatorInstance`] is one live instance with its own store: a memory
//!   cap, a CPU deadline per call, host-managed keyed state and timers, and
//!   captured stdout/stderr (a panic message ends up in the error report).
//!   A trap is reported as a [`CallError`] naming what happened; it never
//!   takes the host down.
//!
//! * [`AsyncInstance`] is one *slot* of an async operator (world
//!   `weir:plugin/async-operator`): an instance whose calls are awaited on
//!   a tokio runtime, with HTTP/SQL/key-value imports served by an
//!   [`IoProvider`] (implemented by `weir-async`).
//!
//! * [`SinkInstance`] and [`SourceInstance`] are instances of connector
//!   plugins (worlds `weir:plugin/sink` and `weir:plugin/source`): sources
//!   and sinks written as components, with the async operator's imports
//!   and calls (`weir-connector-wasm` adapts them to weir's connector
//!   traits).
//!
//! * [`reload`] watches the plugin directory and validates a new version
//!   in the background (compile through the cache, world and exports,
//!   instantiate under limits, `open`); the swap itself happens in the task
//!   loop (`weir-task`), with the keyed state handed over
//!   ([`OperatorInstance::exchange_state`]) and the optional `migrate` hook
//!   called ([`OperatorInstance::migrate`]).
//!
//! * A [`Profiler`] in the [`EngineConfig`] samples the guest stacks of
//!   every instance at each epoch tick (`weir run --profile`).
//!
//! Capabilities are denied by default: a plugin gets no filesystem, network,
//! environment or arguments. Clocks and randomness are available because
//! language runtimes need them to start.

mod asyncop;
mod connector;
mod engine;
mod instance;
mod output;
mod plugin;
mod profile;
pub mod reload;

pub use engine::{Engine, EngineConfig, EPOCH_TICK};
pub use instance::{now_ms, plugin_log, CallError, InstanceInfo, Limits, OperatorInstance, TimerFired, TrapKind};
pub use profile::{OperatorProfile, ProfileReport, Profiler};
pub use plugin::{find_plugin, list_plugins, missing_plugin, Plugin, PluginError, PluginInspection, ASYNC_INTERFACE, MIGRATE_INTERFACE, SINK_INTERFACE, SOURCE_INTERFACE};
pub use connector::{check_connector_kind, Answer, ConnectorFailure, ConnectorInfo, Polled, SinkInstance, SourceInstance};
pub use asyncop::{AsyncInstance, HttpResponse, IoFuture, IoProvider, ProcessError, SqlRows, SqlValue};
