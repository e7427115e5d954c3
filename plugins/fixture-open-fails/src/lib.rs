//! # fixture-open-fails: a plugin that refuses to open
//!
//! A guest for the host's tests: `open` always returns
//! `fixture-open-fails: refusing to open: <reason>`, so the pipeline must
//! stop before any data flows and report that message.
//!
//! ```toml
//! [[operators]]
//! name = "never"
//! plugin = "fixture-open-fails"
//! config = { reason = "the test said so" }   # optional
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The reason given in the error.
    pub reason: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { reason: "this fixture never opens".into() }
    }
}

/// Never opens.
#[derive(Debug)]
pub struct OpenFails;

impl Operator for OpenFails {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        Err(Error::msg(format_args!("fixture-open-fails: refusing to open: {}", config.reason)))
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        out.forward(&record);
        Ok(())
    }
}

weir_sdk::export_operator!(OpenFails);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::Harness;

    #[test]
    fn open_fails_with_the_reason() {
        let e = Harness::<OpenFails>::open(r#"{"reason":"because"}"#).unwrap_err();
        assert_eq!(e, "fixture-open-fails: refusing to open: because");
    }
}
