//! # json-scan: the top-level fields of a JSON object, without parsing it
//!
//! weir's JSON operators need a handful of top-level fields of every record
//! (`amount`, `user`, ...) at over a million records per second inside Wasm,
//! where building a `serde_json::Value` costs about a microsecond a record.
//! This crate walks the document once, validates all of it (strict RFC 8259:
//! string escapes, surrogate pairs, UTF-8, number syntax, nesting), and
//! remembers only where the wanted fields' values are. Nothing is allocated
//! per document and nothing is decoded until asked for.
//!
//! ```
//! use json_scan::{Fields, Kind};
//!
//! let mut fields = Fields::new();
//! let amount = fields.add("amount");
//! let user = fields.add("user");
//!
//! let doc = br#"{"id":17,"user":"user-4623","amount":17,"tags":{"a":[1,2]}}"#;
//! let obj = fields.scan(doc).unwrap();
//! assert_eq!(obj.get(amount).unwrap().as_i64(), Some(17));
//! let user = obj.get(user).unwrap();
//! assert_eq!(user.kind(), Kind::String);
//! assert_eq!(user.raw(), br#""user-4623""#);
//!
//! // Anything that is not a well-formed JSON object is an error with its byte offset.
//! let err = fields.scan(br#"{"id":17,}"#).unwrap_err();
//! assert_eq!(err.to_string(), "expected a member name (a string) at byte 9");
//! ```
//!
//! Design notes:
//!
//! - Results are byte ranges into the document ([`Value::raw`] is the value's
//!   JSON text), so a projection copies values verbatim and a comparison with
//!   a plain string is a `memcmp`. Strings with escapes are decoded on the
//!   fly by [`Value::unescaped`], without a buffer.
//! - Member names are matched with their escapes decoded, so `"us\u0065r"`
//!   is the field `user`. When a name occurs twice, the last value wins (as in
//!   `serde_json::Value`).
//! - Nesting is limited to [`MAX_DEPTH`] levels, so a hostile record cannot
//!   overflow the guest's stack.

use std::cmp::Ordering;
use std::fmt;

/// Deepest nesting of objects and arrays accepted (the top-level object is level 1).
pub const MAX_DEPTH: usize = 128;

/// The JSON type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An object.
    Object,
    /// An array.
    Array,
}

impl Kind {
    /// The type with an article, for messages: "a number", "an object".
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Object => "an object",
            Kind::Array => "an array",
        }
    }
}

/// A document that is not a well-formed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the problem in the document.
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for ScanError {}

/// Where a value is in the document; `plain` means "no escapes" for a
/// string and "integer syntax" (no fraction or exponent) for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    kind: Kind,
    start: usize,
    end: usize,
    plain: bool,
}

/// A value found in a document: its type, JSON text and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    kind: Kind,
    raw: &'a [u8],
    offset: usize,
    plain: bool,
}

impl<'a> Value<'a> {
    #[inline]
    fn new(doc: &'a [u8], span: Span) -> Self {
        Value { kind: span.kind, raw: &doc[span.start..span.end], offset: span.start, plain: span.plain }
    }

