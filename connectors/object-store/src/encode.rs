//! Records to object bytes: the check each record passes when it is
//! written (so a bad record is found before its checkpoint, not while it is
//! being published), the schema inferred from the first record, and the
//! JSON-lines and Parquet encoders that build one object in memory.
//!
//! An encoder's size is the number of record bytes it took (the values and
//! a newline each), not the size of its output: the split of an epoch into
//! objects then depends only on the records, so a replay after a crash cuts
//! the same objects and overwrites them under the same names.

use crate::config::{ColumnConfig, ColumnType, Compression, Format};
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use std::sync::Arc;

/// Why a record does not fit: the field (empty for the record as a whole)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    /// The field, or empty.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Misfit {
    fn whole(message: impl Into<String>) -> Self {
        Self { field: String::new(), message: message.into() }
    }
}

/// Checks a record value against the format and, when known, the columns.
/// `Ok(true)` when it fits but the columns must still be inferred (from it).
pub fn check(value: &[u8], columns: Option<&[ColumnConfig]>, format: Format) -> Result<bool, Misfit> {
    if format == Format::JsonLines && columns.is_none() {
        return serde_json::from_slice::<serde::de::IgnoredAny>(value)
            .map(|_| false)
            .map_err(|e| Misfit::whole(format!("the value is not JSON ({e})")));
    }
    let parsed: Value = serde_json::from_slice(value).map_err(|e| Misfit::whole(format!("the value is not JSON ({e})")))?;
    let Value::Object(map) = parsed else {
        return Err(Misfit::whole(format!("the value is {}, not a JSON object", kind(&parsed))));
    };
    match columns {
        Some(columns) => {
            for c in columns {
                check_field(c, map.get(&c.name))?;
            }
            Ok(false)
        }
        None => Ok(true),
    }
}

fn check_field(c: &ColumnConfig, v: Option<&Value>) -> Result<(), Misfit> {
    let misfit = |message: String| Err(Misfit { field: c.name.clone(), message });
    let v = match v {
        None | Some(Value::Null) if c.nullable => return Ok(()),
        None => return misfit(format!("missing, and the column is not nullable ({})", c.ty.name())),
        Some(Value::Null) => return misfit(format!("null, and the column is not nullable ({})", c.ty.name())),
        Some(v) => v,
    };
    let fits = match c.ty {
        ColumnType::String => v.is_string(),
        ColumnType::Int64 | ColumnType::TimestampMs => v.as_i64().is_some(),
        ColumnType::Float64 => v.is_number(),
        ColumnType::Boolean => v.is_boolean(),
        ColumnType::Json => true,
    };
    if fits { Ok(()) } else { misfit(format!("expected {}, found {} {}", c.ty.name(), kind(v), short(v))) }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= 40 { text } else { format!("{}…", &text[..text.floor_char_boundary(40)]) }
}

/// The columns of the first record (`value`, already checked to be a
/// JSON object): every top-level field, in the record's order, nullable,
/// typed by its value (integers `int64`, other numbers `float64`, arrays
/// and objects `json`, `null` `string`).
pub fn infer(value: &[u8]) -> Result<Vec<ColumnConfig>, Misfit> {
    let Ok(Ordered(fields)) = serde_json::from_slice::<Ordered>(value) else {
        return Err(Misfit::whole("the first record is not a JSON object, so no columns can be inferred from it"));
    };
    if fields.is_empty() {
        return Err(Misfit::whole("the first record is an empty object, so no columns can be inferred from it; configure `columns`"));
    }
    let mut columns: Vec<ColumnConfig> = Vec::new();
    for (name, v) in fields {
        let ty = match v {
            Value::Bool(_) => ColumnType::Boolean,
            Value::Number(n) if n.is_i64() => ColumnType::Int64,
            Value::Number(_) => ColumnType::Float64,
            Value::String(_) | Value::Null => ColumnType::String,
            Value::Array(_) | Value::Object(_) => ColumnType::Json,
        };
        // A repeated key: the last one wins, as when the record is read.
        columns.retain(|c| c.name != name);
        columns.push(ColumnConfig { name, ty, nullable: true });
    }
    Ok(columns)
}

