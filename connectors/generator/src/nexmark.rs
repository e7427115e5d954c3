//! The Nexmark auction model: persons, auctions and bids (`schema = "nexmark"`).
//!
//! Nexmark is the benchmark stream processors publish (Flink, Arroyo,
//! RisingWave, Feldera). Its generator is specified by Apache Beam's and the
//! Flink nexmark project's; this one follows the portable specification in
//! weir's Flink comparison job (`EventGenerator.java` of the shared Flink
//! benchmark), so that weir and Flink run the *same* event stream and can be
//! compared query by query. Event number `j` alone determines event `j`:
//!
//! - the kind: `j % 50 == 0` a person, `1..=3` an auction, `4..=49` a bid
//!   (the standard 1 : 3 : 46 proportion);
//! - the event time: `start + j * (1 s / event-rate)`, 10,000 events per
//!   second of event time by default (Beam's base time 2015-07-15T00:00:00Z);
//! - every random field: a SplitMix64 stream seeded with `j`, drawn in a
//!   fixed order. Persons and auctions are numbered from 1000; a bid goes to
//!   the current "hot" auction half of the time and comes from the hot bidder
//!   three times in four; prices are log-uniform between $1 and $1,000,000
//!   (in cents); `extra` pads persons, auctions and bids to an average of
//!   200, 500 and 100 bytes.
//!
//! So the events do not depend on the parallelism, and the same events reach
//! every engine that implements the specification. The unit tests check this
//! port against the reference's checksum of the first 100,000 events.
//!
//! Each event is one JSON object with one member named after its kind, with
//! the field names of the Nexmark schema (times in ms since the Unix epoch):
//!
//! ```text
//! {"person":{"id":1000,"name":"Julie Smith","emailAddress":"uujk@oju.com","creditCard":"8388 0817 9795 5831","city":"Redmond","state":"WA","dateTime":1436918400000,"extra":"..."}}
//! {"auction":{"id":1000,"itemName":"qepdtz","description":"...","initialBid":187,"reserve":257606,"dateTime":1436918400000,"expires":1436918400259,"seller":1000,"category":14,"extra":"..."}}
//! {"bid":{"auction":1000,"bidder":1001,"price":5410514,"channel":"Apple","url":"https://www.nexmark.com/yo_b/ofuk/of_/item.htm?query=1","dateTime":1436918400000,"extra":"..."}}
//! ```

use std::sync::OnceLock;

use weir_format::decimal::{push_i64, push_u64};

/// Event time of event 0 by default: 2015-07-15T00:00:00Z, Beam's base time.
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;
/// Events per second of event time by default (100 µs apart).
pub const DEFAULT_EVENT_RATE: f64 = 10_000.0;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u32 = 5;
const HOT_AUCTION_RATIO: u32 = 2;
const HOT_SELLERS_RATIO: u32 = 4;
const HOT_BIDDERS_RATIO: u32 = 4;
const HOT_BATCH: i64 = 100;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: [&str; 11] = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const NUM_CHANNELS: u32 = 10_000;
const EXTRA_POOL_LEN: usize = 1 << 20;

