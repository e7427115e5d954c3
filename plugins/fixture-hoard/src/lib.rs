//! # fixture-hoard: a plugin that makes the host hold ever more for it
//!
//! A hostile guest for the host's memory bounds (issue 16). Its own memory
//! stays small (one block of `block` bytes, reused), but on the first record
//! it asks the host to hold `count` blocks' worth for it, in one call:
//!
//! - `what = "state-writes"`: `count` map-state writes of `block` bytes,
//!   each sent to the host on its own (a `map-get` after each makes the SDK
//!   flush), so one call stages `count * block` bytes of writes;
//! - `what = "timers"`: `count` event-time timers, each with its own key of
//!   `block` bytes (the key is the block with the timer's index written
//!   into its first bytes).
//!
//! Records pass through unchanged.
//!
//! ```toml
//! [[operators]]
//! name = "hoard"
//! plugin = "fixture-hoard"
//! config = { what = "state-writes", count = 64, block = 1048576 }
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record, TimeDomain};

/// What to make the host hold.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    /// State writes staged in one call.
    StateWrites,
    /// Registered timers (and their keys).
    Timers,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// What to hoard.
    pub what: What,
    /// How many writes or timers.
    pub count: u64,
    /// Bytes of each write's value, or of each timer's key (at least 8).
    pub block: usize,
}

/// The operator.
#[derive(Debug)]
pub struct Hoard {
    config: Config,
    done: bool,
}

impl Operator for Hoard {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Hoard { config, done: false })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        if !self.done {
            self.done = true;
            let mut block = vec![7u8; self.config.block.max(8)];
            for i in 0..self.config.count {
                block[..8].copy_from_slice(&i.to_le_bytes());
                match self.config.what {
                    What::StateWrites => {
                        ctx.map_put("hoard", b"hoard", &i.to_le_bytes(), &block);
                        ctx.map_get("hoard", b"hoard", &i.to_le_bytes())?;
                    }
                    What::Timers => ctx.register_timer(TimeDomain::EventTime, &block, i64::MAX - 1),
                }
            }
        }
        out.emit(record.key, record.value, record.timestamp);
        Ok(())
    }
}

weir_sdk::export_operator!(Hoard);
