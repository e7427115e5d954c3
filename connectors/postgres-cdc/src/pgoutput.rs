//! Decoding `pgoutput` (protocol version 1, PostgreSQL's built-in logical
//! decoding plugin) and rendering each change as a weir record.
//!
//! A record's key is the JSON object of the table's key columns (its
//! replica identity: the primary key unless set otherwise); its value is
//!
//! ```json
//! {"op":"update","table":"public.orders","lsn":"0/1A2B3C8","before":{"id":7},"after":{"id":7,"qty":3}}
//! ```
//!
//! `op` is `snapshot` (a row of the initial snapshot), `insert`, `update`,
//! `delete` or `truncate`. Column values keep their JSON types where
//! PostgreSQL's have one: integers and finite numerics as numbers, booleans
//! as booleans, `json`/`jsonb` as nested JSON, NULL as `null`, everything
//! else as the string PostgreSQL prints. A TOASTed value an update left
//! unchanged is not sent by PostgreSQL and is left out of `after` (set
//! `REPLICA IDENTITY FULL` on the table to get every column).

use std::collections::HashMap;

use weir_format::json::push_str;

use crate::wire::{WireError, be_u16, be_u32, be_u64, fmt_lsn};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// A column of a published table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
    /// Part of the replica identity (the key).
    pub key: bool,
}

/// A published table as the stream described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// `schema.table`.
    pub table: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

/// What one replication message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A transaction starts; it commits at `final_lsn`, at `commit_ms`.
    Begin {
        /// LSN of its commit record.
        final_lsn: u64,
        /// Commit time, ms since the Unix epoch.
        commit_ms: i64,
    },
    /// The transaction commits; the stream after it starts at `end_lsn`.
    Commit {
        /// End of its commit record.
        end_lsn: u64,
    },
    /// A row change (or a truncate), rendered into the decoder's buffers.
    Change,
    /// A message with no record (relation and type descriptions, origins).
    Nothing,
}

/// Decodes a stream's messages, remembering the relations it described.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    /// The key of the last [`Event::Change`], JSON.
    pub key: Vec<u8>,
    /// The value of the last [`Event::Change`], JSON.
    pub value: Vec<u8>,
    /// The commit LSN of the transaction being decoded.
    lsn: u64,
}

fn cstr(b: &[u8], at: &mut usize) -> Result<String, WireError> {
    let rest = b.get(*at..).ok_or_else(|| WireError::Protocol("message too short".into()))?;
    let n = rest.iter().position(|c| *c == 0).ok_or_else(|| WireError::Protocol("unterminated string".into()))?;
    *at += n + 1;
    Ok(String::from_utf8_lossy(&rest[..n]).into_owned())
}

/// A tuple's columns: `None` for NULL, `Some(None)` for an unchanged
/// TOASTed value, `Some(Some(text))` otherwise.
type Cells<'a> = Vec<Cell<'a>>;

fn tuple<'a>(b: &'a [u8], at: &mut usize) -> Result<Cells<'a>, WireError> {
    let n = be_u16(b, *at)? as usize;
    *at += 2;
    let mut cells = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = *b.get(*at).ok_or_else(|| WireError::Protocol("short tuple".into()))?;
        *at += 1;
        cells.push(match kind {
            b'n' => None,
            b'u' => Some(None),
            b't' => {
                let len = be_u32(b, *at)? as usize;
                *at += 4;
                let text = b.get(*at..*at + len).ok_or_else(|| WireError::Protocol("short tuple value".into()))?;
                *at += len;
                Some(Some(text))
            }
            other => return Err(WireError::Protocol(format!("tuple value kind {:?} (binary values are not asked for)", other as char))),
        });
    }
    Ok(cells)
}

