//! # only-errors: an operator written as one function
//!
//! Keeps the records whose value contains `error`, unchanged. The example
//! of `weir_sdk::filter!` (and `weir_sdk::map!` for a new value): a simple
//! operator needs no type, no trait and no config. The same operator in
//! JavaScript is `plugins/js/src/only-errors.js`, in Python
//! `plugins/python/only-errors/app.py`.
//!
//! ```toml
//! [[operators]]
//! name = "errors"
//! plugin = "only-errors"
//! ```

use weir_sdk::Record;

/// Whether the record's value mentions an error.
pub fn is_error(record: &Record<'_>) -> bool {
    record.value.windows(5).any(|w| w == b"error")
}

weir_sdk::filter!(OnlyErrors, is_error);
weir_sdk::export_operator!(OnlyErrors);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{record, Harness};

    #[test]
    fn keeps_only_errors_unchanged() {
        let mut h = Harness::<OnlyErrors>::open("{}").unwrap();
        let out = h.process(&[record(Some("a"), "all good"), record(Some("b"), "disk error"), record(None, "error")]).unwrap();
        let kept: Vec<_> = out.iter().map(|r| (r.key.clone(), r.text())).collect();
        assert_eq!(kept, [(Some(b"b".to_vec()), "disk error"), (None, "error")]);
        assert!(Harness::<OnlyErrors>::open(r#"{"needle": "x"}"#).is_err(), "a one-function operator takes no config");
    }
}
