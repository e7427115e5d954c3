//! # join: two-input joins on the record key
//!
//! An operator with two inputs (`inputs = ["left", "right"]` in the
//! pipeline file; the first is the left side). Both inputs must be keyed
//! on the join key and partitioned by it (`partition = "hash"`), so both
//! sides of a key meet in the same subtask; the keyed state holds them.
//! Four kinds:
//!
//! - `kind = "regular"`: an unbounded inner join (Flink SQL's regular
//!   join): every left and right record of a key pair up, as soon as the
//!   second of the two arrives. Nothing expires, so the state grows with
//!   the distinct records of both inputs: use it where they are bounded
//!   (a table of persons, of products), the other kinds elsewhere.
//!   Output at `max(l, r)`: `{"left":..,"right":..}`.
//! - `kind = "interval"`: an event-time interval join. A left record at `l`
//!   and a right record at `r` with the same key join when
//!   `l + lower-ms <= r <= l + upper-ms` (Flink's `between(lower, upper)`).
//!   Output at `max(l, r)`: `{"left":<left value>,"right":<right value>}`.
//! - `kind = "window"`: a window join over tumbling (`size-ms`) or sliding
//!   (`size-ms`, `slide-ms`) event-time windows: every left and right
//!   record of a key in the same window pair up once the window is complete.
//!   Output at the window's last millisecond:
//!   `{"window_end":<ms>,"left":..,"right":..}`. With `semi = true` it
//!   is a semi join: each left record is emitted once per window in which
//!   its key has at least one right record, as
//!   `{"window_end":<ms>,"left":..}` (the right values are not kept).
//! - `kind = "table"`: stream-table enrichment. The right input is a
//!   changelog: the latest value per key is the table, a record with an
//!   empty value (a Kafka tombstone) deletes its key. Each left record is
//!   emitted once as `{"left":..,"right":<table value>}`; with
//!   `outer = true` also without a table row (`"right":null`), otherwise
//!   it is dropped. `time = "event"` (the default) joins each left record
//!   with the table version valid at its event time, once the watermark
//!   says every version up to then has arrived; `time = "processing"`
//!   joins it with the table as it is when the record is processed.
//!
//! Values are embedded as they are when they are JSON, as JSON strings
//! otherwise.
//!
//! **Lateness.** Event time waits for the watermark: state is kept until
//! the watermark passes the last time a record can still match, then timers
//! clean it up, so state stays bounded. `allowed-lateness-ms` (default 0)
//! delays that by as much. A record older than the watermark minus the
//! allowed lateness can no longer be joined exactly (its partners may be
//! gone): it is *late*. Late records are counted and reported in the log
//! (a warning at most every 10 s and at the end) with `late = "log"` (the
//! default), and with `late = "emit"` also emitted as they came, with a
//! header `weir-late` naming their input. They are never dropped silently.
//!
//! ```toml
//! [[operators]]
//! name = "orders-payments"
//! plugin = "join"
//! inputs = ["orders", "payments"]
//! partition = "hash"
//! config = { kind = "interval", lower-ms = 0, upper-ms = 60000 }
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, LogLevel, OpenContext, Operator, Output, Record, TimeDomain, Timer};

/// Map state of the left records: key -> (time, value) -> count.
const LEFT: &str = "left";
/// Map state of the right records, as [`LEFT`].
const RIGHT: &str = "right";
/// `table` by event time: key -> version time -> value (see [`version`]).
const VERSIONS: &str = "versions";
/// `table` by processing time: key -> the current value.
const CURRENT: &str = "current";

/// The header a late record is emitted with (`late = "emit"`).
pub const LATE_HEADER: &str = "weir-late";

/// How often at most the late-record warning is logged.
const LATE_LOG_EVERY_MS: i64 = 10_000;

/// Which join.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Unbounded inner join.
    Regular,
    /// Event-time interval join.
    Interval,
    /// Tumbling or sliding window join.
    Window,
    /// Stream-table enrichment join.
    Table,
}

