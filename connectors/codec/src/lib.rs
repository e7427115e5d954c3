//! Record value formats for connectors: JSON, Avro, Protocol Buffers and raw
//! bytes, optionally in Confluent's framing (a zero byte and the schema id).
//!
//! weir's operators take JSON (or, with `raw`, whatever bytes came), so a
//! source decodes each value to JSON as it reads it and a sink encodes the
//! JSON its input carries back into the format of its destination. A
//! connector embeds the settings as [`ValueFormat`] keys of its own section:
//!
//! ```toml
//! [sources.orders]
//! type = "kafka"
//! format = "avro"                    # json (default) | avro | protobuf | raw
//! schema-file = "schemas/order.avsc" # .avsc for avro, .proto for protobuf
//! # message = "shop.Order"           # protobuf: which message (default: the file's first)
//! framing = "confluent"              # none (default) | confluent: 0x00, a 4-byte schema id, [message indexes]
//! # schema-id = 7                    # confluent framing: the id a sink writes, and a source insists on
//! ```
//!
//! - **json** checks that every value is one well-formed JSON document
//!   (strictly, with json-scan: no copy, about a gigabyte a second) and
//!   passes it on unchanged, so a malformed value is caught at the edge
//!   with its position rather than deep inside a plugin.
//! - **raw** passes the bytes on unchecked, for plugins that parse their
//!   own formats.
//! - **avro** and **protobuf** decode to JSON text and encode from it; see
//!   [`avro`] and [`protobuf`] for the JSON each produces.
//!
//! Schemas come from files. A schema registry is not read: the ids in
//! Confluent framing are checked against `schema-id` when it is set and
//! written from it by sinks.

pub mod avro;
mod json;
pub mod protobuf;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Deepest nesting a decoded or encoded value may have, so a hostile record
/// (or a recursive schema) cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Largest JSON a decoded value may grow to (a few bytes of Avro can claim
/// millions of empty array items).
pub const MAX_JSON: usize = 64 << 20;

/// `format = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// JSON documents, checked and passed on as they are.
    #[default]
    Json,
    /// Avro binary, with the schema from `schema-file`.
    Avro,
    /// Protocol Buffers, with the message from `schema-file`.
    Protobuf,
    /// Bytes, unchecked.
    Raw,
}

impl Format {
    /// Its name in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Avro => "avro",
            Self::Protobuf => "protobuf",
            Self::Raw => "raw",
        }
    }
}

/// `framing = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// The value is the encoded record and nothing else.
    #[default]
    None,
    /// Confluent's wire format: byte 0, the schema id as 4 bytes big-endian,
    /// for protobuf the message's index path, then the record.
    Confluent,
}

/// A connector's value-format keys. Connectors copy these fields into
/// their own config (serde cannot refuse unknown keys through `flatten`)
/// and build one with [`ValueFormat::new`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValueFormat {
    /// `format`.
    pub format: Format,
    /// `schema-file`, resolved against the pipeline file.
    pub schema_file: Option<PathBuf>,
    /// `message`.
    pub message: Option<String>,
    /// `framing`.
    pub framing: Framing,
    /// `schema-id`.
    pub schema_id: Option<u32>,
}

/// Which side of a connector the format is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A source: values are decoded.
    Source,
    /// A sink: values are encoded.
    Sink,
}

impl ValueFormat {
    /// Problems with the keys, as `(field, message)`.
    pub fn problems(&self, side: Side) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut say = |field: &str, m: String| p.push((field.to_owned(), m));
        match (self.format, &self.schema_file) {
            (Format::Avro, None) => say("schema-file", "format = \"avro\" needs schema-file = \"PATH.avsc\" (the writer's schema)".into()),
            (Format::Protobuf, None) => say("schema-file", "format = \"protobuf\" needs schema-file = \"PATH.proto\"".into()),
            (Format::Json | Format::Raw, Some(_)) => {
                say("schema-file", format!("format = \"{}\" takes no schema; set format = \"avro\" or \"protobuf\"", self.format.as_str()))
            }
            _ => {}
        }
        if self.message.is_some() && self.format != Format::Protobuf {
            say("message", "only used with format = \"protobuf\"".into());
        }
        match (self.framing, self.schema_id, side) {
            (Framing::Confluent, None, Side::Sink) => {
                say("schema-id", "framing = \"confluent\" writes a schema id into every value: set schema-id = N, the id your schema registry gives this schema".into())
            }
            (Framing::None, Some(_), _) => say("schema-id", "only used with framing = \"confluent\"".into()),
            _ => {}
        }
        p
    }

    /// `schema-file` relative to `base` (the pipeline file's directory).
    pub fn resolve(&mut self, base: impl Fn(&Path) -> PathBuf) {
        if let Some(f) = &self.schema_file {
            self.schema_file = Some(base(f));
        }
    }

    /// Reads and compiles the schema. The error names the key and file.
    pub fn codec(&self) -> Result<Codec, String> {
        let kind = match (self.format, &self.schema_file) {
            (Format::Json, _) => Kind::Json,
            (Format::Raw, _) => Kind::Raw,
            (Format::Avro, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("schema-file {}: {e}", file.display()))?;
                Kind::Avro(avro::Schema::parse(&text).map_err(|e| format!("schema-file {}: not a usable Avro schema: {e}", file.display()))?)
            }
            (Format::Protobuf, Some(file)) => {
                if !file.is_file() {
                    return Err(format!("schema-file {}: no such file", file.display()));
                }
                Kind::Protobuf(Box::new(protobuf::Schema::compile(file, self.message.as_deref()).map_err(|e| format!("schema-file {}: {e}", file.display()))?))
            }
            (f, None) => return Err(format!("format = \"{}\" needs schema-file", f.as_str())),
        };
        Ok(Codec { kind, framing: self.framing, schema_id: self.schema_id })
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Json,
    Raw,
    Avro(avro::Schema),
    Protobuf(Box<protobuf::Schema>),
}

