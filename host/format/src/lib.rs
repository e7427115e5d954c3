//! weir's record frame format: how a batch of records is laid out in one
//! contiguous byte buffer.
//!
//! The same bytes are used everywhere a batch travels: sources write them,
//! network buffers carry them between tasks, and they cross the Wasm
//! boundary as a single `list<u8>` (see `wit/types.wit`). Nothing is
//! re-encoded per record between a source and a sink, and a guest reads
//! records in place through [`RecordRef`] views.
//!
//! A frame is a fixed 20-byte little-endian header followed by the payload:
//!
//! ```text
//! timestamp: i64 | key_len: u32 (u32::MAX = no key) | value_len: u32 | headers_len: u32
//! key bytes | value bytes | header bytes
//! ```
//!
//! Header bytes are a sequence of `name_len: u16, name, value_len: u32, value`.
//! A batch is frames back to back, with no padding and no count: a reader
//! walks it with [`Frames`]. Every read is bounds-checked; a malformed buffer
//! yields [`FrameError`] and never panics.
//!
//! The length fields bound what a record can hold ([`MAX_KEY`],
//! [`MAX_FIELD`], [`MAX_HEADER_NAME`]). Code that writes records from
//! outside (a broker, a file) uses [`BatchWriter::try_push`], which returns
//! [`TooLarge`] for a record that does not fit, so the caller can name it;
//! [`BatchWriter::push`] is for records whose sizes the caller controls.
//!
//! ```
//! use weir_format::{BatchWriter, Frames};
//!
//! let mut w = BatchWriter::new();
//! w.push(Some(b"user-1"), b"{\"amount\":3}", 1_700_000_000_000, &[]);
//! w.push(None, b"hello", 42, &[(b"source", b"gen")]);
//! let bytes = w.finish();
//!
//! let records: Vec<_> = Frames::new(&bytes).collect::<Result<_, _>>().unwrap();
//! assert_eq!(records.len(), 2);
//! assert_eq!(records[0].key, Some(&b"user-1"[..]));
//! assert_eq!(records[1].headers().next().unwrap().unwrap(), (&b"source"[..], &b"gen"[..]));
//! ```

use std::fmt;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 20;

/// `key_len` value that marks a record without a key.
pub const NO_KEY: u32 = u32::MAX;

/// A record read in place from a batch buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The record key, if it has one.
    pub key: Option<&'a [u8]>,
    /// The record value.
    pub value: &'a [u8],
    /// Encoded headers; iterate them with [`RecordRef::headers`].
    pub raw_headers: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Iterates over the record's headers as `(name, value)` pairs.
    pub fn headers(&self) -> Headers<'a> {
        Headers { buf: self.raw_headers }
    }

    /// Number of bytes this record takes in frame format.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.key.map_or(0, <[u8]>::len) + self.value.len() + self.raw_headers.len()
    }
}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("timestamp", &self.timestamp)
            .field("key", &self.key.map(Preview))
            .field("value", &Preview(self.value))
            .field("headers_len", &self.raw_headers.len())
            .finish()
    }
}

/// Shows bytes as text when they are UTF-8, cut to 80 bytes, for error messages.
#[derive(Clone, Copy)]
pub struct Preview<'a>(pub &'a [u8]);

impl fmt::Debug for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 80;
        let cut = &self.0[..self.0.len().min(MAX)];
        match std::str::from_utf8(cut) {
            Ok(s) => write!(f, "{s:?}")?,
            Err(_) => {
                f.write_str("0x")?;
                for b in cut {
                    write!(f, "{b:02x}")?;
                }
            }
        }
        if self.0.len() > MAX {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// A batch buffer that does not hold whole, well-formed frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Byte offset of the frame that is broken.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed record frame at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for FrameError {}

/// Longest key a frame holds (`u32::MAX` marks "no key").
pub const MAX_KEY: usize = NO_KEY as usize - 1;
/// Longest value, header value or header block a frame holds.
pub const MAX_FIELD: usize = u32::MAX as usize;
/// Longest header name a frame holds.
pub const MAX_HEADER_NAME: usize = u16::MAX as usize;

/// A part of a record, for [`TooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The key.
    Key,
    /// The value.
    Value,
    /// A header's name.
    HeaderName,
    /// A header's value.
    HeaderValue,
    /// All headers together, encoded.
    Headers,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Key => "key",
            Self::Value => "value",
            Self::HeaderName => "header name",
            Self::HeaderValue => "header value",
            Self::Headers => "header block",
        })
    }
}