    /// The value's JSON type.
    #[inline]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The value's JSON text, exactly as in the document (strings with their
    /// quotes and escapes, objects and arrays with their inner whitespace).
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Byte offset of the value in the document.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The boolean, if the value is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match (self.kind, self.raw) {
            (Kind::Bool, b"true") => Some(true),
            (Kind::Bool, _) => Some(false),
            _ => None,
        }
    }

    /// True for a number written without fraction or exponent (`17`, `-3`).
    #[inline]
    pub fn is_integer(&self) -> bool {
        self.kind == Kind::Number && self.plain
    }

    /// The number as an `i64`, if it is written as an integer and fits.
    #[inline]
    pub fn as_i64(&self) -> Option<i64> {
        if self.is_integer() { parse_i64(self.raw) } else { None }
    }

    /// The number as an `f64` (the nearest one; huge exponents give infinity).
    pub fn as_f64(&self) -> Option<f64> {
        if self.kind != Kind::Number {
            return None;
        }
        std::str::from_utf8(self.raw).ok()?.parse().ok()
    }

    /// For a string, its contents between the quotes, escapes not decoded.
    pub fn str_raw(&self) -> Option<&'a [u8]> {
        (self.kind == Kind::String).then(|| &self.raw[1..self.raw.len() - 1])
    }

    /// For a string, its contents if they need no decoding (no escapes).
    pub fn str_plain(&self) -> Option<&'a [u8]> {
        if self.plain { self.str_raw() } else { None }
    }

    /// For a string, its decoded UTF-8 bytes, produced on the fly.
    pub fn unescaped(&self) -> Option<Unescaped<'a>> {
        self.str_raw().map(Unescaped::new)
    }

    /// For a string, its decoded contents: borrowed from the document when it
    /// has no escapes, otherwise decoded into `scratch` (which is cleared).
    pub fn str_bytes<'s>(&self, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        if let Some(plain) = self.str_plain() {
            return Some(plain);
        }
        let unescaped = self.unescaped()?;
        scratch.clear();
        scratch.extend(unescaped);
        Some(scratch)
    }

    /// Compares a string value's decoded contents with `other`, bytewise.
    pub fn str_cmp(&self, other: &[u8]) -> Option<Ordering> {
        match self.str_plain() {
            Some(plain) => Some(plain.cmp(other)),
            None => Some(self.unescaped()?.cmp(other.iter().copied())),
        }
    }
}

#[inline]
fn parse_i64(raw: &[u8]) -> Option<i64> {
    let (negative, digits) = match raw {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, raw),
    };
    // Up to 18 digits cannot overflow: no checked arithmetic (which costs
    // a 128-bit multiply per digit in a Wasm guest).
    if digits.len() <= 18 {
        let n = digits.iter().fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
        return Some(if negative { -n } else { n });
    }
    // Accumulate negatively so that i64::MIN fits.
    let mut acc: i64 = 0;
    for &d in digits {
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative { Some(acc) } else { acc.checked_neg() }
}

/// The decoded UTF-8 bytes of a validated JSON string's contents.
#[derive(Debug, Clone)]
pub struct Unescaped<'a> {
    raw: &'a [u8],
    pos: usize,
    pending: [u8; 4],
    pending_at: u8,
    pending_len: u8,
}

impl<'a> Unescaped<'a> {
    /// Decodes `raw`, the contents of a string the scanner accepted. Invalid
    /// escapes in unvalidated input decode as U+FFFD instead of panicking.
    pub fn new(raw: &'a [u8]) -> Self {
        Unescaped { raw, pos: 0, pending: [0; 4], pending_at: 0, pending_len: 0 }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.raw.get(at..at + 4)?;
        digits.iter().try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
    }

    /// Decodes the `\u` escape at `self.pos` (one code unit, or a surrogate pair).
    fn unicode_escape(&mut self) -> char {
        let Some(unit) = self.hex4(self.pos + 2) else {
            self.pos = self.raw.len();
            return char::REPLACEMENT_CHARACTER;
        };
        self.pos += 6;
        if (0xD800..0xDC00).contains(&unit)
            && self.raw.get(self.pos..self.pos + 2) == Some(b"\\u")
            && let Some(low @ 0xDC00..0xE000) = self.hex4(self.pos + 2)
        {
            self.pos += 6;
            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            return char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        }
        char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

impl Iterator for Unescaped<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        if self.pending_at < self.pending_len {
            self.pending_at += 1;
            return Some(self.pending[usize::from(self.pending_at - 1)]);
        }
        let b = *self.raw.get(self.pos)?;
        if b != b'\\' {
            self.pos += 1;
            return Some(b);
        }
        let simple = match self.raw.get(self.pos + 1) {
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            Some(b'u') => None,
            Some(&other) => Some(other),
            None => {
                self.pos += 1;
                return Some(b'\\');
            }
        };
        if let Some(byte) = simple {
            self.pos += 2;
            return Some(byte);
        }
        let c = self.unicode_escape();
        let len = c.encode_utf8(&mut self.pending).len();
        self.pending_len = len as u8;
        self.pending_at = 1;
        Some(self.pending[0])
    }
}