impl Decoder {
    /// Decodes one `pgoutput` message.
    pub fn decode(&mut self, m: &[u8]) -> Result<Event, WireError> {
        let Some((&tag, b)) = m.split_first() else { return Ok(Event::Nothing) };
        match tag {
            b'B' => {
                let final_lsn = be_u64(b, 0)?;
                let ts = be_u64(b, 8)? as i64;
                self.lsn = final_lsn;
                Ok(Event::Begin { final_lsn, commit_ms: (ts + PG_EPOCH_US) / 1000 })
            }
            b'C' => Ok(Event::Commit { end_lsn: be_u64(b, 9)? }),
            b'R' => {
                let id = be_u32(b, 0)?;
                let mut at = 4;
                let schema = cstr(b, &mut at)?;
                let name = cstr(b, &mut at)?;
                at += 1; // replica identity setting
                let n = be_u16(b, at)? as usize;
                at += 2;
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let flags = *b.get(at).ok_or_else(|| WireError::Protocol("short relation".into()))?;
                    at += 1;
                    let name = cstr(b, &mut at)?;
                    let type_oid = be_u32(b, at)?;
                    at += 8; // type OID, type modifier
                    columns.push(Column { name, type_oid, key: flags & 1 == 1 });
                }
                self.relations.insert(id, Relation { table: format!("{schema}.{name}"), columns });
                Ok(Event::Nothing)
            }
            b'I' | b'U' | b'D' => {
                let id = be_u32(b, 0)?;
                let rel = self.relations.get(&id).ok_or_else(|| WireError::Protocol(format!("change to relation {id} before its description")))?;
                let mut at = 4;
                let (mut old, mut new) = (None, None);
                let mut old_is_key_only = false;
                while at < b.len() {
                    let kind = b[at];
                    at += 1;
                    let cells = tuple(b, &mut at)?;
                    match kind {
                        b'K' => {
                            old = Some(cells);
                            old_is_key_only = true;
                        }
                        b'O' => old = Some(cells),
                        b'N' => new = Some(cells),
                        other => return Err(WireError::Protocol(format!("tuple kind {:?}", other as char))),
                    }
                }
                let op = match tag {
                    b'I' => "insert",
                    b'U' => "update",
                    _ => "delete",
                };
                render(&mut self.key, &mut self.value, op, rel, self.lsn, old.as_deref().map(|o| (o, old_is_key_only)), new.as_deref())?;
                Ok(Event::Change)
            }
            b'T' => {
                // One record per truncate message, naming every table it empties.
                let n = be_u32(b, 0)? as usize;
                self.key.clear();
                self.value.clear();
                self.value.extend_from_slice(b"{\"op\":\"truncate\",\"tables\":[");
                for i in 0..n {
                    let id = be_u32(b, 5 + 4 * i)?;
                    let rel = self.relations.get(&id).ok_or_else(|| WireError::Protocol(format!("truncate of relation {id} before its description")))?;
                    if i > 0 {
                        self.value.push(b',');
                    }
                    push_str(&mut self.value, &rel.table);
                }
                self.value.extend_from_slice(b"],\"lsn\":\"");
                self.value.extend_from_slice(fmt_lsn(self.lsn).as_bytes());
                self.value.extend_from_slice(b"\"}");
                Ok(Event::Change)
            }
            _ => Ok(Event::Nothing), // 'Y' type, 'O' origin, 'M' message
        }
    }
}

/// A tuple's cells, as [`render`] takes them: `None` for NULL,
/// `Some(None)` for a value not sent, `Some(Some(text))` otherwise.
pub type Cell<'a> = Option<Option<&'a [u8]>>;

