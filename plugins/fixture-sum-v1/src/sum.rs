// The operator shared by fixture-sum-v1 and fixture-sum-v2 (included with
// `#[path]`): each crate defines `TAG`, so the two builds differ in their
// bytes (two versions for the hot-reload tests) and in their outputs.

use json_scan::Fields;
use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Preview, Record};

/// A running sum of `amount` per key, in the host's keyed state.
#[derive(Debug)]
pub struct TaggedSum {
    fields: Fields,
    id: usize,
    amount: usize,
}

impl Operator for TaggedSum {
    type Config = NoConfig;

    const PREFETCH: &'static [&'static str] = &["sum"];

    fn open(_config: NoConfig, _ctx: &OpenContext) -> Result<Self, Error> {
        let mut fields = Fields::new();
        let id = fields.add("id");
        let amount = fields.add("amount");
        Ok(TaggedSum { fields, id, amount })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let key = record.key.ok_or_else(|| Error::msg("the record has no key; key the input by user and partition it by hash"))?;
        let key_text = std::str::from_utf8(key).map_err(|_| Error::msg(format_args!("the key {} is not UTF-8", Preview(key))))?;
        let obj = self.fields.scan(record.value).map_err(|e| Error::msg(format_args!("not a JSON object ({e}): {}", Preview(record.value))))?;
        let field = |i: usize, name: &str| {
            obj.get(i).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg(format_args!("no integer field {name:?} in {}", Preview(record.value))))
        };
        let (id, amount) = (field(self.id, "id")?, field(self.amount, "amount")?);
        let sum = ctx.get::<i64>("sum", key)?.unwrap_or(0) + amount;
        ctx.put("sum", key, &sum);
        out.emit_with(Some(key), record.timestamp, |v| {
            v.extend_from_slice(b"{\"id\":");
            json_scan::write_i64(v, id);
            v.extend_from_slice(b",\"key\":");
            json_scan::write_str(v, key_text);
            v.extend_from_slice(b",\"amount\":");
            json_scan::write_i64(v, amount);
            v.extend_from_slice(b",\"sum\":");
            json_scan::write_i64(v, sum);
            v.extend_from_slice(b",\"version\":");
            json_scan::write_str(v, crate::TAG);
            v.push(b'}');
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{record, Harness, OwnedRecord};

    #[test]
    fn sums_per_key_and_tags_outputs() {
        let mut h = Harness::<TaggedSum>::open("{}").unwrap();
        let out = h.process(&[record(Some("a"), r#"{"id":0,"amount":2}"#), record(Some("a"), r#"{"id":1,"amount":3}"#)]).unwrap();
        let values: Vec<&str> = out.iter().map(OwnedRecord::text).collect();
        let tag = crate::TAG;
        assert_eq!(
            values,
            [
                format!(r#"{{"id":0,"key":"a","amount":2,"sum":2,"version":"{tag}"}}"#),
                format!(r#"{{"id":1,"key":"a","amount":3,"sum":5,"version":"{tag}"}}"#)
            ]
        );
    }
}