/// A record field larger than the frame format can hold: the record cannot
/// enter a batch. [`BatchWriter::try_push`] returns it; the caller names
/// the record (topic, partition and offset; file and line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Which field.
    pub field: Field,
    /// Its length in bytes.
    pub len: usize,
    /// The most the frame format holds for it.
    pub max: usize,
}

impl TooLarge {
    #[inline]
    fn check(field: Field, len: usize, max: usize) -> Result<(), Self> {
        if len > max { Err(Self { field, len, max }) } else { Ok(()) }
    }
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "its {} is {} bytes, more than weir's record format holds ({} bytes)", self.field, self.len, self.max)
    }
}

impl std::error::Error for TooLarge {}

#[inline]
fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Reads the frame that starts at `offset`; returns it and the offset after it.
#[inline]
pub fn read_frame(buf: &[u8], offset: usize) -> Result<(RecordRef<'_>, usize), FrameError> {
    let err = |reason| FrameError { offset, reason };
    let Some(head) = buf.get(offset..offset + HEADER_LEN) else {
        return Err(err("truncated header"));
    };
    let timestamp = i64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
    let key_len = u32_at(head, 8);
    let value_len = u32_at(head, 12) as usize;
    let headers_len = u32_at(head, 16) as usize;
    let mut at = offset + HEADER_LEN;
    let key = if key_len == NO_KEY {
        None
    } else {
        let end = at.checked_add(key_len as usize).ok_or_else(|| err("key length overflows"))?;
        let key = buf.get(at..end).ok_or_else(|| err("truncated key"))?;
        at = end;
        Some(key)
    };
    let end = at.checked_add(value_len).ok_or_else(|| err("value length overflows"))?;
    let value = buf.get(at..end).ok_or_else(|| err("truncated value"))?;
    at = end;
    let end = at.checked_add(headers_len).ok_or_else(|| err("headers length overflows"))?;
    let raw_headers = buf.get(at..end).ok_or_else(|| err("truncated headers"))?;
    Ok((RecordRef { timestamp, key, value, raw_headers }, end))
}

/// Iterator over the records of a batch buffer.
///
/// After the first [`FrameError`] the iterator ends.
#[derive(Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Frames<'a> {
    /// Starts reading `buf` from its first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, offset: 0 }
    }

    /// Byte offset of the next frame.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<RecordRef<'a>, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.buf.len() {
            return None;
        }
        match read_frame(self.buf, self.offset) {
            Ok((rec, next)) => {
                self.offset = next;
                Some(Ok(rec))
            }
            Err(e) => {
                self.offset = self.buf.len();
                Some(Err(e))
            }
        }
    }
}

/// Counts the records of a batch and checks that it is well formed.
pub fn count(buf: &[u8]) -> Result<usize, FrameError> {
    let mut n = 0;
    for r in Frames::new(buf) {
        r?;
        n += 1;
    }
    Ok(n)
}

/// Iterator over a record's headers.
#[derive(Clone)]
pub struct Headers<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let bad = FrameError { offset: 0, reason: "malformed header block" };
        let parsed = (|| {
            let name_len = u16::from_le_bytes(self.buf.get(0..2)?.try_into().ok()?) as usize;
            let name = self.buf.get(2..2 + name_len)?;
            let at = 2 + name_len;
            let value_len = u32::from_le_bytes(self.buf.get(at..at + 4)?.try_into().ok()?) as usize;
            let value = self.buf.get(at + 4..at + 4 + value_len)?;
            Some((name, value, at + 4 + value_len))
        })();
        match parsed {
            Some((name, value, used)) => {
                self.buf = &self.buf[used..];
                Some(Ok((name, value)))
            }
            None => {
                self.buf = &[];
                Some(Err(bad))
            }
        }
    }
}

