//! # fixture-async-loop: runaway code in one slot
//!
//! Forwards every JSON event, except that an event whose `id` is a multiple
//! of 100 makes it spin forever (no I/O, no host call). The host must stop
//! that call at the record's timeout, dead-letter the record, and keep the
//! other slots running meanwhile.

use weir_sdk_async::{AsyncOperator, Error, Info, Output, Record};

/// The operator.
pub struct Loop;

impl AsyncOperator for Loop {
    type Config = serde_json::Value;

    fn open(_config: serde_json::Value, _info: &Info) -> Result<Self, Error> {
        Ok(Loop)
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let v: serde_json::Value = serde_json::from_slice(record.value).map_err(Error::permanent)?;
        if v["id"].as_u64().is_some_and(|id| id % 100 == 0) {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        out.forward(&record);
        Ok(())
    }
}

weir_sdk_async::export_async_operator!(Loop);
