//! Apache Avro's binary encoding, straight to and from JSON text.
//!
//! A schema (`.avsc`, Avro's JSON schema language) is compiled once into a
//! flat table of nodes; decoding walks a record's bytes and the table
//! together and writes JSON text as it goes, with no value tree in between
//! (a record of ten fields costs a few hundred nanoseconds). Encoding reads
//! the JSON into a `serde_json::Value` and writes the bytes the schema asks
//! for.
//!
//! The JSON is the plain JSON a plugin expects, not Avro's own JSON
//! encoding: a union's value is written as it is (`"amount": 12` rather than
//! `"amount": {"long": 12}`), `bytes` and `fixed` as strings whose code
//! points are the bytes (U+0000 to U+00FF, as Avro's JSON encoding does),
//! `decimal` as a string holding the number (`"12.50"`), NaN and the
//! infinities as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`. Other
//! logical types (`date`, `timestamp-millis`, `uuid`, ...) keep their
//! underlying type's JSON.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::{CodecError, MAX_DEPTH, MAX_JSON, json};

/// One node of a compiled schema; children are indexes into [`Schema::nodes`].
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record { name: String, fields: Vec<Field> },
    Enum { name: String, symbols: Vec<String> },
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Fixed { name: String, size: usize },
    /// `decimal` on `bytes` (`fixed: None`) or on a `fixed` of that size.
    Decimal { precision: u32, scale: u32, fixed: Option<usize> },
    /// A named type referenced before its definition was finished (only
    /// while compiling).
    Pending,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    /// `"name":`, escaped once.
    key: Vec<u8>,
    node: usize,
    default: Option<Value>,
}

/// A compiled Avro schema.
#[derive(Debug, Clone)]
pub struct Schema {
    nodes: Vec<Node>,
    root: usize,
}

/// A schema that cannot be compiled, with where in the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError(pub String);

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SchemaError {}

struct Compiler {
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}

