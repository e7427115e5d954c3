//! # identity: forwards every record unchanged
//!
//! Key, value, timestamp and headers pass through as one copy into the
//! output batch. It does no work of its own, so a pipeline with it measures
//! what crossing the Wasm boundary costs (the boundary benchmark).
//!
//! It takes no configuration:
//!
//! ```toml
//! [[operators]]
//! name = "passthrough"
//! plugin = "identity"
//! ```

use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};

/// The identity operator.
#[derive(Debug)]
pub struct Identity;

impl Operator for Identity {
    type Config = NoConfig;

    fn open(_config: NoConfig, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(Identity)
    }

    #[inline]
    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        out.forward(&record);
        Ok(())
    }
}

weir_sdk::export_operator!(Identity);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, OwnedRecord, record};

    #[test]
    fn forwards_records_unchanged() {
        let mut h = Harness::<Identity>::open("{}").unwrap();
        let with_headers = OwnedRecord { headers: vec![(b"h".to_vec(), b"v".to_vec())], timestamp: 42, ..record(None, "x") };
        let input = vec![record(Some("k"), "v"), with_headers];
        assert_eq!(h.process(&input).unwrap(), input);
    }

    #[test]
    fn rejects_settings() {
        assert!(Harness::<Identity>::open(r#"{"x":1}"#).unwrap_err().contains("unknown field"));
    }
}