/// The top-level fields an operator wants, and where the last document
/// scanned had them.
///
/// Add the names once (when the operator opens), then [`Fields::scan`] each
/// record; the returned [`Object`] answers by the index [`Fields::add`] gave.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    names: Vec<String>,
    found: Vec<Option<Span>>,
}

impl Fields {
    /// An empty set of fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (once; adding it again returns the same index).
    pub fn add(&mut self, name: &str) -> usize {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.found.push(None);
        self.names.len() - 1
    }

    /// The name of field `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Validates `doc` as a JSON object (surrounding whitespace allowed) and
    /// finds the wanted fields among its top-level members.
    pub fn scan<'a>(&mut self, doc: &'a [u8]) -> Result<Object<'a, '_>, ScanError> {
        self.found.fill(None);
        let mut c = Cursor { buf: doc, pos: 0 };
        c.ws();
        match c.peek() {
            Some(b'{') => {}
            None => return Err(c.err("empty value where a JSON object was expected")),
            Some(_) => return Err(c.err("expected a JSON object ('{')")),
        }
        let (names, found) = (&self.names, &mut self.found);
        c.object(1, &mut |name: &[u8], plain: bool, span: Span| {
            let hit = if plain {
                names.iter().position(|n| weir_format::json::bytes_eq(n.as_bytes(), name))
            } else {
                names.iter().position(|n| Unescaped::new(name).eq(n.bytes()))
            };
            if let Some(i) = hit {
                found[i] = Some(span);
            }
        })?;
        c.ws();
        if c.pos != doc.len() {
            return Err(c.err("unexpected characters after the JSON object"));
        }
        Ok(Object { doc, found: &self.found })
    }
}

/// The wanted fields of one scanned document.
#[derive(Debug, Clone, Copy)]
pub struct Object<'a, 'f> {
    doc: &'a [u8],
    found: &'f [Option<Span>],
}

impl<'a> Object<'a, '_> {
    /// The value of field `index` (from [`Fields::add`]), if the object has it.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Value<'a>> {
        self.found[index].map(|span| Value::new(self.doc, span))
    }
}