/// Appends frames to a growable buffer.
///
/// The writer can also borrow an existing `Vec<u8>` (see
/// [`BatchWriter::from_vec`]) so a host network buffer or a guest output
/// buffer is filled without an intermediate copy.
#[derive(Default, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    records: usize,
}

impl fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchWriter").field("bytes", &self.buf.len()).field("records", &self.records).finish()
    }
}

impl BatchWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes), records: 0 }
    }

    /// Continues writing after the frames already in `buf`.
    pub fn from_vec(buf: Vec<u8>, records: usize) -> Self {
        Self { buf, records }
    }

    /// Appends one record.
    ///
    /// For records whose sizes the caller controls. A record from outside
    /// (a broker, a file, a peer) goes through [`BatchWriter::try_push`].
    ///
    /// # Panics
    ///
    /// When a field is larger than the frame format can hold (see
    /// [`TooLarge`]).
    #[inline]
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64, headers: &[(&[u8], &[u8])]) {
        if let Err(e) = self.try_push(key, value, timestamp, headers) {
            panic!("{e}");
        }
    }

    /// Appends one record, or says which field does not fit the frame
    /// format and leaves the batch as it was.
    #[inline]
    pub fn try_push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64, headers: &[(&[u8], &[u8])]) -> Result<(), TooLarge> {
        let mut headers_len: usize = 0;
        for (name, value) in headers {
            TooLarge::check(Field::HeaderName, name.len(), MAX_HEADER_NAME)?;
            TooLarge::check(Field::HeaderValue, value.len(), MAX_FIELD)?;
            headers_len = headers_len.saturating_add(6 + name.len() + value.len());
        }
        TooLarge::check(Field::Headers, headers_len, MAX_FIELD)?;
        let key_len = key.map(<[u8]>::len);
        self.check_header(key_len, value.len(), headers_len)?;
        self.write_header(key_len, value.len(), headers_len, timestamp);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        self.buf.extend_from_slice(value);
        for (name, value) in headers {
            // Both checked above.
            self.buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(name);
            self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(value);
        }
        self.records += 1;
        Ok(())
    }

    /// Appends a record read from another batch, headers included, as one copy.
    #[inline]
    pub fn push_record(&mut self, rec: &RecordRef<'_>) {
        // The lengths come from a frame, so they fit one.
        self.write_header(rec.key.map(<[u8]>::len), rec.value.len(), rec.raw_headers.len(), rec.timestamp);
        if let Some(k) = rec.key {
            self.buf.extend_from_slice(k);
        }
        self.buf.extend_from_slice(rec.value);
        self.buf.extend_from_slice(rec.raw_headers);
        self.records += 1;
    }

    /// Appends a record whose value is produced in place by `write_value`,
    /// which appends the value's bytes to the vector it is given. This avoids
    /// building the value in a separate allocation first.
    ///
    /// # Panics
    ///
    /// When the key or the value written is larger than the frame format
    /// can hold (see [`TooLarge`]); the caller controls both.
    #[inline]
    pub fn push_with(&mut self, key: Option<&[u8]>, timestamp: i64, write_value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        let key_len = key.map(<[u8]>::len);
        if let Err(e) = self.check_header(key_len, 0, 0) {
            panic!("{e}");
        }
        self.write_header(key_len, 0, 0, timestamp);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        let value_start = self.buf.len();
        write_value(&mut self.buf);
        let value_len = self.buf.len() - value_start;
        if let Err(e) = TooLarge::check(Field::Value, value_len, MAX_FIELD) {
            self.buf.truncate(start);
            panic!("{e}");
        }
        self.buf[start + 12..start + 16].copy_from_slice(&(value_len as u32).to_le_bytes());
        self.records += 1;
    }

    /// Like [`BatchWriter::push_with`], also copying encoded headers (for
    /// example [`RecordRef::raw_headers`] of the input record).
    #[inline]
    pub fn push_with_raw_headers(&mut self, key: Option<&[u8]>, timestamp: i64, raw_headers: &[u8], write_value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.push_with(key, timestamp, write_value);
        self.buf.extend_from_slice(raw_headers);
        self.buf[start + 16..start + 20].copy_from_slice(&(raw_headers.len() as u32).to_le_bytes());
    }

    /// Checks the lengths a frame header holds.
    #[inline]
    fn check_header(&self, key_len: Option<usize>, value_len: usize, headers_len: usize) -> Result<(), TooLarge> {
        if let Some(n) = key_len {
            TooLarge::check(Field::Key, n, MAX_KEY)?;
        }
        TooLarge::check(Field::Value, value_len, MAX_FIELD)?;
        TooLarge::check(Field::Headers, headers_len, MAX_FIELD)
    }

    /// Writes a frame header whose lengths were checked (or come from a frame).
    #[inline]
    fn write_header(&mut self, key_len: Option<usize>, value_len: usize, headers_len: usize, timestamp: i64) {
        let key_len = key_len.map_or(NO_KEY, |n| n as u32);
        let mut head = [0u8; HEADER_LEN];
        head[0..8].copy_from_slice(&timestamp.to_le_bytes());
        head[8..12].copy_from_slice(&key_len.to_le_bytes());
        head[12..16].copy_from_slice(&(value_len as u32).to_le_bytes());
        head[16..20].copy_from_slice(&(headers_len as u32).to_le_bytes());
        self.buf.extend_from_slice(&head);
    }

    /// Appends whole frames copied from another batch buffer (`frames` must
    /// hold `records` well-formed frames).
    pub fn extend_raw(&mut self, frames: &[u8], records: usize) {
        self.buf.extend_from_slice(frames);
        self.records += records;
    }

    /// Number of records written so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The frames written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops every record, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }

    /// Returns the buffer, leaving the writer empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.records = 0;
        std::mem::take(&mut self.buf)
    }

    /// Returns the buffer.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Length-prefixed byte strings (`u32` little-endian length, then bytes), the
