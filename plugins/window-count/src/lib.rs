//! # window-count: records per key in tumbling event-time windows
//!
//! Each record falls into the window `[start, start + size-ms)` that holds
//! its timestamp. Counts live in host map state (key -> window end ->
//! count), and an event-time timer per key and window fires once the
//! watermark passes the window's end, emitting
//! `{"key":"<key>","window_end":<ms>,"count":<n>}` (timestamp: the window's
//! last millisecond). At the end of a bounded input the watermark jumps to
//! the end, so every open window is emitted. Records need a key.
//!
//! ```toml
//! [[operators]]
//! name = "per-minute"
//! plugin = "window-count"
//! partition = "hash"
//! config = { size-ms = 60000 }
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record, TimeDomain, Timer};

const COUNTS: &str = "counts";

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Window length in milliseconds.
    pub size_ms: i64,
}

/// The operator.
#[derive(Debug)]
pub struct WindowCount {
    size: i64,
}

impl Operator for WindowCount {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        if config.size_ms <= 0 {
            return Err(Error::msg("`size-ms` must be a positive number of milliseconds"));
        }
        Ok(WindowCount { size: config.size_ms })
    }

    fn process(&mut self, record: Record<'_>, _out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let key = record.key.ok_or_else(|| Error::msg("window-count needs keyed records: set `key` upstream and partition = \"hash\""))?;
        let end = record.timestamp.div_euclid(self.size) * self.size + self.size;
        if end - 1 <= ctx.watermark() {
            // Late: its window was already emitted.
            return Ok(());
        }
        let field = end.to_le_bytes();
        let count = ctx.map_get(COUNTS, key, &field)?.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map_or(0, u64::from_le_bytes);
        ctx.map_put(COUNTS, key, &field, &(count + 1).to_le_bytes());
        if count == 0 {
            ctx.register_timer(TimeDomain::EventTime, key, end - 1);
        }
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let end = timer.timestamp + 1;
        let field = end.to_le_bytes();
        let Some(bytes) = ctx.map_get(COUNTS, &timer.key, &field)? else { return Ok(()) };
        let count = <[u8; 8]>::try_from(bytes.as_slice()).map(u64::from_le_bytes).map_err(|_| Error::msg("corrupt window count"))?;
        ctx.map_remove(COUNTS, &timer.key, &field);
        let key = String::from_utf8_lossy(&timer.key);
        let value = format!("{{\"key\":{key:?},\"window_end\":{end},\"count\":{count}}}");
        out.emit(Some(&timer.key), value.as_bytes(), timer.timestamp);
        Ok(())
    }
}

weir_sdk::export_operator!(WindowCount);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, OwnedRecord};

    fn rec(key: &str, ts: i64) -> OwnedRecord {
        OwnedRecord { key: Some(key.as_bytes().to_vec()), value: b"x".to_vec(), timestamp: ts, headers: vec![] }
    }

    #[test]
    fn counts_per_key_and_window_when_the_watermark_passes() {
        let mut h = Harness::<WindowCount>::open(r#"{"size-ms": 10}"#).unwrap();
        assert!(h.process(&[rec("a", 1), rec("a", 9), rec("b", 5), rec("a", 12)]).unwrap().is_empty());
        let out = h.advance(TimeDomain::EventTime, 9).unwrap();
        let texts: Vec<&str> = out.iter().map(|r| r.text()).collect();
        assert_eq!(texts, [r#"{"key":"a","window_end":10,"count":2}"#, r#"{"key":"b","window_end":10,"count":1}"#]);
        let out = h.advance(TimeDomain::EventTime, i64::MAX).unwrap();
        assert_eq!(out[0].text(), r#"{"key":"a","window_end":20,"count":1}"#);
    }
}
