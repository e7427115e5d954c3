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
//! | `q4-auctions` | events | every auction as `{"category","expires"}`, keyed by its id |
//! | `q4-winning-bids` | two inputs: q4-auctions and bids-by-auction | per auction, once the watermark passes its expiry, the highest price bid between its start and its expiry: `{"category","price"}`, keyed by the category |
//! | `q4-average` | q4-winning-bids | per category, after each closed auction, the average closing price so far: `{"category","average","auctions"}` (q4, "average price per category") |
//! | `q3-persons` | events | the persons living in OR, ID or CA as `{"name","city","state"}`, keyed by their id |
//! | `q3-auctions` | events | the auctions of category 10 as `{"id"}`, keyed by their seller |
//! | `q3` | a `regular` join of q3-auctions (left) with q3-persons (right) | `{"name","city","state","id"}`: who sells what locally (q3, "local item suggestion") |
//! | `q8-persons` | events | every person as `{"id","name"}`, keyed by its id |
//! | `q8-auctions` | events | every auction as `{"id"}`, keyed by its seller |
//! | `q8` | a tumbling `window` join (`semi = true`) of q8-persons (left) with q8-auctions (right) | `{"id","name","starttime"}`: the persons who registered and opened an auction in the same window (q8, "monitor new users") |
//!
//! The join steps of q3 and q8 are the bundled `join` plugin's; see
//! `pipelines/nexmark/q3.toml` and `q8.toml`.
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

/// The state holding each key's open windows (q5, q7), auction (q4's
/// winning bids) or running total (q4's average).
const WINDOWS: &str = "windows";

/// How long after its expiry a closed auction is remembered, so that its
/// later bids are dropped without state of their own.
const Q4_CLOSED_MS: i64 = 10_000;

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
    /// Persons in OR, ID or CA, keyed by id.
    Q3Persons,
    /// Auctions of category 10, keyed by seller.
    Q3Auctions,
    /// The q3 join's output, projected.
    Q3,
    /// Persons keyed by id.
    Q8Persons,
    /// Auctions keyed by seller.
    Q8Auctions,
    /// The q8 semi join's output, projected.
    Q8,
    /// Auctions keyed by id.
    Q4Auctions,
    /// Per auction, the highest bid until it expires.
    Q4WinningBids,
    /// The running average closing price per category.
    Q4Average,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The step to run.
    pub query: Query,
    /// Window length (ms) of q5, q7 and q8.
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
    person: usize,
    auction_event: usize,
    /// Members of a person.
    person_fields: Fields,
    person_id: usize,
    person_name: usize,
    person_city: usize,
    person_state: usize,
    /// Members of an auction.
    auction_fields: Fields,
    auction_id: usize,
    auction_seller: usize,
    auction_category: usize,
    auction_expires: usize,
    /// Members of an intermediate result.
    result: Fields,
    left: usize,
    right: usize,
    result_category: usize,
    result_price: usize,
    count: usize,
    window_end: usize,
    result_bid: usize,
    late: u64,
    scratch: Vec<u8>,
}

impl Operator for Nexmark {
    type Config = Config;

