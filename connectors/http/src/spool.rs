//! The HTTP source's spool: an append-only log on local disk that holds
//! every accepted request until a completed checkpoint covers it.
//!
//! A request is answered `202 Accepted` only once its records are in the
//! spool *and fsynced*, so nothing acknowledged is lost by a crash of
//! weir or of the machine. The pipeline reads the spool behind the
//! writers; the source's checkpoint position is an offset in it, so a
//! restore replays exactly what followed the checkpoint.
//!
//! Layout: `DIR/OFFSET.spool` segment files, each named by the global
//! offset of its first byte (20 digits), and `DIR/committed` holding the
//! offset the last completed checkpoint covers. Each entry is
//!
//! ```text
//! "WHS1" | body length u32 LE | CRC-32 of the body u32 LE | body
//! body = received-at ms u64 LE | key length u16 LE | idempotency key | records u32 LE | weir frames
//! ```
//!
//! Concurrent requests are written by one thread in groups and made
//! durable with one fsync per group (group commit). A torn entry at the
//! end of the last segment (a crash mid-write, never acknowledged) is cut
//! off on open; a damaged entry anywhere else stops the source with the
//! file and offset.
//!
//! Segments go once a completed checkpoint covers them *and* their last
//! entry is older than the idempotency window: the keys of the retained
//! entries are what answers a client's retry with "duplicate".

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use weir_connector::ConnectorError;
use weir_connector::staging::sync_dir;

/// First bytes of every entry.
const MAGIC: &[u8; 4] = b"WHS1";
/// Bytes before an entry's body.
pub const ENTRY_HEADER: usize = 12;
/// A new segment starts once the active one holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The file that holds the committed offset.
const COMMITTED: &str = "committed";

/// One entry's body before it is written.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Milliseconds since the Unix epoch when it was received.
    pub received_ms: u64,
    /// The client's idempotency key, if it sent one.
    pub key: Option<String>,
    /// Records in `frames`.
    pub records: u32,
    /// The records, in weir's frame format.
    pub frames: Vec<u8>,
}