/// Scans one JSON value that starts exactly at byte `at` of `text` (no
/// leading whitespace); returns it and the offset just after it. Used to
/// read literals in configuration, such as the right side of a filter.
pub fn scan_value(text: &[u8], at: usize) -> Result<(Value<'_>, usize), ScanError> {
    let mut c = Cursor { buf: text, pos: at };
    let span = c.value(1)?;
    Ok((Value::new(text, span), c.pos))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline]
    fn err(&self, reason: &'static str) -> ScanError {
        ScanError { offset: self.pos, reason }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// One value at the cursor (`depth` is the nesting level of a container
    /// that starts here).
    ///
    /// Scalars are scanned inline (this is the hot path: most members of a
    /// record are strings and numbers); containers go through the
    /// out-of-line [`Cursor::container`], which is where recursion happens.
    #[inline(always)]
    fn value(&mut self, depth: usize) -> Result<Span, ScanError> {
        let start = self.pos;
        let (kind, plain) = match self.peek() {
            Some(b'"') => (Kind::String, self.string()?),
            Some(b'-' | b'0'..=b'9') => (Kind::Number, self.number()?),
            Some(b'{') => (Kind::Object, self.container(depth)?),
            Some(b'[') => (Kind::Array, self.container(depth)?),
            Some(b't') => (Kind::Bool, self.literal(b"true")?),
            Some(b'f') => (Kind::Bool, self.literal(b"false")?),
            Some(b'n') => (Kind::Null, self.literal(b"null")?),
            None => return Err(self.err("unexpected end of input where a value was expected")),
            Some(_) => return Err(self.err("expected a value (an object, array, string, number, true, false or null)")),
        };
        Ok(Span { kind, start, end: self.pos, plain })
    }

    /// A nested object or array at the cursor, skipped.
    #[inline(never)]
    fn container(&mut self, depth: usize) -> Result<bool, ScanError> {
        if self.peek() == Some(b'{') {
            self.object(depth, &mut |_: &[u8], _: bool, _: Span| {})?;
        } else {
            self.array(depth)?;
        }
        Ok(true)
    }

    /// An object at the cursor; calls `member` with each member's raw name,
    /// whether that name is free of escapes, and the value's span.
    #[inline]
    fn object(&mut self, depth: usize, member: &mut impl FnMut(&[u8], bool, Span)) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.err("objects and arrays nested more than 128 levels deep"));
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a member name (a string)"));
            }
            let name_start = self.pos + 1;
            let plain = self.string()?;
            let name_end = self.pos - 1;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a member name"));
            }
            self.pos += 1;
            self.ws();
            let span = self.value(depth + 1)?;
            member(&self.buf[name_start..name_end], plain, span);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("unexpected end of input inside an object")),
                Some(_) => return Err(self.err("expected ',' or '}' after an object member")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.err("objects and arrays nested more than 128 levels deep"));
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("unexpected end of input inside an array")),
                Some(_) => return Err(self.err("expected ',' or ']' after an array element")),
            }
        }
    }

    /// A string at the cursor (on its opening quote); returns true when it
    /// has no escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, ScanError> {
        let start = self.pos;
        self.pos += 1;
        let mut plain = true;
        let mut ascii = true;
        loop {
            self.pos += weir_format::json::plain_run::<true>(&self.buf[self.pos..]);
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    plain = false;
                    self.escape()?;
                }
                Some(b) if b >= 0x80 => {
                    ascii = false;
                    self.pos += 1;
                }
                Some(_) => return Err(self.err("control character in a string (write it as an escape such as \\n or \\u001f)")),
                None => return Err(ScanError { offset: start, reason: "unterminated string" }),
            }
        }
        if !ascii && let Err(e) = std::str::from_utf8(&self.buf[start + 1..self.pos]) {
            return Err(ScanError { offset: start + 1 + e.valid_up_to(), reason: "invalid UTF-8 in a string" });
        }
        self.pos += 1;
        Ok(plain)
    }

    /// An escape sequence at the cursor (on its backslash).
    fn escape(&mut self) -> Result<(), ScanError> {
        match self.buf.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4()?;
                if (0xDC00..0xE000).contains(&unit) {
                    return Err(self.err("unpaired low surrogate in a \\u escape"));
                }
                if (0xD800..0xDC00).contains(&unit) {
                    let at = self.pos;
                    self.pos += 6;
                    let low = if self.buf.get(self.pos..self.pos + 2) == Some(b"\\u") { self.hex4()? } else { 0 };
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(ScanError { offset: at, reason: "unpaired high surrogate in a \\u escape" });
                    }
                }
                self.pos += 6;
                Ok(())
            }
            _ => Err(self.err("invalid escape (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)")),
        }
    }

    /// The four hex digits of the `\u` escape at the cursor.
    fn hex4(&self) -> Result<u32, ScanError> {
        let digits = self.buf.get(self.pos + 2..self.pos + 6).ok_or_else(|| self.err("truncated \\u escape"))?;
        digits
            .iter()
            .try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
            .ok_or_else(|| self.err("invalid \\u escape (expected four hex digits)"))
    }

    /// A number at the cursor; returns true when it is written as an integer.
    #[inline]
    fn number(&mut self) -> Result<bool, ScanError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("invalid number: leading zeros are not allowed"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number: expected a digit")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits("invalid number: expected a digit after the decimal point")?;
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.required_digits("invalid number: expected a digit in the exponent")?;
            integer = false;
        }
        Ok(integer)
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self, reason: &'static str) -> Result<(), ScanError> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.err(reason));
        }
        self.digits();
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<bool, ScanError> {
        if self.buf.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(self.err("invalid literal (expected true, false or null)"));
        }
        self.pos += word.len();
        Ok(true)
    }
}

/// Appends `s` as a JSON string literal (quoted, with the escapes JSON needs).
pub use weir_format::json::push_str as write_str;