/// encoding of `state.get-many` and `state.apply` in the WIT contract.
pub mod lp {
    /// Length marking an absent value.
    pub const ABSENT: u32 = u32::MAX;

    /// Length marking, in a `get-many` response, a key equal to an earlier
    /// key of the request; a `u32` index of that key follows.
    pub const REPEAT: u32 = u32::MAX - 1;

    /// One entry of a `get-many` response.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Entry<'a> {
        /// The stored value.
        Value(&'a [u8]),
        /// No value stored.
        Absent,
        /// Same key as request entry `n` (earlier in the request).
        Repeat(u32),
    }

    /// Appends a repeat marker for request entry `index`.
    pub fn put_repeat(buf: &mut Vec<u8>, index: u32) {
        buf.extend_from_slice(&REPEAT.to_le_bytes());
        buf.extend_from_slice(&index.to_le_bytes());
    }

    /// Appends one length-prefixed byte string.
    #[inline]
    pub fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
        buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(bytes);
    }

    /// Appends an optional byte string (`None` is written as [`ABSENT`]).
    #[inline]
    pub fn put_opt(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => put(buf, b),
            None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
        }
    }

    /// Reads sequential length-prefixed byte strings from a buffer.
    #[derive(Debug, Clone)]
    pub struct Reader<'a> {
        buf: &'a [u8],
    }

    impl<'a> Reader<'a> {
        /// Starts reading at the first byte of `buf`.
        pub fn new(buf: &'a [u8]) -> Self {
            Self { buf }
        }

        /// True when every byte has been read.
        pub fn is_empty(&self) -> bool {
            self.buf.is_empty()
        }

        /// How many byte strings are left to read (up to a truncated one).
        pub fn remaining(&self) -> usize {
            let mut r = self.clone();
            let mut n = 0;
            while !r.is_empty() && r.opt().is_some() {
                n += 1;
            }
            n
        }

        /// Reads one byte.
        pub fn u8(&mut self) -> Option<u8> {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            Some(b)
        }

        /// Reads an optional byte string; `None` for a truncated buffer.
        #[inline]
        pub fn opt(&mut self) -> Option<Option<&'a [u8]>> {
            let len = u32::from_le_bytes(self.buf.get(0..4)?.try_into().ok()?);
            if len == ABSENT {
                self.buf = &self.buf[4..];
                return Some(None);
            }
            let end = 4usize.checked_add(len as usize)?;
            let bytes = self.buf.get(4..end)?;
            self.buf = &self.buf[end..];
            Some(Some(bytes))
        }

        /// Reads one `get-many` response entry; `None` for a truncated buffer.
        #[inline]
        pub fn entry(&mut self) -> Option<Entry<'a>> {
            let len = u32::from_le_bytes(self.buf.get(0..4)?.try_into().ok()?);
            match len {
                ABSENT => {
                    self.buf = &self.buf[4..];
                    Some(Entry::Absent)
                }
                REPEAT => {
                    let n = u32::from_le_bytes(self.buf.get(4..8)?.try_into().ok()?);
                    self.buf = &self.buf[8..];
                    Some(Entry::Repeat(n))
                }
                _ => self.opt().map(|v| v.map_or(Entry::Absent, Entry::Value)),
            }
        }

        /// Reads a byte string; `None` for a truncated buffer or an absent marker.
        #[inline]
        pub fn bytes(&mut self) -> Option<&'a [u8]> {
            self.opt().flatten()
        }
    }
}

