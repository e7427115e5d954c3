//! # nexmark: the Nexmark benchmark queries as weir operators
//!
//! The events come from the generator source with `schema = "nexmark"`: one
//! JSON object per event, `{"person":{..}}`, `{"auction":{..}}` or
//! `{"bid":{..}}` (see the generator's docs). One plugin, one step of a query
//! per operator, chosen with `query`; the pipelines in `pipelines/nexmark/`
//! put the steps together:
//!
//! | `query` | input | output |
//! |---|---|---|
//! | `q0` | events | every bid, unchanged (pass-through) |
//! | `q1` | events | every bid as `{"auction","bidder","price","dateTime","extra"}` with the price in euros (`price * 0.908`) |
//! | `q2` | events | `{"auction","price"}` of the bids with `auction % 123 == 0` |
//! | `bids-by-auction` | events | each bid's object, keyed by its auction id: the input of `q5-count` and `q7-max-per-auction` (`partition = "hash"`) |
//! | `q5-count` | bids by auction | per auction and sliding window (`window-ms`, every `slide-ms`): `{"auction","count","window_end"}`, keyed by the window end, once the watermark passes the window |
//! | `q5-hot` | q5-count | per window, the auction(s) with the most bids (q5, "hot items") |
//! | `q7-max-per-auction` | bids by auction | per auction and tumbling window (`window-ms`), the bid(s) with the highest price as `{"window_end","bid"}`, keyed by the window end |
//! | `q7-max` | q7-max-per-auction | per window, the bid(s) with the highest price (q7, "highest bid") |
//!
//! Windowed steps keep their windows in the host's keyed state (one value
//! per key, prefetched once per batch) and emit from event-time timers at
//! each window's last millisecond, so results are exact whatever the
//! parallelism and survive checkpoints and restores. A bid whose windows the
//! watermark has already passed is dropped and counted in the log line at
//! the end of the input.
//!
//! ```toml
//! [[operators]]
//! name = "count"
//! plugin = "nexmark"
//! partition = "hash"
//! config = { query = "q5-count", window-ms = 10000, slide-ms = 2000 }
//! ```

use json_scan::{Fields, Value};
use serde::Deserialize;
use weir_sdk::format::decimal::push_i64;
use weir_sdk::{Context, Error, LogLevel, OpenContext, Operator, Output, Record, TimeDomain, Timer};

/// The state holding each key's open windows.
const WINDOWS: &str = "windows";

/// Which step of which query an operator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Query {
    /// Pass-through of every bid.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// Bids keyed by auction.
    BidsByAuction,
    /// Bids per auction and sliding window.
    Q5Count,
    /// The auctions with the most bids per window.
    Q5Hot,
    /// The highest bids per auction and tumbling window.
    Q7MaxPerAuction,
    /// The highest bids per window.
    Q7Max,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The step to run.
    pub query: Query,
    /// Window length (ms) of q5 and q7.
    #[serde(default = "default_window")]
    pub window_ms: i64,
    /// How often a q5 window starts (ms).
    #[serde(default = "default_slide")]
    pub slide_ms: i64,
}

fn default_window() -> i64 {
    10_000
}

fn default_slide() -> i64 {
    2_000
}

/// One open window of a key: its end, and the count (q5) or the highest
/// value so far with the records that have it, newline-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    end: i64,
    value: i64,
    items: Vec<u8>,
}

/// A key's windows, encoded as `end, value, items length, items` each
/// (little-endian `i64`, `i64`, `u32`).
fn decode(mut bytes: &[u8]) -> Result<Vec<Window>, Error> {
    let corrupt = || Error::msg("corrupt nexmark window state");
    let mut windows = Vec::new();
    while !bytes.is_empty() {
        let head = bytes.get(..20).ok_or_else(corrupt)?;
        let end = i64::from_le_bytes(head[..8].try_into().map_err(|_| corrupt())?);
        let value = i64::from_le_bytes(head[8..16].try_into().map_err(|_| corrupt())?);
        let len = u32::from_le_bytes(head[16..20].try_into().map_err(|_| corrupt())?) as usize;
        let items = bytes.get(20..20 + len).ok_or_else(corrupt)?.to_vec();
        windows.push(Window { end, value, items });
        bytes = &bytes[20 + len..];
    }
    Ok(windows)
}