/// The clock of a `table` join.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Time {
    /// The table version valid at the left record's event time.
    #[default]
    Event,
    /// The table as it is when the left record is processed.
    Processing,
}

/// What happens to late records.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Late {
    /// Count them and log a warning.
    #[default]
    Log,
    /// Also emit them unchanged, with a `weir-late` header.
    Emit,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Which join.
    pub kind: Kind,
    /// `interval`: the earliest right time, relative to the left record's.
    pub lower_ms: Option<i64>,
    /// `interval`: the latest right time, relative to the left record's.
    pub upper_ms: Option<i64>,
    /// `window`: the window length.
    pub size_ms: Option<i64>,
    /// `window`: how far windows move (default `size-ms`: tumbling).
    pub slide_ms: Option<i64>,
    /// `window`: emit each left record with a partner once, without the right side.
    pub semi: Option<bool>,
    /// `table`: event or processing time.
    pub time: Option<Time>,
    /// `table`: also emit left records without a table row.
    pub outer: Option<bool>,
    /// How long after the watermark records may still arrive.
    #[serde(default)]
    pub allowed_lateness_ms: i64,
    /// What happens to late records.
    #[serde(default)]
    pub late: Late,
}

#[derive(Debug, Clone, Copy)]
enum Join {
    Regular,
    Interval { lower: i64, upper: i64 },
    Window { size: i64, slide: i64, semi: bool },
    Table { event_time: bool, outer: bool },
}

/// The operator.
#[derive(Debug)]
pub struct JoinOp {
    join: Join,
    lateness: i64,
    late: Late,
    inputs: [String; 2],
    /// Late records per input, and how many of them were logged.
    late_count: [u64; 2],
    late_logged: u64,
    last_late_log: i64,
}

impl Config {
    fn join(&self) -> Result<Join, String> {
        let only = |field: &str, set: bool, kind: &str| if set { Err(format!("`{field}` is a setting of kind = \"{kind}\" joins")) } else { Ok(()) };
        let not_window = |c: &Config| {
            only("size-ms", c.size_ms.is_some(), "window")?;
            only("slide-ms", c.slide_ms.is_some(), "window")?;
            only("semi", c.semi.is_some(), "window")
        };
        let not_interval = |c: &Config| {
            only("lower-ms", c.lower_ms.is_some(), "interval")?;
            only("upper-ms", c.upper_ms.is_some(), "interval")
        };
        let not_table = |c: &Config| {
            only("time", c.time.is_some(), "table")?;
            only("outer", c.outer.is_some(), "table")
        };
        if self.allowed_lateness_ms < 0 {
            return Err("`allowed-lateness-ms` must be 0 or more".into());
        }
        match self.kind {
            Kind::Regular => {
                not_window(self)?;
                not_table(self)?;
                not_interval(self)?;
                if self.allowed_lateness_ms != 0 {
                    return Err("`allowed-lateness-ms` has no meaning in a regular join: nothing expires, so no record is late".into());
                }
                Ok(Join::Regular)
            }
            Kind::Interval => {
                not_window(self)?;
                not_table(self)?;
                let (Some(lower), Some(upper)) = (self.lower_ms, self.upper_ms) else {
                    return Err("an interval join needs `lower-ms` and `upper-ms` (right time - left time, e.g. lower-ms = 0, upper-ms = 60000)".into());
                };
                if lower > upper {
                    return Err(format!("`lower-ms` ({lower}) is after `upper-ms` ({upper}): no record could ever join"));
                }
                Ok(Join::Interval { lower, upper })
            }
            Kind::Window => {
                not_interval(self)?;
                not_table(self)?;
                let size = self.size_ms.ok_or("a window join needs `size-ms` (and `slide-ms` for sliding windows)")?;
                let slide = self.slide_ms.unwrap_or(size);
                if size <= 0 || slide <= 0 {
                    return Err("`size-ms` and `slide-ms` must be positive numbers of milliseconds".into());
                }
                if slide > size {
                    return Err(format!("`slide-ms` ({slide}) is longer than `size-ms` ({size}): records between windows would join nothing"));
                }
                Ok(Join::Window { size, slide, semi: self.semi.unwrap_or(false) })
            }
            Kind::Table => {
                not_interval(self)?;
                not_window(self)?;
                Ok(Join::Table { event_time: self.time.unwrap_or_default() == Time::Event, outer: self.outer.unwrap_or(false) })
            }
        }
    }
}

