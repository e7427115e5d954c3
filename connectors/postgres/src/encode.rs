//! Records to rows of PostgreSQL's binary `COPY` format.
//!
//! A record's JSON value is scanned once with `json-scan` (the validating,
//! allocation-free scanner the `json-filter` plugin uses: no tree is built,
//! only where the mapped top-level fields are is remembered); each field is
//! then written in the binary representation of its column's type, checked
//! the way PostgreSQL would check it (`smallint` range, UUID syntax, ...). A
//! record that does not fit is not sent: its error names the column and the
//! field, and the record goes to the dead-letter table like a row the
//! database rejected.

use crate::schema::{Column, PgType, Source};
use json_scan::{Fields, Kind};
use weir_connector::RecordRef;

/// The binary COPY header: signature, flags, header extension length.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY trailer: a field count of -1.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400 * 1_000_000;

/// Turns records into binary COPY tuples for a fixed list of columns.
#[derive(Debug, Clone)]
pub struct Encoder {
    columns: Vec<Column>,
    /// The JSON fields the columns read, and for each column its index here.
    fields: Fields,
    field_of: Vec<Option<usize>>,
    /// Append the record's position as a last `int8` field (upsert staging).
    with_sequence: bool,
    /// Decoded strings with escapes.
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder for `columns`; `with_sequence` appends the record's
    /// position as a last `int8` field.
    pub fn new(columns: Vec<Column>, with_sequence: bool) -> Self {
        let mut fields = Fields::new();
        let field_of = columns
            .iter()
            .map(|c| match &c.source {
                Source::Field(f) => Some(fields.add(f)),
                _ => None,
            })
            .collect();
        Self { columns, fields, field_of, with_sequence, scratch: Vec::new() }
    }