/// A JSON object's fields in document order (serde_json's `Map` sorts them).
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Rows per Arrow batch handed to the Parquet writer.
const ROWS_PER_BATCH: usize = 8192;

/// One object being built.
pub enum Encoder {
    /// JSON lines.
    Lines {
        /// The object so far.
        out: Vec<u8>,
    },
    /// Parquet.
    Parquet(Box<ParquetEncoder>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Lines { .. } => "Encoder::Lines",
            Self::Parquet(_) => "Encoder::Parquet",
        })
    }
}

/// A Parquet object being built: column builders for the current batch and
/// the writer the batches go to.
pub struct ParquetEncoder {
    columns: Vec<ColumnConfig>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    rows: usize,
    writer: ArrowWriter<Vec<u8>>,
}

enum Builder {
    String(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

impl Encoder {
    /// A new, empty object of `format` (`columns` for Parquet).
    pub fn new(format: Format, columns: &[ColumnConfig], compression: Compression) -> Result<Self, String> {
        Ok(match format {
            Format::JsonLines => Self::Lines { out: Vec::new() },
            Format::Parquet => Self::Parquet(Box::new(ParquetEncoder::new(columns, compression)?)),
        })
    }

    /// Adds a record value that passed [`check`].
    pub fn push(&mut self, value: &[u8]) -> Result<(), String> {
        match self {
            Self::Lines { out } => {
                out.extend_from_slice(value);
                out.push(b'\n');
                Ok(())
            }
            Self::Parquet(p) => p.push(value),
        }
    }

    /// The finished object.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        match self {
            Self::Lines { out } => Ok(out),
            Self::Parquet(p) => p.finish(),
        }
    }
}

/// The Arrow schema of `columns`.
pub fn arrow_schema(columns: &[ColumnConfig]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    ColumnType::String | ColumnType::Json => DataType::Utf8,
                    ColumnType::Int64 => DataType::Int64,
                    ColumnType::Float64 => DataType::Float64,
                    ColumnType::Boolean => DataType::Boolean,
                    ColumnType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                };
                Field::new(&c.name, ty, c.nullable)
            })
            .collect::<Vec<_>>(),
    ))
}

impl ParquetEncoder {
    fn new(columns: &[ColumnConfig], compression: Compression) -> Result<Self, String> {
        let schema = arrow_schema(columns);
        let props = WriterProperties::builder()
            .set_compression(match compression {
                Compression::Snappy => parquet::basic::Compression::SNAPPY,
                Compression::None => parquet::basic::Compression::UNCOMPRESSED,
            })
            .set_created_by("weir object-store sink".into())
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(|e| format!("cannot start a Parquet object: {e}"))?;
        let mut p = Self { columns: columns.to_vec(), schema, builders: Vec::new(), rows: 0, writer };
        p.builders = p.fresh_builders();
        Ok(p)
    }