/// Appends `n` in decimal, without going through `fmt`.
pub use weir_format::decimal::push_i64 as write_i64;

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_err(doc: &str) -> ScanError {
        Fields::new().scan(doc.as_bytes()).expect_err(doc)
    }

    #[test]
    fn finds_top_level_fields_only() {
        let mut f = Fields::new();
        let a = f.add("a");
        let b = f.add("b");
        let missing = f.add("missing");
        assert_eq!(f.add("a"), a);
        let doc = br#" { "nested" : {"a": 1, "b": [{"a": 2}]}, "a" : -1.5e3 , "b":"x\"y" } "#;
        let obj = f.scan(doc).unwrap();
        let va = obj.get(a).unwrap();
        assert_eq!((va.kind(), va.raw(), va.is_integer()), (Kind::Number, &b"-1.5e3"[..], false));
        assert_eq!(va.as_f64(), Some(-1500.0));
        assert_eq!(va.as_i64(), None);
        let vb = obj.get(b).unwrap();
        assert_eq!(vb.raw(), br#""x\"y""#);
        assert_eq!(vb.str_plain(), None);
        assert_eq!(vb.unescaped().unwrap().collect::<Vec<_>>(), b"x\"y");
        assert_eq!(&doc[vb.offset()..vb.offset() + 6], vb.raw());
        assert!(obj.get(missing).is_none());
    }

    #[test]
    fn escaped_member_names_match_and_last_duplicate_wins() {
        let mut f = Fields::new();
        let user = f.add("user");
        let obj = f.scan(br#"{"user":1,"us\u0065r":2}"#).unwrap();
        assert_eq!(obj.get(user).unwrap().as_i64(), Some(2));
    }

    #[test]
    fn every_value_kind() {
        let mut f = Fields::new();
        let names = ["n", "t", "f", "s", "o", "a", "i"];
        let idx: Vec<usize> = names.iter().map(|n| f.add(n)).collect();
        let obj = f.scan(br#"{"n":null,"t":true,"f":false,"s":"","o":{},"a":[],"i":0}"#).unwrap();
        let kinds: Vec<Kind> = idx.iter().map(|&i| obj.get(i).unwrap().kind()).collect();
        use Kind::*;
        assert_eq!(kinds, [Null, Bool, Bool, String, Object, Array, Number]);
        assert_eq!(obj.get(idx[1]).unwrap().as_bool(), Some(true));
        assert_eq!(obj.get(idx[2]).unwrap().as_bool(), Some(false));
        assert_eq!(obj.get(idx[6]).unwrap().as_i64(), Some(0));
    }

    #[test]
    fn integers_at_the_limits() {
        let mut f = Fields::new();
        let x = f.add("x");
        let int = |doc: &str, f: &mut Fields| f.scan(doc.as_bytes()).unwrap().get(x).unwrap().as_i64();
        assert_eq!(int(r#"{"x":-9223372036854775808}"#, &mut f), Some(i64::MIN));
        assert_eq!(int(r#"{"x":9223372036854775807}"#, &mut f), Some(i64::MAX));
        assert_eq!(int(r#"{"x":9223372036854775808}"#, &mut f), None);
        assert_eq!(int(r#"{"x":-0}"#, &mut f), Some(0));
        // 18 digits take the unchecked path, 19 the checked one.
        assert_eq!(int(r#"{"x":999999999999999999}"#, &mut f), Some(999_999_999_999_999_999));
        assert_eq!(int(r#"{"x":-999999999999999999}"#, &mut f), Some(-999_999_999_999_999_999));
        assert_eq!(int(r#"{"x":1000000000000000000}"#, &mut f), Some(1_000_000_000_000_000_000));
        assert_eq!(int(r#"{"x":-9223372036854775809}"#, &mut f), None);
        assert_eq!(int(r#"{"x":99999999999999999999}"#, &mut f), None);
    }

    #[test]
    fn unescapes_everything() {
        let mut f = Fields::new();
        let s = f.add("s");
        let doc = r#"{"s":"a\\b\/c\n\t\r\b\f\u00e9\u20ac\ud83d\ude00é"}"#;
        let obj = f.scan(doc.as_bytes()).unwrap();
        let v = obj.get(s).unwrap();
        let mut scratch = Vec::new();
        let decoded = v.str_bytes(&mut scratch).unwrap().to_vec();
        let expected: String = serde_json::from_str::<serde_json::Value>(doc).unwrap()["s"].as_str().unwrap().to_owned();
        assert_eq!(String::from_utf8(decoded).unwrap(), expected);
        assert_eq!(v.str_cmp(expected.as_bytes()), Some(Ordering::Equal));
        assert_eq!(v.str_cmp(b"a"), Some(Ordering::Greater));
    }

    #[test]
    fn rejects_malformed_documents_with_offsets() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty value"),
            ("[1]", 0, "expected a JSON object"),
            ("\"s\"", 0, "expected a JSON object"),
            ("{", 1, "expected a member name"),
            ("{\"a\"", 4, "expected ':'"),
            ("{\"a\":}", 5, "expected a value"),
            ("{\"a\":1,}", 7, "expected a member name"),
            ("{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"),
            ("{\"a\":[1,]}", 8, "expected a value"),
            ("{\"a\":[1 2]}", 8, "expected ',' or ']'"),
            ("{\"a\":\"x}", 5, "unterminated string"),
            ("{\"a\":\"\\x\"}", 6, "invalid escape"),
            ("{\"a\":\"\\u12g4\"}", 6, "invalid \\u escape"),
            ("{\"a\":\"\\ud800\"}", 6, "unpaired high surrogate"),
            ("{\"a\":\"\\udc00\"}", 6, "unpaired low surrogate"),
            ("{\"a\":\"x\ny\"}", 7, "control character"),
            ("{\"a\":01}", 6, "leading zeros"),
            ("{\"a\":1.}", 7, "after the decimal point"),
            ("{\"a\":1e}", 7, "in the exponent"),
            ("{\"a\":-}", 6, "expected a digit"),
            ("{\"a\":+1}", 5, "expected a value"),
            ("{\"a\":tru}", 5, "invalid literal"),
            ("{\"a\":nul", 5, "invalid literal"),
            ("{\"a\":1} x", 8, "unexpected characters after"),
            ("{\"a\":1}{}", 7, "unexpected characters after"),
            ("{\"a\":1", 6, "unexpected end of input inside an object"),
            ("{\"a\":[1", 7, "unexpected end of input inside an array"),
            ("{\"a\":", 5, "unexpected end of input where a value"),
        ];
        for &(doc, offset, reason) in cases {
            let e = scan_err(doc);
            assert_eq!(e.offset, offset, "{doc:?}: {e}");
            assert!(e.reason.contains(reason), "{doc:?}: {e}");
        }
    }

    #[test]
    fn rejects_invalid_utf8_in_strings() {
        let mut doc = br#"{"a":"ok"#.to_vec();
        doc.extend_from_slice(&[0xc3, 0x28]);
        doc.extend_from_slice(br#""}"#);
        let e = Fields::new().scan(&doc).unwrap_err();
        assert_eq!((e.offset, e.reason), (8, "invalid UTF-8 in a string"));
    }

    #[test]
    fn limits_nesting() {
        let ok = format!("{{\"a\":{}{}}}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        Fields::new().scan(ok.as_bytes()).unwrap();
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(scan_err(&deep).reason.contains("nested more than 128"));
    }

    #[test]
    fn agrees_with_serde_json_on_validity() {
        let docs = [
            r#"{"a":[1,{"b":[true,false,null]},"\u0041"],"c":{"d":{}}}"#,
            r#"{"a":1.5E+10,"b":-0.0e-0}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":[,]}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":{"b" 1}}"#,
            r#"{"a":"\"}"#,
            r#"{"a":1.0e}"#,
            r#"{"a":[[[]]]}"#,
            r#"{"a":00}"#,
        ];
        for doc in docs {
            let ours = Fields::new().scan(doc.as_bytes()).is_ok();
            let serde = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(doc).is_ok();
            assert_eq!(ours, serde, "{doc}");
        }
    }

    #[test]
    fn scans_single_values() {
        let (v, end) = scan_value(br#"x == "a b" and"#, 5).unwrap();
        assert_eq!((v.kind(), end), (Kind::String, 10));
        let (v, end) = scan_value(b"-12.5", 0).unwrap();
        assert_eq!((v.as_f64(), end), (Some(-12.5), 5));
    }

    #[test]
    fn writes_json() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#.as_bytes());
        for n in [0, 7, -7, 1_700_000_000_017, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