    /// The columns, in COPY order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Appends the tuple of `rec` to `out`. On error `out` is left as it
    /// was and the message names the column.
    pub fn encode(&mut self, rec: &RecordRef<'_>, checkpoint: u64, position: u64, out: &mut Vec<u8>) -> Result<(), String> {
        let start = out.len();
        let r = self.encode_inner(rec, checkpoint, position, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn encode_inner(&mut self, rec: &RecordRef<'_>, checkpoint: u64, position: u64, out: &mut Vec<u8>) -> Result<(), String> {
        let n = self.columns.len() + usize::from(self.with_sequence);
        out.extend_from_slice(&(n as i16).to_be_bytes());
        let Encoder { columns, fields, field_of, with_sequence, scratch } = self;
        let has_fields = field_of.iter().any(Option::is_some);
        let object = if has_fields {
            Some(fields.scan(rec.value).map_err(|e| format!("the record's value is not a JSON object: {e}"))?)
        } else {
            None
        };
        for (i, column) in columns.iter().enumerate() {
            let value = match &column.source {
                Source::Field(_) => match field_of[i].and_then(|f| object.as_ref().and_then(|o| o.get(f))) {
                    None => Value::Null,
                    Some(v) if v.kind() == Kind::Null => Value::Null,
                    Some(v) => Value::Json(v),
                },
                Source::Key => rec.key.map_or(Value::Null, Value::Bytes),
                Source::Value => Value::Bytes(rec.value),
                Source::Timestamp => Value::Millis(rec.timestamp),
                Source::Checkpoint => Value::Int(checkpoint as i64),
            };
            if let Value::Null = value {
                if column.not_null {
                    return Err(format!("column {:?}: {} is missing or null, and the column is NOT NULL", column.name, column.source));
                }
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            write_value(column.ty, value, scratch, out)
                .map_err(|e| format!("column {:?} ({}) from {}: {e}", column.name, column.type_name, column.source))?;
            let len = (out.len() - len_at - 4) as i32;
            out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        }
        if *with_sequence {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&(position as i64).to_be_bytes());
        }
        Ok(())
    }
}

/// Where a column's value came from, before conversion.
enum Value<'a> {
    Null,
    Json(json_scan::Value<'a>),
    Bytes(&'a [u8]),
    Millis(i64),
    Int(i64),
}

fn shorten(t: &[u8]) -> String {
    let t = String::from_utf8_lossy(t);
    if t.len() <= 40 {
        return t.into_owned();
    }
    let mut end = 40;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &t[..end])
}

/// A JSON string's decoded text (`None` for other kinds).
fn json_text<'s>(v: &json_scan::Value<'s>, scratch: &'s mut Vec<u8>) -> Option<&'s str> {
    v.str_bytes(scratch).and_then(|b| std::str::from_utf8(b).ok())
}

fn json_i64(v: &json_scan::Value<'_>) -> Result<i64, String> {
    if let Some(n) = v.as_i64() {
        return Ok(n);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        _ => Err(format!("expected an integer, found {}", shorten(v.raw()))),
    }
}

fn write_value(ty: PgType, value: Value<'_>, scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
    match (ty, value) {
        (_, Value::Null) => unreachable!("nulls are written by the caller"),
        (PgType::Int2 | PgType::Int4 | PgType::Int8, v) => {
            let n = match v {
                Value::Json(j) => json_i64(&j)?,
                Value::Millis(n) | Value::Int(n) => n,
                Value::Bytes(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| "expected an integer".to_owned())?,
                Value::Null => unreachable!(),
            };
            match ty {
                PgType::Int2 => out.extend_from_slice(&i16::try_from(n).map_err(|_| format!("{n} is out of range for smallint"))?.to_be_bytes()),
                PgType::Int4 => out.extend_from_slice(&i32::try_from(n).map_err(|_| format!("{n} is out of range for integer"))?.to_be_bytes()),
                _ => out.extend_from_slice(&n.to_be_bytes()),
            }
        }
        (PgType::Float4 | PgType::Float8, v) => {
            let f = match v {
                Value::Json(j) => j.as_f64().ok_or_else(|| format!("expected a number, found {}", shorten(j.raw())))?,
                Value::Millis(n) | Value::Int(n) => n as f64,
                _ => return Err("expected a number".into()),
            };
            if ty == PgType::Float4 {
                out.extend_from_slice(&(f as f32).to_be_bytes());
            } else {
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
        (PgType::Bool, Value::Json(j)) => match j.as_bool() {
            Some(b) => out.push(u8::from(b)),
            None => return Err(format!("expected true or false, found {}", shorten(j.raw()))),
        },
        (PgType::Text | PgType::Bytea, v) => match v {
            Value::Json(j) => match j.kind() {
                Kind::String => out.extend_from_slice(j.str_bytes(scratch).unwrap_or_default()),
                _ => out.extend_from_slice(j.raw()),
            },
            Value::Bytes(b) if ty == PgType::Bytea => out.extend_from_slice(b),
            Value::Bytes(b) => out.extend_from_slice(std::str::from_utf8(b).map_err(|e| format!("not UTF-8 text: {e}"))?.as_bytes()),
            Value::Millis(n) | Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Value::Null => unreachable!(),
        },
        (PgType::Json | PgType::Jsonb, v) => {
            if ty == PgType::Jsonb {
                out.push(1);
            }
            match v {
                Value::Json(j) => out.extend_from_slice(j.raw()),
                Value::Bytes(b) => {
                    let s = std::str::from_utf8(b).map_err(|e| format!("not UTF-8 text: {e}"))?;
                    serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|e| format!("not JSON: {e}"))?;
                    out.extend_from_slice(s.as_bytes());
                }
                Value::Millis(n) | Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
                Value::Null => unreachable!(),
            }
        }
        (PgType::Uuid, v) => {
            let text = match &v {
                Value::Json(j) => json_text(j, scratch).ok_or_else(|| format!("expected a UUID string, found {}", shorten(j.raw())))?,
                Value::Bytes(b) => std::str::from_utf8(b).map_err(|_| "expected a UUID string".to_owned())?,
                _ => return Err("expected a UUID string".into()),
            };
            out.extend_from_slice(&parse_uuid(text).ok_or_else(|| format!("{} is not a UUID", shorten(text.as_bytes())))?);
        }
        (PgType::Timestamp | PgType::Timestamptz, v) => {
            let micros = match v {
                Value::Millis(ms) => ms.checked_mul(1000).ok_or("timestamp out of range")?,
                Value::Int(n) => n.checked_mul(1000).ok_or("timestamp out of range")?,
                Value::Json(j) if j.kind() == Kind::String => {
                    rfc3339_micros(json_text(&j, scratch).ok_or("expected an RFC 3339 string")?)?
                }
                Value::Json(j) => json_i64(&j)
                    .map_err(|_| format!("expected milliseconds since 1970 or an RFC 3339 string, found {}", shorten(j.raw())))?
                    .checked_mul(1000)
                    .ok_or("timestamp out of range")?,
                Value::Bytes(_) | Value::Null => return Err("expected a timestamp".into()),
            };
            out.extend_from_slice(&(micros - PG_EPOCH_MICROS).to_be_bytes());
        }
        (PgType::Date, Value::Json(j)) => {
            let s = json_text(&j, scratch).ok_or_else(|| format!("expected a \"YYYY-MM-DD\" string, found {}", shorten(j.raw())))?;
            let days = parse_date(s).ok_or_else(|| format!("{} is not a \"YYYY-MM-DD\" date", shorten(s.as_bytes())))?;
            out.extend_from_slice(&((days - PG_EPOCH_DAYS) as i32).to_be_bytes());
        }
        (PgType::Numeric, v) => {
            let owned;
            let text = match &v {
                Value::Json(j) if j.kind() == Kind::String => json_text(j, scratch).ok_or("expected a number")?,
                Value::Json(j) if j.kind() == Kind::Number => std::str::from_utf8(j.raw()).map_err(|_| "expected a number")?,
                Value::Millis(n) | Value::Int(n) => {
                    owned = n.to_string();
                    &owned
                }
                _ => return Err("expected a number".into()),
            };
            write_numeric(text, out).ok_or_else(|| format!("{} is not a decimal number", shorten(text.as_bytes())))?;
        }
        (_, _) => return Err("this source cannot fill a column of this type".into()),
    }
    Ok(())
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    let dashes = s.len() - hex.len();
    if hex.len() != 32 || !(dashes == 0 || (dashes == 4 && s.len() == 36)) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

fn rfc3339_micros(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("{} is not an RFC 3339 timestamp ({e})", shorten(s.as_bytes())))?;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Ok(d.as_micros() as i64),
        Err(e) => Ok(-(e.duration().as_micros() as i64)),
    }
}

/// Writes a decimal string (`-12.340`, `1e3`) as a binary `numeric`.
fn write_numeric(text: &str, out: &mut Vec<u8>) -> Option<()> {
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, and the position of the decimal point after applying the exponent.
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let point = int.len() as i64 + i64::from(exp);
    let dscale = (digits.len() as i64 - point).max(0);
    if !(-1000..=1000).contains(&point) || dscale > 1000 {
        return None;
    }
    // Pad so that the point falls on a base-10000 group boundary.
    let lead = (4 - point.rem_euclid(4)) % 4;
    let mut padded = vec![0u8; lead as usize];
    padded.extend_from_slice(&digits);
    while !padded.len().is_multiple_of(4) {
        padded.push(0);
    }
    let mut groups: Vec<i16> = padded.chunks(4).map(|c| c.iter().fold(0i16, |a, &d| a * 10 + i16::from(d))).collect();
    let mut weight = (point + lead) / 4 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if negative && !groups.is_empty() { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        write_numeric(s, &mut v).unwrap();
        v
    }

    #[test]
    fn numerics_in_base_10000() {
        // 12.34: 2 groups (12, 3400), weight 0, scale 2
        assert_eq!(numeric("12.34"), [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 13, 72]);
        // 100000: one group 10 at weight 1
        assert_eq!(numeric("100000"), [0, 1, 0, 1, 0, 0, 0, 0, 0, 10]);
        assert_eq!(numeric("-0.5"), [0, 1, 0xff, 0xff, 0x40, 0, 0, 1, 0x13, 0x88]);
        assert_eq!(numeric("0"), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(numeric("1e3"), [0, 1, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        assert!(write_numeric("1.2.3", &mut Vec::new()).is_none());
    }

    #[test]
    fn dates_and_uuids() {
        assert_eq!(parse_date("2000-01-01"), Some(PG_EPOCH_DAYS));
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap()[15], 0xff);
        assert!(parse_uuid("0011").is_none());
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::schema::{Column, PgType, Source};

    /// `cargo test --release -p weir-connector-postgres encode_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn encode_speed() {
        let col = |name: &str, ty| Column { name: name.into(), ty, type_name: String::new(), source: Source::Field(name.into()), not_null: false };
        let mut enc = Encoder::new(vec![col("id", PgType::Int8), col("name", PgType::Text), col("amount", PgType::Int4), col("payload", PgType::Text)], false);
        let mut w = weir_connector::BatchWriter::new();
        for i in 0..1_000_000u64 {
            let v = format!("{{\"id\":{i},\"name\":\"user-{:04}\",\"amount\":{},\"payload\":\"{}\"}}", i % 10000, i % 1000, "x".repeat(40));
            w.push(None, v.as_bytes(), 0, &[]);
        }
        let frames = w.finish();
        let mut out = Vec::with_capacity(100 << 20);
        let t = std::time::Instant::now();
        for rec in weir_connector::Frames::new(&frames) {
            enc.encode(&rec.unwrap(), 0, 0, &mut out).unwrap();
        }
        eprintln!("encode: {:?} per record", t.elapsed() / 1_000_000);
    }
}
