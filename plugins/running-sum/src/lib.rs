//! # running-sum: a running total per key, in the host's keyed state
//!
//! For each record, adds the integer in the JSON field `field` of its value
//! to the total kept for the record's key, and emits the new total as
//! `{"key":"<key>","sum":<total>}` with the same key and timestamp.
//!
//! The totals live in the host's keyed state (state name `"sum"`, an `i64`),
//! not in the plugin: they survive a hot reload of the plugin and are
//! checkpointed and restored by the host. The state is fetched once per
//! batch for all its keys ([`Operator::PREFETCH`]) and written back in one
//! call when the batch ends.
//!
//! Every record needs a key, and the operator's input must be partitioned by
//! it: set `key` on the upstream operator (for example json-filter's
//! `key = "user"`) and `partition = "hash"` on this one.
//!
//! Config keys (all optional):
//!
//! - `field` (string, default `"amount"`): the top-level field of the value
//!   to add up; it must hold an integer that fits in 64 bits.
//! - `tag` (string): when set, each output also carries `"version":"<tag>"`,
//!   which shows which build of the plugin produced it (the hot-reload tests
//!   use it).
//!
//! ```toml
//! [[operators]]
//! name = "totals"
//! plugin = "running-sum"
//! partition = "hash"
//! config = { field = "amount" }
//! ```

use json_scan::{Fields, Kind, Value};
use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Preview, Record};

/// The state that holds each key's total.
const SUM: &str = "sum";

/// Configuration (see the crate docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The field to add up.
    pub field: String,
    /// Added to each output as `"version"`.
    pub tag: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { field: "amount".into(), tag: None }
    }
}

/// The running-sum operator.
#[derive(Debug)]
pub struct RunningSum {
    fields: Fields,
    field: usize,
    name: String,
    /// What follows the sum in each output: `}` or `,"version":"<tag>"}`.
    suffix: Vec<u8>,
}

impl Operator for RunningSum {
    type Config = Config;

    const PREFETCH: &'static [&'static str] = &[SUM];

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        let mut fields = Fields::new();
        let field = fields.add(&config.field);
        let mut suffix = Vec::new();
        if let Some(tag) = &config.tag {
            suffix.extend_from_slice(b",\"version\":");
            json_scan::write_str(&mut suffix, tag);
        }
        suffix.push(b'}');
        Ok(RunningSum { fields, field, name: config.field, suffix })
    }

    #[inline]
    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let Some(key) = record.key else {
            return Err(Error::msg(
                "the record has no key, and running-sum keeps one total per key: set `key` on the upstream operator \
                 (for example json-filter's key = \"user\") and partition = \"hash\" on this one",
            ));
        };
        let key_text = std::str::from_utf8(key).map_err(|e| {
            Error::msg(format_args!(
                "the record key {} is not UTF-8 (invalid byte at offset {}), so it cannot be written into the JSON output",
                Preview(key),
                e.valid_up_to()
            ))
        })?;
        let obj = self
            .fields
            .scan(record.value)
            .map_err(|e| Error::msg(format_args!("value is not a well-formed JSON object: {e}; the value is {}", Preview(record.value))))?;
        let amount = match obj.get(self.field) {
            Some(value) => integer(&value, &self.name)?,
            None => {
                return Err(Error::msg(format_args!(
                    "the value has no field {:?} to add up; set `field` to the name of its numeric field",
                    self.name
                )));
            }
        };
        let sum = ctx.get::<i64>(SUM, key)?.unwrap_or(0);
        let sum = sum
            .checked_add(amount)
            .ok_or_else(|| Error::msg(format_args!("the sum for key {key_text:?} overflows a 64-bit integer ({sum} + {amount})")))?;
        ctx.put(SUM, key, &sum);
        out.emit_with_raw_headers(Some(key), record.timestamp, record.raw_headers, |v| {
            v.extend_from_slice(b"{\"key\":");
            json_scan::write_str(v, key_text);
            v.extend_from_slice(b",\"sum\":");
            json_scan::write_i64(v, sum);
            v.extend_from_slice(&self.suffix);
        });
        Ok(())
    }
}

weir_sdk::export_operator!(RunningSum);