fn fullname(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Schema {
    /// Compiles a schema from its JSON text.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let value: Value = serde_json::from_str(text).map_err(|e| SchemaError(format!("not JSON: {e}")))?;
        let mut c = Compiler { nodes: Vec::new(), names: HashMap::new() };
        let root = c.compile(&value, None, "the schema")?;
        if let Some(at) = c.nodes.iter().position(|n| matches!(n, Node::Pending)) {
            return Err(SchemaError(format!("a named type is used but never defined (node {at})")));
        }
        let schema = Schema { nodes: c.nodes, root };
        schema.check_defaults()?;
        Ok(schema)
    }

    /// Checks every field default against its field's schema, so a bad
    /// default is a schema error rather than a failure at the first record
    /// without the field.
    fn check_defaults(&self) -> Result<(), SchemaError> {
        for node in &self.nodes {
            if let Node::Record { name, fields } = node {
                for f in fields {
                    if let Some(d) = &f.default {
                        let target = match &self.nodes[f.node] {
                            // A union's default is for its first branch.
                            Node::Union(branches) => branches[0],
                            _ => f.node,
                        };
                        let mut out = Vec::new();
                        self.encode_node(target, d, &mut out, 0)
                            .map_err(|e| SchemaError(format!("record {name}: the default of field {:?} does not fit its type: {e}", f.name)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes one datum and appends its JSON text to `out`. The whole of
    /// `data` must be the datum.
    pub fn decode(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        let mut r = Reader { data, at: 0 };
        let result = self.decode_node(self.root, &mut r, out, 0).and_then(|()| {
            if r.at == data.len() {
                Ok(())
            } else {
                Err(CodecError::new(format!("{} bytes are left after the record (is it written with another schema?)", data.len() - r.at)))
            }
        });
        result.map_err(|e| {
            out.truncate(start);
            e.at_byte(r.at)
        })
    }

    /// Encodes the JSON text `json` and appends the bytes to `out`.
    pub fn encode(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let value: Value = serde_json::from_slice(json).map_err(|e| CodecError::new(format!("not JSON: {e}")))?;
        let start = out.len();
        self.encode_node(self.root, &value, out, 0).inspect_err(|_| out.truncate(start))
    }

    fn decode_node(&self, node: usize, r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::new(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match &self.nodes[node] {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Boolean => match r.byte()? {
                0 => out.extend_from_slice(b"false"),
                1 => out.extend_from_slice(b"true"),
                b => return Err(CodecError::new(format!("a boolean is byte {b}, not 0 or 1"))),
            },
            Node::Int => {
                let v = r.long()?;
                if i32::try_from(v).is_err() {
                    return Err(CodecError::new(format!("an int holds {v}, out of the int range")));
                }
                json::integer(out, v);
            }
            Node::Long => json::integer(out, r.long()?),
            Node::Float => json::float(out, f64::from(f32::from_le_bytes(r.array()?)), true),
            Node::Double => json::float(out, f64::from_le_bytes(r.array()?), false),
            Node::Bytes => {
                let n = r.len()?;
                json::latin1(out, r.take(n)?);
            }
            Node::String => {
                let n = r.len()?;
                let s = std::str::from_utf8(r.take(n)?).map_err(|e| CodecError::new(format!("a string is not UTF-8: {e}")))?;
                json::string(out, s);
            }
            Node::Fixed { size, .. } => json::latin1(out, r.take(*size)?),
            Node::Decimal { precision, scale, fixed } => {
                let bytes = match fixed {
                    Some(size) => r.take(*size)?,
                    None => {
                        let n = r.len()?;
                        r.take(n)?
                    }
                };
                json::decimal(out, bytes, *scale, *precision)?;
            }
            Node::Enum { name, symbols } => {
                let i = r.long()?;
                let s = usize::try_from(i).ok().and_then(|i| symbols.get(i)).ok_or_else(|| {
                    CodecError::new(format!("enum {name} has {} symbols; the record names symbol {i}", symbols.len()))
                })?;
                json::string(out, s);
            }
            Node::Record { fields, .. } => {
                out.push(b'{');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&f.key);
                    self.decode_node(f.node, r, out, depth + 1).map_err(|e| e.in_field(&f.name))?;
                }
                out.push(b'}');
            }
            Node::Array(item) => {
                out.push(b'[');
                let mut index = 0usize;
                loop {
                    let n = r.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if index > 0 {
                            out.push(b',');
                        }
                        self.decode_node(*item, r, out, depth + 1).map_err(|e| e.in_item(index))?;
                        index += 1;
                        check_size(out)?;
                    }
                }
                out.push(b']');
            }
            Node::Map(value) => {
                out.push(b'{');
                let mut first = true;
                loop {
                    let n = r.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        let k = r.len()?;
                        let key = std::str::from_utf8(r.take(k)?).map_err(|e| CodecError::new(format!("a map key is not UTF-8: {e}")))?;
                        json::string(out, key);
                        out.push(b':');
                        self.decode_node(*value, r, out, depth + 1).map_err(|e| e.in_field(key))?;
                        check_size(out)?;
                    }
                }
                out.push(b'}');
            }
            Node::Union(branches) => {
                let i = r.long()?;
                let b = usize::try_from(i).ok().and_then(|i| branches.get(i)).ok_or_else(|| {
                    CodecError::new(format!("a union of {} types names branch {i}", branches.len()))
                })?;
                self.decode_node(*b, r, out, depth + 1)?;
            }
            Node::Pending => unreachable!("compiled schemas have no pending nodes"),
        }
        Ok(())
    }

    fn describe(&self, node: usize) -> String {
        match &self.nodes[node] {
            Node::Null => "null".into(),
            Node::Boolean => "boolean".into(),
            Node::Int => "int".into(),
            Node::Long => "long".into(),
            Node::Float => "float".into(),
            Node::Double => "double".into(),
            Node::Bytes => "bytes".into(),
            Node::String => "string".into(),
            Node::Record { name, .. } => format!("record {name}"),
            Node::Enum { name, .. } => format!("enum {name}"),
            Node::Array(i) => format!("array of {}", self.describe(*i)),
            Node::Map(i) => format!("map of {}", self.describe(*i)),
            Node::Union(b) => b.iter().map(|b| self.describe(*b)).collect::<Vec<_>>().join(" | "),
            Node::Fixed { name, size } => format!("fixed {name} ({size} bytes)"),
            Node::Decimal { precision, scale, .. } => format!("decimal({precision},{scale})"),
            Node::Pending => "?".into(),
        }
    }

    fn encode_node(&self, node: usize, v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::new(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let mismatch = || CodecError::new(format!("expected {}, found {}", self.describe(node), json::kind(v)));
        match (&self.nodes[node], v) {
            (Node::Null, Value::Null) => {}
            (Node::Boolean, Value::Bool(b)) => out.push(u8::from(*b)),
            (Node::Int, Value::Number(n)) => {
                let i = n.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(|| CodecError::new(format!("{n} is not an int (32-bit integer)")))?;
                write_long(out, i64::from(i));
            }
            (Node::Long, Value::Number(n)) => {
                let i = n.as_i64().ok_or_else(|| CodecError::new(format!("{n} is not a long (64-bit integer)")))?;
                write_long(out, i);
            }
            (Node::Float, v) => out.extend_from_slice(&(json::as_float(v).ok_or_else(mismatch)? as f32).to_le_bytes()),
            (Node::Double, v) => out.extend_from_slice(&json::as_float(v).ok_or_else(mismatch)?.to_le_bytes()),
            (Node::Bytes, Value::String(s)) => {
                let bytes = json::from_latin1(s)?;
                write_long(out, bytes.len() as i64);
                out.extend_from_slice(&bytes);
            }
            (Node::String, Value::String(s)) => {
                write_long(out, s.len() as i64);
                out.extend_from_slice(s.as_bytes());
            }
            (Node::Fixed { size, .. }, Value::String(s)) => {
                let bytes = json::from_latin1(s)?;
                if bytes.len() != *size {
                    return Err(CodecError::new(format!("{} holds {size} bytes; the string has {}", self.describe(node), bytes.len())));
                }
                out.extend_from_slice(&bytes);
            }
            (Node::Decimal { precision, scale, fixed }, Value::String(_) | Value::Number(_)) => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let unscaled = json::parse_decimal(&text, *scale, *precision)?;
                let size = match fixed {
                    Some(size) => *size,
                    None => {
                        let n = json::twos_complement_len(unscaled);
                        write_long(out, n as i64);
                        n
                    }
                };
                let full = unscaled.to_be_bytes();
                if size < 16 && json::twos_complement_len(unscaled) > size {
                    return Err(CodecError::new(format!("{text} does not fit in {size} bytes")));
                }
                if size <= 16 {
                    out.extend_from_slice(&full[16 - size..]);
                } else {
                    let fill = if unscaled < 0 { 0xff } else { 0 };
                    out.extend(std::iter::repeat_n(fill, size - 16));
                    out.extend_from_slice(&full);
                }
            }
            (Node::Enum { name, symbols }, Value::String(s)) => {
                let i = symbols.iter().position(|x| x == s).ok_or_else(|| CodecError::new(format!("{s:?} is not a symbol of enum {name} ({})", symbols.join(", "))))?;
                write_long(out, i as i64);
            }
            (Node::Record { name, fields }, Value::Object(m)) => {
                for f in fields {
                    match m.get(&f.name) {
                        Some(x) => self.encode_node(f.node, x, out, depth + 1).map_err(|e| e.in_field(&f.name))?,
                        None => match &f.default {
                            Some(d) => {
                                let target = match &self.nodes[f.node] {
                                    Node::Union(branches) => {
                                        write_long(out, 0);
                                        branches[0]
                                    }
                                    _ => f.node,
                                };
                                self.encode_node(target, d, out, depth + 1).map_err(|e| e.in_field(&f.name))?;
                            }
                            None if self.accepts_null(f.node) => self.encode_node(f.node, &Value::Null, out, depth + 1)?,
                            None => return Err(CodecError::new(format!("record {name} needs field {:?}, which is missing and has no default", f.name))),
                        },
                    }
                }
                if let Some(extra) = m.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
                    return Err(CodecError::new(format!("field {extra:?} is not in record {name} (add it to the schema, or leave it out of the record)")));
                }
            }
            (Node::Array(item), Value::Array(items)) => {
                if !items.is_empty() {
                    write_long(out, items.len() as i64);
                    for (i, x) in items.iter().enumerate() {
                        self.encode_node(*item, x, out, depth + 1).map_err(|e| e.in_item(i))?;
                    }
                }
                write_long(out, 0);
            }
            (Node::Map(value), Value::Object(m)) => {
                if !m.is_empty() {
                    write_long(out, m.len() as i64);
                    for (k, x) in m {
                        write_long(out, k.len() as i64);
                        out.extend_from_slice(k.as_bytes());
                        self.encode_node(*value, x, out, depth + 1).map_err(|e| e.in_field(k))?;
                    }
                }
                write_long(out, 0);
            }
            (Node::Union(branches), v) => return self.encode_union(node, branches, v, out, depth),
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    fn accepts_null(&self, node: usize) -> bool {
        match &self.nodes[node] {
            Node::Null => true,
            Node::Union(b) => b.iter().any(|b| matches!(self.nodes[*b], Node::Null)),
            _ => false,
        }
    }

    /// A union's value is plain JSON: the first branch that takes it wins.
    /// Avro's own JSON encoding of a union, `{"TYPE": value}`, is accepted
    /// too where no record or map branch takes the object.
    fn encode_union(&self, node: usize, branches: &[usize], v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
        let start = out.len();
        let mut last = None;
        for (i, b) in branches.iter().enumerate() {
            if !self.could_take(*b, v) {
                continue;
            }
            write_long(out, i as i64);
            match self.encode_node(*b, v, out, depth + 1) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    out.truncate(start);
                    last = Some(e);
                }
            }
        }
        if let Value::Object(m) = v
            && m.len() == 1
        {
            let (tag, inner) = m.iter().next().expect("one member");
            if let Some(i) = branches.iter().position(|b| self.branch_name(*b) == *tag) {
                write_long(out, i as i64);
                return self.encode_node(branches[i], inner, out, depth + 1).inspect_err(|_| out.truncate(start));
            }
        }
        Err(last.unwrap_or_else(|| CodecError::new(format!("expected {}, found {}", self.describe(node), json::kind(v)))))
    }

    /// Whether a JSON value is of a kind the node could take.
    fn could_take(&self, node: usize, v: &Value) -> bool {
        match (&self.nodes[node], v) {
            (Node::Null, Value::Null) | (Node::Boolean, Value::Bool(_)) => true,
            (Node::Int | Node::Long, Value::Number(n)) => n.is_i64(),
            (Node::Float | Node::Double, Value::Number(_)) => true,
            (Node::Float | Node::Double, Value::String(s)) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
            (Node::String | Node::Bytes | Node::Fixed { .. } | Node::Enum { .. }, Value::String(_)) => true,
            (Node::Decimal { .. }, Value::String(_) | Value::Number(_)) => true,
            (Node::Record { .. } | Node::Map(_), Value::Object(_)) => true,
            (Node::Array(_), Value::Array(_)) => true,
            _ => false,
        }
    }

    fn branch_name(&self, node: usize) -> String {
        match &self.nodes[node] {
            Node::Record { name, .. } | Node::Enum { name, .. } | Node::Fixed { name, .. } => name.clone(),
            Node::Array(_) => "array".into(),
            Node::Map(_) => "map".into(),
            Node::Decimal { fixed: None, .. } => "bytes".into(),
            _ => self.describe(node),
        }
    }
}

impl Compiler {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn compile(&mut self, v: &Value, ns: Option<&str>, at: &str) -> Result<usize, SchemaError> {
        match v {
            Value::String(name) => {
                if let Some(p) = primitive(name) {
                    return Ok(self.push(p));
                }
                let full = fullname(name, ns);
                self.names
                    .get(&full)
                    .or_else(|| self.names.get(name))
                    .copied()
                    .ok_or_else(|| SchemaError(format!("{at}: unknown type {name:?} (named types must be defined before they are used)")))
            }
            Value::Array(branches) => {
                if branches.is_empty() {
                    return Err(SchemaError(format!("{at}: a union needs at least one type")));
                }
                let mut nodes = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter().enumerate() {
                    if b.is_array() {
                        return Err(SchemaError(format!("{at}: a union cannot hold a union directly")));
                    }
                    nodes.push(self.compile(b, ns, &format!("{at}, union branch {i}"))?);
                }
                Ok(self.push(Node::Union(nodes)))
            }
            Value::Object(o) => {
                let ty = o.get("type").ok_or_else(|| SchemaError(format!("{at}: a schema object needs a \"type\"")))?;
                let logical = o.get("logicalType").and_then(Value::as_str);
                let ty = match ty {
                    Value::String(t) => t.as_str(),
                    // {"type": {"type": "int"}} and {"type": ["null", ...]}
                    other => return self.compile(other, ns, at),
                };
                if logical == Some("decimal") && matches!(ty, "bytes" | "fixed") {
                    let precision = o.get("precision").and_then(Value::as_u64).filter(|p| (1..=38).contains(p));
                    let scale = o.get("scale").and_then(Value::as_u64).unwrap_or(0);
                    let Some(precision) = precision else {
                        return Err(SchemaError(format!("{at}: a decimal needs a precision from 1 to 38 (weir reads decimals of up to 38 digits)")));
                    };
                    if scale > precision {
                        return Err(SchemaError(format!("{at}: a decimal's scale ({scale}) cannot exceed its precision ({precision})")));
                    }
                    let fixed = if ty == "fixed" { Some(self.fixed_size(o, at)?) } else { None };
                    let node = self.push(Node::Decimal { precision: precision as u32, scale: scale as u32, fixed });
                    if ty == "fixed" {
                        self.define(o, ns, at, node)?;
                    }
                    return Ok(node);
                }
                if let Some(p) = primitive(ty) {
                    return Ok(self.push(p));
                }
                match ty {
                    "record" | "error" | "enum" | "fixed" => {
                        let (full, inner_ns) = self.name_of(o, ns, at)?;
                        let node = self.push(Node::Pending);
                        self.names.insert(full.clone(), node);
                        let compiled = match ty {
                            "enum" => {
                                let symbols: Vec<String> = o
                                    .get("symbols")
                                    .and_then(Value::as_array)
                                    .ok_or_else(|| SchemaError(format!("{at}: enum {full} needs \"symbols\"")))?
                                    .iter()
                                    .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| SchemaError(format!("{at}: enum {full}'s symbols must be strings"))))
                                    .collect::<Result<_, _>>()?;
                                Node::Enum { name: full, symbols }
                            }
                            "fixed" => Node::Fixed { size: self.fixed_size(o, at)?, name: full },
                            _ => {
                                let list = o.get("fields").and_then(Value::as_array).ok_or_else(|| SchemaError(format!("{at}: record {full} needs \"fields\"")))?;
                                let mut fields = Vec::with_capacity(list.len());
                                for f in list {
                                    let name = f
                                        .get("name")
                                        .and_then(Value::as_str)
                                        .ok_or_else(|| SchemaError(format!("{at}: a field of record {full} has no \"name\"")))?;
                                    if fields.iter().any(|x: &Field| x.name == name) {
                                        return Err(SchemaError(format!("{at}: record {full} has two fields named {name:?}")));
                                    }
                                    let fty = f.get("type").ok_or_else(|| SchemaError(format!("{at}: field {full}.{name} has no \"type\"")))?;
                                    let child = self.compile(fty, inner_ns.as_deref(), &format!("field {full}.{name}"))?;
                                    let mut key = Vec::new();
                                    json::string(&mut key, name);
                                    key.push(b':');
                                    fields.push(Field { name: name.to_owned(), key, node: child, default: f.get("default").cloned() });
                                }
                                Node::Record { name: full, fields }
                            }
                        };
                        self.nodes[node] = compiled;
                        Ok(node)
                    }
                    "array" => {
                        let items = o.get("items").ok_or_else(|| SchemaError(format!("{at}: an array needs \"items\"")))?;
                        let item = self.compile(items, ns, &format!("{at}, array items"))?;
                        Ok(self.push(Node::Array(item)))
                    }
                    "map" => {
                        let values = o.get("values").ok_or_else(|| SchemaError(format!("{at}: a map needs \"values\"")))?;
                        let value = self.compile(values, ns, &format!("{at}, map values"))?;
                        Ok(self.push(Node::Map(value)))
                    }
                    other => self.compile(&Value::String(other.to_owned()), ns, at),
                }
            }
            other => Err(SchemaError(format!("{at}: {other} is not a schema"))),
        }
    }

    fn fixed_size(&self, o: &serde_json::Map<String, Value>, at: &str) -> Result<usize, SchemaError> {
        o.get("size").and_then(Value::as_u64).map(|s| s as usize).ok_or_else(|| SchemaError(format!("{at}: a fixed type needs a \"size\"")))
    }

    /// A decimal on a named fixed type is still a named type.
    fn define(&mut self, o: &serde_json::Map<String, Value>, ns: Option<&str>, at: &str, node: usize) -> Result<(), SchemaError> {
        let (full, _) = self.name_of(o, ns, at)?;
        self.names.insert(full, node);
        Ok(())
    }

    fn name_of(&self, o: &serde_json::Map<String, Value>, ns: Option<&str>, at: &str) -> Result<(String, Option<String>), SchemaError> {
        let name = o.get("name").and_then(Value::as_str).ok_or_else(|| SchemaError(format!("{at}: a named type needs a \"name\"")))?;
        let own_ns = o.get("namespace").and_then(Value::as_str).or(ns);
        let full = fullname(name, own_ns);
        if !full.split('.').all(valid_name) {
            return Err(SchemaError(format!("{at}: {full:?} is not a valid Avro name")));
        }
        if self.names.contains_key(&full) {
            return Err(SchemaError(format!("{at}: the type {full} is defined twice")));
        }
        let inner = full.rsplit_once('.').map(|(ns, _)| ns.to_owned());
        Ok((full, inner))
    }
}

fn check_size(out: &[u8]) -> Result<(), CodecError> {
    if out.len() > MAX_JSON {
        return Err(CodecError::new(format!("the record's JSON would exceed {} MiB", MAX_JSON >> 20)));
    }
    Ok(())
}

/// Appends a zigzag varint.
fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn short(&self, need: usize) -> CodecError {
        CodecError::new(format!("the record ends early: {need} more bytes were expected"))
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.data.get(self.at).ok_or_else(|| self.short(1))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(|| self.short(n - (self.data.len() - self.at).min(n)))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn long(&mut self) -> Result<i64, CodecError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(CodecError::new("a varint is longer than 64 bits"));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(CodecError::new("a varint is longer than 64 bits"))
    }

    /// A length: never negative, never more than the bytes left.
    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.long()?;
        if n < 0 {
            return Err(CodecError::new(format!("a length is negative ({n})")));
        }
        if n as u64 > (self.data.len() - self.at) as u64 {
            return Err(CodecError::new(format!("a length of {n} bytes runs past the end of the record ({} bytes left)", self.data.len() - self.at)));
        }
        Ok(n as usize)
    }

    /// A block's item count (a negative count is followed by the block's
    /// size in bytes, which is skipped).
    fn block(&mut self) -> Result<u64, CodecError> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
            return Ok(n.unsigned_abs());
        }
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests;