impl Operator for JoinOp {
    type Config = Config;
    const PREFETCH: &'static [&'static str] = &[CURRENT];

    fn open(config: Config, ctx: &OpenContext) -> Result<Self, Error> {
        let join = config.join().map_err(Error::msg)?;
        let [left, right] = <[String; 2]>::try_from(ctx.inputs.clone()).map_err(|inputs| {
            Error::msg(format!(
                "a join has two inputs, the left and the right side (inputs = [\"orders\", \"payments\"]); {} has {}: {inputs:?}",
                ctx.operator,
                inputs.len()
            ))
        })?;
        Ok(JoinOp {
            join,
            lateness: config.allowed_lateness_ms,
            late: config.late,
            inputs: [left, right],
            late_count: [0; 2],
            late_logged: 0,
            last_late_log: i64::MIN,
        })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let side = ctx.input().min(1);
        let key = record.key.ok_or_else(|| {
            Error::msg(format!("a join matches records by key, and this record of input `{}` has none: set `key` upstream", self.inputs[side]))
        })?;
        let ts = record.timestamp;
        match self.join {
            Join::Table { event_time: false, outer } => {
                if side == 1 {
                    if record.value.is_empty() {
                        ctx.delete(CURRENT, key);
                    } else {
                        ctx.put_bytes(CURRENT, key, record.value);
                    }
                    return Ok(());
                }
                let row = ctx.get_bytes(CURRENT, key)?;
                if row.is_some() || outer {
                    let row = row.map(<[u8]>::to_vec);
                    emit_pair(out, key, ts, None, record.value, row.as_deref());
                }
                return Ok(());
            }
            // Nothing expires: every record is on time.
            Join::Regular => pair_up(side, key, ts, record.value, (i64::MIN, i64::MAX), out, ctx)?,
            _ if self.is_late(ts, ctx) => return self.on_late(side, &record, out, ctx),
            Join::Interval { lower, upper } => {
                // The other side's times this record joins with.
                let (lo, hi) = if side == 0 { (ts.saturating_add(lower), ts.saturating_add(upper)) } else { (ts.saturating_sub(upper), ts.saturating_sub(lower)) };
                pair_up(side, key, ts, record.value, (lo, hi), out, ctx)?;
                // Once no on-time record of the other side can match, it goes.
                let last_match = if side == 0 { ts.saturating_add(upper) } else { ts.saturating_sub(lower) };
                ctx.register_timer(TimeDomain::EventTime, key, self.expiry(last_match));
            }
            Join::Window { size, slide, semi } => {
                // A semi join only needs to know that a right record came.
                let value = if semi && side == 1 { &b""[..] } else { record.value };
                add(ctx, if side == 0 { LEFT } else { RIGHT }, key, ts, value)?;
                let mut start = ts.div_euclid(slide) * slide;
                while start.saturating_add(size) > ts {
                    ctx.register_timer(TimeDomain::EventTime, key, self.expiry(start.saturating_add(size) - 1));
                    start -= slide;
                }
            }
            Join::Table { .. } => {
                if side == 1 {
                    // One version per time: a later update at the same time wins.
                    ctx.map_put(VERSIONS, key, &time_key(ts), &version(record.value));
                } else {
                    add(ctx, LEFT, key, ts, record.value)?;
                }
                ctx.register_timer(TimeDomain::EventTime, key, self.expiry(ts));
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        let key = &timer.key;
        // Records at or before `done` are complete: every on-time record
        // that could join them has arrived.
        let done = timer.timestamp - 1 - self.lateness;
        match self.join {
            // No timers.
            Join::Regular => {}
            Join::Interval { lower, upper } => {
                retire(ctx, LEFT, key, |t| t.saturating_add(upper) <= done)?;
                retire(ctx, RIGHT, key, |t| t.saturating_sub(lower) <= done)?;
            }
            Join::Window { size, slide, semi } => {
                let end = done + 1;
                let start = end - size;
                let lefts = in_range(ctx, LEFT, key, start, end)?;
                if !lefts.is_empty() {
                    let rights = in_range(ctx, RIGHT, key, start, end)?;
                    for (l, ln) in &lefts {
                        if semi {
                            if !rights.is_empty() {
                                for _ in 0..*ln {
                                    emit_semi(out, key, end, l);
                                }
                            }
                            continue;
                        }
                        for (r, rn) in &rights {
                            for _ in 0..ln * rn {
                                emit_pair(out, key, end - 1, Some(end), l, Some(r));
                            }
                        }
                    }
                }
                // A record's last window ends at its last slide plus size.
                let last_end = |t: i64| t.div_euclid(slide) * slide + size;
                retire(ctx, LEFT, key, |t| last_end(t) <= end)?;
                retire(ctx, RIGHT, key, |t| last_end(t) <= end)?;
            }
            Join::Table { outer, .. } => {
                let versions = ctx.map_entries(VERSIONS, key)?;
                let mut emitted = Vec::new();
                for (field, count) in ctx.map_entries(LEFT, key)? {
                    let t = time_of(&field)?;
                    if t > done {
                        break;
                    }
                    // The version valid at `t`: the last one at or before it.
                    let at = versions.partition_point(|(v, _)| time_of(v).is_ok_and(|vt| vt <= t));
                    let row = match at.checked_sub(1).map(|i| &versions[i].1) {
                        Some(v) if v.first() == Some(&1) => Some(&v[1..]),
                        _ => None,
                    };
                    if row.is_some() || outer {
                        for _ in 0..count_of(&count)? {
                            emit_pair(out, key, t, None, &field[8..], row);
                        }
                    }
                    emitted.push(field);
                }
                for field in emitted {
                    ctx.map_remove(LEFT, key, &field);
                }
                // Later left records are after `done`: of the versions up
                // to it they only need the last, and only if it is a row.
                let old = versions.partition_point(|(v, _)| time_of(v).is_ok_and(|vt| vt <= done));
                for (i, (field, value)) in versions[..old].iter().enumerate() {
                    if i + 1 < old || value.first() != Some(&1) {
                        ctx.map_remove(VERSIONS, key, field);
                    }
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, _out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        self.log_late(ctx, true);
        Ok(())
    }
}

impl JoinOp {
    /// A record is late when it is older than the watermark minus the
    /// allowed lateness: what it would join with may be gone.
    fn is_late(&self, ts: i64, ctx: &mut Context) -> bool {
        let watermark = ctx.watermark();
        watermark != i64::MIN && ts < watermark.saturating_sub(self.lateness)
    }

    /// The timer time after which nothing on time can join a record whose
    /// last possible partner is at `last_match`.
    fn expiry(&self, last_match: i64) -> i64 {
        last_match.saturating_add(self.lateness).saturating_add(1)
    }

    fn on_late(&mut self, side: usize, record: &Record<'_>, out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
        self.late_count[side] += 1;
        if self.late == Late::Emit {
            let mut headers: Vec<(&[u8], &[u8])> = record.headers().filter_map(Result::ok).collect();
            headers.push((LATE_HEADER.as_bytes(), self.inputs[side].as_bytes()));
            out.emit_with_headers(record.key, record.value, record.timestamp, &headers);
        }
        self.log_late(ctx, false);
        Ok(())
    }

    /// Reports late records: at most every [`LATE_LOG_EVERY_MS`], and at the end.
    fn log_late(&mut self, ctx: &mut Context, end: bool) {
        let total = self.late_count[0] + self.late_count[1];
        let now = ctx.processing_time();
        if total == self.late_logged || (!end && now.saturating_sub(self.last_late_log) < LATE_LOG_EVERY_MS) {
            return;
        }
        self.late_logged = total;
        self.last_late_log = now;
        let what = match self.late {
            Late::Log => "not joined",
            Late::Emit => "not joined, emitted unchanged with header weir-late",
        };
        ctx.log(
            LogLevel::Warn,
            &format!(
                "{total} late records so far ({} from `{}`, {} from `{}`), older than the watermark minus allowed-lateness-ms = {}: {what}; raise allowed-lateness-ms (or the source's watermark delay) to join them",
                self.late_count[0], self.inputs[0], self.late_count[1], self.inputs[1], self.lateness
            ),
        );
    }

    /// Late records seen by this instance, per input.
    pub fn late_records(&self) -> [u64; 2] {
        self.late_count
    }
}

/// A time as a map key that sorts like the number.
fn time_key(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time at the start of a map key.
fn time_of(field: &[u8]) -> Result<i64, Error> {
    let b: [u8; 8] = field.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::msg("corrupt join state: an entry without its time"))?;
    Ok((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

fn count_of(bytes: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(bytes).map(u64::from_le_bytes).map_err(|_| Error::msg("corrupt join state: a count that is not 8 bytes"))
}

/// A table version: 1 and the row, or 0 for a delete.
fn version(value: &[u8]) -> Vec<u8> {
    if value.is_empty() {
        return vec![0];
    }
    let mut v = Vec::with_capacity(value.len() + 1);
    v.push(1);
    v.extend_from_slice(value);
    v
}

/// Stores a record of one side: (time, value) -> how many times it came.
fn add(ctx: &mut Context, side: &str, key: &[u8], ts: i64, value: &[u8]) -> Result<(), Error> {
    let mut field = Vec::with_capacity(8 + value.len());
    field.extend_from_slice(&time_key(ts));
    field.extend_from_slice(value);
    let count = match ctx.map_get(side, key, &field)? {
        Some(b) => count_of(&b)?,
        None => 0,
    };
    ctx.map_put(side, key, &field, &(count + 1).to_le_bytes());
    Ok(())
}

/// Stores a record of `side` and emits its pairs with the other side's
/// records at times in `[lo, hi]`, at the later of the two times.
fn pair_up(side: usize, key: &[u8], ts: i64, value: &[u8], (lo, hi): (i64, i64), out: &mut Output, ctx: &mut Context) -> Result<(), Error> {
    let (mine, theirs) = if side == 0 { (LEFT, RIGHT) } else { (RIGHT, LEFT) };
    add(ctx, mine, key, ts, value)?;
    for (field, count) in ctx.map_entries(theirs, key)? {
        let t = time_of(&field)?;
        if t < lo {
            continue;
        }
        if t > hi {
            break;
        }
        let (l, r) = if side == 0 { (value, &field[8..]) } else { (&field[8..], value) };
        for _ in 0..count_of(&count)? {
            emit_pair(out, key, ts.max(t), None, l, Some(r));
        }
    }
    Ok(())
}

/// The values (with their counts) of one side in `[start, end)`.
fn in_range(ctx: &mut Context, side: &str, key: &[u8], start: i64, end: i64) -> Result<Vec<(Vec<u8>, u64)>, Error> {
    let mut out = Vec::new();
    for (field, count) in ctx.map_entries(side, key)? {
        let t = time_of(&field)?;
        if t >= end {
            break;
        }
        if t >= start {
            out.push((field[8..].to_vec(), count_of(&count)?));
        }
    }
    Ok(out)
}

/// Removes the records of one side that `gone` says can join nothing more.
fn retire(ctx: &mut Context, side: &str, key: &[u8], gone: impl Fn(i64) -> bool) -> Result<(), Error> {
    let mut old = Vec::new();
    for (field, _) in ctx.map_entries(side, key)? {
        if gone(time_of(&field)?) {
            old.push(field);
        }
    }
    for field in old {
        ctx.map_remove(side, key, &field);
    }
    Ok(())
}

fn emit_pair(out: &mut Output, key: &[u8], ts: i64, window_end: Option<i64>, left: &[u8], right: Option<&[u8]>) {
    out.emit_with(Some(key), ts, |v| {
        v.push(b'{');
        if let Some(end) = window_end {
            v.extend_from_slice(format!("\"window_end\":{end},").as_bytes());
        }
        v.extend_from_slice(b"\"left\":");
        json_value(v, left);
        v.extend_from_slice(b",\"right\":");
        match right {
            Some(r) => json_value(v, r),
            None => v.extend_from_slice(b"null"),
        }
        v.push(b'}');
    });
}

/// A semi join's output: the left record and its window.
fn emit_semi(out: &mut Output, key: &[u8], window_end: i64, left: &[u8]) {
    out.emit_with(Some(key), window_end - 1, |v| {
        v.extend_from_slice(format!("{{\"window_end\":{window_end},\"left\":").as_bytes());
        json_value(v, left);
        v.push(b'}');
    });
}

/// A value as JSON: itself when it is JSON, else a JSON string of it.
fn json_value(out: &mut Vec<u8>, value: &[u8]) {
    if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() {
        out.extend_from_slice(value);
    } else {
        serde_json::to_writer(out, &String::from_utf8_lossy(value)).expect("writing to a Vec cannot fail");
    }
}

weir_sdk::export_operator!(JoinOp);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, OwnedRecord};

    fn rec(key: &str, ts: i64, value: &str) -> OwnedRecord {
        OwnedRecord { key: Some(key.as_bytes().to_vec()), value: value.as_bytes().to_vec(), timestamp: ts, headers: vec![] }
    }

    fn open(config: &str) -> Harness<JoinOp> {
        Harness::open_with_inputs(config, 0, 1, &["l", "r"]).unwrap()
    }

    fn texts(out: &[OwnedRecord]) -> Vec<String> {
        let mut t: Vec<String> = out.iter().map(|r| format!("{}@{}", r.text(), r.timestamp)).collect();
        t.sort();
        t
    }

    #[test]
    fn interval_join_pairs_records_whose_times_are_within_the_bounds() {
        let mut h = open(r#"{"kind": "interval", "lower-ms": -5, "upper-ms": 10}"#);
        assert!(h.process_input(0, &[rec("a", 100, "1"), rec("b", 100, "2")]).unwrap().is_empty());
        let out = h.process_input(1, &[rec("a", 94, "x"), rec("a", 95, "y"), rec("a", 110, "z"), rec("a", 111, "w"), rec("c", 100, "v")]).unwrap();
        assert_eq!(texts(&out), [r#"{"left":1,"right":"y"}@100"#, r#"{"left":1,"right":"z"}@110"#]);
        // A later left record finds the right records still held.
        let out = h.process_input(0, &[rec("a", 101, "3")]).unwrap();
        assert_eq!(texts(&out), [r#"{"left":3,"right":"w"}@111"#, r#"{"left":3,"right":"z"}@110"#]);
    }

    #[test]
    fn interval_join_state_is_gone_once_the_watermark_passes() {
        let mut h = open(r#"{"kind": "interval", "lower-ms": 0, "upper-ms": 10}"#);
        h.process_input(0, &[rec("a", 100, "1")]).unwrap();
        h.process_input(1, &[rec("a", 105, "2")]).unwrap();
        h.advance(TimeDomain::EventTime, 200).unwrap();
        let st = h.host().state.borrow();
        assert!(st.maps.values().all(|m| m.is_empty()), "{:?}", st.maps);
        assert!(st.timers.is_empty());
    }

    #[test]
    fn duplicates_join_as_often_as_they_came() {
        let mut h = open(r#"{"kind": "interval", "lower-ms": 0, "upper-ms": 0}"#);
        h.process_input(0, &[rec("a", 1, "1"), rec("a", 1, "1")]).unwrap();
        let out = h.process_input(1, &[rec("a", 1, "2")]).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn regular_join_pairs_every_record_of_a_key_whenever_it_comes() {
        let mut h = open(r#"{"kind": "regular"}"#);
        // The left record waits for its partner, however old either is.
        assert!(h.process_input(0, &[rec("a", 100, "1")]).unwrap().is_empty());
        h.advance(TimeDomain::EventTime, 1_000_000).unwrap();
        let out = h.process_input(1, &[rec("a", 5, "x"), rec("b", 5, "y")]).unwrap();
        assert_eq!(texts(&out), [r#"{"left":1,"right":"x"}@100"#]);
        let out = h.process_input(0, &[rec("a", 7, "2"), rec("b", 2_000_000, "3")]).unwrap();
        assert_eq!(texts(&out), [r#"{"left":2,"right":"x"}@7"#, r#"{"left":3,"right":"y"}@2000000"#]);
        assert_eq!(h.operator().late_records(), [0, 0]);
        assert!(h.host().state.borrow().timers.is_empty());
    }

    #[test]
    fn semi_window_join_emits_each_left_record_with_a_partner_once() {
        let mut h = open(r#"{"kind": "window", "size-ms": 10, "semi": true}"#);
        h.process_input(0, &[rec("a", 1, "1"), rec("b", 2, "2"), rec("a", 12, "3")]).unwrap();
        h.process_input(1, &[rec("a", 3, "x"), rec("a", 4, "y"), rec("b", 15, "z"), rec("a", 15, "w")]).unwrap();
        let out = h.advance(TimeDomain::EventTime, 1000).unwrap();
        assert_eq!(texts(&out), [r#"{"window_end":10,"left":1}@9"#, r#"{"window_end":20,"left":3}@19"#]);
        assert!(h.host().state.borrow().maps.values().all(|m| m.is_empty()));
    }

    #[test]
    fn late_records_are_counted_logged_and_emitted_on_request() {
        let mut h = open(r#"{"kind": "interval", "lower-ms": 0, "upper-ms": 10, "allowed-lateness-ms": 5, "late": "emit"}"#);
        h.advance(TimeDomain::EventTime, 100).unwrap();
        // 95 is on time (100 - 5); 94 is late.
        assert!(h.process_input(0, &[rec("a", 95, "1")]).unwrap().is_empty());
        let out = h.process_input(1, &[rec("a", 94, "2")]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].headers, [(LATE_HEADER.as_bytes().to_vec(), b"r".to_vec())]);
        assert_eq!(h.operator().late_records(), [0, 1]);
        h.close().unwrap();
        let logs = &h.host().state.borrow().logs;
        assert!(logs.iter().any(|(l, m)| *l == LogLevel::Warn && m.contains("1 late records") && m.contains("1 from `r`")), "{logs:?}");
    }

    #[test]
    fn tumbling_and_sliding_window_joins_pair_each_window() {
        let mut h = open(r#"{"kind": "window", "size-ms": 10}"#);
        h.process_input(0, &[rec("a", 1, "1"), rec("a", 12, "2")]).unwrap();
        h.process_input(1, &[rec("a", 9, "x"), rec("a", 10, "y")]).unwrap();
        let out = h.advance(TimeDomain::EventTime, 1000).unwrap();
        assert_eq!(texts(&out), [r#"{"window_end":10,"left":1,"right":"x"}@9"#, r#"{"window_end":20,"left":2,"right":"y"}@19"#]);

        let mut h = open(r#"{"kind": "window", "size-ms": 10, "slide-ms": 5}"#);
        h.process_input(0, &[rec("a", 7, "1")]).unwrap();
        h.process_input(1, &[rec("a", 9, "x"), rec("a", 12, "y")]).unwrap();
        let out = h.advance(TimeDomain::EventTime, 1000).unwrap();
        // Windows [0,10) and [5,15) hold 7; 9 is in both, 12 only in [5,15).
        assert_eq!(
            texts(&out),
            [
                r#"{"window_end":10,"left":1,"right":"x"}@9"#,
                r#"{"window_end":15,"left":1,"right":"x"}@14"#,
                r#"{"window_end":15,"left":1,"right":"y"}@14"#
            ]
        );
        assert!(h.host().state.borrow().maps.values().all(|m| m.is_empty()));
    }

    #[test]
    fn a_window_waits_for_the_allowed_lateness() {
        let mut h = open(r#"{"kind": "window", "size-ms": 10, "allowed-lateness-ms": 5}"#);
        h.process_input(0, &[rec("a", 1, "1")]).unwrap();
        assert!(h.advance(TimeDomain::EventTime, 12).unwrap().is_empty());
        // 8 is on time: 12 - 5 = 7.
        h.process_input(1, &[rec("a", 8, "x")]).unwrap();
        assert_eq!(h.advance(TimeDomain::EventTime, 15).unwrap().len(), 1);
    }

    #[test]
    fn event_time_table_join_uses_the_version_valid_at_the_event() {
        let mut h = open(r#"{"kind": "table"}"#);
        h.process_input(1, &[rec("a", 10, "v1"), rec("a", 20, "v2"), rec("a", 30, "")]).unwrap();
        h.process_input(0, &[rec("a", 5, "s0"), rec("a", 10, "s1"), rec("a", 25, "s2"), rec("a", 35, "s3")]).unwrap();
        let out = h.advance(TimeDomain::EventTime, 1000).unwrap();
        assert_eq!(texts(&out), [r#"{"left":"s1","right":"v1"}@10"#, r#"{"left":"s2","right":"v2"}@25"#]);
        assert!(h.host().state.borrow().maps.values().all(|m| m.is_empty()));

        let mut h = open(r#"{"kind": "table", "outer": true}"#);
        h.process_input(1, &[rec("a", 10, "v1")]).unwrap();
        h.process_input(0, &[rec("a", 5, "s0"), rec("a", 15, "s1")]).unwrap();
        let out = h.advance(TimeDomain::EventTime, 12).unwrap();
        assert_eq!(texts(&out), [r#"{"left":"s0","right":null}@5"#]);
        // Version 10 is still needed by later records; a newer one joins them.
        h.process_input(1, &[rec("a", 14, "v2")]).unwrap();
        let out = h.advance(TimeDomain::EventTime, 1000).unwrap();
        assert_eq!(texts(&out), [r#"{"left":"s1","right":"v2"}@15"#]);
    }

    #[test]
    fn processing_time_table_join_uses_the_table_as_it_is() {
        let mut h = open(r#"{"kind": "table", "time": "processing", "outer": true}"#);
        h.process_input(1, &[rec("a", 0, "{\"n\":1}")]).unwrap();
        let out = h.process_input(0, &[rec("a", 0, "s"), rec("b", 0, "t")]).unwrap();
        assert_eq!(texts(&out), [r#"{"left":"s","right":{"n":1}}@0"#, r#"{"left":"t","right":null}@0"#]);
        h.process_input(1, &[rec("a", 0, "")]).unwrap();
        let out = h.process_input(0, &[rec("a", 0, "s")]).unwrap();
        assert_eq!(texts(&out), [r#"{"left":"s","right":null}@0"#]);
    }

    #[test]
    fn config_and_inputs_are_checked() {
        let err = |config: &str| Harness::<JoinOp>::open_with_inputs(config, 0, 1, &["l", "r"]).unwrap_err();
        assert!(err(r#"{"kind": "interval", "upper-ms": 1}"#).contains("needs `lower-ms` and `upper-ms`"));
        assert!(err(r#"{"kind": "interval", "lower-ms": 2, "upper-ms": 1}"#).contains("is after"));
        assert!(err(r#"{"kind": "window", "size-ms": 10, "slide-ms": 20}"#).contains("longer than"));
        assert!(err(r#"{"kind": "window", "size-ms": 10, "outer": true}"#).contains("`outer` is a setting of kind = \"table\""));
        assert!(err(r#"{"kind": "interval", "lower-ms": 0, "upper-ms": 1, "semi": true}"#).contains("`semi` is a setting of kind = \"window\""));
        assert!(err(r#"{"kind": "regular", "allowed-lateness-ms": 5}"#).contains("no meaning in a regular join"));
        let one = Harness::<JoinOp>::open_with_inputs(r#"{"kind": "table"}"#, 0, 1, &["only"]).unwrap_err();
        assert!(one.contains("a join has two inputs"), "{one}");
    }
}
