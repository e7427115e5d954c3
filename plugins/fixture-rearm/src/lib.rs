//! # fixture-rearm: a timer that re-arms itself at the watermark
//!
//! A guest for the host's timer-budget tests (issue 16). Every record
//! passes through and registers an event-time timer for its key at its
//! timestamp. When a timer fires, the operator emits nothing and registers
//! the same key's timer again at the current watermark: due at once, so a
//! host that fires timers until none is due would loop forever (at the end
//! of input the watermark is `i64::MAX`, so every re-armed timer is due).
//! With `times = N` a key re-arms only N times and then stops, which a
//! host must tell apart from the endless case.
//!
//! ```toml
//! [[operators]]
//! name = "rearm"
//! plugin = "fixture-rearm"
//! config = { times = 0 }   # 0 (the default): forever
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record, TimeDomain, Timer};

const FIRED: &str = "fired";

/// Configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Re-arm each key's timer this many times, then stop; 0: forever.
    #[serde(default)]
    pub times: u64,
}

/// The operator.
#[derive(Debug)]
pub struct Rearm {
    times: u64,
}

impl Operator for Rearm {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Rearm { times: config.times })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let key = record.key.unwrap_or(b"none");
        ctx.register_timer(TimeDomain::EventTime, key, record.timestamp);
        out.emit(record.key, record.value, record.timestamp);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let fired = ctx.get::<u64>(FIRED, &timer.key)?.unwrap_or(0) + 1;
        ctx.put(FIRED, &timer.key, &fired);
        if self.times == 0 || fired <= self.times {
            let watermark = ctx.watermark();
            ctx.register_timer(TimeDomain::EventTime, &timer.key, watermark);
        } else {
            let value = format!("{{\"fired\":{fired}}}");
            out.emit(Some(&timer.key), value.as_bytes(), timer.timestamp);
        }
        Ok(())
    }
}

weir_sdk::export_operator!(Rearm);