/// SplitMix64 as the specification draws from it: `seed(s)` sets the state
/// to `mix(s + GAMMA)`; `int(n)` is the multiply-shift `((x >> 32) * n) >> 32`.
struct Rng(u64);

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(mix(seed.wrapping_add(GAMMA)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..n`, `0 < n <= i32::MAX`.
    fn int(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in `0..n`, `n > 0`.
    fn long(&mut self, n: u64) -> u64 {
        if n <= i32::MAX as u64 { u64::from(self.int(n as u32)) } else { self.next() % n }
    }

    fn double(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `3..max_len` letters, about one in 13 replaced by `special`, trimmed
    /// of spaces at both ends (as Java's `String.trim`).
    fn string(&mut self, out: &mut Vec<u8>, max_len: u32, special: u8) {
        let len = 3 + self.int(max_len - 3);
        let start = out.len();
        for _ in 0..len {
            let c = if self.int(13) == 0 { special } else { b'a' + self.int(26) as u8 };
            out.push(c);
        }
        let piece = &out[start..];
        let lead = piece.iter().take_while(|&&c| c <= b' ').count();
        let trail = if lead == piece.len() { 0 } else { piece.iter().rev().take_while(|&&c| c <= b' ').count() };
        out.truncate(out.len() - trail);
        out.drain(start..start + lead);
    }

    /// Log-uniform price in cents, $1 to $1,000,000.
    fn price(&mut self) -> i64 {
        (10f64.powf(self.double() * 6.0) * 100.0).round() as i64
    }

    /// Padding that brings `current` bytes to `average` on average (±20 %):
    /// a slice of the fixed pool of random letters.
    fn extra(&mut self, current: usize, average: usize) -> &'static [u8] {
        if current > average {
            return b"";
        }
        let want = (average - current) as u32;
        let delta = (f64::from(want) * 0.2).round() as u32;
        let size = want - delta + if delta == 0 { 0 } else { self.int(2 * delta) };
        let offset = self.int((EXTRA_POOL_LEN - size as usize) as u32) as usize;
        &tables().extra_pool[offset..offset + size as usize]
    }
}

/// The fixed tables: built once from fixed seeds, identical everywhere.
struct Tables {
    hot_urls: Vec<Vec<u8>>,
    channel_names: Vec<Vec<u8>>,
    channel_urls: Vec<Vec<u8>>,
    extra_pool: Vec<u8>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        fn base_url(r: &mut Rng) -> Vec<u8> {
            let mut url = b"https://www.nexmark.com/".to_vec();
            for _ in 0..3 {
                r.string(&mut url, 5, b'_');
                url.push(b'/');
            }
            url.extend_from_slice(b"item.htm?query=1");
            url
        }
        let mut r = Rng::seeded(0x5eed_0001);
        let hot_urls = HOT_CHANNELS.iter().map(|_| base_url(&mut r)).collect();
        let mut channel_names = Vec::with_capacity(NUM_CHANNELS as usize);
        let mut channel_urls = Vec::with_capacity(NUM_CHANNELS as usize);
        for i in 0..NUM_CHANNELS {
            let mut url = base_url(&mut r);
            if r.int(10) > 0 {
                // Java's Math.abs(Integer.reverse(i)), which leaves i32::MIN negative.
                url.extend_from_slice(format!("&channel_id={}", (i as i32).reverse_bits().wrapping_abs()).as_bytes());
            }
            channel_names.push(format!("channel-{i}").into_bytes());
            channel_urls.push(url);
        }
        let mut r = Rng::seeded(0x5eed_0002);
        let extra_pool = (0..EXTRA_POOL_LEN).map(|_| b'a' + r.int(26) as u8).collect();
        Tables { hot_urls, channel_names, channel_urls, extra_pool }
    })
}

/// What kind of event number `j` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new person (1 in 50).
    Person,
    /// A new auction (3 in 50).
    Auction,
    /// A bid (46 in 50).
    Bid,
}

/// The kind of event `j`.
pub fn kind(j: u64) -> Kind {
    match j % TOTAL_PROPORTION {
        r if r < PERSON_PROPORTION => Kind::Person,
        r if r < PERSON_PROPORTION + AUCTION_PROPORTION => Kind::Auction,
        _ => Kind::Bid,
    }
}

/// Id (from 0) of the last person created at or before event `j`.
fn last_person(j: u64) -> i64 {
    let (epoch, offset) = ((j / TOTAL_PROPORTION) as i64, (j % TOTAL_PROPORTION).min(PERSON_PROPORTION - 1) as i64);
    epoch * PERSON_PROPORTION as i64 + offset
}

/// Id (from 0) of the last auction created at or before event `j` (-1 before the first).
fn last_auction(j: u64) -> i64 {
    let mut epoch = (j / TOTAL_PROPORTION) as i64;
    let mut offset = (j % TOTAL_PROPORTION) as i64;
    if offset < PERSON_PROPORTION as i64 {
        epoch -= 1;
        offset = AUCTION_PROPORTION as i64 - 1;
    } else if offset >= (PERSON_PROPORTION + AUCTION_PROPORTION) as i64 {
        offset = AUCTION_PROPORTION as i64 - 1;
    } else {
        offset -= PERSON_PROPORTION as i64;
    }
    epoch * AUCTION_PROPORTION as i64 + offset
}

/// A random active person: one of the last 1000, or up to 10 ahead.
fn some_person(j: u64, r: &mut Rng) -> i64 {
    let people = last_person(j) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + r.long((active + PERSON_ID_LEAD) as u64) as i64
}

/// A random auction likely in flight: one of the last ~100, or up to 10 ahead.
fn some_auction(j: u64, r: &mut Rng) -> i64 {
    let max = last_auction(j);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS as i64).max(0);
    min + r.long((max - min + 1 + AUCTION_ID_LEAD) as u64) as i64
}

/// Where the events are in event time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// Event time of event 0, in ms.
    pub start: i64,
    /// Nanoseconds of event time between two events.
    pub ns_per_event: u64,
}

impl Timeline {
    /// The event time of event `j`, in ms.
    pub fn at(&self, j: u64) -> i64 {
        self.start.saturating_add((u128::from(j) * u128::from(self.ns_per_event) / 1_000_000).min(i64::MAX as u128) as i64)
    }
}

/// Writes one event in either of its two spellings.
trait Form {
    /// Starts an event of `kind`.
    fn begin(out: &mut Vec<u8>, kind: Kind);
    /// Starts field `name` (the first of an event when `first`).
    fn field(out: &mut Vec<u8>, name: &str, first: bool);
    /// Starts a string field's text; [`Form::end_str`] ends it.
    fn begin_str(out: &mut Vec<u8>, name: &str, first: bool);
    fn end_str(out: &mut Vec<u8>);
    fn end(out: &mut Vec<u8>);
}

/// `{"bid":{"auction":1000,...}}`: what the source emits. No value needs
/// escaping: every string is letters, digits, spaces and URL punctuation.
struct Json;

impl Form for Json {
    fn begin(out: &mut Vec<u8>, kind: Kind) {
        out.extend_from_slice(match kind {
            Kind::Person => b"{\"person\":{",
            Kind::Auction => b"{\"auction\":{",
            Kind::Bid => b"{\"bid\":{",
        });
    }
    fn field(out: &mut Vec<u8>, name: &str, first: bool) {
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    }
    fn begin_str(out: &mut Vec<u8>, name: &str, first: bool) {
        Self::field(out, name, first);
        out.push(b'"');
    }
    fn end_str(out: &mut Vec<u8>) {
        out.push(b'"');
    }
    fn end(out: &mut Vec<u8>) {
        out.extend_from_slice(b"}}");
    }
}

/// The reference's canonical line (kind letter, then the fields in model
/// order, tab-separated): what its checksum is computed over.
#[cfg(test)]
struct Tsv;

#[cfg(test)]
impl Form for Tsv {
    fn begin(out: &mut Vec<u8>, kind: Kind) {
        out.push(match kind {
            Kind::Person => b'P',
            Kind::Auction => b'A',
            Kind::Bid => b'B',
        });
    }
    fn field(out: &mut Vec<u8>, _: &str, _: bool) {
        out.push(b'\t');
    }
    fn begin_str(out: &mut Vec<u8>, _: &str, _: bool) {
        out.push(b'\t');
    }
    fn end_str(_: &mut Vec<u8>) {}
    fn end(_: &mut Vec<u8>) {}
}

/// Writes event `j` as JSON (see the module docs) and returns its event time.
pub fn write_json(out: &mut Vec<u8>, j: u64, timeline: &Timeline) -> i64 {
    write::<Json>(out, j, timeline)
}

/// The fields of each kind are drawn in the specification's order; the
/// spellings ([`Form`]) order them as the model does.
fn write<F: Form>(out: &mut Vec<u8>, j: u64, timeline: &Timeline) -> i64 {
    let mut r = Rng::seeded(j);
    let ts = timeline.at(j);
    let kind = kind(j);
    F::begin(out, kind);
    match kind {
        Kind::Person => person::<F>(out, j, &mut r, ts),
        Kind::Auction => auction::<F>(out, j, &mut r, ts, timeline),
        Kind::Bid => bid::<F>(out, j, &mut r, ts),
    }
    F::end(out);
    ts
}

fn num<F: Form>(out: &mut Vec<u8>, name: &str, value: i64, first: bool) {
    F::field(out, name, first);
    push_i64(out, value);
}

/// Appends a string field; returns its length.
fn text<F: Form>(out: &mut Vec<u8>, name: &str, write: impl FnOnce(&mut Vec<u8>)) -> usize {
    F::begin_str(out, name, false);
    let start = out.len();
    write(out);
    let len = out.len() - start;
    F::end_str(out);
    len
}

fn person<F: Form>(out: &mut Vec<u8>, j: u64, r: &mut Rng, ts: i64) {
    num::<F>(out, "id", last_person(j) + FIRST_PERSON_ID, true);
    let (first, last) = (FIRST_NAMES[r.int(11) as usize], LAST_NAMES[r.int(9) as usize]);
    let mut size = 8;
    size += text::<F>(out, "name", |o| {
        o.extend_from_slice(first.as_bytes());
        o.push(b' ');
        o.extend_from_slice(last.as_bytes());
    });
    size += text::<F>(out, "emailAddress", |o| {
        r.string(o, 7, b' ');
        o.push(b'@');
        r.string(o, 5, b' ');
        o.extend_from_slice(b".com");
    });
    size += text::<F>(out, "creditCard", |o| {
        for i in 0..4 {
            if i > 0 {
                o.push(b' ');
            }
            let d = r.int(10_000);
            let len = o.len();
            push_u64(o, u64::from(d));
            let digits = o.len() - len;
            o.splice(len..len, std::iter::repeat_n(b'0', 4 - digits));
        }
    });
    let (city, state) = (US_CITIES[r.int(10) as usize], US_STATES[r.int(6) as usize]);
    size += text::<F>(out, "city", |o| o.extend_from_slice(city.as_bytes()));
    size += text::<F>(out, "state", |o| o.extend_from_slice(state.as_bytes()));
    num::<F>(out, "dateTime", ts, false);
    let extra = r.extra(size, AVG_PERSON_BYTES);
    text::<F>(out, "extra", |o| o.extend_from_slice(extra));
}

fn auction<F: Form>(out: &mut Vec<u8>, j: u64, r: &mut Rng, ts: i64, timeline: &Timeline) {
    num::<F>(out, "id", last_auction(j) + FIRST_AUCTION_ID, true);
    let seller = if r.int(HOT_SELLERS_RATIO) > 0 { (last_person(j) / HOT_BATCH) * HOT_BATCH } else { some_person(j, r) };
    let category = FIRST_CATEGORY_ID + i64::from(r.int(NUM_CATEGORIES));
    let initial_bid = r.price();
    // Uniform in [1, 2 * horizon] ms, the horizon being the event time until
    // 100 more auctions exist.
    let ahead = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
    let horizon = timeline.at(j + ahead) - timeline.at(j);
    let expires = ts + 1 + r.long((horizon * 2).max(1) as u64) as i64;
    let mut size = 8 + 40;
    size += text::<F>(out, "itemName", |o| r.string(o, 20, b' '));
    size += text::<F>(out, "description", |o| r.string(o, 100, b' '));
    num::<F>(out, "initialBid", initial_bid, false);
    num::<F>(out, "reserve", initial_bid + r.price(), false);
    num::<F>(out, "dateTime", ts, false);
    num::<F>(out, "expires", expires, false);
    num::<F>(out, "seller", seller + FIRST_PERSON_ID, false);
    num::<F>(out, "category", category, false);
    let extra = r.extra(size, AVG_AUCTION_BYTES);
    text::<F>(out, "extra", |o| o.extend_from_slice(extra));
}

fn bid<F: Form>(out: &mut Vec<u8>, j: u64, r: &mut Rng, ts: i64) {
    let auction = if r.int(HOT_AUCTION_RATIO) > 0 { (last_auction(j) / HOT_BATCH) * HOT_BATCH } else { some_auction(j, r) };
    // The second person of the batch, so that hot bidders and sellers differ.
    let bidder = if r.int(HOT_BIDDERS_RATIO) > 0 { (last_person(j) / HOT_BATCH) * HOT_BATCH + 1 } else { some_person(j, r) };
    num::<F>(out, "auction", auction + FIRST_AUCTION_ID, true);
    num::<F>(out, "bidder", bidder + FIRST_PERSON_ID, false);
    num::<F>(out, "price", r.price(), false);
    let t = tables();
    let (channel, url) = if r.int(2) > 0 {
        let i = r.int(HOT_CHANNELS.len() as u32) as usize;
        (HOT_CHANNELS[i].as_bytes(), t.hot_urls[i].as_slice())
    } else {
        let c = r.int(NUM_CHANNELS) as usize;
        (t.channel_names[c].as_slice(), t.channel_urls[c].as_slice())
    };
    text::<F>(out, "channel", |o| o.extend_from_slice(channel));
    text::<F>(out, "url", |o| o.extend_from_slice(url));
    num::<F>(out, "dateTime", ts, false);
    let extra = r.extra(32, AVG_BID_BYTES);
    text::<F>(out, "extra", |o| o.extend_from_slice(extra));
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Timeline = Timeline { start: BASE_TIME_MS, ns_per_event: 100_000 };

    fn tsv(j: u64) -> String {
        let mut out = Vec::new();
        write::<Tsv>(&mut out, j, &DEFAULT);
        String::from_utf8(out).unwrap()
    }

    /// The reference's first events (`Verify 1000 --dump`, extra fields cut).
    #[test]
    fn first_events_match_the_reference() {
        let cut = |s: String| s.rsplit_once('\t').unwrap().0.to_owned();
        assert_eq!(cut(tsv(0)), "P\t1000\tJulie Smith\tuujk@oju.com\t8388 0817 9795 5831\tRedmond\tWA\t1436918400000");
        assert_eq!(
            cut(tsv(1)),
            "A\t1000\tqepdtz\tcewdoidotgisooqvwqp kmfudreasmx yy sfz nxomizdy zmyorjvhfvlzrn dplahlf rsjstih\t187\t257606\t1436918400000\t1436918400259\t1000\t14"
        );
        assert_eq!(
            cut(tsv(4)),
            "B\t1000\t1001\t5410514\tApple\thttps://www.nexmark.com/yo_b/ofuk/of_/item.htm?query=1\t1436918400000"
        );
    }

    /// 64-bit FNV-1a over every event's canonical line and a newline, as the
    /// reference's `Verify 100000` prints it: `checksum=92965e3d213ba88e`.
    #[test]
    fn the_first_100_000_events_match_the_reference_checksum() {
        let mut sum: u64 = 0xcbf2_9ce4_8422_2325;
        let mut line = Vec::new();
        for j in 0..100_000 {
            line.clear();
            write::<Tsv>(&mut line, j, &DEFAULT);
            line.push(b'\n');
            for &b in &line {
                sum = (sum ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        assert_eq!(format!("{sum:016x}"), "92965e3d213ba88e");
    }

    #[test]
    fn json_is_valid_and_matches_the_canonical_fields() {
        for j in 0..2000 {
            let mut out = Vec::new();
            let ts = write_json(&mut out, j, &DEFAULT);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("event {j}: {e}"));
            let (kind, body) = v.as_object().unwrap().iter().next().unwrap();
            assert_eq!(body["dateTime"], ts);
            let names: &[&str] = match kind.as_str() {
                "person" => &["id", "name", "emailAddress", "creditCard", "city", "state", "dateTime", "extra"],
                "auction" => &["id", "itemName", "description", "initialBid", "reserve", "dateTime", "expires", "seller", "category", "extra"],
                _ => &["auction", "bidder", "price", "channel", "url", "dateTime", "extra"],
            };
            assert_eq!(body.as_object().unwrap().len(), names.len(), "{kind} {j}");
            let json: Vec<String> = names.iter().map(|n| body[n].as_str().map_or_else(|| body[n].to_string(), str::to_owned)).collect();
            let fields: Vec<String> = tsv(j).split('\t').skip(1).map(str::to_owned).collect();
            assert_eq!(json, fields, "{kind} {j}");
        }
    }

    #[test]
    fn the_timeline_scales_with_the_event_rate() {
        assert_eq!(DEFAULT.at(0), BASE_TIME_MS);
        assert_eq!(DEFAULT.at(9), BASE_TIME_MS);
        assert_eq!(DEFAULT.at(10), BASE_TIME_MS + 1);
        assert_eq!(DEFAULT.at(10_000_000), BASE_TIME_MS + 1_000_000);
        let fast = Timeline { start: 0, ns_per_event: 100 };
        assert_eq!(fast.at(10_000_000), 1000);
        assert_eq!(Timeline { start: i64::MAX - 1, ns_per_event: 1_000_000 }.at(u64::MAX), i64::MAX);
    }
}
