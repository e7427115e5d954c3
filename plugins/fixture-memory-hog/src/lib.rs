//! # fixture-memory-hog: a plugin that allocates memory without bound
//!
//! A misbehaving guest for the host's tests: the first record makes it
//! allocate 1 MiB blocks, write to every page of each, and keep them all,
//! until the host's memory limit stops it (a failed `memory.grow` makes the
//! Rust allocator abort with a trap).
//!
//! No configuration.

use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};

const BLOCK: usize = 1 << 20;
const PAGE: usize = 64 << 10;

/// Hoards memory forever on the first record.
#[derive(Debug)]
pub struct Hog {
    hoard: Vec<Vec<u8>>,
}

impl Operator for Hog {
    type Config = NoConfig;

    fn open(_config: NoConfig, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Hog { hoard: Vec::new() })
    }

    fn process(&mut self, _record: Record<'_>, _out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        loop {
            let mut block = vec![0u8; BLOCK];
            for page in block.chunks_mut(PAGE) {
                page[0] = 1;
            }
            self.hoard.push(core::hint::black_box(block));
        }
    }
}

weir_sdk::export_operator!(Hog);
