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
