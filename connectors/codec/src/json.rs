//! Writing JSON text, and the value conversions the binary formats share.

use serde_json::Value;

use crate::CodecError;

pub(crate) fn integer(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A float; NaN and the infinities, which JSON has no numbers for, as the
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"`. `single` writes the
/// shortest text that reads back as the same `f32`.
pub(crate) fn float(out: &mut Vec<u8>, v: f64, single: bool) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" });
    } else if single {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v as f32).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
}

/// A JSON number or one of the three strings [`float`] writes.
pub(crate) fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// A JSON string, escaped as RFC 8259 requires (control characters, `"`
/// and `\`); everything else is copied as it is.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        escape(out, b);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

fn escape(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Bytes as a JSON string whose code points are the bytes (Avro's JSON
/// convention for `bytes` and `fixed`).
pub(crate) fn latin1(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        if b < 0x20 || b == b'"' || b == b'\\' {
            escape(out, b);
        } else if b < 0x80 {
            out.push(b);
        } else {
            out.extend_from_slice(&[0xc0 | (b >> 6), 0x80 | (b & 0x3f)]);
        }
    }
    out.push(b'"');
}

/// The reverse of [`latin1`].
pub(crate) fn from_latin1(s: &str) -> Result<Vec<u8>, CodecError> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| CodecError::new(format!("bytes are written as a string of code points U+0000 to U+00FF; {c:?} is not one"))))
        .collect()
}

/// `null`, `a boolean`, ... for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number with a fraction",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A big-endian two's-complement integer of at most 16 bytes as a decimal
/// number with `scale` digits after the point.
pub(crate) fn decimal(out: &mut Vec<u8>, bytes: &[u8], scale: u32, precision: u32) -> Result<(), CodecError> {
    let bytes = if bytes.is_empty() { &[0u8][..] } else { bytes };
    let significant = bytes.iter().position(|&b| b != if bytes[0] & 0x80 != 0 { 0xff } else { 0 }).unwrap_or(bytes.len());
    // Sign-extension bytes may pad the value beyond 16 bytes.
    let keep = bytes.len() - significant;
    if keep > 16 || (keep == 16 && (bytes[significant] & 0x80) != (bytes[0] & 0x80)) {
        return Err(CodecError::new(format!("a decimal of {} bytes is wider than 128 bits", bytes.len())));
    }
    let mut full = [if bytes[0] & 0x80 != 0 { 0xff } else { 0 }; 16];
    full[16 - keep..].copy_from_slice(&bytes[significant..]);
    let v = i128::from_be_bytes(full);
    let digits = v.unsigned_abs().to_string();
    if v != 0 && digits.len() > precision as usize {
        return Err(CodecError::new(format!("a decimal holds {} digits, more than its precision ({precision})", digits.len())));
    }
    let scale = scale as usize;
    out.push(b'"');
    if v < 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits.as_bytes());
    } else if digits.len() > scale {
        out.extend_from_slice(&digits.as_bytes()[..digits.len() - scale]);
        out.push(b'.');
        out.extend_from_slice(&digits.as_bytes()[digits.len() - scale..]);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    }
    out.push(b'"');
    Ok(())
}

/// `"12.5"` with scale 2 as 1250; more fraction digits than the scale, or
/// more digits than the precision, are errors (never rounded).
pub(crate) fn parse_decimal(text: &str, scale: u32, precision: u32) -> Result<i128, CodecError> {
    let bad = || CodecError::new(format!("{text:?} is not a decimal number"));
    let (negative, t) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty() || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return Err(CodecError::new(format!("{text} has more than {scale} digits after the point (the decimal's scale); weir does not round")));
    }
    let mut digits = String::with_capacity(whole.len() + scale as usize);
    digits.push_str(whole.trim_start_matches('0'));
    digits.push_str(frac);
    digits.extend(std::iter::repeat_n('0', scale as usize - frac.len()));
    let digits = digits.trim_start_matches('0');
    if digits.len() > precision as usize {
        return Err(CodecError::new(format!("{text} has more than {precision} digits (the decimal's precision)")));
    }
    let v: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
    Ok(if negative { -v } else { v })
}

/// Fewest bytes of two's complement that hold `v`.
pub(crate) fn twos_complement_len(v: i128) -> usize {
    let bits = if v < 0 { 128 - (!v).leading_zeros() } else { 128 - v.leading_zeros() };
    (bits as usize + 1).div_ceil(8).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_and_write_back() {
        for (bytes, scale, text) in [
            (&[0x04, 0xe2][..], 2, "12.50"),
            (&[0xfb, 0x1e][..], 2, "-12.50"),
            (&[0x01][..], 3, "0.001"),
            (&[0xff][..], 0, "-1"),
            (&[0xff, 0xff, 0xff][..], 1, "-0.1"),
        ] {
            let mut out = Vec::new();
            decimal(&mut out, bytes, scale, 38).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{text}\""));
            let v = parse_decimal(text, scale, 38).unwrap();
            let n = twos_complement_len(v);
            assert!(n <= bytes.len());
        }
        let mut out = Vec::new();
        decimal(&mut out, &[], 2, 3).unwrap();
        assert_eq!(out, b"\"0.00\"");
        assert!(decimal(&mut out, &[0x27, 0x10], 2, 3).unwrap_err().to_string().contains("more than its precision (3)"));
        assert_eq!(twos_complement_len(127), 1);
        assert_eq!(twos_complement_len(128), 2);
        assert_eq!(twos_complement_len(-128), 1);
        assert_eq!(twos_complement_len(-129), 2);
        assert!(parse_decimal("1.234", 2, 10).unwrap_err().to_string().contains("does not round"));
        assert!(parse_decimal("123456", 2, 6).unwrap_err().to_string().contains("precision"));
        assert!(parse_decimal("1e5", 2, 6).is_err());
        assert!(parse_decimal("", 2, 6).is_err());
    }

    #[test]
    fn strings_escape_what_json_requires() {
        let mut out = Vec::new();
        string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), "a\"b\\c\nd\u{1}é");
        let mut out = Vec::new();
        latin1(&mut out, &[0, b'a', 0xff, 0x80]);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(from_latin1(&back).unwrap(), [0, b'a', 0xff, 0x80]);
    }
}
