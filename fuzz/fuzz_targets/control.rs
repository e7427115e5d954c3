//! The control socket's protocol (`weir savepoint`, `weir status`,
//! `weir reload` and `weir plugins` talking to `weir run`): the request
//! line the run reads from whoever connects (`control::read_request`) and
//! the answer line the CLI reads back (`control::parse_answer`, then the
//! JSON of each answer).
//!
//! Checks beyond "no panic": a request is read from at most
//! `MAX_LINE` + 1 bytes whatever follows, and a request that parses is
//! written back as a line that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;
use weir_pipeline::control::{self, Request, MAX_LINE};

/// A reader that counts what was taken from it.
struct Counted<'a> {
    data: &'a [u8],
    taken: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (&self.data[self.taken..]).read(buf)?;
        self.taken += n;
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut conn = Counted { data, taken: 0 };
    let request = control::read_request(&mut conn);
    // BufReader may read ahead a buffer's worth; never without bound.
    assert!(conn.taken <= MAX_LINE + 1 + 8192, "read {} bytes for one request line", conn.taken);
    if let Ok(r) = &request {
        let line = r.line();
        assert!(!line.contains('\n'));
        assert_eq!(Request::parse(&line).as_ref(), Ok(r), "{line:?} reads back as another request");
        let mut sent = line.into_bytes();
        sent.push(b'\n');
        assert_eq!(control::read_request(&sent[..]).as_ref(), Ok(r));
    }

    // The answer, as the CLI reads it.
    let text = String::from_utf8_lossy(data);
    if let Ok(json) = control::parse_answer(&text) {
        let _ = serde_json::from_str::<Vec<weir_pipeline::ReloadEvent>>(json);
        let _ = serde_json::from_str::<weir_pipeline::ReloadStatus>(json);
        let _ = serde_json::from_str::<weir_pipeline::LiveStatus>(json);
    }
});