fn encode(windows: &[Window], out: &mut Vec<u8>) {
    out.clear();
    for w in windows {
        out.extend_from_slice(&w.end.to_le_bytes());
        out.extend_from_slice(&w.value.to_le_bytes());
        out.extend_from_slice(&(w.items.len() as u32).to_le_bytes());
        out.extend_from_slice(&w.items);
    }
}

/// The operator.
#[derive(Debug)]
pub struct Nexmark {
    query: Query,
    window: i64,
    slide: i64,
    /// Top-level members of an event.
    event: Fields,
    bid: usize,
    /// Members of a bid.
    bid_fields: Fields,
    auction: usize,
    bidder: usize,
    price: usize,
    date_time: usize,
    extra: usize,
    /// Members of an intermediate result.
    result: Fields,
    count: usize,
    window_end: usize,
    result_bid: usize,
    late: u64,
    scratch: Vec<u8>,
}

impl Operator for Nexmark {
    type Config = Config;

    const PREFETCH: &'static [&'static str] = &[WINDOWS];

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        if config.window_ms <= 0 {
            return Err(Error::msg("`window-ms` must be a positive number of milliseconds"));
        }
        if config.query == Query::Q5Count && (config.slide_ms <= 0 || config.window_ms % config.slide_ms != 0) {
            return Err(Error::msg("`slide-ms` must be positive and divide `window-ms`"));
        }
        let mut event = Fields::new();
        let bid = event.add("bid");
        let mut bid_fields = Fields::new();
        let auction = bid_fields.add("auction");
        let bidder = bid_fields.add("bidder");
        let price = bid_fields.add("price");
        let date_time = bid_fields.add("dateTime");
        let extra = bid_fields.add("extra");
        let mut result = Fields::new();
        let count = result.add("count");
        let window_end = result.add("window_end");
        let result_bid = result.add("bid");
        Ok(Nexmark {
            query: config.query,
            window: config.window_ms,
            slide: config.slide_ms,
            event,
            bid,
            bid_fields,
            auction,
            bidder,
            price,
            date_time,
            extra,
            result,
            count,
            window_end,
            result_bid,
            late: 0,
            scratch: Vec::new(),
        })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        match self.query {
            Query::Q0 | Query::Q1 | Query::Q2 | Query::BidsByAuction => {
                let event = self.event.scan(record.value).map_err(|e| Error::msg(format!("not a Nexmark event: {e}")))?;
                let Some(bid) = event.get(self.bid) else { return Ok(()) };
                let bid_raw = bid.raw();
                if self.query == Query::Q0 {
                    out.forward(&record);
                    return Ok(());
                }
                let fields = self.bid_fields.scan(bid_raw).map_err(|e| Error::msg(format!("not a Nexmark bid: {e}")))?;
                let int = |i: usize, name: &str| {
                    fields.get(i).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg(format!("bid without an integer `{name}`")))
                };
                let auction = int(self.auction, "auction")?;
                match self.query {
                    Query::Q1 => {
                        let (bidder, price, date_time) = (int(self.bidder, "bidder")?, int(self.price, "price")?, int(self.date_time, "dateTime")?);
                        let extra = fields.get(self.extra).map_or(&b"\"\""[..], |v| v.raw());
                        out.emit_with(None, record.timestamp, |v| {
                            v.extend_from_slice(b"{\"auction\":");
                            push_i64(v, auction);
                            v.extend_from_slice(b",\"bidder\":");
                            push_i64(v, bidder);
                            v.extend_from_slice(b",\"price\":");
                            push_f64(v, 0.908 * price as f64);
                            v.extend_from_slice(b",\"dateTime\":");
                            push_i64(v, date_time);
                            v.extend_from_slice(b",\"extra\":");
                            v.extend_from_slice(extra);
                            v.push(b'}');
                        });
                    }
                    Query::Q2 => {
                        if auction % 123 == 0 {
                            let price = int(self.price, "price")?;
                            out.emit_with(None, record.timestamp, |v| {
                                v.extend_from_slice(b"{\"auction\":");
                                push_i64(v, auction);
                                v.extend_from_slice(b",\"price\":");
                                push_i64(v, price);
                                v.push(b'}');
                            });
                        }
                    }
                    _ => {
                        self.scratch.clear();
                        push_i64(&mut self.scratch, auction);
                        out.emit(Some(&self.scratch), bid_raw, record.timestamp);
                    }
                }
                Ok(())
            }
            Query::Q5Count => {
                let key = keyed(&record)?;
                // The sliding windows holding the bid: ends in (ts, ts + window].
                let ts = record.timestamp;
                let last_start = ts - ts.rem_euclid(self.slide);
                let (window, slide) = (self.window, self.slide);
                let ends = (0..window / slide).map(move |i| last_start - i * slide + window);
                self.update(key, ctx, ends, |w| {
                    w.value += 1;
                })
            }
            Query::Q7MaxPerAuction => {
                let key = keyed(&record)?;
                let fields = self.bid_fields.scan(record.value).map_err(|e| Error::msg(format!("not a Nexmark bid: {e}")))?;
                let price = fields.get(self.price).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg("bid without an integer `price`"))?;
                let end = record.timestamp - record.timestamp.rem_euclid(self.window) + self.window;
                self.update(key, ctx, [end], |w| best(w, price, record.value))
            }
            Query::Q5Hot | Query::Q7Max => {
                let key = keyed(&record)?;
                let result = self.result.scan(record.value).map_err(|e| Error::msg(format!("not an intermediate Nexmark result: {e}")))?;
                let end = result.get(self.window_end).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg("result without `window_end`"))?;
                let value = if self.query == Query::Q5Hot {
                    result.get(self.count).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg("result without `count`"))?
                } else {
                    let bid = result.get(self.result_bid).ok_or_else(|| Error::msg("result without `bid`"))?;
                    let fields = self.bid_fields.scan(bid.raw()).map_err(|e| Error::msg(format!("not a Nexmark bid: {e}")))?;
                    fields.get(self.price).and_then(|v: Value<'_>| v.as_i64()).ok_or_else(|| Error::msg("bid without an integer `price`"))?
                };
                self.update(key, ctx, [end], |w| best(w, value, record.value))
            }
        }
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let end = timer.timestamp + 1;
        let Some(bytes) = ctx.get_bytes(WINDOWS, &timer.key)? else { return Ok(()) };
        let mut windows = decode(bytes)?;
        let Some(i) = windows.iter().position(|w| w.end == end) else { return Ok(()) };
        let w = windows.remove(i);
        match self.query {
            Query::Q5Count => {
                self.scratch.clear();
                push_i64(&mut self.scratch, end);
                out.emit_with(Some(&self.scratch), timer.timestamp, |v| {
                    v.extend_from_slice(b"{\"auction\":");
                    v.extend_from_slice(&timer.key);
                    v.extend_from_slice(b",\"count\":");
                    push_i64(v, w.value);
                    v.extend_from_slice(b",\"window_end\":");
                    push_i64(v, end);
                    v.push(b'}');
                });
            }
            Query::Q7MaxPerAuction => {
                self.scratch.clear();
                push_i64(&mut self.scratch, end);
                for bid in w.items.split(|&b| b == b'\n') {
                    out.emit_with(Some(&self.scratch), timer.timestamp, |v| {
                        v.extend_from_slice(b"{\"window_end\":");
                        push_i64(v, end);
                        v.extend_from_slice(b",\"bid\":");
                        v.extend_from_slice(bid);
                        v.push(b'}');
                    });
                }
            }
            _ => {
                for item in w.items.split(|&b| b == b'\n') {
                    out.emit(None, item, timer.timestamp);
                }
            }
        }
        if windows.is_empty() {
            ctx.delete(WINDOWS, &timer.key);
        } else {
            encode(&windows, &mut self.scratch);
            ctx.put_bytes(WINDOWS, &timer.key, &self.scratch);
        }
        Ok(())
    }

    fn close(&mut self, _out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        if self.late > 0 {
            ctx.log(LogLevel::Warn, &format!("dropped {} late records: their windows had already been emitted", self.late));
        }
        Ok(())
    }
}

