//! # fixture-trap: a plugin that traps
//!
//! A misbehaving guest for the host's tests: the first record executes the
//! Wasm `unreachable` instruction, a trap without a panic message. Built
//! natively (for `cargo test`), it panics instead.
//!
//! No configuration.

use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};

/// Traps on the first record.
#[derive(Debug)]
pub struct Trap;

impl Operator for Trap {
    type Config = NoConfig;

    fn open(_config: NoConfig, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Trap)
    }

    fn process(&mut self, _record: Record<'_>, _out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("fixture-trap: a Wasm build would execute `unreachable` here");
    }
}

weir_sdk::export_operator!(Trap);
