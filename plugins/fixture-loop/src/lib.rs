//! # fixture-loop: a plugin whose `process` never returns
//!
//! A misbehaving guest for the host's tests: the first record sends the
//! instance into an endless loop, which only the host's epoch deadline can
//! stop. `black_box` keeps the optimiser from reasoning about the loop.
//!
//! No configuration.

use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};

/// Spins forever on the first record.
#[derive(Debug)]
pub struct Spin;

impl Operator for Spin {
    type Config = NoConfig;

    fn open(_config: NoConfig, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Spin)
    }

    fn process(&mut self, _record: Record<'_>, _out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        let mut spins = 0u64;
        loop {
            spins = core::hint::black_box(spins.wrapping_add(1));
        }
    }
}

weir_sdk::export_operator!(Spin);
