//! The line formats both sinks write: one function, so a file and the
//! terminal always show a record the same way.

use serde::Deserialize;
use weir_connector::{ConnectorError, Frames, RecordRef};

/// How a sink turns a record into a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// The record value as is, followed by `\n`.
    #[default]
    Value,
    /// `{"key":…,"value":…,"timestamp":…}` followed by `\n`; key and value
    /// are JSON strings when UTF-8, else `"0x…"` lowercase hex; no key is
    /// `null`.
    Json,
}

/// Appends one record, formatted as `format` and ending with `\n`, to `out`.
pub fn format_record(format: OutputFormat, record: &RecordRef<'_>, out: &mut Vec<u8>) {
    match format {
        OutputFormat::Value => {
            out.extend_from_slice(record.value);
            out.push(b'\n');
        }
        OutputFormat::Json => {
            out.extend_from_slice(b"{\"key\":");
            match record.key {
                Some(key) => push_json_bytes(out, key),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"value\":");
            push_json_bytes(out, record.value);
            out.extend_from_slice(b",\"timestamp\":");
            weir_format::decimal::push_i64(out, record.timestamp);
            out.extend_from_slice(b"}\n");
        }
    }
}

/// Appends every record of `batch` (weir frames) to `out`, formatted as
/// `format`; returns the number of records. A malformed batch is an
/// internal error: batches come from weir itself.
pub fn format_batch(format: OutputFormat, batch: &[u8], out: &mut Vec<u8>) -> Result<usize, ConnectorError> {
    let mut records = 0;
    for record in Frames::new(batch) {
        let record = record.map_err(|e| ConnectorError::internal(format!("a sink received a malformed batch: {e}")))?;
        format_record(format, &record, out);
        records += 1;
    }
    Ok(records)
}

/// Appends `bytes` as a JSON string: escaped text when UTF-8, otherwise
/// `"0x"` and lowercase hex.
fn push_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if let Ok(text) = std::str::from_utf8(bytes) {
        weir_format::json::push_str(out, text);
        return;
    }
    out.extend_from_slice(b"\"0x");
    for &b in bytes {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use weir_connector::BatchWriter;

    use super::*;

    fn format_one(format: OutputFormat, key: Option<&[u8]>, value: &[u8], timestamp: i64) -> String {
        let mut batch = BatchWriter::new();
        batch.push(key, value, timestamp, &[]);
        let mut out = Vec::new();
        assert_eq!(format_batch(format, batch.as_bytes(), &mut out).unwrap(), 1);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn value_format_is_the_raw_value_and_a_newline() {
        assert_eq!(format_one(OutputFormat::Value, Some(b"k"), b"hello world", 1), "hello world\n");
        let mut batch = BatchWriter::new();
        batch.push(None, &[0xff, b'a'], 1, &[]);
        batch.push(None, b"", 2, &[]);
        let mut out = Vec::new();
        assert_eq!(format_batch(OutputFormat::Value, batch.as_bytes(), &mut out).unwrap(), 2);
        assert_eq!(out, [0xff, b'a', b'\n', b'\n']);
    }

    #[test]
    fn json_format_escapes_and_hexes() {
        assert_eq!(
            format_one(OutputFormat::Json, None, b"plain", -5),
            "{\"key\":null,\"value\":\"plain\",\"timestamp\":-5}\n"
        );
        assert_eq!(
            format_one(OutputFormat::Json, Some(&[0xff, 0xad, 0x00]), b"ok", 0),
            "{\"key\":\"0xffad00\",\"value\":\"ok\",\"timestamp\":0}\n"
        );
        assert_eq!(
            format_one(OutputFormat::Json, Some(b""), &[0xc3], i64::MIN),
            "{\"key\":\"\",\"value\":\"0xc3\",\"timestamp\":-9223372036854775808}\n"
        );
        let tricky = "quote \" slash \\ nl \n cr \r tab \t bell \u{7} nul \u{0} unit \u{1f} é 😀 end";
        let line = format_one(OutputFormat::Json, Some("ключ".as_bytes()), tricky.as_bytes(), 1_700_000_000_000);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["key"], "ключ");
        assert_eq!(parsed["value"], tricky);
        assert_eq!(parsed["timestamp"], 1_700_000_000_000i64);
        assert!(line.contains(r"\u0007") && line.contains(r"\u0000") && line.contains(r"\u001f"), "{line}");
    }

    #[test]
    fn malformed_batches_are_internal_errors() {
        let err = format_batch(OutputFormat::Value, &[1, 2, 3], &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind, weir_connector::ErrorKind::Internal);
    }
}