impl Nexmark {
    /// Applies `change` to the windows of `key` ending at `ends`, opening
    /// (and setting a timer for) those not open yet; windows the watermark
    /// has passed are skipped and the record counted as late.
    fn update(
        &mut self,
        key: &[u8],
        ctx: &mut Context,
        ends: impl IntoIterator<Item = i64>,
        mut change: impl FnMut(&mut Window),
    ) -> Result<(), Error> {
        let mut windows = match ctx.get_bytes(WINDOWS, key)? {
            Some(bytes) => decode(bytes)?,
            None => Vec::new(),
        };
        let mut watermark = None;
        let mut late = false;
        for end in ends {
            let w = match windows.iter().position(|w| w.end == end) {
                Some(i) => &mut windows[i],
                None => {
                    if end - 1 <= *watermark.get_or_insert_with(|| ctx.watermark()) {
                        late = true;
                        continue;
                    }
                    ctx.register_timer(TimeDomain::EventTime, key, end - 1);
                    windows.push(Window { end, value: i64::MIN, items: Vec::new() });
                    windows.last_mut().expect("just pushed")
                }
            };
            if w.value == i64::MIN && self.query == Query::Q5Count {
                w.value = 0;
            }
            change(w);
        }
        self.late += u64::from(late);
        encode(&windows, &mut self.scratch);
        ctx.put_bytes(WINDOWS, key, &self.scratch);
        Ok(())
    }
}