    const PREFETCH: &'static [&'static str] = &[WINDOWS];

    fn open(config: Config, ctx: &OpenContext) -> Result<Self, Error> {
        if config.query == Query::Q4WinningBids && ctx.inputs.len() != 2 {
            return Err(Error::msg(format!(
                "q4-winning-bids has two inputs, the auctions (q4-auctions) and the bids (bids-by-auction), both with partition = \"hash\"; {} has {}: {:?}",
                ctx.operator,
                ctx.inputs.len(),
                ctx.inputs
            )));
        }
        if config.window_ms <= 0 {
            return Err(Error::msg("`window-ms` must be a positive number of milliseconds"));
        }
        if config.query == Query::Q5Count && (config.slide_ms <= 0 || config.window_ms % config.slide_ms != 0) {
            return Err(Error::msg("`slide-ms` must be positive and divide `window-ms`"));
        }
        let mut event = Fields::new();
        let bid = event.add("bid");
        let person = event.add("person");
        let auction_event = event.add("auction");
        let mut person_fields = Fields::new();
        let person_id = person_fields.add("id");
        let person_name = person_fields.add("name");
        let person_city = person_fields.add("city");
        let person_state = person_fields.add("state");
        let mut auction_fields = Fields::new();
        let auction_id = auction_fields.add("id");
        let auction_seller = auction_fields.add("seller");
        let auction_category = auction_fields.add("category");
        let auction_expires = auction_fields.add("expires");
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
        let left = result.add("left");
        let right = result.add("right");
        let result_category = result.add("category");
        let result_price = result.add("price");
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
            person,
            auction_event,
            person_fields,
            person_id,
            person_name,
            person_city,
            person_state,
            auction_fields,
            auction_id,
            auction_seller,
            auction_category,
            auction_expires,
            result,
            left,
            right,
            result_category,
            result_price,
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
            Query::Q3Persons | Query::Q8Persons => {
                let event = self.event.scan(record.value).map_err(|e| Error::msg(format!("not a Nexmark event: {e}")))?;
                let Some(person) = event.get(self.person) else { return Ok(()) };
                let p = self.person_fields.scan(person.raw()).map_err(|e| Error::msg(format!("not a Nexmark person: {e}")))?;
                let id = p.get(self.person_id).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg("person without an integer `id`"))?;
                let text = |i: usize, name: &str| {
                    p.get(i).filter(|v| v.str_raw().is_some()).ok_or_else(|| Error::msg(format!("person without a string `{name}`")))
                };
                let name = text(self.person_name, "name")?.raw();
                self.scratch.clear();
                push_i64(&mut self.scratch, id);
                if self.query == Query::Q8Persons {
                    out.emit_with(Some(&self.scratch), record.timestamp, |v| {
                        v.extend_from_slice(b"{\"id\":");
                        push_i64(v, id);
                        v.extend_from_slice(b",\"name\":");
                        v.extend_from_slice(name);
                        v.push(b'}');
                    });
                    return Ok(());
                }
                let state = text(self.person_state, "state")?;
                if !matches!(state.str_raw(), Some(b"OR" | b"ID" | b"CA")) {
                    return Ok(());
                }
                let city = text(self.person_city, "city")?.raw();
                out.emit_with(Some(&self.scratch), record.timestamp, |v| {
                    v.extend_from_slice(b"{\"name\":");
                    v.extend_from_slice(name);
                    v.extend_from_slice(b",\"city\":");
                    v.extend_from_slice(city);
                    v.extend_from_slice(b",\"state\":");
                    v.extend_from_slice(state.raw());
                    v.push(b'}');
                });
                Ok(())
            }
            Query::Q3Auctions | Query::Q8Auctions | Query::Q4Auctions => {
                let event = self.event.scan(record.value).map_err(|e| Error::msg(format!("not a Nexmark event: {e}")))?;
                let Some(auction) = event.get(self.auction_event) else { return Ok(()) };
                let a = self.auction_fields.scan(auction.raw()).map_err(|e| Error::msg(format!("not a Nexmark auction: {e}")))?;
                let int = |i: usize, name: &str| {
                    a.get(i).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg(format!("auction without an integer `{name}`")))
                };
                if self.query == Query::Q4Auctions {
                    let (id, category, expires) = (int(self.auction_id, "id")?, int(self.auction_category, "category")?, int(self.auction_expires, "expires")?);
                    self.scratch.clear();
                    push_i64(&mut self.scratch, id);
                    out.emit_with(Some(&self.scratch), record.timestamp, |v| {
                        v.extend_from_slice(b"{\"category\":");
                        push_i64(v, category);
                        v.extend_from_slice(b",\"expires\":");
                        push_i64(v, expires);
                        v.push(b'}');
                    });
                    return Ok(());
                }
                if self.query == Query::Q3Auctions && int(self.auction_category, "category")? != 10 {
                    return Ok(());
                }
                let (id, seller) = (int(self.auction_id, "id")?, int(self.auction_seller, "seller")?);
                self.scratch.clear();
                push_i64(&mut self.scratch, seller);
                out.emit_with(Some(&self.scratch), record.timestamp, |v| {
                    v.extend_from_slice(b"{\"id\":");
                    push_i64(v, id);
                    v.push(b'}');
                });
                Ok(())
            }
            Query::Q3 | Query::Q8 => {
                let joined = self.result.scan(record.value).map_err(|e| Error::msg(format!("not the output of a join: {e}")))?;
                let side = |i: usize, name: &str| joined.get(i).ok_or_else(|| Error::msg(format!("join output without `{name}`: put the `join` plugin before this step")));
                let left = side(self.left, "left")?.raw();
                if self.query == Query::Q8 {
                    let end = side(self.window_end, "window_end")?.as_i64().ok_or_else(|| Error::msg("join output whose `window_end` is not an integer"))?;
                    // {"id":..,"name":..} -> {"id":..,"name":..,"starttime":..}
                    let body = left.strip_suffix(b"}").filter(|b| b.starts_with(b"{")).ok_or_else(|| Error::msg("q8's left side is not a q8-persons object"))?;
                    let start = end - self.window;
                    out.emit_with(record.key, record.timestamp, |v| {
                        v.extend_from_slice(body);
                        v.extend_from_slice(b",\"starttime\":");
                        push_i64(v, start);
                        v.push(b'}');
                    });
                    return Ok(());
                }
                // {"name","city","state"} of the person, then the auction's id.
                let person = side(self.right, "right")?.raw();
                let body = person.strip_suffix(b"}").filter(|b| b.starts_with(b"{")).ok_or_else(|| Error::msg("q3's right side is not a q3-persons object"))?;
                let auction = self.auction_fields.scan(left).map_err(|e| Error::msg(format!("q3's left side is not a q3-auctions object: {e}")))?;
                let id = auction.get(self.auction_id).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg("q3's left side has no integer `id`"))?;
                out.emit_with(record.key, record.timestamp, |v| {
                    v.extend_from_slice(body);
                    v.extend_from_slice(b",\"id\":");
                    push_i64(v, id);
                    v.push(b'}');
                });
                Ok(())
            }
            Query::Q4WinningBids => {
                let key = record.key.ok_or_else(|| Error::msg("q4-winning-bids needs keyed input: q4-auctions and bids-by-auction, with partition = \"hash\""))?;
                let mut auction = match ctx.get_bytes(WINDOWS, key)? {
                    Some(bytes) => Q4Auction::decode(bytes)?,
                    None => Q4Auction::Unknown { bids: Vec::new() },
                };
                let ts = record.timestamp;
                if ctx.input() == 0 {
                    let fields = self.auction_fields.scan(record.value).map_err(|e| Error::msg(format!("not a q4-auctions record: {e}")))?;
                    let int = |i: usize, name: &str| {
                        fields.get(i).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg(format!("q4-auctions record without an integer `{name}`")))
                    };
                    let (category, expires) = (int(self.auction_category, "category")?, int(self.auction_expires, "expires")?);
                    let Q4Auction::Unknown { bids } = &auction else {
                        // The generator numbers auctions uniquely.
                        return Err(Error::msg(format!("auction {} came twice", String::from_utf8_lossy(key))));
                    };
                    let max = bids.iter().filter(|(t, _)| (ts..=expires).contains(t)).map(|&(_, price)| price).max().unwrap_or(-1);
                    auction = Q4Auction::Open { category, start: ts, expires, max };
                    ctx.register_timer(TimeDomain::EventTime, key, expires);
                } else {
                    let fields = self.bid_fields.scan(record.value).map_err(|e| Error::msg(format!("not a Nexmark bid: {e}")))?;
                    let price = fields.get(self.price).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg("bid without an integer `price`"))?;
                    match &mut auction {
                        Q4Auction::Open { start, expires, max, .. } => {
                            if (*start..=*expires).contains(&ts) && price > *max {
                                *max = price;
                            }
                        }
                        // The auction has closed: too late to bid.
                        Q4Auction::Closed => return Ok(()),
                        // Kept until the watermark passes the bid: by then
                        // every auction it could belong to has come.
                        Q4Auction::Unknown { bids } => {
                            bids.push((ts, price));
                            ctx.register_timer(TimeDomain::EventTime, key, ts);
                        }
                    }
                }
                auction.encode(&mut self.scratch);
                ctx.put_bytes(WINDOWS, key, &self.scratch);
                Ok(())
            }
            Query::Q4Average => {
                let fields = self.result.scan(record.value).map_err(|e| Error::msg(format!("not a q4-winning-bids record: {e}")))?;
                let int = |i: usize, name: &str| {
                    fields.get(i).and_then(|v| v.as_i64()).ok_or_else(|| Error::msg(format!("q4-winning-bids record without an integer `{name}`")))
                };
                let (category, price) = (int(self.result_category, "category")?, int(self.result_price, "price")?);
                let key = keyed(&record)?;
                let (sum, count) = match ctx.get_bytes(WINDOWS, key)? {
                    Some(b) if b.len() == 16 => (i64::from_le_bytes(b[..8].try_into().expect("8 bytes")), i64::from_le_bytes(b[8..].try_into().expect("8 bytes"))),
                    Some(_) => return Err(Error::msg("corrupt q4-average state")),
                    None => (0, 0),
                };
                let (sum, count) = (sum + price, count + 1);
                let mut total = [0u8; 16];
                total[..8].copy_from_slice(&sum.to_le_bytes());
                total[8..].copy_from_slice(&count.to_le_bytes());
                ctx.put_bytes(WINDOWS, key, &total);
                out.emit_with(Some(key), record.timestamp, |v| {
                    v.extend_from_slice(b"{\"category\":");
                    push_i64(v, category);
                    v.extend_from_slice(b",\"average\":");
                    push_f64(v, sum as f64 / count as f64);
                    v.extend_from_slice(b",\"auctions\":");
                    push_i64(v, count);
                    v.push(b'}');
                });
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
        if self.query == Query::Q4WinningBids {
            return self.q4_timer(timer, out, ctx);
        }
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
    /// An auction closes (its winning bid goes out), a closed one is
    /// forgotten, or bids for an auction that never came are dropped.
    fn q4_timer(&mut self, timer: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let key = &timer.key;
        let Some(bytes) = ctx.get_bytes(WINDOWS, key)? else { return Ok(()) };
        let mut auction = Q4Auction::decode(bytes)?;
        match &mut auction {
            Q4Auction::Open { category, expires, max, .. } if timer.timestamp >= *expires => {
                let (category, price) = (*category, *max);
                if price >= 0 {
                    self.scratch.clear();
                    push_i64(&mut self.scratch, category);
                    out.emit_with(Some(&self.scratch), *expires, |v| {
                        v.extend_from_slice(b"{\"category\":");
                        push_i64(v, category);
                        v.extend_from_slice(b",\"price\":");
                        push_i64(v, price);
                        v.push(b'}');
                    });
                }
                ctx.register_timer(TimeDomain::EventTime, key, expires.saturating_add(Q4_CLOSED_MS));
                auction = Q4Auction::Closed;
            }
            Q4Auction::Open { .. } => return Ok(()),
            Q4Auction::Closed => {
                ctx.delete(WINDOWS, key);
                return Ok(());
            }
            Q4Auction::Unknown { bids } => {
                bids.retain(|&(t, _)| t > timer.timestamp);
                if bids.is_empty() {
                    ctx.delete(WINDOWS, key);
                    return Ok(());
                }
            }
        }
        auction.encode(&mut self.scratch);
        ctx.put_bytes(WINDOWS, key, &self.scratch);
        Ok(())
    }

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

/// q4's state of one auction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Q4Auction {
    /// Not seen yet: its bids so far, `(time, price)`.
    Unknown { bids: Vec<(i64, i64)> },
    /// Open until `expires`; `max` is the highest price bid in
    /// `[start, expires]` so far, -1 for none.
    Open { category: i64, start: i64, expires: i64, max: i64 },
    /// Closed; its winning bid has gone out.
    Closed,
}

