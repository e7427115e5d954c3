//! # skew-key: keys records so that one key carries most of the traffic
//!
//! A fixture for the key-skew bottleneck: record `i` (counted per subtask)
//! gets the key `hot` when `i mod 100 < hot-percent`, otherwise `k<i mod
//! keys>`. Values and timestamps pass through. Followed by a
//! hash-partitioned operator at parallelism 4 and `hot-percent = 80`, one
//! subtask gets 80% of the records plus its share of the rest.
//!
//! ```toml
//! [[operators]]
//! name = "keyed"
//! plugin = "skew-key"
//! config = { hot-percent = 80, keys = 64 }
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Percentage of records keyed `hot` (0 to 100).
    #[serde(default = "default_hot")]
    pub hot_percent: u32,
    /// Distinct other keys.
    #[serde(default = "default_keys")]
    pub keys: u32,
}

fn default_hot() -> u32 {
    80
}

fn default_keys() -> u32 {
    64
}

/// The operator.
#[derive(Debug)]
pub struct SkewKey {
    hot_percent: u64,
    keys: u64,
    seen: u64,
    key: Vec<u8>,
}

impl Operator for SkewKey {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        if config.hot_percent > 100 {
            return Err(Error::msg("`hot-percent` must be between 0 and 100"));
        }
        if config.keys == 0 {
            return Err(Error::msg("`keys` must be at least 1"));
        }
        Ok(SkewKey { hot_percent: config.hot_percent.into(), keys: config.keys.into(), seen: 0, key: Vec::new() })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        let i = self.seen;
        self.seen += 1;
        self.key.clear();
        if i % 100 < self.hot_percent {
            self.key.extend_from_slice(b"hot");
        } else {
            self.key.push(b'k');
            self.key.extend_from_slice((i % self.keys).to_string().as_bytes());
        }
        out.emit(Some(&self.key), record.value, record.timestamp);
        Ok(())
    }
}

weir_sdk::export_operator!(SkewKey);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{record, Harness};

    #[test]
    fn one_key_gets_its_share() {
        let mut h = Harness::<SkewKey>::open(r#"{"hot-percent": 80, "keys": 4}"#).unwrap();
        let input: Vec<_> = (0..1000).map(|i| record(None, &i.to_string())).collect();
        let out = h.process(&input).unwrap();
        assert_eq!(out.len(), 1000);
        let hot = out.iter().filter(|r| r.key.as_deref() == Some(b"hot".as_slice())).count();
        assert_eq!(hot, 800);
        assert_eq!(out[999].value, b"999");
    }
}