/// Writes the key and value of one change of `rel` (see the module docs):
/// `old` is the row before (and whether it holds only the key columns),
/// `new` the row after.
pub fn render(key: &mut Vec<u8>, value: &mut Vec<u8>, op: &str, rel: &Relation, lsn: u64, old: Option<(&[Cell<'_>], bool)>, new: Option<&[Cell<'_>]>) -> Result<(), WireError> {
    let key_from = new.or(old.map(|o| o.0)).ok_or_else(|| WireError::Protocol("change without a row".into()))?;
    key.clear();
    render_row(key, rel, key_from, true);
    value.clear();
    value.extend_from_slice(b"{\"op\":\"");
    value.extend_from_slice(op.as_bytes());
    value.extend_from_slice(b"\",\"table\":");
    push_str(value, &rel.table);
    value.extend_from_slice(b",\"lsn\":\"");
    value.extend_from_slice(fmt_lsn(lsn).as_bytes());
    value.extend_from_slice(b"\",\"before\":");
    match old {
        Some((cells, keys_only)) => render_row(value, rel, cells, keys_only),
        None => value.extend_from_slice(b"null"),
    }
    value.extend_from_slice(b",\"after\":");
    match new {
        Some(cells) => render_row(value, rel, cells, false),
        None => value.extend_from_slice(b"null"),
    }
    value.push(b'}');
    Ok(())
}

/// Appends the JSON object of a row (only its key columns with `keys_only`).
fn render_row(out: &mut Vec<u8>, rel: &Relation, cells: &[Cell<'_>], keys_only: bool) {
    out.push(b'{');
    let mut first = true;
    for (col, cell) in rel.columns.iter().zip(cells) {
        if keys_only && !col.key {
            continue;
        }
        let value = match cell {
            Some(None) => continue, // unchanged TOAST: not sent
            Some(Some(text)) => Some(*text),
            None => None,
        };
        if !first {
            out.push(b',');
        }
        first = false;
        push_str(out, &col.name);
        out.push(b':');
        push_value(out, col.type_oid, value);
    }
    out.push(b'}');
}

/// Appends one column value, as JSON, from PostgreSQL's text form.
pub fn push_value(out: &mut Vec<u8>, type_oid: u32, text: Option<&[u8]>) {
    let Some(text) = text else {
        out.extend_from_slice(b"null");
        return;
    };
    match type_oid {
        16 => out.extend_from_slice(if text == b"t" { b"true" } else { b"false" }),
        20 | 21 | 23 | 26 | 700 | 701 | 1700 if is_json_number(text) => out.extend_from_slice(text),
        114 | 3802 => out.extend_from_slice(text),
        _ => push_str(out, &String::from_utf8_lossy(text)),
    }
}

/// True when PostgreSQL's text of a number is also a JSON number (not
/// `NaN` or `Infinity`).
fn is_json_number(t: &[u8]) -> bool {
    let digits = t.strip_prefix(b"-").unwrap_or(t);
    digits.first().is_some_and(u8::is_ascii_digit) && t.iter().all(|c| c.is_ascii_digit() || b"-+.eE".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_msg() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.extend_from_slice(b"public\0orders\0d");
        m.extend_from_slice(&3u16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "id", 23u32), (0, "note", 25), (0, "price", 1700)] {
            m.push(flags);
            m.extend_from_slice(name.as_bytes());
            m.push(0);
            m.extend_from_slice(&oid.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    fn tuple_bytes(kind: u8, cells: &[Option<&str>]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(cells.len() as u16).to_be_bytes());
        for c in cells {
            match c {
                None => m.push(b'n'),
                Some(t) => {
                    m.push(b't');
                    m.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    m.extend_from_slice(t.as_bytes());
                }
            }
        }
        m
    }

    #[test]
    fn inserts_updates_and_deletes_render_with_types() {
        let mut d = Decoder::default();
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        begin.extend_from_slice(&0u64.to_be_bytes());
        begin.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(d.decode(&begin).unwrap(), Event::Begin { final_lsn: 0x1_0000_0010, commit_ms: PG_EPOCH_US / 1000 });
        assert_eq!(d.decode(&relation_msg()).unwrap(), Event::Nothing);
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16384u32.to_be_bytes());
        insert.extend(tuple_bytes(b'N', &[Some("7"), Some("say \"hi\""), Some("NaN")]));
        assert_eq!(d.decode(&insert).unwrap(), Event::Change);
        assert_eq!(String::from_utf8_lossy(&d.key), r#"{"id":7}"#);
        assert_eq!(
            String::from_utf8_lossy(&d.value),
            r#"{"op":"insert","table":"public.orders","lsn":"1/10","before":null,"after":{"id":7,"note":"say \"hi\"","price":"NaN"}}"#
        );
        let mut delete = vec![b'D'];
        delete.extend_from_slice(&16384u32.to_be_bytes());
        delete.extend(tuple_bytes(b'K', &[Some("7"), None, None]));
        d.decode(&delete).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&d.value),
            r#"{"op":"delete","table":"public.orders","lsn":"1/10","before":{"id":7},"after":null}"#
        );
        let mut update = vec![b'U'];
        update.extend_from_slice(&16384u32.to_be_bytes());
        update.extend(tuple_bytes(b'N', &[Some("8"), None, Some("-1.50")]));
        d.decode(&update).unwrap();
        assert_eq!(String::from_utf8_lossy(&d.key), r#"{"id":8}"#);
        assert!(String::from_utf8_lossy(&d.value).ends_with(r#""before":null,"after":{"id":8,"note":null,"price":-1.50}}"#));
    }

    #[test]
    fn a_change_before_its_relation_is_a_protocol_error() {
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&1u32.to_be_bytes());
        insert.extend(tuple_bytes(b'N', &[Some("1")]));
        assert!(Decoder::default().decode(&insert).unwrap_err().to_string().contains("before its description"));
    }

    #[test]
    fn numbers_only_where_json_has_them() {
        for (oid, text, json) in [(23, "-12", "-12"), (701, "1e+20", "1e+20"), (701, "Infinity", "\"Infinity\""), (16, "t", "true"), (3802, "{\"a\": 1}", "{\"a\": 1}"), (1184, "2026-12-05 14:00:00+00", "\"2026-12-05 14:00:00+00\"")] {
            let mut out = Vec::new();
            push_value(&mut out, oid, Some(text.as_bytes()));
            assert_eq!(String::from_utf8_lossy(&out), json, "oid {oid}");
        }
    }
}