/// A compiled value format: decodes values to JSON and encodes JSON back.
#[derive(Debug, Clone)]
pub struct Codec {
    kind: Kind,
    framing: Framing,
    schema_id: Option<u32>,
}

impl Codec {
    /// The JSON text of `value`: `value` itself for json (checked) and raw,
    /// or the decoded record in `scratch` (which is cleared first).
    pub fn decode<'a>(&self, value: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<&'a [u8], CodecError> {
        let body = match self.framing {
            Framing::None => value,
            Framing::Confluent => self.unframe(value)?,
        };
        match &self.kind {
            Kind::Raw => Ok(body),
            Kind::Json => {
                check_json(body)?;
                Ok(body)
            }
            Kind::Avro(s) => {
                scratch.clear();
                s.decode(body, scratch)?;
                Ok(scratch)
            }
            Kind::Protobuf(s) => {
                scratch.clear();
                s.decode(body, scratch)?;
                Ok(scratch)
            }
        }
    }

    /// The encoded form of the JSON text `json`: `json` itself for json
    /// (checked) and raw without framing, else the encoding in `scratch`.
    pub fn encode<'a>(&self, json: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<&'a [u8], CodecError> {
        if self.framing == Framing::None {
            match &self.kind {
                Kind::Raw => return Ok(json),
                Kind::Json => {
                    check_json(json)?;
                    return Ok(json);
                }
                _ => {}
            }
        }
        scratch.clear();
        if self.framing == Framing::Confluent {
            scratch.push(0);
            scratch.extend_from_slice(&self.schema_id.unwrap_or(0).to_be_bytes());
            if let Kind::Protobuf(s) = &self.kind {
                write_indexes(scratch, s.indexes());
            }
        }
        match &self.kind {
            Kind::Raw => scratch.extend_from_slice(json),
            Kind::Json => {
                check_json(json)?;
                scratch.extend_from_slice(json);
            }
            Kind::Avro(s) => s.encode(json, scratch)?,
            Kind::Protobuf(s) => s.encode(json, scratch)?,
        }
        Ok(scratch)
    }

    fn unframe<'a>(&self, value: &'a [u8]) -> Result<&'a [u8], CodecError> {
        if value.len() < 5 || value[0] != 0 {
            return Err(CodecError::new(format!(
                "framing = \"confluent\" expects a zero byte and a 4-byte schema id first; the value starts {:02x?}",
                &value[..value.len().min(5)]
            )));
        }
        let id = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
        if let Some(want) = self.schema_id
            && id != want
        {
            return Err(CodecError::new(format!("the value is written with schema id {id}, and schema-id = {want}")));
        }
        let mut rest = &value[5..];
        if matches!(self.kind, Kind::Protobuf(_)) {
            // The message indexes: weir reads the message named in the
            // config, whichever the producer names.
            let count = read_zigzag(&mut rest)?;
            if !(0..=64).contains(&count) {
                return Err(CodecError::new(format!("the protobuf message index list claims {count} entries")));
            }
            for _ in 0..count {
                read_zigzag(&mut rest)?;
            }
        }
        Ok(rest)
    }
}

/// Confluent's message-index list: the count then each index, as zigzag
/// varints; the common `[0]` is written as one zero byte.
fn write_indexes(out: &mut Vec<u8>, indexes: &[i32]) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    let mut put = |v: i64| {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    put(indexes.len() as i64);
    for i in indexes {
        put(i64::from(*i));
    }
}

fn read_zigzag(buf: &mut &[u8]) -> Result<i64, CodecError> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| CodecError::new("the value ends inside its message index list"))?;
        *buf = rest;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err(CodecError::new("a varint in the message index list is too long"))
}

/// One JSON document, whitespace around it allowed.
fn check_json(value: &[u8]) -> Result<(), CodecError> {
    let start = value.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(value.len());
    match json_scan::scan_value(value, start) {
        Ok((_, end)) if value[end..].iter().all(u8::is_ascii_whitespace) => Ok(()),
        Ok((_, end)) => Err(CodecError::new(format!("not JSON: more after the document, at byte {end}"))),
        Err(e) => Err(CodecError::new(format!("not JSON: {e}"))),
    }
}

/// A value that does not decode or encode: what is wrong, where in the
/// record (a field path) and at which byte of the encoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    message: String,
    /// Innermost segment first.
    path: Vec<String>,
    byte: Option<usize>,
}

impl CodecError {
    /// An error at the current position.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), path: Vec::new(), byte: None }
    }

    pub(crate) fn in_field(mut self, name: &str) -> Self {
        self.path.push(format!(".{name}"));
        self
    }

    pub(crate) fn in_item(mut self, index: usize) -> Self {
        self.path.push(format!("[{index}]"));
        self
    }

    pub(crate) fn at_byte(mut self, byte: usize) -> Self {
        self.byte.get_or_insert(byte);
        self
    }

    /// The field path, `items[2].price`, or empty at the top level.
    pub fn path(&self) -> String {
        let p: String = self.path.iter().rev().map(String::as_str).collect();
        p.strip_prefix('.').map(str::to_owned).unwrap_or(p)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        if !path.is_empty() {
            write!(f, "field {path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(b) = self.byte {
            write!(f, " (at byte {b} of the encoded record)")?;
        }
        Ok(())
    }
}

impl std::error::Error for CodecError {}

#[cfg(test)]
mod tests;
