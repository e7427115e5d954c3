//! Host-side bindings of the `weir:plugin@0.1.0` contract in `wit/`.
//!
//! This crate holds the host's only `bindgen!` so that the generated code is
//! compiled once: changes elsewhere in the host do not re-expand the macro.
//! Everything else in the host uses these types through `weir-wasm`.
//!
//! Imports are *trappable*: a host function returns `wasmtime::Result<T>`,
//! where the outer error traps the guest (a host bug or an exceeded limit)
//! and a WIT `result` inside `T` is an error the guest is meant to handle.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "operator",
    imports: { default: trappable },
});

pub use weir::plugin::{inputs, log, state, timers, types};

/// The `async-operator` world, with async host imports and exports: the
/// host awaits I/O (HTTP, SQL, key-value) while the guest sees ordinary
/// calls. Generated separately because its calls go through
/// `call_async` (~1.1 us a call instead of ~0.24 us), which the batch
/// `operator` world must not pay.
pub mod async_operator {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "async-operator",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub use weir::plugin::{async_io, log, types};
    pub use exports::weir::plugin::async_handler;
}

/// The `sink` world (`wit/connector.wit`): a sink written as a plugin. Its
/// imports are the async operator's (`log`, `async-io`), reused here so
/// that one host state serves both, and its calls are awaited the same
/// way: a sink's calls are per batch, so `call_async`'s cost is noise.
pub mod sink {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sink",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "weir:plugin/async-io": crate::async_operator::async_io,
            "weir:plugin/log": crate::async_operator::log,
        },
    });

    pub use exports::weir::plugin::sink_handler;
    pub use weir::plugin::connector_types;
}

/// The `source` world (`wit/connector.wit`): a source written as a plugin,
/// with the same imports as [`sink`].
pub mod source {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "source",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "weir:plugin/async-io": crate::async_operator::async_io,
            "weir:plugin/log": crate::async_operator::log,
            "weir:plugin/connector-types": crate::sink::connector_types,
        },
    });

    pub use exports::weir::plugin::source_handler;
}