/// The field's value as an `i64`, or an error that says what it is instead.
fn integer(value: &Value<'_>, name: &str) -> Result<i64, Error> {
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    let what = match value.kind() {
        Kind::Number if value.is_integer() => "an integer too large for 64 bits",
        Kind::Number => "not an integer",
        kind => kind.described(),
    };
    Err(Error::msg(format_args!(
        "field {name:?} (at byte {}) is {what}: {}; running-sum adds up 64-bit integers",
        value.offset(),
        Preview(value.raw())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, OwnedRecord, record};

    fn amount(key: &str, n: i64) -> OwnedRecord {
        record(Some(key), &format!(r#"{{"user":"{key}","amount":{n}}}"#))
    }

    #[test]
    fn sums_per_key_across_batches() {
        let mut h = Harness::<RunningSum>::open("{}").unwrap();
        let out = h.process(&[amount("a", 1), amount("b", 10), amount("a", 2)]).unwrap();
        let values: Vec<&str> = out.iter().map(OwnedRecord::text).collect();
        assert_eq!(values, [r#"{"key":"a","sum":1}"#, r#"{"key":"b","sum":10}"#, r#"{"key":"a","sum":3}"#]);
        assert_eq!(out[1].key.as_deref(), Some(&b"b"[..]));
        assert_eq!(h.state::<i64>("sum", b"a"), Some(3));

        let out = h.process(&[amount("a", -5), amount("b", 0)]).unwrap();
        let values: Vec<&str> = out.iter().map(OwnedRecord::text).collect();
        assert_eq!(values, [r#"{"key":"a","sum":-2}"#, r#"{"key":"b","sum":10}"#]);
        assert_eq!(h.state::<i64>("sum", b"b"), Some(10));
    }

    #[test]
    fn keeps_timestamps_and_escapes_keys() {
        let mut h = Harness::<RunningSum>::open("{}").unwrap();
        let input = OwnedRecord { timestamp: 99, ..record(Some("a\"b"), r#"{"amount":4}"#) };
        let out = h.process(&[input]).unwrap();
        assert_eq!((out[0].text(), out[0].timestamp), (r#"{"key":"a\"b","sum":4}"#, 99));
    }

    #[test]
    fn requires_a_key() {
        let mut h = Harness::<RunningSum>::open("{}").unwrap();
        let e = h.process(&[amount("a", 1), record(None, r#"{"amount":1}"#)]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("the record has no key") && e.message.contains("partition = \"hash\""), "{}", e.message);
        // The failed batch changed no state.
        assert_eq!(h.state::<i64>("sum", b"a"), None);
    }

    #[test]
    fn tag_and_custom_field() {
        let mut h = Harness::<RunningSum>::open(r#"{"field":"n","tag":"v2"}"#).unwrap();
        let out = h.process(&[record(Some("k"), r#"{"n":7,"amount":100}"#)]).unwrap();
        assert_eq!(out[0].text(), r#"{"key":"k","sum":7,"version":"v2"}"#);
    }

    #[test]
    fn rejects_missing_and_non_integer_fields() {
        let mut h = Harness::<RunningSum>::open("{}").unwrap();
        let message = |h: &mut Harness<RunningSum>, value: &str| h.process(&[record(Some("k"), value)]).unwrap_err().message;
        assert!(message(&mut h, r#"{"amt":1}"#).contains(r#"no field "amount" to add up"#));
        assert!(message(&mut h, r#"{"amount":1.5}"#).contains(r#"field "amount" (at byte 10) is not an integer: "1.5""#));
        assert!(message(&mut h, r#"{"amount":"1"}"#).contains("is a string"));
        assert!(message(&mut h, r#"{"amount":1e400}"#).contains("not an integer"));
        assert!(message(&mut h, r#"{"amount":18446744073709551616}"#).contains("too large for 64 bits"));
        assert!(message(&mut h, r#"{"amount":1,}"#).contains("value is not a well-formed JSON object"));
    }

    #[test]
    fn overflow_is_an_error() {
        let mut h = Harness::<RunningSum>::open("{}").unwrap();
        h.process(&[amount("k", i64::MAX)]).unwrap();
        let e = h.process(&[amount("k", 1)]).unwrap_err();
        assert!(e.message.contains("overflows"), "{}", e.message);
        assert_eq!(h.state::<i64>("sum", b"k"), Some(i64::MAX));
    }
}