/// Operations of `state.apply` (see `wit/state.wit`).
pub mod state_op {
    /// Put a value-state entry: name, key, value.
    pub const PUT: u8 = 0;
    /// Delete a value-state entry: name, key.
    pub const DELETE: u8 = 1;
    /// Put a map-state entry: name, key, map key, value.
    pub const MAP_PUT: u8 = 2;
    /// Remove a map-state entry: name, key, map key.
    pub const MAP_REMOVE: u8 = 3;
    /// Remove every map-state entry of a key: name, key.
    pub const MAP_CLEAR: u8 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let mut w = BatchWriter::with_capacity(64);
        w.push(None, b"", -5, &[]);
        w.push(Some(b""), b"v", i64::MAX, &[(b"a", b""), (b"", b"xyz")]);
        w.push_with(Some(b"k"), 7, |v| v.extend_from_slice(b"built in place"));
        w.push_with_raw_headers(None, 8, &[1, 0, b'h', 1, 0, 0, 0, b'v'], |v| v.push(b'x'));
        assert_eq!(w.records(), 4);
        let bytes = w.finish();
        let recs: Vec<_> = Frames::new(&bytes).map(Result::unwrap).collect();
        assert_eq!(recs[0].key, None);
        assert_eq!(recs[0].timestamp, -5);
        assert_eq!(recs[1].key, Some(&b""[..]));
        let hs: Vec<_> = recs[1].headers().map(Result::unwrap).collect();
        assert_eq!(hs, vec![(&b"a"[..], &b""[..]), (&b""[..], &b"xyz"[..])]);
        assert_eq!(recs[2].value, b"built in place");
        assert_eq!(recs[2].key, Some(&b"k"[..]));
        assert_eq!(recs[3].value, b"x");
        assert_eq!(recs[3].headers().map(Result::unwrap).collect::<Vec<_>>(), vec![(&b"h"[..], &b"v"[..])]);
        let total: usize = recs.iter().map(RecordRef::encoded_len).sum();
        assert_eq!(total, bytes.len());
    }

    #[test]
    fn push_record_copies_frames_exactly() {
        let mut a = BatchWriter::new();
        a.push(Some(b"key"), b"value", 9, &[(b"h", b"1")]);
        let a = a.finish();
        let mut b = BatchWriter::new();
        for r in Frames::new(&a) {
            b.push_record(&r.unwrap());
        }
        assert_eq!(a, b.finish());
    }

    #[test]
    fn truncated_buffers_are_errors_not_panics() {
        let mut w = BatchWriter::new();
        w.push(Some(b"key"), b"value", 9, &[(b"h", b"1")]);
        let bytes = w.finish();
        for cut in 1..bytes.len() {
            let last = Frames::new(&bytes[..cut]).last().unwrap();
            assert!(last.is_err(), "cut at {cut} was accepted");
        }
        assert_eq!(count(&bytes), Ok(1));
        // A huge length must not overflow or allocate.
        let mut evil = vec![0u8; HEADER_LEN];
        evil[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(count(&evil).is_err());
    }

    #[test]
    fn oversized_fields_are_errors_and_leave_the_batch_intact() {
        let mut w = BatchWriter::new();
        w.push(None, b"before", 1, &[]);
        let long_name = vec![b'h'; MAX_HEADER_NAME + 1];
        let e = w.try_push(Some(b"k"), b"v", 2, &[(b"ok", b""), (&long_name, b"x")]).unwrap_err();
        assert_eq!(e, TooLarge { field: Field::HeaderName, len: 65_536, max: 65_535 });
        assert_eq!(e.to_string(), "its header name is 65536 bytes, more than weir's record format holds (65535 bytes)");
        assert_eq!(w.records(), 1);
        // The longest name that fits round-trips.
        let name = vec![b'n'; MAX_HEADER_NAME];
        w.try_push(None, b"after", 3, &[(&name, b"v")]).unwrap();
        let bytes = w.finish();
        let recs: Vec<_> = Frames::new(&bytes).map(Result::unwrap).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].headers().next().unwrap().unwrap(), (&name[..], &b"v"[..]));
    }

    #[test]
    #[should_panic(expected = "header name is 70000 bytes")]
    fn push_panics_only_with_the_reason() {
        BatchWriter::new().push(None, b"", 0, &[(&[0; 70_000], b"")]);
    }

    #[test]
    fn length_prefixed_reader() {
        let mut buf = Vec::new();
        lp::put(&mut buf, b"ab");
        lp::put_opt(&mut buf, None);
        lp::put(&mut buf, b"");
        let mut r = lp::Reader::new(&buf);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.opt(), Some(Some(&b"ab"[..])));
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.opt(), Some(None));
        assert_eq!(r.bytes(), Some(&b""[..]));
        assert!(r.is_empty());
        assert_eq!(lp::Reader::new(&buf[..3]).opt(), None);
        assert_eq!(lp::Reader::new(&buf[..7]).remaining(), 1);
    }

    #[test]
    fn preview_cuts_and_hexes() {
        assert_eq!(Preview(b"hi").to_string(), "\"hi\"");
        assert_eq!(Preview(&[0xff, 0x00]).to_string(), "0xff00");
        assert!(Preview(&[b'a'; 100]).to_string().ends_with("(100 bytes)"));
    }
}

