//! # fixture-reject: a plugin that rejects every n-th record
//!
//! A guest for the host's `on-error` tests. A record is rejected (the
//! operator returns an error for it, `fixture-reject: rejected record with
//! id N`) when its number `N` is a multiple of `every`; other records are
//! forwarded unchanged. `N` is the integer field `id` of a JSON-object value
//! when it has one, and otherwise the record's sequence number: 1 for the
//! first record this instance was given, 2 for the next, and so on (a
//! record the host hands over again after a rejection counts again).
//!
//! ```toml
//! [[operators]]
//! name = "picky"
//! plugin = "fixture-reject"
//! config = { every = 10 }   # required, at least 1
//! ```

use json_scan::Fields;
use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Reject records whose number is a multiple of this.
    pub every: u64,
}

/// Rejects every `every`-th record.
#[derive(Debug)]
pub struct Reject {
    every: u64,
    seen: u64,
    fields: Fields,
    id: usize,
}

impl Operator for Reject {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        if config.every == 0 {
            return Err(Error::msg("fixture-reject: `every` must be at least 1"));
        }
        let mut fields = Fields::new();
        let id = fields.add("id");
        Ok(Reject { every: config.every, seen: 0, fields, id })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        self.seen += 1;
        let id = match self.fields.scan(record.value) {
            Ok(obj) => obj.get(self.id).and_then(|v| v.as_i64()).map(i128::from),
            Err(_) => None,
        };
        let n = id.unwrap_or(i128::from(self.seen));
        if n % i128::from(self.every) == 0 {
            return Err(Error::msg(format_args!("fixture-reject: rejected record with id {n}")));
        }
        out.forward(&record);
        Ok(())
    }
}

weir_sdk::export_operator!(Reject);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, record};

    #[test]
    fn rejects_by_id() {
        let mut h = Harness::<Reject>::open(r#"{"every":3}"#).unwrap();
        assert_eq!(h.process(&[record(None, r#"{"id":1}"#), record(None, r#"{"id":2}"#)]).unwrap().len(), 2);
        let e = h.process(&[record(None, r#"{"id":4}"#), record(None, r#"{"id":6}"#)]).unwrap_err();
        assert_eq!((e.index, e.message.as_str()), (1, "fixture-reject: rejected record with id 6"));
    }

    #[test]
    fn rejects_by_sequence_number_without_id() {
        let mut h = Harness::<Reject>::open(r#"{"every":2}"#).unwrap();
        let e = h.process(&[record(None, "a"), record(None, "b")]).unwrap_err();
        assert_eq!((e.index, e.message.as_str()), (1, "fixture-reject: rejected record with id 2"));
        assert!(Harness::<Reject>::open(r#"{"every":0}"#).is_err());
    }
}
