//! The SDK's batch state machinery (prefetch slots, write buffering,
//! atomic rejection) through the native harness.

use weir_sdk::testing::{record, Harness};
use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};

/// Counts records per key (prefetched), and also bumps a counter for the
/// key "total" (not a record key: the slow path), rejecting value "bad".
struct Counter;

impl Operator for Counter {
    type Config = NoConfig;
    const PREFETCH: &'static [&'static str] = &["n"];

    fn open(_: NoConfig, _: &OpenContext) -> Result<Self, Error> {
        Ok(Counter)
    }

    fn process(&mut self, r: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let key = r.key.unwrap_or(b"none");
        let n = ctx.get::<u64>("n", key)?.unwrap_or(0) + 1;
        ctx.put("n", key, &n);
        let total = ctx.get::<u64>("n", b"total")?.unwrap_or(0) + 1;
        ctx.put("n", b"total", &total);
        if r.value == b"bad" {
            return Err(Error::msg("bad record"));
        }
        if r.value == b"forget" {
            ctx.delete("n", key);
        }
        out.emit(Some(key), format!("{n}/{total}").as_bytes(), r.timestamp);
        Ok(())
    }
}

fn values(out: &[weir_sdk::testing::OwnedRecord]) -> Vec<&str> {
    out.iter().map(|r| r.text()).collect()
}

#[test]
fn repeated_keys_in_one_batch_share_state() {
    let mut h = Harness::<Counter>::open("{}").unwrap();
    let out = h.process(&[record(Some("a"), "x"), record(Some("b"), "x"), record(Some("a"), "x"), record(Some("total"), "x")]).unwrap();
    // "total" is both a record key (fast path) and the key every record
    // bumps (slow path): one state, so the last record counts twice.
    assert_eq!(values(&out), ["1/1", "1/2", "2/3", "4/5"]);
    assert_eq!(h.state::<u64>("n", b"a"), Some(2));
    assert_eq!(h.state::<u64>("n", b"total"), Some(5));
    let out = h.process(&[record(Some("a"), "x"), record(Some("total"), "x")]).unwrap();
    assert_eq!(values(&out), ["3/6", "7/8"]);
}

#[test]
fn a_rejected_batch_writes_nothing() {
    let mut h = Harness::<Counter>::open("{}").unwrap();
    h.process(&[record(Some("a"), "x")]).unwrap();
    let err = h.process(&[record(Some("a"), "x"), record(Some("a"), "bad")]).unwrap_err();
    assert_eq!(err.index, 1);
    assert_eq!(h.state::<u64>("n", b"a"), Some(1));
    assert_eq!(h.state::<u64>("n", b"total"), Some(1));
    // The next batch starts from the committed state.
    let out = h.process(&[record(Some("a"), "x")]).unwrap();
    assert_eq!(values(&out), ["2/2"]);
}

#[test]
fn deletes_and_records_without_keys() {
    let mut h = Harness::<Counter>::open("{}").unwrap();
    h.process(&[record(Some("a"), "x"), record(Some("a"), "forget"), record(None, "x")]).unwrap();
    assert_eq!(h.state::<u64>("n", b"a"), None);
    assert_eq!(h.state::<u64>("n", b"none"), Some(1));
    let out = h.process(&[record(Some("a"), "x")]).unwrap();
    assert_eq!(values(&out), ["1/4"]);
}