/// Decimal integer formatting without `fmt` or allocation, for the hot
/// paths that write JSON or text (sources, sinks, plugins).
pub mod decimal {
    /// Two-digit decimal strings "00" to "99", for integer formatting.
    pub const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

    /// Appends `n` in decimal.
    #[inline]
    pub fn push_u64(v: &mut Vec<u8>, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            at -= 1;
            buf[at] = b'0' + n as u8;
        }
        v.extend_from_slice(&buf[at..]);
    }

    /// Appends `n` in decimal, with a leading `-` when negative.
    #[inline]
    pub fn push_i64(v: &mut Vec<u8>, n: i64) {
        if n < 0 {
            v.push(b'-');
        }
        push_u64(v, n.unsigned_abs());
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn formats_like_display() {
            for n in [0i64, 7, 10, 99, 100, 12345, -1, -100, i64::MAX, i64::MIN] {
                let mut v = Vec::new();
                super::push_i64(&mut v, n);
                assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
            }
            let mut v = Vec::new();
            super::push_u64(&mut v, u64::MAX);
            assert_eq!(String::from_utf8(v).unwrap(), u64::MAX.to_string());
        }
    }
}

/// JSON text helpers for the hot paths that read and write JSON (sinks,
/// plugins, `json-scan`).
///
/// Plugins run these as Wasm, where a byte-at-a-time loop pays the engine's
/// interruption check on every iteration and `memcmp` is a byte loop too; so
/// the loops here take eight bytes per step.
pub mod json {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// High bit set in each byte of `v` that is zero (exact for the lowest
    /// one, which is all the callers use: borrows only run upwards).
    #[inline(always)]
    const fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }

    /// Length of the run at the start of `s` of bytes that a JSON string
    /// holds as they are: up to the first `"`, `\\` or control character,
    /// and, with `STOP_AT_NON_ASCII`, the first byte >= 0x80 (a reader that
    /// validates UTF-8 looks at those). Eight bytes per step.
    #[inline(always)]
    pub fn plain_run<const STOP_AT_NON_ASCII: bool>(s: &[u8]) -> usize {
        let non_ascii = if STOP_AT_NON_ASCII { HIGH } else { 0 };
        let mut at = 0;
        while let Some(&chunk) = s[at..].first_chunk::<8>() {
            let w = u64::from_le_bytes(chunk);
            let special = zero_bytes(w ^ (ONES * u64::from(b'"')))
                | zero_bytes(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
                | (w & non_ascii);
            if special != 0 {
                return at + (special.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        at + s[at..]
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\' || (STOP_AT_NON_ASCII && b >= 0x80))
            .unwrap_or(s.len() - at)
    }

    /// `a == b`, eight bytes per step and inline: for the short keys and
    /// field names compared once or more per record, where a call to a
    /// Wasm guest's byte-at-a-time `memcmp` costs more than the comparison.
    #[inline(always)]
    pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut at = 0;
        while let (Some(x), Some(y)) = (a[at..].first_chunk::<8>(), b[at..].first_chunk::<8>()) {
            if x != y {
                return false;
            }
            at += 8;
        }
        a[at..].iter().zip(&b[at..]).all(|(x, y)| x == y)
    }

    /// Appends `s` as a JSON string literal (quoted, with the escapes JSON needs).
    #[inline]
    pub fn push_str(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        let mut bytes = s.as_bytes();
        loop {
            let run = plain_run::<false>(bytes);
            out.extend_from_slice(&bytes[..run]);
            let Some(&b) = bytes.get(run) else { break };
            push_escape(out, b);
            bytes = &bytes[run + 1..];
        }
        out.push(b'"');
    }

    /// The escape of `b`, one of the bytes [`plain_run`] stops at.
    #[cold]
    fn push_escape(out: &mut Vec<u8>, b: u8) {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                return;
            }
        };
        out.extend_from_slice(escape);
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn plain_runs_end_at_the_first_special_byte() {
            for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
                for len in 0..20 {
                    for at in 0..=len {
                        let mut s = vec![b'a'; len];
                        s.extend_from_slice(b"~ ");
                        if at < len {
                            s[at] = special;
                        }
                        let expected = if at < len { at } else { len + 2 };
                        assert_eq!(super::plain_run::<true>(&s), expected, "special {special:#x} at {at} of {len}");
                    }
                }
            }
        }

        #[test]
        fn plain_runs_for_writing_pass_non_ascii() {
            let s = "abcdéfghijkl\"".as_bytes();
            assert_eq!(super::plain_run::<false>(s), s.len() - 1);
            assert_eq!(super::plain_run::<true>(s), 4);
        }

        #[test]
        fn bytes_eq_is_slice_equality() {
            let words: [&[u8]; 8] = [b"", b"a", b"user", b"user-4623", b"user-4624", b"user-46230000000x", b"user-46230000000y", b"amount"];
            for a in words {
                for b in words {
                    assert_eq!(super::bytes_eq(a, b), a == b, "{a:?} {b:?}");
                }
            }
        }

        #[test]
        fn escapes_what_json_needs() {
            let mut v = Vec::new();
            super::push_str(&mut v, "a\"b\\c\n\u{1}é");
            assert_eq!(String::from_utf8(v).unwrap(), "\"a\\\"b\\\\c\\n\\u0001é\"");
        }
    }
}

