//! The record frame format, as the host reads a batch a plugin returns
//! (`weir_format::count`, then `Frames`) and a record's headers.
//!
//! Checks beyond "no panic": every frame read is re-encoded byte for
//! byte by `BatchWriter::push_record` (so the reader and the writer agree
//! on the format), `count` agrees with the iterator, and headers that
//! parse are re-encoded to the same bytes by `try_push`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_format::{BatchWriter, Frames, RecordRef};

fuzz_target!(|data: &[u8]| {
    let mut copy = BatchWriter::new();
    let mut frames = Frames::new(data);
    let mut ok = 0;
    let mut failed = false;
    while let Some(r) = frames.next() {
        match r {
            Ok(rec) => {
                ok += 1;
                copy.push_record(&rec);
                check_headers(&rec);
            }
            Err(e) => {
                assert!(e.offset <= data.len(), "{e} outside a {}-byte buffer", data.len());
                failed = true;
            }
        }
    }
    assert!(frames.next().is_none(), "the iterator ends after an error");
    let good = copy.len();
    assert_eq!(copy.records(), ok);
    // The frames read are exactly the prefix of the buffer they came from.
    assert_eq!(copy.as_bytes(), &data[..good]);
    match weir_format::count(data) {
        Ok(n) => {
            assert!(!failed && n == ok && good == data.len());
        }
        Err(e) => {
            assert!(failed);
            assert_eq!(e.offset, good, "the error names the first bad frame");
        }
    }
});

fn check_headers(rec: &RecordRef<'_>) {
    let headers: Result<Vec<_>, _> = rec.headers().collect();
    let Ok(headers) = headers else { return };
    let mut w = BatchWriter::new();
    w.try_push(rec.key, rec.value, rec.timestamp, &headers).expect("a record read from a frame fits a frame");
    let bytes = w.finish();
    let (again, end) = weir_format::read_frame(&bytes, 0).expect("a written frame reads back");
    assert_eq!(end, bytes.len());
    assert_eq!(again, *rec, "headers re-encode to the same bytes");
}