    fn fresh_builders(&self) -> Vec<Builder> {
        self.columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::String | ColumnType::Json => Builder::String(StringBuilder::with_capacity(ROWS_PER_BATCH, ROWS_PER_BATCH * 16)),
                ColumnType::Int64 => Builder::Int64(Int64Builder::with_capacity(ROWS_PER_BATCH)),
                ColumnType::Float64 => Builder::Float64(Float64Builder::with_capacity(ROWS_PER_BATCH)),
                ColumnType::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(ROWS_PER_BATCH)),
                ColumnType::TimestampMs => {
                    Builder::Timestamp(TimestampMillisecondBuilder::with_capacity(ROWS_PER_BATCH).with_timezone("UTC"))
                }
            })
            .collect()
    }

    fn push(&mut self, value: &[u8]) -> Result<(), String> {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(value) else {
            return Err("a staged record is not a JSON object although it was checked when written".into());
        };
        for (c, b) in self.columns.iter().zip(&mut self.builders) {
            let v = map.get(&c.name).filter(|v| !v.is_null());
            match b {
                Builder::String(b) => match (c.ty, v) {
                    (_, None) => b.append_null(),
                    (ColumnType::Json, Some(v)) => b.append_value(v.to_string()),
                    (_, Some(v)) => b.append_option(v.as_str()),
                },
                Builder::Int64(b) => b.append_option(v.and_then(Value::as_i64)),
                Builder::Float64(b) => b.append_option(v.and_then(Value::as_f64)),
                Builder::Boolean(b) => b.append_option(v.and_then(Value::as_bool)),
                Builder::Timestamp(b) => b.append_option(v.and_then(Value::as_i64)),
            }
        }
        self.rows += 1;
        if self.rows == ROWS_PER_BATCH {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), String> {
        if self.rows == 0 {
            return Ok(());
        }
        let fresh = self.fresh_builders();
        let builders = std::mem::replace(&mut self.builders, fresh);
        let arrays: Vec<ArrayRef> = builders
            .into_iter()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::String(mut b) => Arc::new(b.finish()),
                    Builder::Int64(mut b) => Arc::new(b.finish()),
                    Builder::Float64(mut b) => Arc::new(b.finish()),
                    Builder::Boolean(mut b) => Arc::new(b.finish()),
                    Builder::Timestamp(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| format!("building a Parquet row batch: {e}"))?;
        self.writer.write(&batch).map_err(|e| format!("encoding Parquet: {e}"))
    }

    fn finish(mut self) -> Result<Vec<u8>, String> {
        self.write_batch()?;
        self.writer.into_inner().map_err(|e| format!("finishing a Parquet object: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> ColumnConfig {
        ColumnConfig { name: name.into(), ty, nullable }
    }

    #[test]
    fn records_are_checked_against_the_columns_with_the_field_named() {
        let cols = [col("id", ColumnType::Int64, false), col("amount", ColumnType::Float64, true)];
        assert_eq!(check(br#"{"id":1,"amount":2}"#, Some(&cols), Format::Parquet), Ok(false));
        let m = check(br#"{"id":"x"}"#, Some(&cols), Format::Parquet).unwrap_err();
        assert_eq!((m.field.as_str(), m.message.as_str()), ("id", "expected int64, found a string \"x\""));
        let m = check(br#"{"amount":1}"#, Some(&cols), Format::Parquet).unwrap_err();
        assert_eq!(m.field, "id");
        assert!(check(b"[1]", Some(&cols), Format::Parquet).unwrap_err().message.contains("an array, not a JSON object"));
        assert!(check(b"{", None, Format::JsonLines).unwrap_err().message.contains("not JSON"));
        assert_eq!(check(b"[1]", None, Format::JsonLines), Ok(false));
    }

    #[test]
    fn inferred_columns_encode_and_read_back() {
        let first = br#"{"id":1,"user":"u","x":1.5,"ok":true,"tags":[1]}"#;
        assert_eq!(check(first, None, Format::Parquet), Ok(true));
        let cols = infer(first).unwrap();
        let types: Vec<_> = cols.iter().map(|c| c.ty).collect();
        assert_eq!(types, [ColumnType::Int64, ColumnType::String, ColumnType::Float64, ColumnType::Boolean, ColumnType::Json]);
        let mut e = Encoder::new(Format::Parquet, &cols, Compression::Snappy).unwrap();
        for i in 0..10_000 {
            e.push(format!(r#"{{"id":{i},"user":"u{i}","x":{i}.5,"tags":[{i}]}}"#).as_bytes()).unwrap();
        }
        let bytes = e.finish().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap().build().unwrap();
        let mut rows = 0;
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
            let ok = batch.column(3).as_any().downcast_ref::<arrow_array::BooleanArray>().unwrap();
            for r in 0..batch.num_rows() {
                assert_eq!(ids.value(r), (rows + r) as i64);
                assert!(ok.is_null(r));
            }
            rows += batch.num_rows();
        }
        assert_eq!(rows, 10_000);
    }
}