/// Keeps the items with the highest value.
fn best(w: &mut Window, value: i64, item: &[u8]) {
    if value > w.value {
        w.value = value;
        w.items.clear();
        w.items.extend_from_slice(item);
    } else if value == w.value {
        w.items.push(b'\n');
        w.items.extend_from_slice(item);
    }
}

fn keyed<'a>(record: &Record<'a>) -> Result<&'a [u8], Error> {
    record.key.ok_or_else(|| Error::msg("this step needs keyed input: put `bids-by-auction` before it, with partition = \"hash\""))
}

/// A finite float as JSON (the shortest text that reads back the same).
fn push_f64(v: &mut Vec<u8>, x: f64) {
    use std::io::Write;
    let _ = write!(v, "{x}");
    if x.fract() == 0.0 && x.is_finite() && x.abs() < 1e16 {
        v.extend_from_slice(b".0");
    }
}

weir_sdk::export_operator!(Nexmark);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, OwnedRecord};

    fn bid(auction: i64, price: i64, ts: i64) -> OwnedRecord {
        let value = format!(
            r#"{{"bid":{{"auction":{auction},"bidder":1001,"price":{price},"channel":"Apple","url":"https://x/","dateTime":{ts},"extra":"ab"}}}}"#
        );
        OwnedRecord { key: None, value: value.into_bytes(), timestamp: ts, headers: vec![] }
    }

    fn person(ts: i64) -> OwnedRecord {
        OwnedRecord { key: None, value: format!(r#"{{"person":{{"id":1000,"dateTime":{ts}}}}}"#).into_bytes(), timestamp: ts, headers: vec![] }
    }

    fn texts(records: &[OwnedRecord]) -> Vec<String> {
        records.iter().map(|r| r.text().to_owned()).collect()
    }

    #[test]
    fn stateless_queries() {
        let input = [person(1), bid(1230, 1000, 2), bid(1001, 7, 3)];
        let mut q0 = Harness::<Nexmark>::open(r#"{"query":"q0"}"#).unwrap();
        assert_eq!(texts(&q0.process(&input).unwrap()), [texts(&input[1..2])[0].clone(), texts(&input[2..])[0].clone()]);
        let mut q1 = Harness::<Nexmark>::open(r#"{"query":"q1"}"#).unwrap();
        assert_eq!(
            texts(&q1.process(&input).unwrap()),
            [
                r#"{"auction":1230,"bidder":1001,"price":908.0,"dateTime":2,"extra":"ab"}"#,
                r#"{"auction":1001,"bidder":1001,"price":6.356,"dateTime":3,"extra":"ab"}"#
            ]
        );
        let mut q2 = Harness::<Nexmark>::open(r#"{"query":"q2"}"#).unwrap();
        assert_eq!(texts(&q2.process(&input).unwrap()), [r#"{"auction":1230,"price":1000}"#]);
        let mut keyed = Harness::<Nexmark>::open(r#"{"query":"bids-by-auction"}"#).unwrap();
        let out = keyed.process(&input).unwrap();
        assert_eq!(out[0].key.as_deref(), Some(&b"1230"[..]));
        assert!(out[0].text().starts_with(r#"{"auction":1230,"#));
    }

    #[test]
    fn q5_counts_sliding_windows_and_keeps_the_hottest() {
        let mut count = Harness::<Nexmark>::open(r#"{"query":"q5-count","window-ms":4,"slide-ms":2}"#).unwrap();
        let keyed = |auction: &str, ts: i64| OwnedRecord { key: Some(auction.as_bytes().to_vec()), value: b"{}".to_vec(), timestamp: ts, headers: vec![] };
        // Windows [-2,2) [0,4) [2,6): auction 1 at 1 -> ends 2, 4; at 3 -> 4, 6; auction 2 at 3 -> 4, 6.
        assert!(count.process(&[keyed("1", 1), keyed("1", 3), keyed("2", 3)]).unwrap().is_empty());
        let out = count.advance(TimeDomain::EventTime, 3).unwrap();
        let mut got = texts(&out);
        got.sort();
        assert_eq!(
            got,
            [
                r#"{"auction":1,"count":1,"window_end":2}"#,
                r#"{"auction":1,"count":2,"window_end":4}"#,
                r#"{"auction":2,"count":1,"window_end":4}"#
            ]
        );
        // A record for a window already emitted is late.
        assert!(count.process(&[keyed("1", 0)]).unwrap().is_empty());
        let mut hot = Harness::<Nexmark>::open(r#"{"query":"q5-hot"}"#).unwrap();
        let result = |text: &str, end: &str| OwnedRecord { key: Some(end.as_bytes().to_vec()), value: text.as_bytes().to_vec(), timestamp: 3, headers: vec![] };
        let input = [
            result(r#"{"auction":1,"count":2,"window_end":4}"#, "4"),
            result(r#"{"auction":2,"count":5,"window_end":4}"#, "4"),
            result(r#"{"auction":3,"count":5,"window_end":4}"#, "4"),
        ];
        assert!(hot.process(&input).unwrap().is_empty());
        let out = hot.advance(TimeDomain::EventTime, 3).unwrap();
        assert_eq!(texts(&out), [r#"{"auction":2,"count":5,"window_end":4}"#, r#"{"auction":3,"count":5,"window_end":4}"#]);
    }

    #[test]
    fn q7_keeps_every_bid_at_the_highest_price() {
        let mut per_auction = Harness::<Nexmark>::open(r#"{"query":"q7-max-per-auction","window-ms":10}"#).unwrap();
        let keyed = |r: OwnedRecord| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            OwnedRecord { key: Some(v["bid"]["auction"].to_string().into_bytes()), value: v["bid"].to_string().into_bytes(), timestamp: r.timestamp, headers: vec![] }
        };
        let input = [keyed(bid(1, 5, 1)), keyed(bid(1, 9, 2)), keyed(bid(1, 9, 3)), keyed(bid(2, 9, 4)), keyed(bid(1, 100, 12))];
        assert!(per_auction.process(&input).unwrap().is_empty());
        let out = per_auction.advance(TimeDomain::EventTime, 9).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|r| r.key.as_deref() == Some(&b"10"[..]) && r.text().starts_with(r#"{"window_end":10,"bid":{"#)));
        let mut max = Harness::<Nexmark>::open(r#"{"query":"q7-max","window-ms":10}"#).unwrap();
        let mut input = out.clone();
        input.push(OwnedRecord { key: Some(b"10".to_vec()), value: br#"{"window_end":10,"bid":{"price":3}}"#.to_vec(), timestamp: 9, headers: vec![] });
        assert!(max.process(&input).unwrap().is_empty());
        let out = max.advance(TimeDomain::EventTime, 9).unwrap();
        assert_eq!(out.len(), 3, "{:?}", texts(&out));
        assert!(out.iter().all(|r| r.text().contains(r#""price":9"#)));
    }

    #[test]
    fn state_round_trips() {
        let windows = vec![Window { end: 4, value: 2, items: vec![] }, Window { end: -6, value: i64::MIN, items: b"a\nb".to_vec() }];
        let mut bytes = Vec::new();
        encode(&windows, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), windows);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