/// Key groups: the unit of keyed-state partitioning.
///
/// A key hashes to one of `max_parallelism` key groups; each subtask of a
/// keyed operator owns a contiguous range of them. Hash partitioning between
/// tasks and the ownership check of host state use this one function, so a
/// record always reaches the subtask that owns its state, and a restore at
/// another parallelism only reassigns whole key groups. The hash is fixed
/// forever (it is part of the checkpoint format): FNV-1a 64 followed by a
/// murmur3 finaliser for avalanche.
pub mod keygroup {
    /// Stable 64-bit hash of a key.
    #[inline]
    pub fn hash(key: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    /// The key group of `key`, in `0..max_parallelism`.
    #[inline]
    pub fn of(key: &[u8], max_parallelism: u32) -> u32 {
        (hash(key) % u64::from(max_parallelism)) as u32
    }

    /// The subtask that owns `key_group` (Flink's assignment: contiguous ranges).
    #[inline]
    pub fn subtask(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
        (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
    }

    /// The key groups subtask `subtask` of `parallelism` owns.
    pub fn range(subtask: u32, max_parallelism: u32, parallelism: u32) -> std::ops::Range<u32> {
        let start = (u64::from(subtask) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism)) as u32;
        let end = (u64::from(subtask + 1) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism)) as u32;
        start..end
    }

