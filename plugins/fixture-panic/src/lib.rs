//! # fixture-panic: a plugin that panics
//!
//! A misbehaving guest for the host's tests: it forwards the first `after`
//! records it sees, then panics with
//! `fixture-panic: deliberate panic on record <index>`, where `<index>`
//! counts the records this instance was given since it opened, from 0.
//!
//! ```toml
//! [[operators]]
//! name = "boom"
//! plugin = "fixture-panic"
//! config = { after = 0 }   # optional; 0 (the default) panics on the first record
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// Configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Records to forward before panicking.
    pub after: u64,
}

/// Panics on record `after`.
#[derive(Debug)]
pub struct Panic {
    after: u64,
    seen: u64,
}

impl Operator for Panic {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Panic { after: config.after, seen: 0 })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        let index = self.seen;
        self.seen += 1;
        if index >= self.after {
            panic!("fixture-panic: deliberate panic on record {index}");
        }
        out.forward(&record);
        Ok(())
    }
}

weir_sdk::export_operator!(Panic);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, record};

    #[test]
    fn forwards_then_panics() {
        let mut h = Harness::<Panic>::open(r#"{"after":1}"#).unwrap();
        assert_eq!(h.process(&[record(None, "a")]).unwrap().len(), 1);
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.process(&[record(None, "b")]))).unwrap_err();
        assert_eq!(panic.downcast_ref::<String>().unwrap(), "fixture-panic: deliberate panic on record 1");
    }
}