impl Entry {
    /// The entry as written: header and body.
    fn encode(&self) -> Vec<u8> {
        let key = self.key.as_deref().unwrap_or("").as_bytes();
        let body_len = 8 + 2 + key.len() + 4 + self.frames.len();
        let mut out = Vec::with_capacity(ENTRY_HEADER + body_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.received_ms.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.frames);
        let crc = crc32fast::hash(&out[ENTRY_HEADER..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A decoded entry body, borrowed from a read buffer.
#[derive(Debug)]
pub struct EntryRef<'a> {
    /// When it was received (ms since the Unix epoch).
    pub received_ms: u64,
    /// The idempotency key (empty when none).
    pub key: &'a [u8],
    /// Records in `frames`.
    pub records: u32,
    /// The records.
    pub frames: &'a [u8],
}

/// The body length in an entry header, or why the header is not one.
pub fn body_len(header: &[u8]) -> Result<usize, String> {
    if header.len() < ENTRY_HEADER || &header[..4] != MAGIC {
        return Err("no entry starts there".into());
    }
    Ok(u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as usize)
}

/// Decodes the entry at the start of `bytes` (header and whole body), checking its CRC.
pub fn decode(bytes: &[u8]) -> Result<EntryRef<'_>, String> {
    let len = body_len(bytes)?;
    let body = bytes.get(ENTRY_HEADER..ENTRY_HEADER + len).ok_or("the entry is cut short")?;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if crc32fast::hash(body) != crc {
        return Err("its checksum does not match".into());
    }
    let short = || "its body is cut short".to_string();
    let received_ms = u64::from_le_bytes(body.get(..8).ok_or_else(short)?.try_into().unwrap_or_default());
    let key_len = u16::from_le_bytes(body.get(8..10).ok_or_else(short)?.try_into().unwrap_or_default()) as usize;
    let key = body.get(10..10 + key_len).ok_or_else(short)?;
    let records = u32::from_le_bytes(body.get(10 + key_len..14 + key_len).ok_or_else(short)?.try_into().unwrap_or_default());
    Ok(EntryRef { received_ms, key, records, frames: &body[14 + key_len..] })
}

/// A segment file.
#[derive(Debug)]
struct Segment {
    /// Global offset of its first byte.
    start: u64,
    /// Global offset after its last entry.
    end: u64,
    /// When its newest entry was received.
    newest_ms: u64,
    /// The idempotency keys of its entries.
    keys: Vec<String>,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.spool"))
}

/// What [`Spool::append`] did with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Written and durable.
    Accepted,
    /// Its idempotency key was accepted before; nothing written.
    Duplicate,
    /// The spool is full: nothing written.
    Full,
}

/// Shared state of the spool.
#[derive(Debug)]
struct Inner {
    segments: Vec<Segment>,
    /// The active (last) segment, open for appending.
    file: File,
    /// Durable end: everything below is fsynced.
    end: u64,
    /// Covered by the last completed checkpoint.
    committed: u64,
    /// Idempotency keys of retained entries.
    keys: HashMap<String, u64>,
}

/// The spool of one HTTP source.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Most bytes accepted but not yet committed.
    max_bytes: u64,
    /// How long idempotency keys are remembered, at least.
    window: Duration,
    inner: Mutex<Inner>,
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> ConnectorError {
    move |e| ConnectorError::external(format!("{what}: {e}"), e)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`: reads every segment, cuts a
    /// torn entry off the end of the last one, and remembers the keys.
    pub fn open(dir: &Path, max_bytes: u64, window: Duration) -> Result<Spool, ConnectorError> {
        fs::create_dir_all(dir).map_err(io_error(format!("cannot create the spool directory {}", dir.display())))?;
        let mut starts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(format!("cannot list the spool directory {}", dir.display())))? {
            let entry = entry.map_err(io_error(format!("cannot list the spool directory {}", dir.display())))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".spool") {
                let start = n.parse::<u64>().map_err(|_| {
                    ConnectorError::user(format!("the spool directory {} holds {name}, which weir did not write; move it away", dir.display()))
                })?;
                starts.push(start);
            }
        }
        starts.sort_unstable();
        let committed_path = dir.join(COMMITTED);
        let committed = match fs::read_to_string(&committed_path) {
            Ok(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                ConnectorError::user(format!(
                    "the spool's {} holds {:?}, not an offset; it was changed outside weir. Restore it, or move the spool directory away to start with an empty one",
                    committed_path.display(),
                    text.trim()
                ))
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(format!("cannot read {}", committed_path.display()))(e)),
        };
        let mut segments = Vec::new();
        let mut keys = HashMap::new();
        let last = starts.len().saturating_sub(1);
        for (i, &start) in starts.iter().enumerate() {
            if let Some(prev) = segments.last().map(|s: &Segment| s.end)
                && prev != start
            {
                return Err(ConnectorError::user(format!(
                    "the spool {} has a gap: a segment ends at offset {prev} but the next starts at {start}; a file was removed or cut outside weir",
                    dir.display()
                )));
            }
            let seg = scan_segment(dir, start, i == last)?;
            for k in &seg.keys {
                keys.insert(k.clone(), seg.start);
            }
            segments.push(seg);
        }
        let end = segments.last().map_or(committed.unwrap_or(0), |s| s.end);
        let first = segments.first().map_or(end, |s| s.start);
        let committed = committed.unwrap_or(first);
        if committed < first || committed > end {
            return Err(ConnectorError::user(format!(
                "the spool {} holds offsets {first}..{end}, but its committed offset is {committed}: files were removed or changed outside weir. \
                 Restore them, or move the spool directory away to start with an empty one (records it held are then not read)",
                dir.display()
            )));
        }
        if segments.is_empty() {
            File::create(segment_path(dir, end)).map_err(io_error(format!("cannot create a spool segment in {}", dir.display())))?;
            sync_dir(dir)?;
            segments.push(Segment { start: end, end, newest_ms: 0, keys: Vec::new() });
        }
        let active = segment_path(dir, segments.last().map_or(end, |s| s.start));
        let file = OpenOptions::new().append(true).open(&active).map_err(io_error(format!("cannot open {}", active.display())))?;
        Ok(Spool { dir: dir.to_path_buf(), max_bytes, window, inner: Mutex::new(Inner { segments, file, end, committed, keys }) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `(first retained offset, durable end, committed offset)`.
    pub fn bounds(&self) -> (u64, u64, u64) {
        let inner = self.lock();
        (inner.segments.first().map_or(inner.end, |s| s.start), inner.end, inner.committed)
    }

    /// Bytes accepted and not yet committed.
    pub fn buffered(&self) -> u64 {
        let inner = self.lock();
        inner.end - inner.committed
    }

    /// Writes a group of entries and fsyncs once; says what happened to
    /// each. On an I/O error nothing of the group stays and every entry
    /// fails.
    pub fn append(&self, entries: &[Entry]) -> Result<Vec<Appended>, ConnectorError> {
        let mut inner = self.lock();
        if inner.segments.last().is_some_and(|s| s.end - s.start >= SEGMENT_BYTES) {
            self.roll(&mut inner)?;
        }
        let mut outcome = Vec::with_capacity(entries.len());
        let mut bytes = Vec::new();
        let mut new_keys = Vec::new();
        let mut newest = 0;
        for e in entries {
            if let Some(k) = &e.key
                && (inner.keys.contains_key(k) || new_keys.contains(k))
            {
                outcome.push(Appended::Duplicate);
                continue;
            }
            let encoded = e.encode();
            if inner.end - inner.committed + (bytes.len() + encoded.len()) as u64 > self.max_bytes {
                outcome.push(Appended::Full);
                continue;
            }
            bytes.extend_from_slice(&encoded);
            new_keys.extend(e.key.clone());
            newest = newest.max(e.received_ms);
            outcome.push(Appended::Accepted);
        }
        if bytes.is_empty() {
            return Ok(outcome);
        }
        let before = inner.end - inner.segments.last().map_or(inner.end, |s| s.start);
        let written = inner.file.write_all(&bytes).and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            // Cut back to the last durable entry, so the log stays whole.
            if let Err(cut) = inner.file.set_len(before).and_then(|()| inner.file.sync_data()) {
                return Err(ConnectorError::internal(format!(
                    "the spool {} could not be written ({e}) nor cut back to its last whole entry ({cut}); stopping",
                    self.dir.display()
                )));
            }
            return Err(io_error(format!("cannot write to the spool {}", self.dir.display()))(e));
        }
        let start = inner.segments.last().map_or(0, |s| s.start);
        inner.end += bytes.len() as u64;
        let end = inner.end;
        for k in &new_keys {
            inner.keys.insert(k.clone(), start);
        }
        if let Some(seg) = inner.segments.last_mut() {
            seg.end = end;
            seg.newest_ms = seg.newest_ms.max(newest);
            seg.keys.extend(new_keys);
        }
        Ok(outcome)
    }

    /// Starts a new active segment at the end.
    fn roll(&self, inner: &mut Inner) -> Result<(), ConnectorError> {
        let path = segment_path(&self.dir, inner.end);
        let file = OpenOptions::new().append(true).create(true).open(&path).map_err(io_error(format!("cannot create {}", path.display())))?;
        sync_dir(&self.dir)?;
        inner.file = file;
        inner.segments.push(Segment { start: inner.end, end: inner.end, newest_ms: 0, keys: Vec::new() });
        Ok(())
    }

    /// A completed checkpoint covers everything below `offset`: record it
    /// durably, then drop the segments nothing needs any more.
    pub fn commit(&self, offset: u64, now_ms: u64) -> Result<(), ConnectorError> {
        let mut inner = self.lock();
        if offset > inner.end {
            return Err(ConnectorError::internal(format!("commit at offset {offset} beyond the spool's end {}", inner.end)));
        }
        if offset > inner.committed {
            let tmp = self.dir.join("committed.tmp");
            let write = || -> io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(offset.to_string().as_bytes())?;
                f.sync_data()?;
                fs::rename(&tmp, self.dir.join(COMMITTED))
            };
            write().map_err(io_error(format!("cannot record the committed offset in {}", self.dir.display())))?;
            sync_dir(&self.dir)?;
            inner.committed = offset;
        }
        self.trim(&mut inner, now_ms)
    }

    /// Drops committed segments older than the idempotency window.
    pub fn trim_now(&self, now_ms: u64) -> Result<(), ConnectorError> {
        let mut inner = self.lock();
        self.trim(&mut inner, now_ms)
    }

    fn trim(&self, inner: &mut Inner, now_ms: u64) -> Result<(), ConnectorError> {
        let window = self.window.as_millis() as u64;
        let mut removed = false;
        while inner.segments.len() > 1 {
            let seg = &inner.segments[0];
            if seg.end > inner.committed || seg.newest_ms + window > now_ms {
                break;
            }
            let path = segment_path(&self.dir, seg.start);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(format!("cannot remove {}", path.display()))(e)),
                _ => {}
            }
            let seg = inner.segments.remove(0);
            for k in seg.keys {
                inner.keys.remove(&k);
            }
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// A reader of the spool from `offset`.
    pub fn reader(&self, offset: u64) -> Reader {
        Reader { dir: self.dir.clone(), offset, file: None, buf: Vec::new(), at: 0 }
    }

    /// The start of the segment that holds `offset`, and its end if it is
    /// not the active one.
    fn segment_of(&self, offset: u64) -> Option<(u64, Option<u64>)> {
        let inner = self.lock();
        let n = inner.segments.len();
        inner.segments.iter().enumerate().find(|(i, s)| s.start <= offset && (offset < s.end || *i == n - 1)).map(|(i, s)| (s.start, (i < n - 1).then_some(s.end)))
    }
}

/// Reads entries of the segment starting at `start`; cuts a torn tail off
/// the last segment, refuses damage elsewhere.
fn scan_segment(dir: &Path, start: u64, last: bool) -> Result<Segment, ConnectorError> {
    let path = segment_path(dir, start);
    let bytes = fs::read(&path).map_err(io_error(format!("cannot read {}", path.display())))?;
    let mut seg = Segment { start, end: start, newest_ms: 0, keys: Vec::new() };
    let mut at = 0;
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Ok(e) => {
                seg.newest_ms = seg.newest_ms.max(e.received_ms);
                if !e.key.is_empty() {
                    seg.keys.push(String::from_utf8_lossy(e.key).into_owned());
                }
                at += ENTRY_HEADER + body_len(&bytes[at..]).unwrap_or(0);
            }
            Err(why) if last => {
                tracing::warn!(file = %path.display(), "cutting an incomplete entry off the spool at byte {at} ({why}): a request that was never acknowledged");
                let f = OpenOptions::new().write(true).open(&path).map_err(io_error(format!("cannot open {}", path.display())))?;
                f.set_len(at as u64).and_then(|()| f.sync_data()).map_err(io_error(format!("cannot cut {}", path.display())))?;
                break;
            }
            Err(why) => {
                return Err(ConnectorError::user(format!(
                    "the spool file {} is damaged at byte {at} ({why}); its records were acknowledged to clients. \
                     Restore the file from a backup, or move the spool directory away to start with an empty one (its unread records are then lost)",
                    path.display()
                )));
            }
        }
    }
    seg.end = start + at as u64;
    Ok(seg)
}

/// Reads the spool in order, up to its durable end.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    /// Global offset of the next entry.
    offset: u64,
    /// The open segment: its start and file.
    file: Option<(u64, File)>,
    /// Bytes read ahead from `at` (a global offset).
    buf: Vec<u8>,
    at: u64,
}

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

impl Reader {
    /// The offset of the next entry.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Calls `each` with the entries from the reader's offset on, stopping
    /// at the durable end or once `each` returns `false` (the entry it was
    /// given counts as read).
    pub fn read(&mut self, spool: &Spool, mut each: impl FnMut(EntryRef<'_>) -> bool) -> Result<(), ConnectorError> {
        loop {
            let end = spool.bounds().1;
            if self.offset >= end {
                return Ok(());
            }
            let Some((start, seg_end)) = spool.segment_of(self.offset) else {
                return Err(ConnectorError::user(format!(
                    "the spool {} no longer holds offset {}: files were removed outside weir",
                    self.dir.display(),
                    self.offset
                )));
            };
            let limit = seg_end.unwrap_or(end).min(end);
            // The entry's bytes, read ahead in chunks.
            let have = (self.at + self.buf.len() as u64).saturating_sub(self.offset);
            let in_buf = self.offset >= self.at && self.offset < self.at + self.buf.len() as u64;
            let header_ok = in_buf && have >= ENTRY_HEADER as u64;
            let need = if header_ok {
                let from = (self.offset - self.at) as usize;
                let len = body_len(&self.buf[from..]).map_err(|why| self.damaged(start, why))?;
                (ENTRY_HEADER + len) as u64
            } else {
                ENTRY_HEADER as u64
            };
            if !in_buf || have < need {
                self.fill(start, limit, need)?;
                continue;
            }
            let from = (self.offset - self.at) as usize;
            let entry = decode(&self.buf[from..from + need as usize]).map_err(|why| self.damaged(start, why))?;
            self.offset += need;
            if !each(entry) {
                return Ok(());
            }
        }
    }

    /// Reads at least `need` bytes at the reader's offset (up to `limit`).
    fn fill(&mut self, start: u64, limit: u64, need: u64) -> Result<(), ConnectorError> {
        if self.offset + need > limit {
            return Err(self.damaged(start, format!("an entry of {need} bytes runs past the durable end {limit}")));
        }
        if self.file.as_ref().is_none_or(|(s, _)| *s != start) {
            let path = segment_path(&self.dir, start);
            let f = File::open(&path).map_err(io_error(format!("cannot open the spool file {}", path.display())))?;
            self.file = Some((start, f));
        }
        let len = (limit - self.offset).min(need.max(READ_CHUNK as u64)) as usize;
        self.buf.resize(len, 0);
        self.at = self.offset;
        let (_, f) = self.file.as_ref().ok_or_else(|| ConnectorError::internal("no spool file open"))?;
        f.read_exact_at(&mut self.buf, self.offset - start).map_err(io_error(format!("cannot read the spool {}", self.dir.display())))?;
        Ok(())
    }

    fn damaged(&self, start: u64, why: String) -> ConnectorError {
        ConnectorError::user(format!(
            "the spool file {} is damaged at byte {} ({why}); its records were acknowledged to clients. \
             Restore the file from a backup, or move the spool directory away to start with an empty one (its unread records are then lost)",
            segment_path(&self.dir, start).display(),
            self.offset - start
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: Option<&str>, values: &[&str], ms: u64) -> Entry {
        let mut w = weir_connector::BatchWriter::new();
        for v in values {
            w.push(None, v.as_bytes(), ms as i64, &[]);
        }
        Entry { received_ms: ms, key: key.map(str::to_owned), records: values.len() as u32, frames: w.finish() }
    }

    fn read_all(spool: &Spool, from: u64) -> Vec<String> {
        let mut r = spool.reader(from);
        let mut out = Vec::new();
        r.read(spool, |e| {
            for rec in weir_connector::Frames::new(e.frames) {
                out.push(String::from_utf8(rec.unwrap().value.to_vec()).unwrap());
            }
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn appends_dedups_bounds_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 200, Duration::from_secs(60)).unwrap();
        let got = spool.append(&[entry(Some("a"), &["1", "2"], 10), entry(Some("a"), &["x"], 10), entry(None, &["3"], 11)]).unwrap();
        assert_eq!(got, [Appended::Accepted, Appended::Duplicate, Appended::Accepted]);
        assert_eq!(spool.append(&[entry(Some("a"), &["y"], 12)]).unwrap(), [Appended::Duplicate]);
        let big = "z".repeat(300);
        assert_eq!(spool.append(&[entry(None, &[&big], 12)]).unwrap(), [Appended::Full]);
        assert_eq!(read_all(&spool, 0), ["1", "2", "3"]);
        let (_, end, committed) = spool.bounds();
        assert_eq!(committed, 0);
        drop(spool);
        // A torn entry at the end (a crash mid-write) is cut off; the keys survive.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&entry(Some("b"), &["torn"], 13).encode()[..20]).unwrap();
        let spool = Spool::open(dir.path(), 200, Duration::from_secs(60)).unwrap();
        assert_eq!(spool.bounds().1, end);
        assert_eq!(spool.append(&[entry(Some("a"), &["y"], 14)]).unwrap(), [Appended::Duplicate]);
        assert_eq!(spool.append(&[entry(Some("b"), &["4"], 14)]).unwrap(), [Appended::Accepted]);
        assert_eq!(read_all(&spool, end), ["4"]);
    }

    #[test]
    fn commits_trim_whole_old_segments_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 30, Duration::from_millis(100)).unwrap();
        spool.append(&[entry(Some("k1"), &["1"], 1000)]).unwrap();
        let end1 = spool.bounds().1;
        {
            let mut inner = spool.lock();
            spool.roll(&mut inner).unwrap();
        }
        spool.append(&[entry(Some("k2"), &["2"], 1000)]).unwrap();
        // Committed but inside the window: kept, and the key still dedups.
        spool.commit(end1, 1050).unwrap();
        assert_eq!(spool.bounds().0, 0);
        assert_eq!(spool.append(&[entry(Some("k1"), &["1"], 1050)]).unwrap(), [Appended::Duplicate]);
        spool.trim_now(1200).unwrap();
        assert_eq!(spool.bounds(), (end1, spool.bounds().1, end1));
        assert!(!segment_path(dir.path(), 0).exists());
        assert_eq!(read_all(&spool, end1), ["2"]);
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 30, Duration::from_millis(100)).unwrap();
        assert_eq!(spool.bounds().2, end1);
        assert_eq!(spool.append(&[entry(Some("k1"), &["1 again"], 1300)]).unwrap(), [Appended::Accepted]);
        drop(spool);
        // Damage inside a segment that is not the last one stops the open.
        spool_damage(dir.path(), end1);
        let err = Spool::open(dir.path(), 1 << 30, Duration::from_millis(100)).unwrap_err().message;
        assert!(err.contains("is damaged at byte 0") || err.contains("damaged"), "{err}");
    }

    fn spool_damage(dir: &Path, start: u64) {
        // Add a later segment so the damaged one is not the last.
        let path = segment_path(dir, start);
        let mut bytes = fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        bytes[ENTRY_HEADER + 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let later = segment_path(dir, start + len);
        if !later.exists() {
            fs::write(later, b"").unwrap();
        }
        // The segments after the damaged one must continue where it ends.
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let n: Option<u64> = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok());
            if n.is_some_and(|n| n > start + len) {
                fs::remove_file(p).unwrap();
            }
        }
    }
}