    /// The partition Kafka's default partitioner puts `key` in, of
    /// `partitions`: murmur2 of the key, made positive, modulo the count
    /// (the Java client's default and Kafka Streams'; librdkafka's
    /// `partitioner = "murmur2_random"`). A pipeline spread over a group
    /// keeps keyed state per partition, and checks keys with this.
    pub fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
        (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
    }

    /// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
    pub fn murmur2(data: &[u8]) -> u32 {
        const M: u32 = 0x5bd1_e995;
        let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            k = k.wrapping_mul(M);
            k ^= k >> 24;
            k = k.wrapping_mul(M);
            h = h.wrapping_mul(M);
            h ^= k;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            if rest.len() == 3 {
                h ^= u32::from(rest[2]) << 16;
            }
            if rest.len() >= 2 {
                h ^= u32::from(rest[1]) << 8;
            }
            h ^= u32::from(rest[0]);
            h = h.wrapping_mul(M);
        }
        h ^= h >> 13;
        h = h.wrapping_mul(M);
        h ^ (h >> 15)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn murmur2_is_kafkas() {
            // The values of Kafka's own UtilsTest.testMurmur2.
            for (key, java) in [
                ("21", -973932308i32),
                ("foobar", -790332482),
                ("a-little-bit-long-string", -985981536),
                ("a-little-bit-longer-string", -1486304829),
                ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
                ("abc", 479470107),
            ] {
                assert_eq!(murmur2(key.as_bytes()) as i32, java, "{key}");
            }
            assert_eq!(kafka_partition(b"foobar", 12), ((-790332482i32 & 0x7fff_ffff) % 12) as u32);
        }

        #[test]
        fn ranges_partition_key_groups_and_agree_with_subtask() {
            for max in [1u32, 7, 128, 1000] {
                for par in 1..=max.min(9) {
                    let mut next = 0;
                    for s in 0..par {
                        let r = range(s, max, par);
                        assert_eq!(r.start, next, "max {max} par {par}");
                        for kg in r.clone() {
                            assert_eq!(subtask(kg, max, par), s, "kg {kg} max {max} par {par}");
                        }
                        next = r.end;
                    }
                    assert_eq!(next, max);
                }
            }
        }

        #[test]
        fn hash_is_stable() {
            // Part of the checkpoint format: must never change.
            assert_eq!(hash(b""), 0xefd0_1f60_ba99_2926);
            assert_eq!(hash(b"user-0001"), 0xe705_650a_e861_ff2c);
            assert_eq!(of(b"user-0001", 128), 44);
        }
    }
}
