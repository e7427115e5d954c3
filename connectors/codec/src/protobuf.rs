//! Protocol Buffers messages to and from JSON, through a descriptor compiled
//! from the user's `.proto` file when the pipeline opens (`protox`, a
//! protobuf compiler in Rust, so no `protoc` is needed), and
//! `prost-reflect`'s dynamic messages.
//!
//! The JSON is protobuf's canonical JSON mapping with two choices made for
//! plugins: fields keep their `.proto` names (`order_id`, not `orderId`),
//! and every field is written, defaults included, so a plugin finds each
//! field of the schema in every record. 64-bit integers are JSON numbers.
//! Encoding accepts either field name spelling and refuses fields the
//! message does not have.

use std::path::Path;

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::CodecError;

/// A message type from a `.proto` file.
#[derive(Debug, Clone)]
pub struct Schema {
    message: MessageDescriptor,
    /// The message's index path in its file, for the Confluent framing.
    indexes: Vec<i32>,
    serialize: SerializeOptions,
}

impl Schema {
    /// Compiles `file` (imports are looked up beside it) and picks the
    /// message `name` (a full name, `shop.Order`), or the file's first
    /// message when `name` is `None`.
    pub fn compile(file: &Path, name: Option<&str>) -> Result<Self, String> {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file_name = file.file_name().ok_or_else(|| "is not a file name".to_owned())?;
        let mut compiler = protox::Compiler::new([dir]).map_err(|e| e.to_string())?;
        compiler.include_imports(true);
        compiler.open_file(file_name).map_err(|e| e.to_string())?;
        let pool = compiler.descriptor_pool();
        let main = pool
            .files()
            .find(|f| Path::new(f.name()) == Path::new(file_name))
            .ok_or_else(|| "the compiled file is missing from its own descriptor set".to_owned())?;
        let mut all = Vec::new();
        for (i, m) in main.messages().enumerate() {
            walk(m, vec![i as i32], &mut all);
        }
        let (message, indexes) = match name {
            Some(n) => all.into_iter().find(|(m, _)| m.full_name() == n).ok_or_else(|| {
                let names: Vec<String> = main.messages().map(|m| m.full_name().to_owned()).collect();
                format!("has no message {n:?} (its messages: {})", names.join(", "))
            })?,
            None => all.into_iter().next().ok_or_else(|| "defines no message".to_owned())?,
        };
        let serialize = SerializeOptions::new().skip_default_fields(false).use_proto_field_name(true).stringify_64_bit_integers(false);
        Ok(Self { message, indexes, serialize })
    }

    /// The message's full name.
    pub fn name(&self) -> &str {
        self.message.full_name()
    }

    /// Where the message is in its file: `[2]` for the third top-level
    /// message, `[2, 0]` for the first message nested in it.
    pub fn indexes(&self) -> &[i32] {
        &self.indexes
    }

    /// Decodes one message and appends its JSON to `out`.
    pub fn decode(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let msg = DynamicMessage::decode(self.message.clone(), data).map_err(|e| CodecError::new(format!("not a {} message: {e}", self.name())))?;
        let start = out.len();
        let mut ser = serde_json::Serializer::new(&mut *out);
        msg.serialize_with_options(&mut ser, &self.serialize).map_err(|e| {
            CodecError::new(format!("{} message cannot be written as JSON: {e}", self.name()))
        }).inspect_err(|_| out.truncate(start))
    }

    /// Encodes the JSON text `json` as the message and appends it to `out`.
    pub fn encode(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let msg = DynamicMessage::deserialize_with_options(self.message.clone(), &mut de, &DeserializeOptions::new().deny_unknown_fields(true))
            .map_err(|e| CodecError::new(format!("does not fit message {}: {e}", self.name())))?;
        de.end().map_err(|e| CodecError::new(format!("not JSON: {e}")))?;
        msg.encode(out).map_err(|e| CodecError::new(format!("encoding {}: {e}", self.name())))
    }
}

fn walk(m: MessageDescriptor, path: Vec<i32>, all: &mut Vec<(MessageDescriptor, Vec<i32>)>) {
    // Map entries count in the indexes (they are nested types of the
    // descriptor, as Confluent's serializers see it) but are not messages a
    // user would pick.
    let children: Vec<MessageDescriptor> = m.child_messages().collect();
    all.push((m, path.clone()));
    for (i, c) in children.into_iter().enumerate() {
        if c.is_map_entry() {
            continue;
        }
        let mut p = path.clone();
        p.push(i as i32);
        walk(c, p, all);
    }
}
