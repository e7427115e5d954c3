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

pub use weir::plugin::{log, state, timers, types};