impl Q4Auction {
    /// A tag byte, then little-endian `i64`s: `0` and the bids' time and
    /// price pairs, `1` and category, start, expires, max, or `2`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let tag = match self {
            Q4Auction::Unknown { .. } => 0,
            Q4Auction::Open { .. } => 1,
            Q4Auction::Closed => 2,
        };
        out.push(tag);
        let mut put = |n: i64| out.extend_from_slice(&n.to_le_bytes());
        match *self {
            Q4Auction::Unknown { ref bids } => {
                for &(t, p) in bids {
                    put(t);
                    put(p);
                }
            }
            Q4Auction::Open { category, start, expires, max } => [category, start, expires, max].into_iter().for_each(put),
            Q4Auction::Closed => {}
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::msg("corrupt q4 auction state");
        let (&tag, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if rest.len() % 8 != 0 {
            return Err(corrupt());
        }
        let n: Vec<i64> = rest.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        match (tag, n.as_slice()) {
            (0, n) if n.len() % 2 == 0 => Ok(Q4Auction::Unknown { bids: n.chunks_exact(2).map(|p| (p[0], p[1])).collect() }),
            (1, &[category, start, expires, max]) => Ok(Q4Auction::Open { category, start, expires, max }),
            (2, []) => Ok(Q4Auction::Closed),
            _ => Err(corrupt()),
        }
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
    fn q3_and_q8_steps_key_persons_and_auctions_and_project_the_joins() {
        let event = |text: &str| OwnedRecord { key: None, value: text.as_bytes().to_vec(), timestamp: 7, headers: vec![] };
        let input = [
            event(r#"{"person":{"id":1000,"name":"Ann Bo","emailAddress":"a@b.c","creditCard":"1","city":"Boise","state":"ID","dateTime":7,"extra":""}}"#),
            event(r#"{"person":{"id":1001,"name":"Cy Di","emailAddress":"a@b.c","creditCard":"1","city":"Kent","state":"WA","dateTime":7,"extra":""}}"#),
            event(r#"{"auction":{"id":1005,"itemName":"x","description":"y","initialBid":1,"reserve":2,"dateTime":7,"expires":9,"seller":1000,"category":10,"extra":""}}"#),
            event(r#"{"auction":{"id":1006,"itemName":"x","description":"y","initialBid":1,"reserve":2,"dateTime":7,"expires":9,"seller":1001,"category":11,"extra":""}}"#),
            bid(1005, 3, 7),
        ];
        let run = |query: &str, input: &[OwnedRecord]| {
            let mut h = Harness::<Nexmark>::open(&format!(r#"{{"query":"{query}"}}"#)).unwrap();
            h.process(input).unwrap().iter().map(|r| format!("{}={}", String::from_utf8_lossy(r.key.as_deref().unwrap_or(b"-")), r.text())).collect::<Vec<_>>()
        };
        assert_eq!(run("q3-persons", &input), [r#"1000={"name":"Ann Bo","city":"Boise","state":"ID"}"#]);
        assert_eq!(run("q3-auctions", &input), [r#"1000={"id":1005}"#]);
        assert_eq!(run("q8-persons", &input), [r#"1000={"id":1000,"name":"Ann Bo"}"#, r#"1001={"id":1001,"name":"Cy Di"}"#]);
        assert_eq!(run("q8-auctions", &input), [r#"1000={"id":1005}"#, r#"1001={"id":1006}"#]);
        let joined = |text: &str| OwnedRecord { key: Some(b"1000".to_vec()), value: text.as_bytes().to_vec(), timestamp: 9, headers: vec![] };
        assert_eq!(
            run("q3", &[joined(r#"{"left":{"id":1005},"right":{"name":"Ann Bo","city":"Boise","state":"ID"}}"#)]),
            [r#"1000={"name":"Ann Bo","city":"Boise","state":"ID","id":1005}"#]
        );
        assert_eq!(
            run("q8", &[joined(r#"{"window_end":20000,"left":{"id":1000,"name":"Ann Bo"}}"#)]),
            [r#"1000={"id":1000,"name":"Ann Bo","starttime":10000}"#]
        );
        let mut q8 = Harness::<Nexmark>::open(r#"{"query":"q8"}"#).unwrap();
        let err = q8.process(&[joined(r#"{"bid":{}}"#)]).unwrap_err();
        assert!(err.message.contains("put the `join` plugin before this step"), "{}", err.message);
    }

    #[test]
    fn q4_closes_each_auction_with_its_highest_bid_in_time_and_averages_per_category() {
        let keyed = |key: &str, ts: i64, value: &str| OwnedRecord { key: Some(key.as_bytes().to_vec()), value: value.as_bytes().to_vec(), timestamp: ts, headers: vec![] };
        let mut win = Harness::<Nexmark>::open_with_inputs(r#"{"query":"q4-winning-bids"}"#, 0, 1, &["auctions", "bids"]).unwrap();
        // Auction 1 is open from 10 to 20; a bid at 9 came before it and is too early, one at 12 came first and counts.
        assert!(win.process_input(1, &[keyed("1", 9, r#"{"price":99}"#), keyed("1", 12, r#"{"price":5}"#)]).unwrap().is_empty());
        assert!(win.process_input(0, &[keyed("1", 10, r#"{"category":3,"expires":20}"#), keyed("2", 10, r#"{"category":3,"expires":15}"#)]).unwrap().is_empty());
        assert!(win.process_input(1, &[keyed("1", 20, r#"{"price":7}"#), keyed("1", 21, r#"{"price":50}"#), keyed("3", 11, r#"{"price":1}"#)]).unwrap().is_empty());
        // Auction 2 had no bid; auction 3 never came, its bid goes once the watermark passes it.
        let out = win.advance(TimeDomain::EventTime, 20).unwrap();
        assert_eq!(texts(&out), [r#"{"category":3,"price":7}"#]);
        assert_eq!(out[0].key.as_deref(), Some(&b"3"[..]));
        // A bid after the close is dropped; the closed auction is forgotten later.
        assert!(win.process_input(1, &[keyed("1", 19, r#"{"price":1000}"#)]).unwrap().is_empty());
        assert!(win.advance(TimeDomain::EventTime, 100_000).unwrap().is_empty());
        assert!(win.host().state.borrow().values.is_empty(), "{:?}", win.host().state.borrow().values);
        assert!(win.host().state.borrow().timers.is_empty());

        let mut avg = Harness::<Nexmark>::open(r#"{"query":"q4-average"}"#).unwrap();
        let out = avg.process(&[keyed("3", 20, r#"{"category":3,"price":7}"#), keyed("3", 30, r#"{"category":3,"price":8}"#)]).unwrap();
        assert_eq!(texts(&out), [r#"{"category":3,"average":7.0,"auctions":1}"#, r#"{"category":3,"average":7.5,"auctions":2}"#]);

        let one = Harness::<Nexmark>::open(r#"{"query":"q4-winning-bids"}"#).unwrap_err();
        assert!(one.contains("q4-winning-bids has two inputs"), "{one}");
    }

    #[test]
    fn q4_state_round_trips() {
        for a in [Q4Auction::Unknown { bids: vec![(1, 2), (-3, 4)] }, Q4Auction::Open { category: 1, start: 2, expires: 3, max: -1 }, Q4Auction::Closed] {
            let mut bytes = Vec::new();
            a.encode(&mut bytes);
            assert_eq!(Q4Auction::decode(&bytes).unwrap(), a);
            assert!(Q4Auction::decode(&bytes[..bytes.len() - 1]).is_err() || bytes.len() == 1);
        }
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
